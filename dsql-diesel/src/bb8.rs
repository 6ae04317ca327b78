//! A [bb8](https://docs.rs/bb8) pool of DSQL connections, on diesel-async's own bb8 types.
//!
//! [`Pool`] derefs to diesel-async's `bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>`
//! and [`Pool::get`] returns diesel-async's [`PooledConnection`], which derefs to
//! [`AsyncPgConnection`]. What it adds: DSQL's pool policy (see [`PoolBuilder`]) and connect
//! failures reported to the caller: bb8 alone answers a failed connect with a timeout.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use ::bb8::RunError;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::PoolError;
use dsql_tokio_postgres::Config;

use crate::error::{Error, ErrorKind};
use crate::pooled::{
    DEFAULT_CONNECTION_TIMEOUT, DEFAULT_MAX_SIZE, Failures, Manager, manager, pool_error,
};
use dsql_auth_core::PoolPolicy;

/// diesel-async's bb8 pool type, which [`Pool`] derefs to.
pub type Bb8Pool = diesel_async::pooled_connection::bb8::Pool<AsyncPgConnection>;
/// A connection checked out of a [`Pool`]: diesel-async's own type; derefs to
/// [`AsyncPgConnection`] (and is an `AsyncConnection` itself). Returned to the pool when dropped.
pub type PooledConnection<'a> =
    diesel_async::pooled_connection::bb8::PooledConnection<'a, AsyncPgConnection>;

/// bb8's builder for diesel-async's manager, as [`PoolBuilder::configure`] gets it.
pub type Bb8Builder = ::bb8::Builder<Manager>;

/// A bb8 pool of DSQL connections. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Pool {
    inner: Bb8Pool,
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
    type Target = Bb8Pool;

    fn deref(&self) -> &Bb8Pool {
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

    /// Checks a connection out: an idle one (retired if past its lifetime, else validated with
    /// a prepared `SELECT 1`), or a new one. A connect failure that retrying cannot fix (access denied,
    /// TLS, credentials, configuration) is returned as soon as it happens, with
    /// [`ErrorKind::Connect`]; otherwise [`ErrorKind::PoolTimeout`] after the connection timeout,
    /// carrying the last connect failure.
    pub async fn get(&self) -> Result<PooledConnection<'_>, Error> {
        self.reporting_failures(self.inner.get()).await
    }

    /// [`Pool::get`], returning a connection that owns a handle to the pool (`'static`).
    pub async fn get_owned(&self) -> Result<PooledConnection<'static>, Error> {
        self.reporting_failures(self.inner.get_owned()).await
    }

    /// diesel-async's bb8 pool, by value (its `get` reports connect failures only as a timeout).
    pub fn into_inner(self) -> Bb8Pool {
        self.inner
    }

    async fn reporting_failures<T>(
        &self,
        get: impl Future<Output = Result<T, RunError<PoolError>>>,
    ) -> Result<T, Error> {
        let mark = self.failures.mark();
        let failure = |e: &Arc<dsql_tokio_postgres::Error>| e.connect_failure();
        match self.failures.until_fatal(mark, failure, get).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(RunError::TimedOut)) => Err(Error::timed_out(
                self.connection_timeout,
                self.failures.since(mark),
            )),
            Ok(Err(RunError::User(err))) => Err(pool_error(&self.failures, mark, err)),
            Err(fatal) => Err(Error::connect(fatal)),
        }
    }
}

/// Builds a [`Pool`] with DSQL's defaults, the core's [`PoolPolicy`] and bb8's pool size and
/// timeout:
///
/// | setting | default | why |
/// |---|---|---|
/// | `max_lifetime` | 55 min | DSQL closes connections at 60 min |
/// | `lifetime_jitter` | 0.1 | each connection lives 49.5–55 min, so they are not replaced all at once |
/// | `idle_timeout` | 10 min | as the official DSQL connectors |
/// | `test_on_check_out` | true | a `SELECT 1` replaces connections the server closed (the lifetime is checked either way) |
/// | `max_size` | 10 | bb8's default |
/// | `connection_timeout` | 30 s | bb8's default; connect failures that retrying cannot fix are reported at once |
///
/// Any other bb8 setting (error sink, queue strategy, reaper rate, customizer, `min_idle`) goes
/// through [`PoolBuilder::configure`].
#[must_use]
pub struct PoolBuilder {
    max_size: u32,
    policy: PoolPolicy,
    connection_timeout: Duration,
    configure: Option<Box<dyn FnOnce(Bb8Builder) -> Bb8Builder + Send>>,
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("max_size", &self.max_size)
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

    dsql_auth_core::pool_policy_setters!(policy);

    /// How long [`Pool::get`] waits for a connection.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Adjusts bb8's builder after the settings above are applied: for `min_idle`, an error
    /// sink, the queue strategy, the reaper rate or a connection customizer.
    pub fn configure(mut self, f: impl FnOnce(Bb8Builder) -> Bb8Builder + Send + 'static) -> Self {
        self.configure = Some(Box::new(f));
        self
    }

    /// Builds the pool, and waits for bb8's `min_idle` connections if [`configure`](Self::configure)
    /// set any.
    pub async fn build(self, config: Config) -> Result<Pool, Error> {
        let (builder, manager, failures, connection_timeout) = self.prepare(config)?;
        let mark = failures.mark();
        let inner = builder
            .build(manager)
            .await
            .map_err(|err| pool_error(&failures, mark, err))?;
        Ok(Pool {
            inner,
            failures,
            connection_timeout,
        })
    }

    /// Builds the pool without waiting. Must be called inside a tokio runtime.
    pub fn build_unchecked(self, config: Config) -> Result<Pool, Error> {
        let (builder, manager, failures, connection_timeout) = self.prepare(config)?;
        Ok(Pool {
            inner: builder.build_unchecked(manager),
            failures,
            connection_timeout,
        })
    }

    fn prepare(self, config: Config) -> Result<(Bb8Builder, Manager, Failures, Duration), Error> {
        (self.policy)
            .validate_pool(
                self.max_size as usize,
                None,
                "connection_timeout",
                self.connection_timeout,
            )
            .map_err(|e| Error::pool(ErrorKind::Config, e.to_string(), Some(Box::new(e))))?;
        let (manager, failures) = manager(config, &self.policy);
        // bb8's own lifetime check is the upper bound of the jittered lifetimes: it also retires
        // idle connections nobody checks out. bb8 always runs the manager's checkout check: it
        // enforces each connection's own lifetime, and sends `SELECT 1` only when the policy
        // says so.
        let mut builder = ::bb8::Pool::builder()
            .max_size(self.max_size)
            .max_lifetime(self.policy.max_lifetime)
            .idle_timeout(self.policy.idle_timeout)
            .connection_timeout(self.connection_timeout)
            .test_on_check_out(true)
            .error_sink(Box::new(TracingErrorSink));
        if let Some(configure) = self.configure {
            builder = configure(builder);
        }
        Ok((builder, manager, failures, self.connection_timeout))
    }
}

/// Errors no caller sees (failed background connects, retired and invalid connections) are
/// logged at debug level; connect failures are already logged at warn by the manager.
#[derive(Debug, Clone, Copy)]
struct TracingErrorSink;

impl ::bb8::ErrorSink<PoolError> for TracingErrorSink {
    fn sink(&self, error: PoolError) {
        tracing::debug!(error = %error, "DSQL pool event");
    }

    fn boxed_clone(&self) -> Box<dyn ::bb8::ErrorSink<PoolError>> {
        Box::new(*self)
    }
}
