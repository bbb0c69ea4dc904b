//! How a host declares its room-scoped tables.
//!
//! roomshard knows no host table by name. The host (Mesh, or any other server) describes each
//! table that holds per-room rows — its columns, logical types, primary key, the column holding the
//! room id, the id columns an importer may remap and the columns holding media keys — and passes
//! that [`RoomSchema`] to every shard operation. Providers create shards, copy, dump, restore and
//! compare rows from these descriptors alone; the importer builds tables from them instead of
//! running SQL from a bundle. The descriptor types are the bundle format's own
//! ([`TableDescriptor`], [`ColumnDescriptor`], …, re-exported here), so what a host declares is
//! exactly what a manifest records.

use crate::error::{Error, Result, invalid_input};
use roomshard_verify::format::{
    ColumnDescriptor, ColumnRef, LogicalType, TableDescriptor, validate_tables,
};
use serde::{Deserialize, Serialize};

/// Table names starting with this are reserved for roomshard's own per-shard tables (for example
/// the change-event outbox), which [`ShardStore::ensure_shard`](crate::ShardStore::ensure_shard)
/// creates next to the host's tables.
pub const RESERVED_TABLE_PREFIX: &str = "roomshard_";

/// Longest schema version string, in bytes.
pub const MAX_SCHEMA_VERSION_LEN: usize = 128;

/// A host's room-scoped tables at one schema version; validated on construction.
///
/// Beyond the bundle format's descriptor rules (identifiers, unique names, named columns exist,
/// references resolve), a `RoomSchema` guarantees what providers rely on:
///
/// - at least one table, none named with the [`RESERVED_TABLE_PREFIX`];
/// - a non-empty `version` of printable ASCII (at most [`MAX_SCHEMA_VERSION_LEN`] bytes);
/// - each table's `room_key_column` is a non-nullable `text` column (room ids are text);
/// - primary-key columns are non-nullable;
/// - `media_columns` are `text` (they hold [`ObjectKey`](crate::ObjectKey)s);
/// - `id_columns` are `int8`, `int4`, `uuid` or `text` (types an importer can allocate anew);
/// - a `references` points at an id column of its target table with the same type, so a remapped
///   id can be rewritten wherever it is referenced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RoomSchemaFields")]
pub struct RoomSchema {
    version: String,
    tables: Vec<TableDescriptor>,
}

/// The unvalidated shape `RoomSchema` deserialises through.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomSchemaFields {
    version: String,
    tables: Vec<TableDescriptor>,
}

impl TryFrom<RoomSchemaFields> for RoomSchema {
    type Error = Error;
    fn try_from(f: RoomSchemaFields) -> Result<Self> {
        RoomSchema::new(f.version, f.tables)
    }
}

impl RoomSchema {
    /// Validates and builds a schema. [`Error::Invalid`] names the table and column at fault.
    pub fn new(version: impl Into<String>, tables: Vec<TableDescriptor>) -> Result<Self> {
        let version = version.into();
        if version.is_empty()
            || version.len() > MAX_SCHEMA_VERSION_LEN
            || !version.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Error::invalid(
                "schema version",
                format!(
                    "{version:?}: use 1-{MAX_SCHEMA_VERSION_LEN} printable ASCII characters, no spaces"
                ),
            ));
        }
        if tables.is_empty() {
            return Err(Error::invalid(
                "room schema",
                "declares no tables; a room with no rows has nothing to shard or export",
            ));
        }
        validate_tables(&tables).map_err(|e| invalid_input("room schema", e))?;
        for t in &tables {
            check_table(t, &tables)?;
        }
        Ok(RoomSchema { version, tables })
    }

    /// The host's schema version (free text, e.g. `mesh-1`); recorded in bundles.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The tables, in declaration order (which is also dump and bundle order).
    pub fn tables(&self) -> &[TableDescriptor] {
        &self.tables
    }

    /// The table named `name`.
    pub fn table(&self, name: &str) -> Option<&TableDescriptor> {
        self.tables.iter().find(|t| t.name == name)
    }
}

