//! Sizes and shapes at the relay's edges, through a real PostgreSQL: messages larger than the
//! relay's 64 KiB read buffer and than the 16 MiB it ever holds whole, the maximum connection
//! age arriving in the middle of a large result, and SQL nested deeper than the checker goes.

mod support;

use dsql_local::LocalDsql;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1 << 20;

async fn connect_admin(dsql: &LocalDsql) -> tokio_postgres::Client {
    let (client, _conn) = connect(dsql, &Dial::new(dsql, "admin"), &token(dsql, "admin"))
        .await
        .expect("connect");
    client
}

/// A text of `len` bytes that is not one repeated byte, so a shifted or torn copy differs.
fn pattern(len: usize) -> String {
    (0..len)
        .map(|i| char::from(b'a' + (i % 23) as u8))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_past_the_read_buffer_and_the_inspect_limit() {
    let dsql = start(LocalDsql::builder()).await;
    let c = connect_admin(&dsql).await;
    c.batch_execute("CREATE TABLE big (id int PRIMARY KEY, v text)")
        .await
        .expect("setup");

    // Client to upstream, over the 64 KiB read buffer: a Bind parameter and a query text.
    let param = pattern(300 * 1024);
    c.execute("INSERT INTO big VALUES (1, $1)", &[&param])
        .await
        .expect("a 300 KiB parameter");
    let literal = pattern(200 * 1024);
    c.batch_execute(&format!("INSERT INTO big VALUES (2, '{literal}')"))
        .await
        .expect("a 200 KiB query text");
    // Upstream to client: the same rows back (DataRows over the read buffer).
    for (id, want) in [(1, &param), (2, &literal)] {
        let got: String = c
            .query_one("SELECT v FROM big WHERE id = $1", &[&id])
            .await
            .expect("read back")
            .get(0);
        assert!(got == *want, "row {id} came back changed");
    }

    // Upstream to client, over the 16 MiB the relay ever holds: one DataRow of 20 MiB, in
    // both protocols, then an ordinary statement on the same session.
    let sql = format!("SELECT repeat('{}', {})", pattern(23), 20 * MIB / 23);
    let got: String = c.query_one(&sql, &[]).await.expect("20 MiB row").get(0);
    assert_eq!(got.len(), 20 * MIB / 23 * 23);
    assert!(
        got == pattern(got.len()),
        "the 20 MiB row came back changed"
    );
    let rows = c.simple_query(&sql).await.expect("20 MiB row (simple)");
    let got = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::len),
            _ => None,
        })
        .expect("a row");
    assert_eq!(got, 20 * MIB / 23 * 23);

    // Client to upstream, over 16 MiB: refused with a clear error instead of escaping the
    // rules unchecked, without the gateway holding it whole; the session goes on.
    let huge = pattern(17 * MIB);
    let e = c
        .execute("INSERT INTO big VALUES (3, $1)", &[&huge])
        .await
        .expect_err("a 17 MiB Bind");
    let (code, message) = db_error(&e);
    assert_eq!(code, "54000");
    assert!(
        message.contains("over dsql-local's limit of 16 MiB"),
        "{message}"
    );
    let e = c
        .batch_execute(&format!("INSERT INTO big VALUES (4, '{huge}')"))
        .await
        .expect_err("a 17 MiB query");
    assert_eq!(db_error(&e).0, "54000");
    // A refused statement padded past the limit does not get through either.
    let e = c
        .batch_execute(&format!("TRUNCATE big /* {huge} */"))
        .await
        .expect_err("a padded TRUNCATE");
    assert_eq!(db_error(&e).0, "54000");
    let n: i64 = c
        .query_one("SELECT count(*) FROM big", &[])
        .await
        .expect("the session still works")
        .get(0);
    assert_eq!(n, 2, "nothing of the refused messages ran");
}

