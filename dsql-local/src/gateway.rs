//! The TLS gateway: DSQL's connection handshake in front of a plain PostgreSQL.
//!
//! One task per client connection: negotiate TLS (SSLRequest or direct TLS with ALPN
//! `postgresql`), demand SNI, apply the rate and count limits, ask for a cleartext password and
//! verify it as an IAM token, then log in upstream as the same user and relay both ways,
//! rewriting serialization failures into DSQL's words and closing the connection at its
//! maximum age.

use crate::Dialect;
use crate::counters::{LiveCounters, RefusalReason};
use crate::postgres::UpstreamTarget;
use crate::session_rules::{BackendRules, Backward, Forward, FrontendRules, Limits, SessionShared};
use crate::token_verifier::{self, AcceptedCredentials, Expectation};
use crate::wire::{self, Startup};
use bytes::{Buf, BytesMut};
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

const ACCESS_DENIED: &str = "unable to accept connection, access denied";
const NO_SNI: &str = "unable to accept connection, sni was not received";
const NO_TLS: &str = "unable to accept connection, ssl is required";
const RATE_EXCEEDED: &str = "Unable to accept connection, rate exceeded.";
const TOO_MANY: &str = "Unable to accept connection, too many open connections.";
/// The most of any untrusted string (user name, error text) that reaches the log.
pub(crate) const LOG_FIELD_LIMIT: usize = 256;

/// Everything the connection tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) region: String,
    pub(crate) cluster_id: String,
    /// `<cluster id>.dsql.<region>.on.aws`, lowercase.
    pub(crate) host: String,
    /// Other names of the cluster (lowercase, no trailing dot): SNI naming one routes here.
    pub(crate) host_aliases: Vec<String>,
    pub(crate) creds: AcceptedCredentials,
    pub(crate) upstream: UpstreamTarget,
    pub(crate) max_connection_age: Duration,
    pub(crate) max_connections: u32,
    /// Connections that have not logged in yet, whatever they send, close this long after
    /// they were accepted.
    pub(crate) handshake_timeout: Duration,
    /// Connections allowed at once before login; more are closed at once.
    pub(crate) max_unauthenticated: u32,
    /// Connections accepted and not yet logged in (or refused).
    pub(crate) unauthenticated: AtomicU32,
    /// Verify tokens as of this time instead of the system clock (replaying recorded tokens).
    pub(crate) verify_as_of: Option<SystemTime>,
    pub(crate) counters: LiveCounters,
    pub(crate) refuse_next: AtomicU32,
    pub(crate) open: AtomicU32,
    pub(crate) bucket: Mutex<TokenBucket>,
    /// Bumped by `drop_all_connections`; every relay watches it.
    pub(crate) drop_all: watch::Sender<u64>,
    /// BackendKeyData (pid, key) of live relayed sessions: only these cancel requests go upstream.
    pub(crate) cancel_keys: Mutex<HashSet<(i32, Vec<u8>)>>,
    pub(crate) sessions: AtomicU64,
    /// Whether DSQL's SQL rules apply, or plain PostgreSQL.
    pub(crate) dialect: Dialect,
    /// DSQL's transaction limits (rows, size, age).
    pub(crate) limits: Limits,
}

/// A token bucket: `burst` tokens, refilled at `per_sec`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(per_sec: u32, burst: u32) -> Self {
        TokenBucket {
            per_sec: f64::from(per_sec),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A connection to the upstream PostgreSQL: TCP, or the temporary cluster's unix socket (cheaper).
pub(crate) trait UpstreamIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> UpstreamIo for T {}

async fn open_upstream(target: &UpstreamTarget) -> io::Result<Box<dyn UpstreamIo>> {
    if let Some(dir) = &target.socket_dir {
        let path = dir.join(format!(".s.PGSQL.{}", target.port));
        return Ok(Box::new(tokio::net::UnixStream::connect(path).await?));
    }
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    let _ = tcp.set_nodelay(true);
    Ok(Box::new(tcp))
}

/// Counts a connection in one of the gauges (open, unauthenticated) until dropped.
struct OpenGuard<'a>(&'a AtomicU32);

impl<'a> OpenGuard<'a> {
    /// Takes a place if fewer than `max` are taken.
    fn take(counter: &'a AtomicU32, max: u32) -> Option<Self> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| OpenGuard(counter))
    }
}

/// A place among the connections that have not logged in yet, given back when dropped.
struct PendingGuard(Arc<Shared>);

