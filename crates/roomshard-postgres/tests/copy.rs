//! Dump and restore through COPY against a real PostgreSQL 15: byte-identical to the SQLite
//! store's dump of the same rows, and a COPY that is cancelled or fails midway never poisons a
//! pooled connection.

#![allow(clippy::unwrap_used)]

use roomshard_core::{
    Bytes, DumpSink, DumpSource, Error, IdRemap, LogicalType, ProviderUrl, Result, RoomId,
    RoomSchema, Scope, ShardStore, Table, TableDescriptor, async_trait,
};
use roomshard_interop_tests::pg::Cluster;
use roomshard_postgres::PgShardStore;
use std::collections::VecDeque;
use std::time::Duration;

/// Every logical type, with a text key (byte order) and nullable columns.
fn schema() -> RoomSchema {
    let t = Table::new("things")
        .column("room_id", LogicalType::Text)
        .room_key()
        .column("k", LogicalType::Text)
        .primary_key()
        .id()
        .column("n8", LogicalType::Int8)
        .column("n4", LogicalType::Int4)
        .column("b", LogicalType::Bool)
        .column("f", LogicalType::Float8)
        .column("ts", LogicalType::Timestamptz)
        .column("raw", LogicalType::Bytea)
        .column("doc", LogicalType::Jsonb)
        .column("u", LogicalType::Uuid)
        .column("note", LogicalType::Text)
        .build()
        .unwrap();
    RoomSchema::new("copy-1", vec![t]).unwrap()
}

/// Rows in primary-key (byte) order exercising what PostgreSQL's COPY output spells differently
/// from the codec unless normalised: float exponents, -0, specials, control bytes PostgreSQL
/// escapes as `\b \f \v`, escapes, non-ASCII, a NUL-free bytea with a backslash byte. The jsonb
/// documents are in PostgreSQL's own jsonb text form (see docs/postgres.md on jsonb).
fn rows(room: &str) -> String {
    [
        format!("{room}\tA\t-9223372036854775808\t-2147483648\tt\t1e+300\t2026-11-22 10:00:00+00\t\\\\x005c0aff\t{{\"a\": 1, \"bb\": [1, 2.5, null]}}\t0b7c7e2e-8f3e-4a57-9a53-6a1c3f1f0a01\tcontrol \x08 \x0c \x0b bytes\n"),
        format!("{room}\tB\t9223372036854775807\t2147483647\tf\t1e-07\t1999-12-31 23:59:59.999999+00\t\\\\x\t\"text\"\t\\N\ttab\\there\\nnewline\\rcr\\\\backslash\n"),
        format!("{room}\tZ\t0\t0\t\\N\t-0\t2026-01-01 00:00:00.5+00\t\\N\t{{}}\t\\N\t\u{e9}\u{4e2d}\u{1f600} right-to-left \u{5d0}\n"),
        format!("{room}\ta\t1\t1\tt\tNaN\t\\N\t\\N\t[]\t\\N\t\\N\n"),
        format!("{room}\tb\t2\t2\tf\tInfinity\t\\N\t\\N\tnull\t\\N\t\n"),
        format!("{room}\tc\t3\t3\tt\t-Infinity\t\\N\t\\N\t12.5\t\\N\t\\N\n"),
        format!("{room}\t\u{e9}\t4\t4\tt\t0.1\t\\N\t\\N\ttrue\t\\N\t\\N\n"),
    ]
    .concat()
}

struct Source {
    tables: VecDeque<(String, VecDeque<Bytes>)>,
    current: Option<VecDeque<Bytes>>,
    /// After this many chunks of the current table: `Some(true)` stall forever, `Some(false)`
    /// fail.
    then: Option<(usize, bool)>,
    given: usize,
}

impl Source {
    fn new(table: &str, chunks: Vec<Vec<u8>>) -> Self {
        Source {
            tables: VecDeque::from([(
                table.to_string(),
                chunks.into_iter().map(Bytes::from).collect(),
            )]),
            current: None,
            then: None,
            given: 0,
        }
    }
}

#[async_trait]
impl DumpSource for Source {
    async fn next_table(&mut self) -> Result<Option<String>> {
        Ok(self.tables.pop_front().map(|(name, chunks)| {
            self.current = Some(chunks);
            name
        }))
    }

