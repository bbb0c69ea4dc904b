//! [`ShardStore`]: where a room's rows live.

use crate::capabilities::ShardCapabilities;
use crate::error::{Error, Result};
use crate::events::{ChangeEvent, ProgressSink};
use crate::ids::{Identifier, ObjectKey, RoomId, SchemaName};
use crate::placement::{Location, Scope, ServerUrl};
use crate::schema::RoomSchema;
use async_trait::async_trait;
use bytes::Bytes;
use roomshard_verify::format::TableDescriptor;
use serde::{Deserialize, Serialize};

/// Stores rooms' rows: the shared tables of pooled rooms and one dedicated shard per sovereign
/// room (a PostgreSQL schema `room_<id>`, an SQLite file, …).
///
/// # Rows on the wire
///
/// Rows cross this trait in **PostgreSQL COPY text format** (`docs/bundle-format.md` §4): one
/// line per row ending in `\n`, fields in the table's column order separated by a tab, `\N` for
/// NULL, `\\ \t \n \r` escaped, `bytea` as `\\x<hex>`, `bool` as `t`/`f`, `timestamptz` as
/// `YYYY-MM-DD HH:MM:SS[.ffffff]+00`, `float8` in shortest round-trip form. It is what PostgreSQL
/// emits natively, what a bundle's `db.sql` contains, and byte-for-byte comparable across
/// providers, so [`parity`](Self::parity) checksums from an SQLite source and a PostgreSQL target
/// agree exactly when the rows do.
///
/// **Row order** is the primary key, ascending (`text` compared byte-wise, `COLLATE "C"`), so a
/// dump is deterministic and a checksum does not depend on physical order.
///
/// # Contract for every method
///
/// See the [module docs](crate::traits) for the rules shared by all four traits.
#[async_trait]
pub trait ShardStore: Send + Sync {
    /// A short name for the provider (`postgres`, `sqlite`), used in
    /// [`Error::Unsupported`] and logs.
    fn name(&self) -> &str;

    /// What this store can do. Must be constant for the store's lifetime.
    fn capabilities(&self) -> ShardCapabilities;

    /// Where [`ensure_shard`](Self::ensure_shard) would create `room`'s dedicated shard, pinned
    /// to `region` if given: the URL a placement records **before** anything is created.
    ///
    /// # Behaviour
    /// - No side effect; the same answer for the same room and region while the store's
    ///   configuration is unchanged.
    /// - A region the store cannot place a shard in is [`Error::Unsupported`]
    ///   (`ensure_shard.region`): residency is refused, never silently ignored.
    ///
    /// # Requires capability
    /// `regions` for a `region`.
    fn locate_shard(&self, room: &RoomId, region: Option<&str>) -> Result<ServerUrl>;

    /// Makes sure `room`'s dedicated shard exists at `at.shard` with every table of `schema`.
    ///
    /// # Behaviour
    /// - `at.shard` is where the placement says the shard is — from
    ///   [`locate_shard`](Self::locate_shard), or a customer's own database (`at.adopted.shard`).
    ///   `None`, or a URL this store does not serve, is [`Error::Invalid`].
    /// - Creates the shard (schema, file, …) if missing — except an adopted one, which must
    ///   exist ([`Error::NotFound`] otherwise) and is never created; creates each missing table
    ///   from its descriptor (columns, types, nullability, primary key — no foreign keys);
    ///   creates roomshard's own per-shard tables (names starting with
    ///   [`RESERVED_TABLE_PREFIX`](crate::RESERVED_TABLE_PREFIX)), and, with
    ///   `transactional_outbox`, the triggers that feed the outbox.
    /// - A pinned `at.region` the store cannot honour is [`Error::Unsupported`]
    ///   (`ensure_shard.region`), before anything is created.
    /// - **Idempotent**: on an existing, matching shard it changes nothing and returns `Ok`.
    /// - An existing table whose columns differ from the descriptor is [`Error::Conflict`]; the
    ///   store never alters or drops host data to make it fit.
    /// - Identifiers reach SQL only through [`SchemaName`] and [`Identifier`] quoting.
    /// - Returns the shard's reference ([`ShardRef`]), whose `url` equals `at.shard`.
    ///
    /// # Requires capability
    /// `regions` for a pinned region.
    async fn ensure_shard(
        &self,
        room: &RoomId,
        at: &Location,
        schema: &RoomSchema,
    ) -> Result<ShardRef>;

