//! A runtime-agnostic token cache: [`TokenProvider`].
//!
//! - Credentials are resolved once and kept until shortly before their own expiry; they are not
//!   reloaded per connection.
//! - Tokens are cached per [`SigningParams`] (host, region, action, lifetime) and replaced after
//!   80% of their life, or earlier when the credentials that signed them run out.
//! - Concurrent callers that miss the cache share one credentials resolution and one signing.
//! - A token is never handed out when its remaining life, capped by the credentials' expiry, is
//!   below the margin.
//!
//! ## The margin
//!
//! A connection presents its token after TCP, TLS and the startup message; the server checks it
//! then. The margin is the least token life a connection is given for that, so it must cover a
//! slow connect on a loaded machine, not just a typical one. The default is
//! `min(30 s, lifetime / 4)`, but never below [`MIN_MARGIN`] (5 s):
//!
//! | lifetime | margin | handed out for | re-signed after |
//! |---|---|---|---|
//! | 900 s (default) | 30 s | 870 s | 720 s (80%) |
//! | 60 s | 15 s | 45 s | 45 s |
//! | 10 s | 5 s | 5 s | 5 s |
//! | 6 s ([`MIN_DEFAULT_LIFETIME`]) | 5 s | 1 s | 1 s |
//! | 1 to 5 s | refused | | |
//!
//! Signing times are whole seconds (`X-Amz-Date`), so a token can be up to a second older than
//! the moment it was signed; a lifetime must therefore exceed the margin by at least a second,
//! else even a freshly signed token could have less than the margin left. Shorter lifetimes are
//! refused with `InvalidSigningParams` rather than handed out too close to expiry. An explicit
//! [`TokenProviderBuilder::min_remaining`] replaces the default (and its floor): it is the
//! caller's statement of how long its connects take.
//!
//! The hit path is a read lock, a hash lookup and a reference-count increment. No async runtime is
//! needed: waiting uses `async-lock`, time comes from a [`Clock`](crate::Clock).

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;

use crate::clock::{SharedClock, SystemClock};
use crate::error::{Error, ErrorKind};
use crate::token::{AuthToken, Signer, SigningParams};

/// The default margin is `min(DEFAULT_MAX_MARGIN, lifetime / 4)`, at least [`MIN_MARGIN`].
pub const DEFAULT_MAX_MARGIN: Duration = Duration::from_secs(30);
/// The least token life the default margin leaves a connection to open with (TCP, TLS, startup
/// on a slow or loaded machine): a floor under `lifetime / 4`.
pub const MIN_MARGIN: Duration = Duration::from_secs(5);
/// Signing times are whole seconds, so a fresh token may be this much older than "now".
const SIGNING_GRANULARITY: Duration = Duration::from_secs(1);
/// The shortest token lifetime the default margin accepts: [`MIN_MARGIN`] plus the second a
/// signing time may lag behind the clock.
pub const MIN_DEFAULT_LIFETIME: Duration = MIN_MARGIN.saturating_add(SIGNING_GRANULARITY);
/// Credentials with less than this left are resolved again before the next signing.
pub const CREDENTIALS_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Tokens are replaced once this share of their life has passed (as per-mille).
const REFRESH_AT_PERMILLE: u32 = 800;

/// Signs DSQL auth tokens and caches them. Cheap to clone (one `Arc`); clones share the cache.
#[derive(Clone)]
pub struct TokenProvider {
    inner: Arc<Inner>,
}

struct Inner {
    credentials: Arc<dyn ProvideCredentials>,
    clock: SharedClock,
    min_remaining: Option<Duration>,
    signer: Signer,
    tokens: RwLock<HashMap<SigningParams, Entry, BuildHasherDefault<FxHasher>>>,
    // Written only while `refresh` is held; read by `access_key_id` and `Debug`.
    creds: RwLock<Option<Credentials>>,
    // Serialises credentials resolution and signing, so concurrent misses do the work once.
    refresh: async_lock::Mutex<()>,
    signings: AtomicU64,
    resolutions: AtomicU64,
}

