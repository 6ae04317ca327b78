//! DSQL's documented service limits, and the pool policy every pool adapter applies because of
//! them.
//!
//! The limits are AWS's published quotas (2026); clients cannot change them. The pool policy is
//! what a pool needs to live with them: connections retired before DSQL closes them at 60
//! minutes, each at its own time; idle connections closed; connections validated on checkout;
//! connect failures that no retry can fix reported at once.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::time::Duration;

use crate::error::{Error, ErrorKind};

/// DSQL closes every connection after 60 minutes.
pub const MAX_CONNECTION_DURATION: Duration = Duration::from_secs(60 * 60);
/// Open connections per cluster (beyond it: SQLSTATE 53300, "too many open connections").
pub const MAX_CONNECTIONS_PER_CLUSTER: u32 = 10_000;
/// New connections per second per cluster, sustained (beyond it: SQLSTATE 53400, "rate exceeded").
pub const CONNECTION_RATE_PER_SEC: u32 = 100;
/// New connections per cluster in a burst, above the sustained rate.
pub const CONNECTION_BURST: u32 = 1_000;
/// Longest token lifetime DSQL accepts (7 days).
pub const MAX_TOKEN_DURATION: Duration = Duration::from_secs(604_800);
/// Token lifetime the AWS SDKs and CLI use unless told otherwise.
pub const DEFAULT_TOKEN_DURATION: Duration = Duration::from_secs(900);
/// Rows one transaction may modify (SQLSTATE 54000 beyond it).
pub const MAX_ROWS_PER_TRANSACTION: u32 = 3_000;
/// Bytes of changes one transaction may make (SQLSTATE 54000 at commit beyond it).
pub const MAX_TRANSACTION_BYTES: u64 = 10 * 1024 * 1024;
/// Documented maximum age of a transaction.
pub const MAX_TRANSACTION_DURATION: Duration = Duration::from_secs(5 * 60);

/// How a pool of DSQL connections behaves; [`PoolPolicy::default`] is what every pool adapter
/// applies unless the user overrides it.
///
/// | setting | default | why |
/// |---|---|---|
/// | `max_lifetime` | 55 min | DSQL closes connections at 60 min ([`MAX_CONNECTION_DURATION`]) |
/// | `lifetime_jitter` | 0.1 | each connection lives 49.5–55 min, so connections opened together retire apart |
/// | `idle_timeout` | 10 min | as the official DSQL connectors |
/// | `test_on_check_out` | true | a connection the server or network closed is replaced, not handed out |
#[derive(Debug, Clone, PartialEq)]
pub struct PoolPolicy {
    /// Longest life of a pooled connection; `None` for none (DSQL still closes it at 60 min).
    pub max_lifetime: Option<Duration>,
    /// Fraction in `[0, 1)` by which each connection's lifetime is shortened at random.
    pub lifetime_jitter: f64,
    /// Close connections idle this long; `None` to keep them.
    pub idle_timeout: Option<Duration>,
    /// Validate idle connections before handing them out.
    pub test_on_check_out: bool,
}

/// Default per-connection maximum lifetime: 55 minutes, under DSQL's 60.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(55 * 60);
/// Default lifetime jitter: each connection lives between 90% and 100% of the maximum.
pub const DEFAULT_LIFETIME_JITTER: f64 = 0.1;
/// Default idle timeout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Default maximum number of connections in a pool (bb8's default; DSQL allows 10,000 per cluster).
pub const DEFAULT_POOL_MAX_SIZE: u32 = 10;
/// Default time a caller waits for a pooled connection (bb8's default).
pub const DEFAULT_POOL_WAIT: Duration = Duration::from_secs(30);

impl Default for PoolPolicy {
    fn default() -> Self {
        Self {
            max_lifetime: Some(DEFAULT_MAX_LIFETIME),
            lifetime_jitter: DEFAULT_LIFETIME_JITTER,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            test_on_check_out: true,
        }
    }
}

