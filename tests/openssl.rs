//! `export.signature` is a plain cosign-style signature: OpenSSL verifies it over the exact bytes
//! of `manifest.json` with nothing but the exporter's public key (docs/bundle-format.md §5).
#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use roomshard_interop_tests::{
    build_fixture, describe, extract_with_gnu_tar, openssl_p256_key_pair, require_tool, run, run_ok,
};
use std::fs;
use std::process::Command;
use std::time::Instant;

#[test]
fn openssl_verifies_export_signature() {
    let started = Instant::now();
    let openssl = require_tool("openssl", "apt-get install -y openssl");
    let fx = build_fixture();
    let out = extract_with_gnu_tar(&fx.archive, &fx.path("x"));

    let manifest = out.join("manifest.json");
    let manifest_bytes = fs::read(&manifest).expect("manifest.json extracted");
    assert_eq!(
        manifest_bytes, fx.manifest_bytes,
        "manifest.json in the archive is the manifest the writer signed"
    );
    let sig_b64 =
        fs::read_to_string(out.join("export.signature")).expect("export.signature extracted");
    let der = base64::engine::general_purpose::STANDARD
        .decode(sig_b64.trim_end_matches('\n'))
        .unwrap_or_else(|e| panic!("export.signature is not standard base64 ({e}): {sig_b64:?}"));
    assert_eq!(
        der.first(),
        Some(&0x30),
        "an ECDSA signature in ASN.1 DER starts with SEQUENCE"
    );
    let sig = fx.path("sig.der");
    fs::write(&sig, &der).unwrap();

    let verify = |msg: &std::path::Path| {
        run(Command::new(&openssl)
            .args(["dgst", "-sha256", "-verify"])
            .arg(&fx.public_pem)
            .arg("-signature")
            .arg(&sig)
            .arg(msg))
    };

    let good = verify(&manifest);
    assert!(
        good.status.success(),
        "openssl rejected a genuine signature:\n{}",
        describe(&good)
    );
    assert_eq!(
        String::from_utf8_lossy(&good.stdout).trim(),
        "Verified OK",
        "{}",
        describe(&good)
    );

    // The same check through base64(1) and a pipe, as the spec's one-liner does it.
    let oneliner = run_ok(Command::new("bash").arg("-c").arg(format!(
        "openssl dgst -sha256 -verify '{}' -signature <(base64 -d '{}') '{}'",
        fx.public_pem.display(),
        out.join("export.signature").display(),
        manifest.display()
    )));
    assert_eq!(
        String::from_utf8_lossy(&oneliner.stdout).trim(),
        "Verified OK"
    );

    // One byte of the manifest changed: openssl must refuse.
    let mut tampered = manifest_bytes.clone();
    let at = tampered
        .windows(b"interop.example.org".len())
        .position(|w| w == b"interop.example.org")
        .expect("source_instance appears in the manifest");
    tampered[at] = b'I';
    let tampered_path = fx.path("manifest.tampered.json");
    fs::write(&tampered_path, &tampered).unwrap();
    let bad = verify(&tampered_path);
    assert!(
        !bad.status.success(),
        "openssl accepted a tampered manifest:\n{}",
        describe(&bad)
    );
    assert!(
        String::from_utf8_lossy(&bad.stdout).contains("Verification failure"),
        "{}",
        describe(&bad)
    );

    // A trailing newline is a different message too (the signature covers the exact bytes).
    let mut newline = manifest_bytes;
    newline.push(b'\n');
    fs::write(&tampered_path, &newline).unwrap();
    let bad = verify(&tampered_path);
    assert!(
        !bad.status.success(),
        "openssl accepted manifest + newline:\n{}",
        describe(&bad)
    );

    // Another key does not verify the genuine manifest.
    let other_key = fx.path("other.pem");
    let other_pub = fx.path("other.pub.pem");
    openssl_p256_key_pair(&openssl, &other_key, &other_pub);
    let bad = run(Command::new(&openssl)
        .args(["dgst", "-sha256", "-verify"])
        .arg(&other_pub)
        .arg("-signature")
        .arg(&sig)
        .arg(&manifest));
    assert!(
        !bad.status.success(),
        "openssl accepted the signature under another key:\n{}",
        describe(&bad)
    );

    eprintln!("openssl_verifies_export_signature: {:?}", started.elapsed());
}

