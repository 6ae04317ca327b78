//! Retrying whole transactions on DSQL's optimistic-concurrency conflicts (OC000, OC001).
//!
//! The decisions (budgets, backoff, what counts as a conflict, the text when the budget is spent)
//! are dsql-auth-core's ([`RetryState`], [`OccBody`], `classify`, `diagnostics`); this module only
//! opens, commits and rolls back sqlx transactions around them.

use std::any::Any;
use std::error::Error as StdError;
use std::marker::PhantomData;

use dsql_auth_core::occ_retry::{OccAttempt, run_occ};
use dsql_auth_core::{DsqlErrorClass, OccBody, RetryPolicy, SystemClock};
use rand::random;
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use tokio::time::sleep;

use crate::connect::class_of;
use crate::error::{Error, ErrorKind};
use crate::pool::Pool;

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
/// `E` (it needs `From<sqlx::Error>`, `From<dsql_sqlx::Error>` and [`std::error::Error`]; a
/// conflict is found by walking its `source()` chain to the `sqlx::Error`). `body` runs once per
/// attempt, so effects outside the transaction happen once per attempt. Any error other than an
/// OCC conflict is returned at once; when conflicts outlast the policy the last error is
/// returned, logged at `WARN` (a `dsql_sqlx::Error` is rewrapped with kind
/// [`ErrorKind::OccConflict`] and the core's text). The future is `Send` (usable in
/// `tokio::spawn`); the closure's own future must be `Send` too, and may not borrow state the
/// closure owns or mutates (the core's [`OccBody`] shape): share a counter as `&AtomicU32` and
/// another session behind a lock, rather than `&mut` captures.
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
    body: F,
) -> Result<T, E>
where
    F: for<'r, 't> OccBody<&'r mut Transaction<'t, Postgres>, T, E, Fut: Send> + Send,
    T: Send,
    E: From<sqlx::Error> + From<Error> + StdError + Send + 'static,
{
    let attempt = Attempt {
        target: target.into_target(),
        body,
        _out: PhantomData,
    };
    run_occ(policy, &SystemClock, attempt, sleep, random).await
}

/// One attempt: a sqlx transaction around the body, on the connection or on one acquired from
/// the pool for this attempt.
struct Attempt<'a, F, T, E> {
    target: private::Target<'a>,
    body: F,
    _out: PhantomData<fn() -> (T, E)>,
}

impl<F, T, E> OccAttempt for Attempt<'_, F, T, E>
where
    F: for<'r, 't> OccBody<&'r mut Transaction<'t, Postgres>, T, E, Fut: Send> + Send,
    T: Send,
    E: From<sqlx::Error> + From<Error> + StdError + Send + 'static,
{
    type Output = T;
    type Error = E;

    async fn run(&mut self) -> Result<T, E> {
        match &mut self.target {
            private::Target::Pool(pool) => match pool.acquire().await {
                Ok(mut conn) => run_once(&mut conn, &mut self.body).await,
                Err(e) => Err(E::from(e)),
            },
            private::Target::Conn(conn) => run_once(conn, &mut self.body).await,
        }
    }

    fn class(&self, err: &E) -> Option<DsqlErrorClass> {
        occ_class(err)
    }

    /// When `E` is this crate's [`Error`], the core's text becomes its message.
    fn exhausted(&self, mut error: E, text: String) -> E {
        let any: &mut dyn Any = &mut error;
        if let Some(ours) = any.downcast_mut::<Error>() {
            let last = std::mem::replace(ours, Error::new(ErrorKind::OccConflict, ""));
            *ours = Error::new(ErrorKind::OccConflict, text).with_source(last);
        }
        error
    }
}

async fn run_once<T, E, F>(conn: &mut PgConnection, body: &mut F) -> Result<T, E>
where
    F: for<'r, 't> OccBody<&'r mut Transaction<'t, Postgres>, T, E, Fut: Send> + Send,
    E: From<sqlx::Error>,
{
    let mut tx = conn.begin().await?;
    // On error the transaction is dropped here, which rolls it back before the connection is
    // used again.
    let value = body(&mut tx).await?;
    tx.commit().await?;
    Ok(value)
}

fn occ_class(err: &(dyn StdError + 'static)) -> Option<DsqlErrorClass> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(sqlx_err) = err.downcast_ref::<sqlx::Error>() {
            return class_of(sqlx_err);
        }
        next = err.source();
    }
    None
}
