//! `dsql local` end to end: the ready line, psql (a real client) with tokens from `dsql token`
//! and from boto3, SIGTERM cleanup, usage errors.

use std::io::{BufRead, BufReader};
use std::path::Path;
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
        let mut child = Command::new(DSQL)
            .args([
                "local",
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                SECRET_KEY,
            ])
            .args(extra)
            .env("DSQL_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
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
        let conninfo = format!(
            "host={} hostaddr={} port={} user=admin dbname=postgres sslmode=verify-full sslrootcert={} connect_timeout=30",
            self.field("host"),
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
    let out = Command::new(DSQL)
        .args([
            "token",
            "--host",
            &local.field("host"),
            "--region",
            &local.field("region"),
            "--user",
            "admin",
        ])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
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
    ] {
        let out = Command::new(DSQL).args(&args).output().expect("dsql runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
        assert!(out.stdout.is_empty(), "no ready line on failure");
    }
}
