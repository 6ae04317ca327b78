//! A sqlx pool of Aurora DSQL connections (dsql-sqlx): 4 workers move money between 8 accounts
//! with an OCC-retrying transaction each (`ITERATIONS` transfers in all, default 40), then the
//! total is checked: transfers never create or destroy money, however often DSQL made a
//! transaction retry.
//!
//! ```text
//! DATABASE_URL='postgres://admin@<cluster-id>.dsql.us-east-1.on.aws/postgres' ITERATIONS=200 \
//!     cargo run -p examples --bin sqlx_pool_occ
//! ```
//!
//! Credentials come from the AWS default chain (environment, profile, SSO, instance role).

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use dsql_sqlx::{Config, ConnectOptions, Pool, RetryPolicy, pool_options, transaction_with_retry};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const WORKERS: u64 = 4;
const ACCOUNTS: i64 = 8;
const DEFAULT_ITERATIONS: u64 = 40;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sqlx_pool_occ: error: {err}");
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
    let text = match (var("DATABASE_URL"), var("CLUSTER_ENDPOINT")) {
        (Some(url), _) => url,
        (None, Some(host)) => format!(
            "host='{}'",
            host.trim().replace('\\', "\\\\").replace('\'', "\\'")
        ),
        _ => {
            return Err("set DATABASE_URL to a DSQL connection string \
                        (postgres://admin@<cluster-id>.dsql.<region>.on.aws/postgres) or CLUSTER_ENDPOINT to the cluster's host"
                .into());
        }
    };
    let mut options = ConnectOptions::from_env_and_str(&text)?;
    // `dsql local` prints a URL with hostaddr=127.0.0.1, which sqlx cannot use (it dials the name
    // it verifies). Reach a loopback endpoint the way PrivateLink without DNS does instead: dial
    // `localhost` (its certificate names it), sign for the cluster, send its id.
    if let Some(addr) = options.hostaddr.take() {
        let addr: std::net::IpAddr = addr.to_string().parse()?;
        if !addr.is_loopback() {
            return Err(format!(
                "hostaddr={addr}: sqlx cannot dial an address; use host + cluster_id"
            )
            .into());
        }
        let cluster = options.endpoint()?.cluster_id().map(str::to_owned);
        options.cluster_id = Some(cluster.ok_or("hostaddr given without a cluster host")?);
        options.host = "localhost".into();
    }
    Ok(Config::new(options)?)
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
        "sqlx pool for {} (tokens signed for {}): {WORKERS} workers, {iterations} transfers",
        config.endpoint().connect_host(),
        config.signing_params().host()
    );
    let pool = Pool::connect_with(config, pool_options().max_connections(WORKERS as u32)).await?;

    // One DDL statement per transaction (DSQL), then the DML in its own.
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS sqlx_accounts (id bigint PRIMARY KEY, balance bigint NOT NULL)",
    )
    .execute(&*pool)
    .await?;
    sqlx::query("DELETE FROM sqlx_accounts")
        .execute(&*pool)
        .await?;
    for id in 0..ACCOUNTS {
        sqlx::query("INSERT INTO sqlx_accounts (id, balance) VALUES ($1, 1000)")
            .bind(id)
            .execute(&*pool)
            .await?;
    }

    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let pool = pool.clone();
        let share = (iterations + WORKERS - 1 - worker) / WORKERS;
        workers.push(tokio::spawn(async move {
            transfers(&pool, worker, share).await
        }));
    }
    let mut attempts = 0;
    for w in workers {
        attempts += w.await.map_err(|e| format!("a worker stopped: {e}"))??;
    }

    let total: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(balance), 0)::bigint FROM sqlx_accounts")
            .fetch_one(&*pool)
            .await?;
    println!(
        "{iterations} transfers committed in {attempts} attempts ({} OCC retries); total balance {total} (expected {})",
        attempts - iterations,
        ACCOUNTS * 1000
    );
    if total != ACCOUNTS * 1000 {
        return Err("the total balance changed: a transfer was lost or applied twice".into());
    }
    pool.close().await;
    Ok(())
}

/// `count` transfers of 1 between neighbouring accounts; returns the attempts they took.
async fn transfers(pool: &Pool, worker: u64, count: u64) -> Result<u64, BoxError> {
    let attempts = AtomicU64::new(0);
    for i in 0..count {
        let from = ((worker + i) % ACCOUNTS as u64) as i64;
        let to = (from + 1) % ACCOUNTS;
        // The body runs once per attempt; it may share state by reference (the counter).
        transaction_with_retry(pool, &RetryPolicy::occ(), async |tx| {
            attempts.fetch_add(1, Ordering::Relaxed);
            sqlx::query("UPDATE sqlx_accounts SET balance = balance - 1 WHERE id = $1")
                .bind(from)
                .execute(&mut **tx)
                .await?;
            sqlx::query("UPDATE sqlx_accounts SET balance = balance + 1 WHERE id = $1")
                .bind(to)
                .execute(&mut **tx)
                .await?;
            Ok::<_, dsql_sqlx::Error>(())
        })
        .await?;
    }
    Ok(attempts.load(Ordering::Relaxed))
}
