//! Rerunning whole transactions on DSQL's optimistic-concurrency conflicts (OC000, OC001).

use std::fmt;
use std::time::Instant;

use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind};
use diesel_async::{AsyncConnection, TransactionManager};
use dsql_auth_core::{DsqlErrorClass, OccKind, RetryPolicy};

/// Runs `body` in a transaction on `conn` and commits; when DSQL reports an OCC conflict (OC000
/// data, OC001 schema) from a statement or the commit, rolls back, waits as `policy` says and
/// runs `body` again in a new transaction. Returns what `body` returned in the attempt that
/// committed.
///
/// `conn` is an [`AsyncPgConnection`](diesel_async::AsyncPgConnection) or a pooled connection
/// (both pools' connections are `AsyncConnection`s). `body` is an async closure that gets the
/// connection, may borrow from its surroundings, and returns your own error type `E` (anything
/// `From<diesel::result::Error>`); it runs once per attempt, so it must not have effects outside
/// the transaction that should happen only once.
///
/// diesel reports 40001 as [`DatabaseErrorKind::SerializationFailure`] with the message only, so
/// a conflict is recognised from the message (`E`'s `Display`, which for diesel's error and for
/// `#[error(transparent)]` or `#[from]` wrappers is the server's message). Any other error is
/// returned at once; conflicts that outlast the policy give a `SerializationFailure` whose
/// message says so, converted into `E`.
///
/// ```no_run
/// # async fn demo(conn: &mut diesel_async::AsyncPgConnection) -> diesel::QueryResult<()> {
/// use diesel_async::RunQueryDsl;
/// use dsql_diesel::{RetryPolicy, transaction_with_retry};
/// transaction_with_retry(conn, &RetryPolicy::occ(), async |conn| {
///     diesel::sql_query("UPDATE counters SET n = n + 1 WHERE id = 1").execute(conn).await
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn transaction_with_retry<C, T, E, F>(
    conn: &mut C,
    policy: &RetryPolicy,
    mut body: F,
) -> Result<T, E>
where
    C: AsyncConnection,
    F: for<'r> OccBody<&'r mut C, T, E, Fut: Send> + Send,
    T: Send,
    E: From<diesel::result::Error> + fmt::Display + Send,
{
    // SEAM(core stage A): this loop becomes the core's retry runner with tokio's sleep.
    let started = Instant::now();
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        let err = match run_once(conn, &mut body).await {
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
        let Some(class) = occ_conflict(&err.to_string()) else {
            return Err(err);
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
                return Err(E::from(diesel::result::Error::DatabaseError(
                    DatabaseErrorKind::SerializationFailure,
                    Box::new(OccExhausted {
                        message: format!(
                            "the transaction still conflicted ({class}) after {attempts} attempts in {} ms: \
                             reduce contention on the rows involved, or allow more attempts in the retry policy",
                            started.elapsed().as_millis()
                        ),
                        last: err.to_string(),
                    }),
                )));
            }
        }
    }
}

async fn run_once<C, T, E, F>(conn: &mut C, body: &mut F) -> Result<T, E>
where
    C: AsyncConnection,
    F: for<'r> OccBody<&'r mut C, T, E, Fut: Send> + Send,
    T: Send,
    E: From<diesel::result::Error> + Send,
{
    C::TransactionManager::begin_transaction(conn).await?;
    match (body)(&mut *conn).await {
        Ok(value) => {
            C::TransactionManager::commit_transaction(conn).await?;
            Ok(value)
        }
        Err(err) => match C::TransactionManager::rollback_transaction(conn).await {
            // A broken transaction manager says less than the error that broke it.
            Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(err),
            Err(rollback) => Err(rollback.into()),
        },
    }
}

/// The body of [`transaction_with_retry`]: an async closure `async |conn| -> Result<T, E>`
/// (implemented for every such closure; you never implement it).
///
/// Why not plain `AsyncFnMut`: the future an `AsyncFnMut` returns cannot be required to be `Send`
/// on stable Rust, and without that the helper's future is not `Send` either (rustc reports
/// "implementation of `Send` is not general enough"), so it could not run in `tokio::spawn` or
/// an axum handler. Naming the future through `FnMut`, as diesel-async's own `transaction` does
/// through `FnOnce`, makes it `Send`. The price: the closure's future may not borrow state the
/// closure owns or borrows mutably (`count += 1` on a captured local); use an atomic or `Cell`
/// captured by reference, or return the value instead.
pub trait OccBody<A, T, E>:
    AsyncFnMut(A) -> Result<T, E> + FnMut(A) -> <Self as OccBody<A, T, E>>::Fut
{
    /// The future of one attempt.
    type Fut: Future<Output = Result<T, E>>;
}

impl<A, T, E, F, Fut> OccBody<A, T, E> for F
where
    F: AsyncFnMut(A) -> Result<T, E> + FnMut(A) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    type Fut = Fut;
}

/// OCC classification from the message alone (diesel keeps no SQLSTATE for 40001).
///
/// SEAM(core stage A): replace with the core's message-only classifier.
fn occ_conflict(message: &str) -> Option<DsqlErrorClass> {
    let class = dsql_auth_core::classify(
        dsql_auth_core::classify::SQLSTATE_SERIALIZATION_FAILURE,
        message,
    );
    matches!(
        class,
        DsqlErrorClass::OccConflict(OccKind::Data | OccKind::Schema)
    )
    .then_some(class)
}

/// The error for conflicts that outlasted the policy: kind `SerializationFailure`, our message,
/// the server's last message as the details.
#[derive(Debug)]
struct OccExhausted {
    message: String,
    last: String,
}

impl DatabaseErrorInformation for OccExhausted {
    fn message(&self) -> &str {
        &self.message
    }
    fn details(&self) -> Option<&str> {
        Some(&self.last)
    }
    fn hint(&self) -> Option<&str> {
        None
    }
    fn table_name(&self) -> Option<&str> {
        None
    }
    fn column_name(&self) -> Option<&str> {
        None
    }
    fn constraint_name(&self) -> Option<&str> {
        None
    }
    fn statement_position(&self) -> Option<i32> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_recognised_from_the_message_alone() {
        for m in [
            "change conflicts with another transaction, please retry: (OC000)",
            "schema has been updated by another transaction, please retry: (OC001)",
        ] {
            assert!(occ_conflict(m).is_some(), "{m}");
        }
        assert!(occ_conflict("duplicate key value violates unique constraint").is_none());
        assert!(occ_conflict("").is_none());
    }
}