/// Every committed valid golden vector's `export.signature` verifies with OpenSSL under the key
/// its manifest names in `conformance/vectors/trusted-keys.json`: ECDSA P-256 with `openssl dgst`,
/// Ed25519 with `openssl pkeyutl -verify -rawin`.
#[test]
fn openssl_verifies_committed_valid_vectors() {
    let started = Instant::now();
    let openssl = require_tool("openssl", "apt-get install -y openssl");
    let dir = roomshard_interop_tests::repo_root()
        .join("conformance")
        .join("vectors");
    let mut stems: Vec<String> = fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| {
                let p = e.ok()?.path();
                let stem = p
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".expect")?
                    .to_string();
                fs::read_to_string(&p)
                    .ok()?
                    .starts_with("expect: valid")
                    .then_some(stem)
            })
            .collect()
        })
        .unwrap_or_default();
    stems.sort();
    assert!(
        stems.len() >= 3,
        "expected the committed valid vectors in {}, found {stems:?}",
        dir.display()
    );
    let keys: serde_json::Value = serde_json::from_slice(
        &fs::read(dir.join("trusted-keys.json")).expect("trusted-keys.json"),
    )
    .expect("key set JSON");
    let work = tempfile::tempdir().unwrap();
    let mut algorithms = std::collections::BTreeSet::new();
    for stem in &stems {
        let out = extract_with_gnu_tar(
            &dir.join(format!("{stem}.tar.zst")),
            &work.path().join(stem),
        );
        let manifest_path = out.join("manifest.json");
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(&manifest_path).unwrap()).unwrap();
        let key_id = manifest["signature"]["key_id"].as_str().unwrap();
        let alg = manifest["signature"]["algorithm"].as_str().unwrap();
        let key = keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == key_id)
            .unwrap_or_else(|| panic!("{stem}: key {key_id} not in trusted-keys.json"));
        let pem = work.path().join(format!("{stem}.pub.pem"));
        fs::write(&pem, key["public_key_pem"].as_str().unwrap()).unwrap();
        let sig_b64 = fs::read_to_string(out.join("export.signature")).unwrap();
        let sig = base64::engine::general_purpose::STANDARD
            .decode(sig_b64.trim_end_matches('\n'))
            .unwrap_or_else(|e| panic!("{stem}: export.signature is not base64: {e}"));
        let sig_path = work.path().join(format!("{stem}.sig"));
        fs::write(&sig_path, &sig).unwrap();
        let mut cmd = Command::new(&openssl);
        match alg {
            "ecdsa-p256-sha256" => {
                cmd.args(["dgst", "-sha256", "-verify"])
                    .arg(&pem)
                    .arg("-signature")
                    .arg(&sig_path)
                    .arg(&manifest_path);
            }
            "ed25519" => {
                assert_eq!(sig.len(), 64, "{stem}: Ed25519 signatures are 64 bytes");
                cmd.args(["pkeyutl", "-verify", "-pubin", "-inkey"])
                    .arg(&pem)
                    .arg("-rawin")
                    .arg("-in")
                    .arg(&manifest_path)
                    .arg("-sigfile")
                    .arg(&sig_path);
            }
            other => panic!("{stem}: unknown algorithm {other}"),
        }
        let res = run(&mut cmd);
        assert!(
            res.status.success(),
            "{stem}: openssl rejected the signature:\n{}",
            describe(&res)
        );
        let stdout = String::from_utf8_lossy(&res.stdout);
        assert!(
            stdout.contains("Verified OK") || stdout.contains("Signature Verified Successfully"),
            "{stem}: {}",
            describe(&res)
        );
        algorithms.insert(alg.to_string());
    }
    assert!(algorithms.contains("ecdsa-p256-sha256"), "{algorithms:?}");
    eprintln!(
        "openssl verified {} valid vectors ({algorithms:?}) in {:?}",
        stems.len(),
        started.elapsed()
    );
}