impl PendingGuard {
    fn take(shared: &Arc<Shared>) -> Option<Self> {
        shared
            .unauthenticated
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < shared.max_unauthenticated).then_some(n + 1)
            })
            .ok()
            .map(|_| PendingGuard(shared.clone()))
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.unauthenticated.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `s` cut to [`LOG_FIELD_LIMIT`] bytes (on a character boundary) for the log: clients choose
/// these strings, and a log line must not grow with them.
pub(crate) fn bounded(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= LOG_FIELD_LIMIT {
        return s.into();
    }
    let mut end = LOG_FIELD_LIMIT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len()).into()
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts clients until the gateway thread stops (see `gateway_thread`).
pub(crate) async fn serve(listener: TcpListener, tls: TlsAcceptor, shared: Arc<Shared>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Clients that have not logged in have their own, separate cap: they never take the
        // places of logged-in connections (max_connections). Over it, close at once.
        let Some(pending) = PendingGuard::take(&shared) else {
            shared
                .counters
                .refuse(RefusalReason::TooManyUnauthenticated);
            tracing::info!(%peer, reason = %RefusalReason::TooManyUnauthenticated, "refused connection");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (tls, shared) = (tls.clone(), shared.clone());
        tokio::spawn(async move {
            // One deadline for everything before login, however the client spreads its steps.
            let login =
                tokio::time::timeout(shared.handshake_timeout, handle(tcp, peer, tls, &shared))
                    .await;
            drop(pending);
            let result = match login {
                Err(_) => {
                    shared.counters.refuse(RefusalReason::HandshakeTimeout);
                    tracing::info!(%peer, reason = %RefusalReason::HandshakeTimeout, "refused connection");
                    return;
                }
                Ok(Ok(Some(session))) => session.relay(&shared).await,
                Ok(Ok(None)) => Ok(()),
                Ok(Err(e)) => Err(e),
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %bounded(&e.to_string()), "connection ended with an error");
            }
        });
    }
}

fn session_id(shared: &Shared) -> String {
    // DSQL shows a session id in refusals; ours only needs to be unique within a run and greppable.
    let n = shared.sessions.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let digest = <sha2::Sha256 as sha2::Digest>::digest(format!("{t}:{n}:{}", std::process::id()));
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    digest
        .iter()
        .take(26)
        .map(|b| ALPHABET[usize::from(b % 32)] as char)
        .collect()
}

async fn send_fatal<S: AsyncWrite + Unpin>(
    s: &mut S,
    code: &str,
    text: &str,
    detail: Option<&str>,
) -> io::Result<()> {
    s.write_all(&wire::error_response("FATAL", code, text, detail))
        .await?;
    s.flush().await?;
    s.shutdown().await
}

/// A client that logged in, with its upstream session, ready to relay.
struct LoggedIn<'a> {
    client: TlsStream<TcpStream>,
    upstream: Box<dyn UpstreamIo>,
    pending: BytesMut,
    _open: OpenGuard<'a>,
}

impl LoggedIn<'_> {
    async fn relay(self, shared: &Shared) -> io::Result<()> {
        relay(self.client, self.upstream, self.pending, shared).await
    }
}