struct Entry {
    token: AuthToken,
    /// From here on, callers sign a replacement.
    refresh_at: SystemTime,
    /// Until here the token may still be handed out (while another caller refreshes it).
    usable_until: SystemTime,
}

/// When a cached token is replaced and until when it may be handed out; see
/// [`TokenProvider::token_schedule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenSchedule {
    /// From here on, [`TokenProvider::token`] signs a replacement.
    pub refresh_at: SystemTime,
    /// Until here the provider would still hand the cached token out.
    pub usable_until: SystemTime,
}

/// Counters of the work a [`TokenProvider`] has done: for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProviderStats {
    /// Tokens signed.
    pub signings: u64,
    /// Calls made to the credentials provider.
    pub credential_resolutions: u64,
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self.inner.tokens.read().map(|t| t.len()).unwrap_or(0);
        f.debug_struct("TokenProvider")
            .field("clock", &self.inner.clock)
            .field("min_remaining", &self.inner.min_remaining)
            .field("cached_tokens", &cached)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Builds a [`TokenProvider`]: credentials (required), clock, margin.
#[derive(Default)]
pub struct TokenProviderBuilder {
    credentials: Option<Arc<dyn ProvideCredentials>>,
    clock: Option<SharedClock>,
    min_remaining: Option<Duration>,
}

impl fmt::Debug for TokenProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenProviderBuilder")
            .field("credentials", &self.credentials.as_ref().map(|_| "<set>"))
            .field("clock", &self.clock)
            .field("min_remaining", &self.min_remaining)
            .finish()
    }
}

impl TokenProviderBuilder {
    /// The credentials to sign with: any `aws_credential_types` provider, including static
    /// [`Credentials`].
    pub fn credentials(mut self, credentials: impl ProvideCredentials + 'static) -> Self {
        self.credentials = Some(Arc::new(credentials));
        self
    }

    /// Credentials from the AWS default chain (environment variables first, then the shared
    /// config/credentials files, SSO, web identity, ECS/EC2 metadata), optionally for a named
    /// profile. The chain is loaded once here; credentials are resolved on first use.
    #[cfg(feature = "aws-config")]
    pub async fn default_chain(mut self, profile: Option<&str>) -> Result<Self, Error> {
        self.credentials = Some(Arc::new(default_chain_credentials(profile, None).await?));
        Ok(self)
    }

    /// The clock (default: [`SystemClock`]). Supply your own on `wasm32-unknown-unknown`.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The least remaining life (capped by the credentials' expiry) a token may have when it is
    /// handed out. Default: `min(30 s, lifetime / 4)`, at least [`MIN_MARGIN`] (see the module
    /// docs). An explicit value replaces the default and its floor: choose one that covers your
    /// slowest connect. It must be shorter than the token lifetime asked for, else
    /// [`TokenProvider::token`] fails with `InvalidSigningParams`.
    pub fn min_remaining(mut self, min_remaining: Duration) -> Self {
        self.min_remaining = Some(min_remaining);
        self
    }

    /// The provider. Fails when no credentials were given.
    pub fn build(self) -> Result<TokenProvider, Error> {
        let credentials = self.credentials.ok_or_else(|| {
            Error::new(
                ErrorKind::Credentials,
                "TokenProvider::builder() needs credentials: call .credentials(..) with a credentials provider",
            )
        })?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        Ok(TokenProvider::from_parts(
            credentials,
            clock,
            self.min_remaining,
        ))
    }
}

impl TokenProvider {
    /// A provider signing with `creds`, on the system clock, with the default margin.
    pub fn new(creds: impl ProvideCredentials + 'static) -> Self {
        Self::from_parts(Arc::new(creds), Arc::new(SystemClock), None)
    }

