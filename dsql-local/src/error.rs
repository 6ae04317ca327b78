//! The harness's error type: every variant says what to do next.

use std::path::PathBuf;

/// Why a [`LocalDsql`](crate::LocalDsql) could not start or do what was asked.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`) were found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found via `pg_config --bindir`, PATH or \
         /usr/lib/postgresql/*/bin; install them with `apt-get install postgresql` \
         (or pass an upstream URL)"
    )]
    PostgresNotFound,
    /// Running as root, but there is no `postgres` user to run PostgreSQL as.
    #[error(
        "running as root, but PostgreSQL refuses to run as root and there is no `postgres` user to run it as; \
         create one (`apt-get install postgresql` does) or run as an unprivileged user"
    )]
    NoPostgresUser,
    /// A PostgreSQL command (initdb, pg_ctl) failed.
    #[error("`{command}` failed: {detail}")]
    Postgres {
        /// The command that failed.
        command: String,
        /// Its output (or the server log), trimmed.
        detail: String,
    },
    /// The upstream URL could not be used.
    #[error(
        "invalid upstream URL: {0}; expected postgres://[user[:password]@]host[:port][/database]"
    )]
    InvalidUpstream(String),
    /// A builder option was out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Generating the CA or the server certificate failed.
    #[error("cannot generate TLS certificates: {0}")]
    Certificate(String),
    /// Writing a file (CA PEM, configuration) failed.
    #[error("cannot write {}: {source}; check that the directory exists and is writable", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A socket or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The upstream PostgreSQL answered an administrative command with an error.
    #[error("upstream PostgreSQL refused `{what}`: {message}")]
    Upstream {
        /// What was attempted.
        what: String,
        /// The server's message.
        message: String,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
