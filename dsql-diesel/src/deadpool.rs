//! A [deadpool](https://docs.rs/deadpool) pool of DSQL connections, on diesel-async's own
//! deadpool types.
//!
//! [`Pool`] derefs to diesel-async's `deadpool::Pool<AsyncPgConnection>` and [`Pool::get`]
//! returns diesel-async's [`Object`], which derefs to [`AsyncPgConnection`]. deadpool has no
//! connection lifetime and no idle timeout of its own: the pool checks both when it hands a
//! connection out (each connection's jittered lifetime, and the time since it was last checked
//! out), then validates it with `SELECT 1`. deadpool opens connections in the caller's
//! `get`, so connect failures reach the caller at once; [`Pool::get`] returns them with their
//! [`ErrorKind`] instead of diesel's string.

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use ::deadpool::Runtime;
use ::deadpool::managed::{Hook, HookError, PoolError as DeadpoolError, TimeoutType};
use diesel_async::AsyncPgConnection;
use dsql_tokio_postgres::Config;

use crate::error::{Error, ErrorKind};
use crate::pooled::{
    DEFAULT_CONNECTION_TIMEOUT, DEFAULT_MAX_SIZE, Failures, Manager, manager, pool_error,
};
use dsql_auth_core::PoolPolicy;

/// diesel-async's deadpool pool type, which [`Pool`] derefs to.
pub type DeadpoolPool = diesel_async::pooled_connection::deadpool::Pool<AsyncPgConnection>;
/// A connection checked out of a [`Pool`]: diesel-async's own type; derefs to
/// [`AsyncPgConnection`]. Returned to the pool when dropped.
pub type Object = diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>;

/// A deadpool pool of DSQL connections. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Pool {
    inner: DeadpoolPool,
    failures: Failures,
    wait_timeout: Duration,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("status", &self.inner.status())
            .field("wait_timeout", &self.wait_timeout)
            .finish_non_exhaustive()
    }
}

impl Deref for Pool {
    type Target = DeadpoolPool;

    fn deref(&self) -> &DeadpoolPool {
        &self.inner
    }
}

impl Pool {
    /// A pool for `config` with DSQL's defaults (see [`PoolBuilder`]). Opens no connection yet.
    pub fn new(config: Config) -> Result<Pool, Error> {
        PoolBuilder::new().build(config)
    }

    /// A builder with DSQL's defaults.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
    }

    /// Checks a connection out: an idle one (discarded if past its lifetime or idle timeout,
    /// else validated with a prepared `SELECT 1`), or a new one. Errors: [`ErrorKind::Connect`] when
    /// opening a connection failed, [`ErrorKind::PoolTimeout`] when no slot freed up within the
    /// wait timeout.
    pub async fn get(&self) -> Result<Object, Error> {
        let mark = self.failures.mark();
        self.inner.get().await.map_err(|err| match err {
            DeadpoolError::Backend(err) => pool_error(&self.failures, mark, err),
            DeadpoolError::Timeout(TimeoutType::Wait) => Error::timed_out(self.wait_timeout, None),
            DeadpoolError::Timeout(_) => Error::pool(
                ErrorKind::PoolTimeout,
                "opening or checking a pooled DSQL connection exceeded deadpool's create or recycle \
                 timeout: raise it, or check the network path (connect_timeout bounds one attempt)",
                None,
            ),
            DeadpoolError::Closed => Error::pool(
                ErrorKind::PoolClosed,
                "the pool is closed: build a new one",
                None,
            ),
            other => Error::pool(ErrorKind::Pool, other.to_string(), Some(Box::new(other))),
        })
    }

    /// diesel-async's deadpool pool, by value.
    pub fn into_inner(self) -> DeadpoolPool {
        self.inner
    }
}

