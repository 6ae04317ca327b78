//! Connection strings: URL form (`postgres://`, `postgresql://`) and libpq key/value form, with
//! the libpq keys a DSQL user needs and DSQL's own keys.
//!
//! ```
//! use dsql_auth_core::ConnectOptions;
//! let url: ConnectOptions = "postgres://app@abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws/postgres?token_duration_secs=600".parse()?;
//! let kv: ConnectOptions = "host=abcdefghijklmnopqrstuvwxyz region=us-east-1 user=app token_duration_secs=600".parse()?;
//! assert_eq!(url.signing_params()?, kv.signing_params()?);
//! # Ok::<(), dsql_auth_core::Error>(())
//! ```
//!
//! Keys (both forms; in a URL they go in the query string):
//!
//! | key | aliases | meaning | default | environment |
//! |-----|---------|---------|---------|-------------|
//! | `host` | | DSQL hostname, bare cluster id or custom host | (required) | `PGHOST` |
//! | `hostaddr` | | IP address to connect to instead of resolving `host` | | `PGHOSTADDR` |
//! | `port` | | 1..=65535 | 5432 | `PGPORT` |
//! | `user` | | database role | `admin` | `PGUSER` |
//! | `dbname` | | database | `postgres` | `PGDATABASE` |
//! | `sslmode` | | `require`, `verify-ca`, `verify-full` | `verify-full` | `PGSSLMODE` |
//! | `sslrootcert` | | CA bundle (PEM) | system roots | `PGSSLROOTCERT` |
//! | `sslnegotiation` | | `postgres` (SSLRequest) or `direct` (TLS first) | `postgres` | `PGSSLNEGOTIATION` |
//! | `application_name` | | | | `PGAPPNAME` |
//! | `connect_timeout` | | seconds; 0 = none | none | `PGCONNECT_TIMEOUT` |
//! | `options` | | startup options (`-c name=value`) | | `PGOPTIONS` |
//! | `region` | `aws_region`, `awsRegion` | AWS region | from the host | `AWS_REGION`, `AWS_DEFAULT_REGION` |
//! | `profile` | `aws_profile`, `awsProfile` | AWS profile for credentials | | `AWS_PROFILE` |
//! | `token_duration_secs` | `tokenDurationSecs`, `token_duration`, `expires_in` | token lifetime, 1..=604800 s | 900 | |
//! | `cluster_id` | `clusterId` | sign for `<id>.dsql.<region>.on.aws` while connecting to `host` (PrivateLink) | | |
//! | `action` | | `DbConnect` or `DbConnectAdmin`, overriding the choice by user | by user | |
//!
//! Rules:
//! - `password` is an error: DSQL authenticates with IAM tokens generated per connection.
//! - Unknown keys are one error that lists all of them.
//! - A key given twice: the last value wins, as in libpq (in a URL the query string comes after the
//!   host, port, user and database, so `?host=` overrides the host part). Aliases count as the same
//!   key.
//! - An empty value means "not given" (libpq's rule): the default or the environment applies.
//! - [`ConnectOptions::parse`] and [`FromStr`] never read the environment;
//!   [`ConnectOptions::parse_with_env`] fills keys that were not given from it. The region comes
//!   from `AWS_REGION`/`AWS_DEFAULT_REGION` only when the host does not carry one, so a stray
//!   `AWS_REGION` never contradicts a DSQL hostname.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::endpoint::{self, DEFAULT_PORT, Endpoint};
use crate::error::{Error, ErrorKind};
use crate::host::{self, shown};
use crate::token::{Action, SigningParams};

/// Default database role.
pub const DEFAULT_USER: &str = "admin";
/// Default (and only) DSQL database.
pub const DEFAULT_DBNAME: &str = "postgres";
pub use crate::limits::DEFAULT_TOKEN_DURATION;

