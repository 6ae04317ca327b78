//! `cargo xtask bench`: runs every criterion bench (each measures our code beside its anchor in the
//! same run), runs the gateway's pgbench comparison, and writes BENCHMARKS.md from the medians.
//!
//! Convention: in a criterion group, the bench id `anchor` is what we compare against; every other
//! id is ours, reported with its median and its ratio to the anchor's median.

use crate::util::{Result, cargo, output, root, step};
use std::fmt::Write as _;
use std::path::Path;

/// (package, bench target): the benches that make up BENCHMARKS.md.
const BENCHES: &[(&str, &str)] = &[
    ("dsql-auth-core", "token"),
    ("dsql-tokio-postgres", "connect"),
    ("dsql-bb8", "pool"),
    ("dsql-diesel", "pool"),
    ("dsql-sqlx-bench", "sqlx_vs_aws"),
];

pub(crate) fn run(args: &[String]) -> Result {
    let quick = match args {
        [] => false,
        [a] if a == "--quick" => true,
        [a, ..] => {
            return Err(format!(
                "unknown argument to `xtask bench`: {a} (only --quick)"
            ));
        }
    };
    let criterion_dir = root().join("target").join("criterion");
    let _ = std::fs::remove_dir_all(&criterion_dir);
    for (package, bench) in BENCHES {
        let mut cmd = cargo();
        cmd.args(["bench", "-p", package, "--bench", bench, "--"]);
        if quick {
            cmd.args(["--warm-up-time", "1", "--measurement-time", "2"]);
        }
        step(&format!("bench {package}/{bench}"), &mut cmd)?;
    }
    let mut pgbench_lines = Vec::new();
    for workload in ["select", "update"] {
        println!("\n==> pgbench ({workload}): through the gateway vs. direct to PostgreSQL");
        let out = output(cargo().args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "dsql-local",
            "--example",
            "pgbench_gateway",
            "--",
            "--workload",
            workload,
        ]))?;
        let line = out
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .unwrap_or("")
            .to_owned();
        println!("    {line}");
        pgbench_lines.push(line);
    }

    let report = render(&criterion_dir, &pgbench_lines, quick)?;
    std::fs::write(root().join("BENCHMARKS.md"), &report)
        .map_err(|e| format!("writing BENCHMARKS.md: {e}"))?;
    println!("\n{report}");
    Ok(())
}

/// What a goal compares: our median against a fixed bound, or against the anchor's median.
#[derive(Clone, Copy)]
enum Check {
    MedianBelowNs(f64),
    RatioAtMost(f64),
}

struct Goal {
    group: &'static str,
    id: &'static str,
    what: &'static str,
    goal: &'static str,
    check: Check,
}

const GOALS: &[Goal] = &[
    Goal {
        group: "token_fresh",
        id: "dsql-rs",
        what: "sign a new token (cached per-day signing key) vs aws-sdk-dsql's AuthTokenGenerator",
        goal: "at least 3x faster (target 6x)",
        check: Check::RatioAtMost(1.0 / 3.0),
    },
    Goal {
        group: "token_fresh",
        id: "dsql-rs",
        what: "sign a new token, absolute",
        goal: "under 2 µs (target 1 µs)",
        check: Check::MedianBelowNs(2_000.0),
    },
    Goal {
        group: "token_cached",
        id: "dsql-rs",
        what: "TokenProvider cache hit, system clock read included",
        goal: "under 100 ns (target 50 ns)",
        check: Check::MedianBelowNs(100.0),
    },
    Goal {
        group: "connect",
        id: "dsql-rs",
        what: "new TLS connection through dsql-local vs plain tokio-postgres with a pre-signed token",
        goal: "ours/anchor at most 1.02",
        check: Check::RatioAtMost(1.02),
    },
    Goal {
        group: "pool_query",
        id: "dsql-rs",
        what: "100 x SELECT 1 over 4 tasks through dsql-bb8 vs bb8-postgres with a fixed config",
        goal: "throughput at least 0.98 of the anchor (time ratio at most 1.0204)",
        check: Check::RatioAtMost(1.0 / 0.98),
    },
    Goal {
        group: "diesel_pool_query",
        id: "dsql-rs",
        what: "SELECT 1 over 4 tasks through dsql-diesel's bb8 pool vs diesel-async's bb8 pool with a pre-signed password",
        goal: "throughput at least 0.98 of the anchor (time ratio at most 1.0204)",
        check: Check::RatioAtMost(1.0 / 0.98),
    },
    Goal {
        group: "sqlx_pool_query",
        id: "dsql-rs",
        what: "SELECT 1 over 4 tasks through dsql-sqlx's pool vs aurora-dsql-sqlx-connector's pool",
        goal: "throughput at least 0.98 of the anchor (time ratio at most 1.0204)",
        check: Check::RatioAtMost(1.0 / 0.98),
    },
    Goal {
        group: "sqlx_new_connection",
        id: "dsql-rs",
        what: "new connection through dsql-sqlx vs aurora-dsql-sqlx-connector",
        goal: "ours/anchor at most 1.02",
        check: Check::RatioAtMost(1.02),
    },
];

struct Measured {
    group: String,
    id: String,
    median_ns: f64,
}

