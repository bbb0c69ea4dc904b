//! SQL text built from descriptors, and the database helpers every shard operation shares.
//!
//! Every identifier reaches SQL through [`Identifier::quoted`] (validated on construction, so a
//! quote can never appear inside); every value is bound. The only other names are fixed
//! prefixes joined to a validated identifier (`roomshard_stage_<table>`), which stay inside the
//! identifier alphabet.

use crate::codec::{self, Val};
use roomshard_core::{Error, Identifier, Result, RoomId, TableDescriptor};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{AssertSqlSafe, Row};

/// Maps an sqlx error to roomshard's kinds: unique violations are conflicts, busy/locked
/// databases and I/O are retryable, the rest is reported as an unavailable backend.
pub(crate) fn db_err(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Error {
    let what = what.into();
    move |e| {
        if let Some(d) = e.as_database_error() {
            if d.is_unique_violation() {
                return Error::conflict(format!("{what}: {}", d.message()));
            }
            let primary = d
                .code()
                .and_then(|c| c.parse::<i64>().ok())
                .map(|c| c & 0xff);
            let retryable = matches!(primary, Some(5 | 6));
            return Error::unavailable(format!("sqlite ({what})"), retryable, e);
        }
        let retryable = matches!(
            e,
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed
        );
        Error::unavailable(format!("sqlite ({what})"), retryable, e)
    }
}

/// Wraps SQL text built in this module (identifiers quoted, values bound).
pub(crate) fn q(sql: String) -> codec::Query<'static> {
    sqlx::query(AssertSqlSafe(sql))
}

/// A table's names, validated and quoted, and the positions of its key columns.
#[derive(Clone, Debug)]
pub(crate) struct TableSql {
    pub(crate) desc: TableDescriptor,
    pub(crate) ident: Identifier,
    pub(crate) cols: Vec<Identifier>,
    /// Indexes into `cols` of the primary-key columns, in key order.
    pub(crate) pk: Vec<usize>,
    /// Index of the room key column.
    pub(crate) room: usize,
    /// The upsert statement (built once: it runs for every copied row).
    pub(crate) upsert: String,
}

impl TableSql {
    /// Validates the descriptor's names (a [`RoomSchema`](roomshard_core::RoomSchema) already
    /// has; this is the boundary check).
    pub(crate) fn new(desc: &TableDescriptor) -> Result<Self> {
        let ident = Identifier::new(desc.name.clone())?;
        let cols = desc
            .columns
            .iter()
            .map(|c| Identifier::new(c.name.clone()))
            .collect::<Result<Vec<_>>>()?;
        let position = |name: &str| {
            desc.columns
                .iter()
                .position(|c| c.name == name)
                .ok_or_else(|| {
                    Error::invalid(
                        format!("table {}", desc.name),
                        format!("no column {name:?}"),
                    )
                })
        };
        let pk = desc
            .primary_key
            .iter()
            .map(|n| position(n))
            .collect::<Result<Vec<_>>>()?;
        let room = position(&desc.room_key_column)?;
        let mut t = TableSql {
            desc: desc.clone(),
            ident,
            cols,
            pk,
            room,
            upsert: String::new(),
        };
        t.upsert = t.upsert_sql();
        Ok(t)
    }

    /// `"main"."<table>"`.
    pub(crate) fn main(&self) -> String {
        format!("\"main\".{}", self.ident.quoted())
    }

    /// `"temp"."roomshard_stage_<table>"`: the restore staging table.
    pub(crate) fn stage(&self) -> String {
        format!("\"temp\".\"roomshard_stage_{}\"", self.ident.as_str())
    }

    /// `"roomshard_stage_<table>"` unqualified, to qualify columns with.
    pub(crate) fn stage_bare(&self) -> String {
        format!("\"roomshard_stage_{}\"", self.ident.as_str())
    }

    /// `"c1", "c2", …`
    pub(crate) fn col_list(&self) -> String {
        join(self.cols.iter().map(Identifier::quoted))
    }

    /// The primary-key columns, `"k1", "k2"`.
    pub(crate) fn pk_list(&self) -> String {
        join(self.pk.iter().map(|&i| self.cols[i].quoted()))
    }

    /// The room key column, quoted.
    pub(crate) fn room_col(&self) -> String {
        self.cols[self.room].quoted()
    }

