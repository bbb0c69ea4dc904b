//! A fixture room shared by the integration tests: three tables (one empty) covering every
//! logical type, three media objects (one 9 MiB of pseudo-random bytes), a seeded key.
#![allow(dead_code, clippy::unwrap_used)]

use roomshard_bundle::{
    BundleMeta, BundleWriter, CopyValue, DbSqlWriter, Finished, HashingWriter, LocalP256Signer,
    Signer, WriterOptions,
};
use roomshard_verify::format::{ColumnDescriptor, LogicalType, RoomInfo, TableDescriptor};
use roomshard_verify::{KeySet, TrustedKeys};

pub const CREATED_AT: &str = "2026-11-22T10:00:00Z";

fn col(name: &str, t: LogicalType, nullable: bool) -> ColumnDescriptor {
    ColumnDescriptor::new(name, t, nullable)
}

pub fn tables() -> Vec<TableDescriptor> {
    let reply_to = col("reply_to", LogicalType::Int8, true).referencing("messages", "id");
    let message_id = col("message_id", LogicalType::Int8, false).referencing("messages", "id");
    vec![
        TableDescriptor {
            name: "messages".into(),
            columns: vec![
                col("id", LogicalType::Int8, false),
                col("room_id", LogicalType::Text, false),
                reply_to,
                col("body", LogicalType::Text, true),
                col("sent_at", LogicalType::Timestamptz, false),
                col("attachment", LogicalType::Text, true),
            ],
            primary_key: vec!["id".into()],
            room_key_column: "room_id".into(),
            id_columns: vec!["id".into()],
            media_columns: vec!["attachment".into()],
        },
        TableDescriptor {
            name: "reactions".into(),
            columns: vec![
                col("id", LogicalType::Int8, false),
                col("room_id", LogicalType::Text, false),
                message_id,
                col("emoji", LogicalType::Text, false),
            ],
            primary_key: vec!["id".into()],
            room_key_column: "room_id".into(),
            id_columns: vec!["id".into()],
            media_columns: vec![],
        },
        TableDescriptor {
            name: "members".into(),
            columns: vec![
                col("user_id", LogicalType::Uuid, false),
                col("room_id", LogicalType::Text, false),
                col("level", LogicalType::Int4, true),
                col("is_admin", LogicalType::Bool, false),
                col("score", LogicalType::Float8, true),
                col("profile", LogicalType::Jsonb, true),
                col("pubkey", LogicalType::Bytea, true),
            ],
            primary_key: vec!["user_id".into(), "room_id".into()],
            room_key_column: "room_id".into(),
            id_columns: vec![],
            media_columns: vec![],
        },
    ]
}

pub fn meta() -> BundleMeta {
    BundleMeta {
        room: RoomInfo {
            id: "general".into(),
            name: Some("General — ünïcödé".into()),
        },
        source_instance: "mesh.example.org".into(),
        schema_version: "mesh-1".into(),
        created_at: CREATED_AT.into(),
        tables: tables(),
        exporter: None,
    }
}

