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

    /// The token provider if it is already there (no loading).
    pub(crate) fn token_provider_now(&self) -> Option<&TokenProvider> {
        self.provider.get()
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

    const HOST: &str = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";

    fn token(config: &Config) -> AuthToken {
        let creds =
            aws_credential_types::Credentials::new("AKIDEXAMPLE", "s3cr3t", None, None, "t");
        dsql_auth_core::token::sign(
            config.signing_params(),
            &creds,
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_724_716_800),
        )
        .unwrap()
    }

    fn config(s: &str) -> Result<Config, Error> {
        Config::new(s.parse().map_err(Error::from_core)?)
    }

    #[test]
    fn maps_options_faithfully() {
        let c = config(&format!(
            "postgres://app@{HOST}:5433/postgres?sslmode=verify-ca&sslrootcert=/tmp/ca.pem&options=-c%20a%3Db"
        ))
        .unwrap()
        .with_statement_cache_capacity(7);
        let pg = c.pg_options(&token(&c));
        assert_eq!(pg.get_host(), HOST);
        assert_eq!(pg.get_port(), 5433);
        assert_eq!(pg.get_username(), "app");
        assert_eq!(pg.get_database(), Some("postgres"));
        assert!(matches!(pg.get_ssl_mode(), PgSslMode::VerifyCa));
        assert_eq!(pg.get_application_name(), Some(DEFAULT_APPLICATION_NAME));
        assert!(pg.get_options().unwrap().contains("-c a=b"));

        let c = config(&format!("postgres://{HOST}/postgres?application_name=mine")).unwrap();
        let pg = c.pg_options(&token(&c));
        assert_eq!(pg.get_application_name(), Some("mine"));
        assert!(
            matches!(pg.get_ssl_mode(), PgSslMode::VerifyFull),
            "verify-full by default"
        );
    }

    #[test]
    fn privatelink_without_dns_sends_the_cluster_id_and_signs_for_the_cluster() {
        let c = config(
            "host=vpce-0123456789abcdef0-abcdefgh.dsql-fnh4.us-east-1.vpce.amazonaws.com \
             cluster_id=abcdefghijklmnopqrstuvwxyz options='-c x=y'",
        )
        .unwrap();
        assert_eq!(c.signing_params().host(), HOST);
        let pg = c.pg_options(&token(&c));
        assert_eq!(
            pg.get_host(),
            "vpce-0123456789abcdef0-abcdefgh.dsql-fnh4.us-east-1.vpce.amazonaws.com"
        );
        assert_eq!(
            pg.get_options(),
            Some("-c x=y -c amzn-cluster-id=abcdefghijklmnopqrstuvwxyz")
        );
    }

    #[test]
    fn what_sqlx_cannot_do_is_refused_with_the_fix() {
        let err = config(&format!("host={HOST} hostaddr=10.0.0.1")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("cluster_id"), "{err}");
        let err = config(&format!("host={HOST} sslnegotiation=direct")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("#3880"), "{err}");
        let err = config(&format!("host={HOST} sslcompression=1 frobnicate=2")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("frobnicate"), "{err}");
        let err = config(&format!("host={HOST} password=hunter2")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn debug_of_config_shows_no_secret() {
        let c = config(&format!("host={HOST}"))
            .unwrap()
            .with_token_provider(TokenProvider::new(aws_credential_types::Credentials::new(
                "AKIDEXAMPLE",
                "s3cr3t",
                Some("sess10n".into()),
                None,
                "t",
            )));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("sess10n"),
            "{shown}"
        );
    }

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
