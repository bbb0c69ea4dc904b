//! [`SqliteControlPlane`]: roomshard's bookkeeping tables in the host's global SQLite database.
//!
//! # Migrations
//! The tables are created by the SQL files under `migrations/control/`, embedded in the binary
//! and applied by a small runner of this crate with its own ledger table,
//! `roomshard_migrations(version, applied_at, sha256)`. Not sqlx's migrator: the host may run
//! its own sqlx migrations against the same file, and its `_sqlx_migrations` ledger must never
//! see (or complain about) ours. Each migration runs in one `BEGIN IMMEDIATE` transaction
//! together with its ledger row, so a crash leaves it either fully applied or not at all, and
//! two processes migrating at once apply it once.
//!
//! # The audit log is append-only twice over
//! Triggers make SQLite itself refuse an `UPDATE` or `DELETE` of `roomshard_audit` and any
//! `INSERT` that does not extend the chain. That stops mistakes and casual edits, not an attacker
//! who can write the database file: they can drop the triggers. The hash chain is what catches
//! that — [`verify_audit`](roomshard_core::ControlPlane::verify_audit) reports the first broken
//! row (and keeping the returned `head` elsewhere, in a receipt, reveals a cut tail).

use roomshard_core::{
    Adopted, AuditEntry, AuditRecord, AuditVerification, ControlPlane, CopyCheckpoint, CopyJob,
    Error, IdMap, ImportHold, ImportRecord, ImportState, JobKind, Placement, PlacementChange,
    PlacementState, Profile, ProviderName, ProviderNames, ReceiptRecord, Result, RoomId, ServerUrl,
    async_trait, verify_audit_chain,
};
use sha2::{Digest, Sha256};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqlitePool};
use std::sync::Arc;
use tokio::sync::Mutex;

/// One embedded migration: its number and its SQL, applied once, never edited afterwards.
struct Migration {
    version: i64,
    sql: &'static str,
}

/// Every migration this crate ships, in order. Append only.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../migrations/control/0001_init.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../migrations/control/0002_adopted.sql"),
    },
    Migration {
        version: 3,
        sql: include_str!("../migrations/control/0003_providers.sql"),
    },
];

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

