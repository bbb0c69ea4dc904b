//! The change log and the write fence on the host's shared tables: what keeps a decentralise's
//! catch-up proportional to the writes and its read-only window enforced by the database.
//!
//! # How changed and deleted pooled rows are found: triggers into a change log
//! Every shared table gets one `AFTER INSERT OR UPDATE OR DELETE … FOR EACH ROW` trigger
//! (`roomshard_track`, a small generated plpgsql function per table that reads the room and key
//! columns directly). It calls `roomshard_note(room, table, key)`, which
//!
//! 1. takes the room's *fence* lock in shared mode for the writing transaction
//!    (`pg_try_advisory_xact_lock_shared`), and raises SQLSTATE `RSC01` ("room in cutover, retry")
//!    if roomshard holds it exclusively — unless the transaction is roomshard's own (it sets
//!    `roomshard.bypass_fence`);
//! 2. if the room is in `roomshard_tracked`, appends `(room, table, primary key as text[])` to
//!    `roomshard_change_log`, in the same transaction as the change.
//!
//! Alternatives weighed (docs/postgres.md has the long form): a version column needs the host's
//! schema to change and still cannot see deletes; logical decoding needs `wal_level=logical`, a
//! replication slot per job (WAL retained while a job is paused) and superuser-ish rights the
//! Mesh role rarely has. A trigger is plain SQL any owner of the tables can install, sees every
//! delete, and its log commits or rolls back with the change itself.
//!
//! # Why the fence is an advisory lock
//! Every host write to a room's rows holds the room's lock in shared mode until it commits, so
//! `pg_advisory_lock` (exclusive) on a dedicated session returns exactly when the writes in
//! flight have finished, and from the moment it starts waiting new writes are refused (a
//! conditional shared request conflicts with the queued exclusive one). The lock belongs to the
//! fence's session: if roomshard crashes or drops the fence, the server ends the session and
//! writes reopen by themselves — a fence cannot be left behind.

use crate::session::{Mode, Session};
use crate::shard::{PgShardStore, advisory_lock};
use crate::sql::{Ns, TableSql, db_err, join, q};
use roomshard_core::{Error, Result, RoomId, RoomSchema, WriteFence, async_trait};
use sqlx::{Connection, PgConnection, Row};
use std::time::Duration;

/// The shared-schema table listing the rooms whose changes are logged.
pub const TRACKED_TABLE: &str = "roomshard_tracked";
/// The shared-schema table of logged changes.
pub const CHANGE_LOG_TABLE: &str = "roomshard_change_log";
/// The shared-schema table listing the rooms whose pooled rows are retired (the room lives in
/// its own shard).
pub const RETIRED_TABLE: &str = "roomshard_retired";
/// The shared-schema table of keys `Changes` passes applied since the copy job's last chunk
/// check (see [`crate::chunks`]).
pub const APPLIED_TABLE: &str = "roomshard_applied";
/// The shared-schema table of each room's current generation of applied keys: a reset bumps it
/// (one row written) instead of deleting the keys (which would leave dead rows every later read
/// of the current keys walks through).
pub const APPLIED_GEN_TABLE: &str = "roomshard_applied_gen";
/// The SQLSTATE a `TRUNCATE` of a shared table gets while a room in it is tracked: it would
/// remove rows without a row trigger, so the change log (and the chunk checks that trust it)
/// would miss it.
pub const TRUNCATE_SQLSTATE: &str = "RSC03";
/// The SQLSTATE a host write gets while its room is fenced.
pub const CUTOVER_SQLSTATE: &str = "RSC01";
/// The SQLSTATE a host write to a retired room's pooled rows gets.
pub const MOVED_SQLSTATE: &str = "RSC02";
/// Log entries applied per transaction of a [`CopyPass::Changes`](roomshard_core::CopyPass).
pub(crate) const CHANGES_BATCH: i64 = 5_000;

/// The advisory-lock name of a room's fence (hashed by `hashtextextended` with the `roomshard:`
/// prefix, as every roomshard lock).
fn fence_lock(room: &RoomId) -> String {
    format!("roomshard:fence:{room}")
}

