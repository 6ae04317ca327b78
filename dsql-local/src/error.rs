//! The harness's error type: opaque, with a [`kind`](Error::kind); every message says what to do next.

use std::path::PathBuf;

/// Why a [`LocalDsql`](crate::LocalDsql) could not start or do what was asked. Its message says
/// what to do; [`kind`](Self::kind) says which class of failure it is, for programs.
pub struct Error(Repr);

/// The class of an [`Error`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`) were found: install them.
    PostgresNotFound,
    /// Running as root, but there is no `postgres` user to run PostgreSQL as.
    NoPostgresUser,
    /// A PostgreSQL command (initdb, the server) failed or did not become ready.
    Postgres,
    /// The upstream URL could not be used.
    InvalidUpstream,
    /// A builder option was out of range (a usage error: fix the option).
    InvalidConfig,
    /// Generating the CA or the server certificate failed.
    Certificate,
    /// Writing a file (CA PEM, configuration) failed.
    Write,
    /// A socket or process operation failed.
    Io,
    /// The upstream PostgreSQL answered an administrative command with an error.
    Upstream,
}

#[derive(Debug, thiserror::Error)]
enum Repr {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found via `pg_config --bindir`, PATH or \
         /usr/lib/postgresql/*/bin; install them with `apt-get install postgresql` \
         (or pass an upstream URL)"
    )]
    PostgresNotFound,
    #[error(
        "running as root, but PostgreSQL refuses to run as root and there is no `postgres` user to run it as; \
         create one (`apt-get install postgresql` does) or run as an unprivileged user"
    )]
    NoPostgresUser,
    #[error("`{command}` failed: {detail}")]
    Postgres { command: String, detail: String },
    #[error(
        "invalid upstream URL: {0}; expected postgres://[user[:password]@]host[:port][/database]"
    )]
    InvalidUpstream(String),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error(
        "cannot generate TLS certificates: {0}; report this as a bug with the region and host aliases used"
    )]
    Certificate(String),
    #[error("cannot write {}: {source}; check that the directory exists and is writable", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("upstream PostgreSQL refused `{what}`: {message}")]
    Upstream { what: String, message: String },
}

impl Error {
    /// Which class of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match &self.0 {
            Repr::PostgresNotFound => ErrorKind::PostgresNotFound,
            Repr::NoPostgresUser => ErrorKind::NoPostgresUser,
            Repr::Postgres { .. } => ErrorKind::Postgres,
            Repr::InvalidUpstream(_) => ErrorKind::InvalidUpstream,
            Repr::InvalidConfig(_) => ErrorKind::InvalidConfig,
            Repr::Certificate(_) => ErrorKind::Certificate,
            Repr::Write { .. } => ErrorKind::Write,
            Repr::Io { .. } => ErrorKind::Io,
            Repr::Upstream { .. } => ErrorKind::Upstream,
        }
    }

    /// Whether the caller's input (a builder option, the upstream URL) is at fault.
    pub fn is_usage(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::InvalidConfig | ErrorKind::InvalidUpstream
        )
    }

    pub(crate) fn postgres_not_found() -> Self {
        Error(Repr::PostgresNotFound)
    }

    pub(crate) fn no_postgres_user() -> Self {
        Error(Repr::NoPostgresUser)
    }

    pub(crate) fn postgres(command: impl Into<String>, detail: impl Into<String>) -> Self {
        Error(Repr::Postgres {
            command: command.into(),
            detail: detail.into(),
        })
    }

    pub(crate) fn invalid_upstream(why: impl Into<String>) -> Self {
        Error(Repr::InvalidUpstream(why.into()))
    }

    pub(crate) fn invalid_config(why: impl Into<String>) -> Self {
        Error(Repr::InvalidConfig(why.into()))
    }

    pub(crate) fn certificate(why: impl Into<String>) -> Self {
        Error(Repr::Certificate(why.into()))
    }

    pub(crate) fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error(Repr::Write {
            path: path.into(),
            source,
        })
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error(Repr::Io {
            context: context.into(),
            source,
        })
    }

    pub(crate) fn upstream(what: impl Into<String>, message: impl Into<String>) -> Self {
        Error(Repr::Upstream {
            what: what.into(),
            message: message.into(),
        })
    }
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No variant holds a secret (the upstream URL is never echoed), so the details may show.
        f.debug_struct("Error")
            .field("kind", &self.kind())
            .field("message", &self.0.to_string())
            .finish()
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_messages_say_what_to_do() {
        let e = Error::postgres_not_found();
        assert_eq!(e.kind(), ErrorKind::PostgresNotFound);
        assert!(e.to_string().contains("apt-get install postgresql"));
        let e = Error::invalid_config("max connections must be at least 1");
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert!(e.is_usage());
        let e = Error::io("cannot listen", std::io::ErrorKind::AddrInUse.into());
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(!e.is_usage());
        assert!(std::error::Error::source(&e).is_some());
        assert!(format!("{e:?}").contains("Io"));
    }
}
