//! [`PgControlPlane`]: roomshard's bookkeeping tables in the host's PostgreSQL database.
//!
//! A port of roomshard-sqlite's control plane: the same tables, the same behaviour (the trait's
//! documentation and the conformance suite are the contract), with PostgreSQL's own means
//! wherever SQLite relied on being one file with one writer.
//!
//! # Migrations
//! The tables are created by the SQL files under `migrations/control/`, embedded in the binary
//! and applied by a small runner of this crate with its own ledger table,
//! `roomshard_migrations(version, applied_at, sha256)`. Not sqlx's migrator: the host may run
//! its own sqlx migrations against the same database, and its `_sqlx_migrations` ledger must
//! never see (or complain about) ours. All pending migrations run in one transaction with their
//! ledger rows (PostgreSQL's DDL is transactional, so a crash leaves none applied), and that
//! transaction first takes a transaction-scoped advisory lock, so two processes migrating at
//! once apply each migration once: the second waits, then finds the ledger rows.
//!
//! Table names are unqualified and resolved in the connection's current schema (the host's,
//! usually `public`); this type never changes `search_path`.
//!
//! # Serialising writers
//! SQLite serialises with `BEGIN IMMEDIATE`. Here every audit append — alone, or with the
//! placement change it records — runs in a transaction that first takes the audit advisory
//! lock (`pg_advisory_xact_lock`), so appends from any number of connections and processes
//! queue on the server and the chain never forks; the lock is released by the commit or
//! rollback. [`ControlPlane::begin_import`] does the same with a lock of its own, so its checks
//! and its insert see no other import in between.
//!
//! # Import holds
//! [`ControlPlane::hold_import`] takes a session-level advisory lock on a connection detached
//! from the pool and kept inside the returned guard. The server releases it when that session
//! ends, so a process killed with `kill -9` (its sockets closed by the kernel) releases its
//! holds. This needs a real session per hold: behind a pooler in transaction mode (PgBouncer's
//! default) session locks do not work, so point roomshard at the server or a session-mode pool.
//!
//! # The audit log is append-only twice over
//! A trigger makes PostgreSQL itself refuse an `UPDATE`, `DELETE` or `TRUNCATE` of
//! `roomshard_audit` and any `INSERT` that does not extend the chain (SQLSTATE `RSA01`, reported
//! as [`Error::PermissionDenied`], as SQLite's trigger refusal is). That stops mistakes and
//! casual edits, not the table's owner, who can drop or disable the trigger. The hash chain is
//! what catches that — [`verify_audit`](roomshard_core::ControlPlane::verify_audit) reports the
//! first broken row (and keeping the returned `head` elsewhere, in a receipt, reveals a cut
//! tail).

use roomshard_core::{
    Adopted, AuditChainCheck, AuditEntry, AuditRecord, AuditVerification, ControlPlane,
    CopyCheckpoint, CopyJob, Error, IdMap, ImportHold, ImportRecord, ImportState, JobKind,
    Placement, PlacementChange, PlacementState, Profile, ProviderName, ProviderNames,
    ReceiptRecord, Result, RoomId, ServerUrl, async_trait,
};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Row};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, watch};

/// One embedded migration: its number and its SQL, applied once, never edited afterwards.
struct Migration {
    version: i64,
    sql: &'static str,
}

/// Every migration this crate ships, in order. Append only.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sql: include_str!("../migrations/control/0001_init.sql"),
}];

/// The high bits of every advisory lock key roomshard takes for a fixed purpose (`roomsh` in
/// ASCII), so they stay clear of the small integers hosts tend to pick for their own locks.
const LOCK_BASE: i64 = 0x726f_6f6d_7368_0000;
/// Held (transaction-scoped) while migrations are checked and applied.
const MIGRATION_LOCK: i64 = LOCK_BASE | 1;
/// Held (transaction-scoped) by every audit append, so appends from anywhere queue in order.
const AUDIT_LOCK: i64 = LOCK_BASE | 2;
/// Held (transaction-scoped) by `begin_import`, so its checks and insert are atomic.
const IMPORT_JOURNAL_LOCK: i64 = LOCK_BASE | 3;

/// The SQLSTATE the audit trigger raises when it refuses a write.
const AUDIT_REFUSED: &str = "RSA01";

/// How long a dropped import hold waits for its unlock and goodbye before simply dropping the
/// connection (the server then releases the lock when it notices the closed socket).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Page size of [`ControlPlane::verify_audit`]'s reads.
const VERIFY_PAGE: i64 = 1000;

/// A query of every placement column (what [`placement_from_row`] reads) followed by `$tail`,
/// as one literal: sqlx takes only static SQL, so the column list is written once here.
macro_rules! select_placements {
    ($tail:literal) => {
        concat!(
            "SELECT room, is_sharded, shard_url, media_bucket, kms_key_ref, profile, region, \
             adopted_shard, adopted_bucket, adopted_key, shards_provider, media_provider, \
             keys_provider, state, version FROM roomshard_placements ",
            $tail
        )
    };
}

/// The audit columns (what [`AuditRow::from_row`] reads) followed by `$tail`.
macro_rules! select_audit {
    ($tail:literal) => {
        concat!(
            "SELECT seq, at, actor, action, room, detail, prev_hash, hash FROM roomshard_audit ",
            $tail
        )
    };
}

