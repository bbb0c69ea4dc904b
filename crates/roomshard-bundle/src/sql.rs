//! Writes `db.sql` (docs/bundle-format.md §4): the preamble the verifier expects, then one COPY
//! block per table, rows in PostgreSQL COPY text format.
//!
//! All non-data text comes from `roomshard_verify::sql`, the same functions the verifier checks
//! against, so a `db.sql` written here passes the skeleton check by construction.

use std::io::Write;

use roomshard_verify::copy::{self, END_LINE as COPY_END_LINE, NULL as COPY_NULL, push_text};
use roomshard_verify::format::{LogicalType, TableDescriptor, validate_room_id, validate_tables};
use roomshard_verify::sql::{copy_header_line, preamble_lines};

use crate::error::BundleError;

/// One field of a COPY row. The variant must match the column's logical type, so a host cannot
/// silently write, say, text into a `bigint` column that `psql` would later refuse.
#[derive(Clone, Debug, PartialEq)]
pub enum CopyValue {
    /// SQL NULL (only in nullable columns).
    Null,
    /// `text`. Must not contain NUL (PostgreSQL text cannot hold it).
    Text(String),
    /// `bigint`.
    Int8(i64),
    /// `integer`.
    Int4(i32),
    /// `boolean`, written `t`/`f`.
    Bool(bool),
    /// `double precision`, written in shortest round-trip form (`NaN`, `Infinity`, `-Infinity`).
    Float8(f64),
    /// `timestamp with time zone` as `YYYY-MM-DD HH:MM:SS[.ffffff]+00` (UTC, 1–6 fraction digits).
    Timestamptz(String),
    /// `bytea`, written as `\\x<hex>`.
    Bytea(Vec<u8>),
    /// `jsonb`: a JSON document's text (checked to parse).
    Jsonb(String),
    /// `uuid` in the canonical 8-4-4-4-12 hex form (written lower case).
    Uuid(String),
}

impl CopyValue {
    /// The logical type this value belongs to (`None` for NULL, which fits any nullable column).
    pub fn logical_type(&self) -> Option<LogicalType> {
        Some(match self {
            CopyValue::Null => return None,
            CopyValue::Text(_) => LogicalType::Text,
            CopyValue::Int8(_) => LogicalType::Int8,
            CopyValue::Int4(_) => LogicalType::Int4,
            CopyValue::Bool(_) => LogicalType::Bool,
            CopyValue::Float8(_) => LogicalType::Float8,
            CopyValue::Timestamptz(_) => LogicalType::Timestamptz,
            CopyValue::Bytea(_) => LogicalType::Bytea,
            CopyValue::Jsonb(_) => LogicalType::Jsonb,
            CopyValue::Uuid(_) => LogicalType::Uuid,
        })
    }

    /// Appends the value's COPY text form to `out`, or says why the value is not valid for its
    /// type.
    fn push_to(&self, out: &mut String) -> Result<(), String> {
        match self {
            CopyValue::Null => out.push_str(COPY_NULL),
            CopyValue::Text(s) => {
                if s.contains('\0') {
                    return Err("text contains a NUL character".to_string());
                }
                push_text(out, s);
            }
            CopyValue::Int8(v) => out.push_str(&v.to_string()),
            CopyValue::Int4(v) => out.push_str(&v.to_string()),
            CopyValue::Bool(v) => out.push(if *v { 't' } else { 'f' }),
            CopyValue::Float8(v) => out.push_str(&copy::format_float8(*v)),
            CopyValue::Timestamptz(s) => {
                if !copy::is_timestamptz(s) {
                    return Err(format!(
                        "timestamptz {s:?} is not YYYY-MM-DD HH:MM:SS[.ffffff]+00"
                    ));
                }
                out.push_str(s);
            }
            CopyValue::Bytea(bytes) => {
                push_text(out, &copy::bytea_text(bytes));
            }
            CopyValue::Jsonb(s) => {
                if s.contains('\0') {
                    return Err("jsonb contains a NUL character".to_string());
                }
                serde_json::from_str::<serde::de::IgnoredAny>(s)
                    .map_err(|e| format!("jsonb is not a JSON document: {e}"))?;
                push_text(out, s);
            }
            CopyValue::Uuid(s) => {
                if !copy::is_uuid(s) {
                    return Err(format!("uuid {s:?} is not 8-4-4-4-12 hex digits"));
                }
                out.push_str(&s.to_ascii_lowercase());
            }
        }
        Ok(())
    }
}