/// Whether a database error is the fence's refusal: the host's write may be retried in a
/// moment, once the room's cutover has finished (and then goes to wherever the placement says).
pub fn is_cutover_refusal(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == CUTOVER_SQLSTATE)
}

/// Whether a database error says the room moved to its own shard (its pooled rows are retired):
/// route the write by the placement and retry.
pub fn is_moved_refusal(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == MOVED_SQLSTATE)
}

/// The trigger function of one table: note the old key when a row leaves its room or key (or
/// goes), and the new key of every inserted or updated row.
fn trigger_function_sql(ns: &Ns, t: &TableSql) -> String {
    let key = |rec: &str| {
        join(
            t.pk.iter()
                .map(|&i| format!("to_jsonb({rec}.{}) #>> '{{}}'", t.cols[i].quoted())),
        )
    };
    let ident = |rec: &str| {
        let mut cols = vec![format!("{rec}.{}", t.room_col())];
        cols.extend(
            t.pk.iter()
                .map(|&i| format!("{rec}.{}", t.cols[i].quoted())),
        );
        format!("ROW({})", cols.join(", "))
    };
    format!(
        "CREATE OR REPLACE FUNCTION {s}.{f}() RETURNS trigger LANGUAGE plpgsql AS $roomshard$\n\
         BEGIN\n\
           IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND {old_id} IS DISTINCT FROM {new_id}) THEN\n\
             PERFORM {s}.\"roomshard_note\"((OLD.{room})::text, TG_TABLE_NAME, ARRAY[{old_key}]);\n\
           END IF;\n\
           IF TG_OP <> 'DELETE' THEN\n\
             PERFORM {s}.\"roomshard_note\"((NEW.{room})::text, TG_TABLE_NAME, ARRAY[{new_key}]);\n\
           END IF;\n\
           RETURN NULL;\n\
         END $roomshard$",
        s = ns.quoted,
        f = function_name(t).quoted(),
        old_id = ident("OLD"),
        new_id = ident("NEW"),
        room = t.room_col(),
        old_key = key("OLD"),
        new_key = key("NEW"),
    )
}

/// `rs_track_<table>`: at most 9 + 48 bytes, inside PostgreSQL's 63.
fn function_name(t: &TableSql) -> roomshard_core::Identifier {
    roomshard_core::Identifier::new(format!("rs_track_{}", t.ident.as_str()))
        .unwrap_or_else(|_| t.ident.clone())
}

/// The shared function every trigger calls (see the module docs). Its fence and retired checks
/// are the router's guard's ([`guard_function_sql`]), so a host write and a routed read can never
/// disagree on whether a room is fenced or moved.
fn note_function_sql(ns: &Ns) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {s}.\"roomshard_note\"(v_room text, v_tbl text, v_key text[]) \
         RETURNS void LANGUAGE plpgsql AS $roomshard$\n\
         DECLARE v_state text;\n\
         BEGIN\n\
           IF coalesce(current_setting('roomshard.bypass_fence', true), '') <> 'on' THEN\n\
             v_state := {s}.\"roomshard_guard\"(v_room);\n\
             IF v_state = 'cutover' THEN\n\
               RAISE EXCEPTION 'room % is in its read-only cutover; retry shortly', v_room\n\
                 USING ERRCODE = '{code}',\n\
                       HINT = 'roomshard is moving this room to its own shard; retry the write in a moment, where the placement then says';\n\
             ELSIF v_state = 'moved' THEN\n\
               RAISE EXCEPTION 'room % lives in its own shard now; write there', v_room\n\
                 USING ERRCODE = '{moved}',\n\
                       HINT = 'roomshard moved this room out of the shared tables; route the write by the room''s placement';\n\
             END IF;\n\
           END IF;\n\
           IF EXISTS (SELECT 1 FROM {s}.\"{tracked}\" WHERE room = v_room) THEN\n\
             INSERT INTO {s}.\"{log}\" (room, tbl, key) VALUES (v_room, v_tbl, v_key);\n\
           END IF;\n\
         END $roomshard$",
        s = ns.quoted,
        code = CUTOVER_SQLSTATE,
        moved = MOVED_SQLSTATE,
        tracked = TRACKED_TABLE,
        log = CHANGE_LOG_TABLE,
    )
}