/// TLS mode. DSQL requires TLS, so libpq's `disable`, `allow` and `prefer` are errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SslMode {
    /// Encrypt, but do not verify the server certificate.
    Require,
    /// Encrypt and verify the certificate chain, not the hostname.
    VerifyCa,
    /// Encrypt and verify the chain and the hostname (recommended; the default).
    #[default]
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling: `require`, `verify-ca`, `verify-full`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "disable" | "allow" | "prefer" => Err(conn_err(format!(
                "sslmode={s} is not allowed: DSQL requires TLS; use verify-full (recommended), verify-ca or require"
            ))),
            other => Err(conn_err(format!(
                "sslmode `{}` is not known: use verify-full (recommended), verify-ca or require",
                shown(other)
            ))),
        }
    }
}

/// How TLS starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SslNegotiation {
    /// Send PostgreSQL's SSLRequest first (every server supports it; the default).
    #[default]
    Postgres,
    /// Start TLS at once with ALPN `postgresql` (PostgreSQL 17's `sslnegotiation=direct`): one
    /// round trip less.
    Direct,
}

impl SslNegotiation {
    /// The libpq spelling: `postgres` or `direct`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SslNegotiation::Postgres => "postgres",
            SslNegotiation::Direct => "direct",
        }
    }
}

impl fmt::Display for SslNegotiation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslNegotiation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "postgres" => Ok(SslNegotiation::Postgres),
            "direct" => Ok(SslNegotiation::Direct),
            other => Err(conn_err(format!(
                "sslnegotiation `{}` is not known: use postgres or direct",
                shown(other)
            ))),
        }
    }
}

/// Everything needed to reach and authenticate to a DSQL cluster. See the module docs for the
/// keys, aliases, defaults and environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// DSQL hostname, bare cluster id, or custom host (never rewritten).
    pub host: String,
    /// IP address to connect to instead of resolving `host` (TLS SNI and signing still use `host`).
    pub hostaddr: Option<IpAddr>,
    /// Port (default 5432).
    pub port: u16,
    /// Database role (default `admin`).
    pub user: String,
    /// Database (default `postgres`).
    pub dbname: String,
    /// AWS region; `None`: read from the host.
    pub region: Option<String>,
    /// Cluster id: sign for `<id>.dsql.<region>.on.aws` while connecting to `host`.
    pub cluster_id: Option<String>,
    /// AWS profile for credentials.
    pub profile: Option<String>,
    /// Token lifetime (default 900 s).
    pub token_duration: Duration,
    /// Override of the IAM action (normally chosen by user: `DbConnectAdmin` for `admin`).
    pub action: Option<Action>,
    /// TLS mode (default verify-full).
    pub sslmode: SslMode,
    /// CA bundle to verify the server with, in addition to the defaults of the adapter.
    pub sslrootcert: Option<PathBuf>,
    /// How TLS starts (default SSLRequest).
    pub sslnegotiation: SslNegotiation,
    /// `application_name` sent at startup.
    pub application_name: Option<String>,
    /// Connect timeout; `None`: none.
    pub connect_timeout: Option<Duration>,
    /// Startup options (`-c name=value ...`).
    pub options: Option<String>,
}

fn conn_err(msg: impl fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidConnectionString, msg)
}

/// The keys we understand, after alias resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Host,
    Hostaddr,
    Port,
    User,
    Dbname,
    Sslmode,
    Sslrootcert,
    Sslnegotiation,
    ApplicationName,
    ConnectTimeout,
    Options,
    Region,
    Profile,
    TokenDuration,
    ClusterId,
    Action,
}

impl Key {
    fn from_name(name: &str) -> Option<Key> {
        Some(match name {
            "host" => Key::Host,
            "hostaddr" => Key::Hostaddr,
            "port" => Key::Port,
            "user" => Key::User,
            "dbname" => Key::Dbname,
            "sslmode" => Key::Sslmode,
            "sslrootcert" => Key::Sslrootcert,
            "sslnegotiation" => Key::Sslnegotiation,
            "application_name" => Key::ApplicationName,
            "connect_timeout" => Key::ConnectTimeout,
            "options" => Key::Options,
            "region" | "aws_region" | "awsRegion" => Key::Region,
            "profile" | "aws_profile" | "awsProfile" => Key::Profile,
            "token_duration_secs" | "tokenDurationSecs" | "token_duration" | "expires_in" => {
                Key::TokenDuration
            }
            "cluster_id" | "clusterId" => Key::ClusterId,
            "action" => Key::Action,
            _ => return None,
        })
    }

