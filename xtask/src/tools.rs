//! Cargo subcommands the release checks use, pinned, installed from crates.io only when missing.

use crate::util::{Result, cargo, step};
use std::process::{Command, Stdio};

/// A cargo subcommand from crates.io (`cargo <sub>` runs `cargo-<sub>`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tool {
    pub(crate) krate: &'static str,
    pub(crate) sub: &'static str,
    /// Pinned so every machine checks the same way. `.ci/run` installs cargo-hack at the same version.
    pub(crate) version: &'static str,
}

pub(crate) const CARGO_HACK: Tool = Tool {
    krate: "cargo-hack",
    sub: "hack",
    version: "0.6.46",
};
pub(crate) const CARGO_DENY: Tool = Tool {
    krate: "cargo-deny",
    sub: "deny",
    version: "0.20.2",
};
pub(crate) const CARGO_SEMVER_CHECKS: Tool = Tool {
    krate: "cargo-semver-checks",
    sub: "semver-checks",
    version: "0.51.0",
};

impl Tool {
    fn installed(&self) -> bool {
        cargo()
            .args([self.sub, "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Makes sure `cargo <sub>` runs, installing the pinned version with `cargo install --locked`
    /// (several minutes for the larger ones on 2 cores) if it is missing.
    pub(crate) fn ensure(&self) -> Result {
        if self.installed() {
            return Ok(());
        }
        step(
            &format!("installing {}@{} (missing)", self.krate, self.version),
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())).args([
                "install",
                "--locked",
                &format!("{}@{}", self.krate, self.version),
            ]),
        )
        .map_err(|e| {
            format!(
                "{e}: install it by hand with `cargo install --locked {}@{}`",
                self.krate, self.version
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_script_installs_the_pinned_cargo_hack() {
        let script = std::fs::read_to_string(crate::util::root().join(".ci/run")).unwrap();
        let pin = format!("{}@{}", CARGO_HACK.krate, CARGO_HACK.version);
        assert!(
            script.contains(&pin),
            ".ci/run must install {pin}, the version xtask pins"
        );
    }
}
