//! Property: any room (every logical type, NULLs, unicode and escapes, bytea, empty tables, very
//! long rows, media of any bytes) survives export → verify → import unchanged, modulo its new id.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::*;
use proptest::prelude::*;
use roomshard::flows::{ExportOptions, ImportOptions, export_to_dir, import_file};
use roomshard::{RoomId, RoomSchema};
use roomshard_bundle::CopyValue;
use roomshard_core::{LogicalType, NoProgress, Scope, Table};
use roomshard_verify::{TrustedKeys, VerifyOptions, verify_reader};

/// A fixture schema with a column of every logical type, a text id referenced from another
/// table, a media column and a table that stays empty.
fn fixture_schema() -> RoomSchema {
    use LogicalType::*;
    let things = Table::new("things")
        .column("id", Int8)
        .primary_key()
        .id()
        .column("room_id", Text)
        .room_key()
        .column("t", Text)
        .column("i4", Int4)
        .column("b", Bool)
        .column("f", Float8)
        .column("ts", Timestamptz)
        .column("bin", Bytea)
        .column("doc", Jsonb)
        .column("u", Uuid)
        .column("object_key", Text)
        .media()
        .build()
        .unwrap();
    let notes = Table::new("notes")
        .column("id", Text)
        .primary_key()
        .id()
        .column("room_id", Text)
        .room_key()
        .column("thing_id", Int8)
        .not_null()
        .references("things", "id")
        .column("body", Text)
        .not_null()
        .build()
        .unwrap();
    let empty = Table::new("empty_t")
        .column("k", Text)
        .primary_key()
        .column("room_id", Text)
        .room_key()
        .build()
        .unwrap();
    RoomSchema::new("fixture-1", vec![things, notes, empty]).unwrap()
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z\t\n\r\\\\ é€🌐\"'ß]{0,24}",
        1 => Just("\\N".to_string()),
        1 => Just(".".to_string()),
        1 => (1usize..3).prop_map(|n| "long\\row\t".repeat(n * 4000)),
    ]
}

fn nullable<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
    f: fn(T) -> CopyValue,
) -> BoxedStrategy<CopyValue> {
    prop_oneof![1 => Just(CopyValue::Null), 4 => s.prop_map(f)].boxed()
}

fn timestamp() -> impl Strategy<Value = String> {
    (
        1970u32..2100,
        1u32..13,
        1u32..29,
        0u32..24,
        0u32..60,
        0u32..60,
        prop::option::of(0u32..1_000_000),
    )
        .prop_map(|(y, mo, d, h, mi, s, frac)| {
            let f = frac.map(|f| format!(".{f:06}")).unwrap_or_default();
            format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}{f}+00")
        })
}

fn uuid() -> impl Strategy<Value = String> {
    any::<u128>().prop_map(|v| {
        let h = format!("{v:032x}");
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    })
}

fn json() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{}".to_string()),
        Just("[1, 2.5, null, true]".to_string()),
        "[a-z🌐\t ]{0,10}".prop_map(|s| serde_json::json!({ "k": s, "n": [1, 2] }).to_string()),
    ]
}

/// One `things` row, without its id and room.
fn thing() -> impl Strategy<Value = Vec<CopyValue>> {
    (
        nullable(text(), CopyValue::Text),
        nullable(any::<i32>(), CopyValue::Int4),
        nullable(any::<bool>(), CopyValue::Bool),
        nullable(-1e15f64..1e15, CopyValue::Float8),
        nullable(timestamp(), CopyValue::Timestamptz),
        nullable(prop::collection::vec(any::<u8>(), 0..64), CopyValue::Bytea),
        nullable(json(), CopyValue::Jsonb),
        nullable(uuid(), CopyValue::Uuid),
        nullable("m/[0-3]", CopyValue::Text),
    )
        .prop_map(|(t, i, b, f, ts, bin, doc, u, key)| vec![t, i, b, f, ts, bin, doc, u, key])
}

#[derive(Debug, Clone)]
struct Room {
    things: Vec<Vec<CopyValue>>,
    notes: Vec<String>,
    media: Vec<Vec<u8>>,
}

fn room() -> impl Strategy<Value = Room> {
    (
        prop::collection::vec(thing(), 0..6),
        prop::collection::vec(text(), 0..5),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..3000), 0..4),
    )
        .prop_map(|(things, notes, media)| Room {
            things,
            notes,
            media,
        })
}

async fn round_trip(room_data: Room) {
    let tmp = tempfile::tempdir().unwrap();
    let a = open_home(&tmp.path().join("a"), fixture_schema()).await;
    let b = open_home(&tmp.path().join("b"), fixture_schema()).await;
    let id = RoomId::new("prop-room").unwrap();
    let scope = Scope::Pooled(id.clone());
    let tables = a.roomshard.schema.tables().to_vec();
    let things: Vec<Vec<CopyValue>> = room_data
        .things
        .iter()
        .enumerate()
        .map(|(i, rest)| {
            let mut row = vec![
                CopyValue::Int8(i as i64 + 1),
                CopyValue::Text(id.to_string()),
            ];
            row.extend(rest.iter().cloned());
            row
        })
        .collect();
    // Notes need a thing to point at.
    let notes: Vec<Vec<CopyValue>> = if things.is_empty() {
        Vec::new()
    } else {
        room_data
            .notes
            .iter()
            .enumerate()
            .map(|(i, body)| {
                vec![
                    CopyValue::Text(format!("n{i}")),
                    CopyValue::Text(id.to_string()),
                    CopyValue::Int8((i % things.len()) as i64 + 1),
                    CopyValue::Text(body.clone()),
                ]
            })
            .collect()
    };
    seed_rows(
        &a.roomshard,
        &scope,
        vec![
            ("things".into(), copy_text(&tables, "things", things)),
            ("notes".into(), copy_text(&tables, "notes", notes)),
            ("empty_t".into(), Vec::new()),
        ],
    )
    .await;
    // Placed, so even an empty room exports (an unplaced room without rows is "not found").
    insert_placement(&a.roomshard, &roomshard::Placement::pooled(id.clone())).await;
    for (i, bytes) in room_data.media.iter().enumerate() {
        put(&a.roomshard, &scope, &format!("m/{i}"), bytes.clone()).await;
    }

    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let (archive, _, _) = export_to_dir(
        &a.roomshard,
        &id,
        &out,
        &ExportOptions::default(),
        &NoProgress,
    )
    .await
    .expect("export");
    let keys = TrustedKeys::from_json(&std::fs::read(a.trusted_keys_path()).unwrap()).unwrap();
    let report = verify_reader(
        std::fs::File::open(&archive).unwrap(),
        keys.clone(),
        VerifyOptions::default(),
    );
    assert!(report.valid, "{:?}", report.error);

    let imported = import_file(
        &b.roomshard,
        &archive,
        &keys,
        &ImportOptions::default(),
        &NoProgress,
    )
    .await
    .expect("import");
    let new = imported.new_room;
    let before = dump_text(&a.roomshard, &scope).await;
    let after = dump_text(&b.roomshard, &Scope::Pooled(new.clone())).await;
    assert_eq!(with_room(&after, new.as_str(), id.as_str()), before);
    assert_eq!(before["empty_t"], "");
    assert_eq!(
        objects(&b.roomshard, &Scope::Pooled(new)).await,
        objects(&a.roomshard, &scope).await
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_room_round_trips(room_data in room()) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(round_trip(room_data));
    }
}
