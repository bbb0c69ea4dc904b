//! [`SqliteShardStore`]: pooled rooms in the host's shared tables of its global SQLite
//! database, dedicated rooms in one SQLite file each.

use crate::codec::{self, Val};
use crate::sql::{
    TableSql, TableState, count_rows, db_err, delete_row, q, select_page, stored_corrupt,
    table_state, upsert_row, upsert_rows,
};
use futures::TryStreamExt;
use roomshard_core::{
    Bytes, CheckpointSink, CopyCheckpoint, CopyOutcome, CopyPass, CopyRequest, DumpSink,
    DumpSource, EncryptionContext, Error, IdRemap, Identifier, KeyManager, Location, Namespace,
    Parity, ProgressEvent, ProgressSink, ProviderUrl, RestoreOutcome, Result, RoomId, RoomSchema,
    RouteHandle, Scope, ServerUrl, ShardCapabilities, ShardRef, ShardStore, TableCount,
    TableCursor, TableParity, async_trait,
};
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Default rows per copy batch (one target transaction and one checkpoint per batch).
pub const DEFAULT_BATCH_ROWS: usize = 2000;
/// Rough size of a dump chunk.
const DUMP_CHUNK_BYTES: usize = 64 * 1024;
/// Connections per dedicated shard file: shards are many and mostly idle.
const SHARD_POOL_CONNECTIONS: u32 = 4;
/// The reserved per-shard table holding roomshard's own metadata (the wrapped data key).
pub const META_TABLE: &str = "roomshard_meta";
/// The `roomshard_meta` key of the wrapped data key.
const WRAPPED_KEY: &str = "wrapped_data_key";
/// How long a statement waits for a locked database before failing as retryable.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`ShardStore`] on SQLite.
///
/// - [`Scope::Pooled`] is the host's shared tables in its global database (the pool given to
///   [`open`](Self::open)), every statement filtered on each table's room key column.
/// - [`Scope::Dedicated`] is the file its [`Location`] names (`sqlite:///…/room_<id>.sqlite3`).
///   [`locate_shard`](ShardStore::locate_shard) names new shards
///   `<shards_dir>/room_<id>.sqlite3`, from a validated [`RoomId`] only; a location that is not
///   adopted is found by its file name in the shard directory (so a placement cannot point the
///   store at an arbitrary file, and a home directory can move); an adopted one (a customer's
///   own database file) is used where it is, must exist, and is never created or deleted. One
///   small pool per open shard file is cached.
///
/// Rows are stored with the mapping of the crate's codec (`docs` in `codec.rs`): `text`,
/// `timestamptz`, `jsonb`, `uuid` as TEXT, integers and `bool` as INTEGER, `float8` as REAL
/// (NaN and -0.0 as marker TEXT), `bytea` as BLOB; every table has its primary key, and rows are
/// read in primary-key order with SQLite's BINARY collation (byte-wise, as the contract needs).
///
/// # Key gate, and what it is not
///
/// With [`with_key_gate`](Self::with_key_gate), a dedicated shard holds a data key wrapped by
/// the room's key (in `roomshard_meta`) and every operation on it first unwraps that key through
/// the [`KeyManager`], so revoking the grant makes every shard path return
/// [`Error::Sealed`]. **The SQLite file itself is not encrypted at rest** (no SQLCipher here):
/// anyone who can read the file can read the rows. The gate is enforced by this provider, not by
/// cryptography; use file-system or volume encryption where that matters.
///
/// [`drop_room`](ShardStore::drop_room) is deliberately not gated: deleting a sealed room's
/// shard reveals nothing and must stay possible (clean-up after a revocation). Pooled scopes are
/// never gated: the shared tables belong to the host and its own key.
pub struct SqliteShardStore {
    global: SqlitePool,
    shards_dir: PathBuf,
    /// Open shard pools, by file.
    pools: Mutex<HashMap<PathBuf, SqlitePool>>,
    batch_rows: usize,
    key_gate: Option<Arc<dyn KeyManager>>,
}

impl std::fmt::Debug for SqliteShardStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteShardStore")
            .field("shards_dir", &self.shards_dir)
            .field("batch_rows", &self.batch_rows)
            .field(
                "key_gate",
                &self.key_gate.as_ref().map(|k| k.name().to_string()),
            )
            .finish_non_exhaustive()
    }
}

impl SqliteShardStore {
    /// Opens the store over the host's global database `global` (see
    /// [`open_global`](crate::open_global)) with dedicated shard files under `shards_dir`
    /// (created if missing), so a host needs one call to serve both scopes.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if `shards_dir` cannot be created.
    pub fn open(global: SqlitePool, shards_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(shards_dir).map_err(|e| {
            Error::unavailable(
                format!("shard directory {}", shards_dir.display()),
                false,
                e,
            )
        })?;
        Ok(SqliteShardStore {
            global,
            shards_dir: shards_dir.to_path_buf(),
            pools: Mutex::new(HashMap::new()),
            batch_rows: DEFAULT_BATCH_ROWS,
            key_gate: None,
        })
    }

