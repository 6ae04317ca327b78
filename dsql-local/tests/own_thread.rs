//! The gateway runs on a thread of its own, so it keeps serving whatever the caller's runtime
//! does: a test that blocks its only thread on a synchronous client (here `psql`), and an
//! endpoint that outlives the runtime that started it (one endpoint shared by many
//! `#[tokio::test]`s, each with its own runtime).

mod support;

use dsql_local::LocalDsql;
use std::time::Duration;
use support::{Dial, connect, psql, start, token};

/// psql through the gateway, run synchronously: it blocks the calling thread until it ends.
fn psql_select(dsql: &LocalDsql, sql: &str) -> std::process::Output {
    let conninfo = format!(
        "host={} hostaddr=127.0.0.1 port={} user=admin dbname=postgres sslmode=verify-full sslrootcert={} connect_timeout=20",
        dsql.host(),
        dsql.port(),
        dsql.ca_path().display()
    );
    std::process::Command::new(psql())
        .args(["-X", "-w", "-At", "-c", sql, &conninfo])
        .env("PGPASSWORD", token(dsql, "admin"))
        .output()
        .expect("psql runs")
}

// One thread for the test and its runtime: while psql runs, nothing else on it can.
#[tokio::test(flavor = "current_thread")]
async fn a_blocked_caller_runtime_does_not_stall_the_gateway() {
    let dsql = start(LocalDsql::builder()).await;
    let out = psql_select(&dsql, "SELECT 40 + 2");
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    dsql.shutdown().await.expect("shutdown");
}

#[test]
fn the_endpoint_outlives_the_runtime_that_started_it() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    let first = runtime();
    let dsql = first.block_on(start(LocalDsql::builder()));
    // A session opened on the first runtime, whose client task dies with it.
    first.block_on(async {
        let (client, _conn) = connect(&dsql, &Dial::new(&dsql, "admin"), &token(&dsql, "admin"))
            .await
            .expect("connect");
        client.simple_query("SELECT 1").await.expect("query");
    });
    drop(first);

    let second = runtime();
    second.block_on(async {
        let (client, conn) = connect(&dsql, &Dial::new(&dsql, "admin"), &token(&dsql, "admin"))
            .await
            .expect("the gateway still accepts after the first runtime ended");
        let row = client.query_one("SELECT 7 * 6", &[]).await.expect("query");
        assert_eq!(row.get::<_, i32>(0), 42);
        // Shutdown returns once every connection is closed: this one's task ends with it.
        dsql.shutdown().await.expect("shutdown");
        tokio::time::timeout(Duration::from_secs(30), conn)
            .await
            .expect("the connection ended after shutdown")
            .expect("join")
            .ok();
        assert!(client.is_closed());
    });
}
