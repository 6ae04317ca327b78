//! The typed client for Cloudflare's Hyperdrive configs API: lenient envelope parsing, paginated
//! listing, and retries with backoff and jitter where a retry can help.

use std::sync::Arc;
use std::time::Duration;

use dsql_auth_core::{Clock, RetryPolicy, RetryState};
use serde::de::DeserializeOwned;

use crate::error::{ApiMessage, Error, ErrorKind, Result};
use crate::io::{HttpRequest, Io, Method};
use crate::model::{ConfigEdit, HyperdriveConfig, NewConfig};
use crate::secret::Secret;

/// Cloudflare's API base.
pub const DEFAULT_API_BASE: &str = "https://api.cloudflare.com/client/v4";

/// The retry schedule used unless [`ClientBuilder::retry_policy`] sets another: 5 attempts,
/// 0.5 s doubling to at most 30 s, with full jitter, within 3 minutes.
pub fn default_retry_policy() -> RetryPolicy {
    let mut policy = RetryPolicy::connect();
    policy.max_attempts = 5;
    policy.initial_backoff = Duration::from_millis(500);
    policy.max_backoff = Duration::from_secs(30);
    policy.multiplier = 2.0;
    policy.max_elapsed = Some(Duration::from_secs(180));
    policy
}

/// A client for one account's Hyperdrive configurations.
///
/// `Debug` shows the API base and account, never the API token.
#[derive(Clone)]
pub struct HyperdriveClient {
    io: Arc<dyn Io>,
    base: String,
    account_id: String,
    token: Secret,
    retry: RetryPolicy,
    per_page: u32,
    max_pages: u32,
}

impl std::fmt::Debug for HyperdriveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperdriveClient")
            .field("base", &self.base)
            .field("account_id", &self.account_id)
            .field("token", &self.token)
            .field("retry", &self.retry)
            .field("io", &self.io)
            .finish_non_exhaustive()
    }
}

/// Builds a [`HyperdriveClient`].
#[derive(Debug)]
#[must_use]
pub struct ClientBuilder {
    account_id: String,
    token: Secret,
    base: String,
    retry: RetryPolicy,
    per_page: u32,
    max_pages: u32,
    timeout: Duration,
    io: Option<Arc<dyn Io>>,
}

impl ClientBuilder {
    /// The API base URL (default [`DEFAULT_API_BASE`]); `http` is accepted for local fakes.
    pub fn api_base(mut self, base: impl Into<String>) -> Self {
        self.base = base.into();
        self
    }

    /// The retry schedule for 429, 5xx and Hyperdrive codes 2010, 2011 and 2015.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Page size for listing (default 20; the server may send fewer).
    pub fn per_page(mut self, per_page: u32) -> Self {
        self.per_page = per_page;
        self
    }

    /// The most pages a listing reads before giving up (default 100).
    pub fn max_pages(mut self, max_pages: u32) -> Self {
        self.max_pages = max_pages;
        self
    }

    /// Timeout of each HTTP request (default 60 s; Hyperdrive test-connects during writes).
    /// Applies to the built-in [`NativeIo`](crate::io::NativeIo), not to an [`io`](Self::io)
    /// given here.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The host's HTTP, timer, clock and randomness (a Cloudflare Worker passes its own).
    /// Default: [`NativeIo`](crate::io::NativeIo) with feature `native`.
    pub fn io(mut self, io: Arc<dyn Io>) -> Self {
        self.io = Some(io);
        self
    }

    /// Checks the settings and builds the client.
    pub fn build(self) -> Result<HyperdriveClient> {
        check_id("account id", &self.account_id)?;
        if self.token.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "the Cloudflare API token is empty: set CLOUDFLARE_API_TOKEN or api_token_file",
            ));
        }
        let base = self.base.trim_end_matches('/').to_owned();
        match url::Url::parse(&base) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "the API base {base:?} is not an http(s) URL; use e.g. {DEFAULT_API_BASE}"
                    ),
                ));
            }
        }
        if !(1..=1000).contains(&self.per_page) || self.max_pages == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "per_page must be 1..=1000 and max_pages at least 1",
            ));
        }
        let io = match self.io {
            Some(io) => io,
            None => default_io(self.timeout)?,
        };
        Ok(HyperdriveClient {
            io,
            base,
            account_id: self.account_id,
            token: self.token,
            retry: self.retry,
            per_page: self.per_page,
            max_pages: self.max_pages,
        })
    }
}

