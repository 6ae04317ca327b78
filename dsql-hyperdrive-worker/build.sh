#!/usr/bin/env bash
# Builds the Worker (build/index.js + wasm) with worker-build, offline-friendly: worker-build would
# download wasm-bindgen and binaryen from GitHub, so it is pointed at wasm-bindgen-cli installed
# from crates.io (WASM_BINDGEN_BIN) and wasm-opt is off (Cargo.toml metadata).
# Needs: worker-build 0.8.7 and wasm-bindgen-cli at the version of the wasm-bindgen crate in
# Cargo.lock (cargo install), the wasm32-unknown-unknown target, and `npm ci` here (esbuild).
set -euo pipefail
cd "$(dirname "$0")"

fail() { echo "dsql-hyperdrive-worker build: $*" >&2; exit 1; }

lock=../Cargo.lock
want=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' "$lock")
[ -n "$want" ] || fail "cannot find the wasm-bindgen version in $lock"

bindgen=${WASM_BINDGEN_BIN:-$(command -v wasm-bindgen || true)}
[ -n "$bindgen" ] || fail "wasm-bindgen is missing: cargo install wasm-bindgen-cli --version $want"
have=$("$bindgen" --version | awk '{ print $2 }')
[ "$have" = "$want" ] || fail "wasm-bindgen $have does not match the wasm-bindgen crate $want: cargo install --force wasm-bindgen-cli --version $want"

command -v worker-build >/dev/null || fail "worker-build is missing: cargo install worker-build --version 0.8.7"
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
  || fail "the wasm32 target is missing: rustup target add wasm32-unknown-unknown"
[ -x node_modules/.bin/esbuild ] || fail "esbuild is missing: run npm ci in $(pwd)"

export WASM_BINDGEN_BIN=$bindgen
# The esbuild that npm installed, rather than one worker-build would download.
export ESBUILD_BIN="$(pwd)/node_modules/.bin/esbuild"
# Small and fast to start: Workers bill CPU time and limit the compressed size.
export CARGO_PROFILE_RELEASE_OPT_LEVEL=${CARGO_PROFILE_RELEASE_OPT_LEVEL:-s}
export CARGO_PROFILE_RELEASE_LTO=${CARGO_PROFILE_RELEASE_LTO:-true}
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=${CARGO_PROFILE_RELEASE_CODEGEN_UNITS:-1}
exec worker-build --release "$@"
