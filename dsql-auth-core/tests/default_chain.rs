//! The AWS default credential chain with a named profile, offline: shared config and credentials
//! files in a temporary directory, the `profile` connection-string key (or `AWS_PROFILE`) carried
//! through `ConnectOptions` to `TokenProvider::from_default_chain`, which must sign with the
//! profile's key even when the environment holds other credentials.
#![cfg(feature = "aws-config")]

use std::path::Path;
use std::process::Command;

use dsql_auth_core::{ConnectOptions, TokenProvider};

const HOST: &str = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";
const PROFILE_KEY: &str = "AKIAPROFILEDEV000001";
const ENV_KEY: &str = "AKIAFROMENVIRONMENT1";
/// Set in the child process; holds the connection string the child parses.
const CHILD: &str = "DSQL_AUTH_CORE_TEST_CHAIN_CHILD";
const CHILD_DONE: &str = "child: signed with ";

/// In the child: options from the process environment and the string the parent chose, a
/// provider on the default chain for their profile, one token. Prints the key that signed it.
async fn child(conn: &str) {
    let o = ConnectOptions::from_env_and_str(conn).unwrap();
    let provider = TokenProvider::from_default_chain(o.profile.as_deref())
        .await
        .unwrap_or_else(|e| panic!("default chain for profile {:?}: {e}", o.profile));
    let token = provider.token(&o.signing_params().unwrap()).await.unwrap();
    let key = provider.access_key_id().await.unwrap();
    assert!(
        token
            .as_str()
            .contains(&format!("X-Amz-Credential={key}%2F")),
        "{token}"
    );
    println!("{CHILD_DONE}{key}");
}

/// Runs this test again as a child with a clean AWS environment pointing at `dir`'s files, plus
/// `extra`; returns its output (which, on success, names the key that signed).
fn run_child(dir: &Path, conn: &str, extra: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "a_named_profile_is_carried_to_the_default_chain",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env(CHILD, conn)
        .env("HOME", dir)
        .env("AWS_CONFIG_FILE", dir.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", ENV_KEY)
        .env("AWS_SECRET_ACCESS_KEY", "environment-secret");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the test binary starts again");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn a_named_profile_is_carried_to_the_default_chain() {
    if let Ok(conn) = std::env::var(CHILD) {
        child(&conn).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("credentials"),
        format!(
            "[dev]\naws_access_key_id = {PROFILE_KEY}\naws_secret_access_key = profile-secret\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config"),
        "[profile dev]\nregion = us-east-1\n",
    )
    .unwrap();
    let signed_by = |key: &str| format!("{CHILD_DONE}{key}");

    // `profile=dev` in the string: the profile's key, though AWS_ACCESS_KEY_ID is set.
    let (ok, out) = run_child(dir.path(), &format!("host={HOST} profile=dev"), &[]);
    assert!(ok && out.contains(&signed_by(PROFILE_KEY)), "{out}");
    // The same through AWS_PROFILE (read by `from_env_and_str`).
    let (ok, out) = run_child(
        dir.path(),
        &format!("host={HOST}"),
        &[("AWS_PROFILE", "dev")],
    );
    assert!(ok && out.contains(&signed_by(PROFILE_KEY)), "{out}");
    // No profile: the environment's key (so the two results above are the profile's doing).
    let (ok, out) = run_child(dir.path(), &format!("host={HOST}"), &[]);
    assert!(ok && out.contains(&signed_by(ENV_KEY)), "{out}");
    // A profile the files do not have: an error that names it, not the environment's key.
    let (ok, out) = run_child(dir.path(), &format!("host={HOST} profile=nosuch"), &[]);
    assert!(!ok && !out.contains(CHILD_DONE), "{out}");
    assert!(out.contains("nosuch"), "the error names the profile: {out}");
}