/// Everything before the relay: TLS, startup, limits, token, upstream login. `None` when the
/// connection ended (refused, cancel request, client gone).
async fn handle<'a>(
    mut tcp: TcpStream,
    peer: SocketAddr,
    tls: TlsAcceptor,
    shared: &'a Shared,
) -> io::Result<Option<LoggedIn<'a>>> {
    let mut first = [0u8; 1];
    let n = tcp.peek(&mut first).await?;
    if n == 0 {
        return Ok(None);
    }
    let direct = first[0] == 0x16;
    if !direct {
        loop {
            match wire::read_startup(&mut tcp).await? {
                Startup::Ssl => {
                    tcp.write_all(b"S").await?;
                    break;
                }
                Startup::GssEnc => tcp.write_all(b"N").await?,
                Startup::Cancel { pid, key } => {
                    return forward_cancel(shared, pid, key).await.map(|()| None);
                }
                Startup::Params { .. } => {
                    shared.counters.refuse(RefusalReason::NoTls);
                    tracing::info!(%peer, reason = %RefusalReason::NoTls, "refused connection");
                    return send_fatal(&mut tcp, "28000", NO_TLS, None)
                        .await
                        .map(|()| None);
                }
            }
        }
    }
    let mut stream = tls.accept(tcp).await?;
    let (sni, alpn_ok) = {
        let (_, conn) = stream.get_ref();
        (
            conn.server_name().map(token_verifier::normalize_host),
            conn.alpn_protocol() == Some(b"postgresql"),
        )
    };
    let startup = wire::read_startup(&mut stream).await?;
    if direct && !alpn_ok {
        // PostgreSQL 17 demands ALPN on direct TLS for the same reason: no cross-protocol confusion.
        shared.counters.refuse(RefusalReason::Malformed);
        tracing::info!(%peer, reason = %RefusalReason::Malformed, "direct TLS without ALPN `postgresql`");
        return send_fatal(
            &mut stream,
            "08P01",
            "received direct SSL connection request without ALPN protocol negotiation extension",
            None,
        )
        .await
        .map(|()| None);
    }
    let (version, params) = match startup {
        Startup::Params { version, params } => (version, params),
        Startup::Cancel { pid, key } => {
            return forward_cancel(shared, pid, key).await.map(|()| None);
        }
        Startup::Ssl | Startup::GssEnc => {
            return send_fatal(
                &mut stream,
                "08P01",
                "encryption request inside an encrypted connection",
                None,
            )
            .await
            .map(|()| None);
        }
    };
    let Some(sni) = sni else {
        shared.counters.refuse(RefusalReason::NoSni);
        tracing::info!(%peer, reason = %RefusalReason::NoSni, "refused connection");
        return send_fatal(&mut stream, "08P01", NO_SNI, None)
            .await
            .map(|()| None);
    };
    session(stream, peer, shared, sni, version, params).await
}

/// Sends a CancelRequest upstream for a session relayed by this gateway; anything else is ignored.
async fn forward_cancel(shared: &Shared, pid: i32, key: Vec<u8>) -> io::Result<()> {
    let known = shared
        .cancel_keys
        .lock()
        .map(|k| k.contains(&(pid, key.clone())))
        .unwrap_or(false);
    if !known {
        tracing::debug!(pid, "cancel request for an unknown session ignored");
        return Ok(());
    }
    let mut up = open_upstream(&shared.upstream).await?;
    let mut msg = Vec::with_capacity(12 + key.len());
    msg.extend_from_slice(&((12 + key.len()) as u32).to_be_bytes());
    msg.extend_from_slice(&wire::CANCEL_REQUEST_CODE.to_be_bytes());
    msg.extend_from_slice(&pid.to_be_bytes());
    msg.extend_from_slice(&key);
    up.write_all(&msg).await?;
    up.shutdown().await
}

async fn refuse<S: AsyncWrite + Unpin>(
    s: &mut S,
    shared: &Shared,
    reason: RefusalReason,
    peer: SocketAddr,
    user: &str,
    sid: &str,
) -> io::Result<()> {
    shared.counters.refuse(reason);
    tracing::info!(%peer, user = %bounded(user), session_id = sid, reason = %reason, "refused connection");
    let detail = format!("Session Id: {sid}");
    match reason {
        RefusalReason::RateExceeded => send_fatal(s, "53400", RATE_EXCEEDED, Some(&detail)).await,
        RefusalReason::TooManyConnections => send_fatal(s, "53300", TOO_MANY, Some(&detail)).await,
        _ => send_fatal(s, "28000", ACCESS_DENIED, Some(&detail)).await,
    }
}