/// The control plane on PostgreSQL: placements, copy jobs, imports, the audit log and receipts,
/// in `roomshard_*` tables of the host's database.
///
/// Cheap to clone (a pool handle plus shared state). Call [`migrate`](ControlPlane::migrate)
/// once at start-up before anything else.
#[derive(Clone, Debug)]
pub struct PgControlPlane {
    pool: PgPool,
    /// Queues this process's audit appends here, so a burst of them waits without each holding
    /// a pooled connection; the advisory lock still serialises them across processes.
    audit_queue: Arc<Mutex<()>>,
    /// Import ids this process holds or is releasing ([`ControlPlane::hold_import`]).
    holds: Holds,
}

/// The import ids of one control plane (and its clones), by state.
type Holds = Arc<std::sync::Mutex<HashMap<String, Slot>>>;

/// Where one import id of this process is.
#[derive(Debug)]
enum Slot {
    /// Claimed: a live [`ImportHold`] (or a `hold_import` taking the lock) has it.
    Held,
    /// Its hold was dropped and the unlock is on its way to the server; the receiver is told
    /// (its sender dropped) once it is done, so a new claim in this process waits for it
    /// instead of failing against our own lock.
    Releasing(watch::Receiver<()>),
}

/// Forgets `id` in `holds`.
fn forget(holds: &Holds, id: &str) {
    holds.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
}

/// A held import: the session holding its advisory lock and its entry in the process's set.
/// On drop, the unlock runs on a spawned task (drop cannot wait) and the entry stays
/// [`Slot::Releasing`] until it is done; without a runtime the connection is simply closed.
struct HeldImport {
    id: String,
    key: i64,
    holds: Holds,
    /// `None` until the lock is taken; the session that holds it afterwards.
    conn: Option<PgConnection>,
}

impl Drop for HeldImport {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            forget(&self.holds, &self.id);
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Closing the socket ends the session, which releases its locks.
            drop(conn);
            forget(&self.holds, &self.id);
            return;
        };
        let (done, waiting) = watch::channel(());
        self.holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.id.clone(), Slot::Releasing(waiting));
        let released = Released {
            id: self.id.clone(),
            holds: self.holds.clone(),
            _done: done,
        };
        let key = self.key;
        runtime.spawn(async move {
            // Dropped last, however this future ends, even if the runtime drops it unpolled.
            let _released = released;
            let release = async move {
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(key)
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            };
            // On a timeout the connection is dropped with the future: the session still ends.
            let _ = tokio::time::timeout(RELEASE_TIMEOUT, release).await;
        });
    }
}

/// The end of a release: forgets the id and then (dropping the sender) wakes the claims
/// waiting for it.
struct Released {
    id: String,
    holds: Holds,
    _done: watch::Sender<()>,
}

impl Drop for Released {
    fn drop(&mut self) {
        forget(&self.holds, &self.id);
    }
}

impl PgControlPlane {
    /// Wraps the host's database pool (see [`connect`](crate::connect) for the session settings
    /// roomshard's connections use). Nothing is read or written until a method is called.
    pub fn new(pool: PgPool) -> Self {
        PgControlPlane {
            pool,
            audit_queue: Arc::new(Mutex::new(())),
            holds: Arc::new(std::sync::Mutex::new(HashMap::new())),
        }
    }

    /// The pool this control plane uses, for hosts that share it with their own queries.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether this database already holds roomshard's control plane (its migration ledger),
    /// so a tool can tell "not a roomshard database yet" from an empty one without creating
    /// anything.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server cannot be asked.
    pub async fn exists(&self) -> Result<bool> {
        sqlx::query_scalar::<_, bool>("SELECT to_regclass('roomshard_migrations') IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_error("looking for the control plane", e))
    }

    /// Up to `limit` stored audit rows after `after_seq`, detail still as stored text.
    async fn audit_rows(&self, after_seq: u64, limit: i64) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query(select_audit!("WHERE seq > $1 ORDER BY seq LIMIT $2"))
            .bind(to_i64("audit cursor", after_seq)?)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error("audit log", e))?;
        rows.iter().map(AuditRow::from_row).collect()
    }
}

#[async_trait]
impl ControlPlane for PgControlPlane {
    fn name(&self) -> &str {
        "postgres"
    }

    async fn migrate(&self) -> Result<()> {
        run_migrations(&self.pool, MIGRATIONS).await
    }

    async fn placement(&self, room: &RoomId) -> Result<Option<Placement>> {
        let row = sqlx::query(select_placements!("WHERE room = $1"))
            .bind(room.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_error("placement", e))?;
        row.as_ref().map(placement_from_row).transpose()
    }

