//! `dsql hyperdrive sync|run|status`: keep Cloudflare Hyperdrive configurations supplied with
//! fresh DSQL tokens, as described by a TOML file (see `dsql_hyperdrive::config`).
//!
//! Test-only: `DSQL_HYPERDRIVE_NOW` (RFC 3339) fixes the time the rotation policy decides at, so
//! tests can ask "what if it were five days later". Tokens are still signed with the system clock.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use dsql_hyperdrive::rotate::SyncReport;
use dsql_hyperdrive::state::{format_time, parse_time};
use dsql_hyperdrive::{HyperdriveClient, Rotator, RotatorConfig, StateFile, SyncOptions};

use crate::error::CliError;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: HyperdriveCommand,
}

#[derive(Debug, clap::Subcommand)]
enum HyperdriveCommand {
    /// One pass: rotate every endpoint whose token is due (PATCH with the password only).
    Sync(SyncArgs),
    /// Keep running: a pass now and then every --interval, until SIGTERM or SIGINT.
    Run(RunArgs),
    /// Show each endpoint's configuration id, last rotation, expiry and next rotation.
    Status(CommonArgs),
}

#[derive(Debug, clap::Args)]
struct CommonArgs {
    /// The rotator's TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// AWS profile to sign with (default: the AWS default credential chain).
    #[arg(long)]
    profile: Option<String>,
    /// How many endpoints are processed at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct SyncArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Show what would change; write nothing (neither Cloudflare nor the state file).
    #[arg(long)]
    dry_run: bool,
    /// Rotate every endpoint now, even when its token is not due.
    #[arg(long)]
    force: bool,
    /// Create configurations that do not exist yet (with the full origin).
    #[arg(long)]
    create_missing: bool,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Time between passes: a number with a unit s, m or h (e.g. 30m).
    #[arg(long, default_value = "1h", value_parser = parse_interval)]
    interval: Duration,
    /// Create configurations that do not exist yet (with the full origin).
    #[arg(long)]
    create_missing: bool,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit, e.g. 30m"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("{s:?}: the unit must be s, m or h")),
    };
    if secs == 0 {
        return Err("the interval must be at least 1s".into());
    }
    Ok(Duration::from_secs(secs))
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    match args.command {
        HyperdriveCommand::Sync(a) => sync(a).await,
        HyperdriveCommand::Run(a) => run_loop(a).await,
        HyperdriveCommand::Status(a) => status(a).await,
    }
}

/// The policy clock: the system clock, or `DSQL_HYPERDRIVE_NOW` (test-only).
fn policy_now() -> Result<SystemTime, CliError> {
    match std::env::var("DSQL_HYPERDRIVE_NOW") {
        Ok(v) if !v.trim().is_empty() => parse_time(v.trim()).ok_or_else(|| {
            CliError::usage(format!("DSQL_HYPERDRIVE_NOW={v:?} is not an RFC 3339 time"))
        }),
        _ => Ok(SystemTime::now()),
    }
}

struct Loaded {
    config: RotatorConfig,
    rotator: Rotator,
}

async fn load(common: &CommonArgs) -> Result<Loaded, CliError> {
    let config = RotatorConfig::load(&common.config, |k| std::env::var(k).ok())
        .map_err(|e| CliError::usage(format!("bad configuration file: {e}")))?;
    let client = HyperdriveClient::builder(config.account_id.clone(), config.api_token.clone())
        .api_base(config.api_base.clone())
        .build()
        .map_err(|e| CliError::usage(format!("{}: {e}", common.config.display())))?;
    let creds =
        dsql_auth_core::provider::default_chain_credentials(common.profile.as_deref(), None)
            .await
            .map_err(|e| CliError::runtime(e.to_string()))?;
    let rotator = Rotator::new(client, creds, config.endpoints.clone())
        .with_concurrency(usize::from(common.concurrency));
    Ok(Loaded { config, rotator })
}

fn load_state(path: Option<&Path>) -> Result<StateFile, String> {
    match path {
        Some(p) => StateFile::load(p).map_err(|e| e.to_string()),
        None => Ok(StateFile::default()),
    }
}

async fn sync(args: SyncArgs) -> Result<(), CliError> {
    let Loaded { config, rotator } = load(&args.common).await?;
    let mut state = load_state(config.state_file.as_deref()).map_err(CliError::runtime)?;
    let mut opts = SyncOptions::new(policy_now()?);
    opts.dry_run = args.dry_run;
    opts.force = args.force;
    opts.create_missing = args.create_missing;
    let report = rotator.sync(&mut state, &opts).await;
    let saved = save_state(&config, &state, &report, args.dry_run);
    print_report(&report, args.common.output, false);
    saved.map_err(CliError::runtime)?;
    if report.all_ok() {
        Ok(())
    } else {
        Err(CliError::silent_failure())
    }
}