    /// Sets the rows per copy batch (at least 1): smaller batches checkpoint more often, larger
    /// ones copy faster.
    pub fn with_batch_rows(mut self, n: usize) -> Self {
        self.batch_rows = n.max(1);
        self
    }

    /// Gates every dedicated shard on the room's key: [`ensure_shard`](ShardStore::ensure_shard)
    /// stores a wrapped data key in the shard and every later operation on it must unwrap it
    /// first, so a revoked grant seals the shard ([`Error::Sealed`], as the key manager reports
    /// it). Not encryption at rest: see the type's docs.
    pub fn with_key_gate(mut self, keys: Arc<dyn KeyManager>) -> Self {
        self.key_gate = Some(keys);
        self
    }

    /// The path of `room`'s dedicated shard file: `<shards_dir>/room_<id>.sqlite3`.
    ///
    /// A [`RoomId`] admits no separator or dot, and this checks again at the path boundary that
    /// the result is a plain file name directly inside the shard directory.
    pub fn shard_path(&self, room: &RoomId) -> Result<PathBuf> {
        let name = format!("{}.sqlite3", room.schema_name().as_unquoted());
        let mut components = Path::new(&name).components();
        let plain = matches!(components.next(), Some(Component::Normal(_)))
            && components.next().is_none()
            && !name.contains(['/', '\\', '\0'])
            && !name.starts_with('.');
        if !plain {
            return Err(Error::invalid(
                "room id",
                format!("{room:?} does not give a plain shard file name"),
            ));
        }
        let path = self.shards_dir.join(&name);
        if path.parent() != Some(self.shards_dir.as_path()) {
            return Err(Error::invalid(
                "room id",
                format!("{room:?} escapes the shard directory"),
            ));
        }
        Ok(path)
    }

    /// The URL of the shard file at `path`, as placements record it.
    fn shard_url(path: &Path) -> Result<ServerUrl> {
        let text = path
            .to_str()
            .ok_or_else(|| Error::invalid("shard directory", "the path is not UTF-8"))?;
        if text.contains(['%', '?', '#']) {
            return Err(Error::invalid(
                "shard directory",
                format!("{text:?} contains %, ? or #, which a sqlite:// URL cannot carry"),
            ));
        }
        Ok(ServerUrl::new(format!("sqlite://{text}")))
    }

    /// The file a dedicated scope's location names, checked: an `sqlite://` URL of an absolute
    /// path. A shard this store made (not adopted) is found by its file name in this store's
    /// shard directory, whatever directory the URL records, so a home directory can be moved or
    /// copied; the name must be a plain `*.sqlite3` file name. An adopted shard is the file at
    /// the recorded path, wherever it is.
    pub fn shard_file(&self, room: &RoomId, at: &Location) -> Result<PathBuf> {
        let url = at.shard.as_ref().ok_or_else(|| {
            Error::invalid(
                "shard location",
                format!("dedicated room {room} has no shard location (locate_shard first)"),
            )
        })?;
        let parsed = ProviderUrl::parse(url.expose(), "shard location")?;
        if parsed.scheme() != "sqlite" {
            return Err(parsed.unknown_scheme(&["sqlite"]));
        }
        let path = parsed.local_path()?;
        if at.adopted.shard {
            return Ok(path);
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| {
                n.ends_with(".sqlite3")
                    && !n.starts_with('.')
                    && matches!(Path::new(n).components().next(), Some(Component::Normal(_)))
            })
            .ok_or_else(|| {
                Error::invalid(
                    "shard location",
                    format!("{url} does not name a shard file of this store (<name>.sqlite3)"),
                )
            })?;
        Ok(self.shards_dir.join(name))
    }

