//! Retrying whole transactions on DSQL's optimistic-concurrency conflicts (OC000, OC001).
//!
//! SEAM(core stage A): the retry loop moves onto the core's runner, and the exhausted message onto
//! the core's diagnostics; the shape (an `AsyncFnMut` over sqlx's transaction, user error types)
//! stays.

use std::time::Instant;

use dsql_auth_core::RetryPolicy;
use sqlx::{Connection, PgConnection, Postgres, Transaction};

use crate::connect::class_of;
use crate::error::{Error, ErrorKind};
use crate::pool::Pool;

/// Errors `transaction_with_retry` can look into for an OCC conflict: sqlx's, ours, and your own
/// error type (return the sqlx error it wraps, if any).
pub trait OccError {
    /// The sqlx error this error carries, if any.
    fn as_sqlx_error(&self) -> Option<&sqlx::Error>;
}

impl OccError for sqlx::Error {
    fn as_sqlx_error(&self) -> Option<&sqlx::Error> {
        Some(self)
    }
}

impl OccError for Error {
    fn as_sqlx_error(&self) -> Option<&sqlx::Error> {
        self.as_sqlx()
    }
}

/// Where the transactions of [`transaction_with_retry`] run: a [`Pool`] (each attempt on a
/// connection from [`Pool::acquire`]) or one connection (`&mut PgConnection`; a
/// `&mut PoolConnection` derefs to it).
pub trait OccTarget<'a>: private::Sealed {
    #[doc(hidden)]
    fn into_target(self) -> private::Target<'a>;
}

impl<'a> OccTarget<'a> for &'a Pool {
    fn into_target(self) -> private::Target<'a> {
        private::Target::Pool(self)
    }
}

impl<'a> OccTarget<'a> for &'a mut PgConnection {
    fn into_target(self) -> private::Target<'a> {
        private::Target::Conn(self)
    }
}

#[doc(hidden)]
pub mod private {
    use super::*;

    pub trait Sealed {}
    impl Sealed for &Pool {}
    impl Sealed for &mut PgConnection {}

    #[derive(Debug)]
    pub enum Target<'a> {
        Pool(&'a Pool),
        Conn(&'a mut PgConnection),
    }
}

/// Runs `body` in a transaction and commits; when DSQL reports an OCC conflict (SQLSTATE 40001,
/// `OC000` data or `OC001` schema) from a statement or the commit, rolls back, waits as `policy`
/// says and runs `body` again in a new transaction. Returns what `body` returned in the attempt
/// that committed.
///
/// `body` is an async closure over sqlx's own [`Transaction`]; it may return your own error type
/// `E` (it needs `From<sqlx::Error>`, `From<dsql_sqlx::Error>` and [`OccError`]), and runs once
/// per attempt, so effects outside the transaction happen once per attempt. Any error other than
/// an OCC conflict is returned at once; when conflicts outlast the policy an error of kind
/// [`ErrorKind::OccConflict`] is returned (and logged at `WARN`).
///
/// To run it in a spawned task (which needs a `Send` future), write `async move |tx| ...` and
/// capture owned values (copies, clones, `Arc`s): rustc cannot yet prove `Send` for an async
/// closure that captures references (rust-lang/rust#110338), whatever they point to.
///
/// ```no_run
/// # async fn demo(pool: &dsql_sqlx::Pool) -> Result<(), dsql_sqlx::Error> {
/// use dsql_sqlx::{RetryPolicy, transaction_with_retry};
/// let n: i64 = transaction_with_retry(pool, &RetryPolicy::occ(), async |tx| {
///     sqlx::query("UPDATE counters SET n = n + 1 WHERE id = 1").execute(&mut **tx).await?;
///     Ok::<_, dsql_sqlx::Error>(sqlx::query_scalar("SELECT n FROM counters WHERE id = 1").fetch_one(&mut **tx).await?)
/// })
/// .await?;
/// # let _ = n; Ok(()) }
/// ```
pub async fn transaction_with_retry<'a, T, E, F>(
    target: impl OccTarget<'a>,
    policy: &RetryPolicy,
    mut body: F,
) -> Result<T, E>
where
    F: AsyncFnMut(&mut Transaction<'_, Postgres>) -> Result<T, E>,
    E: From<sqlx::Error> + From<Error> + OccError,
{
    let mut target = target.into_target();
    let started = Instant::now();
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        let outcome = match &mut target {
            private::Target::Pool(pool) => match pool.acquire().await {
                Ok(mut conn) => attempt(&mut conn, &mut body).await,
                Err(e) => Err(E::from(e)),
            },
            private::Target::Conn(conn) => attempt(conn, &mut body).await,
        };
        let err = match outcome {
            Ok(value) => {
                if attempts > 1 {
                    tracing::info!(target: "dsql_sqlx", occ_retries = attempts - 1, "transaction committed after OCC conflicts");
                }
                return Ok(value);
            }
            Err(err) => err,
        };
        let delay = retry_or_return(policy, err, attempts, started)?;
        tokio::time::sleep(delay).await;
    }
}

async fn attempt<T, E, F>(conn: &mut PgConnection, body: &mut F) -> Result<T, E>
where
    F: AsyncFnMut(&mut Transaction<'_, Postgres>) -> Result<T, E>,
    E: From<sqlx::Error>,
{
    let mut tx = conn.begin().await?;
    // On error the transaction is dropped, which rolls it back before the connection is reused.
    let value = body(&mut tx).await?;
    tx.commit().await?;
    Ok(value)
}

/// `Ok(delay)`: an OCC conflict within the policy, retry after `delay`; `Err`: return this.
fn retry_or_return<E>(
    policy: &RetryPolicy,
    err: E,
    attempts: u32,
    started: Instant,
) -> Result<std::time::Duration, E>
where
    E: OccError + From<Error>,
{
    let Some(class) = err
        .as_sqlx_error()
        .and_then(class_of)
        .filter(|c| c.is_occ_conflict())
    else {
        return Err(err);
    };
    if let Some(delay) = policy.next_delay(attempts, started.elapsed(), rand::random::<f64>()) {
        tracing::debug!(target: "dsql_sqlx", occ_retry = attempts, reason = %class, "OCC conflict; retrying the transaction");
        return Ok(delay);
    }
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::warn!(target: "dsql_sqlx", attempts, elapsed_ms, reason = %class, "OCC conflicts outlasted the retry policy");
    // SEAM(core stage A): the core's OCC-exhausted text.
    let last = err
        .as_sqlx_error()
        .map(ToString::to_string)
        .unwrap_or_default();
    Err(E::from(Error::new(
        ErrorKind::OccConflict,
        format!(
            "the transaction met OCC conflicts ({class}) in all {attempts} attempts over {elapsed_ms} ms: \
             fewer concurrent writers to the same rows, or a retry policy with more attempts; last: {last}"
        ),
    )))
}
