//! Each release check must fail on the defect it exists for. A small throwaway workspace passes
//! the checks as written, then gets one defect planted at a time; the step must fail and name it.
//! The steps that need cargo-deny or cargo-semver-checks (minutes to install) are behind the
//! `release-tools` feature: `cargo xtask release-check` runs them as its first step.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A one-crate workspace that passes every check below.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

const CRATE: &str = "planted-fixture";

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        let write = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write(
            "Cargo.toml",
            r#"[workspace]
members = ["fixture"]
resolver = "3"

[workspace.package]
version = "0.1.0"
edition = "2024"
license = "MIT OR Apache-2.0"
rust-version = "1.94.1"
"#,
        );
        write(
            "fixture/Cargo.toml",
            &format!(
                r#"[package]
name = "{CRATE}"
description = "A crate with planted defects, for xtask's tests."
repository = "https://example.invalid/fixture"
readme = "README.md"
version.workspace = true
edition.workspace = true
license.workspace = true
rust-version.workspace = true

[features]
extra = []
other = []
"#
            ),
        );
        write(
            "fixture/src/lib.rs",
            r#"#![doc = include_str!("../README.md")]

/// Stays.
pub fn kept() -> u8 {
    1
}

/// Removed by the semver test.
pub fn removed_later() -> u8 {
    2
}
"#,
        );
        write("fixture/README.md", "# planted-fixture\n\nA fixture.\n");
        write("fixture/LICENSE-MIT", "MIT license text\n");
        write("fixture/LICENSE-APACHE", "Apache license text\n");
        write(
            "CHANGELOG.md",
            "# Changelog\n\n## 0.1.0 (unreleased)\n\nFirst.\n",
        );
        let deny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deny.toml");
        std::fs::copy(deny, root.join("deny.toml")).expect("copy deny.toml");
        let fx = Fixture { _dir: dir, root };
        let out = fx.cargo(&["generate-lockfile", "--offline"]);
        assert!(out.status.success(), "generate-lockfile: {}", text(&out));
        fx
    }

    fn cargo(&self, args: &[&str]) -> std::process::Output {
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(&self.root)
            .args(args)
            .env("CARGO_TARGET_DIR", self.root.join("target"))
            .output()
            .expect("run cargo")
    }

    fn edit(&self, rel: &str, f: impl FnOnce(String) -> String) {
        let p = self.root.join(rel);
        let before = std::fs::read_to_string(&p).unwrap_or_default();
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, f(before)).unwrap();
    }

    /// `cargo xtask release-check --only <step>` against the fixture.
    fn release_check(&self, step: &str) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["release-check", "--only", step])
            .env("XTASK_WORKSPACE_ROOT", &self.root)
            .env("CARGO_TARGET_DIR", self.root.join("target"))
            .output()
            .expect("run xtask");
        (out.status.success(), text(&out))
    }

    /// The step passes on the fixture as written, then fails once `plant` has run, and the
    /// output holds `expected` (the line that tells the user what is wrong).
    fn passes_then_fails(&self, step: &str, plant: impl FnOnce(&Self), expected: &str) {
        let (ok, out) = self.release_check(step);
        assert!(
            ok,
            "`{step}` must pass before the defect is planted:\n{out}"
        );
        plant(self);
        let (ok, out) = self.release_check(step);
        assert!(!ok, "`{step}` passed with the defect planted:\n{out}");
        assert!(
            out.contains(&format!("FAILED: {step}")),
            "no FAILED line for {step}:\n{out}"
        );
        assert!(out.contains(expected), "`{expected}` not in:\n{out}");
        // The line a user sees, for the record (`cargo test -- --nocapture` shows it).
        let line = out
            .lines()
            .find(|l| l.contains(expected))
            .unwrap_or_default();
        println!("{step}: planted defect reported as: {}", line.trim());
    }

    #[cfg(feature = "release-tools")]
    fn git(&self, args: &[&str]) {
        let out = Command::new("git")
            .current_dir(&self.root)
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .expect("run git");
        assert!(out.status.success(), "git {args:?}: {}", text(&out));
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn docs_fail_on_a_broken_intra_doc_link() {
    Fixture::new().passes_then_fails(
        "docs",
        |fx| {
            fx.edit("fixture/src/lib.rs", |s| {
                s.replace("/// Stays.", "/// Stays, unlike [`NoSuchItem`].")
            })
        },
        "unresolved link to `NoSuchItem`",
    );
}

#[test]
fn features_fail_when_a_feature_does_not_build_alone() {
    Fixture::new().passes_then_fails(
        "features",
        |fx| {
            fx.edit("fixture/src/lib.rs", |s| {
                s + "\n#[cfg(feature = \"other\")]\nfn helper() -> u8 { 3 }\n\n/// Needs `other` without saying so.\n#[cfg(feature = \"extra\")]\npub fn extra() -> u8 { helper() }\n"
            })
        },
        "cannot find function `helper`",
    );
}

#[test]
fn packaging_fails_on_stray_test_data() {
    Fixture::new().passes_then_fails(
        "package",
        |fx| fx.edit("fixture/tests/data/blob.json", |_| "{}".into()),
        "stray file in package: tests/data/blob.json",
    );
}

#[test]
fn version_fails_when_the_changelog_names_another_version() {
    Fixture::new().passes_then_fails(
        "version",
        |fx| fx.edit("CHANGELOG.md", |s| s.replace("## 0.1.0", "## 0.2.0")),
        "0.2.0",
    );
}

#[cfg(feature = "release-tools")]
#[test]
fn deps_fail_on_a_disallowed_license() {
    Fixture::new().passes_then_fails(
        "deps",
        |fx| {
            fx.edit("Cargo.toml", |s| {
                s.replace("MIT OR Apache-2.0", "GPL-3.0-only")
            })
        },
        "failed to satisfy license requirements",
    );
}

#[cfg(feature = "release-tools")]
#[test]
fn semver_fails_on_a_removed_public_function() {
    let fx = Fixture::new();
    fx.git(&["init", "-q"]);
    fx.edit(".gitignore", |_| "/target\n".into());
    fx.git(&["add", "-A"]);
    fx.git(&["commit", "-q", "-m", "released"]);
    fx.git(&["tag", "v0.1.0"]);
    fx.passes_then_fails(
        "semver",
        |fx| {
            fx.edit("fixture/src/lib.rs", |s| {
                let at = s.find("/// Removed by").unwrap();
                s[..at].to_string()
            });
            fx.git(&["commit", "-q", "-am", "remove a public function"]);
        },
        "removed_later",
    );
}

#[cfg(feature = "release-tools")]
#[test]
fn msrv_fails_on_code_newer_than_rust_version() {
    Fixture::new().passes_then_fails(
        "msrv",
        |fx| {
            // `Vec::push_mut` is stable since Rust 1.95.
            fx.edit("fixture/src/lib.rs", |s| {
                s + "\n/// Newer than 1.94.\npub fn newer() -> u8 {\n    let mut v = vec![1u8];\n    *v.push_mut(2)\n}\n"
            })
        },
        "push_mut",
    );
}