    /// The primary-key values of a row.
    pub(crate) fn key_of(&self, row: &[Val]) -> Vec<Val> {
        self.pk.iter().map(|&i| row[i].clone()).collect()
    }

    /// The primary-key values in COPY text form (checkpoint cursors, messages).
    pub(crate) fn key_text(&self, key: &[Val]) -> Result<Vec<String>> {
        self.pk
            .iter()
            .zip(key)
            .map(|(&i, v)| {
                let mut s = String::new();
                codec::push_field(&mut s, self.desc.columns[i].logical_type, v)
                    .map_err(|e| Error::corrupt(format!("table {}", self.desc.name), e))?;
                Ok(s)
            })
            .collect()
    }

    /// Parses a cursor's key texts back into values.
    pub(crate) fn parse_key(&self, texts: &[String]) -> Result<Vec<Val>> {
        if texts.len() != self.pk.len() {
            return Err(Error::invalid(
                "copy checkpoint",
                format!(
                    "cursor of table {} has {} key values, the key has {} columns",
                    self.desc.name,
                    texts.len(),
                    self.pk.len()
                ),
            ));
        }
        self.pk
            .iter()
            .zip(texts)
            .map(|(&i, t)| {
                let c = &self.desc.columns[i];
                codec::parse_field(c.logical_type, false, t.as_bytes()).map_err(|e| {
                    Error::invalid(
                        "copy checkpoint",
                        format!("{}.{}: {e}", self.desc.name, c.name),
                    )
                })
            })
            .collect()
    }

    /// `CREATE TABLE "main"."t" ("c" TYPE [NOT NULL], …, PRIMARY KEY (…))`.
    pub(crate) fn create_sql(&self) -> String {
        let mut parts: Vec<String> = self
            .desc
            .columns
            .iter()
            .zip(&self.cols)
            .map(|(c, id)| {
                format!(
                    "{} {}{}",
                    id.quoted(),
                    codec::declared_type(c.logical_type),
                    if c.nullable { "" } else { " NOT NULL" }
                )
            })
            .collect();
        parts.push(format!("PRIMARY KEY ({})", self.pk_list()));
        format!("CREATE TABLE {} ({})", self.main(), parts.join(", "))
    }

    /// `SELECT cols FROM t [WHERE room = ?] [AND (pk) > (?…)] ORDER BY pk [LIMIT ?]`; binds
    /// are, in order, the room (if filtered), the key (if after) and the limit.
    /// `SELECT count(*) FROM "main"."t" [WHERE room = ?]`.
    pub(crate) fn count_sql(&self, room_filter: bool) -> String {
        let mut sql = format!("SELECT count(*) FROM {}", self.main());
        if room_filter {
            sql.push_str(&format!(" WHERE {} = ?", self.room_col()));
        }
        sql
    }

    pub(crate) fn select_sql(&self, room_filter: bool, after: bool, limit: bool) -> String {
        let mut conds = Vec::new();
        if room_filter {
            conds.push(format!("{} = ?", self.room_col()));
        }
        if after {
            conds.push(format!(
                "({}) > ({})",
                self.pk_list(),
                placeholders(self.pk.len())
            ));
        }
        let mut sql = format!("SELECT {} FROM {}", self.col_list(), self.main());
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(&format!(" ORDER BY {}", self.pk_list()));
        if limit {
            sql.push_str(" LIMIT ?");
        }
        sql
    }

    /// Upsert by primary key that never takes over another room's row: the update only applies
    /// where the existing row has the same room key (so 0 rows affected means a collision).
    fn upsert_sql(&self) -> String {
        self.upsert_sql_rows(1)
    }

    /// [`upsert_sql`](Self::upsert_sql) for `n` rows in one statement: one statement per batch
    /// instead of per row, because every statement is a round trip to sqlx's SQLite worker
    /// thread (per-row statements made copies and restores mostly thread hand-offs).
    pub(crate) fn upsert_sql_rows(&self, n: usize) -> String {
        let non_pk: Vec<usize> = (0..self.cols.len())
            .filter(|i| !self.pk.contains(i))
            .collect();
        let assign_cols = if non_pk.is_empty() {
            vec![self.pk[0]]
        } else {
            non_pk
        };
        let sets = join(assign_cols.iter().map(|&i| {
            let c = self.cols[i].quoted();
            format!("{c} = excluded.{c}")
        }));
        format!(
            "INSERT INTO {} ({}) VALUES {} ON CONFLICT ({}) DO UPDATE SET {} WHERE {}.{} = excluded.{}",
            self.main(),
            self.col_list(),
            row_placeholders(self.cols.len(), n),
            self.pk_list(),
            sets,
            self.ident.quoted(),
            self.room_col(),
            self.room_col()
        )
    }

