//! [`Config`]: the core's [`ConnectOptions`] plus a token provider and the TLS connector.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use dsql_auth_core::{
    AuthToken, ConnectOptions, Endpoint, RetryPolicy, SigningParams, SslNegotiation, TokenProvider,
};
use tokio::sync::OnceCell;

use crate::error::Error;
use rustls::ClientConfig;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The `application_name` sent when the user sets none, so DSQL sessions opened through this
/// crate can be told apart.
pub const DEFAULT_APPLICATION_NAME: &str = "dsql-tokio-postgres";

/// Everything needed to open DSQL connections: the endpoint, the tokio-postgres settings, the
/// TLS configuration (built once), a token provider and the connect retry policy.
///
/// Cheap to clone; clones share the token provider (and so its token cache).
///
/// ```no_run
/// # async fn demo() -> Result<(), dsql_tokio_postgres::Error> {
/// use dsql_tokio_postgres::Config;
/// // From a connection string (URL or libpq key=value), credentials from the AWS default chain:
/// let config: Config = "postgres://admin@abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws/postgres".parse()?;
/// // Or from the core's options, built with setters named after the connection-string keys:
/// use dsql_tokio_postgres::ConnectOptions;
/// let options = ConnectOptions::new("abcdefghijklmnopqrstuvwxyz")
///     .region("us-east-1")
///     .user("app_user")
///     .application_name("orders-service");
/// let config = Config::new(options)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Config {
    options: ConnectOptions,
    endpoint: Endpoint,
    signing: SigningParams,
    pg: tokio_postgres::Config,
    tls_config: Arc<ClientConfig>,
    tls: MakeRustlsConnect,
    provider: Arc<OnceCell<TokenProvider>>,
    connect_retry: RetryPolicy,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Nothing here is secret: the template holds no password, the provider hides its credentials.
        f.debug_struct("Config")
            .field("endpoint", &self.endpoint)
            .field("signing", &self.signing)
            .field("pg", &self.pg)
            .field("sslmode", &self.options.sslmode)
            .field("alpn", &self.tls_config.alpn_protocols)
            .field("provider", &self.provider.get())
            .field("connect_retry", &self.connect_retry)
            .finish()
    }
}

impl FromStr for Config {
    type Err = Error;

    /// Parses a DSQL connection string (see [`ConnectOptions`]); credentials come from the AWS
    /// default chain (profile from the string) unless [`Config::with_token_provider`] is used.
    fn from_str(s: &str) -> Result<Self, Error> {
        let options: ConnectOptions = s.parse().map_err(Error::from_core)?;
        Config::new(options)
    }
}

impl Config {
    /// A configuration from parsed connection options. Validates everything that can be
    /// validated without the network: endpoint and region, signing parameters, `hostaddr`,
    /// the TLS setup (including reading `sslrootcert`).
    pub fn new(options: ConnectOptions) -> Result<Self, Error> {
        let endpoint = options.endpoint().map_err(Error::from_core)?;
        Self::with_endpoint(options, endpoint)
    }

    /// Parses a connection string, taking values it leaves out from the environment
    /// (`PGHOST`, `PGUSER`, `PGPORT`, `PGDATABASE`, `AWS_REGION`, as [`ConnectOptions`] documents).
    pub fn from_env_and_str(s: &str) -> Result<Self, Error> {
        let options = ConnectOptions::from_env_and_str(s).map_err(Error::from_core)?;
        Config::new(options)
    }

    fn with_endpoint(options: ConnectOptions, endpoint: Endpoint) -> Result<Self, Error> {
        let signing = options.signing_params().map_err(Error::from_core)?;

        let mut pg = tokio_postgres::Config::new();
        pg.host(endpoint.connect_host())
            .port(endpoint.port())
            .user(&options.user)
            .dbname(&options.dbname)
            .application_name(
                options
                    .application_name
                    .as_deref()
                    .unwrap_or(DEFAULT_APPLICATION_NAME),
            )
            // TLS is always on; how the certificate is checked is the TLS connector's job.
            .ssl_mode(tokio_postgres::config::SslMode::Require)
            .ssl_negotiation(match options.sslnegotiation {
                SslNegotiation::Direct => tokio_postgres::config::SslNegotiation::Direct,
                SslNegotiation::Postgres => tokio_postgres::config::SslNegotiation::Postgres,
            });
        if let Some(ip) = options.hostaddr {
            pg.hostaddr(ip);
        }
        if let Some(timeout) = options.connect_timeout {
            pg.connect_timeout(timeout);
        }
        // The user's options plus, for PrivateLink without DNS, `-c amzn-cluster-id=<id>`: a DSQL
        // rule, so the core builds it.
        if let Some(startup_options) = options.startup_options().map_err(Error::from_core)? {
            pg.options(startup_options);
        }

        let tls_config = crate::tls::client_config(
            options.sslmode,
            options.sslnegotiation,
            options.sslrootcert.as_deref(),
        )?;

        Ok(Self {
            options,
            endpoint,
            signing,
            pg,
            tls: MakeRustlsConnect::new(tls_config.clone()),
            tls_config: Arc::new(tls_config),
            provider: Arc::new(OnceCell::new()),
            connect_retry: RetryPolicy::connect(),
        })
    }

