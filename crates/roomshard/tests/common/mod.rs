//! Shared helpers of the export/import tests: seeding a pooled room from a [`Workload`] through
//! the traits, dumping and listing a scope, and walking a home's media directory.

#![allow(dead_code, clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use roomshard::home::{Home, HomeOptions};
use roomshard::{RoomId, RoomSchema, Roomshard};
use roomshard_bundle::{CopyValue, DbSqlWriter};
use roomshard_core::{
    BucketRef, BucketSpec, DumpSink, DumpSource, Error, GetObject, IdRemap, ListPage, ListRequest,
    Location, MediaCapabilities, MediaStore, ObjectBody, ObjectKey, ObjectMeta, PutOptions,
    RemapPolicy, Result, Scope, TableDescriptor, Usage, async_trait,
};
use roomshard_example_mesh::{Media, Workload};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Which engine the flow tests run on: `ROOMSHARD_TEST_BACKEND=postgres` puts every home's
/// control plane and shards in a database of its own on one PostgreSQL 15 cluster per test
/// process (started on first use; a test fails loudly if it cannot start); anything else, or
/// unset, is the embedded SQLite default. The same tests run on both (scripts/test.sh runs them
/// twice), so the flows are written once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default.
    Sqlite,
    /// PostgreSQL: `--control postgres://… --shards postgres://…`.
    Postgres,
}

/// The backend this test process runs on.
pub fn backend() -> Backend {
    match std::env::var("ROOMSHARD_TEST_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("sqlite") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("ROOMSHARD_TEST_BACKEND={other:?}: expected sqlite or postgres"),
    }
}

/// The options that put the home in `dir` on this process's backend: nothing for SQLite; for
/// PostgreSQL, the URL of the database made for `dir` (the same one every time `dir` is opened).
pub fn home_options(dir: &Path) -> HomeOptions {
    options_on(backend(), dir)
}

/// The options that put the home in `dir` on `backend`, whatever this process runs on (for
/// tests that cross engines).
pub fn options_on(backend: Backend, dir: &Path) -> HomeOptions {
    let mut options = HomeOptions::default();
    if backend == Backend::Postgres {
        let url = roomshard_core::ProviderUrl::parse(&database_for(dir), "--control").unwrap();
        options.providers.control = Some(url.clone());
        options.providers.shards =
            Some(roomshard_core::ProviderUrl::parse(url.expose(), "--shards").unwrap());
    }
    options
}

/// The PostgreSQL URL of `dir`'s own database, created on first use.
fn database_for(dir: &Path) -> String {
    static DATABASES: std::sync::Mutex<BTreeMap<PathBuf, String>> =
        std::sync::Mutex::new(BTreeMap::new());
    let cluster = roomshard_interop_tests::pg::Cluster::shared();
    let mut dbs = DATABASES.lock().unwrap_or_else(|p| p.into_inner());
    let key = dir.to_path_buf();
    let name = dbs
        .entry(key)
        .or_insert_with(|| cluster.fresh_database("home"))
        .clone();
    cluster.url(&name)
}

/// Whether `room`'s dedicated shard exists on the home's backend: its file, or its schema.
pub async fn shard_exists(home: &Home, room: &RoomId) -> bool {
    match &home.shards {
        roomshard::home::HomeShards::Sqlite(s) => s.shard_path(room).unwrap().exists(),
        roomshard::home::HomeShards::Postgres(s) => sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
        )
        .bind(room.schema_name().as_unquoted())
        .fetch_one(s.pool())
        .await
        .unwrap(),
    }
}

/// The shard provider's name on this backend (`sqlite`, `postgres`), as errors report it.
pub fn shard_provider() -> &'static str {
    match backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

/// Opens a home in `dir` for `schema`, on this process's backend.
pub async fn open_home(dir: &Path, schema: RoomSchema) -> Home {
    Home::open(dir, schema, home_options(dir))
        .await
        .expect("home opens")
}

/// A small Mesh room: 40 messages, four objects (one empty, one over a chunk).
pub fn small_workload(room: &str) -> Workload {
    Workload {
        seed: 7,
        room_id: room.to_string(),
        messages: 40,
        media: Media::Sizes(vec![0, 10, 3000, 70_000]),
    }
}

/// Rows of table `name` as COPY text, encoded by the bundle writer (so they are exactly what a
/// dump carries).
pub fn copy_text(
    tables: &[TableDescriptor],
    name: &str,
    rows: impl IntoIterator<Item = Vec<CopyValue>>,
) -> Vec<u8> {
    let mut sql = DbSqlWriter::new(Vec::new(), "x", tables).expect("writer");
    sql.begin_table(name).expect("begin");
    for row in rows {
        sql.write_row(&row).expect("row fits its table");
    }
    let (bytes, _) = sql.finish().expect("finish");
    let text = String::from_utf8(bytes).expect("utf-8");
    let desc = tables.iter().find(|t| t.name == name).expect("table");
    let header = roomshard_verify::sql::copy_header_line(desc);
    let start = text.find(&header).expect("header") + header.len();
    let mut out = String::new();
    for line in text[start..].split_inclusive('\n') {
        if line == "\\.\n" {
            break;
        }
        out.push_str(line);
    }
    out.into_bytes()
}

