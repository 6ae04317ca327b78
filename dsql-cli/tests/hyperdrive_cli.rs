//! `dsql hyperdrive` end to end: the real binary, the fake Hyperdrive API (which test-connects
//! with every new password through dsql-local, a real PostgreSQL behind a token-verifying
//! gateway), and credentials passed the way users pass them (AWS_* environment variables).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use dsql_hyperdrive::fake::FakeHyperdrive;
use dsql_local::LocalDsql;
use serde_json::{Value, json};

const HANG_GUARD: Duration = Duration::from_secs(180);

struct Env {
    local: LocalDsql,
    fake: FakeHyperdrive,
    dir: tempfile::TempDir,
}

async fn env() -> Env {
    env_with(LocalDsql::builder()).await
}

async fn env_with(builder: dsql_local::LocalDsqlBuilder) -> Env {
    let local = builder.start().await.unwrap_or_else(|e| {
        panic!("dsql-local could not start ({e}); it needs PostgreSQL: apt-get install postgresql")
    });
    let fake = FakeHyperdrive::builder()
        .route_origin(local.host(), local.address())
        .origin_ca(local.ca_path())
        .start()
        .await
        .expect("fake Hyperdrive starts");
    Env {
        local,
        fake,
        dir: tempfile::tempdir().expect("tempdir"),
    }
}

impl Env {
    fn origin(&self, user: &str) -> Value {
        json!({"scheme": "postgres", "host": self.local.host(), "port": self.local.port(),
               "database": "postgres", "user": user, "password": "stale"})
    }

    /// Writes a configuration file with the given endpoint names (all on the dsql-local host).
    fn config(&self, names: &[&str], state: bool) -> PathBuf {
        let mut text = format!(
            "[cloudflare]\naccount_id = \"{}\"\n",
            self.fake.account_id()
        );
        if state {
            text.push_str("state_file = \"state.json\"\n");
        }
        for n in names {
            text.push_str(&format!(
                "\n[[endpoint]]\nname = \"{n}\"\nhost = \"{}\"\nport = {}\n",
                self.local.host(),
                self.local.port()
            ));
        }
        let path = self.dir.path().join("hyperdrive.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let creds = self.local.credentials();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_dsql"));
        cmd.arg("hyperdrive")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_ACCESS_KEY_ID", creds.access_key_id())
            .env("AWS_SECRET_ACCESS_KEY", creds.secret_access_key())
            .env("AWS_CONFIG_FILE", self.dir.path().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.path().join("no-aws-credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("CLOUDFLARE_API_TOKEN", self.fake.api_token())
            .env("CLOUDFLARE_API_BASE_URL", self.fake.api_base())
            .kill_on_drop(true);
        if let Some(t) = creds.session_token() {
            cmd.env("AWS_SESSION_TOKEN", t);
        }
        cmd
    }

    async fn run_with(&self, args: &[&str], extra_env: &[(&str, String)]) -> Run {
        let mut cmd = self.command(args);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let out = tokio::time::timeout(HANG_GUARD, cmd.output())
            .await
            .expect("dsql hung")
            .expect("dsql runs");
        let run = Run::from(out);
        self.assert_no_secrets(&run);
        run
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[]).await
    }