    /// Copies one room's rows from `request.source` into `request.target`: one pass of a
    /// decentralise, recentralise or move.
    ///
    /// # Behaviour
    /// - Calls [`CopyRequest::validate`] first (same room, distinct places).
    /// - Tables are copied in schema order. Source tables have the schema's names; in a pooled
    ///   scope only rows whose `room_key_column` equals the room are read or written.
    /// - Writes are **upserts by primary key**, so re-running a pass — after a crash between a
    ///   committed batch and its checkpoint, or from scratch — converges to the same target.
    /// - [`CopyPass::Bulk`] copies every row in primary-key order, in batches; after each
    ///   committed batch it awaits `request.checkpoints.save(..)` (a failed save fails the copy)
    ///   and emits [`ProgressEvent::Rows`](crate::ProgressEvent::Rows).
    /// - [`CopyPass::CatchUp`] makes the target equal the source: inserts missing rows, updates
    ///   changed rows, deletes rows gone from the source. `CopyOutcome::rows_written +
    ///   rows_deleted` tells the caller whether the delta is small enough for cutover.
    /// - [`CopyPass::Changes`] applies the change log of a pooled source: for every key logged
    ///   since the last pass, the target row becomes the source row (or goes, if the source has
    ///   none), and the applied log entries are removed in the same transaction, so a crash
    ///   between batches loses nothing and a repeated pass does nothing twice. It saves no
    ///   checkpoint (the log is its own). A source that is not tracked is [`Error::Conflict`].
    ///   With `chunk_parity`, the keys it applied are recorded in the same transaction, for
    ///   [`applied_in`](Self::applied_in).
    /// - With `resume_from`, continues after the checkpoint; a store without `copy_resumable`
    ///   ignores it and starts over (safe, since copies are idempotent).
    /// - Returns [`Error::NotFound`] if the target shard does not exist (call
    ///   [`ensure_shard`](Self::ensure_shard) first).
    /// - The source is only read; the room stays writable there (the caller handles cutover).
    ///
    /// # Requires capability
    /// `cross_server_copy` if `source.server` is set; `catch_up` for [`CopyPass::CatchUp`];
    /// `change_log` for [`CopyPass::Changes`]; otherwise none.
    async fn copy_room(&self, request: CopyRequest<'_>) -> Result<CopyOutcome>;

    /// Starts (`on`) or stops recording which of pooled `room`'s rows change, for
    /// [`CopyPass::Changes`]. Returns whether tracking was already on.
    ///
    /// # Behaviour
    /// - On: from the moment this returns, every committed insert, update and delete of the
    ///   room's rows in the shared tables — by the host or by roomshard — is recorded by primary
    ///   key, in the same transaction as the change. Writes already in flight when it is called
    ///   are waited for, so none can slip between "not tracked" and the bulk copy's read.
    ///   Idempotent.
    /// - Off: forgets the room's recorded changes and stops recording. Idempotent (`Ok(false)`
    ///   when it was not on).
    /// - A caller that finds tracking newly on while a bulk copy is half done must restart that
    ///   copy: rows copied before tracking began may have changed unrecorded.
    ///
    /// # Requires capability
    /// `change_log`.
    async fn track_changes(&self, room: &RoomId, schema: &RoomSchema, on: bool) -> Result<bool> {
        let _ = (room, schema, on);
        Err(Error::unsupported("track_changes", self.name()))
    }

    /// Makes the database refuse the host's writes to pooled `room`'s rows until the returned
    /// fence is lifted or dropped: the read-only window of a cutover, enforced where the rows
    /// are rather than by every host remembering to check the placement.
    ///
    /// # Behaviour
    /// - Waits up to `wait` for writes already in flight to finish (commit or roll back), so when
    ///   it returns no uncommitted change to the room can still appear; past `wait` it gives up
    ///   with [`Error::Unavailable`] (retryable) and fences nothing.
    /// - While fenced, a host write to the room's rows fails with a retryable error naming the
    ///   cutover (on PostgreSQL, SQLSTATE `RSC01`); roomshard's own copies, restores and drops
    ///   are not fenced. Other rooms are never affected.
    /// - One fence per room at a time: a second `fence_writes` waits for the first (up to
    ///   `wait`).
    /// - [`WriteFence::lift`] reopens writes; dropping the fence, or the process dying, reopens
    ///   them too (a fence never outlives its holder).
    ///
    /// # Requires capability
    /// `write_fence`.
    async fn fence_writes(
        &self,
        room: &RoomId,
        schema: &RoomSchema,
        wait: std::time::Duration,
    ) -> Result<Box<dyn WriteFence>> {
        let _ = (room, schema, wait);
        Err(Error::unsupported("fence_writes", self.name()))
    }

    /// Retires (`retired`) or restores the pooled copy of `room` as a place to write: once a
    /// room lives in its own shard, a host write to its rows in the shared tables — from a host
    /// that read the placement just before the flip, say — is refused for good instead of
    /// landing in rows nothing reads.
    ///
    /// # Behaviour
    /// - Retired: every host write to the room's pooled rows fails with an error saying the room
    ///   moved (on PostgreSQL, SQLSTATE `RSC02`, retryable: the retry re-routes). roomshard's
    ///   own drops and copies are not refused. Other rooms are never affected.
    /// - Not retired: writes are accepted again (a recentralise, just before the room is pooled
    ///   again).
    /// - Idempotent either way.
    ///
    /// # Requires capability
    /// `write_fence`.
    async fn retire_pooled(&self, room: &RoomId, schema: &RoomSchema, retired: bool) -> Result<()> {
        let _ = (room, schema, retired);
        Err(Error::unsupported("retire_pooled", self.name()))
    }

    /// Per-table row counts, and with `parity_checksums` content checksums, of a room.
    ///
    /// # Behaviour
    /// - One [`TableParity`] per schema table, in schema order; `rows` counts the room's rows.
    /// - `checksum` is the lowercase hex SHA-256 of the table's rows in COPY text format in
    ///   primary-key order — exactly the bytes [`dump`](Self::dump) would write for that table —
    ///   or `None` without `parity_checksums`.
    /// - Reads a consistent snapshot (one transaction) so counts and checksums agree.
    ///
    /// # Requires capability
    /// None for counts; `parity_checksums` for checksums.
    async fn parity(&self, scope: &Scope, schema: &RoomSchema) -> Result<Parity>;

    /// Row counts and content hashes per primary-key range ("chunk") of a room's tables: what
    /// lets a copy job check a large room while it is still writable, re-check inside the
    /// read-only cutover only the chunks that changed since, and name the rows of a mismatch.
    ///
    /// # Behaviour
    /// - [`ChunkPlan::Split`] cuts every schema table, in schema order, into ranges of
    ///   `rows_per_chunk` rows in primary-key order. Each range's `after` is the previous
    ///   range's `up_to` (`None` for the first); the last range of a table has `up_to: None` (to
    ///   the end), so rows another copy has past the last key still fall in a range. An empty
    ///   table gives one range covering everything, with 0 rows.
    /// - [`ChunkPlan::Resplit`] does the same inside one range: its ranges chain from the
    ///   range's `after` to its `up_to`, every `rows_per_chunk` rows (one range if it holds
    ///   fewer).
    /// - [`ChunkPlan::Ranges`] answers for exactly the ranges given, in the order given (as a
    ///   split on another copy of the room produced them). A table not in the schema is
    ///   [`Error::Invalid`]; a key that does not parse as its column's type is
    ///   [`Error::Invalid`].
    /// - Key values are in COPY text form, like [`TableCursor::after_key`].
    /// - `checksum` is the lowercase hex SHA-256 of a provider-defined text of the range's rows
    ///   in primary-key order: equal for two scopes of **this store** exactly when their rows in
    ///   the range are equal (unlike [`parity`](Self::parity), it is not comparable across
    ///   providers; cross-store moves compare full parity).
    /// - Each range is read in one snapshot; a split reads each table in one snapshot.
    /// - A missing dedicated shard is [`Error::NotFound`].
    ///
    /// # Requires capability
    /// `chunk_parity`.
    async fn chunk_parity(
        &self,
        scope: &Scope,
        schema: &RoomSchema,
        plan: &ChunkPlan,
    ) -> Result<Vec<ChunkParity>> {
        let _ = (scope, schema, plan);
        Err(Error::unsupported("chunk_parity", self.name()))
    }

    /// Every row of one range as its key and a digest of its content, in primary-key order,
    /// at most `limit` rows: what names the rows of a mismatched chunk (compare two copies'
    /// digests by key).
    ///
    /// # Behaviour
    /// - Keys in COPY text form; digests comparable between scopes of this store, as
    ///   [`chunk_parity`](Self::chunk_parity)'s checksums.
    /// - A table not in the schema is [`Error::Invalid`].
    ///
    /// # Requires capability
    /// `chunk_parity`.
    async fn row_digests(
        &self,
        scope: &Scope,
        schema: &RoomSchema,
        range: &KeyRange,
        limit: usize,
    ) -> Result<Vec<RowDigest>> {
        let _ = (scope, schema, range, limit);
        Err(Error::unsupported("row_digests", self.name()))
    }

    /// Forgets which keys of `room` [`CopyPass::Changes`] passes have applied so far, so that
    /// [`applied_in`](Self::applied_in) answers for the passes from now on: the mark a copy
    /// job sets when it checks chunk parity, before it catches up again.
    ///
    /// # Behaviour
    /// - Every `Changes` pass records, in the same transaction as it applies them, the keys it
    ///   applied; this forgets them. Idempotent; a room never tracked is `Ok`.
    ///
    /// # Requires capability
    /// `change_log` and `chunk_parity`.
    async fn reset_applied(&self, room: &RoomId) -> Result<()> {
        let _ = room;
        Err(Error::unsupported("reset_applied", self.name()))
    }

    /// Which of `ranges` hold a key a [`CopyPass::Changes`] pass applied (inserted, updated or
    /// deleted in the target) since the last [`reset_applied`](Self::reset_applied): the
    /// chunks whose parity may have changed. Returns indexes into `ranges`, ascending.
    ///
    /// # Behaviour
    /// - Exact for the keys applied: a range holding none of them is not returned, one holding
    ///   any is (a key deleted from both copies counts too).
    /// - A table not in the schema is [`Error::Invalid`].
    ///
    /// # Requires capability
    /// `change_log` and `chunk_parity`.
    async fn applied_in(
        &self,
        room: &RoomId,
        schema: &RoomSchema,
        ranges: &[KeyRange],
    ) -> Result<Vec<usize>> {
        let _ = (room, schema, ranges);
        Err(Error::unsupported("applied_in", self.name()))
    }

    /// A room's row count per table — the cheap check ("is this room empty?", "how big is
    /// it?") that must not read and hash every row the way [`parity`](Self::parity) does.
    ///
    /// # Behaviour
    /// - One [`TableCount`] per schema table, in schema order, equal to `parity`'s `rows`.
    /// - A missing dedicated shard is [`Error::NotFound`], as for `parity`.
    /// - The default derives the counts from `parity` (correct, not cheap); a provider overrides
    ///   it with a count query.
    ///
    /// # Requires capability
    /// None.
    async fn row_counts(&self, scope: &Scope, schema: &RoomSchema) -> Result<Vec<TableCount>> {
        Ok(self
            .parity(scope, schema)
            .await?
            .tables
            .into_iter()
            .map(|t| TableCount {
                table: t.table,
                rows: t.rows,
            })
            .collect())
    }

    /// Deletes a room's rows: drops a dedicated shard (with roomshard's own tables), or deletes
    /// the room's rows from the shared tables of a pooled scope.
    ///
    /// # Behaviour
    /// - **Idempotent**: a missing shard or a room with no pooled rows is `Ok`.
    /// - An adopted shard (`adopted.shard` in the scope's location) is the customer's: it is
    ///   left as it is, with its tables and rows, and `Ok` is returned.
    /// - Pooled deletes filter on each table's `room_key_column` and never touch another room.
    /// - Atomic where the backend allows (one transaction): a failure leaves the rows in place.
    ///
    /// # Requires capability
    /// None.
    async fn drop_room(&self, scope: &Scope, schema: &RoomSchema) -> Result<()>;

    /// Streams a room's rows into `sink`, table by table, for a bundle's `db.sql`.
    ///
    /// # Behaviour
    /// - For every schema table, in schema order, including empty ones: `begin_table`, zero or
    ///   more `rows` chunks (whole rows, COPY text, primary-key order), `end_table(count)`.
    /// - Streams: never holds a whole table in memory; chunks of roughly 64 KiB are typical.
    /// - Reads one consistent snapshot (one read-only transaction) across all tables.
    /// - A sink error stops the dump and is returned unchanged.
    /// - Returns the row counts it wrote, in schema order.
    ///
    /// # Requires capability
    /// `dump`.
    async fn dump(
        &self,
        scope: &Scope,
        schema: &RoomSchema,
        sink: &mut dyn DumpSink,
    ) -> Result<Vec<TableCount>> {
        let _ = (scope, schema, sink);
        Err(Error::unsupported("dump", self.name()))
    }

    /// Loads a dump from `source` into a room (the import side of a bundle).
    ///
    /// # Behaviour
    /// - Reads tables in whatever order the source gives, each at most once; a table not in
    ///   `schema` or given twice is [`Error::Invalid`]; a row with the wrong number of fields or
    ///   a value that does not parse as its column's type is [`Error::Corrupt`] (naming table
    ///   and row number). Tables the source omits stay empty.
    /// - Sets every row's `room_key_column` to `scope`'s room, whatever the dump said, so a room
    ///   imported under a new id holds only its own id.
    /// - Applies `remap`: with [`RemapPolicy::Keep`] an id that collides with an existing row is
    ///   [`Error::Conflict`]; with [`RemapPolicy::OnCollision`] a colliding id gets a new value
    ///   (from the target's sequence for integers, a random v4 for `uuid`, `<old>-<n>` for
    ///   `text`) and every column `references`-ing it is rewritten; media columns are rewritten
    ///   by `remap.media_keys`. The changes are returned in [`RestoreOutcome::id_maps`].
    /// - **All or nothing**: on any error no row of the dump remains (one transaction, or a
    ///   staging area swapped in at the end).
    /// - Never executes SQL from the dump: rows are values, parsed and bound.
    /// - Not idempotent: restoring the same dump twice collides (the caller records imports).
    ///
    /// # Requires capability
    /// `restore`; `id_remap` for [`RemapPolicy::OnCollision`].
    async fn restore(
        &self,
        scope: &Scope,
        schema: &RoomSchema,
        source: &mut dyn DumpSource,
        remap: &IdRemap,
    ) -> Result<RestoreOutcome> {
        let _ = (scope, schema, source, remap);
        Err(Error::unsupported("restore", self.name()))
    }

    /// Storage a room uses, in bytes (tables and indexes; for a pooled scope an estimate of the
    /// room's share), for metering and quotas.
    ///
    /// # Behaviour
    /// - A missing dedicated shard is [`Error::NotFound`].
    ///
    /// # Requires capability
    /// `size_bytes`.
    async fn size_bytes(&self, scope: &Scope, schema: &RoomSchema) -> Result<u64> {
        let _ = (scope, schema);
        Err(Error::unsupported("size_bytes", self.name()))
    }

    /// Where the host should send its queries for a room: a pool and how to name tables.
    ///
    /// # Behaviour
    /// - Cheap and safe to call per request: pools are keyed by server, not by room, so ten
    ///   thousand rooms on one server share one bounded pool.
    /// - Does not check the room's placement; the caller routes by placement first (and
    ///   answers "room in cutover, retry" itself).
    ///
    /// # Requires capability
    /// `route`.
    async fn route(&self, scope: &Scope) -> Result<RouteHandle> {
        let _ = scope;
        Err(Error::unsupported("route", self.name()))
    }

    /// Up to `max` outbox entries of `room`'s dedicated shard with sequence numbers greater than
    /// `after`, in sequence order, for the relay that publishes them to an
    /// [`Indexer`](crate::Indexer).
    ///
    /// # Behaviour
    /// - Entries are written by the shard's triggers in the same transaction as the row change,
    ///   so a committed change always has its event and a rolled-back one never does.
    /// - Event ids are deterministic per entry (shard identity + sequence), so re-publishing
    ///   after a crash is deduplicated by the indexer.
    ///
    /// # Requires capability
    /// `transactional_outbox`.
    async fn read_outbox(&self, room: &RoomId, after: u64, max: usize) -> Result<Vec<OutboxEntry>> {
        let _ = (room, after, max);
        Err(Error::unsupported("read_outbox", self.name()))
    }

    /// Deletes outbox entries of `room` with sequence numbers up to and including `through`,
    /// once they are published. Idempotent.
    ///
    /// # Requires capability
    /// `transactional_outbox`.
    async fn trim_outbox(&self, room: &RoomId, through: u64) -> Result<()> {
        let _ = (room, through);
        Err(Error::unsupported("trim_outbox", self.name()))
    }
}

/// A held write fence (see [`ShardStore::fence_writes`]).
///
/// Dropping it reopens writes as well (the provider ties the fence to a resource that dies with
/// it, such as a database session), so a cancelled or crashed cutover never leaves a room
/// read-only; [`lift`](Self::lift) does it promptly and reports failure.
#[async_trait]
pub trait WriteFence: Send {
    /// Reopens writes.
    async fn lift(self: Box<Self>) -> Result<()>;
}

/// One pass of a copy job, as asked of [`ShardStore::copy_room`].
///
/// Borrowed sinks rather than owned ones: the caller keeps them (a progress bar, the job table)
/// across passes.
pub struct CopyRequest<'a> {
    /// The room's tables.
    pub schema: &'a RoomSchema,
    /// Where the rows are read.
    pub source: CopySource,
    /// Where they are written; a `Dedicated` target must exist.
    pub target: Scope,
    /// Bulk copy or catch-up.
    pub pass: CopyPass,
    /// The last saved checkpoint of this pass, to resume from.
    pub resume_from: Option<CopyCheckpoint>,
    /// Receives a checkpoint after every committed batch.
    pub checkpoints: &'a dyn CheckpointSink,
    /// Receives progress.
    pub progress: &'a dyn ProgressSink,
}