fn check_table(t: &TableDescriptor, all: &[TableDescriptor]) -> Result<()> {
    let bad = |detail: String| Error::invalid(format!("table {}", t.name), detail);
    if t.name.starts_with(RESERVED_TABLE_PREFIX) {
        return Err(bad(format!(
            "names starting with {RESERVED_TABLE_PREFIX:?} are reserved for roomshard's own tables"
        )));
    }
    // validate_tables has checked that every named column exists.
    let column = |name: &str| t.columns.iter().find(|c| c.name == name);
    if let Some(c) = column(&t.room_key_column)
        && (c.logical_type != LogicalType::Text || c.nullable)
    {
        return Err(bad(format!(
            "room key column {:?} must be non-nullable text",
            c.name
        )));
    }
    for name in &t.primary_key {
        if column(name).is_some_and(|c| c.nullable) {
            return Err(bad(format!(
                "primary-key column {name:?} must be non-nullable"
            )));
        }
    }
    for name in &t.media_columns {
        if column(name).is_some_and(|c| c.logical_type != LogicalType::Text) {
            return Err(bad(format!(
                "media column {name:?} must be text (it holds object keys)"
            )));
        }
    }
    for name in &t.id_columns {
        if let Some(c) = column(name)
            && !is_id_type(c.logical_type)
        {
            return Err(bad(format!(
                "id column {name:?} must be int8, int4, uuid or text, not {:?}",
                c.logical_type
            )));
        }
    }
    for c in &t.columns {
        let Some(r) = &c.references else { continue };
        let target = all.iter().find(|o| o.name == r.table);
        let target_column = target.and_then(|o| o.columns.iter().find(|oc| oc.name == r.column));
        let is_id = target.is_some_and(|o| o.id_columns.contains(&r.column));
        match target_column {
            Some(tc) if is_id && tc.logical_type == c.logical_type => {}
            Some(_) if !is_id => {
                return Err(bad(format!(
                    "column {:?} references {}.{}, which is not one of that table's id_columns",
                    c.name, r.table, r.column
                )));
            }
            Some(tc) => {
                return Err(bad(format!(
                    "column {:?} is {:?} but references {}.{} of type {:?}",
                    c.name, c.logical_type, r.table, r.column, tc.logical_type
                )));
            }
            // validate_tables has already refused references to missing columns.
            None => {
                return Err(bad(format!(
                    "column {:?} references missing column {}.{}",
                    c.name, r.table, r.column
                )));
            }
        }
    }
    Ok(())
}

fn is_id_type(t: LogicalType) -> bool {
    matches!(
        t,
        LogicalType::Int8 | LogicalType::Int4 | LogicalType::Uuid | LogicalType::Text
    )
}

/// A small builder for [`TableDescriptor`]s, so a host declares a table in the order one reads
/// it. Column modifiers (`not_null`, `primary_key`, …) apply to the column added last.
///
/// ```
/// use roomshard_core::{LogicalType, RoomSchema, Table};
///
/// let messages = Table::new("messages")
///     .column("id", LogicalType::Int8).primary_key().id()
///     .column("room_id", LogicalType::Text).room_key()
///     .column("reply_to", LogicalType::Int8).references("messages", "id")
///     .column("attachment", LogicalType::Text).media()
///     .column("body", LogicalType::Text)
///     .build()?;
/// let schema = RoomSchema::new("mesh-1", vec![messages])?;
/// assert_eq!(schema.tables()[0].primary_key, ["id"]);
/// # Ok::<(), roomshard_core::Error>(())
/// ```
#[derive(Clone, Debug)]
#[must_use = "a Table does nothing until `build` is called"]
pub struct Table {
    descriptor: TableDescriptor,
    misuse: Option<&'static str>,
}

impl Table {
    /// Starts a table named `name` (validated later, by [`RoomSchema::new`]).
    pub fn new(name: impl Into<String>) -> Self {
        Table {
            descriptor: TableDescriptor {
                name: name.into(),
                columns: Vec::new(),
                primary_key: Vec::new(),
                room_key_column: String::new(),
                id_columns: Vec::new(),
                media_columns: Vec::new(),
            },
            misuse: None,
        }
    }

