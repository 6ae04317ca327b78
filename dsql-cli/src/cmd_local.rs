//! `dsql local`: a local DSQL endpoint (token-verifying TLS gateway in front of a temporary
//! PostgreSQL) that runs until SIGINT or SIGTERM. When ready it prints one JSON line on stdout
//! with everything a client needs; logs go to stderr.

use crate::error::CliError;
use dsql_local::LocalDsql;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
#[command(
    after_help = "Credentials default to AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN when set, \
else the local pair AKIDLOCALDSQLEXAMPLE / dsql-local-secret-key-for-testing-only.\n\
Ready line (stdout, one JSON object): host, port, address, region, ca, user, database, access_key_id, connection_string."
)]
pub(crate) struct Args {
    /// Port on 127.0.0.1 to listen on [default: a free port]
    #[arg(long)]
    port: Option<u16>,
    /// The cluster's region: tokens must be signed for it
    #[arg(long, default_value = dsql_local::DEFAULT_REGION)]
    region: String,
    /// The access key id the gateway accepts (with --secret-key)
    #[arg(long, requires = "secret_key", value_name = "KEY")]
    access_key: Option<String>,
    /// The secret access key the gateway accepts (with --access-key)
    #[arg(long, requires = "access_key", value_name = "SECRET")]
    secret_key: Option<String>,
    /// The session token the gateway requires (temporary credentials)
    #[arg(long, requires = "access_key", value_name = "TOKEN")]
    session_token: Option<String>,
    /// Use this PostgreSQL (postgres://user[:password]@host[:port]/db) instead of a temporary one
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
            .field("session_token", &redacted(&self.session_token))
            .field("upstream", &redacted(&self.upstream))
            .field("max_connection_age", &self.max_connection_age)
            .field("rate_limit", &self.rate_limit)
            .field("max_connections", &self.max_connections)
            .field("tls_dir", &self.tls_dir)
            .finish()
    }
}

fn builder(args: Args) -> Result<dsql_local::LocalDsqlBuilder, CliError> {
    let mut b = LocalDsql::builder().region(args.region);
    if let Some(port) = args.port {
        b = b.port(port);
    }
    if let (Some(access), Some(secret)) = (args.access_key, args.secret_key) {
        b = b.credentials(access, secret, args.session_token);
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
    Ok(b)
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let dsql = builder(args)?.start().await.map_err(|e| match e {
        dsql_local::Error::InvalidConfig(_) | dsql_local::Error::InvalidUpstream(_) => {
            CliError::usage(e)
        }
        other => CliError::runtime(other),
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
    let signal = wait_for_signal().await;
    tracing::info!(signal, "stopping dsql local");
    dsql.shutdown().await.map_err(CliError::runtime)
}

/// Resolves on SIGINT or SIGTERM, naming the signal.
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; stop with SIGINT (Ctrl-C)");
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