fn save_state(
    config: &RotatorConfig,
    state: &StateFile,
    report: &SyncReport,
    dry_run: bool,
) -> Result<(), String> {
    match (&config.state_file, dry_run || !report.wrote()) {
        (Some(path), false) => state.save(path).map_err(|e| {
            format!("{e}; the passwords were written, so the next pass will rotate them again")
        }),
        _ => Ok(()),
    }
}

async fn run_loop(args: RunArgs) -> Result<(), CliError> {
    let Loaded { config, rotator } = load(&args.common).await?;
    // The state lives in memory between passes (so nothing is rotated twice without a state
    // file) and is saved after each pass that wrote. A bad clock override fails now.
    let mut state = load_state(config.state_file.as_deref()).map_err(CliError::runtime)?;
    policy_now()?;
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let pass = async {
            let mut opts = SyncOptions::new(policy_now().unwrap_or_else(|_| SystemTime::now()));
            opts.create_missing = args.create_missing;
            let report = rotator.sync(&mut state, &opts).await;
            let saved = save_state(&config, &state, &report, false);
            print_report(&report, args.common.output, true);
            saved
        };
        let mut pass = std::pin::pin!(pass);
        // A signal during a pass lets it finish, so what it wrote to Cloudflare is reported and
        // recorded in the state file; a second signal stops at once.
        let stop = tokio::select! {
            result = &mut pass => {
                report_pass_error(result);
                false
            }
            () = &mut shutdown => {
                eprintln!(
                    "dsql: stop requested: finishing the pass in progress (signal again to stop now)"
                );
                tokio::select! {
                    result = &mut pass => report_pass_error(result),
                    () = shutdown_signal() => {
                        eprintln!(
                            "dsql: stopped during a pass: passwords it wrote may be unrecorded, \
                             so the next pass may rotate them again"
                        );
                        return Ok(());
                    }
                }
                true
            }
        };
        if stop {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(args.interval) => {}
            () = &mut shutdown => break,
        }
    }
    eprintln!("dsql: hyperdrive rotator stopped");
    Ok(())
}

/// A failed pass is reported and retried at the next tick: the process survives.
fn report_pass_error(result: Result<(), String>) {
    if let Err(e) = result {
        tracing::error!(error = %e, "pass failed");
        eprintln!("dsql: {e}");
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn status(args: CommonArgs) -> Result<(), CliError> {
    let Loaded { config, rotator } = load(&args).await?;
    let state = load_state(config.state_file.as_deref()).map_err(CliError::runtime)?;
    let statuses = rotator.status(&state, policy_now()?).await;
    let any_error = statuses.iter().any(|s| s.error.is_some());
    match args.output {
        Output::Json => println!("{}", dsql_hyperdrive::rotate::status_json(&statuses)),
        Output::Text => {
            for s in &statuses {
                let id = if s.config_ids.is_empty() {
                    "-".to_owned()
                } else {
                    s.config_ids.join(",")
                };
                let mut line = format!("{}: config {id}", s.name);
                match &s.recorded {
                    Some(r) => line.push_str(&format!(
                        ", last rotation {}, token expires {}, effective expiry {}",
                        format_time(r.last_rotation),
                        format_time(r.token_expires_at),
                        format_time(r.rotation().effective_expiry())
                    )),
                    None => line.push_str(", no rotation recorded"),
                }
                match s.next_rotation {
                    Some(t) if !s.due => {
                        line.push_str(&format!(", next rotation {}", format_time(t)))
                    }
                    _ => line.push_str(", rotation due"),
                }
                if let Some(e) = &s.error {
                    line.push_str(&format!(" [error: {e}]"));
                }
                println!("{line}");
            }
        }
    }
    if any_error {
        Err(CliError::silent_failure())
    } else {
        Ok(())
    }
}

/// Prints a pass: one JSON document (one line per pass under `run`), or a line per endpoint.
/// Warnings go to stderr in text mode. No token is ever part of a report.
fn print_report(report: &SyncReport, output: Output, compact: bool) {
    match output {
        Output::Json => {
            let doc = report.to_json();
            let text = if compact {
                doc.to_string()
            } else {
                serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string())
            };
            println!("{text}");
        }
        Output::Text => {
            for e in &report.endpoints {
                let mut line = format!("{}: {}", e.name, e.action.as_str());
                if let Some(id) = &e.config_id {
                    line.push_str(&format!(" (config {id})"));
                }
                if let Some(t) = e.token_expiry {
                    line.push_str(&format!(", token expires {}", format_time(t)));
                }
                if let (Some(eff), Some(tok)) = (e.effective_expiry, e.token_expiry)
                    && eff != tok
                {
                    line.push_str(&format!(", effective expiry {}", format_time(eff)));
                }
                if let Some(t) = e.next_rotation {
                    line.push_str(&format!(", next rotation {}", format_time(t)));
                }
                if let Some(err) = &e.error {
                    line.push_str(&format!(": {err}"));
                }
                println!("{line}");
                for w in &e.warnings {
                    eprintln!("warning: {}: {w}", e.name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_interval("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_interval("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_interval("90"), Ok(Duration::from_secs(90)));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("1d").is_err());
        assert!(parse_interval("h").is_err());
    }
}
