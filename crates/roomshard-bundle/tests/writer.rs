//! The writer's output checked on its own (zstd + tar crates, p256), independent of the verifier
//! engine; and writer misuse.
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use roomshard_bundle::{
    BundleError, BundleWriter, HashingWriter, LocalEd25519Signer, Signer, WriterOptions,
};
use roomshard_verify::format::{hex, parse_manifest};
use roomshard_verify::{Algorithm, Reason};
use sha2::{Digest, Sha256};

#[test]
fn archive_layout_and_headers() {
    let done = write_bundle();
    let (archive, _) = done.out.into_parts();
    let entries = entries(&archive);
    let paths: Vec<String> = entries
        .iter()
        .map(|(h, _)| String::from_utf8(h.path_bytes().into_owned()).unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "db.sql",
            "media/att/1.png",
            "media/att/2.txt",
            "media/big/blob.bin",
            "manifest.json",
            "export.signature"
        ]
    );
    for (h, data) in &entries {
        assert_eq!(&h.as_bytes()[257..263], b"ustar\0", "ustar magic");
        assert_eq!(&h.as_bytes()[263..265], b"00", "ustar version");
        assert_eq!(h.entry_type(), tar::EntryType::Regular);
        assert_eq!(h.mode().unwrap(), 0o644);
        assert_eq!(h.uid().unwrap(), 0);
        assert_eq!(h.gid().unwrap(), 0);
        assert_eq!(h.mtime().unwrap(), 1_795_341_600);
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(h.groupname_bytes(), Some(&b""[..]));
        assert_eq!(h.size().unwrap(), data.len() as u64);
    }
    let (sql, _) = db_sql();
    assert_eq!(entries[0].1, sql);
    for (i, (_, bytes)) in media().iter().enumerate() {
        assert_eq!(&entries[1 + i].1, bytes);
    }
    assert_eq!(entries[4].1, done.manifest_bytes);
    assert_eq!(
        entries[5].1,
        format!("{}\n", done.signature_b64).into_bytes()
    );

    // After the end-of-archive marker only zero padding.
    let tar_bytes = zstd::decode_all(archive.as_slice()).unwrap();
    assert_eq!(tar_bytes.len() % 512, 0);
    assert!(tar_bytes[tar_bytes.len() - 1024..].iter().all(|&b| b == 0));
}