    /// Environment variables consulted, in order, when the key is not given.
    fn env_vars(self) -> &'static [&'static str] {
        match self {
            Key::Host => &["PGHOST"],
            Key::Hostaddr => &["PGHOSTADDR"],
            Key::Port => &["PGPORT"],
            Key::User => &["PGUSER"],
            Key::Dbname => &["PGDATABASE"],
            Key::Sslmode => &["PGSSLMODE"],
            Key::Sslrootcert => &["PGSSLROOTCERT"],
            Key::Sslnegotiation => &["PGSSLNEGOTIATION"],
            Key::ApplicationName => &["PGAPPNAME"],
            Key::ConnectTimeout => &["PGCONNECT_TIMEOUT"],
            Key::Options => &["PGOPTIONS"],
            Key::Region => &["AWS_REGION", "AWS_DEFAULT_REGION"],
            Key::Profile => &["AWS_PROFILE"],
            Key::TokenDuration | Key::ClusterId | Key::Action => &[],
        }
    }

    const ALL: [Key; 16] = [
        Key::Host,
        Key::Hostaddr,
        Key::Port,
        Key::User,
        Key::Dbname,
        Key::Sslmode,
        Key::Sslrootcert,
        Key::Sslnegotiation,
        Key::ApplicationName,
        Key::ConnectTimeout,
        Key::Options,
        Key::Region,
        Key::Profile,
        Key::TokenDuration,
        Key::ClusterId,
        Key::Action,
    ];
}

const KNOWN_KEYS: &str = "host, hostaddr, port, user, dbname, sslmode, sslrootcert, sslnegotiation, \
     application_name, connect_timeout, options, region (aws_region, awsRegion), profile (aws_profile, \
     awsProfile), token_duration_secs (tokenDurationSecs, token_duration, expires_in), cluster_id \
     (clusterId), action";

/// Where a value came from, for error messages.
#[derive(Debug, Clone)]
enum Origin {
    Key(String),
    Env(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Key(k) => write!(f, "{k}"),
            Origin::Env(v) => write!(f, "{v} (environment)"),
        }
    }
}

type Given = HashMap<Key, (String, Origin)>;

