//! `dsql local`: a local DSQL endpoint (token-verifying TLS gateway in front of a temporary
//! PostgreSQL) that runs until SIGINT, SIGTERM or SIGHUP. When ready it prints one JSON line on
//! stdout with everything a client needs; logs go to stderr.
//!
//! The signal handlers are installed before anything is started, so a signal at any moment
//! (during initdb, PostgreSQL's start, or shutdown) stops everything in order; and if this
//! process is killed outright (SIGKILL), dsql-local's supervisor still removes PostgreSQL and
//! its temporary directories within seconds.

use crate::error::CliError;
use dsql_local::LocalDsql;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
#[command(
    after_help = "Credentials default to AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN when set, \
else the local pair AKIDLOCALDSQLEXAMPLE / dsql-local-secret-key-for-testing-only.\n\
Keep secrets out of the process list (every local user can read it): prefer --secret-key-file and \
--session-token-file, or the AWS_* variables, to --secret-key and --session-token.\n\
Ready line (stdout, one JSON object): host, port, address, region, ca, user, database, access_key_id, connection_string.",
    group = clap::ArgGroup::new("secret").args(["secret_key", "secret_key_file"]),
    group = clap::ArgGroup::new("session").args(["session_token", "session_token_file"])
)]
pub(crate) struct Args {
    /// Port on 127.0.0.1 to listen on [default: a free port]
    #[arg(long)]
    port: Option<u16>,
    /// The cluster's region: tokens must be signed for it
    #[arg(long, default_value = dsql_local::DEFAULT_REGION)]
    region: String,
    /// The access key id the gateway accepts (with --secret-key-file or --secret-key)
    #[arg(long, requires = "secret", value_name = "KEY")]
    access_key: Option<String>,
    /// The secret access key the gateway accepts (with --access-key). Visible in the process
    /// list: prefer --secret-key-file
    #[arg(long, requires = "access_key", value_name = "SECRET")]
    secret_key: Option<String>,
    /// A file whose first line is the secret access key the gateway accepts (with --access-key)
    #[arg(long, requires = "access_key", value_name = "FILE")]
    secret_key_file: Option<PathBuf>,
    /// The session token the gateway requires (temporary credentials). Visible in the process
    /// list: prefer --session-token-file
    #[arg(long, requires = "access_key", value_name = "TOKEN")]
    session_token: Option<String>,
    /// A file whose first line is the session token the gateway requires
    #[arg(long, requires = "access_key", value_name = "FILE")]
    session_token_file: Option<PathBuf>,
    /// Another name of the cluster (a custom endpoint, e.g. localhost): SNI naming it reaches the
    /// cluster, and tokens must then be signed for it. Repeat for more
    #[arg(long, value_name = "NAME")]
    host_alias: Vec<String>,
    /// Use this PostgreSQL (`postgres://user[:password]@host[:port]/db`) instead of a temporary one
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// Close connections after this many seconds [default: 3600, DSQL's limit]
    #[arg(long, value_name = "SECS")]
    max_connection_age: Option<u64>,
    /// New connections allowed per second, also the burst size [default: 100/s, burst 1000]
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,
    /// Open connections allowed at once [default: 10000]
    #[arg(long, value_name = "N")]
    max_connections: Option<u32>,
    /// Write the CA certificate (dsql-local-ca.pem) here [default: a temporary directory]
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
    /// Which SQL to accept: `dsql` refuses what DSQL refuses, with its errors; `postgres` turns
    /// the SQL rules off (the connection rules stay)
    #[arg(long, value_enum, default_value_t = DialectArg::Dsql)]
    dialect: DialectArg,
    /// Rows one transaction may modify [default: 3000, DSQL's limit]
    #[arg(long, value_name = "N")]
    max_transaction_rows: Option<u64>,
    /// Seconds a transaction block may stay open [default: 300, DSQL's documented limit]
    #[arg(long, value_name = "SECS")]
    max_transaction_age: Option<u64>,
}

/// `--dialect` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DialectArg {
    /// DSQL's statement and transaction rules.
    Dsql,
    /// Plain PostgreSQL.
    Postgres,
}

// By hand: the secret key, session token and upstream URL (which may hold a password) stay out of Debug.
impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |o: &Option<String>| o.as_ref().map(|_| "** redacted **");
        f.debug_struct("Args")
            .field("port", &self.port)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field("secret_key", &redacted(&self.secret_key))
            .field("secret_key_file", &self.secret_key_file)
            .field("session_token", &redacted(&self.session_token))
            .field("session_token_file", &self.session_token_file)
            .field("host_alias", &self.host_alias)
            .field("upstream", &redacted(&self.upstream))
            .field("max_connection_age", &self.max_connection_age)
            .field("rate_limit", &self.rate_limit)
            .field("max_connections", &self.max_connections)
            .field("tls_dir", &self.tls_dir)
            .field("dialect", &self.dialect)
            .field("max_transaction_rows", &self.max_transaction_rows)
            .field("max_transaction_age", &self.max_transaction_age)
            .finish()
    }
}

