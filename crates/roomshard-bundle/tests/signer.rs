//! Local signers: PEM round trips, key ids, determinism, and interop with OpenSSL (skipped when
//! `openssl` is not installed).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use base64::Engine as _;
use roomshard_bundle::{
    BundleError, LocalEd25519Signer, LocalP256Signer, Signer, key_id_for_spki_der,
};
use roomshard_verify::Algorithm;

#[test]
fn p256_pem_round_trip() {
    let a = LocalP256Signer::generate(None).unwrap();
    let pem = a.to_pkcs8_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let b = LocalP256Signer::from_pkcs8_pem(&pem, None).unwrap();
    assert_eq!(a.key_id(), b.key_id());
    assert_eq!(a.public_key_pem().unwrap(), b.public_key_pem().unwrap());
    assert!(
        a.public_key_pem()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----\n")
    );
    // RFC 6979: same key, same message, same signature.
    assert_eq!(a.sign(b"m").unwrap(), b.sign(b"m").unwrap());
    let named = LocalP256Signer::from_pkcs8_pem(&pem, Some("ops-2026".into())).unwrap();
    assert_eq!(named.key_id(), "ops-2026");
    let tk = named
        .trusted_key(Some("2026-01-01T00:00:00Z".into()), None)
        .unwrap();
    assert_eq!(tk.id, "ops-2026");
    assert_eq!(tk.alg, Algorithm::EcdsaP256Sha256);
    assert!(!tk.revoked);
}

#[test]
fn ed25519_pem_round_trip() {
    let a = LocalEd25519Signer::generate(None).unwrap();
    let b = LocalEd25519Signer::from_pkcs8_pem(&a.to_pkcs8_pem().unwrap(), None).unwrap();
    assert_eq!(a.key_id(), b.key_id());
    assert_eq!(a.sign(b"m").unwrap(), b.sign(b"m").unwrap());
    assert_eq!(a.algorithm(), Algorithm::Ed25519);
}

#[test]
fn seeds_are_deterministic() {
    let a = LocalP256Signer::from_seed([1; 32], None).unwrap();
    let b = LocalP256Signer::from_seed([1; 32], None).unwrap();
    let c = LocalP256Signer::from_seed([2; 32], None).unwrap();
    assert_eq!(a.key_id(), b.key_id());
    assert_ne!(a.key_id(), c.key_id());
    assert_eq!(
        a.key_id(),
        key_id_for_spki_der(Algorithm::EcdsaP256Sha256, &a.public_key_der().unwrap())
    );
    let e = LocalEd25519Signer::from_seed([1; 32], None).unwrap();
    assert_eq!(
        e.key_id(),
        LocalEd25519Signer::from_seed([1; 32], None)
            .unwrap()
            .key_id()
    );
}

#[test]
fn bad_keys_and_ids() {
    assert!(matches!(
        LocalP256Signer::from_pkcs8_pem("not a pem", None),
        Err(BundleError::Key { .. })
    ));
    let ed_pem = LocalEd25519Signer::from_seed([1; 32], None)
        .unwrap()
        .to_pkcs8_pem()
        .unwrap();
    assert!(matches!(
        LocalP256Signer::from_pkcs8_pem(&ed_pem, None),
        Err(BundleError::Key { .. })
    ));
    assert!(matches!(
        LocalP256Signer::from_seed([1; 32], Some("has space".into())),
        Err(BundleError::Invalid { .. })
    ));
    assert!(matches!(
        LocalEd25519Signer::from_seed([1; 32], Some(String::new())),
        Err(BundleError::Invalid { .. })
    ));
}

fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The spec's claim (§5): `openssl dgst -sha256 -verify pub.pem -signature sig manifest.json`
/// prints `Verified OK`; and the key id matches OpenSSL's SPKI DER.
#[test]
fn openssl_verifies_manifest_signature() {
    if !openssl_available() {
        eprintln!("openssl not installed; skipping");
        return;
    }
    let dir = std::env::temp_dir().join(format!("roomshard-bundle-openssl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let s = common::signer();
    let done = common::write_bundle();
    let manifest = dir.join("manifest.json");
    let sig = dir.join("sig.der");
    let pub_pem = dir.join("pub.pem");
    std::fs::write(&manifest, &done.manifest_bytes).unwrap();
    std::fs::write(
        &sig,
        base64::engine::general_purpose::STANDARD
            .decode(&done.signature_b64)
            .unwrap(),
    )
    .unwrap();
    std::fs::write(&pub_pem, s.public_key_pem().unwrap()).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&pub_pem)
        .arg("-signature")
        .arg(&sig)
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
        "{out:?}"
    );

    // Key id over OpenSSL's own SPKI DER encoding of the key.
    let key_pem = dir.join("key.pem");
    std::fs::write(&key_pem, s.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
    let der = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&key_pem)
        .output()
        .unwrap();
    assert!(der.status.success());
    assert_eq!(
        key_id_for_spki_der(Algorithm::EcdsaP256Sha256, &der.stdout),
        s.key_id()
    );

    // An OpenSSL-generated Ed25519 key loads and signs verifiably.
    let ed_pem = dir.join("ed.pem");
    let generated = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&ed_pem)
        .output()
        .unwrap();
    assert!(generated.status.success());
    let ed = LocalEd25519Signer::from_pkcs8_pem(&std::fs::read_to_string(&ed_pem).unwrap(), None)
        .unwrap();
    let ed_sig = dir.join("ed.sig");
    let ed_pub = dir.join("ed.pub");
    std::fs::write(&ed_sig, ed.sign(&done.manifest_bytes).unwrap()).unwrap();
    std::fs::write(&ed_pub, ed.public_key_pem().unwrap()).unwrap();
    let out = Command::new("openssl")
        .args(["pkeyutl", "-verify", "-rawin", "-pubin", "-inkey"])
        .arg(&ed_pub)
        .arg("-sigfile")
        .arg(&ed_sig)
        .arg("-in")
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Signature Verified Successfully"),
        "{out:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