impl ConnectOptions {
    /// Options for `host` with every default: port 5432, user `admin`, database `postgres`,
    /// token lifetime 900 s, verify-full TLS, SSLRequest negotiation.
    pub fn new(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            hostaddr: None,
            port: DEFAULT_PORT,
            user: DEFAULT_USER.to_owned(),
            dbname: DEFAULT_DBNAME.to_owned(),
            region: None,
            cluster_id: None,
            profile: None,
            token_duration: DEFAULT_TOKEN_DURATION,
            action: None,
            sslmode: SslMode::VerifyFull,
            sslrootcert: None,
            sslnegotiation: SslNegotiation::Postgres,
            application_name: None,
            connect_timeout: None,
            options: None,
        }
    }

    /// Sets `region` (builder style; every setter is named after its connection-string key).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets `cluster_id`: sign for `<id>.dsql.<region>.on.aws` while connecting to `host`.
    pub fn cluster_id(mut self, cluster_id: impl Into<String>) -> Self {
        self.cluster_id = Some(cluster_id.into());
        self
    }

    /// Sets `hostaddr`: the address to dial; TLS and signing still use `host`.
    pub fn hostaddr(mut self, hostaddr: IpAddr) -> Self {
        self.hostaddr = Some(hostaddr);
        self
    }

    /// Sets `port`.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Sets `user` (the database role; `admin` signs `DbConnectAdmin`, any other `DbConnect`).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self
    }

    /// Sets `dbname`.
    pub fn dbname(mut self, dbname: impl Into<String>) -> Self {
        self.dbname = dbname.into();
        self
    }

    /// Sets `profile`: the AWS profile the default credential chain reads.
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// Sets the token lifetime (`token_duration_secs`; 1 s to 7 days).
    pub fn token_duration(mut self, duration: Duration) -> Self {
        self.token_duration = duration;
        self
    }

    /// Sets `action`, overriding the choice by user.
    pub fn action(mut self, action: Action) -> Self {
        self.action = Some(action);
        self
    }

    /// Sets `sslmode`.
    pub fn sslmode(mut self, mode: SslMode) -> Self {
        self.sslmode = mode;
        self
    }

    /// Sets `sslrootcert`: a PEM file of trusted roots.
    pub fn sslrootcert(mut self, path: impl Into<PathBuf>) -> Self {
        self.sslrootcert = Some(path.into());
        self
    }

    /// Sets `sslnegotiation`.
    pub fn sslnegotiation(mut self, negotiation: SslNegotiation) -> Self {
        self.sslnegotiation = negotiation;
        self
    }

    /// Sets `application_name`.
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// Sets `connect_timeout`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Sets `options` (startup options, `-c name=value ...`).
    pub fn options(mut self, options: impl Into<String>) -> Self {
        self.options = Some(options.into());
        self
    }

    /// Parses a URL or key/value connection string without reading the environment.
    pub fn parse(s: &str) -> Result<Self, Error> {
        Self::parse_with_env(s, |_| None)
    }

    /// Parses a connection string; keys it does not give are looked up with `env` (see the module
    /// docs for which variables). Values given in the string win.
    pub fn parse_with_env(s: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let pairs = split_pairs(s)?;
        let mut given = collect_keys(pairs)?;
        fill_from_env(&mut given, &env);
        build(given)
    }

    /// Fills `region`, when it is unset and the host carries none, from `AWS_REGION` or else
    /// `AWS_DEFAULT_REGION` looked up with `env`: the rule [`ConnectOptions::parse_with_env`]
    /// applies, for options built in code (the `dsql token` command). A DSQL hostname's own region
    /// is never replaced.
    pub fn region_from_env(mut self, env: impl Fn(&str) -> Option<String>) -> Self {
        if self.region.is_none()
            && let Some((_, region)) = env_region(Some(&self.host), &env)
        {
            self.region = Some(region);
        }
        self
    }

    /// [`ConnectOptions::parse_with_env`] with the process environment: what adapters call.
    pub fn from_env_and_str(s: &str) -> Result<Self, Error> {
        Self::parse_with_env(s, |k| std::env::var(k).ok())
    }

    /// The endpoint: `host`, `region`, `cluster_id` and `port` combined (see [`Endpoint`]). A
    /// custom host plus a cluster id means PrivateLink without DNS: connect to the host, sign for
    /// `<cluster_id>.dsql.<region>.on.aws`.
    ///
    /// A port written after the host (`<host>:5432`) is the port to connect to, unless `port` says
    /// otherwise (an error); `<host>:443` is the signing URL's port and is dropped (see
    /// [`Endpoint`]). Parsing moves such a port to `port`; this covers hosts set in code.
    pub fn endpoint(&self) -> Result<Endpoint, Error> {
        // Fields are public, so a value set in code may be one `parse` would have refused.
        if self.port == 0 {
            return Err(conn_err("port 0 is not a port: use 1-65535 (default 5432)"));
        }
        let (ep, host_port) = Endpoint::parse_parts(
            &self.host,
            self.region.as_deref(),
            self.cluster_id.as_deref(),
        )?;
        let port = match host_port {
            Some(p) if self.port != DEFAULT_PORT && self.port != p => {
                return Err(conn_err(format!(
                    "host `{}` names port {p} but port is {}: give the port once (drop `:{p}` \
                     from the host or set port to {p})",
                    shown(&self.host),
                    self.port
                )));
            }
            Some(p) => p,
            None => self.port,
        };
        Ok(ep.with_port(port))
    }

    /// The IAM action: the override if set, else `DbConnectAdmin` for `admin` and `DbConnect`
    /// for every other user.
    pub fn effective_action(&self) -> Action {
        self.action.unwrap_or_else(|| Action::for_user(&self.user))
    }

    /// What to sign: the endpoint's sign host and region, the action and the token lifetime.
    pub fn signing_params(&self) -> Result<SigningParams, Error> {
        let ep = self.endpoint()?;
        SigningParams::new(ep.sign_host(), ep.region(), self.effective_action())?
            .with_expires_in(self.token_duration)
    }

    /// The startup `options` to send: the user's `options` followed, when the endpoint needs it
    /// (PrivateLink without DNS), by `-c amzn-cluster-id=<id>`. `None` when there are none.
    pub fn startup_options(&self) -> Result<Option<String>, Error> {
        let cluster = self.endpoint()?.cluster_id_option();
        Ok(match (self.options.as_deref(), cluster) {
            (Some(user), Some(cluster)) => Some(format!("{user} {cluster}")),
            (Some(user), None) => Some(user.to_owned()),
            (None, cluster) => cluster,
        })
    }
}

