//! dsql-diesel's pools (bb8 and deadpool) against dsql-local: a TLS gateway that verifies every
//! IAM token, in front of a real PostgreSQL. Needs PostgreSQL's server binaries
//! (`apt-get install postgresql`). Every scenario runs through each pool feature that is on:
//! `cargo test -p dsql-diesel --all-features` runs them all.
#![cfg(any(feature = "bb8", feature = "deadpool"))]

use std::future::Future;
use std::ops::DerefMut;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use diesel::prelude::*;
use diesel::sql_types::Integer;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use dsql_diesel::{
    Config, ConnectOptions, Error, ErrorKind, RetryPolicy, TokenProvider, transaction_with_retry,
};
use dsql_local::testing::{self, guarded, start};
use dsql_local::{LocalDsql, RefusalReason};

diesel::table! {
    /// Rows the pool tests write and read.
    items (id) {
        /// Primary key.
        id -> Int8,
        /// Item name.
        name -> Text,
        /// Quantity.
        qty -> Int4,
    }
}

diesel::table! {
    /// One counter row that concurrent transactions increment (OCC conflicts).
    counter (id) {
        /// Primary key.
        id -> Int4,
        /// The count.
        n -> Int8,
    }
}

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

/// What the scenarios need from a pool, implemented for both.
trait TestPool: Clone + Send + Sync + 'static {
    type Conn: DerefMut<Target = AsyncPgConnection> + Send + 'static;
    fn build(
        config: Config,
        max_size: u32,
        lifetime: Option<(Duration, f64)>,
    ) -> impl Future<Output = Result<Self, Error>> + Send {
        Self::build_idle(config, max_size, lifetime, None)
    }
    fn build_idle(
        config: Config,
        max_size: u32,
        lifetime: Option<(Duration, f64)>,
        idle_timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Self, Error>> + Send;
    fn checkout(&self) -> impl Future<Output = Result<Self::Conn, Error>> + Send;
    fn open_connections(&self) -> usize;
}

#[cfg(feature = "bb8")]
impl TestPool for dsql_diesel::bb8::Pool {
    type Conn = dsql_diesel::bb8::PooledConnection<'static>;

    async fn build_idle(
        config: Config,
        max_size: u32,
        lifetime: Option<(Duration, f64)>,
        idle_timeout: Option<Duration>,
    ) -> Result<Self, Error> {
        let mut builder = dsql_diesel::bb8::Pool::builder().max_size(max_size);
        if let Some((max, jitter)) = lifetime {
            builder = builder.max_lifetime(max).lifetime_jitter(jitter);
        }
        if let Some(idle) = idle_timeout {
            builder = builder
                .idle_timeout(idle)
                .configure(|b| b.reaper_rate(Duration::from_millis(100)));
        }
        builder.build(config).await
    }

    fn open_connections(&self) -> usize {
        self.state().connections as usize
    }

    async fn checkout(&self) -> Result<Self::Conn, Error> {
        self.get_owned().await
    }
}

#[cfg(feature = "deadpool")]
impl TestPool for dsql_diesel::deadpool::Pool {
    type Conn = dsql_diesel::deadpool::Object;

    async fn build_idle(
        config: Config,
        max_size: u32,
        lifetime: Option<(Duration, f64)>,
        idle_timeout: Option<Duration>,
    ) -> Result<Self, Error> {
        let mut builder = dsql_diesel::deadpool::Pool::builder().max_size(max_size as usize);
        if let Some((max, jitter)) = lifetime {
            builder = builder.max_lifetime(max).lifetime_jitter(jitter);
        }
        if let Some(idle) = idle_timeout {
            builder = builder.idle_timeout(idle);
        }
        builder.build(config)
    }

    fn open_connections(&self) -> usize {
        self.status().size
    }

    async fn checkout(&self) -> Result<Self::Conn, Error> {
        self.get().await
    }
}

