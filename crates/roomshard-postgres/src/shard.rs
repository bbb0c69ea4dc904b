//! [`PgShardStore`]: pooled rooms in the host's shared tables, dedicated rooms in one schema
//! `room_<id>` each, on one PostgreSQL server.

use crate::session::{Mode, Session};
use crate::sql::{Ns, TableSql, db_err, normalise_copy_out, q};
use futures::TryStreamExt;
use roomshard_core::{
    Bytes, ChunkParity, ChunkPlan, CopyCheckpoint, CopyOutcome, CopyPass, CopyRequest, DumpSink,
    DumpSource, EncryptionContext, Error, IdRemap, Identifier, KeyManager, KeyRange, Location,
    Namespace, Parity, ProgressEvent, ProviderUrl, RestoreOutcome, Result, RoomId, RoomSchema,
    RouteHandle, RowDigest, Scope, ServerUrl, ShardCapabilities, ShardRef, ShardStore, TableCount,
    TableCursor, TableParity, async_trait,
};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, Row};
use std::sync::Arc;

/// Default rows per copy batch (one target transaction and one checkpoint per batch).
pub const DEFAULT_BATCH_ROWS: usize = 50_000;
/// Rough size of a dump chunk.
const DUMP_CHUNK_BYTES: usize = 64 * 1024;
/// The reserved per-shard table holding roomshard's own metadata (the wrapped data key).
pub const META_TABLE: &str = "roomshard_meta";
/// The `roomshard_meta` key of the wrapped data key.
const WRAPPED_KEY: &str = "wrapped_data_key";

/// A [`ShardStore`] on PostgreSQL.
///
/// - [`Scope::Pooled`] is the host's shared tables in one schema of the store's database
///   (`public` unless [`with_shared_schema`](Self::with_shared_schema) says otherwise), every
///   statement filtered on each table's room key column.
/// - [`Scope::Dedicated`] is the schema its [`Location`] names:
///   `postgres://user@host:port/db?schema=room_<id>`. [`locate_shard`](ShardStore::locate_shard)
///   names `room_<id>` on this store's own server, from a validated [`RoomId`] only. A location
///   naming another schema than the room's is refused, so a placement cannot point the store
///   at an arbitrary schema; a shard the store made is found on its own server whatever server
///   the URL records (a database restored elsewhere or cloned keeps working, as a moved SQLite
///   home does). An adopted schema (made by the customer, `adopted.shard`) must be on this
///   server, must exist, and is never created or dropped.
///
/// URLs recorded in placements never carry the password: the store's pool has it, the control
/// plane does not need it.
///
/// Names reach SQL only quoted ([`Identifier`], [`roomshard_core::SchemaName`]); the store never
/// sets `search_path`. Every connection runs with fixed session settings (UTC, ISO dates, hex
/// `bytea`, shortest floats: see [`connect`](crate::connect)), so `COPY … TO STDOUT` writes the
/// codec's text byte for byte.
///
/// # Key gate, and what it is not
/// With [`with_key_gate`](Self::with_key_gate), a dedicated schema holds a data key wrapped by
/// the room's key (in `roomshard_meta`) and every operation on it first unwraps that key through
/// the [`KeyManager`], so a revoked grant makes every shard path [`Error::Sealed`]. The rows are
/// not encrypted by roomshard: whoever can log in to the database can read them. Use the
/// server's own encryption at rest (and its roles) where that matters.
pub struct PgShardStore {
    pool: PgPool,
    /// The server as placements record it: `postgres://user@host:port/db`, no password, no query.
    base: String,
    shared: Identifier,
    batch_rows: usize,
    key_gate: Option<Arc<dyn KeyManager>>,
}

impl std::fmt::Debug for PgShardStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgShardStore")
            .field("server", &self.base)
            .field("shared_schema", &self.shared.as_str())
            .field("batch_rows", &self.batch_rows)
            .field(
                "key_gate",
                &self.key_gate.as_ref().map(|k| k.name().to_string()),
            )
            .finish_non_exhaustive()
    }
}

/// `url` as placements record it: scheme `postgres`, the password removed, no query.
pub(crate) fn server_base(url: &str) -> String {
    let without_query = url.split_once('?').map_or(url, |(b, _)| b);
    let rest = without_query
        .strip_prefix("postgresql://")
        .or_else(|| without_query.strip_prefix("postgres://"))
        .unwrap_or(without_query);
    let rest = match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{user}@{host}")
        }
        None => rest.to_string(),
    };
    format!("postgres://{}", rest.trim_end_matches('/'))
}

