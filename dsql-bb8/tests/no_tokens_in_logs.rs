//! Tokens, secret keys and session tokens never appear in logs: a run through dsql-local with
//! every crate (ours, dsql-local, tokio-postgres, rustls via the `log` bridge) at trace level,
//! captured and searched. Its own test binary, because it installs the global subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_credential_types::Credentials;
use dsql_bb8::PoolBuilder;
use dsql_local::LocalDsql;
use dsql_tokio_postgres::{
    Config, RetryPolicy, TokenProvider, connect_spawned, transaction_with_retry,
};

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
    // 8 s tokens so the pool below outlives some, each handed out with at least 5 s left: ample
    // for TCP, TLS and startup on a loaded machine, so no connect can race the expiry.
    let provider = TokenProvider::builder()
        .credentials(local.credentials())
        .min_remaining(Duration::from_secs(5))
        .build()
        .expect("provider");
    let url = format!("{}&token_duration_secs=8", local.connection_string());
    let config = url
        .parse::<Config>()
        .expect("config")
        .with_token_provider(provider.clone());
    let mut tokens = Vec::new();

    tokio::time::timeout(Duration::from_secs(120), async {
        // A direct connection over SSLRequest and one over direct TLS, with statements.
        let client = connect_spawned(&config).await.expect("connect");
        tokens.push(config.token().await.expect("token"));
        client
            .batch_execute("CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL)")
            .await
            .unwrap();
        client
            .execute("INSERT INTO t VALUES (1, 0)", &[])
            .await
            .unwrap();
        let direct = format!("{url}&sslnegotiation=direct")
            .parse::<Config>()
            .unwrap()
            .with_token_provider(provider.clone());
        let mut client2 = connect_spawned(&direct).await.expect("connect direct");
        transaction_with_retry(&mut client2, &RetryPolicy::occ(), async |tx| {
            tx.execute("UPDATE t SET n = n + 1 WHERE id = 1", &[]).await
        })
        .await
        .expect("transaction");

        // A pool living through token rotation (a token is reused for 3 s; 1 s connection
        // lifetimes, 4 s of queries).
        let pool = PoolBuilder::new()
            .max_size(2)
            .max_lifetime(Duration::from_secs(1))
            .build(config.clone())
            .await
            .unwrap();
        for _ in 0..40 {
            pool.get()
                .await
                .expect("get")
                .query_one("SELECT 1", &[])
                .await
                .expect("query");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokens.push(config.token().await.expect("token"));
        assert_ne!(tokens[0].as_str(), tokens[1].as_str(), "the token rotated");

        // Refusals: a wrong secret key, directly and through the pool.
        let bad = Credentials::new(
            "AKIDLOGTEST",
            "wrong-secret",
            Some(session_token.to_owned()),
            None,
            "test",
        );
        let bad_config = config.clone().with_token_provider(TokenProvider::new(bad));
        assert!(connect_spawned(&bad_config).await.is_err());
        tokens.push(bad_config.token().await.expect("token"));
        let bad_pool = PoolBuilder::new().build(bad_config).await.unwrap();
        assert!(bad_pool.get().await.is_err());
    })
    .await
    .expect("hang guard");

    let logs = capture.text();
    // The capture works and is at trace level, across crates and through the `log` bridge.
    assert!(
        logs.contains("opening DSQL connection"),
        "our events are captured"
    );
    assert!(logs.contains("TRACE"), "trace level is captured");
    assert!(
        logs.contains("preparing query"),
        "tokio-postgres' `log` records are captured"
    );
    assert!(
        logs.contains("dsql_local"),
        "the gateway's events are captured"
    );

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
