//! `dsql local` end to end: the ready line, psql (a real client) with tokens from `dsql token`
//! and from boto3, SIGTERM cleanup, usage errors.

use std::io::{BufRead, BufReader};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DSQL: &str = env!("CARGO_BIN_EXE_dsql");
const ACCESS_KEY: &str = "AKIDLOCALCLITEST0001";
const SECRET_KEY: &str = "local-cli-test-secret";

/// A running `dsql local`, killed (SIGTERM, then SIGKILL) if a test fails before stopping it.
struct Local {
    child: Child,
    ready: serde_json::Value,
}

impl Local {
    fn start(extra: &[&str]) -> Local {
        let mut cmd = Command::new(DSQL);
        cmd.args([
            "local",
            "--access-key",
            ACCESS_KEY,
            "--secret-key",
            SECRET_KEY,
        ])
        .args(extra)
        .env("DSQL_LOG", "info")
        .stderr(Stdio::inherit());
        Local::spawn(cmd)
    }

    /// Runs `cmd` (a `dsql local` command line) and waits for its ready line.
    fn spawn(mut cmd: Command) -> Local {
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("dsql local starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("ready line");
        assert!(
            !line.trim().is_empty(),
            "dsql local exited before printing its ready line (see stderr above)"
        );
        let ready: serde_json::Value = serde_json::from_str(&line).expect("the ready line is JSON");
        Local { child, ready }
    }

    fn field(&self, k: &str) -> String {
        match &self.ready[k] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            other => panic!("ready line field {k} is {other:?}: {}", self.ready),
        }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "SIGTERM sent");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "dsql local did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// psql with the token in PGPASSWORD, verify-full against the CA; returns its output.
    fn psql(&self, token: &str, sql: &str) -> Output {
        self.psql_via(&self.field("host"), token, sql)
    }