impl PgShardStore {
    /// The store over `pool`, a pool of the server and database `url` names (see
    /// [`connect`](crate::connect)); its shared tables are in schema `public`.
    ///
    /// # Errors
    /// [`Error::Invalid`] if `url` is not a `postgres://` URL.
    pub fn new(pool: PgPool, url: &ProviderUrl) -> Result<Self> {
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(url.unknown_scheme(&["postgres", "postgresql"]));
        }
        Ok(PgShardStore {
            pool,
            base: server_base(url.expose()),
            shared: Identifier::new("public")?,
            batch_rows: DEFAULT_BATCH_ROWS,
            key_gate: None,
        })
    }

    /// Puts the host's shared tables in `schema` instead of `public`.
    pub fn with_shared_schema(mut self, schema: Identifier) -> Self {
        self.shared = schema;
        self
    }

    /// Sets the rows per copy batch (at least 1): smaller batches checkpoint more often, larger
    /// ones copy faster.
    pub fn with_batch_rows(mut self, n: usize) -> Self {
        self.batch_rows = n.max(1);
        self
    }

    /// Gates every dedicated shard on the room's key (see the type's docs).
    pub fn with_key_gate(mut self, keys: Arc<dyn KeyManager>) -> Self {
        self.key_gate = Some(keys);
        self
    }

    /// The pool, for the host's own queries (name tables with [`RouteHandle::qualify`]).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The server as placements record it (`postgres://user@host:port/db`).
    pub fn server(&self) -> &str {
        &self.base
    }

    /// Creates the host's shared tables (as a host without roomshard would have them) from the
    /// descriptors, each with an index on its room key column and primary key, so pooled rooms
    /// can be seeded, copied and filtered efficiently.
    ///
    /// # Behaviour
    /// Idempotent; an existing table whose columns differ is [`Error::Conflict`].
    pub async fn ensure_pooled_tables(&self, schema: &RoomSchema) -> Result<()> {
        let ns = Ns::ident(&self.shared);
        let mut s = Session::begin(&self.pool, Mode::Write, "ensure_pooled_tables").await?;
        advisory_lock(s.conn(), &format!("pooled:{}", ns.name)).await?;
        q(format!("CREATE SCHEMA IF NOT EXISTS {}", ns.quoted))
            .execute(s.conn())
            .await
            .map_err(db_err("creating the shared schema"))?;
        for desc in schema.tables() {
            let t = TableSql::new(desc)?;
            if table_state(s.conn(), &ns, &t).await? == TableState::Missing {
                q(t.create_sql(&ns))
                    .execute(s.conn())
                    .await
                    .map_err(db_err(format!("creating table {}", desc.name)))?;
            }
            let index = format!(
                "CREATE INDEX IF NOT EXISTS \"{}__roomshard_room\" ON {} ({}, {})",
                t.ident.as_str(),
                t.at(&ns),
                t.room_col(),
                t.order_by(None)
            );
            q(index)
                .execute(s.conn())
                .await
                .map_err(db_err(format!("indexing table {}", desc.name)))?;
        }
        s.commit("ensure_pooled_tables").await
    }

    /// The shared schema's namespace.
    pub(crate) fn shared_ns(&self) -> Ns {
        Ns::ident(&self.shared)
    }

    /// The namespace of a scope, checked: the shared schema for a pooled room; for a dedicated
    /// one, the schema its location names on this server.
    fn ns(&self, scope: &Scope) -> Result<Ns> {
        match scope {
            Scope::Pooled(_) => Ok(Ns::ident(&self.shared)),
            Scope::Dedicated(room, at) => self.shard_ns(room, at),
        }
    }

    /// The schema a dedicated location names (see the type's docs for what is refused).
    pub(crate) fn shard_ns(&self, room: &RoomId, at: &Location) -> Result<Ns> {
        let url = at.shard.as_ref().ok_or_else(|| {
            Error::invalid(
                "shard location",
                format!("dedicated room {room} has no shard location (locate_shard first)"),
            )
        })?;
        let parsed = ProviderUrl::parse(url.expose(), "shard location")?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(parsed.unknown_scheme(&["postgres", "postgresql"]));
        }
        // A shard this store made is the room's schema on this store's server, whatever server
        // the URL records: a database restored elsewhere, renamed or cloned keeps working (the
        // registry, not the URL, says which store a room's shard is on). An adopted schema is
        // the customer's where they said it is, so it must be on this server.
        if at.adopted.shard && server_base(url.expose()) != self.base {
            return Err(Error::invalid(
                "shard location",
                format!(
                    "{url} is not on this store's server {} (register a store for that server)",
                    self.base
                ),
            ));
        }
        let own = room.schema_name();
        let schema = parsed
            .query("schema")
            .ok_or_else(|| Error::invalid("shard location", format!("{url} names no ?schema=")))?;
        if schema == own.as_unquoted() {
            return Ok(Ns::schema(&own));
        }
        // An adopted shard too is the room's own schema (made by the customer in advance);
        // a database elsewhere is another store, registered under its own name.
        Err(Error::invalid(
            "shard location",
            format!(
                "{url} names schema {schema:?}, not room {room}'s own {}",
                own.as_unquoted()
            ),
        ))
    }

    /// Unwraps the shard's data key if the gate is set; the key manager's error (Sealed for a
    /// revoked grant) is returned unchanged.
    async fn check_gate(&self, conn: &mut PgConnection, room: &RoomId, ns: &Ns) -> Result<()> {
        let Some(keys) = &self.key_gate else {
            return Ok(());
        };
        let wrapped = read_wrapped_key(conn, ns).await?.ok_or_else(|| {
            Error::corrupt(
                format!("dedicated shard of room {room}"),
                "no wrapped data key in roomshard_meta; run ensure_shard with the key gate set",
            )
        })?;
        keys.decrypt_data_key(room, &wrapped, &EncryptionContext::for_room(room))
            .await?;
        Ok(())
    }

    /// Opens a session on `scope`: the namespace checked, a dedicated schema found (NotFound)
    /// and its gate passed, every schema table present (NotFound) and matching (Conflict).
    pub(crate) async fn open(
        &self,
        scope: &Scope,
        schema: &RoomSchema,
        mode: Mode,
        what: &str,
    ) -> Result<(Session, Ns, Vec<TableSql>)> {
        let ns = self.ns(scope)?;
        let tables = schema
            .tables()
            .iter()
            .map(TableSql::new)
            .collect::<Result<Vec<_>>>()?;
        let mut s = Session::begin(&self.pool, mode, what).await?;
        if let Scope::Dedicated(room, _) = scope {
            if !schema_exists(s.conn(), &ns).await? {
                return Err(Error::not_found(format!("dedicated shard of room {room}")));
            }
            self.check_gate(s.conn(), room, &ns).await?;
        }
        for t in &tables {
            match table_state(s.conn(), &ns, t).await? {
                TableState::Missing => {
                    return Err(Error::not_found(format!(
                        "table {} of {scope}",
                        t.desc.name
                    )));
                }
                TableState::Matches => {}
            }
        }
        Ok((s, ns, tables))
    }
}

/// Takes a transaction-scoped advisory lock named `name` (hashed into PostgreSQL's 64-bit lock
/// space under a roomshard prefix), so two processes doing the same provisioning serialise.
pub(crate) async fn advisory_lock(conn: &mut PgConnection, name: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("roomshard:{name}"))
        .execute(conn)
        .await
        .map_err(db_err(format!("locking {name}")))?;
    Ok(())
}

/// Whether a table exists as the descriptor says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TableState {
    Missing,
    Matches,
}

