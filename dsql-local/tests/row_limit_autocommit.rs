//! DSQL's row limit for autocommit statements: a statement outside a transaction block that
//! crosses `max_transaction_rows` fails with 54000 and keeps nothing, in the simple protocol
//! (one statement or several in one query string), in the extended protocol, and when the
//! client pipelines; sessions below the limit see exactly what PostgreSQL sends.

mod support;

use dsql_local::LocalDsql;
use support::*;
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::error::ErrorPosition;

const LIMIT: u64 = 10;
const ROW_LIMIT: (&str, &str) = ("54000", "transaction row limit exceeded");

async fn setup() -> (LocalDsql, tokio_postgres::Client) {
    let dsql = start(LocalDsql::builder().max_transaction_rows(LIMIT)).await;
    let (c, _conn) = connect(&dsql, &Dial::new(&dsql, "admin"), &token(&dsql, "admin"))
        .await
        .expect("connect");
    c.batch_execute("CREATE TABLE r (id int PRIMARY KEY)")
        .await
        .expect("setup");
    (dsql, c)
}

async fn rows(c: &tokio_postgres::Client) -> i64 {
    c.query_one("SELECT count(*) FROM r", &[])
        .await
        .expect("count")
        .get(0)
}

fn err(e: &tokio_postgres::Error) -> (String, String) {
    db_error(e)
}

