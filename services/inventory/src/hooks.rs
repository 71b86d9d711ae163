//! Test-only hooks (feature `test-hooks`): a test can hold one order's Reserve or
//! Release at a named moment ([`Moment`]) and is told when it is there. Enabled only
//! by dev-dependencies (this crate's own on itself, the harness's) and by the fault
//! suite's hooked inventory image (`coord-shop:test-hooks`, from `scripts/images.sh`);
//! no normal build has this module.
//!
//! Across processes (the fault suite's `pause-in-section`, against containers): a
//! hooked replica started with `TEST_HOOK_PAUSE_IN_SECTION_SKU_PREFIX=<prefix>` holds
//! the first Reserve of each SKU named `<prefix>…` inside its critical section, once in
//! the whole cluster: it creates `<etcd prefix>/test-hooks/in-section/<sku>` (value
//! `<replica> <order>`, only if the key does not exist yet), then waits until the key's
//! value is `resume` (or the key is gone). See [`arm_remote`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use coord::etcd_client::{Compare, CompareOp, EventType, Txn, TxnOp, WatchOptions};
use shop_common::coordination::SharedSession;
use shop_common::domain::{OrderId, Sku};
use tokio::sync::oneshot;

/// The moments a test can hold an order's request at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Moment {
    /// A Reserve (none, mutex-unfenced, mutex) inside its critical section: after
    /// the read, before the write.
    InSection,
    /// A Reserve has consulted the order's own reservation row (and found no
    /// decision), before it looks at the stock.
    AfterOwnRow,
    /// An stm Reserve that etcd refused, before it removes its PREPARING claim.
    BeforeUnprepare,
    /// An stm Reserve that etcd granted, before it records the reservation in
    /// Postgres.
    BeforeRecord,
    /// A Release whose tombstone insert found the order's row, before it locks it.
    ReleaseFoundRow,
    /// A Reserve has taken its first line's units (that stock row is locked until it
    /// commits), before it takes the next line's.
    LineTaken,
}

type Waiting = (oneshot::Sender<()>, oneshot::Receiver<()>);

static PAUSES: Mutex<Option<HashMap<(Moment, OrderId), Waiting>>> = Mutex::new(None);

/// A request held at a moment: `inside` resolves once it is there, dropping or
/// sending on `resume` lets it go on.
pub struct Pause {
    pub inside: oneshot::Receiver<()>,
    pub resume: oneshot::Sender<()>,
}

/// Arranges for the next request of `order` that reaches `moment` to stop there and
/// wait for [`Pause::resume`] (only the first: later ones pass).
pub fn pause_at(moment: Moment, order: OrderId) -> Pause {
    let (inside_tx, inside) = oneshot::channel();
    let (resume, resume_rx) = oneshot::channel();
    PAUSES
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert((moment, order), (inside_tx, resume_rx));
    Pause { inside, resume }
}

/// Arranges for `order`'s next Reserve (strategies none, mutex-unfenced, mutex) to
/// stop after its read and wait for [`Pause::resume`].
pub fn pause_in_section(order: OrderId) -> Pause {
    pause_at(Moment::InSection, order)
}

/// Called by the code at `moment`.
pub(crate) async fn reached(moment: Moment, order: OrderId) {
    let waiting = PAUSES
        .lock()
        .unwrap()
        .as_mut()
        .and_then(|pauses| pauses.remove(&(moment, order)));
    if let Some((inside, resume)) = waiting {
        let _ = inside.send(());
        let _ = resume.await;
    }
}

/// The environment variable that arms the cross-process in-section pause.
pub const PAUSE_IN_SECTION_ENV: &str = "TEST_HOOK_PAUSE_IN_SECTION_SKU_PREFIX";
/// The value of the announcement key that lets the held Reserve go on.
pub const RESUME: &str = "resume";
/// Longest a Reserve is held for a suite that never answers (the suite is gone).
const REMOTE_HOLD_LIMIT: Duration = Duration::from_secs(120);

struct Remote {
    session: Arc<SharedSession>,
    replica: String,
    sku_prefix: String,
}

static REMOTE: OnceLock<Remote> = OnceLock::new();

/// The announcement key of `sku` under the shop's etcd `prefix`.
pub fn in_section_key(prefix: &str, sku: &str) -> String {
    format!("{prefix}/test-hooks/in-section/{sku}")
}

/// Arms the cross-process in-section pause if `TEST_HOOK_PAUSE_IN_SECTION_SKU_PREFIX`
/// is set (and not empty); called once at startup by a hooked build.
pub fn arm_remote(session: Arc<SharedSession>, replica: &str) {
    let Ok(sku_prefix) = std::env::var(PAUSE_IN_SECTION_ENV) else {
        return;
    };
    if sku_prefix.is_empty() {
        return;
    }
    tracing::warn!(
        sku_prefix,
        "test hook armed: the first Reserve of each SKU with this prefix is held inside its critical section"
    );
    let _ = REMOTE.set(Remote {
        session,
        replica: replica.to_owned(),
        sku_prefix,
    });
}

/// Called inside the critical section of `order`'s Reserve of `sku` (after the read,
/// before the write). Holds it if the remote pause is armed for `sku` and no Reserve of
/// `sku` was held before (in any replica); an etcd failure lets it go on.
pub(crate) async fn reached_remote(sku: &Sku, order: OrderId) {
    let Some(remote) = REMOTE.get() else { return };
    if !sku.as_str().starts_with(&remote.sku_prefix) {
        return;
    }
    let key = in_section_key(remote.session.prefix(), sku.as_str());
    match hold_remote(remote, &key, order).await {
        Ok(true) => tracing::warn!(%key, %order, "test hook: resumed inside the critical section"),
        Ok(false) => {}
        Err(e) => tracing::warn!(%key, error = %e, "test hook: etcd failed; not holding"),
    }
}

/// Announces the hold and waits for `resume`; `false` if another Reserve held already.
async fn hold_remote(remote: &Remote, key: &str, order: OrderId) -> anyhow::Result<bool> {
    let mut client = remote.session.client().await?;
    let announced = client
        .txn(
            Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, format!("{} {order}", remote.replica), None)]),
        )
        .await?;
    if !announced.succeeded() {
        return Ok(false);
    }
    let revision = announced.header().map_or(0, |h| h.revision());
    tracing::warn!(%key, %order, replica = %remote.replica, "test hook: holding a Reserve inside its critical section until the key says resume");
    let waited = tokio::time::timeout(REMOTE_HOLD_LIMIT, async {
        let mut events = client
            .watch(
                key,
                Some(WatchOptions::new().with_start_revision(revision + 1)),
            )
            .await?;
        while let Some(response) = events.message().await? {
            for event in response.events() {
                let resumed = event.event_type() == EventType::Delete
                    || event.kv().is_some_and(|kv| kv.value() == RESUME.as_bytes());
                if resumed {
                    return Ok::<_, anyhow::Error>(());
                }
            }
        }
        anyhow::bail!("the watch of {key} ended")
    })
    .await;
    match waited {
        Ok(result) => result.map(|()| true),
        Err(_) => {
            tracing::warn!(%key, "test hook: nobody said resume within {REMOTE_HOLD_LIMIT:?}; going on");
            Ok(true)
        }
    }
}
