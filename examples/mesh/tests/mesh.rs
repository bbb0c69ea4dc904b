//! The reference schema validates; generated rooms write, bundle and verify; output is
//! deterministic; every reference resolves.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashSet};
use std::io::{Cursor, Read};

use roomshard_bundle::{CopyValue, LocalP256Signer};
use roomshard_core::RoomSchema;
use roomshard_example_mesh::{Media, TABLES, Workload, schema};
use roomshard_verify::{KeySet, TrustedKeys, VerifyOptions, verify_reader};

fn small() -> Workload {
    Workload {
        seed: 42,
        room_id: "mesh-test".into(),
        messages: 200,
        media: Media::Count {
            count: 4,
            min: 64 * 1024,
            max: 256 * 1024,
            compressible_percent: 50,
        },
    }
}

fn rows(w: &Workload, table: &str) -> Vec<Vec<CopyValue>> {
    w.rows(table).unwrap().collect()
}

fn int(v: &CopyValue) -> Option<i64> {
    match v {
        CopyValue::Int8(i) => Some(*i),
        _ => None,
    }
}

#[test]
fn schema_validates_and_round_trips() {
    let s = schema();
    assert_eq!(s.version(), "mesh-1");
    let names: Vec<_> = s.tables().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, TABLES);
    assert_eq!(
        s.table("attachments").unwrap().media_columns,
        ["object_key"]
    );
    assert_eq!(
        s.table("reactions").unwrap().primary_key,
        ["message_id", "member_id", "emoji"]
    );
    let json = serde_json::to_string(&s).unwrap();
    let back: RoomSchema = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
}

#[test]
fn rows_match_descriptors() {
    let w = small();
    let s = schema();
    for t in s.tables() {
        for row in rows(&w, &t.name) {
            assert_eq!(row.len(), t.columns.len(), "{}", t.name);
            for (v, c) in row.iter().zip(&t.columns) {
                match v.logical_type() {
                    None => assert!(c.nullable, "{}.{}", t.name, c.name),
                    Some(ty) => assert_eq!(ty, c.logical_type, "{}.{}", t.name, c.name),
                }
            }
        }
    }
    assert!(w.rows("nope").is_none());
}

#[test]
fn same_seed_same_bytes_other_seed_differs() {
    let w = small();
    let sign = LocalP256Signer::from_seed([9; 32], None).unwrap();
    let a = w
        .write_bundle(
            Vec::new(),
            Cursor::new(Vec::new()),
            &sign,
            "2026-06-01T12:00:00Z",
        )
        .unwrap();
    let b = w
        .write_bundle(
            Vec::new(),
            Cursor::new(Vec::new()),
            &sign,
            "2026-06-01T12:00:00Z",
        )
        .unwrap();
    assert_eq!(a.out, b.out);
    let other = Workload {
        seed: 43,
        ..small()
    };
    let mut x = Vec::new();
    let mut y = Vec::new();
    w.write_db_sql(&mut x).unwrap();
    other.write_db_sql(&mut y).unwrap();
    assert_ne!(x, y);
    for m in w.media_objects() {
        let (mut p, mut q) = (Vec::new(), Vec::new());
        m.reader().read_to_end(&mut p).unwrap();
        m.reader().read_to_end(&mut q).unwrap();
        assert_eq!(p, q);
        assert_eq!(p.len() as u64, m.size);
        if m.compressible {
            // Text, except perhaps a character cut at the very end.
            let valid = std::str::from_utf8(&p).map_or_else(|e| e.valid_up_to(), |s| s.len());
            assert!(valid + 4 > p.len());
        }
    }
}

#[test]
fn bundle_verifies_with_expected_row_counts() {
    let w = small();
    let signer = LocalP256Signer::generate(None).unwrap();
    let done = w
        .write_bundle(
            Vec::new(),
            Cursor::new(Vec::new()),
            &signer,
            "2026-06-01T12:00:00Z",
        )
        .unwrap();
    let keys = TrustedKeys::new(KeySet {
        keys: vec![signer.trusted_key(None, None).unwrap()],
    })
    .unwrap();
    let report = verify_reader(&done.out[..], keys, VerifyOptions::default());
    assert!(report.valid, "{:?}", report.error);
    let expected: Vec<u64> = TABLES
        .iter()
        .map(|t| w.rows(t).unwrap().count() as u64)
        .collect();
    assert_eq!(expected[0], 1);
    assert_eq!(expected[1], w.members());
    assert_eq!(expected[2], 200);
    assert_eq!(expected[3], 4);
    assert!(expected[4] > 0);
    let found: Vec<(String, Option<u64>)> = report
        .tables
        .iter()
        .map(|t| (t.name.clone(), t.found_rows))
        .collect();
    let want: Vec<(String, Option<u64>)> = TABLES
        .iter()
        .zip(&expected)
        .map(|(t, n)| (t.to_string(), Some(*n)))
        .collect();
    assert_eq!(found, want);
    let media_files = report
        .files
        .iter()
        .filter(|f| f.path.starts_with("media/"))
        .count();
    assert_eq!(media_files, 4);
}

