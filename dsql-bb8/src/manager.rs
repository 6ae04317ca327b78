//! [`DsqlConnectionManager`]: bb8's hook, connecting through dsql-tokio-postgres.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dsql_auth_core::PoolPolicy;
use dsql_auth_core::limits::ConnectFailures;
use dsql_tokio_postgres::Config;
use dsql_tokio_postgres::tokio_postgres::Client;

use crate::error::Error;

/// The connect failures of one pool, recorded by its manager and reported by [`Pool::get`](crate::Pool::get).
pub(crate) type Failures = ConnectFailures<Arc<dsql_tokio_postgres::Error>>;

/// A [`bb8::ManageConnection`] for DSQL: every new connection is opened with
/// [`dsql_tokio_postgres::connect`], so it authenticates with a token that is valid right then,
/// and connect refusals (53400, 53300) are retried with the configuration's policy.
///
/// Each connection gets its own lifetime, drawn between `max_lifetime × (1 − jitter)` and
/// `max_lifetime`; past it the connection fails `is_valid` and `has_broken` and bb8 replaces it.
/// Validation (bb8's `test_on_check_out`) is an empty query, one round trip.
///
/// Usable with a plain [`bb8::Builder`]; [`Pool`](crate::Pool) adds DSQL defaults and reports
/// connect failures to waiting callers instead of a timeout.
#[derive(Clone, Debug)]
pub struct DsqlConnectionManager {
    config: Config,
    policy: PoolPolicy,
    failures: Failures,
}

impl DsqlConnectionManager {
    /// A manager for `config`, with the core's [`PoolPolicy::default`] lifetimes (55 minutes,
    /// jitter 0.1).
    pub fn new(config: Config) -> Self {
        Self {
            config,
            policy: PoolPolicy::default(),
            failures: Failures::new(),
        }
    }

    /// Uses `policy` (lifetime and jitter; a [`Pool`](crate::Pool) applies the rest) after
    /// checking it.
    pub fn with_policy(mut self, policy: PoolPolicy) -> Result<Self, Error> {
        policy.validate().map_err(Error::config)?;
        self.policy = policy;
        Ok(self)
    }

    /// The connection configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The maximum connection lifetime.
    pub fn max_lifetime(&self) -> Option<Duration> {
        self.policy.max_lifetime
    }

    pub(crate) fn failures(&self) -> &Failures {
        &self.failures
    }

    fn draw_lifetime(&self) -> Option<Duration> {
        self.policy.draw_lifetime(rand::random::<f64>())
    }
}

impl bb8::ManageConnection for DsqlConnectionManager {
    type Connection = DsqlClient;
    type Error = Error;

    async fn connect(&self) -> Result<DsqlClient, Error> {
        match dsql_tokio_postgres::connect_spawned(&self.config).await {
            Ok(client) => {
                let lifetime = self.draw_lifetime();
                Ok(DsqlClient {
                    client,
                    expires_at: lifetime.map(|l| Instant::now() + l),
                })
            }
            Err(err) => {
                tracing::warn!(
                    host = self.config.endpoint().connect_host(),
                    kind = ?err.kind(),
                    error = %err,
                    "opening a pooled DSQL connection failed"
                );
                let err = Arc::new(err);
                self.failures.record(err.clone());
                Err(Error::connect(err))
            }
        }
    }

    async fn is_valid(&self, conn: &mut DsqlClient) -> Result<(), Error> {
        if conn.is_expired() {
            return Err(Error::expired());
        }
        conn.client
            .simple_query("")
            .await
            .map(|_| ())
            .map_err(Error::invalid)
    }

    fn has_broken(&self, conn: &mut DsqlClient) -> bool {
        conn.client.is_closed() || conn.is_expired()
    }
}

/// A pooled DSQL connection: a tokio-postgres [`Client`] (through `Deref` and `DerefMut`, so
/// `&mut conn` serves [`dsql_tokio_postgres::transaction_with_retry`]) and its retirement time.
#[derive(Debug)]
pub struct DsqlClient {
    client: Client,
    expires_at: Option<Instant>,
}

impl DsqlClient {
    /// When the pool retires this connection (its jittered lifetime), if it has a lifetime.
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    /// True once the connection is past its lifetime.
    pub fn is_expired(&self) -> bool {
        self.expires_at.is_some_and(|at| Instant::now() >= at)
    }
}

impl Deref for DsqlClient {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for DsqlClient {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifetime(max_lifetime: Option<Duration>, lifetime_jitter: f64) -> PoolPolicy {
        PoolPolicy {
            max_lifetime,
            lifetime_jitter,
            ..PoolPolicy::default()
        }
    }

    fn manager() -> DsqlConnectionManager {
        let config: Config = "host=abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws"
            .parse()
            .unwrap();
        DsqlConnectionManager::new(config)
    }

    #[test]
    fn lifetimes_are_jittered_below_the_maximum() {
        let m = manager()
            .with_policy(lifetime(Some(Duration::from_secs(100)), 0.1))
            .unwrap();
        let draws: Vec<Duration> = (0..2000).map(|_| m.draw_lifetime().unwrap()).collect();
        assert!(
            draws
                .iter()
                .all(|d| *d > Duration::from_secs(90) && *d <= Duration::from_secs(100))
        );
        // Spread over the range, not one value: connections opened together retire apart.
        let (lo, hi) = (draws.iter().min().unwrap(), draws.iter().max().unwrap());
        assert!(*hi - *lo > Duration::from_secs(5), "{lo:?}..{hi:?}");

        let defaults = manager();
        assert_eq!(
            defaults.max_lifetime(),
            Some(dsql_auth_core::limits::DEFAULT_MAX_LIFETIME)
        );
        assert!(defaults.draw_lifetime().unwrap() < Duration::from_secs(60 * 60));
        assert_eq!(
            manager()
                .with_policy(lifetime(None, 0.5))
                .unwrap()
                .draw_lifetime(),
            None
        );
    }

    #[test]
    fn lifetime_settings_out_of_range_are_errors() {
        for jitter in [-0.1, 1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                manager().with_policy(lifetime(Some(Duration::from_secs(1)), jitter)),
                Err(e) if e.kind() == crate::ErrorKind::Config
            ));
        }
        let err = manager()
            .with_policy(lifetime(Some(Duration::ZERO), 0.0))
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config, "{err}");
        assert!(err.to_string().contains("max_lifetime"), "{err}");
    }
}
