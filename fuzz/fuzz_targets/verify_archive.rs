//! Arbitrary bytes through the streaming verifier, in several chunkings.
//!
//! Checks, besides "never panics":
//! - a report is `valid` exactly when it carries no `error`;
//! - the verdict does not depend on how the input is chunked: the pull API (`verify_reader`),
//!   one `update` with everything, small fixed chunks, and an irregular chunking (with empty
//!   chunks, and with updates continuing after the first error) all agree on `valid`, and a
//!   valid archive gives the same manifest digest, signer and per-file results every time;
//! - the reason code agrees across chunkings too (except `compression_ratio`, which is judged
//!   on bytes consumed so far and so legitimately depends on chunk boundaries).
//!
//! The verifier trusts `conformance/vectors/trusted-keys.json` when it exists, so seeds from the
//! golden vectors (see `seed-corpus.sh`) verify valid and mutations explore the deep paths.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomshard_verify::{verify_reader, Reason, Report, TrustedKeys, Verifier, VerifyOptions};
use std::sync::OnceLock;

/// Default limits, except smaller size and ratio-grace budgets: fuzz inputs are small, and a
/// mutated bomb seed then costs 1 MiB of decompression per run instead of 8 MiB.
fn options() -> VerifyOptions {
    let mut o = VerifyOptions::default();
    o.limits.max_total_bytes = 64 << 20;
    o.limits.ratio_grace_bytes = 1 << 20;
    o
}

fn keys() -> TrustedKeys {
    static KEYS: OnceLock<TrustedKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../conformance/vectors/trusted-keys.json"
        );
        std::fs::read(path)
            .ok()
            .and_then(|json| TrustedKeys::from_json(&json).ok())
            .unwrap_or_else(|| TrustedKeys::from_json(br#"{"keys":[]}"#).expect("empty key set"))
    })
    .clone()
}

/// Feeds `chunks` in order; with `keep_going`, keeps calling `update` after an error (a browser
/// stream may do so) and checks the error repeats.
fn push<'a>(chunks: impl Iterator<Item = &'a [u8]>, keep_going: bool) -> Report {
    let mut v = Verifier::new(keys(), options());
    let mut first_err = None;
    for c in chunks {
        match v.update(c) {
            Ok(()) => assert!(first_err.is_none(), "update succeeded after an error"),
            Err(e) => {
                if let Some(first) = &first_err {
                    assert_eq!(&e, first, "update after an error must repeat that error");
                }
                if !keep_going {
                    break;
                }
                first_err.get_or_insert(e);
            }
        }
    }
    v.finish()
}

/// Deterministic irregular chunk lengths (0 included) derived from the input, without consuming
/// any of it (so seeds stay real archives).
fn irregular(data: &[u8]) -> Vec<&[u8]> {
    let mut state = data.iter().fold(0x9e37_79b9_7f4a_7c15u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let n = match state % 8 {
            0 => 0,
            1..=3 => (state >> 8) as usize % 17,
            4..=6 => (state >> 8) as usize % 4096,
            _ => (state >> 8) as usize % 70_000,
        }
        .min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

fn check_consistent(report: &Report, how: &str) {
    assert_eq!(
        report.valid,
        report.error.is_none(),
        "{how}: valid={} but error={:?}",
        report.valid,
        report.error
    );
}

fuzz_target!(|data: &[u8]| {
    let pulled = verify_reader(data, keys(), options());
    check_consistent(&pulled, "verify_reader");

    // Tiny chunks on small inputs; on large ones tiny chunks only cost time.
    let small = if data.len() <= 16 << 10 {
        1 + data.len() % 61
    } else {
        512 + data.len() % 4096
    };
    let variants = [
        ("whole", push(std::iter::once(data), false)),
        ("small chunks", push(data.chunks(small), false)),
        ("irregular", push(irregular(data).into_iter(), true)),
    ];
    for (how, r) in &variants {
        check_consistent(r, how);
        assert_eq!(
            r.valid, pulled.valid,
            "{how} says valid={} ({:?}), verify_reader says valid={} ({:?})",
            r.valid, r.error, pulled.valid, pulled.error
        );
        if pulled.valid {
            assert_eq!(
                r.manifest_sha256, pulled.manifest_sha256,
                "{how}: manifest digest"
            );
            assert_eq!(r.signer, pulled.signer, "{how}: signer");
            assert_eq!(r.files, pulled.files, "{how}: files");
            assert_eq!(r.tables, pulled.tables, "{how}: tables");
        } else {
            let (a, b) = (r.reason(), pulled.reason());
            let ratio = Some(Reason::CompressionRatio);
            if a != ratio && b != ratio {
                assert_eq!(
                    a, b,
                    "{how} refuses with {:?}, verify_reader with {:?}",
                    r.error, pulled.error
                );
            }
        }
    }
});
