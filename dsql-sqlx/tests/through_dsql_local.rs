//! dsql-sqlx against dsql-local (a TLS gateway that verifies every IAM token, in front of a real
//! PostgreSQL). Needs PostgreSQL's server binaries (`apt-get install postgresql`).
//!
//! sqlx cannot dial one address while verifying another name, and DSQL hostnames do not resolve
//! here, so every test reaches the gateway the way PrivateLink without DNS does: dial
//! `localhost` (which the gateway's certificate names), sign for the cluster's host
//! (`cluster_id` + `region`), and send `-c amzn-cluster-id=<id>`.
//!
//! Every test logs at TRACE (all targets, sqlx included) into one buffer, and checks at its end
//! that no token, secret key or session token is in it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, future};
use dsql_local::{LocalDsql, LocalDsqlBuilder, RefusalReason};
use dsql_sqlx::{
    Config, ConnectOptions, ErrorKind, Pool, RetryPolicy, TokenProvider, pool_options,
};
use sqlx::Connection as _;

use dsql_local::testing::{connect_options_by_name, guarded, token_provider};

// ---- log capture ------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        captured
    })
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned()
}

/// No token (every token has `X-Amz-Signature=`), no secret key, no session token in the logs.
fn assert_no_secrets_logged(local: &LocalDsql) {
    let text = log_text();
    assert!(
        text.contains("TRACE") || text.contains("DEBUG"),
        "the log capture saw nothing: the leak check would be vacuous"
    );
    assert!(!text.contains("X-Amz-Signature"), "a token was logged");
    assert!(!text.contains("X-Amz-Credential"), "a token was logged");
    let creds = local.credentials();
    assert!(
        !text.contains(creds.secret_access_key()),
        "the secret key was logged"
    );
    if let Some(st) = creds.session_token() {
        assert!(!text.contains(st), "the session token was logged");
    }
}

// ---- setup --------------------------------------------------------------------------------

async fn start(builder: LocalDsqlBuilder) -> LocalDsql {
    logs();
    dsql_local::testing::start(builder).await
}

/// PrivateLink without DNS: dial `localhost`, sign for the cluster, send `amzn-cluster-id`
/// (the shared harness's options), edited by `edit`.
fn config(local: &LocalDsql, edit: impl FnOnce(&mut ConnectOptions)) -> Config {
    let mut options = connect_options_by_name(local);
    edit(&mut options);
    Config::new(options)
        .unwrap_or_else(|e| panic!("config: {e}"))
        .with_token_provider(token_provider(local))
}

fn two_second_tokens(o: &mut ConnectOptions) {
    o.token_duration = Duration::from_secs(2);
}

/// 2 s tokens with a 1 s margin: every token handed out has at least 1 s left (its expiry is
/// the signing second + 2 s), which TCP + TLS + startup to a local gateway never need (issue 15:
/// the default min(30 s, life/4) would leave a connection 0.5 s).
fn short_token_provider(creds: impl ProvideCredentials + 'static) -> TokenProvider {
    TokenProvider::builder()
        .credentials(creds)
        .min_remaining(Duration::from_secs(1))
        .build()
        .unwrap()
}

async fn select_one(pool: &Pool) -> Result<i32, String> {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(&**pool)
        .await
        .map_err(|e| e.to_string())
}

