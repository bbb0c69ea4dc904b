//! Chunk parity: row counts and SHA-256 per primary-key range, the per-row digests that name a
//! mismatch, and the record of which keys a `Changes` pass applied.
//!
//! A copy job checks a room while it is writable, chunk by chunk, then inside the read-only
//! cutover re-checks only the chunks a catch-up touched since (and the ones that did not
//! match): the window grows with the writes, not with the room.
//!
//! - **Ranges** are cut on the source: every `rows_per_chunk`-th key (one ordered scan of the key
//!   columns), so both copies are compared over the same keys even where they differ.
//! - **The checksum** of a range is `sha256` of its rows' `ROW(…)::text`, newline-joined in key
//!   order, computed by the server: only 64 hex characters per range cross the wire. Both copies
//!   live on one server with the same session settings, so the text is the same exactly when the
//!   values are. (Full `parity` hashes the COPY bytes instead, comparable across providers.)
//! - **Applied keys**: the `Changes` pass inserts every key it applies into
//!   `roomshard_applied`, in the statement that applies them (see [`crate::track`]);
//!   `applied_in` asks, per range, whether one of them falls inside it, comparing typed values
//!   in SQL, so no key order is reimplemented in Rust.

use crate::session::{Mode, Session};
use crate::shard::{PgShardStore, bind_keys, escape_keys, filter_sql, room_filter, unescape_keys};
use crate::sql::{Ns, TableSql, db_err, q};
use crate::track::{APPLIED_GEN_TABLE, APPLIED_TABLE, to_regclass_exists};
use roomshard_core::{
    ChunkParity, ChunkPlan, Error, KeyRange, Result, RoomId, RoomSchema, RowDigest, Scope,
};
use sqlx::Row;

/// A range's conditions on alias `s` and the values they bind, in order.
struct RangeSql {
    cond: String,
    binds: Vec<String>,
}

/// ` AND s.room = $1 AND (keys) > ($2…) AND (keys) <= (…)` for `range` in `t`.
fn range_sql(t: &TableSql, room: Option<&RoomId>, range: &KeyRange) -> Result<RangeSql> {
    let mut binds = Vec::new();
    let mut cond = String::new();
    if let Some(room) = room {
        cond.push_str(&filter_sql(t, "s", Some(room), 1));
        binds.push(room.as_str().to_string());
    }
    if let Some(after) = &range.after {
        cond.push_str(&format!(
            " AND {}",
            t.after_cursor(Some("s"), binds.len() + 1)
        ));
        binds.extend(unescape_keys(t, after, "key range")?);
    }
    if let Some(up_to) = &range.up_to {
        cond.push_str(&format!(" AND {}", t.up_to(Some("s"), binds.len() + 1)));
        binds.extend(unescape_keys(t, up_to, "key range")?);
    }
    Ok(RangeSql { cond, binds })
}

/// Cuts `range` of `t` every `rows_per_chunk` rows: one ordered scan of the key columns for the
/// bounds, the first range from `range.after`, the last to `range.up_to`.
async fn split(
    s: &mut Session,
    ns: &Ns,
    t: &TableSql,
    room: Option<&RoomId>,
    range: &KeyRange,
    rows_per_chunk: u64,
) -> Result<Vec<KeyRange>> {
    let every = i64::try_from(rows_per_chunk.max(1)).unwrap_or(i64::MAX);
    let r = range_sql(t, room, range)?;
    // The range's own parameters first, then the chunk size.
    let sql = format!(
        "SELECT k FROM (SELECT ARRAY[{keys}] AS k, row_number() OVER (ORDER BY {order}) AS rn \
         FROM {src} AS s WHERE TRUE{cond}) x WHERE rn % ${n} = 0 ORDER BY rn",
        keys = t.pk_as_text(Some("s")),
        order = t.order_by(Some("s")),
        src = t.at(ns),
        cond = r.cond,
        n = r.binds.len() + 1,
    );
    let bounds = bind_keys(q(sql), &r.binds)
        .bind(every)
        .fetch_all(s.conn())
        .await
        .map_err(db_err(format!("cutting {range} into chunks")))?;
    let mut out = Vec::with_capacity(bounds.len() + 1);
    let mut after = range.after.clone();
    for row in bounds {
        let key: Vec<String> = row.try_get(0).map_err(db_err("reading a chunk bound"))?;
        let up_to = Some(escape_keys(key));
        if up_to == range.up_to {
            // The range's own end is the last bound already.
            break;
        }
        out.push(KeyRange {
            table: t.desc.name.clone(),
            after: after.take(),
            up_to: up_to.clone(),
        });
        after = up_to;
    }
    out.push(KeyRange {
        table: t.desc.name.clone(),
        after,
        up_to: range.up_to.clone(),
    });
    Ok(out)
}

/// The table of `range`, or `Invalid` if the schema has none of that name.
fn table_of<'t>(tables: &'t [TableSql], range: &KeyRange) -> Result<&'t TableSql> {
    tables
        .iter()
        .find(|t| t.desc.name == range.table)
        .ok_or_else(|| {
            Error::invalid(
                "key range",
                format!("table {:?} is not in the room's schema", range.table),
            )
        })
}