/// The control plane on SQLite: placements, copy jobs, imports, the audit log and receipts,
/// in `roomshard_*` tables of the host's global database.
///
/// Cheap to clone (a pool handle plus a shared lock). Call
/// [`migrate`](ControlPlane::migrate) once at start-up before anything else.
///
/// The pool should have a busy timeout (sqlx's default is 5 s) and, for concurrent readers
/// alongside the writer, WAL journaling; the pool is the host's, so this type sets neither.
#[derive(Clone, Debug)]
pub struct SqliteControlPlane {
    pool: SqlitePool,
    /// Serialises audit appends inside this process so they queue here instead of spinning on
    /// SQLite's busy handler; `BEGIN IMMEDIATE` still serialises them across processes.
    audit_lock: Arc<Mutex<()>>,
    /// Import ids this process holds ([`ControlPlane::hold_import`]).
    held: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// A held import: its lock file (if the database has a file) and its entry in the process's set,
/// both released on drop. The lock file itself stays: removing it could let a second process
/// lock a fresh file while a third still holds the old one.
struct HeldImport {
    id: String,
    held: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    file: Option<std::fs::File>,
}

impl Drop for HeldImport {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            let _ = file.unlock();
        }
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl SqliteControlPlane {
    /// Wraps the host's global database pool. Nothing is read or written until a method is
    /// called.
    pub fn new(pool: SqlitePool) -> Self {
        SqliteControlPlane {
            pool,
            audit_lock: Arc::new(Mutex::new(())),
            held: Arc::new(std::sync::Mutex::new(std::collections::HashSet::new())),
        }
    }

    /// The pool this control plane uses, for hosts that share it with their own queries.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Reads every audit row in `seq` order, optionally one room's, keeping each row's stored
    /// detail text so callers can check it is exactly what was hashed.
    async fn audit_rows(&self, room: Option<&RoomId>) -> Result<Vec<AuditRow>> {
        let rows = match room {
            Some(room) => {
                sqlx::query(
                    "SELECT seq, at, actor, action, room, detail, prev_hash, hash \
                     FROM roomshard_audit WHERE room = ? ORDER BY seq",
                )
                .bind(room.as_str())
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(
                    "SELECT seq, at, actor, action, room, detail, prev_hash, hash \
                     FROM roomshard_audit ORDER BY seq",
                )
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(|e| db_error("audit log", e))?;
        rows.iter().map(AuditRow::from_row).collect()
    }
}

#[async_trait]
impl ControlPlane for SqliteControlPlane {
    fn name(&self) -> &str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<()> {
        run_migrations(&self.pool, MIGRATIONS).await
    }

    async fn placement(&self, room: &RoomId) -> Result<Option<Placement>> {
        let row = sqlx::query(select_placements!("WHERE room = ?"))
            .bind(room.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_error("placement", e))?;
        row.as_ref().map(placement_from_row).transpose()
    }

    async fn placements_page(&self, after: Option<&RoomId>, limit: u32) -> Result<Vec<Placement>> {
        let rows = sqlx::query(select_placements!("WHERE room > ? ORDER BY room LIMIT ?"))
            .bind(after.map_or("", |r| r.as_str()))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error("placements", e))?;
        rows.iter().map(placement_from_row).collect()
    }

    /// The change and the audit row go into one `BEGIN IMMEDIATE` transaction, which also
    /// serialises the append against every other writer (the chain never forks).
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
        let _queue = self.audit_lock.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error(&what, e))?;
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
             media_done_objects, media_done_bytes, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (room, kind) DO UPDATE SET checkpoint = excluded.checkpoint, \
             media_after = excluded.media_after, \
             media_done_objects = excluded.media_done_objects, \
             media_done_bytes = excluded.media_done_bytes, updated_at = excluded.updated_at",
        )
        .bind(job.room.as_str())
        .bind(job.kind.as_str())
        .bind(checkpoint)
        .bind(job.media_after.clone())
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
             updated_at FROM roomshard_copy_jobs WHERE room = ? AND kind = ?",
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
        sqlx::query("DELETE FROM roomshard_copy_jobs WHERE room = ? AND kind = ?")
            .bind(room.as_str())
            .bind(kind.as_str())
            .execute(&self.pool)
            .await
            .map_err(|e| db_error("copy job", e))?;
        Ok(())
    }

    async fn begin_import(&self, import: &ImportRecord, allow_duplicate: bool) -> Result<()> {
        if import.id.is_empty() {
            return Err(Error::invalid("import", "the import id is empty"));
        }
        let what = format!("import {}", import.id);
        // IMMEDIATE: the checks and the insert see no other writer in between.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error(&what, e))?;
        let other: Option<(String, String, String)> = sqlx::query_as(
            "SELECT id, new_room, state FROM roomshard_imports \
             WHERE id <> ? AND ((state = ? AND new_room = ?) \
             OR (? = 0 AND manifest_sha256 = ? AND state IN (?, ?))) LIMIT 1",
        )
        .bind(import.id.as_str())
        .bind(ImportState::Staging.as_str())
        .bind(import.new_room.as_str())
        .bind(i64::from(allow_duplicate))
        .bind(import.manifest_sha256.as_str())
        .bind(ImportState::Staging.as_str())
        .bind(ImportState::Done.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        if let Some((id, room, state)) = other {
            return Err(Error::conflict(
                if room == import.new_room.as_str() && state == "staging" {
                    format!("import {id} is importing into room {room} right now")
                } else if state == "staging" {
                    format!(
                        "import {id} is importing this bundle (manifest sha256 {}) into room {room} \
                     right now",
                        import.manifest_sha256
                    )
                } else {
                    format!(
                        "this bundle (manifest sha256 {}) was already imported here as room {room} \
                     (import {id})",
                        import.manifest_sha256
                    )
                },
            ));
        }
        sqlx::query(
            "INSERT INTO roomshard_imports (id, source_room, new_room, manifest_sha256, \
             signer_key_id, state, started_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
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
        tx.commit().await.map_err(|e| db_error(&what, e))
    }

    /// A lock file per import under `<database>.locks/` holding an exclusive OS lock (released
    /// by the kernel when the process dies), plus an in-process set for the same process and
    /// for a database without a file.
    async fn hold_import(&self, id: &str) -> Result<Option<ImportHold>> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(Error::invalid(
                "import id",
                format!("{id:?}: only ASCII letters, digits and '-'"),
            ));
        }
        {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            if !held.insert(id.to_string()) {
                return Ok(None);
            }
        }
        let mut release = HeldImport {
            id: id.to_string(),
            held: self.held.clone(),
            file: None,
        };
        let filename = self.pool.connect_options().get_filename().to_path_buf();
        if filename.as_os_str().is_empty() || filename.to_string_lossy().contains(":memory:") {
            return Ok(Some(ImportHold::new(release)));
        }
        let mut dir = filename.into_os_string();
        dir.push(".locks");
        let dir = std::path::PathBuf::from(dir);
        let path = dir.join(format!("import-{id}.lock"));
        let locked =
            tokio::task::spawn_blocking(move || -> std::io::Result<Option<std::fs::File>> {
                std::fs::create_dir_all(&dir)?;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)?;
                match file.try_lock() {
                    Ok(()) => Ok(Some(file)),
                    Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                    Err(std::fs::TryLockError::Error(e)) => Err(e),
                }
            })
            .await
            .map_err(|e| Error::unavailable("import lock", true, e))?
            .map_err(|e| Error::unavailable(format!("lock of import {id}"), true, e))?;
        // Dropping `release` without a file (another process holds the lock) only forgets the
        // id in this process's set again.
        Ok(locked.map(|file| {
            release.file = Some(file);
            ImportHold::new(release)
        }))
    }

    /// Replaces any maps stored by an earlier call, so a retry after a timeout converges.
    /// [`Error::NotFound`] if no import has this id.
    async fn finish_import(&self, id: &str, id_maps: &[IdMap]) -> Result<()> {
        let what = format!("import {id}");
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error(&what, e))?;
        let done = sqlx::query("UPDATE roomshard_imports SET state = ? WHERE id = ?")
            .bind(ImportState::Done.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(&what, e))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found(what));
        }
        sqlx::query("DELETE FROM roomshard_import_id_maps WHERE import_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(&what, e))?;
        for map in id_maps {
            for (old, new) in &map.changes {
                sqlx::query(
                    "INSERT INTO roomshard_import_id_maps (import_id, table_name, column_name, \
                     old_value, new_value) VALUES (?, ?, ?, ?, ?)",
                )
                .bind(id)
                .bind(map.table.as_str())
                .bind(map.column.as_str())
                .bind(old.as_str())
                .bind(new.as_str())
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    db_error(
                        &format!("{what}: id map {}.{} value {old}", map.table, map.column),
                        e,
                    )
                })?;
            }
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
             started_at FROM roomshard_imports WHERE (? IS NULL OR state = ?) \
             AND (started_at > ? OR (started_at = ? AND id > ?)) \
             ORDER BY started_at, id LIMIT ?",
        )
        .bind(state.map(|s| s.as_str()))
        .bind(state.map(|s| s.as_str()))
        .bind(after_time)
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
             WHERE import_id = ? ORDER BY rowid",
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
        sqlx::query("DELETE FROM roomshard_import_id_maps WHERE import_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(&what, e))?;
        sqlx::query("DELETE FROM roomshard_imports WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(&what, e))?;
        tx.commit().await.map_err(|e| db_error(&what, e))
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord> {
        let _queue = self.audit_lock.lock().await;
        // IMMEDIATE takes the write lock before the last row is read, so no other writer (in
        // this process or another) can append between that read and our insert.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error("audit log", e))?;
        let record = append_audit_in(&mut tx, entry).await?;
        tx.commit().await.map_err(|e| db_error("audit log", e))?;
        Ok(record)
    }

    async fn audit_head(&self) -> Result<Option<AuditRecord>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| db_error("audit log", e))?;
        last_audit_record(&mut conn).await
    }

    async fn audit_page(
        &self,
        room: Option<&RoomId>,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, room, detail, prev_hash, hash FROM roomshard_audit \
             WHERE seq > ? AND (? IS NULL OR room = ?) ORDER BY seq LIMIT ?",
        )
        .bind(to_i64("audit cursor", after_seq)?)
        .bind(room.map(|r| r.as_str()))
        .bind(room.map(|r| r.as_str()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("audit log", e))?;
        rows.iter()
            .map(|row| AuditRow::from_row(row)?.into_record())
            .collect()
    }

    /// Besides the chain itself, checks that each row's stored detail text is exactly what
    /// serde_json writes for it (the bytes that were hashed), and reports a row whose fields no
    /// longer parse as broken rather than failing.
    async fn verify_audit(&self) -> Result<AuditVerification> {
        let rows = self.audit_rows(None).await?;
        let total = rows.len() as u64;
        let head = rows.last().map(|r| r.hash.clone()).unwrap_or_default();
        let mut records = Vec::with_capacity(rows.len());
        let mut bad_row = None;
        for row in rows {
            let seq = row.seq;
            let detail_text = row.detail.clone();
            match row.into_record() {
                // The text serde_json writes (what compute_hash covered), compared as text.
                Ok(record)
                    if serde_json::to_string(&record.entry.detail)
                        .is_ok_and(|canonical| canonical == detail_text) =>
                {
                    records.push(record)
                }
                Ok(_) => {
                    bad_row = Some((
                        seq,
                        "detail is not stored as serde_json writes it (the row was edited)"
                            .to_string(),
                    ));
                    break;
                }
                Err(e) => {
                    bad_row = Some((seq, format!("the row does not parse ({e})")));
                    break;
                }
            }
        }
        let mut verification = verify_audit_chain(&records);
        if verification.broken.is_none()
            && let Some(bad) = bad_row
        {
            verification.broken = Some(bad);
        }
        if verification.broken.is_some() {
            verification.head = head;
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
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (room, version, reason) DO NOTHING",
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
             WHERE room = ? AND version = ? AND reason = ?",
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
             WHERE room = ? ORDER BY rowid",
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

/// Applies the migrations not yet in the ledger, each with its ledger row in one transaction,
/// after checking that every applied one is byte-for-byte the one shipped.
///
/// [`Error::Corrupt`] if an applied migration's SHA-256 differs from the shipped file (someone
/// edited an applied migration, or the database was migrated by a different build);
/// [`Error::Conflict`] if the database holds a migration this build does not know (it was
/// migrated by a newer roomshard, and this one must not run against a schema it cannot read).
async fn run_migrations(pool: &SqlitePool, migrations: &[Migration]) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS roomshard_migrations (\
         version INTEGER NOT NULL PRIMARY KEY, \
         applied_at TEXT NOT NULL, \
         sha256 TEXT NOT NULL)",
    )
    .execute(pool)
    .await
    .map_err(|e| db_error("migration ledger", e))?;

    let newest = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    let unknown: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM roomshard_migrations WHERE version > ?")
            .bind(newest)
            .fetch_one(pool)
            .await
            .map_err(|e| db_error("migration ledger", e))?;
    if let Some(version) = unknown {
        return Err(Error::conflict(format!(
            "the control-plane database has migration {version}, newer than this roomshard \
             build knows (up to {newest}); upgrade roomshard"
        )));
    }

    for migration in migrations {
        let what = format!("control-plane migration {}", migration.version);
        let sha256 = hex::encode(Sha256::digest(migration.sql.as_bytes()));
        let mut tx = pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error(&what, e))?;
        let applied: Option<String> =
            sqlx::query_scalar("SELECT sha256 FROM roomshard_migrations WHERE version = ?")
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
             VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), ?)",
        )
        .bind(migration.version)
        .bind(sha256)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&what, e))?;
        tx.commit().await.map_err(|e| db_error(&what, e))?;
        tracing::info!(
            version = migration.version,
            "applied roomshard control-plane migration"
        );
    }
    Ok(())
}

