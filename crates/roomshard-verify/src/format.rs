//! The bundle format's data types (`docs/bundle-format.md`, sections 3, 6, 7, 8), their
//! validation rules and the canonical JSON encoding. Writers and the verifier share these, so
//! what one emits the other accepts by construction.

use crate::error::{Reason, VerifyError};
use serde::{Deserialize, Serialize};

/// Value of `manifest.format`.
pub const FORMAT_NAME: &str = "roomshard-bundle";
/// The newest `format_version` this crate writes and verifies.
pub const FORMAT_VERSION: u32 = 1;
/// Path of the SQL entry.
pub const DB_SQL: &str = "db.sql";
/// Path of the manifest entry.
pub const MANIFEST_JSON: &str = "manifest.json";
/// Path of the signature entry.
pub const EXPORT_SIGNATURE: &str = "export.signature";
/// Prefix of media entries.
pub const MEDIA_PREFIX: &str = "media/";
/// Longest entry path, in bytes.
pub const MAX_PATH_BYTES: usize = 200;
/// Longest room id, in characters.
pub const MAX_ROOM_ID_LEN: usize = 48;
/// Longest SQL identifier (PostgreSQL's NAMEDATALEN - 1).
pub const MAX_IDENT_LEN: usize = 63;
/// `predicateType` of the sidecar statement.
pub const EXPORT_PREDICATE_TYPE: &str = "https://roomshard.dev/export/v1";
/// `predicateType` of receipt statements.
pub const RECEIPT_PREDICATE_TYPE: &str = "https://roomshard.dev/receipt/v1";
/// in-toto Statement `_type`.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// DSSE `payloadType` for in-toto statements.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// Sigstore bundle media type of the sidecar.
pub const SIGSTORE_BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// The manifest: what a bundle claims to contain, signed by `export.signature`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// Format version, [`FORMAT_VERSION`] for this crate.
    pub format_version: u32,
    /// The room exported.
    pub room: RoomInfo,
    /// The server the room was exported from (free text, e.g. a host name).
    pub source_instance: String,
    /// The software that wrote the bundle.
    pub exporter: Exporter,
    /// The host's schema version for the room tables (free text).
    pub schema_version: String,
    /// Room-scoped tables in `db.sql` order, with row counts.
    pub tables: Vec<TableEntry>,
    /// Every content entry (`db.sql`, `media/…`), sorted by path.
    pub files: Vec<FileEntry>,
    /// Sums over `files` and `tables`.
    pub totals: Totals,
    /// Signing time, `YYYY-MM-DDTHH:MM:SSZ`.
    pub created_at: String,
    /// Which key signed and how.
    pub signature: SignatureInfo,
}

/// The room a bundle holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomInfo {
    /// Room id (see [`validate_room_id`]).
    pub id: String,
    /// Display name, if the host has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The exporting software.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exporter {
    /// Software name, e.g. `roomshard`.
    pub name: String,
    /// Software version.
    pub version: String,
}

/// One content entry and its integrity data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Entry path in the archive.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// Sums, so a reader can size an import before streaming it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// Number of content files.
    pub files: u64,
    /// Bytes of all content files.
    pub bytes: u64,
    /// Number of `media/` files.
    pub media_files: u64,
    /// Bytes of `media/` files.
    pub media_bytes: u64,
    /// Rows over all tables.
    pub rows: u64,
}

/// Names the signing key and algorithm (the signature itself is bare, cosign style).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureInfo {
    /// Key id in the trusted key set.
    pub key_id: String,
    /// Signature algorithm.
    pub algorithm: Algorithm,
}

/// Signature algorithms the format allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256, DER signatures (the default; what cosign and KMS produce).
    #[serde(rename = "ecdsa-p256-sha256")]
    EcdsaP256Sha256,
    /// Ed25519 (RFC 8032), 64-byte signatures.
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl Algorithm {
    /// The format's name for the algorithm.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            Algorithm::Ed25519 => "ed25519",
        }
    }

    /// The algorithm of that name ([`as_str`](Self::as_str)), so configuration spells
    /// algorithms as manifests and key sets do.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "ecdsa-p256-sha256" => Some(Algorithm::EcdsaP256Sha256),
            "ed25519" => Some(Algorithm::Ed25519),
            _ => None,
        }
    }
}

/// Logical column types a host may declare; each maps to one PostgreSQL type in `db.sql`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogicalType {
    /// UTF-8 text.
    Text,
    /// 64-bit integer.
    Int8,
    /// 32-bit integer.
    Int4,
    /// Boolean.
    Bool,
    /// 64-bit float.
    Float8,
    /// Timestamp with time zone (UTC in bundles).
    Timestamptz,
    /// Bytes.
    Bytea,
    /// JSON document.
    Jsonb,
    /// UUID.
    Uuid,
}

