//! `cargo xtask release-check [--baseline <rev>] [--only <step,...>]`: everything a crates.io
//! release needs, checked before it happens. Each step runs, or prints `SKIPPED: <why>`; all steps
//! run even after one fails, and the summary lists each with its time.

use crate::tools::{CARGO_DENY, CARGO_HACK, CARGO_SEMVER_CHECKS};
use crate::util::{Result, cargo, output, root, step};
use crate::workspace::Workspace;
use crate::{package, public_types};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

pub(crate) enum Outcome {
    Passed,
    Skipped(String),
}

type StepFn = fn(&Ctx) -> Result<Outcome>;

struct Ctx {
    ws: Workspace,
    baseline: Option<String>,
}

/// In the order that fails fastest: cheap checks first, the long builds last.
const STEPS: &[(&str, &str, StepFn)] = &[
    (
        "self-test",
        "the checks themselves: each fails on a planted defect",
        self_test_step,
    ),
    ("version", "version and changelog", version_step),
    (
        "deps",
        "dependencies: licenses, duplicates, sources (cargo-deny)",
        deps_step,
    ),
    (
        "advisories",
        "dependencies: security advisories (cargo-deny)",
        advisories_step,
    ),
    (
        "docs",
        "docs (rustdoc warnings denied, docs.rs settings)",
        docs_step,
    ),
    (
        "public-types",
        "public types (external types allow-list)",
        public_types_step,
    ),
    ("package", "packaging (cargo package)", package_step),
    (
        "features",
        "features (cargo hack --each-feature)",
        features_step,
    ),
    (
        "semver",
        "semver (cargo-semver-checks against the baseline)",
        semver_step,
    ),
    ("msrv", "MSRV (the rust-version toolchain)", msrv_step),
];

const USAGE: &str = "usage: cargo xtask release-check [--baseline <git rev>] [--only <step>[,<step>...]]\n  steps: self-test, version, deps, advisories, docs, public-types, package, features, semver, msrv";

