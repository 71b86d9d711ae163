//! Keys a session holds for a primitive, private to the crate: creating them
//! cancel-safely, owning them and releasing them by compare-and-delete, and the queue
//! of waiters that Mutex and Election share. Uses [`crate::plumbing`] and
//! [`crate::Session`]; used only by the primitives.
//!
//! | file | what it holds |
//! |---|---|
//! | [`owned`] | creating keys cancel-safely ([`owned::PendingPut`]), owning them ([`owned::OwnedKey`]), releasing them by compare-and-delete, also from destructors |
//! | [`waiters`] | the queue of waiters: enter, wait for your turn (on the session's delete feed), release |
//!
//! `waiters` uses `owned`, never the other way round.

pub(crate) mod owned;
pub(crate) mod waiters;
