//! The I/O the client and the rotator need from their host, behind one small trait, so the same
//! rotation code runs natively (reqwest and tokio: [`NativeIo`], feature `native`) and in a
//! Cloudflare Worker (its `Fetch` and `Delay`: the `dsql-hyperdrive-worker` crate).
//!
//! Time and randomness come through the trait too: `SystemTime::now()` and `Instant::now()`
//! panic on `wasm32-unknown-unknown`, and tests can pin both.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::secret::Secret;

/// A boxed future: `Send` natively (callers may spawn a pass), local on wasm32, where the
/// Worker's `Fetch` futures hold JavaScript values.
/// (Spelled with `std` types only, so the public API shows no `futures` type.)
#[cfg(not(target_arch = "wasm32"))]
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
/// A boxed future: `Send` natively (callers may spawn a pass), local on wasm32, where the
/// Worker's `Fetch` futures hold JavaScript values.
#[cfg(target_arch = "wasm32")]
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>;

/// Why a request got no answer (network, DNS, TLS, timeout). Must not carry the bearer token.
pub type TransportError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The HTTP methods the Hyperdrive API client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PATCH`
    Patch,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request to the API. `Debug` shows method and URL, never the bearer token or the body
/// (a body may carry a password).
#[derive(Clone)]
#[non_exhaustive]
pub struct HttpRequest {
    /// The method.
    pub method: Method,
    /// The full URL, query included.
    pub url: String,
    /// Sent as `Authorization: Bearer ...`.
    pub bearer: Secret,
    /// A JSON body (sent with `Content-Type: application/json`).
    pub json_body: Option<Secret>,
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("has_body", &self.json_body.is_some())
            .finish_non_exhaustive()
    }
}

/// The answer to a request: what the client reads of it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpResponse {
    /// The HTTP status.
    pub status: u16,
    /// The `retry-after` header, as sent.
    pub retry_after: Option<String>,
    /// The body as text.
    pub body: String,
}

impl HttpResponse {
    /// An answer with `status`, an optional `retry-after` header and `body`.
    pub fn new(status: u16, retry_after: Option<String>, body: impl Into<String>) -> Self {
        Self {
            status,
            retry_after,
            body: body.into(),
        }
    }
}

/// What the host supplies: HTTP, sleeping, the time and random draws.
pub trait Io: fmt::Debug + Send + Sync {
    /// Sends `request` and reads the whole answer.
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>>;
    /// Waits `duration` (between retries).
    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()>;
    /// The current time: tokens are signed at it, retry budgets measured with it.
    fn now(&self) -> SystemTime;
    /// A uniform draw in `[0, 1)`, for jitter (not for secrets).
    fn random(&self) -> f64;
}

#[cfg(feature = "native")]
pub use native::NativeIo;

#[cfg(feature = "native")]
mod native {
    use super::*;

    /// [`Io`] on reqwest (rustls, webpki roots), tokio's timer, the system clock and `rand`.
    #[derive(Debug, Clone)]
    pub struct NativeIo {
        http: reqwest::Client,
    }

    impl NativeIo {
        /// A client whose requests time out after `timeout`.
        pub fn new(timeout: Duration) -> Result<Self, TransportError> {
            // reqwest is built without a default crypto provider: install aws-lc-rs, the one the
            // workspace uses, unless the process already chose one.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let http = reqwest::Client::builder()
                .timeout(timeout)
                .user_agent(concat!("dsql-hyperdrive/", env!("CARGO_PKG_VERSION")))
                .build()?;
            Ok(Self { http })
        }
    }

    impl Io for NativeIo {
        fn send(
            &self,
            request: HttpRequest,
        ) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
            Box::pin(async move {
                let method = match request.method {
                    Method::Get => reqwest::Method::GET,
                    Method::Post => reqwest::Method::POST,
                    Method::Patch => reqwest::Method::PATCH,
                };
                let mut builder = self
                    .http
                    .request(method, &request.url)
                    .bearer_auth(request.bearer.expose());
                if let Some(body) = request.json_body {
                    builder = builder
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.expose().to_owned());
                }
                // reqwest's errors name the URL, never the Authorization header.
                let response = builder.send().await?;
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = response.text().await?;
                Ok(HttpResponse::new(status, retry_after, body))
            })
        }

        fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
            Box::pin(tokio::time::sleep(duration))
        }

        fn now(&self) -> SystemTime {
            SystemTime::now()
        }

        fn random(&self) -> f64 {
            rand::random::<f64>()
        }
    }
}
