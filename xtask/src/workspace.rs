//! The workspace as `cargo metadata` describes it: members, what gets published, and in which order.

use crate::util::{Result, cargo, output};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// One workspace member.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) rust_version: Option<String>,
    /// `publish = false` in its manifest.
    pub(crate) publishable: bool,
    pub(crate) has_lib: bool,
    pub(crate) dir: PathBuf,
    pub(crate) deps: Vec<Dep>,
    /// `[package.metadata.docs.rs]`, if any.
    pub(crate) docs_rs: Option<Value>,
}

#[derive(Debug, Clone)]
pub(crate) struct Dep {
    pub(crate) name: String,
    /// The version requirement; `*` when the manifest gives none (a path-only dependency).
    pub(crate) req: String,
    pub(crate) kind: DepKind,
    pub(crate) path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DepKind {
    Normal,
    Dev,
    Build,
}

#[derive(Debug)]
pub(crate) struct Workspace {
    pub(crate) target_dir: PathBuf,
    pub(crate) members: Vec<Member>,
    /// Every package the publishable crates pull in through normal and build dependencies (what
    /// users compile; dev-dependencies left out): name, version, declared `rust-version`.
    pub(crate) shipped_packages: Vec<(String, String, Option<String>)>,
}

impl Workspace {
    /// Reads the workspace with `cargo metadata` (resolving dependencies from the lock file).
    pub(crate) fn load() -> Result<Self> {
        let json = output(cargo().args(["metadata", "--format-version", "1", "--locked"]))?;
        Self::from_metadata(&json)
    }

