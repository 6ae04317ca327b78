//! Benchmarks only: see `benches/`. This crate is a workspace member but not a default member,
//! so that `cargo build` and CI do not compile the anchor (aws-sdk-dsql, ring).