    fn from_parts(
        credentials: Arc<dyn ProvideCredentials>,
        clock: SharedClock,
        min_remaining: Option<Duration>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                credentials,
                clock,
                min_remaining,
                signer: Signer::new(),
                tokens: RwLock::default(),
                creds: RwLock::default(),
                refresh: async_lock::Mutex::new(()),
                signings: AtomicU64::new(0),
                resolutions: AtomicU64::new(0),
            }),
        }
    }

    /// A builder: credentials, clock, margin.
    pub fn builder() -> TokenProviderBuilder {
        TokenProviderBuilder::default()
    }

    /// A provider on the AWS default credential chain (environment variables first, then the
    /// shared config/credentials files, SSO, web identity, ECS/EC2 metadata), optionally for a
    /// named profile. The chain is loaded once and the credentials are resolved now, so a missing
    /// or broken setup is reported here rather than on first connect.
    #[cfg(feature = "aws-config")]
    pub async fn from_default_chain(profile: Option<&str>) -> Result<Self, Error> {
        let provider = Self::builder().default_chain(profile).await?.build()?;
        let guard = provider.inner.refresh.lock().await;
        provider
            .inner
            .current_credentials(provider.inner.clock.now(), Duration::ZERO)
            .await?;
        drop(guard);
        Ok(provider)
    }

    /// A token for `params`: from the cache when it is fresh, else newly signed (once, however
    /// many callers are waiting). Never returns a token whose remaining life, capped by the
    /// credentials' expiry, is below the margin.
    ///
    /// Errors: `Credentials` (the provider failed), `CredentialsExpired` (the credentials expire
    /// too soon for any usable token), `InvalidSigningParams` (margin not shorter than the
    /// lifetime, signing time out of range), `Signing`.
    pub async fn token(&self, params: &SigningParams) -> Result<AuthToken, Error> {
        let now = self.inner.clock.now();
        if let Some(token) = self.inner.cached(params, |e| now < e.refresh_at) {
            return Ok(token);
        }
        // Boxed so that the hit path's future stays a few words: it is moved on every call.
        Box::pin(self.inner.refresh_token(params)).await
    }

    /// The access key id of the credentials in use (resolving them if needed): for error
    /// messages that say which credentials were used. Not a secret.
    pub async fn access_key_id(&self) -> Result<String, Error> {
        if let Ok(creds) = self.inner.creds.read()
            && let Some(c) = creds.as_ref()
        {
            return Ok(c.access_key_id().to_owned());
        }
        let _guard = self.inner.refresh.lock().await;
        let creds = self
            .inner
            .current_credentials(self.inner.clock.now(), Duration::ZERO)
            .await?;
        Ok(creds.access_key_id().to_owned())
    }

    /// The schedule of the token cached for `params`: when the provider will sign a
    /// replacement, and until when it would still hand the cached token out (token expiry,
    /// capped by the credentials' expiry, minus the margin). `None` when nothing is cached. For
    /// callers that install a token somewhere and must replace it in time (sqlx's pool options).
    pub fn token_schedule(&self, params: &SigningParams) -> Option<TokenSchedule> {
        let tokens = self.inner.tokens.read().unwrap_or_else(|p| p.into_inner());
        tokens.get(params).map(|e| TokenSchedule {
            refresh_at: e.refresh_at,
            usable_until: e.usable_until,
        })
    }

    /// How much work the provider has done so far.
    pub fn stats(&self) -> ProviderStats {
        ProviderStats {
            signings: self.inner.signings.load(Ordering::Relaxed),
            credential_resolutions: self.inner.resolutions.load(Ordering::Relaxed),
        }
    }
}

impl Inner {
    fn cached(&self, params: &SigningParams, ok: impl Fn(&Entry) -> bool) -> Option<AuthToken> {
        let tokens = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(params)
            .filter(|e| ok(e))
            .map(|e| e.token.clone())
    }

    async fn refresh_token(&self, params: &SigningParams) -> Result<AuthToken, Error> {
        let guard = match self.refresh.try_lock() {
            Some(guard) => guard,
            None => {
                // Someone else is refreshing; a still-usable token beats waiting for them.
                let now = self.clock.now();
                if let Some(token) = self.cached(params, |e| now < e.usable_until) {
                    return Ok(token);
                }
                self.refresh.lock().await
            }
        };
        let now = self.clock.now();
        // Filled in while we waited for the lock?
        if let Some(token) = self.cached(params, |e| now < e.refresh_at) {
            return Ok(token);
        }
        let result = self.sign_and_store(params, now).await;
        drop(guard);
        match result {
            Ok(token) => Ok(token),
            Err(e) => {
                // A failed refresh is not fatal while the previous token is still usable; the
                // next call past the refresh point tries again.
                let now = self.clock.now();
                self.cached(params, |en| now < en.usable_until).ok_or(e)
            }
        }
    }