/// Builds a [`Pool`] with DSQL's defaults, the core's [`PoolPolicy`]:
///
/// | setting | default | why |
/// |---|---|---|
/// | `max_lifetime` | 55 min | DSQL closes connections at 60 min |
/// | `lifetime_jitter` | 0.1 | each connection lives 49.5–55 min, so they are not replaced all at once |
/// | `idle_timeout` | 10 min | as the official DSQL connectors (checked at checkout: deadpool has no reaper) |
/// | `test_on_check_out` | true | a `SELECT 1` replaces connections the server closed (the lifetime is checked either way) |
/// | `max_size` | 10 | |
/// | `wait_timeout` | 30 s | time to wait for a free slot |
///
/// Any other deadpool setting (queue mode, create and recycle timeouts, more hooks) goes through
/// [`PoolBuilder::configure`].
#[must_use]
pub struct PoolBuilder {
    max_size: usize,
    policy: PoolPolicy,
    wait_timeout: Duration,
    configure: Option<Box<dyn FnOnce(DeadpoolBuilder) -> DeadpoolBuilder + Send>>,
}

/// deadpool's builder for diesel-async's manager.
pub type DeadpoolBuilder = ::deadpool::managed::PoolBuilder<Manager>;

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("max_size", &self.max_size)
            .field("policy", &self.policy)
            .field("wait_timeout", &self.wait_timeout)
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
            max_size: DEFAULT_MAX_SIZE as usize,
            policy: PoolPolicy::default(),
            wait_timeout: DEFAULT_CONNECTION_TIMEOUT,
            configure: None,
        }
    }

    /// Maximum number of connections (at least 1).
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.max_size = max_size;
        self
    }

    dsql_auth_core::pool_policy_setters!(policy);

    /// How long [`Pool::get`] waits for a free slot.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// Adjusts deadpool's builder after the settings above are applied.
    pub fn configure(
        mut self,
        f: impl FnOnce(DeadpoolBuilder) -> DeadpoolBuilder + Send + 'static,
    ) -> Self {
        self.configure = Some(Box::new(f));
        self
    }

    /// Builds the pool (opening no connection). Needs a tokio runtime when used.
    pub fn build(self, config: Config) -> Result<Pool, Error> {
        (self.policy)
            .validate_pool(self.max_size, None, "wait_timeout", self.wait_timeout)
            .map_err(|e| Error::pool(ErrorKind::Config, e.to_string(), Some(Box::new(e))))?;
        let (manager, failures) = manager(config, &self.policy);
        let mut builder = DeadpoolPool::builder(manager)
            .max_size(self.max_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(self.wait_timeout));
        if let Some(idle) = self.policy.idle_timeout {
            // Runs before diesel-async's recycle (lifetime check and `SELECT 1`).
            builder = builder.pre_recycle(Hook::sync_fn(move |_, metrics| {
                if metrics.last_used() >= idle {
                    Err(HookError::message(
                        "the pooled DSQL connection was idle longer than idle_timeout and was closed",
                    ))
                } else {
                    Ok(())
                }
            }));
        }
        if let Some(configure) = self.configure {
            builder = configure(builder);
        }
        let inner: DeadpoolPool = builder.build().map_err(|err| {
            Error::pool(
                ErrorKind::Config,
                format!("deadpool rejected the pool settings: {err}"),
                Some(Box::new(err)),
            )
        })?;
        spawn_reaper(&inner, self.policy.max_lifetime, self.policy.idle_timeout);
        Ok(Pool {
            inner,
            failures,
            wait_timeout: self.wait_timeout,
        })
    }
}

/// deadpool closes nothing on its own: connections nobody checks out would stay open past the
/// idle timeout and up to DSQL's 60-minute cut. A task closes them (at the longest lifetime, as
/// bb8's reaper does; each connection's own shorter lifetime is enforced at checkout), and ends
/// with the pool. Without a tokio runtime at build time there is no task; checkouts still
/// enforce both limits.
fn spawn_reaper(pool: &DeadpoolPool, max_lifetime: Option<Duration>, idle: Option<Duration>) {
    let Some(shortest) = [max_lifetime, idle].into_iter().flatten().min() else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::debug!(
            "no tokio runtime while building the deadpool pool: idle connections are checked at checkout only"
        );
        return;
    };
    let period = (shortest / 2).clamp(Duration::from_millis(100), REAPER_MAX_PERIOD);
    let weak = pool.weak();
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(pool) = weak.upgrade() else { return };
            pool.retain(|_, metrics| {
                max_lifetime.is_none_or(|max| metrics.age() < max)
                    && idle.is_none_or(|idle| metrics.last_used() < idle)
            });
        }
    });
}

/// How often the reaper looks at most (bb8's default reaper rate).
const REAPER_MAX_PERIOD: Duration = Duration::from_secs(30);
