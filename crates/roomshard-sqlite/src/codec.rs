//! The codec between PostgreSQL COPY text rows (`docs/bundle-format.md` §4) and SQLite values.
//!
//! Storage mapping (SQLite is dynamically typed; the declared types only set affinities):
//!
//! | logical     | declared | stored as                                                     |
//! |-------------|----------|---------------------------------------------------------------|
//! | text        | TEXT     | TEXT                                                          |
//! | int8, int4  | INTEGER  | INTEGER                                                       |
//! | bool        | INTEGER  | INTEGER 0 / 1                                                 |
//! | float8      | REAL     | REAL; NaN as TEXT `NaN`, -0.0 as TEXT `-Zero` (see below)     |
//! | timestamptz | TEXT     | TEXT in the canonical COPY form                               |
//! | bytea       | BLOB     | BLOB                                                          |
//! | jsonb       | TEXT     | TEXT (the document as given)                                  |
//! | uuid        | TEXT     | TEXT, lower case 8-4-4-4-12                                   |
//!
//! SQLite turns a bound NaN into NULL, and stores an integral REAL (including -0.0) as an
//! integer, so -0.0 would read back as 0.0. Both would break byte-identical round trips with
//! PostgreSQL, so these two values are stored as non-numeric TEXT, which REAL affinity leaves
//! alone. ±Infinity are ordinary REALs.
//!
//! Output is exactly what `roomshard-bundle`'s `DbSqlWriter` writes for the same values (the
//! integration tests compare them byte for byte).

use roomshard_core::{LogicalType, TableDescriptor};
use roomshard_verify::copy::{
    self, NULL as COPY_NULL, format_float8, is_timestamptz, is_uuid, parse_bytea, parse_float8,
    parse_int, push_text,
};
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteRow};
use sqlx::{Row, TypeInfo, ValueRef};
use std::cmp::Ordering;

/// The stored text of a NaN float8.
const NAN_TEXT: &str = "NaN";
/// The stored text of a negative-zero float8.
const NEG_ZERO_TEXT: &str = "-Zero";

/// One logical value, in the form it is bound to and read from SQLite.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Val {
    /// SQL NULL.
    Null,
    /// int8, int4, bool (0/1).
    Int(i64),
    /// float8 (any value, including NaN and -0.0; the binder maps the specials).
    Real(f64),
    /// text, timestamptz, jsonb, uuid.
    Text(String),
    /// bytea.
    Blob(Vec<u8>),
}

/// A query being built, to bind [`Val`]s to.
pub(crate) type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments>;

/// Binds one value, mapping the float specials SQLite cannot store as REAL.
pub(crate) fn bind<'q>(q: Query<'q>, v: &Val) -> Query<'q> {
    match v {
        Val::Null => q.bind(None::<i64>),
        Val::Int(i) => q.bind(*i),
        Val::Real(f) if f.is_nan() => q.bind(NAN_TEXT),
        Val::Real(f) if *f == 0.0 && f.is_sign_negative() => q.bind(NEG_ZERO_TEXT),
        Val::Real(f) => q.bind(*f),
        Val::Text(s) => q.bind(s.clone()),
        Val::Blob(b) => q.bind(b.clone()),
    }
}

/// SQLite's declared column type for a logical type.
pub(crate) fn declared_type(t: LogicalType) -> &'static str {
    match t {
        LogicalType::Int8 | LogicalType::Int4 | LogicalType::Bool => "INTEGER",
        LogicalType::Float8 => "REAL",
        LogicalType::Bytea => "BLOB",
        LogicalType::Text | LogicalType::Timestamptz | LogicalType::Jsonb | LogicalType::Uuid => {
            "TEXT"
        }
    }
}

/// SQLite's affinity of a declared type (rules of §3.1 of SQLite's datatype documentation), to
/// compare an existing table with a descriptor without insisting on the exact spelling.
pub(crate) fn affinity(declared: &str) -> &'static str {
    let d = declared.to_ascii_uppercase();
    if d.contains("INT") {
        "INTEGER"
    } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        "TEXT"
    } else if d.contains("BLOB") || d.is_empty() {
        "BLOB"
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        "REAL"
    } else {
        "NUMERIC"
    }
}