impl LogicalType {
    /// Every logical type.
    pub const ALL: [LogicalType; 9] = [
        LogicalType::Text,
        LogicalType::Int8,
        LogicalType::Int4,
        LogicalType::Bool,
        LogicalType::Float8,
        LogicalType::Timestamptz,
        LogicalType::Bytea,
        LogicalType::Jsonb,
        LogicalType::Uuid,
    ];

    /// The PostgreSQL type written in `db.sql`.
    pub fn postgres_type(self) -> &'static str {
        match self {
            LogicalType::Text => "text",
            LogicalType::Int8 => "bigint",
            LogicalType::Int4 => "integer",
            LogicalType::Bool => "boolean",
            LogicalType::Float8 => "double precision",
            LogicalType::Timestamptz => "timestamp with time zone",
            LogicalType::Bytea => "bytea",
            LogicalType::Jsonb => "jsonb",
            LogicalType::Uuid => "uuid",
        }
    }
}

/// A column of a room-scoped table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnDescriptor {
    /// Column name (identifier rule).
    pub name: String,
    /// Logical type.
    #[serde(rename = "type")]
    pub logical_type: LogicalType,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// The column whose IDs this column holds, so a remap on import can rewrite it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references: Option<ColumnRef>,
}

impl ColumnDescriptor {
    /// A column without a reference.
    pub fn new(name: &str, logical_type: LogicalType, nullable: bool) -> Self {
        ColumnDescriptor {
            name: name.to_string(),
            logical_type,
            nullable,
            references: None,
        }
    }

    /// The same column, declared as holding IDs of `table.column` (so a remap rewrites it).
    pub fn referencing(mut self, table: &str, column: &str) -> Self {
        self.references = Some(ColumnRef {
            table: table.to_string(),
            column: column.to_string(),
        });
        self
    }
}

/// A pointer to a column of a table in the same bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnRef {
    /// Table name.
    pub table: String,
    /// Column name.
    pub column: String,
}

/// How a host declares one room-scoped table; the importer creates tables from this, never from
/// SQL text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDescriptor {
    /// Table name (identifier rule).
    pub name: String,
    /// Columns in COPY order.
    pub columns: Vec<ColumnDescriptor>,
    /// Primary-key columns (at least one).
    pub primary_key: Vec<String>,
    /// The column holding the room id.
    pub room_key_column: String,
    /// ID columns an importer may remap when they collide with existing rows.
    pub id_columns: Vec<String>,
    /// Text columns holding media object keys (rewritten on import).
    pub media_columns: Vec<String>,
}

/// A table descriptor plus its row count, as listed in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// The table's shape.
    #[serde(flatten)]
    pub descriptor: TableDescriptor,
    /// Rows in its COPY block.
    pub row_count: u64,
}

/// A trusted key set: the public keys a verifier accepts signatures from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySet {
    /// The keys.
    pub keys: Vec<TrustedKey>,
}

/// One public key with its validity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    /// Key id, as named by `manifest.signature.key_id`.
    pub id: String,
    /// Algorithm.
    pub alg: Algorithm,
    /// SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub public_key_pem: String,
    /// Not valid for signatures made before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// Not valid for signatures made after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// Withdrawn: nothing it signed verifies.
    #[serde(default)]
    pub revoked: bool,
}

/// Serialises a value as canonical JSON: sorted keys, no whitespace (docs/bundle-format.md §3).
///
/// Going through `serde_json::Value` sorts object keys (its map is a `BTreeMap`), so the bytes do
/// not depend on struct field order.
pub fn to_canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    let value = serde_json::to_value(value).expect("format types always serialise");
    serde_json::to_vec(&value).expect("a JSON value always serialises")
}

/// Parses and validates a manifest from its exact bytes: version first, then canonical form, then
/// schema and cross-field rules.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, VerifyError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| VerifyError::new(Reason::ManifestInvalid, format!("manifest.json: {e}")))?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(FORMAT_NAME) => {}
        other => {
            return Err(VerifyError::new(
                Reason::UnsupportedVersion,
                format!("manifest.json: format is {other:?}, not {FORMAT_NAME:?}"),
            ))
        }
    }
    match value.get("format_version").and_then(|v| v.as_u64()) {
        Some(v) if v >= 1 && v <= u64::from(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(VerifyError::new(
                Reason::UnsupportedVersion,
                format!(
                    "manifest.json: format_version {v}; this verifier supports 1..={FORMAT_VERSION}"
                ),
            ))
        }
        None => {
            return Err(VerifyError::new(
                Reason::ManifestInvalid,
                "manifest.json: format_version missing or not an integer",
            ))
        }
    }
    let canonical = serde_json::to_vec(&value).expect("a JSON value always serialises");
    if canonical != bytes {
        return Err(VerifyError::new(
            Reason::ManifestNotCanonical,
            "manifest.json: bytes are not the canonical JSON form (sorted keys, no whitespace)",
        ));
    }
    let manifest: Manifest = serde_json::from_value(value)
        .map_err(|e| VerifyError::new(Reason::ManifestInvalid, format!("manifest.json: {e}")))?;
    // The typed manifest must say exactly what the signed bytes say: a value the types read
    // lossily (such as `"name": null` for an absent optional field) would let two different
    // byte strings mean the same manifest.
    if to_canonical_json(&manifest) != bytes {
        return Err(invalid(
            "a field does not round-trip through the manifest schema (e.g. null for an optional field)"
                .to_string(),
        ));
    }
    validate_manifest(&manifest)?;
    Ok(manifest)
}

