//! Sidecars and receipts checked with `roomshard_verify::dsse` (no verifier engine needed: the
//! sidecar is checked against a report built from what the writer returned).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use roomshard_bundle::{BundleError, LocalEd25519Signer, Signer, sidecar, sign_receipt};
use roomshard_verify::dsse::ReceiptPredicate;
use roomshard_verify::format::hex;
use roomshard_verify::{Reason, Report, verify_receipt, verify_sidecar};

fn report_for(
    archive_sha256: &[u8; 32],
    manifest: &roomshard_verify::Manifest,
    manifest_sha256: &str,
) -> Report {
    Report {
        valid: true,
        room: Some(manifest.room.clone()),
        format_version: Some(manifest.format_version),
        created_at: Some(manifest.created_at.clone()),
        manifest_sha256: Some(manifest_sha256.to_string()),
        archive_sha256: Some(hex(archive_sha256)),
        ..Report::default()
    }
}

#[test]
fn sidecar_verifies_and_has_the_sigstore_shape() {
    let s = signer();
    let done = write_bundle();
    let (_, digest) = done.out.into_parts();
    let json = sidecar(&digest, &done.manifest, &done.manifest_sha256, &s).unwrap();
    let report = report_for(&digest, &done.manifest, &done.manifest_sha256);
    let info = verify_sidecar(&json, &report, &trusted_keys_for(&s)).expect("sidecar verifies");
    assert_eq!(info.key_id, s.key_id());
    assert_eq!(info.subject_name, "room_general.tar.zst");

    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        v["mediaType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    assert_eq!(v["verificationMaterial"]["publicKey"]["hint"], s.key_id());
    assert_eq!(
        v["verificationMaterial"]["tlogEntries"],
        serde_json::json!([])
    );
    assert_eq!(
        v["verificationMaterial"]["timestampVerificationData"],
        serde_json::json!({"rfc3161Timestamps": []})
    );
    assert_eq!(
        v["dsseEnvelope"]["payloadType"],
        "application/vnd.in-toto+json"
    );
    assert_eq!(v["dsseEnvelope"]["signatures"][0]["keyid"], s.key_id());
    use base64::Engine as _;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(v["dsseEnvelope"]["payload"].as_str().unwrap())
        .unwrap();
    let stmt: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        stmt,
        serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "room_general.tar.zst", "digest": {"sha256": hex(&digest)}}],
            "predicateType": "https://roomshard.dev/export/v1",
            "predicate": {"room": "general", "manifest_sha256": done.manifest_sha256,
                          "created_at": CREATED_AT, "format_version": 1}
        })
    );
    // Deterministic.
    assert_eq!(
        json,
        sidecar(&digest, &done.manifest, &done.manifest_sha256, &s).unwrap()
    );
}

#[test]
fn sidecar_for_another_archive_is_a_digest_mismatch() {
    let s = signer();
    let done = write_bundle();
    let (_, digest) = done.out.into_parts();
    let json = sidecar(&[0u8; 32], &done.manifest, &done.manifest_sha256, &s).unwrap();
    let report = report_for(&digest, &done.manifest, &done.manifest_sha256);
    let err = verify_sidecar(&json, &report, &trusted_keys_for(&s)).unwrap_err();
    assert_eq!(err.reason, Reason::SidecarDigestMismatch);
    // Signed by a key the verifier does not trust.
    let other = LocalEd25519Signer::from_seed([3; 32], None).unwrap();
    let json = sidecar(&digest, &done.manifest, &done.manifest_sha256, &other).unwrap();
    let err = verify_sidecar(&json, &report, &trusted_keys_for(&s)).unwrap_err();
    assert_eq!(err.reason, Reason::UnknownKey);
    // An Ed25519 sidecar verifies with its own key.
    verify_sidecar(&json, &report, &trusted_keys_for(&other)).expect("ed25519 sidecar");
}

fn predicate() -> ReceiptPredicate {
    ReceiptPredicate {
        room: "general".into(),
        profile: "eu-sovereign".into(),
        region: "eu-central-1".into(),
        bucket: "rooms-eu".into(),
        key_alias: "alias/roomshard-general".into(),
        manifest_sha256: hex(&[0xab; 32]),
        issued: "2026-11-22T10:00:00Z".into(),
        expires: "2026-12-22T10:00:00Z".into(),
        version: 4,
        audit: Some(roomshard_verify::dsse::AuditAnchor {
            seq: 12,
            hash: hex(&[0xcd; 32]),
        }),
    }
}

#[test]
fn receipt_round_trip() {
    let s = signer();
    let p = predicate();
    let json = sign_receipt(&p, &p.manifest_sha256, &s).unwrap();
    let keys = trusted_keys_for(&s);
    let r = verify_receipt(&json, &keys, "2026-12-01T00:00:00Z").expect("valid receipt");
    assert_eq!(r.key_id, s.key_id());
    assert_eq!(r.predicate, p);
    assert_eq!(r.statement.subject[0].name, "room_general");
    assert_eq!(r.statement.subject[0].digest["sha256"], p.manifest_sha256);

    let err = verify_receipt(&json, &keys, "2026-12-22T10:00:01Z").unwrap_err();
    assert_eq!(err.reason, Reason::ReceiptExpired);

    // Tamper with the payload: swap the bucket without re-signing.
    let mut env: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let mut forged = p.clone();
    forged.bucket = "rooms-us".into();
    let forged_json = sign_receipt(&forged, &p.manifest_sha256, &s).unwrap();
    let forged_env: serde_json::Value = serde_json::from_slice(&forged_json).unwrap();
    env["payload"] = forged_env["payload"].clone();
    let err = verify_receipt(
        &serde_json::to_vec(&env).unwrap(),
        &keys,
        "2026-12-01T00:00:00Z",
    )
    .unwrap_err();
    assert_eq!(err.reason, Reason::ReceiptSignatureInvalid);
}

#[test]
fn receipt_inputs_are_checked() {
    let s = signer();
    let p = predicate();
    let mut bad = p.clone();
    bad.expires = "2026-11-01T00:00:00Z".into();
    assert!(matches!(
        sign_receipt(&bad, &p.manifest_sha256, &s),
        Err(BundleError::Invalid { .. })
    ));
    let mut bad = p.clone();
    bad.room = "Not A Room".into();
    assert!(matches!(
        sign_receipt(&bad, &p.manifest_sha256, &s),
        Err(BundleError::Invalid { .. })
    ));
    assert!(matches!(
        sign_receipt(&p, "ABCD", &s),
        Err(BundleError::Invalid { .. })
    ));
}