    pub(crate) fn from_metadata(json: &str) -> Result<Self> {
        let v: Value =
            serde_json::from_str(json).map_err(|e| format!("cargo metadata: bad JSON: {e}"))?;
        let s = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
        let members_ids: BTreeSet<&str> = v["workspace_members"]
            .as_array()
            .ok_or("cargo metadata: no workspace_members")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let packages = v["packages"]
            .as_array()
            .ok_or("cargo metadata: no packages")?;
        let mut members = Vec::new();
        let mut publishable_ids = Vec::new();
        for p in packages {
            if !members_ids.contains(p["id"].as_str().unwrap_or_default()) {
                continue;
            }
            let manifest = PathBuf::from(s(p, "manifest_path"));
            let deps = p["dependencies"]
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|d| Dep {
                    name: s(d, "name"),
                    req: s(d, "req"),
                    kind: match d["kind"].as_str() {
                        Some("dev") => DepKind::Dev,
                        Some("build") => DepKind::Build,
                        _ => DepKind::Normal,
                    },
                    path: d["path"].as_str().map(PathBuf::from),
                })
                .collect();
            if !matches!(&p["publish"], Value::Array(a) if a.is_empty()) {
                publishable_ids.push(s(p, "id"));
            }
            members.push(Member {
                name: s(p, "name"),
                version: s(p, "version"),
                rust_version: p["rust_version"].as_str().map(str::to_string),
                // `publish: []` is cargo's spelling of `publish = false`
                publishable: !matches!(&p["publish"], Value::Array(a) if a.is_empty()),
                has_lib: p["targets"].as_array().is_some_and(|ts| {
                    ts.iter().any(|t| {
                        t["kind"]
                            .as_array()
                            .is_some_and(|k| k.iter().any(|k| k == "lib"))
                    })
                }),
                dir: manifest.parent().map(PathBuf::from).unwrap_or_default(),
                deps,
                docs_rs: p["metadata"]["docs"]["rs"]
                    .as_object()
                    .map(|o| Value::Object(o.clone())),
            });
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        // Walk the resolved graph from the publishable crates along normal and build edges.
        let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for node in v["resolve"]["nodes"].as_array().into_iter().flatten() {
            let shipped = node["deps"].as_array().into_iter().flatten().filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|k| k["kind"].as_str() != Some("dev"))
            });
            edges.insert(
                node["id"].as_str().unwrap_or_default(),
                shipped.filter_map(|d| d["pkg"].as_str()).collect(),
            );
        }
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut todo: Vec<&str> = publishable_ids.iter().map(String::as_str).collect();
        while let Some(id) = todo.pop() {
            if seen.insert(id) {
                todo.extend(edges.get(id).into_iter().flatten().copied());
            }
        }
        let shipped_packages = packages
            .iter()
            .filter(|p| seen.contains(p["id"].as_str().unwrap_or_default()))
            .filter(|p| !members_ids.contains(p["id"].as_str().unwrap_or_default()))
            .map(|p| {
                (
                    s(p, "name"),
                    s(p, "version"),
                    p["rust_version"].as_str().map(str::to_string),
                )
            })
            .collect();
        Ok(Workspace {
            target_dir: PathBuf::from(s(&v, "target_directory")),
            members,
            shipped_packages,
        })
    }

    pub(crate) fn publishable(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.publishable)
    }

    /// Published crates with a library target: the ones users depend on.
    pub(crate) fn libraries(&self) -> impl Iterator<Item = &Member> {
        self.publishable().filter(|m| m.has_lib)
    }

    /// The publishable crates in an order where each comes after every workspace crate it depends
    /// on (dev-dependencies included: crates.io needs those published first too).
    pub(crate) fn publish_order(&self) -> Result<Vec<String>> {
        let names: BTreeSet<&str> = self.publishable().map(|m| m.name.as_str()).collect();
        let mut pending: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for m in self.publishable() {
            let wanted = m
                .deps
                .iter()
                .map(|d| d.name.as_str())
                .filter(|d| names.contains(d) && *d != m.name)
                .collect();
            pending.insert(&m.name, wanted);
        }
        let mut order = Vec::new();
        while !pending.is_empty() {
            // alphabetical among the ready ones, so the order is stable
            let ready: Vec<&str> = pending
                .iter()
                .filter(|(_, deps)| deps.is_empty())
                .map(|(n, _)| *n)
                .collect();
            if ready.is_empty() {
                return Err(format!(
                    "workspace crates depend on each other in a cycle, so none can be published first: {}",
                    pending.keys().copied().collect::<Vec<_>>().join(", ")
                ));
            }
            for n in ready {
                pending.remove(n);
                for deps in pending.values_mut() {
                    deps.remove(n);
                }
                order.push(n.to_string());
            }
        }
        Ok(order)
    }

    pub(crate) fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn pkg(name: &str, publish: Value, deps: &[(&str, &str, &str)]) -> Value {
        serde_json::json!({
            "name": name, "version": "0.1.0", "id": format!("path+file:///w/{name}#0.1.0"),
            "manifest_path": format!("/w/{name}/Cargo.toml"), "publish": publish,
            "rust_version": "1.94.1", "features": {"default": [], "x": []}, "metadata": null,
            "targets": [{"kind": ["lib"]}],
            "dependencies": deps.iter().map(|(n, req, kind)| serde_json::json!({
                "name": n, "req": req, "kind": if kind.is_empty() { Value::Null } else { (*kind).into() },
                "path": format!("/w/{n}")
            })).collect::<Vec<_>>(),
        })
    }

    pub(crate) fn ws(packages: Vec<Value>) -> Workspace {
        let ids: Vec<Value> = packages.iter().map(|p| p["id"].clone()).collect();
        let json = serde_json::json!({
            "packages": packages, "workspace_members": ids,
            "workspace_root": "/w", "target_directory": "/w/target",
        });
        Workspace::from_metadata(&json.to_string()).unwrap()
    }

    #[test]
    fn publish_order_puts_dependencies_first_and_skips_unpublished() {
        let w = ws(vec![
            pkg(
                "cli",
                Value::Null,
                &[("local", "^0.1.0", ""), ("core", "^0.1.0", "")],
            ),
            pkg("local", Value::Null, &[("core", "^0.1.0", "dev")]),
            pkg(
                "pg",
                Value::Null,
                &[("core", "^0.1.0", ""), ("local", "^0.1.0", "dev")],
            ),
            pkg("core", Value::Null, &[]),
            pkg("xtask", serde_json::json!([]), &[("cli", "*", "")]),
        ]);
        assert_eq!(w.publish_order().unwrap(), ["core", "local", "cli", "pg"]);
        assert!(!w.member("xtask").unwrap().publishable);
    }

    #[test]
    fn shipped_packages_leave_out_dev_dependencies() {
        let dep = |name: &str, rv: &str| serde_json::json!({"name": name, "version": "1.0.0", "id": name, "rust_version": rv});
        let core = pkg("core", Value::Null, &[]);
        let json = serde_json::json!({
            "packages": [core, dep("a", "1.90"), dep("b", "1.99"), dep("c", "1.80")],
            "workspace_members": ["path+file:///w/core#0.1.0"],
            "target_directory": "/w/target",
            "resolve": {"nodes": [
                {"id": "path+file:///w/core#0.1.0", "deps": [
                    {"pkg": "a", "dep_kinds": [{"kind": null}]},
                    {"pkg": "b", "dep_kinds": [{"kind": "dev"}]},
                ]},
                {"id": "a", "deps": [{"pkg": "c", "dep_kinds": [{"kind": "build"}]}]},
            ]},
        });
        let w = Workspace::from_metadata(&json.to_string()).unwrap();
        let names: Vec<&str> = w.shipped_packages.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[test]
    fn publish_order_reports_a_cycle() {
        let w = ws(vec![
            pkg("a", Value::Null, &[("b", "^0.1.0", "")]),
            pkg("b", Value::Null, &[("a", "^0.1.0", "dev")]),
        ]);
        let e = w.publish_order().unwrap_err();
        assert!(e.contains("cycle") && e.contains("a, b"), "{e}");
    }
}