impl CopyRequest<'_> {
    /// Checks what every provider must refuse before copying: source and target rooms differ
    /// (use dump and restore to copy into another room), or a copy onto itself.
    pub fn validate(&self) -> Result<()> {
        if self.source.scope.room() != self.target.room() {
            return Err(Error::invalid(
                "copy request",
                format!(
                    "source room {} and target room {} differ; copy_room never renames",
                    self.source.scope.room(),
                    self.target.room()
                ),
            ));
        }
        if self.source.server.is_none() && self.source.scope == self.target {
            return Err(Error::invalid(
                "copy request",
                format!("source and target are both {}", self.target),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for CopyRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyRequest")
            .field("source", &self.source)
            .field("target", &self.target)
            .field("pass", &self.pass)
            .field("resume_from", &self.resume_from)
            .finish_non_exhaustive()
    }
}

/// Where a copy reads from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopySource {
    /// Which copy of the room.
    pub scope: Scope,
    /// The server holding it, if not the store's own (a move between servers). Must be a URL
    /// this provider understands; copying between different providers goes through
    /// dump and restore instead.
    pub server: Option<ServerUrl>,
}

/// Which pass of a copy job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyPass {
    /// Copy every row, resumably, while the source stays writable.
    Bulk,
    /// Make the target equal to the source (inserts, updates, deletes): repeated until the
    /// delta is small, then once more during the read-only cutover.
    CatchUp,
    /// Apply only the rows the change log recorded since the last pass (see
    /// [`ShardStore::track_changes`]): the same result as `CatchUp` for a room tracked since
    /// before its bulk copy began, at a cost proportional to the writes, not to the room.
    Changes,
}

