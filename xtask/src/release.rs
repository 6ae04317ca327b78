//! `cargo xtask release`: a dry run. Prints, in order, the exact commands that cut the release
//! (checks, tag, one `cargo publish` per crate in dependency order) and runs none of them.

use crate::release_check::changelog_top_version;
use crate::util::{Result, output, root};
use crate::workspace::Workspace;
use std::process::Command;

pub(crate) fn run(args: &[String]) -> Result {
    if let Some(a) = args.first() {
        return Err(format!(
            "unknown argument to `xtask release`: {a} (it only prints the plan; there is nothing to configure)"
        ));
    }
    let ws = Workspace::load()?;
    let order = ws.publish_order()?;
    let version = order
        .first()
        .and_then(|n| ws.member(n))
        .map(|m| m.version.clone())
        .ok_or("no publishable crate in the workspace")?;
    let changelog = std::fs::read_to_string(root().join("CHANGELOG.md"))
        .map_err(|e| format!("cannot read CHANGELOG.md: {e}"))?;
    let plan = plan(
        &version,
        &order,
        changelog_top_version(&changelog),
        &git_state(),
    );
    for line in plan {
        println!("{line}");
    }
    Ok(())
}

/// What the working copy looks like to the release: the branch and whether anything is uncommitted.
#[derive(Debug, Default)]
pub(crate) struct GitState {
    pub(crate) branch: String,
    pub(crate) dirty: bool,
    pub(crate) tag_exists: Vec<String>,
}

fn git_state() -> GitState {
    let git = |args: &[&str]| {
        output(Command::new("git").current_dir(root()).args(args)).unwrap_or_default()
    };
    GitState {
        branch: git(&["rev-parse", "--abbrev-ref", "HEAD"])
            .trim()
            .to_string(),
        dirty: !git(&["status", "--porcelain"]).trim().is_empty(),
        tag_exists: git(&["tag", "--list", "v*"])
            .lines()
            .map(str::to_string)
            .collect(),
    }
}

/// The release plan, as lines to print: warnings first, then numbered commands.
pub(crate) fn plan(
    version: &str,
    order: &[String],
    changelog: Option<(&str, bool)>,
    git: &GitState,
) -> Vec<String> {
    let tag = format!("v{version}");
    let mut out = vec![format!(
        "cargo xtask release: DRY RUN for {tag}; nothing below is run. Run the commands yourself, in order, from the workspace root."
    )];
    let mut warn = |s: String| out.push(format!("  ! {s}"));
    if git.dirty {
        warn("the working tree has uncommitted changes: commit or stash them first (cargo publish refuses a dirty tree)".into());
    }
    if git.branch != "main" {
        warn(format!(
            "on branch `{}`, not main: releases are cut from main",
            git.branch
        ));
    }
    if git.tag_exists.contains(&tag) {
        warn(format!(
            "tag {tag} already exists: bump the workspace version in Cargo.toml first"
        ));
    }
    match changelog {
        Some((v, true)) if v == version => warn(format!(
            "CHANGELOG.md's top entry `## {v} (unreleased)` is not dated: make it `## {v} (YYYY-MM-DD)` and commit (step 1)"
        )),
        Some((v, _)) if v != version => warn(format!(
            "CHANGELOG.md's top entry is {v}, the workspace {version}: add a `## {version}` entry"
        )),
        None => warn("CHANGELOG.md has no `## <version>` entry".into()),
        Some(_) => {}
    }
    let mut cmds = vec![
        format!("git commit -am 'Release {tag}'    # after dating the CHANGELOG entry, if needed"),
        "cargo xtask release-check".to_string(),
        format!("git tag -a {tag} -m 'dsql-rs {version}'"),
        format!("git push origin main {tag}"),
    ];
    for name in order {
        cmds.push(format!("cargo publish --locked -p {name}"));
    }
    out.push(String::new());
    for (i, c) in cmds.iter().enumerate() {
        out.push(format!("  {:>2}. {c}", i + 1));
    }
    out.push(String::new());
    out.push(format!(
        "Publish order: {} (each after the workspace crates it depends on; a crate must be on crates.io before the next one's publish can resolve it).",
        order.join(" -> ")
    ));
    out.push("If a publish fails halfway, fix it and go on from that crate: published versions cannot be replaced, only yanked.".into());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_tags_then_publishes_in_order() {
        let order = ["core".to_string(), "pg".to_string()];
        let git = GitState {
            branch: "main".into(),
            dirty: false,
            tag_exists: vec![],
        };
        let p = plan("0.1.0", &order, Some(("0.1.0", false)), &git);
        let text = p.join("\n");
        assert!(!text.contains(" ! "), "no warnings expected: {text}");
        let tag = text.find("git tag -a v0.1.0").unwrap();
        let core = text.find("cargo publish --locked -p core").unwrap();
        let pg = text.find("cargo publish --locked -p pg").unwrap();
        assert!(tag < core && core < pg, "{text}");
    }

    #[test]
    fn plan_warns_about_dirty_tree_undated_changelog_and_existing_tag() {
        let git = GitState {
            branch: "release".into(),
            dirty: true,
            tag_exists: vec!["v0.1.0".into()],
        };
        let text = plan("0.1.0", &["core".into()], Some(("0.1.0", true)), &git).join("\n");
        for w in [
            "uncommitted changes",
            "not main",
            "v0.1.0 already exists",
            "is not dated",
        ] {
            assert!(text.contains(w), "missing warning `{w}` in:\n{text}");
        }
    }
}
