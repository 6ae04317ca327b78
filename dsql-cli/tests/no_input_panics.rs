//! No input to any `dsql` subcommand panics: arbitrary argument vectors over the real flag
//! names, and arbitrary `--at` times (the `time` crate once panicked on 9999-12-31), give a
//! result or a one-line error with exit status 1 or 2, within a bound.

use proptest::prelude::*;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const DSQL: &str = env!("CARGO_BIN_EXE_dsql");
const HOST: &str = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";
/// Far more than any refusal takes; a run this long is a hang.
const BOUND: Duration = Duration::from_secs(30);

/// Runs `dsql args` with static credentials and no profile files, killed after [`BOUND`].
fn dsql(args: &[String]) -> Output {
    let mut child = Command::new(DSQL)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "AKIDNOPANIC000000001")
        .env("AWS_SECRET_ACCESS_KEY", "no-panic-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dsql runs");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if started.elapsed() > BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dsql {args:?} still running after {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn assert_no_panic(args: &[String], out: &Output) -> Result<(), TestCaseError> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    prop_assert!(
        matches!(out.status.code(), Some(0..=2)),
        "dsql {:?}: {} {}",
        args,
        out.status,
        stderr
    );
    prop_assert!(!stderr.contains("panicked"), "dsql {:?}: {}", args, stderr);
    Ok(())
}

fn flag() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "--host",
            "--region",
            "--user",
            "--expires-in",
            "--profile",
            "--at",
            "--format",
            "--port",
            "--access-key",
            "--secret-key",
            "--secret-key-file",
            "--session-token",
            "--session-token-file",
            "--upstream",
            "--max-connection-age",
            "--rate-limit",
            "--max-connections",
            "--tls-dir",
            "--host-alias",
            "--config",
            "--interval",
            "--concurrency",
            "--output",
            "sync",
            "run",
            "status",
            "--help",
            "--version",
        ])
        .prop_map(str::to_owned),
        "-{1,2}[a-z-]{0,12}",
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,24}",
        prop::sample::select(vec![
            "",
            "0",
            "-1",
            "1",
            "604800",
            "604801",
            "18446744073709551616",
            "99999999999999999999h",
            "1s",
            "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            HOST,
            "localhost",
            "json",
            "url",
            "env",
            "token",
            "text",
            "admin",
            "postgres://u:p@127.0.0.1:1/db",
            "/nonexistent/file",
            "/etc/hostname",
            "us-east-1",
        ])
        .prop_map(str::to_owned),
    ]
}

fn argv() -> impl Strategy<Value = Vec<String>> {
    let sub = prop_oneof![
        prop::sample::select(vec!["token", "local", "hyperdrive", "help"]).prop_map(str::to_owned),
        "\\PC{0,8}",
    ];
    (
        sub,
        prop::collection::vec((flag(), prop::option::of(value())), 0..6),
    )
        .prop_map(|(sub, pairs)| {
            let mut args = vec![sub.clone()];
            for (f, v) in pairs {
                args.push(f);
                args.extend(v);
            }
            if sub == "local" {
                // Never let a valid command line start a server: a rate limit of 0 is refused
                // after every flag has been read (and a second --rate-limit by the parser).
                args.extend(["--rate-limit".to_owned(), "0".to_owned()]);
            }
            args
        })
}

/// `secs` before 9999-12-31T23:59:59Z, the last second `time` can print, in RFC 3339.
fn before_the_end(secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(253_402_300_799 - secs).expect("in range");
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

/// RFC 3339 times over the whole range `time` parses, and beyond its printable range.
fn at() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            0u32..=9999,
            0u32..=13,
            0u32..=32,
            0u32..=24,
            0u32..=60,
            prop::sample::select(vec!["Z", "+00:00", "-23:59", "+23:59", "+01:30"]),
        )
            .prop_map(|(y, mo, d, h, mi, off)| format!(
                "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:59{off}"
            )),
        // The last hour and the last weeks `time` can print: a token's expiry falls beyond.
        (0i64..=3600).prop_map(before_the_end),
        (0i64..=30 * 86_400).prop_map(before_the_end),
        "\\PC{0,30}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_argument_vector_panics(args in argv()) {
        let out = dsql(&args);
        assert_no_panic(&args, &out)?;
    }

    #[test]
    fn every_at_gives_a_token_or_a_one_line_error(at in at()) {
        let args: Vec<String> = ["token", "--host", HOST, "--at", &at, "--format", "json"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let out = dsql(&args);
        assert_no_panic(&args, &out)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {
                let json: serde_json::Value = serde_json::from_slice(&out.stdout)
                    .map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
                prop_assert!(json["expires_at"].is_string(), "{}", json);
            }
            Some(2) => prop_assert_eq!(stderr.trim().lines().count(), 1, "{}: {}", at, stderr),
            other => prop_assert!(false, "--at {:?}: exit {:?}: {}", at, other, stderr),
        }
    }
}

#[test]
fn the_last_printable_times_are_handled() {
    for (at, ok) in [
        ("9999-12-23T23:59:59Z", true),
        ("9999-12-24T00:00:00Z", false),
        ("9999-12-31T23:59:59Z", false),
        ("9999-12-31T23:50:00Z", false),
        ("9999-12-31T23:59:59-23:59", false),
        ("1970-01-01T00:00:00Z", true),
        ("1969-12-31T23:59:59Z", false),
    ] {
        let args: Vec<String> = ["token", "--host", HOST, "--at", at, "--format", "json"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let out = dsql(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if ok {
            assert_eq!(out.status.code(), Some(0), "{at}: {stderr}");
        } else {
            assert_eq!(out.status.code(), Some(2), "{at}: {stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "{at}: {stderr}");
            assert!(stderr.contains("--at"), "{at}: {stderr}");
        }
    }
}

/// Found by the property test above: clap took `--at "- "` for an unknown flag and printed its
/// usage text; a value starting with `-` is an `--at` value and gets our one-line error.
#[test]
fn an_at_value_starting_with_a_hyphen_gets_a_one_line_error() {
    for at in ["- ", "-1", "--"] {
        let args: Vec<String> = ["token", "--host", HOST, "--at", at]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let out = dsql(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--at {at:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "--at {at:?}: {stderr}");
        assert!(stderr.contains("RFC 3339"), "--at {at:?}: {stderr}");
    }
}
