//! The sidecar `room_<id>.tar.zst.sigstore.json` is a Sigstore bundle v0.3 that the real npm
//! library `@sigstore/verify` accepts offline with only the exporter's public key
//! (docs/bundle-format.md §7), driven through `tests/node/sigstore-verify.mjs`.
#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use roomshard_interop_tests::{
    ROOM, build_fixture, describe, openssl_p256_key_pair, repo_root, require_tool, run, run_ok,
    sha256_hex,
};
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Instant;

fn node_dir() -> PathBuf {
    repo_root().join("tests").join("node")
}

/// Installs tests/node's locked dependencies when `node_modules` lacks them (`npm ci`).
fn ensure_node_modules() {
    let dir = node_dir();
    let installed = ["@sigstore/verify", "@sigstore/bundle"].iter().all(|p| {
        dir.join("node_modules")
            .join(p)
            .join("package.json")
            .is_file()
    });
    if installed {
        return;
    }
    let npm = require_tool("npm", "apt-get install -y npm (Node.js 20 + npm)");
    let t = Instant::now();
    let out = run(Command::new(npm)
        .current_dir(&dir)
        .args(["ci", "--no-audit", "--no-fund"]));
    assert!(
        out.status.success(),
        "`npm ci` in {} failed; @sigstore/verify is required for this test:\n{}",
        dir.display(),
        describe(&out)
    );
    eprintln!("npm ci: {:?}", t.elapsed());
}

fn sigstore_verify(
    sidecar: &std::path::Path,
    pub_pem: &std::path::Path,
    archive: &std::path::Path,
    key_id: &str,
) -> Output {
    let node = require_tool("node", "apt-get install -y nodejs (Node.js >= 20.17)");
    run(Command::new(node)
        .arg(node_dir().join("sigstore-verify.mjs"))
        .arg(sidecar)
        .arg(pub_pem)
        .arg(archive)
        .arg("--key-id")
        .arg(key_id))
}

#[test]
fn sigstore_verify_accepts_sidecar_offline() {
    let started = Instant::now();
    let node = require_tool("node", "apt-get install -y nodejs (Node.js >= 20.17)");
    let version = run_ok(Command::new(&node).arg("--version"));
    eprintln!("node {}", String::from_utf8_lossy(&version.stdout).trim());
    ensure_node_modules();
    let fx = build_fixture();

    // 1. The genuine sidecar verifies, and the statement it prints is about this archive.
    let t = Instant::now();
    let good = sigstore_verify(&fx.sidecar, &fx.public_pem, &fx.archive, &fx.key_id);
    assert!(
        good.status.success(),
        "@sigstore/verify rejected the genuine sidecar:\n{}",
        describe(&good)
    );
    eprintln!("node sigstore-verify.mjs (good): {:?}", t.elapsed());
    let report: serde_json::Value = serde_json::from_slice(&good.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", describe(&good)));
    assert_eq!(report["verified"], true);
    assert_eq!(report["key_hint"], fx.key_id.as_str());
    let stmt = &report["statement"];
    assert_eq!(stmt["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(stmt["predicateType"], "https://roomshard.dev/export/v1");
    assert_eq!(
        stmt["subject"][0]["name"],
        format!("room_{ROOM}.tar.zst").as_str()
    );
    assert_eq!(
        stmt["subject"][0]["digest"]["sha256"],
        fx.archive_sha256.as_str()
    );
    assert_eq!(stmt["predicate"]["room"], ROOM);
    assert_eq!(
        stmt["predicate"]["manifest_sha256"],
        sha256_hex(&fx.manifest_bytes).as_str()
    );
    assert_eq!(
        stmt["predicate"]["created_at"],
        fx.manifest.created_at.as_str()
    );
    assert_eq!(stmt["predicate"]["format_version"], 1);

    // 2. One byte of the archive changed: the signature still verifies, the digest does not match.
    let mut bytes = fs::read(&fx.archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    let other = fx.path("room_tampered.tar.zst");
    fs::write(&other, &bytes).unwrap();
    let bad = sigstore_verify(&fx.sidecar, &fx.public_pem, &other, &fx.key_id);
    assert_eq!(
        bad.status.code(),
        Some(1),
        "tampered archive must fail:\n{}",
        describe(&bad)
    );
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("subject digest mismatch"),
        "expected a digest mismatch:\n{}",
        describe(&bad)
    );

    // 3. The DSSE payload changed (statement now claims the tampered archive): signature fails.
    let mut sidecar: serde_json::Value =
        serde_json::from_slice(&fs::read(&fx.sidecar).unwrap()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64
        .decode(
            sidecar["dsseEnvelope"]["payload"]
                .as_str()
                .expect("dsseEnvelope.payload"),
        )
        .expect("payload is base64");
    let mut forged: serde_json::Value = serde_json::from_slice(&payload).expect("payload is JSON");
    forged["subject"][0]["digest"]["sha256"] = sha256_hex(&bytes).into();
    sidecar["dsseEnvelope"]["payload"] = b64.encode(serde_json::to_vec(&forged).unwrap()).into();
    let forged_path = fx.path("forged.sigstore.json");
    fs::write(&forged_path, serde_json::to_vec(&sidecar).unwrap()).unwrap();
    let bad = sigstore_verify(&forged_path, &fx.public_pem, &other, &fx.key_id);
    assert_eq!(
        bad.status.code(),
        Some(1),
        "forged payload must fail:\n{}",
        describe(&bad)
    );
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("signature"),
        "expected a signature failure:\n{}",
        describe(&bad)
    );

    // 4. The genuine sidecar under another public key fails the signature check.
    let openssl = require_tool("openssl", "apt-get install -y openssl");
    let other_key = fx.path("other.key.pem");
    let other_pub = fx.path("other.pub.pem");
    openssl_p256_key_pair(&openssl, &other_key, &other_pub);
    let bad = sigstore_verify(&fx.sidecar, &other_pub, &fx.archive, &fx.key_id);
    assert_eq!(
        bad.status.code(),
        Some(1),
        "another key must fail:\n{}",
        describe(&bad)
    );
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("signature"),
        "{}",
        describe(&bad)
    );

    // 5. Usage errors exit 2.
    let usage = run(Command::new(&node)
        .arg(node_dir().join("sigstore-verify.mjs"))
        .arg(&fx.sidecar));
    assert_eq!(usage.status.code(), Some(2), "{}", describe(&usage));

    eprintln!(
        "sigstore_verify_accepts_sidecar_offline: {:?}",
        started.elapsed()
    );
}
