//! `db.sql` text: exact output, value checks, ordering rules, escaping round trip.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use proptest::prelude::*;
use roomshard_bundle::{BundleError, CopyValue, DbSqlWriter};
use roomshard_verify::format::{ColumnDescriptor, LogicalType, TableDescriptor};

#[test]
fn exact_text() {
    let (sql, rows) = db_sql();
    let sql = String::from_utf8(sql).unwrap();
    let expected = concat!(
        "-- roomshard bundle v1: room general\n",
        "SET client_encoding = 'UTF8';\n",
        "SET standard_conforming_strings = on;\n",
        "CREATE TABLE \"messages\" (\"id\" bigint NOT NULL, \"room_id\" text NOT NULL, \"reply_to\" bigint, \"body\" text, \"sent_at\" timestamp with time zone NOT NULL, \"attachment\" text, PRIMARY KEY (\"id\"));\n",
        "CREATE TABLE \"reactions\" (\"id\" bigint NOT NULL, \"room_id\" text NOT NULL, \"message_id\" bigint NOT NULL, \"emoji\" text NOT NULL, PRIMARY KEY (\"id\"));\n",
        "CREATE TABLE \"members\" (\"user_id\" uuid NOT NULL, \"room_id\" text NOT NULL, \"level\" integer, \"is_admin\" boolean NOT NULL, \"score\" double precision, \"profile\" jsonb, \"pubkey\" bytea, PRIMARY KEY (\"user_id\", \"room_id\"));\n",
        "COPY \"messages\" (\"id\", \"room_id\", \"reply_to\", \"body\", \"sent_at\", \"attachment\") FROM stdin;\n",
        "1\tgeneral\t\\N\thello\\tworld\\nsecond line\\\\ back\\rslash\t2026-11-22 09:00:00+00\tatt/1.png\n",
        "2\tgeneral\t1\tünïcödé 🎉 \\\\N not null\t2026-11-22 09:01:00.123456+00\t\\N\n",
        "9223372036854775807\tgeneral\t\\N\t\\N\t2026-11-22 09:02:00.5+00\tatt/2.txt\n",
        "\\.\n",
        "COPY \"reactions\" (\"id\", \"room_id\", \"message_id\", \"emoji\") FROM stdin;\n",
        "\\.\n",
        "COPY \"members\" (\"user_id\", \"room_id\", \"level\", \"is_admin\", \"score\", \"profile\", \"pubkey\") FROM stdin;\n",
        "123e4567-e89b-12d3-a456-426614174000\tgeneral\t-7\tt\t0.1\t{\"bio\":\"tab\\\\there\",\"n\":[1,2]}\t\\\\x0001feff\n",
        "00000000-0000-0000-0000-000000000001\tgeneral\t\\N\tf\t-Infinity\t\\N\t\\N\n",
        "00000000-0000-0000-0000-000000000002\tgeneral\t-2147483648\tf\tNaN\tnull\t\\\\x\n",
        "\\.\n",
    );
    assert_eq!(sql, expected);
    assert_eq!(rows, [3, 0, 3]);
}

fn one_table(columns: Vec<(&str, LogicalType, bool)>) -> Vec<TableDescriptor> {
    vec![TableDescriptor {
        name: "t".into(),
        columns: columns
            .into_iter()
            .map(|(n, t, nullable)| ColumnDescriptor {
                name: n.into(),
                logical_type: t,
                nullable,
                references: None,
            })
            .collect(),
        primary_key: vec!["id".into()],
        room_key_column: "id".into(),
        id_columns: vec![],
        media_columns: vec![],
    }]
}

fn assert_invalid<T: std::fmt::Debug>(r: Result<T, BundleError>, what: &str) {
    assert!(
        matches!(r, Err(BundleError::Invalid { .. })),
        "{what}: expected Invalid, got {r:?}"
    );
}

#[test]
fn tables_never_begun_get_empty_blocks() {
    let w = DbSqlWriter::new(Vec::new(), "general", &tables()).unwrap();
    let (out, rows) = w.finish().unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(rows, [0, 0, 0]);
    assert_eq!(text.matches(" FROM stdin;\n\\.\n").count(), 3);

    // Skipping ahead writes the skipped tables' empty blocks in order.
    let mut w = DbSqlWriter::new(Vec::new(), "general", &tables()).unwrap();
    w.begin_table("members").unwrap();
    let size = w.bytes_written();
    let (out, _) = w.finish().unwrap();
    assert_eq!(size + 3, out.len() as u64); // only "\\.\n" after
    let text = String::from_utf8(out).unwrap();
    let messages = text.find("COPY \"messages\"").unwrap();
    let reactions = text.find("COPY \"reactions\"").unwrap();
    let members = text.find("COPY \"members\"").unwrap();
    assert!(messages < reactions && reactions < members);
}