async fn session<'a>(
    mut client: TlsStream<TcpStream>,
    peer: SocketAddr,
    shared: &'a Shared,
    sni: String,
    version: u32,
    params: Vec<(String, String)>,
) -> io::Result<Option<LoggedIn<'a>>> {
    let sid = session_id(shared);
    if version >> 16 != 3 {
        return send_fatal(&mut client, "0A000", "unsupported frontend protocol", None)
            .await
            .map(|()| None);
    }
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let Some(user) = get("user").filter(|u| !u.is_empty()) else {
        return send_fatal(
            &mut client,
            "28000",
            "no PostgreSQL user name specified in startup packet",
            None,
        )
        .await
        .map(|()| None);
    };
    let database = get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    let (options, cluster_id) = wire::take_cluster_id(&get("options").unwrap_or_default());

    let allowed = shared
        .bucket
        .lock()
        .map(|mut b| b.try_take(Instant::now()))
        .unwrap_or(true);
    if !allowed {
        return refuse(
            &mut client,
            shared,
            RefusalReason::RateExceeded,
            peer,
            &user,
            &sid,
        )
        .await
        .map(|()| None);
    }

    // PostgreSQL 18 clients may ask for protocol 3.2 or `_pq_.` extensions: we speak plain 3.0.
    let unsupported: Vec<String> = params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.clone())
        .collect();
    if version != 196_608 || !unsupported.is_empty() {
        client
            .write_all(&wire::negotiate_protocol_version(&unsupported))
            .await?;
    }

    client.write_all(&wire::auth_request(3)).await?;
    client.flush().await?;
    let mut buf = BytesMut::new();
    let password =
        match wire::read_message(&mut client, &mut buf, wire::MAX_PREAUTH_MESSAGE).await? {
            Some((b'p', body)) => body,
            _ => return Ok(None),
        };
    let password = password.strip_suffix(&[0]).unwrap_or(&password);
    let password = String::from_utf8_lossy(password);

    // DSQL routes by SNI, so a connection must name this cluster: by its host, or (PrivateLink
    // without DNS) by `amzn-cluster-id` while SNI names the endpoint dialled. Either way the
    // token must be signed for the cluster's host.
    // A host alias (a custom endpoint's name) named by SNI routes to the cluster too, and then
    // the token must be signed for that alias, the name the client dialled.
    let expected_host = match &cluster_id {
        Some(id) if *id == shared.cluster_id => shared.host.clone(),
        Some(_) => String::new(),
        None if sni.eq_ignore_ascii_case(&shared.host) => shared.host.clone(),
        None => shared
            .host_aliases
            .iter()
            .find(|a| sni.eq_ignore_ascii_case(a))
            .cloned()
            .unwrap_or_default(),
    };
    let injected = shared
        .refuse_next
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok();
    let verdict = if injected {
        Err(RefusalReason::Injected)
    } else if expected_host.is_empty() {
        Err(RefusalReason::HostMismatch)
    } else {
        let expect = Expectation {
            user: &user,
            host: &expected_host,
            region: &shared.region,
            now: shared.verify_as_of.unwrap_or_else(SystemTime::now),
        };
        token_verifier::verify(&password, &shared.creds, &expect)
    };
    drop(password);
    if let Err(reason) = verdict {
        return refuse(&mut client, shared, reason, peer, &user, &sid)
            .await
            .map(|()| None);
    }
    // Only logged-in connections count against --max-connections: a client that stalls
    // before its password never takes a real one's place.
    let Some(open) = OpenGuard::take(&shared.open, shared.max_connections) else {
        return refuse(
            &mut client,
            shared,
            RefusalReason::TooManyConnections,
            peer,
            &user,
            &sid,
        )
        .await
        .map(|()| None);
    };

    // DSQL refuses some session parameters at startup too, in the words it uses for SET.
    if shared.dialect == Dialect::Dsql {
        let refused = params
            .iter()
            .map(|(k, _)| k.clone())
            .chain(wire::option_settings(&options).into_iter().map(|(k, _)| k))
            .find_map(|name| crate::dialect::refused_parameter(&name));
        if let Some(r) = refused {
            shared.counters.refuse_statements(1);
            return send_fatal(&mut client, r.code, &r.message, None)
                .await
                .map(|()| None);
        }
    }
    let mut startup: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| {
            !matches!(k.as_str(), "user" | "database" | "options" | "replication")
                && !k.starts_with("_pq_.")
        })
        .cloned()
        .collect();
    startup.push(("user".into(), user.clone()));
    startup.push(("database".into(), database));
    if !options.is_empty() {
        startup.push(("options".into(), options));
    }
    let upstream = match connect_upstream(&shared.upstream, &startup).await {
        Ok(Login::Ready(up, rest)) => (up, rest),
        Ok(Login::Refused(error_message)) => {
            // The upstream's own words (e.g. role does not exist) are what a DSQL user would see too.
            client.write_all(&error_message).await?;
            client.flush().await?;
            return client.shutdown().await.map(|()| None);
        }
        Err(e) => {
            tracing::warn!(error = %bounded(&e.to_string()), "cannot reach the upstream PostgreSQL");
            return send_fatal(
                &mut client,
                "08006",
                "unable to accept connection, the cluster is unavailable",
                None,
            )
            .await
            .map(|()| None);
        }
    };
    shared.counters.accept();
    tracing::debug!(%peer, user = %bounded(&user), session_id = sid, "accepted connection");
    Ok(Some(LoggedIn {
        client,
        upstream: upstream.0,
        pending: upstream.1,
        _open: open,
    }))
}

