//! [`Pool`] and [`PoolBuilder`]: bb8 with DSQL's defaults, and connect failures reported to the
//! caller.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use bb8::{ErrorSink, RunError};
use dsql_auth_core::PoolPolicy;
use dsql_tokio_postgres::Config;

use crate::error::Error;
use crate::manager::{DsqlConnectionManager, Failures};

pub use dsql_auth_core::limits::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_LIFETIME_JITTER, DEFAULT_MAX_LIFETIME,
    DEFAULT_POOL_MAX_SIZE as DEFAULT_MAX_SIZE, DEFAULT_POOL_WAIT as DEFAULT_CONNECTION_TIMEOUT,
};

/// A connection checked out of a [`Pool`]: bb8's own type; derefs to [`DsqlClient`](crate::DsqlClient) and on to
/// tokio-postgres' `Client`. Returned to the pool when dropped.
pub type PooledConnection<'a> = bb8::PooledConnection<'a, DsqlConnectionManager>;

/// A bb8 pool of DSQL connections.
///
/// It derefs to [`bb8::Pool<DsqlConnectionManager>`](bb8::Pool) (state, statistics,
/// `dedicated_connection`, `add`) and its [`get`](Pool::get) differs from bb8's in one way: when
/// opening a connection fails in a way retrying cannot fix (access denied, TLS, credentials,
/// configuration), waiting callers get that error at once instead of bb8's opaque timeout; and
/// a timeout carries the last connect failure. Cheap to clone; clones share the pool.
#[derive(Clone, Debug)]
pub struct Pool {
    inner: bb8::Pool<DsqlConnectionManager>,
    failures: Failures,
    connection_timeout: Duration,
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
/// Every other setting is bb8's default, and goes through [`PoolBuilder::configure`] (error
/// sink, queue strategy, reaper rate, connection customizer, `retry_connection`).
#[must_use]
pub struct PoolBuilder {
    max_size: u32,
    min_idle: Option<u32>,
    policy: PoolPolicy,
    connection_timeout: Duration,
    configure: Option<Box<dyn FnOnce(Bb8Builder) -> Bb8Builder + Send>>,
}

/// bb8's builder for this crate's manager, as [`PoolBuilder::configure`] gets it.
pub type Bb8Builder = bb8::Builder<DsqlConnectionManager>;

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("max_size", &self.max_size)
            .field("min_idle", &self.min_idle)
            .field("policy", &self.policy)
            .field("connection_timeout", &self.connection_timeout)
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
            configure: None,
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

    /// Adjusts bb8's builder after the settings above are applied: an error sink (default: logged
    /// at debug level), the queue strategy, the reaper rate, a connection customizer,
    /// `retry_connection`. bb8's own rules apply to what is set here.
    pub fn configure(mut self, f: impl FnOnce(Bb8Builder) -> Bb8Builder + Send + 'static) -> Self {
        self.configure = Some(Box::new(f));
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

    /// Checks the settings (bb8 panics on some; we return errors) and makes bb8's builder.
    fn prepare(
        self,
        config: Config,
    ) -> Result<(Bb8Builder, DsqlConnectionManager, Duration), Error> {
        let min_idle = self.min_idle.map(|m| m as usize);
        let (max_size, timeout) = (self.max_size as usize, self.connection_timeout);
        (self.policy)
            .validate_pool(max_size, min_idle, "connection_timeout", timeout)
            .map_err(Error::config)?;
        let manager = DsqlConnectionManager::new(config).with_policy(self.policy.clone())?;
        // bb8's own lifetime check is the upper bound of the jittered lifetimes: it also retires
        // idle connections that nobody checks out.
        let mut builder = bb8::Pool::builder()
            .max_size(self.max_size)
            .min_idle(self.min_idle)
            .max_lifetime(self.policy.max_lifetime)
            .idle_timeout(self.policy.idle_timeout)
            .connection_timeout(self.connection_timeout)
            .test_on_check_out(self.policy.test_on_check_out)
            .error_sink(Box::new(TracingErrorSink));
        if let Some(configure) = self.configure {
            builder = configure(builder);
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
