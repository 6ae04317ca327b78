//! The crate's one error type: an opaque [`Error`] with an [`ErrorKind`] to match on.

use std::fmt;

/// What went wrong, coarse enough to match on. New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The options are invalid, or ask for something sqlx cannot do (hostaddr, direct TLS).
    Config,
    /// No AWS credentials could be loaded, or they expire too soon for a usable token.
    Credentials,
    /// DSQL refused the IAM token ("access denied"): the message names the access key id,
    /// signing host, region and action used.
    AccessDenied,
    /// DSQL kept refusing new connections (53400 rate exceeded, 53300 too many connections)
    /// beyond the retry budget.
    Refused,
    /// The TLS handshake or certificate verification failed.
    Tls,
    /// The server could not be reached, or closed the connection during startup.
    Connect,
    /// No connection within the pool's acquire timeout.
    Timeout,
    /// The pool was closed.
    PoolClosed,
    /// The server reported an error (other than the ones above).
    Db,
    /// OCC conflicts outlasted the retry policy of `transaction_with_retry`.
    OccConflict,
}

/// An error from dsql-sqlx. Its message says what to do next; it never contains a token, a
/// secret access key or a session token.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
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

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    pub(crate) fn from_core(err: dsql_auth_core::Error) -> Self {
        use dsql_auth_core::ErrorKind as Core;
        let kind = match err.kind() {
            Core::Credentials | Core::CredentialsExpired | Core::Signing => ErrorKind::Credentials,
            _ => ErrorKind::Config,
        };
        Self::new(kind, err.to_string()).with_source(err)
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What this error means for a pool (the core's classification): whether retrying could
    /// help ([`ConnectFailure::is_fatal`](dsql_auth_core::limits::ConnectFailure::is_fatal)).
    /// Meaningful for errors from [`connect`](crate::connect) and [`Pool::acquire`](crate::Pool::acquire).
    pub fn connect_failure(&self) -> dsql_auth_core::limits::ConnectFailure {
        use dsql_auth_core::limits::ConnectFailure as F;
        match self.kind {
            ErrorKind::Config | ErrorKind::PoolClosed => F::Config,
            ErrorKind::Credentials => F::Credentials,
            ErrorKind::AccessDenied => F::AccessDenied,
            ErrorKind::Refused => F::Refused,
            ErrorKind::Tls => F::Tls,
            ErrorKind::Connect => F::Network,
            ErrorKind::Timeout => F::Timeout,
            ErrorKind::Db | ErrorKind::OccConflict => F::Rejected,
        }
    }

    /// The sqlx error underneath, if this came from sqlx (a server error, I/O, TLS, pool).
    pub fn as_sqlx(&self) -> Option<&sqlx::Error> {
        self.source.as_deref()?.downcast_ref::<sqlx::Error>()
    }
}

impl From<sqlx::Error> for Error {
    /// A sqlx error from a query, kept as the source ([`Error::as_sqlx`]); kind
    /// [`ErrorKind::OccConflict`] for an OCC conflict, else [`ErrorKind::Db`] (or
    /// [`ErrorKind::PoolClosed`], [`ErrorKind::Timeout`] for sqlx's pool errors).
    fn from(err: sqlx::Error) -> Self {
        let kind = match &err {
            sqlx::Error::PoolClosed => ErrorKind::PoolClosed,
            sqlx::Error::PoolTimedOut => ErrorKind::Timeout,
            _ if crate::connect::class_of(&err).is_some_and(|c| c.is_occ_conflict()) => {
                ErrorKind::OccConflict
            }
            _ => ErrorKind::Db,
        };
        Self::new(kind, err.to_string()).with_source(err)
    }
}
