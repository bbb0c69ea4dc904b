//! Every golden vector through both verifier APIs: the verdict and reason must match its
//! `.expect` file, and the committed files must be exactly what the generator produces.

use roomshard_conformance::vectors::{self, parse_expect};
use roomshard_verify::format::to_canonical_json;
use roomshard_verify::{
    TrustedKeys, Verifier, VerifyOptions, verify_reader, verify_reader_with_manifest,
};
use sha2::{Digest, Sha256};
use std::fs;

fn trusted_keys() -> TrustedKeys {
    let json = fs::read(roomshard_conformance::vectors_dir().join("trusted-keys.json"))
        .expect("conformance/vectors/trusted-keys.json exists");
    TrustedKeys::from_json(&json).expect("the vectors' key set parses")
}

fn committed() -> Vec<(String, Vec<u8>, String)> {
    let dir = roomshard_conformance::vectors_dir();
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).expect("vectors dir") {
        let path = entry.expect("dir entry").path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(stem) = name.strip_suffix(".tar.zst") {
            let expect = fs::read_to_string(dir.join(format!("{stem}.expect")))
                .unwrap_or_else(|e| panic!("{stem}.expect: {e}"));
            out.push((stem.to_string(), fs::read(&path).expect("vector"), expect));
        }
    }
    out.sort();
    out
}

fn verdict(report: &roomshard_verify::Report) -> Option<String> {
    report.error.as_ref().map(|e| e.reason.clone())
}

#[test]
fn the_verified_manifest_comes_back_for_valid_vectors_only() {
    let keys = trusted_keys();
    for (name, bytes, expect) in committed() {
        let exp = parse_expect(&expect).expect("expect file parses");
        let options = VerifyOptions {
            limits: exp.limits,
            hash_archive: false,
        };
        let plain = verify_reader(&bytes[..], keys.clone(), options);
        let (report, manifest) = verify_reader_with_manifest(&bytes[..], keys.clone(), options);
        assert_eq!(report, plain, "{name}: the same report either way");
        match manifest {
            Some(m) => {
                assert!(report.valid, "{name}: a manifest for an invalid bundle");
                // It is the manifest whose digest the report (and the signature) bind to.
                let digest = format!("{:x}", Sha256::digest(to_canonical_json(&m)));
                assert_eq!(
                    report.manifest_sha256.as_deref(),
                    Some(digest.as_str()),
                    "{name}"
                );
            }
            None => assert!(!report.valid, "{name}: valid but no manifest"),
        }
    }
}

#[test]
fn there_are_at_least_30_vectors_valid_and_failing() {
    let all = committed();
    assert!(all.len() >= 30, "only {} vectors", all.len());
    let valid = all
        .iter()
        .filter(|(_, _, e)| e.starts_with("expect: valid"))
        .count();
    assert!(
        valid >= 3 && all.len() - valid >= 27,
        "{valid} valid of {}",
        all.len()
    );
}

#[test]
fn every_vector_gives_its_expected_verdict_through_the_read_api() {
    let keys = trusted_keys();
    let mut wrong = Vec::new();
    for (name, bytes, expect) in committed() {
        let exp = parse_expect(&expect).expect("expect file parses");
        let options = VerifyOptions {
            limits: exp.limits,
            hash_archive: true,
        };
        let report = verify_reader(&bytes[..], keys.clone(), options);
        if report.valid != exp.failure.is_none() || verdict(&report) != exp.failure {
            wrong.push(format!(
                "{name}: expected {:?}, got {:?}",
                exp.failure, report.error
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "vectors with the wrong verdict:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_vector_gives_its_expected_verdict_through_the_push_api_in_odd_chunks() {
    let keys = trusted_keys();
    let mut wrong = Vec::new();
    for (name, bytes, expect) in committed() {
        let exp = parse_expect(&expect).expect("expect file parses");
        for chunk in [1usize, 13, 4096] {
            let mut v = Verifier::new(
                keys.clone(),
                VerifyOptions {
                    limits: exp.limits,
                    hash_archive: false,
                },
            );
            for c in bytes.chunks(chunk) {
                if v.update(c).is_err() {
                    break;
                }
            }
            let report = v.finish();
            if verdict(&report) != exp.failure {
                wrong.push(format!(
                    "{name} (chunk {chunk}): expected {:?}, got {:?}",
                    exp.failure, report.error
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "vectors with the wrong verdict:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn valid_vectors_report_their_signer_and_counts() {
    let keys = trusted_keys();
    let (_, bytes, _) = committed()
        .into_iter()
        .find(|(n, _, _)| n == "valid_basic")
        .expect("valid_basic");
    let report = verify_reader(&bytes[..], keys, VerifyOptions::default());
    assert!(report.valid, "{:?}", report.error);
    assert_eq!(
        report.signer.as_ref().map(|s| s.key_id.as_str()),
        Some("vectors-p256-main")
    );
    let counts: Vec<(String, Option<u64>)> = report
        .tables
        .iter()
        .map(|t| (t.name.clone(), t.found_rows))
        .collect();
    assert_eq!(
        counts,
        vec![("messages".into(), Some(4)), ("reactions".into(), Some(3))]
    );
    assert_eq!(report.files.len(), 3);
}

#[test]
fn committed_vectors_are_exactly_what_the_generator_produces() {
    let generated = vectors::generate();
    let committed = committed();
    let names: Vec<&str> = generated.iter().map(|v| v.name).collect();
    let committed_names: Vec<&str> = committed.iter().map(|(n, _, _)| n.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted, committed_names,
        "run `cargo run -p roomshard-conformance --bin gen-vectors`"
    );
    for v in generated {
        let (_, bytes, expect) = committed
            .iter()
            .find(|(n, _, _)| n == v.name)
            .expect("present");
        assert!(
            bytes == &v.archive,
            "{}.tar.zst differs from the generator's output",
            v.name
        );
        assert_eq!(expect, &v.expect, "{}.expect differs", v.name);
    }
    let keys = fs::read_to_string(roomshard_conformance::vectors_dir().join("trusted-keys.json"))
        .expect("keys");
    let mut want =
        serde_json::to_string_pretty(&vectors::VectorKeys::new().key_set()).expect("json");
    want.push('\n');
    assert_eq!(keys, want);
}

#[test]
fn every_reason_code_in_the_expect_files_is_a_known_reason() {
    for (name, _, expect) in committed() {
        if let Some(code) = parse_expect(&expect).expect("parses").failure {
            assert!(
                roomshard_verify::Reason::from_code(&code).is_some(),
                "{name}: unknown reason {code}"
            );
        }
    }
}
