//! Helpers shared by the shard store tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use roomshard_bundle::{CopyValue, DbSqlWriter};
use roomshard_core::{
    Bytes, DumpSink, DumpSource, Error, Location, Result, RoomId, Scope, ShardStore,
    TableDescriptor, async_trait,
};
use roomshard_example_mesh::{Media, Workload};
use roomshard_sqlite::{SqliteShardStore, open_global};
use roomshard_verify::copy::END_LINE as COPY_END_LINE;
use roomshard_verify::sql::{copy_header_line, preamble_lines};
use sqlx::SqlitePool;
use tempfile::TempDir;

pub struct Env {
    pub dir: TempDir,
    pub global: SqlitePool,
    pub store: SqliteShardStore,
}

pub async fn env(batch_rows: usize) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let global = open_global(&dir.path().join("global.sqlite3"))
        .await
        .expect("global db");
    let store = SqliteShardStore::open(global.clone(), &dir.path().join("shards"))
        .expect("store")
        .with_batch_rows(batch_rows);
    Env { dir, global, store }
}

pub fn room(id: &str) -> RoomId {
    RoomId::new(id).expect("valid room id")
}

/// A small Mesh workload for `room` (deterministic per seed).
pub fn workload(room: &str, seed: u64) -> Workload {
    Workload {
        seed,
        room_id: room.to_string(),
        messages: 300,
        media: Media::Sizes(vec![10, 20, 30, 40, 50, 60, 70]),
    }
}

/// The workload's `db.sql`, each table in primary-key order (the order a dump has).
pub fn db_sql(w: &Workload) -> Vec<u8> {
    workload_sql_sorted(w)
}

/// The COPY blocks of a `db.sql`: `(table, rows text)` in file order.
pub fn copy_blocks(sql: &[u8]) -> Vec<(String, Vec<u8>)> {
    let text = std::str::from_utf8(sql).expect("utf-8");
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut current: Option<(String, Vec<u8>)> = None;
    for line in text.split_inclusive('\n') {
        if let Some((_, rows)) = current.as_mut() {
            if line == "\\.\n" {
                out.push(current.take().expect("open block"));
            } else {
                rows.extend_from_slice(line.as_bytes());
            }
        } else if let Some(rest) = line.strip_prefix("COPY \"") {
            let name = rest.split('"').next().expect("table name").to_string();
            current = Some((name, Vec::new()));
        }
    }
    out
}

/// A [`DumpSource`] over in-memory tables, each split into chunks of whole rows.
pub struct VecSource {
    tables: std::vec::IntoIter<(String, Vec<Bytes>)>,
    current: std::vec::IntoIter<Bytes>,
}

impl VecSource {
    pub fn new(tables: Vec<(String, Vec<u8>)>) -> Self {
        let tables: Vec<(String, Vec<Bytes>)> = tables
            .into_iter()
            .map(|(name, rows)| {
                // Chunks of ~7 rows, so a table spans several chunks.
                let mut chunks = Vec::new();
                let mut cur = Vec::new();
                let mut n = 0;
                for line in rows.split_inclusive(|b| *b == b'\n') {
                    cur.extend_from_slice(line);
                    n += 1;
                    if n % 7 == 0 {
                        chunks.push(Bytes::from(std::mem::take(&mut cur)));
                    }
                }
                if !cur.is_empty() {
                    chunks.push(Bytes::from(cur));
                }
                (name, chunks)
            })
            .collect();
        VecSource {
            tables: tables.into_iter(),
            current: Vec::new().into_iter(),
        }
    }

    pub fn from_db_sql(sql: &[u8]) -> Self {
        Self::new(copy_blocks(sql))
    }
}

#[async_trait]
impl DumpSource for VecSource {
    async fn next_table(&mut self) -> Result<Option<String>> {
        Ok(self.tables.next().map(|(name, chunks)| {
            self.current = chunks.into_iter();
            name
        }))
    }
    async fn next_rows(&mut self) -> Result<Option<Bytes>> {
        Ok(self.current.next())
    }
}

/// A [`DumpSink`] that writes exactly what `DbSqlWriter` writes (preamble, COPY blocks).
pub struct DbSqlSink {
    pub out: Vec<u8>,
    pub chunks: usize,
    pub largest_chunk: usize,
}

