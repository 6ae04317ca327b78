//! Shared helpers for the gateway's integration tests: start an endpoint, mint tokens with
//! dsql-auth-core (the signer the verifier must agree with), connect with tokio-postgres over rustls.
#![allow(dead_code, unreachable_pub)]

use dsql_auth_core::token::{Action, SigningParams, sign};
use dsql_local::{LocalDsql, LocalDsqlBuilder};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_postgres::config::{SslMode, SslNegotiation};

/// Hang guard for anything that talks to the gateway.
pub const GUARD: Duration = Duration::from_secs(60);

pub async fn start(builder: LocalDsqlBuilder) -> LocalDsql {
    match tokio::time::timeout(GUARD, builder.start()).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => panic!("cannot start dsql-local: {e}"),
        Err(_) => panic!("dsql-local did not start within {GUARD:?}"),
    }
}

/// A token for `user` signed for `host` in `region` at `at`, with the endpoint's credentials.
pub fn token_for(
    dsql: &LocalDsql,
    host: &str,
    region: &str,
    user: &str,
    at: SystemTime,
    expires: u64,
) -> String {
    token_with(
        &dsql.credentials(),
        host,
        region,
        Action::for_user(user),
        at,
        expires,
    )
}

pub fn token_with(
    creds: &aws_credential_types::Credentials,
    host: &str,
    region: &str,
    action: Action,
    at: SystemTime,
    expires: u64,
) -> String {
    let params = SigningParams::new(host, region, action)
        .and_then(|p| p.with_expires_in(Duration::from_secs(expires)))
        .expect("valid signing params");
    sign(&params, creds, at)
        .expect("signing works")
        .as_str()
        .to_owned()
}

/// A fresh, valid 900 s token for `user`.
pub fn token(dsql: &LocalDsql, user: &str) -> String {
    token_for(
        dsql,
        dsql.host(),
        dsql.region(),
        user,
        SystemTime::now(),
        900,
    )
}

pub fn tls(dsql: &LocalDsql, direct: bool) -> tokio_postgres_rustls::MakeRustlsConnect {
    let pem = std::fs::read(dsql.ca_path()).expect("CA file is readable");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).expect("CA certificate parses");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    if direct {
        config.alpn_protocols = vec![b"postgresql".to_vec()];
    }
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.expect("PEM certificate"))
        .collect()
}

/// How a test client reaches the gateway.
#[derive(Clone, Debug)]
pub struct Dial {
    /// The host name for SNI and certificate verification.
    pub host: String,
    /// Connect to 127.0.0.1 instead of resolving `host`.
    pub hostaddr: bool,
    pub user: String,
    pub direct: bool,
    pub options: Option<String>,
}

impl Dial {
    pub fn new(dsql: &LocalDsql, user: &str) -> Self {
        Dial {
            host: dsql.host().to_owned(),
            hostaddr: true,
            user: user.to_owned(),
            direct: false,
            options: None,
        }
    }
}

pub fn config(dsql: &LocalDsql, dial: &Dial, password: &str) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host(&dial.host)
        .port(dsql.port())
        .user(&dial.user)
        .dbname("postgres")
        .password(password)
        .ssl_mode(SslMode::Require)
        .connect_timeout(Duration::from_secs(30));
    if dial.hostaddr {
        c.hostaddr(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    if dial.direct {
        c.ssl_negotiation(SslNegotiation::Direct);
    }
    if let Some(o) = &dial.options {
        c.options(o);
    }
    c
}

/// Connects and spawns the connection; returns the client and the connection task.
pub async fn connect(
    dsql: &LocalDsql,
    dial: &Dial,
    password: &str,
) -> Result<
    (
        tokio_postgres::Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ),
    tokio_postgres::Error,
> {
    let cfg = config(dsql, dial, password);
    let (client, conn) = tokio::time::timeout(GUARD, cfg.connect(tls(dsql, dial.direct)))
        .await
        .expect("connect finished within the hang guard")?;
    Ok((client, tokio::spawn(conn)))
}

/// The connection error's (SQLSTATE, message), failing the test when it is not a server error.
pub fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    match e.as_db_error() {
        Some(db) => (db.code().code().to_owned(), db.message().to_owned()),
        None => panic!("expected a server error, got {e:?}"),
    }
}
