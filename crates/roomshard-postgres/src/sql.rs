//! SQL text built from descriptors, the error mapping, and the COPY-text fix-ups every shard
//! operation shares.
//!
//! Every identifier reaches SQL through [`Identifier::quoted`] or [`SchemaName::quoted`]
//! (validated on construction, so a quote can never appear inside); every value is bound — with
//! one exception, COPY, which takes no parameters: there the room id is written as a literal by
//! [`room_literal`], which accepts only a validated [`RoomId`] (`a-z 0-9 _ -`) and checks the
//! alphabet again at the boundary.

use roomshard_core::{Error, Identifier, LogicalType, Result, RoomId, SchemaName, TableDescriptor};
use sqlx::postgres::PgArguments;
use sqlx::{AssertSqlSafe, Postgres};

/// Maps an sqlx error to roomshard's kinds: unique violations are conflicts; serialization
/// failures, deadlocks, lock timeouts, shutdowns and I/O are retryable; the rest is an
/// unavailable backend.
pub(crate) fn db_err(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Error {
    let what = what.into();
    move |e| classify(&what, e)
}

/// [`db_err`] for a value in hand.
pub(crate) fn classify(what: &str, e: sqlx::Error) -> Error {
    if let Some(d) = e.as_database_error() {
        if d.is_unique_violation() {
            return Error::conflict(format!("{what}: {}", d.message()));
        }
        let code = d.code().map(|c| c.to_string()).unwrap_or_default();
        if code == crate::track::MOVED_SQLSTATE {
            return Error::unavailable(
                format!("postgres ({what}): the room lives in its own shard now"),
                true,
                e,
            );
        }
        if code == crate::track::CUTOVER_SQLSTATE {
            return Error::unavailable(
                format!("postgres ({what}): the room is in its read-only cutover"),
                true,
                e,
            );
        }
        // 40001 serialization_failure, 40P01 deadlock, 55P03 lock_not_available, 57P01
        // admin_shutdown, 57P03 cannot_connect_now, 53300 too_many_connections.
        let retryable = matches!(
            code.as_str(),
            "40001" | "40P01" | "55P03" | "57P01" | "57P03" | "53300"
        );
        return Error::unavailable(format!("postgres ({what})"), retryable, e);
    }
    let retryable = matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed
    );
    Error::unavailable(format!("postgres ({what})"), retryable, e)
}

/// A query over SQL text built in this module (identifiers quoted, values bound).
pub(crate) fn q(sql: String) -> sqlx::query::Query<'static, Postgres, PgArguments> {
    sqlx::query(AssertSqlSafe(sql))
}

/// `'<room>'`: a room id as an SQL string literal, for COPY statements (which take no bind
/// parameters). Only a validated [`RoomId`] gets here; its alphabet has no quote or backslash,
/// and this checks it again rather than trusting the type.
pub(crate) fn room_literal(room: &RoomId) -> Result<String> {
    let s = room.as_str();
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(Error::invalid(
            "room id",
            format!("{s:?} cannot be written as a literal"),
        ));
    }
    Ok(format!("'{s}'"))
}

/// The PostgreSQL type of a logical type: the one `db.sql` declares (bundle-format §4), which is
/// also how `information_schema.columns.data_type` spells it.
pub(crate) fn pg_type(ty: LogicalType) -> &'static str {
    ty.postgres_type()
}

/// Where a table lives: a schema, quoted. A dedicated shard's is `"room_<id>"` (from a
/// [`SchemaName`]), the shared tables' an [`Identifier`] (`"public"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ns {
    /// The schema's name as stored in the catalog (unquoted).
    pub(crate) name: String,
    /// The schema's name as SQL (quoted).
    pub(crate) quoted: String,
}

impl Ns {
    pub(crate) fn schema(name: &SchemaName) -> Self {
        Ns {
            name: name.as_unquoted().to_string(),
            quoted: name.quoted(),
        }
    }

