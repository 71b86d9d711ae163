//! The one error type of the crate.
//!
//! Every fallible call in `coord` returns [`Result<T>`]. The variants name what went
//! wrong in the terms of the primitive (a lock is held, a session is gone, nobody
//! leads) so that callers can branch on them; transport and server failures are
//! wrapped unchanged in [`Error::Etcd`].

use std::time::Duration;

/// Everything that can go wrong in `coord`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `try_lock` (or a `try_*` of another primitive) found the resource held by someone else.
    #[error("{0} is held by another session")]
    Locked(String),

    /// The session's lease is gone (expired, revoked, or never existed). Anything
    /// acquired under it is no longer held; the call did not succeed.
    #[error("session expired: lease {0:x} is gone")]
    SessionExpired(i64),

    /// A lock or leadership that this handle held was lost: its key was deleted or
    /// replaced (the lease expired while the holder ran, or someone removed the key).
    /// Nothing was written under the lost ownership.
    #[error("ownership of {0} was lost: the key is gone or belongs to someone else")]
    OwnershipLost(String),

    /// A release (unlock, resign, a permit or lock guard's release) retried its
    /// compare-and-delete after a failed attempt and found the key already gone: the
    /// earlier attempt may have deleted it (its answer was lost), or the key went on
    /// its own (lease expiry, another client). It is released either way; whether it
    /// was still ours until then is unknown, so where exclusivity matters treat this
    /// like [`Error::OwnershipLost`].
    #[error("release of {0} unconfirmed: a retried delete found the key already gone")]
    ReleaseUnconfirmed(String),

    /// An election operation that needs leadership (proclaim) was called by a non-leader.
    #[error("not the leader of election {0}")]
    NotLeader(String),

    /// Nobody currently leads the election.
    #[error("election {0} has no leader")]
    NoLeader(String),

    /// A double barrier already has as many participants as its count allows.
    #[error("double barrier {0} is full")]
    TooManyClients(String),

    /// A key that must be new already exists (barrier hold, unique keys).
    #[error("key {0} already exists")]
    KeyExists(String),

    /// A software transaction kept conflicting and gave up after this many attempts.
    #[error("transaction conflicted {0} times in a row; gave up")]
    TooManyConflicts(u32),

    /// A blocking call did not finish within its timeout. Nothing it started is left
    /// behind (waiter keys are removed, as on any cancellation).
    #[error("timed out after {0:?}")]
    Timeout(Duration),

    /// The caller passed something unusable: an empty name, a zero count, a TTL that
    /// etcd cannot grant. The message says which.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The revision a watch or read needed was compacted away and the operation could not
    /// recover by itself.
    #[error("revision {0} was compacted")]
    Compacted(i64),

    /// A queue item could not be decoded (wrong format, not written by this crate).
    #[error("malformed item at {key}: {reason}")]
    Malformed {
        /// The etcd key of the item.
        key: String,
        /// What was wrong with it.
        reason: String,
    },

    /// etcd refused the configured user name or password (or auth is enabled and none
    /// was given). Retrying with the same credentials cannot succeed.
    #[error("etcd authentication failed for user {user:?}: {reason}")]
    Authentication {
        /// The user that was tried (empty when none was configured).
        user: String,
        /// What etcd said.
        reason: String,
    },

    /// No connection to etcd could be opened: nothing answered, or the TLS handshake
    /// failed (an unknown CA, a server that speaks TLS to a client that does not, or
    /// the other way round). The message says which endpoints and whether TLS was on.
    #[error("cannot connect to etcd at {endpoints} (TLS {}): {source}{}", on_off(.tls), connect_hint(.tls, .source))]
    Connect {
        /// The endpoints that were tried, comma-separated.
        endpoints: String,
        /// Whether TLS was configured.
        tls: bool,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },

    /// A blocking call (e.g. [`crate::Locker::lock`]) was made on a thread inside a Tokio
    /// runtime, where blocking would stall or deadlock it. Nothing was done. Call it from
    /// a plain thread; async code uses the async primitive ([`crate::Mutex`]).
    #[error("{0} blocks its thread and was called inside a Tokio runtime; call it from a plain thread, or use the async API")]
    BlockingInAsync(&'static str),

    /// The etcd client or server failed (unavailable, timeout at the transport, auth …).
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
}

/// `std::result::Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the error says the session (and so everything held under it) is gone.
    pub fn is_session_expired(&self) -> bool {
        matches!(self, Error::SessionExpired(_))
    }

    /// True for failures that may succeed when tried again (etcd unavailable, a
    /// timeout): a caller's retry loop can use it to decide.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Timeout(_) => true,
            Error::Etcd(e) => is_transient(e),
            Error::Connect { source, .. } => is_transient(source),
            _ => false,
        }
    }
}

fn on_off(flag: &bool) -> &'static str {
    if *flag {
        "on"
    } else {
        "off"
    }
}

/// A sentence after a connection failure that points at the likely TLS mistake.
fn connect_hint(tls: &bool, source: &etcd_client::Error) -> &'static str {
    let text = format!("{source:?}");
    let tls = *tls;
    if tls && (text.contains("certificate") || text.contains("Certificate")) {
        "; the server's certificate is not signed by the CA in ETCD_CA_FILE (or does not name this host: set ETCD_TLS_SERVER_NAME)"
    } else if tls {
        "; if the server does not use TLS, unset ETCD_CA_FILE"
    } else {
        "; if the server requires TLS, set ETCD_CA_FILE (and https:// endpoints)"
    }
}

/// Whether an etcd client error is worth retrying: the connection, not the request,
/// failed (unavailable, leader change, deadline, a broken stream).
pub(crate) fn is_transient(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::TransportError(_)
        | etcd_client::Error::IoError(_)
        | etcd_client::Error::WatchError(_)
        | etcd_client::Error::LeaseKeepAliveError(_) => true,
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Unknown => true,
            // etcd's "too many requests" (its apply loop is behind): overload, which
            // passes. Other ResourceExhausted (a message over the size limit) do not.
            Code::ResourceExhausted => status.message().contains("too many requests"),
            _ => false,
        },
        _ => false,
    }
}

/// Runs `fut` for at most `limit`; on time-out the future is dropped (every `coord`
/// future cleans up after itself when dropped) and [`Error::Timeout`] is returned.
///
/// This is the timeout form of every blocking call in the crate:
/// `coord::timeout(Duration::from_secs(2), mutex.lock()).await`.
pub async fn timeout<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout(limit)),
    }
}

#[cfg(test)]
mod transient_tests {
    use super::*;

    /// Issue 16, defect 9: an overloaded etcd ("too many requests") is transient, so a
    /// LeaderJob or a retried call waits it out instead of failing over; an oversized
    /// request (also ResourceExhausted) is not.
    #[test]
    fn too_many_requests_is_transient_but_too_large_is_not() {
        let status = |msg: &str| {
            etcd_client::Error::GRpcStatus(tonic::Status::resource_exhausted(msg.to_owned()))
        };
        assert!(is_transient(&status("etcdserver: too many requests")));
        assert!(Error::from(status("etcdserver: too many requests")).is_retryable());
        assert!(!is_transient(&status(
            "grpc: received message larger than max (4194305 vs. 2097152)"
        )));
    }
}
