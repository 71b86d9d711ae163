//! What the primitives share, private to the crate. Each file is one concern; the
//! arrows of `use` point one way only (a file uses the ones listed before it, never
//! one after it, and none of them uses a primitive):
//!
//! | file | what it holds |
//! |---|---|
//! | [`key`] | the key layout shared with Go's client (`name/` prefixes, lease-id keys, timestamped unique keys) and small readers of etcd responses |
//! | [`retry`] | running an etcd call again on transient failures, with exponential back-off |
//! | [`watch`] | watching one key or prefix from now; waiting for a key to reach a state or for one incarnation of it to go |
//! | [`delete_feed`] | the live watch per prefix a session's waiters share (used by `Session`) |
//! | [`owned`] | creating keys cancel-safely, owning them, releasing them by compare-and-delete (also from destructors) |
//! | [`waiters`] | the queue of waiters Mutex and Election share: enter, wait for your turn, release |
//!
//! `delete_feed` sits below [`crate::session`] (a session owns its feeds); `owned` and
//! `waiters` sit above it (they take a `Session`).

pub(crate) mod delete_feed;
pub(crate) mod key;
pub(crate) mod owned;
pub(crate) mod retry;
pub(crate) mod waiters;
pub(crate) mod watch;