/// How far a copy pass got, saved by the caller so a crashed job resumes instead of restarting.
///
/// Provider-neutral on purpose, so an operator can read a stuck job's position; a provider that
/// needs more (a replication position, say) keeps it in `provider_state`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyCheckpoint {
    /// The pass this checkpoint belongs to.
    pub pass: CopyPass,
    /// Tables completely copied, in schema order.
    pub tables_done: Vec<String>,
    /// The table in progress, if any.
    pub current: Option<TableCursor>,
    /// Provider-specific resume data, opaque to everyone else.
    pub provider_state: Option<serde_json::Value>,
}

/// Position inside one table of a copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCursor {
    /// The table.
    pub table: String,
    /// Primary-key values of the last row copied, in COPY text form, in primary-key order.
    pub after_key: Vec<String>,
    /// Rows of this table copied so far.
    pub rows_done: u64,
}

/// Persists copy checkpoints (the job table).
///
/// Async because saving is a database write that must complete before the copy goes on: a
/// checkpoint that was never stored must not be assumed.
#[async_trait]
pub trait CheckpointSink: Send + Sync {
    /// Stores `checkpoint`, replacing the previous one of the job.
    async fn save(&self, checkpoint: &CopyCheckpoint) -> Result<()>;
}

/// A [`CheckpointSink`] that forgets every checkpoint (one-shot copies, tests).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCheckpoints;

