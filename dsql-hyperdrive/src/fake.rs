//! A local fake of the Hyperdrive configs API, faithful where rotation depends on it
//! (reference: Cloudflare's API schema and docs):
//!
//! - envelopes `{success, errors, messages, result, result_info}`; list pagination with
//!   `page`/`per_page` (1..=50, default 20) and `result_info`;
//! - secrets (`origin.password`, `origin.access_client_secret`) are never echoed;
//! - PATCH: the network part of the origin (scheme, host, port, database, user,
//!   access_client_id/secret, service_id) is sent whole or not at all; password-only is fine;
//! - PUT replaces the configuration and resets the caching settings it leaves out; DELETE;
//! - an account limit on the number of configurations (code 2017, the fake's choice);
//! - on create and on any origin change, a **test connection** with the new password through a
//!   real PostgreSQL client (tokio-postgres + rustls, verify-full against the configured CA,
//!   SNI = origin host), answering 2013 for bad credentials, 2010/2011 when unreachable, 2012
//!   without TLS, 2014 for a missing database, 2016 when `SELECT 1` fails. Hosts that do not
//!   resolve (DSQL-style test hosts) are mapped to a local address with [`FakeBuilder::route_origin`];
//! - injectable 429 with `retry-after`, 5xx, sparse envelopes, failures per configuration name;
//! - a log of every request (method, path, query, JSON body) for assertions.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let fake = dsql_hyperdrive::fake::FakeHyperdrive::builder().test_connections(false).start().await?;
//! let client = dsql_hyperdrive::HyperdriveClient::builder(fake.account_id(), fake.api_token()).api_base(fake.api_base()).build()?;
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::model::HyperdriveConfig;

/// Origin fields that make up its network part (must be PATCHed together).
const NETWORK_FIELDS: [&str; 8] = [
    "scheme",
    "host",
    "port",
    "database",
    "user",
    "access_client_id",
    "access_client_secret",
    "service_id",
];
const SECRET_FIELDS: [&str; 2] = ["password", "access_client_secret"];

/// Why the fake could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FakeError {
    /// Binding or serving failed.
    #[error("the fake Hyperdrive API could not listen on 127.0.0.1: {0}")]
    Io(#[from] std::io::Error),
    /// The CA file could not be read.
    #[error("cannot read the origin CA {path}: {message}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// One request the fake received.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// `GET`, `POST`, `PATCH`, `PUT`, `DELETE`.
    pub method: String,
    /// The path (`/client/v4/accounts/.../hyperdrive/configs/...`).
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The JSON body, if any (secrets included: it is what the client sent).
    pub body: Option<Value>,
}

impl RecordedRequest {
    /// Whether the request could change anything (anything but GET).
    pub fn is_write(&self) -> bool {
        self.method != "GET" && self.method != "HEAD"
    }
}

impl fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut body = self.body.clone();
        if let Some(Value::Object(o)) = body.as_mut()
            && let Some(Value::Object(origin)) = o.get_mut("origin")
        {
            for k in SECRET_FIELDS {
                if let Some(v) = origin.get_mut(k) {
                    *v = Value::String("<redacted>".into());
                }
            }
        }
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("body", &body)
            .finish()
    }
}

#[derive(Debug)]
struct Stored {
    id: String,
    name: String,
    /// Includes secrets; stripped on output.
    origin: Map<String, Value>,
    caching: Value,
    extra: Map<String, Value>,
    created_on: String,
    modified_on: String,
}

impl Stored {
    fn public(&self) -> Value {
        let mut origin = self.origin.clone();
        for k in SECRET_FIELDS {
            origin.remove(k);
        }
        let mut v = json!({
            "id": self.id, "name": self.name, "origin": origin, "caching": self.caching,
            "created_on": self.created_on, "modified_on": self.modified_on,
        });
        if let Value::Object(o) = &mut v {
            o.extend(self.extra.clone());
        }
        v
    }
}

#[derive(Debug, Default)]
struct Inner {
    configs: Vec<Stored>,
    next_id: u64,
    log: Vec<RecordedRequest>,
    rate_limits: VecDeque<u64>,
    server_errors: u32,
    sparse: bool,
    failures: HashMap<String, (i64, u32)>,
    test_connects: Vec<(String, Result<(), i64>)>,
}

