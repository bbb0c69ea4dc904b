//! Arbitrary bytes through `parse_manifest`.
//!
//! Checks, besides "never panics": whatever it accepts, re-serialised canonically
//! (`to_canonical_json`, what writers emit), parses again to the same manifest — writer and
//! verifier agree on every accepted value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomshard_verify::format::{parse_manifest, to_canonical_json};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse_manifest(data) {
        let bytes = to_canonical_json(&m);
        match parse_manifest(&bytes) {
            Ok(again) => assert_eq!(again, m, "canonical re-serialisation parses differently"),
            Err(e) => panic!(
                "accepted {:?} but refuses its canonical form {:?}: {e:?}",
                String::from_utf8_lossy(data),
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
});
