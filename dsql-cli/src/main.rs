//! `dsql`: IAM tokens for Aurora DSQL (`dsql token`), a local DSQL endpoint (`dsql local`), and
//! Cloudflare Hyperdrive token rotation (`dsql hyperdrive`).
//!
//! Exit codes: 0 success, 1 runtime error, 2 usage error (bad flags, bad configuration file).
//!
//! Logs go to stderr, filtered by `DSQL_LOG`, else `RUST_LOG` (tracing's `EnvFilter` syntax),
//! else warnings only; colours only when stderr is a terminal; every field (the message too)
//! cut to [`LOG_FIELD_LIMIT`] bytes, since clients choose some of them (user names, TLS names).

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

/// The most of one log field (the message included) that reaches stderr.
const LOG_FIELD_LIMIT: usize = 256;

/// `text` cut to `limit` bytes on a character boundary, saying how long it was.
fn bounded(text: &str, limit: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= limit {
        return text.into();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len()).into()
}

/// The log filter: `DSQL_LOG`, else `RUST_LOG`, else warnings. A filter that does not parse is
/// reported (it would otherwise silently log nothing asked for) and the default used.
fn log_filter(var: impl Fn(&str) -> Option<String>) -> tracing_subscriber::EnvFilter {
    // aws-config warns about every link of the credential chain that found nothing; the error
    // we print says what to do, so those stay quiet unless asked for.
    const DEFAULT: &str = "warn,aws_config=error";
    let chosen = ["DSQL_LOG", "RUST_LOG"]
        .into_iter()
        .find_map(|k| var(k).filter(|v| !v.trim().is_empty()).map(|v| (k, v)));
    match chosen {
        Some((name, value)) => tracing_subscriber::EnvFilter::try_new(&value).unwrap_or_else(|e| {
            eprintln!(
                "dsql: ignoring {name}={}: {e}; write it like `info` or `dsql_local=debug,warn`",
                bounded(&value, LOG_FIELD_LIMIT)
            );
            tracing_subscriber::EnvFilter::new(DEFAULT)
        }),
        None => tracing_subscriber::EnvFilter::new(DEFAULT),
    }
}

fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::field::MakeExt;
    let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        // Log records bridged from the `log` crate (rustls) carry their metadata as fields.
        if field.name().starts_with("log.") {
            return Ok(());
        }
        let text = format!("{value:?}");
        let text = bounded(&text, LOG_FIELD_LIMIT);
        if field.name() == "message" {
            write!(w, "{text}")
        } else {
            write!(w, "{field}={text}")
        }
    })
    .delimited(" ");
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .fmt_fields(fields)
        .with_env_filter(log_filter(|k| std::env::var(k).ok()))
        .init();
}

fn main() -> std::process::ExitCode {
    // clap exits 2 on usage errors by itself and 0 for --help/--version.
    let cli = Cli::parse();
    init_logging();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_fields_are_cut_on_a_character_boundary() {
        assert_eq!(bounded("short", 8), "short");
        let long = "é".repeat(300);
        let cut = bounded(&long, LOG_FIELD_LIMIT);
        assert!(cut.len() < LOG_FIELD_LIMIT + 32, "{}", cut.len());
        assert!(cut.ends_with("... (600 bytes)"), "{cut}");
    }

    #[test]
    fn dsql_log_wins_over_rust_log_and_bad_filters_fall_back() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let both = log_filter(env(&[("DSQL_LOG", "debug"), ("RUST_LOG", "error")]));
        assert_eq!(both.to_string(), "debug");
        let rust_only = log_filter(env(&[("RUST_LOG", "dsql_local=trace")]));
        assert_eq!(rust_only.to_string(), "dsql_local=trace");
        let empty_dsql = log_filter(env(&[("DSQL_LOG", " "), ("RUST_LOG", "info")]));
        assert_eq!(empty_dsql.to_string(), "info");
        let none = log_filter(env(&[]));
        assert!(none.to_string().contains("warn"), "{none}");
        let bad = log_filter(env(&[("DSQL_LOG", "dsql=notalevel=x")]));
        assert!(bad.to_string().contains("warn"), "{bad}");
    }
}
