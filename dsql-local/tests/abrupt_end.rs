//! The temporary PostgreSQL never outlives the process that started it: a test process killed
//! with SIGKILL (at any moment of its startup, or once ready) leaves no PostgreSQL process and
//! no temporary directory behind for more than a few seconds.
//!
//! The test runs itself again as a child process (this same test binary, with
//! `DSQL_LOCAL_ABRUPT_END_CHILD` set), which starts an endpoint and is then killed.

mod support;

use dsql_local::LocalDsql;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "DSQL_LOCAL_ABRUPT_END_CHILD";
const TEST_NAME: &str = "sigkill_of_a_process_using_the_harness_leaves_nothing_behind";
/// How long cleanup may take: PostgreSQL's immediate shutdown, or an initdb in progress.
const CLEANUP_BOUND: Duration = Duration::from_secs(20);

/// Processes whose working directory or command line is under `dir` (PostgreSQL's processes
/// work in its data directory; the supervisor in the temporary directory).
fn processes_under(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        if cwd.starts_with(dir) || cmdline.contains(&needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn spawn_child(tmp: &Path) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env("TMPDIR", tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the test binary runs again")
}

fn sigkill(child: &mut Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
}

/// Waits until nothing of the killed child's PostgreSQL is left under `tmp`.
fn assert_cleaned_up(tmp: &Path, when: &str) {
    let deadline = Instant::now() + CLEANUP_BOUND;
    loop {
        let procs = processes_under(tmp);
        let left = entries(tmp);
        if procs.is_empty() && left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: {CLEANUP_BOUND:?} after SIGKILL, still running: {procs:?}; still there: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigkill_of_a_process_using_the_harness_leaves_nothing_behind() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child_main();
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    // PostgreSQL runs as `postgres` when we are root: it must reach its directory in here.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");

    // Once ready, with a client connected through the gateway.
    let mut child = spawn_child(tmp.path());
    let stdout = child.stdout.take().expect("stdout");
    // libtest prints the test's name first, on the same line.
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.split_once("READY ").map(|(_, dir)| dir.to_owned()));
    let Some(ready) = ready else {
        sigkill(&mut child);
        panic!("the child never became ready");
    };
    let socket_dir = PathBuf::from(&ready);
    assert!(socket_dir.starts_with(tmp.path()), "{ready}");
    assert!(
        !processes_under(tmp.path()).is_empty(),
        "PostgreSQL runs under {}",
        tmp.path().display()
    );
    sigkill(&mut child);
    assert_cleaned_up(tmp.path(), "once ready");

    // At moments spread over startup: before the supervisor, during initdb, during start.
    for delay_ms in [0u64, 30, 100, 250, 500, 900, 1400] {
        let mut child = spawn_child(tmp.path());
        std::thread::sleep(Duration::from_millis(delay_ms));
        sigkill(&mut child);
        assert_cleaned_up(tmp.path(), &format!("{delay_ms} ms into startup"));
    }
}

/// The killed process: starts an endpoint, connects through it, says where PostgreSQL lives,
/// then waits to be killed (and exits on its own after a while, should the parent be gone).
fn child_main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dsql = support::start(LocalDsql::builder()).await;
        let dial = support::Dial::new(&dsql, "admin");
        let (client, _conn) = support::connect(&dsql, &dial, &support::token(&dsql, "admin"))
            .await
            .expect("connect");
        client.simple_query("SELECT 1").await.expect("query");
        let dir = dsql.postgres_socket_dir().expect("temporary postgres");
        println!("READY {}", dir.display());
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}