#[test]
fn order_rules() {
    let mut w = DbSqlWriter::new(Vec::new(), "general", &tables()).unwrap();
    assert_invalid(w.write_row(&[]), "row before begin_table");
    assert_invalid(w.begin_table("nope"), "unknown table");
    w.begin_table("reactions").unwrap();
    assert_invalid(w.begin_table("messages"), "passed over");
    assert_invalid(w.begin_table("reactions"), "twice");
    w.begin_table("members").unwrap();
    let (_, rows) = w.finish().unwrap();
    assert_eq!(rows, [0, 0, 0]);
}

#[test]
fn value_checks() {
    use CopyValue::*;
    let t = one_table(vec![
        ("id", LogicalType::Int8, false),
        ("s", LogicalType::Text, true),
        ("j", LogicalType::Jsonb, true),
        ("u", LogicalType::Uuid, true),
        ("ts", LogicalType::Timestamptz, true),
    ]);
    let mut w = DbSqlWriter::new(Vec::new(), "r1", &t).unwrap();
    w.begin_table("t").unwrap();
    let ok = [Int8(1), Null, Null, Null, Null];
    w.write_row(&ok).unwrap();
    assert_invalid(w.write_row(&ok[..4]), "too few fields");
    assert_invalid(
        w.write_row(&[Int8(1), Null, Null, Null, Null, Null]),
        "too many",
    );
    assert_invalid(
        w.write_row(&[Null, Null, Null, Null, Null]),
        "NULL non-nullable",
    );
    assert_invalid(
        w.write_row(&[Int4(1), Null, Null, Null, Null]),
        "int4 into int8",
    );
    assert_invalid(
        w.write_row(&[Text("1".into()), Null, Null, Null, Null]),
        "text into int8",
    );
    assert_invalid(
        w.write_row(&[Int8(1), Text("a\0b".into()), Null, Null, Null]),
        "NUL in text",
    );
    assert_invalid(
        w.write_row(&[Int8(1), Null, Jsonb("{nope".into()), Null, Null]),
        "bad json",
    );
    assert_invalid(
        w.write_row(&[Int8(1), Null, Null, Uuid("not-a-uuid".into()), Null]),
        "bad uuid",
    );
    assert_invalid(
        w.write_row(&[
            Int8(1),
            Null,
            Null,
            Null,
            Timestamptz("2026-11-22T10:00:00Z".into()),
        ]),
        "bad timestamp",
    );
    // Refused rows wrote nothing and did not count.
    let (out, rows) = w.finish().unwrap();
    assert_eq!(rows, [1]);
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains("FROM stdin;\n1\t\\N\t\\N\t\\N\t\\N\n\\.\n")
    );
}

#[test]
fn invalid_descriptors_and_room() {
    assert_invalid(
        DbSqlWriter::new(Vec::new(), "Bad Room", &tables()),
        "room id",
    );
    let mut t = tables();
    t[0].name = "Messages".into();
    assert_invalid(DbSqlWriter::new(Vec::new(), "general", &t), "identifier");
}

/// Undoes COPY text escaping of one field (`\\`, `\t`, `\n`, `\r`).
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('\\') => out.push('\\'),
                other => panic!("unexpected escape {other:?}"),
            }
        } else {
            out.push(c);
        }
    }
    out
}

proptest! {
    #[test]
    fn text_round_trips(values in proptest::collection::vec("[^\u{0}]*", 1..4)) {
        let t = one_table(vec![
            ("id", LogicalType::Int8, false),
            ("a", LogicalType::Text, false),
            ("b", LogicalType::Text, false),
            ("c", LogicalType::Text, false),
        ]);
        let mut w = DbSqlWriter::new(Vec::new(), "r", &t).unwrap();
        w.begin_table("t").unwrap();
        let mut row = vec![CopyValue::Int8(1)];
        let mut texts = values.clone();
        texts.resize(3, String::new());
        row.extend(texts.iter().cloned().map(CopyValue::Text));
        w.write_row(&row).unwrap();
        let (out, _) = w.finish().unwrap();
        let text = String::from_utf8(out).unwrap();
        let data = text.split("FROM stdin;\n").nth(1).unwrap();
        let line = data.strip_suffix("\n\\.\n").unwrap();
        prop_assert!(!line.contains('\n') && !line.contains('\r'));
        let fields: Vec<&str> = line.split('\t').collect();
        prop_assert_eq!(fields.len(), 4);
        for (field, original) in fields[1..].iter().zip(&texts) {
            prop_assert_eq!(&unescape(field), original);
        }
    }

    #[test]
    fn floats_round_trip(bits in any::<u64>()) {
        let v = f64::from_bits(bits);
        let s = roomshard_verify::copy::format_float8(v);
        let back: f64 = match s.as_str() {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            other => other.parse().unwrap(),
        };
        prop_assert!(back.to_bits() == v.to_bits() || (v.is_nan() && back.is_nan()));
    }
}