impl FromStr for ConnectOptions {
    type Err = Error;
    /// Same as [`ConnectOptions::parse`]: no environment.
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// Characters left as they are in URL components: RFC 3986's unreserved set.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl fmt::Display for ConnectOptions {
    /// A canonical `postgres://` URL with only the fields that differ from the defaults,
    /// percent-encoded, so that parsing it gives these options back. Durations are written in
    /// whole seconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("postgres://")?;
        if self.user != DEFAULT_USER {
            write!(f, "{}@", utf8_percent_encode(&self.user, COMPONENT))?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            write!(f, "{}", utf8_percent_encode(&self.host, COMPONENT))?;
        }
        if self.port != DEFAULT_PORT {
            write!(f, ":{}", self.port)?;
        }
        if self.dbname != DEFAULT_DBNAME {
            write!(f, "/{}", utf8_percent_encode(&self.dbname, COMPONENT))?;
        }
        let mut sep = '?';
        let mut param = |f: &mut fmt::Formatter<'_>, key: &str, value: &str| -> fmt::Result {
            write!(f, "{sep}{key}={}", utf8_percent_encode(value, COMPONENT))?;
            sep = '&';
            Ok(())
        };
        if let Some(v) = &self.hostaddr {
            param(f, "hostaddr", &v.to_string())?;
        }
        if let Some(v) = &self.region {
            param(f, "region", v)?;
        }
        if let Some(v) = &self.cluster_id {
            param(f, "cluster_id", v)?;
        }
        if let Some(v) = &self.profile {
            param(f, "profile", v)?;
        }
        if self.token_duration != DEFAULT_TOKEN_DURATION {
            param(
                f,
                "token_duration_secs",
                &self.token_duration.as_secs().to_string(),
            )?;
        }
        if let Some(v) = &self.action {
            param(f, "action", v.as_str())?;
        }
        if self.sslmode != SslMode::VerifyFull {
            param(f, "sslmode", self.sslmode.as_str())?;
        }
        if let Some(v) = &self.sslrootcert {
            param(f, "sslrootcert", &v.to_string_lossy())?;
        }
        if self.sslnegotiation != SslNegotiation::Postgres {
            param(f, "sslnegotiation", self.sslnegotiation.as_str())?;
        }
        if let Some(v) = &self.application_name {
            param(f, "application_name", v)?;
        }
        if let Some(v) = &self.connect_timeout {
            param(f, "connect_timeout", &v.as_secs().to_string())?;
        }
        if let Some(v) = &self.options {
            param(f, "options", v)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Splitting a string into (key, value) pairs.

/// A raw pair. The key is as written (aliases unresolved); `password` values are never kept.
struct Pair {
    key: String,
    value: String,
}

fn split_pairs(s: &str) -> Result<Vec<Pair>, Error> {
    let trimmed = s.trim();
    if let Some(rest) = strip_prefix_ci(trimmed, "postgresql://")
        .or_else(|| strip_prefix_ci(trimmed, "postgres://"))
    {
        return parse_url(rest);
    }
    if let Some(pos) = trimmed.find("://") {
        let scheme = &trimmed[..pos];
        if !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Err(conn_err(format!(
                "URL scheme `{scheme}://` is not supported: use postgres:// or postgresql://"
            )));
        }
    }
    parse_key_values(trimmed)
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `[user@]host[:port][/dbname][?key=value&...]`, after the scheme.
fn parse_url(rest: &str) -> Result<Vec<Pair>, Error> {
    if rest.chars().any(char::is_whitespace) {
        return Err(conn_err(
            "the URL contains a space: percent-encode it as %20",
        ));
    }
    if rest.contains('#') {
        return Err(conn_err("the URL contains `#`: percent-encode it as %23"));
    }
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (before_query, None),
    };
    let mut pairs = Vec::new();
    let host_port = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => {
            if userinfo.contains(':') {
                return Err(password_error());
            }
            pairs.push(Pair {
                key: "user".into(),
                value: decode(userinfo, "the user name")?,
            });
            host_port
        }
        None => authority,
    };
    let (host, port) = split_host_port(host_port)?;
    pairs.push(Pair {
        key: "host".into(),
        value: host,
    });
    if let Some(port) = port {
        pairs.push(Pair {
            key: "port".into(),
            value: port,
        });
    }
    if let Some(path) = path {
        pairs.push(Pair {
            key: "dbname".into(),
            value: decode(path, "the database name")?,
        });
    }
    for item in query.unwrap_or("").split('&').filter(|i| !i.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            let key = decode(item, "a query key")?;
            return Err(conn_err(format!(
                "URL parameter `{}` has no value: write {0}=value",
                shown(&key)
            )));
        };
        let key = decode(k, "a query key")?;
        if key == "password" {
            return Err(password_error());
        }
        let value = decode(v, &format!("the value of `{}`", shown(&key)))?;
        pairs.push(Pair { key, value });
    }
    Ok(pairs)
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; host percent-decoded, brackets removed.
fn split_host_port(s: &str) -> Result<(String, Option<String>), Error> {
    if let Some(rest) = s.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return Err(conn_err("the URL's host starts with `[` but has no `]`"));
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(p.to_owned()),
                None => {
                    return Err(conn_err(
                        "after `]` in the URL's host, only `:port` may follow",
                    ));
                }
            },
        };
        return Ok((decode(inner, "the host")?, port));
    }
    if s.contains(',') {
        return Err(conn_err(
            "the URL lists several hosts: DSQL takes exactly one",
        ));
    }
    match s.matches(':').count() {
        0 => Ok((decode(s, "the host")?, None)),
        1 => {
            let (h, p) = s.split_once(':').unwrap_or((s, ""));
            Ok((decode(h, "the host")?, Some(p.to_owned())))
        }
        _ => Err(conn_err(
            "the URL's host has several `:`: put IPv6 addresses in brackets, e.g. postgres://[::1]:5432",
        )),
    }
}