#[async_trait]
impl CheckpointSink for NoCheckpoints {
    async fn save(&self, _checkpoint: &CopyCheckpoint) -> Result<()> {
        Ok(())
    }
}

/// What one copy pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyOutcome {
    /// Rows inserted or updated in the target.
    pub rows_written: u64,
    /// Rows deleted from the target (catch-up only).
    pub rows_deleted: u64,
    /// Rows per table in the target after the pass, in schema order.
    pub tables: Vec<TableCount>,
}

/// A table's row count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCount {
    /// The table.
    pub table: String,
    /// Its rows (of the room).
    pub rows: u64,
}

/// A room's per-table counts and checksums (see [`ShardStore::parity`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parity {
    /// One entry per schema table, in schema order.
    pub tables: Vec<TableParity>,
}

/// One table's count and checksum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableParity {
    /// The table.
    pub table: String,
    /// Row count.
    pub rows: u64,
    /// SHA-256 (lowercase hex) of the table's rows in COPY text format and primary-key order;
    /// `None` if the store cannot compute it.
    pub checksum: Option<String>,
}

impl Parity {
    /// Tables whose row counts differ, whose checksums differ where both sides have one, or that
    /// only one side lists. Empty means the copies match as far as both stores can tell.
    pub fn mismatched_tables(&self, other: &Parity) -> Vec<String> {
        let mut out = Vec::new();
        for t in &self.tables {
            match other.tables.iter().find(|o| o.table == t.table) {
                Some(o)
                    if o.rows == t.rows
                        && match (&o.checksum, &t.checksum) {
                            (Some(a), Some(b)) => a == b,
                            _ => true,
                        } => {}
                _ => out.push(t.table.clone()),
            }
        }
        for o in &other.tables {
            if !self.tables.iter().any(|t| t.table == o.table) {
                out.push(o.table.clone());
            }
        }
        out
    }
}