    /// Uses `provider` for tokens instead of the AWS default chain. Share one provider between
    /// configurations to share its token cache.
    pub fn with_token_provider(mut self, provider: TokenProvider) -> Self {
        self.provider = Arc::new(OnceCell::new_with(Some(provider)));
        self
    }

    /// Replaces the retry policy for connect refusals (53400 rate exceeded, 53300 too many
    /// connections). Default: [`RetryPolicy::connect`].
    pub fn with_connect_retry(mut self, policy: RetryPolicy) -> Self {
        self.connect_retry = policy;
        self
    }

    /// The connection options this configuration was built from.
    pub fn options(&self) -> &ConnectOptions {
        &self.options
    }

    /// The endpoint: host to connect to, host to sign for, region, port.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// What each token is signed for (host, region, action, lifetime).
    pub fn signing_params(&self) -> &SigningParams {
        &self.signing
    }

    /// The TLS connector for tokio-postgres (built once, cheap to clone): tokio-postgres-rustls'
    /// over [`Config::tls_config`].
    pub fn tls(&self) -> &MakeRustlsConnect {
        &self.tls
    }

    /// The rustls configuration [`Config::tls`] uses (see [`tls`](crate::tls) for the policy).
    pub fn tls_config(&self) -> &Arc<ClientConfig> {
        &self.tls_config
    }

    /// The tokio-postgres settings, without a password. [`connect`](crate::connect) clones
    /// this and sets a fresh token as the password.
    pub fn pg_config(&self) -> &tokio_postgres::Config {
        &self.pg
    }

    /// The retry policy for connect refusals.
    pub fn connect_retry(&self) -> &RetryPolicy {
        &self.connect_retry
    }

    /// The token provider: the one given with [`Config::with_token_provider`], else the AWS
    /// default chain (with the configured profile), resolved on first use and then shared.
    pub async fn token_provider(&self) -> Result<&TokenProvider, Error> {
        self.provider
            .get_or_try_init(|| default_provider(self.options.profile.clone()))
            .await
    }

    /// A token for this configuration, from the provider's cache when still fresh.
    pub async fn token(&self) -> Result<AuthToken, Error> {
        self.token_provider()
            .await?
            .token(&self.signing)
            .await
            .map_err(Error::from_core)
    }

    /// The tokio-postgres configuration for one connection: [`Config::pg_config`] with `token`
    /// as the password.
    pub fn pg_config_with_token(&self, token: &AuthToken) -> tokio_postgres::Config {
        let mut pg = self.pg.clone();
        pg.password(token.as_str());
        pg
    }
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
        crate::error::ErrorKind::Credentials,
        "no token provider: call Config::with_token_provider, or enable the `aws-config` feature of \
         dsql-tokio-postgres to use the AWS default credential chain",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use aws_credential_types::Credentials;
    use dsql_auth_core::{Action, SslMode};
    use std::net::IpAddr;
    use std::time::Duration;

    const HOST: &str = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";

    fn provider() -> TokenProvider {
        TokenProvider::new(Credentials::new(
            "AKIDTEST",
            "secret-key",
            None,
            None,
            "test",
        ))
    }