/// Percent-decodes `s`; bad escapes and invalid UTF-8 are errors naming `what` (never the
/// value, which could be a secret pasted in the wrong place).
fn decode(s: &str, what: &str) -> Result<String, Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| {
                u8::from_str_radix(h, 16)
                    .ok()
                    .filter(|_| h.bytes().all(|b| b.is_ascii_hexdigit()))
            }) {
                Some(b) => out.push(b),
                None => {
                    return Err(conn_err(format!(
                        "bad percent-escape in {what}: `%` must be followed by two hex digits (write `%` itself as %25)"
                    )));
                }
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| conn_err(format!("{what} is not valid UTF-8 after percent-decoding")))
}

/// libpq's `key = value ...` form; values may be single-quoted with `\'` and `\\` escapes.
fn parse_key_values(s: &str) -> Result<Vec<Pair>, Error> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_ascii_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        if chars.next_if_eq(&'=').is_none() {
            return Err(conn_err(format!(
                "expected `=` after `{}`: write key=value pairs separated by spaces, or a postgres:// URL",
                shown(&key)
            )));
        }
        if key.is_empty() {
            return Err(conn_err("a `=` has no key before it: write key=value"));
        }
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(conn_err(format!(
                            "the quoted value of `{}` has no closing `'`",
                            shown(&key)
                        )));
                    }
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => {
                            return Err(conn_err(format!(
                                "the quoted value of `{}` ends with `\\`",
                                shown(&key)
                            )));
                        }
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_ascii_whitespace()) {
                if c == '\\' {
                    match chars.next() {
                        Some(c) => value.push(c),
                        None => {
                            return Err(conn_err(format!(
                                "the value of `{}` ends with `\\`",
                                shown(&key)
                            )));
                        }
                    }
                } else {
                    value.push(c);
                }
            }
        }
        if key == "password" {
            return Err(password_error());
        }
        pairs.push(Pair { key, value });
    }
}