/// How to cut a room into chunks for [`ShardStore::chunk_parity`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkPlan {
    /// Cut every table into ranges of this many rows (at least 1), in primary-key order.
    Split {
        /// Rows per range (the last range of a table may hold fewer, or more on another copy).
        rows_per_chunk: u64,
    },
    /// Exactly these ranges, in this order.
    Ranges(Vec<KeyRange>),
    /// Cut one range into ranges of this many rows, as `Split` cuts a table: the first keeps
    /// the range's `after`, the last its `up_to`, so together they cover exactly the same keys
    /// (a range that grew — the open end of a table the host appends to — becomes several).
    Resplit {
        /// The range to cut.
        range: KeyRange,
        /// Rows per range.
        rows_per_chunk: u64,
    },
}

/// A range of one table's primary keys: the rows with `after < key <= up_to`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyRange {
    /// The table.
    pub table: String,
    /// Exclusive lower bound (primary-key values in COPY text form); `None` from the start.
    pub after: Option<Vec<String>>,
    /// Inclusive upper bound; `None` to the end of the table.
    pub up_to: Option<Vec<String>>,
}

impl std::fmt::Display for KeyRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = |k: &Option<Vec<String>>| k.as_ref().map(|k| format!("({})", k.join(", ")));
        write!(
            f,
            "{} keys {} .. {}",
            self.table,
            key(&self.after).map_or_else(|| "start".to_string(), |k| format!("after {k}")),
            key(&self.up_to).map_or_else(|| "end".to_string(), |k| format!("up to {k}")),
        )
    }
}

