//! The gateway against clients that do not play fair: the upstream reached around the gateway,
//! clients that stall before login, passwords built to cost time, links planted in the TLS
//! directory. Each test fails on the weakness it names.

mod support;

use dsql_local::{LocalDsql, RefusalReason};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn upstream_port(dsql: &LocalDsql) -> u16 {
    dsql.upstream_connection_string()
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("port="))
        .and_then(|p| p.parse().ok())
        .expect("port in the upstream connection string")
}

/// Nobody logs in to the temporary PostgreSQL but through the gateway: not over TCP without the
/// per-run password, not through the unix socket as another local user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_postgres_accepts_only_the_gateway() {
    let dsql = start(LocalDsql::builder()).await;
    let port = upstream_port(&dsql);

    // The control: with the per-run password (which upstream_connection_string holds) TCP works.
    let (client, conn) =
        tokio_postgres::connect(&dsql.upstream_connection_string(), tokio_postgres::NoTls)
            .await
            .expect("TCP with the per-run password");
    tokio::spawn(conn);
    client.simple_query("SELECT 1").await.expect("query");

    for (user, password) in [
        ("admin", None),
        ("admin", Some("wrong")),
        ("postgres", None),
    ] {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(port)
            .user(user)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(30));
        if let Some(p) = password {
            cfg.password(p);
        }
        let attempt = tokio::time::timeout(GUARD, cfg.connect(tokio_postgres::NoTls))
            .await
            .expect("guard");
        assert!(
            attempt.is_err(),
            "{user} (password {password:?}) logged in to the upstream over TCP"
        );
    }

    // The unix socket: in a directory and a file only its owner (and root) can use.
    let dir = dsql.postgres_socket_dir().expect("temporary postgres");
    let socket = dir.join(format!(".s.PGSQL.{port}"));
    for path in [dir, socket.as_path()] {
        let mode = std::fs::metadata(path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", path.display());
    }
    if running_as_root() {
        // Another local user, as an attacker on the same machine would be.
        let attempt = std::process::Command::new("runuser")
            .args(["-u", "nobody", "--", psql(), "-X", "-w", "-h"])
            .arg(dir)
            .args([
                "-p",
                &port.to_string(),
                "-U",
                "admin",
                "-d",
                "postgres",
                "-c",
                "SELECT 1",
            ])
            .output()
            .expect("runuser runs");
        let stderr = String::from_utf8_lossy(&attempt.stderr);
        assert!(
            !attempt.status.success(),
            "another user logged in through the socket"
        );
        assert!(stderr.contains("Permission denied"), "{stderr}");
    }
    dsql.shutdown().await.expect("shutdown");
}

