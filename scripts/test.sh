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

# Each step's banner shows the free space, so a run that runs out of disk says where.
step() { printf '\n==> %s   [%s free]\n' "$*" "$(df -h --output=avail . | tail -1 | tr -d ' ')"; }
# ROOMSHARD_FREE_DISK=1 (set by .ci/run): delete each build once its step is done — the later
# steps build elsewhere (wasm/target, fuzz/target, target/release) — so peak disk is one build,
# not the sum. Off by default: locally the builds are the cache of the next run.
free_build() {
  if [ "${ROOMSHARD_FREE_DISK:-0}" = 1 ]; then
    printf '    freeing %s (%s)\n' "$1" "$(du -sh "$1" 2>/dev/null | cut -f1)"
    rm -rf "$1"
  fi
}

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
# publishable. The benches, interop tests and the example API are publish = false.
cargo package --workspace --exclude roomshard-benches --exclude roomshard-interop-tests \
  --exclude roomshard-example-mesh-api \
  --no-verify --locked --quiet

step "cargo test (workspace)"
cargo test --workspace --locked

step "the flow tests again, on PostgreSQL (ROOMSHARD_TEST_BACKEND=postgres)"
# The same tests, written once: every home's control plane and shards in a database of its own
# on one PostgreSQL 15 cluster per test binary. The CLI tests that are about SQLite itself (raw
# edits of the global file, sqlite:// URLs, an adopted database file) run on SQLite only.
ROOMSHARD_TEST_BACKEND=postgres cargo test --locked -p roomshard \
  --test lifecycle --test export_import --test roundtrip_prop --test router
ROOMSHARD_TEST_BACKEND=postgres cargo test --locked -p roomshard-cli --test flows -- \
  --skip audit_verify_detects_a_truncated_tail_by_receipt_anchors_and_expect_head \
  --skip provider_urls_place_a_home_and_bad_ones_are_refused_without_secrets \
  --skip decentralise_adopts_a_customers_own_database_and_recentralise_leaves_it
ROOMSHARD_TEST_BACKEND=postgres cargo test --locked -p roomshard-cli --test lite
free_build target/debug

step "WASM verifier: build with the rustc 1.63 toolchain and run the vectors under Node"
bash wasm/build.sh
(cd wasm && cargo test --locked)
(cd tests/node && node --test)
free_build wasm/target

if [ "$FUZZ_SECONDS" -gt 0 ]; then
  step "fuzz verify_archive for ${FUZZ_SECONDS}s (seed ${FUZZ_SEED:-1})"
  FUZZ_SEED="${FUZZ_SEED:-1}" bash fuzz/run.sh "$FUZZ_SECONDS"
  free_build fuzz/target
fi

step "benchmark smoke (--quick)"
cargo run --release --locked -p roomshard-benches -- verify --quick
cargo run --release --locked -p roomshard-benches -- flows --quick --runs 1
cargo run --release --locked -p roomshard-benches -- flows --quick --runs 1 --postgres
cargo run --release --locked -p roomshard-benches -- postgres --quick

step "all tests passed"