/// The outcome of logging in upstream.
enum Login {
    /// Authenticated; the bytes after AuthenticationOk (inclusive) not yet relayed.
    Ready(Box<dyn UpstreamIo>, BytesMut),
    /// The upstream refused: its ErrorResponse, to forward verbatim.
    Refused(Vec<u8>),
}

/// Connects to the upstream PostgreSQL and completes its authentication (trust, cleartext, MD5 or
/// SCRAM-SHA-256 with the upstream URL's password).
async fn connect_upstream(
    target: &UpstreamTarget,
    params: &[(String, String)],
) -> io::Result<Login> {
    use postgres_protocol::authentication::sasl;
    use postgres_protocol::message::frontend;

    let mut up = open_upstream(target).await?;
    let mut out = BytesMut::new();
    frontend::startup_message(
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &mut out,
    )?;
    up.write_all(&out).await?;
    let mut buf = BytesMut::new();
    let mut scram: Option<sasl::ScramSha256> = None;
    let user = params
        .iter()
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let need_password = || {
        io::Error::other(
            "the upstream PostgreSQL asks for a password: put it in the upstream URL (postgres://user:password@host)",
        )
    };
    loop {
        let Some((tag, mut body)) =
            wire::read_message(&mut up, &mut buf, wire::MAX_PREAUTH_MESSAGE).await?
        else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        match tag {
            b'E' => return Ok(Login::Refused(wire::message(b'E', &body))),
            b'v' | b'N' => continue,
            b'R' if body.len() >= 4 => {
                let code = body.get_i32();
                out.clear();
                match code {
                    0 => {
                        let mut rest = BytesMut::from(&wire::auth_request(0)[..]);
                        rest.extend_from_slice(&buf);
                        return Ok(Login::Ready(up, rest));
                    }
                    3 => {
                        let pw = target.password.as_deref().ok_or_else(need_password)?;
                        frontend::password_message(pw.as_bytes(), &mut out)?;
                    }
                    5 if body.len() >= 4 => {
                        let pw = target.password.as_deref().ok_or_else(need_password)?;
                        let salt = [body[0], body[1], body[2], body[3]];
                        let hash = postgres_protocol::authentication::md5_hash(
                            user.as_bytes(),
                            pw.as_bytes(),
                            salt,
                        );
                        frontend::password_message(hash.as_bytes(), &mut out)?;
                    }
                    10 => {
                        let pw = target.password.as_deref().ok_or_else(need_password)?;
                        let mechs: Vec<&[u8]> = body[..].split(|b: &u8| *b == 0).collect();
                        if !mechs.contains(&&b"SCRAM-SHA-256"[..]) {
                            return Err(io::Error::other(
                                "the upstream PostgreSQL offers no SCRAM-SHA-256",
                            ));
                        }
                        let s = sasl::ScramSha256::new(
                            pw.as_bytes(),
                            sasl::ChannelBinding::unsupported(),
                        );
                        frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out)?;
                        scram = Some(s);
                    }
                    11 => {
                        let s = scram
                            .as_mut()
                            .ok_or_else(|| io::Error::other("SASL continue without SASL start"))?;
                        s.update(&body)?;
                        frontend::sasl_response(s.message(), &mut out)?;
                    }
                    12 => {
                        let mut s = scram
                            .take()
                            .ok_or_else(|| io::Error::other("SASL final without SASL start"))?;
                        s.finish(&body)?;
                        continue;
                    }
                    other => {
                        return Err(io::Error::other(format!(
                            "unsupported upstream authentication method {other}"
                        )));
                    }
                }
                up.write_all(&out).await?;
            }
            _ => {
                return Err(io::Error::other(format!(
                    "unexpected upstream message {:?} during login",
                    tag as char
                )));
            }
        }
    }
}

/// Logs in upstream for an administrative session: the stream and the bytes already read, or
/// the server's error text.
pub(crate) async fn login(
    target: &UpstreamTarget,
    params: &[(String, String)],
) -> io::Result<Result<(Box<dyn UpstreamIo>, BytesMut), String>> {
    Ok(match connect_upstream(target, params).await? {
        Login::Ready(s, b) => Ok((s, b)),
        Login::Refused(msg) => Err(wire::error_text(msg.get(5..).unwrap_or_default())),
    })
}