    /// psql naming `host` (SNI and certificate check) while dialling the gateway's address.
    fn psql_via(&self, host: &str, token: &str, sql: &str) -> Output {
        let conninfo = format!(
            "host={} hostaddr={} port={} user=admin dbname=postgres sslmode=verify-full sslrootcert={} connect_timeout=30",
            host,
            self.field("address"),
            self.field("port"),
            self.field("ca")
        );
        Command::new(psql_path())
            .args([
                conninfo.as_str(),
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .env("PGPASSWORD", token)
            .env_remove("PGHOST")
            .env_remove("PGSSLMODE")
            .output()
            .expect("psql runs")
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            for _ in 0..100 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn psql_path() -> &'static str {
    if Path::new("/usr/bin/psql").exists() {
        return "/usr/bin/psql";
    }
    panic!("psql is not installed: apt-get install postgresql-client");
}

fn dsql_token(local: &Local) -> String {
    dsql_token_for(&local.field("host"), local, SECRET_KEY)
}

/// `dsql token` for `host` in the endpoint's region, signed with ACCESS_KEY and `secret`.
fn dsql_token_for(host: &str, local: &Local, secret: &str) -> String {
    let out = Command::new(DSQL)
        .args([
            "token",
            "--host",
            host,
            "--region",
            &local.field("region"),
            "--user",
            "admin",
        ])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("dsql token runs");
    assert!(
        out.status.success(),
        "dsql token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

fn boto3_token(local: &Local) -> String {
    let script = "import sys, boto3\n\
        c = boto3.client('dsql', region_name=sys.argv[2])\n\
        print(c.generate_db_connect_admin_auth_token(Hostname=sys.argv[1], Region=sys.argv[2], ExpiresIn=900))\n";
    let out = Command::new("python3")
        .args(["-c", script, &local.field("host"), &local.field("region")])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): install Python 3 and `pip install boto3`")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'boto3'"),
        "boto3 is not installed for python3: run `pip install boto3`"
    );
    assert!(
        out.status.success(),
        "boto3 could not sign a token: {stderr}"
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[test]
fn psql_connects_with_tokens_from_dsql_token_and_boto3_and_sigterm_cleans_up() {
    let mut local = Local::start(&[]);
    for k in [
        "host",
        "port",
        "address",
        "region",
        "ca",
        "user",
        "database",
        "access_key_id",
        "connection_string",
    ] {
        assert!(!local.field(k).is_empty(), "ready line has {k}");
    }
    assert_eq!(local.field("region"), "us-east-1");
    assert_eq!(local.field("access_key_id"), ACCESS_KEY);
    assert!(local.field("host").ends_with(".dsql.us-east-1.on.aws"));
    let ca = local.field("ca");
    assert!(Path::new(&ca).is_file());

    for (who, token) in [
        ("dsql token", dsql_token(&local)),
        ("boto3", boto3_token(&local)),
    ] {
        let out = local.psql(&token, "SELECT 'connected as ' || current_user");
        assert!(
            out.status.success(),
            "psql with a {who} token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "connected as admin",
            "{who}"
        );
    }
    let out = local.psql("not-a-token", "SELECT 1");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unable to accept connection, access denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let status = local.terminate();
    assert!(status.success(), "dsql local exits 0 on SIGTERM: {status}");
    assert!(
        !Path::new(&ca).exists(),
        "the temporary CA directory is removed"
    );
    let addr = format!("{}:{}", local.field("address"), local.field("port"));
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "nothing listens after shutdown"
    );
}

#[test]
fn options_reach_the_endpoint() {
    let tls_dir = tempfile::tempdir().expect("tempdir");
    let tls = tls_dir.path().to_string_lossy().into_owned();
    let mut local = Local::start(&[
        "--region",
        "eu-west-1",
        "--tls-dir",
        &tls,
        "--max-connection-age",
        "600",
    ]);
    assert_eq!(local.field("region"), "eu-west-1");
    assert!(local.field("host").ends_with(".dsql.eu-west-1.on.aws"));
    assert_eq!(
        Path::new(&local.field("ca")),
        tls_dir.path().join("dsql-local-ca.pem")
    );
    assert!(local.terminate().success());
    assert!(
        tls_dir.path().join("dsql-local-ca.pem").exists(),
        "a CA in --tls-dir is the user's to keep"
    );
}

#[test]
fn bad_options_are_usage_errors() {
    for (args, needle) in [
        (vec!["local", "--access-key", "AKID"], "secret-key"),
        (vec!["local", "--region", "Not A Region"], "region"),
        (vec!["local", "--rate-limit", "0"], "rate limit"),
        (
            vec!["local", "--max-connection-age", "0"],
            "max-connection-age",
        ),
        (
            vec!["local", "--upstream", "mysql://u:hunter2@h/db"],
            "upstream",
        ),
        (
            vec![
                "local",
                "--access-key",
                "AKID",
                "--secret-key-file",
                "/nonexistent/secret",
            ],
            "--secret-key-file /nonexistent/secret",
        ),
        (
            vec![
                "local",
                "--access-key",
                "AKID",
                "--secret-key",
                "hunter2",
                "--secret-key-file",
                "/etc/hostname",
            ],
            "--secret-key",
        ),
        (vec!["local", "--host-alias", "not a host"], "host alias"),
    ] {
        let out = Command::new(DSQL).args(&args).output().expect("dsql runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
        assert!(out.stdout.is_empty(), "no ready line on failure");
    }
}

/// Processes whose working directory or command line is under `dir` (PostgreSQL's processes
/// work in its data directory, dsql-local's supervisor in the temporary directory).
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

/// A TMPDIR of the test's own, so what dsql local leaves behind can be seen; PostgreSQL (run
/// as `postgres` when we are root) must reach its directory inside.
fn own_tmpdir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    tmp
}

fn local_command(tmp: &Path) -> Command {
    let mut cmd = Command::new(DSQL);
    cmd.args([
        "local",
        "--access-key",
        ACCESS_KEY,
        "--secret-key",
        SECRET_KEY,
    ])
    .env("TMPDIR", tmp)
    .env("DSQL_LOG", "info")
    .stderr(Stdio::null());
    cmd
}

/// Waits (bounded) until no process and no file of dsql local's PostgreSQL is left in `tmp`.
fn assert_cleaned_up(tmp: &Path, when: &str) {
    let bound = Duration::from_secs(20);
    let deadline = Instant::now() + bound;
    loop {
        let procs = processes_under(tmp);
        let left: Vec<PathBuf> = std::fs::read_dir(tmp)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if procs.is_empty() && left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: {bound:?} later, still running: {procs:?}; still there: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn sigkill_of_dsql_local_leaves_no_postgres_and_no_directory() {
    let tmp = own_tmpdir();
    let mut local = Local::spawn(local_command(tmp.path()));
    let out = local.psql(&dsql_token(&local), "SELECT 1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !processes_under(tmp.path()).is_empty(),
        "PostgreSQL runs under {}",
        tmp.path().display()
    );
    local.child.kill().expect("SIGKILL");
    local.child.wait().expect("reaped");
    assert_cleaned_up(tmp.path(), "after SIGKILL of dsql local");
}

#[test]
fn sigterm_at_any_moment_of_startup_or_shutdown_removes_everything() {
    let tmp = own_tmpdir();
    // Spread over startup: before the handlers, during initdb, during PostgreSQL's start.
    for delay_ms in [0u64, 20, 60, 150, 300, 600, 1000, 1500, 2500] {
        let mut child = local_command(tmp.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("dsql local starts");
        std::thread::sleep(Duration::from_millis(delay_ms));
        signal(child.id(), "-TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().expect("wait").is_none() {
            assert!(
                Instant::now() < deadline,
                "{delay_ms} ms: still running after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_cleaned_up(tmp.path(), &format!("SIGTERM {delay_ms} ms into startup"));
    }
    // Two signals in a row: the second arrives during shutdown and changes nothing.
    let mut local = Local::spawn(local_command(tmp.path()));
    signal(local.child.id(), "-TERM");
    signal(local.child.id(), "-TERM");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = local.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "a second SIGTERM during shutdown: {status}"
    );
    assert_cleaned_up(tmp.path(), "SIGTERM twice");
}

/// A TLS ClientHello (split into records) whose SNI host name is `name`, however invalid.
fn client_hello_with_sni(name: &[u8]) -> Vec<u8> {
    let mut sni = vec![0u8]; // host_name
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut ext = vec![0u8, 0]; // server_name
    ext.extend_from_slice(&((sni.len() + 2) as u16).to_be_bytes());
    ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    ext.extend_from_slice(&sni);
    let mut body = vec![3u8, 3];
    body.extend_from_slice(&[0u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut handshake = vec![1u8]; // client_hello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut out = Vec::new();
    for chunk in handshake.chunks(16_384) {
        out.extend_from_slice(&[0x16, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[test]
fn hostile_tls_names_reach_the_log_cut_short_and_without_colour_codes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log_path = tmp.path().join("stderr.log");
    let log_file = std::fs::File::create(&log_path).expect("log file");
    let mut cmd = Command::new(DSQL);
    cmd.args([
        "local",
        "--access-key",
        ACCESS_KEY,
        "--secret-key",
        SECRET_KEY,
    ])
    .env("DSQL_LOG", "info")
    .stderr(log_file);
    let mut local = Local::spawn(cmd);
    let address = format!("{}:{}", local.field("address"), local.field("port"));
    let hello = client_hello_with_sni(&[b'a'; 65_000]);
    for _ in 0..5 {
        let mut s = std::net::TcpStream::connect(&address).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        // The gateway may close before reading it all.
        let _ = s.write_all(&hello);
        let _ = s.read_to_end(&mut Vec::new());
    }
    assert!(local.terminate().success());
    let log = std::fs::read(&log_path).expect("log");
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.contains("Illegal SNI"),
        "rustls's warning reaches the log: {}",
        &text[..text.len().min(2000)]
    );
    assert!(!text.contains('\x1b'), "colour codes in a log file");
    let longest = text.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 1024, "a log line of {longest} bytes");
    assert!(log.len() < 32 * 1024, "{} bytes of log", log.len());
}

#[test]
fn the_secret_key_comes_from_a_file_rust_log_is_read_and_aliases_route() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log_path = tmp.path().join("stderr.log");
    let secret = "file-secret-not-in-ps-0001";
    let secret_file = tmp.path().join("secret");
    std::fs::write(&secret_file, format!("{secret}\n")).expect("secret file");
    let mut cmd = Command::new(DSQL);
    cmd.args(["local", "--access-key", ACCESS_KEY, "--secret-key-file"])
        .arg(&secret_file)
        .args(["--host-alias", "localhost"])
        .env_remove("DSQL_LOG")
        .env("RUST_LOG", "dsql_local=debug,info")
        .stderr(std::fs::File::create(&log_path).expect("log file"));
    let mut local = Local::spawn(cmd);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", local.child.id())).expect("cmdline");
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(secret),
        "the secret is in the process list"
    );
    let out = local.psql(
        &dsql_token_for(&local.field("host"), &local, secret),
        "SELECT 1",
    );
    assert!(
        out.status.success(),
        "token signed with the file's secret: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = local.psql_via(
        "localhost",
        &dsql_token_for("localhost", &local, secret),
        "SELECT 1",
    );
    assert!(
        out.status.success(),
        "through the alias: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(local.terminate().success());
    let log = std::fs::read_to_string(&log_path).expect("log");
    assert!(
        log.contains("DEBUG") && log.contains("accepted connection"),
        "RUST_LOG=dsql_local=debug is honoured:\n{log}"
    );
    assert!(!log.contains(secret), "the secret is logged");
}
