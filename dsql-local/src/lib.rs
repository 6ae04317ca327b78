#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod certs;
mod counters;
mod dialect;
mod error;
mod gateway;
mod gateway_thread;
mod postgres;
mod session_rules;
mod token_verifier;
mod wire;

#[cfg(feature = "testing")]
pub mod testing;

pub use counters::{Counters, RefusalReason};
pub use error::{Error, ErrorKind};

use gateway::{Shared, TokenBucket};
use gateway_thread::GatewayThread;
use postgres::{TempPostgres, UpstreamTarget};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use token_verifier::AcceptedCredentials;

/// The access key id accepted when none is configured and the AWS environment variables are unset.
pub const DEFAULT_ACCESS_KEY_ID: &str = "AKIDLOCALDSQLEXAMPLE";
/// The secret key paired with [`DEFAULT_ACCESS_KEY_ID`]. Not an AWS secret: for local testing only.
pub const DEFAULT_SECRET_ACCESS_KEY: &str = "dsql-local-secret-key-for-testing-only";
/// The cluster id in [`LocalDsql::host`] unless [`LocalDsqlBuilder::cluster_id`] sets another.
pub const DEFAULT_CLUSTER_ID: &str = "localdsqlclusterid00000000";
/// The region unless [`LocalDsqlBuilder::region`] sets another.
pub const DEFAULT_REGION: &str = "us-east-1";
/// DSQL's maximum connection duration.
pub const DEFAULT_MAX_CONNECTION_AGE: Duration = Duration::from_secs(3600);
/// DSQL's new-connection rate quota: 100 per second, burst 1000.
pub const DEFAULT_RATE_LIMIT: (u32, u32) = (100, 1000);
/// DSQL's connection quota.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
/// How long a connection may take from accept to login, whatever it sends.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections allowed at once that have not logged in yet.
pub const DEFAULT_MAX_UNAUTHENTICATED: u32 = 256;
/// DSQL's limit on rows modified by one transaction.
pub const DEFAULT_MAX_TRANSACTION_ROWS: u64 = 3000;
/// DSQL's limit on the changes one transaction makes (10 MiB).
pub const DEFAULT_MAX_TRANSACTION_BYTES: u64 = 10 << 20;
/// DSQL's documented maximum transaction age (5 minutes).
pub const DEFAULT_MAX_TRANSACTION_AGE: Duration = Duration::from_secs(300);

/// Which SQL the gateway accepts.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// DSQL's: statements, clauses, types and transaction shapes DSQL refuses are refused with
    /// its SQLSTATE and words before they reach PostgreSQL; `CREATE INDEX ASYNC` and friends work.
    #[default]
    Dsql,
    /// Plain PostgreSQL behind the gateway: no SQL rules (the connection rules still apply).
    Postgres,
}

impl std::str::FromStr for Dialect {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "dsql" => Ok(Dialect::Dsql),
            "postgres" | "postgresql" => Ok(Dialect::Postgres),
            other => Err(Error::invalid_config(format!(
                "dialect `{}` is neither `dsql` nor `postgres`",
                gateway::bounded(other)
            ))),
        }
    }
}

/// The CA file's name inside the TLS directory.
pub const CA_FILE_NAME: &str = "dsql-local-ca.pem";

/// Options for [`LocalDsql`]; start with [`LocalDsql::builder`].
#[derive(Clone)]
pub struct LocalDsqlBuilder {
    region: String,
    cluster_id: String,
    credentials: Option<AcceptedCredentials>,
    upstream: Option<String>,
    max_connection_age: Duration,
    rate_limit: (u32, u32),
    max_connections: u32,
    port: u16,
    tls_dir: Option<PathBuf>,
    handshake_timeout: Duration,
    max_unauthenticated: u32,
    verify_as_of: Option<std::time::SystemTime>,
    host_aliases: Vec<String>,
    dialect: Dialect,
    limits: session_rules::Limits,
}