fn password_error() -> Error {
    conn_err(
        "the connection string has a password: Aurora DSQL authenticates with IAM tokens generated \
         for each connection, so remove it (its value is not shown here)",
    )
}

// ---------------------------------------------------------------------------------------------
// From pairs to options.

/// How many unknown keys an error lists by name (a pasted blob could hold thousands).
const MAX_LISTED_UNKNOWN: usize = 20;

fn collect_keys(pairs: Vec<Pair>) -> Result<Given, Error> {
    let mut given = Given::new();
    let mut unknown: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for Pair { key, value } in pairs {
        match Key::from_name(&key) {
            // Later values win; an empty value un-sets the key (libpq).
            Some(k) if value.is_empty() => {
                given.remove(&k);
            }
            Some(k) => {
                given.insert(k, (value, Origin::Key(key)));
            }
            None => {
                if seen.insert(key.clone()) {
                    unknown.push(key);
                }
            }
        }
    }
    if !unknown.is_empty() {
        let mut list: Vec<String> = unknown
            .iter()
            .take(MAX_LISTED_UNKNOWN)
            .map(|k| format!("`{}`", shown(k)))
            .collect();
        if unknown.len() > MAX_LISTED_UNKNOWN {
            list.push(format!("and {} more", unknown.len() - MAX_LISTED_UNKNOWN));
        }
        return Err(conn_err(format!(
            "unknown connection-string key{} {}: remove {}; known keys are {KNOWN_KEYS}",
            if unknown.len() == 1 { "" } else { "s" },
            list.join(", "),
            if unknown.len() == 1 { "it" } else { "them" },
        )));
    }
    Ok(given)
}

fn fill_from_env(given: &mut Given, env: &dyn Fn(&str) -> Option<String>) {
    for key in Key::ALL {
        if given.contains_key(&key) || key == Key::Region {
            continue;
        }
        if let Some((var, value)) = key
            .env_vars()
            .iter()
            .find_map(|v| env(v).filter(|x| !x.is_empty()).map(|x| (*v, x)))
        {
            given.insert(key, (value, Origin::Env(var)));
        }
    }
    // The region from the environment only when the host carries none: a DSQL hostname's own
    // region must not be contradicted by a stray AWS_REGION.
    if !given.contains_key(&Key::Region)
        && let Some((var, value)) = env_region(given.get(&Key::Host).map(|(h, _)| h.as_str()), env)
    {
        given.insert(Key::Region, (value, Origin::Env(var)));
    }
}

