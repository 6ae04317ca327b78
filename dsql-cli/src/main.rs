//! `dsql`: IAM tokens for Aurora DSQL (`dsql token`), a local DSQL endpoint (`dsql local`), and
//! Cloudflare Hyperdrive token rotation (`dsql hyperdrive`).
//!
//! Exit codes: 0 success, 1 runtime error, 2 usage error (bad flags, bad configuration file).

mod cmd_hyperdrive;
mod cmd_local;
mod cmd_token;
mod error;

use clap::{Parser, Subcommand};
use error::CliError;

#[derive(Debug, Parser)]
#[command(name = "dsql", version, about = "Aurora DSQL IAM authentication tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sign an IAM authentication token (the Postgres password for DSQL).
    Token(cmd_token::Args),
    /// Run a local DSQL endpoint: a token-verifying TLS gateway in front of a real PostgreSQL.
    Local(cmd_local::Args),
    /// Keep Cloudflare Hyperdrive configurations supplied with fresh tokens.
    Hyperdrive(cmd_hyperdrive::Args),
}

fn main() -> std::process::ExitCode {
    // clap exits 2 on usage errors by itself and 0 for --help/--version.
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DSQL_LOG")
                // aws-config warns about every link of the credential chain that found nothing;
                // the error we print says what to do, so those stay quiet unless asked for.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,aws_config=error")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return CliError::runtime(format!("cannot start the async runtime: {e}")).report();
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Token(args) => cmd_token::run(args).await,
            Command::Local(args) => cmd_local::run(args).await,
            Command::Hyperdrive(args) => cmd_hyperdrive::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}