async fn select_one<P: TestPool>(pool: &P) -> Result<i32, String> {
    let mut conn = pool.checkout().await.map_err(|e| format!("get: {e}"))?;
    diesel::select(1.into_sql::<Integer>())
        .get_result::<i32>(&mut *conn)
        .await
        .map_err(|e| format!("query: {e}"))
}

async fn crud<P: TestPool>() {
    guarded("crud", async {
        let local = start(LocalDsql::builder()).await;
        let pool = P::build(config(&local), 4, None).await.expect("pool");
        let mut conn = pool.checkout().await.expect("get");
        let conn = &mut *conn;
        conn.batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, qty int NOT NULL)",
        )
        .await
        .expect("create table");

        let inserted = diesel::insert_into(items::table)
            .values(&[
                (items::id.eq(1), items::name.eq("bolt"), items::qty.eq(10)),
                (items::id.eq(2), items::name.eq("nut"), items::qty.eq(20)),
                (items::id.eq(3), items::name.eq("gear"), items::qty.eq(3)),
            ])
            .execute(conn)
            .await
            .expect("insert");
        assert_eq!(inserted, 3);

        let plenty: Vec<(i64, String)> = items::table
            .filter(items::qty.ge(10))
            .order(items::id)
            .select((items::id, items::name))
            .load(conn)
            .await
            .expect("select");
        assert_eq!(plenty, vec![(1, "bolt".to_owned()), (2, "nut".to_owned())]);

        let updated = diesel::update(items::table.find(3))
            .set(items::qty.eq(items::qty + 7))
            .execute(conn)
            .await
            .expect("update");
        assert_eq!(updated, 1);
        let gear: i32 = items::table
            .find(3)
            .select(items::qty)
            .first(conn)
            .await
            .expect("find");
        assert_eq!(gear, 10);

        let deleted = diesel::delete(items::table.filter(items::name.eq("nut")))
            .execute(conn)
            .await
            .expect("delete");
        assert_eq!(deleted, 1);
        let left: i64 = items::table.count().get_result(conn).await.expect("count");
        assert_eq!(left, 2);

        // Each pooled connection carries its own lifetime, under the 55-minute default.
        let expires =
            dsql_diesel::connection_expires_at(conn).expect("a pooled connection has a lifetime");
        assert!(
            expires
                <= Instant::now()
                    + dsql_diesel::PoolPolicy::default()
                        .max_lifetime
                        .expect("a default lifetime")
        );
        assert!(expires > Instant::now() + Duration::from_secs(45 * 60));
    })
    .await;
}

#[cfg(feature = "bb8")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_with_diesel_dsl_through_bb8() {
    crud::<dsql_diesel::bb8::Pool>().await;
}

#[cfg(feature = "deadpool")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_with_diesel_dsl_through_deadpool() {
    crud::<dsql_diesel::deadpool::Pool>().await;
}