impl std::fmt::Debug for LocalDsqlBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDsqlBuilder")
            .field("region", &self.region)
            .field("cluster_id", &self.cluster_id)
            .field("credentials", &self.credentials)
            .field(
                "upstream",
                &self
                    .upstream
                    .as_ref()
                    .map(|_| "** set (may hold a password) **"),
            )
            .field("max_connection_age", &self.max_connection_age)
            .field("rate_limit", &self.rate_limit)
            .field("max_connections", &self.max_connections)
            .field("port", &self.port)
            .field("tls_dir", &self.tls_dir)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_unauthenticated", &self.max_unauthenticated)
            .field("verify_as_of", &self.verify_as_of)
            .field("host_aliases", &self.host_aliases)
            .field("dialect", &self.dialect)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Default for LocalDsqlBuilder {
    fn default() -> Self {
        LocalDsqlBuilder {
            region: DEFAULT_REGION.into(),
            cluster_id: DEFAULT_CLUSTER_ID.into(),
            credentials: None,
            upstream: None,
            max_connection_age: DEFAULT_MAX_CONNECTION_AGE,
            rate_limit: DEFAULT_RATE_LIMIT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            port: 0,
            tls_dir: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_unauthenticated: DEFAULT_MAX_UNAUTHENTICATED,
            verify_as_of: None,
            host_aliases: Vec::new(),
            dialect: Dialect::default(),
            limits: session_rules::Limits {
                max_rows: DEFAULT_MAX_TRANSACTION_ROWS,
                max_bytes: DEFAULT_MAX_TRANSACTION_BYTES,
                max_age: DEFAULT_MAX_TRANSACTION_AGE,
            },
        }
    }
}

impl LocalDsqlBuilder {
    /// The cluster's region (default `us-east-1`): tokens must be signed for it.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// The 26-character cluster id in [`LocalDsql::host`] (default [`DEFAULT_CLUSTER_ID`]).
    pub fn cluster_id(mut self, id: impl Into<String>) -> Self {
        self.cluster_id = id.into();
        self
    }