    /// `DELETE FROM t WHERE (pk) = (?…) AND room = ?`.
    pub(crate) fn delete_key_sql(&self) -> String {
        format!(
            "DELETE FROM {} WHERE ({}) = ({}) AND {} = ?",
            self.main(),
            self.pk_list(),
            placeholders(self.pk.len()),
            self.room_col()
        )
    }
}

/// `a, b, c`
pub(crate) fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// `?, ?, ?`
pub(crate) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// `(?, …), (?, …)`: `rows` groups of `cols` placeholders, for multi-row statements.
pub(crate) fn row_placeholders(cols: usize, rows: usize) -> String {
    let one = format!("({})", placeholders(cols));
    vec![one; rows].join(", ")
}

/// Rows per multi-row statement for a table of `cols` bound values per row: under SQLite's
/// default limit of 32 766 bound parameters, and at most 200 rows so statements stay small.
pub(crate) fn rows_per_statement(cols: usize) -> usize {
    (32_000 / cols.max(1)).clamp(1, 200)
}

/// Whether a table exists in `main`, and if so that it matches its descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TableState {
    Missing,
    Matches,
}

/// Compares the existing table (if any) with its descriptor: the same column names, affinities
/// and nullability, and the same primary key. A difference is [`Error::Conflict`].
pub(crate) async fn table_state(conn: &mut SqliteConnection, t: &TableSql) -> Result<TableState> {
    let rows: Vec<SqliteRow> =
        sqlx::query("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1, 'main')")
            .bind(t.ident.as_str().to_string())
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err(format!("reading the columns of {}", t.desc.name)))?;
    if rows.is_empty() {
        return Ok(TableState::Missing);
    }
    let conflict = |detail: String| {
        Error::conflict(format!(
            "existing table {} differs from its descriptor: {detail}",
            t.desc.name
        ))
    };
    let mut existing = Vec::new();
    for r in &rows {
        let get = |e: sqlx::Error| db_err("pragma table_info")(e);
        let name: String = r.try_get(0).map_err(get)?;
        let ty: String = r.try_get(1).map_err(get)?;
        let notnull: i64 = r.try_get(2).map_err(get)?;
        let pk: i64 = r.try_get(3).map_err(get)?;
        existing.push((name, ty, notnull != 0, pk));
    }
    if existing.len() != t.desc.columns.len() {
        return Err(conflict(format!(
            "{} columns, the descriptor has {}",
            existing.len(),
            t.desc.columns.len()
        )));
    }
    for c in &t.desc.columns {
        let Some((_, ty, notnull, pk)) = existing.iter().find(|e| e.0 == c.name) else {
            return Err(conflict(format!("no column {:?}", c.name)));
        };
        let want = codec::affinity(codec::declared_type(c.logical_type));
        if codec::affinity(ty) != want {
            return Err(conflict(format!(
                "column {:?} is {ty:?}, expected {want} affinity for {:?}",
                c.name, c.logical_type
            )));
        }
        if *pk == 0 && *notnull == c.nullable {
            return Err(conflict(format!(
                "column {:?} is {}nullable",
                c.name,
                if c.nullable { "not " } else { "" }
            )));
        }
    }
    let mut pk: Vec<(i64, &str)> = existing
        .iter()
        .filter(|e| e.3 > 0)
        .map(|e| (e.3, e.0.as_str()))
        .collect();
    pk.sort();
    let pk: Vec<&str> = pk.into_iter().map(|p| p.1).collect();
    if pk != t.desc.primary_key {
        return Err(conflict(format!(
            "primary key {pk:?}, expected {:?}",
            t.desc.primary_key
        )));
    }
    Ok(TableState::Matches)
}

