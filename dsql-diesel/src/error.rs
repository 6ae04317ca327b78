//! The crate's error: an opaque [`Error`] with an [`ErrorKind`], and its conversion into
//! diesel's [`ConnectionError`].

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use diesel::ConnectionError;

/// What went wrong, coarse enough to match on. New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Opening a connection failed; the inner kind says why (access denied, TLS, credentials,
    /// network, DSQL refusing new connections, ...). [`Error::connect_error`] has the details.
    Connect(dsql_tokio_postgres::ErrorKind),
    /// The connection opened, but diesel-async's session setup (`SET TIME ZONE 'UTC'`,
    /// `SET CLIENT_ENCODING TO 'UTF8'`) failed.
    Setup,
    /// No pooled connection became available within the pool's timeout. When connect attempts
    /// failed meanwhile, [`Error::connect_error`] returns the last one: usually the reason.
    PoolTimeout,
    /// A pooled connection could not be opened or made ready, and the pool kept only the
    /// message of why (a hook failed, or its first query).
    Pool,
    /// The pool was closed.
    PoolClosed,
    /// The pool settings are invalid.
    Config,
}

/// An error from dsql-diesel. Its message says what to do next; it never contains the IAM
/// token, a secret access key or a session token.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Source>,
}

// Without a pool feature the pool errors are never built.
#[cfg_attr(not(any(feature = "bb8", feature = "deadpool")), allow(dead_code))]
#[derive(Debug)]
enum Source {
    /// A connect failure: its message is this error's message (or part of it).
    Connect(Arc<dsql_tokio_postgres::Error>),
    Diesel(ConnectionError),
    Other(Box<dyn StdError + Send + Sync>),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.source {
            // The connect error's message is already ours: its causes come next.
            Some(Source::Connect(err)) if self.kind != ErrorKind::PoolTimeout => err.source(),
            Some(Source::Connect(err)) => Some(err.as_ref()),
            Some(Source::Diesel(err)) => Some(err),
            Some(Source::Other(err)) => Some(err.as_ref()),
            None => None,
        }
    }
}

#[cfg_attr(not(any(feature = "bb8", feature = "deadpool")), allow(dead_code))]
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

    pub(crate) fn connect_arc(&self) -> Option<Arc<dsql_tokio_postgres::Error>> {
        match &self.source {
            Some(Source::Connect(err)) => Some(err.clone()),
            _ => None,
        }
    }

    /// True when no pooled connection became available in time.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::PoolTimeout
    }

    pub(crate) fn connect(err: Arc<dsql_tokio_postgres::Error>) -> Self {
        Self {
            kind: ErrorKind::Connect(err.kind()),
            message: err.to_string(),
            source: Some(Source::Connect(err)),
        }
    }

    pub(crate) fn setup(err: ConnectionError) -> Self {
        Self {
            kind: ErrorKind::Setup,
            message: format!(
                "the DSQL connection opened, but diesel-async's session setup (SET TIME ZONE 'UTC', \
                 SET CLIENT_ENCODING TO 'UTF8') failed: {err}"
            ),
            source: Some(Source::Diesel(err)),
        }
    }

    pub(crate) fn timed_out(
        timeout: Duration,
        last_connect_error: Option<Arc<dsql_tokio_postgres::Error>>,
    ) -> Self {
        let message = match &last_connect_error {
            Some(err) => format!(
                "no pooled connection within {} ms; the last attempt to open one failed: {err}",
                timeout.as_millis()
            ),
            None => format!(
                "no pooled connection within {} ms: every connection is in use; raise max_size or \
                 the connection timeout, or hold connections for less time",
                timeout.as_millis()
            ),
        };
        Self {
            kind: ErrorKind::PoolTimeout,
            message,
            source: last_connect_error.map(Source::Connect),
        }
    }

    pub(crate) fn pool(
        kind: ErrorKind,
        message: impl fmt::Display,
        source: Option<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            message: message.to_string(),
            source: source.map(Source::Other),
        }
    }
}

/// Into diesel's own connection error, for `custom_setup` closures and code that expects
/// [`ConnectionError`]: the message (which says what to do, never a secret) survives; a
/// configuration error becomes [`ConnectionError::InvalidConnectionUrl`], a failed session setup
/// stays [`ConnectionError::CouldntSetupConfiguration`], anything else becomes
/// [`ConnectionError::BadConnection`]. The [`ErrorKind`] itself cannot be carried by diesel's type;
/// the pools of this crate return [`Error`] with it.
impl From<Error> for ConnectionError {
    fn from(err: Error) -> Self {
        match (err.kind, err.source) {
            (_, Some(Source::Diesel(inner))) => inner,
            (ErrorKind::Connect(dsql_tokio_postgres::ErrorKind::Config) | ErrorKind::Config, _) => {
                ConnectionError::InvalidConnectionUrl(err.message)
            }
            _ => ConnectionError::BadConnection(err.message),
        }
    }
}
