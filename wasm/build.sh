#!/usr/bin/env bash
# Builds the WASM verifier into wasm/pkg (wasm-bindgen --target web, for browsers) and
# wasm/pkg-node (--target nodejs, for tests/node). See docs/wasm.md.
#
# Two routes:
# - rustup has wasm32-unknown-unknown installed: the ordinary cargo build.
# - otherwise (this project's machines: `rustup target add` cannot download): Debian's rustc 1.63
#   with its wasm32 std (package libstd-rust-dev-wasm32) and cargo 1.65. Those are fed a lockfile
#   resolved for rust-version 1.63 and a vendored source tree, both made by rustup's cargo, because
#   the old cargo cannot read today's crates.io index or lockfile format.
#
# Environment: WASM_BINDGEN (default wasm-bindgen; must be 0.2.105, the crate's pinned version),
# DEBIAN_RUSTC (default /usr/bin/rustc), DEBIAN_CARGO (default /usr/bin/cargo),
# WASM_CC / WASM_AR (C toolchain for zstd-sys; default clang-14 / llvm-ar-14 when present).
set -euo pipefail

cd "$(dirname "$0")"
WASM_DIR=$PWD
TARGET=wasm32-unknown-unknown
CRATE=roomshard_verify_wasm
BINDGEN_VERSION=0.2.105
WASM_BINDGEN=${WASM_BINDGEN:-wasm-bindgen}
DEBIAN_RUSTC=${DEBIAN_RUSTC:-/usr/bin/rustc}
DEBIAN_CARGO=${DEBIAN_CARGO:-/usr/bin/cargo}