impl PgShardStore {
    /// `chunk_parity` (see the trait).
    pub(crate) async fn chunks(
        &self,
        scope: &Scope,
        schema: &RoomSchema,
        plan: &ChunkPlan,
    ) -> Result<Vec<ChunkParity>> {
        let (mut s, ns, tables) = self
            .open(scope, schema, Mode::Snapshot, "chunk parity")
            .await?;
        let room = room_filter(scope);
        let ranges = match plan {
            ChunkPlan::Ranges(ranges) => ranges.clone(),
            ChunkPlan::Split { rows_per_chunk } => {
                let mut ranges = Vec::new();
                for t in &tables {
                    let whole = KeyRange {
                        table: t.desc.name.clone(),
                        after: None,
                        up_to: None,
                    };
                    ranges.extend(split(&mut s, &ns, t, room, &whole, *rows_per_chunk).await?);
                }
                ranges
            }
            ChunkPlan::Resplit {
                range,
                rows_per_chunk,
            } => {
                let t = table_of(&tables, range)?;
                split(&mut s, &ns, t, room, range, *rows_per_chunk).await?
            }
        };
        let mut out = Vec::with_capacity(ranges.len());
        for range in ranges {
            let t = table_of(&tables, &range)?;
            let r = range_sql(t, room, &range)?;
            let sql = format!(
                "SELECT count(*), encode(sha256(convert_to(coalesce(string_agg({rt}, E'\\n' \
                 ORDER BY {order}), ''), 'UTF8')), 'hex') FROM {src} AS s WHERE TRUE{cond}",
                rt = t.row_text("s"),
                order = t.order_by(Some("s")),
                src = t.at(&ns),
                cond = r.cond,
            );
            let row = bind_keys(q(sql), &r.binds)
                .fetch_one(s.conn())
                .await
                .map_err(db_err(format!("hashing {range}")))?;
            let rows: i64 = row.try_get(0).map_err(db_err("reading a chunk count"))?;
            let checksum: String = row.try_get(1).map_err(db_err("reading a chunk checksum"))?;
            out.push(ChunkParity {
                range,
                rows: u64::try_from(rows).unwrap_or(0),
                checksum,
            });
        }
        s.rollback("chunk parity").await?;
        Ok(out)
    }

    /// `row_digests` (see the trait).
    pub(crate) async fn digests(
        &self,
        scope: &Scope,
        schema: &RoomSchema,
        range: &KeyRange,
        limit: usize,
    ) -> Result<Vec<RowDigest>> {
        let (mut s, ns, tables) = self
            .open(scope, schema, Mode::Snapshot, "row digests")
            .await?;
        let t = table_of(&tables, range)?;
        let r = range_sql(t, room_filter(scope), range)?;
        let sql = format!(
            "SELECT ARRAY[{keys}], encode(sha256(convert_to({rt}, 'UTF8')), 'hex') FROM {src} AS s \
             WHERE TRUE{cond} ORDER BY {order} LIMIT {limit}",
            keys = t.pk_as_text(Some("s")),
            rt = t.row_text("s"),
            src = t.at(&ns),
            cond = r.cond,
            order = t.order_by(Some("s")),
            limit = i64::try_from(limit).unwrap_or(i64::MAX),
        );
        let rows = bind_keys(q(sql), &r.binds)
            .fetch_all(s.conn())
            .await
            .map_err(db_err(format!("reading the rows of {range}")))?;
        s.rollback("row digests").await?;
        rows.into_iter()
            .map(|row| {
                let key: Vec<String> = row.try_get(0).map_err(db_err("reading a row key"))?;
                let digest: String = row.try_get(1).map_err(db_err("reading a row digest"))?;
                Ok(RowDigest {
                    key: escape_keys(key),
                    digest,
                })
            })
            .collect()
    }

    /// `reset_applied` (see the trait).
    pub(crate) async fn reset_applied_keys(&self, room: &RoomId) -> Result<()> {
        let ns = self.shared_ns();
        let mut conn = self
            .pool()
            .acquire()
            .await
            .map_err(db_err("forgetting applied keys"))?;
        if !to_regclass_exists(&mut conn, &ns, APPLIED_TABLE).await? {
            return Ok(());
        }
        // A new generation: the keys recorded so far stop counting, with one row written.
        q(format!(
            "INSERT INTO {s}.\"{APPLIED_GEN_TABLE}\" AS g (room, gen) VALUES ($1, 1) \
             ON CONFLICT (room) DO UPDATE SET gen = g.gen + 1",
            s = ns.quoted
        ))
        .bind(room.as_str())
        .execute(&mut *conn)
        .await
        .map_err(db_err(format!(
            "forgetting the applied keys of room {room}"
        )))?;
        Ok(())
    }