/// Compares an existing table's columns (name, type, nullability, in order) with the
/// descriptor's: missing, matching, or [`Error::Conflict`] naming the first difference.
pub(crate) async fn table_state(
    conn: &mut PgConnection,
    ns: &Ns,
    t: &TableSql,
) -> Result<TableState> {
    let rows = sqlx::query(
        "SELECT column_name::text, data_type::text, is_nullable::text \
         FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
    )
    .bind(&ns.name)
    .bind(t.ident.as_str())
    .fetch_all(&mut *conn)
    .await
    .map_err(db_err(format!("reading the columns of {}", t.desc.name)))?;
    if rows.is_empty() {
        return Ok(TableState::Missing);
    }
    let found: Vec<(String, String, bool)> = rows
        .iter()
        .map(|r| {
            Ok((
                r.try_get::<String, _>(0)?,
                r.try_get::<String, _>(1)?,
                r.try_get::<String, _>(2)? == "YES",
            ))
        })
        .collect::<std::result::Result<_, sqlx::Error>>()
        .map_err(db_err(format!("reading the columns of {}", t.desc.name)))?;
    let wanted: Vec<(String, String, bool)> = t
        .desc
        .columns
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                crate::sql::pg_type(c.logical_type).to_string(),
                c.nullable,
            )
        })
        .collect();
    if found != wanted {
        return Err(Error::conflict(format!(
            "table {}.{} exists with columns {found:?}, the schema declares {wanted:?}",
            ns.name, t.desc.name
        )));
    }
    Ok(TableState::Matches)
}

async fn schema_exists(conn: &mut PgConnection, ns: &Ns) -> Result<bool> {
    sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
    )
    .bind(&ns.name)
    .fetch_one(conn)
    .await
    .map_err(db_err(format!("looking for schema {}", ns.name)))
}

async fn read_wrapped_key(conn: &mut PgConnection, ns: &Ns) -> Result<Option<Vec<u8>>> {
    let exists = sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
         WHERE table_schema = $1 AND table_name = 'roomshard_meta')",
    )
    .bind(&ns.name)
    .fetch_one(&mut *conn)
    .await
    .map_err(db_err("reading roomshard_meta"))?;
    if !exists {
        return Ok(None);
    }
    q(format!(
        "SELECT \"value\" FROM {}.\"roomshard_meta\" WHERE \"key\" = $1",
        ns.quoted
    ))
    .bind(WRAPPED_KEY)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err("reading roomshard_meta"))?
    .map(|r| r.try_get::<Vec<u8>, _>(0))
    .transpose()
    .map_err(db_err("reading roomshard_meta"))
}

/// The room filter of a scope: pooled reads and writes filter on the room key column.
pub(crate) fn room_filter(scope: &Scope) -> Option<&RoomId> {
    match scope {
        Scope::Pooled(room) => Some(room),
        Scope::Dedicated(..) => None,
    }
}

/// `"a"."k" = $n` conditions binding a room filter, or nothing.
pub(crate) fn filter_sql(t: &TableSql, alias: &str, room: Option<&RoomId>, param: usize) -> String {
    match room {
        Some(_) => format!(" AND {alias}.{} = ${param}", t.room_col()),
        None => String::new(),
    }
}

/// ` AND s.<room> = $first` (a pooled source) and ` AND (<pk>) > ($…)` (with a cursor): the
/// source rows after a cursor, with parameters from `first` on — the room, then the cursor's
/// keys — and the next free parameter number.
fn source_after(p: &Pair<'_>, cursor: bool, first: usize) -> (String, usize) {
    let t = p.t;
    let mut next = first;
    let mut cond = filter_sql(t, "s", p.src_room, next);
    if p.src_room.is_some() {
        next += 1;
    }
    if cursor {
        cond.push_str(&format!(" AND {}", t.after_cursor(Some("s"), next)));
        next += t.pk.len();
    }
    (cond, next)
}

/// A cursor's key texts, as bound parameters.
pub(crate) fn bind_keys<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    keys: &'q [String],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    for k in keys {
        query = query.bind(k.as_str());
    }
    query
}

/// The key texts of a cursor as checkpoints store them (COPY text form of each value).
pub(crate) fn escape_keys(keys: Vec<String>) -> Vec<String> {
    keys.into_iter()
        .map(|k| {
            let mut s = String::new();
            roomshard_verify::copy::push_text(&mut s, &k);
            s
        })
        .collect()
}

/// The raw key values of a checkpoint's cursor or of a key range's bound (their COPY text
/// form undone); `what` says which one in an error.
pub(crate) fn unescape_keys(t: &TableSql, keys: &[String], what: &str) -> Result<Vec<String>> {
    if keys.len() != t.pk.len() {
        return Err(Error::invalid(
            what,
            format!(
                "a bound of table {} has {} key values, the key has {} columns",
                t.desc.name,
                keys.len(),
                t.pk.len()
            ),
        ));
    }
    keys.iter()
        .map(|k| {
            let mut values = roomshard_verify::copy::parse_row(k.as_bytes())
                .map_err(|f| Error::invalid(what, format!("a bound's key: {}", f.describe())))?;
            match (values.pop(), values.is_empty()) {
                (Some(Some(v)), true) => Ok(v),
                _ => Err(Error::invalid(what, "a bound's key is NULL or holds a tab")),
            }
        })
        .collect()
}

struct CopyCtx<'a> {
    pass: CopyPass,
    checkpoints: &'a dyn roomshard_core::CheckpointSink,
    progress: &'a dyn roomshard_core::ProgressSink,
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

/// Both sides of a same-server copy of one table.
struct Pair<'a> {
    t: &'a TableSql,
    src: &'a Ns,
    src_room: Option<&'a RoomId>,
    dst: &'a Ns,
    dst_room: Option<&'a RoomId>,
    room: &'a RoomId,
}

