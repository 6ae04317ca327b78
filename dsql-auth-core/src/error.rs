//! The crate's one error type: an opaque [`Error`] with a [`ErrorKind`] to match on.

use std::fmt;

/// What went wrong, coarse enough to match on. New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A host, cluster id or region could not be understood, or they contradict each other.
    InvalidEndpoint,
    /// A connection string is malformed or has unknown or invalid keys.
    InvalidConnectionString,
    /// A signing parameter is out of range (e.g. expiry outside 1..=604800 s).
    InvalidSigningParams,
    /// No credentials could be loaded, or the credentials provider failed.
    Credentials,
    /// The credentials expire before a usable token could be issued.
    CredentialsExpired,
    /// SigV4 signing itself failed.
    Signing,
    /// Pool settings are out of range (see [`PoolPolicy`](crate::limits::PoolPolicy)).
    InvalidPoolSettings,
}

/// An error from dsql-auth-core. Its message says what to do next; it never contains a
/// token, a secret access key or a session token.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// Creates an error of `kind` with a message that says what to do.
    pub(crate) fn new(kind: ErrorKind, message: impl fmt::Display) -> Self {
        Self {
            kind,
            message: message.to_string(),
            source: None,
        }
    }

    /// Attaches the underlying cause. The cause must not carry secrets.
    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}