    /// Call with `refresh` held.
    async fn sign_and_store(
        &self,
        params: &SigningParams,
        now: SystemTime,
    ) -> Result<AuthToken, Error> {
        let margin = self.margin(params)?;
        let creds = self.current_credentials(now, margin).await?;
        let token = self.signer.sign(params, &creds, now)?;
        self.signings.fetch_add(1, Ordering::Relaxed);

        let signed_at = token.signed_at();
        let effective_expiry = match creds.expiry() {
            Some(creds_expiry) => creds_expiry.min(token.expires_at()),
            None => token.expires_at(),
        };
        let usable_until = effective_expiry
            .checked_sub(margin)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if now >= usable_until && creds.expiry().is_some_and(|c| c < token.expires_at()) {
            return Err(credentials_expire_too_soon(&creds, now, margin));
        }
        // With the default margin the lifetime exceeds the margin by a second or more, so a fresh
        // token always has the margin left. (An explicit min_remaining within a second of the
        // lifetime may, signed late in a second, give one with less: the caller's choice.)
        let life = params.expires_in();
        let refresh_at = (signed_at + life * REFRESH_AT_PERMILLE / 1000).min(usable_until);
        let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        // Drop what can no longer be handed out, so the map stays as small as the set in use.
        tokens.retain(|_, e| now < e.usable_until);
        tokens.insert(
            params.clone(),
            Entry {
                token: token.clone(),
                refresh_at,
                usable_until,
            },
        );
        Ok(token)
    }

    fn margin(&self, params: &SigningParams) -> Result<Duration, Error> {
        let life = params.expires_in();
        match self.min_remaining {
            Some(m) if m >= life => Err(Error::new(
                ErrorKind::InvalidSigningParams,
                format!(
                    "the token provider's min_remaining ({} s) is not shorter than the token lifetime ({} s): \
                     lower min_remaining or ask for a longer lifetime",
                    m.as_secs_f64(),
                    life.as_secs()
                ),
            )),
            Some(m) => Ok(m),
            None => default_margin(life),
        }
    }

    /// The credentials to sign with now: the cached ones while they have more than
    /// [`CREDENTIALS_REFRESH_MARGIN`] left, else freshly resolved. Call with `refresh` held.
    async fn current_credentials(
        &self,
        now: SystemTime,
        margin: Duration,
    ) -> Result<Credentials, Error> {
        let cached = self.creds.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(c) = &cached
            && remaining(c, now).is_none_or(|left| left > CREDENTIALS_REFRESH_MARGIN.max(margin))
        {
            return Ok(c.clone());
        }
        self.resolutions.fetch_add(1, Ordering::Relaxed);
        let fresh = match self.credentials.provide_credentials().await {
            Ok(c) => c,
            Err(e) => {
                // The old credentials may still do for now; the next refresh asks again.
                if let Some(c) = cached
                    && remaining(&c, now).is_none_or(|left| left > margin)
                {
                    return Ok(c);
                }
                let message = format!(
                    "could not load AWS credentials: {e}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                     pick a working profile (AWS_PROFILE), or run `aws sso login`"
                );
                return Err(Error::new(ErrorKind::Credentials, message).with_source(e));
            }
        };
        if remaining(&fresh, now).is_some_and(|left| left <= margin) {
            return Err(credentials_expire_too_soon(&fresh, now, margin));
        }
        *self.creds.write().unwrap_or_else(|p| p.into_inner()) = Some(fresh.clone());
        Ok(fresh)
    }
}

