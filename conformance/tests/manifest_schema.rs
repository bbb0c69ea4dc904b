//! The published JSON Schema (docs/bundle-manifest.schema.json) agrees with the verifier: every
//! manifest the verifier accepts validates, and the schema refuses the injection vectors.

use std::fs;
use std::io::Read;

fn schema() -> jsonschema::Validator {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/bundle-manifest.schema.json");
    let text = fs::read_to_string(&path).expect("docs/bundle-manifest.schema.json");
    let value: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&value).expect("schema compiles")
}

/// The manifest.json bytes of a vector (read with the tar crate, which trusts nothing here but
/// the entry name).
fn manifest_of(vector: &str) -> serde_json::Value {
    let bytes = fs::read(roomshard_conformance::vectors_dir().join(format!("{vector}.tar.zst")))
        .expect("vector");
    let tar = zstd::decode_all(&bytes[..]).expect("zstd");
    let mut archive = tar::Archive::new(&tar[..]);
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        if entry.path().expect("path").to_str() == Some("manifest.json") {
            let mut s = String::new();
            entry.read_to_string(&mut s).expect("read");
            return serde_json::from_str(&s).expect("manifest is JSON");
        }
    }
    panic!("{vector} has no manifest.json")
}

#[test]
fn every_valid_vector_manifest_matches_the_published_schema() {
    let schema = schema();
    let mut checked = 0;
    for entry in fs::read_dir(roomshard_conformance::vectors_dir()).expect("vectors") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let Some(stem) = name.strip_suffix(".expect") else {
            continue;
        };
        if fs::read_to_string(&path)
            .expect("expect")
            .starts_with("expect: valid")
        {
            let m = manifest_of(stem);
            let errors: Vec<String> = schema.iter_errors(&m).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{stem}: {errors:?}");
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} valid vectors checked");
}

#[test]
fn schema_refuses_injection_in_room_id_and_table_name() {
    let schema = schema();
    for vector in [
        "manifest_invalid_room_id",
        "manifest_invalid_table_name",
        "unsupported_version",
    ] {
        assert!(
            !schema.is_valid(&manifest_of(vector)),
            "{vector} should not validate"
        );
    }
}