    fn config_err(s: &str) -> Error {
        match s.parse::<Config>() {
            Ok(c) => panic!("{s:?} should be rejected, got {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn connection_string_sets_every_tokio_postgres_field() {
        let config: Config = format!(
            "postgres://app_user@{HOST}:6543/postgres?hostaddr=10.0.0.7&application_name=orders\
             &connect_timeout=7&options=-c%20search_path%3Dapp&token_duration_secs=60"
        )
        .parse()
        .unwrap();
        let pg = config.pg_config();
        assert_eq!(pg.get_user(), Some("app_user"));
        assert_eq!(pg.get_dbname(), Some("postgres"));
        assert_eq!(pg.get_ports(), &[6543]);
        assert_eq!(pg.get_hostaddrs(), &["10.0.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(pg.get_application_name(), Some("orders"));
        assert_eq!(pg.get_connect_timeout(), Some(&Duration::from_secs(7)));
        assert_eq!(pg.get_options(), Some("-c search_path=app"));
        assert_eq!(pg.get_password(), None, "the template never holds a token");
        assert_eq!(pg.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        assert_eq!(config.signing_params().action(), Action::DbConnect);
        assert_eq!(
            config.signing_params().expires_in(),
            Duration::from_secs(60)
        );
        assert!(
            config.tls_config().alpn_protocols.is_empty(),
            "ALPN only for direct TLS"
        );

        let direct: Config = format!("host={HOST} sslnegotiation=direct")
            .parse()
            .unwrap();
        assert_eq!(
            direct.pg_config().get_ssl_negotiation(),
            tokio_postgres::config::SslNegotiation::Direct
        );
        assert_eq!(
            direct.tls_config().alpn_protocols,
            vec![b"postgresql".to_vec()]
        );
        assert_eq!(
            direct.pg_config().get_application_name(),
            Some(DEFAULT_APPLICATION_NAME)
        );
    }

    #[test]
    fn core_options_cover_the_settings() {
        let options = ConnectOptions::new("abcdefghijklmnopqrstuvwxyz")
            .region("eu-west-1")
            .user("admin")
            .dbname("postgres")
            .port(5433)
            .action(Action::DbConnect)
            .token_duration(Duration::from_secs(120))
            .sslmode(SslMode::VerifyCa)
            .sslnegotiation(SslNegotiation::Direct)
            .application_name("svc")
            .connect_timeout(Duration::from_secs(3))
            .options("-c statement_timeout=1000");
        let config = Config::new(options)
            .unwrap()
            .with_token_provider(provider())
            .with_connect_retry(RetryPolicy::no_retry());
        assert_eq!(
            config.endpoint().connect_host(),
            "abcdefghijklmnopqrstuvwxyz.dsql.eu-west-1.on.aws"
        );
        assert_eq!(config.signing_params().region(), "eu-west-1");
        assert_eq!(
            config.signing_params().action(),
            Action::DbConnect,
            "explicit action wins over the user"
        );
        assert_eq!(config.pg_config().get_ports(), &[5433]);
        assert_eq!(config.connect_retry(), &RetryPolicy::no_retry());
        assert!(config.provider.get().is_some());
    }

    #[test]
    fn privatelink_endpoint_signs_for_the_cluster_and_sends_its_id() {
        let config = Config::new(
            ConnectOptions::new(
                "vpce-0123456789abcdef0-abcdefgh.dsql-fnh4.us-east-1.vpce.amazonaws.com",
            )
            .cluster_id("abcdefghijklmnopqrstuvwxyz")
            .region("us-east-1")
            .options("-c search_path=app"),
        )
        .unwrap();
        assert_eq!(config.signing_params().host(), HOST);
        assert_eq!(
            config.pg_config().get_hosts(),
            &[tokio_postgres::config::Host::Tcp(
                "vpce-0123456789abcdef0-abcdefgh.dsql-fnh4.us-east-1.vpce.amazonaws.com".into()
            )]
        );
        assert_eq!(
            config.pg_config().get_options(),
            Some("-c search_path=app -c amzn-cluster-id=abcdefghijklmnopqrstuvwxyz")
        );
        // A plain DSQL host needs no cluster id option.
        let plain: Config = format!("host={HOST}").parse().unwrap();
        assert_eq!(plain.pg_config().get_options(), None);
    }

    #[test]
    fn bad_inputs_are_config_errors_that_say_what_to_do() {
        let e = config_err(&format!("host={HOST} hostaddr=not-an-ip"));
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("IP address"), "{e}");

        let e = config_err(&format!("host={HOST} sslrootcert=/nonexistent/ca.pem"));
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let e = config_err(&format!("host={HOST} sslrootcert={}", empty.display()));
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("holds no certificate"), "{e}");

        for (s, what) in [
            (format!("host={HOST} sslmode=disable"), "sslmode"),
            (format!("host={HOST} frobnicate=1"), "frobnicate"),
            ("host=localhost".to_owned(), "region"),
        ] {
            let e = config_err(&s);
            assert_eq!(e.kind(), ErrorKind::Config, "{s}: {e}");
            assert!(e.to_string().contains(what), "{s}: {e}");
        }
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let config: Config = format!("host={HOST}")
            .parse::<Config>()
            .unwrap()
            .with_token_provider(provider());
        let shown = format!("{config:?}");
        assert!(shown.contains(HOST));
        assert!(!shown.contains("secret-key"), "{shown}");
        let token = AuthToken::clone(
            &tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(config.token())
                .unwrap(),
        );
        let pg = config.pg_config_with_token(&token);
        assert_eq!(pg.get_password(), Some(token.as_str().as_bytes()));
        assert!(
            !format!("{pg:?}").contains("X-Amz-Signature"),
            "tokio-postgres redacts the password"
        );
    }
}