/// The default margin for a token lifetime: `min(30 s, lifetime / 4)`, at least [`MIN_MARGIN`];
/// lifetimes under [`MIN_DEFAULT_LIFETIME`] are refused (see the module docs for why).
pub fn default_margin(lifetime: Duration) -> Result<Duration, Error> {
    if lifetime < MIN_DEFAULT_LIFETIME {
        return Err(Error::new(
            ErrorKind::InvalidSigningParams,
            format!(
                "a token lifetime of {} s is too short for the token provider: a connection is given at least                  {} s of token life to open (TCP, TLS, startup), and signing times are whole seconds; ask for                  {} s or more (900 s is the default), or set the provider's min_remaining explicitly",
                lifetime.as_secs_f64(),
                MIN_MARGIN.as_secs(),
                MIN_DEFAULT_LIFETIME.as_secs()
            ),
        ));
    }
    Ok(DEFAULT_MAX_MARGIN.min(lifetime / 4).max(MIN_MARGIN))
}

/// Time left before the credentials expire (`Some(ZERO)` if already expired), or `None` if
/// they do not expire.
fn remaining(creds: &Credentials, now: SystemTime) -> Option<Duration> {
    creds
        .expiry()
        .map(|e| e.duration_since(now).unwrap_or(Duration::ZERO))
}

fn credentials_expire_too_soon(creds: &Credentials, now: SystemTime, margin: Duration) -> Error {
    let when = match creds.expiry() {
        Some(e) => match e.duration_since(now) {
            Ok(left) => format!("expire in {} s", left.as_secs()),
            Err(ago) => format!("expired {} s ago", ago.duration().as_secs()),
        },
        None => "expire".to_owned(),
    };
    Error::new(
        ErrorKind::CredentialsExpired,
        format!(
            "the AWS credentials (access key {}) {when}, too soon for a token that must stay valid for {} s: \
             refresh them (new session token, `aws sso login`, or fix the credentials source) and retry",
            creds.access_key_id(),
            margin.as_secs_f64()
        ),
    )
}

/// The token map's hasher. `SigningParams` hashes to one word computed when it was built, so a
/// lookup needs one multiply here rather than another SipHash pass (the Fx mix from rustc; the
/// keys come from the application, not from an attacker).
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The AWS default credential chain (environment variables first, then the shared
/// config/credentials files, SSO, web identity, ECS/EC2 metadata), optionally for a named
/// profile, loaded once. Credentials are resolved on first use, not here.
///
/// `region` only steers the STS/SSO calls some links of the chain make; give the cluster's region
/// when you know it. Without it the region comes from `AWS_REGION` or the profile, and the EC2
/// metadata lookup for a region (slow and noisy off EC2) is skipped.
#[cfg(feature = "aws-config")]
pub async fn default_chain_credentials(
    profile: Option<&str>,
    region: Option<&str>,
) -> Result<aws_credential_types::provider::SharedCredentialsProvider, Error> {
    use aws_config::meta::region::RegionProviderChain;
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    let region_chain = match region {
        Some(r) => RegionProviderChain::first_try(aws_config::Region::new(r.to_owned())),
        None => {
            let mut from_profile = aws_config::profile::ProfileFileRegionProvider::builder();
            if let Some(p) = profile {
                from_profile = from_profile.profile_name(p);
            }
            RegionProviderChain::first_try(
                aws_config::environment::region::EnvironmentVariableRegionProvider::new(),
            )
            .or_else(from_profile.build())
        }
    };
    loader = loader.region(region_chain);
    if let Some(profile) = profile {
        loader = loader.profile_name(profile);
        // A profile named by the caller wins over AWS_* environment credentials, as the AWS
        // CLI's --profile does; the default chain would read the environment first.
        let conf = aws_config::provider_config::ProviderConfig::default()
            .with_region(region.map(|r| aws_config::Region::new(r.to_owned())));
        loader = loader.credentials_provider(
            aws_config::profile::ProfileFileCredentialsProvider::builder()
                .configure(&conf)
                .profile_name(profile)
                .build(),
        );
    }
    loader.load().await.credentials_provider().ok_or_else(|| {
        Error::new(
            ErrorKind::Credentials,
            "the AWS default credential chain is not available: set AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or pass a credentials provider",
        )
    })
}
