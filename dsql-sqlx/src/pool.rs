//! [`Pool`]: sqlx's own [`PgPool`] whose connect options always carry a usable token, with
//! DSQL's pool defaults ([`pool_options`]).

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use dsql_auth_core::{AuthToken, DsqlErrorClass, PoolPolicy, RetryPolicy, RetryState, SystemClock};
use sqlx::Postgres;
use sqlx::pool::{PoolConnection, PoolConnectionMetadata};
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::config::Config;
use crate::connect::{class_of, explain, refused_after_budget};
use crate::error::Error;

pub use dsql_auth_core::limits::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_LIFETIME_JITTER, DEFAULT_MAX_LIFETIME,
};

/// sqlx's own [`PgPoolOptions`] with DSQL's defaults (the core's [`PoolPolicy::default`]); change
/// any of them with sqlx's setters.
///
/// | setting | value | why |
/// |---|---|---|
/// | `max_lifetime` | 55 min ([`DEFAULT_MAX_LIFETIME`]) | DSQL closes connections at 60 min |
/// | `before_acquire`, `after_release` | retire a connection past its own lifetime, drawn in 49.5–55 min | sqlx has one `max_lifetime` per pool; these hooks spread retirement per connection |
/// | `idle_timeout` | 10 min ([`DEFAULT_IDLE_TIMEOUT`]) | as the official DSQL connectors |
/// | `test_before_acquire` | true | a connection DSQL closed is replaced, not handed out |
///
/// Setting your own `before_acquire` or `after_release` replaces ours (sqlx keeps one of each):
/// call [`past_lifetime`] from yours to keep the spread. Setting another `max_lifetime` with
/// sqlx's setter keeps the spread of the default; [`pool_options_with`] spreads below yours.
pub fn pool_options() -> PgPoolOptions {
    pool_options_with(PoolPolicy::default()).unwrap_or_else(|_| PgPoolOptions::new())
}

/// [`pool_options`] for another pool policy (lifetime, jitter, idle timeout, validation).
/// Fails when the policy is invalid (e.g. a jitter outside `[0, 1)`), with the fix.
pub fn pool_options_with(policy: PoolPolicy) -> Result<PgPoolOptions, Error> {
    policy.validate().map_err(Error::from_core)?;
    let options = PgPoolOptions::new()
        .max_lifetime(policy.max_lifetime)
        .idle_timeout(policy.idle_timeout)
        .test_before_acquire(policy.test_on_check_out);
    if policy.max_lifetime.is_none() {
        return Ok(options);
    }
    let policy = Arc::new(policy);
    let on_release = policy.clone();
    Ok(options
        .before_acquire(move |_, meta| {
            let keep = !past_lifetime_in(&policy, &meta);
            Box::pin(async move { Ok(keep) })
        })
        .after_release(move |_, meta| {
            let keep = !past_lifetime_in(&on_release, &meta);
            Box::pin(async move { Ok(keep) })
        }))
}

/// True when a pooled connection has outlived its own lifetime, drawn per connection by the
/// core's default [`PoolPolicy`] (49.5–55 min). For your own `before_acquire`/`after_release`.
pub fn past_lifetime(meta: &PoolConnectionMetadata) -> bool {
    past_lifetime_in(&PoolPolicy::default(), meta)
}

fn past_lifetime_in(policy: &PoolPolicy, meta: &PoolConnectionMetadata) -> bool {
    policy
        .draw_lifetime(creation_random(meta.age, Instant::now()))
        .is_some_and(|lifetime| meta.age >= lifetime)
}