    async fn next_rows(&mut self) -> Result<Option<Bytes>> {
        if let Some((after, stall)) = self.then
            && self.given >= after
        {
            if stall {
                futures::future::pending::<()>().await;
            }
            return Err(Error::corrupt("test source", "fails midway on purpose"));
        }
        self.given += 1;
        Ok(self.current.as_mut().and_then(VecDeque::pop_front))
    }
}

#[derive(Default)]
struct Collect {
    out: Vec<u8>,
    fail_after: Option<usize>,
    chunks: usize,
}

#[async_trait]
impl DumpSink for Collect {
    async fn begin_table(&mut self, table: &TableDescriptor) -> Result<()> {
        self.out
            .extend_from_slice(format!("-- {}\n", table.name).as_bytes());
        Ok(())
    }
    async fn rows(&mut self, chunk: Bytes) -> Result<()> {
        self.chunks += 1;
        if self.fail_after.is_some_and(|n| self.chunks > n) {
            return Err(Error::unavailable(
                "test sink",
                false,
                "refuses rows on purpose",
            ));
        }
        self.out.extend_from_slice(&chunk);
        Ok(())
    }
    async fn end_table(&mut self, rows: u64) -> Result<()> {
        self.out
            .extend_from_slice(format!("-- {rows} rows\n").as_bytes());
        Ok(())
    }
}

async fn pg_store(cluster: &Cluster, max_connections: u32) -> PgShardStore {
    let url = ProviderUrl::parse(&cluster.url("postgres"), "--shards").unwrap();
    let pool = roomshard_postgres::connect(&url, max_connections)
        .await
        .unwrap();
    let store = PgShardStore::new(pool, &url).unwrap();
    store.ensure_pooled_tables(&schema()).await.unwrap();
    store
}