/// Reads column `i` of `row` as a value of logical type `ty`; `Err` says why the stored value
/// does not fit (someone wrote it outside roomshard).
pub(crate) fn read_column(row: &SqliteRow, i: usize, ty: LogicalType) -> Result<Val, String> {
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(Val::Null);
    }
    let class = raw.type_info().name().to_string();
    let err = |e: sqlx::Error| e.to_string();
    match (ty, class.as_str()) {
        (LogicalType::Int8 | LogicalType::Int4 | LogicalType::Bool, "INTEGER") => {
            Ok(Val::Int(row.try_get_unchecked::<i64, _>(i).map_err(err)?))
        }
        (LogicalType::Float8, "REAL") => {
            Ok(Val::Real(row.try_get_unchecked::<f64, _>(i).map_err(err)?))
        }
        // An integral REAL read back through a non-REAL path, or written by the host as integer.
        (LogicalType::Float8, "INTEGER") => Ok(Val::Real(
            row.try_get_unchecked::<i64, _>(i).map_err(err)? as f64,
        )),
        (LogicalType::Float8, "TEXT") => {
            let s = row.try_get_unchecked::<String, _>(i).map_err(err)?;
            match s.as_str() {
                NAN_TEXT => Ok(Val::Real(f64::NAN)),
                NEG_ZERO_TEXT => Ok(Val::Real(-0.0)),
                _ => Err(format!("float8 column holds text {s:?}")),
            }
        }
        (
            LogicalType::Text | LogicalType::Timestamptz | LogicalType::Jsonb | LogicalType::Uuid,
            "TEXT",
        ) => Ok(Val::Text(
            row.try_get_unchecked::<String, _>(i).map_err(err)?,
        )),
        (LogicalType::Bytea, "BLOB") => Ok(Val::Blob(
            row.try_get_unchecked::<Vec<u8>, _>(i).map_err(err)?,
        )),
        (ty, class) => Err(format!("{ty:?} column holds an SQLite {class} value")),
    }
}

/// Reads the first `columns.len()` columns of `row`.
pub(crate) fn read_row(row: &SqliteRow, table: &TableDescriptor) -> Result<Vec<Val>, String> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            read_column(row, i, c.logical_type).map_err(|e| format!("column {}: {e}", c.name))
        })
        .collect()
}

/// Appends `v`'s COPY text form as a value of `ty`, exactly as `DbSqlWriter` writes it.
pub(crate) fn push_field(out: &mut String, ty: LogicalType, v: &Val) -> Result<(), String> {
    match (ty, v) {
        (_, Val::Null) => out.push_str(COPY_NULL),
        (LogicalType::Int8, Val::Int(i)) => out.push_str(&i.to_string()),
        (LogicalType::Int4, Val::Int(i)) => {
            let i = i32::try_from(*i).map_err(|_| format!("int4 value {i} out of range"))?;
            out.push_str(&i.to_string());
        }
        (LogicalType::Bool, Val::Int(0)) => out.push('f'),
        (LogicalType::Bool, Val::Int(1)) => out.push('t'),
        (LogicalType::Float8, Val::Real(f)) => out.push_str(&format_float8(*f)),
        // Stored values are checked as restore checks them, so a host's own writes that do not
        // fit the logical type surface here instead of in a db.sql no reader accepts.
        (LogicalType::Text, Val::Text(s)) if !s.contains('\0') => push_text(out, s),
        (LogicalType::Jsonb, Val::Text(s)) if !s.contains('\0') => {
            serde_json::from_str::<serde::de::IgnoredAny>(s)
                .map_err(|e| format!("jsonb {s:?} is not a JSON document: {e}"))?;
            push_text(out, s);
        }
        (LogicalType::Timestamptz, Val::Text(s)) if is_timestamptz(s) => out.push_str(s),
        (LogicalType::Uuid, Val::Text(s)) if is_uuid(s) => out.push_str(&s.to_ascii_lowercase()),
        (LogicalType::Bytea, Val::Blob(b)) => push_text(out, &copy::bytea_text(b)),
        (ty, v) => return Err(format!("value {v:?} does not fit a {ty:?} column")),
    }
    Ok(())
}