/// A [`DumpSource`] over tables held in memory.
pub struct VecSource {
    tables: VecDeque<(String, VecDeque<Bytes>)>,
    current: VecDeque<Bytes>,
}

impl VecSource {
    pub fn new(tables: Vec<(String, Vec<u8>)>) -> Self {
        VecSource {
            tables: tables
                .into_iter()
                .map(|(name, text)| {
                    let chunks = if text.is_empty() {
                        VecDeque::new()
                    } else {
                        VecDeque::from([Bytes::from(text)])
                    };
                    (name, chunks)
                })
                .collect(),
            current: VecDeque::new(),
        }
    }
}

#[async_trait]
impl DumpSource for VecSource {
    async fn next_table(&mut self) -> Result<Option<String>> {
        Ok(self.tables.pop_front().map(|(name, chunks)| {
            self.current = chunks;
            name
        }))
    }

    async fn next_rows(&mut self) -> Result<Option<Bytes>> {
        Ok(self.current.pop_front())
    }
}

/// Seeds `room` in the pooled scope with the workload's rows and objects.
/// Records `placement` as a test sets the scene (audit action `test.placed`).
pub async fn insert_placement(rs: &Roomshard, placement: &roomshard::Placement) {
    let entry = roomshard_core::AuditEntry {
        at: roomshard::now_rfc3339(),
        actor: "test".into(),
        action: "test.placed".into(),
        room: Some(placement.room.clone()),
        detail: serde_json::json!({}),
    };
    rs.control
        .change_placement(roomshard_core::PlacementChange::Insert(placement), &entry)
        .await
        .expect("insert placement");
}

pub async fn seed_workload(rs: &Roomshard, room: &RoomId, w: &Workload) {
    let tables: Vec<(String, Vec<u8>)> = rs
        .schema
        .tables()
        .iter()
        .map(|d| {
            (
                d.name.clone(),
                copy_text(rs.schema.tables(), &d.name, w.rows(&d.name).expect("table")),
            )
        })
        .collect();
    seed_rows(rs, &Scope::Pooled(room.clone()), tables).await;
    for m in w.media_objects() {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut m.reader(), &mut bytes).expect("media");
        put(rs, &Scope::Pooled(room.clone()), &m.key, bytes).await;
    }
}

/// Restores rows (COPY text per table) into `scope`, remapping ids taken by other rooms.
pub async fn seed_rows(rs: &Roomshard, scope: &Scope, tables: Vec<(String, Vec<u8>)>) {
    let mut source = VecSource::new(tables);
    rs.shards
        .restore(
            scope,
            &rs.schema,
            &mut source,
            &IdRemap {
                ids: RemapPolicy::OnCollision,
                media_keys: None,
            },
        )
        .await
        .expect("seed restore");
}

/// Stores one object.
pub async fn put(rs: &Roomshard, scope: &Scope, key: &str, bytes: Vec<u8>) {
    rs.media
        .put(
            scope,
            &ObjectKey::new(key).expect("key"),
            ObjectBody::from(bytes),
            &PutOptions::default(),
        )
        .await
        .expect("put");
}

/// Collects a dump as text per table.
#[derive(Default)]
pub struct CollectSink {
    pub tables: BTreeMap<String, String>,
    current: String,
}

#[async_trait]
impl DumpSink for CollectSink {
    async fn begin_table(&mut self, table: &TableDescriptor) -> Result<()> {
        self.current = table.name.clone();
        self.tables.insert(table.name.clone(), String::new());
        Ok(())
    }
    async fn rows(&mut self, chunk: Bytes) -> Result<()> {
        let text = String::from_utf8(chunk.to_vec()).expect("utf-8 rows");
        self.tables
            .get_mut(&self.current)
            .expect("begun")
            .push_str(&text);
        Ok(())
    }
    async fn end_table(&mut self, _rows: u64) -> Result<()> {
        Ok(())
    }
}

/// A scope's rows, per table, as COPY text in primary-key order.
pub async fn dump_text(rs: &Roomshard, scope: &Scope) -> BTreeMap<String, String> {
    let mut sink = CollectSink::default();
    rs.shards
        .dump(scope, &rs.schema, &mut sink)
        .await
        .expect("dump");
    sink.tables
}

/// A scope's objects and their bytes.
pub async fn objects(rs: &Roomshard, scope: &Scope) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut token = None;
    loop {
        let page = rs
            .media
            .list(
                scope,
                &ListRequest {
                    prefix: None,
                    page_token: token.take(),
                    limit: Some(2),
                },
            )
            .await
            .expect("list");
        for meta in page.objects {
            let got = rs.media.get(scope, &meta.key).await.expect("get");
            let bytes = got.body.collect(1 << 30).await.expect("body");
            out.insert(meta.key.to_string(), bytes.to_vec());
        }
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => return out,
        }
    }
}

