#!/usr/bin/env bash
# Install the toolchains CI needs on a fresh Debian 12 machine (root, registries-only network).
# Idempotent: every step is skipped when its tool is already present at the right version.
# Measured on a 2-core machine: apt ~25 s, wasm-bindgen-cli ~2.3 min, cargo-deny 0.20.2 ~2.8 min, cargo-fuzz ~0.5 min (~6 min total).
set -euo pipefail

# rustup's cargo/rustc (~/.cargo/bin) must stay first on PATH; Debian's land in /usr/bin.
export PATH="$HOME/.cargo/bin:$PATH"
export DEBIAN_FRONTEND=noninteractive

WASM_BINDGEN_VERSION=0.2.105   # must equal the wasm-bindgen crate version in the wasm lockfile

apt_updated=0
apt_install() {   # apt_install PKG... — runs apt-get update once, then installs
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  apt-get install -y -qq "$@"
}

# Debian rustc 1.63 + wasm32 std (the only way to build wasm32 here), clang/llvm for C deps, zstd CLI,
# Chromium for the browser tests (never `npx playwright install`: it downloads).
missing=()
[ -x /usr/bin/rustc ] || missing+=(rustc)
[ -d /usr/lib/rustlib/wasm32-unknown-unknown ] || missing+=(libstd-rust-dev-wasm32)
[ -x /usr/bin/cargo ] || missing+=(cargo)
command -v clang-14 >/dev/null || missing+=(clang-14)
command -v llvm-ar-14 >/dev/null || missing+=(llvm-14)
command -v zstd >/dev/null || missing+=(zstd)
[ -x /usr/bin/chromium ] || missing+=(chromium)   # headless browser tests (Mesh-Lite, playwright-core)
if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi

# PostgreSQL client tools (initdb/pg_ctl/postgres normally live in /usr/local/bin already).
command -v psql >/dev/null || apt_install postgresql-client

# Cargo-installed tools (built with rustup's cargo).
if ! wasm-bindgen --version 2>/dev/null | grep -qF " $WASM_BINDGEN_VERSION"; then
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --locked
fi
cargo deny --version 2>/dev/null | grep -qF " 0.20.2" || cargo install cargo-deny --version 0.20.2 --locked
cargo fuzz --version 2>/dev/null | grep -qF " 0.13.2" || cargo install cargo-fuzz --version 0.13.2 --locked

# Node test dependencies (e.g. @sigstore/verify for interop tests), if the directory exists.
node_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/node"
if [ -f "$node_dir/package.json" ]; then
  if [ -f "$node_dir/package-lock.json" ]; then (cd "$node_dir" && npm ci --no-audit --no-fund)
  else (cd "$node_dir" && npm install --no-audit --no-fund); fi
fi

# Sanity: rustup's cargo must still win on PATH.
cargo --version