/// The first line of a secret file, or a usage error that names the file and the flag.
fn read_secret_file(path: &std::path::Path, flag: &str) -> Result<String, CliError> {
    use std::io::Read;
    let mut text = String::new();
    // Bounded: a secret is short, and the path may name something endless (/dev/zero).
    std::fs::File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_string(&mut text))
        .map_err(|e| {
            CliError::usage(format!(
                "{flag} {}: cannot read it ({e}); give a readable file whose first line is the secret",
                path.display()
            ))
        })?;
    let line = text.lines().next().unwrap_or("").trim().to_owned();
    if line.is_empty() {
        return Err(CliError::usage(format!(
            "{flag} {}: the file is empty; put the secret on its first line",
            path.display()
        )));
    }
    Ok(line)
}

fn builder(args: Args) -> Result<dsql_local::LocalDsqlBuilder, CliError> {
    let mut b = LocalDsql::builder().region(args.region);
    if let Some(port) = args.port {
        b = b.port(port);
    }
    let secret = match (args.secret_key, &args.secret_key_file) {
        (Some(s), _) => Some(s),
        (None, Some(path)) => Some(read_secret_file(path, "--secret-key-file")?),
        (None, None) => None,
    };
    let session_token = match (args.session_token, &args.session_token_file) {
        (Some(s), _) => Some(s),
        (None, Some(path)) => Some(read_secret_file(path, "--session-token-file")?),
        (None, None) => None,
    };
    if let (Some(access), Some(secret)) = (args.access_key, secret) {
        b = b.credentials(access, secret, session_token);
    }
    for alias in args.host_alias {
        b = b.host_alias(alias);
    }
    if let Some(url) = args.upstream {
        b = b.upstream(url);
    }
    if let Some(secs) = args.max_connection_age {
        if secs == 0 {
            return Err(CliError::usage(
                "--max-connection-age must be at least 1 second",
            ));
        }
        b = b.max_connection_age(Duration::from_secs(secs));
    }
    if let Some(n) = args.rate_limit {
        b = b.rate_limit(n, n);
    }
    if let Some(n) = args.max_connections {
        b = b.max_connections(n);
    }
    if let Some(dir) = args.tls_dir {
        b = b.tls_dir(dir);
    }
    b = b.dialect(match args.dialect {
        DialectArg::Dsql => dsql_local::Dialect::Dsql,
        DialectArg::Postgres => dsql_local::Dialect::Postgres,
    });
    if let Some(n) = args.max_transaction_rows {
        b = b.max_transaction_rows(n);
    }
    if let Some(secs) = args.max_transaction_age {
        if secs == 0 {
            return Err(CliError::usage(
                "--max-transaction-age must be at least 1 second",
            ));
        }
        b = b.max_transaction_age(std::time::Duration::from_secs(secs));
    }
    Ok(b)
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    // Before anything starts: from here on a signal stops us in order, never outright.
    let mut signals = Signals::install()?;
    let builder = builder(args)?;
    let started = tokio::select! {
        started = builder.start() => started,
        signal = signals.recv() => {
            // Dropping the half-started endpoint stops PostgreSQL and removes its directories.
            tracing::info!(signal, "stopped during startup");
            return Ok(());
        }
    };
    let dsql = started.map_err(|e| {
        if e.is_usage() {
            CliError::usage(e)
        } else {
            CliError::runtime(e)
        }
    })?;
    let ready = serde_json::json!({
        "host": dsql.host(),
        "port": dsql.port(),
        "address": dsql.address().ip().to_string(),
        "region": dsql.region(),
        "ca": dsql.ca_path().display().to_string(),
        "user": "admin",
        "database": "postgres",
        "access_key_id": dsql.credentials().access_key_id(),
        "connection_string": dsql.connection_string(),
    });
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{ready}")
            .and_then(|()| out.flush())
            .map_err(|e| {
                CliError::runtime(format!("cannot write the ready line to stdout: {e}"))
            })?;
    }
    let signal = signals.recv().await;
    tracing::info!(signal, "stopping dsql local");
    // Further signals during shutdown are caught by the same handlers and change nothing.
    dsql.shutdown().await.map_err(CliError::runtime)
}

/// SIGINT, SIGTERM and SIGHUP, caught from installation on (tokio keeps the handlers for the
/// life of the process).
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, CliError> {
        use tokio::signal::unix::{SignalKind, signal};
        let on = |kind: SignalKind, name: &str| {
            signal(kind)
                .map_err(|e| CliError::runtime(format!("cannot install a handler for {name}: {e}")))
        };
        Ok(Signals {
            int: on(SignalKind::interrupt(), "SIGINT")?,
            term: on(SignalKind::terminate(), "SIGTERM")?,
            hup: on(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The next signal's name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}
