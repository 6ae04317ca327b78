//! The gateway's cost: pgbench select-only throughput straight to PostgreSQL and through the
//! dsql-local gateway (TLS verify-full, IAM token as password), same run, same client count.
//!
//! `cargo run --release -p dsql-local --example pgbench_gateway [-- --seconds 10 --clients 4 --jobs 2]`
//! prints one JSON line: {"direct_tps", "direct_tls_tps", "gateway_tps", "ratio", "ratio_tls",
//! "clients", "jobs", "seconds"} (ratio = gateway_tps / direct_tps over plain TCP; ratio_tls =
//! gateway_tps / direct_tls_tps, PostgreSQL's own `ssl=on`: like with like). The gateway runs
//! with DSQL's SQL rules on (the default dialect). Needs pgbench (`apt-get install postgresql-contrib`,
//! part of `postgresql` on Debian).

use dsql_auth_core::token::{Action, SigningParams, sign};
use dsql_local::LocalDsql;
use std::process::{Command, ExitCode};
use std::time::{Duration, SystemTime};

struct Opts {
    seconds: u32,
    clients: u32,
    jobs: u32,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        seconds: 10,
        clients: 4,
        jobs: 2,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
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
            other => {
                return Err(format!(
                    "unknown option {other}; options: --seconds N --clients N --jobs N"
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
    let load = |conninfo: &str| -> Vec<String> {
        vec![
            "-S".into(),
            "-n".into(),
            "-c".into(),
            o.clients.to_string(),
            "-j".into(),
            o.jobs.to_string(),
            "-T".into(),
            o.seconds.to_string(),
            conninfo.into(),
        ]
    };
    let (direct_tls, _tls_dir) = enable_upstream_tls(&dsql, &direct).await?;
    let direct_tps = tps(&run(&pgbench, &load(&direct), None)?)?;
    let direct_tls_tps = tps(&run(&pgbench, &load(&direct_tls), None)?)?;
    let gateway_tps = tps(&run(&pgbench, &load(&gateway), Some(token.as_str()))?)?;
    let counters = dsql.counters();
    if counters.accepted() < u64::from(o.clients) || counters.refused_total() != 0 {
        return Err(format!(
            "the gateway run did not authenticate every client: {counters:?}"
        ));
    }
    dsql.shutdown().await.map_err(|e| e.to_string())?;
    Ok(format!(
        "{{\"direct_tps\":{direct_tps:.1},\"direct_tls_tps\":{direct_tls_tps:.1},\"gateway_tps\":{gateway_tps:.1},\"ratio\":{:.4},\"ratio_tls\":{:.4},\"clients\":{},\"jobs\":{},\"seconds\":{}}}",
        gateway_tps / direct_tps,
        gateway_tps / direct_tls_tps,
        o.clients,
        o.jobs,
        o.seconds
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
