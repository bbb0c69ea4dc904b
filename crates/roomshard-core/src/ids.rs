//! Validated names: room ids, the schema names derived from them, SQL identifiers and object keys.
//!
//! Every dynamic name that reaches SQL, a file system or a bucket goes through one of these
//! newtypes. Each is validated once, on construction, by the same rule the bundle format uses
//! (`roomshard_verify::format`), so a value of the type is proof the rule held: no code
//! downstream re-checks, and none can `format!` raw input into a statement. The SQL renderings
//! (`quoted()`, and `Display`, which prints the quoted form) are double-quoted identifiers that
//! cannot contain a quote, because the rules admit none.

use crate::error::{Error, Result, invalid_input};
use roomshard_verify::format::{
    MAX_PATH_BYTES, MEDIA_PREFIX, validate_identifier, validate_key_path, validate_room_id,
};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Implements what every validated string name has, given its `new(impl Into<String>) ->
/// Result<Self>`: `as_str`, `FromStr`, `TryFrom<String>` (so `#[serde(try_from = "String")]`
/// validates), `From<Name> for String`, `AsRef<str>` and `Display` — of the bare text, or with
/// `quoted_display` of the double-quoted SQL form.
macro_rules! validated_name {
    ($name:ident) => {
        $crate::ids::validated_name!(@common $name);
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
    ($name:ident, quoted_display) => {
        $crate::ids::validated_name!(@common $name);
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "\"{}\"", self.0)
            }
        }
    };
    (@common $name:ident) => {
        impl $name {
            /// The name as text (unquoted).
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl std::str::FromStr for $name {
            type Err = $crate::error::Error;
            fn from_str(s: &str) -> $crate::error::Result<Self> {
                $name::new(s)
            }
        }
        impl TryFrom<String> for $name {
            type Error = $crate::error::Error;
            fn try_from(s: String) -> $crate::error::Result<Self> {
                $name::new(s)
            }
        }
        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}
pub(crate) use validated_name;

/// A room's id.
///
/// The rule (shared with the bundle format, `docs/bundle-format.md` §3): **1–48 characters from
/// `a-z 0-9 _ -`, the first a letter or a digit.** Lower-case ASCII only, so one id maps
/// one-to-one onto a PostgreSQL schema name (`room_<id>`, at most 53 bytes of the 63 allowed), a
/// file name and a bucket-name component on case-insensitive systems, and no Unicode lookalike
/// can pass for another room's id.
///
/// Deserialising validates too, so a `RoomId` read from JSON or a database row is as safe as one
/// parsed with [`FromStr`](std::str::FromStr).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomId(String);

validated_name!(RoomId);

impl RoomId {
    /// Validates `id` against the room-id rule; [`Error::Invalid`] says why it failed.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        validate_room_id(&id).map_err(|e| invalid_input("room id", e))?;
        Ok(RoomId(id))
    }

    /// The PostgreSQL schema that holds this room's dedicated shard.
    pub fn schema_name(&self) -> SchemaName {
        SchemaName(format!("room_{}", self.0))
    }
}

/// The PostgreSQL schema of a room's dedicated shard: `room_<id>`.
///
/// Only obtainable from a [`RoomId`] ([`RoomId::schema_name`]), never from free text, so it
/// inherits the room-id rule: at most 53 bytes (under PostgreSQL's 63), no quote, no upper case.
/// Its only SQL rendering is [`quoted`](SchemaName::quoted) — which `Display` also prints — so a
/// schema name cannot be spliced into SQL unquoted by accident; the unquoted form
/// ([`as_unquoted`](SchemaName::as_unquoted)) is for file names and logs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SchemaName(String);

impl SchemaName {
    /// `"room_<id>"`, double-quoted: the form to put in SQL.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }

    /// `room_<id>` without quotes: for file names and messages, never for SQL.
    pub fn as_unquoted(&self) -> &str {
        &self.0
    }

