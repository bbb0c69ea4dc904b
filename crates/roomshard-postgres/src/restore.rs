//! Restore: a dump's rows into a room through `COPY … FROM STDIN`, all or nothing, with id
//! remapping.
//!
//! Everything happens in one transaction on one [`Session`]:
//!
//! 1. every table the source gives is streamed into a temporary staging table with `COPY …
//!    FROM STDIN`. Each row is checked by the codec's rules first (`parse_row`, the field count,
//!    each value's canonical spelling, NULL only where allowed), so PostgreSQL never sees a row
//!    the verifier and the SQLite store would refuse; only the room key column and media columns
//!    are rewritten — every other field goes through as the bytes it was;
//! 2. under an advisory lock on the target namespace (restores into the same tables take turns
//!    from here to the commit), for every id column, the staged values that collide with the target are found: with
//!    [`RemapPolicy::Keep`] that is [`Error::Conflict`]; with [`RemapPolicy::OnCollision`] each
//!    gets a new value (integers above the largest of target and staged ids, a v4 uuid,
//!    `<old>-<n>` for text), recorded in a temporary map table;
//! 3. once every map is known (a column may reference a table staged after it), id columns and
//!    the columns `references`-ing them are rewritten from the maps (`UPDATE … FROM`);
//! 4. `INSERT … SELECT` moves the staged rows into the target tables, and the transaction
//!    commits (the temporary tables are `ON COMMIT DROP`).
//!
//! Any error, or a dropped future, ends the session without a commit: its connection is closed,
//! so the server rolls everything back and no pooled connection is left mid-COPY.

use crate::session::Session;
use crate::sql::{Ns, TableSql, db_err, join, pg_type, q};
use roomshard_core::{
    DumpSource, Error, IdMap, IdRemap, KeyRewrite, LogicalType, RemapPolicy, RestoreOutcome,
    Result, Scope, TableCount,
};
use roomshard_verify::copy;
use sqlx::Row;

/// Bytes of rows buffered before they are sent to the server as one COPY message.
const SEND_BYTES: usize = 64 * 1024;

/// One id column's remap: `(old, new)` values in their text form.
struct ColumnMap {
    table: usize,
    column: usize,
    changes: Vec<(String, String)>,
    /// `pg_temp."roomshard_map_<n>"`.
    map_table: String,
}

/// `pg_temp."roomshard_stage_<n>"`: table `n`'s staging table (numbered, not named after the
/// table, so a long table name cannot be truncated into another's).
fn stage(index: usize) -> String {
    format!("pg_temp.\"roomshard_stage_{index}\"")
}

