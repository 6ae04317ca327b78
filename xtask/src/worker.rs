//! The Cloudflare Worker's CI steps: lint everything it compiles for wasm32, then build it
//! (worker-build) and run it in `wrangler dev` (workerd) against the fake Hyperdrive API and
//! dsql-local. The tools are installed by `.ci/run` when missing; here a missing one is an error
//! that names the command, never a skip.

use crate::util::{Result, cargo, output, root, step};
use std::process::Command;

const WASM: &str = "wasm32-unknown-unknown";
const CRATE: &str = "dsql-hyperdrive-worker";
/// Pinned like `.ci/run`; wasm-bindgen-cli must equal the `wasm-bindgen` crate in Cargo.lock.
pub(crate) const WORKER_BUILD_VERSION: &str = "0.8.7";

/// The `wasm-bindgen` crate's version in Cargo.lock (the CLI must match it exactly).
fn locked_wasm_bindgen() -> Result<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock"))
        .map_err(|e| format!("cannot read Cargo.lock: {e}"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\""
            && let Some(v) = lines
                .next()
                .and_then(|l| l.strip_prefix("version = \""))
                .and_then(|l| l.strip_suffix('"'))
        {
            return Ok(v.to_owned());
        }
    }
    Err("Cargo.lock has no wasm-bindgen package: the Worker's dependencies changed".into())
}

/// Fails with the install command when a tool the Worker's build needs is missing or wrong.
fn check_tools() -> Result {
    let bindgen = locked_wasm_bindgen()?;
    let have = output(Command::new("wasm-bindgen").arg("--version")).unwrap_or_default();
    if have.split_whitespace().nth(1) != Some(bindgen.as_str()) {
        return Err(format!(
            "wasm-bindgen {bindgen} is needed (found: {}): `cargo install --force wasm-bindgen-cli --version {bindgen}` (or run .ci/run)",
            if have.trim().is_empty() {
                "none"
            } else {
                have.trim()
            }
        ));
    }
    // wasm-bindgen-cli installs it beside wasm-bindgen; it runs the wasm32 tests under Node.js.
    if output(Command::new("wasm-bindgen-test-runner").arg("--version")).is_err() {
        return Err(format!(
            "wasm-bindgen-test-runner is missing: `cargo install --force wasm-bindgen-cli --version {bindgen}` (or run .ci/run)"
        ));
    }
    let have = output(Command::new("worker-build").arg("--version")).unwrap_or_default();
    if !have.contains(WORKER_BUILD_VERSION) {
        return Err(format!(
            "worker-build {WORKER_BUILD_VERSION} is needed (found: {}): `cargo install --force worker-build --version {WORKER_BUILD_VERSION}` (or run .ci/run)",
            if have.trim().is_empty() {
                "none"
            } else {
                have.trim()
            }
        ));
    }
    let dir = root().join(CRATE);
    if !dir.join("node_modules/.bin/wrangler").exists() {
        return Err(format!(
            "wrangler is missing: run `npm ci` in {} (Node.js 20.3 or later), or .ci/run",
            dir.display()
        ));
    }
    Ok(())
}

/// The Worker's steps (`cargo xtask worker`, and the end of `cargo xtask ci`).
pub(crate) fn run(args: &[String]) -> Result {
    if let Some(a) = args.first() {
        return Err(format!("unknown argument to `xtask worker`: {a}"));
    }
    let installed =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if !installed.lines().any(|l| l.trim() == WASM) {
        return Err(format!(
            "the Worker needs the {WASM} target: `rustup target add {WASM}` (or run .ci/run)"
        ));
    }
    // Lints the code as the Worker compiles it (wasm32 cfgs, `worker` crate, no `native`), and
    // thereby checks every crate the Worker uses (dsql-hyperdrive without `native`,
    // dsql-auth-core) for wasm32. A separate lint of dsql-hyperdrive for wasm32 would rebuild
    // its dependencies with other features (minutes) for one cfg'd type alias.
    step(
        "worker: clippy for wasm32 (the Worker and what it compiles)",
        cargo().args([
            "clippy",
            "-p",
            CRATE,
            "--target",
            WASM,
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    // The e2e test is behind a feature, so the workspace-wide clippy does not see it.
    step(
        "worker: clippy of the end-to-end test",
        cargo().args([
            "clippy",
            "-p",
            CRATE,
            "--features",
            "e2e",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    check_tools()?;
    // The pass (policy, signing, API client, KV state) as wasm32 code, under Node.js.
    step(
        "worker: the pass on wasm32 (wasm-bindgen-test-runner, Node.js)",
        cargo()
            .env(
                "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
                "wasm-bindgen-test-runner",
            )
            .args([
                "test",
                "-p",
                CRATE,
                "--target",
                WASM,
                "--test",
                "wasm_pass",
                "--locked",
            ]),
    )?;
    // The test builds the Worker with build.sh (worker-build, release, wasm32) itself, then runs
    // it in workerd; --nocapture shows its size and CPU figures in the CI log. Here without
    // build.sh's LTO and single codegen unit: minutes faster on 2 cores, and the size the test
    // checks against Cloudflare's limit is then an upper bound of what `./build.sh` ships.
    println!(
        "\n    (the Worker is built without LTO here; `./build.sh` in the crate builds what ships)"
    );
    step(
        "worker: build + end to end in wrangler dev (workerd, fake Hyperdrive API, dsql-local)",
        cargo()
            .env("CARGO_PROFILE_RELEASE_LTO", "false")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
            .args([
                "test",
                "-p",
                CRATE,
                "--features",
                "e2e",
                "--test",
                "wrangler_e2e",
                "--locked",
                "--",
                "--nocapture",
            ]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_script_installs_the_pinned_worker_tools() {
        let script = std::fs::read_to_string(root().join(".ci/run")).unwrap();
        // .ci/run reads the version from Cargo.lock, as build.sh does.
        locked_wasm_bindgen().unwrap();
        assert!(
            script.contains("wasm-bindgen-cli --version \"$bindgen\"")
                && script.contains("name = \\\"wasm-bindgen\\\""),
            ".ci/run must install wasm-bindgen-cli at the version in Cargo.lock"
        );
        assert!(
            script.contains(&format!("worker-build --version {WORKER_BUILD_VERSION}")),
            ".ci/run must install worker-build {WORKER_BUILD_VERSION}"
        );
    }
}