    /// `"room_<id>"."<table>"`: a schema-qualified table name. Providers qualify every statement
    /// this way rather than setting `search_path`, so a pooled connection can never run a query
    /// against the wrong room.
    pub fn qualify(&self, table: &Identifier) -> String {
        format!("{}.{}", self.quoted(), table.quoted())
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

/// A table or column name: `[a-z_][a-z0-9_]{0,62}` (the bundle format's identifier rule).
///
/// Like [`SchemaName`], `Display` prints the double-quoted SQL form; [`as_str`](Identifier::as_str)
/// gives the bare name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Identifier(String);

validated_name!(Identifier, quoted_display);

impl Identifier {
    /// Validates `name` against the identifier rule.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        validate_identifier(&name).map_err(|e| invalid_input("identifier", e))?;
        Ok(Identifier(name))
    }

    /// `"<name>"`, double-quoted: the form to put in SQL.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

/// The key of a media object inside a room's bucket, e.g. `att/2026/1.png`.
///
/// Keys become bundle entries `media/<key>`, so they follow the bundle's path rule
/// (`docs/bundle-format.md` §1): relative, `/`-separated, no empty, `.` or `..` component, no
/// backslash or control character, and at most 194 bytes (200 minus `media/`). A store backed by
/// a directory can therefore map a key to a path without any escape being possible.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectKey(String);

validated_name!(ObjectKey);

impl ObjectKey {
    /// Longest key, in bytes.
    pub const MAX_LEN: usize = MAX_PATH_BYTES - MEDIA_PREFIX.len();

    /// Validates `key` against the object-key rule.
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        if key.len() > Self::MAX_LEN {
            return Err(Error::invalid(
                "object key",
                format!(
                    "{} bytes long; at most {} are allowed",
                    key.len(),
                    Self::MAX_LEN
                ),
            ));
        }
        validate_key_path(&key).map_err(|e| invalid_input("object key", e))?;
        Ok(ObjectKey(key))
    }

    /// The key's entry path in a bundle when no other key of the room is its case or
    /// normalisation twin or its directory: `media/<key>` with `%`, backslashes, control and
    /// deceptive characters escaped (`roomshard_verify::names`; a whole room is named with
    /// `media_paths` over all its keys).
    pub fn bundle_path(&self) -> String {
        roomshard_verify::names::media_paths(&[self.0.as_str()]).remove(0)
    }
}

/// Checks the rule for provider-issued names (event ids, grantees, signing key ids): 1 to `max`
/// printable ASCII characters, no spaces. These names are opaque to roomshard but end up in logs,
/// JSON and backend requests, where control characters and unbounded lengths do harm.
pub(crate) fn check_printable(what: &str, s: &str, max: usize) -> Result<()> {
    if s.is_empty() || s.len() > max || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            what,
            format!("{s:?}: use 1-{max} printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn room_id_rejects_sql_injection() {
        let hostile = [
            "x\"; DROP SCHEMA public; --",
            "x'; DROP TABLE messages; --",
            "a b",
            "Room",
            "ROOM",
            "../x",
            "x/..",
            "a.b",
            "",
            "-leading-dash",
            "_leading_underscore",
            "a\0b",
            "a\nb",
            "a\"b",
            "room\u{200b}",       // zero-width space
            "r\u{043e}\u{043e}m", // Cyrillic о lookalikes
            "\u{ff52}\u{ff4f}om", // full-width ｒｏ
            "caf\u{e9}",          // é
            "r\u{0301}oom",       // combining accent
        ];
        for id in hostile {
            let err = RoomId::new(id).expect_err(id);
            assert!(
                matches!(&err, Error::Invalid { what, .. } if what == "room id"),
                "{id:?}: {err}"
            );
        }
        let too_long = "a".repeat(49);
        assert!(RoomId::new(too_long).is_err());
    }

    #[test]
    fn room_id_accepts_the_documented_alphabet() {
        for id in ["general", "a", "0", "a-b_c-9", &"z".repeat(48)] {
            let room = RoomId::new(id).expect(id);
            assert_eq!(room.as_str(), id);
            assert_eq!(room.to_string(), id);
        }
    }

    #[test]
    fn room_id_error_says_the_rule() {
        let err = RoomId::new("Room").expect_err("upper case");
        let msg = err.to_string();
        assert!(msg.contains("a-z 0-9 _ -"), "{msg}");
        assert!(msg.contains("\"Room\""), "{msg}");
    }

    #[test]
    fn room_id_deserialisation_validates() {
        let ok: RoomId = serde_json::from_str("\"general\"").expect("valid");
        assert_eq!(ok.as_str(), "general");
        assert!(serde_json::from_str::<RoomId>("\"x\\\"; DROP SCHEMA public; --\"").is_err());
        assert_eq!(
            serde_json::to_string(&ok).expect("serialises"),
            "\"general\""
        );
    }

    #[test]
    fn schema_name_renders_only_quoted_sql() {
        let room = RoomId::new("general-1").expect("valid");
        let schema = room.schema_name();
        assert_eq!(schema.quoted(), "\"room_general-1\"");
        assert_eq!(schema.to_string(), "\"room_general-1\"");
        assert_eq!(schema.as_unquoted(), "room_general-1");
        let table = Identifier::new("messages").expect("valid");
        assert_eq!(schema.qualify(&table), "\"room_general-1\".\"messages\"");
    }

    #[test]
    fn identifier_rejects_sql_injection() {
        for name in [
            "messages\"; DROP TABLE x; --",
            "Messages",
            "1abc",
            "a-b",
            "",
            "a b",
            &"a".repeat(64),
        ] {
            assert!(Identifier::new(name).is_err(), "{name:?}");
        }
        assert_eq!(
            Identifier::new("reply_to").expect("valid").quoted(),
            "\"reply_to\""
        );
    }

    #[test]
    fn object_key_rejects_path_traversal() {
        for key in [
            "../etc/passwd",
            "a/../../b",
            "/abs",
            "a//b",
            "./a",
            "a\\b",
            "a\nb",
            "",
            &"k".repeat(ObjectKey::MAX_LEN + 1),
        ] {
            assert!(ObjectKey::new(key).is_err(), "{key:?}");
        }
        let key = ObjectKey::new("att/2026/1.png").expect("valid");
        assert_eq!(key.bundle_path(), "media/att/2026/1.png");
        assert!(ObjectKey::new("k".repeat(ObjectKey::MAX_LEN)).is_ok());
    }

    proptest! {
        #[test]
        fn accepted_room_ids_yield_safe_schema_names(
            id in prop_oneof!["[a-z0-9][a-z0-9_-]{0,50}", "\\PC{0,60}", ".{0,60}"]
        ) {
            if let Ok(room) = RoomId::new(id.clone()) {
                let schema = room.schema_name();
                let quoted = schema.quoted();
                let inner = &quoted[1..quoted.len() - 1];
                prop_assert!(quoted.starts_with('"') && quoted.ends_with('"'));
                prop_assert!(!inner.contains('"'));
                prop_assert!(schema.as_unquoted().len() <= 63);
                prop_assert_eq!(schema.as_unquoted(), format!("room_{id}"));
                prop_assert!(schema.as_unquoted().bytes().all(|b| b.is_ascii_graphic()));
            }
        }
    }
}
