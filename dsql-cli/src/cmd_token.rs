//! `dsql token`: sign an IAM authentication token and print it as the token alone, a ready
//! `postgres://` URL, shell `export` lines, or JSON.
//!
//! Host and region rules (a host pasted with a port included), the defaults (user `admin`, 900 s),
//! the action for the user, the lifetime range and the signing itself all come from
//! dsql-auth-core: the flags become a `ConnectOptions`; this file only reads flags and formats the
//! result.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dsql_auth_core::clock::ManualClock;
use dsql_auth_core::connect_options::{DEFAULT_TOKEN_DURATION, DEFAULT_USER};
use dsql_auth_core::provider::{default_chain_credentials, default_margin};
use dsql_auth_core::{
    AuthToken, ConnectOptions, Endpoint, Error, ErrorKind, SharedClock, SystemClock, TokenProvider,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::CliError;

/// What to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// The token alone, on one line.
    Token,
    /// A `postgres://` URL with the token as the (percent-encoded) password, sslmode=verify-full.
    Url,
    /// `export PG...=...` lines for a POSIX shell (PGHOST, PGPORT, PGUSER, PGDATABASE, PGSSLMODE, PGPASSWORD).
    Env,
    /// One JSON object: token, host, port, database, region, action, user, signed_at, expires_at.
    Json,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The cluster endpoint (`<cluster-id>.dsql.<region>.on.aws`), a bare cluster id (with a region),
    /// or a custom host such as a proxy (with a region; never rewritten). A port after it
    /// (`:5432`) is the port printed in the url/env/json formats; `:443` is dropped. The token is
    /// signed for the host alone.
    #[arg(long)]
    host: String,
    /// AWS region. Read from the host for DSQL endpoints; for other hosts, --region or else
    /// AWS_REGION / AWS_DEFAULT_REGION.
    #[arg(long)]
    region: Option<String>,
    /// Database role: `admin` gets a DbConnectAdmin token, every other role DbConnect.
    #[arg(long, default_value = DEFAULT_USER)]
    user: String,
    /// Token lifetime in seconds (1..=604800).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TOKEN_DURATION.as_secs())]
    expires_in: u64,
    /// AWS profile to take credentials from (default: the default chain, which reads
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN first, then AWS_PROFILE).
    #[arg(long)]
    profile: Option<String>,
    /// Sign as of this instant (RFC 3339, e.g. 2024-01-01T00:00:00Z) for reproducible output.
    /// Default: now.
    #[arg(long, value_name = "RFC3339", allow_hyphen_values = true)]
    at: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "token")]
    format: Format,
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    // Everything the user typed is checked before credentials are looked up.
    let at = args.at.as_deref().map(parse_at).transpose()?;
    if args.user.is_empty() {
        return Err(CliError::usage(
            "--user is empty: give a database role, e.g. --user admin",
        ));
    }
    let region_given = args.region.is_some();
    let mut opts = ConnectOptions::new(args.host.clone())
        .user(args.user.clone())
        .token_duration(Duration::from_secs(args.expires_in));
    opts.region = args.region.clone();
    opts.profile = args.profile.clone();
    let opts = opts.region_from_env(|k| std::env::var(k).ok());
    let endpoint = opts.endpoint().map_err(|e| {
        let hint = if region_given || opts.region.is_none() {
            "--host and --region"
        } else {
            "--region (from AWS_REGION/AWS_DEFAULT_REGION)"
        };
        core_error(&e, hint)
    })?;
    let params = opts
        .signing_params()
        .map_err(|e| core_error(&e, "--expires-in"))?;

    let clock: SharedClock = match at {
        Some(at) => Arc::new(ManualClock::new(at)),
        None => Arc::new(SystemClock),
    };
    // The cluster's region steers the chain's STS/SSO calls and spares an EC2 metadata lookup.
    let credentials = default_chain_credentials(opts.profile.as_deref(), Some(params.region()))
        .await
        .map_err(|e| core_error(&e, ""))?;
    // The provider's margin keeps a connection from starting on a nearly expired token; a printed
    // token is used later by someone else, so lifetimes too short for that margin (the AWS CLI
    // signs 1 s tokens) are signed with none.
    let provider = TokenProvider::builder()
        .credentials(credentials)
        .clock(clock)
        .min_remaining(default_margin(params.expires_in()).unwrap_or(Duration::ZERO))
        .build()
        .map_err(|e| core_error(&e, ""))?;
    tracing::debug!(
        host = params.host(),
        region = params.region(),
        action = %params.action(),
        expires_in_secs = params.expires_in().as_secs(),
        "signing a DSQL auth token"
    );
    let token = provider
        .token(&params)
        .await
        .map_err(|e| match (&args.profile, e.kind()) {
            (Some(profile), ErrorKind::Credentials) => CliError::runtime(format!(
                "{e} (credentials asked for profile `{profile}` from --profile)"
            )),
            _ => core_error(&e, ""),
        })?;

    tracing::debug!(
        expires_at = %rfc3339(token.expires_at())?,
        "DSQL auth token signed"
    );
    let out = render(args.format, &token, &endpoint, &opts)?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::runtime(format!("cannot write to stdout: {e}")))
}