    pub(crate) fn ident(name: &Identifier) -> Self {
        Ns {
            name: name.as_str().to_string(),
            quoted: name.quoted(),
        }
    }
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
        Ok(TableSql {
            desc: desc.clone(),
            ident,
            cols,
            pk,
            room,
        })
    }

    /// `"<schema>"."<table>"`.
    pub(crate) fn at(&self, ns: &Ns) -> String {
        format!("{}.{}", ns.quoted, self.ident.quoted())
    }

    /// `"c1", "c2", …`, optionally each prefixed `<alias>.`.
    pub(crate) fn col_list(&self, alias: Option<&str>) -> String {
        join(self.cols.iter().map(|c| match alias {
            Some(a) => format!("{a}.{}", c.quoted()),
            None => c.quoted(),
        }))
    }

    /// The primary-key columns, `"k1", "k2"`, optionally prefixed `<alias>.`.
    pub(crate) fn pk_list(&self, alias: Option<&str>) -> String {
        join(self.pk.iter().map(|&i| match alias {
            Some(a) => format!("{a}.{}", self.cols[i].quoted()),
            None => self.cols[i].quoted(),
        }))
    }

    /// The primary key as an ordering: text columns compared byte-wise (`COLLATE "C"`), as the
    /// contract's row order requires whatever the database's collation.
    pub(crate) fn order_by(&self, alias: Option<&str>) -> String {
        join(self.pk.iter().map(|&i| self.key_expr(i, alias)))
    }

    /// The primary key as a descending ordering (the last row of a batch first).
    pub(crate) fn order_by_desc(&self, alias: Option<&str>) -> String {
        join(
            self.pk
                .iter()
                .map(|&i| format!("{} DESC", self.key_expr(i, alias))),
        )
    }

    /// One key column as a comparable expression (`COLLATE "C"` for text).
    fn key_expr(&self, i: usize, alias: Option<&str>) -> String {
        let col = match alias {
            Some(a) => format!("{a}.{}", self.cols[i].quoted()),
            None => self.cols[i].quoted(),
        };
        if self.desc.columns[i].logical_type == LogicalType::Text {
            format!("{col} COLLATE \"C\"")
        } else {
            col
        }
    }

    /// `(k1, k2) > ($n::t1, $n+1::t2)`: rows after a cursor, parameters from `$first`.
    pub(crate) fn after_cursor(&self, alias: Option<&str>, first: usize) -> String {
        self.compare(&self.order_by(alias), ">", first)
    }

    /// `(k1, k2) <= ($n::t1, …)`: rows up to and including a bound.
    pub(crate) fn up_to(&self, alias: Option<&str>, first: usize) -> String {
        self.compare(&self.order_by(alias), "<=", first)
    }

    /// `(<left>) <op> ($first::t1, …)`: a key tuple compared with a bound of key parameters.
    pub(crate) fn compare(&self, left: &str, op: &str, first: usize) -> String {
        let right = join(
            self.pk
                .iter()
                .enumerate()
                .map(|(n, &i)| self.key_param(i, first + n)),
        );
        format!("({left}) {op} ({right})")
    }

    /// A change-log style key (`<alias>.key`, a `text[]` of the key values) as comparable
    /// expressions of the key's types, one per key column: `(a.key[1])::int8`,
    /// `(a.key[2])::text COLLATE "C"`.
    pub(crate) fn logged_key_exprs(&self, alias: &str) -> Vec<String> {
        self.pk
            .iter()
            .enumerate()
            .map(|(n, &i)| {
                let ty = self.desc.columns[i].logical_type;
                let cast = format!("({alias}.key[{}])::{}", n + 1, pg_type(ty));
                if ty == LogicalType::Text {
                    format!("{cast} COLLATE \"C\"")
                } else {
                    cast
                }
            })
            .collect()
    }

    /// The `n`-th key column's parameter `$param`, cast from text to its type.
    pub(crate) fn key_param_at(&self, n: usize, param: usize) -> String {
        self.key_param(self.pk[n], param)
    }

    /// A key parameter `$n`, cast from its text form to the column's type.
    fn key_param(&self, i: usize, n: usize) -> String {
        let ty = self.desc.columns[i].logical_type;
        if ty == LogicalType::Text {
            format!("${n}::text COLLATE \"C\"")
        } else {
            format!("${n}::{}", pg_type(ty))
        }
    }

    /// The primary-key columns as text (`"k"::text`), to read a cursor.
    pub(crate) fn pk_as_text(&self, alias: Option<&str>) -> String {
        join(self.pk.iter().map(|&i| match alias {
            Some(a) => format!("{a}.{}::text", self.cols[i].quoted()),
            None => format!("{}::text", self.cols[i].quoted()),
        }))
    }

    /// The room key column, quoted.
    pub(crate) fn room_col(&self) -> String {
        self.cols[self.room].quoted()
    }

    /// `CREATE TABLE "<schema>"."<table>" (…)` from the descriptor: types of bundle-format §4,
    /// `NOT NULL`, the primary key (text key columns byte-ordered, `COLLATE "C"`, so the index
    /// serves the contract's row order).
    pub(crate) fn create_sql(&self, ns: &Ns) -> String {
        let mut parts: Vec<String> = self
            .desc
            .columns
            .iter()
            .zip(&self.cols)
            .enumerate()
            .map(|(i, (c, id))| {
                let collate = if c.logical_type == LogicalType::Text && self.pk.contains(&i) {
                    " COLLATE \"C\""
                } else {
                    ""
                };
                let null = if c.nullable { "" } else { " NOT NULL" };
                format!("{} {}{collate}{null}", id.quoted(), pg_type(c.logical_type))
            })
            .collect();
        parts.push(format!("PRIMARY KEY ({})", self.pk_list(None)));
        format!("CREATE TABLE {} ({})", self.at(ns), parts.join(", "))
    }

    /// `SELECT <cols> FROM <table> [WHERE room = '<room>'] ORDER BY <pk>`, as COPY's query.
    pub(crate) fn copy_out_sql(&self, ns: &Ns, room: Option<&RoomId>) -> Result<String> {
        let filter = match room {
            Some(room) => format!(" WHERE {} = {}", self.room_col(), room_literal(room)?),
            None => String::new(),
        };
        Ok(format!(
            "COPY (SELECT {} FROM {}{filter} ORDER BY {}) TO STDOUT",
            self.col_list(None),
            self.at(ns),
            self.order_by(None)
        ))
    }

    /// `count(*)` of the room's rows (`$1` the room when filtered).
    pub(crate) fn count_sql(&self, ns: &Ns, filtered: bool) -> String {
        if filtered {
            format!(
                "SELECT count(*) FROM {} WHERE {} = $1",
                self.at(ns),
                self.room_col()
            )
        } else {
            format!("SELECT count(*) FROM {}", self.at(ns))
        }
    }

    /// `SET "c" = EXCLUDED."c", …` for every non-key column (`DO NOTHING` when all are keys).
    pub(crate) fn on_conflict_update(&self) -> String {
        let sets: Vec<String> = self
            .cols
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.pk.contains(i))
            .map(|(_, c)| format!("{} = EXCLUDED.{}", c.quoted(), c.quoted()))
            .collect();
        if sets.is_empty() {
            format!("ON CONFLICT ({}) DO NOTHING", self.pk_list(None))
        } else {
            format!(
                "ON CONFLICT ({}) DO UPDATE SET {}",
                self.pk_list(None),
                sets.join(", ")
            )
        }
    }

    /// `ROW(a."c1", …)::text`: a row's content, compared across two tables whose physical
    /// column order may differ.
    pub(crate) fn row_text(&self, alias: &str) -> String {
        format!("ROW({})::text", self.col_list(Some(alias)))
    }

    /// `a."k1" = b."k1" AND …`.
    pub(crate) fn pk_join(&self, a: &str, b: &str) -> String {
        self.pk
            .iter()
            .map(|&i| {
                let c = self.cols[i].quoted();
                format!("{a}.{c} = {b}.{c}")
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    }
}

/// `a, b, c`.
pub(crate) fn join(parts: impl Iterator<Item = String>) -> String {
    parts.collect::<Vec<_>>().join(", ")
}

/// Rewrites PostgreSQL's COPY text output into the codec's subset (bundle-format §4.1), in place:
/// PostgreSQL also escapes backspace, form feed and vertical tab (`\b`, `\f`, `\v`), which the
/// subset writes as the raw bytes. Everything else PostgreSQL writes is already in the subset
/// (`\\`, `\t`, `\n`, `\r`, `\N`).
///
/// Returns the number of rows (LF bytes) in `data`.
pub(crate) fn normalise_copy_out(data: &mut Vec<u8>) -> u64 {
    let rows = data.iter().filter(|b| **b == b'\n').count() as u64;
    if !data.contains(&b'\\') {
        return rows;
    }
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        if b == b'\\' && i + 1 < data.len() {
            let raw = match data[i + 1] {
                b'b' => Some(0x08),
                b'f' => Some(0x0c),
                b'v' => Some(0x0b),
                _ => None,
            };
            match raw {
                Some(r) => out.push(r),
                None => {
                    out.push(b'\\');
                    out.push(data[i + 1]);
                }
            }
            i += 2;
            continue;
        }
        out.push(b);
        i += 1;
    }
    *data = out;
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_only_escapes_become_raw_bytes_and_doubled_backslashes_stay() {
        let mut data = b"a\\bb\\\\b\\fc\\vd\\te\\N\n".to_vec();
        let rows = normalise_copy_out(&mut data);
        assert_eq!(rows, 1);
        assert_eq!(data, b"a\x08b\\\\b\x0cc\x0bd\\te\\N\n".to_vec());
    }

    #[test]
    fn room_literals_admit_only_the_room_alphabet() {
        let room = RoomId::new("general-2").expect("valid");
        assert_eq!(room_literal(&room).expect("literal"), "'general-2'");
    }
}
