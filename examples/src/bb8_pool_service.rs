//! A small service loop on a bb8 pool of Aurora DSQL connections: 4 workers handle
//! `ITERATIONS` requests in all (default 40), each checking a connection out, recording a hit
//! with an OCC-retrying transaction and reading the total; then a summary.
//!
//! ```text
//! DATABASE_URL='postgres://admin@<cluster-id>.dsql.us-east-1.on.aws/postgres' ITERATIONS=200 \
//!     cargo run -p examples --bin bb8_pool_service
//! ```
//!
//! Credentials come from the AWS default chain (environment, profile, SSO, instance role).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dsql_bb8::{Pool, PoolBuilder};
use dsql_tokio_postgres::{Config, RetryPolicy, transaction_with_retry};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const WORKERS: u64 = 4;
const DEFAULT_ITERATIONS: u64 = 40;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bb8_pool_service: error: {err}");
            let mut source = err.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn config_from_env() -> Result<Config, BoxError> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    if let Some(url) = var("DATABASE_URL") {
        return Ok(Config::from_env_and_str(&url)?);
    }
    if let Some(host) = var("CLUSTER_ENDPOINT") {
        let quoted = host.trim().replace('\\', "\\\\").replace('\'', "\\'");
        return Ok(Config::from_env_and_str(&format!("host='{quoted}'"))?);
    }
    Err("set DATABASE_URL to a DSQL connection string (postgres://admin@<cluster-id>.dsql.<region>.on.aws/postgres) \
         or CLUSTER_ENDPOINT to the cluster's host"
        .into())
}

fn iterations() -> Result<u64, BoxError> {
    match std::env::var("ITERATIONS") {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("ITERATIONS must be a positive whole number, got {v:?}").into()),
        },
        Err(_) => Ok(DEFAULT_ITERATIONS),
    }
}

async fn run() -> Result<(), BoxError> {
    let iterations = iterations()?;
    let config = config_from_env()?;
    println!(
        "pool for {} as {}: {WORKERS} workers, {iterations} requests",
        config.endpoint().connect_host(),
        config.options().user
    );
    let pool = PoolBuilder::new()
        .max_size(WORKERS as u32)
        .build(config)
        .await?;

    {
        let conn = pool.get().await?;
        // One DDL statement per transaction (DSQL), then the DML in its own.
        conn.batch_execute("CREATE TABLE IF NOT EXISTS pool_service_hits (worker int PRIMARY KEY, hits bigint NOT NULL)")
            .await?;
        println!("table pool_service_hits is ready");
    }

    let started = Instant::now();
    let queries = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let pool = pool.clone();
        let queries = queries.clone();
        // Spread the requests: worker w handles requests w, w + WORKERS, ...
        let share = (iterations + WORKERS - 1 - worker) / WORKERS;
        workers.push(tokio::spawn(async move {
            serve(&pool, worker as i32, share, &queries).await
        }));
    }
    let mut handled = 0;
    for w in workers {
        handled += w.await.map_err(|e| format!("a worker stopped: {e}"))??;
    }
    let elapsed = started.elapsed();

    let conn = pool.get().await?;
    let total: i64 = conn
        .query_one(
            "SELECT coalesce(sum(hits), 0)::bigint FROM pool_service_hits",
            &[],
        )
        .await?
        .get(0);
    let state = pool.state();
    println!(
        "handled {handled} requests ({} transactions) in {:.1} ms; all-time hits recorded: {total}",
        queries.load(Ordering::Relaxed),
        elapsed.as_secs_f64() * 1000.0
    );
    println!(
        "pool: {} connections ({} idle), {} opened in all, {} checkouts",
        state.connections,
        state.idle_connections,
        state.statistics.connections_created,
        state.statistics.get_direct + state.statistics.get_waited
    );
    Ok(())
}

/// One worker: `count` requests, each on a connection checked out of the pool.
async fn serve(pool: &Pool, worker: i32, count: u64, queries: &AtomicU64) -> Result<u64, BoxError> {
    for _ in 0..count {
        let mut conn = pool.get().await?;
        let hits: i64 = transaction_with_retry(&mut conn, &RetryPolicy::occ(), async |tx| {
            let row = tx
                .query_one(
                    "INSERT INTO pool_service_hits (worker, hits) VALUES ($1, 1)
                     ON CONFLICT (worker) DO UPDATE SET hits = pool_service_hits.hits + 1
                     RETURNING hits",
                    &[&worker],
                )
                .await?;
            Ok::<_, dsql_tokio_postgres::Error>(row.get(0))
        })
        .await?;
        queries.fetch_add(1, Ordering::Relaxed);
        if hits % 10 == 0 {
            println!("worker {worker}: {hits} hits recorded so far");
        }
    }
    Ok(count)
}