    /// The one key pair (and session token, for temporary credentials) the gateway accepts.
    pub fn credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        self.credentials = Some(AcceptedCredentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token,
        });
        self
    }

    /// Use this PostgreSQL (`postgres://[user[:password]@]host[:port][/database]`) instead of
    /// starting a temporary one. Clients log in upstream as themselves; the URL's password answers
    /// a password request, its user and database serve [`LocalDsql::create_role`].
    pub fn upstream(mut self, url: impl Into<String>) -> Self {
        self.upstream = Some(url.into());
        self
    }

    /// Close connections this long after they open (default 3600 s, DSQL's limit).
    pub fn max_connection_age(mut self, age: Duration) -> Self {
        self.max_connection_age = age;
        self
    }

    /// New connections per second and burst size (default 100/s, burst 1000, DSQL's quota).
    pub fn rate_limit(mut self, per_sec: u32, burst: u32) -> Self {
        self.rate_limit = (per_sec, burst);
        self
    }

    /// Open connections allowed at once (default 10,000, DSQL's quota).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// The gateway's port on 127.0.0.1 (default: a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Write the CA certificate to `<dir>/dsql-local-ca.pem` (default: a temporary directory
    /// removed with the endpoint). The directory is created if missing; it must not be a
    /// symbolic link and must belong to this user (or root). An existing file or link of that
    /// name is replaced, never written through.
    pub fn tls_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.tls_dir = Some(dir.into());
        self
    }

    /// Close a connection that has not logged in this long after it was accepted, whatever it
    /// sends meanwhile (default [`DEFAULT_HANDSHAKE_TIMEOUT`], 30 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Connections allowed at once that have not logged in yet; more are closed at once
    /// (default [`DEFAULT_MAX_UNAUTHENTICATED`]). They never count against
    /// [`max_connections`](Self::max_connections).
    pub fn max_unauthenticated(mut self, n: u32) -> Self {
        self.max_unauthenticated = n;
        self
    }

    /// Another name of this cluster, like a custom endpoint's: a client whose SNI names it
    /// reaches the cluster, and its token must then be signed for that name (a token for the
    /// alias is refused when SNI names [`LocalDsql::host`], and the other way round: the token
    /// names the host the client dialled). Compared case-insensitively, a trailing dot ignored;
    /// the gateway's certificate covers it. Call once per alias. Default: none.
    pub fn host_alias(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        let name = name.strip_suffix('.').unwrap_or(&name).to_ascii_lowercase();
        self.host_aliases.push(name);
        self
    }

    /// Verify tokens as of `at` instead of the system clock, to replay recorded tokens (such as
    /// another SDK's test vectors). Default: the system clock.
    pub fn verify_as_of(mut self, at: std::time::SystemTime) -> Self {
        self.verify_as_of = Some(at);
        self
    }

    /// DSQL's SQL rules ([`Dialect::Dsql`], the default) or plain PostgreSQL.
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }

    /// Rows one transaction may modify (default [`DEFAULT_MAX_TRANSACTION_ROWS`]); the statement
    /// that crosses it fails with 54000 `transaction row limit exceeded`.
    pub fn max_transaction_rows(mut self, rows: u64) -> Self {
        self.limits.max_rows = rows;
        self
    }

    /// Bytes of changes one transaction may carry (default [`DEFAULT_MAX_TRANSACTION_BYTES`]),
    /// estimated from the DML text, bound parameters and COPY data the client sends; COMMIT
    /// fails with 54000 `transaction size limit 10mb exceeded` past it.
    pub fn max_transaction_bytes(mut self, bytes: u64) -> Self {
        self.limits.max_bytes = bytes;
        self
    }

    /// How long a transaction block may stay open (default [`DEFAULT_MAX_TRANSACTION_AGE`]);
    /// later statements in it fail with 54000.
    pub fn max_transaction_age(mut self, age: Duration) -> Self {
        self.limits.max_age = age;
        self
    }

    fn validate(&self) -> Result<(), Error> {
        let label = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !label(&self.region) {
            return Err(Error::invalid_config(format!(
                "region `{}` is not a region name (lowercase letters, digits and `-`, like us-east-1)",
                self.region
            )));
        }
        if self.cluster_id.len() != 26
            || !self
                .cluster_id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(Error::invalid_config(format!(
                "cluster id `{}` must be 26 characters of a-z and 0-9",
                self.cluster_id
            )));
        }
        if self.max_connection_age.is_zero() {
            return Err(Error::invalid_config(
                "max connection age must be more than zero",
            ));
        }
        if self.rate_limit.0 == 0 || self.rate_limit.1 == 0 {
            return Err(Error::invalid_config(
                "rate limit needs at least 1 connection per second and a burst of at least 1",
            ));
        }
        for alias in &self.host_aliases {
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            };
            if alias.len() > 253 || !alias.split('.').all(label_ok) {
                return Err(Error::invalid_config(format!(
                    "host alias `{}` is not a DNS name (labels of letters, digits and `-`, like proxy.example.com)",
                    gateway::bounded(alias)
                )));
            }
        }
        if self.handshake_timeout.is_zero() {
            return Err(Error::invalid_config(
                "handshake timeout must be more than zero",
            ));
        }
        if self.max_unauthenticated == 0 {
            return Err(Error::invalid_config(
                "max unauthenticated connections must be at least 1",
            ));
        }
        if self.limits.max_rows == 0 || self.limits.max_bytes == 0 {
            return Err(Error::invalid_config(
                "transaction row and size limits must be at least 1",
            ));
        }
        if self.limits.max_age.is_zero() {
            return Err(Error::invalid_config(
                "max transaction age must be more than zero",
            ));
        }
        if self.max_connections == 0 {
            return Err(Error::invalid_config("max connections must be at least 1"));
        }
        if let Some(c) = &self.credentials
            && (c.access_key_id.is_empty() || c.secret_access_key.is_empty())
        {
            return Err(Error::invalid_config(
                "the access key id and secret key must not be empty",
            ));
        }
        Ok(())
    }

    /// Starts PostgreSQL (unless an upstream was given) and the gateway.
    pub async fn start(self) -> Result<LocalDsql, Error> {
        self.validate()?;
        let creds = self
            .credentials
            .clone()
            .unwrap_or_else(credentials_from_env);
        let mut postgres = None;
        let upstream = match &self.upstream {
            Some(url) => UpstreamTarget::from_url(url)?,
            None => {
                let pg = TempPostgres::start().await?;
                let target = UpstreamTarget {
                    host: "127.0.0.1".into(),
                    port: pg.port(),
                    socket_dir: Some(pg.socket_dir().to_owned()),
                    password: Some(pg.password().to_owned()),
                    admin_user: "admin".into(),
                    admin_database: "postgres".into(),
                };
                postgres = Some(pg);
                target
            }
        };

        let certs = certs::generate(&self.region, &self.host_aliases)?;
        let (ca_dir, ca_path) = match (&self.tls_dir, postgres.as_mut()) {
            (Some(dir), _) => (None, write_ca_into(dir, &certs.ca_pem)?),
            // Made and removed by PostgreSQL's supervisor, even if this process is killed.
            (None, Some(pg)) => {
                let dir = pg.tls_dir().await?;
                (None, write_ca_into(&dir, &certs.ca_pem)?)
            }
            (None, None) => {
                let dir = tempfile::Builder::new()
                    .prefix("dsql-local-tls-")
                    .tempdir()
                    .map_err(|e| Error::io("cannot create a temporary directory for the CA", e))?;
                let path = write_ca_into(dir.path(), &certs.ca_pem)?;
                (Some(dir), path)
            }
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::certificate(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs.chain, certs.key)
            .map_err(|e| Error::certificate(e.to_string()))?;
        tls.alpn_protocols = vec![b"postgresql".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port))
            .map_err(|e| Error::io(format!("cannot listen on 127.0.0.1:{}", self.port), e))?;
        let address = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the listening address", e))?;
        let host = format!("{}.dsql.{}.on.aws", self.cluster_id, self.region);
        let (drop_all, _) = tokio::sync::watch::channel(0u64);
        let shared = Arc::new(Shared {
            region: self.region.clone(),
            cluster_id: self.cluster_id.clone(),
            host: host.clone(),
            host_aliases: self.host_aliases.clone(),
            creds,
            upstream,
            max_connection_age: self.max_connection_age,
            max_connections: self.max_connections,
            handshake_timeout: self.handshake_timeout,
            max_unauthenticated: self.max_unauthenticated,
            unauthenticated: AtomicU32::new(0),
            verify_as_of: self.verify_as_of,
            counters: Default::default(),
            refuse_next: AtomicU32::new(0),
            open: AtomicU32::new(0),
            bucket: std::sync::Mutex::new(TokenBucket::new(self.rate_limit.0, self.rate_limit.1)),
            drop_all,
            cancel_keys: Default::default(),
            sessions: AtomicU64::new(0),
            dialect: self.dialect,
            limits: self.limits,
        });
        if self.dialect == Dialect::Dsql
            && let Err(e) = admin::simple_query(
                &shared.upstream,
                &format!("{SYS_SCHEMA}{}", session_rules::guard_functions_sql()),
            )
            .await
        {
            let why = match e {
                admin::AdminError::Server(m) => m,
                admin::AdminError::Io(e) => e.to_string(),
            };
            return Err(Error::upstream(
                "create schema sys (sys.jobs, sys.wait_for_job)",
                why,
            ));
        }
        let gateway = GatewayThread::start(listener, acceptor, shared.clone())
            .map_err(|e| Error::io("cannot start the gateway's thread", e))?;
        tracing::info!(%address, host, region = %self.region, ca = %ca_path.display(), "dsql-local is ready");
        Ok(LocalDsql {
            shared,
            address,
            host,
            ca_path,
            gateway,
            postgres,
            _ca_dir: ca_dir,
        })
    }
}