#[derive(Debug)]
struct Shared {
    account_id: String,
    api_token: String,
    limit: usize,
    routes: HashMap<String, SocketAddr>,
    tls: Option<Arc<rustls::ClientConfig>>,
    test_connections: bool,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not wedge the fake for the others.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Builds a [`FakeHyperdrive`].
#[derive(Debug)]
#[must_use]
pub struct FakeBuilder {
    account_id: String,
    api_token: String,
    limit: usize,
    routes: HashMap<String, SocketAddr>,
    ca: Option<PathBuf>,
    test_connections: bool,
}

impl FakeBuilder {
    /// The account id the fake serves (default `0123456789abcdef0123456789abcdef`).
    pub fn account_id(mut self, id: impl Into<String>) -> Self {
        self.account_id = id.into();
        self
    }

    /// The API token it accepts (default `fake-api-token`).
    pub fn api_token(mut self, token: impl Into<String>) -> Self {
        self.api_token = token.into();
        self
    }

    /// The account's configuration limit (default 25, the paid plan's).
    pub fn config_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Test connections to origin `host` go to `addr` (TLS SNI and verification still use `host`).
    pub fn route_origin(mut self, host: impl Into<String>, addr: SocketAddr) -> Self {
        self.routes.insert(host.into().to_ascii_lowercase(), addr);
        self
    }

    /// The CA (PEM) origin certificates are verified against (default: public web roots).
    pub fn origin_ca(mut self, path: impl AsRef<Path>) -> Self {
        self.ca = Some(path.as_ref().to_owned());
        self
    }

    /// Whether writes test-connect to the origin (default true). Off, any password is accepted.
    pub fn test_connections(mut self, on: bool) -> Self {
        self.test_connections = on;
        self
    }