#[cfg(feature = "native")]
fn default_io(timeout: Duration) -> Result<Arc<dyn Io>> {
    let io = crate::io::NativeIo::new(timeout).map_err(|e| {
        Error::new(
            ErrorKind::Transport,
            format!("cannot build the HTTP client: {e}"),
        )
    })?;
    Ok(Arc::new(io))
}

#[cfg(not(feature = "native"))]
fn default_io(_timeout: Duration) -> Result<Arc<dyn Io>> {
    Err(Error::new(
        ErrorKind::InvalidArgument,
        "no HTTP transport: pass one with ClientBuilder::io (or enable the `native` feature)",
    ))
}

/// The host's clock as the core's [`Clock`], for the retry budget.
#[derive(Debug)]
struct IoClock<'a>(&'a dyn Io);

impl Clock for IoClock<'_> {
    fn now(&self) -> std::time::SystemTime {
        self.0.now()
    }
}

/// Ids go into URL paths: accept only the characters Cloudflare ids use.
fn check_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("the {what} {id:?} is not a Cloudflare id (letters, digits, '-' and '_' only)"),
        ));
    }
    Ok(())
}

#[derive(Debug, serde::Deserialize)]
struct Envelope {
    #[serde(default)]
    success: Option<bool>,
    #[serde(default)]
    errors: Option<Vec<ApiMessage>>,
    #[serde(default)]
    result: Option<serde_json::Value>,
    #[serde(default)]
    result_info: Option<ResultInfo>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct ResultInfo {
    #[serde(default)]
    page: Option<u64>,
    #[serde(default)]
    per_page: Option<u64>,
    #[serde(default)]
    total_count: Option<u64>,
}

impl HyperdriveClient {
    /// A client for `account_id` at Cloudflare's API with default settings.
    pub fn new(account_id: impl Into<String>, api_token: impl Into<Secret>) -> Result<Self> {
        Self::builder(account_id, api_token).build()
    }

    /// A builder for `account_id`, authenticating with `api_token` (needs "Hyperdrive Write").
    pub fn builder(account_id: impl Into<String>, api_token: impl Into<Secret>) -> ClientBuilder {
        ClientBuilder {
            account_id: account_id.into(),
            token: api_token.into(),
            base: DEFAULT_API_BASE.to_owned(),
            retry: default_retry_policy(),
            per_page: 20,
            max_pages: 100,
            timeout: Duration::from_secs(60),
            io: None,
        }
    }

    /// The account this client works on.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The API base URL in use.
    pub fn api_base(&self) -> &str {
        &self.base
    }

    /// The host's I/O (HTTP, timer, clock, randomness) this client uses; the rotator signs at
    /// its clock.
    pub fn io(&self) -> &Arc<dyn Io> {
        &self.io
    }

    fn configs_url(&self) -> String {
        format!(
            "{}/accounts/{}/hyperdrive/configs",
            self.base, self.account_id
        )
    }

    /// Every configuration of the account, following pagination.
    pub async fn list_configs(&self) -> Result<Vec<HyperdriveConfig>> {
        let mut all = Vec::new();
        for page in 1..=self.max_pages {
            let url = format!(
                "{}?page={page}&per_page={}",
                self.configs_url(),
                self.per_page
            );
            let env = self
                .send(Method::Get, &url, None, "list Hyperdrive configurations")
                .await?;
            let items: Vec<HyperdriveConfig> = match env.result {
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(v) => parse_result(v, "list Hyperdrive configurations")?,
            };
            let got = items.len() as u64;
            all.extend(items);
            // Older servers send everything at once, without result_info.
            let Some(info) = env.result_info else {
                return Ok(all);
            };
            if got == 0 {
                return Ok(all);
            }
            let per_page = info.per_page.unwrap_or(u64::from(self.per_page)).max(1);
            let page_no = info.page.unwrap_or(u64::from(page));
            match info.total_count {
                Some(total) if page_no * per_page >= total => return Ok(all),
                // Without a total, a short page is the last one.
                None if got < per_page => return Ok(all),
                _ => {}
            }
        }
        Err(Error::new(
            ErrorKind::InvalidResponse,
            format!(
                "listing Hyperdrive configurations did not end within {} pages of {}; raise max_pages",
                self.max_pages, self.per_page
            ),
        ))
    }