    /// Adds a nullable column.
    pub fn column(mut self, name: impl Into<String>, logical_type: LogicalType) -> Self {
        self.descriptor.columns.push(ColumnDescriptor {
            name: name.into(),
            logical_type,
            nullable: true,
            references: None,
        });
        self
    }

    /// Makes the last column `NOT NULL`.
    pub fn not_null(self) -> Self {
        self.modify("not_null", |_, c| c.nullable = false)
    }

    /// Adds the last column to the primary key (and makes it `NOT NULL`).
    pub fn primary_key(self) -> Self {
        self.modify("primary_key", |t, c| {
            c.nullable = false;
            t.primary_key.push(c.name.clone());
        })
    }

    /// Makes the last column the room key column (and `NOT NULL`).
    pub fn room_key(self) -> Self {
        self.modify("room_key", |t, c| {
            c.nullable = false;
            t.room_key_column = c.name.clone();
        })
    }

    /// Marks the last column as an id column an importer may remap.
    pub fn id(self) -> Self {
        self.modify("id", |t, c| t.id_columns.push(c.name.clone()))
    }

    /// Marks the last column as holding media object keys.
    pub fn media(self) -> Self {
        self.modify("media", |t, c| t.media_columns.push(c.name.clone()))
    }

    /// Declares that the last column holds ids of `table.column`.
    pub fn references(self, table: impl Into<String>, column: impl Into<String>) -> Self {
        let target = ColumnRef {
            table: table.into(),
            column: column.into(),
        };
        self.modify("references", move |_, c| c.references = Some(target))
    }

    /// The descriptor. Fails only if a modifier came before any column or no room key was set;
    /// everything else is checked by [`RoomSchema::new`], which sees all tables.
    pub fn build(self) -> Result<TableDescriptor> {
        let what = || format!("table {}", self.descriptor.name);
        if let Some(modifier) = self.misuse {
            return Err(Error::invalid(
                what(),
                format!("`{modifier}` was called before any `column`"),
            ));
        }
        if self.descriptor.room_key_column.is_empty() {
            return Err(Error::invalid(
                what(),
                "no room key column: mark the column holding the room id with `room_key()`",
            ));
        }
        Ok(self.descriptor)
    }