async fn dump(store: &dyn ShardStore, scope: &Scope) -> Vec<u8> {
    let mut sink = Collect::default();
    store.dump(scope, &schema(), &mut sink).await.unwrap();
    sink.out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dumps_the_same_bytes_as_sqlite_for_the_same_rows() {
    let cluster = Cluster::start();
    let pg = pg_store(&cluster, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let global = roomshard_sqlite::open_global(&dir.path().join("g.db"))
        .await
        .unwrap();
    let sqlite =
        roomshard_sqlite::SqliteShardStore::open(global, &dir.path().join("shards")).unwrap();
    sqlite.ensure_pooled_tables(&schema()).await.unwrap();

    let room = RoomId::new("same-bytes").unwrap();
    let scope = Scope::Pooled(room.clone());
    let text = rows(room.as_str());
    for store in [&pg as &dyn ShardStore, &sqlite] {
        let mut source = Source::new("things", vec![text.clone().into_bytes()]);
        store
            .restore(&scope, &schema(), &mut source, &IdRemap::default())
            .await
            .unwrap_or_else(|e| panic!("restore into {}: {e}", store.name()));
    }
    let from_pg = dump(&pg, &scope).await;
    let from_sqlite = dump(&sqlite, &scope).await;
    assert_eq!(
        String::from_utf8_lossy(&from_pg),
        String::from_utf8_lossy(&from_sqlite)
    );
    // And both are the rows as given: the codec's canonical spelling round-trips.
    let expected = format!("-- things\n{text}-- 7 rows\n");
    assert_eq!(String::from_utf8_lossy(&from_pg), expected);
    // Parity checksums agree across the engines exactly when the bytes do.
    assert_eq!(
        pg.parity(&scope, &schema()).await.unwrap(),
        sqlite.parity(&scope, &schema()).await.unwrap()
    );
}

/// What the one connection of a one-connection pool answers after an interrupted COPY.
async fn pool_still_works(store: &PgShardStore, scope: &Scope, expected_rows: u64) {
    let counts = tokio::time::timeout(Duration::from_secs(20), store.row_counts(scope, &schema()))
        .await
        .expect("the pool hands out a working connection (not stuck, not poisoned)")
        .expect("row counts after an interrupted COPY");
    assert_eq!(counts[0].rows, expected_rows);
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(store.pool())
        .await
        .expect("a plain query on the pool");
    assert_eq!(one, 1);
}

fn many_rows(room: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            format!(
                "{room}\tk{i:06}\t{i}\t1\tt\t0.5\t\\N\t\\N\t{{}}\t\\N\t{}\n",
                "x".repeat(500)
            )
            .into_bytes()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_or_failed_restore_never_poisons_the_pooled_connection() {
    let cluster = Cluster::start();
    // One connection: whatever the interrupted COPY left behind, the next operation gets it.
    let store = pg_store(&cluster, 1).await;
    let room = RoomId::new("cancelled").unwrap();
    let scope = Scope::Pooled(room.clone());

    // Cancelled: the source stalls mid-table after 300 rows (several COPY messages were sent).
    let mut source = Source::new("things", many_rows(room.as_str(), 1000));
    source.then = Some((300, true));
    let cancelled = tokio::time::timeout(
        Duration::from_millis(1500),
        store.restore(&scope, &schema(), &mut source, &IdRemap::default()),
    )
    .await;
    assert!(
        cancelled.is_err(),
        "the stalled restore is cancelled by the timeout"
    );
    pool_still_works(&store, &scope, 0).await;

    // Failed: the source errors mid-table; the error is the source's, unchanged.
    let mut source = Source::new("things", many_rows(room.as_str(), 1000));
    source.then = Some((300, false));
    let err = store
        .restore(&scope, &schema(), &mut source, &IdRemap::default())
        .await
        .expect_err("the source fails");
    assert!(err.to_string().contains("fails midway on purpose"), "{err}");
    pool_still_works(&store, &scope, 0).await;

    // A row the codec refuses, after many good ones: Corrupt naming the row, nothing restored.
    let mut chunks = many_rows(room.as_str(), 500);
    chunks.push(
        format!(
            "{}\tbad\tnot-a-number\t1\tt\t0.5\t\\N\t\\N\t{{}}\t\\N\t\\N\n",
            room.as_str()
        )
        .into_bytes(),
    );
    let mut source = Source::new("things", chunks);
    let err = store
        .restore(&scope, &schema(), &mut source, &IdRemap::default())
        .await
        .expect_err("a bad row");
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("row 501"), "{err}");
    pool_still_works(&store, &scope, 0).await;

    // And a whole restore still works on that connection.
    let mut source = Source::new("things", many_rows(room.as_str(), 1000));
    store
        .restore(&scope, &schema(), &mut source, &IdRemap::default())
        .await
        .expect("a full restore");
    pool_still_works(&store, &scope, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_or_failed_dump_never_poisons_the_pooled_connection() {
    let cluster = Cluster::start();
    let store = pg_store(&cluster, 1).await;
    let room = RoomId::new("dumped").unwrap();
    let scope = Scope::Pooled(room.clone());
    let mut source = Source::new("things", many_rows(room.as_str(), 2000));
    store
        .restore(&scope, &schema(), &mut source, &IdRemap::default())
        .await
        .unwrap();

    // The sink refuses the second chunk: COPY OUT is mid-stream with rows unread.
    let mut sink = Collect {
        fail_after: Some(1),
        ..Collect::default()
    };
    let err = store
        .dump(&scope, &schema(), &mut sink)
        .await
        .expect_err("the sink fails");
    assert!(
        err.to_string().contains("test sink"),
        "the sink's own error: {err}"
    );
    pool_still_works(&store, &scope, 2000).await;

    // Cancelled mid-stream: a sink that never returns.
    struct Stall;
    #[async_trait]
    impl DumpSink for Stall {
        async fn begin_table(&mut self, _table: &TableDescriptor) -> Result<()> {
            Ok(())
        }
        async fn rows(&mut self, _chunk: Bytes) -> Result<()> {
            futures::future::pending::<()>().await;
            Ok(())
        }
        async fn end_table(&mut self, _rows: u64) -> Result<()> {
            Ok(())
        }
    }
    let cancelled = tokio::time::timeout(
        Duration::from_millis(1000),
        store.dump(&scope, &schema(), &mut Stall),
    )
    .await;
    assert!(cancelled.is_err());
    pool_still_works(&store, &scope, 2000).await;
    assert_eq!(
        dump(&store, &scope)
            .await
            .iter()
            .filter(|b| **b == b'\n')
            .count(),
        2002
    );
}

/// Records checkpoints and fails the `fail_at`-th save, as a crash between a batch's commit
/// and its checkpoint would leave the job.
struct CrashingCheckpoints {
    saved: std::sync::Mutex<Vec<roomshard_core::CopyCheckpoint>>,
    fail_at: usize,
}

#[async_trait]
impl roomshard_core::CheckpointSink for CrashingCheckpoints {
    async fn save(&self, checkpoint: &roomshard_core::CopyCheckpoint) -> Result<()> {
        let mut saved = self.saved.lock().unwrap();
        if saved.len() + 1 == self.fail_at {
            return Err(Error::unavailable("checkpoint", true, "crash on purpose"));
        }
        saved.push(checkpoint.clone());
        Ok(())
    }
}

async fn primary_key_of(store: &PgShardStore, table: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT conname::text FROM pg_catalog.pg_constraint \
         WHERE conrelid = $1::regclass AND contype = 'p'",
    )
    .bind(table)
    .fetch_optional(store.pool())
    .await
    .unwrap()
}

/// The bulk copy into an empty shard table fills it without its primary key and builds the key
/// at the end; a batch committed but never checkpointed (the crash) is deleted on resume, so
/// the resumed copy neither duplicates nor loses a row, and the key is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_copy_fills_keyless_and_resumes_past_an_unsaved_batch() {
    let cluster = Cluster::start();
    let store = pg_store(&cluster, 4).await.with_batch_rows(40);
    let room = RoomId::new("keyless").unwrap();
    let pooled = Scope::Pooled(room.clone());
    let mut source = Source::new("things", many_rows(room.as_str(), 300));
    store
        .restore(&pooled, &schema(), &mut source, &IdRemap::default())
        .await
        .unwrap();
    let at = roomshard_core::Location {
        shard: Some(store.locate_shard(&room, None).unwrap()),
        ..roomshard_core::Location::default()
    };
    store.ensure_shard(&room, &at, &schema()).await.unwrap();
    let dedicated = Scope::Dedicated(room.clone(), at);
    let request = |checkpoints, resume_from| roomshard_core::CopyRequest {
        schema: Box::leak(Box::new(schema())),
        source: roomshard_core::CopySource {
            scope: pooled.clone(),
            server: None,
        },
        target: dedicated.clone(),
        pass: roomshard_core::CopyPass::Bulk,
        resume_from,
        checkpoints,
        progress: &roomshard_core::NoProgress,
    };
    let table = "\"room_keyless\".\"things\"";
    assert_eq!(
        primary_key_of(&store, table).await.as_deref(),
        Some("things_pkey")
    );

    // Batches 1–3 commit; the third checkpoint never saves.
    let crash = CrashingCheckpoints {
        saved: std::sync::Mutex::new(Vec::new()),
        fail_at: 3,
    };
    let err = store
        .copy_room(request(&crash, None))
        .await
        .expect_err("the crash");
    assert!(format!("{err:?}").contains("crash on purpose"), "{err:?}");
    assert_eq!(
        primary_key_of(&store, table).await,
        None,
        "keyless while filling"
    );
    let filled: i64 =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(filled, 120, "three batches committed, two checkpointed");

    let last = crash.saved.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.current.as_ref().unwrap().rows_done, 80);
    store
        .copy_room(request(&roomshard_core::NoCheckpoints, Some(last)))
        .await
        .unwrap();
    assert_eq!(
        primary_key_of(&store, table).await.as_deref(),
        Some("things_pkey")
    );
    let (src, dst) = (
        store.parity(&pooled, &schema()).await.unwrap(),
        store.parity(&dedicated, &schema()).await.unwrap(),
    );
    assert_eq!(dst.tables[0].rows, 300);
    assert!(src.mismatched_tables(&dst).is_empty(), "{src:?} vs {dst:?}");
    assert_eq!(dump(&store, &pooled).await, dump(&store, &dedicated).await);

    // A catch-up pass over the rebuilt key upserts as before.
    store
        .copy_room(roomshard_core::CopyRequest {
            pass: roomshard_core::CopyPass::CatchUp,
            ..request(&roomshard_core::NoCheckpoints, None)
        })
        .await
        .unwrap();
    assert_eq!(
        store.parity(&dedicated, &schema()).await.unwrap().tables[0].rows,
        300
    );
}
