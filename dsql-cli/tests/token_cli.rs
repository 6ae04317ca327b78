//! `dsql token` as a user runs it: the built binary, static credentials in the environment,
//! `--at` for reproducible output, compared with tokens boto3 signs in the same run.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const AT: &str = "2024-01-01T00:00:00Z";

struct Vector {
    name: String,
    host: String,
    region: String,
    action: String,
    expires_in: u64,
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    expected: String,
}

/// The inputs of the tokens compared: every region form x action, every lifetime, credentials
/// with and without a session token (with `/ + =` in it), and custom hosts.
fn inputs() -> Vec<Vector> {
    const CLUSTER: &str = "abcdefghijklmnopqrstuvwxyz";
    let creds = [
        (
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
        ),
        (
            "ASIAQEXAMPLE2EXAMPLE",
            "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
            Some("IQoJb3JpZ2luX2VjEJr/////////wEaCXVzLWVhc3QtMSJHMEUCIQD+abc/def+ghi==AbC="),
        ),
        (
            "ASIA0000000000000000",
            "s3cr3t+/=with/odd+chars=",
            Some("a/b+c=d//++=="),
        ),
    ];
    let vector = |name: String, host: String, region: &str, action: &str, expires_in, i: usize| {
        let (akid, secret, token) = creds[i % creds.len()];
        Vector {
            name,
            host,
            region: region.to_owned(),
            action: action.to_owned(),
            expires_in,
            access_key_id: akid.to_owned(),
            secret_access_key: secret.to_owned(),
            session_token: token.map(str::to_owned),
            expected: String::new(),
        }
    };
    let mut v = Vec::new();
    let regions = [
        ("us-east-1", format!("{CLUSTER}.dsql.us-east-1.on.aws")),
        ("eu-west-1", format!("{CLUSTER}.dsql.eu-west-1.on.aws")),
        (
            "ap-northeast-1",
            format!("{CLUSTER}.dsql.ap-northeast-1.on.aws"),
        ),
        (
            "us-gov-west-1",
            format!("{CLUSTER}.dsql-fips.us-gov-west-1.on.aws"),
        ),
    ];
    for (i, (region, host)) in regions.iter().enumerate() {
        for (j, action) in ["DbConnect", "DbConnectAdmin"].into_iter().enumerate() {
            let expires_in = if i == 0 {
                900
            } else {
                [1, 3600, 604800][(i + j) % 3]
            };
            let name = format!("{region}-{action}-{AT}-{expires_in}s");
            v.push(vector(
                name,
                host.clone(),
                region,
                action,
                expires_in,
                i + j,
            ));
        }
    }
    for (i, expires_in) in [1, 900, 3600, 604800].into_iter().enumerate() {
        let host = regions[0].1.clone();
        let name = format!("expiry-{expires_in}");
        v.push(vector(
            name,
            host,
            "us-east-1",
            "DbConnectAdmin",
            expires_in,
            i,
        ));
    }
    for host in [
        "localhost",
        "127.0.0.1",
        "[::1]",
        "abcdefghijklmnopqrstuvwxyz.dsql-fnh4.us-east-1.on.aws",
    ] {
        let name = format!("custom-{host}");
        v.push(vector(
            name,
            host.to_owned(),
            "us-east-1",
            "DbConnect",
            900,
            0,
        ));
    }
    v
}