    fn modify(
        mut self,
        modifier: &'static str,
        f: impl FnOnce(&mut TableDescriptor, &mut ColumnDescriptor),
    ) -> Self {
        match self.descriptor.columns.pop() {
            Some(mut c) => {
                f(&mut self.descriptor, &mut c);
                self.descriptor.columns.push(c);
            }
            None => {
                self.misuse.get_or_insert(modifier);
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages() -> Table {
        Table::new("messages")
            .column("id", LogicalType::Int8)
            .primary_key()
            .id()
            .column("room_id", LogicalType::Text)
            .room_key()
            .column("reply_to", LogicalType::Int8)
            .references("messages", "id")
            .column("attachment", LogicalType::Text)
            .media()
    }

    fn invalid_detail(r: Result<RoomSchema>) -> String {
        match r {
            Err(Error::Invalid { what, detail }) => format!("{what}: {detail}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn builder_produces_the_descriptor_a_manifest_records() {
        let t = messages().build().expect("valid");
        assert_eq!(t.primary_key, ["id"]);
        assert_eq!(t.room_key_column, "room_id");
        assert_eq!(t.id_columns, ["id"]);
        assert_eq!(t.media_columns, ["attachment"]);
        assert!(!t.columns[0].nullable && !t.columns[1].nullable && t.columns[2].nullable);
        let schema = RoomSchema::new("mesh-1", vec![t]).expect("valid");
        assert_eq!(schema.version(), "mesh-1");
        assert!(schema.table("messages").is_some());
    }

    #[test]
    fn schema_round_trips_through_json_and_deserialising_validates() {
        let schema =
            RoomSchema::new("mesh-1", vec![messages().build().expect("valid")]).expect("valid");
        let json = serde_json::to_string(&schema).expect("serialises");
        let back: RoomSchema = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, schema);
        let hostile = json.replace("\"messages\"", "\"Messages; DROP\"");
        assert!(serde_json::from_str::<RoomSchema>(&hostile).is_err());
    }

    #[test]
    fn builder_refuses_modifier_before_column() {
        let err = Table::new("t").not_null().build().expect_err("misuse");
        assert!(err.to_string().contains("not_null"), "{err}");
        let err = Table::new("t")
            .column("id", LogicalType::Int8)
            .build()
            .expect_err("no room key");
        assert!(err.to_string().contains("room_key"), "{err}");
    }

    #[test]
    fn room_key_must_be_non_nullable_text() {
        let mut t = messages().build().expect("valid");
        t.columns[1].logical_type = LogicalType::Int8;
        let d = invalid_detail(RoomSchema::new("v1", vec![t.clone()]));
        assert!(d.contains("room key column"), "{d}");
        t.columns[1].logical_type = LogicalType::Text;
        t.columns[1].nullable = true;
        assert!(RoomSchema::new("v1", vec![t]).is_err());
    }

    #[test]
    fn media_columns_must_be_text() {
        let mut t = messages().build().expect("valid");
        t.columns[3].logical_type = LogicalType::Bytea;
        let d = invalid_detail(RoomSchema::new("v1", vec![t]));
        assert!(d.contains("media column \"attachment\""), "{d}");
    }

    #[test]
    fn id_columns_must_have_remappable_types() {
        let t = Table::new("t")
            .column("id", LogicalType::Float8)
            .primary_key()
            .id()
            .column("room_id", LogicalType::Text)
            .room_key()
            .build()
            .expect("builds");
        let d = invalid_detail(RoomSchema::new("v1", vec![t]));
        assert!(d.contains("id column \"id\""), "{d}");
    }

    #[test]
    fn references_must_point_at_an_id_column_of_the_same_type() {
        let users = Table::new("users")
            .column("id", LogicalType::Uuid)
            .primary_key()
            .column("room_id", LogicalType::Text)
            .room_key()
            .build()
            .expect("builds");
        let posts = Table::new("posts")
            .column("id", LogicalType::Int8)
            .primary_key()
            .id()
            .column("room_id", LogicalType::Text)
            .room_key()
            .column("author", LogicalType::Uuid)
            .references("users", "id")
            .build()
            .expect("builds");
        let d = invalid_detail(RoomSchema::new("v1", vec![users.clone(), posts.clone()]));
        assert!(d.contains("not one of that table's id_columns"), "{d}");

        let mut users_with_id = users;
        users_with_id.id_columns.push("id".into());
        assert!(RoomSchema::new("v1", vec![users_with_id.clone(), posts.clone()]).is_ok());

        let mut wrong_type = posts;
        wrong_type.columns[2].logical_type = LogicalType::Text;
        let d = invalid_detail(RoomSchema::new("v1", vec![users_with_id, wrong_type]));
        assert!(d.contains("of type"), "{d}");

        let dangling = messages()
            .column("x", LogicalType::Int8)
            .references("nowhere", "id")
            .build()
            .expect("builds");
        assert!(RoomSchema::new("v1", vec![dangling]).is_err());
    }

    #[test]
    fn reserved_and_empty_schemas_are_refused() {
        let mut t = messages().build().expect("valid");
        t.name = "roomshard_outbox".into();
        for c in &mut t.columns {
            if let Some(r) = &mut c.references {
                r.table = "roomshard_outbox".into();
            }
        }
        let d = invalid_detail(RoomSchema::new("v1", vec![t]));
        assert!(d.contains("reserved"), "{d}");
        assert!(RoomSchema::new("v1", vec![]).is_err());
        let t = messages().build().expect("valid");
        assert!(RoomSchema::new("", vec![t.clone()]).is_err());
        assert!(RoomSchema::new("mesh 1", vec![t]).is_err());
    }

    #[test]
    fn primary_key_must_be_non_nullable() {
        let mut t = messages().build().expect("valid");
        t.columns[0].nullable = true;
        let d = invalid_detail(RoomSchema::new("v1", vec![t]));
        assert!(d.contains("primary-key column"), "{d}");
    }
}