/// Appends one row's COPY text form to `out` — the fields separated by tabs, then `\n` — exactly
/// as [`DbSqlWriter::write_row`] writes it (for hosts that feed rows to a
/// `ShardStore::restore` themselves). Values are not checked against a table descriptor, only
/// against their own type; [`BundleError::Invalid`] names the first bad field.
pub fn encode_copy_row(values: &[CopyValue], out: &mut String) -> Result<(), BundleError> {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        value
            .push_to(out)
            .map_err(|why| BundleError::invalid(format!("COPY row field {i}: {why}")))?;
    }
    out.push('\n');
    Ok(())
}

/// Streams `db.sql` for one room: the preamble on [`DbSqlWriter::new`], then tables in
/// descriptor order ([`DbSqlWriter::begin_table`]) and their rows ([`DbSqlWriter::write_row`]).
///
/// Values are checked against the descriptors as they are written (field count, type,
/// nullability), so a mistake surfaces at the row that made it and not at import time. Tables
/// skipped or never begun still get an empty COPY block, so every table appears in `db.sql` and
/// its row count is 0.
pub struct DbSqlWriter<W: Write> {
    out: W,
    tables: Vec<TableDescriptor>,
    row_counts: Vec<u64>,
    /// The table whose COPY block is open.
    current: Option<usize>,
    /// The next table index that may be begun (earlier ones are written or skipped).
    next: usize,
    line: String,
    bytes_written: u64,
    poisoned: bool,
}

