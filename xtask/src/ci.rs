//! `cargo xtask ci`: everything CI checks, in the order that fails fastest (the release checks
//! that take minutes, not tens of minutes: docs, features, packaging, included).

use crate::util::{Result, cargo, output, step};
use crate::workspace::Workspace;
use crate::{package, release_check};
use std::process::Command;

const WASM: &str = "wasm32-unknown-unknown";
/// Benches against other projects' crates (aws-sdk-dsql, ring): built by `cargo xtask bench` only.
const BENCH_ONLY: &str = "dsql-sqlx-bench";
/// Non-default features tested with the workspace: dsql-diesel's deadpool pool.
const EXTRA_FEATURES: &str = "dsql-diesel/deadpool";

pub(crate) fn run(args: &[String]) -> Result {
    if let Some(a) = args.first() {
        return Err(format!("unknown argument to `xtask ci`: {a}"));
    }
    step("format", cargo().args(["fmt", "--all", "--", "--check"]))?;
    step(
        "clippy (warnings denied)",
        cargo().args([
            "clippy",
            "--workspace",
            "--exclude",
            BENCH_ONLY,
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    // The core must build on its own, with and without its default features, so that
    // non-Postgres tooling can use it without pulling in a driver or runtime.
    step(
        "core alone, default features",
        cargo().args(["build", "-p", "dsql-auth-core", "--locked"]),
    )?;
    step(
        "core alone, no default features",
        cargo().args([
            "build",
            "-p",
            "dsql-auth-core",
            "--no-default-features",
            "--locked",
        ]),
    )?;
    // And tested so: the paths without aws-config (caller-supplied credentials) must work, not
    // only compile; tests that need the default chain are gated on the feature.
    step(
        "core alone, no default features, tests",
        cargo().args([
            "test",
            "-p",
            "dsql-auth-core",
            "--no-default-features",
            "--locked",
        ]),
    )?;
    wasm_check()?;
    // The fast parts of `cargo xtask release-check`, so that publishing cannot rot between releases.
    let ws = Workspace::load()?;
    println!("\n==> release: docs (warnings denied, docs.rs settings)");
    release_check::docs(&ws)?;
    println!("\n==> release: features (each library crate, feature by feature)");
    release_check::features(&ws)?;
    // Packaged without the verify build here: that build is a second full build of every
    // dependency (other feature unification), minutes CI does not have. `xtask release-check` does it.
    println!("\n==> release: packaging (file lists, manifests; not built)");
    package::run(&ws, false)?;
    // `--workspace` enables only default features: dsql-diesel's deadpool pool is added to the
    // same build (a separate `-p dsql-diesel --all-features` run rebuilt its dependencies).
    step(
        "tests (dsql-diesel with both pools)",
        cargo().args([
            "test",
            "--workspace",
            "--exclude",
            BENCH_ONLY,
            "--features",
            EXTRA_FEATURES,
            "--all-targets",
            "--locked",
        ]),
    )?;
    step(
        "doc tests",
        cargo().args([
            "test",
            "--workspace",
            "--exclude",
            BENCH_ONLY,
            "--features",
            EXTRA_FEATURES,
            "--doc",
            "--locked",
        ]),
    )?;
    // The Cloudflare Worker: wasm32 lints, then built and run in workerd (xtask/src/worker.rs).
    crate::worker::run(&[])?;
    println!("\nci: all steps passed");
    Ok(())
}

/// Checks the core for wasm32, installing the target if rustup can; says SKIPPED loudly if not.
fn wasm_check() -> Result {
    let installed =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if !installed.lines().any(|l| l.trim() == WASM) {
        println!("\n==> installing rustup target {WASM}");
        let ok = Command::new("rustup")
            .args(["target", "add", WASM])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            println!(
                "\n*** SKIPPED: core check for {WASM}: `rustup target add {WASM}` failed on this machine ***\n"
            );
            return Ok(());
        }
    }
    step(
        "core for wasm32 (no default features)",
        cargo().args([
            "check",
            "-p",
            "dsql-auth-core",
            "--no-default-features",
            "--target",
            WASM,
            "--locked",
        ]),
    )
}
