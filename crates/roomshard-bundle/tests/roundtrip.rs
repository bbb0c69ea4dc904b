//! Written bundles verify with the verifier engine (`roomshard_verify::verify_reader`), and
//! their sidecars with `verify_sidecar` against the engine's report.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use roomshard_bundle::{LocalEd25519Signer, Signer, WriterOptions, sidecar};
use roomshard_verify::format::hex;
use roomshard_verify::{FileStatus, VerifyOptions, verify_reader, verify_sidecar};

#[test]
fn bundle_verifies() {
    let s = signer();
    let done = write_bundle();
    let (archive, digest) = done.out.into_parts();
    let options = VerifyOptions {
        hash_archive: true,
        ..VerifyOptions::default()
    };
    let report = verify_reader(archive.as_slice(), trusted_keys_for(&s), options);
    assert!(report.valid, "{}", report.to_json());
    assert_eq!(report.room.as_ref().unwrap().id, "general");
    assert_eq!(report.signer.as_ref().unwrap().key_id, s.key_id());
    assert_eq!(
        report.manifest_sha256.as_deref(),
        Some(done.manifest_sha256.as_str())
    );
    assert_eq!(report.archive_sha256, Some(hex(&digest)));
    assert_eq!(report.files.len(), 4);
    assert!(report.files.iter().all(|f| f.status == FileStatus::Ok));
    let rows: Vec<(String, Option<u64>)> = report
        .tables
        .iter()
        .map(|t| (t.name.clone(), t.found_rows))
        .collect();
    assert_eq!(
        rows,
        [
            ("messages".to_string(), Some(3)),
            ("reactions".to_string(), Some(0)),
            ("members".to_string(), Some(3))
        ]
    );

    let json = sidecar(&digest, &done.manifest, &done.manifest_sha256, &s).unwrap();
    let info = verify_sidecar(&json, &report, &trusted_keys_for(&s)).expect("sidecar verifies");
    assert_eq!(info.subject_name, "room_general.tar.zst");
}

#[test]
fn ed25519_and_multithreaded_bundles_verify() {
    let ed = LocalEd25519Signer::from_seed([5; 32], None).unwrap();
    let options = WriterOptions {
        zstd_level: 9,
        zstd_workers: 2,
    };
    let (archive, _) = write_bundle_with(&ed, options).out.into_parts();
    let report = verify_reader(
        archive.as_slice(),
        trusted_keys_for(&ed),
        VerifyOptions::default(),
    );
    assert!(report.valid, "{}", report.to_json());
    assert_eq!(report.signer.as_ref().unwrap().key_id, ed.key_id());
}

#[test]
fn wrong_key_is_refused() {
    let done = write_bundle();
    let (archive, _) = done.out.into_parts();
    let other =
        roomshard_bundle::LocalP256Signer::from_seed([8; 32], Some(signer().key_id().to_string()))
            .unwrap();
    let report = verify_reader(
        archive.as_slice(),
        trusted_keys_for(&other),
        VerifyOptions::default(),
    );
    assert!(!report.valid);
    assert_eq!(
        report.reason(),
        Some(roomshard_verify::Reason::SignatureInvalid)
    );
}
