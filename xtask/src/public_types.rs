//! Which other crates' types each library crate's public API shows, against an allow-list per
//! crate (`xtask/external-types.toml`, in the spirit of smithy-rs's cargo-check-external-types).
//!
//! The API is read from rustdoc's JSON output. That output is unstable, so cargo-check-external-types
//! needs one particular nightly; like cargo-semver-checks, we ask this stable rustdoc for it with
//! `RUSTC_BOOTSTRAP=1` and read only the few parts of the format we need: every item of the crate
//! (private ones are not in the output), every type path inside it, and which crate each path's
//! item belongs to.

use crate::util::{Result, cargo, root, step};
use crate::workspace::Workspace;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

const ALLOW_LIST: &str = "xtask/external-types.toml";

/// Crates anyone's API may show.
const ALWAYS: &[&str] = &["std", "core", "alloc"];

/// One external type shown by the public API, and where.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Exposure {
    /// `crate::path::Name` of the external item.
    pub(crate) path: String,
    pub(crate) krate: String,
    /// `file:line` of the public item that shows it.
    pub(crate) at: String,
}

/// Every external (non-std) item referenced from the public items of the crate in `doc`
/// (rustdoc's JSON for one crate).
pub(crate) fn exposures(doc: &Value) -> Result<Vec<Exposure>> {
    let index = doc["index"].as_object().ok_or("rustdoc JSON: no `index`")?;
    let paths = doc["paths"].as_object().ok_or("rustdoc JSON: no `paths`")?;
    let crates = doc["external_crates"]
        .as_object()
        .ok_or("rustdoc JSON: no `external_crates`")?;
    let local = |item: &Value| item["crate_id"].as_u64() == Some(0);

    // Impls rustdoc adds on its own (auto traits, blanket impls such as `impl<T> From<T> for T`)
    // are not API the crate chose; neither are their items.
    let mut skip: BTreeSet<String> = BTreeSet::new();
    for (id, item) in index {
        let imp = &item["inner"]["impl"];
        if imp.is_object()
            && (imp["is_synthetic"].as_bool() == Some(true) || !imp["blanket_impl"].is_null())
        {
            skip.insert(id.clone());
            for child in imp["items"].as_array().into_iter().flatten() {
                skip.insert(id_key(child));
            }
        }
    }

    let mut found = BTreeSet::new();
    for (id, item) in index {
        if !local(item) || skip.contains(id) {
            continue;
        }
        let at = format!(
            "{}:{}",
            item["span"]["filename"].as_str().unwrap_or("?"),
            item["span"]["begin"][0].as_u64().unwrap_or(0)
        );
        let mut refs = Vec::new();
        collect_refs(&item["inner"], &mut refs);
        for r in refs {
            let Some(summary) = paths.get(&r) else {
                continue; // an item rustdoc did not document (private, or hidden): not shown to users
            };
            let crate_id = summary["crate_id"].as_u64().unwrap_or(0);
            if crate_id == 0 {
                continue;
            }
            let krate = crates
                .get(&crate_id.to_string())
                .and_then(|c| c["name"].as_str())
                .unwrap_or("?")
                .to_string();
            if ALWAYS.contains(&krate.as_str()) {
                continue;
            }
            let path = summary["path"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("::")
                })
                .unwrap_or_default();
            found.insert(Exposure {
                path,
                krate,
                at: at.clone(),
            });
        }
    }
    Ok(found.into_iter().collect())
}

fn id_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Ids of the items a piece of an item's JSON refers to by path: type paths (`{"path", "id",
/// "args"}`), trait bounds, and re-exports (`{"source", "name", "id"}`). Doc links are not API.
fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let Some(id) = o.get("id")
                && !id.is_null()
                && (o.contains_key("path") || o.contains_key("source"))
            {
                out.push(id_key(id));
            }
            for (k, child) in o {
                if k != "links" && k != "docs" {
                    collect_refs(child, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| collect_refs(c, out)),
        _ => {}
    }
}

/// Is `e` allowed by `patterns` (`crate_name` or `crate_name::*` allows a whole crate,
/// `a::b::C` one item, `a::b::*` everything under `a::b`)?
pub(crate) fn allowed(e: &Exposure, patterns: &[String]) -> bool {
    patterns.iter().any(|p| {
        if let Some(prefix) = p.strip_suffix("::*") {
            e.path.starts_with(&format!("{prefix}::")) || (e.krate == prefix)
        } else {
            e.path == *p || e.krate == *p
        }
    })
}

/// Reads the allow-list: `[crate-name] allowed = ["other_crate::*", "a::b::Type"]`.
pub(crate) fn parse_allow_list(text: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let table: toml::Table = text.parse().map_err(|e| format!("{ALLOW_LIST}: {e}"))?;
    let mut out = BTreeMap::new();
    for (krate, entry) in table {
        let list = entry
            .get("allowed")
            .and_then(|a| a.as_array())
            .ok_or_else(|| format!("{ALLOW_LIST}: [{krate}] needs `allowed = [...]`"))?
            .iter()
            .map(|p| {
                p.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{ALLOW_LIST}: [{krate}]: entries are strings"))
            })
            .collect::<Result<Vec<_>>>()?;
        out.insert(krate, list);
    }
    Ok(out)
}

