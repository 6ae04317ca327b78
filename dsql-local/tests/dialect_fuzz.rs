//! Property tests for the SQL rules: arbitrary SQL text and arbitrary frontend messages never
//! crash or hang the gateway, and another session keeps working. Bounded case counts keep this
//! within seconds.

mod support;

use dsql_local::LocalDsql;
use proptest::prelude::*;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// SQL-ish text: keywords DSQL's rules look at, mixed with noise (quotes, dollars, comments).
fn sql_text() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("CREATE".to_owned()),
        Just("UNIQUE".to_owned()),
        Just("INDEX".to_owned()),
        Just("ASYNC".to_owned()),
        Just("ALTER TABLE".to_owned()),
        Just("TABLE".to_owned()),
        Just("BEGIN".to_owned()),
        Just("COMMIT".to_owned()),
        Just("ROLLBACK".to_owned()),
        Just("SAVEPOINT".to_owned()),
        Just("SELECT".to_owned()),
        Just("INSERT INTO".to_owned()),
        Just("FOR SHARE".to_owned()),
        Just("TRUNCATE".to_owned()),
        Just("SET TRANSACTION".to_owned()),
        Just(";".to_owned()),
        Just("$$".to_owned()),
        Just("'".to_owned()),
        Just("/*".to_owned()),
        Just("--".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        "[a-z_0-9]{1,8}",
        "\\PC{0,6}",
    ];
    prop::collection::vec(word, 0..24).prop_map(|w| w.join(" "))
}

/// A frontend message: a tag the rules inspect (or any byte) and a body of arbitrary bytes,
/// framed with its length.
fn frontend_message() -> impl Strategy<Value = Vec<u8>> {
    let tag = prop_oneof![
        Just(b'Q'),
        Just(b'P'),
        Just(b'B'),
        Just(b'E'),
        Just(b'S'),
        Just(b'C'),
        Just(b'D'),
        Just(b'H'),
        Just(b'F'),
        Just(b'd'),
        any::<u8>(),
    ];
    (
        tag,
        prop::collection::vec(any::<u8>(), 0..48),
        any::<bool>(),
    )
        .prop_map(|(tag, body, nul)| {
            let mut body = body;
            if nul {
                body.push(0);
            }
            let mut m = vec![tag];
            m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
            m.extend_from_slice(&body);
            m
        })
}

/// Logs in over a raw TLS stream and reads up to the first ReadyForQuery.
async fn raw_session(dsql: &LocalDsql) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut tls = at_password_prompt(dsql, "admin").await;
    tls.write_all(&password_message(&token(dsql, "admin")))
        .await
        .expect("password");
    loop {
        let (tag, _) = read_backend_message(&mut tls).await.expect("login answer");
        if tag == b'Z' {
            return tls;
        }
    }
}

#[test]
fn arbitrary_sql_and_messages_never_break_the_gateway() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dsql = rt.block_on(start(LocalDsql::builder()));
    let (witness, sql_client) = rt.block_on(async {
        let dial = Dial::new(&dsql, "admin");
        let (w, _) = connect(&dsql, &dial, &token(&dsql, "admin"))
            .await
            .expect("witness");
        let (c, _) = connect(&dsql, &dial, &token(&dsql, "admin"))
            .await
            .expect("client");
        (w, c)
    });
    let config = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(sql in sql_text())| {
        rt.block_on(async {
            // Any answer is fine (error or rows); a hang or a dead session is not.
            let both = async {
                let _ = sql_client.simple_query(&sql).await;
                let _ = sql_client.prepare(&sql).await;
                let _ = sql_client.batch_execute("ROLLBACK").await;
                sql_client.simple_query("SELECT 1").await
            };
            let r = tokio::time::timeout(GUARD, both).await.expect("no hang");
            prop_assert!(r.is_ok(), "session still works after {sql:?}: {r:?}");
            Ok(())
        })?;
    });
    let config = ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(messages in prop::collection::vec(frontend_message(), 1..6))| {
        rt.block_on(async {
            let mut s = raw_session(&dsql).await;
            for m in &messages {
                if s.write_all(m).await.is_err() {
                    break;
                }
            }
            let _ = s.flush().await;
            // Whatever the gateway answers (or if it closes), it answers without hanging...
            let mut sink = vec![0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut sink)).await;
            drop(s);
            // ...and other sessions keep working.
            let r = tokio::time::timeout(GUARD, witness.simple_query("SELECT 1")).await.expect("no hang");
            prop_assert!(r.is_ok(), "witness session after {messages:?}: {r:?}");
            Ok(())
        })?;
    });
    rt.block_on(async {
        let (fresh, _) = connect(&dsql, &Dial::new(&dsql, "admin"), &token(&dsql, "admin"))
            .await
            .expect("new sessions still open");
        fresh.simple_query("SELECT 1").await.expect("query");
    });
}