impl<W: Write> std::fmt::Debug for DbSqlWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSqlWriter")
            .field(
                "tables",
                &self.tables.iter().map(|t| &t.name).collect::<Vec<_>>(),
            )
            .field("row_counts", &self.row_counts)
            .field("current", &self.current)
            .field("bytes_written", &self.bytes_written)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl<W: Write> DbSqlWriter<W> {
    /// Validates the room id and descriptors and writes the preamble (comment, settings, one
    /// `CREATE TABLE` per table).
    pub fn new(out: W, room_id: &str, tables: &[TableDescriptor]) -> Result<Self, BundleError> {
        validate_room_id(room_id).map_err(|e| BundleError::invalid(e.detail))?;
        validate_tables(tables).map_err(|e| BundleError::invalid(e.detail))?;
        let refs: Vec<&TableDescriptor> = tables.iter().collect();
        let mut writer = DbSqlWriter {
            out,
            tables: tables.to_vec(),
            row_counts: vec![0; tables.len()],
            current: None,
            next: 0,
            line: String::new(),
            bytes_written: 0,
            poisoned: false,
        };
        for line in preamble_lines(room_id, &refs) {
            writer.write_text(&line)?;
        }
        Ok(writer)
    }

    fn write_text(&mut self, text: &str) -> Result<(), BundleError> {
        if let Err(e) = self.out.write_all(text.as_bytes()) {
            self.poisoned = true;
            return Err(e.into());
        }
        self.bytes_written += text.len() as u64;
        Ok(())
    }

    fn check_usable(&self) -> Result<(), BundleError> {
        if self.poisoned {
            Err(BundleError::Poisoned)
        } else {
            Ok(())
        }
    }

    fn write_block_header(&mut self, index: usize) -> Result<(), BundleError> {
        let header = copy_header_line(&self.tables[index]);
        self.write_text(&header)
    }

    fn close_current(&mut self) -> Result<(), BundleError> {
        if self.current.take().is_some() {
            self.write_text(COPY_END_LINE)?;
        }
        Ok(())
    }

    /// Opens table `name`'s COPY block, closing the previous one. Tables come in descriptor
    /// order, each at most once; tables passed over get empty blocks. Naming an unknown table,
    /// or one already written or passed over, is [`BundleError::Invalid`].
    pub fn begin_table(&mut self, name: &str) -> Result<(), BundleError> {
        self.check_usable()?;
        let index = self
            .tables
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| BundleError::invalid(format!("db.sql: no table {name:?} declared")))?;
        if index < self.next {
            return Err(BundleError::invalid(format!(
                "db.sql: table {name:?} already written or passed over; tables must come in \
                 descriptor order, each once"
            )));
        }
        self.close_current()?;
        for skipped in self.next..index {
            self.write_block_header(skipped)?;
            self.write_text(COPY_END_LINE)?;
        }
        self.write_block_header(index)?;
        self.current = Some(index);
        self.next = index + 1;
        Ok(())
    }

    /// Writes one row of the open table. The number of values must equal the table's columns,
    /// each value's type must match its column, and NULL only goes into nullable columns;
    /// otherwise [`BundleError::Invalid`] and nothing is written.
    pub fn write_row(&mut self, values: &[CopyValue]) -> Result<(), BundleError> {
        self.check_usable()?;
        let index = self.current.ok_or_else(|| {
            BundleError::invalid("db.sql: write_row before begin_table".to_string())
        })?;
        let table = &self.tables[index];
        if values.len() != table.columns.len() {
            return Err(BundleError::invalid(format!(
                "db.sql: table {:?} has {} columns, row has {} values",
                table.name,
                table.columns.len(),
                values.len()
            )));
        }
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        for (i, (value, column)) in values.iter().zip(&table.columns).enumerate() {
            match value.logical_type() {
                None if !column.nullable => {
                    return Err(BundleError::invalid(format!(
                        "db.sql: NULL in non-nullable column {}.{}",
                        table.name, column.name
                    )));
                }
                Some(t) if t != column.logical_type => {
                    return Err(BundleError::invalid(format!(
                        "db.sql: column {}.{} is {:?}, value is {:?}",
                        table.name, column.name, column.logical_type, t
                    )));
                }
                _ => {}
            }
            if i > 0 {
                line.push('\t');
            }
            value.push_to(&mut line).map_err(|why| {
                BundleError::invalid(format!("db.sql: {}.{}: {why}", table.name, column.name))
            })?;
        }
        line.push('\n');
        let result = self.write_text(&line);
        self.line = line;
        result?;
        self.row_counts[index] += 1;
        Ok(())
    }

    /// Writes rows of the open table that are already in COPY text format (a
    /// [`ShardStore::dump`](https://docs.rs/roomshard-core) chunk): whole lines, each ending in
    /// `\n`, each with exactly one raw tab per column separator. Returns the rows written.
    ///
    /// Rows from a store are trusted for their values (the store produced them from typed
    /// columns) but not for their framing: a chunk that ends mid-line, has the wrong number of
    /// fields, or contains the end-of-data marker `\.` is [`BundleError::Invalid`] and nothing
    /// of it is written.
    pub fn write_copy_text(&mut self, chunk: &[u8]) -> Result<u64, BundleError> {
        self.check_usable()?;
        let index = self.current.ok_or_else(|| {
            BundleError::invalid("db.sql: write_copy_text before begin_table".to_string())
        })?;
        let table = &self.tables[index];
        if chunk.is_empty() {
            return Ok(0);
        }
        if chunk.last() != Some(&b'\n') {
            return Err(BundleError::invalid(format!(
                "db.sql: a chunk of table {:?} ends in the middle of a row",
                table.name
            )));
        }
        let mut rows = 0u64;
        for line in chunk[..chunk.len() - 1].split(|&b| b == b'\n') {
            rows += 1;
            let tabs = line.iter().filter(|&&b| b == b'\t').count();
            if tabs + 1 != table.columns.len() || line == b"\\." || line.contains(&b'\r') {
                return Err(BundleError::invalid(format!(
                    "db.sql: row {} of a chunk of table {:?} has {} fields, the table {} columns",
                    rows,
                    table.name,
                    tabs + 1,
                    table.columns.len()
                )));
            }
        }
        if let Err(e) = self.out.write_all(chunk) {
            self.poisoned = true;
            return Err(e.into());
        }
        self.bytes_written += chunk.len() as u64;
        self.row_counts[index] += rows;
        Ok(rows)
    }

    /// Bytes written so far (the `size` to give [`crate::BundleWriter::add_db_sql`]).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Closes the open block, writes empty blocks for tables never begun, flushes, and returns
    /// the output and each table's row count in descriptor order (what
    /// [`crate::BundleWriter::finish`] needs).
    pub fn finish(mut self) -> Result<(W, Vec<u64>), BundleError> {
        self.check_usable()?;
        self.close_current()?;
        for index in self.next..self.tables.len() {
            self.write_block_header(index)?;
            self.write_text(COPY_END_LINE)?;
        }
        self.next = self.tables.len();
        self.out.flush()?;
        Ok((self.out, self.row_counts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_copy_row_escapes_and_refuses_like_write_row() {
        let mut out = String::new();
        encode_copy_row(
            &[
                CopyValue::Int8(7),
                CopyValue::Text("a\tb\\c\nd".into()),
                CopyValue::Null,
                CopyValue::Bool(true),
                CopyValue::Bytea(vec![0xde, 0xad]),
            ],
            &mut out,
        )
        .expect("valid row");
        assert_eq!(out, "7\ta\\tb\\\\c\\nd\t\\N\tt\t\\\\xdead\n");
        let mut bad = String::new();
        assert!(encode_copy_row(&[CopyValue::Text("nul\0".into())], &mut bad).is_err());
    }
}