log() { printf '[wasm/build.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# pin NAME VERSION: make the lockfile hold NAME at VERSION if NAME is in the graph at all.
pin() {
    local locked
    locked=$(awk -v n="\"$1\"" '$1=="name" && $3==n {getline; gsub(/"/,"",$3); print $3}' Cargo.lock)
    if [ -n "$locked" ] && ! grep -qx "$2" <<<"$locked"; then
        log "pinning $1 $locked -> $2"
        cargo update -p "$1" --precise "$2"
    fi
}

command -v "$WASM_BINDGEN" >/dev/null ||
    die "$WASM_BINDGEN not found: cargo install wasm-bindgen-cli --version $BINDGEN_VERSION --locked"
have=$("$WASM_BINDGEN" --version | awk '{print $2}')
[ "$have" = "$BINDGEN_VERSION" ] ||
    die "wasm-bindgen CLI is $have but the crate pins $BINDGEN_VERSION (they must be equal)"

# C compiler for zstd-sys (the C zstd library compiled for wasm32). clang-14 matches the LLVM of
# Debian's rustc 1.63; a plain `clang` works for the rustup route.
if [ -z "${WASM_CC:-}" ]; then
    if command -v clang-14 >/dev/null; then WASM_CC=clang-14; else WASM_CC=clang; fi
fi
if [ -z "${WASM_AR:-}" ]; then
    if command -v llvm-ar-14 >/dev/null; then WASM_AR=llvm-ar-14; else WASM_AR=llvm-ar; fi
fi
export CC_wasm32_unknown_unknown="${CC_wasm32_unknown_unknown:-$WASM_CC}"
export AR_wasm32_unknown_unknown="${AR_wasm32_unknown_unknown:-$WASM_AR}"

start=$(date +%s)

if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -q "^$TARGET\$"; then
    log "rustup has $TARGET: ordinary build"
    cargo build --release --target "$TARGET" --locked
else
    log "rustup lacks $TARGET: Debian rustc route ($DEBIAN_RUSTC)"
    [ -x "$DEBIAN_RUSTC" ] || die "$DEBIAN_RUSTC missing: apt-get install rustc cargo libstd-rust-dev-wasm32"
    [ -x "$DEBIAN_CARGO" ] || die "$DEBIAN_CARGO missing: apt-get install cargo"
    sysroot=$("$DEBIAN_RUSTC" --print sysroot)
    [ -d "$sysroot/lib/rustlib/$TARGET/lib" ] ||
        die "$DEBIAN_RUSTC has no $TARGET std: apt-get install libstd-rust-dev-wasm32"
    command -v cargo >/dev/null || die "rustup's cargo is needed to resolve and vendor dependencies"

    # Resolving and vendoring use rustup's (new) cargo against crates.io; the fallback resolver
    # prefers versions whose rust-version fits this crate's (1.63).
    export CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback
    if [ ! -f Cargo.lock ]; then
        log "no Cargo.lock: resolving for rust-version 1.63"
        cargo generate-lockfile
    fi
    # Pins the fallback resolver cannot find by itself (it prefers, but does not force, versions
    # whose rust-version fits). Each is a no-op when the lockfile already has it. They are recorded
    # in the committed Cargo.lock; this also re-applies them to a freshly generated one.
    #  - jobserver >= 0.1.32 pulls getrandom 0.3 -> wit-bindgen (edition 2024), whose manifest
    #    cargo 1.65 cannot parse even though nothing on wasm32 compiles it.
    #  - serde 1.0.229 pins serde_derive 1.0.229, which needs syn 3 (rust-version 1.71).
    pin jobserver 0.1.31
    pin serde 1.0.228
    # Vendors exactly what Cargo.lock names (adding anything a changed manifest needs, resolved
    # with the same fallback), so the committed lockfile stays the source of truth. Skipped when
    # vendor/ was made from this very lockfile and these manifests.
    # cargo 1.65 reads lockfile version 3 only (a new cargo writes 4 for a fresh lockfile); the
    # content is the same.
    stamp() { cat Cargo.lock Cargo.toml ../crates/roomshard-verify/Cargo.toml | sha256sum | cut -d' ' -f1; }
    if [ "$(cat vendor/.build-stamp 2>/dev/null || true)" != "$(stamp)" ]; then
        cargo vendor --quiet --versioned-dirs vendor >/dev/null
        sed -i 's/^version = 4$/version = 3/' Cargo.lock
        stamp > vendor/.build-stamp
    fi
    sed -i 's/^version = 4$/version = 3/' Cargo.lock

    # Debian's cargo walks up from every path dependency looking for its workspace, and so would
    # parse the main workspace's Cargo.toml, which uses syntax newer than cargo 1.65 (e.g.
    # `debug = "line-tables-only"`). So it builds a staged copy of this crate and roomshard-verify
    # (same relative layout) under target/, where the walk up meets only this directory's manifest.
    # (cp -p keeps mtimes, so an unchanged crate is not rebuilt.)
    stage=target/debian-src
    rm -rf "$stage"
    mkdir -p "$stage/wasm/.cargo" "$stage/crates"
    cp -Rp Cargo.toml Cargo.lock src "$stage/wasm/"
    cp -Rp ../crates/roomshard-verify "$stage/crates/"
    rm -rf "$stage/crates/roomshard-verify/target"
    cat > "$stage/wasm/.cargo/config.toml" <<EOF
# Written by wasm/build.sh: Debian's cargo builds offline from the vendored sources.
[source.crates-io]
replace-with = "vendored-sources"

[source.vendored-sources]
directory = "$WASM_DIR/vendor"
EOF
    (cd "$stage/wasm" && RUSTC="$DEBIAN_RUSTC" CARGO_TARGET_DIR="$WASM_DIR/target" \
        "$DEBIAN_CARGO" build --offline --locked --release --target "$TARGET")
fi

wasm="target/$TARGET/release/$CRATE.wasm"
[ -f "$wasm" ] || die "$wasm was not produced"
rm -rf pkg pkg-node
"$WASM_BINDGEN" --target nodejs --out-dir pkg-node "$wasm"
"$WASM_BINDGEN" --target web --out-dir pkg "$wasm"

end=$(date +%s)
log "built in $((end - start)) s: $(wc -c <"pkg/${CRATE}_bg.wasm") bytes of wasm -> $WASM_DIR/pkg (web), $WASM_DIR/pkg-node (nodejs)"
