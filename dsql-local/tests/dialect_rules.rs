//! DSQL's SQL dialect through the gateway, table-driven: SQL in, outcome (SQLSTATE and words)
//! out, over the simple query protocol and the extended protocol (Parse/Bind/Execute), with a
//! real client (tokio-postgres) and a real PostgreSQL behind the gateway.

mod support;

use dsql_local::{Dialect, LocalDsql};
use support::*;

/// What a statement must do.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Ok,
    Refused(&'static str, &'static str),
}
use Expect::{Ok as Accepted, Refused};

/// Every statement rule. `{p}` becomes a per-protocol suffix so accepted DDL does not collide.
const CASES: &[(&str, Expect)] = &[
    // Whole statement kinds, named after PostgreSQL's parse nodes.
    (
        "TRUNCATE base",
        Refused("0A000", "unsupported statement: Truncate"),
    ),
    (
        "CREATE EXTENSION IF NOT EXISTS pgcrypto",
        Refused("0A000", "unsupported statement: CreateExtension"),
    ),
    (
        "CREATE DATABASE other{p}",
        Refused("0A000", "unsupported statement: Createdb"),
    ),
    (
        "CREATE TABLE copy{p} AS SELECT * FROM base",
        Refused("0A000", "unsupported statement: CreateTableAs"),
    ),
    (
        "CREATE MATERIALIZED VIEW mv{p} AS SELECT 1",
        Refused("0A000", "unsupported statement: CreateTableAs"),
    ),
    (
        "LISTEN channel",
        Refused("0A000", "unsupported statement: Listen"),
    ),
    (
        "NOTIFY channel",
        Refused("0A000", "unsupported statement: Notify"),
    ),
    (
        "UNLISTEN channel",
        Refused("0A000", "unsupported statement: Unlisten"),
    ),
    (
        "ALTER SYSTEM SET work_mem = '1MB'",
        Refused("0A000", "unsupported statement: AlterSystem"),
    ),
    (
        "CREATE TABLESPACE ts LOCATION '/tmp'",
        Refused("0A000", "unsupported statement: CreateTableSpace"),
    ),
    (
        "CREATE FOREIGN TABLE ft{p} (a int) SERVER s",
        Refused("0A000", "unsupported statement: CreateForeignTable"),
    ),
    (
        "CREATE TYPE pair{p} AS (a int, b int)",
        Refused("0A000", "unsupported statement: CompositeType"),
    ),
    (
        "CREATE TYPE r{p} AS RANGE (subtype = int4)",
        Refused("0A000", "unsupported statement: CreateRange"),
    ),
    (
        "MERGE INTO base b USING base s ON b.id = s.id WHEN MATCHED THEN DO NOTHING",
        Refused("0A000", "unsupported statement type: MERGE"),
    ),
    (
        "VACUUM base",
        Refused("0A000", "unsupported VACUUM statement"),
    ),
    // Object kinds with their own words.
    (
        "CREATE TRIGGER trg AFTER INSERT ON base FOR EACH ROW EXECUTE FUNCTION f()",
        Refused("0A000", "CREATE TRIGGER not supported"),
    ),
    (
        "CREATE TYPE mood{p} AS ENUM ('sad', 'happy')",
        Refused("0A000", "CREATE TYPE not supported"),
    ),
    (
        "ALTER TYPE mood ADD VALUE 'ok'",
        Refused("0A000", "ALTER TYPE not supported"),
    ),
    (
        "CREATE TEMPORARY TABLE tmp{p} (a int)",
        Refused(
            "0A000",
            "TEMPORARY or TEMP table not supported for CREATE TABLE",
        ),
    ),
    (
        "CREATE TEMP TABLE tmp{p} (a int)",
        Refused(
            "0A000",
            "TEMPORARY or TEMP table not supported for CREATE TABLE",
        ),
    ),
    (
        "CREATE UNLOGGED TABLE ul{p} (a int)",
        Refused("0A000", "UNLOGGED table not supported for CREATE TABLE"),
    ),
    (
        "CREATE FUNCTION pl{p}() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$",
        Refused(
            "0A000",
            "CREATE FUNCTION with language plpgsql not supported",
        ),
    ),
    (
        "CREATE FUNCTION one{p}() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$",
        Accepted,
    ),
    ("CREATE DOMAIN posint{p} AS int CHECK (VALUE > 0)", Accepted),
    // Types.
    (
        "CREATE TABLE m{p} (id uuid PRIMARY KEY, a money)",
        Refused("0A000", "datatype money not supported"),
    ),
    (
        "CREATE TABLE m{p} (id uuid PRIMARY KEY, a inet)",
        Refused("0A000", "datatype inet not supported"),
    ),
    (
        "CREATE TABLE m{p} (id uuid PRIMARY KEY, a xml)",
        Refused("0A000", "datatype xml not supported"),
    ),
    (
        "CREATE TABLE m{p} (id uuid PRIMARY KEY, a point)",
        Refused("0A000", "datatype point not supported"),
    ),
    (
        "CREATE TABLE m{p} (id uuid PRIMARY KEY, a tsvector)",
        Refused("0A000", "datatype tsvector not supported"),
    ),
    (
        "CREATE TABLE m{p} (id uuid PRIMARY KEY, a int4range)",
        Refused("0A000", "datatype int4range not supported"),
    ),
    (
        "CREATE TABLE m{p} (id uuid PRIMARY KEY, a bit varying(3))",
        Refused("0A000", "datatype bit varying not supported"),
    ),
    (
        "CREATE TABLE m{p} (id uuid PRIMARY KEY, a int[])",
        Refused("0A000", "datatype integer[] not supported"),
    ),
    (
        "CREATE TABLE m{p} (id uuid PRIMARY KEY, a text[])",
        Refused("0A000", "datatype text[] not supported"),
    ),
    (
        "CREATE TABLE m{p} (id serial PRIMARY KEY)",
        Refused("42704", "type \"serial\" does not exist"),
    ),
    (
        "CREATE TABLE m{p} (id bigserial PRIMARY KEY)",
        Refused("42704", "type \"bigserial\" does not exist"),
    ),
    // Indexes.
    (
        "CREATE INDEX base_a{p} ON base (a)",
        Refused("0A000", "unsupported mode. please use CREATE INDEX ASYNC."),
    ),
    (
        "CREATE UNIQUE INDEX base_u{p} ON base (a)",
        Refused("0A000", "unsupported mode. please use CREATE INDEX ASYNC."),
    ),
    // Sequences and identity.
    (
        "CREATE SEQUENCE s{p}",
        Refused(
            "0A000",
            "CREATE SEQUENCE is not supported without an explicit cache size. Specify CACHE 1 or CACHE >= 65536",
        ),
    ),
    (
        "CREATE SEQUENCE s{p} CACHE 100",
        Refused(
            "0A000",
            "CREATE SEQUENCE is not supported without an explicit cache size. Specify CACHE 1 or CACHE >= 65536",
        ),
    ),
    ("CREATE SEQUENCE s1{p} CACHE 1", Accepted),
    ("CREATE SEQUENCE s2{p} CACHE 65536", Accepted),
    (
        "CREATE TABLE i{p} (id bigint GENERATED ALWAYS AS IDENTITY)",
        Refused(
            "0A000",
            "identity column is not supported without an explicit cache size. Specify CACHE 1 or CACHE >= 65536",
        ),
    ),
    (
        "CREATE TABLE i{p} (id int GENERATED ALWAYS AS IDENTITY (CACHE 65536))",
        Refused(
            "0A000",
            "datatype integer not supported, identity column type must be bigint",
        ),
    ),
    (
        "CREATE TABLE i{p} (id bigint GENERATED BY DEFAULT AS IDENTITY (CACHE 65536) PRIMARY KEY, v text)",
        Accepted,
    ),
    // ALTER TABLE.
    (
        "ALTER TABLE base ADD COLUMN c{p} int DEFAULT 0",
        Refused(
            "0A000",
            "ALTER TABLE ADD COLUMN with constraint not supported",
        ),
    ),
    (
        "ALTER TABLE base ADD COLUMN c{p} int NOT NULL",
        Refused(
            "0A000",
            "ALTER TABLE ADD COLUMN with constraint not supported",
        ),
    ),
    ("ALTER TABLE base ADD COLUMN c{p} int", Accepted),
    (
        "ALTER TABLE base ALTER COLUMN a TYPE bigint",
        Refused("0A000", "ALTER TABLE ALTER COLUMN TYPE not supported"),
    ),
    (
        "ALTER TABLE base ADD CONSTRAINT a_pos{p} CHECK (a > 0)",
        Refused(
            "0A000",
            "ALTER TABLE ADD CONSTRAINT not supported; only FOREIGN KEY ... NOT VALID, then ALTER TABLE ASYNC ... VALIDATE CONSTRAINT",
        ),
    ),
    // Locking and sampling.
    (
        "SELECT * FROM base FOR SHARE",
        Refused(
            "0A000",
            "locking clauses other than FOR UPDATE/FOR KEY SHARE are not supported",
        ),
    ),
    (
        "SELECT * FROM base FOR NO KEY UPDATE",
        Refused(
            "0A000",
            "locking clauses other than FOR UPDATE/FOR KEY SHARE are not supported",
        ),
    ),
    (
        "SELECT * FROM (SELECT * FROM base FOR SHARE) s",
        Refused(
            "0A000",
            "locking clauses other than FOR UPDATE/FOR KEY SHARE are not supported",
        ),
    ),
    ("SELECT * FROM base FOR UPDATE", Accepted),
    ("SELECT * FROM base FOR KEY SHARE", Accepted),
    (
        "SELECT * FROM base TABLESAMPLE SYSTEM (10)",
        Refused("0A000", "TABLESAMPLE not supported"),
    ),
    // Transactions and session parameters.
    (
        "BEGIN ISOLATION LEVEL SERIALIZABLE",
        Refused("0A000", "Unsupported isolation level: SERIALIZABLE"),
    ),
    (
        "START TRANSACTION ISOLATION LEVEL READ COMMITTED",
        Refused("0A000", "Unsupported isolation level: READ COMMITTED"),
    ),
    (
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        Refused(
            "0A000",
            "setting configuration parameter \"TRANSACTION\" not supported",
        ),
    ),
    (
        "SET default_transaction_isolation = 'serializable'",
        Refused(
            "0A000",
            "setting configuration parameter \"default_transaction_isolation\" not supported",
        ),
    ),
    (
        "SET default_transaction_read_only = on",
        Refused(
            "0A000",
            "setting configuration parameter \"default_transaction_read_only\" not supported",
        ),
    ),
    (
        "SAVEPOINT sp",
        Refused("0A000", "unsupported transaction statement: SAVEPOINT"),
    ),
    (
        "ROLLBACK TO SAVEPOINT sp",
        Refused("0A000", "unsupported transaction statement: ROLLBACK TO"),
    ),
    ("SET search_path = public", Accepted),
    // What DSQL runs as PostgreSQL does.
    ("SELECT count(*) FROM base", Accepted),
    (
        "INSERT INTO base (id, a) VALUES (gen_random_uuid(), 1)",
        Accepted,
    ),
    ("UPDATE base SET a = a + 1", Accepted),
    ("DELETE FROM base WHERE a < 0", Accepted),
    ("CREATE VIEW v{p} AS SELECT id FROM base", Accepted),
    (
        "SELECT 'TRUNCATE base; CREATE INDEX i ON base (a)'",
        Accepted,
    ),
];

fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("a database error, got {e}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

async fn connect_admin(dsql: &LocalDsql) -> tokio_postgres::Client {
    let (client, _conn) = connect(dsql, &Dial::new(dsql, "admin"), &token(dsql, "admin"))
        .await
        .expect("connect");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_rule_in_both_protocols() {
    let dsql = start(LocalDsql::builder()).await;
    let client = connect_admin(&dsql).await;
    client
        .batch_execute("CREATE TABLE base (id uuid PRIMARY KEY, a int)")
        .await
        .expect("setup table");
    let before = dsql.counters().statements_refused();
    let mut refused = 0;
    let mut failures = Vec::new();
    for (protocol, suffix) in [("simple", "_s"), ("extended", "_x")] {
        for (sql, expect) in CASES {
            let sql = sql.replace("{p}", suffix);
            let result = if protocol == "simple" {
                client.batch_execute(&sql).await
            } else {
                client.execute(&sql, &[]).await.map(|_| ())
            };
            match (expect, &result) {
                (Expect::Ok, Ok(())) => {}
                (Expect::Refused(code, message), Err(e)) if e.as_db_error().is_some() => {
                    refused += 1;
                    let got = db_error(e);
                    if got != ((*code).to_owned(), (*message).to_owned()) {
                        failures.push(format!(
                            "{protocol}: {sql}\n  want {code} {message}\n  got  {} {}",
                            got.0, got.1
                        ));
                    }
                }
                (want, got) => failures.push(format!(
                    "{protocol}: {sql}\n  want {want:?}\n  got  {got:?}"
                )),
            }
            // Outside a transaction block a refusal aborts nothing: the session goes on.
            client
                .batch_execute("SELECT 1")
                .await
                .expect("session still usable");
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(dsql.counters().statements_refused() - before, refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_rules_in_both_protocols() {
    let dsql = start(LocalDsql::builder()).await;
    let c = connect_admin(&dsql).await;
    c.batch_execute("CREATE TABLE t (id uuid PRIMARY KEY, a int)")
        .await
        .expect("setup");

    // DDL then DML in one explicit transaction; the refusal aborts it (25P02 until ROLLBACK).
    c.batch_execute("BEGIN").await.expect("begin");
    c.batch_execute("CREATE TABLE t2 (id uuid PRIMARY KEY)")
        .await
        .expect("one ddl");
    let e = c
        .execute("INSERT INTO t VALUES (gen_random_uuid(), 1)", &[])
        .await
        .expect_err("dml after ddl");
    assert_eq!(
        db_error(&e),
        (
            "0A000".into(),
            "ddl and dml are not supported in the same transaction".into()
        )
    );
    let e = c.batch_execute("SELECT 1").await.expect_err("aborted");
    assert_eq!(db_error(&e).0, "25P02");
    c.batch_execute("ROLLBACK").await.expect("rollback");

    // Two DDL statements in one transaction, simple protocol.
    c.batch_execute("BEGIN; CREATE TABLE t3 (id uuid PRIMARY KEY)")
        .await
        .expect("first ddl");
    let e = c
        .batch_execute("CREATE TABLE t4 (id uuid PRIMARY KEY)")
        .await
        .expect_err("second ddl");
    assert_eq!(
        db_error(&e),
        (
            "0A000".into(),
            "multiple ddl statements not supported in a transaction".into()
        )
    );
    c.batch_execute("ROLLBACK").await.expect("rollback");

    // Several statements in one query string are one implicit transaction: nothing runs.
    let e = c
        .batch_execute(
            "CREATE TABLE t5 (id uuid PRIMARY KEY); INSERT INTO t VALUES (gen_random_uuid(), 5)",
        )
        .await
        .expect_err("ddl and dml in one string");
    assert_eq!(
        db_error(&e).1,
        "ddl and dml are not supported in the same transaction"
    );
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('t2', 't3', 't5')",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0, "refused or rolled back DDL left nothing behind");

    // DML then DDL (extended protocol for the DDL).
    c.batch_execute("BEGIN").await.expect("begin");
    c.execute("INSERT INTO t VALUES (gen_random_uuid(), 1)", &[])
        .await
        .expect("dml");
    let e = c
        .execute("CREATE TABLE t6 (id uuid PRIMARY KEY)", &[])
        .await
        .expect_err("ddl after dml");
    assert_eq!(
        db_error(&e).1,
        "ddl and dml are not supported in the same transaction"
    );
    c.batch_execute("ROLLBACK").await.expect("rollback");

    // A refused statement inside a transaction aborts it; outside, nothing.
    c.batch_execute("BEGIN").await.expect("begin");
    let e = c.batch_execute("SAVEPOINT a").await.expect_err("savepoint");
    assert_eq!(
        db_error(&e).1,
        "unsupported transaction statement: SAVEPOINT"
    );
    let e = c
        .execute("SELECT 1", &[])
        .await
        .expect_err("aborted, extended");
    assert_eq!(db_error(&e).0, "25P02");
    c.batch_execute("ROLLBACK").await.expect("rollback");

    // REPEATABLE READ is DSQL's own level: accepted.
    c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1; COMMIT")
        .await
        .expect("repeatable read");
    // Reads mix with DDL.
    c.batch_execute("BEGIN; CREATE TABLE t7 (id uuid PRIMARY KEY); SELECT 1; COMMIT")
        .await
        .expect("ddl with a read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_row_limit_is_enforced_and_configurable() {
    let dsql = start(LocalDsql::builder().max_transaction_rows(10)).await;
    let c = connect_admin(&dsql).await;
    c.batch_execute("CREATE TABLE r (id int PRIMARY KEY)")
        .await
        .expect("setup");
    // Exactly the limit is allowed.
    c.batch_execute("INSERT INTO r SELECT g FROM generate_series(1, 10) g")
        .await
        .expect("10 rows");
    c.batch_execute("DELETE FROM r").await.expect("clean");
    // Crossing it inside a transaction fails the statement and aborts the transaction.
    c.batch_execute("BEGIN").await.expect("begin");
    c.execute("INSERT INTO r SELECT g FROM generate_series(1, 6) g", &[])
        .await
        .expect("6 rows");
    let e = c
        .execute("INSERT INTO r SELECT g FROM generate_series(7, 12) g", &[])
        .await
        .expect_err("12 rows");
    assert_eq!(
        db_error(&e),
        ("54000".into(), "transaction row limit exceeded".into())
    );
    let e = c.batch_execute("SELECT 1").await.expect_err("aborted");
    assert_eq!(db_error(&e).0, "25P02");
    c.batch_execute("COMMIT")
        .await
        .expect("commit of an aborted transaction rolls back");
    let n: i64 = c
        .query_one("SELECT count(*) FROM r", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0, "nothing of the aborted transaction was committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dsql_schema_and_workload_pass_untouched() {
    let dsql = start(LocalDsql::builder()).await;
    let mut c = connect_admin(&dsql).await;
    c.batch_execute(
        "CREATE TABLE accounts (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), owner text NOT NULL, balance numeric NOT NULL, created timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .expect("table");
    let row = c
        .query_one("CREATE INDEX ASYNC accounts_owner ON accounts (owner)", &[])
        .await
        .expect("CREATE INDEX ASYNC returns a job");
    let job: String = row.get("job_id");
    assert_eq!(job.len(), 26);
    c.execute("CALL sys.wait_for_job($1)", &[&job])
        .await
        .expect("wait for the job");
    let status: String = c
        .query_one("SELECT status FROM sys.jobs WHERE job_id = $1", &[&job])
        .await
        .expect("sys.jobs lists it")
        .get(0);
    assert_eq!(status, "completed");
    let exists: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE indexname = 'accounts_owner')",
            &[],
        )
        .await
        .expect("index")
        .get(0);
    assert!(exists, "the index was built");
    c.batch_execute("CREATE UNIQUE INDEX ASYNC IF NOT EXISTS accounts_owner_u ON accounts (owner, created) INCLUDE (balance)")
        .await
        .expect("unique async with INCLUDE, simple protocol");
    c.batch_execute("CREATE TABLE transfers (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), account uuid NOT NULL REFERENCES accounts (id), amount numeric NOT NULL)")
        .await
        .expect("foreign key in CREATE TABLE");
    c.batch_execute("ALTER TABLE transfers ADD CONSTRAINT fk2 FOREIGN KEY (account) REFERENCES accounts (id) NOT VALID")
        .await
        .expect("FK NOT VALID");
    let v = c
        .query_one("ALTER TABLE ASYNC transfers VALIDATE CONSTRAINT fk2", &[])
        .await
        .expect("validate as a job");
    let _: String = v.get(0);
    // The workload: transactions of DML only, repeatable read.
    for i in 0..5 {
        let tx = c.transaction().await.expect("tx");
        let id: uuid_like::Uuid = tx
            .query_one(
                "INSERT INTO accounts (owner, balance) VALUES ($1, 100) RETURNING id::text",
                &[&format!("o{i}")],
            )
            .await
            .expect("insert")
            .get(0);
        tx.execute(
            "INSERT INTO transfers (account, amount) VALUES ($1::text::uuid, 5)",
            &[&id.0],
        )
        .await
        .expect("transfer");
        tx.execute(
            "UPDATE accounts SET balance = balance - 5 WHERE id = $1::text::uuid",
            &[&id.0],
        )
        .await
        .expect("update");
        tx.commit().await.expect("commit");
    }
    let n: i64 = c
        .query_one("SELECT count(*) FROM transfers", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 5);
}

/// A text uuid (no uuid feature on tokio-postgres here).
mod uuid_like {
    pub(crate) struct Uuid(pub(crate) String);
    impl<'a> tokio_postgres::types::FromSql<'a> for Uuid {
        fn from_sql(
            ty: &tokio_postgres::types::Type,
            raw: &'a [u8],
        ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            String::from_sql(ty, raw).map(Uuid)
        }
        fn accepts(ty: &tokio_postgres::types::Type) -> bool {
            <String as tokio_postgres::types::FromSql>::accepts(ty)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_dialect_turns_the_rules_off() {
    let dsql = start(LocalDsql::builder().dialect(Dialect::Postgres)).await;
    let c = connect_admin(&dsql).await;
    c.batch_execute("CREATE TABLE p (id serial PRIMARY KEY, tags text[]); CREATE INDEX p_tags ON p (tags); INSERT INTO p (tags) VALUES ('{a}'); TRUNCATE p")
        .await
        .expect("PostgreSQL-only SQL runs");
    assert_eq!(dsql.counters().statements_refused(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_session_parameters_are_refused_at_startup_too() {
    let dsql = start(LocalDsql::builder()).await;
    let mut dial = Dial::new(&dsql, "admin");
    dial.options = Some("-c default_transaction_isolation=serializable".into());
    let e = connect(&dsql, &dial, &token(&dsql, "admin"))
        .await
        .map(|_| ())
        .expect_err("refused parameter");
    assert_eq!(
        db_error(&e),
        (
            "0A000".into(),
            "setting configuration parameter \"default_transaction_isolation\" not supported"
                .into()
        )
    );
    dial.options = Some("-c search_path=public".into());
    let (c, _) = connect(&dsql, &dial, &token(&dsql, "admin"))
        .await
        .expect("other parameters are fine");
    c.simple_query("SELECT 1").await.expect("query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_key_column_cannot_be_dropped() {
    const REFUSED: &str = "ALTER TABLE DROP COLUMN not supported for primary key column";
    let dsql = start(LocalDsql::builder()).await;
    let c = connect_admin(&dsql).await;
    for setup in [
        "CREATE TABLE pk1 (id uuid PRIMARY KEY, a int, b int)",
        "CREATE TABLE pk2 (x int, y int, z int, PRIMARY KEY (x, y))",
        "CREATE SCHEMA s",
        // A name that tries to end the gateway's own check early.
        "CREATE TABLE s.\"we$dsql_local_guard$ird\"\"\" (\"k$dsql_local_guard$\" int PRIMARY KEY, v int)",
    ] {
        c.batch_execute(setup).await.expect(setup);
    }
    let refused = |col: &str| ("0A000".to_owned(), format!("{REFUSED} \"{col}\""));
    let counted_before = dsql.counters().statements_refused();
    // Simple protocol, extended protocol, and inside a transaction block (which it aborts).
    let e = c
        .batch_execute("ALTER TABLE pk1 DROP COLUMN id")
        .await
        .expect_err("pk column");
    assert_eq!(db_error(&e), refused("id"));
    let e = c
        .execute("alter table PK2 drop column y", &[])
        .await
        .expect_err("part of a composite key");
    assert_eq!(db_error(&e), refused("y"));
    let e = c
        .batch_execute(
            "ALTER TABLE s.\"we$dsql_local_guard$ird\"\"\" DROP COLUMN \"k$dsql_local_guard$\"",
        )
        .await
        .expect_err("quoted names");
    assert_eq!(db_error(&e), refused("k$dsql_local_guard$"));
    c.batch_execute("BEGIN").await.expect("begin");
    let e = c
        .batch_execute("ALTER TABLE pk2 DROP COLUMN z, DROP COLUMN x")
        .await
        .expect_err("one of two columns is in the key");
    assert_eq!(db_error(&e), refused("x"));
    let e = c.batch_execute("SELECT 1").await.expect_err("aborted");
    assert_eq!(db_error(&e).0, "25P02");
    c.batch_execute("ROLLBACK").await.expect("rollback");
    // Nothing was dropped.
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_name IN ('pk1', 'pk2')",
            &[],
        )
        .await
        .expect("columns")
        .get(0);
    assert_eq!(n, 6);
    // Other columns drop as before, in both protocols; a missing table is PostgreSQL's to report.
    c.batch_execute("ALTER TABLE pk1 DROP COLUMN a")
        .await
        .expect("not a key column");
    let n = c
        .execute("ALTER TABLE pk2 DROP COLUMN z", &[])
        .await
        .expect("not a key column (extended)");
    assert_eq!(n, 0);
    c.batch_execute("ALTER TABLE IF EXISTS nope DROP COLUMN id")
        .await
        .expect("IF EXISTS on a missing table is a notice");
    let e = c
        .batch_execute("ALTER TABLE nope DROP COLUMN id")
        .await
        .expect_err("missing table");
    assert_eq!(db_error(&e).0, "42P01");
    // The session goes on: DML in its own transaction after the refusals.
    c.batch_execute("INSERT INTO pk1 VALUES (gen_random_uuid(), 1)")
        .await
        .expect("insert");
    assert_eq!(
        dsql.counters().statements_refused() - counted_before,
        4,
        "each refused drop is counted"
    );
}