/// Reads one whole backend message, `None` at a clean end of stream; a stream that ends
/// inside a message fails the test.
async fn whole_message<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<(u8, Vec<u8>)> {
    let mut tag = [0u8; 1];
    match s.read(&mut tag).await {
        Ok(0) | Err(_) => return None,
        Ok(_) => {}
    }
    let mut len = [0u8; 4];
    s.read_exact(&mut len)
        .await
        .expect("a message torn in its length");
    let len = u32::from_be_bytes(len) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body)
        .await
        .unwrap_or_else(|_| panic!("a {:?} message torn in its body", tag[0] as char));
    Some((tag[0], body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maximum_age_ends_a_streaming_result_on_a_message_boundary() {
    let age = Duration::from_secs(1);
    let dsql = start(LocalDsql::builder().max_connection_age(age)).await;
    let mut s = at_password_prompt(&dsql, "admin").await;
    s.write_all(&password_message(&token(&dsql, "admin")))
        .await
        .expect("password");
    loop {
        let (tag, _) = whole_message(&mut s).await.expect("login answer");
        if tag == b'Z' {
            break;
        }
    }
    // 100 KiB rows (each spans several relay reads), one every 5 ms: about 5 s of streaming,
    // so the 1 s age arrives while rows are on their way.
    let query = "SELECT repeat('x', 100000) || pg_sleep(0.005)::text FROM generate_series(1, 1000)";
    let mut q = vec![b'Q'];
    q.extend_from_slice(&((query.len() + 5) as u32).to_be_bytes());
    q.extend_from_slice(query.as_bytes());
    q.push(0);
    s.write_all(&q).await.expect("query");
    let mut data_rows = 0;
    let mut last = None;
    let read_all = async {
        while let Some((tag, body)) = whole_message(&mut s).await {
            if tag == b'D' {
                // One column of 100 000 bytes: field count, length, value.
                assert_eq!(body.len(), 2 + 4 + 100_000, "a whole DataRow");
                data_rows += 1;
            }
            last = Some((tag, body));
        }
    };
    tokio::time::timeout(GUARD, read_all)
        .await
        .expect("the connection ended within the hang guard");
    let (tag, body) = last.expect("messages before the end");
    assert_eq!(tag, b'E', "the last message is the FATAL error");
    assert_eq!(sqlstate(&body), "57P01");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("SFATAL"), "{text}");
    assert!(
        text.contains("maximum connection duration of 1 s"),
        "{text}"
    );
    assert!(
        data_rows > 0 && data_rows < 1000,
        "the age arrived mid-result ({data_rows} rows)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_sql_is_refused_clearly_and_harms_no_one() {
    let dsql = start(LocalDsql::builder()).await;
    let c = connect_admin(&dsql).await;
    let other = connect_admin(&dsql).await;
    c.batch_execute("CREATE TABLE keep (id int PRIMARY KEY); INSERT INTO keep VALUES (1)")
        .await
        .expect_err("DDL and DML in one implicit transaction are refused");
    c.batch_execute("CREATE TABLE keep (id int PRIMARY KEY)")
        .await
        .expect("setup");
    c.batch_execute("INSERT INTO keep VALUES (1)")
        .await
        .expect("setup");
    let parens = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
    let subqueries = format!(
        "SELECT {}1{}",
        "(SELECT ".repeat(10_000),
        ")".repeat(10_000)
    );
    // Shallow enough for PostgreSQL, too deep for the checker: with a refused statement in
    // front, which must not slip through unchecked.
    let smuggled = format!(
        "TRUNCATE keep; SELECT {}1{}",
        "(SELECT ".repeat(40),
        ")".repeat(40)
    );
    for sql in [&parens, &subqueries, &smuggled] {
        let simple = c.batch_execute(sql).await.expect_err("simple protocol");
        let extended = c.execute(sql.as_str(), &[]).await.expect_err("extended");
        for e in [simple, extended] {
            let (code, message) = db_error(&e);
            assert_eq!(code, "54001", "{message}");
            assert!(message.contains("nested too deeply"), "{message}");
        }
        // Other sessions, and this one, are unaffected.
        let n: i64 = other
            .query_one("SELECT count(*) FROM keep", &[])
            .await
            .expect("another session")
            .get(0);
        assert_eq!(n, 1, "nothing was truncated");
        c.batch_execute("SELECT 1").await.expect("same session");
    }
}