/// Writes the CA as `<dir>/dsql-local-ca.pem` without ever following a link planted there: the
/// directory must be a real directory (not a symlink) owned by us or root, and the file is
/// written under a fresh random name (`O_CREAT|O_EXCL`) and renamed over the old one (a rename
/// replaces a link, never its target).
fn write_ca_into(dir: &Path, pem: &str) -> Result<PathBuf, Error> {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let write_err = |path: &Path, source| Error::write(path.to_owned(), source);
    std::fs::create_dir_all(dir).map_err(|e| write_err(dir, e))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| write_err(dir, e))?;
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if !meta.is_dir() {
        return Err(Error::invalid_config(format!(
            "TLS directory {} is a symbolic link or not a directory; give a real directory",
            dir.display()
        )));
    }
    if meta.uid() != 0 && Some(meta.uid()) != me {
        return Err(Error::invalid_config(format!(
            "TLS directory {} belongs to another user (uid {}); give a directory you own",
            dir.display(),
            meta.uid()
        )));
    }
    let path = dir.join(CA_FILE_NAME);
    let mut tmp = tempfile::Builder::new()
        .prefix(".dsql-local-ca-")
        .tempfile_in(dir)
        .map_err(|e| write_err(&path, e))?;
    tmp.write_all(pem.as_bytes())
        .and_then(|()| tmp.flush())
        .map_err(|e| write_err(&path, e))?;
    // Readable by the clients that need it, like any CA certificate.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .map_err(|e| write_err(&path, e))?;
    tmp.persist(&path).map_err(|e| write_err(&path, e.error))?;
    Ok(path)
}