    async fn placements_page(&self, after: Option<&RoomId>, limit: u32) -> Result<Vec<Placement>> {
        let rows = sqlx::query(select_placements!("WHERE room > $1 ORDER BY room LIMIT $2"))
            .bind(after.map_or("", |r| r.as_str()))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error("placements", e))?;
        rows.iter().map(placement_from_row).collect()
    }

    /// The change and the audit row go into one transaction that first takes the audit lock,
    /// which serialises the append against every other writer (the chain never forks) and
    /// makes the compare-and-swap read and write see no other change in between.
    async fn change_placement(
        &self,
        change: PlacementChange<'_>,
        audit: &AuditEntry,
    ) -> Result<AuditRecord> {
        if let PlacementChange::Update {
            next,
            expected_version,
        } = change
            && next.version <= expected_version
        {
            return Err(Error::invalid(
                "placement update",
                format!(
                    "room {}: the new version {} must be greater than the expected version \
                     {expected_version}",
                    next.room, next.version
                ),
            ));
        }
        let room = change.room().clone();
        let what = format!("placement of room {room}");
        let _queue = self.audit_queue.lock().await;
        let mut tx = self.pool.begin().await.map_err(|e| db_error(&what, e))?;
        lock_xact(&mut tx, AUDIT_LOCK, &what).await?;
        apply_placement_change(&mut tx, change, &what).await?;
        let record = append_audit_in(&mut tx, audit).await?;
        tx.commit().await.map_err(|e| db_error(&what, e))?;
        Ok(record)
    }

    async fn save_job(&self, job: &CopyJob) -> Result<()> {
        let checkpoint = job
            .checkpoint
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| Error::invalid("copy checkpoint", e.to_string()))?;
        sqlx::query(
            "INSERT INTO roomshard_copy_jobs (room, kind, checkpoint, media_after, \
             media_done_objects, media_done_bytes, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (room, kind) DO UPDATE SET checkpoint = excluded.checkpoint, \
             media_after = excluded.media_after, \
             media_done_objects = excluded.media_done_objects, \
             media_done_bytes = excluded.media_done_bytes, updated_at = excluded.updated_at",
        )
        .bind(job.room.as_str())
        .bind(job.kind.as_str())
        .bind(checkpoint)
        .bind(job.media_after.as_deref())
        .bind(to_i64("media objects done", job.media_done.0)?)
        .bind(to_i64("media bytes done", job.media_done.1)?)
        .bind(to_i64("job update time", job.updated_at_unix_ms)?)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            db_error(
                &format!("{} job of room {}", job.kind.as_str(), job.room),
                e,
            )
        })?;
        Ok(())
    }

    async fn job(&self, room: &RoomId, kind: JobKind) -> Result<Option<CopyJob>> {
        let row = sqlx::query(
            "SELECT room, kind, checkpoint, media_after, media_done_objects, media_done_bytes, \
             updated_at FROM roomshard_copy_jobs WHERE room = $1 AND kind = $2",
        )
        .bind(room.as_str())
        .bind(kind.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error("copy job", e))?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn jobs(&self) -> Result<Vec<CopyJob>> {
        let rows = sqlx::query(
            "SELECT room, kind, checkpoint, media_after, media_done_objects, media_done_bytes, \
             updated_at FROM roomshard_copy_jobs ORDER BY room, kind",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("copy jobs", e))?;
        let mut jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        // The trait orders by kind as the enum does, not by the stored text.
        jobs.sort_by(|a, b| (&a.room, a.kind).cmp(&(&b.room, b.kind)));
        Ok(jobs)
    }

    async fn delete_job(&self, room: &RoomId, kind: JobKind) -> Result<()> {
        sqlx::query("DELETE FROM roomshard_copy_jobs WHERE room = $1 AND kind = $2")
            .bind(room.as_str())
            .bind(kind.as_str())
            .execute(&self.pool)
            .await
            .map_err(|e| db_error("copy job", e))?;
        Ok(())
    }

    /// The checks and the insert run in one transaction holding the import-journal lock, so no
    /// other `begin_import` (in any process) runs between them.
    async fn begin_import(&self, import: &ImportRecord, allow_duplicate: bool) -> Result<()> {
        if import.id.is_empty() {
            return Err(Error::invalid("import", "the import id is empty"));
        }
        let what = format!("import {}", import.id);
        let mut tx = self.pool.begin().await.map_err(|e| db_error(&what, e))?;
        lock_xact(&mut tx, IMPORT_JOURNAL_LOCK, &what).await?;
        let other: Option<(String, String, String)> = sqlx::query_as(
            "SELECT id, new_room, state FROM roomshard_imports \
             WHERE id <> $1 AND ((state = 'staging' AND new_room = $2) \
             OR (NOT $3 AND manifest_sha256 = $4 AND state IN ('staging', 'done'))) LIMIT 1",
        )
        .bind(import.id.as_str())
        .bind(import.new_room.as_str())
        .bind(allow_duplicate)
        .bind(import.manifest_sha256.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        if let Some((id, room, state)) = other {
            return Err(Error::conflict(
                if room == import.new_room.as_str() && state == "staging" {
                    format!("import {id} is importing into room {room} right now")
                } else if state == "staging" {
                    format!(
                        "import {id} is importing this bundle (manifest sha256 {}) into room \
                         {room} right now",
                        import.manifest_sha256
                    )
                } else {
                    format!(
                        "this bundle (manifest sha256 {}) was already imported here as room \
                         {room} (import {id})",
                        import.manifest_sha256
                    )
                },
            ));
        }
        let done = sqlx::query(
            "INSERT INTO roomshard_imports (id, source_room, new_room, manifest_sha256, \
             signer_key_id, state, started_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(import.id.as_str())
        .bind(import.source_room.as_str())
        .bind(import.new_room.as_str())
        .bind(import.manifest_sha256.as_str())
        .bind(import.signer_key_id.as_str())
        .bind(ImportState::Staging.as_str())
        .bind(to_i64("import start time", import.started_at_unix_ms)?)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        if done.rows_affected() == 0 {
            return Err(Error::AlreadyExists { what });
        }
        tx.commit().await.map_err(|e| db_error(&what, e))
    }

    /// A session-level advisory lock (`pg_try_advisory_lock`) on a connection detached from
    /// the pool, kept in the returned guard: the server releases it when the guard unlocks on
    /// drop, or when the session ends (the process died, the connection broke). An in-process
    /// set answers a second claim in this process without a round trip, and makes a claim
    /// right after a drop wait for that drop's unlock rather than fail against it.
    ///
    /// Ids are limited to ASCII letters, digits and `-`, as on SQLite, so an id valid on one
    /// provider is valid on every one.
    async fn hold_import(&self, id: &str) -> Result<Option<ImportHold>> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(Error::invalid(
                "import id",
                format!("{id:?}: only ASCII letters, digits and '-'"),
            ));
        }
        loop {
            let releasing = {
                let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
                match holds.get(id) {
                    None => {
                        holds.insert(id.to_string(), Slot::Held);
                        break;
                    }
                    Some(Slot::Held) => return Ok(None),
                    // A release that ended without forgetting the id (it cannot, but a
                    // stale entry must not block the id forever).
                    Some(Slot::Releasing(waiting)) if waiting.has_changed().is_err() => {
                        holds.insert(id.to_string(), Slot::Held);
                        break;
                    }
                    Some(Slot::Releasing(waiting)) => waiting.clone(),
                }
            };
            let mut releasing = releasing;
            // Resolves (with an error) once the releasing task drops its sender.
            let _ = releasing.changed().await;
        }
        // From here, dropping `hold` forgets the claim again (and, once it has a connection,
        // releases the lock).
        let mut hold = HeldImport {
            id: id.to_string(),
            key: import_lock_key(id),
            holds: self.holds.clone(),
            conn: None,
        };
        let what = format!("hold of import {id}");
        // Detached before the lock is taken: whatever happens next, the lock lives and dies
        // with this connection, never with one the pool hands to someone else.
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| db_error(&what, e))?
            .detach();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(hold.key)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| db_error(&what, e))?;
        if !locked {
            let _ = conn.close().await;
            return Ok(None);
        }
        hold.conn = Some(conn);
        Ok(Some(ImportHold::new(hold)))
    }

    /// Replaces any maps stored by an earlier call, so a retry after a timeout converges.
    /// [`Error::NotFound`] if no import has this id.
    async fn finish_import(&self, id: &str, id_maps: &[IdMap]) -> Result<()> {
        let what = format!("import {id}");
        let mut tx = self.pool.begin().await.map_err(|e| db_error(&what, e))?;
        // The row lock this update takes also serialises two finishes of one import.
        let done = sqlx::query("UPDATE roomshard_imports SET state = $1 WHERE id = $2")
            .bind(ImportState::Done.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(&what, e))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found(what));
        }
        sqlx::query("DELETE FROM roomshard_import_id_maps WHERE import_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(&what, e))?;
        let mut ords: Vec<i64> = Vec::new();
        let (mut tables, mut columns, mut olds, mut news) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for map in id_maps {
            for (old, new) in &map.changes {
                ords.push(to_i64("id map position", ords.len() as u64)?);
                tables.push(map.table.as_str());
                columns.push(map.column.as_str());
                olds.push(old.as_str());
                news.push(new.as_str());
            }
        }
        if !ords.is_empty() {
            // One statement for all the maps, however many ids changed.
            sqlx::query(
                "INSERT INTO roomshard_import_id_maps (import_id, ord, table_name, column_name, \
                 old_value, new_value) \
                 SELECT $1, m.ord, m.table_name, m.column_name, m.old_value, m.new_value \
                 FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[]) \
                 AS m(ord, table_name, column_name, old_value, new_value)",
            )
            .bind(id)
            .bind(ords)
            .bind(tables)
            .bind(columns)
            .bind(olds)
            .bind(news)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(&format!("{what}: id maps"), e))?;
        }
        tx.commit().await.map_err(|e| db_error(&what, e))
    }

    async fn imports_page(
        &self,
        state: Option<ImportState>,
        after: Option<(u64, &str)>,
        limit: u32,
    ) -> Result<Vec<ImportRecord>> {
        let (after_time, after_id) = match after {
            Some((t, id)) => (to_i64("import cursor", t)?, id),
            None => (-1, ""),
        };
        let rows = sqlx::query(
            "SELECT id, source_room, new_room, manifest_sha256, signer_key_id, state, \
             started_at FROM roomshard_imports WHERE ($1::text IS NULL OR state = $1) \
             AND (started_at, id) > ($2, $3) ORDER BY started_at, id LIMIT $4",
        )
        .bind(state.map(|s| s.as_str()))
        .bind(after_time)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("imports", e))?;
        rows.iter().map(import_from_row).collect()
    }

    async fn import_id_maps(&self, id: &str) -> Result<Vec<IdMap>> {
        let rows = sqlx::query(
            "SELECT table_name, column_name, old_value, new_value FROM roomshard_import_id_maps \
             WHERE import_id = $1 ORDER BY ord",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error(&format!("id maps of import {id}"), e))?;
        let mut maps: Vec<IdMap> = Vec::new();
        for row in &rows {
            let table: String = get(row, "table_name")?;
            let column: String = get(row, "column_name")?;
            let change = (get(row, "old_value")?, get(row, "new_value")?);
            match maps
                .iter_mut()
                .find(|m| m.table == table && m.column == column)
            {
                Some(map) => map.changes.push(change),
                None => maps.push(IdMap {
                    table,
                    column,
                    changes: vec![change],
                }),
            }
        }
        Ok(maps)
    }

    async fn delete_import(&self, id: &str) -> Result<()> {
        let what = format!("import {id}");
        let mut tx = self.pool.begin().await.map_err(|e| db_error(&what, e))?;
        sqlx::query("DELETE FROM roomshard_import_id_maps WHERE import_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(&what, e))?;
        sqlx::query("DELETE FROM roomshard_imports WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(&what, e))?;
        tx.commit().await.map_err(|e| db_error(&what, e))
    }

    /// The audit lock is taken before the last row is read, so no other writer (in this
    /// process or another) can append between that read and our insert.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord> {
        let _queue = self.audit_queue.lock().await;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| db_error("audit log", e))?;
        lock_xact(&mut tx, AUDIT_LOCK, "audit log").await?;
        let record = append_audit_in(&mut tx, entry).await?;
        tx.commit().await.map_err(|e| db_error("audit log", e))?;
        Ok(record)
    }

    async fn audit_page(
        &self,
        room: Option<&RoomId>,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(select_audit!(
            "WHERE seq > $1 AND ($2::text IS NULL OR room = $2) ORDER BY seq LIMIT $3"
        ))
        .bind(to_i64("audit cursor", after_seq)?)
        .bind(room.map(|r| r.as_str()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("audit log", e))?;
        rows.iter()
            .map(|row| AuditRow::from_row(row)?.into_record())
            .collect()
    }

    async fn audit_head(&self) -> Result<Option<AuditRecord>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| db_error("audit log", e))?;
        last_audit_record(&mut conn).await
    }

    /// Besides the chain itself, checks that each row's stored detail text is exactly what
    /// serde_json writes for it (the bytes that were hashed), and reports a row whose fields no
    /// longer parse as broken rather than failing. Reads a page at a time.
    async fn verify_audit(&self) -> Result<AuditVerification> {
        let mut check = AuditChainCheck::default();
        let mut bad_row: Option<(u64, String)> = None;
        let mut total = 0u64;
        let mut last_hash = String::new();
        let mut after = 0u64;
        loop {
            let rows = self.audit_rows(after, VERIFY_PAGE).await?;
            let Some(last) = rows.last() else { break };
            after = last.seq;
            for row in rows {
                total += 1;
                last_hash.clone_from(&row.hash);
                if bad_row.is_some() {
                    continue;
                }
                let seq = row.seq;
                let detail_text = row.detail.clone();
                match row.into_record() {
                    // The text serde_json writes (what compute_hash covered), compared as text.
                    Ok(record)
                        if serde_json::to_string(&record.entry.detail)
                            .is_ok_and(|canonical| canonical == detail_text) =>
                    {
                        check.feed(std::slice::from_ref(&record));
                    }
                    Ok(_) => {
                        bad_row = Some((
                            seq,
                            "detail is not stored as serde_json writes it (the row was edited)"
                                .to_string(),
                        ));
                    }
                    Err(e) => bad_row = Some((seq, format!("the row does not parse ({e})"))),
                }
            }
        }
        let mut verification = check.finish();
        if verification.broken.is_none()
            && let Some(bad) = bad_row
        {
            verification.broken = Some(bad);
        }
        if verification.broken.is_some() {
            verification.head = last_hash;
        }
        verification.rows = total;
        Ok(verification)
    }

    /// Recording the same receipt twice (a retry) is `Ok`; a different envelope for the same
    /// room, version and reason is [`Error::AlreadyExists`].
    async fn record_receipt(&self, receipt: &ReceiptRecord) -> Result<()> {
        let what = format!(
            "receipt of room {} version {} ({})",
            receipt.room, receipt.version, receipt.reason
        );
        let version = to_i64("receipt version", receipt.version)?;
        let done = sqlx::query(
            "INSERT INTO roomshard_receipts (room, version, reason, issued, envelope) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room, version, reason) DO NOTHING",
        )
        .bind(receipt.room.as_str())
        .bind(version)
        .bind(receipt.reason.as_str())
        .bind(receipt.issued.as_str())
        .bind(receipt.envelope.as_str())
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(&what, e))?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        let stored: Option<(String, String)> = sqlx::query_as(
            "SELECT issued, envelope FROM roomshard_receipts \
             WHERE room = $1 AND version = $2 AND reason = $3",
        )
        .bind(receipt.room.as_str())
        .bind(version)
        .bind(receipt.reason.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error(&what, e))?;
        match stored {
            Some((issued, envelope))
                if issued == receipt.issued && envelope == receipt.envelope =>
            {
                Ok(())
            }
            _ => Err(Error::AlreadyExists { what }),
        }
    }

    async fn receipts(&self, room: &RoomId) -> Result<Vec<ReceiptRecord>> {
        let rows = sqlx::query(
            "SELECT room, version, reason, issued, envelope FROM roomshard_receipts \
             WHERE room = $1 ORDER BY ord",
        )
        .bind(room.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error(&format!("receipts of room {room}"), e))?;
        rows.iter()
            .map(|row| {
                Ok(ReceiptRecord {
                    room: room_id(get(row, "room")?)?,
                    version: to_u64("receipt version", get(row, "version")?)?,
                    reason: get(row, "reason")?,
                    issued: get(row, "issued")?,
                    envelope: get(row, "envelope")?,
                })
            })
            .collect()
    }
}

