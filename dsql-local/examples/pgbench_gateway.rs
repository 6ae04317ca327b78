//! The gateway's cost: pgbench select-only throughput straight to PostgreSQL and through the
//! dsql-local gateway (TLS verify-full, IAM token as password), same run, same client count.
//! With pgbouncer installed, also through pgbouncer (TLS to clients, the same unix socket to
//! PostgreSQL): an independent C relay that does not look at SQL, for scale.
//!
//! `cargo run --release -p dsql-local --example pgbench_gateway [-- --seconds 6 --clients 4 --jobs 2 --rounds 3 --workload select|update]`
//! (`select`: pgbench -S, the default; `update`: one autocommit UPDATE per transaction, which
//! the gateway wraps in its row-limit guards)
//! runs every target once per round, in alternation (direct, direct TLS, gateway, pgbouncer,
//! then again), and prints one JSON line of medians over the rounds: {"direct_tps",
//! "direct_tls_tps", "gateway_tps", "pgbouncer_tps" (null without pgbouncer), "ratio" (gateway /
//! direct plain TCP), "ratio_tls" (gateway / direct with PostgreSQL's own `ssl=on`: like with
//! like), "ratio_pgbouncer" (gateway / pgbouncer), "ratios_tls" (per round), "clients", "jobs",
//! "seconds", "rounds", "workload"}. The gateway runs with DSQL's SQL rules on (the default dialect).
//! Needs pgbench (`apt-get install postgresql-contrib`, part of `postgresql` on Debian);
//! pgbouncer is optional (`apt-get install pgbouncer`; said on stderr when missing).

use dsql_auth_core::token::{Action, SigningParams, sign};
use dsql_local::LocalDsql;
use std::process::{Command, ExitCode};
use std::time::{Duration, SystemTime};

struct Opts {
    seconds: u32,
    clients: u32,
    jobs: u32,
    rounds: u32,
    /// `select` (pgbench -S) or `update` (one autocommit UPDATE per transaction).
    update: bool,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        seconds: 6,
        clients: 4,
        jobs: 2,
        rounds: 3,
        update: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        if flag == "--workload" {
            o.update = match value.as_str() {
                "select" => false,
                "update" => true,
                other => return Err(format!("--workload {other}: give select or update")),
            };
            continue;
        }
        let n: u32 = value
            .parse()
            .map_err(|_| format!("{flag} {value}: give a positive whole number"))?;
        if n == 0 {
            return Err(format!("{flag} must be at least 1"));
        }
        match flag.as_str() {
            "--seconds" => o.seconds = n,
            "--clients" => o.clients = n,
            "--jobs" => o.jobs = n,
            "--rounds" => o.rounds = n,
            other => {
                return Err(format!(
                    "unknown option {other}; options: --seconds N --clients N --jobs N --rounds N --workload select|update"
                ));
            }
        }
    }
    Ok(o)
}

fn pgbench() -> Result<String, String> {
    let candidates = ["pgbench".to_owned(), "/usr/bin/pgbench".to_owned()];
    let mut found = candidates
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok());
    if found.is_none()
        && let Ok(dirs) = std::fs::read_dir("/usr/lib/postgresql")
    {
        found = dirs
            .flatten()
            .map(|d| d.path().join("bin/pgbench"))
            .filter(|p| p.is_file())
            .max()
            .map(|p| p.to_string_lossy().into_owned());
    }
    found.ok_or_else(|| {
        "pgbench not found: apt-get install postgresql-contrib (or postgresql)".to_owned()
    })
}

/// Runs pgbench and returns its standard output.
fn run(pgbench: &str, args: &[String], password: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new(pgbench);
    cmd.args(args);
    cmd.env_remove("PGPASSWORD");
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {pgbench}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "pgbench failed: {}{}",
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(stdout.into_owned())
}

/// The `tps = ...` figure of a pgbench run.
fn tps(stdout: &str) -> Result<f64, String> {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no `tps = ` line in pgbench's output:\n{stdout}"))
}