/// DSQL's `sys` schema as far as dsql-local needs it: `sys.jobs` and `CALL sys.wait_for_job(id)`,
/// and the helper that runs an `ASYNC` statement as a job. Jobs run at once (the statement is
/// executed in the client's transaction), so a job is `completed` when its id is returned.
const SYS_SCHEMA: &str = r#"
CREATE SCHEMA IF NOT EXISTS sys;
CREATE TABLE IF NOT EXISTS sys.jobs (
  job_id text PRIMARY KEY, status text NOT NULL, details text, job_type text,
  object_name text, start_time timestamptz NOT NULL DEFAULT now(),
  update_time timestamptz NOT NULL DEFAULT now());
CREATE OR REPLACE FUNCTION sys.dsql_local_run_job(statement text, job_type text, object_name text)
RETURNS TABLE (job_id text) LANGUAGE plpgsql AS $dsql_local$
DECLARE id text := substr(md5(random()::text || clock_timestamp()::text), 1, 26);
BEGIN
  EXECUTE statement;
  INSERT INTO sys.jobs (job_id, status, job_type, object_name, update_time)
    VALUES (id, 'completed', job_type, object_name, clock_timestamp());
  RETURN QUERY SELECT id;
END $dsql_local$;
CREATE OR REPLACE PROCEDURE sys.wait_for_job(id text) LANGUAGE plpgsql AS $dsql_local$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM sys.jobs j WHERE j.job_id = id) THEN
    RAISE EXCEPTION 'job % not found', id USING ERRCODE = '42704';
  END IF;
END $dsql_local$;
GRANT USAGE ON SCHEMA sys TO PUBLIC;
GRANT SELECT, INSERT ON sys.jobs TO PUBLIC;
GRANT EXECUTE ON FUNCTION sys.dsql_local_run_job(text, text, text) TO PUBLIC;
GRANT EXECUTE ON PROCEDURE sys.wait_for_job(text) TO PUBLIC;
"#;

fn credentials_from_env() -> AcceptedCredentials {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        (Some(access_key_id), Some(secret_access_key)) => AcceptedCredentials {
            access_key_id,
            secret_access_key,
            session_token: var("AWS_SESSION_TOKEN"),
        },
        _ => AcceptedCredentials {
            access_key_id: DEFAULT_ACCESS_KEY_ID.into(),
            secret_access_key: DEFAULT_SECRET_ACCESS_KEY.into(),
            session_token: None,
        },
    }
}

