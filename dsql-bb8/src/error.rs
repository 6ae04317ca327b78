//! The pool's error: an opaque [`Error`] with an [`ErrorKind`] to match on.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use dsql_tokio_postgres::tokio_postgres;

/// What went wrong, coarse enough to match on. New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Opening a connection failed; the inner kind says why (access denied, TLS, credentials,
    /// network, ...). Reported to waiting callers at once when retrying cannot help;
    /// [`Error::connect_error`] has the details.
    Connect(dsql_tokio_postgres::ErrorKind),
    /// No connection became available within the pool's connection timeout. When connection
    /// attempts failed meanwhile, [`Error::connect_error`] returns the last one: usually the reason.
    PoolTimeout,
    /// A pooled connection reached its lifetime; the pool replaces it. (Seen only by bb8's
    /// error sink, never by callers of [`Pool::get`](crate::Pool::get).)
    Expired,
    /// A pooled connection failed its check (closed by the server or the network); the pool
    /// replaces it. (Seen by bb8's error sink.)
    Invalid,
    /// The pool settings are invalid.
    Config,
}

/// An error from a DSQL pool. Cheap to clone (the causes are shared), so one connect failure can
/// be reported to every caller waiting for a connection. Its message says what to do next; it
/// never contains a token or secret.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Source>,
}

#[derive(Debug, Clone)]
enum Source {
    Connect(Arc<dsql_tokio_postgres::Error>),
    Query(Arc<tokio_postgres::Error>),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.source {
            // A connect error's message is already ours: its causes come next.
            Some(Source::Connect(err)) if self.kind != ErrorKind::PoolTimeout => err.source(),
            Some(Source::Connect(err)) => Some(err.as_ref()),
            Some(Source::Query(err)) => Some(err.as_ref()),
            None => None,
        }
    }
}

impl Error {
    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The connect failure behind this error: for [`ErrorKind::Connect`], and for
    /// [`ErrorKind::PoolTimeout`] when an attempt to open a connection failed while waiting.
    pub fn connect_error(&self) -> Option<&dsql_tokio_postgres::Error> {
        match &self.source {
            Some(Source::Connect(err)) => Some(err),
            _ => None,
        }
    }

    fn new(kind: ErrorKind, message: impl fmt::Display, source: Option<Source>) -> Self {
        let message = message.to_string();
        Self {
            kind,
            message,
            source,
        }
    }

    pub(crate) fn connect(err: Arc<dsql_tokio_postgres::Error>) -> Self {
        Self::new(
            ErrorKind::Connect(err.kind()),
            &err,
            Some(Source::Connect(err.clone())),
        )
    }

    pub(crate) fn timed_out(
        timeout: Duration,
        last: Option<Arc<dsql_tokio_postgres::Error>>,
    ) -> Self {
        let ms = timeout.as_millis();
        let message = match &last {
            Some(err) => format!(
                "no pooled connection within {ms} ms; the last attempt to open one failed: {err}"
            ),
            None => format!(
                "no pooled connection within {ms} ms: every connection is in use; raise max_size or \
                 connection_timeout, or hold connections for less time"
            ),
        };
        Self::new(ErrorKind::PoolTimeout, message, last.map(Source::Connect))
    }

    pub(crate) fn expired() -> Self {
        let message = "the pooled connection reached its maximum lifetime and was retired";
        Self::new(ErrorKind::Expired, message, None)
    }

    pub(crate) fn invalid(err: tokio_postgres::Error) -> Self {
        let message =
            format!("a pooled connection failed its validation query and was discarded: {err}");
        Self::new(
            ErrorKind::Invalid,
            message,
            Some(Source::Query(Arc::new(err))),
        )
    }

    pub(crate) fn config(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Config, message, None)
    }
}