/// [`inputs`] with the tokens boto3 (AWS's Python SDK, an independent signer) makes for them at
/// `AT`, its clock frozen as dsql-auth-core/tests/vectors/gen_vectors.py freezes it.
fn vectors_at() -> Vec<Vector> {
    let mut vectors = inputs();
    let request: Vec<Value> = vectors
        .iter()
        .map(|v| {
            serde_json::json!([
                v.host,
                v.region,
                v.action,
                v.expires_in,
                v.access_key_id,
                v.secret_access_key,
                v.session_token
            ])
        })
        .collect();
    let script = "import datetime, json, sys\n\
        from unittest import mock\n\
        import boto3, botocore.auth\n\
        at = datetime.datetime.strptime(sys.argv[1], '%Y-%m-%dT%H:%M:%SZ')\n\
        out = []\n\
        for host, region, action, exp, akid, secret, token in json.load(sys.stdin):\n\
        \x20   c = boto3.session.Session(aws_access_key_id=akid, aws_secret_access_key=secret, aws_session_token=token, region_name=region).client('dsql')\n\
        \x20   with mock.patch.object(botocore.auth, 'get_current_datetime', return_value=at):\n\
        \x20       f = c.generate_db_connect_admin_auth_token if action == 'DbConnectAdmin' else c.generate_db_connect_auth_token\n\
        \x20       out.append(f(host, region, exp))\n\
        json.dump(out, sys.stdout)\n";
    let mut child = Command::new("python3")
        .args(["-c", script, AT])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): install Python 3 and `pip install boto3`")
        });
    let input = serde_json::to_vec(&request).unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &input).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("No module named 'boto3'"),
        "boto3 is not installed for python3: run `pip install boto3`"
    );
    assert!(out.status.success(), "boto3 could not sign: {err}");
    let tokens: Vec<String> = serde_json::from_slice(&out.stdout).expect("boto3's tokens as JSON");
    assert_eq!(tokens.len(), vectors.len());
    for (v, t) in vectors.iter_mut().zip(tokens) {
        v.expected = t;
    }
    vectors
}

