//! Retrying whole transactions on DSQL's optimistic-concurrency conflicts (OC000, OC001).

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::time::Instant;

use dsql_auth_core::{RetryPolicy, classify};
use futures_util::future::BoxFuture;
use tokio_postgres::{Client, Transaction};

use crate::error::{Error, ErrorKind};

/// Runs `body` in a transaction and commits; when DSQL reports an OCC conflict (SQLSTATE 40001,
/// `OC000` data or `OC001` schema) from a statement or the commit, rolls back, waits as `policy`
/// says and runs `body` again in a new transaction. Returns what `body` returned in the attempt
/// that committed.
///
/// `body` runs once per attempt, so it must not have effects outside the transaction that should
/// happen only once. Any error other than an OCC conflict is returned at once (kind
/// [`ErrorKind::Db`] or [`ErrorKind::Connect`]); conflicts that outlast the policy give
/// [`ErrorKind::OccConflict`]. Each retry is logged at debug level with the field `occ_retry`,
/// and a commit that needed retries at info level with `occ_retries`.
///
/// ```no_run
/// # async fn demo(client: &mut tokio_postgres::Client) -> Result<(), dsql_tokio_postgres::Error> {
/// use dsql_tokio_postgres::{RetryPolicy, transaction_with_retry};
/// let id = 7_i64;
/// let balance: i64 = transaction_with_retry(client, &RetryPolicy::occ(), move |tx| {
///     Box::pin(async move {
///         tx.execute("UPDATE accounts SET balance = balance - 10 WHERE id = $1", &[&id]).await?;
///         let row = tx.query_one("SELECT balance FROM accounts WHERE id = $1", &[&id]).await?;
///         Ok(row.get(0))
///     })
/// })
/// .await?;
/// # let _ = balance; Ok(()) }
/// ```
///
/// The closure may borrow from its surroundings (`'env`), as in the example: the transaction it
/// gets, an [`OccTransaction`], derefs to tokio-postgres' [`Transaction`].
pub async fn transaction_with_retry<'env, T, F>(
    client: &mut Client,
    policy: &RetryPolicy,
    mut body: F,
) -> Result<T, Error>
where
    F: for<'t> FnMut(OccTransaction<'t, 'env>) -> BoxFuture<'t, Result<T, tokio_postgres::Error>>,
{
    let started = Instant::now();
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        let outcome = run_once(client, &mut body).await;
        let err = match outcome {
            Ok(value) => {
                if attempts > 1 {
                    tracing::info!(
                        occ_retries = attempts - 1,
                        "transaction committed after OCC conflicts"
                    );
                }
                return Ok(value);
            }
            Err(err) => err,
        };
        let class = err
            .as_db_error()
            .map(|db| classify(db.code().code(), db.message()));
        let Some(class) = class.filter(|c| c.is_occ_conflict()) else {
            return Err(Error::from_query(err));
        };
        match policy.next_delay(attempts, started.elapsed(), rand::random::<f64>()) {
            Some(delay) => {
                tracing::debug!(
                    occ_retry = attempts,
                    reason = %class,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "OCC conflict; retrying the transaction"
                );
                tokio::time::sleep(delay).await;
            }
            None => {
                return Err(Error::new(
                    ErrorKind::OccConflict,
                    format!(
                        "the transaction still conflicted ({class}) after {attempts} attempts in {} ms: \
                         reduce contention on the rows involved, or allow more attempts in the retry policy",
                        started.elapsed().as_millis()
                    ),
                )
                .with_source(err));
            }
        }
    }
}

async fn run_once<'env, T, F>(client: &mut Client, body: &mut F) -> Result<T, tokio_postgres::Error>
where
    F: for<'t> FnMut(OccTransaction<'t, 'env>) -> BoxFuture<'t, Result<T, tokio_postgres::Error>>,
{
    let tx = client.transaction().await?;
    // On error the transaction is dropped here, which rolls it back.
    let value = body(OccTransaction {
        tx: &tx,
        _env: PhantomData,
    })
    .await?;
    tx.commit().await?;
    Ok(value)
}

/// The transaction of one attempt of [`transaction_with_retry`]; derefs to tokio-postgres'
/// [`Transaction`]. (A type of its own, like `std::thread::Scope`, so the closure's future may
/// borrow from the caller's scope `'env`.)
#[derive(Clone, Copy)]
pub struct OccTransaction<'t, 'env> {
    tx: &'t Transaction<'t>,
    _env: PhantomData<&'t &'env ()>,
}

impl<'t> OccTransaction<'t, '_> {
    /// The tokio-postgres transaction.
    pub fn transaction(&self) -> &'t Transaction<'t> {
        self.tx
    }
}

impl<'t> Deref for OccTransaction<'t, '_> {
    type Target = Transaction<'t>;

    fn deref(&self) -> &Transaction<'t> {
        self.tx
    }
}

impl fmt::Debug for OccTransaction<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OccTransaction").finish_non_exhaustive()
    }
}
