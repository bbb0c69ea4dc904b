//! Restore: a dump's rows into a room, all or nothing, with id remapping.
//!
//! Everything happens in one `BEGIN IMMEDIATE` transaction on the target's connection:
//!
//! 1. every table the source gives is parsed row by row (never executed) into a TEMP staging
//!    table, with the room key set to the scope's room and media keys rewritten;
//! 2. for every id column, the staged values that collide with the target are found: with
//!    [`RemapPolicy::Keep`] the first one is [`Error::Conflict`]; with
//!    [`RemapPolicy::OnCollision`] each gets a new value (integers above the maximum of target
//!    and staged ids, a v4 uuid, `<old>-<n>` for text) recorded in a TEMP map table;
//! 3. only once every map is known (a column may reference a table staged after it) are the id
//!    columns and every column `references`-ing them rewritten from the maps;
//! 4. `INSERT … SELECT` moves the staged rows into the target tables; the TEMP tables are
//!    dropped and the transaction commits.
//!
//! Any error — or a dropped future — rolls the transaction back, TEMP tables included.

use crate::codec::{self, Val};
use crate::sql::{TableSql, db_err, q, row_placeholders, rows_per_statement};
use roomshard_core::{
    DumpSource, Error, IdMap, IdRemap, KeyRewrite, LogicalType, RemapPolicy, RestoreOutcome,
    Result, RoomId, Scope, TableCount,
};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqlitePool};

/// One id column's remap: `(old, new)` values.
struct ColumnMap {
    table: usize,
    column: usize,
    changes: Vec<(Val, Val)>,
    /// `"temp"."roomshard_map_<n>"`.
    map_table: String,
}

pub(crate) async fn restore(
    pool: &SqlitePool,
    scope: &Scope,
    tables: &[TableSql],
    source: &mut dyn DumpSource,
    remap: &IdRemap,
) -> Result<RestoreOutcome> {
    let room = scope.room();
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(db_err(format!("beginning restore into {scope}")))?;
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
        create_stage(&mut tx, t).await?;
        counts[index] = stage_rows(&mut tx, t, room, source, remap.media_keys.as_ref()).await?;
    }

    let mut maps: Vec<ColumnMap> = Vec::new();
    for (ti, t) in tables.iter().enumerate() {
        if !staged[ti] {
            continue;
        }
        for id_col in &t.desc.id_columns {
            let Some(ci) = t.desc.columns.iter().position(|c| &c.name == id_col) else {
                continue;
            };
            let collisions = collisions(&mut tx, t, ci).await?;
            if collisions.is_empty() {
                continue;
            }
            if remap.ids == RemapPolicy::Keep {
                let mut v = String::new();
                let _ = codec::push_field(&mut v, t.desc.columns[ci].logical_type, &collisions[0]);
                return Err(Error::conflict(format!(
                    "{}.{} = {v} of the dump already exists in {scope} ({} colliding ids; \
                     restore with RemapPolicy::OnCollision to give them new values)",
                    t.desc.name,
                    id_col,
                    collisions.len()
                )));
            }
            let changes = new_values(&mut tx, t, ci, collisions).await?;
            let map_table = format!("\"temp\".\"roomshard_map_{}\"", maps.len());
            write_map(&mut tx, t, ci, &map_table, &changes).await?;
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
                let sql = format!(
                    "UPDATE {stage} SET {col} = (SELECT \"roomshard_new\" FROM {map} \
                     WHERE \"roomshard_old\" = {bare}.{col}) \
                     WHERE {col} IN (SELECT \"roomshard_old\" FROM {map})",
                    stage = t.stage(),
                    bare = t.stage_bare(),
                    map = m.map_table,
                );
                q(sql)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err(format!("rewriting {}.{}", t.desc.name, c.name)))?;
            }
        }
    }

    for (ti, t) in tables.iter().enumerate() {
        if !staged[ti] {
            continue;
        }
        let cols = t.col_list();
        q(format!(
            "INSERT INTO {} ({cols}) SELECT {cols} FROM {} ORDER BY \"roomshard_row\"",
            t.main(),
            t.stage()
        ))
        .execute(&mut *tx)
        .await
        .map_err(db_err(format!(
            "inserting the rows of table {} into {scope} (a primary key collides)",
            t.desc.name
        )))?;
        q(format!("DROP TABLE {}", t.stage()))
            .execute(&mut *tx)
            .await
            .map_err(db_err("dropping a staging table"))?;
    }
    for m in &maps {
        q(format!("DROP TABLE {}", m.map_table))
            .execute(&mut *tx)
            .await
            .map_err(db_err("dropping a map table"))?;
    }
    tx.commit()
        .await
        .map_err(db_err(format!("committing restore into {scope}")))?;

    let mut id_maps = Vec::new();
    for m in maps {
        let t = &tables[m.table];
        let ty = t.desc.columns[m.column].logical_type;
        let text = |v: &Val| {
            let mut s = String::new();
            let _ = codec::push_field(&mut s, ty, v);
            s
        };
        id_maps.push(IdMap {
            table: t.desc.name.clone(),
            column: t.desc.columns[m.column].name.clone(),
            changes: m.changes.iter().map(|(o, n)| (text(o), text(n))).collect(),
        });
    }
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