    /// Creates the host's shared tables (as a host without roomshard would have them) from the
    /// descriptors in the global database, each with an index on its room key column, so pooled
    /// rooms can be seeded, copied back and filtered efficiently.
    ///
    /// # Behaviour
    /// Idempotent; an existing table whose columns differ is [`Error::Conflict`].
    pub async fn ensure_pooled_tables(&self, schema: &RoomSchema) -> Result<()> {
        let mut tx = self
            .global
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err("beginning ensure_pooled_tables"))?;
        for desc in schema.tables() {
            let t = TableSql::new(desc)?;
            if table_state(&mut tx, &t).await? == TableState::Missing {
                q(t.create_sql())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err(format!("creating table {}", desc.name)))?;
            }
            let index = format!(
                "CREATE INDEX IF NOT EXISTS \"main\".\"{}__roomshard_room\" ON {} ({})",
                t.ident.as_str(),
                t.ident.quoted(),
                t.room_col()
            );
            q(index)
                .execute(&mut *tx)
                .await
                .map_err(db_err(format!("indexing table {}", desc.name)))?;
        }
        tx.commit()
            .await
            .map_err(db_err("committing ensure_pooled_tables"))
    }

    /// The global database's file (the shared tables and the control plane).
    pub fn global_path(&self) -> PathBuf {
        self.global.connect_options().get_filename().to_path_buf()
    }

    /// The directory holding the shard files.
    pub fn shards_dir(&self) -> &Path {
        &self.shards_dir
    }

    /// The pool holding `scope`'s tables, for the host's own queries: the global pool for a
    /// pooled room (filter on the room key column!), the shard's pool for a dedicated one (after
    /// the key gate, if set). A missing dedicated shard is [`Error::NotFound`].
    pub async fn pool_for(&self, scope: &Scope) -> Result<SqlitePool> {
        match scope {
            Scope::Pooled(_) => Ok(self.global.clone()),
            Scope::Dedicated(room, at) => {
                let path = self.shard_file(room, at)?;
                let pool = self.shard_pool(room, &path, false).await?;
                self.check_gate(room, &pool).await?;
                Ok(pool)
            }
        }
    }

    fn cached_pool(&self, path: &Path) -> Option<SqlitePool> {
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned()
    }

    /// The pool of `room`'s shard file `path`, opening (and with `create`, creating) the file.
    async fn shard_pool(&self, room: &RoomId, path: &Path, create: bool) -> Result<SqlitePool> {
        let exists = tokio::fs::try_exists(path).await.unwrap_or(false);
        if !exists && !create {
            let stale = self
                .pools
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(path);
            if let Some(stale) = stale {
                stale.close().await;
            }
            return Err(Error::not_found(format!("dedicated shard of room {room}")));
        }
        if let Some(pool) = self.cached_pool(path) {
            return Ok(pool);
        }
        let options = connect_options(path).create_if_missing(create);
        let pool = SqlitePoolOptions::new()
            .max_connections(SHARD_POOL_CONNECTIONS)
            .min_connections(0)
            .idle_timeout(Some(Duration::from_secs(60)))
            .connect_with(options)
            .await
            .map_err(db_err(format!("opening the shard of room {room}")))?;
        let existing = {
            let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            match pools.get(path) {
                Some(other) => Some(other.clone()),
                None => {
                    pools.insert(path.to_path_buf(), pool.clone());
                    None
                }
            }
        };
        match existing {
            Some(other) => {
                pool.close().await;
                Ok(other)
            }
            None => Ok(pool),
        }
    }

    /// Unwraps the shard's data key if the gate is set; the key manager's error (Sealed for a
    /// revoked grant) is returned unchanged.
    async fn check_gate(&self, room: &RoomId, pool: &SqlitePool) -> Result<()> {
        let Some(keys) = &self.key_gate else {
            return Ok(());
        };
        let mut conn = pool
            .acquire()
            .await
            .map_err(db_err(format!("opening the shard of room {room}")))?;
        let wrapped = read_wrapped_key(&mut conn).await?.ok_or_else(|| {
            Error::corrupt(
                format!("dedicated shard of room {room}"),
                "no wrapped data key in roomshard_meta; run ensure_shard with the key gate set",
            )
        })?;
        keys.decrypt_data_key(room, &wrapped, &EncryptionContext::for_room(room))
            .await?;
        Ok(())
    }

    /// The pool of `scope` after the gate (pooled scopes are never gated: the shared tables
    /// belong to the host).
    async fn open_scope(&self, scope: &Scope) -> Result<SqlitePool> {
        self.pool_for(scope).await
    }

    /// Every schema table, validated, checked present (NotFound) and matching (Conflict).
    async fn scope_tables(
        &self,
        pool: &SqlitePool,
        scope: &Scope,
        schema: &RoomSchema,
    ) -> Result<Vec<TableSql>> {
        let mut conn = pool
            .acquire()
            .await
            .map_err(db_err(format!("connecting for {scope}")))?;
        let mut out = Vec::new();
        for desc in schema.tables() {
            let t = TableSql::new(desc)?;
            if table_state(&mut conn, &t).await? == TableState::Missing {
                return Err(Error::not_found(format!("table {} of {scope}", desc.name)));
            }
            out.push(t);
        }
        Ok(out)
    }
}

/// Connection options shared by the global database and the shard files: WAL, no foreign keys
/// (descriptors declare none), a 10 s busy timeout, `synchronous = NORMAL`.
pub(crate) fn connect_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .foreign_keys(false)
        .busy_timeout(BUSY_TIMEOUT)
        .synchronous(SqliteSynchronous::Normal)
}

