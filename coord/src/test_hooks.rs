//! Test-only hooks (feature `test-hooks`, enabled by coord's own integration tests and
//! never by a normal build; not an API): they stop the library at a moment a test
//! needs to act in, announce that moment, and wait for the test's go-ahead.
//!
//! - [`lose_first_compare_delete`]: the next compare-and-delete of a key fails its
//!   first attempt as if etcd's answer had been lost, and stops before the retry.
//! - [`silence_keepalives`]: a session keeps no keepalive of a lease from reaching
//!   etcd, as if the network dropped them (the session then lives on its deadline).
//! - [`hold_next`]: the next time the library reaches a named moment (see
//!   [`claim_moment`]), it announces it and waits for the test's go-ahead.

use std::collections::HashMap;
use std::sync::Mutex as StdMutex;

use tokio::sync::oneshot;

/// Leases whose keepalives are not sent.
static SILENCED: StdMutex<Vec<i64>> = StdMutex::new(Vec::new());

/// From now on, sessions send no keepalive for `lease` (before or after it is resumed).
pub fn silence_keepalives(lease: i64) {
    SILENCED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(lease);
}

/// Whether keepalives of `lease` are silenced.
pub(crate) fn keepalives_silenced(lease: i64) -> bool {
    SILENCED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&lease)
}

/// Armed compare-and-deletes, by key: where to announce the retry, and the go-ahead.
static COMPARE_DELETES: StdMutex<Option<HashMap<String, Armed>>> = StdMutex::new(None);

struct Armed {
    /// The first attempt has been failed; the next one announces itself.
    failed_once: bool,
    announce: oneshot::Sender<()>,
    go: oneshot::Receiver<()>,
}

/// Makes the next compare-and-delete of `key` fail its first attempt with a transient
/// error (nothing is sent to etcd). Before its retry, it sends on the first returned
/// channel and waits until the test sends on the second.
pub fn lose_first_compare_delete(key: &str) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
    let (announce, retrying) = oneshot::channel();
    let (go_on, go) = oneshot::channel();
    let mut armed = COMPARE_DELETES.lock().unwrap_or_else(|p| p.into_inner());
    armed.get_or_insert_with(HashMap::new).insert(
        key.to_owned(),
        Armed {
            failed_once: false,
            announce,
            go,
        },
    );
    (retrying, go_on)
}

/// Called by each compare-and-delete attempt on `key`: `Some(error)` fails the attempt.
pub(crate) async fn compare_delete_attempt(key: &str) -> Option<etcd_client::Error> {
    let go = {
        let mut armed = COMPARE_DELETES.lock().unwrap_or_else(|p| p.into_inner());
        let entries = armed.as_mut()?;
        let entry = entries.get_mut(key)?;
        if !entry.failed_once {
            entry.failed_once = true;
            return Some(etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
                "answer lost (test hook)",
            )));
        }
        let Armed { announce, go, .. } = entries.remove(key)?;
        let _ = announce.send(());
        go
    };
    let _ = go.await;
    None
}

/// An armed moment: where to announce that it came, and the go-ahead to wait for.
type Held = (oneshot::Sender<()>, oneshot::Receiver<()>);

/// Armed moments, by name.
static MOMENTS: StdMutex<Option<HashMap<String, Held>>> = StdMutex::new(None);

/// The moment a work queue named `queue` (as given to `WorkQueue::new`) has read the
/// head of the queue and is about to send the transaction that claims an item.
pub fn claim_moment(queue: &str) -> String {
    format!("claim {}", queue.trim_end_matches('/'))
}

/// The next time the library reaches `moment`, it sends on the first returned channel
/// and waits until the test sends on the second (or drops it).
pub fn hold_next(moment: &str) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
    let (announce, reached) = oneshot::channel();
    let (go_on, go) = oneshot::channel();
    MOMENTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(moment.to_owned(), (announce, go));
    (reached, go_on)
}

/// Called by the library at `moment`: waits there if a test armed it.
pub(crate) async fn reached(moment: &str) {
    let armed = MOMENTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_mut()
        .and_then(|moments| moments.remove(moment));
    if let Some((announce, go)) = armed {
        let _ = announce.send(());
        let _ = go.await;
    }
}