/// The statement trigger that refuses `TRUNCATE` of a shared table while any room is tracked.
fn no_truncate_function_sql(ns: &Ns) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {s}.\"roomshard_no_truncate\"() RETURNS trigger \
         LANGUAGE plpgsql AS $roomshard$\n\
         BEGIN\n\
           IF EXISTS (SELECT 1 FROM {s}.\"{tracked}\") THEN\n\
             RAISE EXCEPTION 'TRUNCATE of % while roomshard copies rooms out of it', TG_TABLE_NAME\n\
               USING ERRCODE = '{code}',\n\
                     HINT = 'a TRUNCATE fires no row trigger, so the copy job could not see it; DELETE the rows instead, or wait until the decentralise finishes';\n\
           END IF;\n\
           RETURN NULL;\n\
         END $roomshard$",
        s = ns.quoted,
        tracked = TRACKED_TABLE,
        code = TRUNCATE_SQLSTATE,
    )
}

/// The guard a routed request's transaction starts with (see [`crate::PgPools`]): the room's
/// fence lock in shared mode for the transaction, and whether its pooled rows are retired.
/// Answers `'cutover'`, `'moved'` or `'ok'`; the shared lock, once taken, keeps a fence waiting
/// until the request's transaction ends, so a request never reads the pooled copy across a flip.
fn guard_function_sql(ns: &Ns) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {s}.\"roomshard_guard\"(v_room text) \
         RETURNS text LANGUAGE plpgsql AS $roomshard$\n\
         BEGIN\n\
           IF NOT pg_try_advisory_xact_lock_shared(hashtextextended('roomshard:fence:' || v_room, 0)) THEN\n\
             RETURN 'cutover';\n\
           END IF;\n\
           IF EXISTS (SELECT 1 FROM {s}.\"{retired}\" WHERE room = v_room) THEN\n\
             RETURN 'moved';\n\
           END IF;\n\
           RETURN 'ok';\n\
         END $roomshard$",
        s = ns.quoted,
        retired = RETIRED_TABLE,
    )
}

/// The retired-rooms table, as both the change log and the router's guard read it.
fn retired_table_sql(ns: &Ns) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.\"{RETIRED_TABLE}\" (room text PRIMARY KEY, \
         since timestamptz NOT NULL DEFAULT now())",
        ns.quoted
    )
}