impl PoolPolicy {
    /// Checks the settings; the error says which one is wrong and what to give instead.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |msg: String| Err(Error::new(ErrorKind::InvalidPoolSettings, msg));
        if !(0.0..1.0).contains(&self.lifetime_jitter) {
            return invalid(format!(
                "lifetime jitter {} is out of range: give a fraction in [0, 1), e.g. 0.1 for lifetimes between 90% \
                 and 100% of the maximum",
                self.lifetime_jitter
            ));
        }
        if self.max_lifetime == Some(Duration::ZERO) {
            return invalid(
                "max_lifetime of 0 would retire every connection at once: give a positive duration (DSQL default \
                 55 min)"
                    .to_owned(),
            );
        }
        if self.idle_timeout == Some(Duration::ZERO) {
            return invalid(
                "idle_timeout of 0 would close every idle connection at once: give a positive duration or None"
                    .to_owned(),
            );
        }
        Ok(())
    }

    /// Checks the policy and a pool's own size and wait settings, which pools would otherwise
    /// panic on or misbehave with: `max_size` at least 1, `min_idle` at most `max_size`, a
    /// positive wait (named `wait_name` in the message, as the pool's builder calls it).
    pub fn validate_pool(
        &self,
        max_size: usize,
        min_idle: Option<usize>,
        wait_name: &str,
        wait: Duration,
    ) -> Result<(), Error> {
        self.validate()?;
        let invalid = |msg: String| Err(Error::new(ErrorKind::InvalidPoolSettings, msg));
        if max_size == 0 {
            return invalid(format!(
                "max_size must be at least 1 (default {DEFAULT_POOL_MAX_SIZE})"
            ));
        }
        if let Some(min_idle) = min_idle.filter(|m| *m > max_size) {
            return invalid(format!(
                "min_idle ({min_idle}) is larger than max_size ({max_size}): lower min_idle or raise max_size"
            ));
        }
        if wait.is_zero() {
            return invalid(format!(
                "{wait_name} must be positive (default {} s)",
                DEFAULT_POOL_WAIT.as_secs()
            ));
        }
        Ok(())
    }

    /// The lifetime of one new connection: `max_lifetime × (1 − jitter × random)`, `random` in
    /// `[0, 1)` (clamped; NaN counts as 0). `None` when there is no maximum.
    pub fn draw_lifetime(&self, random: f64) -> Option<Duration> {
        let random = if random.is_nan() {
            0.0
        } else {
            random.clamp(0.0, 1.0)
        };
        let jitter = if (0.0..1.0).contains(&self.lifetime_jitter) {
            self.lifetime_jitter
        } else {
            0.0
        };
        self.max_lifetime
            .map(|max| max.mul_f64(1.0 - jitter * random))
    }
}

/// Why opening a connection failed, as far as a pool needs to know. Adapters map their driver's
/// errors to it and ask [`is_fatal`](ConnectFailure::is_fatal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// The configuration cannot work (endpoint, TLS files, option combination).
    Config,
    /// No credentials, expired credentials, or signing failed.
    Credentials,
    /// The TLS handshake failed (untrusted or wrong certificate).
    Tls,
    /// DSQL refused the token.
    AccessDenied,
    /// The server rejected the session for another reason (e.g. an unsupported startup parameter).
    Rejected,
    /// DSQL kept refusing new connections (53400/53300) for the whole connect retry budget.
    Refused,
    /// The network failed or the connection closed before the session was ready.
    Network,
    /// The connect timeout elapsed.
    Timeout,
}

impl ConnectFailure {
    /// True for failures that retrying cannot fix: a pool reports them to waiting callers at once
    /// and never retries them. Network failures, timeouts and refusals may pass; the rest will
    /// not until someone changes the configuration, the credentials or IAM.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            ConnectFailure::Config
                | ConnectFailure::Credentials
                | ConnectFailure::Tls
                | ConnectFailure::AccessDenied
                | ConnectFailure::Rejected
        )
    }
}

/// The connect failures of one pool, shared by the code that opens its connections (which
/// [`record`](ConnectFailures::record)s them) and the pool's checkout (which reports them).
///
/// Pools answer a failed connect with a timeout (bb8) or a string (diesel-async's managers);
/// this keeps the typed error, so a checkout can fail at once with the real reason when it is
/// [fatal](ConnectFailure::is_fatal), and a timeout can name the last failure. Runtime-agnostic:
/// waiting is a plain future woken by `record`. Cheap to clone; clones share the record.
#[derive(Debug)]
pub struct ConnectFailures<E> {
    inner: Arc<Mutex<FailureLog<E>>>,
}

impl<E> Clone for ConnectFailures<E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<E> Default for ConnectFailures<E> {
    fn default() -> Self {
        Self {
            inner: Arc::new(Mutex::new(FailureLog {
                seq: 0,
                last: None,
                waiters: Vec::new(),
                next_waiter: 0,
            })),
        }
    }
}

#[derive(Debug)]
struct FailureLog<E> {
    /// Failures recorded so far: tells new failures from old ones.
    seq: u64,
    last: Option<E>,
    waiters: Vec<(u64, Waker)>,
    next_waiter: u64,
}