async fn churn<P: TestPool>() {
    guarded("churn", async {
        // Tokens live 2 s and the gateway ends connections at 3 s; the pool retires connections
        // after 1.5-2 s. The provider hands out a token only while 1.5 s of it remain (the
        // default margin, a quarter of the life, would leave 0.5 s for TCP, TLS and startup:
        // issue 15), so every connect has at least a second of token life.
        let local = start(LocalDsql::builder().max_connection_age(Duration::from_secs(3))).await;
        let provider = TokenProvider::builder()
            .credentials(local.credentials())
            .min_remaining(Duration::from_millis(1500))
            .build()
            .expect("provider");
        let config = config_with(&local, |o| o.token_duration = Duration::from_secs(2))
            .with_token_provider(provider);
        let pool = P::build(config, 4, Some((Duration::from_secs(2), 0.25)))
            .await
            .expect("pool");

        let failed = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let until = Instant::now() + Duration::from_secs(12);
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (pool, failed, done) = (pool.clone(), failed.clone(), done.clone());
                tokio::spawn(async move {
                    while Instant::now() < until {
                        match select_one(&pool).await {
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
        assert_eq!(
            AtomicU64::load(&failed, Ordering::Relaxed),
            0,
            "no query may fail"
        );
        assert!(AtomicU64::load(&done, Ordering::Relaxed) > 0);
        assert_eq!(
            counters.refused_total(),
            0,
            "every connect had a valid token: {:?}",
            counters.refusals()
        );
        // 12 s with lifetimes of at most 2 s: the 4 slots were refilled several times over.
        assert!(
            counters.accepted() >= 4 * 5,
            "connections were recycled: only {} accepted",
            counters.accepted()
        );
    })
    .await;
}

#[cfg(feature = "bb8")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bb8_short_tokens_and_connection_age_never_fail_a_query() {
    churn::<dsql_diesel::bb8::Pool>().await;
}

#[cfg(feature = "deadpool")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_short_tokens_and_connection_age_never_fail_a_query() {
    churn::<dsql_diesel::deadpool::Pool>().await;
}

async fn wrong_secret<P: TestPool>() {
    guarded("access denied", async {
        let local = start(LocalDsql::builder()).await;
        let good = local.credentials();
        let bad = Credentials::new(good.access_key_id(), "not-the-secret", None, None, "test");
        let config = config(&local).with_token_provider(TokenProvider::new(bad));
        let pool = P::build(config, 4, None).await.expect("pool");

        // The pools wait 30 s by default; the answer must come when the failure happens.
        let err = match tokio::time::timeout(Duration::from_secs(2), pool.checkout()).await {
            Ok(Ok(_)) => panic!("a bad secret key must not connect"),
            Ok(Err(err)) => err,
            Err(_) => panic!("checkout hid the access-denied error behind a timeout"),
        };
        assert_eq!(
            err.kind(),
            ErrorKind::Connect(dsql_diesel::dsql_tokio_postgres::ErrorKind::AccessDenied),
            "{err}"
        );
        assert!(!err.is_timeout());
        let message = err.to_string();
        for needle in [
            good.access_key_id(),
            local.host(),
            local.region(),
            "DbConnectAdmin",
        ] {
            assert!(message.contains(needle), "names {needle}: {message}");
        }
        assert!(!format!("{err} {err:?}").contains("not-the-secret"));

        // Through diesel's own error type the message survives.
        let diesel_err = diesel::ConnectionError::from(err);
        let text = diesel_err.to_string();
        assert!(
            matches!(diesel_err, diesel::ConnectionError::BadConnection(_)),
            "{diesel_err:?}"
        );
        assert!(
            text.contains(good.access_key_id()) && !text.contains("not-the-secret"),
            "{text}"
        );

        assert!(local.counters().refused(RefusalReason::BadSignature) >= 1);
        assert_eq!(local.counters().accepted(), 0);
    })
    .await;
}

#[cfg(feature = "bb8")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bb8_wrong_secret_is_access_denied_at_once() {
    wrong_secret::<dsql_diesel::bb8::Pool>().await;
}

#[cfg(feature = "deadpool")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_wrong_secret_is_access_denied_at_once() {
    wrong_secret::<dsql_diesel::deadpool::Pool>().await;
}