/// The room filter of a scope: pooled reads and writes filter on the room key column.
fn room_filter(scope: &Scope) -> Option<&RoomId> {
    match scope {
        Scope::Pooled(room) => Some(room),
        Scope::Dedicated(..) => None,
    }
}

async fn create_meta_table(conn: &mut SqliteConnection) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS \"main\".\"roomshard_meta\" \
         (\"key\" TEXT NOT NULL PRIMARY KEY, \"value\" BLOB NOT NULL)",
    )
    .execute(&mut *conn)
    .await
    .map_err(db_err("creating roomshard_meta"))?;
    Ok(())
}

async fn read_wrapped_key(conn: &mut SqliteConnection) -> Result<Option<Vec<u8>>> {
    let exists = sqlx::query(
        "SELECT 1 FROM \"main\".sqlite_master WHERE type = 'table' AND name = 'roomshard_meta'",
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err("reading roomshard_meta"))?;
    if exists.is_none() {
        return Ok(None);
    }
    let row = sqlx::query("SELECT \"value\" FROM \"main\".\"roomshard_meta\" WHERE \"key\" = ?")
        .bind(WRAPPED_KEY)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err("reading roomshard_meta"))?;
    row.map(|r| r.try_get::<Vec<u8>, _>(0))
        .transpose()
        .map_err(db_err("reading roomshard_meta"))
}

/// One write of a catch-up pass.
enum Op {
    Upsert(Vec<Val>),
    Delete(Vec<Val>),
}

/// A primary-key-ordered reader over one side of a copy, page by page.
struct Side<'a> {
    pool: &'a SqlitePool,
    t: &'a TableSql,
    room: Option<&'a RoomId>,
    buf: VecDeque<Vec<Val>>,
    after: Option<Vec<Val>>,
    done: bool,
    batch: usize,
}

impl<'a> Side<'a> {
    /// The next row, refilling the buffer from the database when empty.
    async fn peek(&mut self) -> Result<Option<&Vec<Val>>> {
        if self.buf.is_empty() && !self.done {
            let mut conn = self
                .pool
                .acquire()
                .await
                .map_err(db_err(format!("reading table {}", self.t.desc.name)))?;
            let rows = select_page(
                &mut conn,
                self.t,
                self.room,
                self.after.as_deref(),
                self.batch,
            )
            .await?;
            if rows.len() < self.batch {
                self.done = true;
            }
            if let Some(last) = rows.last() {
                self.after = Some(self.t.key_of(last));
            }
            self.buf.extend(rows);
        }
        Ok(self.buf.front())
    }

    fn pop(&mut self) -> Option<Vec<Val>> {
        self.buf.pop_front()
    }
}

/// Writes a batch of operations in one transaction on the target.
async fn apply_ops(pool: &SqlitePool, t: &TableSql, room: &RoomId, ops: &[Op]) -> Result<()> {
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(db_err(format!("beginning a batch of {}", t.desc.name)))?;
    for op in ops {
        match op {
            Op::Upsert(row) => upsert_row(&mut tx, t, row).await?,
            Op::Delete(key) => delete_row(&mut tx, t, key, room).await?,
        }
    }
    tx.commit()
        .await
        .map_err(db_err(format!("committing a batch of {}", t.desc.name)))
}

fn row_text(t: &TableSql, row: &[Val]) -> Result<String> {
    let mut s = String::new();
    codec::push_row(&mut s, &t.desc, row).map_err(|e| stored_corrupt(t, &e))?;
    Ok(s)
}

struct CopyCtx<'a> {
    pass: CopyPass,
    checkpoints: &'a dyn CheckpointSink,
    progress: &'a dyn ProgressSink,
    tables_done: Vec<String>,
    rows_written: u64,
    rows_deleted: u64,
}

impl CopyCtx<'_> {
    async fn save(&self, current: Option<TableCursor>) -> Result<()> {
        self.checkpoints
            .save(&CopyCheckpoint {
                pass: self.pass,
                tables_done: self.tables_done.clone(),
                current,
                provider_state: None,
            })
            .await
    }
}

