//! Retrying a gRPC call that failed UNAVAILABLE, the way gRPC's own retry policy does:
//! exponential back-off with full jitter, a bounded number of attempts and a bounded
//! time. Every client of the shop retries through [`Backoff::retry`]: the services'
//! calls to their peers, shopctl and the load tester.
//!
//! The pause before retry `n` (n = 1, 2, …) is uniform in `[0, min(cap, base · 2^(n-1))]`
//! ("full jitter"): callers that failed together spread out instead of returning
//! together, and a replica that is coming back sees a trickle, not a storm. Only
//! UNAVAILABLE is retried (the call did not reach a handler, or the handler said its
//! dependency is down), and the transport's error of a connection that broke or
//! closed before an answer ([`is_retryable`]): every other code is an answer. Retry only calls that are
//! idempotent — every shop call is, by order id or idempotency key.
//!
//! ```
//! # async fn example() -> Result<(), tonic::Status> {
//! use shop_common::retry::Backoff;
//! let answer = Backoff::default()
//!     .retry(|| async { Ok::<_, tonic::Status>(42) })
//!     .await?;
//! assert_eq!(answer, 42);
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tonic::{Code, Status};

/// A retry policy; [`Backoff::default`] is the shop's (50 ms, 2 s, 6 attempts, 10 s).
#[derive(Debug)]
pub struct Backoff {
    /// Ceiling of the first pause; doubles with each retry.
    pub base: Duration,
    /// Largest ceiling of a pause.
    pub cap: Duration,
    /// Calls made at most, the first included.
    pub max_attempts: u32,
    /// No retry starts after this much time since the first call.
    pub max_elapsed: Duration,
    /// Source of the jitter; seeded in tests so a run is repeatable.
    rng: Mutex<StdRng>,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new(
            Duration::from_millis(50),
            Duration::from_secs(2),
            6,
            Duration::from_secs(10),
        )
    }
}

impl Clone for Backoff {
    fn clone(&self) -> Backoff {
        Backoff::new(self.base, self.cap, self.max_attempts, self.max_elapsed)
    }
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration, max_attempts: u32, max_elapsed: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            max_attempts: max_attempts.max(1),
            max_elapsed,
            rng: Mutex::new(StdRng::from_os_rng()),
        }
    }

    /// The same policy with its jitter drawn from `seed` (repeatable).
    pub fn seeded(self, seed: u64) -> Backoff {
        Backoff {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            ..self
        }
    }

    /// The ceiling of the pause before retry `retry` (1 for the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let doubled = self.base.saturating_mul(
            1u32.checked_shl(retry.saturating_sub(1))
                .unwrap_or(u32::MAX),
        );
        doubled.min(self.cap)
    }

    /// The pause before retry `retry`: uniform in `[0, ceiling(retry)]`.
    pub fn pause(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        ceiling.mul_f64(rng.random::<f64>())
    }

    /// Calls `call` until it answers anything but UNAVAILABLE, at most `max_attempts`
    /// times and not starting a retry after `max_elapsed`; the last answer is returned.
    pub async fn retry<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            match call().await {
                Err(status) if is_retryable(&status) => {
                    let pause = self.pause(attempt);
                    if attempt >= self.max_attempts || started.elapsed() + pause >= self.max_elapsed
                    {
                        return Err(status);
                    }
                    tracing::debug!(
                        attempt,
                        ?pause,
                        message = status.message(),
                        "UNAVAILABLE; retrying"
                    );
                    metrics::counter!("shop_client_retries_total").increment(1);
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                answer => return answer,
            }
        }
    }
}

/// UNAVAILABLE, or any status tonic made from a transport error: the connection
/// broke or was closed before an answer (UNKNOWN "transport error", CANCELLED
/// "connection closed"), which is the same outage seen a moment later. A handler's
/// own answer — whatever its code — is not retried.
pub fn is_retryable(status: &Status) -> bool {
    status.code() == Code::Unavailable
        || std::error::Error::source(status)
            .is_some_and(|source| source.is::<tonic::transport::Error>())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn pauses_grow_exponentially_up_to_the_cap_with_full_jitter() {
        let backoff = Backoff::default().seeded(7);
        let ceilings: Vec<u128> = (1..=8).map(|n| backoff.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(backoff.ceiling(100), Duration::from_secs(2), "no overflow");
        let pauses: Vec<Duration> = (0..200).map(|_| backoff.pause(3)).collect();
        assert!(pauses.iter().all(|p| *p <= Duration::from_millis(200)));
        // Full jitter: pauses spread over the whole range, not bunched at the ceiling.
        assert!(pauses.iter().any(|p| *p < Duration::from_millis(50)));
        assert!(pauses.iter().any(|p| *p > Duration::from_millis(150)));
    }

    #[tokio::test]
    async fn only_unavailable_is_retried_and_attempts_are_bounded() {
        let ms = Duration::from_millis;
        let backoff = Backoff::new(ms(1), ms(4), 6, Duration::from_secs(10)).seeded(1);
        let calls = AtomicU32::new(0);
        let unavailable = backoff
            .retry(|| async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(Status::unavailable("down"))
            })
            .await;
        assert_eq!(unavailable.unwrap_err().code(), Code::Unavailable);
        assert_eq!(calls.swap(0, Ordering::Relaxed), 6, "max_attempts calls");
        let refused = backoff
            .retry(|| async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(Status::invalid_argument("bad"))
            })
            .await;
        assert_eq!(refused.unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(calls.load(Ordering::Relaxed), 1, "an answer is not retried");
    }
}