impl PgShardStore {
    /// Bulk: one range `INSERT … SELECT` (an upsert, or an append into a keyless target) per
    /// `batch_rows` keys, one transaction and one checkpoint per batch. The rows never leave the
    /// server.
    ///
    /// The reads around the copy run beside it on a second connection, so the server works on
    /// both cores: the count for progress and the first batch's bound together, then each next
    /// batch's bound while the current batch is written (the bound is a key of the source, read
    /// at its own snapshot; a row written after it is a change the catch-up finds, as for any
    /// row written during the copy).
    async fn bulk_table(
        &self,
        ctx: &mut CopyCtx<'_>,
        p: &Pair<'_>,
        mut after: Option<Vec<String>>,
        mut rows_done: u64,
    ) -> Result<()> {
        let t = p.t;
        let keyless = self.bulk_without_key(p, after.as_deref()).await?;
        let (left, mut next) = futures::try_join!(
            self.count_left(p, after.as_deref()),
            self.next_bound(p, after.as_deref())
        )?;
        let total = rows_done + left;
        while let Some((upper, is_full)) = next.take() {
            let copy = self.copy_range(p, after.as_deref(), &upper, keyless);
            let n = if is_full {
                let (n, following) = futures::try_join!(copy, self.next_bound(p, Some(&upper)))?;
                next = following;
                n
            } else {
                copy.await?
            };
            ctx.rows_written += n;
            rows_done += n;
            ctx.save(Some(TableCursor {
                table: t.desc.name.clone(),
                after_key: escape_keys(upper.clone()),
                rows_done,
            }))
            .await?;
            ctx.progress.emit(ProgressEvent::Rows {
                table: t.desc.name.clone(),
                done: rows_done,
                total: Some(total.max(rows_done)),
            });
            after = Some(upper);
        }
        if keyless {
            // One sort at the end instead of an index maintained row by row; the default
            // constraint name, as `CREATE TABLE … PRIMARY KEY` gives it.
            let mut s = Session::begin(&self.pool, Mode::Write, "building a primary key").await?;
            q(format!(
                "ALTER TABLE {} ADD PRIMARY KEY ({})",
                t.at(p.dst),
                t.pk_list(None)
            ))
            .execute(s.conn())
            .await
            .map_err(db_err(format!(
                "building the primary key of {}",
                t.desc.name
            )))?;
            s.commit("building a primary key").await?;
        }
        Ok(())
    }

