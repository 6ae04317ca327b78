//! TokenProvider behaviour: one signing and one credentials resolution for concurrent callers,
//! refresh before expiry, credentials expiry caps tokens, failures handled, secrets never shown.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, future};
use dsql_auth_core::clock::{Clock, ManualClock};
use dsql_auth_core::{Action, ErrorKind, SigningParams, TokenProvider};

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY";
const SESSION: &str = "IQoJb3JpZ2luSESSIONTOKEN/+=";
const HOST: &str = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200) // 2024-01-01T00:00:00Z
}

type MakeCreds = dyn Fn(usize) -> Result<Credentials, CredentialsError> + Send + Sync;

/// A credentials provider that counts its calls; call `n` (1-based) gets `make(n)`, after `delay`.
struct Counting {
    calls: AtomicUsize,
    delay: Duration,
    make: Box<MakeCreds>,
}

impl fmt::Debug for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counting")
            .field("calls", &self.calls)
            .finish()
    }
}

impl Counting {
    fn new(
        make: impl Fn(usize) -> Result<Credentials, CredentialsError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicUsize::new(0),
            delay: Duration::ZERO,
            make: Box::new(make),
        })
    }
    fn slow(
        delay: Duration,
        make: impl Fn(usize) -> Result<Credentials, CredentialsError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicUsize::new(0),
            delay,
            make: Box::new(make),
        })
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl ProvideCredentials for Counting {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            (self.make)(n)
        })
    }
}

/// Lets an `Arc<Counting>` be handed to the provider while the test keeps a handle.
#[derive(Debug)]
struct Shared(Arc<Counting>);

impl ProvideCredentials for Shared {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        self.0.provide_credentials()
    }
}

fn creds(akid: &str, expiry: Option<SystemTime>) -> Credentials {
    Credentials::new(akid, SECRET, Some(SESSION.to_owned()), expiry, "test")
}

fn params(expires: u64) -> SigningParams {
    SigningParams::new(HOST, "us-east-1", Action::DbConnectAdmin)
        .unwrap()
        .with_expires_in(Duration::from_secs(expires))
        .unwrap()
}

fn provider(counting: &Arc<Counting>, clock: &Arc<ManualClock>) -> TokenProvider {
    TokenProvider::builder()
        .credentials(Shared(counting.clone()))
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn assert_no_secrets(shown: &str) {
    assert!(!shown.contains(SECRET), "secret key shown: {shown}");
    assert!(
        !shown.contains("SESSIONTOKEN"),
        "session token shown: {shown}"
    );
    assert!(
        !shown.contains("X-Amz-Signature=") || shown.contains("X-Amz-Signature=<redacted>"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_resolution_and_one_signing() {
    let counting = Counting::slow(Duration::from_millis(50), |_| {
        Ok(creds("AKIACONCURRENT", None))
    });
    let clock = Arc::new(ManualClock::new(t0()));
    let p = provider(&counting, &clock);
    let barrier = Arc::new(tokio::sync::Barrier::new(32));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (p, barrier) = (p.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                p.token(&params(900)).await.map(|t| t.as_str().to_owned())
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("no hang")
                .unwrap()
                .unwrap(),
        );
    }
    assert!(tokens.iter().all(|t| t == &tokens[0]));
    assert_eq!(counting.calls(), 1);
    let stats = p.stats();
    assert_eq!((stats.signings, stats.credential_resolutions), (1, 1));
    // And a hit afterwards costs nothing more.
    p.token(&params(900)).await.unwrap();
    assert_eq!(p.stats().signings, 1);
}

#[tokio::test]
async fn token_is_replaced_after_80_percent_of_its_life() {
    let counting = Counting::new(|_| Ok(creds("AKIAREFRESH", None)));
    let clock = Arc::new(ManualClock::new(t0()));
    let p = provider(&counting, &clock);
    let first = p.token(&params(900)).await.unwrap();
    assert_eq!(first.signed_at(), t0());
    clock.advance(Duration::from_secs(719));
    assert_eq!(
        p.token(&params(900)).await.unwrap().as_str(),
        first.as_str()
    );
    clock.advance(Duration::from_secs(2));
    let second = p.token(&params(900)).await.unwrap();
    assert_ne!(second.as_str(), first.as_str());
    assert_eq!(second.signed_at(), t0() + Duration::from_secs(721));
    assert_eq!(p.stats().signings, 2);
    // Credentials without expiry are resolved once only.
    assert_eq!(counting.calls(), 1);
}

#[tokio::test]
async fn cache_is_per_signing_params() {
    let counting = Counting::new(|_| Ok(creds("AKIAKEYS", None)));
    let clock = Arc::new(ManualClock::new(t0()));
    let p = provider(&counting, &clock);
    let admin = p.token(&params(900)).await.unwrap();
    let user = p
        .token(&SigningParams::new(HOST, "us-east-1", Action::DbConnect).unwrap())
        .await
        .unwrap();
    let longer = p.token(&params(3600)).await.unwrap();
    let other_host = p
        .token(&SigningParams::new("other.example", "us-east-1", Action::DbConnectAdmin).unwrap())
        .await
        .unwrap();
    let all = [
        admin.as_str(),
        user.as_str(),
        longer.as_str(),
        other_host.as_str(),
    ];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b);
        }
    }
    assert!(user.as_str().contains("Action=DbConnect&"));
    assert_eq!(p.stats().signings, 4);
    // Same params as the first call (host spelled differently, normalised): a hit.
    let again =
        SigningParams::new(&HOST.to_uppercase(), "us-east-1", Action::DbConnectAdmin).unwrap();
    assert_eq!(p.token(&again).await.unwrap().as_str(), admin.as_str());
    assert_eq!(p.stats().signings, 4);
}