async fn occ_increments<P: TestPool>() {
    guarded("occ", async {
        let local = start(LocalDsql::builder()).await;
        let pool = P::build(config(&local), 8, None).await.expect("pool");
        {
            let mut setup = pool.checkout().await.expect("get");
            setup
                .batch_execute("CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL)")
                .await
                .expect("create");
            setup
                .batch_execute("INSERT INTO counter VALUES (1, 0)")
                .await
                .expect("insert");
        }
        let policy = RetryPolicy {
            max_attempts: 500,
            max_elapsed: None,
            ..RetryPolicy::occ()
        };
        let runs = Arc::new(AtomicU32::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (pool, policy, runs) = (pool.clone(), policy.clone(), runs.clone());
                tokio::spawn(async move {
                    for _ in 0..50 {
                        let mut conn = pool.checkout().await.expect("get");
                        let runs = &runs;
                        transaction_with_retry(&mut *conn, &policy, async |conn| {
                            runs.fetch_add(1, Ordering::Relaxed);
                            diesel::update(counter::table.find(1))
                                .set(counter::n.eq(counter::n + 1))
                                .execute(conn)
                                .await
                        })
                        .await
                        .expect("increment commits");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task panicked");
        }
        let mut conn = pool.checkout().await.expect("get");
        let n: i64 = counter::table
            .find(1)
            .select(counter::n)
            .first(&mut *conn)
            .await
            .expect("read");
        assert_eq!(n, 400);
        // Conflicts are not asserted here (they depend on scheduling); the interleaved test
        // below makes one certain.
        assert!(AtomicU32::load(&runs, Ordering::Relaxed) >= 400);
    })
    .await;
}

#[cfg(feature = "bb8")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bb8_occ_helper_lands_every_increment() {
    occ_increments::<dsql_diesel::bb8::Pool>().await;
}

#[cfg(feature = "deadpool")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_occ_helper_lands_every_increment() {
    occ_increments::<dsql_diesel::deadpool::Pool>().await;
}

/// A user's own error type, as `thiserror` would make it with `#[error(transparent)]`.
#[derive(Debug)]
enum AppError {
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        AppError::Db(e)
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::Db(e) => e.fmt(f),
        }
    }
}

/// One certain conflict: B reads (its snapshot), A commits an update, B updates the same row.
/// Returns B's result and how often B's body ran.
async fn interleaved_conflict<P: TestPool>(
    pool: &P,
    policy: &RetryPolicy,
) -> (Result<(), AppError>, u32) {
    let mut a = pool.checkout().await.expect("get a");
    let mut b = pool.checkout().await.expect("get b");
    let (snapshot_taken, mut wait_snapshot) = tokio::sync::mpsc::channel::<()>(1);
    let (go, wait_go) = tokio::sync::oneshot::channel::<()>();
    // The body is called once per attempt and may not mutate captured locals (its future must
    // be Send, see `OccBody`): shared state goes through a Mutex and an atomic.
    let gate = std::sync::Mutex::new(Some((snapshot_taken, wait_go)));
    let runs = AtomicU32::new(0);
    let b_side = transaction_with_retry(&mut *b, policy, async |conn| -> Result<(), AppError> {
        runs.fetch_add(1, Ordering::Relaxed);
        let _: i64 = counter::table
            .find(1)
            .select(counter::n)
            .first(conn)
            .await?;
        let first_attempt = gate.lock().expect("gate").take();
        if let Some((taken, go)) = first_attempt {
            taken.send(()).await.expect("test side listens");
            go.await.expect("test side sends go");
        }
        diesel::update(counter::table.find(1))
            .set(counter::n.eq(counter::n + 1))
            .execute(conn)
            .await?;
        Ok(())
    });
    let a_side = async {
        wait_snapshot.recv().await.expect("b took its snapshot");
        diesel::update(counter::table.find(1))
            .set(counter::n.eq(counter::n + 10))
            .execute(&mut *a)
            .await
            .expect("a commits");
        go.send(()).expect("b waits");
    };
    let (result, ()) = tokio::join!(b_side, a_side);
    (result, runs.into_inner())
}