    /// Starts the fake on 127.0.0.1 and a free port.
    pub async fn start(self) -> Result<FakeHyperdrive, FakeError> {
        let tls = if self.test_connections {
            Some(Arc::new(tls_config(self.ca.as_deref())?))
        } else {
            None
        };
        let shared = Arc::new(Shared {
            account_id: self.account_id,
            api_token: self.api_token,
            limit: self.limit,
            routes: self.routes,
            tls,
            test_connections: self.test_connections,
            inner: Mutex::new(Inner {
                next_id: 1,
                ..Inner::default()
            }),
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = shared.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move { handle(&state, method, uri, headers, body).await }
            },
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(FakeHyperdrive {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

fn tls_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, FakeError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let err = |message: String| FakeError::Ca {
                path: path.to_owned(),
                message,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| err(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(e.to_string()))?;
            if certs.is_empty() {
                return Err(err("no certificate in the file".into()));
            }
            for c in certs {
                roots.add(c).map_err(|e| err(e.to_string()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FakeError::Ca {
            path: PathBuf::new(),
            message: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// A running fake Hyperdrive API. Stops when dropped or on [`FakeHyperdrive::shutdown`].
#[derive(Debug)]
pub struct FakeHyperdrive {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeHyperdrive {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl FakeHyperdrive {
    /// A builder with the defaults.
    pub fn builder() -> FakeBuilder {
        FakeBuilder {
            account_id: "0123456789abcdef0123456789abcdef".into(),
            api_token: "fake-api-token".into(),
            limit: 25,
            routes: HashMap::new(),
            ca: None,
            test_connections: true,
        }
    }

    /// The API base to give a client (`http://127.0.0.1:<port>/client/v4`).
    pub fn api_base(&self) -> String {
        format!("http://{}/client/v4", self.addr)
    }

    /// The account id served.
    pub fn account_id(&self) -> &str {
        &self.shared.account_id
    }

    /// The API token accepted.
    pub fn api_token(&self) -> &str {
        &self.shared.api_token
    }

    /// Stores a configuration directly (no test connection), as if created earlier. `origin` may
    /// hold a password. Returns its id.
    pub fn insert_config(&self, name: &str, origin: Value) -> String {
        let origin = match origin {
            Value::Object(o) => o,
            _ => Map::new(),
        };
        let mut inner = self.shared.lock();
        insert(&mut inner, name, origin, default_caching(), Map::new())
    }

    /// Every stored configuration, as the API would show it (without secrets).
    pub fn configs(&self) -> Vec<HyperdriveConfig> {
        let inner = self.shared.lock();
        inner
            .configs
            .iter()
            .filter_map(|c| serde_json::from_value(c.public()).ok())
            .collect()
    }

    /// The password stored in configuration `id`: what Hyperdrive would connect with.
    pub fn stored_password(&self, id: &str) -> Option<String> {
        let inner = self.shared.lock();
        let c = inner.configs.iter().find(|c| c.id == id)?;
        c.origin
            .get("password")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().log.clone()
    }

    /// The requests that could change something (not GET).
    pub fn writes(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_write)
            .collect()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared.lock().log.clear();
    }

    /// The test connections made so far: (origin host, Ok or the error code).
    pub fn test_connects(&self) -> Vec<(String, Result<(), i64>)> {
        self.shared.lock().test_connects.clone()
    }

    /// The next `times` requests are answered 429 with `retry-after: <retry_after_secs>`.
    pub fn inject_rate_limit(&self, times: u32, retry_after_secs: u64) {
        let mut inner = self.shared.lock();
        inner
            .rate_limits
            .extend(std::iter::repeat_n(retry_after_secs, times as usize));
    }

    /// How many injected 429 answers are still to be served: 0 once the last one went out.
    pub fn pending_rate_limits(&self) -> usize {
        self.shared.lock().rate_limits.len()
    }

    /// The next `times` requests are answered 503 with an HTML body (no envelope).
    pub fn inject_server_errors(&self, times: u32) {
        self.shared.lock().server_errors += times;
    }

    /// The next `times` creates/updates of configuration `name` fail with Hyperdrive `code`
    /// (e.g. 2011 connection refused, 2013 invalid credentials); `u32::MAX` for always.
    pub fn fail_config(&self, name: &str, code: i64, times: u32) {
        self.shared
            .lock()
            .failures
            .insert(name.to_owned(), (code, times));
    }

    /// Sparse envelopes: successes omit `messages` and `result_info` (lists come whole), failures
    /// omit `messages` and `result`, like some of Cloudflare's answers.
    pub fn sparse_envelopes(&self, on: bool) {
        self.shared.lock().sparse = on;
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

fn default_caching() -> Value {
    json!({"disabled": false, "max_age": 60, "stale_while_revalidate": 15})
}

fn now_rfc3339() -> String {
    crate::state::format_time(std::time::SystemTime::now())
}

fn insert(
    inner: &mut Inner,
    name: &str,
    origin: Map<String, Value>,
    caching: Value,
    extra: Map<String, Value>,
) -> String {
    let id = format!("{:032x}", 0xfa_e000_0000_u64 + inner.next_id);
    inner.next_id += 1;
    let now = now_rfc3339();
    inner.configs.push(Stored {
        id: id.clone(),
        name: name.to_owned(),
        origin,
        caching,
        extra,
        created_on: now.clone(),
        modified_on: now,
    });
    id
}

/// An API answer, before the sparse-envelope rule is applied.
struct Answer {
    status: StatusCode,
    result: Value,
    result_info: Option<Value>,
    errors: Vec<(i64, String)>,
    retry_after: Option<u64>,
}

fn ok(result: Value) -> Answer {
    Answer {
        status: StatusCode::OK,
        result,
        result_info: None,
        errors: Vec::new(),
        retry_after: None,
    }
}

fn fail(status: StatusCode, code: i64, message: impl Into<String>) -> Answer {
    Answer {
        status,
        result: Value::Null,
        result_info: None,
        errors: vec![(code, message.into())],
        retry_after: None,
    }
}

async fn handle(
    shared: &Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body_json: Option<Value> = if body.is_empty() {
        None
    } else {
        serde_json::from_slice(&body).ok()
    };
    let (sparse, limited, server_error) = {
        let mut inner = shared.lock();
        inner.log.push(RecordedRequest {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            body: body_json.clone(),
        });
        let limited = inner.rate_limits.pop_front();
        let server_error = limited.is_none() && inner.server_errors > 0;
        if server_error {
            inner.server_errors -= 1;
        }
        (inner.sparse, limited, server_error)
    };
    let answer = if let Some(secs) = limited {
        Answer {
            retry_after: Some(secs),
            ..fail(
                StatusCode::TOO_MANY_REQUESTS,
                971,
                "Please wait and consider throttling your request speed",
            )
        }
    } else if server_error {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "<html><body>503 Service Temporarily Unavailable</body></html>",
        )
            .into_response();
    } else {
        let expected = format!("Bearer {}", shared.api_token);
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            fail(StatusCode::UNAUTHORIZED, 10000, "Authentication error")
        } else if !body.is_empty() && body_json.is_none() {
            fail(
                StatusCode::BAD_REQUEST,
                1001,
                "Invalid request: the body is not JSON",
            )
        } else {
            route(shared, &method, &uri, body_json).await
        }
    };
    render(answer, sparse)
}

fn render(a: Answer, sparse: bool) -> Response {
    let success = a.errors.is_empty();
    let errors: Vec<Value> = a
        .errors
        .iter()
        .map(|(c, m)| json!({"code": c, "message": m}))
        .collect();
    let mut env = Map::new();
    env.insert("success".into(), Value::Bool(success));
    env.insert("errors".into(), Value::Array(errors));
    if !sparse {
        env.insert("messages".into(), json!([]));
    }
    if success || !sparse {
        env.insert("result".into(), a.result);
    }
    if let (Some(info), false) = (a.result_info, sparse) {
        env.insert("result_info".into(), info);
    }
    let mut response = (a.status, axum::Json(Value::Object(env))).into_response();
    if let Some(secs) = a.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert("retry-after", v);
    }
    response
}

async fn route(shared: &Shared, method: &Method, uri: &Uri, body: Option<Value>) -> Answer {
    let path = uri.path().trim_end_matches('/');
    let Some(rest) = path.strip_prefix("/client/v4/accounts/") else {
        return fail(StatusCode::NOT_FOUND, 7000, "No route for that URI");
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let (account, id) = match parts.as_slice() {
        [account, "hyperdrive", "configs"] => (*account, None),
        [account, "hyperdrive", "configs", id] => (*account, Some(*id)),
        _ => return fail(StatusCode::NOT_FOUND, 7000, "No route for that URI"),
    };
    if account != shared.account_id {
        return fail(
            StatusCode::NOT_FOUND,
            7003,
            "Could not route to /accounts/…, perhaps your object identifier is invalid?",
        );
    }
    let body = match body {
        Some(Value::Object(o)) => Some(o),
        Some(_) => {
            return fail(
                StatusCode::BAD_REQUEST,
                1001,
                "Invalid request: the body must be an object",
            );
        }
        None => None,
    };
    match (method.as_str(), id) {
        ("GET", None) => list(shared, uri.query().unwrap_or("")),
        ("POST", None) => create(shared, body.unwrap_or_default()).await,
        ("GET", Some(id)) => {
            let inner = shared.lock();
            match inner.configs.iter().find(|c| c.id == id) {
                Some(c) => ok(c.public()),
                None => not_found(),
            }
        }
        ("PATCH", Some(id)) => patch(shared, id, body.unwrap_or_default()).await,
        ("PUT", Some(id)) => put(shared, id, body.unwrap_or_default()).await,
        ("DELETE", Some(id)) => {
            let mut inner = shared.lock();
            match inner.configs.iter().position(|c| c.id == id) {
                Some(i) => {
                    inner.configs.remove(i);
                    ok(Value::Null)
                }
                None => not_found(),
            }
        }
        _ => fail(
            StatusCode::METHOD_NOT_ALLOWED,
            7001,
            "Method not allowed for this route",
        ),
    }
}

fn not_found() -> Answer {
    fail(StatusCode::NOT_FOUND, 2007, "Hyperdrive config not found")
}

fn list(shared: &Shared, query: &str) -> Answer {
    let mut page: usize = 1;
    let mut per_page: usize = 20;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let parsed = v.parse::<usize>();
        match (k, parsed) {
            ("page", Ok(n)) if n >= 1 => page = n,
            ("per_page", Ok(n)) => per_page = n.clamp(1, 50),
            ("page" | "per_page", _) => {
                return fail(
                    StatusCode::BAD_REQUEST,
                    1001,
                    format!("Invalid value for {k}: {v:?}"),
                );
            }
            _ => {}
        }
    }
    let inner = shared.lock();
    if inner.sparse {
        // Older behaviour: everything at once, no result_info.
        return ok(Value::Array(
            inner.configs.iter().map(Stored::public).collect(),
        ));
    }
    let total = inner.configs.len();
    let items: Vec<Value> = inner
        .configs
        .iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .map(Stored::public)
        .collect();
    let count = items.len();
    Answer {
        result_info: Some(json!({
            "page": page, "per_page": per_page, "count": count, "total_count": total,
            "total_pages": total.div_ceil(per_page),
        })),
        ..ok(Value::Array(items))
    }
}

/// Checks that `origin` holds a complete network part (one of the three shapes); returns the
/// first missing field.
fn missing_network_field(origin: &Map<String, Value>) -> Option<&'static str> {
    let has = |k: &str| origin.get(k).is_some_and(|v| !v.is_null());
    let needed: &[&'static str] = if has("service_id") {
        &["service_id", "database", "user"]
    } else if has("access_client_id") || has("access_client_secret") {
        &[
            "host",
            "access_client_id",
            "access_client_secret",
            "database",
            "user",
        ]
    } else {
        &["host", "port", "database", "user"]
    };
    needed.iter().copied().find(|k| !has(k))
}

fn check_origin_fields(origin: &Map<String, Value>) -> Result<(), Answer> {
    for (k, v) in origin {
        if !NETWORK_FIELDS.contains(&k.as_str()) && k != "password" {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                1001,
                format!("origin: unknown field {k:?}"),
            ));
        }
        let good = match k.as_str() {
            "port" => v.as_u64().is_some_and(|p| (1..=65535).contains(&p)),
            "scheme" => matches!(v.as_str(), Some("postgres" | "postgresql" | "mysql")),
            _ => v.as_str().is_some_and(|s| !s.is_empty()),
        };
        if !good {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                1001,
                format!("origin.{k}: invalid value"),
            ));
        }
    }
    Ok(())
}

fn full_origin(body: &Map<String, Value>) -> Result<Map<String, Value>, Answer> {
    let Some(Value::Object(origin)) = body.get("origin") else {
        return Err(fail(StatusCode::BAD_REQUEST, 1001, "origin: required"));
    };
    check_origin_fields(origin)?;
    if let Some(k) = missing_network_field(origin) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            1001,
            format!("origin.{k}: required"),
        ));
    }
    if !origin.contains_key("password") {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            1001,
            "origin.password: required",
        ));
    }
    let mut origin = origin.clone();
    origin.entry("scheme").or_insert_with(|| json!("postgres"));
    Ok(origin)
}

fn name_of(body: &Map<String, Value>) -> Result<String, Answer> {
    match body.get("name").and_then(Value::as_str) {
        Some(n) if !n.trim().is_empty() => Ok(n.to_owned()),
        _ => Err(fail(StatusCode::BAD_REQUEST, 1001, "name: required")),
    }
}

/// The other top-level keys a configuration may carry.
fn extras(body: &Map<String, Value>) -> Result<Map<String, Value>, Answer> {
    let mut extra = Map::new();
    for (k, v) in body {
        match k.as_str() {
            "name" | "origin" | "caching" => {}
            "mtls" | "origin_connection_limit" => {
                extra.insert(k.clone(), v.clone());
            }
            _ => {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    1001,
                    format!("unknown field {k:?}"),
                ));
            }
        }
    }
    Ok(extra)
}