/// Applies one placement change inside `tx` (see [`ControlPlane::change_placement`]).
async fn apply_placement_change(
    tx: &mut SqliteConnection,
    change: PlacementChange<'_>,
    what: &str,
) -> Result<()> {
    let (room, expected_version) = match change {
        PlacementChange::Insert(p) => {
            bind_placement(
                sqlx::query(
                    "INSERT INTO roomshard_placements (is_sharded, shard_url, media_bucket, \
                     kms_key_ref, profile, region, adopted_shard, adopted_bucket, adopted_key, \
                     shards_provider, media_provider, keys_provider, state, version, room) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ),
                p,
            )?
            .bind(p.room.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(what, e))?;
            return Ok(());
        }
        PlacementChange::Update {
            next: p,
            expected_version,
        } => {
            let done = bind_placement(
                sqlx::query(
                    "UPDATE roomshard_placements SET is_sharded = ?, shard_url = ?, \
                     media_bucket = ?, kms_key_ref = ?, profile = ?, region = ?, \
                     adopted_shard = ?, adopted_bucket = ?, adopted_key = ?, shards_provider = ?, \
                     media_provider = ?, keys_provider = ?, state = ?, version = ? WHERE room = ? AND version = ?",
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
                sqlx::query("DELETE FROM roomshard_placements WHERE room = ? AND version = ?")
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
        sqlx::query_scalar("SELECT version FROM roomshard_placements WHERE room = ?")
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

/// Binds a placement's fields in the column order both placement writes use (`is_sharded`,
/// `shard_url`, `media_bucket`, `kms_key_ref`, `profile`, `region`, the three `adopted_*`, the
/// three `*_provider`, `state`, `version`).
fn bind_placement<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    p: &Placement,
) -> Result<sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>> {
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

/// Appends `entry` after the newest row, inside a transaction that holds the write lock.
async fn append_audit_in(tx: &mut SqliteConnection, entry: &AuditEntry) -> Result<AuditRecord> {
    let last = last_audit_record(&mut *tx).await?;
    let record = AuditRecord::next(last.as_ref(), entry.clone());
    sqlx::query(
        "INSERT INTO roomshard_audit (seq, at, actor, action, room, detail, prev_hash, hash) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
async fn last_audit_record(conn: &mut SqliteConnection) -> Result<Option<AuditRecord>> {
    let row = sqlx::query(
        "SELECT seq, at, actor, action, room, detail, prev_hash, hash \
         FROM roomshard_audit ORDER BY seq DESC LIMIT 1",
    )
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
    fn from_row(row: &SqliteRow) -> Result<Self> {
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

fn placement_from_row(row: &SqliteRow) -> Result<Placement> {
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

fn job_from_row(row: &SqliteRow) -> Result<CopyJob> {
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

fn import_from_row(row: &SqliteRow) -> Result<ImportRecord> {
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
fn get<T>(row: &SqliteRow, column: &str) -> Result<T>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column)
        .map_err(|e| Error::corrupt(format!("control-plane column {column}"), e.to_string()))
}

/// A stored room id, re-validated: a row edited outside roomshard must not smuggle an invalid
/// id into SQL or paths.
fn room_id(stored: String) -> Result<RoomId> {
    RoomId::new(stored).map_err(|e| Error::corrupt("stored room id", e.to_string()))
}

/// SQLite integers are signed 64-bit; values past `i64::MAX` are refused rather than wrapped.
fn to_i64(what: &str, value: u64) -> Result<i64> {
    i64::try_from(value)
        .map_err(|_| Error::invalid(what, format!("{value} is larger than SQLite can store")))
}

/// A stored integer that must not be negative.
fn to_u64(what: &str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::corrupt(what, format!("stored value {value} < 0")))
}

/// SQLite's primary result codes, from the low byte of an extended code.
const SQLITE_PERM: i64 = 3;
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_READONLY: i64 = 8;
const SQLITE_CORRUPT: i64 = 11;
const SQLITE_FULL: i64 = 13;
const SQLITE_CONSTRAINT: i64 = 19;
const SQLITE_AUTH: i64 = 23;
const SQLITE_NOTADB: i64 = 26;
/// The extended code of a `RAISE(ABORT, …)` in a trigger.
const SQLITE_CONSTRAINT_TRIGGER: i64 = 1811;

/// Turns an sqlx error into the roomshard error kind a caller can act on; `what` names what was
/// being read or written. The sqlx error is kept as the source where the kind has one.
fn db_error(what: &str, e: sqlx::Error) -> Error {
    let what = what.to_string();
    match &e {
        sqlx::Error::Database(db) => {
            let code = db
                .code()
                .and_then(|c| c.parse::<i64>().ok())
                .unwrap_or_default();
            let message = db.message().to_string();
            match code & 0xff {
                SQLITE_BUSY | SQLITE_LOCKED => {
                    Error::unavailable(format!("sqlite database ({what}: {message})"), true, e)
                }
                SQLITE_CONSTRAINT if db.kind() == sqlx::error::ErrorKind::UniqueViolation => {
                    Error::AlreadyExists { what }
                }
                SQLITE_CONSTRAINT if code == SQLITE_CONSTRAINT_TRIGGER => Error::PermissionDenied {
                    what: format!("{what}: {message}"),
                },
                SQLITE_CONSTRAINT => Error::invalid(what, message),
                SQLITE_PERM | SQLITE_READONLY | SQLITE_AUTH => Error::PermissionDenied {
                    what: format!("{what}: {message}"),
                },
                SQLITE_CORRUPT | SQLITE_NOTADB => Error::corrupt(what, message),
                SQLITE_FULL => {
                    Error::unavailable(format!("sqlite database ({what}: disk full)"), false, e)
                }
                _ => Error::unavailable(format!("sqlite database ({what})"), false, e),
            }
        }
        sqlx::Error::PoolTimedOut => Error::unavailable(format!("sqlite pool ({what})"), true, e),
        sqlx::Error::RowNotFound
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_) => Error::corrupt(what, e.to_string()),
        sqlx::Error::Encode(_) | sqlx::Error::InvalidArgument(_) => {
            Error::invalid(what, e.to_string())
        }
        _ => Error::unavailable(format!("sqlite database ({what})"), false, e),
    }
}