fn render(criterion_dir: &Path, pgbench_lines: &[String], quick: bool) -> Result<String> {
    let measured = read_estimates(criterion_dir)?;
    let mut out = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Produced by `cargo xtask bench{}` on {cores} cores ({cpu}). Each group runs our code and its anchor \
         in the same run; the machines are shared and noisy, so read the ratios and medians, not single numbers.\n",
        if quick { " --quick" } else { "" }
    );
    let _ = writeln!(
        out,
        "| group | bench | median | anchor median | ours / anchor (time) | anchor / ours (speed-up) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let mut groups: Vec<&str> = measured.iter().map(|m| m.group.as_str()).collect();
    groups.dedup();
    for group in groups {
        let anchor = measured
            .iter()
            .find(|m| m.group == group && m.id == "anchor");
        for m in measured
            .iter()
            .filter(|m| m.group == group && m.id != "anchor")
        {
            let (a, r, s) = match anchor {
                Some(a) => (
                    human(a.median_ns),
                    format!("{:.3}", m.median_ns / a.median_ns),
                    format!("{:.2}x", a.median_ns / m.median_ns),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            let _ = writeln!(
                out,
                "| {group} | {} | {} | {a} | {r} | {s} |",
                m.id,
                human(m.median_ns)
            );
        }
    }
    let _ = writeln!(
        out,
        "\n## Goals (from the issues), checked against this run\n"
    );
    let _ = writeln!(out, "| bench | what it measures | goal | this run |");
    let _ = writeln!(out, "|---|---|---|---|");
    for goal in GOALS {
        let ours = measured
            .iter()
            .find(|m| m.group == goal.group && m.id == goal.id);
        let anchor = measured
            .iter()
            .find(|m| m.group == goal.group && m.id == "anchor");
        let verdict = match (ours, goal.check) {
            (Some(o), Check::MedianBelowNs(limit)) => {
                format!(
                    "{} ({})",
                    if o.median_ns < limit { "met" } else { "MISSED" },
                    human(o.median_ns)
                )
            }
            (Some(o), Check::RatioAtMost(limit)) => match anchor {
                Some(a) => {
                    let r = o.median_ns / a.median_ns;
                    format!(
                        "{} (ours/anchor {r:.3})",
                        if r <= limit { "met" } else { "MISSED" }
                    )
                }
                None => "no anchor measured".into(),
            },
            (None, _) => "not measured".into(),
        };
        let _ = writeln!(
            out,
            "| {}/{} | {} | {} | {verdict} |",
            goal.group, goal.id, goal.what, goal.goal
        );
    }
    let _ = writeln!(
        out,
        "\n## Gateway cost (pgbench, same run, same client count)\n"
    );
    for line in pgbench_lines {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => {
                let tps = |k: &str| v[k].as_f64().unwrap_or(0.0);
                let _ = writeln!(
                    out,
                    "\n**Workload `{}`** (`cargo run --release -p dsql-local --example pgbench_gateway -- \
                 --workload {}`; select: pgbench -S; update: one autocommit UPDATE per transaction, \
                 which the gateway wraps in its row-limit guards): {} clients, {} jobs, \
                 {} s per run, {} rounds in alternation; medians: direct {:.0} tps (plain TCP), \
                 direct {:.0} tps (PostgreSQL's own `ssl=on`), through dsql-local's TLS gateway with \
                 DSQL's SQL rules on {:.0} tps. Ratio gateway/direct TLS **{:.3}** (like with like; \
                 {}per round {}), gateway/direct plain {:.3}.",
                    v["workload"].as_str().unwrap_or("select"),
                    v["workload"].as_str().unwrap_or("select"),
                    v["clients"],
                    v["jobs"],
                    v["seconds"],
                    v["rounds"],
                    tps("direct_tps"),
                    tps("direct_tls_tps"),
                    tps("gateway_tps"),
                    tps("ratio_tls"),
                    if v["workload"] == "update" {
                        ""
                    } else {
                        "goal at least 0.8; "
                    },
                    v["ratios_tls"],
                    tps("ratio")
                );
                let _ = match v["pgbouncer_tps"].as_f64() {
                    Some(p) => writeln!(
                        out,
                        "\nFor scale, pgbouncer (C, session pooling, TLS to clients, the same unix socket to \
                     PostgreSQL, no look at the SQL) in the same rounds: {p:.0} tps, {:.3} of direct \
                     TLS; dsql-local's gateway / pgbouncer **{:.3}**. Every relay pays two more \
                     wake-ups and four more system calls per round trip than a direct connection.",
                        p / tps("direct_tls_tps"),
                        tps("ratio_pgbouncer")
                    ),
                    None => writeln!(
                        out,
                        "\npgbouncer was not installed (apt-get install pgbouncer): no relay reference this run."
                    ),
                };
            }
            Err(_) => {
                let _ = writeln!(out, "pgbench_gateway printed no result line.");
            }
        }
    }
    Ok(out)
}

fn human(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.1} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else if ns < 1_000_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else {
        format!("{:.2} s", ns / 1_000_000_000.0)
    }
}

/// Reads `<group>/<id>/new/estimates.json` (criterion's medians) for every bench that ran.
fn read_estimates(dir: &Path) -> Result<Vec<Measured>> {
    let mut found = Vec::new();
    let groups = std::fs::read_dir(dir)
        .map_err(|e| format!("no criterion results in {}: {e}", dir.display()))?;
    let mut groups: Vec<_> = groups
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    groups.sort();
    for g in groups {
        let group = g
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if group == "report" {
            continue;
        }
        let mut ids: Vec<_> = std::fs::read_dir(&g)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        ids.sort();
        for idp in ids {
            let est = idp.join("new").join("estimates.json");
            let Ok(text) = std::fs::read_to_string(&est) else {
                continue;
            };
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", est.display()))?;
            let Some(median_ns) = v["median"]["point_estimate"].as_f64() else {
                continue;
            };
            let id = idp
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            found.push(Measured {
                group: group.clone(),
                id,
                median_ns,
            });
        }
    }
    if found.is_empty() {
        return Err(format!("no criterion estimates under {}", dir.display()));
    }
    Ok(found)
}
