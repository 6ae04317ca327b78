//! DSQL's pool policy as both pools apply it: per-connection lifetimes drawn below DSQL's
//! 60-minute limit, the idle timeout, and which connect failures a pool must report at once.
//!
//! SEAM(core stage A): the numbers, the lifetime draw and `is_fatal` move to
//! `dsql_auth_core::limits`; this module then only forwards to it.

use std::time::Duration;

#[cfg(feature = "bb8")]
use dsql_tokio_postgres::ErrorKind;

#[cfg(any(feature = "bb8", feature = "deadpool"))]
use crate::error::Error;

/// Default maximum connection lifetime: 55 minutes, under DSQL's 60-minute limit.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(55 * 60);
/// Default lifetime jitter: each connection lives between 90% and 100% of the maximum, so
/// connections opened together are not all replaced together.
pub const DEFAULT_LIFETIME_JITTER: f64 = 0.1;
/// Default idle timeout: connections idle this long are closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Default time a caller waits for a pooled connection.
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Default maximum number of connections in a pool.
pub const DEFAULT_MAX_SIZE: u32 = 10;

/// The lifetime settings of a pool, checked.
#[cfg(any(feature = "bb8", feature = "deadpool"))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetimes {
    max: Option<Duration>,
    jitter: f64,
}

#[cfg(any(feature = "bb8", feature = "deadpool"))]
impl Lifetimes {
    pub(crate) fn new(max: Option<Duration>, jitter: f64) -> Result<Self, Error> {
        if !(0.0..1.0).contains(&jitter) {
            return Err(Error::config(format!(
                "lifetime jitter {jitter} is out of range: give a fraction in [0, 1), e.g. 0.1 for \
                 lifetimes between 90% and 100% of max_lifetime"
            )));
        }
        if max == Some(Duration::ZERO) {
            return Err(Error::config(
                "max_lifetime of 0 would retire every connection at once: give a positive duration \
                 (DSQL default 55 min) or None",
            ));
        }
        Ok(Self { max, jitter })
    }

    pub(crate) fn max(&self) -> Option<Duration> {
        self.max
    }

    /// One connection's lifetime, between `max × (1 − jitter)` and `max`.
    pub(crate) fn draw(&self) -> Option<Duration> {
        self.max
            .map(|max| max.mul_f64(1.0 - self.jitter * rand::random::<f64>()))
    }
}

#[cfg(any(feature = "bb8", feature = "deadpool"))]
/// Rejects a zero idle timeout or connection timeout (bb8 and deadpool would accept them and
/// then close every connection, or time out every caller).
pub(crate) fn check_timeouts(
    idle_timeout: Option<Duration>,
    connection_timeout: Duration,
    timeout_name: &str,
) -> Result<(), Error> {
    if idle_timeout == Some(Duration::ZERO) {
        return Err(Error::config(
            "idle_timeout of 0 would close every idle connection at once: give a positive duration or None",
        ));
    }
    if connection_timeout.is_zero() {
        return Err(Error::config(format!(
            "{timeout_name} must be positive (default 30 s)"
        )));
    }
    Ok(())
}

#[cfg(feature = "bb8")]
/// True for connect failures that retrying cannot fix: a pool reports them to waiting callers at
/// once rather than after its timeout.
pub(crate) fn is_fatal(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::AccessDenied
            | ErrorKind::Credentials
            | ErrorKind::Config
            | ErrorKind::Tls
            | ErrorKind::Db
    )
}

#[cfg(all(test, feature = "bb8"))]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_spread_below_the_maximum() {
        let l = Lifetimes::new(Some(Duration::from_secs(100)), 0.1).unwrap();
        let draws: Vec<Duration> = (0..2000).map(|_| l.draw().unwrap()).collect();
        assert!(
            draws
                .iter()
                .all(|d| *d > Duration::from_secs(90) && *d <= Duration::from_secs(100))
        );
        let (lo, hi) = (draws.iter().min().unwrap(), draws.iter().max().unwrap());
        assert!(*hi - *lo > Duration::from_secs(5), "{lo:?}..{hi:?}");
        assert!(
            Lifetimes::new(Some(DEFAULT_MAX_LIFETIME), DEFAULT_LIFETIME_JITTER)
                .unwrap()
                .draw()
                .unwrap()
                < Duration::from_secs(3600)
        );
        assert_eq!(Lifetimes::new(None, 0.5).unwrap().draw(), None);
    }

    #[test]
    fn out_of_range_settings_are_errors_naming_the_setting() {
        for jitter in [-0.1, 1.0, f64::NAN, f64::INFINITY] {
            let err = Lifetimes::new(Some(Duration::from_secs(1)), jitter).unwrap_err();
            assert!(err.to_string().contains("jitter"), "{err}");
        }
        let err = Lifetimes::new(Some(Duration::ZERO), 0.0).unwrap_err();
        assert!(err.to_string().contains("max_lifetime"), "{err}");
        let err = check_timeouts(
            Some(Duration::ZERO),
            Duration::from_secs(1),
            "connection_timeout",
        )
        .unwrap_err();
        assert!(err.to_string().contains("idle_timeout"), "{err}");
        let err = check_timeouts(None, Duration::ZERO, "connection_timeout").unwrap_err();
        assert!(err.to_string().contains("connection_timeout"), "{err}");
    }
}