/// A number in `[0, 1)` fixed for the connection whose age is `age` at `now`: a hash of its
/// creation instant, quantised to 10 ms so it is the same at every check (bar a rare boundary,
/// where it is another draw from the same range). sqlx gives a hook no place to keep a
/// per-connection value, so the draw is recomputed from what the hook does get.
fn creation_random(age: Duration, now: Instant) -> f64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    static SEED: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    // Signed offset of the creation instant from `base`: connections may predate it.
    let since_base = now.saturating_duration_since(base).as_nanos() as i128
        - base.saturating_duration_since(now).as_nanos() as i128;
    let created = since_base - age.as_nanos() as i128;
    let mut h = SEED.get_or_init(Default::default).build_hasher();
    h.write_i128(created.div_euclid(10_000_000));
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// A DSQL connection pool: sqlx's own [`PgPool`] (it derefs to it; pass `&*pool` or
/// [`pg_pool`](Pool::pg_pool) to sqlx's executors), kept supplied with a usable token.
///
/// **The guarantee.** A token is installed in the pool's connect options when the pool is built;
/// a background task asks the token provider again whenever the provider would replace it (the
/// provider decides: 80% of the token's life, earlier when the AWS credentials expire) and
/// installs the new one. So, while the task runs, no new connection starts with a token whose
/// remaining life (capped by the credentials' expiry) is below the provider's margin (default
/// `min(30 s, lifetime/4)`), give or take the task's wake-up delay (at most a second; see
/// below). A failed refresh is logged (`WARN`, target `dsql_sqlx`) and retried with backoff
/// starting at 50 ms, not a whole interval later; the previous token is used meanwhile.
///
/// What can still happen, and what closes it:
/// - A stalled runtime (blocked worker threads) or a machine waking from sleep: the task wakes at
///   least once a second of *monotonic* time and compares wall-clock time, so after a wake-up
///   the window is at most about a second. [`Pool::acquire`] (and [`transaction_with_retry`](
///   crate::transaction_with_retry)) close it entirely: they ask the provider before taking a
///   connection, so a connection they open never starts with a stale token.
/// - Credentials that cannot be refreshed: once the token's life is below the margin and the
///   provider still fails, new connections use the old token until it expires, then fail with
///   access denied (reported at once, not after the acquire timeout).
///
/// The task stops when the pool is closed ([`close`](PgPool::close)) or when the last
/// `dsql_sqlx::Pool` handle is dropped; `PgPool` clones taken from it keep working, without
/// token refresh, after that. Cheap to clone; clones share the pool.
///
/// `PgPool::connect_options()` (sqlx's) returns the options with the current token, and sqlx's
/// `Debug` of them prints it: that is the one place a token is within reach. Do not log it.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    pg: PgPool,
    config: Config,
    /// (signed_at, expires_at) of the token in the pool's connect options.
    installed: Mutex<(SystemTime, SystemTime)>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("host", &self.shared.config.endpoint().connect_host())
            .field("size", &self.shared.pg.size())
            .field("num_idle", &self.shared.pg.num_idle())
            .field("options", self.shared.pg.options())
            .finish_non_exhaustive()
    }
}

impl Deref for Pool {
    type Target = PgPool;

    fn deref(&self) -> &PgPool {
        &self.shared.pg
    }
}

impl Pool {
    /// A pool with DSQL's defaults ([`pool_options`]); opens one connection to check the setup
    /// (credentials, TLS, access), so a broken one is reported here.
    pub async fn connect(config: Config) -> Result<Pool, Error> {
        Self::connect_with(config, pool_options()).await
    }

    /// A pool with sqlx's `options` (start from [`pool_options`] for DSQL's defaults); opens one
    /// connection to check the setup.
    pub async fn connect_with(config: Config, options: PgPoolOptions) -> Result<Pool, Error> {
        let pool = Self::connect_lazy_with(config, options).await?;
        drop(pool.acquire().await?);
        Ok(pool)
    }

    /// Like [`connect_with`](Pool::connect_with) but opens no connection: only the first token
    /// is signed (so missing credentials are reported here).
    pub async fn connect_lazy_with(config: Config, options: PgPoolOptions) -> Result<Pool, Error> {
        let provider = config.token_provider().await?;
        let token = provider
            .token(config.signing_params())
            .await
            .map_err(Error::from_core)?;
        let pg = options.connect_lazy_with(config.pg_options(&token));
        let shared = Arc::new(Shared {
            pg,
            config,
            installed: Mutex::new((token.signed_at(), token.expires_at())),
        });
        let close = shared.pg.close_event();
        tokio::spawn(refresh_loop(Arc::downgrade(&shared), close));
        Ok(Pool { shared })
    }

    /// sqlx's pool.
    pub fn pg_pool(&self) -> &PgPool {
        &self.shared.pg
    }

    /// The configuration the pool connects with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Takes a connection (sqlx's own [`PoolConnection`]): an idle one, or a new one opened with
    /// a token the provider has just vouched for. DSQL's rate refusals (53400) are retried inside
    /// the pool's acquire timeout (sqlx itself retries only 53300); access denied, TLS and other
    /// failures that retrying cannot fix are reported at once, with what to do.
    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>, Error> {
        let refresh_failure = self.shared.refresh().await.err();
        let timeout = self.shared.pg.options().get_acquire_timeout();
        let policy = RetryPolicy {
            max_elapsed: Some(
                self.shared
                    .config
                    .connect_retry()
                    .max_elapsed
                    .map_or(timeout, |m| m.min(timeout)),
            ),
            ..self.shared.config.connect_retry().clone()
        };
        let mut state = RetryState::start(&policy, &SystemClock);
        loop {
            state.next_attempt();
            let err = match self.shared.pg.acquire().await {
                Ok(conn) => return Ok(conn),
                Err(err) => err,
            };
            let retryable = class_of(&err).is_some_and(|c| c.is_retryable_connect());
            match state.failed(retryable, rand::random::<f64>()) {
                Ok(delay) => {
                    tracing::debug!(target: "dsql_sqlx", attempt = state.attempts(), "DSQL refused a new pool connection (rate or connection limit); retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(stop) if stop.exhausted => {
                    return Err(refused_after_budget(
                        &self.shared.config,
                        err,
                        stop.attempts,
                        stop.elapsed,
                    ));
                }
                Err(_) => {
                    // A token the provider could not replace explains access denied better.
                    if let Some(refresh) = refresh_failure
                        && class_of(&err) == Some(DsqlErrorClass::AccessDenied)
                    {
                        return Err(refresh);
                    }
                    return Err(explain(&self.shared.config, err).await);
                }
            }
        }
    }
}

impl Shared {
    /// Asks the provider for the token to use now (a cache hit unless it is due for
    /// replacement) and installs it if it differs from the one in the pool.
    async fn refresh(&self) -> Result<(), Error> {
        let provider = self.config.token_provider().await?;
        let token = provider
            .token(self.config.signing_params())
            .await
            .map_err(Error::from_core)?;
        self.install(&token);
        Ok(())
    }

