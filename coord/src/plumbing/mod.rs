//! Talking to etcd, below any notion of a session: the key layout, retries, watches,
//! and the shared delete watches a [`crate::Session`] keeps for its waiters. Private to
//! the crate. Nothing here uses a `Session` (the session uses [`delete_feed`]), so
//! `plumbing` ← `session` ← `ownership` ← the primitives is the one direction of use.
//!
//! | file | what it holds |
//! |---|---|
//! | [`key`] | the key layout shared with Go's client (`name/` prefixes, lease-id keys, timestamped unique keys) and small readers of etcd responses |
//! | [`retry`] | running an etcd call again on transient failures, with exponential back-off |
//! | [`watch`] | watching one key or prefix from now; waiting for a key to reach a state or for one incarnation of it to go |
//! | [`delete_feed`] | one live watch per prefix, its deletes broadcast to the waits of a session |
//!
//! Within the folder, a file uses only files listed above it.

pub(crate) mod delete_feed;
pub(crate) mod key;
pub(crate) mod retry;
pub(crate) mod watch;
