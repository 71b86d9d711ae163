//! The provider's concurrency permits, kept across charges.
//!
//! The provider serves only `PROVIDER_CONCURRENCY` requests at once, across every
//! replica; a coord [`Semaphore`] in etcd holds that count. Taking a permit is an etcd
//! write (a key under the session's lease) and giving it back is another, so a permit
//! per charge costs two of the five etcd writes a paid order needs. Here a process
//! keeps a permit it has used instead of giving it back at once, and the next charge
//! on that process takes the kept permit without asking etcd:
//!
//! - **The cap still holds.** A kept permit is a held permit: its key stays in etcd,
//!   so the semaphore still counts it, and locally a permit serves one request at a
//!   time (it is taken out of the pool for the request and put back after).
//! - **Others get their turn.** A permit goes back to etcd after [`MAX_USES`] requests
//!   (the process then queues behind any waiting replica, since a new key is younger
//!   than theirs), and after `PROVIDER_PERMIT_IDLE_MS` (default 250 ms) unused; with
//!   `0` every request gives its permit back, as before. So a busy replica delays
//!   another replica's charges by at most `MAX_USES` of its own — the trade for saving
//!   the writes.
//! - **A lost session loses its permits.** A permit is tied to the session's lease;
//!   when the process's session is replaced (the old lease expired), kept permits of
//!   the old one are dropped, never reused: their keys are gone and another process
//!   may hold those permits now.
//!
//! Paid order, etcd writes: enqueue, claim, ack — plus a permit's take and give-back
//! once per `MAX_USES` charges (or per burst, when the load is sparse).

use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::{Duration, Instant};

use coord::{Permit, Semaphore};
use shop_common::coordination::SharedSession;

/// Requests one permit serves before it goes back to etcd.
pub const MAX_USES: u32 = 32;

/// The permits this process holds and is not using right now.
pub struct PermitPool {
    session: Arc<SharedSession>,
    name: String,
    permits: usize,
    idle: Duration,
    kept: StdMutex<Vec<Kept>>,
}

/// A permit held by this process, with what it has served.
pub struct Kept {
    permit: Permit,
    uses: u32,
    idle_since: Instant,
}

impl PermitPool {
    /// A pool for the semaphore `name` with `permits` permits, keeping an unused permit
    /// for `idle`. Starts the task that gives idle permits back; it ends when the pool
    /// is dropped.
    pub fn new(
        session: Arc<SharedSession>,
        name: String,
        permits: usize,
        idle: Duration,
    ) -> Arc<PermitPool> {
        let pool = Arc::new(PermitPool {
            session,
            name,
            permits,
            idle,
            kept: StdMutex::new(Vec::new()),
        });
        tokio::spawn(give_back_idle_permits(Arc::downgrade(&pool)));
        pool
    }

    /// A permit for one request: a kept one of the current session, or a new one from
    /// etcd (waiting in line when all are taken).
    pub async fn take(&self) -> coord::Result<Kept> {
        let session = self.session.get().await?;
        let reusable = {
            let mut kept = self.kept.lock().expect("permit pool lock");
            // Permits of a lost session are dropped here: their keys went with the lease.
            kept.retain(|k| reusable_under(k, &session));
            kept.pop()
        };
        if let Some(kept) = reusable {
            return Ok(kept);
        }
        let permit = Semaphore::new(&session, &self.name, self.permits)?
            .acquire()
            .await?;
        Ok(Kept {
            permit,
            uses: 0,
            idle_since: Instant::now(),
        })
    }

    /// Puts a permit back after its request: kept for the next one, or given back to
    /// etcd once it has served [`MAX_USES`] requests.
    pub async fn put_back(&self, mut kept: Kept) {
        kept.uses += 1;
        if kept.uses >= MAX_USES || self.idle.is_zero() || kept.permit.session().is_expired() {
            release(kept).await;
            return;
        }
        kept.idle_since = Instant::now();
        self.kept.lock().expect("permit pool lock").push(kept);
    }

    /// Permits held and not in use (for tests and metrics).
    pub fn kept(&self) -> usize {
        self.kept.lock().expect("permit pool lock").len()
    }

    /// Gives back every kept permit unused for the pool's idle time.
    async fn give_back_idle(&self) {
        let stale: Vec<Kept> = {
            let mut kept = self.kept.lock().expect("permit pool lock");
            let (stale, fresh) = kept
                .drain(..)
                .partition(|k| k.idle_since.elapsed() >= self.idle);
            *kept = fresh;
            stale
        };
        for kept in stale {
            release(kept).await;
        }
    }
}

#[cfg(not(feature = "knockout-permit-session"))]
fn reusable_under(kept: &Kept, session: &coord::Session) -> bool {
    kept.permit.session().lease() == session.lease() && !session.is_expired()
}

/// Knockout (tests only): a kept permit is reused whatever session it was taken under.
#[cfg(feature = "knockout-permit-session")]
fn reusable_under(_kept: &Kept, _session: &coord::Session) -> bool {
    true
}

async fn release(kept: Kept) {
    if let Err(e) = kept.permit.release().await {
        // Gone already (the lease expired) or etcd unreachable: either way the key
        // leaves with the lease.
        tracing::debug!(error = %e, "giving a provider permit back failed");
    }
}

/// The pool's background task: every half idle time, gives idle permits back; ends
/// when the pool is dropped.
async fn give_back_idle_permits(pool: Weak<PermitPool>) {
    let Some(idle) = pool.upgrade().map(|p| p.idle) else {
        return;
    };
    let mut tick = tokio::time::interval((idle / 2).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        pool.give_back_idle().await;
    }
}
