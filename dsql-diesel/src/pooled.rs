//! What both pools share: diesel-async's connection manager set up for DSQL (a `custom_setup`
//! over [`connect`](crate::connect), a per-connection lifetime, validation), and the record of
//! connect failures that lets a pool report them to waiting callers.

use std::sync::Arc;
use std::time::Instant;

use diesel::IntoSql;
use diesel::connection::{Instrumentation, InstrumentationEvent, get_default_instrumentation};
use diesel::sql_types::Integer;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolError, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use dsql_auth_core::PoolPolicy;
use dsql_auth_core::limits::{ConnectFailures, FailureMark};
use dsql_tokio_postgres::Config;
use futures_util::FutureExt;

use crate::error::{Error, ErrorKind};

pub use dsql_auth_core::limits::{
    DEFAULT_POOL_MAX_SIZE as DEFAULT_MAX_SIZE, DEFAULT_POOL_WAIT as DEFAULT_CONNECTION_TIMEOUT,
};

/// diesel-async's connection manager, as both pools set it up: each new connection comes from
/// [`connect`](crate::connect) and carries its own lifetime; checkout validation retires expired
/// connections and sends the others a prepared `SELECT 1`.
pub type Manager = AsyncDieselConnectionManager<AsyncPgConnection>;

/// When a pooled connection is due to be retired, if it came from one of this crate's pools (and
/// its instrumentation was not replaced since). The pool checks it when handing the connection
/// out; past it, the connection is closed and another one is used.
pub fn connection_expires_at(conn: &mut AsyncPgConnection) -> Option<Instant> {
    conn.instrumentation()
        .downcast_ref::<LifetimeMark>()
        .and_then(|mark| mark.expires_at)
}

/// The connection's retirement time, carried by the connection itself: diesel-async's manager
/// keeps no per-connection data, and bb8 knows only one lifetime for all connections, so the
/// lifetime rides in the connection's instrumentation slot, forwarding every event to the
/// instrumentation diesel would have installed.
struct LifetimeMark {
    expires_at: Option<Instant>,
    inner: Option<Box<dyn Instrumentation>>,
}

impl Instrumentation for LifetimeMark {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let Some(inner) = &mut self.inner {
            inner.on_connection_event(event);
        }
    }
}

/// The connect failures of one pool, shared by its manager (which records them) and the pool's
/// `get` (which reports them).
pub(crate) type Failures = ConnectFailures<Arc<dsql_tokio_postgres::Error>>;

/// Maps diesel-async's pool error: a connection error back to the connect failure it came
/// from, which the manager recorded with its kind (diesel's error keeps only the message).
pub(crate) fn pool_error(failures: &Failures, mark: FailureMark, err: PoolError) -> Error {
    let err = match err {
        PoolError::ConnectionError(err) => err,
        PoolError::QueryError(err) => {
            return Error::pool(
                ErrorKind::Pool,
                format!("a new pooled DSQL connection failed its first query: {err}"),
                Some(Box::new(err)),
            );
        }
    };
    let message = match &err {
        diesel::ConnectionError::BadConnection(m)
        | diesel::ConnectionError::InvalidConnectionUrl(m) => m.as_str(),
        _ => return Error::setup(err),
    };
    match failures.since(mark).filter(|e| e.to_string() == message) {
        Some(connect) => Error::connect(connect),
        // Another failure was recorded since: the message is all that is left.
        None => Error::pool(
            ErrorKind::Pool,
            format!("opening a pooled DSQL connection failed: {message}"),
            Some(Box::new(err)),
        ),
    }
}

/// diesel-async's manager for `config`: each new connection comes from [`crate::connect`] and
/// gets its own lifetime drawn by the core's [`PoolPolicy`]; the checkout check retires expired
/// connections and, when the policy tests on checkout, sends the others a prepared `SELECT 1` (one
/// round trip). Connect failures are recorded in the returned [`Failures`].
pub(crate) fn manager(config: Config, policy: &PoolPolicy) -> (Manager, Failures) {
    let test_on_check_out = policy.test_on_check_out;
    let policy = policy.clone();
    let failures = Failures::new();
    let recorder = failures.clone();
    let config = Arc::new(config);
    let url = format!("dsql://{}", config.endpoint().connect_host());
    let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
    manager_config.custom_setup = Box::new(move |_url| {
        let (config, recorder, policy) = (config.clone(), recorder.clone(), policy.clone());
        async move {
            let mut conn = crate::connect(&config).await.map_err(|err| {
                if let Some(connect) = err.connect_arc() {
                    tracing::warn!(
                        host = config.endpoint().connect_host(),
                        kind = ?connect.kind(),
                        error = %connect,
                        "opening a pooled DSQL connection failed"
                    );
                    recorder.record(connect);
                }
                diesel::ConnectionError::from(err)
            })?;
            let expires_at = policy
                .draw_lifetime(rand::random::<f64>())
                .map(|l| Instant::now() + l);
            conn.set_instrumentation(LifetimeMark {
                expires_at,
                inner: get_default_instrumentation(),
            });
            Ok(conn)
        }
        .boxed()
    });
    manager_config.recycling_method = RecyclingMethod::CustomFunction(Box::new(move |conn| {
        let expired = connection_expires_at(conn).is_some_and(|at| Instant::now() >= at);
        async move {
            if expired {
                return Err(retired());
            }
            if test_on_check_out {
                // diesel-async's own check (`RecyclingMethod::Verified`): a prepared `SELECT 1`,
                // cached per connection, so a checkout costs what it costs in diesel-async's pool.
                diesel::select(1_i32.into_sql::<Integer>())
                    .get_result::<i32>(conn)
                    .await
                    .map(|_| ())
            } else {
                Ok(())
            }
        }
        .boxed()
    }));
    (Manager::new_with_config(url, manager_config), failures)
}

fn retired() -> diesel::result::Error {
    diesel::result::Error::DatabaseError(
        diesel::result::DatabaseErrorKind::ClosedConnection,
        Box::new(
            "the pooled DSQL connection reached its lifetime (drawn below DSQL's 60-minute limit) \
             and was retired"
                .to_owned(),
        ),
    )
}
