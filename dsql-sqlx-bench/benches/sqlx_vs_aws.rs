//! dsql-sqlx against AWS's `aurora-dsql-sqlx-connector` (the anchor), both through one dsql-local
//! gateway, in one process, measured in alternation.
//!
//! - `sqlx_pool_query`: 4 tasks × 25 `SELECT 1` per iteration on a 4-connection pool. Ours goes
//!   through [`dsql_sqlx::Pool::acquire`] (it asks the token provider before every acquire), the
//!   anchor through sqlx's `PgPool` as its users do.
//! - `sqlx_new_connection`: one new connection (TCP, TLS, token, startup) and its close. Ours:
//!   `dsql_sqlx::connect` (token from the provider's cache); the anchor:
//!   `connection::connect_with` (it loads the AWS config and signs per connection).
//!
//! Both dial `localhost`, send SNI `localhost` and sign for `localhost`, a host alias of the
//! local cluster (the anchor signs for the host it dials and has no PrivateLink mode).
//!
//! Each timed iteration of one side is followed by an untimed iteration of the other, so both
//! are measured under the same alternating load.
//!
//! Run: `cargo bench -p dsql-sqlx-bench --bench sqlx_vs_aws`

use std::time::{Duration, Instant};

use aurora_dsql_sqlx_connector::{
    DsqlConnectOptions, DsqlConnectOptionsBuilder, Region, SharedCredentialsProvider,
};
use criterion::{Criterion, criterion_group, criterion_main};
use dsql_local::LocalDsql;
use dsql_sqlx::{Config, TokenProvider};
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

const TASKS: usize = 4;
const QUERIES_PER_TASK: usize = 25;
const WARM_UP_ROUNDS: usize = 30;

async fn ours_workload(pool: &dsql_sqlx::Pool) {
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for _ in 0..QUERIES_PER_TASK {
                    let mut conn = pool
                        .acquire()
                        .await
                        .unwrap_or_else(|e| panic!("acquire: {e}"));
                    let _: i32 = sqlx::query_scalar("SELECT 1")
                        .fetch_one(&mut *conn)
                        .await
                        .unwrap_or_else(|e| panic!("query: {e}"));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("task: {e}"));
    }
}

async fn anchor_workload(pool: &PgPool) {
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for _ in 0..QUERIES_PER_TASK {
                    let _: i32 = sqlx::query_scalar("SELECT 1")
                        .fetch_one(&pool)
                        .await
                        .unwrap_or_else(|e| panic!("query: {e}"));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("task: {e}"));
    }
}

async fn ours_connect(config: &Config) {
    let conn = dsql_sqlx::connect(config)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    conn.close().await.unwrap_or_else(|e| panic!("close: {e}"));
}

async fn anchor_connect(opts: &DsqlConnectOptions) {
    let conn = aurora_dsql_sqlx_connector::connection::connect_with(opts)
        .await
        .unwrap_or_else(|e| panic!("anchor connect: {e}"));
    conn.close().await.unwrap_or_else(|e| panic!("close: {e}"));
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    // No rate limit in the way: the connection benches open thousands of connections.
    let local = rt
        .block_on(
            LocalDsql::builder()
                .host_alias("localhost")
                .rate_limit(1_000_000, 1_000_000)
                .start(),
        )
        .unwrap_or_else(|e| panic!("dsql-local could not start: {e}"));

    let url = format!(
        "postgres://admin@localhost:{}/postgres?region={}&sslrootcert={}",
        local.port(),
        local.region(),
        local.ca_path().display()
    );
    let config = Config::new(url.parse().unwrap_or_else(|e| panic!("{url}: {e}")))
        .unwrap_or_else(|e| panic!("config: {e}"))
        .with_token_provider(TokenProvider::new(local.credentials()));
    let anchor_opts = DsqlConnectOptionsBuilder::default()
        .pg_connect_options(
            PgConnectOptions::new_without_pgpass()
                .host("localhost")
                .port(local.port())
                .username("admin")
                .database("postgres")
                .ssl_root_cert(local.ca_path()),
        )
        .region(Region::new(local.region().to_owned()))
        .credentials_provider(SharedCredentialsProvider::new(local.credentials()))
        .build()
        .unwrap_or_else(|e| panic!("anchor options: {e}"));

    // Same sqlx pool settings on both sides; ours adds DSQL's lifetime/idle defaults, which do
    // not act within a benchmark run.
    let sizing = |o: PgPoolOptions| {
        o.max_connections(TASKS as u32)
            .min_connections(TASKS as u32)
    };
    let ours = rt
        .block_on(dsql_sqlx::Pool::connect_with(
            config.clone(),
            sizing(dsql_sqlx::pool_options()),
        ))
        .unwrap_or_else(|e| panic!("pool: {e}"));
    let anchor = rt
        .block_on(aurora_dsql_sqlx_connector::pool::connect_with(
            &anchor_opts,
            sizing(PgPoolOptions::new()),
        ))
        .unwrap_or_else(|e| panic!("anchor pool: {e}"));

    let (ours, anchor, config, anchor_opts) = (&ours, &anchor, &config, &anchor_opts);
    rt.block_on(async {
        for _ in 0..WARM_UP_ROUNDS {
            ours_workload(ours).await;
            anchor_workload(anchor).await;
            ours_connect(config).await;
            anchor_connect(anchor_opts).await;
        }
    });

    let mut group = c.benchmark_group("sqlx_pool_query");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(10));
    group.throughput(criterion::Throughput::Elements(
        (TASKS * QUERIES_PER_TASK) as u64,
    ));
    group.bench_function("dsql-rs", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                ours_workload(ours).await;
                timed += started.elapsed();
                anchor_workload(anchor).await;
            }
            timed
        })
    });
    group.bench_function("anchor", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                anchor_workload(anchor).await;
                timed += started.elapsed();
                ours_workload(ours).await;
            }
            timed
        })
    });
    group.finish();

    let mut group = c.benchmark_group("sqlx_new_connection");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("dsql-rs", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                ours_connect(config).await;
                timed += started.elapsed();
                anchor_connect(anchor_opts).await;
            }
            timed
        })
    });
    group.bench_function("anchor", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                anchor_connect(anchor_opts).await;
                timed += started.elapsed();
                ours_connect(config).await;
            }
            timed
        })
    });
    group.finish();

    rt.block_on(async {
        ours.close().await;
        anchor.close().await;
    });
}

// criterion_group! makes a `pub fn benches` without docs (the workspace denies missing_docs).
#[allow(missing_docs)]
mod groups {
    use super::*;
    criterion_group!(benches, bench);
}
criterion_main!(groups::benches);