pub(crate) async fn restore(
    mut s: Session,
    scope: &Scope,
    ns: &Ns,
    tables: &[TableSql],
    source: &mut dyn DumpSource,
    remap: &IdRemap,
) -> Result<RestoreOutcome> {
    let mut staged = vec![false; tables.len()];
    let mut counts = vec![0u64; tables.len()];
    while let Some(name) = source.next_table().await? {
        let Some(index) = tables.iter().position(|t| t.desc.name == name) else {
            return Err(Error::invalid(
                "dump",
                format!("table {name:?} is not in the room schema"),
            ));
        };
        if staged[index] {
            return Err(Error::invalid(
                "dump",
                format!("table {name:?} is given twice"),
            ));
        }
        staged[index] = true;
        let t = &tables[index];
        let columns = t
            .desc
            .columns
            .iter()
            .zip(&t.cols)
            .map(|(c, id)| format!("{} {}", id.quoted(), pg_type(c.logical_type)))
            .collect::<Vec<_>>()
            .join(", ");
        q(format!(
            "CREATE TEMP TABLE \"roomshard_stage_{index}\" ({columns}) ON COMMIT DROP"
        ))
        .execute(s.conn())
        .await
        .map_err(db_err(format!("staging table {}", t.desc.name)))?;
        counts[index] =
            stage_rows(&mut s, t, index, scope, source, remap.media_keys.as_ref()).await?;
    }

    // From here to the commit, restores into the same tables take turns: two imports choosing
    // new ids at once would both pick the largest + 1. (Staging above runs in parallel.)
    crate::shard::advisory_lock(s.conn(), &format!("restore:{}", ns.name)).await?;
    let mut maps: Vec<ColumnMap> = Vec::new();
    for (ti, t) in tables.iter().enumerate() {
        if !staged[ti] {
            continue;
        }
        for id_col in &t.desc.id_columns {
            let Some(ci) = t.desc.columns.iter().position(|c| &c.name == id_col) else {
                continue;
            };
            let collisions = collisions(&mut s, ns, t, ti, ci).await?;
            if collisions.is_empty() {
                continue;
            }
            if remap.ids == RemapPolicy::Keep {
                return Err(Error::conflict(format!(
                    "{}.{} = {} of the dump already exists in {scope} ({} colliding ids; \
                     restore with RemapPolicy::OnCollision to give them new values)",
                    t.desc.name,
                    id_col,
                    escaped(&collisions[0]),
                    collisions.len()
                )));
            }
            let changes = new_values(&mut s, ns, t, ti, ci, collisions).await?;
            let map_table = format!("pg_temp.\"roomshard_map_{}\"", maps.len());
            write_map(&mut s, t, ci, maps.len(), &changes).await?;
            maps.push(ColumnMap {
                table: ti,
                column: ci,
                changes,
                map_table,
            });
        }
    }

    // Rewrite ids and every reference to them, now that all maps are known.
    for (ti, t) in tables.iter().enumerate() {
        if !staged[ti] {
            continue;
        }
        for (ci, c) in t.desc.columns.iter().enumerate() {
            let mut sources: Vec<&ColumnMap> = maps
                .iter()
                .filter(|m| m.table == ti && m.column == ci)
                .collect();
            if let Some(r) = &c.references {
                sources.extend(maps.iter().filter(|m| {
                    tables[m.table].desc.name == r.table
                        && tables[m.table].desc.columns[m.column].name == r.column
                        && !(m.table == ti && m.column == ci)
                }));
            }
            for m in sources {
                let col = t.cols[ci].quoted();
                q(format!(
                    "UPDATE {stage} AS st SET {col} = m.\"roomshard_new\" FROM {map} AS m \
                     WHERE st.{col} = m.\"roomshard_old\"",
                    stage = stage(ti),
                    map = m.map_table,
                ))
                .execute(s.conn())
                .await
                .map_err(db_err(format!("rewriting {}.{}", t.desc.name, c.name)))?;
            }
        }
    }

    for (ti, t) in tables.iter().enumerate() {
        if !staged[ti] {
            continue;
        }
        let cols = t.col_list(None);
        q(format!(
            "INSERT INTO {} ({cols}) SELECT {cols} FROM {}",
            t.at(ns),
            stage(ti)
        ))
        .execute(s.conn())
        .await
        .map_err(db_err(format!(
            "inserting the rows of table {} into {scope} (a primary key collides)",
            t.desc.name
        )))?;
    }
    s.commit(&format!("restore into {scope}")).await?;

    let id_maps = maps
        .into_iter()
        .map(|m| {
            let t = &tables[m.table];
            IdMap {
                table: t.desc.name.clone(),
                column: t.desc.columns[m.column].name.clone(),
                changes: m
                    .changes
                    .iter()
                    .map(|(o, n)| (escaped(o), escaped(n)))
                    .collect(),
            }
        })
        .collect();
    Ok(RestoreOutcome {
        tables: tables
            .iter()
            .zip(counts)
            .map(|(t, rows)| TableCount {
                table: t.desc.name.clone(),
                rows,
            })
            .collect(),
        id_maps,
    })
}

/// A value's COPY text form.
fn escaped(value: &str) -> String {
    let mut s = String::new();
    copy::push_text(&mut s, value);
    s
}

/// Checks one dump row by the codec's rules and returns it as it goes to the server: the room
/// key set to the target room and media keys rewritten; every other field the bytes it was.
fn check_row(
    t: &TableSql,
    line: &[u8],
    room: &str,
    media_cols: &[usize],
    media: Option<&KeyRewrite>,
    out: &mut Vec<u8>,
) -> std::result::Result<(), String> {
    let values = copy::parse_row(line).map_err(|f| f.describe().to_string())?;
    if values.len() != t.desc.columns.len() {
        return Err(format!(
            "{} fields, the table has {} columns",
            values.len(),
            t.desc.columns.len()
        ));
    }
    for (c, v) in t.desc.columns.iter().zip(&values) {
        match v {
            None if !c.nullable => {
                return Err(format!("column {}: NULL in a non-nullable column", c.name));
            }
            None => {}
            Some(v) => copy::check_value(c.logical_type, v)
                .map_err(|e| format!("column {}: {e}", c.name))?,
        }
    }
    for (i, raw) in line.split(|b| *b == b'\t').enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        if i == t.room {
            out.extend_from_slice(room.as_bytes());
            continue;
        }
        if let (Some(rewrite), true, Some(Some(key))) =
            (media, media_cols.contains(&i), values.get(i))
        {
            let new = rewrite.apply(key).map_err(|e| e.to_string())?;
            let mut text = String::new();
            copy::push_text(&mut text, new.as_str());
            out.extend_from_slice(text.as_bytes());
            continue;
        }
        out.extend_from_slice(raw);
    }
    out.push(b'\n');
    Ok(())
}