#[test]
fn manifest_content() {
    let done = write_bundle();
    let parsed = parse_manifest(&done.manifest_bytes).expect("canonical and valid");
    assert_eq!(parsed, done.manifest);
    let m = &done.manifest;
    assert_eq!(m.format, "roomshard-bundle");
    assert_eq!(m.format_version, 1);
    assert_eq!(m.room.id, "general");
    assert_eq!(m.created_at, CREATED_AT);
    assert_eq!(m.exporter.name, "roomshard");
    assert_eq!(m.exporter.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(m.signature.key_id, signer().key_id());
    assert_eq!(m.signature.algorithm, Algorithm::EcdsaP256Sha256);
    let rows: Vec<(String, u64)> = m
        .tables
        .iter()
        .map(|t| (t.descriptor.name.clone(), t.row_count))
        .collect();
    assert_eq!(
        rows,
        [
            ("messages".to_string(), 3),
            ("reactions".to_string(), 0),
            ("members".to_string(), 3)
        ]
    );
    let (sql, _) = db_sql();
    let mut expected: Vec<(String, u64, String)> = vec![(
        "db.sql".into(),
        sql.len() as u64,
        hex(&Sha256::digest(&sql)),
    )];
    for (key, bytes) in media() {
        expected.push((
            format!("media/{key}"),
            bytes.len() as u64,
            hex(&Sha256::digest(&bytes)),
        ));
    }
    let files: Vec<(String, u64, String)> = m
        .files
        .iter()
        .map(|f| (f.path.clone(), f.size, f.sha256.clone()))
        .collect();
    assert_eq!(files, expected);
    let media_bytes: u64 = media().iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(m.totals.files, 4);
    assert_eq!(m.totals.media_files, 3);
    assert_eq!(m.totals.media_bytes, media_bytes);
    assert_eq!(m.totals.bytes, media_bytes + sql.len() as u64);
    assert_eq!(m.totals.rows, 6);
    assert_eq!(
        done.manifest_sha256,
        hex(&Sha256::digest(&done.manifest_bytes))
    );
}

#[test]
fn signature_verifies_with_p256() {
    use p256::ecdsa::signature::Verifier as _;
    use p256::pkcs8::DecodePublicKey as _;
    let done = write_bundle();
    let sig_der = STANDARD.decode(&done.signature_b64).unwrap();
    let vk = p256::ecdsa::VerifyingKey::from_public_key_pem(&signer().public_key_pem().unwrap())
        .unwrap();
    let sig = p256::ecdsa::Signature::from_der(&sig_der).unwrap();
    vk.verify(&done.manifest_bytes, &sig).expect("verifies");
    let mut other = done.manifest_bytes.clone();
    other[0] = b' ';
    assert!(vk.verify(&other, &sig).is_err());

    // And through the verifier's key set.
    let keys = trusted_keys_for(&signer());
    keys.verify(
        signer().key_id(),
        Algorithm::EcdsaP256Sha256,
        CREATED_AT,
        &done.manifest_bytes,
        &sig_der,
        Reason::SignatureInvalid,
    )
    .expect("verifies with the trusted key set");
}

#[test]
fn ed25519_signature_verifies() {
    let ed = LocalEd25519Signer::from_seed([9; 32], None).unwrap();
    let done = write_bundle_with(&ed, WriterOptions::default());
    assert_eq!(done.manifest.signature.algorithm, Algorithm::Ed25519);
    let sig = STANDARD.decode(&done.signature_b64).unwrap();
    assert_eq!(sig.len(), 64);
    trusted_keys_for(&ed)
        .verify(
            ed.key_id(),
            Algorithm::Ed25519,
            CREATED_AT,
            &done.manifest_bytes,
            &sig,
            Reason::SignatureInvalid,
        )
        .expect("verifies");
}

#[test]
fn deterministic_output() {
    let a = write_bundle().out.into_parts().0;
    let b = write_bundle().out.into_parts().0;
    assert!(a == b, "two writes of the same inputs differ");

    let mt = WriterOptions {
        zstd_level: 3,
        zstd_workers: 2,
    };
    let c = write_bundle_with(&signer(), mt).out.into_parts().0;
    let d = write_bundle_with(&signer(), mt).out.into_parts().0;
    assert!(c == d, "two multithreaded writes differ");
    assert_eq!(
        zstd::decode_all(a.as_slice()).unwrap(),
        zstd::decode_all(c.as_slice()).unwrap()
    );
}

/// With workers the archive is independent zstd frames of `FRAME_BYTES` of tar stream each
/// (the last shorter), each decodable on its own, whatever the number of workers; the verifier
/// accepts it.
#[test]
fn workers_write_independent_frames_of_frame_bytes() {
    let with = |workers| WriterOptions {
        zstd_level: 3,
        zstd_workers: workers,
    };
    let one = write_bundle_with(&signer(), with(1)).out.into_parts().0;
    let three = write_bundle_with(&signer(), with(3)).out.into_parts().0;
    assert!(one == three, "1 and 3 workers wrote different archives");
    let single = zstd::decode_all(write_bundle().out.into_parts().0.as_slice()).unwrap();

    let mut rest = one.as_slice();
    let mut decoded = Vec::new();
    let mut sizes = Vec::new();
    while !rest.is_empty() {
        let n = zstd::zstd_safe::find_frame_compressed_size(rest).expect("a whole frame");
        let (frame, tail) = rest.split_at(n);
        let alone = zstd::decode_all(frame).expect("a frame decodes on its own");
        sizes.push(alone.len());
        decoded.extend_from_slice(&alone);
        rest = tail;
    }
    assert!(
        decoded == single,
        "the frames' content differs from one frame's"
    );
    assert_eq!(
        sizes.len(),
        single.len().div_ceil(roomshard_bundle::FRAME_BYTES)
    );
    assert!(
        sizes.len() >= 5,
        "{} frames for {} bytes",
        sizes.len(),
        single.len()
    );
    let (last, whole) = sizes.split_last().unwrap();
    assert!(whole.iter().all(|&n| n == roomshard_bundle::FRAME_BYTES));
    assert!(*last > 0 && *last <= roomshard_bundle::FRAME_BYTES);

    let report = roomshard_verify::verify_reader(
        one.as_slice(),
        trusted_keys_for(&signer()),
        roomshard_verify::VerifyOptions::default(),
    );
    assert!(report.valid, "{:?}", report.error);
}

#[test]
fn hashing_writer_digest_is_the_archive_digest() {
    let done = write_bundle();
    let bytes_written = done.out.bytes_written();
    let live = done.out.sha256();
    let (archive, digest) = done.out.into_parts();
    assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&archive)));
    assert_eq!(live, digest);
    assert_eq!(bytes_written, archive.len() as u64);
}