    /// The configuration named `name`, if one exists. Two or more with that name is an error
    /// ([`ErrorKind::DuplicateName`]): which one to rotate would be a guess.
    pub async fn find_by_name(&self, name: &str) -> Result<Option<HyperdriveConfig>> {
        let mut matches: Vec<HyperdriveConfig> = self
            .list_configs()
            .await?
            .into_iter()
            .filter(|c| c.name == name)
            .collect();
        match matches.len() {
            0 => Ok(None),
            1 => Ok(matches.pop()),
            _ => {
                let ids: Vec<&str> = matches.iter().map(|c| c.id.as_str()).collect();
                Err(Error::new(
                    ErrorKind::DuplicateName,
                    format!(
                        "{} Hyperdrive configurations are named {name:?} (ids {}); rename or delete all but one",
                        ids.len(),
                        ids.join(", ")
                    ),
                ))
            }
        }
    }

    /// One configuration by id.
    pub async fn get_config(&self, id: &str) -> Result<HyperdriveConfig> {
        check_id("configuration id", id)?;
        let url = format!("{}/{id}", self.configs_url());
        let what = format!("get Hyperdrive configuration {id}");
        let env = self.send(Method::Get, &url, None, &what).await?;
        required_result(env, &what)
    }

    /// Creates a configuration (Hyperdrive test-connects to the origin first).
    pub async fn create_config(&self, config: &NewConfig) -> Result<HyperdriveConfig> {
        let body = to_body(config)?;
        let what = format!("create Hyperdrive configuration {:?}", config.name);
        let env = self
            .send(Method::Post, &self.configs_url(), Some(body), &what)
            .await?;
        required_result(env, &what)
    }

    /// Edits a configuration with PATCH: only the fields set in `edit` change.
    pub async fn edit_config(&self, id: &str, edit: &ConfigEdit) -> Result<HyperdriveConfig> {
        check_id("configuration id", id)?;
        let body = to_body(edit)?;
        let url = format!("{}/{id}", self.configs_url());
        let what = format!("update Hyperdrive configuration {id}");
        let env = self.send(Method::Patch, &url, Some(body), &what).await?;
        required_result(env, &what)
    }