async fn create(shared: &Shared, body: Map<String, Value>) -> Answer {
    let checked = (|| Ok::<_, Answer>((name_of(&body)?, full_origin(&body)?, extras(&body)?)))();
    let (name, origin, extra) = match checked {
        Ok(v) => v,
        Err(a) => return a,
    };
    if shared.lock().configs.len() >= shared.limit {
        return fail(
            StatusCode::BAD_REQUEST,
            2017,
            format!(
                "The account has reached its limit of {} Hyperdrive configurations",
                shared.limit
            ),
        );
    }
    if let Err(a) = accept_origin(shared, &name, &origin).await {
        return a;
    }
    let caching = body.get("caching").cloned().unwrap_or_else(default_caching);
    let mut inner = shared.lock();
    if inner.configs.len() >= shared.limit {
        return fail(
            StatusCode::BAD_REQUEST,
            2017,
            "The account has reached its configuration limit",
        );
    }
    let id = insert(&mut inner, &name, origin, caching, extra);
    inner
        .configs
        .iter()
        .find(|c| c.id == id)
        .map_or_else(not_found, |c| ok(c.public()))
}

async fn patch(shared: &Shared, id: &str, body: Map<String, Value>) -> Answer {
    if let Err(a) = extras(&body) {
        return a;
    }
    let (name, mut origin) = {
        let inner = shared.lock();
        match inner.configs.iter().find(|c| c.id == id) {
            Some(c) => (c.name.clone(), c.origin.clone()),
            None => return not_found(),
        }
    };
    let mut origin_changed = false;
    if let Some(sent) = body.get("origin") {
        let Value::Object(sent) = sent else {
            return fail(StatusCode::BAD_REQUEST, 1001, "origin: must be an object");
        };
        if let Err(a) = check_origin_fields(sent) {
            return a;
        }
        if sent.keys().any(|k| NETWORK_FIELDS.contains(&k.as_str())) {
            if let Some(k) = missing_network_field(sent) {
                return fail(
                    StatusCode::BAD_REQUEST,
                    1001,
                    format!(
                        "origin: the network fields must be sent together (or not at all); origin.{k} is missing"
                    ),
                );
            }
            let password = origin.get("password").cloned();
            origin = sent.clone();
            if let (false, Some(p)) = (origin.contains_key("password"), password) {
                origin.insert("password".into(), p);
            }
            origin.entry("scheme").or_insert_with(|| json!("postgres"));
        } else if let Some(p) = sent.get("password") {
            origin.insert("password".into(), p.clone());
        }
        origin_changed = !sent.is_empty();
    }
    let new_name = match body.get("name") {
        Some(_) => match name_of(&body) {
            Ok(n) => n,
            Err(a) => return a,
        },
        None => name.clone(),
    };
    if origin_changed && let Err(a) = accept_origin(shared, &new_name, &origin).await {
        return a;
    }
    let mut inner = shared.lock();
    let Some(c) = inner.configs.iter_mut().find(|c| c.id == id) else {
        return not_found();
    };
    c.name = new_name;
    c.origin = origin;
    if let (Some(Value::Object(new)), Value::Object(old)) = (body.get("caching"), &mut c.caching) {
        old.extend(new.clone());
    }
    if let Ok(extra) = extras(&body) {
        c.extra.extend(extra);
    }
    c.modified_on = now_rfc3339();
    ok(c.public())
}

