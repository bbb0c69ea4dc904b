//! Restore → dump round trips over every logical type: the bytes out are the bytes in.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod shard_support;

use proptest::prelude::*;
use roomshard_bundle::CopyValue;
use roomshard_core::{IdRemap, LogicalType, RoomSchema, ShardStore, Table};
use shard_support::*;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

fn all_types_schema() -> RoomSchema {
    use LogicalType::*;
    let t = Table::new("every_type")
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
        .column("by", Bytea)
        .column("j", Jsonb)
        .column("u", Uuid)
        .build()
        .unwrap();
    let k = Table::new("text_keyed")
        .column("k", Text)
        .primary_key()
        .id()
        .column("room_id", Text)
        .room_key()
        .column("f", Float8)
        .not_null()
        .build()
        .unwrap();
    RoomSchema::new("rt-1", vec![t, k]).unwrap()
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fn shared_env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| runtime().block_on(env(7)))
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..40)
            .prop_map(|c| c.into_iter().collect()),
        prop::collection::vec(
            prop::sample::select(vec![
                "\t", "\n", "\r", "\\", "\\N", "\\.", "é", "🇫🇷", "a", " "
            ]),
            0..20
        )
        .prop_map(|p| p.concat()),
    ]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(0.0),
        Just(1e15),
        Just(1e-5),
        Just(5e-324),
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
        0u32..10000,
        1u32..13,
        1u32..29,
        0u32..24,
        0u32..60,
        0u32..60,
        prop::option::of((1usize..7, 0u32..1_000_000)),
    )
        .prop_map(|(y, mo, d, h, mi, s, frac)| {
            let mut out = format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}");
            if let Some((digits, v)) = frac {
                let f = format!("{v:06}");
                out.push('.');
                out.push_str(&f[..digits]);
            }
            out.push_str("+00");
            out
        })
}

fn json() -> impl Strategy<Value = String> {
    prop_oneof![
        text().prop_map(|s| serde_json::to_string(&s).unwrap()),
        any::<i64>().prop_map(|v| v.to_string()),
        Just("{\"a\": [1, 2, {\"b\": null}], \"c\": \"\\t\"}".to_string()),
        Just("  [ ]  ".to_string()),
    ]
}

fn uuid() -> impl Strategy<Value = String> {
    (any::<u128>(), any::<bool>()).prop_map(|(v, upper)| {
        let s = uuid::Uuid::from_u128(v).hyphenated().to_string();
        if upper { s.to_uppercase() } else { s }
    })
}

fn row(id: i64) -> impl Strategy<Value = Vec<CopyValue>> {
    (
        nullable(text(), CopyValue::Text),
        nullable(any::<i32>(), CopyValue::Int4),
        nullable(any::<bool>(), CopyValue::Bool),
        nullable(float(), CopyValue::Float8),
        nullable(timestamp(), CopyValue::Timestamptz),
        nullable(prop::collection::vec(any::<u8>(), 0..64), CopyValue::Bytea),
        nullable(json(), CopyValue::Jsonb),
        nullable(uuid(), CopyValue::Uuid),
    )
        .prop_map(move |(t, i4, b, f, ts, by, j, u)| {
            vec![
                CopyValue::Int8(id),
                CopyValue::Text("ignored".into()),
                t,
                i4,
                b,
                f,
                ts,
                by,
                j,
                u,
            ]
        })
}

fn rows() -> impl Strategy<Value = (Vec<Vec<CopyValue>>, Vec<Vec<CopyValue>>)> {
    let every = prop::collection::btree_set(any::<i64>(), 0..12)
        .prop_flat_map(|ids| ids.into_iter().map(row).collect::<Vec<_>>());
    let keyed = prop::collection::btree_map(text(), float(), 0..8).prop_map(|m| {
        m.into_iter()
            .map(|(k, f)| {
                vec![
                    CopyValue::Text(k),
                    CopyValue::Text("x".into()),
                    CopyValue::Float8(f),
                ]
            })
            .collect::<Vec<_>>()
    });
    (every, keyed)
}