/// The advisory lock key of import `id`'s hold: the first 8 bytes of a SHA-256 over a
/// roomshard-specific prefix and the id. A collision (2^-64 for two given ids) would only make
/// two imports wait for each other, never let two holders in.
fn import_lock_key(id: &str) -> i64 {
    let digest = Sha256::digest(format!("roomshard import hold\n{id}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// Takes the transaction-scoped advisory lock `key`, waiting for whoever holds it; the commit
/// or rollback of `tx` releases it.
async fn lock_xact(tx: &mut PgConnection, key: i64, what: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(what, e))?;
    Ok(())
}

/// Applies the migrations not yet in the ledger, in one transaction with their ledger rows,
/// after checking that every applied one is byte-for-byte the one shipped. The transaction
/// first takes [`MIGRATION_LOCK`], and creates the ledger inside it, so concurrent runs queue
/// and the later ones find everything applied.
///
/// [`Error::Corrupt`] if an applied migration's SHA-256 differs from the shipped file (someone
/// edited an applied migration, or the database was migrated by a different build);
/// [`Error::Conflict`] if the database holds a migration this build does not know (it was
/// migrated by a newer roomshard, and this one must not run against a schema it cannot read).
async fn run_migrations(pool: &PgPool, migrations: &[Migration]) -> Result<()> {
    let ledger = "migration ledger";
    let mut tx = pool.begin().await.map_err(|e| db_error(ledger, e))?;
    lock_xact(&mut tx, MIGRATION_LOCK, ledger).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS roomshard_migrations (\
         version bigint NOT NULL PRIMARY KEY, \
         applied_at timestamptz NOT NULL, \
         sha256 text NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error(ledger, e))?;

    let newest = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    let unknown: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM roomshard_migrations WHERE version > $1")
            .bind(newest)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| db_error(ledger, e))?;
    if let Some(version) = unknown {
        return Err(Error::conflict(format!(
            "the control-plane database has migration {version}, newer than this roomshard \
             build knows (up to {newest}); upgrade roomshard"
        )));
    }

    let mut applied_now = Vec::new();
    for migration in migrations {
        let what = format!("control-plane migration {}", migration.version);
        let sha256 = hex::encode(Sha256::digest(migration.sql.as_bytes()));
        let applied: Option<String> =
            sqlx::query_scalar("SELECT sha256 FROM roomshard_migrations WHERE version = $1")
                .bind(migration.version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| db_error(&what, e))?;
        match applied {
            Some(stored) if stored == sha256 => continue,
            Some(stored) => {
                return Err(Error::corrupt(
                    what,
                    format!(
                        "applied with SHA-256 {stored}, but this build ships {sha256}: an \
                         applied migration was changed"
                    ),
                ));
            }
            None => {}
        }
        sqlx::raw_sql(migration.sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(&what, e))?;
        sqlx::query(
            "INSERT INTO roomshard_migrations (version, applied_at, sha256) \
             VALUES ($1, now(), $2)",
        )
        .bind(migration.version)
        .bind(sha256)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        applied_now.push(migration.version);
    }
    tx.commit().await.map_err(|e| db_error(ledger, e))?;
    for version in applied_now {
        tracing::info!(version, "applied roomshard control-plane migration");
    }
    Ok(())
}

/// Applies one placement change inside `tx` (see [`ControlPlane::change_placement`]).
async fn apply_placement_change(
    tx: &mut PgConnection,
    change: PlacementChange<'_>,
    what: &str,
) -> Result<()> {
    let (room, expected_version) = match change {
        PlacementChange::Insert(p) => {
            // DO NOTHING rather than a unique violation: the trait's answer for a taken room
            // is AlreadyExists, told from the row count.
            let done = bind_placement(
                sqlx::query(
                    "INSERT INTO roomshard_placements (is_sharded, shard_url, media_bucket, \
                     kms_key_ref, profile, region, adopted_shard, adopted_bucket, adopted_key, \
                     shards_provider, media_provider, keys_provider, state, version, room) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                     ON CONFLICT (room) DO NOTHING",
                ),
                p,
            )?
            .bind(p.room.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(what, e))?;
            if done.rows_affected() == 1 {
                return Ok(());
            }
            return Err(Error::AlreadyExists {
                what: what.to_string(),
            });
        }
        PlacementChange::Update {
            next: p,
            expected_version,
        } => {
            let done = bind_placement(
                sqlx::query(
                    "UPDATE roomshard_placements SET is_sharded = $1, shard_url = $2, \
                     media_bucket = $3, kms_key_ref = $4, profile = $5, region = $6, \
                     adopted_shard = $7, adopted_bucket = $8, adopted_key = $9, \
                     shards_provider = $10, media_provider = $11, keys_provider = $12, \
                     state = $13, version = $14 WHERE room = $15 AND version = $16",
                ),
                p,
            )?
            .bind(p.room.as_str())
            .bind(to_i64("expected version", expected_version)?)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(what, e))?;
            if done.rows_affected() == 1 {
                return Ok(());
            }
            (&p.room, expected_version)
        }
        PlacementChange::Delete {
            room,
            expected_version,
        } => {
            let done =
                sqlx::query("DELETE FROM roomshard_placements WHERE room = $1 AND version = $2")
                    .bind(room.as_str())
                    .bind(to_i64("expected version", expected_version)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error(what, e))?;
            if done.rows_affected() == 1 {
                return Ok(());
            }
            (room, expected_version)
        }
    };
    let current: Option<i64> =
        sqlx::query_scalar("SELECT version FROM roomshard_placements WHERE room = $1")
            .bind(room.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| db_error(what, e))?;
    match (current, change) {
        (Some(version), _) => Err(Error::conflict(format!(
            "placement of room {room} is at version {version}, not {expected_version}"
        ))),
        (None, PlacementChange::Delete { .. }) => Ok(()),
        (None, _) => Err(Error::not_found(format!("placement of room {room}"))),
    }
}