#[tokio::test]
async fn credentials_expiry_caps_the_token_and_triggers_re_resolution() {
    // First credentials expire 120 s from now; the next ones an hour later.
    let counting = Counting::new(|n| {
        let expiry = if n == 1 {
            t0() + Duration::from_secs(120)
        } else {
            t0() + Duration::from_secs(3600)
        };
        Ok(creds(&format!("AKIAGEN{n}"), Some(expiry)))
    });
    let clock = Arc::new(ManualClock::new(t0()));
    let p = provider(&counting, &clock);
    let first = p.token(&params(900)).await.unwrap();
    assert!(first.as_str().contains("AKIAGEN1"));
    // Default margin for 900 s tokens is 30 s: usable until 90 s.
    clock.advance(Duration::from_secs(89));
    assert_eq!(
        p.token(&params(900)).await.unwrap().as_str(),
        first.as_str()
    );
    clock.advance(Duration::from_secs(2));
    let second = p.token(&params(900)).await.unwrap();
    assert!(
        second.as_str().contains("AKIAGEN2"),
        "new credentials were used"
    );
    assert_eq!(counting.calls(), 2);
    assert_eq!(p.access_key_id().await.unwrap(), "AKIAGEN2");
}

#[tokio::test]
async fn credentials_expiring_within_the_margin_are_an_error_that_says_what_to_do() {
    let counting =
        Counting::new(|_| Ok(creds("AKIASOONGONE", Some(t0() + Duration::from_secs(10)))));
    let clock = Arc::new(ManualClock::new(t0()));
    let p = provider(&counting, &clock);
    let err = p.token(&params(900)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CredentialsExpired);
    let msg = err.to_string();
    assert!(
        msg.contains("AKIASOONGONE") && msg.contains("expire in 10 s") && msg.contains("refresh"),
        "{msg}"
    );
    assert_no_secrets(&msg);
    assert_no_secrets(&format!("{err:?}"));

    let counting = Counting::new(|_| Ok(creds("AKIAGONE", Some(t0() - Duration::from_secs(5)))));
    let err = provider(&counting, &clock)
        .token(&params(900))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CredentialsExpired);
    assert!(err.to_string().contains("expired 5 s ago"), "{err}");
}

#[tokio::test]
async fn a_failing_credentials_provider_is_reported_and_survived() {
    // Call 1 succeeds with credentials valid for 1000 s; later calls fail.
    let counting = Counting::new(|n| {
        if n == 1 {
            Ok(creds("AKIAFLAKY", Some(t0() + Duration::from_secs(1000))))
        } else {
            Err(CredentialsError::provider_error(
                "metadata service unreachable",
            ))
        }
    });
    let clock = Arc::new(ManualClock::new(t0()));
    let p = provider(&counting, &clock);
    let first = p.token(&params(900)).await.unwrap();
    // Past the refresh point and within 300 s of credentials expiry: the provider is asked again,
    // fails, and the still-valid credentials sign the replacement.
    clock.advance(Duration::from_secs(730));
    let second = p.token(&params(900)).await.unwrap();
    assert_ne!(second.as_str(), first.as_str());
    assert_eq!(counting.calls(), 2);
    // Past the credentials' usable life: the failure surfaces, with what to do.
    clock.advance(Duration::from_secs(250));
    let err = p.token(&params(900)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Credentials);
    assert!(
        err.to_string().contains("could not load AWS credentials")
            && err.to_string().contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    assert_no_secrets(&format!("{err} {err:?}"));

    let never = Counting::new(|_| {
        Err(CredentialsError::not_loaded(
            "no credentials in the environment",
        ))
    });
    let err = provider(&never, &clock)
        .token(&params(900))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Credentials);
    let err = provider(&never, &clock).access_key_id().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Credentials);
}