fn invalid(detail: String) -> VerifyError {
    VerifyError::new(Reason::ManifestInvalid, format!("manifest.json: {detail}"))
}

/// Checks the manifest's cross-field rules (docs/bundle-format.md §3).
pub fn validate_manifest(m: &Manifest) -> Result<(), VerifyError> {
    validate_room_id(&m.room.id).map_err(|e| invalid(e.detail))?;
    validate_timestamp(&m.created_at).map_err(|e| {
        VerifyError::new(e.reason, format!("manifest.json: created_at: {}", e.detail))
    })?;
    validate_key_id(&m.signature.key_id).map_err(|e| invalid(e.detail))?;
    validate_tables(m.tables.iter().map(|t| &t.descriptor)).map_err(|e| invalid(e.detail))?;
    let mut totals = Totals::default();
    let mut previous: Option<&str> = None;
    for f in &m.files {
        validate_path(&f.path).map_err(|e| invalid(e.detail))?;
        if f.path != DB_SQL && !f.path.starts_with(MEDIA_PREFIX) {
            return Err(invalid(format!(
                "files lists {:?}, not a content entry",
                f.path
            )));
        }
        if let Some(p) = previous {
            if p >= f.path.as_str() {
                return Err(invalid(format!(
                    "files not sorted and unique at {:?}",
                    f.path
                )));
            }
        }
        previous = Some(&f.path);
        if !is_sha256_hex(&f.sha256) {
            return Err(invalid(format!(
                "{}: sha256 is not 64 lowercase hex digits",
                f.path
            )));
        }
        totals.files += 1;
        totals.bytes = totals.bytes.saturating_add(f.size);
        if f.path.starts_with(MEDIA_PREFIX) {
            totals.media_files += 1;
            totals.media_bytes = totals.media_bytes.saturating_add(f.size);
        }
    }
    if !m.files.iter().any(|f| f.path == DB_SQL) {
        return Err(invalid("files does not list db.sql".into()));
    }
    totals.rows = m
        .tables
        .iter()
        .fold(0u64, |acc, t| acc.saturating_add(t.row_count));
    if totals != m.totals {
        return Err(invalid(format!(
            "totals {:?} do not match the sums over files and tables {:?}",
            m.totals, totals
        )));
    }
    Ok(())
}