/// A running local DSQL endpoint; its gateway runs on a thread of its own. Dropping it stops
/// the gateway, then removes the temporary PostgreSQL (fields drop in order);
/// [`shutdown`](Self::shutdown) does the same, waits for every connection to close, and
/// reports errors.
#[derive(Debug)]
pub struct LocalDsql {
    shared: Arc<Shared>,
    address: SocketAddr,
    host: String,
    ca_path: PathBuf,
    gateway: GatewayThread,
    postgres: Option<TempPostgres>,
    _ca_dir: Option<tempfile::TempDir>,
}

impl LocalDsql {
    /// Starts with the defaults (temporary PostgreSQL, free port, us-east-1).
    pub async fn start() -> Result<LocalDsql, Error> {
        Self::builder().start().await
    }

    /// Options: region, credentials, upstream, limits, port, TLS directory.
    pub fn builder() -> LocalDsqlBuilder {
        LocalDsqlBuilder::default()
    }

    /// The DSQL-style host name `<cluster id>.dsql.<region>.on.aws`: use it for SNI and signing
    /// (it does not resolve; connect to [`address`](Self::address), e.g. libpq's `hostaddr`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The cluster id in [`host`](Self::host).
    pub fn cluster_id(&self) -> &str {
        &self.shared.cluster_id
    }

    /// Where the gateway listens: 127.0.0.1 and [`port`](Self::port).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The gateway's port.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The cluster's region.
    pub fn region(&self) -> &str {
        &self.shared.region
    }