impl DbSqlSink {
    pub fn new(room: &str, tables: &[TableDescriptor]) -> Self {
        let refs: Vec<&TableDescriptor> = tables.iter().collect();
        let mut out = Vec::new();
        for line in preamble_lines(room, &refs) {
            out.extend_from_slice(line.as_bytes());
        }
        DbSqlSink {
            out,
            chunks: 0,
            largest_chunk: 0,
        }
    }
}

#[async_trait]
impl DumpSink for DbSqlSink {
    async fn begin_table(&mut self, table: &TableDescriptor) -> Result<()> {
        self.out
            .extend_from_slice(copy_header_line(table).as_bytes());
        Ok(())
    }
    async fn rows(&mut self, chunk: Bytes) -> Result<()> {
        assert!(chunk.ends_with(b"\n"), "chunks hold whole rows");
        self.chunks += 1;
        self.largest_chunk = self.largest_chunk.max(chunk.len());
        self.out.extend_from_slice(&chunk);
        Ok(())
    }
    async fn end_table(&mut self, _rows: u64) -> Result<()> {
        self.out.extend_from_slice(COPY_END_LINE.as_bytes());
        Ok(())
    }
}

/// A sink that keeps each table's rows apart.
#[derive(Default)]
pub struct TablesSink {
    pub tables: Vec<(String, Vec<u8>, u64)>,
}

#[async_trait]
impl DumpSink for TablesSink {
    async fn begin_table(&mut self, table: &TableDescriptor) -> Result<()> {
        self.tables.push((table.name.clone(), Vec::new(), 0));
        Ok(())
    }
    async fn rows(&mut self, chunk: Bytes) -> Result<()> {
        self.tables
            .last_mut()
            .ok_or_else(|| Error::invalid("sink", "rows before begin_table"))?
            .1
            .extend_from_slice(&chunk);
        Ok(())
    }
    async fn end_table(&mut self, rows: u64) -> Result<()> {
        self.tables.last_mut().expect("begun").2 = rows;
        Ok(())
    }
}

/// Orders two COPY values as the store's primary-key order does (integers numerically, text
/// byte-wise).
pub fn cmp_copy(a: &CopyValue, b: &CopyValue) -> std::cmp::Ordering {
    match (a, b) {
        (CopyValue::Int8(x), CopyValue::Int8(y)) => x.cmp(y),
        (CopyValue::Int4(x), CopyValue::Int4(y)) => x.cmp(y),
        (CopyValue::Text(x), CopyValue::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (CopyValue::Uuid(x), CopyValue::Uuid(y)) => x.to_lowercase().cmp(&y.to_lowercase()),
        (CopyValue::Bytea(x), CopyValue::Bytea(y)) => x.cmp(y),
        _ => panic!("unsupported key types in tests"),
    }
}

/// Writes rows with `DbSqlWriter` after sorting each table by its primary key: the bytes a
/// contract-following dump must reproduce.
pub fn db_sql_sorted(
    room: &str,
    tables: &[TableDescriptor],
    mut rows: Vec<Vec<Vec<CopyValue>>>,
) -> Vec<u8> {
    let mut w = DbSqlWriter::new(Vec::new(), room, tables).expect("writer");
    for (t, rows) in tables.iter().zip(rows.iter_mut()) {
        let pk: Vec<usize> = t
            .primary_key
            .iter()
            .map(|k| {
                t.columns
                    .iter()
                    .position(|c| &c.name == k)
                    .expect("pk column")
            })
            .collect();
        rows.sort_by(|a, b| {
            pk.iter()
                .map(|&i| cmp_copy(&a[i], &b[i]))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        w.begin_table(&t.name).expect("begin");
        for r in rows.iter() {
            w.write_row(r).expect("row");
        }
    }
    w.finish().expect("finish").0
}

/// The workload's `db.sql` with every table in primary-key order.
pub fn workload_sql_sorted(w: &Workload) -> Vec<u8> {
    let schema = roomshard_example_mesh::schema();
    let rows = roomshard_example_mesh::TABLES
        .iter()
        .map(|t| w.rows(t).expect("table").collect())
        .collect();
    db_sql_sorted(&w.room_id, schema.tables(), rows)
}

/// Where `store` puts `room`'s shard, as a placement records it before `ensure_shard`.
pub fn at(store: &SqliteShardStore, room: &RoomId) -> Location {
    Location {
        shard: Some(store.locate_shard(room, None).expect("locate_shard")),
        ..Location::default()
    }
}

/// `room`'s dedicated scope in `store`.
pub fn dedicated(store: &SqliteShardStore, room: &RoomId) -> Scope {
    Scope::Dedicated(room.clone(), at(store, room))
}
