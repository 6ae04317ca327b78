//! dsql-bb8 against dsql-local: a TLS gateway that verifies every IAM token, in front of a real
//! PostgreSQL. Needs PostgreSQL's server binaries (`apt-get install postgresql`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use dsql_bb8::{ErrorKind, Pool, PoolBuilder};
use dsql_local::testing::{self, guarded, start};
use dsql_local::{LocalDsql, RefusalReason};
use dsql_tokio_postgres::ErrorKind as ConnectKind;
use dsql_tokio_postgres::{Config, ConnectOptions, TokenProvider};

/// The shared harness's options for `local`, edited, with its credentials.
fn config_with(local: &LocalDsql, edit: impl FnOnce(&mut ConnectOptions)) -> Config {
    let mut options = testing::connect_options(local);
    edit(&mut options);
    Config::new(options)
        .expect("config")
        .with_token_provider(testing::token_provider(local))
}

fn config(local: &LocalDsql) -> Config {
    config_with(local, |_| {})
}

async fn query_once(pool: &Pool) -> Result<i32, String> {
    let conn = pool.get().await.map_err(|e| format!("get: {e}"))?;
    let row = conn
        .query_one("SELECT 1", &[])
        .await
        .map_err(|e| format!("query: {e}"))?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_tokens_and_gateway_connection_age_never_fail_a_query() {
    guarded("rotation", async {
        // Tokens live 8 s and are handed out only with 5 s or more left (ample for a connect on
        // a loaded machine, so no connect races the expiry): a token serves for about 3 s, then
        // a new one is signed. The gateway ends connections at 3 s; the pool retires its
        // connections (1.5-2 s lifetimes) before it would.
        let local = start(LocalDsql::builder().max_connection_age(Duration::from_secs(3))).await;
        let provider = TokenProvider::builder()
            .credentials(local.credentials())
            .min_remaining(Duration::from_secs(5))
            .build()
            .expect("provider");
        let mut options = testing::connect_options(&local);
        options.token_duration = Duration::from_secs(8);
        let config = Config::new(options)
            .expect("config")
            .with_token_provider(provider.clone());
        let pool = PoolBuilder::new()
            .max_size(4)
            .max_lifetime(Duration::from_secs(2))
            .lifetime_jitter(0.25)
            .build(config)
            .await
            .expect("pool");

        let failed = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let until = Instant::now() + Duration::from_secs(12);
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (pool, failed, done) = (pool.clone(), failed.clone(), done.clone());
                tokio::spawn(async move {
                    while Instant::now() < until {
                        match query_once(&pool).await {
                            Ok(1) => done.fetch_add(1, Ordering::Relaxed),
                            Ok(other) => panic!("SELECT 1 returned {other}"),
                            Err(e) => {
                                eprintln!("failed query: {e}");
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.expect("worker panicked");
        }
        let counters = local.counters();
        assert_eq!(failed.load(Ordering::Relaxed), 0, "no query may fail");
        assert!(done.load(Ordering::Relaxed) > 0);
        assert_eq!(
            counters.refused_total(),
            0,
            "every new connection had a valid token: {:?}",
            counters.refusals()
        );
        // 12 s with lifetimes of at most 2 s: every one of the 4 slots was refilled several times.
        assert!(
            counters.accepted() >= 4 * 5,
            "connections were recycled: only {} accepted",
            counters.accepted()
        );
        // 12 s of 8 s tokens reused for about 3 s each: tokens rotated under the pool.
        let signings = provider.stats().signings;
        assert!(signings >= 3, "tokens rotated: only {signings} signed");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_recovers_when_the_gateway_drops_every_connection_twice() {
    guarded("drops", async {
        let local = Arc::new(start(LocalDsql::builder()).await);
        let pool = PoolBuilder::new().max_size(8).build(config(&local)).await.expect("pool");

        let progress = Arc::new(AtomicU64::new(0));
        let retried = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..16)
            .map(|task| {
                let (pool, progress, retried) = (pool.clone(), progress.clone(), retried.clone());
                tokio::spawn(async move {
                    for i in 0..300 {
                        let value = match query_once(&pool).await {
                            Ok(v) => v,
                            Err(first) => {
                                retried.fetch_add(1, Ordering::Relaxed);
                                match query_once(&pool).await {
                                    Ok(v) => v,
                                    Err(second) => panic!("task {task} query {i}: retry failed: {second} (first: {first})"),
                                }
                            }
                        };
                        assert_eq!(value, 1);
                        progress.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();

        // Drop everything twice while the workers run: after a third and two thirds of the queries.
        for mark in [1600, 3200] {
            while progress.load(Ordering::Relaxed) < mark {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            local.drop_all_connections();
        }
        for w in workers {
            w.await.expect("a query failed twice in a row");
        }
        assert_eq!(progress.load(Ordering::Relaxed), 16 * 300);
        eprintln!("queries retried after the drops: {}", retried.load(Ordering::Relaxed));

        // The same pool still serves, with new connections.
        assert_eq!(query_once(&pool).await, Ok(1));
        let counters = local.counters();
        assert!(counters.accepted() > 8, "connections were replaced after the drops: {}", counters.accepted());
        assert_eq!(counters.refused_total(), 0, "{:?}", counters.refusals());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_key_reaches_the_caller_as_access_denied_not_a_timeout() {
    guarded("access denied", async {
        let local = start(LocalDsql::builder()).await;
        let good = local.credentials();
        let bad = Credentials::new(good.access_key_id(), "not-the-secret", None, None, "test");
        let config = config(&local).with_token_provider(TokenProvider::new(bad));
        let pool = Pool::new(config).await.expect("pool");

        // bb8 alone would answer after its 30 s connection timeout; the 10 s guard fails the
        // test if the error is not reported when it happens.
        let err = match tokio::time::timeout(Duration::from_secs(10), pool.get()).await {
            Ok(Ok(_)) => panic!("a bad secret key must not connect"),
            Ok(Err(err)) => err,
            Err(_) => panic!("pool.get() hid the access-denied error behind a timeout"),
        };
        assert_eq!(
            err.kind(),
            ErrorKind::Connect(ConnectKind::AccessDenied),
            "{err}"
        );
        assert_eq!(
            err.connect_error().map(|e| e.kind()),
            Some(ConnectKind::AccessDenied)
        );
        assert!(err.to_string().contains(good.access_key_id()), "{err}");
        assert!(!format!("{err} {err:?}").contains("not-the-secret"));
        assert!(local.counters().refused(RefusalReason::BadSignature) >= 1);
        assert_eq!(local.counters().accepted(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occ_helper_on_pooled_connections_lands_every_increment() {
    guarded("occ", async {
        let local = start(LocalDsql::builder()).await;
        let pool = PoolBuilder::new()
            .max_size(8)
            .build(config(&local))
            .await
            .expect("pool");
        {
            let setup = pool.get().await.expect("get");
            setup
                .batch_execute("CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL)")
                .await
                .unwrap();
            setup
                .execute("INSERT INTO counter VALUES (1, 0)", &[])
                .await
                .unwrap();
        }
        let policy = dsql_tokio_postgres::RetryPolicy {
            max_attempts: 500,
            max_elapsed: None,
            ..dsql_tokio_postgres::RetryPolicy::occ()
        };
        let runs = Arc::new(AtomicU32::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (pool, policy, runs) = (pool.clone(), policy.clone(), runs.clone());
                tokio::spawn(async move {
                    for _ in 0..50 {
                        let mut conn = pool.get().await.expect("get");
                        let runs = &runs;
                        dsql_tokio_postgres::transaction_with_retry(
                            &mut conn,
                            &policy,
                            async |tx| {
                                runs.fetch_add(1, Ordering::Relaxed);
                                tx.execute("UPDATE counter SET n = n + 1 WHERE id = 1", &[])
                                    .await
                            },
                        )
                        .await
                        .expect("increment commits");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task panicked");
        }
        let n: i64 = pool
            .get()
            .await
            .unwrap()
            .query_one("SELECT n FROM counter WHERE id = 1", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 400);
        // Whether increments overlapped depends on scheduling; what must hold either way: each
        // landed exactly once. (dsql-tokio-postgres's tests force a conflict by hand.)
        let runs = runs.load(Ordering::Relaxed);
        assert!(runs >= 400, "closure ran {runs} times");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pool_settings_are_errors_not_panics() {
    let config: Config =
        "postgres://admin@abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws/postgres"
            .parse::<Config>()
            .expect("config")
            .with_token_provider(TokenProvider::new(Credentials::new(
                "AKID", "secret", None, None, "test",
            )));
    for (builder, needle) in [
        (PoolBuilder::new().max_size(0), "max_size"),
        (PoolBuilder::new().max_size(2).min_idle(3), "min_idle"),
        (PoolBuilder::new().lifetime_jitter(1.0), "jitter"),
        (PoolBuilder::new().lifetime_jitter(f64::NAN), "jitter"),
        (
            PoolBuilder::new().max_lifetime(Duration::ZERO),
            "max_lifetime",
        ),
        (
            PoolBuilder::new().idle_timeout(Duration::ZERO),
            "idle_timeout",
        ),
        (
            PoolBuilder::new().connection_timeout(Duration::ZERO),
            "connection_timeout",
        ),
    ] {
        match builder.build(config.clone()).await {
            Err(err) if err.kind() == ErrorKind::Config => {
                assert!(err.to_string().contains(needle), "{err}")
            }
            other => panic!("expected a configuration error about {needle}, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_carries_the_last_connect_failure() {
    guarded("timeout", async {
        // A port nobody listens on: a network failure, which bb8 keeps retrying until the
        // connection timeout; the caller then learns why no connection came.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let config = Config::new(
            ConnectOptions::new("abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws")
                .hostaddr([127, 0, 0, 1].into())
                .port(port),
        )
        .expect("config")
        .with_token_provider(TokenProvider::new(Credentials::new(
            "AKID", "secret", None, None, "test",
        )));
        let pool = PoolBuilder::new()
            .connection_timeout(Duration::from_millis(800))
            .build(config)
            .await
            .expect("pool");
        let err = pool.get().await.expect_err("nothing listens");
        assert_eq!(err.kind(), ErrorKind::PoolTimeout, "{err:?}");
        assert_eq!(
            err.connect_error().map(|e| e.kind()),
            Some(ConnectKind::Connect),
            "{err}"
        );
        assert!(
            err.to_string().contains(&port.to_string()),
            "names where it tried: {err}"
        );
    })
    .await;
}