fn owned(e: (&str, &str)) -> (String, String) {
    (e.0.into(), e.1.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simple_autocommit_statement_over_the_limit_keeps_nothing() {
    let (_dsql, c) = setup().await;
    let e = c
        .batch_execute("INSERT INTO r SELECT g FROM generate_series(1, 11) g")
        .await
        .expect_err("11 rows");
    assert_eq!(err(&e), owned(ROW_LIMIT));
    assert_eq!(rows(&c).await, 0, "the crossing statement was rolled back");
    // Exactly the limit commits, and the session goes on as before.
    c.batch_execute("INSERT INTO r SELECT g FROM generate_series(1, 10) g")
        .await
        .expect("10 rows");
    assert_eq!(rows(&c).await, 10);
    c.batch_execute("UPDATE r SET id = id + 100")
        .await
        .expect("an UPDATE of exactly the limit");
    c.batch_execute("INSERT INTO r VALUES (1)")
        .await
        .expect("one more row in its own transaction");
    let e = c
        .batch_execute("DELETE FROM r")
        .await
        .expect_err("a DELETE of 11 rows");
    assert_eq!(err(&e), owned(ROW_LIMIT));
    assert_eq!(rows(&c).await, 11, "the DELETE kept nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_statements_in_one_query_string_are_one_transaction() {
    let (_dsql, c) = setup().await;
    // Each statement is under the limit, together they cross it at the second INSERT: the
    // client sees the results before it, then the error, and nothing of what follows.
    let e = c
        .simple_query(
            "INSERT INTO r SELECT g FROM generate_series(1, 6) g; \
             INSERT INTO r SELECT g FROM generate_series(7, 12) g; SELECT 42",
        )
        .await
        .expect_err("12 rows in one implicit transaction");
    assert_eq!(err(&e), owned(ROW_LIMIT));
    assert_eq!(
        rows(&c).await,
        0,
        "nothing of the implicit transaction was kept"
    );

    // Below the limit the client gets exactly PostgreSQL's answers, no guard's.
    let messages = c
        .simple_query(
            "INSERT INTO r VALUES (1), (2); SELECT 42 AS answer; DELETE FROM r WHERE id = 2",
        )
        .await
        .expect("three statements");
    let shape: Vec<String> = messages
        .iter()
        .map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => format!("complete {n}"),
            SimpleQueryMessage::Row(r) => format!("row {}", r.get(0).unwrap_or("")),
            SimpleQueryMessage::RowDescription(_) => "description".into(),
            _ => "other".into(),
        })
        .collect();
    assert_eq!(
        shape,
        [
            "complete 2",
            "description",
            "row 42",
            "complete 1",
            "complete 1"
        ],
        "{messages:?}"
    );
    assert_eq!(rows(&c).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extended_protocol_rolls_back_at_sync() {
    let (_dsql, c) = setup().await;
    let insert = c
        .prepare("INSERT INTO r SELECT g FROM generate_series($1::int, $2::int) g")
        .await
        .expect("prepare");
    let e = c
        .execute(&insert, &[&1i32, &11i32])
        .await
        .expect_err("11 rows");
    assert_eq!(err(&e), owned(ROW_LIMIT));
    assert_eq!(rows(&c).await, 0, "the crossing statement was rolled back");
    // The same prepared statement, below the limit: the guards' statements and portals never
    // collide with the client's, however often they run.
    for i in 0..3 {
        let n = c
            .execute(&insert, &[&(i * 10 + 1), &(i * 10 + 10)])
            .await
            .expect("10 rows");
        assert_eq!(n, 10);
    }
    assert_eq!(rows(&c).await, 30);
    // The unnamed statement (what libpq's PQexecParams uses) is untouched too.
    let n = c
        .execute("DELETE FROM r WHERE id <= $1", &[&5i32])
        .await
        .expect("5 rows");
    assert_eq!(n, 5);
    let e = c
        .execute("DELETE FROM r WHERE id > $1", &[&0i32])
        .await
        .expect_err("25 rows");
    assert_eq!(err(&e), owned(ROW_LIMIT));
    assert_eq!(rows(&c).await, 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_statements_keep_their_own_outcomes() {
    let (_dsql, c) = setup().await;
    let insert = c
        .prepare("INSERT INTO r SELECT g FROM generate_series($1::int, $2::int) g")
        .await
        .expect("prepare");
    // tokio-postgres sends all four before reading the first answer.
    let (a, b, d, e) = tokio::join!(
        c.execute(&insert, &[&1i32, &5i32]),
        c.execute(&insert, &[&100i32, &111i32]),
        c.execute(&insert, &[&6i32, &8i32]),
        c.query_one("SELECT count(*) FROM r", &[]),
    );
    assert_eq!(a.expect("5 rows"), 5);
    assert_eq!(err(&b.expect_err("12 rows")), owned(ROW_LIMIT));
    assert_eq!(d.expect("3 rows"), 3);
    assert_eq!(e.expect("count").get::<_, i64>(0), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earlier_transactions_do_not_count_against_an_autocommit_statement() {
    let (_dsql, c) = setup().await;
    // PostgreSQL keeps recent transactions' row counts in its per-transaction statistics for
    // up to a second: a guard that read them raw would refuse these.
    c.batch_execute("BEGIN; INSERT INTO r SELECT g FROM generate_series(1, 8) g; COMMIT")
        .await
        .expect("8 rows in an explicit transaction");
    c.batch_execute("BEGIN").await.expect("begin");
    c.execute(
        "INSERT INTO r SELECT g FROM generate_series(100, 107) g",
        &[],
    )
    .await
    .expect("8 rows");
    c.batch_execute("ROLLBACK").await.expect("rollback");
    c.batch_execute("INSERT INTO r SELECT g FROM generate_series(9, 16) g")
        .await
        .expect("8 more rows, autocommit");
    c.execute("DELETE FROM r WHERE id > $1", &[&8i32])
        .await
        .expect("8 rows deleted, autocommit");
    assert_eq!(rows(&c).await, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_positions_point_into_the_clients_text() {
    let (_dsql, c) = setup().await;
    let sql = "INSERT INTO r VALUES (1); INSERT INTO no_such_table VALUES (1)";
    let e = c.batch_execute(sql).await.expect_err("unknown table");
    let db = e.as_db_error().expect("server error");
    assert_eq!(db.code().code(), "42P01");
    let at = sql.find("no_such_table").expect("in the text") as u32 + 1;
    assert_eq!(db.position(), Some(&ErrorPosition::Original(at)));
    assert_eq!(rows(&c).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_stdin_counts_and_keeps_working() {
    use futures_util::SinkExt;
    let (_dsql, c) = setup().await;
    let copy = |from: i32, to: i32| {
        let c = &c;
        async move {
            let sink = c
                .copy_in::<_, bytes::Bytes>("COPY r (id) FROM STDIN")
                .await?;
            let mut sink = Box::pin(sink);
            let data: String = (from..=to).map(|i| format!("{i}\n")).collect();
            sink.send(bytes::Bytes::from(data)).await?;
            sink.as_mut().finish().await
        }
    };
    // tokio-postgres sends Sync right after Execute, inside copy-in mode (PostgreSQL ignores
    // it): the gateway must not count it, nor put its guard there.
    assert_eq!(copy(1, 10).await.expect("10 rows"), 10);
    assert_eq!(rows(&c).await, 10);
    let e = copy(11, 21).await.expect_err("11 rows");
    assert_eq!(err(&e), owned(ROW_LIMIT));
    assert_eq!(rows(&c).await, 10, "the crossing COPY kept nothing");
    // Prepared statements and refusals after a copy still line up with their answers.
    let e = c.execute("TRUNCATE r", &[]).await.expect_err("refused");
    assert_eq!(err(&e).0, "0A000");
    assert_eq!(
        c.execute("DELETE FROM r WHERE id > $1", &[&5i32])
            .await
            .expect("5 rows"),
        5
    );
}

/// A frontend message.
fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    msg(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
}

fn bind(stmt: &str) -> Vec<u8> {
    msg(b'B', format!("\0{stmt}\0\0\0\0\0\0\0").as_bytes())
}

fn execute() -> Vec<u8> {
    msg(b'E', b"\0\0\0\0\0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wire_shows_only_the_clients_answers_even_between_flushes() {
    use tokio::io::AsyncWriteExt;
    let (dsql, _c) = setup().await;
    let mut s = at_password_prompt(&dsql, "admin").await;
    s.write_all(&password_message(&token(&dsql, "admin")))
        .await
        .expect("password");
    while read_backend_message(&mut s).await.expect("login").0 != b'Z' {}
    let expect = async |s: &mut _, tags: &[u8]| {
        let mut got = Vec::new();
        while got.len() < tags.len() {
            let (tag, body) = tokio::time::timeout(GUARD, read_backend_message(s))
                .await
                .expect("an answer, not a hang")
                .expect("a message");
            got.push(tag);
            if tag == b'E' {
                panic!("error: {}", String::from_utf8_lossy(&body));
            }
        }
        assert_eq!(got, tags, "{:?}", String::from_utf8_lossy(&got));
    };
    // A write in an implicit transaction (the gateway puts its start guard before it), then
    // Flush: the client sees exactly its ParseComplete, BindComplete, CommandComplete.
    let mut out = parse("", "INSERT INTO r VALUES (1)");
    out.extend(bind(""));
    out.extend(execute());
    out.extend(msg(b'H', b""));
    s.write_all(&out).await.expect("send");
    expect(&mut s, b"12C").await;
    // More of the same batch, waiting on a Flush for the completions before going on.
    let mut out = parse("s2", "SELECT 1");
    out.extend(bind("s2"));
    out.extend(msg(b'H', b""));
    s.write_all(&out).await.expect("send");
    expect(&mut s, b"12").await;
    // Then Execute and Sync: the end guard's answers never show either.
    let mut out = execute();
    out.extend(msg(b'S', b""));
    s.write_all(&out).await.expect("send");
    expect(&mut s, b"DCZ").await;
    // The next batch reuses the statement; still only the client's answers.
    let mut out = bind("s2");
    out.extend(execute());
    out.extend(msg(b'S', b""));
    s.write_all(&out).await.expect("send");
    expect(&mut s, b"2DCZ").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_fails_before_copying_keeps_answers_in_line() {
    use tokio::io::AsyncWriteExt;
    let (dsql, _c) = setup().await;
    let mut s = at_password_prompt(&dsql, "admin").await;
    s.write_all(&password_message(&token(&dsql, "admin")))
        .await
        .expect("password");
    while read_backend_message(&mut s).await.expect("login").0 != b'Z' {}
    // Tags of the answers up to the next ReadyForQuery, with each error's SQLSTATE.
    async fn answers<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let (tag, body) = tokio::time::timeout(GUARD, read_backend_message(s))
                .await
                .expect("an answer, not a hang")
                .expect("a message");
            out.push(match tag {
                b'E' => format!("E{}", sqlstate(&body)),
                t => (t as char).to_string(),
            });
            if tag == b'Z' {
                return out;
            }
        }
    }
    // The COPY fails at Execute, before copy-in mode: PostgreSQL answers the Sync that a
    // client such as tokio-postgres sends right after Execute, then the one after CopyFail.
    let mut out = parse("", "COPY no_such_table (id) FROM STDIN");
    out.extend(bind(""));
    out.extend(execute());
    out.extend(msg(b'S', b""));
    s.write_all(&out).await.expect("send");
    assert_eq!(answers(&mut s).await, ["1", "2", "E42P01", "Z"]);
    let mut out = msg(b'f', b"no copy\0");
    out.extend(msg(b'S', b""));
    s.write_all(&out).await.expect("send");
    assert_eq!(answers(&mut s).await, ["Z"]);
    // Refusals and guarded writes after it still line up with their answers.
    for _ in 0..2 {
        s.write_all(&msg(b'Q', b"TRUNCATE r\0"))
            .await
            .expect("send");
        assert_eq!(answers(&mut s).await, ["E0A000", "Z"]);
        let mut out = parse("", "INSERT INTO r VALUES (1)");
        out.extend(bind(""));
        out.extend(execute());
        out.extend(msg(b'S', b""));
        s.write_all(&out).await.expect("send");
        assert_eq!(answers(&mut s).await, ["1", "2", "C", "Z"]);
        s.write_all(&msg(b'Q', b"DELETE FROM r\0"))
            .await
            .expect("send");
        assert_eq!(answers(&mut s).await, ["C", "Z"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_and_commit_in_one_query_string_keep_nothing_over_the_limit() {
    let (_dsql, c) = setup().await;
    // PostgreSQL would run the COMMIT before the gateway saw the second INSERT's count.
    let e = c
        .batch_execute(
            "BEGIN; INSERT INTO r SELECT g FROM generate_series(1, 6) g; \
             INSERT INTO r SELECT g FROM generate_series(7, 12) g; COMMIT",
        )
        .await
        .expect_err("12 rows in one transaction block");
    assert_eq!(err(&e), owned(ROW_LIMIT));
    // As after any error inside a transaction block: aborted until ROLLBACK.
    let e = c.batch_execute("SELECT 1").await.expect_err("aborted");
    assert_eq!(err(&e).0, "25P02");
    c.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(rows(&c).await, 0, "nothing of the transaction was kept");

    // Below the limit: exactly PostgreSQL's answers, and the rows are kept.
    let messages = c
        .simple_query("BEGIN; INSERT INTO r VALUES (1), (2); SELECT 42; COMMIT")
        .await
        .expect("a transaction block in one string");
    let completes: Vec<u64> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(completes, [0, 2, 1, 0], "{messages:?}");
    assert_eq!(rows(&c).await, 2);

    // Error positions still point into the client's text, past the guard after BEGIN.
    let sql = "BEGIN; INSERT INTO r VALUES (3); INSERT INTO no_such_table VALUES (1); COMMIT";
    let e = c.batch_execute(sql).await.expect_err("unknown table");
    let db = e.as_db_error().expect("server error");
    assert_eq!(db.code().code(), "42P01");
    let at = sql.find("no_such_table").expect("in the text") as u32 + 1;
    assert_eq!(db.position(), Some(&ErrorPosition::Original(at)));
    c.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(rows(&c).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_simple_queries_keep_their_own_outcomes() {
    use tokio::io::AsyncWriteExt;
    let (dsql, _c) = setup().await;
    let mut s = at_password_prompt(&dsql, "admin").await;
    s.write_all(&password_message(&token(&dsql, "admin")))
        .await
        .expect("password");
    while read_backend_message(&mut s).await.expect("login").0 != b'Z' {}
    // Four queries in one write, before reading any answer.
    let mut out = Vec::new();
    for sql in [
        "INSERT INTO r SELECT g FROM generate_series(1, 5) g",
        "INSERT INTO r SELECT g FROM generate_series(100, 110) g",
        "INSERT INTO r VALUES (6); SELECT count(*) FROM r",
        "SELECT count(*) FROM r",
    ] {
        out.extend(msg(b'Q', format!("{sql}\0").as_bytes()));
    }
    s.write_all(&out).await.expect("send");
    let mut got = Vec::new();
    while got.iter().filter(|t: &&String| *t == "Z").count() < 4 {
        let (tag, body) = tokio::time::timeout(GUARD, read_backend_message(&mut s))
            .await
            .expect("an answer, not a hang")
            .expect("a message");
        got.push(match tag {
            b'E' => format!("E{}", sqlstate(&body)),
            b'D' => format!("D{}", String::from_utf8_lossy(&body[6..])),
            b'C' => String::from_utf8_lossy(&body[..body.len() - 1]).into_owned(),
            t => (t as char).to_string(),
        });
    }
    assert_eq!(
        got,
        [
            "INSERT 0 5",
            "Z",
            "E54000",
            "Z",
            "INSERT 0 1",
            "T",
            "D6",
            "SELECT 1",
            "Z",
            "T",
            "D6",
            "SELECT 1",
            "Z"
        ]
    );
}
