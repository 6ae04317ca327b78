//! What hostile passwords cost the gateway, measured (not asserted: timing belongs here, not in
//! tests). Run in release mode:
//!
//! ```text
//! cargo run --release -p dsql-local --example hostile_passwords
//! ```
//!
//! Prints the time from sending the worst 64 KiB password (thousands of parameters) to its
//! refusal, and a real login's latency alone and beside 20 such handshakes.

#[path = "../tests/support/mod.rs"]
mod support;

use dsql_local::LocalDsql;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

fn worst_case_password(host: &str) -> String {
    let mut p = format!("{host}/?");
    let mut i = 0;
    while p.len() < 64 * 1024 - 64 {
        p.push_str(&format!("a{i}=&"));
        i += 1;
    }
    p.push_str("z=1");
    p
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn real_login(dsql: &LocalDsql) -> Duration {
    let started = Instant::now();
    let (client, _conn) = support::connect(
        dsql,
        &support::Dial::new(dsql, "admin"),
        &support::token(dsql, "admin"),
    )
    .await
    .expect("real login");
    let elapsed = started.elapsed();
    drop(client);
    elapsed
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dsql = LocalDsql::builder()
        .rate_limit(10_000, 10_000)
        .start()
        .await
        .expect("dsql-local starts");
    let password = support::password_message(&worst_case_password(dsql.host()));

    // One refusal at a time: from the password's last byte to the ErrorResponse.
    let mut refusals = Vec::new();
    for _ in 0..50 {
        let mut s = support::at_password_prompt(&dsql, "admin").await;
        let started = Instant::now();
        s.write_all(&password).await.expect("send");
        s.flush().await.expect("flush");
        let (tag, _) = support::read_backend_message(&mut s).await.expect("answer");
        refusals.push(started.elapsed());
        assert_eq!(tag, b'E');
    }

    let alone: Vec<Duration> = {
        let mut v = Vec::new();
        for _ in 0..15 {
            v.push(real_login(&dsql).await);
        }
        v
    };
    let mut beside = Vec::new();
    for _ in 0..15 {
        let mut hostile = Vec::new();
        for _ in 0..20 {
            hostile.push(support::at_password_prompt(&dsql, "admin").await);
        }
        let tasks: Vec<_> = hostile
            .into_iter()
            .map(|mut s| {
                let password = password.clone();
                tokio::spawn(async move {
                    s.write_all(&password).await.expect("send");
                    s.flush().await.expect("flush");
                    support::read_backend_message(&mut s).await
                })
            })
            .collect();
        beside.push(real_login(&dsql).await);
        for t in tasks {
            t.await.expect("task").expect("refused");
        }
    }
    let c = dsql.counters();
    println!(
        "worst-case 64 KiB password refused in (median of 50, end to end): {:?}; max {:?}",
        median(refusals.clone()),
        refusals.iter().max().copied().unwrap_or_default()
    );
    println!(
        "real login alone: median {:?}; beside 20 hostile handshakes: median {:?} (delay {:?})",
        median(alone.clone()),
        median(beside.clone()),
        median(beside).saturating_sub(median(alone))
    );
    println!(
        "counted: {} malformed, {} accepted",
        c.refused(dsql_local::RefusalReason::Malformed),
        c.accepted()
    );
    dsql.shutdown().await.expect("shutdown");
}
