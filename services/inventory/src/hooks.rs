//! Test-only hooks (feature `test-hooks`): a test can hold one order's Reserve inside
//! its critical section — after the read, before the write — and is told when it is
//! there. Enabled only by this crate's own dev-dependency on itself; no normal build
//! has this module.

use std::collections::HashMap;
use std::sync::Mutex;

use shop_common::domain::OrderId;
use tokio::sync::oneshot;

type Waiting = (oneshot::Sender<()>, oneshot::Receiver<()>);

static PAUSES: Mutex<Option<HashMap<OrderId, Waiting>>> = Mutex::new(None);

/// A Reserve held inside its critical section: `inside` resolves once it has read,
/// dropping or sending on `resume` lets it write.
pub struct Pause {
    pub inside: oneshot::Receiver<()>,
    pub resume: oneshot::Sender<()>,
}

/// Arranges for `order`'s next Reserve (strategies none, mutex-unfenced, mutex) to
/// stop after its read and wait for [`Pause::resume`].
pub fn pause_in_section(order: OrderId) -> Pause {
    let (inside_tx, inside) = oneshot::channel();
    let (resume, resume_rx) = oneshot::channel();
    PAUSES
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(order, (inside_tx, resume_rx));
    Pause { inside, resume }
}

/// Called by the critical section between its read and its write.
pub(crate) async fn in_section(order: OrderId) {
    let waiting = PAUSES
        .lock()
        .unwrap()
        .as_mut()
        .and_then(|pauses| pauses.remove(&order));
    if let Some((inside, resume)) = waiting {
        let _ = inside.send(());
        let _ = resume.await;
    }
}