/// Clients stalled at the password prompt take no `max_connections` place, and the pre-login
/// cap closes the surplus at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_have_not_logged_in_take_no_connection_slots() {
    let dsql = start(LocalDsql::builder().max_connections(2)).await;
    let dial = Dial::new(&dsql, "admin");
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(at_password_prompt(&dsql, "admin").await);
    }
    let _a = connect(&dsql, &dial, &token(&dsql, "admin"))
        .await
        .expect("a real login beside 20 stalled clients");
    let _b = connect(&dsql, &dial, &token(&dsql, "admin"))
        .await
        .expect("a second real login");
    let err = connect(&dsql, &dial, &token(&dsql, "admin"))
        .await
        .expect_err("the third logged-in connection is over the limit");
    assert_eq!(db_error(&err).0, "53300");
    drop(stalled);

    let dsql = start(LocalDsql::builder().max_unauthenticated(3)).await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(
            tokio::net::TcpStream::connect(dsql.address())
                .await
                .expect("tcp"),
        );
    }
    let mut surplus = tokio::net::TcpStream::connect(dsql.address())
        .await
        .expect("tcp");
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(GUARD, surplus.read(&mut byte))
        .await
        .expect("closed before the guard")
        .unwrap_or(0);
    assert_eq!(
        n, 0,
        "the fourth unauthenticated connection is closed at once"
    );
    assert_eq!(
        dsql.counters()
            .refused(RefusalReason::TooManyUnauthenticated),
        1
    );
    drop(silent);
    // Their places free up as the gateway sees them close.
    let deadline = Instant::now() + GUARD;
    loop {
        match connect(&dsql, &Dial::new(&dsql, "admin"), &token(&dsql, "admin")).await {
            Ok(_) => break,
            Err(_) => assert!(Instant::now() < deadline, "places never freed"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The handshake deadline is one, fixed, from accept: a GSSENCRequest every 300 ms (each
/// answered `N`) once restarted it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_logs_in_is_closed_at_the_deadline_whatever_it_sends() {
    let deadline = Duration::from_secs(1);
    let dsql = start(LocalDsql::builder().handshake_timeout(deadline)).await;
    let mut tcp = tokio::net::TcpStream::connect(dsql.address())
        .await
        .expect("tcp");
    let opened = Instant::now();
    // GSSENCRequest: length 8, code 80877104.
    let gssenc = [0u8, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
    let mut answers = 0;
    loop {
        assert!(
            opened.elapsed() < Duration::from_secs(20),
            "still open after 20 s and {answers} GSSENCRequests"
        );
        if tcp.write_all(&gssenc).await.is_err() {
            break;
        }
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut byte)).await {
            Ok(Ok(1)) => {
                assert_eq!(byte[0], b'N');
                answers += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok(_) => break,
            Err(_) => {}
        }
    }
    assert!(opened.elapsed() >= deadline, "closed before the deadline");
    assert!(answers >= 1, "the gateway answered before the deadline");
    eventually("the timeout is counted", || {
        dsql.counters().refused(RefusalReason::HandshakeTimeout) == 1
    })
    .await;
}

/// The worst password that fits the gateway's 64 KiB message limit: thousands of parameters.
fn worst_case_password(dsql: &LocalDsql) -> String {
    let mut p = format!("{}/?", dsql.host());
    let mut i = 0;
    while p.len() < 64 * 1024 - 64 {
        p.push_str(&format!("a{i}=&"));
        i += 1;
    }
    p.push_str("z=1");
    p
}

/// Twenty clients send the costliest password at once; each is refused as malformed and a real
/// login beside them goes through. (Refusing one costs microseconds in a release build: see
/// `cargo run --release -p dsql-local --example hostile_passwords`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costly_passwords_are_refused_in_linear_time() {
    let dsql = start(LocalDsql::builder()).await;
    let password = worst_case_password(&dsql);
    let mut hostile = Vec::new();
    for _ in 0..20 {
        hostile.push(at_password_prompt(&dsql, "admin").await);
    }
    let message = password_message(&password);
    let sent = hostile.into_iter().map(|mut s| {
        let message = message.clone();
        tokio::spawn(async move {
            s.write_all(&message).await.expect("password sent");
            s.flush().await.expect("flush");
            read_backend_message(&mut s).await
        })
    });
    let sent: Vec<_> = sent.collect();
    let started = Instant::now();
    let (_client, _conn) = connect(&dsql, &Dial::new(&dsql, "admin"), &token(&dsql, "admin"))
        .await
        .expect("a real login beside 20 hostile passwords");
    let login = started.elapsed();
    for task in sent {
        let (tag, body) = task.await.expect("task").expect("an answer");
        assert_eq!((tag, sqlstate(&body)), (b'E', "28000".to_owned()));
    }
    assert_eq!(dsql.counters().refused(RefusalReason::Malformed), 20);
    // Generous for a debug build on a loaded machine; the quadratic check took 10 s or more.
    assert!(
        login < Duration::from_secs(5),
        "a real login took {login:?} beside 20 hostile passwords"
    );
}

/// `--tls-dir` with a link planted where the CA goes: the link is replaced, its target untouched;
/// a TLS directory that is itself a link is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_dir_is_never_written_through_a_link() {
    let root = tempfile::tempdir().expect("tempdir");
    let victim = root.path().join("victim.txt");
    std::fs::write(&victim, "precious").expect("victim");
    let tls = root.path().join("tls");
    std::fs::create_dir(&tls).expect("tls dir");
    let planted = tls.join(dsql_local::CA_FILE_NAME);
    std::os::unix::fs::symlink(&victim, &planted).expect("symlink");

    let dsql = start(LocalDsql::builder().tls_dir(&tls)).await;
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious",
        "the link's target was overwritten"
    );
    let meta = std::fs::symlink_metadata(dsql.ca_path()).expect("CA");
    assert!(meta.is_file(), "the CA is a regular file, not the link");
    let pem = std::fs::read_to_string(dsql.ca_path()).expect("CA");
    assert!(pem.contains("BEGIN CERTIFICATE"));
    let (client, _conn) = connect(&dsql, &Dial::new(&dsql, "admin"), &token(&dsql, "admin"))
        .await
        .expect("clients trust the rewritten CA");
    client.simple_query("SELECT 1").await.expect("query");
    dsql.shutdown().await.expect("shutdown");

    let linked_dir = root.path().join("tls-link");
    std::os::unix::fs::symlink(&tls, &linked_dir).expect("symlink");
    let err = LocalDsql::builder()
        .tls_dir(&linked_dir)
        .start()
        .await
        .expect_err("a linked TLS directory is refused");
    assert!(err.to_string().contains("symbolic link"), "{err}");
}