async fn relay(
    client: TlsStream<TcpStream>,
    upstream: Box<dyn UpstreamIo>,
    pending: BytesMut,
    shared: &Shared,
) -> io::Result<()> {
    let deadline = tokio::time::Instant::now() + shared.max_connection_age;
    let mut dropped = shared.drop_all.subscribe();
    let (mut client_rx, mut client_tx) = tokio::io::split(client);
    let (mut up_rx, mut up_tx) = tokio::io::split(upstream);
    let mut keys = Vec::new();
    let session = SessionShared::default();
    let rules = shared.dialect == Dialect::Dsql;
    let result = {
        let to_upstream = async {
            let r = if rules {
                let mut front = FrontendRules::new(shared.limits);
                client_to_upstream(&mut client_rx, &mut up_tx, &mut front, &session, shared).await
            } else {
                tokio::io::copy(&mut client_rx, &mut up_tx)
                    .await
                    .map(|_| ())
            };
            let _ = up_tx.shutdown().await;
            r
        };
        let back = rules.then(|| (BackendRules::new(shared.limits), &session));
        let to_client = backend_to_client(
            &mut up_rx,
            &mut client_tx,
            pending,
            deadline,
            shared,
            &mut keys,
            back,
        );
        tokio::select! {
            r = to_upstream => r,
            r = to_client => r,
            _ = dropped.changed() => {
                tracing::debug!("connection dropped by drop_all_connections");
                Ok(())
            }
        }
    };
    if let Ok(mut known) = shared.cancel_keys.lock() {
        for k in keys {
            known.remove(&k);
        }
    }
    result
}

/// Largest client message the rules look inside; a bigger one (a huge query text or Bind)
/// is refused, its bytes dropped as they arrive, so a session's memory stays bounded and no
/// statement escapes the rules.
const MAX_INSPECTED_MESSAGE: usize = crate::session_rules::MAX_CHECKED_MESSAGE;
/// Largest backend message the relay holds whole to look inside (errors, CommandComplete,
/// ReadyForQuery, BackendKeyData are far smaller); anything bigger streams through unchanged.
const MAX_INSPECTED_BACKEND: usize = 16 << 20;
/// Each direction's read buffer: a burst of pipelined messages fits in one read, and one
/// write (one TLS record, one system call) carries it on.
const READ_BUFFER: usize = 64 * 1024;
/// A buffer that grew past this for one big message is given back once it is empty.
const KEEP_BUFFER: usize = 4 * READ_BUFFER;
/// At its maximum age a connection ends on a message boundary: this long at most to finish
/// a message that is half relayed.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The length field of the message starting `b` (at least 5 bytes): total bytes including
/// the tag, or an error for a length PostgreSQL never sends.
fn message_total(b: &[u8]) -> io::Result<usize> {
    let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
    if len < 4 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "invalid message length",
        ));
    }
    Ok(len + 1)
}

/// Makes room in `buf` for the next read, without allocating in the steady state: the space
/// of forwarded bytes is reused, a buffer grown for one big message is given back, and a
/// message that must be read whole (`whole`, its total length) gets room to arrive.
fn make_room(buf: &mut BytesMut, whole: Option<usize>) {
    if buf.is_empty() && buf.capacity() > KEEP_BUFFER {
        *buf = BytesMut::with_capacity(READ_BUFFER);
    }
    if let Some(total) = whole
        && total > buf.len()
    {
        buf.reserve(total - buf.len());
    }
    if buf.capacity() - buf.len() < READ_BUFFER / 4 {
        buf.reserve(READ_BUFFER);
    }
}

/// The message streaming through without being held whole: its bytes still to come, and
/// whether they are dropped instead of forwarded. Both directions of the relay use it.
#[derive(Debug, Default)]
struct Streamed {
    left: usize,
    dropping: bool,
}

impl Streamed {
    fn start(total: usize, dropping: bool) -> Self {
        Streamed {
            left: total,
            dropping,
        }
    }

    fn done(&self) -> bool {
        self.left == 0
    }

    /// Moves `pos` past the part of the message that `buf` holds (spliced out if dropped).
    /// None: no message is streaming; Some(false): the rest has not arrived yet.
    fn take(&mut self, splice: &mut Splice<'_>, buf: &[u8], pos: &mut usize) -> Option<bool> {
        if self.left == 0 {
            return None;
        }
        let n = self.left.min(buf.len() - *pos);
        if n == 0 {
            return Some(false);
        }
        if self.dropping {
            splice.replace(buf, *pos, n, &[]);
        }
        *pos += n;
        self.left -= n;
        Some(true)
    }
}

