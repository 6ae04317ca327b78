//! The pool's error type.

use std::sync::Arc;
use std::time::Duration;

use dsql_tokio_postgres::ErrorKind;
use dsql_tokio_postgres::tokio_postgres;

/// An error from a DSQL pool. Cheap to clone (the causes are shared), so one connect failure can
/// be reported to every caller waiting for a connection. Never contains a token or secret.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening a new connection failed; [`Error::kind`] says why (access denied, TLS,
    /// credentials, network, ...). Reported to waiting callers at once when retrying cannot help.
    #[error(transparent)]
    Connect(Arc<dsql_tokio_postgres::Error>),
    /// No connection became available within the pool's connection timeout. When connection
    /// attempts failed meanwhile, the last failure is attached: it is usually the reason.
    #[error("{}", timed_out_message(*.timeout, .last_connect_error.as_deref()))]
    TimedOut {
        /// The pool's connection timeout.
        timeout: Duration,
        /// The last connect failure while this caller waited, if any.
        last_connect_error: Option<Arc<dsql_tokio_postgres::Error>>,
    },
    /// A pooled connection reached its maximum lifetime; the pool replaces it. (Seen only by
    /// bb8's error sink, never by callers of [`Pool::get`](crate::Pool::get).)
    #[error("the pooled connection reached its maximum lifetime and was retired")]
    Expired,
    /// A pooled connection failed its check (closed by the server or the network); the pool
    /// replaces it. (Seen by bb8's error sink.)
    #[error("a pooled connection failed its validation query and was discarded: {0}")]
    Invalid(Arc<tokio_postgres::Error>),
    /// The pool settings are invalid.
    #[error("{0}")]
    Config(String),
}

fn timed_out_message(timeout: Duration, last: Option<&dsql_tokio_postgres::Error>) -> String {
    match last {
        Some(err) => format!(
            "no pooled connection within {} ms; the last attempt to open one failed: {err}",
            timeout.as_millis()
        ),
        None => format!(
            "no pooled connection within {} ms: every connection is in use; raise max_size or connection_timeout, \
             or hold connections for less time",
            timeout.as_millis()
        ),
    }
}

impl Error {
    /// The kind of the connect failure behind this error: for [`Error::Connect`], and for
    /// [`Error::TimedOut`] when a connect attempt failed while waiting.
    pub fn kind(&self) -> Option<ErrorKind> {
        self.connect_error().map(|e| e.kind())
    }

    /// The connect failure behind this error, if any (see [`Error::kind`]).
    pub fn connect_error(&self) -> Option<&dsql_tokio_postgres::Error> {
        match self {
            Error::Connect(err) => Some(err),
            Error::TimedOut {
                last_connect_error, ..
            } => last_connect_error.as_deref(),
            _ => None,
        }
    }

    /// True when no connection became available in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::TimedOut { .. })
    }
}