impl SqliteShardStore {
    #[allow(clippy::too_many_arguments)]
    async fn bulk_table(
        &self,
        ctx: &mut CopyCtx<'_>,
        src: &SqlitePool,
        src_room: Option<&RoomId>,
        dst: &SqlitePool,
        t: &TableSql,
        start: Option<Vec<Val>>,
        mut rows_done: u64,
    ) -> Result<()> {
        let total = {
            let mut conn = src
                .acquire()
                .await
                .map_err(db_err(format!("reading table {}", t.desc.name)))?;
            count_rows(&mut conn, t, src_room).await?
        };
        let mut after = start;
        loop {
            let rows = {
                let mut conn = src
                    .acquire()
                    .await
                    .map_err(db_err(format!("reading table {}", t.desc.name)))?;
                select_page(&mut conn, t, src_room, after.as_deref(), self.batch_rows).await?
            };
            let Some(last) = rows.last() else { break };
            let last_key = t.key_of(last);
            let mut tx = dst
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(db_err(format!("beginning a batch of {}", t.desc.name)))?;
            upsert_rows(&mut tx, t, &rows).await?;
            tx.commit()
                .await
                .map_err(db_err(format!("committing a batch of {}", t.desc.name)))?;
            let n = rows.len() as u64;
            ctx.rows_written += n;
            rows_done += n;
            ctx.save(Some(TableCursor {
                table: t.desc.name.clone(),
                after_key: t.key_text(&last_key)?,
                rows_done,
            }))
            .await?;
            ctx.progress.emit(ProgressEvent::Rows {
                table: t.desc.name.clone(),
                done: rows_done,
                total: Some(total),
            });
            if rows.len() < self.batch_rows {
                break;
            }
            after = Some(last_key);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn catch_up_table(
        &self,
        ctx: &mut CopyCtx<'_>,
        src: &SqlitePool,
        src_room: Option<&RoomId>,
        dst: &SqlitePool,
        dst_room: Option<&RoomId>,
        room: &RoomId,
        t: &TableSql,
        start: Option<Vec<Val>>,
        mut rows_done: u64,
    ) -> Result<()> {
        let mut source = Side {
            pool: src,
            t,
            room: src_room,
            buf: VecDeque::new(),
            after: start.clone(),
            done: false,
            batch: self.batch_rows,
        };
        let mut target = Side {
            pool: dst,
            t,
            room: dst_room,
            buf: VecDeque::new(),
            after: start,
            done: false,
            batch: self.batch_rows,
        };
        let mut ops: Vec<Op> = Vec::new();
        let mut last_key: Option<Vec<Val>> = None;
        loop {
            let s_key = source.peek().await?.map(|r| t.key_of(r));
            let t_key = target.peek().await?.map(|r| t.key_of(r));
            let order = match (&s_key, &t_key) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(a), Some(b)) => codec::cmp_key(a, b),
            };
            match order {
                Ordering::Less => {
                    if let Some(row) = source.pop() {
                        last_key = Some(t.key_of(&row));
                        ops.push(Op::Upsert(row));
                    }
                }
                Ordering::Greater => {
                    if let Some(row) = target.pop() {
                        let key = t.key_of(&row);
                        last_key = Some(key.clone());
                        ops.push(Op::Delete(key));
                    }
                }
                Ordering::Equal => {
                    if let (Some(s), Some(d)) = (source.pop(), target.pop()) {
                        last_key = Some(t.key_of(&s));
                        if row_text(t, &s)? != row_text(t, &d)? {
                            ops.push(Op::Upsert(s));
                        }
                    }
                }
            }
            rows_done += 1;
            if ops.len() >= self.batch_rows {
                self.flush_ops(ctx, dst, room, t, &mut ops, last_key.as_deref(), rows_done)
                    .await?;
            }
        }
        self.flush_ops(ctx, dst, room, t, &mut ops, last_key.as_deref(), rows_done)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn flush_ops(
        &self,
        ctx: &mut CopyCtx<'_>,
        dst: &SqlitePool,
        room: &RoomId,
        t: &TableSql,
        ops: &mut Vec<Op>,
        last_key: Option<&[Val]>,
        rows_done: u64,
    ) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        apply_ops(dst, t, room, ops).await?;
        for op in ops.iter() {
            match op {
                Op::Upsert(_) => ctx.rows_written += 1,
                Op::Delete(_) => ctx.rows_deleted += 1,
            }
        }
        ops.clear();
        let after_key = match last_key {
            Some(k) => t.key_text(k)?,
            None => Vec::new(),
        };
        ctx.save(Some(TableCursor {
            table: t.desc.name.clone(),
            after_key,
            rows_done,
        }))
        .await?;
        ctx.progress.emit(ProgressEvent::Rows {
            table: t.desc.name.clone(),
            done: rows_done,
            total: None,
        });
        Ok(())
    }
}

#[async_trait]
impl ShardStore for SqliteShardStore {
    fn name(&self) -> &str {
        "sqlite"
    }

    fn capabilities(&self) -> ShardCapabilities {
        ShardCapabilities {
            copy_resumable: true,
            catch_up: true,
            dump: true,
            restore: true,
            id_remap: true,
            parity_checksums: true,
            size_bytes: true,
            route: true,
            ..Default::default()
        }
    }