    /// Replaces the origin password and nothing else: PATCH `{"origin":{"password":...}}`.
    pub async fn rotate_password(&self, id: &str, password: Secret) -> Result<HyperdriveConfig> {
        self.edit_config(id, &ConfigEdit::password(password)).await
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<Secret>,
        what: &str,
    ) -> Result<Envelope> {
        // The core's retry bookkeeping, timed on the host's clock (`Instant::now()` panics on
        // wasm32); the loop stays here because a 429's retry-after may lengthen a delay.
        let clock = IoClock(self.io.as_ref());
        let mut retry = RetryState::start(&self.retry, &clock);
        loop {
            let attempt = retry.next_attempt();
            let error = match self.attempt(method, url, body.clone(), what).await {
                Ok(env) => return Ok(env),
                Err(e) => e,
            };
            let Ok(mut delay) = retry.failed(error.is_retryable(), self.io.random()) else {
                return Err(error);
            };
            if let Some(asked) = error.retry_after().filter(|a| *a > delay) {
                // Honour retry-after, unless waiting that long would overrun the time budget.
                if self
                    .retry
                    .max_elapsed
                    .is_some_and(|max| retry.elapsed() + asked > max)
                {
                    return Err(error);
                }
                delay = asked;
            }
            tracing::info!(%what, attempt, delay_ms = delay.as_millis() as u64, error = %error, "retrying");
            self.io.sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        method: Method,
        url: &str,
        body: Option<Secret>,
        what: &str,
    ) -> Result<Envelope> {
        tracing::debug!(%method, %url, "Hyperdrive API request");
        let request = HttpRequest {
            method,
            url: url.to_owned(),
            bearer: self.token.clone(),
            json_body: body,
        };
        let response = self.io.send(request).await.map_err(|e| {
            // The transport's message names the URL (base and account id), never the token.
            Error::new(
                ErrorKind::Transport,
                format!("{what}: the request failed: {e}"),
            )
            .with_source(e)
        })?;
        let status = response.status;
        let retry_after = response
            .retry_after
            .as_deref()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let envelope: Option<Envelope> = serde_json::from_str(&response.body).ok();
        let ok_status = (200..300).contains(&status);
        match envelope {
            Some(env) if ok_status && env.success != Some(false) => Ok(env),
            Some(env) => Err(Error::from_api(
                what,
                status,
                env.errors.unwrap_or_default(),
                retry_after,
            )),
            // A body that is not an envelope: the status alone decides (proxies answer 502 in HTML).
            None if !ok_status => Err(Error::from_api(what, status, Vec::new(), retry_after)),
            None => Err(Error::new(
                ErrorKind::InvalidResponse,
                format!(
                    "{what}: the answer (HTTP {status}) is not a Cloudflare API envelope; check the API base URL"
                ),
            )),
        }
    }
}

/// The JSON body; a [`Secret`] because it may carry a password.
fn to_body(value: &impl serde::Serialize) -> Result<Secret> {
    serde_json::to_string(value).map(Secret::new).map_err(|e| {
        Error::new(
            ErrorKind::InvalidArgument,
            format!("cannot encode the request body: {e}"),
        )
    })
}

fn parse_result<T: DeserializeOwned>(value: serde_json::Value, what: &str) -> Result<T> {
    serde_json::from_value(value).map_err(|e| {
        Error::new(
            ErrorKind::InvalidResponse,
            format!("{what}: unexpected result shape: {e}"),
        )
    })
}

fn required_result(env: Envelope, what: &str) -> Result<HyperdriveConfig> {
    match env.result {
        Some(v) if !v.is_null() => parse_result(v, what),
        _ => Err(Error::new(
            ErrorKind::InvalidResponse,
            format!("{what}: the answer reported success but held no configuration"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{BoxFuture, HttpResponse, TransportError};
    use std::sync::Mutex;
    use std::time::SystemTime;

    /// Answers from a script; time moves only when the client sleeps.
    #[derive(Debug)]
    struct ScriptedIo {
        answers: Mutex<Vec<HttpResponse>>,
        now: Mutex<SystemTime>,
        slept: Mutex<Vec<Duration>>,
    }

    impl Io for ScriptedIo {
        fn send(&self, _: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
            let next = self.answers.lock().unwrap().remove(0);
            Box::pin(async move { Ok(next) })
        }
        fn sleep(&self, d: Duration) -> BoxFuture<'_, ()> {
            self.slept.lock().unwrap().push(d);
            *self.now.lock().unwrap() += d;
            Box::pin(async {})
        }
        fn now(&self) -> SystemTime {
            *self.now.lock().unwrap()
        }
        fn random(&self) -> f64 {
            0.5
        }
    }

    fn scripted(answers: Vec<HttpResponse>) -> Arc<ScriptedIo> {
        Arc::new(ScriptedIo {
            answers: Mutex::new(answers),
            now: Mutex::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
            slept: Mutex::new(Vec::new()),
        })
    }

    const LIMITED: &str = r#"{"success":false,"errors":[{"code":971,"message":"slow down"}]}"#;
    const EMPTY_LIST: &str = r#"{"success":true,"errors":[],"result":[]}"#;

    #[test]
    fn a_429_waits_its_retry_after_on_the_injected_clock() {
        let io = scripted(vec![
            HttpResponse::new(429, Some("7".into()), LIMITED),
            HttpResponse::new(200, None, EMPTY_LIST),
        ]);
        let c = HyperdriveClient::builder("acc", "t")
            .io(io.clone())
            .build()
            .unwrap();
        let listed = futures_util::FutureExt::now_or_never(c.list_configs())
            .expect("no real waiting")
            .unwrap();
        assert!(listed.is_empty());
        assert_eq!(*io.slept.lock().unwrap(), vec![Duration::from_secs(7)]);
    }

    #[test]
    fn a_retry_after_beyond_the_time_budget_is_not_waited_for() {
        let io = scripted(vec![HttpResponse::new(429, Some("600".into()), LIMITED)]);
        let c = HyperdriveClient::builder("acc", "t")
            .io(io.clone())
            .build()
            .unwrap();
        let e = futures_util::FutureExt::now_or_never(c.list_configs())
            .expect("no real waiting")
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert!(io.slept.lock().unwrap().is_empty());
    }

    #[cfg(feature = "native")]
    #[test]
    fn debug_hides_the_token() {
        let c = HyperdriveClient::new("acc123", "very-secret-api-token").unwrap();
        assert!(!format!("{c:?}").contains("very-secret"));
    }

    #[cfg(feature = "native")]
    #[test]
    fn bad_arguments_are_refused() {
        let e = HyperdriveClient::new("acc/../x", "t").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let e = HyperdriveClient::builder("acc", "t")
            .api_base("ftp://x")
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let e = HyperdriveClient::new("acc", "").unwrap_err();
        assert!(e.to_string().contains("CLOUDFLARE_API_TOKEN"));
    }
}