/// The binary with a clean environment: no AWS config files, no instance metadata, only what
/// the test sets.
fn dsql(home: &Path) -> Command {
    // Empty files rather than missing ones: aws-config warns about missing override paths.
    for f in ["no-config", "no-credentials"] {
        std::fs::write(home.join(f), "").unwrap();
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dsql"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AWS_CONFIG_FILE", home.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("no-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true");
    cmd
}

fn with_creds(mut cmd: Command, v: &Vector) -> Command {
    cmd.env("AWS_ACCESS_KEY_ID", &v.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &v.secret_access_key);
    if let Some(t) = &v.session_token {
        cmd.env("AWS_SESSION_TOKEN", t);
    }
    cmd
}

fn run(mut cmd: Command, args: &[&str]) -> Output {
    cmd.arg("token")
        .args(args)
        .output()
        .expect("the dsql binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn user_for(action: &str) -> &'static str {
    if action == "DbConnectAdmin" {
        "admin"
    } else {
        "app_reader"
    }
}

/// Arguments reproducing a vector: DSQL hosts give their own region, others get --region.
fn args_for(v: &Vector) -> Vec<String> {
    let mut a = vec![
        "--host".to_owned(),
        v.host.clone(),
        "--user".to_owned(),
        user_for(&v.action).to_owned(),
    ];
    a.extend([
        "--expires-in".to_owned(),
        v.expires_in.to_string(),
        "--at".to_owned(),
        AT.to_owned(),
    ]);
    if !v.host.ends_with(".on.aws") {
        a.extend(["--region".to_owned(), v.region.clone()]);
    }
    a
}

fn secret_parts(v: &Vector) -> Vec<String> {
    let signature = v
        .expected
        .rsplit_once("X-Amz-Signature=")
        .unwrap()
        .1
        .to_owned();
    let mut parts = vec![signature, v.secret_access_key.clone()];
    parts.extend(v.session_token.clone());
    parts
}

#[test]
fn prints_the_same_token_as_boto3() {
    let home = tempfile::tempdir().unwrap();
    // botocore signs a non-443 port into the host (`proxy.internal:5432`); `dsql token` takes
    // such a port as the connection's (see `host_with_a_port_...`), so that vector is left out.
    let vectors: Vec<_> = vectors_at()
        .into_iter()
        .filter(|v| !v.host.contains(':') || v.host.starts_with('['))
        .collect();
    assert!(vectors.len() >= 16, "vectors for {AT}: {}", vectors.len());
    for v in &vectors {
        let args = args_for(v);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(with_creds(dsql(home.path()), v), &args);
        assert!(
            out.status.success(),
            "{}: {:?} {}",
            v.name,
            out.status,
            stderr(&out)
        );
        assert_eq!(stdout(&out), format!("{}\n", v.expected), "{}", v.name);
        for secret in secret_parts(v) {
            assert!(
                !stderr(&out).contains(&secret),
                "{}: secret on stderr",
                v.name
            );
        }
    }
}

fn admin_vector() -> Vector {
    vectors_at()
        .into_iter()
        .find(|v| v.name == "us-east-1-DbConnectAdmin-2024-01-01T00:00:00Z-900s")
        .expect("vector present")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn url_env_and_json_formats() {
    let home = tempfile::tempdir().unwrap();
    let v = admin_vector();
    assert!(
        v.session_token.is_some(),
        "this vector has a session token, so the token has % / + = to encode"
    );
    let base = ["--host", v.host.as_str(), "--at", AT];

    let out = run(
        with_creds(dsql(home.path()), &v),
        &[&base[..], &["--format", "url"]].concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let url = stdout(&out);
    let rest = url
        .trim_end()
        .strip_prefix("postgres://admin:")
        .expect(&url);
    let (password, after) = rest.split_once('@').unwrap();
    assert!(
        password
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)),
        "{password}"
    );
    assert_eq!(percent_decode(password), v.expected);
    assert_eq!(
        after,
        format!("{}:5432/postgres?sslmode=verify-full", v.host)
    );

    let out = run(
        with_creds(dsql(home.path()), &v),
        &[&base[..], &["--format", "env"]].concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let env = stdout(&out);
    let expected = format!(
        "export PGHOST='{}'\nexport PGPORT='5432'\nexport PGUSER='admin'\nexport PGDATABASE='postgres'\n\
         export PGSSLMODE='verify-full'\nexport PGPASSWORD='{}'\n",
        v.host, v.expected
    );
    assert_eq!(env, expected);

    let out = run(
        with_creds(dsql(home.path()), &v),
        &[&base[..], &["--format", "json", "--user", "admin"]].concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["token"], v.expected.as_str());
    assert_eq!(json["host"], v.host.as_str());
    assert_eq!(json["region"], "us-east-1");
    assert_eq!(json["action"], "DbConnectAdmin");
    assert_eq!(json["user"], "admin");
    assert_eq!(json["expires_at"], "2024-01-01T00:15:00Z");
    assert_eq!(json["signed_at"], AT);
}

#[test]
fn non_admin_user_gets_db_connect_and_json_says_so() {
    let home = tempfile::tempdir().unwrap();
    let v = admin_vector();
    let out = run(
        with_creds(dsql(home.path()), &v),
        &[
            "--host", &v.host, "--user", "Admin", "--at", AT, "--format", "json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        json["action"], "DbConnect",
        "only exactly `admin` is the admin role"
    );
    assert!(
        json["token"]
            .as_str()
            .unwrap()
            .contains("?Action=DbConnect&")
    );
}

/// Runs a command expected to fail and returns its stderr after checking the exit code and
/// that the message is one line with no secret in it.
fn fails(out: Output, code: i32, v: &Vector) -> String {
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(
        stdout(&out).is_empty(),
        "nothing on stdout: {}",
        stdout(&out)
    );
    assert!(
        err.starts_with("dsql: ") || err.starts_with("error: "),
        "{err}"
    );
    for secret in secret_parts(v) {
        assert!(!err.contains(&secret), "secret on stderr: {err}");
    }
    err
}

#[test]
fn usage_errors_exit_2_with_a_clear_message() {
    let home = tempfile::tempdir().unwrap();
    let v = admin_vector();
    let cmd = || with_creds(dsql(home.path()), &v);
    let host = v.host.as_str();

    let err = fails(run(cmd(), &["--host", host, "--expires-in", "0"]), 2, &v);
    assert!(err.contains("604800"), "{err}");
    let err = fails(
        run(cmd(), &["--host", host, "--expires-in", "604801"]),
        2,
        &v,
    );
    assert!(err.contains("604800"), "{err}");
    let err = fails(run(cmd(), &["--host", host, "--at", "next tuesday"]), 2, &v);
    assert!(
        err.contains("RFC 3339") && err.contains("2024-01-01T00:00:00Z"),
        "{err}"
    );
    let err = fails(run(cmd(), &["--host", "localhost"]), 2, &v);
    assert!(err.contains("region"), "{err}");
    let err = fails(
        run(cmd(), &["--host", host, "--region", "eu-west-1"]),
        2,
        &v,
    );
    assert!(
        err.contains("eu-west-1") && err.contains("us-east-1"),
        "{err}"
    );
    let err = fails(run(cmd(), &["--host", host, "--user", ""]), 2, &v);
    assert!(err.contains("--user"), "{err}");
    let err = fails(run(cmd(), &["--host", host, "--format", "yaml"]), 2, &v);
    assert!(err.contains("yaml"), "{err}");
    let err = fails(run(cmd(), &["--region", "us-east-1"]), 2, &v);
    assert!(err.contains("--host"), "{err}");
    let err = fails(run(cmd(), &["--host", "https://x.example/db"]), 2, &v);
    assert!(err.contains("x.example"), "{err}");
}

#[test]
fn missing_credentials_exit_1_and_say_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let v = admin_vector();
    let out = run(dsql(home.path()), &["--host", &v.host, "--at", AT]);
    let err = fails(out, 1, &v);
    assert!(
        err.contains("credentials") && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

#[test]
fn region_for_custom_hosts_comes_from_aws_region() {
    let home = tempfile::tempdir().unwrap();
    let v = vectors_at()
        .into_iter()
        .find(|v| v.name == "custom-localhost")
        .expect("vector present");
    let mut cmd = with_creds(dsql(home.path()), &v);
    cmd.env("AWS_REGION", &v.region);
    let out = run(cmd, &["--host", "localhost", "--user", "app", "--at", AT]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{}\n", v.expected));
}

#[test]
fn nothing_secret_in_trace_logs() {
    let home = tempfile::tempdir().unwrap();
    let v = admin_vector();
    let mut cmd = with_creds(dsql(home.path()), &v);
    cmd.env("DSQL_LOG", "trace");
    let out = run(cmd, &["--host", &v.host, "--at", AT]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{}\n", v.expected));
    // Trace logging really wrote: `dsql token`'s own lines (what is signed, and when it expires)
    // are there, so the absence of secrets below is not the absence of logs.
    let log = stderr(&out);
    assert!(
        log.contains("signing a DSQL auth token")
            && log.contains(&v.host)
            && log.contains("DSQL auth token signed")
            && log.contains("2024-01-01T00:15:00Z"),
        "trace logs expected on stderr: {log}"
    );
    for secret in secret_parts(&v) {
        assert!(!log.contains(&secret), "secret in trace logs");
    }
    // Without DSQL_LOG/RUST_LOG those lines stay out (the default is warnings only).
    let out = run(
        with_creds(dsql(home.path()), &v),
        &["--host", &v.host, "--at", AT],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("signing a DSQL auth token"),
        "{}",
        stderr(&out)
    );
}

/// Hosts pasted with a port, as the AWS CLI accepts them: `:5432` (or any port) is the port to
/// connect to and `:443` (the signing URL's) is dropped; the token is boto3's for the host alone.
#[test]
fn host_with_a_port_is_taken_and_the_port_kept_out_of_the_signed_host() {
    let home = tempfile::tempdir().unwrap();
    let v = admin_vector();
    for (pasted, port) in [
        (format!("{}:5432", v.host), 5432),
        (format!("{}:443", v.host), 5432),
        (format!("{}.:6000", v.host.to_uppercase()), 6000),
    ] {
        let out = run(
            with_creds(dsql(home.path()), &v),
            &["--host", &pasted, "--at", AT, "--format", "json"],
        );
        assert!(out.status.success(), "{pasted}: {}", stderr(&out));
        let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(json["token"], v.expected.as_str(), "{pasted}");
        assert_eq!(json["host"], v.host.as_str(), "{pasted}");
        assert_eq!(json["port"], port, "{pasted}");
    }
    let err = fails(
        run(
            with_creds(dsql(home.path()), &v),
            &["--host", &format!("{}:99999", v.host), "--at", AT],
        ),
        2,
        &v,
    );
    assert!(err.contains("99999") && err.contains("port"), "{err}");
}