#[test]
fn two_step_signing_matches_finish() {
    let (sql, rows) = db_sql();
    let s = signer();
    let mut w = BundleWriter::new(
        HashingWriter::new(Vec::new()),
        meta(),
        WriterOptions::default(),
    )
    .unwrap();
    w.add_db_sql(sql.len() as u64, sql.as_slice()).unwrap();
    for (key, bytes) in media() {
        w.add_media(&key, bytes.len() as u64, bytes.as_slice())
            .unwrap();
    }
    let pending = w.finish_manifest(&rows, s.key_id(), s.algorithm()).unwrap();
    assert_eq!(pending.manifest().signature.key_id, s.key_id());
    let sig = s.sign(pending.manifest_bytes()).unwrap();
    let done = pending.write_signature(&sig).unwrap();
    let one_step = write_bundle();
    assert_eq!(done.manifest_bytes, one_step.manifest_bytes);
    assert!(done.out.into_parts().0 == one_step.out.into_parts().0);
}

fn writer() -> BundleWriter<Vec<u8>> {
    BundleWriter::new(Vec::new(), meta(), WriterOptions::default()).unwrap()
}

fn writer_with_sql() -> (BundleWriter<Vec<u8>>, Vec<u64>) {
    let (sql, rows) = db_sql();
    let mut w = writer();
    w.add_db_sql(sql.len() as u64, sql.as_slice()).unwrap();
    (w, rows)
}

fn assert_invalid<T>(r: Result<T, BundleError>, what: &str) {
    match r {
        Err(BundleError::Invalid { .. }) => {}
        Err(e) => panic!("{what}: expected Invalid, got {e}"),
        Ok(_) => panic!("{what}: expected Invalid, got Ok"),
    }
}

