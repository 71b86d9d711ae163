//! Test-only hooks (feature `test-hooks`): a test can hold one order's Reserve or
//! Release at a named moment ([`Moment`]) and is told when it is there. Enabled only
//! by dev-dependencies (this crate's own on itself, the harness's); no normal build
//! has this module.

use std::collections::HashMap;
use std::sync::Mutex;

use shop_common::domain::OrderId;
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
