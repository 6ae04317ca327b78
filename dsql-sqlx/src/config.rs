//! [`Config`]: the core's [`ConnectOptions`] plus a token provider, mapped onto sqlx's
//! `PgConnectOptions` for each token.

use std::fmt;
use std::sync::Arc;

use dsql_auth_core::{
    AuthToken, ConnectOptions, Endpoint, RetryPolicy, SigningParams, SslMode, SslNegotiation,
    TokenProvider,
};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tokio::sync::OnceCell;

use crate::error::{Error, ErrorKind};

/// `application_name` sent when the user sets none (the user's own value is always kept).
pub const DEFAULT_APPLICATION_NAME: &str = concat!("dsql-sqlx/", env!("CARGO_PKG_VERSION"));

/// sqlx's default prepared-statement cache size per connection.
pub const DEFAULT_STATEMENT_CACHE_CAPACITY: usize = 100;

/// Everything dsql-sqlx needs to open DSQL connections: the core's [`ConnectOptions`] (parsed
/// from a connection string or built in code), a [`TokenProvider`] (default: the AWS default
/// credential chain, loaded on first use), the connect-refusal retry policy and sqlx's statement
/// cache size. Cheap to clone; clones share the token provider.
///
/// What sqlx cannot do is refused here, with the fix in the message, rather than ignored:
/// `hostaddr` (sqlx dials the host it verifies; use `cluster_id` with a name the certificate
/// carries, as PrivateLink without DNS does) and `sslnegotiation=direct` (sqlx issue #3880).
#[derive(Clone)]
pub struct Config {
    options: ConnectOptions,
    endpoint: Endpoint,
    signing: SigningParams,
    startup_options: Option<String>,
    provider: Arc<OnceCell<TokenProvider>>,
    connect_retry: RetryPolicy,
    statement_cache_capacity: usize,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("options", &self.options)
            .field("signing", &self.signing)
            .field("provider", &self.provider.get())
            .field("connect_retry", &self.connect_retry)
            .field("statement_cache_capacity", &self.statement_cache_capacity)
            .finish()
    }
}

impl Config {
    /// A configuration for `options`. Fails on what the options say that sqlx cannot do, and on
    /// an endpoint the core cannot resolve (host, region, cluster id).
    pub fn new(options: ConnectOptions) -> Result<Self, Error> {
        if let Some(addr) = &options.hostaddr {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "hostaddr ({addr}) is not supported by sqlx, which connects to the host it verifies: \
                     put a name that resolves and that the server's certificate carries in `host` \
                     (for PrivateLink without DNS: the VPC endpoint's name) and add `cluster_id=<id>` \
                     so the token is signed for the cluster"
                ),
            ));
        }
        if options.sslnegotiation == SslNegotiation::Direct {
            return Err(Error::new(
                ErrorKind::Config,
                "sslnegotiation=direct is not supported by sqlx (sqlx issue #3880): remove it; \
                 DSQL also accepts the standard SSLRequest negotiation",
            ));
        }
        let endpoint = options.endpoint().map_err(Error::from_core)?;
        let signing = options.signing_params().map_err(Error::from_core)?;
        let startup_options = options.startup_options().map_err(Error::from_core)?;
        Ok(Self {
            options,
            endpoint,
            signing,
            startup_options,
            provider: Arc::new(OnceCell::new()),
            connect_retry: RetryPolicy::connect(),
            statement_cache_capacity: DEFAULT_STATEMENT_CACHE_CAPACITY,
        })
    }

    /// Parses a connection string (URL or key/value; see `dsql_auth_core::connect_options` for
    /// the keys), filling keys it does not give from the environment (`PGHOST`, `AWS_REGION`, ...).
    /// Unknown keys are an error that names them.
    pub fn from_env_and_str(s: &str) -> Result<Self, Error> {
        Self::new(ConnectOptions::from_env_and_str(s).map_err(Error::from_core)?)
    }

    /// Signs with `provider` instead of the AWS default credential chain.
    pub fn with_token_provider(mut self, provider: TokenProvider) -> Self {
        self.provider = Arc::new(OnceCell::new_with(Some(provider)));
        self
    }

    /// How DSQL's connect refusals (53400 rate exceeded, 53300 too many connections) are retried
    /// (default [`RetryPolicy::connect`]).
    pub fn with_connect_retry(mut self, policy: RetryPolicy) -> Self {
        self.connect_retry = policy;
        self
    }

    /// sqlx's prepared-statement cache size per connection (default 100; 0 disables it).
    pub fn with_statement_cache_capacity(mut self, capacity: usize) -> Self {
        self.statement_cache_capacity = capacity;
        self
    }

    /// The connection options.
    pub fn options(&self) -> &ConnectOptions {
        &self.options
    }

    /// The endpoint: host to connect to, host to sign for, region, cluster id.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// What tokens are signed for.
    pub fn signing_params(&self) -> &SigningParams {
        &self.signing
    }

    /// The connect-refusal retry policy.
    pub fn connect_retry(&self) -> &RetryPolicy {
        &self.connect_retry
    }

    /// The token provider: the one given, else the AWS default chain (with the options'
    /// `profile`), loaded on first use.
    pub async fn token_provider(&self) -> Result<&TokenProvider, Error> {
        self.provider
            .get_or_try_init(|| default_provider(self.options.profile.clone()))
            .await
    }

    /// sqlx's options for one token. Crate-private on purpose: sqlx's `Debug` of
    /// `PgConnectOptions` prints the password.
    pub(crate) fn pg_options(&self, token: &AuthToken) -> PgConnectOptions {
        let o = &self.options;
        // `new_without_pgpass` still reads PG* variables for fields we do not set; every field
        // that matters is set below, and `options` is checked in `Config::new` (see `env_options`).
        let mut pg = PgConnectOptions::new_without_pgpass()
            .host(self.endpoint.connect_host())
            .port(self.endpoint.port())
            .username(&o.user)
            .database(&o.dbname)
            .password(token.as_str())
            .ssl_mode(match o.sslmode {
                SslMode::Require => PgSslMode::Require,
                SslMode::VerifyCa => PgSslMode::VerifyCa,
                _ => PgSslMode::VerifyFull,
            })
            .application_name(
                o.application_name
                    .as_deref()
                    .unwrap_or(DEFAULT_APPLICATION_NAME),
            )
            .statement_cache_capacity(self.statement_cache_capacity);
        if let Some(ca) = &o.sslrootcert {
            pg = pg.ssl_root_cert(ca);
        }
        if let Some(startup) = &self.startup_options {
            pg = pg.raw_startup_options(startup);
        }
        pg
    }
}

