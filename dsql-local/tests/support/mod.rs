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
    tokio_postgres_rustls::MakeRustlsConnect::new(client_config(dsql, direct))
}

/// A rustls client configuration trusting the endpoint's CA (ALPN `postgresql` when `direct`).
pub fn client_config(dsql: &LocalDsql, direct: bool) -> rustls::ClientConfig {
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
    config
}

/// A raw TLS connection to the gateway (SSLRequest, SNI = the cluster host) that has sent its
/// startup message for `user` and been asked for a password: the point where a hostile client
/// may stall or send anything as its password.
pub async fn at_password_prompt(
    dsql: &LocalDsql,
    user: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(dsql.address())
        .await
        .expect("TCP connect");
    // SSLRequest: length 8, code 80877103.
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .expect("SSLRequest");
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.expect("SSL answer");
    assert_eq!(answer[0], b'S');
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(dsql, false)));
    let name = rustls::pki_types::ServerName::try_from(dsql.host().to_owned()).expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let mut startup = bytes::BytesMut::new();
    postgres_protocol::message::frontend::startup_message(
        [("user", user), ("database", "postgres")],
        &mut startup,
    )
    .expect("startup message");
    tls.write_all(&startup).await.expect("startup");
    tls.flush().await.expect("flush");
    let (tag, body) = read_backend_message(&mut tls)
        .await
        .expect("a password request");
    assert_eq!(
        (tag, &body[..]),
        (b'R', &[0u8, 0, 0, 3][..]),
        "cleartext password request"
    );
    tls
}

/// One backend message (tag, body), or None at end of stream.
pub async fn read_backend_message<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
) -> Option<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let tag = s.read_u8().await.ok()?;
    let len = s.read_u32().await.ok()? as usize;
    let mut body = vec![0u8; len.checked_sub(4)?];
    s.read_exact(&mut body).await.ok()?;
    Some((tag, body))
}

/// A PasswordMessage carrying `password`.
pub fn password_message(password: &str) -> Vec<u8> {
    let mut m = vec![b'p'];
    m.extend_from_slice(&((password.len() + 5) as u32).to_be_bytes());
    m.extend_from_slice(password.as_bytes());
    m.push(0);
    m
}

/// The SQLSTATE (`C` field) of an ErrorResponse body.
pub fn sqlstate(body: &[u8]) -> String {
    body.split(|b| *b == 0)
        .find_map(|f| f.strip_prefix(b"C"))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default()
}

/// Polls `check` until it holds, failing after [`GUARD`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + GUARD;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {GUARD:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether this process runs as root (then PostgreSQL runs as `postgres`).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// psql, or a failure that says how to install it.
pub fn psql() -> &'static str {
    if std::path::Path::new("/usr/bin/psql").exists() {
        return "/usr/bin/psql";
    }
    panic!("psql is not installed: apt-get install postgresql-client");
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