/// Restores `rows` (written by `DbSqlWriter`) into a fresh shard and dumps it back.
fn round_trip(schema: &RoomSchema, rows: Vec<Vec<Vec<CopyValue>>>) -> (Vec<u8>, Vec<u8>) {
    static N: AtomicU32 = AtomicU32::new(0);
    let id = format!("rt-{}", N.fetch_add(1, Ordering::Relaxed));
    // Rows carry another room's id: restore must set the scope's.
    let rows_in: Vec<Vec<Vec<CopyValue>>> = rows.clone();
    let sql_in = db_sql_sorted("elsewhere", schema.tables(), rows_in);
    let mut rows_out = rows;
    for t in rows_out.iter_mut() {
        for r in t.iter_mut() {
            r[1] = CopyValue::Text(id.clone());
        }
    }
    let expected = db_sql_sorted(&id, schema.tables(), rows_out);
    let e = shared_env();
    let room = room(&id);
    let scope = dedicated(&e.store, &room);
    let got = runtime().block_on(async {
        e.store
            .ensure_shard(&room, &at(&e.store, &room), schema)
            .await
            .unwrap();
        e.store
            .restore(
                &scope,
                schema,
                &mut VecSource::from_db_sql(&sql_in),
                &IdRemap::default(),
            )
            .await
            .unwrap();
        let mut sink = DbSqlSink::new(&id, schema.tables());
        e.store.dump(&scope, schema, &mut sink).await.unwrap();
        e.store.drop_room(&scope, schema).await.unwrap();
        sink.out
    });
    (got, expected)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn restore_then_dump_gives_identical_bytes((every, keyed) in rows()) {
        let schema = all_types_schema();
        let (got, expected) = round_trip(&schema, vec![every, keyed]);
        prop_assert!(got == expected, "\n got: {}\nwant: {}",
            String::from_utf8_lossy(&got), String::from_utf8_lossy(&expected));
    }
}

#[test]
fn empty_tables_and_very_long_text_round_trip() {
    let schema = all_types_schema();
    let (got, expected) = round_trip(&schema, vec![Vec::new(), Vec::new()]);
    assert_eq!(got, expected);

    let long: String = "tab\there\nback\\slash é 🇫🇷 ".repeat(40_000);
    let mut r = vec![CopyValue::Null; 10];
    r[0] = CopyValue::Int8(1);
    r[1] = CopyValue::Text("x".into());
    r[2] = CopyValue::Text(long);
    r[7] = CopyValue::Bytea((0..=255u8).cycle().take(300_000).collect());
    let (got, expected) = round_trip(&schema, vec![vec![r], Vec::new()]);
    assert!(got.len() > 1_000_000);
    assert!(got == expected);
}

#[test]
fn corrupt_values_are_refused_with_table_and_row() {
    let schema = all_types_schema();
    let e = shared_env();
    let room = room("corrupt-rows");
    let scope = dedicated(&e.store, &room);
    let good = "1\tx\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n";
    let bad_fields = [
        "2\tx\t\\N\t2147483648\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n",
        "2\tx\t\\N\t\\N\ttrue\t\\N\t\\N\t\\N\t\\N\t\\N\n",
        "2\tx\t\\N\t\\N\t\\N\tinf\t\\N\t\\N\t\\N\t\\N\n",
        "2\tx\t\\N\t\\N\t\\N\t\\N\t2026-01-01T00:00:00Z\t\\N\t\\N\t\\N\n",
        "2\tx\t\\N\t\\N\t\\N\t\\N\t\\N\t\\\\x0\t\\N\t\\N\n",
        "2\tx\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t{bad\t\\N\n",
        "2\tx\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\tnot-a-uuid\n",
        "2\tx\t\\N\n",
        "\\N\tx\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n",
        "2\tx\ta\\0b\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n",
        "2\tx\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N",
    ];
    runtime().block_on(async {
        e.store
            .ensure_shard(&room, &at(&e.store, &room), &schema)
            .await
            .unwrap();
        for bad in bad_fields {
            let rows = format!("{good}{bad}").into_bytes();
            let err = e
                .store
                .restore(
                    &scope,
                    &schema,
                    &mut VecSource::new(vec![("every_type".into(), rows)]),
                    &IdRemap::default(),
                )
                .await
                .unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, roomshard_core::Error::Corrupt { .. })
                    && msg.contains("every_type")
                    && msg.contains("row 2"),
                "{bad:?}: {msg}"
            );
        }
        let mut sink = TablesSink::default();
        e.store.dump(&scope, &schema, &mut sink).await.unwrap();
        assert!(sink.tables.iter().all(|t| t.2 == 0), "nothing was restored");
    });
}