/// Validates table descriptors: identifiers, unique names, and that every named column exists.
pub fn validate_tables<'a>(
    tables: impl IntoIterator<Item = &'a TableDescriptor>,
) -> Result<(), VerifyError> {
    let tables: Vec<&TableDescriptor> = tables.into_iter().collect();
    let err = |d: String| VerifyError::new(Reason::ManifestInvalid, d);
    for (i, t) in tables.iter().enumerate() {
        validate_identifier(&t.name)?;
        if tables[..i].iter().any(|o| o.name == t.name) {
            return Err(err(format!("table {:?} declared twice", t.name)));
        }
        if t.columns.is_empty() {
            return Err(err(format!("table {:?} has no columns", t.name)));
        }
        for (j, c) in t.columns.iter().enumerate() {
            validate_identifier(&c.name)?;
            if t.columns[..j].iter().any(|o| o.name == c.name) {
                return Err(err(format!("column {}.{} declared twice", t.name, c.name)));
            }
        }
        let has = |name: &str| t.columns.iter().any(|c| c.name == name);
        if t.primary_key.is_empty() {
            return Err(err(format!("table {:?} has no primary key", t.name)));
        }
        for name in t
            .primary_key
            .iter()
            .chain(&t.id_columns)
            .chain(&t.media_columns)
            .chain(std::iter::once(&t.room_key_column))
        {
            if !has(name) {
                return Err(err(format!(
                    "table {:?} names missing column {name:?}",
                    t.name
                )));
            }
        }
    }
    for t in &tables {
        for c in &t.columns {
            if let Some(r) = &c.references {
                let target = tables.iter().find(|o| o.name == r.table);
                if !target.map_or(false, |o| o.columns.iter().any(|oc| oc.name == r.column)) {
                    return Err(err(format!(
                        "{}.{} references missing column {}.{}",
                        t.name, c.name, r.table, r.column
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Room ids: 1–48 characters from `a-z 0-9 _ -`, the first a letter or digit. Lower case only,
/// so ids map one-to-one onto schema names, file names and bucket names on case-insensitive
/// systems.
pub fn validate_room_id(id: &str) -> Result<(), VerifyError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ROOM_ID_LEN
        && id.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && (b == b'_' || b == b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(VerifyError::new(
            Reason::ManifestInvalid,
            format!(
                "room id {id:?} is invalid: use 1-{MAX_ROOM_ID_LEN} characters from a-z 0-9 _ -, starting with a letter or digit"
            ),
        ))
    }
}

/// SQL identifiers in descriptors: `[a-z_][a-z0-9_]{0,62}`.
pub fn validate_identifier(name: &str) -> Result<(), VerifyError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IDENT_LEN
        && name
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_lowercase() || b == b'_' || (i > 0 && b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(VerifyError::new(
            Reason::ManifestInvalid,
            format!("identifier {name:?} is invalid: use [a-z_][a-z0-9_]{{0,62}}"),
        ))
    }
}

/// Key ids: 1–128 characters from `A-Z a-z 0-9 . _ : -`.
pub fn validate_key_id(id: &str) -> Result<(), VerifyError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(VerifyError::new(
            Reason::ManifestInvalid,
            format!("key id {id:?} is invalid: use 1-128 characters from A-Z a-z 0-9 . _ : -"),
        ))
    }
}

/// Timestamps: `YYYY-MM-DDTHH:MM:SSZ` exactly (fixed width, so they compare as strings), naming
/// a real instant. A wrong shape is [`Reason::ManifestInvalid`]; the right shape on a date or
/// time that does not exist (`2026-02-31`, `24:00:00`, the leap second `23:59:60`) is
/// [`Reason::InvalidTimestamp`].
pub fn validate_timestamp(ts: &str) -> Result<(), VerifyError> {
    let b = ts.as_bytes();
    let digit_at = |i: usize| b.get(i).map_or(false, u8::is_ascii_digit);
    let shape = b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|&i| digit_at(i));
    if !shape {
        return Err(VerifyError::new(
            Reason::ManifestInvalid,
            format!("timestamp {ts:?} is not YYYY-MM-DDTHH:MM:SSZ"),
        ));
    }
    if !crate::copy::is_calendar_datetime(b) {
        return Err(VerifyError::new(
            Reason::InvalidTimestamp,
            format!("timestamp {ts:?} names no real date and time"),
        ));
    }
    Ok(())
}

/// Characters that make a path display as something else: the bidirectional embeddings,
/// overrides and isolates (U+202A–U+202E, U+2066–U+2069), the marks U+200E, U+200F and U+061C,
/// and the line and paragraph separators U+2028, U+2029.
pub fn is_deceptive_char(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{2028}' | '\u{2029}')
}

/// Entry paths (docs/bundle-format.md §1). Returns the specific reason a path is refused.
pub fn validate_path(path: &str) -> Result<(), VerifyError> {
    validate_key_path(path)?;
    if path.chars().any(is_deceptive_char) {
        return Err(VerifyError::new(
            Reason::DeceptivePath,
            format!(
                "entry path {path:?}: has a bidirectional control or a line/paragraph separator"
            ),
        ));
    }
    Ok(())
}

/// The rules of [`validate_path`] without the deceptive-character rule: what an object key must
/// satisfy. (A key may hold a bidirectional control; its bundle entry name escapes it.)
pub fn validate_key_path(path: &str) -> Result<(), VerifyError> {
    let refuse = |reason: Reason, why: &str| {
        Err(VerifyError::new(
            reason,
            format!("entry path {path:?}: {why}"),
        ))
    };
    if path.len() > MAX_PATH_BYTES {
        return refuse(Reason::NameTooLong, "longer than 200 bytes");
    }
    if path.starts_with('/') {
        return refuse(Reason::AbsolutePath, "absolute");
    }
    if path.split('/').any(|c| c == "..") {
        return refuse(Reason::PathTraversal, "has a `..` component");
    }
    if path.split('/').any(|c| c.is_empty() || c == ".") {
        return refuse(Reason::InvalidPath, "has an empty or `.` component");
    }
    if path.chars().any(|c| c == '\\' || c.is_control()) {
        return refuse(Reason::InvalidPath, "has a backslash or control character");
    }
    Ok(())
}

/// Whether `s` is 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Lowercase hex of bytes (the format's digest spelling).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}
