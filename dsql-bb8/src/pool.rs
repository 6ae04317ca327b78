//! [`Pool`] and [`PoolBuilder`]: bb8 with DSQL's defaults, and connect failures reported to the
//! caller.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use bb8::{CustomizeConnection, ErrorSink, QueueStrategy, RunError};
use dsql_auth_core::PoolPolicy;
use dsql_tokio_postgres::Config;

use crate::error::Error;
use crate::manager::{DsqlClient, DsqlConnectionManager, Failures};

pub use dsql_auth_core::limits::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_LIFETIME_JITTER, DEFAULT_MAX_LIFETIME,
};
/// Default time a caller waits for a connection (bb8's default).
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Default maximum number of connections (bb8's default).
pub const DEFAULT_MAX_SIZE: u32 = 10;

/// A connection checked out of a [`Pool`]: bb8's own type; derefs to [`DsqlClient`] and on to
/// tokio-postgres' `Client`. Returned to the pool when dropped.
pub type PooledConnection<'a> = bb8::PooledConnection<'a, DsqlConnectionManager>;

/// A bb8 pool of DSQL connections.
///
/// It derefs to [`bb8::Pool<DsqlConnectionManager>`](bb8::Pool) (state, statistics,
/// `dedicated_connection`, `add`) and its [`get`](Pool::get) differs from bb8's in one way: when
/// opening a connection fails in a way retrying cannot fix (access denied, TLS, credentials,
/// configuration), waiting callers get that error at once instead of bb8's opaque timeout; and
/// a timeout carries the last connect failure. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Pool {
    inner: bb8::Pool<DsqlConnectionManager>,
    failures: Failures,
    connection_timeout: Duration,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("state", &self.inner.state())
            .field("connection_timeout", &self.connection_timeout)
            .finish_non_exhaustive()
    }
}

impl Deref for Pool {
    type Target = bb8::Pool<DsqlConnectionManager>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl Pool {
    /// A pool for `config` with DSQL's defaults (see [`PoolBuilder`]). Opens no connection yet.
    pub async fn new(config: Config) -> Result<Pool, Error> {
        PoolBuilder::new().build(config).await
    }

    /// A builder with DSQL's defaults.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
    }

    /// Checks a connection out: an idle one (validated first when `test_on_check_out`), or a new
    /// one. Errors: [`ErrorKind::Connect`](crate::ErrorKind::Connect) when opening a connection fails for a reason retrying
    /// cannot fix, reported as soon as it happens; [`ErrorKind::PoolTimeout`](crate::ErrorKind::PoolTimeout) after the connection
    /// timeout otherwise, with the last connect failure attached.
    pub async fn get(&self) -> Result<PooledConnection<'_>, Error> {
        self.with_failures(self.inner.get()).await
    }

    /// [`Pool::get`], returning a connection that owns a handle to the pool (`'static`).
    pub async fn get_owned(&self) -> Result<PooledConnection<'static>, Error> {
        self.with_failures(self.inner.get_owned()).await
    }

    /// bb8's pool.
    pub fn bb8(&self) -> &bb8::Pool<DsqlConnectionManager> {
        &self.inner
    }

    /// bb8's pool, by value (its `get` reports connect failures only as a timeout).
    pub fn into_bb8(self) -> bb8::Pool<DsqlConnectionManager> {
        self.inner
    }

    async fn with_failures<T>(
        &self,
        get: impl Future<Output = Result<T, RunError<Error>>>,
    ) -> Result<T, Error> {
        let mark = self.failures.mark();
        let failure = |e: &Arc<dsql_tokio_postgres::Error>| e.connect_failure();
        match self.failures.until_fatal(mark, failure, get).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(RunError::User(err))) => Err(err),
            Ok(Err(RunError::TimedOut)) => Err(Error::timed_out(
                self.connection_timeout,
                self.failures.since(mark),
            )),
            Err(fatal) => Err(Error::connect(fatal)),
        }
    }
}

/// Builds a [`Pool`] with DSQL's defaults: the core's [`PoolPolicy`] (lifetimes 49.5–55 min,
/// idle timeout 10 min, validation on checkout; see its table) and
///
/// | setting | default | why |
/// |---|---|---|
/// | `max_size` | 10 | bb8's default |
/// | `connection_timeout` | 30 s | bb8's default; connect failures that retrying cannot fix are reported at once |
///
/// Every other setting is bb8's default.
#[must_use]
pub struct PoolBuilder {
    max_size: u32,
    min_idle: Option<u32>,
    policy: PoolPolicy,
    connection_timeout: Duration,
    retry_connection: bool,
    reaper_rate: Option<Duration>,
    queue_strategy: QueueStrategy,
    error_sink: Option<Box<dyn ErrorSink<Error>>>,
    customizer: Option<Box<dyn CustomizeConnection<DsqlClient, Error>>>,
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("max_size", &self.max_size)
            .field("min_idle", &self.min_idle)
            .field("policy", &self.policy)
            .field("connection_timeout", &self.connection_timeout)
            .field("retry_connection", &self.retry_connection)
            .field("reaper_rate", &self.reaper_rate)
            .field("queue_strategy", &self.queue_strategy)
            .finish_non_exhaustive()
    }
}