/// Streams the current table's rows from `source` into staging table `index`; returns the count.
async fn stage_rows(
    s: &mut Session,
    t: &TableSql,
    index: usize,
    scope: &Scope,
    source: &mut dyn DumpSource,
    media: Option<&KeyRewrite>,
) -> Result<u64> {
    let room = scope.room().as_str().to_string();
    let media_cols: Vec<usize> = t
        .desc
        .media_columns
        .iter()
        .filter_map(|m| t.desc.columns.iter().position(|c| &c.name == m))
        .collect();
    let corrupt = |row: u64, detail: String| {
        Error::corrupt(
            format!("dump table {}", t.desc.name),
            format!("row {row}: {detail}"),
        )
    };
    let statement = format!(
        "COPY {} ({}) FROM STDIN",
        stage(index),
        join(t.cols.iter().map(|c| c.quoted()))
    );
    let mut copy_in = s
        .conn()
        .copy_in_raw(&statement)
        .await
        .map_err(db_err(format!("starting COPY into table {}", t.desc.name)))?;
    let mut rows = 0u64;
    let mut partial: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::with_capacity(SEND_BYTES + 4096);
    let mut failure: Option<Error> = None;
    'chunks: loop {
        let chunk = match source.next_rows().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        partial.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(nl) = partial[start..].iter().position(|b| *b == b'\n') {
            let line = &partial[start..start + nl];
            start += nl + 1;
            rows += 1;
            if let Err(e) = check_row(t, line, &room, &media_cols, media, &mut out) {
                failure = Some(corrupt(rows, e));
                break 'chunks;
            }
            if out.len() >= SEND_BYTES {
                if let Err(e) = copy_in.send(std::mem::take(&mut out)).await {
                    failure = Some(copy_error(t, e));
                    break 'chunks;
                }
                out.reserve(SEND_BYTES + 4096);
            }
        }
        partial.drain(..start);
    }
    if failure.is_none() && !partial.is_empty() {
        failure = Some(corrupt(
            rows + 1,
            "the last row is not terminated by a newline".to_string(),
        ));
    }
    if failure.is_none()
        && !out.is_empty()
        && let Err(e) = copy_in.send(out).await
    {
        failure = Some(copy_error(t, e));
    }
    if let Some(e) = failure {
        // End the COPY on the wire; the session is dropped unfinished by the caller's `?`, so
        // the connection is closed either way.
        let _ = copy_in.abort("roomshard restore refused the dump").await;
        return Err(e);
    }
    copy_in.finish().await.map_err(|e| copy_error(t, e))?;
    Ok(rows)
}

/// A COPY failure: a value PostgreSQL refused (SQLSTATE class 22, data exception) is the dump's
/// fault, [`Error::Corrupt`] with the server's words (they name the line); anything else is the
/// backend's.
fn copy_error(t: &TableSql, e: sqlx::Error) -> Error {
    if let Some(d) = e.as_database_error()
        && d.code().is_some_and(|c| c.starts_with("22"))
    {
        return Error::corrupt(
            format!("dump table {}", t.desc.name),
            d.message().to_string(),
        );
    }
    db_err(format!("COPY into table {}", t.desc.name))(e)
}

/// Distinct staged values of column `ci` that already exist in the target table, in the
/// column's order, as text.
async fn collisions(
    s: &mut Session,
    ns: &Ns,
    t: &TableSql,
    ti: usize,
    ci: usize,
) -> Result<Vec<String>> {
    let col = t.cols[ci].quoted();
    let order = if t.desc.columns[ci].logical_type == LogicalType::Text {
        format!("v.{col} COLLATE \"C\"")
    } else {
        format!("v.{col}")
    };
    let rows = q(format!(
        "SELECT v.{col}::text FROM (SELECT DISTINCT st.{col} FROM {stage} AS st \
         WHERE st.{col} IS NOT NULL AND EXISTS (SELECT 1 FROM {target} AS d \
         WHERE d.{col} = st.{col})) AS v ORDER BY {order}",
        stage = stage(ti),
        target = t.at(ns),
    ))
    .fetch_all(s.conn())
    .await
    .map_err(db_err(format!("checking ids of {}", t.desc.name)))?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<std::result::Result<_, _>>()
        .map_err(db_err(format!("checking ids of {}", t.desc.name)))
}