impl PgShardStore {
    /// Installs the change log, the note function and every shared table's trigger, once: a
    /// later call finds them and changes nothing (no DDL lock on the host's tables).
    ///
    /// `track_changes` and `fence_writes` call it themselves; a host calls it at deploy time so
    /// that the first decentralise does not have to. Creating a trigger waits for the writes in
    /// flight on its table and holds new ones behind it, so it waits at most
    /// [`INSTALL_LOCK_WAIT`] and then gives up ([`Error::Unavailable`], retryable) rather than
    /// stall the host's writes behind a long transaction. Serialised with other roomshard
    /// processes by an advisory lock.
    ///
    /// # Errors
    /// As described; [`Error::Unavailable`] if the database refuses the DDL (the role must own
    /// the shared tables).
    pub async fn install_change_log(&self, schema: &RoomSchema) -> Result<()> {
        let ns = self.shared_ns();
        let tables = schema
            .tables()
            .iter()
            .map(TableSql::new)
            .collect::<Result<Vec<_>>>()?;
        if self.tracking_installed(&ns, &tables).await? {
            return Ok(());
        }
        let mut s = Session::begin(self.pool(), Mode::Write, "installing the change log").await?;
        advisory_lock(s.conn(), &format!("pooled:{}", ns.name)).await?;
        q(format!(
            "SET LOCAL lock_timeout = '{}ms'",
            INSTALL_LOCK_WAIT.as_millis()
        ))
        .execute(s.conn())
        .await
        .map_err(db_err("installing the change log"))?;
        let ddl = [
            format!(
                "CREATE TABLE IF NOT EXISTS {}.\"{TRACKED_TABLE}\" (room text PRIMARY KEY, \
                 since timestamptz NOT NULL DEFAULT now())",
                ns.quoted
            ),
            retired_table_sql(&ns),
            guard_function_sql(&ns),
            format!(
                "CREATE TABLE IF NOT EXISTS {}.\"{CHANGE_LOG_TABLE}\" (seq bigserial PRIMARY KEY, \
                 room text NOT NULL, tbl text NOT NULL, key text[] NOT NULL)",
                ns.quoted
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS \"{CHANGE_LOG_TABLE}__room\" ON {}.\"{CHANGE_LOG_TABLE}\" \
                 (room, tbl, seq)",
                ns.quoted
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {}.\"{APPLIED_GEN_TABLE}\" (room text PRIMARY KEY, \
                 gen bigint NOT NULL)",
                ns.quoted
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {}.\"{APPLIED_TABLE}\" (room text NOT NULL, \
                 gen bigint NOT NULL, tbl text NOT NULL, key text[] NOT NULL)",
                ns.quoted
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS \"{APPLIED_TABLE}__room\" ON {}.\"{APPLIED_TABLE}\" \
                 (room, gen, tbl)",
                ns.quoted
            ),
            note_function_sql(&ns),
            no_truncate_function_sql(&ns),
        ];
        for sql in ddl {
            q(sql)
                .execute(s.conn())
                .await
                .map_err(db_err("installing the change log"))?;
        }
        for t in &tables {
            q(trigger_function_sql(&ns, t))
                .execute(s.conn())
                .await
                .map_err(db_err(format!("installing the trigger of {}", t.desc.name)))?;
            // OR REPLACE (PostgreSQL 14+) so a re-run after a schema change refreshes it.
            q(format!(
                "CREATE OR REPLACE TRIGGER \"roomshard_track\" AFTER INSERT OR UPDATE OR DELETE \
                 ON {} FOR EACH ROW EXECUTE FUNCTION {}.{}()",
                t.at(&ns),
                ns.quoted,
                function_name(t).quoted()
            ))
            .execute(s.conn())
            .await
            .map_err(db_err(format!("installing the trigger of {}", t.desc.name)))?;
            q(format!(
                "CREATE OR REPLACE TRIGGER \"roomshard_truncate\" BEFORE TRUNCATE ON {} \
                 FOR EACH STATEMENT EXECUTE FUNCTION {}.\"roomshard_no_truncate\"()",
                t.at(&ns),
                ns.quoted,
            ))
            .execute(s.conn())
            .await
            .map_err(db_err(format!(
                "installing the TRUNCATE guard of {}",
                t.desc.name
            )))?;
        }
        s.commit("installing the change log").await
    }

    /// Installs what the router's guard needs (the retired-rooms table and `roomshard_guard`),
    /// without touching the host's tables: no lock on them, so it is safe at any time.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if the database refuses the DDL.
    pub async fn install_guard(&self) -> Result<()> {
        let ns = self.shared_ns();
        let mut s = Session::begin(self.pool(), Mode::Write, "installing the route guard").await?;
        advisory_lock(s.conn(), &format!("pooled:{}", ns.name)).await?;
        for sql in [retired_table_sql(&ns), guard_function_sql(&ns)] {
            q(sql)
                .execute(s.conn())
                .await
                .map_err(db_err("installing the route guard"))?;
        }
        s.commit("installing the route guard").await
    }

