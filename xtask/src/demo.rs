//! `cargo xtask demo`: the main job on a fresh machine. Starts `dsql local` (a token-verifying TLS
//! gateway in front of a real PostgreSQL), signs a token with `dsql token`, connects with psql if it
//! is installed, then runs every example under `examples/` against the local endpoint.

use crate::util::{Result, cargo, describe, root, step};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

// The demo's own key pair: dsql-local accepts exactly these, the examples sign with them.
const ACCESS_KEY: &str = "AKIDDSQLDEMOEXAMPLE1";
const SECRET_KEY: &str = "dsql-demo-secret-key-not-an-aws-secret";

/// Kills `dsql local` when the demo ends, however it ends, so the temporary PostgreSQL goes too.
struct LocalEndpoint(Child);

impl Drop for LocalEndpoint {
    fn drop(&mut self) {
        // SIGTERM lets dsql local remove its temporary PostgreSQL; kill only as a fallback.
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn run(args: &[String]) -> Result {
    if let Some(a) = args.first() {
        return Err(format!("unknown argument to `xtask demo`: {a}"));
    }
    step(
        "build the dsql CLI and the examples",
        cargo().args(["build", "-p", "dsql-cli", "-p", "examples"]),
    )?;
    let bin_dir = root().join("target").join("debug");
    let dsql = bin_dir.join("dsql");

    println!("\n==> starting dsql local");
    let mut child = Command::new(&dsql)
        .args([
            "local",
            "--access-key",
            ACCESS_KEY,
            "--secret-key",
            SECRET_KEY,
        ])
        .env("DSQL_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", dsql.display()))?;
    let stdout = child.stdout.take().ok_or("dsql local: no stdout")?;
    let local = LocalEndpoint(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("reading dsql local's ready line: {e}"))?;
    if line.trim().is_empty() {
        return Err("dsql local exited before it was ready (its log is above)".into());
    }
    let ready: serde_json::Value = serde_json::from_str(&line)
        .map_err(|e| format!("dsql local printed an unexpected line ({e}): {line}"))?;
    let field = |k: &str| -> Result<String> {
        match &ready[k] {
            serde_json::Value::String(s) => Ok(s.clone()),
            serde_json::Value::Number(n) => Ok(n.to_string()),
            _ => Err(format!("dsql local's ready line has no `{k}`: {line}")),
        }
    };
    let (host, port, address, region, ca, url) = (
        field("host")?,
        field("port")?,
        field("address")?,
        field("region")?,
        field("ca")?,
        field("connection_string")?,
    );
    println!("    dsql local is up: host {host}, address {address}, region {region}, CA {ca}");
    println!("    DATABASE_URL={url}");

    let with_creds = |cmd: &mut Command| {
        cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env("AWS_REGION", &region);
    };

    println!("\n==> dsql token (signed by dsql-auth-core with the demo key pair)");
    let mut token_cmd = Command::new(&dsql);
    token_cmd.args([
        "token", "--host", &host, "--region", &region, "--user", "admin", "--format", "json",
    ]);
    with_creds(&mut token_cmd);
    let out = token_cmd
        .output()
        .map_err(|e| format!("cannot run dsql token: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "dsql token failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let signed: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("dsql token --format json: {e}"))?;
    let token = signed["token"]
        .as_str()
        .ok_or("dsql token --format json printed no token")?
        .to_owned();
    println!(
        "    signed a {} token for {} ({} bytes, expires {})",
        signed["action"].as_str().unwrap_or("?"),
        host,
        token.len(),
        signed["expires_at"].as_str().unwrap_or("?")
    );

    psql(&host, &address, &port, &ca, &token)?;

    for example in example_bins()? {
        let mut cmd = Command::new(bin_dir.join(&example));
        cmd.env("DATABASE_URL", &url).env("DSQL_LOG", "info");
        with_creds(&mut cmd);
        step(&format!("example `{example}`"), &mut cmd)?;
    }
    drop(local);
    println!("\ndemo: every example ran against dsql local; the temporary PostgreSQL is removed");
    Ok(())
}

/// A real client (psql) through the gateway with verify-full TLS and the token as password.
fn psql(host: &str, address: &str, port: &str, ca: &str, token: &str) -> Result {
    if Command::new("psql").arg("--version").output().is_err() {
        println!(
            "\n==> psql: not installed (apt-get install postgresql-client); that step is skipped"
        );
        return Ok(());
    }
    let ip = address
        .rsplit_once(':')
        .map_or(address, |(ip, _)| ip)
        .trim_matches(['[', ']']);
    let conninfo = format!(
        "host={host} hostaddr={ip} port={port} user=admin dbname=postgres sslmode=verify-full sslrootcert={ca}"
    );
    let mut cmd = Command::new("psql");
    cmd.args([
        &conninfo,
        "-X",
        "-A",
        "-t",
        "-c",
        "select 'psql connected with verify-full TLS as ' || current_user || ' to ' || version()",
    ]);
    // The token goes in PGPASSWORD, never on the command line shown above.
    cmd.env("PGPASSWORD", token);
    println!("\n==> psql through the gateway\n    $ {}", describe(&cmd));
    let out = cmd.output().map_err(|e| format!("cannot run psql: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    println!("    {}", String::from_utf8_lossy(&out.stdout).trim());
    Ok(())
}

/// Every binary target of the `examples` package, from cargo's own metadata.
fn example_bins() -> Result<Vec<String>> {
    let out =
        crate::util::output(cargo().args(["metadata", "--no-deps", "--format-version", "1"]))?;
    let meta: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("cargo metadata: {e}"))?;
    let mut bins: Vec<String> = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "examples")
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    bins.sort();
    if bins.is_empty() {
        return Err("no examples found under examples/".into());
    }
    Ok(bins)
}
