//! Running commands with a visible header and a clear failure.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

pub(crate) type Result<T = ()> = std::result::Result<T, String>;

/// Points the release checks at another workspace: xtask's own tests plant defects in a small
/// throwaway workspace and check that each step fails on them.
pub(crate) const ROOT_OVERRIDE: &str = "XTASK_WORKSPACE_ROOT";

/// The workspace root: xtask lives one level below it (or `XTASK_WORKSPACE_ROOT`, if set).
pub(crate) fn root() -> PathBuf {
    if let Some(dir) = std::env::var_os(ROOT_OVERRIDE) {
        return PathBuf::from(dir);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// `cargo` as invoked by the user (respects `$CARGO`), run from the workspace root.
pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs `cmd` to completion, printing a header and the time it took; fails with the step's name.
pub(crate) fn step(name: &str, cmd: &mut Command) -> Result {
    println!("\n==> {name}\n    $ {}", describe(cmd));
    let started = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("{name}: cannot start {}: {e}", describe(cmd)))?;
    println!("    ({name}: {:.1?})", started.elapsed());
    if status.success() {
        Ok(())
    } else {
        Err(format!("step failed: {name} ({status})"))
    }
}

/// Runs `cmd` and returns its stdout, failing with the step's name and stderr.
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start {}: {e}", describe(cmd)))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
