//! Arbitrary bytes through `parse_manifest`.
//!
//! Checks, besides "never panics": an accepted manifest's bytes are exactly the canonical
//! serialisation of the parsed manifest (`to_canonical_json`, what writers emit), so one value has
//! one accepted byte form and what the verifier accepts a writer could have written (and the JSON
//! Schema accepts: e.g. `"name":null` would parse to `None` but re-serialise without the key).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomshard_verify::format::{parse_manifest, to_canonical_json};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse_manifest(data) {
        let bytes = to_canonical_json(&m);
        assert!(
            bytes == data,
            "accepted manifest is not the canonical form of its parsed value:\n accepted:  {}\n canonical: {}",
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(&bytes)
        );
        match parse_manifest(&bytes) {
            Ok(again) => assert_eq!(again, m, "canonical re-serialisation parses differently"),
            Err(e) => panic!("canonical form refused: {e:?}"),
        }
    }
});