#[tokio::test]
async fn margin_must_be_shorter_than_the_lifetime() {
    let counting = Counting::new(|_| Ok(creds("AKIAMARGIN", None)));
    let clock = Arc::new(ManualClock::new(t0()));
    let p = TokenProvider::builder()
        .credentials(Shared(counting.clone()))
        .clock(clock.clone())
        .min_remaining(Duration::from_secs(600))
        .build()
        .unwrap();
    let err = p.token(&params(600)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSigningParams);
    assert!(err.to_string().contains("min_remaining"), "{err}");
    // A 900 s token with a 600 s margin is replaced after 300 s (the margin wins over 80%).
    let t = p.token(&params(900)).await.unwrap();
    clock.advance(Duration::from_secs(299));
    assert_eq!(p.token(&params(900)).await.unwrap().as_str(), t.as_str());
    clock.advance(Duration::from_secs(2));
    assert_ne!(p.token(&params(900)).await.unwrap().as_str(), t.as_str());
}

#[tokio::test]
async fn nothing_secret_in_debug_or_display() {
    // The plain constructor: static credentials, system clock.
    let p = TokenProvider::new(creds("AKIADEBUG", None));
    let t = p.token(&params(900)).await.unwrap();
    let signature = t
        .as_str()
        .rsplit_once("X-Amz-Signature=")
        .unwrap()
        .1
        .to_owned();
    for shown in [
        format!("{p:?}"),
        format!("{t}"),
        format!("{t:?}"),
        format!(
            "{:?}",
            TokenProvider::builder().credentials(creds("A", None))
        ),
    ] {
        assert_no_secrets(&shown);
        assert!(!shown.contains(&signature), "{shown}");
    }
    assert!(format!("{p:?}").contains("cached_tokens: 1"));
}

#[test]
fn builder_without_credentials_says_what_to_do() {
    let err = TokenProvider::builder().build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Credentials);
    assert!(err.to_string().contains(".credentials("), "{err}");
}

/// The provider needs no tokio: a trivial executor drives it.
#[test]
fn runs_without_an_async_runtime() {
    let p = TokenProvider::builder()
        .credentials(creds("AKIANORUNTIME", None))
        .clock(Arc::new(ManualClock::new(t0())))
        .build()
        .unwrap();
    let t = futures_util::FutureExt::now_or_never(p.token(&params(900)))
        .expect("ready at once")
        .unwrap();
    assert!(t.as_str().starts_with(HOST));
}

#[tokio::test]
async fn token_schedule_reports_the_cached_tokens_refresh_and_usable_times() {
    use dsql_auth_core::clock::ManualClock;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_724_716_800);
    let clock = Arc::new(ManualClock::new(start));
    let provider = dsql_auth_core::TokenProvider::builder()
        .credentials(aws_credential_types::Credentials::new(
            "akid", "secret", None, None, "test",
        ))
        .clock(clock.clone())
        .build()
        .unwrap();
    let params = dsql_auth_core::SigningParams::new(
        "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws",
        "us-east-1",
        dsql_auth_core::Action::DbConnectAdmin,
    )
    .unwrap()
    .with_expires_in(Duration::from_secs(900))
    .unwrap();
    assert_eq!(provider.token_schedule(&params), None, "nothing cached yet");
    let token = provider.token(&params).await.unwrap();
    let schedule = provider.token_schedule(&params).expect("cached");
    // 80% of 900 s; margin min(30 s, 900/4).
    assert_eq!(schedule.refresh_at, start + Duration::from_secs(720));
    assert_eq!(
        schedule.usable_until,
        token.expires_at() - Duration::from_secs(30)
    );
}

/// The default margin, written out independently of the provider: `min(30 s, life / 4)`, at
/// least 5 s.
fn expected_margin(life: Duration) -> Duration {
    (life / 4)
        .min(Duration::from_secs(30))
        .max(Duration::from_secs(5))
}

#[test]
fn default_margin_rule() {
    use dsql_auth_core::provider::{MIN_DEFAULT_LIFETIME, MIN_MARGIN, default_margin};
    assert_eq!(MIN_MARGIN, Duration::from_secs(5));
    assert_eq!(MIN_DEFAULT_LIFETIME, Duration::from_secs(6));
    for (life, margin) in [
        (6, 5_000),
        (20, 5_000),
        (21, 5_250),
        (60, 15_000),
        (119, 29_750),
        (120, 30_000),
        (900, 30_000),
        (604_800, 30_000),
    ] {
        assert_eq!(
            default_margin(Duration::from_secs(life)).unwrap(),
            Duration::from_millis(margin),
            "lifetime {life} s"
        );
    }
    for life in 1..=5 {
        let err = default_margin(Duration::from_secs(life)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSigningParams);
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("{life} s"))
                && msg.contains("6 s")
                && msg.contains("min_remaining"),
            "{msg}"
        );
    }
}