#[test]
fn every_reference_resolves() {
    let w = small();
    let members: HashSet<i64> = rows(&w, "members")
        .iter()
        .map(|r| int(&r[0]).unwrap())
        .collect();
    let messages = rows(&w, "messages");
    let ids: HashSet<i64> = messages.iter().map(|r| int(&r[0]).unwrap()).collect();
    let mut replies = 0;
    let mut null_bodies = 0;
    for r in &messages {
        let id = int(&r[0]).unwrap();
        assert!(members.contains(&int(&r[2]).unwrap()));
        if let Some(to) = int(&r[4]) {
            assert!(to < id && ids.contains(&to));
            replies += 1;
        }
        match &r[3] {
            CopyValue::Null => null_bodies += 1,
            CopyValue::Text(b) => {
                let n = b.chars().count();
                assert!((20..=2000).contains(&n), "{n}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(replies > 0);
    assert!(null_bodies > 0);
    let keys: BTreeSet<String> = w.media_objects().into_iter().map(|m| m.key).collect();
    let sorted: Vec<String> = w.media_objects().into_iter().map(|m| m.key).collect();
    assert!(sorted.windows(2).all(|p| p[0] < p[1]));
    for r in rows(&w, "attachments") {
        assert!(ids.contains(&int(&r[2]).unwrap()));
        let CopyValue::Text(k) = &r[3] else { panic!() };
        assert!(keys.contains(k), "{k}");
    }
    let mut pks = HashSet::new();
    for r in rows(&w, "reactions") {
        assert!(ids.contains(&int(&r[0]).unwrap()));
        assert!(members.contains(&int(&r[2]).unwrap()));
        assert!(
            pks.insert(format!("{:?}", (&r[0], &r[2], &r[3]))),
            "duplicate key"
        );
    }
}

#[test]
fn presets_match_the_standard_workload() {
    let q = Workload::quick();
    assert_eq!(q.messages, 10_000);
    let total: u64 = q.media_objects().iter().map(|m| m.size).sum();
    assert_eq!(total, 64 * 1024 * 1024);
    assert!(q.media_objects().iter().any(|m| m.compressible));
    let f = Workload::full();
    assert_eq!(f.messages, 1_000_000);
    let total: u64 = f.media_objects().iter().map(|m| m.size).sum();
    assert_eq!(total, 1024 * 1024 * 1024);
    let sizes = Workload {
        media: Media::Sizes(vec![5, 6]),
        ..small()
    };
    assert_eq!(sizes.media_objects().len(), 2);
}

/// Polls a future that never waits (the workload's dump source and bodies are in memory).
fn ready<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("the future waited"),
    }
}

#[test]
fn dump_source_gives_the_copy_rows_of_db_sql() {
    use roomshard_core::DumpSource;
    let w = Workload {
        messages: 1500,
        ..small()
    };
    // The COPY blocks of db.sql, table by table.
    let mut sql = Vec::new();
    w.write_db_sql(&mut sql).unwrap();
    let text = String::from_utf8(sql).unwrap();
    let mut expected: Vec<(String, String)> = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.split_inclusive('\n') {
        if let Some((name, rows)) = current.as_mut() {
            if line == "\\.\n" {
                expected.push((name.clone(), std::mem::take(rows)));
                current = None;
            } else {
                rows.push_str(line);
            }
        } else if let Some(rest) = line.strip_prefix("COPY ") {
            let name = rest
                .split(' ')
                .next()
                .unwrap()
                .trim_matches('"')
                .to_string();
            let name = name
                .rsplit('.')
                .next()
                .unwrap()
                .trim_matches('"')
                .to_string();
            current = Some((name, String::new()));
        }
    }
    assert_eq!(expected.len(), TABLES.len());

    let mut source = w.dump_source();
    let mut got: Vec<(String, String)> = Vec::new();
    let mut chunks = 0;
    while let Some(table) = ready(source.next_table()).unwrap() {
        let mut rows = String::new();
        while let Some(chunk) = ready(source.next_rows()).unwrap() {
            assert!(chunk.ends_with(b"\n") && chunk.len() < 80 * 1024);
            rows.push_str(std::str::from_utf8(&chunk).unwrap());
            chunks += 1;
        }
        got.push((table, rows));
    }
    assert!(
        chunks > TABLES.len(),
        "a 1500-message room spans several chunks"
    );
    assert_eq!(
        got.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        TABLES
    );
    assert_eq!(got, expected);
    // Exhausted stays exhausted.
    assert!(ready(source.next_table()).unwrap().is_none());
}

#[test]
fn media_body_streams_the_reader_bytes() {
    for m in small().media_objects() {
        let mut expected = Vec::new();
        m.reader().read_to_end(&mut expected).unwrap();
        let body = m.body();
        assert_eq!(body.length(), Some(m.size));
        let got = ready(body.collect(u64::MAX)).unwrap();
        assert_eq!(&got[..], &expected[..], "{}", m.key);
    }
}
