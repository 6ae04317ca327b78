//! The crate's error type: an opaque [`Error`] with an [`ErrorKind`] to match on.

use std::error::Error as StdError;
use std::fmt;

use dsql_auth_core::{DsqlErrorClass, classify};
use tokio_postgres::error::DbError;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong, coarse enough to match on. New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration is invalid: connection string, endpoint, `hostaddr`, `sslrootcert`, an
    /// option combination that cannot work. Fix the configuration; retrying will not help.
    Config,
    /// No credentials could be loaded, they have expired, or a token could not be signed.
    Credentials,
    /// The TLS handshake failed: untrusted certificate, certificate for another host, protocol error.
    Tls,
    /// The network connection failed or closed (DNS, refused, reset) before the session was ready.
    Connect,
    /// `connect_timeout` elapsed before the session was ready.
    Timeout,
    /// DSQL refused the IAM token ("access denied"): wrong credentials, missing IAM permission,
    /// or a token signed for another host, region or action.
    AccessDenied,
    /// DSQL kept refusing new connections (rate exceeded, too many connections) until the
    /// connect retry budget was spent.
    Refused,
    /// The server reported an error (for example an unsupported startup parameter, or a failed
    /// statement inside [`transaction_with_retry`](crate::transaction_with_retry)).
    Db,
    /// An optimistic-concurrency conflict (OC000/OC001) persisted through every retry.
    OccConflict,
}

/// An error from dsql-tokio-postgres. Its message says what to do next; it never contains the
/// IAM token, a secret access key or a session token.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Source>,
}

#[derive(Debug)]
enum Source {
    /// A core error whose message is already this error's message: its causes come next.
    Core(dsql_auth_core::Error),
    Other(BoxError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.source {
            Some(Source::Core(core)) => core.source(),
            Some(Source::Other(other)) => Some(other.as_ref()),
            None => None,
        }
    }
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl fmt::Display) -> Self {
        Self {
            kind,
            message: message.to_string(),
            source: None,
        }
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(Source::Other(source.into()));
        self
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The server's error, if the server sent one (SQLSTATE, message, detail).
    pub fn as_db_error(&self) -> Option<&DbError> {
        let mut next = StdError::source(self);
        while let Some(err) = next {
            if let Some(db) = err.downcast_ref::<DbError>() {
                return Some(db);
            }
            if let Some(pg) = err.downcast_ref::<tokio_postgres::Error>()
                && let Some(db) = pg.as_db_error()
            {
                return Some(db);
            }
            next = err.source();
        }
        None
    }

    /// How DSQL's error classification sees the server's error, if there is one.
    pub fn dsql_class(&self) -> Option<DsqlErrorClass> {
        self.as_db_error()
            .map(|db| classify(db.code().code(), db.message()))
    }

    /// How a pool should treat this error when opening a connection failed with it: the
    /// core's [`ConnectFailure`](dsql_auth_core::limits::ConnectFailure), whose
    /// [`is_fatal`](dsql_auth_core::limits::ConnectFailure::is_fatal) says whether retrying can help.
    pub fn connect_failure(&self) -> dsql_auth_core::limits::ConnectFailure {
        use dsql_auth_core::limits::ConnectFailure as F;
        match self.kind {
            ErrorKind::Config => F::Config,
            ErrorKind::Credentials => F::Credentials,
            ErrorKind::Tls => F::Tls,
            ErrorKind::Connect => F::Network,
            ErrorKind::Timeout => F::Timeout,
            ErrorKind::AccessDenied => F::AccessDenied,
            ErrorKind::Refused => F::Refused,
            ErrorKind::Db | ErrorKind::OccConflict => F::Rejected,
        }
    }

    /// Maps a core error (configuration, credentials, signing) to this crate's error.
    pub(crate) fn from_core(err: dsql_auth_core::Error) -> Self {
        use dsql_auth_core::ErrorKind as Core;
        let kind = match err.kind() {
            Core::InvalidEndpoint | Core::InvalidConnectionString | Core::InvalidSigningParams => {
                ErrorKind::Config
            }
            _ => ErrorKind::Credentials,
        };
        // The core's message already says what to do: it becomes ours, its causes our causes.
        Self {
            kind,
            message: err.to_string(),
            source: Some(Source::Core(err)),
        }
    }

    /// Maps a tokio-postgres error from a statement (not from connecting).
    pub(crate) fn from_query(err: tokio_postgres::Error) -> Self {
        if let Some(db) = err.as_db_error() {
            let message = format!(
                "the server rejected a statement: {} (SQLSTATE {})",
                db.message(),
                db.code().code()
            );
            return Self::new(ErrorKind::Db, message).with_source(err);
        }
        if err.is_closed() {
            return Self::new(
                ErrorKind::Connect,
                "the connection is closed (DSQL closes connections after 60 minutes and on \
                 network failures): open a new connection or let the pool replace it",
            )
            .with_source(err);
        }
        Self::new(ErrorKind::Connect, format!("the connection failed: {err}")).with_source(err)
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(err: tokio_postgres::Error) -> Self {
        Self::from_query(err)
    }
}
