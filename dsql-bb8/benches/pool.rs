//! Pool query throughput through dsql-local: 100 × `SELECT 1` per iteration, 4 tasks each
//! checking a connection out of a 4-connection pool for every query.
//!
//! - `pool_query/dsql-rs`: [`dsql_bb8::Pool`] (DSQL defaults: validation on checkout, jittered
//!   lifetimes, connect failures reported to the caller).
//! - `pool_query/anchor`: `bb8-postgres` over bb8 with a fixed tokio-postgres config carrying a
//!   token signed before the run, same TLS connector, bb8's defaults (also validating on checkout).
//!
//! The two are measured interleaved (see the comment in `bench_pool`).
//!
//! Run: `cargo bench -p dsql-bb8 --bench pool`

use std::time::{Duration, Instant};

use bb8_postgres::PostgresConnectionManager;
use criterion::{Criterion, criterion_group, criterion_main};
use dsql_bb8::PoolBuilder;
use dsql_local::LocalDsql;
use dsql_tokio_postgres::tokio_postgres_rustls::MakeRustlsConnect;
use dsql_tokio_postgres::{Config, TokenProvider};

const TASKS: usize = 4;
const QUERIES_PER_TASK: usize = 25;
const WARM_UP_ROUNDS: usize = 50;

/// One iteration: `TASKS` tasks, each checking a connection out for every one of its
/// `QUERIES_PER_TASK` queries. A macro because the two pools' `get` differ in type only.
macro_rules! workload {
    ($pool:expr) => {{
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let pool = $pool.clone();
                tokio::spawn(async move {
                    for _ in 0..QUERIES_PER_TASK {
                        let conn = pool.get().await.unwrap_or_else(|e| panic!("get: {e}"));
                        conn.query_one("SELECT 1", &[])
                            .await
                            .unwrap_or_else(|e| panic!("query: {e}"));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap_or_else(|e| panic!("task: {e}"));
        }
    }};
}

fn bench_pool(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    let local = rt
        .block_on(LocalDsql::start())
        .unwrap_or_else(|e| panic!("dsql-local could not start: {e}"));
    let config: Config = local
        .connection_string()
        .parse::<Config>()
        .unwrap_or_else(|e| panic!("config: {e}"))
        .with_token_provider(TokenProvider::new(local.credentials()));

    let ours = rt
        .block_on(
            PoolBuilder::new()
                .max_size(TASKS as u32)
                .min_idle(TASKS as u32)
                .build(config.clone()),
        )
        .unwrap_or_else(|e| panic!("pool: {e}"));
    let token = rt
        .block_on(config.token())
        .unwrap_or_else(|e| panic!("token: {e}"));
    let manager =
        PostgresConnectionManager::new(config.pg_config_with_token(&token), config.tls().clone());
    let anchor: bb8::Pool<PostgresConnectionManager<MakeRustlsConnect>> = rt
        .block_on(
            bb8::Pool::builder()
                .max_size(TASKS as u32)
                .min_idle(TASKS as u32)
                .build(manager),
        )
        .unwrap_or_else(|e| panic!("anchor pool: {e}"));

    // Criterion measures one bench after the other, and whichever ran second measured ~10%
    // faster even after a shared warm-up: an artifact of the order, not of the pool. So each
    // timed iteration of one pool is followed by an untimed iteration of the other, and both are
    // measured under the same alternating load.
    let (ours, anchor) = (&ours, &anchor);
    rt.block_on(async {
        for _ in 0..WARM_UP_ROUNDS {
            workload!(ours);
            workload!(anchor);
        }
    });

    let mut group = c.benchmark_group("pool_query");
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
                workload!(ours);
                timed += started.elapsed();
                workload!(anchor);
            }
            timed
        })
    });
    group.bench_function("anchor", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                workload!(anchor);
                timed += started.elapsed();
                workload!(ours);
            }
            timed
        })
    });
    group.finish();
    // The pools drop before `local` (declared first), so they close before the gateway stops.
}

criterion_group!(benches, bench_pool);
criterion_main!(benches);