/// `db.sql` for the fixture and its row counts (`reactions` is left empty).
pub fn db_sql() -> (Vec<u8>, Vec<u64>) {
    use CopyValue::*;
    let mut w = DbSqlWriter::new(Vec::new(), "general", &tables()).unwrap();
    w.begin_table("messages").unwrap();
    w.write_row(&[
        Int8(1),
        Text("general".into()),
        Null,
        Text("hello\tworld\nsecond line\\ back\rslash".into()),
        Timestamptz("2026-11-22 09:00:00+00".into()),
        Text("att/1.png".into()),
    ])
    .unwrap();
    w.write_row(&[
        Int8(2),
        Text("general".into()),
        Int8(1),
        Text("ünïcödé 🎉 \\N not null".into()),
        Timestamptz("2026-11-22 09:01:00.123456+00".into()),
        Null,
    ])
    .unwrap();
    w.write_row(&[
        Int8(i64::MAX),
        Text("general".into()),
        Null,
        Null,
        Timestamptz("2026-11-22 09:02:00.5+00".into()),
        Text("att/2.txt".into()),
    ])
    .unwrap();
    w.begin_table("members").unwrap();
    w.write_row(&[
        Uuid("123E4567-E89B-12D3-A456-426614174000".into()),
        Text("general".into()),
        Int4(-7),
        Bool(true),
        Float8(0.1),
        Jsonb(r#"{"bio":"tab\there","n":[1,2]}"#.into()),
        Bytea(vec![0, 1, 0xfe, 0xff]),
    ])
    .unwrap();
    w.write_row(&[
        Uuid("00000000-0000-0000-0000-000000000001".into()),
        Text("general".into()),
        Null,
        Bool(false),
        Float8(f64::NEG_INFINITY),
        Null,
        Null,
    ])
    .unwrap();
    w.write_row(&[
        Uuid("00000000-0000-0000-0000-000000000002".into()),
        Text("general".into()),
        Int4(i32::MIN),
        Bool(false),
        Float8(f64::NAN),
        Jsonb("null".into()),
        Bytea(vec![]),
    ])
    .unwrap();
    w.finish().unwrap()
}

/// Deterministic pseudo-random bytes (xorshift64*), incompressible for zstd.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn media() -> Vec<(String, Vec<u8>)> {
    vec![
        ("att/1.png".into(), b"\x89PNG\r\n\x1a\nnot really".to_vec()),
        ("att/2.txt".into(), "plain text ✓\n".as_bytes().to_vec()),
        ("big/blob.bin".into(), random_bytes(9 * 1024 * 1024, 42)),
    ]
}

pub fn signer() -> LocalP256Signer {
    LocalP256Signer::from_seed([7; 32], None).unwrap()
}

pub fn trusted_keys_for(signer: &impl KeyExport) -> TrustedKeys {
    TrustedKeys::new(KeySet {
        keys: vec![signer.trusted()],
    })
    .unwrap()
}

/// The two local signers, for `trusted_keys_for`.
pub trait KeyExport {
    fn trusted(&self) -> roomshard_verify::TrustedKey;
}

impl KeyExport for LocalP256Signer {
    fn trusted(&self) -> roomshard_verify::TrustedKey {
        self.trusted_key(
            Some("2026-01-01T00:00:00Z".into()),
            Some("2027-01-01T00:00:00Z".into()),
        )
        .unwrap()
    }
}

impl KeyExport for roomshard_bundle::LocalEd25519Signer {
    fn trusted(&self) -> roomshard_verify::TrustedKey {
        self.trusted_key(None, None).unwrap()
    }
}

/// Writes the fixture bundle with `signer` and `options`.
pub fn write_bundle_with(
    signer: &dyn Signer,
    options: WriterOptions,
) -> Finished<HashingWriter<Vec<u8>>> {
    let (sql, rows) = db_sql();
    let mut w = BundleWriter::new(HashingWriter::new(Vec::new()), meta(), options).unwrap();
    w.add_db_sql(sql.len() as u64, sql.as_slice()).unwrap();
    for (key, bytes) in media() {
        w.add_media(&key, bytes.len() as u64, bytes.as_slice())
            .unwrap();
    }
    w.finish(&rows, signer).unwrap()
}

pub fn write_bundle() -> Finished<HashingWriter<Vec<u8>>> {
    write_bundle_with(&signer(), WriterOptions::default())
}

/// The tar entries of an archive: (header, data), plus the bytes after the last entry.
pub fn entries(archive: &[u8]) -> Vec<(tar::Header, Vec<u8>)> {
    use std::io::Read;
    let tar_bytes = zstd::decode_all(archive).unwrap();
    let mut a = tar::Archive::new(tar_bytes.as_slice());
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let header = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push((header, data));
    }
    out
}
