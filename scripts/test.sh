#!/usr/bin/env bash
# Runs every roomshard test on this machine: lints, the Rust test suites (including interop tests
# against real openssl, GNU tar/zstd, PostgreSQL 15 and @sigstore/verify), the WASM verifier on
# the golden vectors under Node, a short fuzz run and the benchmark smoke run.
#
# Needs the tools .ci/install.sh installs. Set FUZZ_SECONDS=0 to skip fuzzing locally. The fuzz
# run uses a fixed seed (FUZZ_SEED, default 1) so CI is reproducible; long exploratory runs are
# `fuzz/run.sh SECONDS TARGET` without it (docs/benchmarks.md records them).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (workspace, all targets, -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo deny check"
# advisories need github.com (RustSec DB), which this network cannot reach: see docs/dependencies.md
cargo deny --locked check bans licenses sources

step "cargo package (every crate meant for crates.io packages)"
# --no-verify: building the packaged crates would need them on crates.io already (they depend on
# each other); what this checks is that every manifest, readme, license and dependency version is
# publishable. The benches and interop tests are publish = false.
cargo package --workspace --exclude roomshard-benches --exclude roomshard-interop-tests \
  --no-verify --locked --quiet

step "cargo test (workspace)"
cargo test --workspace --locked

step "WASM verifier: build with the rustc 1.63 toolchain and run the vectors under Node"
bash wasm/build.sh
(cd wasm && cargo test --locked)
(cd tests/node && node --test)

if [ "$FUZZ_SECONDS" -gt 0 ]; then
  step "fuzz verify_archive for ${FUZZ_SECONDS}s (seed ${FUZZ_SEED:-1})"
  FUZZ_SEED="${FUZZ_SEED:-1}" bash fuzz/run.sh "$FUZZ_SECONDS"
fi

step "benchmark smoke (--quick)"
cargo run --release --locked -p roomshard-benches -- verify --quick
cargo run --release --locked -p roomshard-benches -- flows --quick --runs 1

step "all tests passed"