    /// The source rows after the cursor (the room's rows of a pooled table), for progress.
    async fn count_left(&self, p: &Pair<'_>, after: Option<&[String]>) -> Result<u64> {
        let t = p.t;
        let what = || format!("counting table {}", t.desc.name);
        let (cond, _) = source_after(p, after.is_some(), 1);
        let sql = format!(
            "SELECT count(*) FROM {src} AS s WHERE TRUE{cond}",
            src = t.at(p.src),
        );
        let mut query = q(sql);
        if let Some(room) = p.src_room {
            query = query.bind(room.as_str());
        }
        // A session, not a bare pooled connection: this runs beside the copy, and a count
        // cancelled mid-query (the copy failed) must close its connection, never pool it.
        let mut s = Session::begin(&self.pool, Mode::Snapshot, "counting a table").await?;
        let n: i64 = bind_keys(query, after.unwrap_or(&[]))
            .fetch_one(s.conn())
            .await
            .map_err(db_err(what()))?
            .try_get(0)
            .map_err(db_err("counting"))?;
        s.rollback("counting a table").await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The next batch's last key after the cursor and whether the batch is full: the
    /// `batch_rows`-th source key, or the source's last key when fewer are left (index walks
    /// of the key), or `None` when no row is left.
    async fn next_bound(
        &self,
        p: &Pair<'_>,
        after: Option<&[String]>,
    ) -> Result<Option<(Vec<String>, bool)>> {
        let batch = i64::try_from(self.batch_rows).unwrap_or(i64::MAX);
        let mut s = Session::begin(&self.pool, Mode::Snapshot, "ranging a copy batch").await?;
        let bound = match self.source_key(&mut s, p, after, batch - 1, false).await? {
            Some(k) => Some((k, true)),
            None => self
                .source_key(&mut s, p, after, 0, true)
                .await?
                .map(|k| (k, false)),
        };
        s.rollback("ranging a copy batch").await?;
        Ok(bound)
    }

    /// One batch: the source rows in `(after, upper]` into the target in one plain range
    /// `INSERT … SELECT` (no CTE, no sort, no LIMIT: the planner walks the key range), committed
    /// on its own. Upsert, so a batch committed before a crash but not checkpointed is simply
    /// written again — or, into a keyless target (see `bulk_without_key`), a plain append.
    async fn copy_range(
        &self,
        p: &Pair<'_>,
        after: Option<&[String]>,
        upper: &[String],
        keyless: bool,
    ) -> Result<u64> {
        let t = p.t;
        let mut s = Session::begin(&self.pool, Mode::Write, "a copy batch").await?;
        let (lower, next) = source_after(p, after.is_some(), 1);
        let sql = format!(
            "INSERT INTO {dst} ({plain}) SELECT {cols} FROM {src} AS s \
             WHERE TRUE{lower} AND {upto} {upsert}",
            dst = t.at(p.dst),
            plain = t.col_list(None),
            cols = t.col_list(Some("s")),
            src = t.at(p.src),
            upto = t.up_to(Some("s"), next),
            upsert = if keyless {
                String::new()
            } else {
                t.on_conflict_update()
            },
        );
        let mut query = q(sql);
        if let Some(room) = p.src_room {
            query = query.bind(room.as_str());
        }
        let query = bind_keys(query, after.unwrap_or(&[]));
        let n = bind_keys(query, upper)
            .execute(s.conn())
            .await
            .map_err(db_err(format!("copying a batch of {}", t.desc.name)))?
            .rows_affected();
        s.commit(&format!("a batch of {}", t.desc.name)).await?;
        Ok(n)
    }

    /// Whether this bulk pass fills a keyless target: a dedicated table (never the host's
    /// shared one) that is empty when its copy starts loses its primary key until the table is
    /// copied, like a plain `INSERT … SELECT` followed by `ADD PRIMARY KEY`. A pass resumed
    /// into a table still keyless from a crash first deletes the rows past its checkpoint (a
    /// batch committed but not checkpointed), so appending again never duplicates a row.
    async fn bulk_without_key(&self, p: &Pair<'_>, after: Option<&[String]>) -> Result<bool> {
        if p.dst_room.is_some() {
            return Ok(false);
        }
        let t = p.t;
        let mut s = Session::begin(&self.pool, Mode::Write, "preparing a bulk copy").await?;
        let row = q(format!(
            "SELECT (SELECT conname::text FROM pg_catalog.pg_constraint \
                     WHERE conrelid = $1::regclass AND contype = 'p'), \
                    EXISTS (SELECT 1 FROM {} LIMIT 1)",
            t.at(p.dst)
        ))
        .bind(t.at(p.dst))
        .fetch_one(s.conn())
        .await
        .map_err(db_err(format!("inspecting table {}", t.desc.name)))?;
        let pk: Option<String> = row.try_get(0).map_err(db_err("inspecting a table"))?;
        let has_rows: bool = row.try_get(1).map_err(db_err("inspecting a table"))?;
        let keyless = match pk {
            Some(name) if after.is_none() && !has_rows => {
                q(format!(
                    "ALTER TABLE {} DROP CONSTRAINT \"{}\"",
                    t.at(p.dst),
                    name.replace('"', "\"\"")
                ))
                .execute(s.conn())
                .await
                .map_err(db_err(format!("preparing table {}", t.desc.name)))?;
                true
            }
            Some(_) => false,
            None => {
                let mut query = match after {
                    Some(_) => q(format!(
                        "DELETE FROM {} AS s WHERE {}",
                        t.at(p.dst),
                        t.after_cursor(Some("s"), 1)
                    )),
                    None => q(format!("DELETE FROM {}", t.at(p.dst))),
                };
                query = bind_keys(query, after.unwrap_or(&[]));
                query
                    .execute(s.conn())
                    .await
                    .map_err(db_err(format!("resuming table {}", t.desc.name)))?;
                true
            }
        };
        s.commit("preparing a bulk copy").await?;
        Ok(keyless)
    }

    /// The key of the source row `offset` rows after the cursor (in key order, or from the end
    /// with `from_end`), as text, or `None` when there is none.
    async fn source_key(
        &self,
        s: &mut Session,
        p: &Pair<'_>,
        after: Option<&[String]>,
        offset: i64,
        from_end: bool,
    ) -> Result<Option<Vec<String>>> {
        let t = p.t;
        let (cond, _) = source_after(p, after.is_some(), 2);
        let sql = format!(
            "SELECT ARRAY[{keys}] FROM {src} AS s WHERE TRUE{cond} \
             ORDER BY {order} OFFSET $1 LIMIT 1",
            keys = t.pk_as_text(Some("s")),
            src = t.at(p.src),
            order = if from_end {
                t.order_by_desc(Some("s"))
            } else {
                t.order_by(Some("s"))
            },
        );
        let mut query = q(sql).bind(offset);
        if let Some(room) = p.src_room {
            query = query.bind(room.as_str());
        }
        bind_keys(query, after.unwrap_or(&[]))
            .fetch_optional(s.conn())
            .await
            .map_err(db_err(format!("ranging table {}", t.desc.name)))?
            .map(|r| r.try_get::<Vec<String>, _>(0))
            .transpose()
            .map_err(db_err("reading a range bound"))
    }

    /// Catch-up: per key range of the source (`batch_rows` keys), upsert the source rows whose
    /// content differs from the target's (compared as row text) and delete the target's rows in
    /// the range that the source no longer has; then delete the target's rows after the last
    /// source key. One transaction and one checkpoint per range.
    async fn catch_up_table(
        &self,
        ctx: &mut CopyCtx<'_>,
        p: &Pair<'_>,
        mut after: Option<Vec<String>>,
        mut rows_done: u64,
    ) -> Result<()> {
        let t = p.t;
        let batch = i64::try_from(self.batch_rows).unwrap_or(i64::MAX);
        loop {
            // The range's upper bound: the batch_rows-th source key after the cursor.
            let mut s = Session::begin(&self.pool, Mode::Write, "a catch-up range").await?;
            let upper: Option<Vec<String>> = {
                let mut next = 2;
                let room_cond = filter_sql(t, "s", p.src_room, next);
                if p.src_room.is_some() {
                    next += 1;
                }
                let cursor_cond = match &after {
                    Some(_) => format!(" AND {}", t.after_cursor(Some("s"), next)),
                    None => String::new(),
                };
                let sql = format!(
                    "SELECT ARRAY[{keys}] FROM {src} AS s WHERE TRUE{room_cond}{cursor_cond} \
                     ORDER BY {order} OFFSET $1 - 1 LIMIT 1",
                    keys = t.pk_as_text(Some("s")),
                    src = t.at(p.src),
                    order = t.order_by(Some("s")),
                );
                let mut query = q(sql).bind(batch);
                if let Some(room) = p.src_room {
                    query = query.bind(room.as_str());
                }
                bind_keys(query, after.as_deref().unwrap_or(&[]))
                    .fetch_optional(s.conn())
                    .await
                    .map_err(db_err(format!("ranging table {}", t.desc.name)))?
                    .map(|r| r.try_get::<Vec<String>, _>(0))
                    .transpose()
                    .map_err(db_err("reading a range bound"))?
            };
            let (written, deleted, seen) = self
                .sync_range(&mut s, p, after.as_deref(), upper.as_deref())
                .await?;
            s.commit(&format!("a catch-up range of {}", t.desc.name))
                .await?;
            ctx.rows_written += written;
            ctx.rows_deleted += deleted;
            rows_done += seen;
            if let Some(upper) = &upper {
                ctx.save(Some(TableCursor {
                    table: t.desc.name.clone(),
                    after_key: escape_keys(upper.clone()),
                    rows_done,
                }))
                .await?;
            }
            ctx.progress.emit(ProgressEvent::Rows {
                table: t.desc.name.clone(),
                done: rows_done,
                total: None,
            });
            match upper {
                Some(u) => after = Some(u),
                None => break,
            }
        }
        Ok(())
    }

    /// Makes the target equal the source for keys in `(after, upper]` (`upper` `None`: to the
    /// end). Returns rows written, rows deleted and source rows seen.
    async fn sync_range(
        &self,
        s: &mut Session,
        p: &Pair<'_>,
        after: Option<&[String]>,
        upper: Option<&[String]>,
    ) -> Result<(u64, u64, u64)> {
        let t = p.t;
        // Parameters: $1 room (if any side is filtered; both sides are the same room), then the
        // lower bound's keys, then the upper bound's.
        let filtered = p.src_room.is_some() || p.dst_room.is_some();
        // The bounds' parameters from `first` on.
        let range_from = |alias: &str, first: usize| {
            let mut c = String::new();
            let mut next = first;
            if after.is_some() {
                c.push_str(&format!(" AND {}", t.after_cursor(Some(alias), next)));
                next += t.pk.len();
            }
            if upper.is_some() {
                c.push_str(&format!(" AND {}", t.up_to(Some(alias), next)));
            }
            c
        };
        let range = |alias: &str| range_from(alias, if filtered { 2 } else { 1 });
        let src_room = filter_sql(t, "s", p.src_room, 1);
        let dst_room = filter_sql(t, "d", p.dst_room, 1);
        let bind_all = |sql: String| {
            let mut query = q(sql);
            if filtered {
                query = query.bind(p.room.as_str().to_string());
            }
            for k in after.unwrap_or(&[]) {
                query = query.bind(k.clone());
            }
            for k in upper.unwrap_or(&[]) {
                query = query.bind(k.clone());
            }
            query
        };
        let upsert = format!(
            "INSERT INTO {dst} ({plain}) SELECT {scols} FROM {src} AS s \
             WHERE TRUE{src_room}{src_range} AND NOT EXISTS (SELECT 1 FROM {dst} AS d \
             WHERE {join} AND {drow} = {srow}) {update}",
            dst = t.at(p.dst),
            plain = t.col_list(None),
            scols = t.col_list(Some("s")),
            src = t.at(p.src),
            src_range = range("s"),
            join = t.pk_join("d", "s"),
            drow = t.row_text("d"),
            srow = t.row_text("s"),
            update = t.on_conflict_update(),
        );
        let written = bind_all(upsert)
            .execute(s.conn())
            .await
            .map_err(db_err(format!("catching up table {}", t.desc.name)))?
            .rows_affected();
        let delete = format!(
            "DELETE FROM {dst} AS d WHERE TRUE{dst_room}{dst_range} AND NOT EXISTS \
             (SELECT 1 FROM {src} AS s WHERE {join}{src_room})",
            dst = t.at(p.dst),
            dst_range = range("d"),
            src = t.at(p.src),
            join = t.pk_join("s", "d"),
        );
        let deleted = bind_all(delete)
            .execute(s.conn())
            .await
            .map_err(db_err(format!("catching up deletes of {}", t.desc.name)))?
            .rows_affected();
        // The count reads the source alone: the room is a parameter only when the source is
        // filtered. (Binding a room the statement never uses would work once — the statement
        // then declares it — but breaks when the same text was prepared before without it.)
        let count = format!(
            "SELECT count(*) FROM {src} AS s WHERE TRUE{src_room}{src_range}",
            src = t.at(p.src),
            src_range = range_from("s", if p.src_room.is_some() { 2 } else { 1 }),
        );
        let mut count_query = q(count);
        if p.src_room.is_some() {
            count_query = count_query.bind(p.room.as_str().to_string());
        }
        for k in after.unwrap_or(&[]).iter().chain(upper.unwrap_or(&[])) {
            count_query = count_query.bind(k.clone());
        }
        let seen: i64 = count_query
            .fetch_one(s.conn())
            .await
            .map_err(db_err(format!("counting table {}", t.desc.name)))?
            .try_get(0)
            .map_err(db_err("counting"))?;
        Ok((written, deleted, u64::try_from(seen).unwrap_or(0)))
    }
}

#[async_trait]
impl ShardStore for PgShardStore {
    fn name(&self) -> &str {
        "postgres"
    }