/// A point in a [`ConnectFailures`] record: failures recorded after it are "new".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureMark(u64);

impl<E: Clone> ConnectFailures<E> {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    fn log(&self) -> MutexGuard<'_, FailureLog<E>> {
        // A panic while holding the lock leaves the log consistent (plain field writes).
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a failed connect and wakes the checkouts waiting in [`until_fatal`](Self::until_fatal).
    pub fn record(&self, err: E) {
        let waiters = {
            let mut log = self.log();
            log.seq += 1;
            log.last = Some(err);
            std::mem::take(&mut log.waiters)
        };
        for (_, waker) in waiters {
            waker.wake();
        }
    }

    /// The current point: take it before a checkout starts.
    pub fn mark(&self) -> FailureMark {
        FailureMark(self.log().seq)
    }

    /// The last failure recorded after `mark`, if any (what a timed-out checkout reports).
    pub fn since(&self, mark: FailureMark) -> Option<E> {
        let log = self.log();
        log.last.clone().filter(|_| log.seq > mark.0)
    }

    /// Runs `checkout` until it finishes, or until a failure recorded after `mark` is fatal by
    /// `failure`'s classification, whichever comes first (`checkout` is polled first). A fatal
    /// failure is returned as `Err`: waiting longer cannot produce a connection.
    pub async fn until_fatal<F: Future>(
        &self,
        mark: FailureMark,
        failure: impl Fn(&E) -> ConnectFailure,
        checkout: F,
    ) -> Result<F::Output, E> {
        let mut checkout = std::pin::pin!(checkout);
        let waiter = WaiterSlot::new(self);
        let mut seen = mark.0;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = checkout.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            let mut log = self.log();
            if log.seq > seen {
                seen = log.seq;
                if let Some(err) = log.last.as_ref().filter(|e| failure(e).is_fatal()) {
                    return Poll::Ready(Err(err.clone()));
                }
            }
            log.waiters.retain(|(id, _)| *id != waiter.id);
            log.waiters.push((waiter.id, cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

/// One waiting checkout's place among the wakers; removed when the checkout ends or is dropped,
/// so a pool that never fails keeps no wakers.
struct WaiterSlot<'a, E> {
    failures: &'a ConnectFailures<E>,
    id: u64,
}

impl<'a, E: Clone> WaiterSlot<'a, E> {
    fn new(failures: &'a ConnectFailures<E>) -> Self {
        let mut log = failures.log();
        log.next_waiter += 1;
        let id = log.next_waiter;
        Self { failures, id }
    }
}

impl<E> Drop for WaiterSlot<'_, E> {
    fn drop(&mut self) {
        let mut log = self
            .failures
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        log.waiters.retain(|(id, _)| *id != self.id);
    }
}

/// The setters of a pool builder that hold a [`PoolPolicy`] in the field named `$policy`:
/// `max_lifetime`, `lifetime_jitter`, `idle_timeout`, `test_on_check_out` and `policy`, the
/// same in every pool adapter. Used inside the builder's `impl` block.
#[doc(hidden)]
#[macro_export]
macro_rules! pool_policy_setters {
    ($policy:ident) => {
        /// Longest life of a connection; `None` for unlimited (DSQL still closes it at 60
        /// minutes). Each connection's own lifetime is drawn below it (see `lifetime_jitter`).
        pub fn max_lifetime(
            mut self,
            max_lifetime: impl Into<Option<std::time::Duration>>,
        ) -> Self {
            self.$policy.max_lifetime = max_lifetime.into();
            self
        }

        /// Fraction in `[0, 1)` by which each connection's lifetime is shortened at random, so
        /// connections opened together retire apart.
        pub fn lifetime_jitter(mut self, jitter: f64) -> Self {
            self.$policy.lifetime_jitter = jitter;
            self
        }

        /// Close connections idle for this long; `None` to keep them.
        pub fn idle_timeout(
            mut self,
            idle_timeout: impl Into<Option<std::time::Duration>>,
        ) -> Self {
            self.$policy.idle_timeout = idle_timeout.into();
            self
        }

        /// Validate an idle connection (one round trip) before handing it out; each
        /// connection's own lifetime is checked either way.
        pub fn test_on_check_out(mut self, test: bool) -> Self {
            self.$policy.test_on_check_out = test;
            self
        }

        /// All of the core's pool policy at once.
        pub fn policy(mut self, policy: $crate::PoolPolicy) -> Self {
            self.$policy = policy;
            self
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_lifetimes_stay_below_dsqls_limit_and_spread() {
        let p = PoolPolicy::default();
        p.validate().unwrap();
        let lo = p.draw_lifetime(0.999_999).unwrap();
        let hi = p.draw_lifetime(0.0).unwrap();
        assert!(hi < MAX_CONNECTION_DURATION);
        assert_eq!(hi, DEFAULT_MAX_LIFETIME);
        assert!(lo >= Duration::from_secs(49 * 60 + 29), "{lo:?}");
        assert!(hi - lo > Duration::from_secs(5 * 60));
        assert_eq!(p.draw_lifetime(f64::NAN), Some(DEFAULT_MAX_LIFETIME));
    }

    #[test]
    fn bad_settings_are_errors() {
        for jitter in [-0.1, 1.0, f64::NAN, f64::INFINITY] {
            let p = PoolPolicy {
                lifetime_jitter: jitter,
                ..PoolPolicy::default()
            };
            assert_eq!(
                p.validate().unwrap_err().kind(),
                ErrorKind::InvalidPoolSettings
            );
        }
        let zero = PoolPolicy {
            max_lifetime: Some(Duration::ZERO),
            ..PoolPolicy::default()
        };
        assert!(
            zero.validate()
                .unwrap_err()
                .to_string()
                .contains("max_lifetime")
        );
    }

    #[test]
    fn pool_sizes_and_waits_are_checked() {
        let p = PoolPolicy::default();
        p.validate_pool(10, Some(10), "wait_timeout", DEFAULT_POOL_WAIT)
            .unwrap();
        for (max, min, wait, needle) in [
            (0, None, DEFAULT_POOL_WAIT, "max_size"),
            (2, Some(3), DEFAULT_POOL_WAIT, "min_idle (3)"),
            (2, None, Duration::ZERO, "wait_timeout must be positive"),
        ] {
            let err = p.validate_pool(max, min, "wait_timeout", wait).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidPoolSettings);
            assert!(err.to_string().contains(needle), "{err}");
        }
        let bad = PoolPolicy {
            lifetime_jitter: 2.0,
            ..PoolPolicy::default()
        };
        assert!(bad.validate_pool(1, None, "w", DEFAULT_POOL_WAIT).is_err());
    }

    #[test]
    fn fatal_failures() {
        assert!(ConnectFailure::AccessDenied.is_fatal());
        assert!(ConnectFailure::Tls.is_fatal());
        assert!(!ConnectFailure::Network.is_fatal());
        assert!(!ConnectFailure::Refused.is_fatal());
        assert!(!ConnectFailure::Timeout.is_fatal());
    }

    #[test]
    fn a_fatal_failure_ends_the_wait_and_others_do_not() {
        use std::task::{Context, Waker};
        let failures = ConnectFailures::<ConnectFailure>::new();
        let before = failures.mark();
        failures.record(ConnectFailure::AccessDenied);
        assert_eq!(failures.since(before), Some(ConnectFailure::AccessDenied));
        let mark = failures.mark();
        assert_eq!(
            failures.since(mark),
            None,
            "only failures after the mark count"
        );

        let mut cx = Context::from_waker(Waker::noop());
        let mut wait = Box::pin(failures.until_fatal(mark, |f| *f, std::future::pending::<()>()));
        assert!(
            wait.as_mut().poll(&mut cx).is_pending(),
            "an old failure is not reported"
        );
        failures.record(ConnectFailure::Network);
        assert!(
            wait.as_mut().poll(&mut cx).is_pending(),
            "a network failure may pass"
        );
        assert_eq!(
            failures.log().waiters.len(),
            1,
            "one waker per waiting checkout"
        );
        failures.record(ConnectFailure::Tls);
        assert_eq!(
            wait.as_mut().poll(&mut cx),
            Poll::Ready(Err(ConnectFailure::Tls))
        );
        drop(wait);
        assert!(
            failures.log().waiters.is_empty(),
            "a finished wait leaves no waker"
        );

        // The checkout itself wins when it is ready, even with a fatal failure recorded.
        let mark = failures.mark();
        failures.record(ConnectFailure::Config);
        let mut done = Box::pin(failures.until_fatal(mark, |f| *f, std::future::ready(7)));
        assert_eq!(done.as_mut().poll(&mut cx), Poll::Ready(Ok(7)));
        let mut dropped =
            Box::pin(failures.until_fatal(failures.mark(), |f| *f, std::future::pending::<()>()));
        assert!(dropped.as_mut().poll(&mut cx).is_pending());
        drop(dropped);
        assert!(
            failures.log().waiters.is_empty(),
            "a dropped wait leaves no waker"
        );
    }
}