/// One range's row count and checksum (see [`ShardStore::chunk_parity`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkParity {
    /// The range.
    pub range: KeyRange,
    /// Rows of the room in it.
    pub rows: u64,
    /// Lowercase hex SHA-256 of the range's rows (comparable within one store).
    pub checksum: String,
}

impl ChunkParity {
    /// Whether two copies agree on this range (same rows, same checksum).
    pub fn matches(&self, other: &ChunkParity) -> bool {
        self.range == other.range && self.rows == other.rows && self.checksum == other.checksum
    }
}

/// One row's key and content digest (see [`ShardStore::row_digests`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowDigest {
    /// Primary-key values in COPY text form.
    pub key: Vec<String>,
    /// Digest of the row's content (comparable within one store).
    pub digest: String,
}

/// Receives a dump, table by table (see [`ShardStore::dump`]).
///
/// Structured rather than a byte sink so every provider produces only rows, and the `db.sql`
/// text around them (`CREATE TABLE`, `COPY … FROM stdin;`, `\.`) is written in one place, by the
/// bundle writer, from the descriptors. Async so a sink may write to the network without
/// blocking the runtime; a sink writing to a synchronous encoder simply returns.
#[async_trait]
pub trait DumpSink: Send {
    /// A new table starts.
    async fn begin_table(&mut self, table: &TableDescriptor) -> Result<()>;
    /// One or more whole rows of the current table, in COPY text format.
    async fn rows(&mut self, chunk: Bytes) -> Result<()>;
    /// The current table ended after `rows` rows.
    async fn end_table(&mut self, rows: u64) -> Result<()>;
}

