//! Retrying whole transactions on DSQL's optimistic-concurrency conflicts (OC000, OC001).
//!
//! The decisions (budgets, backoff, what counts as a conflict, the text when the budget is spent)
//! are dsql-auth-core's ([`RetryState`], [`classify`], [`diagnostics`]); this module only opens,
//! commits and rolls back tokio-postgres transactions around them.

use std::any::Any;
use std::error::Error as StdError;

use dsql_auth_core::retry::{RetryState, Stop};
use dsql_auth_core::{DsqlErrorClass, OccBody, RetryPolicy, SystemClock, classify, diagnostics};
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
    mut body: F,
) -> Result<T, E>
where
    F: for<'r, 't> OccBody<&'r Transaction<'t>, T, E, Fut: Send> + Send,
    T: Send,
    E: From<tokio_postgres::Error> + StdError + Send + 'static,
{
    let mut state = RetryState::start(policy, &SystemClock);
    loop {
        let attempt = state.next_attempt();
        let error = match run_once(client, &mut body).await {
            Ok(value) => {
                if attempt > 1 {
                    tracing::info!(
                        occ_retries = attempt - 1,
                        "transaction committed after OCC conflicts"
                    );
                }
                return Ok(value);
            }
            Err(error) => error,
        };
        let class = occ_class(&error).filter(|c| c.is_occ_conflict());
        match state.failed(class.is_some(), rand::random::<f64>()) {
            Ok(delay) => {
                tracing::debug!(
                    occ_retry = attempt,
                    reason = %class.unwrap_or(DsqlErrorClass::Other),
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "OCC conflict; retrying the transaction"
                );
                tokio::time::sleep(delay).await;
            }
            Err(stop) if !stop.exhausted => return Err(error),
            Err(stop) => return Err(exhausted(error, class, stop)),
        }
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

/// The last conflict, once the budget is spent: logged with the core's text, which also becomes
/// the message when `E` is this crate's [`Error`].
fn exhausted<E: 'static>(mut error: E, class: Option<DsqlErrorClass>, stop: Stop) -> E {
    let reason = class.unwrap_or(DsqlErrorClass::Other);
    let text = diagnostics::occ_exhausted(&reason, stop.attempts, stop.elapsed);
    tracing::warn!("{text}");
    let any: &mut dyn Any = &mut error;
    if let Some(ours) = any.downcast_mut::<Error>() {
        let last = std::mem::replace(ours, Error::new(ErrorKind::OccConflict, ""));
        *ours = Error::new(ErrorKind::OccConflict, text).with_source(last);
    }
    error
}

/// DSQL's class of the server error inside `err`, found along its source chain.
fn occ_class(err: &(dyn StdError + 'static)) -> Option<DsqlErrorClass> {
    let mut next = Some(err);
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