/// Binds a placement's fields as `$1`..`$14` in the column order both placement writes use
/// (`is_sharded`, `shard_url`, `media_bucket`, `kms_key_ref`, `profile`, `region`, the three
/// `adopted_*`, the three `*_provider`, `state`, `version`).
fn bind_placement<'q>(
    query: sqlx::query::Query<'q, Postgres, PgArguments>,
    p: &Placement,
) -> Result<sqlx::query::Query<'q, Postgres, PgArguments>> {
    Ok(query
        .bind(p.is_sharded)
        .bind(p.shard_url.as_ref().map(|u| u.expose().to_string()))
        .bind(p.media_bucket.clone())
        .bind(p.kms_key_ref.clone())
        .bind(p.profile.as_str())
        .bind(p.region.clone())
        .bind(p.adopted.shard)
        .bind(p.adopted.bucket)
        .bind(p.adopted.key)
        .bind(p.providers.shards.as_str().to_string())
        .bind(p.providers.media.as_str().to_string())
        .bind(p.providers.keys.as_str().to_string())
        .bind(p.state.as_str())
        .bind(to_i64("placement version", p.version)?))
}

/// Appends `entry` after the newest row, inside a transaction that holds [`AUDIT_LOCK`].
async fn append_audit_in(tx: &mut PgConnection, entry: &AuditEntry) -> Result<AuditRecord> {
    let last = last_audit_record(&mut *tx).await?;
    let record = AuditRecord::next(last.as_ref(), entry.clone());
    sqlx::query(
        "INSERT INTO roomshard_audit (seq, at, actor, action, room, detail, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(to_i64("audit seq", record.seq)?)
    .bind(record.entry.at.as_str())
    .bind(record.entry.actor.as_str())
    .bind(record.entry.action.as_str())
    .bind(record.entry.room.as_ref().map(|r| r.as_str().to_string()))
    // Exactly the bytes compute_hash covered.
    .bind(record.entry.detail.to_string())
    .bind(record.prev_hash.as_str())
    .bind(record.hash.as_str())
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error("audit log", e))?;
    Ok(record)
}