/// Reads up to `limit` rows of `t` after `after` (primary-key order), filtered by room if given.
pub(crate) async fn select_page(
    conn: &mut SqliteConnection,
    t: &TableSql,
    room: Option<&RoomId>,
    after: Option<&[Val]>,
    limit: usize,
) -> Result<Vec<Vec<Val>>> {
    let mut query = q(t.select_sql(room.is_some(), after.is_some(), true));
    if let Some(room) = room {
        query = query.bind(room.as_str().to_string());
    }
    for v in after.into_iter().flatten() {
        query = codec::bind(query, v);
    }
    query = query.bind(i64::try_from(limit).unwrap_or(i64::MAX));
    let rows = query
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err(format!("reading table {}", t.desc.name)))?;
    rows.iter()
        .map(|r| codec::read_row(r, &t.desc).map_err(|e| stored_corrupt(t, &e)))
        .collect()
}

/// A stored value that does not fit its column.
pub(crate) fn stored_corrupt(t: &TableSql, detail: &str) -> Error {
    Error::corrupt(format!("stored rows of table {}", t.desc.name), detail)
}

/// Counts `t`'s rows (of `room` if given).
pub(crate) async fn count_rows(
    conn: &mut SqliteConnection,
    t: &TableSql,
    room: Option<&RoomId>,
) -> Result<u64> {
    let sql = match room {
        Some(_) => format!(
            "SELECT COUNT(*) FROM {} WHERE {} = ?",
            t.main(),
            t.room_col()
        ),
        None => format!("SELECT COUNT(*) FROM {}", t.main()),
    };
    let mut query = q(sql);
    if let Some(room) = room {
        query = query.bind(room.as_str().to_string());
    }
    let row = query
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err(format!("counting table {}", t.desc.name)))?;
    let n: i64 = row
        .try_get(0)
        .map_err(db_err(format!("counting table {}", t.desc.name)))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Upserts one row; a row whose key belongs to another room is [`Error::Conflict`].
pub(crate) async fn upsert_row(
    conn: &mut SqliteConnection,
    t: &TableSql,
    row: &[Val],
) -> Result<()> {
    let mut query = q(t.upsert.clone());
    for v in row {
        query = codec::bind(query, v);
    }
    let done = query
        .execute(&mut *conn)
        .await
        .map_err(db_err(format!("writing table {}", t.desc.name)))?;
    if done.rows_affected() == 0 {
        let key = t.key_text(&t.key_of(row))?;
        return Err(Error::conflict(format!(
            "row {key:?} of table {} exists in another room",
            t.desc.name
        )));
    }
    Ok(())
}

/// Upserts `rows` in multi-row statements; a row whose key belongs to another room is
/// [`Error::Conflict`] naming it.
pub(crate) async fn upsert_rows(
    conn: &mut SqliteConnection,
    t: &TableSql,
    rows: &[Vec<Val>],
) -> Result<()> {
    let per = rows_per_statement(t.cols.len());
    let full = t.upsert_sql_rows(per);
    for batch in rows.chunks(per) {
        let sql = if batch.len() == per {
            full.clone()
        } else {
            t.upsert_sql_rows(batch.len())
        };
        let mut query = q(sql);
        for row in batch {
            for v in row {
                query = codec::bind(query, v);
            }
        }
        let done = query
            .execute(&mut *conn)
            .await
            .map_err(db_err(format!("writing table {}", t.desc.name)))?;
        if done.rows_affected() < batch.len() as u64 {
            // Some key belongs to another room: name the first one (the error path only, so
            // row by row is fine; the caller's transaction rolls the batch back).
            for row in batch {
                upsert_row(conn, t, row).await?;
            }
            return Err(Error::conflict(format!(
                "a row of table {} exists in another room",
                t.desc.name
            )));
        }
    }
    Ok(())
}

/// Deletes one row of `room` by key.
pub(crate) async fn delete_row(
    conn: &mut SqliteConnection,
    t: &TableSql,
    key: &[Val],
    room: &RoomId,
) -> Result<()> {
    let mut query = q(t.delete_key_sql());
    for v in key {
        query = codec::bind(query, v);
    }
    query
        .bind(room.as_str().to_string())
        .execute(&mut *conn)
        .await
        .map_err(db_err(format!("deleting from table {}", t.desc.name)))?;
    Ok(())
}