async fn bench(o: &Opts) -> Result<String, String> {
    let pgbench = pgbench()?;
    let dsql = LocalDsql::builder()
        // pgbench opens all clients at once; keep the rate limit out of the measurement.
        .rate_limit(1000, 1000)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let direct = dsql.upstream_connection_string();
    let init = vec![
        "-i".into(),
        "-q".into(),
        "-s".into(),
        "1".into(),
        direct.clone(),
    ];
    run(&pgbench, &init, None)?;

    let params = SigningParams::new(dsql.host(), dsql.region(), Action::DbConnectAdmin)
        .and_then(|p| p.with_expires_in(Duration::from_secs(3600)))
        .map_err(|e| e.to_string())?;
    let token = sign(&params, &dsql.credentials(), SystemTime::now()).map_err(|e| e.to_string())?;
    let gateway = format!(
        "host={} hostaddr={} port={} user=admin dbname=postgres sslmode=verify-full sslrootcert={}",
        dsql.host(),
        dsql.address().ip(),
        dsql.port(),
        dsql.ca_path().display()
    );
    // Autocommit writes: the gateway's row-limit guards run around each one.
    let script_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let script = script_dir.path().join("update.sql");
    std::fs::write(
        &script,
        "\\set aid random(1, 100000)\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n",
    )
    .map_err(|e| e.to_string())?;
    let workload: Vec<String> = if o.update {
        vec!["-f".into(), script.display().to_string()]
    } else {
        vec!["-S".into()]
    };
    let load = |conninfo: &str| -> Vec<String> {
        let mut args = workload.clone();
        args.extend([
            "-n".into(),
            "-c".into(),
            o.clients.to_string(),
            "-j".into(),
            o.jobs.to_string(),
            "-T".into(),
            o.seconds.to_string(),
            conninfo.into(),
        ]);
        args
    };
    let (direct_tls, tls_dir) = enable_upstream_tls(&dsql, &direct).await?;
    let bouncer = match pgbouncer(&dsql, tls_dir.path(), o.clients)? {
        Some(b) => Some(b),
        None => {
            eprintln!(
                "pgbench_gateway: pgbouncer not found (apt-get install pgbouncer): no pgbouncer reference this run"
            );
            None
        }
    };
    let mut targets = vec![
        ("direct", direct, None),
        ("direct_tls", direct_tls, None),
        ("gateway", gateway, Some(token.as_str())),
    ];
    if let Some(b) = &bouncer {
        targets.push(("pgbouncer", b.conninfo.clone(), None));
    }
    // In alternation, so that a slow patch of a shared machine hits every target alike.
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    for _ in 0..o.rounds {
        for (i, (_, conninfo, password)) in targets.iter().enumerate() {
            results[i].push(tps(&run(&pgbench, &load(conninfo), *password)?)?);
        }
    }
    let counters = dsql.counters();
    if counters.accepted() < u64::from(o.clients) || counters.refused_total() != 0 {
        return Err(format!(
            "the gateway run did not authenticate every client: {counters:?}"
        ));
    }
    drop(bouncer);
    dsql.shutdown().await.map_err(|e| e.to_string())?;
    let median_of = |name: &str| {
        targets
            .iter()
            .position(|t| t.0 == name)
            .map(|i| median(&results[i]))
    };
    let (direct_tps, direct_tls_tps, gateway_tps) = (
        median_of("direct").unwrap_or(0.0),
        median_of("direct_tls").unwrap_or(0.0),
        median_of("gateway").unwrap_or(0.0),
    );
    let pgbouncer_tps = median_of("pgbouncer");
    let ratios_tls: Vec<f64> = results[2]
        .iter()
        .zip(&results[1])
        .map(|(g, d)| round4(g / d))
        .collect();
    Ok(serde_json::json!({
        "direct_tps": direct_tps.round(),
        "direct_tls_tps": direct_tls_tps.round(),
        "gateway_tps": gateway_tps.round(),
        "pgbouncer_tps": pgbouncer_tps.map(f64::round),
        "ratio": round4(gateway_tps / direct_tps),
        "ratio_tls": round4(gateway_tps / direct_tls_tps),
        "ratio_pgbouncer": pgbouncer_tps.map(|p| round4(gateway_tps / p)),
        "ratios_tls": ratios_tls,
        "clients": o.clients,
        "jobs": o.jobs,
        "seconds": o.seconds,
        "rounds": o.rounds,
        "workload": if o.update { "update" } else { "select" },
    })
    .to_string())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// A running pgbouncer (session pooling, TLS to clients with the same self-signed certificate
/// as PostgreSQL's `ssl=on`, the unix socket to PostgreSQL); killed when dropped.
struct PgBouncer {
    child: std::process::Child,
    conninfo: String,
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts pgbouncer in `dir` (PostgreSQL's TLS directory, owned by the user PostgreSQL runs as,
/// which pgbouncer runs as too: it refuses to run as root). None when it is not installed.
fn pgbouncer(
    dsql: &LocalDsql,
    dir: &std::path::Path,
    clients: u32,
) -> Result<Option<PgBouncer>, String> {
    use std::os::unix::fs::MetadataExt;
    let Some(binary) = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
    else {
        return Ok(None);
    };
    let socket_dir = dsql
        .postgres_socket_dir()
        .ok_or("the pgbouncer reference needs the temporary PostgreSQL")?;
    let owner = std::fs::metadata(dir).map_err(|e| e.to_string())?;
    let upstream = dsql.upstream_connection_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let upstream_port = upstream
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("port="))
        .ok_or("no port in the upstream connection string")?;
    // The password is the rest after `password=` (quoted as libpq wants; pgbouncer reads the
    // same syntax).
    let password = upstream
        .split_once(" password=")
        .map(|(_, p)| format!(" password={p}"))
        .unwrap_or_default();
    let ini = dir.join("pgbouncer.ini");
    let users = dir.join("users.txt");
    let config = format!(
        "[databases]\npostgres = host={sock} port={upstream_port} dbname=postgres user=admin{password}\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
         auth_type = trust\nauth_file = {users}\npool_mode = session\nmax_client_conn = 1000\n\
         default_pool_size = {clients}\nclient_tls_sslmode = require\n\
         client_tls_key_file = {dir}/server.key\nclient_tls_cert_file = {dir}/server.crt\n\
         logfile = {dir}/pgbouncer.log\n",
        sock = socket_dir.display(),
        users = users.display(),
        dir = dir.display(),
    );
    for (path, text) in [(&ini, config), (&users, "\"admin\" \"\"\n".to_owned())] {
        std::fs::write(path, text).map_err(|e| e.to_string())?;
        std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid()))
            .map_err(|e| e.to_string())?;
    }
    // setpriv (util-linux): SIGKILL to pgbouncer when this process dies, however it dies (set
    // after the change of user, which would clear it); as root, also the drop to the owner.
    let mut cmd = Command::new("setpriv");
    cmd.arg("--pdeathsig=KILL");
    if owner.uid()
        != std::fs::metadata("/proc/self")
            .map_err(|e| e.to_string())?
            .uid()
    {
        cmd.arg(format!("--reuid={}", owner.uid()))
            .arg(format!("--regid={}", owner.gid()))
            .arg("--clear-groups");
    }
    let child = cmd
        .arg("--")
        .arg(binary)
        .arg(&ini)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {binary} through setpriv (util-linux): {e}"))?;
    let bouncer = PgBouncer {
        child,
        conninfo: format!("host=127.0.0.1 port={port} user=admin dbname=postgres sslmode=require"),
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(Some(bouncer));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default();
    Err(format!(
        "pgbouncer did not listen on port {port} within 5 s:\n{log}"
    ))
}

/// Turns on PostgreSQL's own TLS (`ssl=on`, a self-signed certificate) on the temporary
/// upstream, and returns the direct conninfo that demands it.
async fn enable_upstream_tls(
    dsql: &LocalDsql,
    direct: &str,
) -> Result<(String, tempfile::TempDir), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let socket_dir = dsql
        .postgres_socket_dir()
        .ok_or("the TLS anchor needs the temporary PostgreSQL")?;
    // PostgreSQL wants its key owned by the user it runs as, mode 0600.
    let owner = std::fs::metadata(socket_dir).map_err(|e| e.to_string())?;
    let tmp = tempfile::Builder::new()
        .prefix("pgbench-tls-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let dir = tmp.path().to_owned();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .map_err(|e| e.to_string())?;
    let (crt, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&crt, cert.cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(&key, cert.signing_key.serialize_pem()).map_err(|e| e.to_string())?;
    for (path, mode) in [(&dir, 0o700), (&crt, 0o600), (&key, 0o600)] {
        std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid()))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| e.to_string())?;
    }
    let (client, conn) = tokio_postgres::connect(direct, tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    // One statement per query: ALTER SYSTEM cannot run in a multi-statement query string.
    for sql in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{}'", crt.display()),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", key.display()),
        "ALTER SYSTEM SET ssl = on".to_owned(),
        "SELECT pg_reload_conf()".to_owned(),
    ] {
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| pg_error(&sql, &e))?;
    }
    // The reload is asynchronous: wait (bounded) until a new session sees ssl on.
    let tls_conninfo = format!("{direct} sslmode=require");
    for _ in 0..100 {
        let on: String = client
            .query_one("SHOW ssl", &[])
            .await
            .map_err(|e| pg_error("SHOW ssl", &e))?
            .get(0);
        if on == "on" {
            return Ok((tls_conninfo, tmp));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("PostgreSQL did not turn ssl on within 5 s of pg_reload_conf()".into())
}

/// A tokio-postgres error with the server's own words (its Display says only "db error").
fn pg_error(sql: &str, e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{sql}: {} (SQLSTATE {})", db.message(), db.code().code()),
        None => format!("{sql}: {e}"),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match parse_args() {
        Ok(o) => bench(&o).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pgbench_gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