pub(crate) fn run(args: &[String]) -> Result {
    let mut baseline = None;
    let mut only: Option<Vec<String>> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--baseline" => {
                baseline = Some(
                    it.next()
                        .ok_or("--baseline needs a git rev, e.g. v0.1.0")?
                        .clone(),
                )
            }
            "--only" => {
                let list = it.next().ok_or("--only needs a step name")?;
                let names: Vec<String> = list.split(',').map(str::to_string).collect();
                if let Some(bad) = names
                    .iter()
                    .find(|n| !STEPS.iter().any(|s| s.0 == n.as_str()))
                {
                    return Err(format!("unknown step `{bad}`\n{USAGE}"));
                }
                only = Some(names);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    let ctx = Ctx {
        ws: Workspace::load()?,
        baseline,
    };
    let mut summary: Vec<(&str, Duration, String)> = Vec::new();
    let selected: Vec<_> = STEPS
        .iter()
        .filter(|s| only.as_ref().is_none_or(|o| o.iter().any(|n| n == s.0)))
        .collect();
    for (i, (key, title, f)) in selected.iter().enumerate() {
        println!("\n======== [{}/{}] {title} ({key})", i + 1, selected.len());
        let started = Instant::now();
        let verdict = match f(&ctx) {
            Ok(Outcome::Passed) => "passed".to_string(),
            Ok(Outcome::Skipped(why)) => {
                println!("\n*** SKIPPED: {key}: {why} ***");
                format!("SKIPPED: {why}")
            }
            Err(e) => {
                println!("\n*** FAILED: {key}: {e} ***");
                format!("FAILED: {}", e.lines().next().unwrap_or_default())
            }
        };
        summary.push((key, started.elapsed(), verdict));
    }
    println!("\n======== release-check summary");
    for (key, took, verdict) in &summary {
        println!("  {key:<13} {:>7.1}s  {verdict}", took.as_secs_f64());
    }
    let failed = summary.iter().filter(|s| s.2.starts_with("FAILED")).count();
    if failed > 0 {
        return Err(format!("release-check: {failed} step(s) failed"));
    }
    println!("\nrelease-check: every step passed or said why it was skipped");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// self-test

/// xtask/tests/planted_defects.rs with the tests that need cargo-deny and cargo-semver-checks: a
/// check that cannot fail is worse than none. (`cargo xtask ci` runs the others.)
fn self_test_step(_ctx: &Ctx) -> Result<Outcome> {
    CARGO_DENY.ensure()?;
    CARGO_SEMVER_CHECKS.ensure()?;
    step(
        "planted defects: each step fails on its own",
        cargo().args([
            "test",
            "-p",
            "xtask",
            "--features",
            "release-tools",
            "--test",
            "planted_defects",
            "--locked",
        ]),
    )?;
    Ok(Outcome::Passed)
}

// ---------------------------------------------------------------------------------------------
// version and changelog

/// The version of CHANGELOG.md's top `## <version> ...` entry.
pub(crate) fn changelog_top_version(changelog: &str) -> Option<(&str, bool)> {
    let line = changelog.lines().find(|l| l.starts_with("## "))?;
    let rest = line.trim_start_matches("## ").trim();
    let version = rest.split_whitespace().next()?;
    Some((version, rest.contains("unreleased")))
}

/// Every crate and every `[workspace.dependencies]` entry on a workspace crate names the one
/// workspace version, and so does the changelog's top entry.
pub(crate) fn version_problems(ws: &Workspace, changelog: &str) -> (String, Vec<String>) {
    let mut problems = Vec::new();
    let version = ws
        .member(
            &ws.publish_order()
                .ok()
                .and_then(|o| o.first().cloned())
                .unwrap_or_default(),
        )
        .or(ws.members.first())
        .map(|m| m.version.clone())
        .unwrap_or_default();
    for m in &ws.members {
        if m.version != version {
            problems.push(format!(
                "{} is at {}, the workspace at {version}: use `version.workspace = true`",
                m.name, m.version
            ));
        }
        for d in &m.deps {
            if ws.member(&d.name).is_some()
                && d.req != "*"
                && d.req.trim_start_matches('^') != version
            {
                problems.push(format!(
                    "{} requires {} {}, not the workspace version {version}: fix [workspace.dependencies] in Cargo.toml",
                    m.name, d.name, d.req
                ));
            }
        }
    }
    match changelog_top_version(changelog) {
        None => problems.push("CHANGELOG.md has no `## <version>` entry: add one for this release".into()),
        Some((v, _)) if v != version => problems.push(format!(
            "CHANGELOG.md's top entry is {v}, the workspace version is {version}: add a `## {version}` entry"
        )),
        Some(_) => {}
    }
    (version, problems)
}

fn version_step(ctx: &Ctx) -> Result<Outcome> {
    let changelog = std::fs::read_to_string(root().join("CHANGELOG.md"))
        .map_err(|e| format!("cannot read CHANGELOG.md: {e}"))?;
    let (version, mut problems) = version_problems(&ctx.ws, &changelog);
    problems.sort();
    problems.dedup();
    if !problems.is_empty() {
        return Err(problems.join("\n  "));
    }
    println!("    every crate is at {version}; CHANGELOG.md's top entry is {version}");
    if let Some((_, true)) = changelog_top_version(&changelog) {
        println!("    note: the entry is marked unreleased; `cargo xtask release` says to date it");
    }
    println!("    publish order:");
    for (i, n) in ctx.ws.publish_order()?.iter().enumerate() {
        println!("      {}. {n}", i + 1);
    }
    let unpublished: Vec<&str> = ctx
        .ws
        .members
        .iter()
        .filter(|m| !m.publishable)
        .map(|m| m.name.as_str())
        .collect();
    println!(
        "    not published (publish = false): {}",
        unpublished.join(", ")
    );
    Ok(Outcome::Passed)
}

// ---------------------------------------------------------------------------------------------
// packaging, features, docs: also run by `cargo xtask ci`

fn package_step(ctx: &Ctx) -> Result<Outcome> {
    package::run(&ctx.ws, true).map(|()| Outcome::Passed)
}

fn features_step(ctx: &Ctx) -> Result<Outcome> {
    features(&ctx.ws).map(|()| Outcome::Passed)
}

fn docs_step(ctx: &Ctx) -> Result<Outcome> {
    docs(&ctx.ws)?;
    let mut cmd = cargo();
    cmd.args(["test", "--doc", "--locked"]);
    for m in ctx.ws.libraries() {
        cmd.args(["-p", &m.name]);
    }
    step("doctests (README examples included)", &mut cmd)?;
    Ok(Outcome::Passed)
}

/// Every library crate checked with no default features, each feature alone, and all features.
pub(crate) fn features(ws: &Workspace) -> Result {
    CARGO_HACK.ensure()?;
    let mut cmd = cargo();
    cmd.args(["hack", "check", "--each-feature", "--locked"]);
    for m in ws.libraries() {
        cmd.args(["-p", &m.name]);
    }
    step("each library crate, feature by feature", &mut cmd)
}

/// Each library crate's docs as docs.rs builds them (its `[package.metadata.docs.rs]` features
/// and rustdoc args), with every rustdoc warning an error. (`cargo xtask ci` runs the doctests on
/// its own; release-check runs them after this.)
pub(crate) fn docs(ws: &Workspace) -> Result {
    let mut problems = Vec::new();
    for m in ws.libraries() {
        let lib_rs = m.dir.join("src/lib.rs");
        let src = std::fs::read_to_string(&lib_rs).unwrap_or_default();
        if !src.contains("include_str!(\"../README.md\")") {
            problems.push(format!(
                "{}: README.md is not the crate docs, so its examples are not doctests: add #![doc = include_str!(\"../README.md\")] to {}",
                m.name,
                lib_rs.display()
            ));
        }
    }
    // Crates with the same docs.rs settings are documented in one cargo run (one build of the
    // dependencies); docs.rs itself documents each crate on its own, with its own settings.
    let mut groups: BTreeMap<(Vec<String>, Vec<String>), Vec<&str>> = BTreeMap::new();
    for m in ws.libraries() {
        let (flags, rustdoc_args) = docs_rs_settings(&m.name, m.docs_rs.as_ref());
        groups
            .entry((flags, rustdoc_args))
            .or_default()
            .push(&m.name);
    }
    for ((flags, rustdoc_args), crates) in groups {
        let mut cmd = cargo();
        cmd.args(["doc", "--no-deps", "--lib", "--locked"])
            .args(&flags);
        for c in &crates {
            cmd.args(["-p", c]);
        }
        let mut rustdocflags = rustdoc_args.clone();
        rustdocflags.extend(["-D".to_string(), "warnings".to_string()]);
        cmd.env("RUSTDOCFLAGS", rustdocflags.join(" "));
        // docs.rs builds with nightly, and `--cfg docsrs` usually turns on nightly-only doc
        // features (`doc_cfg`); let this stable toolchain accept them, as docs.rs's would.
        if rustdoc_args.iter().any(|a| a == "docsrs") {
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
        println!(
            "\n    docs.rs settings for {}: cargo flags [{}], rustdoc args [{}]",
            crates.join(", "),
            flags.join(" "),
            rustdoc_args.join(" ")
        );
        if let Err(e) = step(&format!("docs: {}", crates.join(", ")), &mut cmd) {
            problems.push(e);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n  "))
    }
}

/// The cargo flags and rustdoc args docs.rs would use for a crate, from its
/// `[package.metadata.docs.rs]` (default features and no args when it has none).
pub(crate) fn docs_rs_settings(krate: &str, docs_rs: Option<&Value>) -> (Vec<String>, Vec<String>) {
    let mut flags = Vec::new();
    let mut rustdoc_args = Vec::new();
    let Some(d) = docs_rs else {
        return (flags, rustdoc_args);
    };
    if d["all-features"].as_bool() == Some(true) {
        flags.push("--all-features".to_string());
    }
    if d["no-default-features"].as_bool() == Some(true) {
        flags.push("--no-default-features".to_string());
    }
    let features: Vec<String> = d["features"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(|f| format!("{krate}/{f}")))
        .collect();
    if !features.is_empty() {
        flags.push("--features".to_string());
        flags.push(features.join(","));
    }
    rustdoc_args.extend(
        d["rustdoc-args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string)),
    );
    (flags, rustdoc_args)
}

// ---------------------------------------------------------------------------------------------
// dependencies

fn deps_step(_ctx: &Ctx) -> Result<Outcome> {
    CARGO_DENY.ensure()?;
    step(
        "cargo deny: licenses, bans (duplicates), sources",
        cargo().args(["deny", "--frozen", "check", "licenses", "bans", "sources"]),
    )?;
    Ok(Outcome::Passed)
}

fn advisories_step(_ctx: &Ctx) -> Result<Outcome> {
    CARGO_DENY.ensure()?;
    // The advisory database is a git repository on GitHub; fetch it, or say why not.
    let fetched = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(root())
        .args(["deny", "fetch", "db"])
        .output();
    match fetched {
        Ok(out) if out.status.success() => {
            step(
                "cargo deny: advisories",
                cargo().args(["deny", "--frozen", "check", "advisories"]),
            )?;
            Ok(Outcome::Passed)
        }
        Ok(out) => Ok(Outcome::Skipped(format!(
            "`cargo deny fetch db` could not fetch the RustSec advisory database ({})",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no error text")
                .trim()
        ))),
        Err(e) => Err(format!("cannot run cargo deny fetch: {e}")),
    }
}

// ---------------------------------------------------------------------------------------------
// public types

fn public_types_step(ctx: &Ctx) -> Result<Outcome> {
    public_types::run(&ctx.ws).map(|()| Outcome::Passed)
}

// ---------------------------------------------------------------------------------------------
// semver

/// The newest `v*` tag by version, if any.
fn latest_version_tag() -> Result<Option<String>> {
    let tags = output(Command::new("git").current_dir(root()).args([
        "tag",
        "--list",
        "v*",
        "--sort=-v:refname",
    ]))?;
    Ok(tags.lines().next().map(str::to_string))
}

fn semver_step(ctx: &Ctx) -> Result<Outcome> {
    let baseline = match &ctx.baseline {
        Some(b) => b.clone(),
        None => match latest_version_tag()? {
            Some(t) => t,
            None => {
                return Ok(Outcome::Skipped(
                    "no `v*` tag yet, so there is no released API to compare with (pass --baseline <rev> to compare with a commit)".into(),
                ));
            }
        },
    };
    CARGO_SEMVER_CHECKS.ensure()?;
    let mut cmd = cargo();
    cmd.args([
        "semver-checks",
        "check-release",
        "--baseline-rev",
        &baseline,
    ]);
    for m in ctx.ws.libraries() {
        cmd.args(["-p", &m.name]);
    }
    step(&format!("public API against {baseline}"), &mut cmd)?;
    Ok(Outcome::Passed)
}

// ---------------------------------------------------------------------------------------------
// MSRV

/// `rust-version` must be the true minimum: the workspace builds with that toolchain, and some
/// dependency (or our own code) needs it. The dependency part is read from the lock file.
fn msrv_step(ctx: &Ctx) -> Result<Outcome> {
    let declared: Vec<&str> = ctx
        .ws
        .publishable()
        .filter_map(|m| m.rust_version.as_deref())
        .collect();
    let Some(msrv) = declared.first().copied() else {
        return Err(
            "no publishable crate declares rust-version: set it in [workspace.package]".into(),
        );
    };
    if let Some(m) = ctx
        .ws
        .publishable()
        .find(|m| m.rust_version.as_deref() != Some(msrv))
    {
        return Err(format!(
            "{} declares rust-version {:?}, the others {msrv}: use `rust-version.workspace = true`",
            m.name, m.rust_version
        ));
    }
    let highest = ctx
        .ws
        .shipped_packages
        .iter()
        .filter_map(|(n, v, rv)| rv.as_ref().map(|rv| (parse_version(rv), n, v, rv)))
        .max();
    match &highest {
        Some((needed, n, v, rv)) if *needed > parse_version(msrv) => {
            return Err(format!(
                "dependency {n} {v} needs Rust {rv}, above the declared rust-version {msrv}: raise rust-version"
            ));
        }
        Some((needed, n, v, rv)) if *needed == parse_version(msrv) => {
            println!("    declared {msrv}; {n} {v} needs {rv}, so it cannot be lower");
        }
        Some((_, n, v, rv)) => println!(
            "    note: declared {msrv}, but the most demanding dependency ({n} {v}) needs only {rv}: only our own code can justify {msrv}"
        ),
        None => println!("    note: no dependency declares a rust-version"),
    }
    let toolchain = msrv.to_string();
    let have = output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    if !have
        .lines()
        .any(|l| l.starts_with(&format!("{toolchain}-")))
    {
        println!(
            "\n==> installing toolchain {toolchain} (rustup toolchain install {toolchain} --profile minimal)"
        );
        let ok = Command::new("rustup")
            .args(["toolchain", "install", &toolchain, "--profile", "minimal"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Ok(Outcome::Skipped(format!(
                "`rustup toolchain install {toolchain}` failed on this machine, so the code was not built with Rust {toolchain}"
            )));
        }
    }
    // Its own target dir: another compiler's artifacts would otherwise evict the main build's.
    let target_dir = ctx.ws.target_dir.join("msrv");
    let mut cmd = Command::new("rustup");
    cmd.current_dir(root()).args([
        "run",
        &toolchain,
        "cargo",
        "check",
        "--locked",
        "--lib",
        "--bins",
        "--target-dir",
    ]);
    cmd.arg(&target_dir);
    for m in ctx.ws.publishable() {
        cmd.args(["-p", &m.name]);
    }
    // rustup puts its own cargo first on PATH for `rustup run`; make sure $CARGO does not win.
    cmd.env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC");
    step(
        &format!("every published crate with Rust {toolchain}"),
        &mut cmd,
    )?;
    Ok(Outcome::Passed)
}

/// `1.94.1` as (1, 94, 1); missing parts are 0.
pub(crate) fn parse_version(v: &str) -> (u64, u64, u64) {
    let mut parts = v.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changelog_top_entry() {
        let c = "# Changelog\n\ntext\n\n## 0.2.0 (unreleased)\n\n- x\n\n## 0.1.0 (2026-01-01)\n";
        assert_eq!(changelog_top_version(c), Some(("0.2.0", true)));
        assert_eq!(
            changelog_top_version("## 0.1.0 (2026-01-01)"),
            Some(("0.1.0", false))
        );
        assert_eq!(changelog_top_version("# Changelog\nnothing yet"), None);
    }

    #[test]
    fn versions_must_agree() {
        let ws = crate::workspace::tests::ws(vec![
            crate::workspace::tests::pkg("core", serde_json::Value::Null, &[]),
            crate::workspace::tests::pkg("pg", serde_json::Value::Null, &[("core", "^0.0.9", "")]),
        ]);
        let (v, p) = version_problems(&ws, "## 0.1.0 (unreleased)");
        assert_eq!(v, "0.1.0");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("pg requires core ^0.0.9"), "{p:?}");
        let (_, p) = version_problems(&ws, "# Changelog\n## 0.2.0 (unreleased)\n");
        assert!(p.iter().any(|p| p.contains("top entry is 0.2.0")), "{p:?}");
    }

    #[test]
    fn docs_rs_settings_become_cargo_flags_and_rustdoc_args() {
        assert_eq!(docs_rs_settings("c", None), (vec![], vec![]));
        let d = serde_json::json!({"all-features": true, "rustdoc-args": ["--cfg", "docsrs"]});
        assert_eq!(
            docs_rs_settings("c", Some(&d)),
            (
                vec!["--all-features".to_string()],
                vec!["--cfg".to_string(), "docsrs".to_string()]
            )
        );
        let d = serde_json::json!({"no-default-features": true, "features": ["a", "b"]});
        assert_eq!(
            docs_rs_settings("c", Some(&d)).0,
            ["--no-default-features", "--features", "c/a,c/b"]
        );
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(parse_version("1.94.1") > parse_version("1.94"));
        assert!(parse_version("1.100") > parse_version("1.94.1"));
    }
}
