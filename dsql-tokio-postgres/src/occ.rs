//! Retrying whole transactions on DSQL's optimistic-concurrency conflicts (OC000, OC001).
//!
//! The loop and its decisions (budgets, backoff, what counts as a conflict, the logs and the text
//! when the budget is spent) are dsql-auth-core's ([`run_occ`], [`classify`]); this module only
//! opens, commits and rolls back tokio-postgres transactions and finds the server's error.

use std::any::Any;
use std::error::Error as StdError;
use std::marker::PhantomData;

use dsql_auth_core::occ_retry::{OccAttempt, run_occ};
use dsql_auth_core::{DsqlErrorClass, OccBody, RetryPolicy, SystemClock, classify};
use rand::random;
use tokio::time::sleep;
use tokio_postgres::{Client, Transaction};

use crate::error::{Error, ErrorKind};

/// Runs `body` in a transaction and commits; when DSQL reports an OCC conflict (SQLSTATE 40001,
/// `OC000` data or `OC001` schema) from a statement or the commit, rolls back, waits as `policy`
/// says and runs `body` again in a new transaction. Returns what `body` returned in the attempt
/// that committed.
///
/// `body` is an async closure over tokio-postgres' own [`Transaction`] (see
/// [`OccBody`] for why it is bounded that way: the result stays `Send`, so it runs in
/// `tokio::spawn`); it may borrow from its surroundings and return your own error type `E`, anything a `tokio_postgres::Error` converts
/// into (so `?` works) that implements [`std::error::Error`]: [`Error`], `tokio_postgres::Error`,
/// or your `thiserror` enum with a `#[from] tokio_postgres::Error` variant. Conflicts are found by
/// walking `E`'s [`source`](std::error::Error::source) chain to the server's error.
///
/// `body` runs once per attempt, so it must not have effects outside the transaction that should
/// happen only once. Any error other than an OCC conflict is returned at once. A conflict that
/// outlasts the policy is returned as the last conflict's error; when `E` is this crate's
/// [`Error`] it has kind [`ErrorKind::OccConflict`] and says how many attempts were made. Each
/// retry is logged at debug level with the field `occ_retry`, and a commit that needed retries
/// at info level with `occ_retries`.
///
/// ```no_run
/// # async fn demo(client: &mut tokio_postgres::Client) -> Result<(), dsql_tokio_postgres::Error> {
/// use dsql_tokio_postgres::{RetryPolicy, transaction_with_retry};
/// let id = 7_i64;
/// let balance: i64 = transaction_with_retry(client, &RetryPolicy::occ(), async |tx| {
///     tx.execute("UPDATE accounts SET balance = balance - 10 WHERE id = $1", &[&id]).await?;
///     let row = tx.query_one("SELECT balance FROM accounts WHERE id = $1", &[&id]).await?;
///     Ok::<_, dsql_tokio_postgres::Error>(row.get(0))
/// })
/// .await?;
/// # let _ = balance; Ok(()) }
/// ```
pub async fn transaction_with_retry<T, E, F>(
    client: &mut Client,
    policy: &RetryPolicy,
    body: F,
) -> Result<T, E>
where
    F: for<'r, 't> OccBody<&'r Transaction<'t>, T, E, Fut: Send> + Send,
    T: Send,
    E: From<tokio_postgres::Error> + StdError + Send + 'static,
{
    let attempt = Attempt {
        client,
        body,
        _out: PhantomData,
    };
    run_occ(policy, &SystemClock, attempt, sleep, random).await
}

/// One attempt: a tokio-postgres transaction around the body.
struct Attempt<'c, F, T, E> {
    client: &'c mut Client,
    body: F,
    _out: PhantomData<fn() -> (T, E)>,
}

impl<F, T, E> OccAttempt for Attempt<'_, F, T, E>
where
    F: for<'r, 't> OccBody<&'r Transaction<'t>, T, E, Fut: Send> + Send,
    T: Send,
    E: From<tokio_postgres::Error> + StdError + Send + 'static,
{
    type Output = T;
    type Error = E;

    fn run(&mut self) -> impl Future<Output = Result<T, E>> + Send {
        run_once(self.client, &mut self.body)
    }

    /// DSQL's class of the server error inside `err`, found along its source chain.
    fn class(&self, err: &E) -> Option<DsqlErrorClass> {
        let mut next: Option<&(dyn StdError + 'static)> = Some(err);
        while let Some(err) = next {
            if let Some(db) = err
                .downcast_ref::<tokio_postgres::Error>()
                .and_then(|pg| pg.as_db_error())
                .or_else(|| err.downcast_ref::<tokio_postgres::error::DbError>())
            {
                return Some(classify(db.code().code(), db.message()));
            }
            next = err.source();
        }
        None
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

async fn run_once<T, E, F>(client: &mut Client, body: &mut F) -> Result<T, E>
where
    F: for<'r, 't> OccBody<&'r Transaction<'t>, T, E, Fut: Send> + Send,
    E: From<tokio_postgres::Error>,
{
    let tx = client.transaction().await?;
    // On error the transaction is dropped here, which rolls it back.
    let value = body(&tx).await?;
    tx.commit().await?;
    Ok(value)
}