    /// The CA certificate (PEM) that signed the gateway's certificate: clients' `sslrootcert`.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The credentials the gateway accepts; sign tokens with them.
    pub fn credentials(&self) -> aws_credential_types::Credentials {
        let c = &self.shared.creds;
        aws_credential_types::Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            c.session_token.clone(),
            None,
            "dsql-local",
        )
    }

    /// A DSQL connection string for this endpoint (URL form): user `admin`, database `postgres`,
    /// `hostaddr=127.0.0.1`, `sslmode=verify-full`, `sslrootcert=<CA>`, `region`.
    pub fn connection_string(&self) -> String {
        const PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'/')
            .remove(b'-')
            .remove(b'_')
            .remove(b'.');
        let ca = self.ca_path.to_string_lossy();
        format!(
            "postgres://admin@{}:{}/postgres?hostaddr={}&sslmode=verify-full&sslrootcert={}&region={}",
            self.host,
            self.port(),
            self.address.ip(),
            percent_encoding::utf8_percent_encode(&ca, PATH),
            self.region()
        )
    }

    /// A libpq connection string straight to the upstream PostgreSQL as `admin`, bypassing the
    /// gateway (for setup and for measuring the gateway's cost). Holds the upstream password, if any.
    pub fn upstream_connection_string(&self) -> String {
        let u = &self.shared.upstream;
        let mut s = format!(
            "host={} port={} user={} dbname={}",
            u.host, u.port, u.admin_user, u.admin_database
        );
        if let Some(pw) = &u.password {
            s.push_str(&format!(
                " password='{}'",
                pw.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
        s
    }

    /// The unix socket directory of the temporary PostgreSQL (None with an upstream URL).
    pub fn postgres_socket_dir(&self) -> Option<&Path> {
        self.postgres.as_ref().map(|p| p.socket_dir())
    }

    /// A snapshot of the accepted/refused counters.
    pub fn counters(&self) -> Counters {
        self.shared.counters.snapshot()
    }

    /// Closes every open client connection now (and their upstream sessions), as a network
    /// failure or a DSQL restart would. New connections are accepted as usual.
    pub fn drop_all_connections(&self) {
        self.shared.drop_all.send_modify(|g| *g += 1);
    }

    /// Refuses the next `n` authentications (access denied, counted as [`RefusalReason::Injected`]).
    pub fn refuse_next_authentications(&self, n: u32) {
        self.shared.refuse_next.fetch_add(n, Ordering::AcqRel);
    }

    /// Creates a login role (if missing) that may use and create in schema `public`, so a
    /// non-admin user can connect with a `DbConnect` token. With an upstream URL that holds a
    /// password, the role gets that password, so the gateway can log it in upstream.
    pub async fn create_role(&self, name: &str) -> Result<(), Error> {
        if name.is_empty() || name.len() > 63 || name.contains('\0') {
            return Err(Error::invalid_config(format!(
                "role name {name:?} must be 1 to 63 bytes without NUL"
            )));
        }
        let ident = format!("\"{}\"", name.replace('"', "\"\""));
        let literal = format!("'{}'", name.replace('\'', "''"));
        // The gateway logs clients in upstream as themselves, answering a password request with
        // the upstream's password: give the role that password.
        let password = match &self.shared.upstream.password {
            Some(pw) if !pw.contains("$dsql_local$") => {
                format!(" PASSWORD '{}'", pw.replace('\'', "''"))
            }
            _ => String::new(),
        };
        let sql = format!(
            "DO $dsql_local$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {literal}) THEN \
             CREATE ROLE {ident} LOGIN{password}; END IF; END $dsql_local$; \
             GRANT USAGE, CREATE ON SCHEMA public TO {ident};"
        );
        admin::simple_query(&self.shared.upstream, &sql)
            .await
            .map_err(|e| match e {
                admin::AdminError::Server(message) => {
                    Error::upstream(format!("create role {name}"), message)
                }
                admin::AdminError::Io(source) => {
                    Error::io("cannot reach the upstream PostgreSQL", source)
                }
            })
    }

    /// Stops the gateway and the temporary PostgreSQL and removes its directory.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.gateway.stop().await;
        match self.postgres.take() {
            Some(mut pg) => pg.stop().await,
            None => Ok(()),
        }
    }
}

mod admin {
    //! One-off administrative statements on the upstream, over the simple query protocol.

    use crate::postgres::UpstreamTarget;
    use crate::wire;
    use bytes::BytesMut;
    use tokio::io::AsyncWriteExt;

    pub(crate) enum AdminError {
        Server(String),
        Io(std::io::Error),
    }

    impl From<std::io::Error> for AdminError {
        fn from(e: std::io::Error) -> Self {
            AdminError::Io(e)
        }
    }

    pub(crate) async fn simple_query(target: &UpstreamTarget, sql: &str) -> Result<(), AdminError> {
        let params = vec![
            ("user".to_owned(), target.admin_user.clone()),
            ("database".to_owned(), target.admin_database.clone()),
            ("application_name".to_owned(), "dsql-local".to_owned()),
        ];
        let (mut up, mut buf) = match crate::gateway::login(target, &params).await? {
            Ok(x) => x,
            Err(error_body) => return Err(AdminError::Server(error_body)),
        };
        // The login's own messages end with ReadyForQuery; only then send the query.
        loop {
            match wire::read_message(&mut up, &mut buf, 1 << 24).await? {
                Some((b'E', body)) => return Err(AdminError::Server(wire::error_text(&body))),
                Some((b'Z', _)) => break,
                Some(_) => {}
                None => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
            }
        }
        let mut q = BytesMut::new();
        postgres_protocol::message::frontend::query(sql, &mut q)?;
        up.write_all(&q).await?;
        let mut error = None;
        loop {
            match wire::read_message(&mut up, &mut buf, 1 << 24).await? {
                Some((b'E', body)) => error = Some(wire::error_text(&body)),
                Some((b'Z', _)) => break,
                Some(_) => {}
                None => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
            }
        }
        let _ = up.write_all(&wire::message(b'X', &[])).await;
        match error {
            Some(e) => Err(AdminError::Server(e)),
            None => Ok(()),
        }
    }
}