/// Appending already-formatted startup options (`-c a=b -c amzn-cluster-id=...`) to sqlx's.
trait RawStartupOptions {
    fn raw_startup_options(self, options: &str) -> Self;
}

impl RawStartupOptions for PgConnectOptions {
    fn raw_startup_options(self, options: &str) -> Self {
        // sqlx only offers `options([(k, v)])`, which writes `-c k=v` escaped; split ours back into
        // pairs so the escaping is sqlx's. The core writes `-c name=value` words.
        let pairs: Vec<(String, String)> = split_c_options(options);
        self.options(pairs)
    }
}

/// `-c a=b -c c=d` (also `-ca=b` and `--a=b`) into pairs; the core validated the syntax.
fn split_c_options(options: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut words = options.split_whitespace();
    while let Some(word) = words.next() {
        let setting = if word == "-c" {
            match words.next() {
                Some(s) => s,
                None => break,
            }
        } else if let Some(rest) = word.strip_prefix("-c") {
            rest
        } else if let Some(rest) = word.strip_prefix("--") {
            rest
        } else {
            word
        };
        if let Some((k, v)) = setting.split_once('=') {
            out.push((k.to_owned(), v.to_owned()));
        }
    }
    out
}

#[cfg(feature = "aws-config")]
async fn default_provider(profile: Option<String>) -> Result<TokenProvider, Error> {
    TokenProvider::from_default_chain(profile.as_deref())
        .await
        .map_err(Error::from_core)
}

#[cfg(not(feature = "aws-config"))]
async fn default_provider(_profile: Option<String>) -> Result<TokenProvider, Error> {
    Err(Error::new(
        ErrorKind::Credentials,
        "dsql-sqlx was built without its `aws-config` feature: pass a token provider with \
         Config::with_token_provider, or enable the feature for the AWS default credential chain",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_startup_options() {
        assert_eq!(
            split_c_options("-c a=b -cc=d --e=f -c amzn-cluster-id=xyz"),
            vec![
                ("a".into(), "b".into()),
                ("c".into(), "d".into()),
                ("e".into(), "f".into()),
                ("amzn-cluster-id".into(), "xyz".into())
            ]
        );
    }
}