// ---- tests -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_privatelink_style_keeps_application_name_and_maps_options() {
    let local = start(LocalDsql::builder()).await;
    guarded("connect", async {
        let mut conn = dsql_sqlx::connect(&config(&local, |_| ())).await.unwrap();
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(one, 1);
        let app: String = sqlx::query_scalar("SELECT current_setting('application_name')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(app, dsql_sqlx::DEFAULT_APPLICATION_NAME);
        conn.close().await.unwrap();

        // The user's application_name and options are kept (amzn-cluster-id is added after).
        let mut conn = dsql_sqlx::connect(&config(&local, |o| {
            o.application_name = Some("billing".into());
            o.options = Some("-c statement_timeout=12345".into());
        }))
        .await
        .unwrap();
        let (app, timeout): (String, String) = sqlx::query_as(
            "SELECT current_setting('application_name'), current_setting('statement_timeout')",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(app, "billing");
        assert_eq!(timeout, "12345ms");
        conn.close().await.unwrap();

        // Without the certificate's CA, verify-full fails as a TLS error, at once.
        let config = config(&local, |o| o.sslrootcert = None);
        let err = dsql_sqlx::connect(&config).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    })
    .await;
    assert_no_secrets_logged(&local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_churn_with_2s_tokens_and_3s_connection_age_fails_no_query() {
    let local = start(LocalDsql::builder().max_connection_age(Duration::from_secs(3))).await;
    let provider = short_token_provider(local.credentials());
    let config = config(&local, two_second_tokens).with_token_provider(provider.clone());
    assert_eq!(config.signing_params().expires_in(), Duration::from_secs(2));
    guarded("churn", async {
        // sqlx retires connections at 2 s (before the gateway's 3 s); tokens live 2 s.
        let pool = Pool::connect_with(
            config,
            pool_options()
                .max_connections(4)
                .max_lifetime(Duration::from_secs(2)),
        )
        .await
        .unwrap();
        let failures = Arc::new(AtomicU32::new(0));
        let queries = Arc::new(AtomicU32::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let until = Instant::now() + Duration::from_secs(12);
        let mut tasks = Vec::new();
        for i in 0..8 {
            let pool = pool.clone();
            let (failures, queries, errors) = (failures.clone(), queries.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < until {
                    // Half the tasks go through sqlx's own PgPool (no wrapper in the path).
                    let result = if i % 2 == 0 {
                        select_one(&pool).await
                    } else {
                        match pool.acquire().await {
                            Ok(mut conn) => sqlx::query_scalar::<_, i32>("SELECT 1")
                                .fetch_one(&mut *conn)
                                .await
                                .map_err(|e| e.to_string()),
                            Err(e) => Err(e.to_string()),
                        }
                    };
                    match result {
                        Ok(1) => {
                            queries.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            errors.lock().unwrap().push(format!("{other:?}"));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let counters = local.counters();
        assert_eq!(
            failures.load(Ordering::Relaxed),
            0,
            "failed queries: {:?}; gateway refusals: {:?}",
            errors.lock().unwrap(),
            counters.refusals()
        );
        assert!(queries.load(Ordering::Relaxed) > 100);
        // Rotation really happened: several tokens, several generations of connections.
        assert!(provider.stats().signings >= 5, "{:?}", provider.stats());
        assert!(counters.accepted() >= 8, "accepted {}", counters.accepted());
        assert_eq!(counters.refused_total(), 0, "{:?}", counters.refusals());
        pool.close().await;
    })
    .await;
    assert_no_secrets_logged(&local);
}

/// Credentials that expire 1.5 s after they are issued and whose source fails on its 2nd and 3rd
/// call. With 3 s tokens (their expiry, truncated to the signing second, is at least 2 s away, so
/// after the credentials' own) and a 1 s margin, the provider must resolve the credentials again
/// at every refresh (0.5 s after signing, when they have 1 s left), so two refreshes in a row fail.
#[derive(Debug)]
struct FlakyCredentials {
    creds: Credentials,
    calls: Arc<AtomicU32>,
}

impl ProvideCredentials for FlakyCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::info!(call = n, "test credentials source called");
        if n == 2 || n == 3 {
            return future::ProvideCredentials::ready(Err(
                aws_credential_types::provider::error::CredentialsError::provider_error(format!(
                    "test credentials source: failure on call {n}"
                )),
            ));
        }
        let c = &self.creds;
        future::ProvideCredentials::ready(Ok(Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            c.session_token().map(str::to_owned),
            Some(SystemTime::now() + Duration::from_millis(1500)),
            "flaky",
        )))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_failed_refreshes_in_a_row_fail_no_connect_and_are_logged() {
    let local = start(LocalDsql::builder()).await;
    let calls = Arc::new(AtomicU32::new(0));
    let provider = TokenProvider::builder()
        .credentials(FlakyCredentials {
            creds: local.credentials(),
            calls: calls.clone(),
        })
        .min_remaining(Duration::from_secs(1))
        .build()
        .unwrap();
    let config =
        config(&local, |o| o.token_duration = Duration::from_secs(3)).with_token_provider(provider);
    guarded("flaky credentials", async {
        // Every connection lives 100 ms, so new connections open all the time.
        let pool = Pool::connect_with(
            config,
            pool_options()
                .max_connections(2)
                .max_lifetime(Duration::from_millis(100))
                .test_before_acquire(false),
        )
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut queries = 0;
        // Until the credentials source has recovered from its two failures (and a bit beyond).
        while calls.load(Ordering::SeqCst) < 6 {
            assert!(
                Instant::now() < deadline,
                "the credentials were never refreshed again"
            );
            assert_eq!(select_one(&pool).await, Ok(1), "a query failed");
            queries += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(queries > 5);
        let counters = local.counters();
        assert_eq!(counters.refused_total(), 0, "{:?}", counters.refusals());
        let text = log_text();
        let warnings = text
            .lines()
            .filter(|l| l.contains("could not refresh the DSQL token"))
            .count();
        assert!(
            warnings >= 2,
            "expected both refresh failures logged:\n{text}"
        );
        pool.close().await;
    })
    .await;
    assert_no_secrets_logged(&local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_reported_at_once_naming_the_key_id() {
    let local = start(LocalDsql::builder()).await;
    let good = local.credentials();
    let bad = Credentials::new(good.access_key_id(), "not-the-secret", None, None, "test");
    let config = config(&local, |_| ()).with_token_provider(TokenProvider::new(bad));
    guarded("wrong secret", async {
        let started = Instant::now();
        let err = dsql_sqlx::connect(&config).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(err.kind(), ErrorKind::AccessDenied, "{err}");
        assert!(err.connect_failure().is_fatal());
        let text = err.to_string();
        assert!(text.contains(good.access_key_id()), "{text}");
        assert!(
            text.contains(&format!("{}.dsql.", local.cluster_id())),
            "{text}"
        );
        assert!(text.contains("DbConnectAdmin"), "{text}");

        let started = Instant::now();
        let err = Pool::connect(config.clone()).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(err.kind(), ErrorKind::AccessDenied, "{err}");
        assert!(err.to_string().contains(good.access_key_id()), "{err}");
        assert!(
            local.counters().refused(RefusalReason::BadSignature) >= 2,
            "{:?}",
            local.counters().refusals()
        );
    })
    .await;
    assert_no_secrets_logged(&local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occ_helper_counts_exactly_under_contention() {
    let local = start(LocalDsql::builder()).await;
    let pool = guarded("pool", Pool::connect(config(&local, |_| ())))
        .await
        .unwrap();
    guarded("occ", async {
        sqlx::query("CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL)")
            .execute(&*pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO counters VALUES (1, 0)")
            .execute(&*pool)
            .await
            .unwrap();
        let policy = RetryPolicy {
            max_attempts: 100,
            max_elapsed: Some(Duration::from_secs(120)),
            ..RetryPolicy::occ()
        };
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let pool = pool.clone();
            let policy = policy.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..50 {
                    dsql_sqlx::transaction_with_retry(&pool, &policy, async |tx| {
                        sqlx::query("UPDATE counters SET n = n + 1 WHERE id = 1")
                            .execute(&mut **tx)
                            .await?;
                        Ok::<_, dsql_sqlx::Error>(())
                    })
                    .await
                    .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let n: i64 = sqlx::query_scalar("SELECT n FROM counters WHERE id = 1")
            .fetch_one(&*pool)
            .await
            .unwrap();
        assert_eq!(n, 400);
    })
    .await;
    pool.close().await;
    assert_no_secrets_logged(&local);
}

/// A conflict made certain by interleaving two sessions by hand: the first attempt reads, another
/// session updates the row and commits, the first attempt's update then conflicts (40001, OC000);
/// the helper retries and the second attempt commits. Also: a user error type, and the helper
/// over one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occ_helper_retries_a_certain_conflict_with_a_user_error_type() {
    #[derive(Debug)]
    enum AppError {
        Db(dsql_sqlx::Error),
    }
    impl From<sqlx::Error> for AppError {
        fn from(e: sqlx::Error) -> Self {
            AppError::Db(e.into())
        }
    }
    impl From<dsql_sqlx::Error> for AppError {
        fn from(e: dsql_sqlx::Error) -> Self {
            AppError::Db(e)
        }
    }
    impl std::fmt::Display for AppError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                AppError::Db(e) => write!(f, "database: {e}"),
            }
        }
    }
    impl std::error::Error for AppError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            match self {
                AppError::Db(e) => Some(e),
            }
        }
    }

    let local = start(LocalDsql::builder()).await;
    let config = config(&local, |_| ());
    guarded("certain conflict", async {
        let mut conn = dsql_sqlx::connect(&config).await.unwrap();
        let other = dsql_sqlx::connect(&config).await.unwrap();
        sqlx::query("CREATE TABLE acct (id int PRIMARY KEY, bal bigint NOT NULL)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO acct VALUES (1, 100)")
            .execute(&mut conn)
            .await
            .unwrap();
        // The body may only share state by reference (its future must not borrow from the
        // closure itself): a counter and the other session behind a lock.
        let attempts = AtomicU32::new(0);
        let other = tokio::sync::Mutex::new(other);
        let bal: i64 =
            dsql_sqlx::transaction_with_retry(&mut conn, &RetryPolicy::occ(), async |tx| {
                let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
                let bal: i64 = sqlx::query_scalar("SELECT bal FROM acct WHERE id = 1")
                    .fetch_one(&mut **tx)
                    .await?;
                if attempt == 1 {
                    sqlx::query("UPDATE acct SET bal = bal + 1000 WHERE id = 1")
                        .execute(&mut *other.lock().await)
                        .await?;
                }
                sqlx::query("UPDATE acct SET bal = $1 WHERE id = 1")
                    .bind(bal - 10)
                    .execute(&mut **tx)
                    .await?;
                Ok::<_, AppError>(bal - 10)
            })
            .await
            .unwrap();
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        assert_eq!(bal, 1090);
        let stored: i64 = sqlx::query_scalar("SELECT bal FROM acct WHERE id = 1")
            .fetch_one(&mut *other.lock().await)
            .await
            .unwrap();
        assert_eq!(stored, 1090);

        // Conflicts on every attempt: the helper gives up with kind OccConflict.
        let err = dsql_sqlx::transaction_with_retry(
            &mut conn,
            &RetryPolicy {
                max_attempts: 2,
                ..RetryPolicy::occ()
            },
            async |tx| {
                let _: i64 = sqlx::query_scalar("SELECT bal FROM acct WHERE id = 1")
                    .fetch_one(&mut **tx)
                    .await?;
                sqlx::query("UPDATE acct SET bal = bal + 1 WHERE id = 1")
                    .execute(&mut *other.lock().await)
                    .await?;
                sqlx::query("UPDATE acct SET bal = bal - 1 WHERE id = 1")
                    .execute(&mut **tx)
                    .await?;
                Ok::<_, dsql_sqlx::Error>(())
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OccConflict, "{err}");
        assert!(err.to_string().contains("2 attempts"), "{err}");
    })
    .await;
    assert_no_secrets_logged(&local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_burst_of_40_acquires_all_succeed() {
    let local = start(LocalDsql::builder().rate_limit(5, 1)).await;
    let config = config(&local, |_| ());
    guarded("rate limit", async {
        let pool = Pool::connect_with(config, pool_options().max_connections(40))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
                let one: i32 = sqlx::query_scalar("SELECT 1")
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| e.to_string())?;
                // Hold it, so that every acquire needs a connection of its own.
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<_, String>(one)
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        assert!(results.iter().all(|r| r == &Ok(1)), "{results:?}");
        assert!(
            local.counters().refused(RefusalReason::RateExceeded) > 0,
            "the burst never met the rate limit: the test proves nothing"
        );
        pool.close().await;
    })
    .await;
    assert_no_secrets_logged(&local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_stay_out_of_our_debug_and_sqlx_connect_options_is_the_one_place() {
    let local = start(LocalDsql::builder()).await;
    let config = config(&local, |_| ());
    let pool = guarded("pool", Pool::connect(config.clone()))
        .await
        .unwrap();
    let ours = format!("{pool:?} {config:?}");
    assert!(!ours.contains("X-Amz-Signature"), "{ours}");
    assert!(
        !ours.contains(local.credentials().secret_access_key()),
        "{ours}"
    );
    // Documented in the crate docs: sqlx's Debug of its connect options prints the password.
    let sqlx_debug = format!("{:?}", pool.connect_options());
    assert!(
        sqlx_debug.contains("X-Amz-Signature"),
        "sqlx no longer prints the password in Debug: update the crate docs"
    );
    pool.close().await;
    assert_no_secrets_logged(&local);
}

/// A machine waking from sleep: the wall clock jumps past the token's life while the refresher's
/// (monotonic) timer has not fired. Simulated with a manual clock for the token provider: tokens
/// are first signed 1000 s in the past (900 s life: expired for the gateway), then the clock
/// jumps to now. `Pool::acquire` asks the provider before it takes a connection, so the new
/// connection carries a fresh token at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_after_a_wall_clock_jump_uses_a_fresh_token() {
    let local = start(LocalDsql::builder()).await;
    let clock = Arc::new(dsql_auth_core::clock::ManualClock::new(
        SystemTime::now() - Duration::from_secs(1000),
    ));
    let provider = TokenProvider::builder()
        .credentials(local.credentials())
        .clock(clock.clone())
        .build()
        .unwrap();
    let config = config(&local, |_| ()).with_token_provider(provider.clone());
    guarded("clock jump", async {
        let pool = Pool::connect_lazy_with(config, pool_options())
            .await
            .unwrap();
        assert_eq!(provider.stats().signings, 1);
        clock.set(SystemTime::now());
        let mut conn = pool
            .acquire()
            .await
            .unwrap_or_else(|e| panic!("acquire after the jump: {e}"));
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(one, 1);
        assert_eq!(provider.stats().signings, 2);
        assert_eq!(local.counters().refused(RefusalReason::Expired), 0);
        drop(conn);
        pool.close().await;
    })
    .await;
    assert_no_secrets_logged(&local);
}

/// The refresher works while the pool is open and stops when it is closed, or when the last
/// `dsql_sqlx::Pool` handle is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresher_stops_when_the_pool_closes_or_is_dropped() {
    let local = start(LocalDsql::builder()).await;
    for close in [true, false] {
        let provider = short_token_provider(local.credentials());
        let config = config(&local, two_second_tokens).with_token_provider(provider.clone());
        guarded("refresher", async {
            let pool = Pool::connect_lazy_with(config, pool_options())
                .await
                .unwrap();
            // Tokens are due every second (2 s life, 1 s margin): wait for a few refreshes.
            let deadline = Instant::now() + Duration::from_secs(60);
            while provider.stats().signings < 4 {
                assert!(Instant::now() < deadline, "the refresher never refreshed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let pg = pool.pg_pool().clone();
            if close {
                pool.close().await;
            } else {
                drop(pool);
            }
            let after = provider.stats().signings;
            // Three refresh periods: a running refresher would have signed again.
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert!(
                provider.stats().signings <= after + 1,
                "the refresher kept signing after the pool was {}",
                if close { "closed" } else { "dropped" }
            );
            drop(pg);
        })
        .await;
    }
    assert_no_secrets_logged(&local);
}