/// The newest audit row.
async fn last_audit_record(conn: &mut PgConnection) -> Result<Option<AuditRecord>> {
    let row = sqlx::query(select_audit!("ORDER BY seq DESC LIMIT 1"))
        .fetch_optional(conn)
        .await
        .map_err(|e| db_error("audit log", e))?;
    row.as_ref()
        .map(AuditRow::from_row)
        .transpose()?
        .map(AuditRow::into_record)
        .transpose()
}

/// An audit row as stored, detail still text.
struct AuditRow {
    seq: u64,
    at: String,
    actor: String,
    action: String,
    room: Option<String>,
    detail: String,
    prev_hash: String,
    hash: String,
}

impl AuditRow {
    fn from_row(row: &PgRow) -> Result<Self> {
        Ok(AuditRow {
            seq: to_u64("audit seq", get(row, "seq")?)?,
            at: get(row, "at")?,
            actor: get(row, "actor")?,
            action: get(row, "action")?,
            room: get(row, "room")?,
            detail: get(row, "detail")?,
            prev_hash: get(row, "prev_hash")?,
            hash: get(row, "hash")?,
        })
    }

    fn into_record(self) -> Result<AuditRecord> {
        let seq = self.seq;
        let detail = serde_json::from_str(&self.detail).map_err(|e| {
            Error::corrupt(
                format!("audit row {seq}"),
                format!("detail is not JSON: {e}"),
            )
        })?;
        let room = self
            .room
            .map(RoomId::new)
            .transpose()
            .map_err(|e| Error::corrupt(format!("audit row {seq}"), e.to_string()))?;
        Ok(AuditRecord {
            seq,
            entry: AuditEntry {
                at: self.at,
                actor: self.actor,
                action: self.action,
                room,
                detail,
            },
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

fn placement_from_row(row: &PgRow) -> Result<Placement> {
    let state: String = get(row, "state")?;
    let profile: String = get(row, "profile")?;
    Ok(Placement {
        room: room_id(get(row, "room")?)?,
        is_sharded: get(row, "is_sharded")?,
        shard_url: get::<Option<String>>(row, "shard_url")?.map(ServerUrl::new),
        media_bucket: get(row, "media_bucket")?,
        kms_key_ref: get(row, "kms_key_ref")?,
        profile: profile
            .parse::<Profile>()
            .map_err(|e| Error::corrupt("stored placement", e.to_string()))?,
        region: get(row, "region")?,
        adopted: Adopted {
            shard: get(row, "adopted_shard")?,
            bucket: get(row, "adopted_bucket")?,
            key: get(row, "adopted_key")?,
        },
        providers: ProviderNames {
            shards: provider_name(get(row, "shards_provider")?)?,
            media: provider_name(get(row, "media_provider")?)?,
            keys: provider_name(get(row, "keys_provider")?)?,
        },
        state: state
            .parse::<PlacementState>()
            .map_err(|e| Error::corrupt("stored placement", e.to_string()))?,
        version: to_u64("placement version", get(row, "version")?)?,
    })
}

fn provider_name(name: String) -> Result<ProviderName> {
    ProviderName::new(name).map_err(|e| Error::corrupt("stored placement", e.to_string()))
}

fn job_from_row(row: &PgRow) -> Result<CopyJob> {
    let kind: String = get(row, "kind")?;
    let checkpoint: Option<String> = get(row, "checkpoint")?;
    Ok(CopyJob {
        room: room_id(get(row, "room")?)?,
        kind: kind
            .parse::<JobKind>()
            .map_err(|e| Error::corrupt("stored copy job", e.to_string()))?,
        checkpoint: checkpoint
            .map(|c| serde_json::from_str::<CopyCheckpoint>(&c))
            .transpose()
            .map_err(|e| Error::corrupt("stored copy checkpoint", e.to_string()))?,
        media_after: get(row, "media_after")?,
        media_done: (
            to_u64("media objects done", get(row, "media_done_objects")?)?,
            to_u64("media bytes done", get(row, "media_done_bytes")?)?,
        ),
        updated_at_unix_ms: to_u64("job update time", get(row, "updated_at")?)?,
    })
}

fn import_from_row(row: &PgRow) -> Result<ImportRecord> {
    let state: String = get(row, "state")?;
    Ok(ImportRecord {
        id: get(row, "id")?,
        source_room: get(row, "source_room")?,
        new_room: room_id(get(row, "new_room")?)?,
        manifest_sha256: get(row, "manifest_sha256")?,
        signer_key_id: get(row, "signer_key_id")?,
        state: state
            .parse::<ImportState>()
            .map_err(|e| Error::corrupt("stored import", e.to_string()))?,
        started_at_unix_ms: to_u64("import start time", get(row, "started_at")?)?,
    })
}

/// A column of a row; a value of the wrong type is [`Error::Corrupt`].
fn get<T>(row: &PgRow, column: &str) -> Result<T>
where
    T: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(column)
        .map_err(|e| Error::corrupt(format!("control-plane column {column}"), e.to_string()))
}

/// A stored room id, re-validated: a row edited outside roomshard must not smuggle an invalid
/// id into SQL or paths.
fn room_id(stored: String) -> Result<RoomId> {
    RoomId::new(stored).map_err(|e| Error::corrupt("stored room id", e.to_string()))
}

/// `bigint` is signed 64-bit; values past `i64::MAX` are refused rather than wrapped.
fn to_i64(what: &str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| {
        Error::invalid(
            what,
            format!("{value} is larger than PostgreSQL's bigint can store"),
        )
    })
}

/// A stored integer that must not be negative.
fn to_u64(what: &str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::corrupt(what, format!("stored value {value} < 0")))
}

/// Turns an sqlx error into the roomshard error kind a caller can act on; `what` names what was
/// being read or written. The sqlx error is kept as the source where the kind has one.
///
/// Only the server's primary message is quoted (never its detail, which can hold row values),
/// and no connection option is: a password cannot reach the error.
fn db_error(what: &str, e: sqlx::Error) -> Error {
    let what = what.to_string();
    match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = db.message().to_string();
            match SqlState::of(&code) {
                SqlState::AuditRefused | SqlState::Denied => Error::PermissionDenied {
                    what: format!("{what}: {message}"),
                },
                SqlState::Unique => Error::conflict(format!("{what}: {message}")),
                SqlState::BadValue => Error::invalid(what, message),
                SqlState::Corrupt => Error::corrupt(what, message),
                SqlState::Transient => {
                    Error::unavailable(format!("postgres database ({what}: {message})"), true, e)
                }
                SqlState::Other => {
                    Error::unavailable(format!("postgres database ({what}: {message})"), false, e)
                }
            }
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            Error::unavailable(format!("postgres database ({what})"), true, e)
        }
        sqlx::Error::RowNotFound
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_) => Error::corrupt(what, e.to_string()),
        sqlx::Error::Encode(_) | sqlx::Error::InvalidArgument(_) => {
            Error::invalid(what, e.to_string())
        }
        _ => Error::unavailable(format!("postgres database ({what})"), false, e),
    }
}