#[test]
fn pending_signature_rejects_malformed_signatures() {
    let (w, rows) = writer_with_sql();
    let pending = w
        .finish_manifest(&rows, signer().key_id(), Algorithm::EcdsaP256Sha256)
        .unwrap();
    match pending.write_signature(&[1, 2, 3]) {
        Err(BundleError::Signing { .. }) => {}
        other => panic!("expected Signing, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn misuse_is_invalid() {
    // Media before db.sql.
    assert_invalid(writer().add_media("a", 1, &b"x"[..]), "media first");
    // finish without db.sql.
    assert_invalid(writer().finish(&[0, 0, 0], &signer()), "no db.sql");
    // db.sql twice.
    let (mut w, _) = writer_with_sql();
    assert_invalid(w.add_db_sql(1, &b"x"[..]), "db.sql twice");
    // Media out of order, and duplicate.
    let (mut w, rows) = writer_with_sql();
    w.add_media("b", 1, &b"x"[..]).unwrap();
    assert_invalid(w.add_media("a", 1, &b"x"[..]), "out of order");
    assert_invalid(w.add_media("b", 1, &b"x"[..]), "duplicate");
    // The writer is still usable after refused (unwritten) media.
    w.add_media("c", 1, &b"x"[..]).unwrap();
    // Row counts must match the tables.
    assert_invalid(w.finish(&rows[..2], &signer()), "row counts");
    // Keys no entry path can spell: empty, or too long for a tar header.
    let long = "x".repeat(200);
    for key in ["", &long] {
        let (mut w, _) = writer_with_sql();
        assert_invalid(w.add_media(key, 1, &b"x"[..]), key);
    }
    // Hostile keys are written under escaped names (docs/bundle-format.md §2.1), never as
    // paths that leave the extraction directory.
    for (key, path) in [
        ("../etc/passwd", "media/%2e./etc/passwd"),
        ("a/../b", "media/a/%2e./b"),
        ("a//b", "media/a%2f/b"),
        ("./a", "media/%2e/a"),
        ("a/", "media/a%2f"),
        ("/abs", "media/%2fabs"),
        ("a\\b", "media/a%5cb"),
        ("tab\there", "media/tab%09here"),
    ] {
        let (mut w, rows) = writer_with_sql();
        w.add_media(key, 1, &b"x"[..]).unwrap();
        let done = w.finish(&rows, &signer()).unwrap();
        let paths: Vec<&str> = done
            .manifest
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(paths, ["db.sql", path], "{key:?}");
    }
    // A path twin of an earlier entry is refused, as a verifier would.
    let (mut w, _) = writer_with_sql();
    w.add_media_path("media/Readme", 1, &b"x"[..]).unwrap();
    assert_invalid(w.add_media_path("media/readme", 1, &b"x"[..]), "case twin");
    let (mut w, _) = writer_with_sql();
    assert_invalid(w.add_media_path("media/50%", 1, &b"x"[..]), "bad escape");
    // Bad metadata and options.
    let mut m = meta();
    m.room.id = "General".into();
    assert_invalid(
        BundleWriter::new(Vec::new(), m, WriterOptions::default()),
        "room id",
    );
    let mut m = meta();
    m.created_at = "2026-11-22 10:00:00".into();
    assert_invalid(
        BundleWriter::new(Vec::new(), m, WriterOptions::default()),
        "created_at",
    );
    assert_invalid(
        BundleWriter::new(
            Vec::new(),
            meta(),
            WriterOptions {
                zstd_level: 1000,
                zstd_workers: 0,
            },
        ),
        "zstd level",
    );
}

#[test]
fn short_reader_poisons_and_leaves_archive_unfinished() {
    let (mut w, rows) = writer_with_sql();
    assert_invalid(w.add_media("a", 10, &b"12345"[..]), "short reader");
    assert!(matches!(
        w.add_media("b", 1, &b"x"[..]),
        Err(BundleError::Poisoned)
    ));
    assert!(matches!(
        w.finish(&rows, &signer()),
        Err(BundleError::Poisoned)
    ));

    // What reached the output does not decode as a complete zstd stream, even after the
    // poisoned writer is dropped.
    #[derive(Clone, Default)]
    struct Shared(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let shared = Shared::default();
    let (sql, _) = db_sql();
    let mut w = BundleWriter::new(shared.clone(), meta(), WriterOptions::default()).unwrap();
    w.add_db_sql(sql.len() as u64, sql.as_slice()).unwrap();
    w.add_media("big", 1 << 20, &random_bytes(1000, 1)[..])
        .unwrap_err();
    drop(w);
    let bytes = shared.0.borrow().clone();
    assert!(
        zstd::decode_all(bytes.as_slice()).is_err(),
        "a poisoned archive must not decode completely"
    );
}

#[test]
fn long_reader_is_invalid() {
    let (mut w, _) = writer_with_sql();
    assert_invalid(w.add_media("a", 3, &b"12345"[..]), "long reader");
    assert!(matches!(
        w.add_media("b", 1, &b"x"[..]),
        Err(BundleError::Poisoned)
    ));
}

#[test]
fn empty_media_and_long_path_split() {
    // A 0-byte object and a path longer than 100 bytes (ustar prefix split) are fine.
    let (sql, rows) = db_sql();
    let long_key = format!("{}/{}", "d".repeat(120), "f".repeat(60));
    let mut w = BundleWriter::new(
        HashingWriter::new(Vec::new()),
        meta(),
        WriterOptions::default(),
    )
    .unwrap();
    w.add_db_sql(sql.len() as u64, sql.as_slice()).unwrap();
    w.add_media("a/empty", 0, std::io::empty()).unwrap();
    w.add_media(&long_key, 2, &b"hi"[..]).unwrap();
    let done = w.finish(&rows, &signer()).unwrap();
    let (archive, _) = done.out.into_parts();
    let entries = entries(&archive);
    assert_eq!(
        String::from_utf8(entries[2].0.path_bytes().into_owned()).unwrap(),
        format!("media/{long_key}")
    );
    assert_eq!(entries[1].1, b"");
    assert_eq!(entries[2].1, b"hi");
}

#[test]
fn unsplittable_path_is_invalid_and_not_poisoning() {
    // 156 bytes with a 150-byte last component: no ustar name/prefix split exists.
    let (mut w, rows) = writer_with_sql();
    assert_invalid(w.add_media(&"x".repeat(150), 1, &b"x"[..]), "unsplittable");
    w.add_media("y", 1, &b"y"[..]).unwrap();
    w.finish(&rows, &signer()).unwrap();
}

#[test]
fn writer_refuses_a_bundle_with_more_entries_than_a_default_verifier_accepts() {
    let (mut w, _) = writer_with_sql();
    let max = roomshard_verify::VerifyLimits::default().max_entries;
    // db.sql + manifest.json + export.signature leave room for max - 3 media objects.
    for i in 0..max - 3 {
        w.add_media(&format!("m/{i:08}"), 0, &b""[..])
            .expect("within the limit");
    }
    let err = w.add_media("m/zzzzzzzz", 0, &b""[..]);
    assert_invalid(err, "would make");
}