/// One burst of relayed bytes: the unchanged stretches of the read buffer, with the messages
/// the rules replaced or dropped spliced out. Nothing is copied until something changes.
struct Splice<'a> {
    out: &'a mut Vec<u8>,
    /// `buf[copied..]` is not in `out` yet.
    copied: usize,
    changed: bool,
}

impl<'a> Splice<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.clear();
        Splice {
            out,
            copied: 0,
            changed: false,
        }
    }

    /// `buf[at..at + len]` is replaced by `with` (empty: dropped).
    fn replace(&mut self, buf: &[u8], at: usize, len: usize, with: &[u8]) {
        self.out.extend_from_slice(&buf[self.copied..at]);
        self.out.extend_from_slice(with);
        self.copied = at + len;
        self.changed = true;
    }

    /// The bytes to send for `buf[..end]`.
    fn finish<'b>(&'b mut self, buf: &'b [u8], end: usize) -> &'b [u8] {
        if !self.changed {
            return &buf[..end];
        }
        self.out.extend_from_slice(&buf[self.copied..end]);
        self.out
    }
}

/// Relays client messages upstream with DSQL's rules: Query, Parse, Bind, Execute, Close,
/// Sync and FunctionCall are read whole and checked; everything else streams through as it
/// arrives, never buffered whole. One upstream write per client read.
async fn client_to_upstream<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    client: &mut R,
    up: &mut W,
    rules: &mut FrontendRules,
    session: &SessionShared,
    shared: &Shared,
) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    let mut out = Vec::with_capacity(READ_BUFFER);
    // The uninspected message being streamed (or dropped: a refused one).
    let mut streamed = Streamed::default();
    loop {
        let mut splice = Splice::new(&mut out);
        let mut pos = 0;
        let mut whole = None;
        loop {
            match streamed.take(&mut splice, &buf, &mut pos) {
                Some(true) => continue,
                Some(false) => break,
                None => {}
            }
            let rest = &buf[pos..];
            if rest.len() < 5 {
                break;
            }
            let tag = rest[0];
            let total = message_total(rest)?;
            let checked = matches!(tag, b'Q' | b'P' | b'B' | b'E' | b'C' | b'S' | b'F');
            if checked && total > MAX_INSPECTED_MESSAGE {
                let instead = rules.on_oversized(session, tag, total);
                splice.replace(&buf, pos, 0, &instead);
                streamed = Streamed::start(total, true);
                continue;
            }
            if !checked {
                rules.on_uninspected(tag, total - 5);
                streamed = Streamed::start(total, false);
                continue;
            }
            if rest.len() < total {
                whole = Some(total);
                break;
            }
            if let Forward::Replace(bytes) = rules.on_message(session, &rest[..total]) {
                splice.replace(&buf, pos, total, &bytes);
            }
            pos += total;
        }
        if pos > 0 {
            up.write_all(splice.finish(&buf, pos)).await?;
            buf.advance(pos);
            let refused = session.refused.swap(0, Ordering::Relaxed);
            if refused > 0 {
                shared.counters.refuse_statements(refused);
            }
        }
        if out.capacity() > KEEP_BUFFER {
            out = Vec::with_capacity(READ_BUFFER);
        }
        make_room(&mut buf, whole);
        if client.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// Relays upstream messages to the client. Only the messages the gateway may change or must
/// note are held whole (ErrorResponse for DSQL's OCC words, BackendKeyData for cancel
/// requests, and with the rules on CommandComplete and ReadyForQuery); everything else, rows
/// above all, streams through as it arrives. One client write and flush per upstream read.
/// At the maximum age the connection ends on a message boundary with DSQL's FATAL error.
async fn backend_to_client<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    up: &mut R,
    client: &mut W,
    mut buf: BytesMut,
    deadline: tokio::time::Instant,
    shared: &Shared,
    keys: &mut Vec<(i32, Vec<u8>)>,
    mut rules: Option<(BackendRules, &SessionShared)>,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(READ_BUFFER);
    // One timer for the connection's life, not one per read.
    let age_limit = tokio::time::sleep_until(deadline);
    tokio::pin!(age_limit);
    let with_rules = rules.is_some();
    // The message being streamed: bytes still to come, and whether they are dropped.
    let mut streamed = Streamed::default();
    // The maximum age was reached in the middle of a message: finish it, then close.
    let mut closing = false;
    loop {
        let mut splice = Splice::new(&mut out);
        let mut pos = 0;
        let mut whole = None;
        loop {
            match streamed.take(&mut splice, &buf, &mut pos) {
                Some(true) => continue,
                Some(false) => break,
                None => {}
            }
            let rest = &buf[pos..];
            if closing || rest.len() < 5 {
                break;
            }
            let tag = rest[0];
            let total = message_total(rest)?;
            let inspect = (matches!(tag, b'E' | b'K')
                || (with_rules && BackendRules::interesting(tag)))
                && total <= MAX_INSPECTED_BACKEND;
            if !inspect {
                // The rules look inside only the messages `interesting` names: for the others
                // the tag decides (forward, or drop while a helper statement's answer is
                // swallowed), so the header is all they are shown.
                let decided = match rules.as_mut() {
                    Some((r, session)) => r.on_message(session, &rest[..5]),
                    None => Backward::Same,
                };
                let drop = match decided {
                    Backward::Same => false,
                    Backward::Drop => true,
                    Backward::Replace(bytes) => {
                        splice.replace(&buf, pos, 0, &bytes);
                        true
                    }
                    Backward::Before(bytes) => {
                        splice.replace(&buf, pos, 0, &bytes);
                        false
                    }
                };
                streamed = Streamed::start(total, drop);
                continue;
            }
            if rest.len() < total {
                whole = Some(total);
                break;
            }
            let frame = &rest[..total];
            let decided = match rules.as_mut() {
                Some((r, session)) => r.on_message(session, frame),
                None => Backward::Same,
            };
            let same = match decided {
                Backward::Drop => {
                    splice.replace(&buf, pos, total, &[]);
                    false
                }
                Backward::Replace(bytes) => {
                    splice.replace(&buf, pos, total, &bytes);
                    false
                }
                Backward::Before(bytes) => {
                    splice.replace(&buf, pos, 0, &bytes);
                    true
                }
                Backward::Same => true,
            };
            if same {
                match tag {
                    b'E' => {
                        if let Some(rewritten) = wire::rewrite_serialization_failure(&frame[5..]) {
                            splice.replace(&buf, pos, total, &rewritten);
                        }
                    }
                    b'K' if total >= 13 => {
                        let pid = i32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]);
                        let key = (pid, frame[9..].to_vec());
                        if let Ok(mut known) = shared.cancel_keys.lock() {
                            known.insert(key.clone());
                        }
                        keys.push(key);
                    }
                    _ => {}
                }
            }
            pos += total;
        }
        if pos > 0 {
            let bytes = splice.finish(&buf, pos);
            if !bytes.is_empty() {
                client.write_all(bytes).await?;
                client.flush().await?;
            }
            buf.advance(pos);
        }
        if out.capacity() > KEEP_BUFFER {
            out = Vec::with_capacity(READ_BUFFER);
        }
        if closing && streamed.done() {
            return close_at_max_age(client, shared).await;
        }
        make_room(&mut buf, whole);
        let read = if closing {
            match tokio::time::timeout(CLOSE_GRACE, up.read_buf(&mut buf)).await {
                Ok(r) => r?,
                // The upstream stalled inside a message: no boundary to close on.
                Err(_) => return client.shutdown().await,
            }
        } else {
            tokio::select! {
                r = up.read_buf(&mut buf) => r?,
                _ = &mut age_limit => {
                    if streamed.done() {
                        return close_at_max_age(client, shared).await;
                    }
                    closing = true;
                    continue;
                }
            }
        };
        if read == 0 {
            client.flush().await?;
            return client.shutdown().await;
        }
    }
}

/// DSQL's words when a connection reaches its maximum age, then the end of the connection.
async fn close_at_max_age<W: AsyncWrite + Unpin>(
    client: &mut W,
    shared: &Shared,
) -> io::Result<()> {
    let secs = shared.max_connection_age.as_secs();
    let text = format!(
        "terminating connection: it reached the maximum connection duration of {secs} s; open a new connection"
    );
    client
        .write_all(&wire::error_response("FATAL", "57P01", &text, None))
        .await?;
    client.flush().await?;
    client.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_the_burst_then_the_rate() {
        let mut b = TokenBucket::new(2, 3);
        let t0 = b.last;
        assert!(b.try_take(t0) && b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(b.try_take(t0 + Duration::from_millis(500)));
        assert!(!b.try_take(t0 + Duration::from_millis(500)));
        assert!(b.try_take(t0 + Duration::from_secs(10)));
    }
}