    /// No token, API token or secret key in anything the command printed.
    fn assert_no_secrets(&self, run: &Run) {
        let creds = self.local.credentials();
        let all = format!("{}\n{}", run.stdout, run.stderr);
        let mut secrets = vec![
            self.fake.api_token().to_owned(),
            creds.secret_access_key().to_owned(),
            "X-Amz-Signature".to_owned(),
        ];
        secrets.extend(creds.session_token().map(str::to_owned));
        for c in self.fake.configs() {
            secrets.extend(self.fake.stored_password(&c.id).filter(|p| p != "stale"));
        }
        for s in secrets {
            assert!(!all.contains(&s), "a secret leaked into the output:\n{all}");
        }
    }
}

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_rotates_the_config_on_the_second_page_with_a_password_only_patch() {
    let e = env().await;
    for i in 0..25 {
        e.fake.insert_config(
            &format!("filler-{i}"),
            json!({"host": "other.example", "port": 5432, "database": "postgres", "user": "admin"}),
        );
    }
    let id = e.fake.insert_config("orders", e.origin("admin"));
    let cfg = e.config(&["orders"], false);
    let accepted_before = e.local.counters().accepted();

    let run = e
        .run(&["sync", "--config", path_str(&cfg), "--output", "json"])
        .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let doc = run.json();
    assert_eq!(doc["orders"]["action"], "rotated", "{doc}");
    assert_eq!(doc["orders"]["config_id"], id.as_str());
    assert!(doc["orders"]["token_expiry"].is_string());
    assert_eq!(doc["orders"]["error"], Value::Null);
    assert_eq!(e.fake.configs().len(), 26, "not duplicated");

    let writes = e.fake.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].method, "PATCH");
    let body = writes[0].body.clone().unwrap();
    let password = body["origin"]["password"]
        .as_str()
        .expect("a password")
        .to_owned();
    assert_eq!(
        body,
        json!({"origin": {"password": password}}),
        "the PATCH holds only the password"
    );
    // The fake accepted it only after logging in through dsql-local as admin with it.
    assert_eq!(
        e.fake.test_connects(),
        vec![(e.local.host().to_owned(), Ok(()))]
    );
    assert!(e.local.counters().accepted() > accepted_before);
    assert_eq!(e.fake.stored_password(&id), Some(password));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_then_success_is_retried() {
    let e = env().await;
    e.fake.insert_config("orders", e.origin("admin"));
    let cfg = e.config(&["orders"], false);
    e.fake.inject_rate_limit(1, 1);
    // Full logging on: still no secret in the output (checked by `run`).
    let run = e
        .run_with(
            &["sync", "--config", path_str(&cfg)],
            &[("DSQL_LOG", "trace".to_owned())],
        )
        .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("orders: rotated"), "{run:?}");
    // The trace logging was on and wrote (so the secret check above saw real log output): the
    // client's per-request debug line and its retry line for the 429.
    assert!(
        run.stderr.contains("Hyperdrive API request") && run.stderr.contains("retrying"),
        "trace logs expected on stderr: {run:?}"
    );
    let reqs = e.fake.requests();
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(
        reqs[1].method, "GET",
        "the 429'd listing was sent again: {reqs:?}"
    );
    assert_eq!(e.fake.writes().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_endpoint_does_not_stop_the_others_and_exits_1() {
    let e = env().await;
    let good = e.fake.insert_config("orders", e.origin("admin"));
    e.fake.insert_config("billing", e.origin("admin"));
    e.fake.insert_config("twice", e.origin("admin"));
    e.fake.insert_config("twice", e.origin("admin"));
    e.fake.fail_config("billing", 2014, u32::MAX);
    let cfg = e.config(&["billing", "orders", "twice"], false);
    let run = e
        .run(&["sync", "--config", path_str(&cfg), "--output", "json"])
        .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    let doc = run.json();
    assert_eq!(doc["orders"]["action"], "rotated", "{doc}");
    assert_eq!(doc["billing"]["action"], "failed");
    assert!(
        doc["billing"]["error"].as_str().unwrap().contains("2014"),
        "{doc}"
    );
    assert_eq!(doc["twice"]["action"], "failed");
    assert!(
        doc["twice"]["error"]
            .as_str()
            .unwrap()
            .contains("2 Hyperdrive configurations"),
        "{doc}"
    );
    assert!(e.fake.stored_password(&good).is_some_and(|p| p != "stale"));
    assert!(
        e.fake.writes().iter().all(|w| w.method == "PATCH"),
        "never PUT or DELETE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_config_is_created_only_with_create_missing() {
    let e = env().await;
    let cfg = e.config(&["orders"], false);
    let run = e.run(&["sync", "--config", path_str(&cfg)]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout.contains("orders: failed") && run.stdout.contains("--create-missing"),
        "{run:?}"
    );
    assert!(e.fake.writes().is_empty());
    assert!(e.fake.configs().is_empty());

    let run = e
        .run(&[
            "sync",
            "--config",
            path_str(&cfg),
            "--create-missing",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.json()["orders"]["action"], "created");
    let writes = e.fake.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].method, "POST");
    let origin = &writes[0].body.as_ref().unwrap()["origin"];
    assert_eq!(
        (origin["host"].as_str(), origin["user"].as_str()),
        (Some(e.local.host()), Some("admin"))
    );
    assert_eq!(e.fake.configs().len(), 1);
    assert_eq!(e.fake.test_connects().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_sends_no_write_and_keeps_no_state() {
    let e = env().await;
    e.fake.insert_config("orders", e.origin("admin"));
    let cfg = e.config(&["orders", "new-one"], true);
    let run = e
        .run(&[
            "sync",
            "--config",
            path_str(&cfg),
            "--dry-run",
            "--create-missing",
            "--output",
            "json",
        ])
        .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let doc = run.json();
    assert_eq!(doc["orders"]["action"], "would_rotate", "{doc}");
    assert_eq!(doc["new-one"]["action"], "would_create", "{doc}");
    assert!(e.fake.writes().is_empty(), "{:?}", e.fake.writes());
    assert!(!e.dir.path().join("state.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_state_file_a_second_sync_rotates_only_when_due() {
    let e = env().await;
    e.fake.insert_config("orders", e.origin("admin"));
    let cfg = e.config(&["orders"], true);
    let sync = ["sync", "--config", path_str(&cfg), "--output", "json"];

    let first = e.run(&sync).await;
    assert_eq!(
        (first.code, first.json()["orders"]["action"].as_str()),
        (Some(0), Some("rotated")),
        "{first:?}"
    );
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(e.dir.path().join("state.json")).unwrap())
            .unwrap();
    assert!(
        state["endpoints"]["orders"]["last_rotation"].is_string(),
        "{state}"
    );
    assert_eq!(e.fake.writes().len(), 1);

    let second = e.run(&sync).await;
    assert_eq!(second.json()["orders"]["action"], "unchanged", "{second:?}");
    assert!(second.json()["orders"]["next_rotation"].is_string());
    assert_eq!(e.fake.writes().len(), 1, "nothing written when not due");

    // The policy clock (test-only DSQL_HYPERDRIVE_NOW): 3 days on, a 7-day token is not due;
    // 5 days on (less than a third left), it is.
    let later = |days: u64| {
        let t = SystemTime::now() + Duration::from_secs(days * 86_400);
        vec![(
            "DSQL_HYPERDRIVE_NOW",
            dsql_hyperdrive::state::format_time(t),
        )]
    };
    let third = e.run_with(&sync, &later(3)).await;
    assert_eq!(third.json()["orders"]["action"], "unchanged", "{third:?}");
    assert_eq!(e.fake.writes().len(), 1);
    let fourth = e.run_with(&sync, &later(5)).await;
    assert_eq!(
        (fourth.code, fourth.json()["orders"]["action"].as_str()),
        (Some(0), Some("rotated")),
        "{fourth:?}"
    );
    assert_eq!(e.fake.writes().len(), 2);

    let forced = e
        .run(&["sync", "--config", path_str(&cfg), "--force"])
        .await;
    assert_eq!(forced.code, Some(0), "{forced:?}");
    assert_eq!(e.fake.writes().len(), 3, "--force rotates although not due");

    let status = e
        .run(&["status", "--config", path_str(&cfg), "--output", "json"])
        .await;
    assert_eq!(status.code, Some(0), "{status:?}");
    let s = status.json();
    assert_eq!(s["orders"]["config_id"], e.fake.configs()[0].id.as_str());
    assert!(
        s["orders"]["last_rotation"].is_string() && s["orders"]["token_expiry"].is_string(),
        "{s}"
    );
    assert_eq!(s["orders"]["due"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_exits_2_naming_the_line_and_the_key() {
    let e = env().await;
    let path = e.dir.path().join("bad.toml");
    std::fs::write(
        &path,
        format!(
            "[cloudflare]\naccount_id = \"{}\"\n\n[[endpoint]]\nname = \"orders\"\nhots = \"{}\"\n",
            e.fake.account_id(),
            e.local.host()
        ),
    )
    .unwrap();
    let run = e.run(&["sync", "--config", path_str(&path)]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("bad.toml:6") && run.stderr.contains("`hots`"),
        "{run:?}"
    );

    std::fs::write(
        &path,
        format!(
            "[cloudflare]\naccount_id = \"{}\"\n[[endpoint]]\nname = \"orders\"\nhost = \"{}\"\nexpires_in = 700000\n",
            e.fake.account_id(),
            e.local.host()
        ),
    )
    .unwrap();
    let run = e.run(&["sync", "--config", path_str(&path)]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("bad.toml:6") && run.stderr.contains("endpoint[0].expires_in"),
        "{run:?}"
    );

    let run = e
        .run(&[
            "sync",
            "--config",
            path_str(&e.dir.path().join("missing.toml")),
        ])
        .await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("cannot read"), "{run:?}");
    assert!(e.fake.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_credentials_are_warned_about() {
    let e = env_with(LocalDsql::builder().credentials(
        "ASIATEMPORARYKEY0001",
        "temporary-secret-key-value",
        Some("temporary-session-token-value".to_owned()),
    ))
    .await;
    e.fake.insert_config("orders", e.origin("admin"));
    let cfg = e.config(&["orders"], false);
    let run = e.run(&["sync", "--config", path_str(&cfg)]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stderr
            .contains("warning: orders: the signing credentials are temporary"),
        "{run:?}"
    );
}

/// Polls `done` every 50 ms until it holds; fails after [`HANG_GUARD`] naming `what`.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(HANG_GUARD, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_survives_a_failed_pass_rotates_then_finishes_the_pass_in_progress_on_sigterm() {
    let e = env().await;
    let id = e.fake.insert_config("orders", e.origin("admin"));
    // The first pass fails (database missing, not retried); the next one succeeds.
    e.fake.fail_config("orders", 2014, 1);
    let cfg = e.config(&["orders"], true);
    let child = e
        .command(&["run", "--config", path_str(&cfg), "--interval", "1s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("dsql runs");
    // State: the second pass has written a password that works (not "stale").
    wait_until("a rotation after the failed pass", || {
        e.fake.writes().len() == 2 && e.fake.stored_password(&id).is_some_and(|p| p != "stale")
    })
    .await;
    // The next listing is answered 429 with retry-after: the pass that gets it waits in the
    // middle, before retrying. Once the 429 went out, that pass is in progress: stop it there.
    e.fake.inject_rate_limit(1, 6);
    wait_until("the injected 429 to be served", || {
        e.fake.pending_rate_limits() == 0
    })
    .await;
    // Nothing else runs now: the pass sleeps before retrying the request answered 429.
    let served = e.fake.requests().len();
    let pid = child.id().expect("running").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let out = tokio::time::timeout(HANG_GUARD, child.wait_with_output())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    let run = Run::from(out);
    e.assert_no_secrets(&run);
    assert_eq!(run.code, Some(0), "{run:?}");
    // What a SIGTERM mid-pass prints: a notice, the interrupted pass's own report (it finished:
    // its listing was retried after the signal), then "stopped".
    let notice = run
        .stderr
        .find("finishing the pass in progress")
        .unwrap_or_else(|| panic!("no notice of the pass in progress: {run:?}"));
    let stopped = run.stderr.find("rotator stopped").expect("stopped");
    assert!(notice < stopped, "{run:?}");
    assert!(
        run.stdout.contains("orders: failed") && run.stdout.contains("2014"),
        "{run:?}"
    );
    assert!(run.stdout.contains("orders: rotated"), "{run:?}");
    assert!(
        run.stdout
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("orders: unchanged")),
        "the interrupted pass reported, and nothing was due: {run:?}"
    );
    let requests = e.fake.requests();
    assert_eq!(
        requests.len(),
        served + 1,
        "the listing answered 429 was retried after the signal, and no pass began after it: {requests:?}"
    );
    assert_eq!(requests[served].method, "GET", "{requests:?}");
    assert_eq!(
        e.fake.writes().len(),
        2,
        "a failed try, one rotation, then nothing due"
    );
}