/// Appends a whole row (tab-separated, `\n`-terminated).
pub(crate) fn push_row(
    out: &mut String,
    table: &TableDescriptor,
    row: &[Val],
) -> Result<(), String> {
    for (i, (c, v)) in table.columns.iter().zip(row).enumerate() {
        if i > 0 {
            out.push('\t');
        }
        push_field(out, c.logical_type, v).map_err(|e| format!("column {}: {e}", c.name))?;
    }
    out.push('\n');
    Ok(())
}

/// Parses one escaped COPY field (as a checkpoint cursor stores it) as a value of `ty`, by the
/// codec's rules.
pub(crate) fn parse_field(ty: LogicalType, nullable: bool, raw: &[u8]) -> Result<Val, String> {
    let mut values = copy::parse_row(raw).map_err(|f| f.describe().to_string())?;
    match (values.pop(), values.is_empty()) {
        (Some(value), true) => parse_value(ty, nullable, value),
        _ => Err("a field holds a tab".into()),
    }
}

/// Types one unescaped COPY value (`None` = NULL) as a value of `ty`, accepting exactly the
/// codec's canonical spellings.
fn parse_value(ty: LogicalType, nullable: bool, value: Option<String>) -> Result<Val, String> {
    let Some(s) = value else {
        return if nullable {
            Ok(Val::Null)
        } else {
            Err("NULL in a non-nullable column".into())
        };
    };
    match ty {
        LogicalType::Text => Ok(Val::Text(s)),
        LogicalType::Int8 => parse_int(&s)
            .map(Val::Int)
            .ok_or_else(|| format!("{s:?} is not an int8")),
        LogicalType::Int4 => parse_int(&s)
            .filter(|v| i32::try_from(*v).is_ok())
            .map(Val::Int)
            .ok_or_else(|| format!("{s:?} is not an int4")),
        LogicalType::Bool => match s.as_str() {
            "t" => Ok(Val::Int(1)),
            "f" => Ok(Val::Int(0)),
            _ => Err(format!("{s:?} is not a bool (t or f)")),
        },
        LogicalType::Float8 => parse_float8(&s)
            .map(Val::Real)
            .ok_or_else(|| format!("{s:?} is not a float8")),
        LogicalType::Timestamptz => {
            if is_timestamptz(&s) {
                Ok(Val::Text(s))
            } else {
                Err(format!(
                    "{s:?} is not a timestamptz (YYYY-MM-DD HH:MM:SS[.ffffff]+00)"
                ))
            }
        }
        LogicalType::Bytea => parse_bytea(&s)
            .map(Val::Blob)
            .ok_or_else(|| "bytea is not \\x followed by pairs of hex digits".to_string()),
        LogicalType::Jsonb => {
            serde_json::from_str::<serde::de::IgnoredAny>(&s)
                .map_err(|e| format!("jsonb is not a JSON document: {e}"))?;
            Ok(Val::Text(s))
        }
        LogicalType::Uuid => {
            if is_uuid(&s) {
                Ok(Val::Text(s.to_ascii_lowercase()))
            } else {
                Err(format!("{s:?} is not a uuid (8-4-4-4-12 hex digits)"))
            }
        }
    }
}