    fn capabilities(&self) -> ShardCapabilities {
        ShardCapabilities {
            copy_resumable: true,
            catch_up: true,
            change_log: true,
            write_fence: true,
            dump: true,
            restore: true,
            id_remap: true,
            parity_checksums: true,
            chunk_parity: true,
            size_bytes: true,
            route: true,
            ..Default::default()
        }
    }

    fn locate_shard(&self, room: &RoomId, region: Option<&str>) -> Result<ServerUrl> {
        if region.is_some() {
            return Err(Error::unsupported("ensure_shard.region", self.name()));
        }
        Ok(ServerUrl::new(format!(
            "{}?schema={}",
            self.base,
            room.schema_name().as_unquoted()
        )))
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
        let ns = self.shard_ns(room, at)?;
        let url = at.shard.clone().unwrap_or_else(|| ServerUrl::new(""));
        let context = EncryptionContext::for_room(room);
        let mut s = Session::begin(&self.pool, Mode::Write, "ensure_shard").await?;
        // Two processes decentralising one room at once: the second waits here, then finds
        // everything made and changes nothing.
        advisory_lock(s.conn(), &format!("shard:{}", ns.name)).await?;
        let existed = schema_exists(s.conn(), &ns).await?;
        if at.adopted.shard && !existed {
            return Err(Error::not_found(format!(
                "adopted shard {url} of room {room} (an adopted schema is never created)"
            )));
        }
        if let Some(keys) = &self.key_gate {
            match read_wrapped_key(s.conn(), &ns).await? {
                Some(wrapped) => {
                    keys.decrypt_data_key(room, &wrapped, &context).await?;
                }
                None => {
                    // Made before any DDL commits, so a revoked grant leaves no schema behind.
                    let wrapped = keys.generate_data_key(room, &context).await?.wrapped;
                    if !existed {
                        q(format!("CREATE SCHEMA {}", ns.quoted))
                            .execute(s.conn())
                            .await
                            .map_err(db_err(format!("creating the shard of room {room}")))?;
                    }
                    create_meta_table(s.conn(), &ns).await?;
                    q(format!(
                        "INSERT INTO {}.\"roomshard_meta\" (\"key\", \"value\") VALUES ($1, $2)",
                        ns.quoted
                    ))
                    .bind(WRAPPED_KEY)
                    .bind(wrapped)
                    .execute(s.conn())
                    .await
                    .map_err(db_err("writing roomshard_meta"))?;
                }
            }
        }
        q(format!("CREATE SCHEMA IF NOT EXISTS {}", ns.quoted))
            .execute(s.conn())
            .await
            .map_err(db_err(format!("creating the shard of room {room}")))?;
        create_meta_table(s.conn(), &ns).await?;
        for t in &tables {
            if table_state(s.conn(), &ns, t).await? == TableState::Missing {
                q(t.create_sql(&ns))
                    .execute(s.conn())
                    .await
                    .map_err(db_err(format!("creating table {}", t.desc.name)))?;
            }
        }
        s.commit(&format!("ensure_shard of room {room}")).await?;
        Ok(ShardRef {
            url,
            namespace: ns.name,
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
        // Both sides exist, pass their gates and have every table.
        let (s, dst_ns, tables) = self
            .open(&request.target, request.schema, Mode::Write, "copy target")
            .await?;
        s.rollback("copy target check").await?;
        let (s, src_ns, _) = self
            .open(
                &request.source.scope,
                request.schema,
                Mode::Write,
                "copy source",
            )
            .await?;
        s.rollback("copy source check").await?;
        let src_room = room_filter(&request.source.scope);
        let dst_room = room_filter(&request.target);
        if request.pass == CopyPass::Changes {
            if src_room.is_none() {
                return Err(Error::invalid(
                    "copy request",
                    "a changes pass reads a pooled source's change log; this source is dedicated",
                ));
            }
            if !self.is_tracked(&room).await? {
                return Err(Error::conflict(format!(
                    "room {room}'s changes are not tracked (track_changes first); a catch-up \
                     pass compares the whole room instead"
                )));
            }
        }
        let mut ctx = CopyCtx {
            pass: request.pass,
            checkpoints: request.checkpoints,
            progress: request.progress,
            tables_done: Vec::new(),
            rows_written: 0,
            rows_deleted: 0,
        };
        if let Some(c) = &resume {
            ctx.tables_done = tables
                .iter()
                .filter(|t| c.tables_done.contains(&t.desc.name))
                .map(|t| t.desc.name.clone())
                .collect();
        }
        for t in &tables {
            if ctx.tables_done.contains(&t.desc.name) {
                continue;
            }
            let cursor = resume
                .as_ref()
                .and_then(|c| c.current.as_ref())
                .filter(|cur| cur.table == t.desc.name && !cur.after_key.is_empty());
            let (start, rows_done) = match cursor {
                Some(cur) => (
                    Some(unescape_keys(t, &cur.after_key, "copy checkpoint")?),
                    cur.rows_done,
                ),
                None => (None, 0),
            };
            let pair = Pair {
                t,
                src: &src_ns,
                src_room,
                dst: &dst_ns,
                dst_room,
                room: &room,
            };
            match request.pass {
                CopyPass::Bulk => self.bulk_table(&mut ctx, &pair, start, rows_done).await?,
                CopyPass::CatchUp => {
                    self.catch_up_table(&mut ctx, &pair, start, rows_done)
                        .await?
                }
                CopyPass::Changes => {
                    let (written, deleted) = self
                        .apply_changes(t, &src_ns, &dst_ns, dst_room.is_some(), &room)
                        .await?;
                    ctx.rows_written += written;
                    ctx.rows_deleted += deleted;
                    ctx.progress.emit(ProgressEvent::Rows {
                        table: t.desc.name.clone(),
                        done: written + deleted,
                        total: None,
                    });
                    // The log is the pass's own checkpoint: nothing to save.
                    continue;
                }
            }
            ctx.tables_done.push(t.desc.name.clone());
            ctx.save(None).await?;
        }
        let tables = self.row_counts(&request.target, request.schema).await?;
        Ok(CopyOutcome {
            rows_written: ctx.rows_written,
            rows_deleted: ctx.rows_deleted,
            tables,
        })
    }

    async fn track_changes(&self, room: &RoomId, schema: &RoomSchema, on: bool) -> Result<bool> {
        self.track(room, schema, on).await
    }

    async fn fence_writes(
        &self,
        room: &RoomId,
        schema: &RoomSchema,
        wait: std::time::Duration,
    ) -> Result<Box<dyn roomshard_core::WriteFence>> {
        self.fence(room, schema, wait).await
    }

    async fn retire_pooled(&self, room: &RoomId, schema: &RoomSchema, retired: bool) -> Result<()> {
        self.retire(room, schema, retired).await
    }

    async fn row_counts(&self, scope: &Scope, schema: &RoomSchema) -> Result<Vec<TableCount>> {
        let (mut s, ns, tables) = self
            .open(scope, schema, Mode::Snapshot, "row counts")
            .await?;
        let room = room_filter(scope);
        let mut out = Vec::with_capacity(tables.len());
        for t in &tables {
            let mut query = q(t.count_sql(&ns, room.is_some()));
            if let Some(room) = room {
                query = query.bind(room.as_str());
            }
            let rows: i64 = query
                .fetch_one(s.conn())
                .await
                .map_err(db_err(format!("counting table {}", t.desc.name)))?
                .try_get(0)
                .map_err(db_err("counting"))?;
            out.push(TableCount {
                table: t.desc.name.clone(),
                rows: u64::try_from(rows).unwrap_or(0),
            });
        }
        s.rollback("row counts").await?;
        Ok(out)
    }

    async fn parity(&self, scope: &Scope, schema: &RoomSchema) -> Result<Parity> {
        // Exactly the bytes `dump` writes, hashed per table: one COPY loop for both.
        let mut sink = HashSink::default();
        self.dump(scope, schema, &mut sink).await?;
        Ok(Parity {
            tables: sink.tables,
        })
    }

    async fn chunk_parity(
        &self,
        scope: &Scope,
        schema: &RoomSchema,
        plan: &ChunkPlan,
    ) -> Result<Vec<ChunkParity>> {
        self.chunks(scope, schema, plan).await
    }

    async fn row_digests(
        &self,
        scope: &Scope,
        schema: &RoomSchema,
        range: &KeyRange,
        limit: usize,
    ) -> Result<Vec<RowDigest>> {
        self.digests(scope, schema, range, limit).await
    }

    async fn reset_applied(&self, room: &RoomId) -> Result<()> {
        self.reset_applied_keys(room).await
    }

    async fn applied_in(
        &self,
        room: &RoomId,
        schema: &RoomSchema,
        ranges: &[KeyRange],
    ) -> Result<Vec<usize>> {
        self.applied_ranges(room, schema, ranges).await
    }

    async fn drop_room(&self, scope: &Scope, schema: &RoomSchema) -> Result<()> {
        match scope {
            Scope::Dedicated(room, at) => {
                if at.shard.is_none() {
                    // Nothing was ever located, so nothing was made.
                    return Ok(());
                }
                let ns = self.shard_ns(room, at)?;
                if at.adopted.shard {
                    // The customer's schema: roomshard forgets it and leaves it as it is.
                    return Ok(());
                }
                let mut s = Session::begin(&self.pool, Mode::Write, "drop_room").await?;
                advisory_lock(s.conn(), &format!("shard:{}", ns.name)).await?;
                q(format!("DROP SCHEMA IF EXISTS {} CASCADE", ns.quoted))
                    .execute(s.conn())
                    .await
                    .map_err(db_err(format!("dropping the shard of room {room}")))?;
                s.commit("drop_room").await
            }
            Scope::Pooled(room) => {
                let ns = Ns::ident(&self.shared);
                let mut s = Session::begin(&self.pool, Mode::Write, "drop_room").await?;
                for desc in schema.tables() {
                    let t = TableSql::new(desc)?;
                    if table_state(s.conn(), &ns, &t).await? == TableState::Missing {
                        continue;
                    }
                    q(format!(
                        "DELETE FROM {} WHERE {} = $1",
                        t.at(&ns),
                        t.room_col()
                    ))
                    .bind(room.as_str())
                    .execute(s.conn())
                    .await
                    .map_err(db_err(format!("deleting from table {}", desc.name)))?;
                }
                s.commit("drop_room").await
            }
        }
    }

    async fn dump(
        &self,
        scope: &Scope,
        schema: &RoomSchema,
        sink: &mut dyn DumpSink,
    ) -> Result<Vec<TableCount>> {
        let (mut s, ns, tables) = self.open(scope, schema, Mode::Snapshot, "dump").await?;
        let room = room_filter(scope);
        let mut counts = Vec::with_capacity(tables.len());
        for t in &tables {
            sink.begin_table(&t.desc).await?;
            // The sink is async and COPY's stream borrows the connection, so chunks go through
            // a small bounded hand-off: read a chunk, then await the sink.
            let sql = t.copy_out_sql(&ns, room)?;
            let mut stream = s
                .conn()
                .copy_out_raw(&sql)
                .await
                .map_err(db_err(format!("reading table {}", t.desc.name)))?;
            let mut rows = 0u64;
            let mut chunk: Vec<u8> = Vec::with_capacity(DUMP_CHUNK_BYTES + 4096);
            while let Some(bytes) = stream
                .try_next()
                .await
                .map_err(db_err(format!("reading table {}", t.desc.name)))?
            {
                chunk.extend_from_slice(&bytes);
                if chunk.len() >= DUMP_CHUNK_BYTES {
                    let mut full =
                        std::mem::replace(&mut chunk, Vec::with_capacity(DUMP_CHUNK_BYTES + 4096));
                    rows += normalise_copy_out(&mut full);
                    sink.rows(Bytes::from(full)).await?;
                }
            }
            drop(stream);
            if !chunk.is_empty() {
                rows += normalise_copy_out(&mut chunk);
                sink.rows(Bytes::from(chunk)).await?;
            }
            sink.end_table(rows).await?;
            counts.push(TableCount {
                table: t.desc.name.clone(),
                rows,
            });
        }
        s.rollback("dump").await?;
        Ok(counts)
    }

    async fn restore(
        &self,
        scope: &Scope,
        schema: &RoomSchema,
        source: &mut dyn DumpSource,
        remap: &IdRemap,
    ) -> Result<RestoreOutcome> {
        let (s, ns, tables) = self.open(scope, schema, Mode::Write, "restore").await?;
        crate::restore::restore(s, scope, &ns, &tables, source, remap).await
    }

    async fn size_bytes(&self, scope: &Scope, schema: &RoomSchema) -> Result<u64> {
        let (mut s, ns, tables) = self
            .open(scope, schema, Mode::Snapshot, "size_bytes")
            .await?;
        let total: i64 = match scope {
            Scope::Dedicated(..) => {
                // Every table of the schema with its indexes and TOAST: what the room costs.
                sqlx::query_scalar(
                    "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint \
                     FROM pg_catalog.pg_class c \
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'm')",
                )
                .bind(&ns.name)
                .fetch_one(s.conn())
                .await
                .map_err(db_err(format!("measuring {scope}")))?
            }
            Scope::Pooled(room) => {
                // An estimate: the room's rows as stored (pg_column_size of each row).
                let mut total = 0i64;
                for t in &tables {
                    let n: i64 = q(format!(
                        "SELECT COALESCE(SUM(pg_column_size(x.*)), 0)::bigint FROM {} AS x \
                         WHERE x.{} = $1",
                        t.at(&ns),
                        t.room_col()
                    ))
                    .bind(room.as_str())
                    .fetch_one(s.conn())
                    .await
                    .map_err(db_err(format!("measuring table {}", t.desc.name)))?
                    .try_get(0)
                    .map_err(db_err("measuring"))?;
                    total = total.saturating_add(n);
                }
                total
            }
        };
        s.rollback("size_bytes").await?;
        Ok(u64::try_from(total).unwrap_or(0))
    }

    async fn route(&self, scope: &Scope) -> Result<RouteHandle> {
        let namespace = match scope {
            Scope::Pooled(room) => Namespace::Shared {
                schema: self.shared.clone(),
                room: room.clone(),
            },
            Scope::Dedicated(room, at) => {
                self.shard_ns(room, at)?;
                Namespace::Schema(room.schema_name())
            }
        };
        Ok(RouteHandle {
            pool: self.base.clone(),
            namespace,
        })
    }
}

async fn create_meta_table(conn: &mut PgConnection, ns: &Ns) -> Result<()> {
    q(format!(
        "CREATE TABLE IF NOT EXISTS {}.\"roomshard_meta\" \
         (\"key\" text NOT NULL PRIMARY KEY, \"value\" bytea NOT NULL)",
        ns.quoted
    ))
    .execute(conn)
    .await
    .map_err(db_err("creating roomshard_meta"))?;
    Ok(())
}

/// A [`DumpSink`] that keeps only each table's row count and SHA-256: what `parity` reports.
#[derive(Default)]
struct HashSink {
    tables: Vec<TableParity>,
    current: Option<(String, Sha256)>,
}

#[async_trait]
impl DumpSink for HashSink {
    async fn begin_table(&mut self, table: &roomshard_core::TableDescriptor) -> Result<()> {
        self.current = Some((table.name.clone(), Sha256::new()));
        Ok(())
    }

    async fn rows(&mut self, chunk: Bytes) -> Result<()> {
        if let Some((_, hasher)) = &mut self.current {
            hasher.update(&chunk);
        }
        Ok(())
    }

    async fn end_table(&mut self, rows: u64) -> Result<()> {
        if let Some((table, hasher)) = self.current.take() {
            self.tables.push(TableParity {
                table,
                rows,
                checksum: Some(hex::encode(hasher.finalize())),
            });
        }
        Ok(())
    }
}
