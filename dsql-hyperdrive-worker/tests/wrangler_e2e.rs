//! End to end: the Worker built for wasm32 and run by `wrangler dev --local` (workerd), its
//! Cloudflare API base pointed at the fake Hyperdrive API, which test-connects every new password
//! through dsql-local (a real PostgreSQL behind a token-verifying gateway) before accepting it.
//!
//! Needs `npm ci` in this crate's directory, worker-build and wasm-bindgen-cli (see build.sh)
//! and PostgreSQL; fails with the command to run when one is missing. Built only with
//! `--features e2e` (`cargo xtask ci` runs it).
#![cfg(not(target_arch = "wasm32"))]

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use dsql_hyperdrive::fake::FakeHyperdrive;
use dsql_hyperdrive::state::parse_time;
use dsql_local::LocalDsql;
use serde_json::{Value, json};

const CRATE: &str = env!("CARGO_MANIFEST_DIR");
const ADMIN_TOKEN: &str = "e2e-admin-token-5b1f0c";
const SEVEN_DAYS: Duration = Duration::from_secs(7 * 86_400);

fn crate_path(rel: &str) -> PathBuf {
    Path::new(CRATE).join(rel)
}

fn build_worker() {
    let status = Command::new(crate_path("build.sh"))
        .current_dir(CRATE)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {CRATE}/build.sh: {e}"));
    assert!(
        status.success(),
        "building the Worker failed ({status}); build.sh printed what is missing"
    );
    let wasm = crate_path("build/index_bg.wasm");
    assert!(wasm.exists(), "build.sh did not produce {}", wasm.display());
}