/// Supplies a dump to [`ShardStore::restore`], table by table: the mirror of [`DumpSink`].
/// The importer implements it over a bundle's `db.sql`, parsing COPY blocks and never running
/// any statement.
#[async_trait]
pub trait DumpSource: Send {
    /// Starts the next table and returns its name, or `None` when the dump is exhausted.
    async fn next_table(&mut self) -> Result<Option<String>>;
    /// The next chunk of whole rows of the current table (COPY text format), or `None` at the
    /// table's end.
    async fn next_rows(&mut self) -> Result<Option<Bytes>>;
}

/// How [`ShardStore::restore`] treats ids.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRemap {
    /// What to do with colliding ids.
    pub ids: RemapPolicy,
    /// How to rewrite object keys in media columns, if at all.
    pub media_keys: Option<KeyRewrite>,
}

/// What to do when a restored id collides with an existing row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemapPolicy {
    /// Keep every id; a collision is [`Error::Conflict`]. Right for an empty dedicated shard.
    #[default]
    Keep,
    /// Give colliding ids new values and rewrite the columns that reference them. Needed when
    /// importing into shared tables whose ids are unique across rooms.
    OnCollision,
}

/// Rewrites object keys that start with `from_prefix` to start with `to_prefix` instead
/// (for hosts whose keys embed the room id, imported under a new id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRewrite {
    /// Prefix to replace.
    pub from_prefix: String,
    /// Replacement.
    pub to_prefix: String,
}

impl KeyRewrite {
    /// The rewritten key: unchanged if it lacks the prefix; [`Error::Invalid`] if the result is
    /// not a valid [`ObjectKey`].
    pub fn apply(&self, key: &str) -> Result<ObjectKey> {
        match key.strip_prefix(&self.from_prefix) {
            Some(rest) => ObjectKey::new(format!("{}{rest}", self.to_prefix)),
            None => ObjectKey::new(key),
        }
    }
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreOutcome {
    /// Rows restored per table, in schema order.
    pub tables: Vec<TableCount>,
    /// Ids that received new values, for the import history.
    pub id_maps: Vec<IdMap>,
}

/// Old-to-new values of one id column after a remap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    /// The table.
    pub table: String,
    /// The id column.
    pub column: String,
    /// `(old, new)` pairs in COPY text form; only changed ids are listed.
    pub changes: Vec<(String, String)>,
}

/// Where to send a room's queries (see [`ShardStore::route`]).
///
/// The connection pool itself is the provider's backend type, which this crate deliberately
/// cannot name; the host hands the handle back to the provider crate's own API to get a
/// connection, and uses [`qualify`](Self::qualify) to name tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteHandle {
    /// Key of the bounded pool the provider keeps per server.
    pub pool: String,
    /// How table names are written on connections from that pool.
    pub namespace: Namespace,
}

/// How a routed room's tables are named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Namespace {
    /// A dedicated schema: `"room_<id>"."<table>"`.
    Schema(SchemaName),
    /// The host's shared tables in `schema`: `"<schema>"."<table>"`, and every statement must
    /// filter on the table's room key column equal to `room`.
    Shared {
        /// The shared schema (e.g. `public`).
        schema: Identifier,
        /// The room to filter on.
        room: RoomId,
    },
    /// The connection reaches only this room's tables (an SQLite file per room): `"<table>"`.
    Isolated,
}

impl RouteHandle {
    /// The table's name as SQL, quoted and qualified for this namespace. The only way the host
    /// should write a table name into a statement: never `search_path`, never `format!` of raw
    /// text.
    pub fn qualify(&self, table: &Identifier) -> String {
        match &self.namespace {
            Namespace::Schema(schema) => schema.qualify(table),
            Namespace::Shared { schema, .. } => format!("{}.{}", schema.quoted(), table.quoted()),
            Namespace::Isolated => table.quoted(),
        }
    }
}

/// One outbox row of a dedicated shard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Position in the shard's outbox (strictly increasing).
    pub seq: u64,
    /// The event to publish.
    pub event: ChangeEvent,
}

/// Where a room's dedicated shard is, as [`ShardStore::ensure_shard`] made it: like
/// [`BucketRef`](crate::BucketRef) for a bucket and [`KeyRef`](crate::KeyRef) for a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRef {
    /// The shard's full location, for the placement's `shard_url`: the server and the
    /// namespace in the provider's URL form (`sqlite:///var/lib/mesh/shards/room_general.sqlite3`,
    /// `postgres://db1/mesh?schema=room_general`). May carry a password; it prints redacted.
    pub url: crate::ServerUrl,
    /// The namespace within the server: the schema or file stem (`room_general`).
    pub namespace: String,
}