    fn install(&self, token: &AuthToken) {
        let mut installed = self.installed.lock().unwrap_or_else(|p| p.into_inner());
        let id = (token.signed_at(), token.expires_at());
        if *installed != id {
            self.pg.set_connect_options(self.config.pg_options(token));
            *installed = id;
            tracing::debug!(
                target: "dsql_sqlx",
                host = self.config.endpoint().connect_host(),
                "new DSQL token installed for new pool connections"
            );
        }
    }

    /// How long the refresher sleeps before asking the provider again: until the provider's own
    /// refresh time for the token (80% of its life, earlier when the credentials run out), but
    /// never more than [`MAX_SLEEP`].
    fn next_check(&self) -> Duration {
        let schedule = self
            .config
            .token_provider_now()
            .and_then(|p| p.token_schedule(self.config.signing_params()));
        match schedule {
            Some(s) => s
                .refresh_at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .clamp(Duration::from_millis(10), MAX_SLEEP),
            None => MAX_SLEEP,
        }
    }
}

/// The refresher never sleeps longer than this, so that wall-clock jumps (a machine waking from
/// sleep, where monotonic time stood still) are noticed within about this long.
const MAX_SLEEP: Duration = Duration::from_secs(1);

async fn refresh_loop(shared: Weak<Shared>, close: sqlx::pool::CloseEvent) {
    let backoff = RetryPolicy {
        max_attempts: u32::MAX,
        initial_backoff: Duration::from_millis(50),
        max_backoff: MAX_SLEEP,
        multiplier: 2.0,
        max_elapsed: None,
    };
    let mut close = std::pin::pin!(close);
    let mut failures: u32 = 0;
    loop {
        let wait = match shared.upgrade() {
            Some(s) if failures == 0 => s.next_check(),
            // Full jitter can draw ~0: keep a floor so a dead credentials source is not hammered.
            Some(_) => backoff
                .delay(failures - 1, rand::random::<f64>())
                .max(Duration::from_millis(10)),
            None => return,
        };
        tokio::select! {
            _ = close.as_mut() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let Some(s) = shared.upgrade() else { return };
        match s.refresh().await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(target: "dsql_sqlx", failures, "DSQL token refresh recovered");
                }
                failures = 0;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::warn!(
                    target: "dsql_sqlx",
                    %error,
                    failures,
                    "could not refresh the DSQL token for new pool connections; retrying with backoff"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_spread_in_range_and_stable() {
        let policy = PoolPolicy::default();
        let now = Instant::now() + Duration::from_secs(3600);
        let max = DEFAULT_MAX_LIFETIME;
        let lo = max.mul_f64(1.0 - DEFAULT_LIFETIME_JITTER);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200u64 {
            // +5 ms keeps the creation instants away from a 10 ms boundary.
            let age = Duration::from_millis(i * 37 + 5);
            let l = policy.draw_lifetime(creation_random(age, now)).unwrap();
            assert!(l >= lo && l <= max, "{l:?}");
            // The same connection, checked 1 s later, draws the same lifetime.
            assert_eq!(
                creation_random(age + Duration::from_secs(1), now + Duration::from_secs(1)),
                creation_random(age, now)
            );
            seen.insert(l.as_secs());
        }
        assert!(seen.len() > 50, "lifetimes are not spread: {seen:?}");
    }

    #[test]
    fn an_invalid_policy_is_refused() {
        let policy = PoolPolicy {
            lifetime_jitter: 1.5,
            ..PoolPolicy::default()
        };
        assert_eq!(
            pool_options_with(policy).unwrap_err().kind(),
            crate::ErrorKind::Config
        );
    }
}
