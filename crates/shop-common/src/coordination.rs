//! The process's one etcd session, shared by every request.
//!
//! A service keeps **one** [`coord::Session`] (one lease) for all its locks: creating a
//! lease per request would cost an etcd commit each and flood etcd with leases. The
//! session is created on first use, not at start-up, so a service whose etcd is down
//! still starts and serves everything that does not need etcd (the `pg` strategy,
//! reads); and it is created again when lost (etcd was unreachable for a whole TTL), so
//! the process heals when etcd comes back. Locks held under a lost session are gone:
//! their holders find out through the fencing token.

use std::time::Duration;

use coord::Session;
use tokio::sync::Mutex;

use crate::config::EtcdSettings;

/// Hands out the current live session, replacing it when it is lost.
pub struct SharedSession {
    settings: EtcdSettings,
    /// The client (connects lazily) and the current session. A tokio mutex: creating
    /// a session is an etcd round trip, and concurrent callers should wait for that one
    /// creation instead of each granting a lease.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    client: Option<coord::etcd_client::Client>,
    session: Option<Session>,
}

impl SharedSession {
    pub fn new(settings: EtcdSettings) -> SharedSession {
        SharedSession {
            settings,
            state: Mutex::new(State::default()),
        }
    }

    /// The key prefix configured for this shop (`/shop`).
    pub fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    /// A live session: the current one, or a new one if there is none yet or it was
    /// lost. Fails when etcd cannot be reached (bound it with `coord::timeout`).
    pub async fn get(&self) -> coord::Result<Session> {
        let mut state = self.state.lock().await;
        if let Some(session) = &state.session {
            if !session.is_expired() {
                return Ok(session.clone());
            }
            tracing::warn!(
                lease = format_args!("{:x}", session.lease()),
                "etcd session lost; starting a new one"
            );
        }
        let client = Self::connected(&self.settings, &mut state).await?;
        let session = Session::builder(client)
            .ttl(self.settings.session_ttl)
            .build()
            .await?;
        tracing::info!(
            lease = format_args!("{:x}", session.lease()),
            ttl = session.ttl(),
            "etcd session started"
        );
        state.session = Some(session.clone());
        Ok(session)
    }

    /// The etcd client (connected on first use), for work that needs no session.
    pub async fn client(&self) -> coord::Result<coord::etcd_client::Client> {
        let mut state = self.state.lock().await;
        Self::connected(&self.settings, &mut state).await
    }

    async fn connected(
        settings: &EtcdSettings,
        state: &mut State,
    ) -> coord::Result<coord::etcd_client::Client> {
        if let Some(client) = &state.client {
            return Ok(client.clone());
        }
        let client = settings.config.connect().await?;
        state.client = Some(client.clone());
        Ok(client)
    }

    /// Revokes the session's lease (releasing every lock it holds at once). Called on
    /// shutdown, after the server has drained; bounded so a dead etcd cannot hang exit.
    pub async fn close(&self) {
        let session = self.state.lock().await.session.take();
        if let Some(session) = session {
            match tokio::time::timeout(Duration::from_secs(2), session.close()).await {
                Ok(Ok(())) => tracing::info!("etcd session closed"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "closing the etcd session failed; its lease will expire")
                }
                Err(_) => {
                    tracing::warn!("closing the etcd session timed out; its lease will expire")
                }
            }
        }
    }
}