    /// Whether the log tables, and a trigger on every shared table, exist.
    async fn tracking_installed(&self, ns: &Ns, tables: &[TableSql]) -> Result<bool> {
        let mut conn = self
            .pool()
            .acquire()
            .await
            .map_err(db_err("checking the change log"))?;
        let names: Vec<String> = tables.iter().map(|t| t.desc.name.clone()).collect();
        let row = sqlx::query(
            "SELECT to_regclass(quote_ident($1) || '.' || quote_ident($2)) IS NOT NULL \
                    AND to_regclass(quote_ident($1) || '.' || quote_ident($4)) IS NOT NULL, \
                    (SELECT count(*) FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND g.tgname IN ('roomshard_track', 'roomshard_truncate') \
                       AND c.relname = ANY($3))",
        )
        .bind(&ns.name)
        .bind(CHANGE_LOG_TABLE)
        .bind(&names)
        .bind(APPLIED_TABLE)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err("checking the change log"))?;
        let log: bool = row.try_get(0).map_err(db_err("checking the change log"))?;
        let triggers: i64 = row.try_get(1).map_err(db_err("checking the change log"))?;
        Ok(log && usize::try_from(triggers).unwrap_or(0) == 2 * tables.len())
    }

    /// `track_changes` (see the trait).
    pub(crate) async fn track(&self, room: &RoomId, schema: &RoomSchema, on: bool) -> Result<bool> {
        let ns = self.shared_ns();
        if !on {
            return self.untrack(room).await;
        }
        self.install_change_log(schema).await?;
        let mut s = Session::begin(self.pool(), Mode::Write, "tracking a room").await?;
        let added = q(format!(
            "INSERT INTO {}.\"{TRACKED_TABLE}\" (room) VALUES ($1) ON CONFLICT DO NOTHING",
            ns.quoted
        ))
        .bind(room.as_str())
        .execute(s.conn())
        .await
        .map_err(db_err("tracking a room"))?
        .rows_affected()
            > 0;
        s.commit("tracking a room").await?;
        if added {
            // A write whose trigger ran before the commit above saw the room untracked and
            // logged nothing, yet may commit after the bulk copy read its row: wait for every
            // such write (each holds the room's fence lock in shared mode until it ends). New
            // writes are refused while the barrier waits, so it waits in short attempts with the
            // room writable between them, rather than once for long behind a slow transaction.
            let mut attempt = 1;
            loop {
                match self.fence(room, schema, TRACK_BARRIER_WAIT).await {
                    Ok(barrier) => {
                        barrier.lift().await?;
                        break;
                    }
                    Err(e) if e.is_retryable() && attempt < TRACK_BARRIER_ATTEMPTS => {
                        attempt += 1;
                        tokio::time::sleep(TRACK_BARRIER_WAIT).await;
                    }
                    Err(e) => {
                        // Not tracked after all: a later call starts over cleanly.
                        self.untrack(room).await?;
                        return Err(e);
                    }
                }
            }
        }
        Ok(!added)
    }

    /// Stops tracking `room` and forgets its logged changes.
    async fn untrack(&self, room: &RoomId) -> Result<bool> {
        let ns = self.shared_ns();
        let mut s = Session::begin(self.pool(), Mode::Write, "untracking a room").await?;
        if !tracked_table_exists(s.conn(), &ns).await? {
            s.rollback("untracking a room").await?;
            return Ok(false);
        }
        let was = q(format!(
            "DELETE FROM {}.\"{TRACKED_TABLE}\" WHERE room = $1",
            ns.quoted
        ))
        .bind(room.as_str())
        .execute(s.conn())
        .await
        .map_err(db_err("untracking a room"))?
        .rows_affected()
            > 0;
        q(format!(
            "DELETE FROM {}.\"{CHANGE_LOG_TABLE}\" WHERE room = $1",
            ns.quoted
        ))
        .bind(room.as_str())
        .execute(s.conn())
        .await
        .map_err(db_err("clearing a room's change log"))?;
        if to_regclass_exists(s.conn(), &ns, APPLIED_TABLE).await? {
            for table in [APPLIED_TABLE, APPLIED_GEN_TABLE] {
                q(format!(
                    "DELETE FROM {}.\"{table}\" WHERE room = $1",
                    ns.quoted
                ))
                .bind(room.as_str())
                .execute(s.conn())
                .await
                .map_err(db_err("clearing a room's applied keys"))?;
            }
        }
        s.commit("untracking a room").await?;
        Ok(was)
    }

    /// `retire_pooled` (see the trait).
    pub(crate) async fn retire(&self, room: &RoomId, schema: &RoomSchema, on: bool) -> Result<()> {
        self.install_change_log(schema).await?;
        let ns = self.shared_ns();
        let sql = if on {
            format!(
                "INSERT INTO {}.\"{RETIRED_TABLE}\" (room) VALUES ($1) ON CONFLICT DO NOTHING",
                ns.quoted
            )
        } else {
            format!(
                "DELETE FROM {}.\"{RETIRED_TABLE}\" WHERE room = $1",
                ns.quoted
            )
        };
        let mut conn = self
            .pool()
            .acquire()
            .await
            .map_err(db_err("retiring a room's pooled rows"))?;
        q(sql)
            .bind(room.as_str())
            .execute(&mut *conn)
            .await
            .map_err(db_err(format!("retiring the pooled rows of room {room}")))?;
        Ok(())
    }

    /// `fence_writes` (see the trait).
    pub(crate) async fn fence(
        &self,
        room: &RoomId,
        schema: &RoomSchema,
        wait: Duration,
    ) -> Result<Box<dyn WriteFence>> {
        // Without the triggers nothing would be refused: install them first.
        self.install_change_log(schema).await?;
        let conn = self
            .pool()
            .acquire()
            .await
            .map_err(db_err("connecting for a write fence"))?;
        // Its own session, out of the pool: the lock lives exactly as long as the fence.
        let mut conn = conn.detach();
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        q(format!("SET lock_timeout = '{ms}ms'"))
            .execute(&mut conn)
            .await
            .map_err(db_err("setting up a write fence"))?;
        let locked = sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
            .bind(fence_lock(room))
            .execute(&mut conn)
            .await;
        match locked {
            Ok(_) => {}
            Err(e) => {
                let _ = conn.close().await;
                let lock_timeout = e
                    .as_database_error()
                    .and_then(|d| d.code())
                    .is_some_and(|c| c == "55P03");
                if lock_timeout {
                    return Err(Error::unavailable(
                        format!("write fence of room {room}"),
                        true,
                        format!(
                            "writes in flight (or another fence) did not finish within {ms} ms"
                        ),
                    ));
                }
                return Err(db_err(format!("fencing writes of room {room}"))(e));
            }
        }
        q("RESET lock_timeout".to_string())
            .execute(&mut conn)
            .await
            .map_err(db_err("setting up a write fence"))?;
        Ok(Box::new(PgWriteFence {
            conn: Some(conn),
            room: room.clone(),
        }))
    }

    /// `copy_room` with [`CopyPass::Changes`](roomshard_core::CopyPass::Changes) for one table:
    /// batches of logged keys, each applied and removed from the log in one statement (one
    /// snapshot: a log entry visible there is a committed change whose row is visible too).
    /// Returns rows written and deleted.
    pub(crate) async fn apply_changes(
        &self,
        t: &TableSql,
        src: &Ns,
        dst: &Ns,
        dst_filtered: bool,
        room: &RoomId,
    ) -> Result<(u64, u64)> {
        let log = format!("{}.\"{CHANGE_LOG_TABLE}\"", src.quoted);
        let applied = format!("{}.\"{APPLIED_TABLE}\"", src.quoted);
        let generation = format!(
            "coalesce((SELECT gen FROM {}.\"{APPLIED_GEN_TABLE}\" WHERE room = $1), 0)",
            src.quoted
        );
        let keys = join(t.pk.iter().enumerate().map(|(n, &i)| {
            format!(
                "(key[{}])::{} AS k{n}",
                n + 1,
                crate::sql::pg_type(t.desc.columns[i].logical_type)
            )
        }));
        let kjoin = |alias: &str| {
            t.pk.iter()
                .enumerate()
                .map(|(n, &i)| format!("{alias}.{} = k.k{n}", t.cols[i].quoted()))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        let dst_room = if dst_filtered {
            format!(" AND d.{} = $1", t.room_col())
        } else {
            String::new()
        };
        let sql = format!(
            "WITH batch AS (DELETE FROM {log} WHERE seq IN (SELECT seq FROM {log} \
               WHERE room = $1 AND tbl = $2 ORDER BY seq LIMIT $3) RETURNING key), \
             k AS (SELECT DISTINCT {keys} FROM batch), \
             mark AS (INSERT INTO {applied} (room, gen, tbl, key) \
               SELECT DISTINCT $1, {generation}, $2, key FROM batch RETURNING 1), \
             gone AS (DELETE FROM {dst} AS d USING k WHERE {dk}{dst_room} AND NOT EXISTS \
               (SELECT 1 FROM {srct} AS s WHERE {sd} AND s.{rc} = $1) RETURNING 1), \
             put AS (INSERT INTO {dst} ({plain}) SELECT {scols} FROM {srct} AS s JOIN k ON {sk} \
               WHERE s.{rc} = $1 {upsert} RETURNING 1) \
             SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM gone), \
                    (SELECT count(*) FROM put)",
            dst = t.at(dst),
            srct = t.at(src),
            dk = kjoin("d"),
            sd = t.pk_join("s", "d"),
            rc = t.room_col(),
            plain = t.col_list(None),
            scols = t.col_list(Some("s")),
            sk = kjoin("s"),
            upsert = t.on_conflict_update(),
        );
        let (mut written, mut deleted) = (0u64, 0u64);
        loop {
            let mut s = Session::begin(self.pool(), Mode::Write, "applying logged changes").await?;
            let row = q(sql.clone())
                .bind(room.as_str())
                .bind(&t.desc.name)
                .bind(CHANGES_BATCH)
                .fetch_one(s.conn())
                .await
                .map_err(db_err(format!(
                    "applying logged changes of {}",
                    t.desc.name
                )))?;
            s.commit(&format!("logged changes of {}", t.desc.name))
                .await?;
            let n = |i: usize| -> Result<u64> {
                let v: i64 = row.try_get(i).map_err(db_err("reading a change count"))?;
                Ok(u64::try_from(v).unwrap_or(0))
            };
            let (entries, gone, put) = (n(0)?, n(1)?, n(2)?);
            written += put;
            deleted += gone;
            if entries < u64::try_from(CHANGES_BATCH).unwrap_or(u64::MAX) {
                return Ok((written, deleted));
            }
        }
    }

    /// Whether `room` is tracked (the log tables may not exist yet: then it is not).
    pub(crate) async fn is_tracked(&self, room: &RoomId) -> Result<bool> {
        let ns = self.shared_ns();
        let mut conn = self
            .pool()
            .acquire()
            .await
            .map_err(db_err("checking a room's tracking"))?;
        let exists = tracked_table_exists(&mut conn, &ns).await?;
        if !exists {
            return Ok(false);
        }
        let row = q(format!(
            "SELECT 1 FROM {}.\"{TRACKED_TABLE}\" WHERE room = $1",
            ns.quoted
        ))
        .bind(room.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err("checking a room's tracking"))?;
        Ok(row.is_some())
    }
}

