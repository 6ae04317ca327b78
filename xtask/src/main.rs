//! Project automation, in Rust so it runs wherever cargo does.
//!
//! - `cargo xtask ci`: the one test command (fmt, clippy, the core alone and for wasm32, all tests).
//! - `cargo xtask worker`: the Cloudflare Worker's steps of `ci` alone (wasm32 lints, e2e in workerd).
//! - `cargo xtask demo`: starts dsql-local and runs every example through it.
//! - `cargo xtask bench`: criterion benches beside their anchors; writes BENCHMARKS.md.
//! - `cargo xtask release-check [--baseline <rev>]`: everything a crates.io release needs.
//! - `cargo xtask release`: a dry run printing the tag and publish commands, in order.

mod bench;
mod ci;
mod demo;
mod package;
mod public_types;
mod release;
mod release_check;
mod tools;
mod util;
mod worker;
mod workspace;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <ci | worker | demo | bench [--quick] | release-check [--baseline <rev>] [--only <steps>] | release>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(&args[1..]),
        Some("worker") => worker::run(&args[1..]),
        Some("demo") => demo::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("release-check") => release_check::run(&args[1..]),
        Some("release") => release::run(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