    fn locate_shard(&self, room: &RoomId, region: Option<&str>) -> Result<ServerUrl> {
        if region.is_some() {
            return Err(Error::unsupported("ensure_shard.region", self.name()));
        }
        Self::shard_url(&self.shard_path(room)?)
    }

    async fn ensure_shard(
        &self,
        room: &RoomId,
        at: &Location,
        schema: &RoomSchema,
    ) -> Result<ShardRef> {
        if at.region.is_some() {
            return Err(Error::unsupported("ensure_shard.region", self.name()));
        }
        let tables = schema
            .tables()
            .iter()
            .map(TableSql::new)
            .collect::<Result<Vec<_>>>()?;
        let path = self.shard_file(room, at)?;
        let url = at.shard.clone().unwrap_or_else(|| ServerUrl::new(""));
        let existed = tokio::fs::try_exists(&path).await.unwrap_or(false);
        if at.adopted.shard && !existed {
            return Err(Error::not_found(format!(
                "adopted shard {} of room {room} (an adopted database is never created)",
                at.shard
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            )));
        }
        let context = EncryptionContext::for_room(room);
        // A new shard's data key is made first, so a revoked grant leaves no file behind.
        let mut new_key = match (&self.key_gate, existed) {
            (Some(keys), false) => Some(keys.generate_data_key(room, &context).await?.wrapped),
            _ => None,
        };
        let pool = self.shard_pool(room, &path, true).await?;
        let mut tx = pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err(format!("beginning ensure_shard of room {room}")))?;
        if let Some(keys) = &self.key_gate {
            match read_wrapped_key(&mut tx).await? {
                Some(wrapped) => {
                    keys.decrypt_data_key(room, &wrapped, &context).await?;
                }
                None => {
                    let wrapped = match new_key.take() {
                        Some(w) => w,
                        None => keys.generate_data_key(room, &context).await?.wrapped,
                    };
                    create_meta_table(&mut tx).await?;
                    sqlx::query(
                        "INSERT INTO \"main\".\"roomshard_meta\" (\"key\", \"value\") VALUES (?, ?)",
                    )
                    .bind(WRAPPED_KEY)
                    .bind(wrapped)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err("writing roomshard_meta"))?;
                }
            }
        }
        create_meta_table(&mut tx).await?;
        for t in &tables {
            if table_state(&mut tx, t).await? == TableState::Missing {
                q(t.create_sql())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err(format!("creating table {}", t.desc.name)))?;
            }
        }
        tx.commit()
            .await
            .map_err(db_err(format!("committing ensure_shard of room {room}")))?;
        Ok(ShardRef {
            url: url.clone(),
            namespace: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        })
    }

    async fn copy_room(&self, request: CopyRequest<'_>) -> Result<CopyOutcome> {
        request.validate()?;
        if request.source.server.is_some() {
            return Err(Error::unsupported("copy_room.cross_server", self.name()));
        }
        let room = request.target.room().clone();
        let resume = match request.resume_from {
            Some(c) if c.pass == request.pass => Some(c),
            Some(c) => {
                return Err(Error::invalid(
                    "copy checkpoint",
                    format!(
                        "checkpoint of pass {:?} given to a {:?} pass",
                        c.pass, request.pass
                    ),
                ));
            }
            None => None,
        };
        let dst = self.open_scope(&request.target).await?;
        let src = self.open_scope(&request.source.scope).await?;
        let dst_tables = self
            .scope_tables(&dst, &request.target, request.schema)
            .await?;
        let src_tables = self
            .scope_tables(&src, &request.source.scope, request.schema)
            .await?;
        drop(src_tables);
        let src_room = room_filter(&request.source.scope);
        let dst_room = room_filter(&request.target);
        let mut ctx = CopyCtx {
            pass: request.pass,
            checkpoints: request.checkpoints,
            progress: request.progress,
            tables_done: Vec::new(),
            rows_written: 0,
            rows_deleted: 0,
        };
        if let Some(c) = &resume {
            ctx.tables_done = dst_tables
                .iter()
                .filter(|t| c.tables_done.contains(&t.desc.name))
                .map(|t| t.desc.name.clone())
                .collect();
        }
        for t in &dst_tables {
            if ctx.tables_done.contains(&t.desc.name) {
                continue;
            }
            let cursor = resume
                .as_ref()
                .and_then(|c| c.current.as_ref())
                .filter(|cur| cur.table == t.desc.name && !cur.after_key.is_empty());
            let (start, rows_done) = match cursor {
                Some(cur) => (Some(t.parse_key(&cur.after_key)?), cur.rows_done),
                None => (None, 0),
            };
            match request.pass {
                CopyPass::Bulk => {
                    self.bulk_table(&mut ctx, &src, src_room, &dst, t, start, rows_done)
                        .await?
                }
                CopyPass::Changes => {
                    return Err(Error::unsupported("copy_room.changes", self.name()));
                }
                CopyPass::CatchUp => {
                    self.catch_up_table(
                        &mut ctx, &src, src_room, &dst, dst_room, &room, t, start, rows_done,
                    )
                    .await?
                }
            }
            ctx.tables_done.push(t.desc.name.clone());
            ctx.save(None).await?;
        }
        let mut conn = dst
            .acquire()
            .await
            .map_err(db_err(format!("counting {}", request.target)))?;
        let mut tables = Vec::new();
        for t in &dst_tables {
            tables.push(TableCount {
                table: t.desc.name.clone(),
                rows: count_rows(&mut conn, t, dst_room).await?,
            });
        }
        Ok(CopyOutcome {
            rows_written: ctx.rows_written,
            rows_deleted: ctx.rows_deleted,
            tables,
        })
    }

    async fn row_counts(&self, scope: &Scope, schema: &RoomSchema) -> Result<Vec<TableCount>> {
        let pool = self.open_scope(scope).await?;
        let tables = self.scope_tables(&pool, scope, schema).await?;
        let room = room_filter(scope);
        let mut tx = pool
            .begin()
            .await
            .map_err(db_err(format!("beginning row counts of {scope}")))?;
        let mut out = Vec::with_capacity(tables.len());
        for t in &tables {
            let mut query =
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(t.count_sql(room.is_some())));
            if let Some(room) = room {
                query = query.bind(room.as_str().to_string());
            }
            let rows = query
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err(format!("counting table {}", t.desc.name)))?;
            out.push(TableCount {
                table: t.desc.name.clone(),
                rows: u64::try_from(rows).unwrap_or(0),
            });
        }
        tx.rollback()
            .await
            .map_err(db_err(format!("ending row counts of {scope}")))?;
        Ok(out)
    }

    async fn parity(&self, scope: &Scope, schema: &RoomSchema) -> Result<Parity> {
        let pool = self.open_scope(scope).await?;
        let tables = self.scope_tables(&pool, scope, schema).await?;
        let room = room_filter(scope);
        let mut tx = pool
            .begin()
            .await
            .map_err(db_err(format!("beginning parity of {scope}")))?;
        let mut out = Vec::new();
        let mut line = String::new();
        for t in &tables {
            let mut hasher = Sha256::new();
            let mut rows = 0u64;
            let mut query = q(t.select_sql(room.is_some(), false, false));
            if let Some(room) = room {
                query = query.bind(room.as_str().to_string());
            }
            let mut stream = query.fetch(&mut *tx);
            while let Some(row) = stream
                .try_next()
                .await
                .map_err(db_err(format!("reading table {}", t.desc.name)))?
            {
                let vals = codec::read_row(&row, &t.desc).map_err(|e| stored_corrupt(t, &e))?;
                line.clear();
                codec::push_row(&mut line, &t.desc, &vals).map_err(|e| stored_corrupt(t, &e))?;
                hasher.update(line.as_bytes());
                rows += 1;
            }
            drop(stream);
            out.push(TableParity {
                table: t.desc.name.clone(),
                rows,
                checksum: Some(hex::encode(hasher.finalize())),
            });
        }
        tx.rollback()
            .await
            .map_err(db_err(format!("ending parity of {scope}")))?;
        Ok(Parity { tables: out })
    }

    async fn drop_room(&self, scope: &Scope, schema: &RoomSchema) -> Result<()> {
        match scope {
            Scope::Dedicated(room, at) => {
                if at.shard.is_none() {
                    // Nothing was ever located, so nothing was made.
                    return Ok(());
                }
                let path = self.shard_file(room, at)?;
                let cached = self
                    .pools
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&path);
                if let Some(pool) = cached {
                    pool.close().await;
                }
                if at.adopted.shard {
                    // The customer's database: roomshard forgets it, and leaves it as it is.
                    return Ok(());
                }
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    match tokio::fs::remove_file(&p).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(Error::unavailable(
                                format!("deleting the shard of room {room}"),
                                true,
                                e,
                            ));
                        }
                    }
                }
                Ok(())
            }
            Scope::Pooled(room) => {
                let mut tx = self
                    .global
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(db_err(format!("beginning drop of {scope}")))?;
                for desc in schema.tables() {
                    let t = TableSql::new(desc)?;
                    if table_state(&mut tx, &t).await? == TableState::Missing {
                        continue;
                    }
                    q(format!(
                        "DELETE FROM {} WHERE {} = ?",
                        t.main(),
                        t.room_col()
                    ))
                    .bind(room.as_str().to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err(format!("deleting from table {}", desc.name)))?;
                }
                tx.commit()
                    .await
                    .map_err(db_err(format!("committing drop of {scope}")))
            }
        }
    }

    async fn dump(
        &self,
        scope: &Scope,
        schema: &RoomSchema,
        sink: &mut dyn DumpSink,
    ) -> Result<Vec<TableCount>> {
        let pool = self.open_scope(scope).await?;
        let tables = self.scope_tables(&pool, scope, schema).await?;
        let room = room_filter(scope);
        let mut tx = pool
            .begin()
            .await
            .map_err(db_err(format!("beginning dump of {scope}")))?;
        let mut counts = Vec::new();
        for t in &tables {
            sink.begin_table(&t.desc).await?;
            let mut rows = 0u64;
            let mut chunk = String::with_capacity(DUMP_CHUNK_BYTES + 4096);
            let mut query = q(t.select_sql(room.is_some(), false, false));
            if let Some(room) = room {
                query = query.bind(room.as_str().to_string());
            }
            let mut stream = query.fetch(&mut *tx);
            while let Some(row) = stream
                .try_next()
                .await
                .map_err(db_err(format!("reading table {}", t.desc.name)))?
            {
                let vals = codec::read_row(&row, &t.desc).map_err(|e| stored_corrupt(t, &e))?;
                codec::push_row(&mut chunk, &t.desc, &vals).map_err(|e| stored_corrupt(t, &e))?;
                rows += 1;
                if chunk.len() >= DUMP_CHUNK_BYTES {
                    let full = std::mem::replace(
                        &mut chunk,
                        String::with_capacity(DUMP_CHUNK_BYTES + 4096),
                    );
                    sink.rows(Bytes::from(full)).await?;
                }
            }
            drop(stream);
            if !chunk.is_empty() {
                sink.rows(Bytes::from(chunk)).await?;
            }
            sink.end_table(rows).await?;
            counts.push(TableCount {
                table: t.desc.name.clone(),
                rows,
            });
        }
        tx.rollback()
            .await
            .map_err(db_err(format!("ending dump of {scope}")))?;
        Ok(counts)
    }

    async fn restore(
        &self,
        scope: &Scope,
        schema: &RoomSchema,
        source: &mut dyn DumpSource,
        remap: &IdRemap,
    ) -> Result<RestoreOutcome> {
        let pool = self.open_scope(scope).await?;
        let tables = self.scope_tables(&pool, scope, schema).await?;
        crate::restore::restore(&pool, scope, &tables, source, remap).await
    }

    async fn route(&self, scope: &Scope) -> Result<RouteHandle> {
        Ok(match scope {
            Scope::Pooled(room) => RouteHandle {
                pool: self.global_path().display().to_string(),
                namespace: Namespace::Shared {
                    schema: Identifier::new("main")?,
                    room: room.clone(),
                },
            },
            Scope::Dedicated(room, at) => RouteHandle {
                pool: self.shard_file(room, at)?.display().to_string(),
                namespace: Namespace::Isolated,
            },
        })
    }

    async fn size_bytes(&self, scope: &Scope, schema: &RoomSchema) -> Result<u64> {
        match scope {
            Scope::Dedicated(room, at) => {
                let pool = self.open_scope(scope).await?;
                drop(pool);
                let path = self.shard_file(room, at)?;
                let mut total = 0u64;
                for suffix in ["", "-wal"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    if let Ok(m) = tokio::fs::metadata(&p).await {
                        total += m.len();
                    }
                }
                Ok(total)
            }
            Scope::Pooled(room) => {
                // An estimate: the bytes of the room's values plus a per-row overhead.
                let tables = self.scope_tables(&self.global, scope, schema).await?;
                let mut conn = self
                    .global
                    .acquire()
                    .await
                    .map_err(db_err(format!("measuring {scope}")))?;
                let mut total = 0u64;
                for t in &tables {
                    let lengths = t
                        .cols
                        .iter()
                        .map(|c| format!("IFNULL(LENGTH(CAST({} AS BLOB)), 0)", c.quoted()))
                        .collect::<Vec<_>>()
                        .join(" + ");
                    let row = q(format!(
                        "SELECT COUNT(*), IFNULL(SUM({lengths}), 0) FROM {} WHERE {} = ?",
                        t.main(),
                        t.room_col()
                    ))
                    .bind(room.as_str().to_string())
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db_err(format!("measuring table {}", t.desc.name)))?;
                    let rows: i64 = row.try_get(0).map_err(db_err("measuring"))?;
                    let bytes: i64 = row.try_get(1).map_err(db_err("measuring"))?;
                    total +=
                        u64::try_from(bytes).unwrap_or(0) + 16 * u64::try_from(rows).unwrap_or(0);
                }
                Ok(total)
            }
        }
    }
}
