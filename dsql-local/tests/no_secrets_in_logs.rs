//! Tokens, secret keys and session tokens never reach the gateway's log, even at trace level.

mod support;

use dsql_local::LocalDsql;
use std::io::Write;
use std::sync::{Arc, Mutex};
use support::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// The gateway runs on its own thread; it takes the subscriber set here when it starts.
#[tokio::test]
async fn tokens_and_secrets_are_never_logged() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let session = "SESSIONTOKENxyz/+=";
    let secret = "local-secret-never-logged";
    let dsql = start(LocalDsql::builder().credentials(
        "AKIDLOGTEST000000000",
        secret,
        Some(session.into()),
    ))
    .await;
    let dial = Dial::new(&dsql, "admin");
    let good = token(&dsql, "admin");
    let (client, _conn) = connect(&dsql, &dial, &good).await.expect("accepted");
    client.simple_query("SELECT 1").await.expect("query");
    let mut bad = good.clone();
    bad.push('0');
    assert!(connect(&dsql, &dial, &bad).await.is_err());
    drop(client);
    dsql.shutdown().await.expect("shutdown");

    let log = String::from_utf8(captured.0.lock().expect("log").clone()).expect("utf-8 log");
    assert!(
        log.contains("refused connection") && log.contains("bad_signature"),
        "the refusal is logged with its reason:\n{log}"
    );
    let signature = good.rsplit("X-Amz-Signature=").next().expect("signature");
    for needle in [
        good.as_str(),
        bad.as_str(),
        signature,
        secret,
        session,
        "SESSIONTOKENxyz",
    ] {
        assert!(
            !log.contains(needle),
            "log contains a secret ({} chars)",
            needle.len()
        );
    }
    assert!(
        !format!(
            "{dsql_debug:?}",
            dsql_debug = LocalDsql::builder().credentials("A", secret, Some(session.into()))
        )
        .contains(secret)
    );
}