fn parse_at(s: &str) -> Result<SystemTime, CliError> {
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| {
        CliError::usage(format!(
            "--at {s:?} is not an RFC 3339 time ({e}): write it like 2024-01-01T00:00:00Z"
        ))
    })?;
    if t.unix_timestamp() < 0 {
        return Err(CliError::usage(format!(
            "--at {s:?} is before 1970: give a time after 1970-01-01T00:00:00Z"
        )));
    }
    // The expiry (up to 7 days later) must stay a time `time` can print: 9999-12-31 at most.
    const LAST: i64 = 253_402_300_799 - 8 * 86_400;
    if t.unix_timestamp() > LAST {
        return Err(CliError::usage(format!(
            "--at {s:?} is too far in the future: give a time before 9999-12-23T23:59:59Z"
        )));
    }
    Ok(SystemTime::from(t))
}

/// A core error as a CLI error: bad input exits 2, everything else 1. The core's messages never
/// contain secrets and already say what to do.
fn core_error(e: &Error, hint: &str) -> CliError {
    match e.kind() {
        ErrorKind::InvalidEndpoint
        | ErrorKind::InvalidSigningParams
        | ErrorKind::InvalidConnectionString => {
            if hint.is_empty() || e.to_string().contains("--") {
                CliError::usage(e)
            } else {
                CliError::usage(format!("{e} (see {hint})"))
            }
        }
        _ => CliError::runtime(e),
    }
}

/// RFC 3986 unreserved characters stay; everything else in userinfo and path is encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn render(
    format: Format,
    token: &AuthToken,
    ep: &Endpoint,
    opts: &ConnectOptions,
) -> Result<String, CliError> {
    let host = ep.connect_host();
    let sslmode = opts.sslmode.as_str();
    Ok(match format {
        Format::Token => format!("{}\n", token.as_str()),
        Format::Url => {
            let authority_host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_owned()
            };
            format!(
                "postgres://{}:{}@{}:{}/{}?sslmode={sslmode}\n",
                utf8_percent_encode(&opts.user, COMPONENT),
                utf8_percent_encode(token.as_str(), COMPONENT),
                authority_host,
                ep.port(),
                utf8_percent_encode(&opts.dbname, COMPONENT),
            )
        }
        Format::Env => {
            let port = ep.port().to_string();
            [
                ("PGHOST", host),
                ("PGPORT", port.as_str()),
                ("PGUSER", opts.user.as_str()),
                ("PGDATABASE", opts.dbname.as_str()),
                ("PGSSLMODE", sslmode),
                ("PGPASSWORD", token.as_str()),
            ]
            .iter()
            .map(|(k, v)| format!("export {k}={}\n", shell_quote(v)))
            .collect()
        }
        Format::Json => {
            let json = serde_json::json!({
                "token": token.as_str(),
                "host": host,
                "port": ep.port(),
                "database": opts.dbname,
                "region": ep.region(),
                "action": opts.effective_action().as_str(),
                "user": opts.user,
                "signed_at": rfc3339(token.signed_at())?,
                "expires_at": rfc3339(token.expires_at())?,
            });
            format!("{json}\n")
        }
    })
}

fn rfc3339(t: SystemTime) -> Result<String, CliError> {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .map_err(|e| CliError::runtime(format!("cannot format the time {t:?} as RFC 3339: {e}")))
}

/// Single-quoted for a POSIX shell: only `'` needs care, written as `'\''`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a&b=c"), "'a&b=c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn at_parsing() {
        assert_eq!(
            parse_at("2024-01-01T00:00:00Z").unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200)
        );
        assert_eq!(
            parse_at("2024-01-01T01:00:00+01:00").unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200)
        );
        assert!(parse_at("yesterday").is_err());
        assert!(parse_at("1960-01-01T00:00:00Z").is_err());
    }
}