async fn put(shared: &Shared, id: &str, body: Map<String, Value>) -> Answer {
    let checked = (|| Ok::<_, Answer>((name_of(&body)?, full_origin(&body)?, extras(&body)?)))();
    let (name, origin, extra) = match checked {
        Ok(v) => v,
        Err(a) => return a,
    };
    if !shared.lock().configs.iter().any(|c| c.id == id) {
        return not_found();
    }
    if let Err(a) = accept_origin(shared, &name, &origin).await {
        return a;
    }
    let mut inner = shared.lock();
    let Some(c) = inner.configs.iter_mut().find(|c| c.id == id) else {
        return not_found();
    };
    c.name = name;
    c.origin = origin;
    // PUT replaces: caching settings left out go back to their defaults.
    let mut caching = default_caching();
    if let (Some(Value::Object(new)), Value::Object(base)) = (body.get("caching"), &mut caching) {
        base.extend(new.clone());
    }
    c.caching = caching;
    c.extra = extra;
    c.modified_on = now_rfc3339();
    ok(c.public())
}

/// Injected failures first, then the test connection.
async fn accept_origin(
    shared: &Shared,
    name: &str,
    origin: &Map<String, Value>,
) -> Result<(), Answer> {
    let injected = {
        let mut inner = shared.lock();
        match inner.failures.get_mut(name) {
            Some((code, times)) if *times > 0 => {
                if *times != u32::MAX {
                    *times -= 1;
                }
                Some(*code)
            }
            _ => None,
        }
    };
    if let Some(code) = injected {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            code,
            format!("{} (injected)", code_message(code)),
        ));
    }
    if !shared.test_connections {
        return Ok(());
    }
    let host = origin
        .get("host")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let result = test_connect(shared, origin).await;
    shared
        .lock()
        .test_connects
        .push((host, result.as_ref().map(|_| ()).map_err(|(c, _)| *c)));
    result.map_err(|(code, detail)| {
        fail(
            StatusCode::BAD_REQUEST,
            code,
            format!("{}: {detail}", code_message(code)),
        )
    })
}