async fn create_stage(conn: &mut SqliteConnection, t: &TableSql) -> Result<()> {
    let cols = t
        .desc
        .columns
        .iter()
        .zip(&t.cols)
        .map(|(c, id)| format!("{} {}", id.quoted(), codec::declared_type(c.logical_type)))
        .collect::<Vec<_>>()
        .join(", ");
    q(format!(
        "CREATE TEMP TABLE {} (\"roomshard_row\" INTEGER PRIMARY KEY, {cols})",
        t.stage_bare()
    ))
    .execute(&mut *conn)
    .await
    .map_err(db_err(format!("staging table {}", t.desc.name)))?;
    Ok(())
}

/// Parses the current table's rows from `source` into its staging table; returns the count.
async fn stage_rows(
    conn: &mut SqliteConnection,
    t: &TableSql,
    room: &RoomId,
    source: &mut dyn DumpSource,
    media: Option<&KeyRewrite>,
) -> Result<u64> {
    // Multi-row INSERTs: one statement per statement-sized batch, not per row (each statement
    // is a round trip to sqlx's SQLite worker thread).
    let per = rows_per_statement(t.cols.len() + 1);
    let insert = |n: usize| {
        format!(
            "INSERT INTO {} (\"roomshard_row\", {}) VALUES {}",
            t.stage(),
            t.col_list(),
            row_placeholders(t.cols.len() + 1, n)
        )
    };
    let full_insert = insert(per);
    let mut pending: Vec<(u64, Vec<Val>)> = Vec::with_capacity(per);
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
    let mut rows = 0u64;
    let mut partial: Vec<u8> = Vec::new();
    while let Some(chunk) = source.next_rows().await? {
        partial.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(nl) = partial[start..].iter().position(|b| *b == b'\n') {
            let line = &partial[start..start + nl];
            start += nl + 1;
            rows += 1;
            let mut vals = codec::parse_line(&t.desc, line).map_err(|e| corrupt(rows, e))?;
            vals[t.room] = Val::Text(room.as_str().to_string());
            if let Some(rewrite) = media {
                for &ci in &media_cols {
                    if let Val::Text(key) = &vals[ci] {
                        let new = rewrite.apply(key)?;
                        vals[ci] = Val::Text(new.as_str().to_string());
                    }
                }
            }
            pending.push((rows, vals));
            if pending.len() == per {
                flush_stage(conn, t, &full_insert, &mut pending).await?;
            }
        }
        partial.drain(..start);
    }
    if !pending.is_empty() {
        let sql = insert(pending.len());
        flush_stage(conn, t, &sql, &mut pending).await?;
    }
    if !partial.is_empty() {
        return Err(corrupt(
            rows + 1,
            "the last row is not terminated by a newline".to_string(),
        ));
    }
    Ok(rows)
}

/// Inserts the pending staged rows with `sql` (a multi-row INSERT for exactly that many rows).
async fn flush_stage(
    conn: &mut SqliteConnection,
    t: &TableSql,
    sql: &str,
    pending: &mut Vec<(u64, Vec<Val>)>,
) -> Result<()> {
    let mut query = q(sql.to_string());
    for (row, vals) in pending.iter() {
        query = query.bind(i64::try_from(*row).unwrap_or(i64::MAX));
        for v in vals {
            query = codec::bind(query, v);
        }
    }
    query
        .execute(&mut *conn)
        .await
        .map_err(db_err(format!("staging table {}", t.desc.name)))?;
    pending.clear();
    Ok(())
}

