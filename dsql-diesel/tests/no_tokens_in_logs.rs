//! Tokens, secret keys and session tokens never appear in logs: both pools through dsql-local,
//! with a wrong secret and an OCC-retried transaction, every crate at trace level, captured and
//! searched. Its own test binary, because it installs the global subscriber. Runs the pools
//! whose features are on (`--all-features`: both).
#![cfg(any(feature = "bb8", feature = "deadpool"))]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_credential_types::Credentials;
use diesel_async::RunQueryDsl;
use dsql_diesel::{Config, RetryPolicy, TokenProvider, transaction_with_retry};
use dsql_local::LocalDsql;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

async fn work<C: diesel_async::AsyncConnection<Backend = diesel::pg::Pg>>(conn: &mut C) {
    conn.batch_execute("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, n int NOT NULL)")
        .await
        .expect("create");
    conn.batch_execute("INSERT INTO t VALUES (1, 0) ON CONFLICT DO NOTHING")
        .await
        .expect("insert");
    transaction_with_retry(conn, &RetryPolicy::occ(), async |conn| {
        diesel::sql_query("UPDATE t SET n = n + 1 WHERE id = 1")
            .execute(conn)
            .await
    })
    .await
    .expect("transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_secret_in_trace_logs() {
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(capture.clone())
        .try_init()
        .expect("this test binary installs the only subscriber");

    let session_token = "FwoGZXIvYXdzEXAMPLE/session+token=";
    let secret = "local-secret/with+chars=";
    let local = LocalDsql::builder()
        .credentials("AKIDLOGTEST", secret, Some(session_token.to_owned()))
        .start()
        .await
        .unwrap_or_else(|e| panic!("dsql-local could not start: {e}"));
    let config = Config::new(dsql_local::testing::connect_options(&local))
        .expect("config")
        .with_token_provider(dsql_local::testing::token_provider(&local));
    let mut tokens = Vec::new();

    tokio::time::timeout(Duration::from_secs(120), async {
        // Statements and an OCC-retried transaction through each pool that is on.
        #[cfg(feature = "bb8")]
        {
            let pool = dsql_diesel::bb8::Pool::builder()
                .max_size(2)
                .build(config.clone())
                .await
                .expect("pool");
            work(&mut pool.get().await.expect("get")).await;
        }
        #[cfg(feature = "deadpool")]
        {
            let pool = dsql_diesel::deadpool::Pool::builder()
                .max_size(2)
                .build(config.clone())
                .expect("pool");
            work(&mut pool.get().await.expect("get")).await;
        }
        tokens.push(config.token().await.expect("token"));

        // Refusals through both pools: a wrong secret key.
        let bad = Credentials::new(
            "AKIDLOGTEST",
            "wrong-secret",
            Some(session_token.to_owned()),
            None,
            "test",
        );
        let bad_config = config.clone().with_token_provider(TokenProvider::new(bad));
        #[cfg(feature = "bb8")]
        let bad_bb8 = dsql_diesel::bb8::Pool::new(bad_config.clone())
            .await
            .expect("pool");
        #[cfg(feature = "bb8")]
        assert!(bad_bb8.get().await.is_err());
        #[cfg(feature = "deadpool")]
        let bad_deadpool = dsql_diesel::deadpool::Pool::new(bad_config.clone()).expect("pool");
        #[cfg(feature = "deadpool")]
        assert!(bad_deadpool.get().await.is_err());
        tokens.push(bad_config.token().await.expect("token"));
    })
    .await
    .expect("hang guard");

    let logs = capture.text();
    // The capture works: our events, dsql-tokio-postgres' and the gateway's, at trace level.
    assert!(
        logs.contains("opening a pooled DSQL connection failed"),
        "our events are captured"
    );
    assert!(
        logs.contains("opening DSQL connection"),
        "dsql-tokio-postgres' events are captured"
    );
    assert!(
        logs.contains("dsql_local"),
        "the gateway's events are captured"
    );
    assert!(logs.contains("TRACE"), "trace level is captured");

    for token in &tokens {
        let full = token.as_str();
        let signature = full.rsplit("X-Amz-Signature=").next().unwrap_or(full);
        assert!(!logs.contains(full), "a token appears in the logs");
        assert!(
            signature.len() == 64 && !logs.contains(signature),
            "a token signature appears in the logs"
        );
    }
    for needle in [
        "X-Amz-Signature",
        "X-Amz-Security-Token",
        "X-Amz-Credential",
        secret,
        "wrong-secret",
        "FwoGZXIvYXdz",
        "session%2Btoken",
        "session+token",
    ] {
        assert!(!logs.contains(needle), "{needle:?} appears in the logs");
    }
}