pub(crate) fn run(ws: &Workspace) -> Result {
    let text = std::fs::read_to_string(root().join(ALLOW_LIST))
        .map_err(|e| format!("cannot read {ALLOW_LIST}: {e}"))?;
    let allow = parse_allow_list(&text)?;
    let mut problems = Vec::new();
    // All features: the API a user can reach with any of them.
    let mut cmd = cargo();
    cmd.args(["doc", "--no-deps", "--lib", "--all-features", "--locked"]);
    for m in ws.libraries() {
        cmd.args(["-p", &m.name]);
    }
    cmd.env("RUSTDOCFLAGS", "-Z unstable-options --output-format json")
        .env("RUSTC_BOOTSTRAP", "1");
    step("rustdoc JSON of every library crate", &mut cmd)?;
    for m in ws.libraries() {
        let Some(patterns) = allow.get(&m.name) else {
            problems.push(format!(
                "{}: no entry in {ALLOW_LIST}: add `[{}]` with `allowed = [...]` naming the crates its API may show",
                m.name, m.name
            ));
            continue;
        };
        step(
            &format!("rustdoc JSON: {}", m.name),
            cargo()
                .args([
                    "rustdoc",
                    "-p",
                    &m.name,
                    "--lib",
                    "--all-features",
                    "--locked",
                    "--",
                ])
                .args(["-Z", "unstable-options", "--output-format", "json"])
                .env("RUSTC_BOOTSTRAP", "1"),
        )?;
        let json_path = ws
            .target_dir
            .join("doc")
            .join(format!("{}.json", m.name.replace('-', "_")));
        let text = std::fs::read_to_string(&json_path)
            .map_err(|e| format!("cannot read {}: {e}", json_path.display()))?;
        let doc: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json_path.display()))?;
        let found = exposures(&doc)?;
        let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &found {
            *shown.entry(e.krate.as_str()).or_default() += 1;
            if !allowed(e, patterns) {
                problems.push(format!(
                    "{}: public API shows `{}` (crate {}) at {}: keep it private, or add it to [{}] in {ALLOW_LIST}",
                    m.name, e.path, e.krate, e.at, m.name
                ));
            }
        }
        println!(
            "    {}: external crates shown: {}",
            m.name,
            if shown.is_empty() {
                "none".to_string()
            } else {
                shown
                    .iter()
                    .map(|(k, n)| format!("{k} ({n})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n  "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str, krate: &str) -> Exposure {
        Exposure {
            path: path.into(),
            krate: krate.into(),
            at: "src/lib.rs:1".into(),
        }
    }

    /// Runs the real rustdoc on a two-crate scratch workspace, so a change in rustdoc's JSON that
    /// the reader no longer understands fails here rather than passing silently.
    #[test]
    fn reads_external_types_from_real_rustdoc_json() {
        let dir = std::env::temp_dir().join(format!("xtask-public-types-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let write = |p: &str, s: &str| {
            let p = dir.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        write(
            "Cargo.toml",
            "[workspace]\nmembers = [\"ext\", \"api\"]\nresolver = \"3\"\n",
        );
        write(
            "ext/Cargo.toml",
            "[package]\nname = \"ext\"\nversion = \"0.1.0\"\nedition = \"2024\"\n",
        );
        write(
            "ext/src/lib.rs",
            "pub struct Shown;\npub struct Hidden;\npub trait Bound {}\npub struct Reexported;\n",
        );
        write(
            "api/Cargo.toml",
            "[package]\nname = \"api\"\nversion = \"0.1.0\"\nedition = \"2024\"\n[dependencies]\next = { path = \"../ext\" }\n",
        );
        write(
            "api/src/lib.rs",
            "//! See [ext::Hidden] (a doc link is not API).\n\
             pub use ext::Reexported;\n\
             #[derive(Debug, Clone)]\npub struct Mine;\n\
             pub fn shows(_: &ext::Shown) -> Mine { Mine }\n\
             pub fn bound<T: ext::Bound>(_: T) {}\n\
             fn private(_: ext::Hidden) {}\n\
             pub fn uses_private() { let _ = private; }\n",
        );
        let status =
            std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .current_dir(&dir)
                .args([
                    "rustdoc",
                    "-q",
                    "-p",
                    "api",
                    "--lib",
                    "--",
                    "-Z",
                    "unstable-options",
                    "--output-format",
                    "json",
                ])
                .env("RUSTC_BOOTSTRAP", "1")
                .env_remove("CARGO_TARGET_DIR")
                .status()
                .unwrap();
        assert!(status.success());
        let doc: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("target/doc/api.json")).unwrap(),
        )
        .unwrap();
        let found: Vec<String> = exposures(&doc)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found, ["ext::Bound", "ext::Reexported", "ext::Shown"]);
    }

    #[test]
    fn allow_patterns() {
        let p: Vec<String> = ["tokio_postgres::*", "rustls::ClientConfig", "bb8"]
            .map(String::from)
            .to_vec();
        assert!(allowed(&e("tokio_postgres::Client", "tokio_postgres"), &p));
        assert!(allowed(&e("rustls::ClientConfig", "rustls"), &p));
        assert!(!allowed(&e("rustls::ServerConfig", "rustls"), &p));
        assert!(allowed(&e("bb8::Pool", "bb8"), &p));
        assert!(!allowed(&e("tokio::time::Sleep", "tokio"), &p));
    }

    #[test]
    fn allow_list_parses_and_names_bad_entries() {
        let m = parse_allow_list("[a]\nallowed = [\"x::*\"]\n[b]\nallowed = []\n").unwrap();
        assert_eq!(m["a"], ["x::*"]);
        assert!(m["b"].is_empty());
        assert!(
            parse_allow_list("[a]\nother = 1\n")
                .unwrap_err()
                .contains("[a] needs `allowed")
        );
    }
}