/// What a SQLSTATE means for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SqlState {
    /// The audit trigger refused a write ([`AUDIT_REFUSED`]).
    AuditRefused,
    /// `23505`: a unique constraint.
    Unique,
    /// Another integrity constraint (class 23) or a value the server cannot take (class 22:
    /// a NUL character in text, a number out of range).
    BadValue,
    /// Missing privileges (`42501`) or credentials the server refused (class 28).
    Denied,
    /// The server says its data is damaged (`XX001`, `XX002`).
    Corrupt,
    /// Worth retrying unchanged: serialization failure and deadlock (`40001`, `40P01`), a lock
    /// or statement timeout (`55P03`, `57014`), the server shutting down or starting
    /// (`57P01`..`57P03`), too many connections (`53300`), a read-only standby mid-failover
    /// (`25006`), or a broken connection (class 08).
    Transient,
    /// Anything else.
    Other,
}

impl SqlState {
    fn of(code: &str) -> SqlState {
        match code {
            AUDIT_REFUSED => SqlState::AuditRefused,
            "23505" => SqlState::Unique,
            "42501" => SqlState::Denied,
            "XX001" | "XX002" => SqlState::Corrupt,
            "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03" | "53300"
            | "25006" => SqlState::Transient,
            c if c.starts_with("08") => SqlState::Transient,
            c if c.starts_with("23") || c.starts_with("22") => SqlState::BadValue,
            c if c.starts_with("28") => SqlState::Denied,
            _ => SqlState::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_what_the_caller_can_do() {
        assert_eq!(SqlState::of("23505"), SqlState::Unique);
        assert_eq!(SqlState::of("23514"), SqlState::BadValue);
        assert_eq!(SqlState::of("22021"), SqlState::BadValue);
        assert_eq!(SqlState::of("RSA01"), SqlState::AuditRefused);
        for transient in ["40001", "40P01", "57P01", "57P03", "08006", "08001"] {
            assert_eq!(SqlState::of(transient), SqlState::Transient, "{transient}");
        }
        assert_eq!(SqlState::of("42501"), SqlState::Denied);
        assert_eq!(SqlState::of("28P01"), SqlState::Denied);
        assert_eq!(SqlState::of("42P01"), SqlState::Other);
        assert!(db_error("x", sqlx::Error::PoolTimedOut).is_retryable());
        assert!(!db_error("x", sqlx::Error::PoolClosed).is_retryable());
    }

    #[test]
    fn lock_keys_are_distinct_and_stable() {
        let keys = [MIGRATION_LOCK, AUDIT_LOCK, IMPORT_JOURNAL_LOCK];
        assert!(keys.iter().all(|k| *k > 0));
        assert_ne!(import_lock_key("imp-1"), import_lock_key("imp-2"));
        assert_eq!(import_lock_key("imp-1"), import_lock_key("imp-1"));
        // The trigger's SQLSTATE is the one the error mapping looks for.
        assert!(
            MIGRATIONS[0]
                .sql
                .contains(&format!("ERRCODE = '{AUDIT_REFUSED}'"))
        );
    }
}