/// Whether the shared schema has the tracked-rooms table yet (it appears with the triggers).
async fn tracked_table_exists(conn: &mut PgConnection, ns: &Ns) -> Result<bool> {
    to_regclass_exists(conn, ns, TRACKED_TABLE).await
}

/// Whether the shared schema has table `name`.
pub(crate) async fn to_regclass_exists(
    conn: &mut PgConnection,
    ns: &Ns,
    name: &str,
) -> Result<bool> {
    sqlx::query("SELECT to_regclass(quote_ident($1) || '.' || quote_ident($2)) IS NOT NULL")
        .bind(&ns.name)
        .bind(name)
        .fetch_one(conn)
        .await
        .map_err(db_err("checking the change log"))?
        .try_get(0)
        .map_err(db_err("checking the change log"))
}

/// How long installing a trigger waits for the writes in flight on its table.
pub const INSTALL_LOCK_WAIT: Duration = Duration::from_secs(2);

/// How long one attempt of turning tracking on waits for the room's writes in flight (new
/// writes are refused meanwhile), and the pause between attempts.
const TRACK_BARRIER_WAIT: Duration = Duration::from_millis(500);
/// Attempts before turning tracking on gives up (retryable).
const TRACK_BARRIER_ATTEMPTS: u32 = 10;

/// A held fence: a session outside the pool holding the room's fence lock exclusively.
struct PgWriteFence {
    conn: Option<PgConnection>,
    room: RoomId,
}

#[async_trait]
impl WriteFence for PgWriteFence {
    async fn lift(mut self: Box<Self>) -> Result<()> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(fence_lock(&self.room))
            .execute(&mut conn)
            .await
            .map_err(db_err(format!(
                "lifting the write fence of room {}",
                self.room
            )))?;
        // Closing ends the session, which would release the lock anyway.
        conn.close()
            .await
            .map_err(db_err("closing a write fence's session"))
    }
}

impl Drop for PgWriteFence {
    fn drop(&mut self) {
        // Dropped unlifted (a cancelled cutover): the socket closes with the connection and the
        // server ends the session, which releases the lock.
        if self.conn.is_some() {
            tracing::debug!(room = %self.room, "write fence dropped; its session ends");
        }
    }
}
