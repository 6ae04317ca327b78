//! Pool query throughput through dsql-local: 100 × `SELECT 1` (diesel DSL) per iteration, 4 tasks
//! each checking a connection out of a 4-connection pool for every query.
//!
//! - `diesel_pool_query/dsql-rs`: [`dsql_diesel::bb8::Pool`] (DSQL policy: checkout validation
//!   with the lifetime check and an empty query, jittered lifetimes, connect failures reported).
//! - `diesel_pool_query/anchor`: diesel-async's own bb8 pool, its `custom_setup` connecting with
//!   a fixed tokio-postgres config carrying a token signed before the run and the same TLS
//!   connector; diesel-async's default recycling (`SELECT 1` on checkout).
//!
//! Measured interleaved, as dsql-bb8's pool bench: each timed iteration of one pool is followed
//! by an untimed one of the other, so both run under the same alternating load.
//!
//! Run: `cargo bench -p dsql-diesel --bench pool`

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use diesel::IntoSql;
use diesel::sql_types::Integer;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use dsql_diesel::{Config, TokenProvider};
use dsql_local::LocalDsql;
use futures_util::FutureExt;

const TASKS: usize = 4;
const QUERIES_PER_TASK: usize = 25;
const WARM_UP_ROUNDS: usize = 50;

/// One iteration: `TASKS` tasks, each checking a connection out for every query. A macro because
/// the two pools' `get` differ in type only.
macro_rules! workload {
    ($pool:expr) => {{
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let pool = $pool.clone();
                tokio::spawn(async move {
                    for _ in 0..QUERIES_PER_TASK {
                        let mut conn = pool.get().await.unwrap_or_else(|e| panic!("get: {e}"));
                        let one: i32 = diesel::select(1.into_sql::<Integer>())
                            .get_result(&mut *conn)
                            .await
                            .unwrap_or_else(|e| panic!("query: {e}"));
                        assert_eq!(one, 1);
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
            dsql_diesel::bb8::Pool::builder()
                .max_size(TASKS as u32)
                .configure(|b| b.min_idle(TASKS as u32))
                .build(config.clone()),
        )
        .unwrap_or_else(|e| panic!("pool: {e}"));

    let token = rt
        .block_on(config.token())
        .unwrap_or_else(|e| panic!("token: {e}"));
    let pg = config.pg_config_with_token(&token);
    let tls = config.tls().clone();
    let mut setup = ManagerConfig::<AsyncPgConnection>::default();
    setup.custom_setup = Box::new(move |_url| {
        let (pg, tls) = (pg.clone(), tls.clone());
        async move {
            let (client, connection) = pg
                .connect(tls)
                .await
                .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
            AsyncPgConnection::try_from_client_and_connection(client, connection).await
        }
        .boxed()
    });
    let anchor: diesel_async::pooled_connection::bb8::Pool<AsyncPgConnection> = rt
        .block_on(
            bb8::Pool::builder()
                .max_size(TASKS as u32)
                .min_idle(TASKS as u32)
                .build(AsyncDieselConnectionManager::new_with_config(
                    "anchor", setup,
                )),
        )
        .unwrap_or_else(|e| panic!("anchor pool: {e}"));

    let (ours, anchor) = (&ours, &anchor);
    rt.block_on(async {
        for _ in 0..WARM_UP_ROUNDS {
            workload!(ours);
            workload!(anchor);
        }
    });

    let mut group = c.benchmark_group("diesel_pool_query");
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

// criterion_group! makes a `pub fn benches` without docs (the workspace denies missing_docs).
#[allow(missing_docs)]
mod groups {
    use super::*;
    criterion_group!(benches, bench_pool);
}
criterion_main!(groups::benches);