impl Default for PoolBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PoolBuilder {
    /// DSQL's defaults (see the table above).
    pub fn new() -> Self {
        Self {
            max_size: DEFAULT_MAX_SIZE,
            min_idle: None,
            policy: PoolPolicy::default(),
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
            retry_connection: true,
            reaper_rate: None,
            queue_strategy: QueueStrategy::default(),
            error_sink: None,
            customizer: None,
        }
    }

    /// Maximum number of connections (at least 1).
    pub fn max_size(mut self, max_size: u32) -> Self {
        self.max_size = max_size;
        self
    }

    /// Idle connections the pool keeps open (at most `max_size`).
    pub fn min_idle(mut self, min_idle: impl Into<Option<u32>>) -> Self {
        self.min_idle = min_idle.into();
        self
    }

    dsql_auth_core::pool_policy_setters!(policy);

    /// How long [`Pool::get`] waits for a connection.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Let bb8 retry failed connection attempts in the background until the connection timeout
    /// (default true). DSQL's connect refusals are retried by the connect itself either way.
    pub fn retry_connection(mut self, retry: bool) -> Self {
        self.retry_connection = retry;
        self
    }

    /// How often bb8 looks for idle and expired connections to close (bb8's default: 30 s).
    pub fn reaper_rate(mut self, rate: Duration) -> Self {
        self.reaper_rate = Some(rate);
        self
    }

    /// FIFO (default) or LIFO checkout order.
    pub fn queue_strategy(mut self, strategy: QueueStrategy) -> Self {
        self.queue_strategy = strategy;
        self
    }

    /// Where bb8 sends errors no caller sees (failed background connects, failed validations).
    /// Default: logged with `tracing` at debug level.
    pub fn error_sink(mut self, sink: Box<dyn ErrorSink<Error>>) -> Self {
        self.error_sink = Some(sink);
        self
    }

    /// Runs on every new connection before it enters the pool.
    pub fn connection_customizer(
        mut self,
        customizer: Box<dyn CustomizeConnection<DsqlClient, Error>>,
    ) -> Self {
        self.customizer = Some(customizer);
        self
    }

    /// Builds the pool and waits for `min_idle` connections, if any (returning the first
    /// connect failure).
    pub async fn build(self, config: Config) -> Result<Pool, Error> {
        let (builder, manager, connection_timeout) = self.prepare(config)?;
        let failures = manager.failures().clone();
        let inner = builder.build(manager).await?;
        Ok(Pool {
            inner,
            failures,
            connection_timeout,
        })
    }

    /// Builds the pool without waiting; `min_idle` connections are opened in the background.
    /// Must be called inside a tokio runtime.
    pub fn build_unchecked(self, config: Config) -> Result<Pool, Error> {
        let (builder, manager, connection_timeout) = self.prepare(config)?;
        let failures = manager.failures().clone();
        let inner = builder.build_unchecked(manager);
        Ok(Pool {
            inner,
            failures,
            connection_timeout,
        })
    }

    /// Validates the settings (bb8 panics on some; we return errors) and makes bb8's builder.
    fn prepare(
        self,
        config: Config,
    ) -> Result<
        (
            bb8::Builder<DsqlConnectionManager>,
            DsqlConnectionManager,
            Duration,
        ),
        Error,
    > {
        if self.max_size == 0 {
            return Err(Error::config("max_size must be at least 1"));
        }
        if let Some(min_idle) = self.min_idle
            && min_idle > self.max_size
        {
            return Err(Error::config(format!(
                "min_idle ({min_idle}) is larger than max_size ({}): lower min_idle or raise max_size",
                self.max_size
            )));
        }
        if self.connection_timeout.is_zero() {
            return Err(Error::config("connection_timeout must be positive"));
        }
        if self.reaper_rate == Some(Duration::ZERO) {
            return Err(Error::config("reaper_rate must be positive"));
        }
        self.policy.validate().map_err(Error::config)?;
        let manager = DsqlConnectionManager::new(config)
            .with_lifetime(self.policy.max_lifetime, self.policy.lifetime_jitter)?;

        // bb8's own lifetime check is the upper bound of the jittered lifetimes: it also retires
        // idle connections that nobody checks out.
        let mut builder = bb8::Pool::builder()
            .max_size(self.max_size)
            .min_idle(self.min_idle)
            .max_lifetime(self.policy.max_lifetime)
            .idle_timeout(self.policy.idle_timeout)
            .connection_timeout(self.connection_timeout)
            .test_on_check_out(self.policy.test_on_check_out)
            .retry_connection(self.retry_connection)
            .queue_strategy(self.queue_strategy)
            .error_sink(
                self.error_sink
                    .unwrap_or_else(|| Box::new(TracingErrorSink)),
            );
        if let Some(rate) = self.reaper_rate {
            builder = builder.reaper_rate(rate);
        }
        if let Some(customizer) = self.customizer {
            builder = builder.connection_customizer(customizer);
        }
        Ok((builder, manager, self.connection_timeout))
    }
}

/// The default error sink: errors no caller sees are logged at debug level. Connect failures are
/// already logged at warn by the manager; retired and invalid connections are routine.
#[derive(Debug, Clone, Copy)]
struct TracingErrorSink;

impl ErrorSink<Error> for TracingErrorSink {
    fn sink(&self, error: Error) {
        tracing::debug!(error = %error, "DSQL pool event");
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<Error>> {
        Box::new(*self)
    }
}
