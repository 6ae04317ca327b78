//! Rerunning whole transactions on DSQL's optimistic-concurrency conflicts (OC000, OC001).

use std::fmt;
use std::marker::PhantomData;

use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind};
use diesel_async::{AsyncConnection, TransactionManager};
use dsql_auth_core::classify::classify_message;
use dsql_auth_core::occ_retry::{OccAttempt, run_occ};
use dsql_auth_core::{DsqlErrorClass, OccBody, RetryPolicy, SystemClock};
use rand::random;
use tokio::time::sleep;

/// Runs `body` in a transaction on `conn` and commits; when DSQL reports an OCC conflict (OC000
/// data, OC001 schema) from a statement or the commit, rolls back, waits as `policy` says and
/// runs `body` again in a new transaction. Returns what `body` returned in the attempt that
/// committed.
///
/// `policy` is the core's [`RetryPolicy`], run by the core's OCC loop. `conn` is an [`AsyncPgConnection`](diesel_async::AsyncPgConnection) or a pooled connection
/// (both pools' connections are `AsyncConnection`s). `body` is an async closure that gets the
/// connection, may borrow from its surroundings, and returns your own error type `E` (anything
/// `From<diesel::result::Error>`); it runs once per attempt, so it must not have effects outside
/// the transaction that should happen only once. The body's bound is the core's [`OccBody`]:
/// it keeps the helper's future `Send` (usable in `tokio::spawn` and web handlers), at the price
/// that the closure may share state by reference (atomics, channels, a `Mutex`) but not mutate a
/// captured local.
///
/// diesel reports 40001 as [`DatabaseErrorKind::SerializationFailure`] with the message only, so
/// a conflict is recognised from the message (`E`'s `Display`, which for diesel's error and for
/// `#[error(transparent)]` or `#[from]` wrappers is the server's message). Any other error is
/// returned at once; conflicts that outlast the policy give a `SerializationFailure` whose
/// message says so (the core's text; the server's last message is its `details`), converted into
/// `E`, and are logged at warn.
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
    body: F,
) -> Result<T, E>
where
    C: AsyncConnection,
    F: for<'r> OccBody<&'r mut C, T, E, Fut: Send> + Send,
    T: Send,
    E: From<diesel::result::Error> + fmt::Display + Send,
{
    let attempt = Attempt {
        conn,
        body,
        _out: PhantomData,
    };
    run_occ(policy, &SystemClock, attempt, sleep, random).await
}

/// One attempt: a diesel-async transaction around the body.
struct Attempt<'c, C, F, T, E> {
    conn: &'c mut C,
    body: F,
    _out: PhantomData<fn() -> (T, E)>,
}

impl<C, F, T, E> OccAttempt for Attempt<'_, C, F, T, E>
where
    C: AsyncConnection,
    F: for<'r> OccBody<&'r mut C, T, E, Fut: Send> + Send,
    T: Send,
    E: From<diesel::result::Error> + fmt::Display + Send,
{
    type Output = T;
    type Error = E;

    fn run(&mut self) -> impl Future<Output = Result<T, E>> + Send {
        run_once(self.conn, &mut self.body)
    }

    fn class(&self, err: &E) -> Option<DsqlErrorClass> {
        occ_conflict(&err.to_string())
    }

    /// A `SerializationFailure` with the core's text; the server's last message is its details.
    fn exhausted(&self, err: E, message: String) -> E {
        let last = err.to_string();
        E::from(diesel::result::Error::DatabaseError(
            DatabaseErrorKind::SerializationFailure,
            Box::new(OccExhausted { message, last }),
        ))
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

/// OCC classification from the message alone: diesel keeps no SQLSTATE for 40001, and `E`'s
/// message is the server's (the core's rule, [`classify_message`]).
fn occ_conflict(message: &str) -> Option<DsqlErrorClass> {
    Some(classify_message(message)).filter(DsqlErrorClass::is_occ_conflict)
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