/// Every regular file under `dir` (recursively).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The room's media files in a home (pooled and dedicated), ignoring the store's own files.
pub fn media_files(home: &Home) -> Vec<PathBuf> {
    let mut out = files_under(&home.dir().join("media").join("shared"));
    out.extend(files_under(&home.dir().join("media").join("rooms")));
    out
}

/// Replaces the room id in dumped text (so dumps of the same room under two ids compare).
pub fn with_room(
    dump: &BTreeMap<String, String>,
    from: &str,
    to: &str,
) -> BTreeMap<String, String> {
    dump.iter()
        .map(|(t, text)| (t.clone(), text.replace(from, to)))
        .collect()
}

/// A media store that passes everything on to `inner`, except that it fails the `fail_at`-th
/// put (counting from 1; 0 never), every call of the operations named by [`FailingMedia::fail`]
/// while they are named, and waits `put_delay_ms` before each put — the failures a full disk or a
/// crash at that point would leave, and a slow store.
pub struct FailingMedia {
    pub inner: Arc<dyn MediaStore>,
    pub puts: AtomicUsize,
    pub fail_at: usize,
    /// Operations (`ensure_bucket`, `list`, `copy`, `drop_bucket`) that fail while named here.
    pub failing: std::sync::Mutex<Vec<&'static str>>,
    /// Milliseconds every put waits first (a slow store).
    pub put_delay_ms: std::sync::atomic::AtomicU64,
}

impl FailingMedia {
    pub fn new(inner: Arc<dyn MediaStore>, fail_at: usize) -> Self {
        FailingMedia {
            inner,
            puts: AtomicUsize::new(0),
            fail_at,
            failing: std::sync::Mutex::new(Vec::new()),
            put_delay_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Makes `op` fail from now on (`None`: nothing fails any more).
    pub fn fail(&self, op: Option<&'static str>) {
        let mut failing = self.failing.lock().unwrap();
        failing.clear();
        failing.extend(op);
    }

    fn check(&self, op: &str) -> Result<()> {
        if self.failing.lock().unwrap().contains(&op) {
            return Err(Error::unavailable(
                "test store",
                true,
                std::io::Error::other(format!("{op} failed")),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl MediaStore for FailingMedia {
    fn name(&self) -> &str {
        "failing"
    }
    fn capabilities(&self) -> MediaCapabilities {
        self.inner.capabilities()
    }
    fn locate_bucket(&self, room: &RoomId) -> Result<String> {
        self.inner.locate_bucket(room)
    }
    async fn ensure_bucket(
        &self,
        room: &RoomId,
        at: &Location,
        spec: &BucketSpec,
    ) -> Result<BucketRef> {
        self.check("ensure_bucket")?;
        self.inner.ensure_bucket(room, at, spec).await
    }
    async fn put(
        &self,
        scope: &Scope,
        key: &ObjectKey,
        body: ObjectBody,
        options: &PutOptions,
    ) -> Result<ObjectMeta> {
        let delay = self.put_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        if self.puts.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at {
            return Err(Error::unavailable(
                "test store",
                true,
                std::io::Error::other("disk full"),
            ));
        }
        self.inner.put(scope, key, body, options).await
    }
    async fn get(&self, scope: &Scope, key: &ObjectKey) -> Result<GetObject> {
        self.inner.get(scope, key).await
    }
    async fn head(&self, scope: &Scope, key: &ObjectKey) -> Result<ObjectMeta> {
        self.inner.head(scope, key).await
    }
    async fn list(&self, scope: &Scope, request: &ListRequest) -> Result<ListPage> {
        self.check("list")?;
        self.inner.list(scope, request).await
    }
    async fn delete(&self, scope: &Scope, key: &ObjectKey) -> Result<()> {
        self.inner.delete(scope, key).await
    }
    async fn usage(&self, scope: &Scope) -> Result<Usage> {
        self.inner.usage(scope).await
    }
    async fn purge(&self, scope: &Scope) -> Result<()> {
        self.inner.purge(scope).await
    }
    async fn copy(
        &self,
        from: &Scope,
        from_key: &ObjectKey,
        to: &Scope,
        to_key: &ObjectKey,
    ) -> Result<ObjectMeta> {
        self.check("copy")?;
        self.inner.copy(from, from_key, to, to_key).await
    }
    async fn presign_get(
        &self,
        scope: &Scope,
        key: &ObjectKey,
        expires_in: std::time::Duration,
    ) -> Result<roomshard_core::SignedUrl> {
        self.inner.presign_get(scope, key, expires_in).await
    }
    async fn drop_bucket(&self, room: &RoomId, at: &Location) -> Result<()> {
        self.check("drop_bucket")?;
        self.inner.drop_bucket(room, at).await
    }
}

/// `room`'s dedicated scope: where its placement says, or else where the providers would put
/// it (a room that was never placed).
pub async fn dedicated(rs: &Roomshard, room: &RoomId) -> Scope {
    match rs.control.placement(room).await.unwrap() {
        Some(p) if p.shard_url.is_some() => p.dedicated(),
        _ => Scope::Dedicated(room.clone(), rs.locate(room).unwrap()),
    }
}
