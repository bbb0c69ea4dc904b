#!/usr/bin/env bash
# Usage: fuzz/run.sh SECONDS [TARGET]   (default target verify_archive; CI runs ~60 s)
# Targets: verify_archive, parse_manifest, copy_codec, import_archive (builds the flows: feature
# `import`).
# Seeds the corpus from conformance/vectors and fuzzes with cargo-fuzz on nightly. Exits non-zero
# on a crash; the reproducer lands in fuzz/artifacts/TARGET/. FUZZ_SEED=N fixes libFuzzer's
# random seed (scripts/test.sh does, so a CI run explores the same inputs each time and a
# failure there is a regression, not luck); unset, every run explores new ones.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
seconds="${1:-60}"
target="${2:-verify_archive}"
export PATH="$HOME/.cargo/bin:$PATH"
"$here/seed-corpus.sh"
cd "$here"
# The verifier forbids unsafe code, so AddressSanitizer buys little here and costs ~2x;
# FUZZ_SANITIZER=address brings it back. Debug assertions (overflow checks) stay on.
features=()
[ "$target" = import_archive ] && features=(--features import)
seed=()
[ -n "${FUZZ_SEED:-}" ] && seed=(-seed="$FUZZ_SEED")
cargo +nightly fuzz run --sanitizer "${FUZZ_SANITIZER:-none}" "${features[@]}" "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 "${seed[@]}"