/// What `wrangler deploy --dry-run` would upload, as it reports it: "Total Upload: <raw> KiB /
/// gzip: <compressed> KiB" (Cloudflare's size limit applies to the compressed figure).
fn upload_size(dir: &Path) -> (String, f64) {
    let out = Command::new(crate_path("node_modules/.bin/wrangler"))
        .args(["deploy", "--dry-run", "--outdir"])
        .arg(dir.join("upload"))
        .arg("--config")
        .arg(dir.join("wrangler.toml"))
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("wrangler deploy --dry-run runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .find(|l| l.starts_with("Total Upload:"))
        .unwrap_or_else(|| panic!("no upload size from wrangler deploy --dry-run:\n{text}"))
        .to_owned();
    let gzip_kib = line
        .split("gzip:")
        .nth(1)
        .and_then(|g| g.trim().strip_suffix("KiB"))
        .and_then(|g| g.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("cannot read the gzip size in {line:?}"));
    (line, gzip_kib)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `wrangler dev` in its own process group, stopped (with workerd) on drop, so that a failing
/// assertion leaves nothing running either.
struct Wrangler {
    child: Child,
    base: String,
    log: PathBuf,
    stopped: bool,
}

/// The processes (pid and command) whose process group is `pgid`, from /proc.
fn group_members(pgid: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split at its last ')'.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // A zombie is already dead; it only waits for its parent to reap it.
        if fields.first() == Some(&"Z") {
            continue;
        }
        if fields.get(2) == Some(&pgid.to_string().as_str()) {
            let comm = head.split_once(" (").map_or(head, |(_, c)| c);
            found.push((pid, comm.to_owned()));
        }
    }
    found
}

impl Wrangler {
    fn start(dir: &Path) -> Self {
        let bin = crate_path("node_modules/.bin/wrangler");
        assert!(
            bin.exists(),
            "wrangler is missing: run `npm ci` in {CRATE} (Node.js 20.3 or later)"
        );
        let port = free_port();
        let log = dir.join("wrangler.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(&bin)
            .args(["dev", "--local", "--test-scheduled", "--ip", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .args(["--inspector-port", &free_port().to_string()])
            .arg("--config")
            .arg(dir.join("wrangler.toml"))
            .arg("--persist-to")
            .arg(dir.join("state"))
            .args(["--log-level", "info"])
            .env("WRANGLER_SEND_METRICS", "false")
            // No fetch of workers.cloudflare.com for `Request.cf` (offline CI): a placeholder.
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("CI", "true")
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            stopped: false,
        }
    }

    fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// workerd's CPU time (user + system) so far, from /proc.
    fn workerd_cpu(&self) -> Option<Duration> {
        let tick = 100.0; // USER_HZ on Linux
        let pgid = self.child.id();
        let mut total = 0u64;
        let mut found = false;
        for entry in std::fs::read_dir("/proc").ok()? {
            let Ok(entry) = entry else { continue };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some((comm, rest)) = stat.rsplit_once(") ") else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // rest: state ppid pgrp session ... utime(12) stime(13) (0-based after comm)
            if !comm.ends_with("workerd") || fields.get(2) != Some(&pgid.to_string().as_str()) {
                continue;
            }
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            total += utime + stime;
            found = true;
        }
        found.then(|| Duration::from_secs_f64(total as f64 / tick))
    }
}

impl Wrangler {
    /// Stops the whole group, wrangler (node) and the workerd it started: SIGTERM, then SIGKILL
    /// for whatever is left after a bounded wait. Returns what had to be killed.
    fn stop(&mut self) -> Vec<(u32, String)> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        let pgid = self.child.id();
        let signal = |sig: &str| {
            let _ = Command::new("kill")
                .args([sig, "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
        };
        signal("-TERM");
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = group_members(pgid);
            if left.is_empty() {
                return Vec::new();
            }
            if Instant::now() > deadline {
                signal("-KILL");
                return left;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Wrangler {
    fn drop(&mut self) {
        let left = self.stop();
        if !left.is_empty() {
            eprintln!("killed with SIGKILL after SIGTERM was ignored: {left:?}");
        }
    }
}

async fn wait_for<T>(
    what: &str,
    wrangler: &Wrangler,
    deadline: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}; wrangler's log:\n{}",
            wrangler.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn status(http: &reqwest::Client, wrangler: &Wrangler) -> Option<(String, Value)> {
    let resp = http
        .get(format!("{}/status", wrangler.base))
        .send()
        .await
        .ok()?;
    let code = resp.status();
    let text = resp.text().await.ok()?;
    // Wrangler listens once workerd is up, so an error answer is the Worker's, not a state to
    // wait out: fail with it.
    assert_eq!(
        code,
        200,
        "GET /status: {text}; wrangler's log:\n{}",
        wrangler.log()
    );
    let json = serde_json::from_str(&text).expect("/status answers JSON");
    Some((text, json))
}

async fn trigger_cron(http: &reqwest::Client, wrangler: &Wrangler, cron: &str) {
    let resp = http
        .get(format!("{}/__scheduled", wrangler.base))
        .query(&[("cron", cron)])
        .send()
        .await
        .expect("wrangler answers /__scheduled");
    assert!(
        resp.status().is_success(),
        "/__scheduled: {}; wrangler's log:\n{}",
        resp.status(),
        wrangler.log()
    );
}

/// Waits until the recorded last pass is the one `trigger` started, and returns it.
async fn last_pass(http: &reqwest::Client, wrangler: &Wrangler, trigger: &str) -> Value {
    wait_for(
        &format!("the pass {trigger:?} in /status"),
        wrangler,
        Duration::from_secs(120),
        async || {
            let (_, json) = status(http, wrangler).await?;
            (json["last_pass"]["trigger"] == trigger).then(|| json["last_pass"].clone())
        },
    )
    .await
}

/// Fails if `text` holds any of `secrets`; for a token, its signature is what must never show.
fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    for (i, secret) in secrets.iter().enumerate() {
        let needle = secret.rsplit('=').next().unwrap_or(secret);
        assert!(
            needle.len() >= 8 && !text.contains(needle),
            "secret #{i} shows in {what}"
        );
    }
}

/// Connects through dsql-local as `admin` with `password`, as Hyperdrive would with the stored
/// password, and returns `current_user`.
async fn connect_as_admin(local: &LocalDsql, password: &str) -> Result<String, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(local.ca_path()).map_err(|e| e.to_string())? {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(local.host())
        .hostaddr(local.address().ip())
        .port(local.port())
        .user("admin")
        .dbname("postgres")
        .password(password)
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let (client, conn) = cfg
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_rotates_each_due_endpoint_once_through_wrangler_dev() {
    // reqwest is built without a default crypto provider (as in dsql-hyperdrive's NativeIo).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    build_worker();
    let local = LocalDsql::start().await.unwrap_or_else(|e| {
        panic!("dsql-local could not start ({e}); it needs PostgreSQL: apt-get install postgresql")
    });
    let fake = FakeHyperdrive::builder()
        .route_origin(local.host(), local.address())
        .origin_ca(local.ca_path())
        .start()
        .await
        .expect("the fake Hyperdrive API starts");
    let origin = json!({"scheme": "postgres", "host": local.host(), "port": local.port(),
        "database": "postgres", "user": "admin", "password": "stale"});
    let orders = fake.insert_config("orders", origin.clone());
    let billing = fake.insert_config("billing", origin);
    let untouched = fake.insert_config(
        "not-an-endpoint",
        json!({"host": "other.example", "port": 5432, "database": "postgres", "user": "admin"}),
    );

    let creds = local.credentials();
    let dir = tempfile::tempdir().expect("temp dir");
    let endpoints = format!(
        "[[endpoint]]\nname = \"orders\"\nhost = \"{host}\"\nport = {port}\n\n\
         [[endpoint]]\nname = \"billing\"\nhost = \"{host}\"\nport = {port}\n",
        host = local.host(),
        port = local.port()
    );
    let main = crate_path("build/index.js");
    std::fs::write(
        dir.path().join("wrangler.toml"),
        format!(
            "name = \"dsql-hyperdrive-rotator-e2e\"\nmain = {main:?}\ncompatibility_date = \"2025-09-01\"\n\n\
             [[kv_namespaces]]\nbinding = \"ROTATOR_STATE\"\nid = \"e2e\"\n\n\
             [vars]\nCLOUDFLARE_ACCOUNT_ID = {account:?}\nCLOUDFLARE_API_BASE_URL = {base:?}\n\
             DSQL_HYPERDRIVE_CONFIG = '''\n{endpoints}'''\n",
            main = main.display().to_string(),
            account = fake.account_id(),
            base = fake.api_base(),
        ),
    )
    .expect("wrangler.toml");
    let mut secrets = format!(
        "CLOUDFLARE_API_TOKEN={}\nAWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\nADMIN_TOKEN={ADMIN_TOKEN}\n",
        fake.api_token(),
        creds.access_key_id(),
        creds.secret_access_key()
    );
    if let Some(session) = creds.session_token() {
        secrets.push_str(&format!("AWS_SESSION_TOKEN={session}\n"));
    }
    std::fs::write(dir.path().join(".dev.vars"), secrets).expect(".dev.vars");

    let (line, gzip_kib) = upload_size(dir.path());
    println!("worker upload (wrangler deploy --dry-run): {line}; free-plan limit 3 MiB");
    assert!(
        gzip_kib < 3.0 * 1024.0,
        "the Worker is over the free plan's 3 MiB compressed: {line}"
    );

    let wrangler = Wrangler::start(dir.path());
    let http = reqwest::Client::new();
    let (_, first) = wait_for(
        "wrangler dev to serve /status",
        &wrangler,
        Duration::from_secs(240),
        async || status(&http, &wrangler).await,
    )
    .await;
    assert_eq!(first["last_pass"], Value::Null, "{first}");
    let pgid = wrangler.child.id();
    assert!(
        group_members(pgid)
            .iter()
            .any(|(_, comm)| comm == "workerd"),
        "workerd runs in wrangler's process group (so stopping the group stops it): {:?}",
        group_members(pgid)
    );
    assert_eq!(first["endpoints"]["orders"]["due"], true, "{first}");

    // First cron: both endpoints are due; the first API call is answered 429 and retried.
    fake.clear_requests();
    fake.inject_rate_limit(1, 1);
    let before = SystemTime::now();
    trigger_cron(&http, &wrangler, "17 * * * *").await;
    let pass = last_pass(&http, &wrangler, "cron 17 * * * *").await;
    assert_eq!(pass["ok"], true, "{pass}");
    for name in ["orders", "billing"] {
        let e = &pass["endpoints"][name];
        assert_eq!(e["action"], "rotated", "{name}: {pass}");
        let expiry = parse_time(e["token_expiry"].as_str().expect("token_expiry")).unwrap();
        let life = expiry.duration_since(before).unwrap_or_default();
        assert!(
            life <= SEVEN_DAYS + Duration::from_secs(5)
                && life >= SEVEN_DAYS - Duration::from_secs(300),
            "{name}: a 7-day token expected, expiry {e}"
        );
    }
    let requests = fake.requests();
    let lists = requests
        .iter()
        .take_while(|r| r.method == "GET")
        .filter(|r| r.path.ends_with("/hyperdrive/configs"))
        .count();
    assert!(
        lists >= 2,
        "the 429 answer to the first listing was retried: {requests:?}"
    );
    let writes = fake.writes();
    assert_eq!(writes.len(), 2, "one PATCH per due endpoint: {writes:?}");
    let mut passwords = Vec::new();
    for w in &writes {
        assert_eq!(w.method, "PATCH", "{w:?}");
        let body = w.body.clone().expect("a body");
        let password = body["origin"]["password"]
            .as_str()
            .expect("a password")
            .to_owned();
        assert_eq!(
            body,
            json!({"origin": {"password": password}}),
            "password only"
        );
        assert!(
            password.starts_with(local.host())
                && password.contains("Action=DbConnectAdmin")
                && password.contains("X-Amz-Expires=604800"),
            "a 7-day admin token for the cluster host"
        );
        passwords.push(password);
    }
    let mut patched: Vec<&str> = writes
        .iter()
        .map(|w| w.path.rsplit('/').next().unwrap())
        .collect();
    patched.sort_unstable();
    let mut expected = vec![orders.as_str(), billing.as_str()];
    expected.sort_unstable();
    assert_eq!(patched, expected);
    assert_eq!(
        fake.test_connects(),
        vec![
            (local.host().to_owned(), Ok(())),
            (local.host().to_owned(), Ok(()))
        ],
        "dsql-local accepted both tokens"
    );
    assert_eq!(fake.stored_password(&untouched), None);
    assert_eq!(fake.pending_rate_limits(), 0, "the injected 429 was served");
    for id in [&orders, &billing] {
        let stored = fake.stored_password(id).expect("a stored password");
        assert!(
            passwords.contains(&stored),
            "the PATCHed password is stored"
        );
        let user = connect_as_admin(&local, &stored)
            .await
            .unwrap_or_else(|e| panic!("dsql-local refused the rotated token of {id}: {e}"));
        assert_eq!(user, "admin");
    }

    // Second cron inside the due window: nothing is written.
    fake.clear_requests();
    trigger_cron(&http, &wrangler, "47 * * * *").await;
    let pass = last_pass(&http, &wrangler, "cron 47 * * * *").await;
    assert_eq!(pass["ok"], true, "{pass}");
    assert_eq!(pass["endpoints"]["orders"]["action"], "unchanged", "{pass}");
    assert_eq!(
        pass["endpoints"]["billing"]["action"], "unchanged",
        "{pass}"
    );
    assert_eq!(fake.writes(), Vec::new(), "nothing is due");

    // Status: the result, and no secret.
    let (text, doc) = status(&http, &wrangler).await.expect("status");
    assert_eq!(
        doc["endpoints"]["orders"]["config_id"],
        orders.as_str(),
        "{doc}"
    );
    assert_eq!(doc["endpoints"]["orders"]["due"], false, "{doc}");
    assert!(
        doc["endpoints"]["billing"]["last_rotation"].is_string(),
        "{doc}"
    );
    assert!(
        doc["endpoints"]["billing"]["next_rotation"].is_string(),
        "{doc}"
    );
    let mut secrets: Vec<String> = passwords.clone();
    secrets.push(fake.api_token().to_owned());
    secrets.push(creds.secret_access_key().to_owned());
    secrets.push(ADMIN_TOKEN.to_owned());
    secrets.extend(creds.session_token().map(str::to_owned));
    assert_no_secret("/status", &text, &secrets);

    // Manual rotation: refused without the admin token, forced with it.
    let rotate = format!("{}/rotate", wrangler.base);
    let resp = http.post(&rotate).send().await.expect("POST /rotate");
    assert_eq!(resp.status(), 401);
    let resp = http
        .post(&rotate)
        .bearer_auth("wrong")
        .send()
        .await
        .expect("POST /rotate");
    assert_eq!(resp.status(), 401);
    assert_eq!(fake.writes(), Vec::new());

    // CPU time per rotation, measured on workerd (the Worker's runtime) over forced passes,
    // beside a baseline of as many GET /status (a request that lists the configurations and
    // reads KV, but signs and writes nothing). 20 of each: /proc counts CPU in 10 ms ticks.
    let passes = 20;
    let status_before = wrangler.workerd_cpu();
    for _ in 0..passes {
        status(&http, &wrangler).await.expect("status");
    }
    let cpu_before = wrangler.workerd_cpu();
    let mut rotate_bodies = Vec::new();
    for _ in 0..passes {
        let resp = http
            .post(format!("{rotate}?force=true"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("POST /rotate");
        let status = resp.status();
        let text = resp.text().await.expect("a body");
        let body: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["endpoints"]["orders"]["action"], "rotated", "{body}");
        rotate_bodies.push(text);
    }
    assert_eq!(
        fake.writes().len(),
        2 * passes,
        "forced: every endpoint, every pass"
    );
    let (Some(s0), Some(a), Some(b)) = (status_before, cpu_before, wrangler.workerd_cpu()) else {
        panic!("cannot read workerd's CPU time from /proc");
    };
    println!(
        "workerd CPU per GET /status (list + KV reads), mean of {passes}: {:?}",
        a.saturating_sub(s0) / passes as u32
    );
    // Everything workerd did: the fetch event, the listing, 2 signings, 2 PATCHes, JSON, and
    // the local KV simulation (which runs in workerd too). An upper bound for the Worker's own.
    let per_pass = b.saturating_sub(a) / passes as u32;
    println!(
        "workerd CPU per forced pass of 2 endpoints (list + 2 signings + 2 PATCHes + 2 KV writes), \
         mean of {passes}: {per_pass:?} ({:?} per rotated endpoint)",
        per_pass / 2
    );

    // No secret in the answers to /rotate nor in what the Worker logged (wrangler's output),
    // including every password written by the forced passes.
    for w in fake.writes() {
        if let Some(p) = w
            .body
            .as_ref()
            .and_then(|b| b["origin"]["password"].as_str())
        {
            secrets.push(p.to_owned());
        }
    }
    for body in &rotate_bodies {
        assert_no_secret("POST /rotate", body, &secrets);
    }
    assert_no_secret("wrangler's log", &wrangler.log(), &secrets);

    // Nothing outlives the test: wrangler and workerd are gone after the stop.
    let mut wrangler = wrangler;
    let killed = wrangler.stop();
    assert!(
        killed.is_empty(),
        "wrangler's group ignored SIGTERM: {killed:?}"
    );
    assert_eq!(group_members(pgid), Vec::new(), "processes left running");
}