async fn occ_interleaved<P: TestPool>() {
    guarded("occ interleaved", async {
        let local = start(LocalDsql::builder()).await;
        let pool = P::build(config(&local), 4, None).await.expect("pool");
        {
            let mut setup = pool.checkout().await.expect("get");
            setup
                .batch_execute("CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL)")
                .await
                .expect("create");
            setup
                .batch_execute("INSERT INTO counter VALUES (1, 0)")
                .await
                .expect("insert");
        }

        // With retries: B's body runs twice and its increment lands once.
        let (result, runs) = interleaved_conflict(&pool, &RetryPolicy::occ()).await;
        result.expect("the retry commits");
        assert_eq!(runs, 2, "the conflict reran the whole transaction once");

        // Without retries: the conflict comes back as a SerializationFailure saying what to do.
        let (result, runs) = interleaved_conflict(&pool, &RetryPolicy::no_retry()).await;
        assert_eq!(runs, 1);
        let AppError::Db(err) = result.expect_err("no retry allowed");
        match &err {
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::SerializationFailure,
                info,
            ) => {
                assert!(
                    info.message().contains("still conflicted"),
                    "{}",
                    info.message()
                );
                assert!(info.message().contains("(OC000)"), "{}", info.message());
                assert!(info.details().is_some_and(|d| d.contains("(OC000)")));
            }
            other => panic!("expected a serialization failure, got {other:?}"),
        }

        let mut conn = pool.checkout().await.expect("get");
        let n: i64 = counter::table
            .find(1)
            .select(counter::n)
            .first(&mut *conn)
            .await
            .expect("read");
        assert_eq!(
            n,
            10 + 1 + 10,
            "A's two updates and B's one retried increment"
        );
        // A non-OCC error is returned at once, without a rerun.
        let runs = AtomicU32::new(0);
        let err = transaction_with_retry(&mut *conn, &RetryPolicy::occ(), async |conn| {
            runs.fetch_add(1, Ordering::Relaxed);
            conn.batch_execute("SELECT * FROM no_such_table").await
        })
        .await
        .expect_err("no such table");
        assert_eq!(runs.into_inner(), 1, "{err}");
        // The connection is usable afterwards (the failed transaction was rolled back).
        let n: i64 = counter::table
            .find(1)
            .select(counter::n)
            .first(&mut *conn)
            .await
            .expect("read");
        assert_eq!(n, 21);
    })
    .await;
}

#[cfg(feature = "bb8")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bb8_occ_conflict_is_retried_and_exhaustion_explained() {
    occ_interleaved::<dsql_diesel::bb8::Pool>().await;
}

#[cfg(feature = "deadpool")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_occ_conflict_is_retried_and_exhaustion_explained() {
    occ_interleaved::<dsql_diesel::deadpool::Pool>().await;
}