/// Parses one COPY line (without its `\n`) into the table's values, by the codec's rules
/// (`roomshard_verify::copy`): the same row split the verifier and PostgreSQL make.
pub(crate) fn parse_line(table: &TableDescriptor, line: &[u8]) -> Result<Vec<Val>, String> {
    let fields = copy::parse_row(line).map_err(|f| f.describe().to_string())?;
    if fields.len() != table.columns.len() {
        return Err(format!(
            "{} fields, the table has {} columns",
            fields.len(),
            table.columns.len()
        ));
    }
    table
        .columns
        .iter()
        .zip(fields)
        .map(|(c, f)| {
            parse_value(c.logical_type, c.nullable, f)
                .map_err(|e| format!("column {}: {e}", c.name))
        })
        .collect()
}

/// SQLite's sort order of two stored values (`ORDER BY` with BINARY collation): NULL, then
/// numbers, then text, then blobs; text and blobs compare byte-wise. Used to merge source and
/// target in primary-key order, so it must agree with the `ORDER BY` of the reads.
pub(crate) fn cmp_val(a: &Val, b: &Val) -> Ordering {
    // NaN and -0.0 are stored as text, so they sort where SQLite puts that text.
    let stored = |v: &Val| match v {
        Val::Real(f) if f.is_nan() => Val::Text(NAN_TEXT.to_string()),
        Val::Real(f) if *f == 0.0 && f.is_sign_negative() => Val::Text(NEG_ZERO_TEXT.to_string()),
        other => other.clone(),
    };
    if matches!(a, Val::Real(_)) || matches!(b, Val::Real(_)) {
        return cmp_stored(&stored(a), &stored(b));
    }
    cmp_stored(a, b)
}

fn cmp_stored(a: &Val, b: &Val) -> Ordering {
    fn class(v: &Val) -> u8 {
        match v {
            Val::Null => 0,
            Val::Int(_) | Val::Real(_) => 1,
            Val::Text(_) => 2,
            Val::Blob(_) => 3,
        }
    }
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => x.cmp(y),
        (Val::Int(x), Val::Real(y)) => (*x as f64).total_cmp(y),
        (Val::Real(x), Val::Int(y)) => x.total_cmp(&(*y as f64)),
        (Val::Real(x), Val::Real(y)) => x.total_cmp(y),
        (Val::Text(x), Val::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Val::Blob(x), Val::Blob(y)) => x.cmp(y),
        _ => class(a).cmp(&class(b)),
    }
}

/// Compares two primary-key tuples.
pub(crate) fn cmp_key(a: &[Val], b: &[Val]) -> Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| cmp_val(x, y))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_by_the_codec_rules() {
        assert_eq!(
            parse_field(LogicalType::Text, false, b"a\\tb\\\\c\\nd\\re").expect("ok"),
            Val::Text("a\tb\\c\nd\re".into())
        );
        // PostgreSQL reads octal and hex escapes; bundles never hold them, so neither does this.
        assert!(parse_field(LogicalType::Text, false, b"\\101\\x42").is_err());
        assert!(parse_field(LogicalType::Text, false, b"abc\\").is_err());
        assert!(parse_field(LogicalType::Text, false, b"a\rb").is_err());
        assert_eq!(
            parse_field(LogicalType::Bytea, false, b"\\\\x00ff").expect("ok"),
            Val::Blob(vec![0, 255])
        );
        assert!(parse_field(LogicalType::Int4, false, b"2147483648").is_err());
        assert!(parse_field(LogicalType::Float8, false, b"inf").is_err());
        assert!(parse_field(LogicalType::Int8, false, b"\\N").is_err());
        assert!(parse_field(LogicalType::Timestamptz, false, b"2026-02-31 00:00:00+00").is_err());
        assert_eq!(
            parse_field(
                LogicalType::Uuid,
                true,
                b"123E4567-E89B-12D3-A456-426614174000"
            )
            .expect("ok"),
            Val::Text("123e4567-e89b-12d3-a456-426614174000".into())
        );
    }

    #[test]
    fn floats_round_trip() {
        for v in [
            0.1,
            -0.0,
            1e300,
            5e-324,
            f64::MAX,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            let text = format_float8(v);
            let back = parse_field(LogicalType::Float8, false, text.as_bytes()).expect("parses");
            assert_eq!(back, Val::Real(v), "{text}");
        }
    }
}