/// New values for colliding ids, per the contract: integers above the largest of the target's
/// and the dump's ids, random v4 uuids, `<old>-<n>` for text.
async fn new_values(
    s: &mut Session,
    ns: &Ns,
    t: &TableSql,
    ti: usize,
    ci: usize,
    collisions: Vec<String>,
) -> Result<Vec<(String, String)>> {
    let col = t.cols[ci].quoted();
    let c = &t.desc.columns[ci];
    let mut out = Vec::with_capacity(collisions.len());
    match c.logical_type {
        LogicalType::Int8 | LogicalType::Int4 => {
            let max: Option<i64> = q(format!(
                "SELECT GREATEST((SELECT max({col}) FROM {target}), \
                 (SELECT max({col}) FROM {stage}))::bigint",
                target = t.at(ns),
                stage = stage(ti)
            ))
            .fetch_one(s.conn())
            .await
            .map_err(db_err(format!("reading the largest id of {}", t.desc.name)))?
            .try_get(0)
            .map_err(db_err(format!("reading the largest id of {}", t.desc.name)))?;
            let limit = if c.logical_type == LogicalType::Int4 {
                i64::from(i32::MAX)
            } else {
                i64::MAX
            };
            let mut next = max.unwrap_or(0);
            for old in collisions {
                next = next.checked_add(1).filter(|n| *n <= limit).ok_or_else(|| {
                    Error::conflict(format!(
                        "{}.{}: no id left above the largest existing one",
                        t.desc.name, c.name
                    ))
                })?;
                out.push((old, next.to_string()));
            }
        }
        LogicalType::Uuid => {
            for old in collisions {
                out.push((old, uuid::Uuid::new_v4().to_string()));
            }
        }
        LogicalType::Text => {
            let exists_sql = format!(
                "SELECT EXISTS (SELECT 1 FROM {target} WHERE {col} = $1) \
                 OR EXISTS (SELECT 1 FROM {stage} WHERE {col} = $1)",
                target = t.at(ns),
                stage = stage(ti)
            );
            let mut taken = std::collections::HashSet::new();
            for old in collisions {
                let mut n = 1u64;
                let new = loop {
                    let candidate = format!("{old}-{n}");
                    n += 1;
                    if taken.contains(&candidate) {
                        continue;
                    }
                    let used: bool = q(exists_sql.clone())
                        .bind(candidate.clone())
                        .fetch_one(s.conn())
                        .await
                        .map_err(db_err(format!("allocating an id of {}", t.desc.name)))?
                        .try_get(0)
                        .map_err(db_err(format!("allocating an id of {}", t.desc.name)))?;
                    if !used {
                        break candidate;
                    }
                };
                taken.insert(new.clone());
                out.push((old, new));
            }
        }
        other => {
            return Err(Error::invalid(
                format!("table {}", t.desc.name),
                format!(
                    "id column {} has type {other:?}, which cannot be remapped",
                    c.name
                ),
            ));
        }
    }
    Ok(out)
}

/// Creates map table `n` for column `ci` and fills it with `changes` in one statement.
async fn write_map(
    s: &mut Session,
    t: &TableSql,
    ci: usize,
    n: usize,
    changes: &[(String, String)],
) -> Result<()> {
    let ty = pg_type(t.desc.columns[ci].logical_type);
    q(format!(
        "CREATE TEMP TABLE \"roomshard_map_{n}\" (\"roomshard_old\" {ty} PRIMARY KEY, \
         \"roomshard_new\" {ty} NOT NULL) ON COMMIT DROP"
    ))
    .execute(s.conn())
    .await
    .map_err(db_err("creating a map table"))?;
    let (old, new): (Vec<String>, Vec<String>) = changes.iter().cloned().unzip();
    q(format!(
        "INSERT INTO pg_temp.\"roomshard_map_{n}\" (\"roomshard_old\", \"roomshard_new\") \
         SELECT o::{ty}, v::{ty} FROM UNNEST($1::text[], $2::text[]) AS u(o, v)"
    ))
    .bind(old)
    .bind(new)
    .execute(s.conn())
    .await
    .map_err(db_err("writing a map table"))?;
    Ok(())
}