fn code_message(code: i64) -> &'static str {
    match code {
        2008 => "Failed to resolve the origin hostname",
        2009 => "The origin hostname is not a public IP address",
        2010 => "Could not connect to the origin",
        2011 => "Connection to the origin was refused",
        2012 => "TLS was required but the origin does not support it",
        2013 => "Invalid database credentials",
        2014 => "The specified database does not exist",
        2015 => "Generic error connecting to the origin",
        2016 => "The test query failed",
        _ => "The origin was refused",
    }
}

/// Connects like Hyperdrive: TLS verify-full with SNI = origin host, the new password, `SELECT 1`.
async fn test_connect(shared: &Shared, origin: &Map<String, Value>) -> Result<(), (i64, String)> {
    let text = |k: &str| {
        origin
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    if origin.contains_key("service_id") || origin.contains_key("access_client_id") {
        // VPC and Access origins are reached through tunnels the fake does not have.
        return Ok(());
    }
    if text("scheme") == "mysql" {
        return Err((
            2015,
            "the fake test-connects PostgreSQL origins only".into(),
        ));
    }
    let host = text("host");
    let port = origin
        .get("port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(5432);
    let addr = match shared.routes.get(&host.to_ascii_lowercase()) {
        Some(a) => *a,
        None => match tokio::net::lookup_host((host.as_str(), port))
            .await
            .map(|mut a| a.next())
        {
            Ok(Some(a)) => a,
            _ => return Err((2008, format!("{host:?} does not resolve"))),
        },
    };
    let Some(tls) = shared.tls.clone() else {
        return Ok(());
    };
    let mut config = tokio_postgres::Config::new();
    config
        .host(&host)
        .hostaddr(addr.ip())
        .port(addr.port())
        .user(text("user"))
        .dbname(text("database"))
        .password(text("password"))
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .application_name("hyperdrive-fake-test-connection")
        .connect_timeout(Duration::from_secs(10));
    let connector = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
    let attempt = async {
        let (client, connection) = config.connect(connector).await.map_err(|e| classify(&e))?;
        let conn = tokio::spawn(connection);
        let query = client.simple_query("SELECT 1").await;
        drop(client);
        let _ = conn.await;
        query.map(|_| ()).map_err(|e| (2016, first_line(&e)))
    };
    match tokio::time::timeout(Duration::from_secs(30), attempt).await {
        Ok(r) => r,
        Err(_) => Err((2010, "the test connection timed out after 30 s".into())),
    }
}

fn first_line(e: &tokio_postgres::Error) -> String {
    // Server messages never carry the password; keep one line.
    let mut s = e.to_string();
    if let Some(db) = e.as_db_error() {
        s = format!("{} ({})", db.message(), db.code().code());
    }
    s.lines().next().unwrap_or("").to_owned()
}

fn classify(e: &tokio_postgres::Error) -> (i64, String) {
    if let Some(db) = e.as_db_error() {
        let code = match db.code().code() {
            "28P01" | "28000" => 2013,
            "3D000" => 2014,
            _ => 2015,
        };
        return (code, first_line(e));
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return (2011, io.to_string());
            }
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return (2012, io.to_string());
            }
        }
        if s.downcast_ref::<rustls::Error>().is_some() {
            return (2012, s.to_string());
        }
        source = s.source();
    }
    let text = e.to_string();
    if text.contains("TLS") || text.contains("tls") {
        return (2012, text);
    }
    (2010, text)
}
