//! New-connection latency through dsql-local (TLS, IAM token check, a real PostgreSQL backend).
//!
//! - `connect/dsql-rs`: [`dsql_tokio_postgres::connect`]: token from the provider's cache,
//!   a clone of the tokio-postgres config with the token as password, connect, close.
//! - `connect/anchor`: plain tokio-postgres `Config::connect` with the same TLS connector and a
//!   token signed before the run: the cost of a connection without our layer.
//!
//! Both open and close one connection per iteration against the same gateway in the same run,
//! interleaved: each timed connection of one is followed by an untimed one of the other.
//! Run: `cargo bench -p dsql-tokio-postgres --bench connect`

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use dsql_local::LocalDsql;
use dsql_tokio_postgres::{Config, TokenProvider, connect};

const WARM_UP_ROUNDS: usize = 20;

fn bench_connect(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    // No rate limit in the way: the bench opens thousands of connections.
    let local = rt
        .block_on(
            LocalDsql::builder()
                .rate_limit(1_000_000, 1_000_000)
                .start(),
        )
        .unwrap_or_else(|e| panic!("dsql-local could not start: {e}"));
    let config: Config = local
        .connection_string()
        .parse::<Config>()
        .unwrap_or_else(|e| panic!("config: {e}"))
        .with_token_provider(TokenProvider::new(local.credentials()));
    // The anchor: the same settings and TLS, a token signed once (valid 15 minutes).
    let token = rt
        .block_on(config.token())
        .unwrap_or_else(|e| panic!("token: {e}"));
    let plain = config.pg_config_with_token(&token);
    let tls = config.tls().clone();

    // Measured one after the other, whichever bench ran second looked faster (the ratio moved
    // between 1.05 and 1.12 from run to run): an artifact of the order. As in the pool bench,
    // each timed connection of one is followed by an untimed one of the other, so both are
    // measured under the same alternating load.
    let (config, plain, tls) = (&config, &plain, &tls);
    let ours = move || async move {
        let (client, connection) = connect(config)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        drop(client);
        // Ends once the client is gone: the close is part of both measurements.
        let _ = connection.await;
    };
    let anchor = move || async move {
        let (client, connection) = plain
            .connect(tls.clone())
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        drop(client);
        let _ = connection.await;
    };
    rt.block_on(async {
        for _ in 0..WARM_UP_ROUNDS {
            ours().await;
            anchor().await;
        }
    });

    let mut group = c.benchmark_group("connect");
    group
        .sample_size(60)
        .measurement_time(Duration::from_secs(15));
    group.bench_function("dsql-rs", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                ours().await;
                timed += started.elapsed();
                anchor().await;
            }
            timed
        })
    });
    group.bench_function("anchor", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                anchor().await;
                timed += started.elapsed();
                ours().await;
            }
            timed
        })
    });
    group.finish();
    drop(local);
}

// criterion_group! makes a `pub fn benches` without docs (the workspace denies missing_docs).
#[allow(missing_docs)]
mod groups {
    use super::*;
    criterion_group!(benches, bench_connect);
}
criterion_main!(groups::benches);
