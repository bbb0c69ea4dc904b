//! The exact non-data text of `db.sql` (docs/bundle-format.md §4), generated from table
//! descriptors. Writers emit it; the verifier compares what it reads against it, so a verified
//! `db.sql` holds no statement the manifest does not imply.

use crate::format::TableDescriptor;

/// Double-quotes an identifier. Descriptor identifiers are validated (`[a-z_][a-z0-9_]*`), so
/// quoting is for case and keyword safety, never for escaping.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The preamble: comment, settings and one `CREATE TABLE` per table, each a line ending in `\n`.
pub fn preamble_lines(room_id: &str, tables: &[&TableDescriptor]) -> Vec<String> {
    let mut lines = vec![
        format!("-- roomshard bundle v1: room {room_id}\n"),
        "SET client_encoding = 'UTF8';\n".to_string(),
        "SET standard_conforming_strings = on;\n".to_string(),
    ];
    for t in tables {
        lines.push(create_table_line(t));
    }
    lines
}

/// `CREATE TABLE "t" ("c" type [NOT NULL], …, PRIMARY KEY (…));\n`
pub fn create_table_line(t: &TableDescriptor) -> String {
    let mut cols: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            let not_null = if c.nullable { "" } else { " NOT NULL" };
            format!(
                "{} {}{}",
                quote_ident(&c.name),
                c.logical_type.postgres_type(),
                not_null
            )
        })
        .collect();
    let pk: Vec<String> = t.primary_key.iter().map(|c| quote_ident(c)).collect();
    cols.push(format!("PRIMARY KEY ({})", pk.join(", ")));
    format!(
        "CREATE TABLE {} ({});\n",
        quote_ident(&t.name),
        cols.join(", ")
    )
}

/// `COPY "t" ("c1", "c2") FROM stdin;\n`
pub fn copy_header_line(t: &TableDescriptor) -> String {
    let cols: Vec<String> = t.columns.iter().map(|c| quote_ident(&c.name)).collect();
    format!(
        "COPY {} ({}) FROM stdin;\n",
        quote_ident(&t.name),
        cols.join(", ")
    )
}