async fn drops<P: TestPool>() {
    guarded("drops", async {
        let local = Arc::new(start(LocalDsql::builder()).await);
        let pool = P::build(config(&local), 8, None).await.expect("pool");

        let progress = Arc::new(AtomicU64::new(0));
        let retried = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..16)
            .map(|task| {
                let (pool, progress, retried) = (pool.clone(), progress.clone(), retried.clone());
                tokio::spawn(async move {
                    for i in 0..300 {
                        let value = match select_one(&pool).await {
                            Ok(v) => v,
                            Err(first) => {
                                retried.fetch_add(1, Ordering::Relaxed);
                                match select_one(&pool).await {
                                    Ok(v) => v,
                                    Err(second) => panic!(
                                        "task {task} query {i}: retry failed: {second} (first: {first})"
                                    ),
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
            while AtomicU64::load(&progress, Ordering::Relaxed) < mark {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            local.drop_all_connections();
        }
        for w in workers {
            w.await.expect("a query failed twice in a row");
        }
        assert_eq!(AtomicU64::load(&progress, Ordering::Relaxed), 16 * 300);
        eprintln!("queries retried after the drops: {}", AtomicU64::load(&retried, Ordering::Relaxed));
        assert_eq!(select_one(&pool).await, Ok(1));
        let counters = local.counters();
        assert!(counters.accepted() > 8, "connections were replaced after the drops: {}", counters.accepted());
        assert_eq!(counters.refused_total(), 0, "{:?}", counters.refusals());
    })
    .await;
}

#[cfg(feature = "bb8")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bb8_recovers_from_two_drops_of_every_connection() {
    drops::<dsql_diesel::bb8::Pool>().await;
}

#[cfg(feature = "deadpool")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_recovers_from_two_drops_of_every_connection() {
    drops::<dsql_diesel::deadpool::Pool>().await;
}

async fn backend_pid<P: TestPool>(conn: &mut P::Conn) -> i32 {
    diesel::select(diesel::dsl::sql::<Integer>("pg_backend_pid()"))
        .get_result(&mut **conn)
        .await
        .expect("pg_backend_pid")
}

/// Waits (bounded) until `now` is past `at`: a state, not a guess.
async fn sleep_past(at: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(at) + Duration::from_millis(10)).await;
}

async fn lifetime_and_idle<P: TestPool>() {
    guarded("lifetime and idle", async {
        let local = start(LocalDsql::builder()).await;

        // Each connection's own (jittered) lifetime, here 150-300 ms, is enforced at checkout:
        // a connection past it is closed and another one handed out (bb8 itself checks its
        // maximum lifetime only when a connection is returned and every 30 s).
        let pool = P::build(config(&local), 1, Some((Duration::from_millis(300), 0.5)))
            .await
            .expect("pool");
        let mut conn = pool.checkout().await.expect("get");
        let first_pid = backend_pid::<P>(&mut conn).await;
        let expires = dsql_diesel::connection_expires_at(&mut conn).expect("lifetime");
        assert!(expires <= Instant::now() + Duration::from_millis(300));
        drop(conn);
        sleep_past(expires).await;
        let mut conn = pool.checkout().await.expect("get after the lifetime");
        assert_ne!(
            backend_pid::<P>(&mut conn).await,
            first_pid,
            "an expired connection was handed out"
        );
        drop(conn);

        // Idle connections are closed by the pool itself, without a checkout.
        let pool = P::build_idle(config(&local), 2, None, Some(Duration::from_millis(300)))
            .await
            .expect("pool");
        let conn = pool.checkout().await.expect("get");
        drop(conn);
        assert_eq!(pool.open_connections(), 1);
        let deadline = Instant::now() + Duration::from_secs(30);
        while pool.open_connections() > 0 {
            assert!(
                Instant::now() < deadline,
                "the idle connection was never closed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[cfg(feature = "bb8")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bb8_retires_connections_at_their_own_lifetime_and_when_idle() {
    lifetime_and_idle::<dsql_diesel::bb8::Pool>().await;
}

#[cfg(feature = "deadpool")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_retires_connections_at_their_own_lifetime_and_when_idle() {
    lifetime_and_idle::<dsql_diesel::deadpool::Pool>().await;
}

/// A configuration that never connects: for settings checks.
fn unreachable_config() -> Config {
    "postgres://admin@abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws/postgres"
        .parse::<Config>()
        .expect("config")
        .with_token_provider(TokenProvider::new(Credentials::new(
            "AKID", "secret", None, None, "test",
        )))
}

#[cfg(feature = "bb8")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bb8_bad_pool_settings_are_errors_not_panics() {
    use dsql_diesel::bb8::PoolBuilder as B;
    let cases = [
        (B::new().max_size(0), "max_size"),
        (B::new().lifetime_jitter(1.0), "jitter"),
        (B::new().lifetime_jitter(f64::NAN), "jitter"),
        (B::new().max_lifetime(Duration::ZERO), "max_lifetime"),
        (B::new().idle_timeout(Duration::ZERO), "idle_timeout"),
        (
            B::new().connection_timeout(Duration::ZERO),
            "connection_timeout",
        ),
    ];
    for (builder, needle) in cases {
        let err = builder.build(unreachable_config()).await.expect_err(needle);
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains(needle), "{err}");
    }
}

#[cfg(feature = "deadpool")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_bad_pool_settings_are_errors_not_panics() {
    use dsql_diesel::deadpool::PoolBuilder as D;
    let cases = [
        (D::new().max_size(0), "max_size"),
        (D::new().lifetime_jitter(-0.5), "jitter"),
        (D::new().max_lifetime(Duration::ZERO), "max_lifetime"),
        (D::new().idle_timeout(Duration::ZERO), "idle_timeout"),
        (D::new().wait_timeout(Duration::ZERO), "wait_timeout"),
    ];
    for (builder, needle) in cases {
        let err = builder.build(unreachable_config()).expect_err(needle);
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains(needle), "{err}");
    }
}
