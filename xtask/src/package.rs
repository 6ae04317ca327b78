//! Packaging every publishable crate as crates.io would, and checking what goes into each package.

use crate::util::{Result, cargo, output, step};
use crate::workspace::{DepKind, Workspace};

/// Files a package may hold. Anything else (test vectors, generator scripts, fixtures, editor
/// leftovers) is stray: users download it and docs.rs builds it, for nothing.
fn allowed(file: &str) -> bool {
    const EXACT: &[&str] = &[
        "Cargo.toml",
        "Cargo.toml.orig",
        "Cargo.lock",
        ".cargo_vcs_info.json",
        "README.md",
        "LICENSE-MIT",
        "LICENSE-APACHE",
        "build.rs",
    ];
    const RUST_DIRS: &[&str] = &["src/", "examples/", "tests/", "benches/"];
    EXACT.contains(&file)
        || RUST_DIRS
            .iter()
            .any(|d| file.starts_with(d) && file.ends_with(".rs"))
}

/// Files every package must hold: the README (it is also the crate docs, and crates.io's page)
/// and the text of both licenses of `MIT OR Apache-2.0`.
const REQUIRED: &[&str] = &["README.md", "LICENSE-MIT", "LICENSE-APACHE"];

/// What is wrong with one crate's file list, as messages that say what to do.
pub(crate) fn check_files(krate: &str, files: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    for f in REQUIRED {
        if !files.contains(f) {
            problems.push(format!(
                "{krate}: package lacks {f}: add {krate}/{f}{}",
                if f.starts_with("LICENSE") {
                    format!(" (`ln -s ../{f} {krate}/{f}`)")
                } else {
                    String::new()
                }
            ));
        }
    }
    for f in files.iter().filter(|f| !allowed(f)) {
        problems.push(format!(
            "{krate}: stray file in package: {f} (keep it out with `include`/`exclude` in {krate}/Cargo.toml)"
        ));
    }
    problems
}

/// Dependencies that would break or vanish on crates.io: a normal or build dependency with only a
/// `path` (cargo needs a version to publish), or any dependency on a crate that is never published.
pub(crate) fn check_deps(ws: &Workspace) -> Vec<String> {
    let mut problems = Vec::new();
    for m in ws.publishable() {
        for d in &m.deps {
            let internal = ws.member(&d.name);
            if d.path.is_some() && d.req == "*" && d.kind != DepKind::Dev {
                problems.push(format!(
                    "{}: dependency `{}` has only a path: give it a version (`{} = {{ workspace = true }}` with a version in [workspace.dependencies])",
                    m.name, d.name, d.name
                ));
            }
            if let Some(dep) = internal
                && !dep.publishable
                && d.req != "*"
            {
                problems.push(format!(
                    "{}: depends on `{}`, which has `publish = false`: crates.io cannot resolve it",
                    m.name, d.name
                ));
            }
        }
    }
    problems
}

/// The packaging step: dependency and file-list checks, then `cargo package` of the whole
/// workspace, which (with `verify`) builds every crate from its packaged form. Unpublished
/// workspace crates are found through cargo's local registry overlay, so nothing needs to be on
/// crates.io yet.
pub(crate) fn run(ws: &Workspace, verify: bool) -> Result {
    let mut problems = check_deps(ws);
    let order = ws.publish_order()?;
    for name in &order {
        let list =
            output(cargo().args(["package", "-p", name, "--list", "--allow-dirty", "--locked"]))?;
        let files: Vec<&str> = list
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        println!("    {name}: {} files", files.len());
        for f in &files {
            println!("        {f}");
        }
        problems.extend(check_files(name, &files));
    }
    if !problems.is_empty() {
        return Err(format!("packaging:\n  {}", problems.join("\n  ")));
    }
    let mut cmd = cargo();
    cmd.args(["package", "--workspace", "--allow-dirty", "--locked"]);
    if verify {
        // The packaged crates are built outside this workspace, so the root manifest's profile
        // overrides would not apply and every dependency would build a second time; pass them on.
        cmd.args(dependency_profile_overrides()?);
    } else {
        cmd.arg("--no-verify");
    }
    for m in ws.members.iter().filter(|m| !m.publishable) {
        cmd.args(["--exclude", &m.name]);
    }
    step(
        if verify {
            "cargo package (each crate built from its .crate)"
        } else {
            "cargo package --no-verify (manifests rewritten and packed; not built)"
        },
        &mut cmd,
    )?;
    println!("\n    packaged sizes (compressed .crate), in publish order:");
    for name in &order {
        let m = ws.member(name).ok_or_else(|| format!("no member {name}"))?;
        let path = ws
            .target_dir
            .join("package")
            .join(format!("{name}-{}.crate", m.version));
        let size = std::fs::metadata(&path)
            .map_err(|e| {
                format!(
                    "packaging: {} missing after `cargo package`: {e}",
                    path.display()
                )
            })?
            .len();
        println!("    {name:<24} {:>8.1} KiB", size as f64 / 1024.0);
    }
    Ok(())
}

/// `[profile.dev.package."*"]` of the root Cargo.toml as `--config` arguments.
fn dependency_profile_overrides() -> Result<Vec<String>> {
    let path = crate::util::root().join("Cargo.toml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let manifest: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut args = Vec::new();
    let overrides = manifest
        .get("profile")
        .and_then(|p| p.get("dev"))
        .and_then(|p| p.get("package"))
        .and_then(|p| p.get("*"))
        .and_then(|p| p.as_table());
    for (k, v) in overrides.into_iter().flatten() {
        args.push("--config".to_string());
        args.push(format!("profile.dev.package.\"*\".{k}={v}"));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_package_passes() {
        let files = [
            ".cargo_vcs_info.json",
            "Cargo.lock",
            "Cargo.toml",
            "Cargo.toml.orig",
            "LICENSE-APACHE",
            "LICENSE-MIT",
            "README.md",
            "src/lib.rs",
            "src/a/b.rs",
            "tests/it.rs",
        ];
        assert_eq!(check_files("c", &files), Vec::<String>::new());
    }

    #[test]
    fn stray_test_data_and_missing_licenses_are_named() {
        let files = [
            "Cargo.toml",
            "README.md",
            "src/lib.rs",
            "tests/vectors/vectors.json",
            "tests/vectors/gen.py",
        ];
        let p = check_files("c", &files);
        assert_eq!(p.len(), 4, "{p:#?}");
        assert!(
            p[0].contains("lacks LICENSE-MIT")
                && p[0].contains("ln -s ../LICENSE-MIT c/LICENSE-MIT")
        );
        assert!(p[1].contains("lacks LICENSE-APACHE"));
        assert!(p[2].contains("stray file in package: tests/vectors/vectors.json"));
        assert!(p[3].contains("tests/vectors/gen.py"));
    }

    #[test]
    fn missing_readme_is_named() {
        let p = check_files(
            "c",
            &["Cargo.toml", "LICENSE-MIT", "LICENSE-APACHE", "src/lib.rs"],
        );
        assert_eq!(p, ["c: package lacks README.md: add c/README.md"]);
    }
}