/// Distinct staged values of column `ci` that already exist in the target table.
async fn collisions(conn: &mut SqliteConnection, t: &TableSql, ci: usize) -> Result<Vec<Val>> {
    let col = t.cols[ci].quoted();
    let sql = format!(
        "SELECT DISTINCT s.{col} FROM {} AS s WHERE s.{col} IS NOT NULL AND EXISTS \
         (SELECT 1 FROM {} AS d WHERE d.{col} = s.{col}) ORDER BY s.{col}",
        t.stage(),
        t.main()
    );
    let rows = q(sql)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err(format!("checking ids of {}", t.desc.name)))?;
    let ty = t.desc.columns[ci].logical_type;
    rows.iter()
        .map(|r| {
            codec::read_column(r, 0, ty)
                .map_err(|e| Error::corrupt(format!("table {}", t.desc.name), e))
        })
        .collect()
}

/// New values for colliding ids, per the contract: integers above the maximum of the target's
/// and the dump's ids, random v4 uuids, `<old>-<n>` for text.
async fn new_values(
    conn: &mut SqliteConnection,
    t: &TableSql,
    ci: usize,
    collisions: Vec<Val>,
) -> Result<Vec<(Val, Val)>> {
    let col = t.cols[ci].quoted();
    let c = &t.desc.columns[ci];
    let mut out = Vec::with_capacity(collisions.len());
    match c.logical_type {
        LogicalType::Int8 | LogicalType::Int4 => {
            let row = q(format!(
                "SELECT MAX(m) FROM (SELECT MAX({col}) AS m FROM {} UNION ALL \
                 SELECT MAX({col}) FROM {})",
                t.main(),
                t.stage()
            ))
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err(format!("reading the largest id of {}", t.desc.name)))?;
            let max: Option<i64> = row
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
                out.push((old, Val::Int(next)));
            }
        }
        LogicalType::Uuid => {
            for old in collisions {
                out.push((old, Val::Text(uuid::Uuid::new_v4().to_string())));
            }
        }
        LogicalType::Text => {
            let exists_sql = format!(
                "SELECT EXISTS (SELECT 1 FROM {main} WHERE {col} = ?1) \
                 OR EXISTS (SELECT 1 FROM {stage} WHERE {col} = ?1)",
                main = t.main(),
                stage = t.stage()
            );
            let mut taken = std::collections::HashSet::new();
            for old in collisions {
                let Val::Text(base) = &old else {
                    return Err(Error::corrupt(
                        format!("table {}", t.desc.name),
                        format!("text id column {} holds a non-text value", c.name),
                    ));
                };
                let mut n = 1u64;
                let new = loop {
                    let candidate = format!("{base}-{n}");
                    n += 1;
                    if taken.contains(&candidate) {
                        continue;
                    }
                    let row = q(exists_sql.clone())
                        .bind(candidate.clone())
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(db_err(format!("allocating an id of {}", t.desc.name)))?;
                    let used: i64 = row
                        .try_get(0)
                        .map_err(db_err(format!("allocating an id of {}", t.desc.name)))?;
                    if used == 0 {
                        break candidate;
                    }
                };
                taken.insert(new.clone());
                out.push((old, Val::Text(new)));
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

async fn write_map(
    conn: &mut SqliteConnection,
    t: &TableSql,
    ci: usize,
    map_table: &str,
    changes: &[(Val, Val)],
) -> Result<()> {
    let ty = codec::declared_type(t.desc.columns[ci].logical_type);
    q(format!(
        "CREATE TEMP TABLE {} (\"roomshard_old\" {ty} PRIMARY KEY, \"roomshard_new\" {ty})",
        map_table.trim_start_matches("\"temp\".")
    ))
    .execute(&mut *conn)
    .await
    .map_err(db_err("creating a map table"))?;
    let insert =
        format!("INSERT INTO {map_table} (\"roomshard_old\", \"roomshard_new\") VALUES (?, ?)");
    for (old, new) in changes {
        let query = codec::bind(codec::bind(q(insert.clone()), old), new);
        query
            .execute(&mut *conn)
            .await
            .map_err(db_err("writing a map table"))?;
    }
    Ok(())
}
