//! `--profile` wins over AWS_* environment credentials (as the AWS CLI's does), instead of being
//! silently ignored; without it the environment's credentials are used.

use std::process::{Command, Output};

const DSQL: &str = env!("CARGO_BIN_EXE_dsql");
const HOST: &str = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";
const PROFILE_KEY: &str = "AKIDFROMPROFILE00001";
const ENV_KEY: &str = "AKIDFROMENVIRONMENT1";

fn token(dir: &std::path::Path, profile: Option<&str>) -> Output {
    let mut cmd = Command::new(DSQL);
    cmd.args(["token", "--host", HOST]);
    if let Some(p) = profile {
        cmd.args(["--profile", p]);
    }
    cmd.env("AWS_ACCESS_KEY_ID", ENV_KEY)
        .env("AWS_SECRET_ACCESS_KEY", "environment-secret")
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("credentials"))
        .env("AWS_CONFIG_FILE", dir.join("config"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .output()
        .expect("dsql token runs")
}

#[test]
fn the_command_line_profile_wins_over_environment_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("credentials"),
        format!(
            "[dev]\naws_access_key_id = {PROFILE_KEY}\naws_secret_access_key = profile-secret\n"
        ),
    )
    .expect("credentials file");
    std::fs::write(
        dir.path().join("config"),
        "[profile dev]\nregion = us-east-1\n",
    )
    .expect("config file");

    let out = token(dir.path(), Some("dev"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("X-Amz-Credential={PROFILE_KEY}%2F")),
        "--profile dev signs with the profile's key: {stdout}"
    );

    let out = token(dir.path(), None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("X-Amz-Credential={ENV_KEY}%2F")),
        "without --profile the environment's key signs: {stdout}"
    );

    let out = token(dir.path(), Some("nosuch"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nosuch"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "no token from the environment instead"
    );
}