/// The region from `AWS_REGION` / `AWS_DEFAULT_REGION` (the first non-empty), for a host that
/// carries none; `None` for a DSQL hostname, whose own region wins.
fn env_region(
    host: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(&'static str, String)> {
    if host.is_some_and(|h| endpoint::region_in_host(h).is_some()) {
        return None;
    }
    Key::Region
        .env_vars()
        .iter()
        .find_map(|v| env(v).filter(|x| !x.is_empty()).map(|x| (*v, x)))
}

fn build(mut given: Given) -> Result<ConnectOptions, Error> {
    // Checked in a fixed order so the same input always reports the same error.
    for key in Key::ALL {
        if let Some((value, origin)) = given.get(&key)
            && value.contains('\0')
        {
            return Err(conn_err(format!(
                "{origin}: the value contains a NUL character"
            )));
        }
    }
    let Some((host, origin)) = given.remove(&Key::Host) else {
        return Err(conn_err(
            "no host: give host=<cluster-id>.dsql.<region>.on.aws (or a cluster id with region=...), or set PGHOST",
        ));
    };
    // The stored host is the host alone: IPv6 without brackets, and a port written after it
    // (`<host>:5432`, as users paste it) moved to `port`.
    let parsed = host::parse_host(&host).map_err(|e| conn_err(format!("{origin}: {e}")))?;
    endpoint::check_host(&host).map_err(|e| conn_err(format!("{origin}: {e}")))?;
    let host_port = parsed.port.filter(|p| *p != endpoint::HTTPS_PORT);
    let mut opts = ConnectOptions::new(parsed.as_written);
    if let Some(p) = host_port {
        match given.get(&Key::Port) {
            // The string's host beats PGPORT, as every value in the string beats the environment.
            Some((_, Origin::Env(_))) if matches!(origin, Origin::Key(_)) => {
                given.remove(&Key::Port);
            }
            Some((value, port_origin)) if value.parse::<u16>().is_ok_and(|v| v != p) => {
                return Err(conn_err(format!(
                    "{origin} `{}` names port {p} but {port_origin} is `{}`: give the port once \
                     (drop `:{p}` from the host or the port setting)",
                    shown(&host),
                    shown(value)
                )));
            }
            _ => {}
        }
        opts.port = p;
    }
    for key in Key::ALL {
        let Some((value, origin)) = given.remove(&key) else {
            continue;
        };
        let bad = |what: &str| conn_err(format!("{origin}: `{}` {what}", shown(&value)));
        match key {
            Key::Host => {}
            Key::Hostaddr => {
                let ip = value
                    .strip_prefix('[')
                    .and_then(|v| v.strip_suffix(']'))
                    .unwrap_or(&value);
                let Ok(ip) = ip.parse::<IpAddr>() else {
                    return Err(bad(
                        "is not an IP address: hostaddr takes a numeric IPv4 or IPv6 address",
                    ));
                };
                opts.hostaddr = Some(ip);
            }
            Key::Port => {
                opts.port = value
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0 && value.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| bad("is not a port number: use 1-65535"))?;
            }
            Key::User => opts.user = value,
            Key::Dbname => opts.dbname = value,
            Key::Sslmode => {
                opts.sslmode = value
                    .parse()
                    .map_err(|e: Error| conn_err(format!("{origin}: {e}")))?;
            }
            Key::Sslrootcert => opts.sslrootcert = Some(PathBuf::from(value)),
            Key::Sslnegotiation => {
                opts.sslnegotiation = value
                    .parse()
                    .map_err(|e: Error| conn_err(format!("{origin}: {e}")))?;
            }
            Key::ApplicationName => opts.application_name = Some(value),
            Key::ConnectTimeout => {
                let secs = parse_secs(&value)
                    .ok_or_else(|| bad("is not a number of seconds (0 for no timeout)"))?;
                opts.connect_timeout = (secs > 0).then(|| Duration::from_secs(secs));
            }
            Key::Options => opts.options = Some(value),
            Key::Region => {
                opts.region = Some(
                    endpoint::normalize_region(&value)
                        .map_err(|e| conn_err(format!("{origin}: {e}")))?,
                );
            }
            Key::Profile => opts.profile = Some(value),
            Key::TokenDuration => {
                let secs = parse_secs(&value)
                    .filter(|s| (1..=crate::limits::MAX_TOKEN_DURATION.as_secs()).contains(s))
                    .ok_or_else(|| {
                        bad("is not a token lifetime: use whole seconds from 1 to 604800 (7 days)")
                    })?;
                opts.token_duration = Duration::from_secs(secs);
            }
            Key::ClusterId => {
                opts.cluster_id = Some(
                    endpoint::normalize_cluster_id(&value)
                        .map_err(|e| conn_err(format!("{origin}: {e}")))?,
                );
            }
            Key::Action => {
                opts.action = Some(
                    value
                        .parse::<Action>()
                        .map_err(|_| bad("is not an action: use DbConnect or DbConnectAdmin"))?,
                );
            }
        }
    }
    Ok(opts)
}

/// Decimal digits only (no sign, no unit).
fn parse_secs(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}