    /// `applied_in` (see the trait).
    pub(crate) async fn applied_ranges(
        &self,
        room: &RoomId,
        schema: &RoomSchema,
        ranges: &[KeyRange],
    ) -> Result<Vec<usize>> {
        let tables = schema
            .tables()
            .iter()
            .map(TableSql::new)
            .collect::<Result<Vec<_>>>()?;
        // Every range must name a table and fit its key, even where nothing was applied: a
        // malformed range is refused, never answered "untouched".
        for range in ranges {
            let t = table_of(&tables, range)?;
            for bound in [&range.after, &range.up_to].into_iter().flatten() {
                unescape_keys(t, bound, "key range")?;
            }
        }
        let ns = self.shared_ns();
        let mut conn = self
            .pool()
            .acquire()
            .await
            .map_err(db_err("reading applied keys"))?;
        if !to_regclass_exists(&mut conn, &ns, APPLIED_TABLE).await? {
            return Ok(Vec::new());
        }
        let applied = format!("{}.\"{APPLIED_TABLE}\"", ns.quoted);
        let generation = format!(
            "coalesce((SELECT gen FROM {}.\"{APPLIED_GEN_TABLE}\" WHERE room = $1), 0)",
            ns.quoted
        );
        // Most tables see no write during a cutover: one query finds those that did.
        let touched: Vec<String> = q(format!(
            "SELECT DISTINCT tbl FROM {applied} WHERE room = $1 AND gen = {generation}"
        ))
        .bind(room.as_str())
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err("reading applied keys"))?
        .into_iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()
        .map_err(db_err("reading applied keys"))?;
        let mut out = Vec::new();
        for t in &tables {
            if !touched.contains(&t.desc.name) {
                continue;
            }
            let mine: Vec<(usize, &KeyRange)> = ranges
                .iter()
                .enumerate()
                .filter(|(_, r)| r.table == t.desc.name)
                .collect();
            for batch in mine.chunks(APPLIED_RANGES_PER_QUERY) {
                out.extend(
                    self.applied_batch(&mut conn, &applied, &generation, room, t, batch)
                        .await?,
                );
            }
        }
        out.sort_unstable();
        Ok(out)
    }
}

/// Ranges asked about in one statement (each binds 1 + 2 × key columns values).
const APPLIED_RANGES_PER_QUERY: usize = 500;

impl PgShardStore {
    /// Which of `batch` (ranges of table `t`, with their indexes) hold an applied key: one
    /// statement that casts the table's applied keys once (a materialised CTE) and tests each
    /// range against them — not one scan of the applied keys per range.
    async fn applied_batch(
        &self,
        conn: &mut sqlx::PgConnection,
        applied: &str,
        generation: &str,
        room: &RoomId,
        t: &TableSql,
        batch: &[(usize, &KeyRange)],
    ) -> Result<Vec<usize>> {
        let width = t.pk.len();
        let cols =
            |prefix: &str| -> Vec<String> { (0..width).map(|n| format!("{prefix}{n}")).collect() };
        let (kc, lo, hi) = (cols("k"), cols("lo"), cols("hi"));
        let mut binds: Vec<Option<String>> =
            vec![Some(room.as_str().to_string()), Some(t.desc.name.clone())];
        let mut rows = Vec::with_capacity(batch.len());
        for (i, range) in batch {
            let mut cells = vec![format!("{i}::int8")];
            for bound in [&range.after, &range.up_to] {
                let values = match bound {
                    Some(keys) => unescape_keys(t, keys, "key range")?
                        .into_iter()
                        .map(Some)
                        .collect(),
                    None => vec![None; width],
                };
                for (n, v) in values.into_iter().enumerate() {
                    binds.push(v);
                    cells.push(t.key_param_at(n, binds.len()));
                }
            }
            rows.push(format!("({})", cells.join(", ")));
        }
        let tuple = |names: &[String], alias: &str| {
            names
                .iter()
                .map(|c| format!("{alias}.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let sql = format!(
            "WITH k AS MATERIALIZED (SELECT DISTINCT {typed} FROM {applied} AS a \
               WHERE a.room = $1 AND a.gen = {generation} AND a.tbl = $2), \
             r (i, {lo}, {hi}) AS (VALUES {rows}) \
             SELECT r.i FROM r WHERE EXISTS (SELECT 1 FROM k WHERE \
               (r.lo0 IS NULL OR ({kt}) > ({lot})) AND (r.hi0 IS NULL OR ({kt}) <= ({hit}))) \
             ORDER BY r.i",
            typed = t
                .logged_key_exprs("a")
                .iter()
                .zip(&kc)
                .map(|(e, c)| format!("{e} AS {c}"))
                .collect::<Vec<_>>()
                .join(", "),
            lo = lo.join(", "),
            hi = hi.join(", "),
            rows = rows.join(", "),
            kt = tuple(&kc, "k"),
            lot = tuple(&lo, "r"),
            hit = tuple(&hi, "r"),
        );
        let mut query = q(sql);
        for b in &binds {
            query = query.bind(b.clone());
        }
        query
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err(format!(
                "reading the applied keys of {}",
                t.desc.name
            )))?
            .into_iter()
            .map(|row| {
                let i: i64 = row.try_get(0).map_err(db_err("reading an applied range"))?;
                usize::try_from(i).map_err(|_| Error::invalid("applied range", "negative index"))
            })
            .collect()
    }
}