/// For lifetimes around every corner of the rule, and signing at the start, middle and very end
/// of a second: the cached token is handed out up to the last nanosecond before the rule's
/// refresh point, always with at least the margin left, and replaced exactly at that point.
#[tokio::test]
async fn a_token_is_re_signed_exactly_when_the_margin_rule_says() {
    let one_ns = Duration::from_nanos(1);
    for life in [
        6u64, 7, 10, 20, 21, 24, 25, 60, 119, 120, 121, 900, 3600, 604_800,
    ] {
        for offset in [
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_nanos(999_999_999),
        ] {
            let case = format!("lifetime {life} s, signed {offset:?} into the second");
            let life_d = Duration::from_secs(life);
            let margin = expected_margin(life_d);
            let counting = Counting::new(|_| Ok(creds("AKIABOUNDARY", None)));
            let clock = Arc::new(ManualClock::new(t0() + offset));
            let p = provider(&counting, &clock);
            let first = p.token(&params(life)).await.unwrap();
            assert_eq!(first.signed_at(), t0(), "{case}");
            let usable_until = t0() + life_d - margin;
            let refresh_at = (t0() + life_d * 4 / 5).min(usable_until);
            let schedule = p.token_schedule(&params(life)).expect("cached");
            assert_eq!(schedule.usable_until, usable_until, "{case}");
            assert_eq!(schedule.refresh_at, refresh_at, "{case}");
            assert!(
                t0() + offset < refresh_at,
                "{case}: a fresh token is usable"
            );

            clock.set(refresh_at - one_ns);
            let hit = p.token(&params(life)).await.unwrap();
            assert_eq!(hit.as_str(), first.as_str(), "{case}: still cached");
            let left = hit.expires_at().duration_since(clock.now()).unwrap();
            assert!(left >= margin, "{case}: handed out with {left:?} left");
            assert_eq!(p.stats().signings, 1, "{case}");

            clock.set(refresh_at);
            let next = p.token(&params(life)).await.unwrap();
            assert_ne!(
                next.as_str(),
                first.as_str(),
                "{case}: re-signed at the refresh point"
            );
            assert_eq!(p.stats().signings, 2, "{case}");
            let left = next.expires_at().duration_since(clock.now()).unwrap();
            assert!(left >= margin, "{case}: the replacement has {left:?} left");
        }
    }
}

#[tokio::test]
async fn credentials_expiry_moves_the_refresh_point_to_the_exact_nanosecond() {
    let counting = Counting::new(|n| {
        Ok(creds(
            &format!("AKIACAP{n}"),
            Some(t0() + Duration::from_secs(100 + 3600 * (n as u64 - 1))),
        ))
    });
    let clock = Arc::new(ManualClock::new(t0()));
    let p = provider(&counting, &clock);
    let first = p.token(&params(900)).await.unwrap();
    // Credentials end at 100 s; the margin for 900 s is 30 s.
    let edge = t0() + Duration::from_secs(70);
    assert_eq!(p.token_schedule(&params(900)).unwrap().refresh_at, edge);
    clock.set(edge - Duration::from_nanos(1));
    assert_eq!(
        p.token(&params(900)).await.unwrap().as_str(),
        first.as_str()
    );
    clock.set(edge);
    let second = p.token(&params(900)).await.unwrap();
    assert!(second.as_str().contains("AKIACAP2"), "{second}");
}

#[tokio::test]
async fn lifetimes_too_short_for_the_default_margin_are_refused_and_an_explicit_margin_allows_them()
{
    let counting = Counting::new(|_| Ok(creds("AKIASHORT", None)));
    let clock = Arc::new(ManualClock::new(t0()));
    let p = provider(&counting, &clock);
    for life in [1, 2, 5] {
        let err = p.token(&params(life)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSigningParams, "{life}");
        assert!(err.to_string().contains("too short"), "{err}");
    }
    assert_eq!(
        p.stats().signings,
        0,
        "nothing signed for a refused lifetime"
    );
    assert!(p.token(&params(6)).await.is_ok());

    // An explicit margin is the caller's call: 1 s tokens with no margin (what `dsql token` does).
    let p = TokenProvider::builder()
        .credentials(Shared(counting.clone()))
        .clock(clock.clone())
        .min_remaining(Duration::ZERO)
        .build()
        .unwrap();
    let t = p.token(&params(1)).await.unwrap();
    assert_eq!(t.expires_at(), t0() + Duration::from_secs(1));
}
