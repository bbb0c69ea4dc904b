//! The golden vectors of the bundle format (`conformance/vectors/`), and their deterministic
//! generator.
//!
//! Each vector is `NAME.tar.zst` plus `NAME.expect`:
//!
//! ```text
//! expect: fail_digest_mismatch
//! limits: max_entries=10            (optional, overrides a VerifyLimits field)
//! about: one media file differs from the digest the signed manifest lists
//! ```
//!
//! Every implementation of the verifier (native, WASM, third parties) runs all of them and must
//! reach the same verdict. The generator builds archives at the byte level (not through
//! `roomshard_bundle::BundleWriter`) so it can also build what no honest writer would: links,
//! traversal, bad checksums, bombs. Keys are derived from fixed seeds so output is byte-identical
//! on every run; those private keys are public knowledge and good for nothing but these vectors.

use roomshard_bundle::{DbSqlWriter, LocalEd25519Signer, LocalP256Signer, Signer};
use roomshard_verify::format::{
    self, ColumnDescriptor, Exporter, FileEntry, KeySet, LogicalType, Manifest, RoomInfo,
    SignatureInfo, TableDescriptor, TableEntry, Totals, TrustedKey,
};
use roomshard_verify::{Algorithm, VerifyLimits};
use sha2::{Digest, Sha256};
use std::io;
use std::path::Path;

/// The signing time of every vector.
pub const CREATED_AT: &str = "2026-06-01T12:00:00Z";
const ROOM: &str = "general";

/// One vector: its name, archive bytes and `.expect` text.
pub struct Vector {
    /// File stem.
    pub name: &'static str,
    /// The `.tar.zst` bytes.
    pub archive: Vec<u8>,
    /// The `.expect` text.
    pub expect: String,
}

/// A parsed `.expect` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// `None` for `valid`, else the reason code after `fail_`.
    pub failure: Option<String>,
    /// Limits to verify with (defaults overridden by `limits:` lines).
    pub limits: VerifyLimits,
}

/// Parses an `.expect` file.
pub fn parse_expect(text: &str) -> Result<Expectation, String> {
    let mut lines = text.lines();
    let first = lines.next().ok_or("empty .expect file")?;
    let verdict = first
        .strip_prefix("expect: ")
        .ok_or_else(|| format!("first line must be `expect: ...`, got {first:?}"))?;
    let failure = match verdict {
        "valid" => None,
        v => Some(
            v.strip_prefix("fail_")
                .ok_or_else(|| format!("verdict must be valid or fail_<reason>, got {v:?}"))?
                .to_string(),
        ),
    };
    let mut limits = VerifyLimits::default();
    for line in lines {
        let Some(spec) = line.strip_prefix("limits: ") else {
            continue;
        };
        for pair in spec.split_whitespace() {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("bad limit {pair:?}"))?;
            let n: u64 = v.parse().map_err(|_| format!("bad limit value {pair:?}"))?;
            limits.set(k, n)?;
        }
    }
    Ok(Expectation { failure, limits })
}

/// The vectors' keys, derived from fixed seeds.
pub struct VectorKeys {
    /// Main P-256 key, valid 2026-01-01..2027-01-01.
    pub main: LocalP256Signer,
    /// Ed25519 key.
    pub ed25519: LocalEd25519Signer,
    /// Revoked P-256 key.
    pub revoked: LocalP256Signer,
    /// P-256 key that expired before the signing time.
    pub expired: LocalP256Signer,
    /// P-256 key not valid until after the signing time.
    pub future: LocalP256Signer,
    /// P-256 key absent from the trusted set.
    pub stranger: LocalP256Signer,
}

impl VectorKeys {
    /// Derives the keys.
    pub fn new() -> Self {
        let p = |n: u8, id: &str| {
            LocalP256Signer::from_seed([n; 32], Some(id.to_string()))
                .expect("fixed seeds give valid keys")
        };
        VectorKeys {
            main: p(1, "vectors-p256-main"),
            ed25519: LocalEd25519Signer::from_seed([2; 32], Some("vectors-ed25519".into()))
                .expect("fixed seeds give valid keys"),
            revoked: p(3, "vectors-p256-revoked"),
            expired: p(4, "vectors-p256-expired"),
            future: p(5, "vectors-p256-future"),
            stranger: p(6, "vectors-p256-stranger"),
        }
    }

    /// The trusted key set shipped as `conformance/vectors/trusted-keys.json` (without the
    /// stranger).
    pub fn key_set(&self) -> KeySet {
        let t = |s: &dyn HasTrustedKey, nb: &str, na: &str, revoked: bool| {
            let mut k = s.trusted(Some(nb.into()), Some(na.into()));
            k.revoked = revoked;
            k
        };
        KeySet {
            keys: vec![
                t(
                    &self.main,
                    "2026-01-01T00:00:00Z",
                    "2027-01-01T00:00:00Z",
                    false,
                ),
                t(
                    &self.ed25519,
                    "2026-01-01T00:00:00Z",
                    "2027-01-01T00:00:00Z",
                    false,
                ),
                t(
                    &self.revoked,
                    "2026-01-01T00:00:00Z",
                    "2027-01-01T00:00:00Z",
                    true,
                ),
                t(
                    &self.expired,
                    "2025-01-01T00:00:00Z",
                    "2026-01-01T00:00:00Z",
                    false,
                ),
                t(
                    &self.future,
                    "2026-09-01T00:00:00Z",
                    "2027-09-01T00:00:00Z",
                    false,
                ),
            ],
        }
    }
}

impl Default for VectorKeys {
    fn default() -> Self {
        Self::new()
    }
}

trait HasTrustedKey {
    fn trusted(&self, nb: Option<String>, na: Option<String>) -> TrustedKey;
}
impl HasTrustedKey for LocalP256Signer {
    fn trusted(&self, nb: Option<String>, na: Option<String>) -> TrustedKey {
        self.trusted_key(nb, na).expect("vector keys encode")
    }
}
impl HasTrustedKey for LocalEd25519Signer {
    fn trusted(&self, nb: Option<String>, na: Option<String>) -> TrustedKey {
        self.trusted_key(nb, na).expect("vector keys encode")
    }
}

/// The `notes` values of the vector `valid_copy_escapes`: every byte the COPY rules give meaning
/// to (`\.` lines, `\N`, CR, LF, tab, backslashes, a smuggling attempt), which psql and
/// roomshard must load exactly as written here.
pub const ESCAPE_VECTOR_VALUES: &[&str] = &[
    "\\.",
    "\\N",
    "a\r\nb",
    "\rcr",
    "tab\there",
    "back\\slash\\",
    "\\.\r\nDROP TABLE users;",
    "\\101 \\x41",
    "",
];

/// The room tables of the vectors: messages with replies and attachments, and reactions.
pub fn tables() -> Vec<TableDescriptor> {
    let col = ColumnDescriptor::new;
    let reply_to = col("reply_to", LogicalType::Int8, true).referencing("messages", "id");
    let message_id = col("message_id", LogicalType::Int8, false).referencing("messages", "id");
    vec![
        TableDescriptor {
            name: "messages".into(),
            columns: vec![
                col("id", LogicalType::Int8, false),
                col("room_id", LogicalType::Text, false),
                col("author", LogicalType::Text, false),
                col("body", LogicalType::Text, true),
                reply_to,
                col("sent_at", LogicalType::Timestamptz, false),
                col("attachment_key", LogicalType::Text, true),
            ],
            primary_key: vec!["id".into()],
            room_key_column: "room_id".into(),
            id_columns: vec!["id".into()],
            media_columns: vec!["attachment_key".into()],
        },
        TableDescriptor {
            name: "reactions".into(),
            columns: vec![
                message_id,
                col("room_id", LogicalType::Text, false),
                col("member", LogicalType::Text, false),
                col("emoji", LogicalType::Text, false),
            ],
            primary_key: vec!["message_id".into(), "member".into(), "emoji".into()],
            room_key_column: "room_id".into(),
            id_columns: vec![],
            media_columns: vec![],
        },
    ]
}

/// An archive under construction: content entries, then manifest and signature.
#[derive(Clone)]
struct Draft {
    tables: Vec<TableDescriptor>,
    db_sql: Vec<u8>,
    row_counts: Vec<u64>,
    media: Vec<(String, Vec<u8>)>,
    algorithm: Algorithm,
    key_id: String,
    format_version: u32,
    created_at: &'static str,
}

impl Draft {
    /// The standard small room: 4 messages (a reply, an attachment, unicode and escapes), 3
    /// reactions, 2 media objects.
    fn standard(keys: &VectorKeys) -> Draft {
        use roomshard_bundle::CopyValue as V;
        let tables = tables();
        let messages: Vec<Vec<V>> = vec![
            vec![
                V::Int8(1),
                V::Text(ROOM.into()),
                V::Text("ada".into()),
                V::Text("Welcome to #general".into()),
                V::Null,
                V::Timestamptz("2026-05-01 09:00:00+00".into()),
                V::Null,
            ],
            vec![
                V::Int8(2),
                V::Text(ROOM.into()),
                V::Text("grace".into()),
                V::Text("Grüße aus Zürich \u{1F44B}\ttab\nnewline \\ backslash".into()),
                V::Int8(1),
                V::Timestamptz("2026-05-01 09:01:30.250000+00".into()),
                V::Null,
            ],
            vec![
                V::Int8(3),
                V::Text(ROOM.into()),
                V::Text("linus".into()),
                V::Null,
                V::Int8(1),
                V::Timestamptz("2026-05-01 09:02:00+00".into()),
                V::Text("att/0001-diagram.png".into()),
            ],
            vec![
                V::Int8(4),
                V::Text(ROOM.into()),
                V::Text("ada".into()),
                V::Text("see notes.txt".into()),
                V::Null,
                V::Timestamptz("2026-05-01 09:03:00+00".into()),
                V::Text("att/0002-notes.txt".into()),
            ],
        ];
        let reactions: Vec<Vec<V>> = vec![
            vec![
                V::Int8(1),
                V::Text(ROOM.into()),
                V::Text("grace".into()),
                V::Text("\u{1F44D}".into()),
            ],
            vec![
                V::Int8(1),
                V::Text(ROOM.into()),
                V::Text("linus".into()),
                V::Text("\u{1F389}".into()),
            ],
            vec![
                V::Int8(3),
                V::Text(ROOM.into()),
                V::Text("ada".into()),
                V::Text("\u{2764}".into()),
            ],
        ];
        let (db_sql, row_counts) = write_db_sql(&tables, &[&messages, &reactions]);
        let png: Vec<u8> = (0u32..3000)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        Draft {
            tables,
            db_sql,
            row_counts,
            media: vec![
                ("att/0001-diagram.png".into(), png),
                (
                    "att/0002-notes.txt".into(),
                    b"notes: ship the verifier\n".to_vec(),
                ),
            ],
            algorithm: Algorithm::EcdsaP256Sha256,
            key_id: keys.main.key_id().to_string(),
            format_version: format::FORMAT_VERSION,
            created_at: CREATED_AT,
        }
    }

    fn file_entries(&self) -> Vec<FileEntry> {
        let mut files = vec![file_entry(format::DB_SQL, &self.db_sql)];
        for (key, data) in &self.media {
            files.push(file_entry(&format!("{}{key}", format::MEDIA_PREFIX), data));
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }

    fn manifest(&self) -> Manifest {
        let files = self.file_entries();
        let mut totals = Totals::default();
        for f in &files {
            totals.files += 1;
            totals.bytes += f.size;
            if f.path.starts_with(format::MEDIA_PREFIX) {
                totals.media_files += 1;
                totals.media_bytes += f.size;
            }
        }
        totals.rows = self.row_counts.iter().sum();
        Manifest {
            format: format::FORMAT_NAME.into(),
            format_version: self.format_version,
            room: RoomInfo {
                id: ROOM.into(),
                name: Some("General".into()),
            },
            source_instance: "mesh.example.org".into(),
            exporter: Exporter {
                name: "roomshard-vectors".into(),
                version: "1".into(),
            },
            schema_version: "mesh-1".into(),
            tables: self
                .tables
                .iter()
                .zip(&self.row_counts)
                .map(|(t, n)| TableEntry {
                    descriptor: t.clone(),
                    row_count: *n,
                })
                .collect(),
            files,
            totals,
            created_at: self.created_at.into(),
            signature: SignatureInfo {
                key_id: self.key_id.clone(),
                algorithm: self.algorithm,
            },
        }
    }

    /// The content entries in format order.
    fn content_entries(&self) -> Vec<Entry> {
        let mut entries = vec![Entry::file(format::DB_SQL, self.db_sql.clone())];
        let mut media = self.media.clone();
        media.sort();
        for (key, data) in media {
            entries.push(Entry::file(&format!("{}{key}", format::MEDIA_PREFIX), data));
        }
        entries
    }
}

fn file_entry(path: &str, data: &[u8]) -> FileEntry {
    FileEntry {
        path: path.into(),
        size: data.len() as u64,
        sha256: format::hex(&Sha256::digest(data)),
    }
}

fn write_db_sql(
    tables: &[TableDescriptor],
    rows: &[&Vec<Vec<roomshard_bundle::CopyValue>>],
) -> (Vec<u8>, Vec<u64>) {
    let mut w = DbSqlWriter::new(Vec::new(), ROOM, tables).expect("vector tables are valid");
    for (t, table_rows) in tables.iter().zip(rows) {
        w.begin_table(&t.name).expect("tables in order");
        for r in table_rows.iter() {
            w.write_row(r).expect("vector rows match their tables");
        }
    }
    w.finish().expect("db.sql finishes")
}

/// A one-column table (`line text`, its own key): the shape in which a smuggled line still has
/// the right field count, so only the codec's rules can refuse it.
fn notes_table() -> TableDescriptor {
    TableDescriptor {
        name: "notes".into(),
        columns: vec![ColumnDescriptor::new("line", LogicalType::Text, false)],
        primary_key: vec!["line".into()],
        room_key_column: "line".into(),
        id_columns: vec![],
        media_columns: vec![],
    }
}

/// The standard draft with `table` as its only table holding `values`, no media; also returns
/// `db.sql` as text for a test to corrupt.
fn with_one_text_table(base: &Draft, table: &TableDescriptor, values: &[&str]) -> (Draft, String) {
    use roomshard_bundle::CopyValue as V;
    let rows: Vec<Vec<V>> = values.iter().map(|v| vec![V::Text((*v).into())]).collect();
    let tables = vec![table.clone()];
    let (db_sql, row_counts) = write_db_sql(&tables, &[&rows]);
    let mut d = base.clone();
    d.tables = tables;
    d.db_sql = db_sql;
    d.row_counts = row_counts;
    d.media.clear();
    let text = String::from_utf8(d.db_sql.clone()).expect("db.sql is UTF-8");
    (d, text)
}

/// One raw tar entry.
#[derive(Clone)]
struct Entry {
    path: Vec<u8>,
    typeflag: u8,
    link: Vec<u8>,
    data: Vec<u8>,
    corrupt_checksum: bool,
    mode: u32,
    padding_fill: u8,
}

impl Entry {
    fn file(path: &str, data: Vec<u8>) -> Entry {
        Entry::raw(path.as_bytes(), b'0', data)
    }
    fn raw(path: &[u8], typeflag: u8, data: Vec<u8>) -> Entry {
        Entry {
            path: path.to_vec(),
            typeflag,
            link: Vec::new(),
            data,
            corrupt_checksum: false,
            mode: 0o644,
            padding_fill: 0,
        }
    }
}

/// Serialises entries as ustar (prefix/name split at a `/` for paths over 100 bytes), then the
/// end-of-archive marker and `padding_blocks` more zero blocks.
fn tar_bytes(entries: &[Entry], padding_blocks: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_ustar();
        {
            let u = h.as_ustar_mut().expect("ustar header");
            if e.path.len() <= 100 {
                u.name[..e.path.len()].copy_from_slice(&e.path);
            } else {
                let split = e.path[..e.path.len().min(156)]
                    .iter()
                    .rposition(|&b| b == b'/')
                    .expect("long vector paths have a slash within 156 bytes");
                let (prefix, name) = (&e.path[..split], &e.path[split + 1..]);
                u.prefix[..prefix.len()].copy_from_slice(prefix);
                u.name[..name.len()].copy_from_slice(name);
            }
            u.linkname[..e.link.len()].copy_from_slice(&e.link);
        }
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_780_315_200);
        h.set_size(e.data.len() as u64);
        h.set_entry_type(tar::EntryType::new(e.typeflag));
        h.set_cksum();
        if e.corrupt_checksum {
            h.as_mut_bytes()[148] ^= 0x01;
        }
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&e.data);
        out.resize(out.len().div_ceil(512) * 512, e.padding_fill);
    }
    out.resize(out.len() + 1024 + padding_blocks * 512, 0);
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, 3).expect("compressing in memory cannot fail")
}

/// Signs manifest bytes with a signer, base64 + newline (the `export.signature` content).
fn signature_entry(signer: &dyn Signer, manifest: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let sig = signer.sign(manifest).expect("vector keys sign");
    let mut b = base64::engine::general_purpose::STANDARD
        .encode(sig)
        .into_bytes();
    b.push(b'\n');
    b
}

/// `built` with its P-256 signature `(r, s)` replaced by its twin `(r, n - s)`, which verifies
/// for the same manifest.
fn good_twin_signature(built: &Built) -> Built {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = std::str::from_utf8(&built.signature).expect("base64 text");
    let der = b64
        .decode(text.trim_end())
        .expect("vector signature is base64");
    let sig = p256::ecdsa::Signature::from_der(&der).expect("vector signature is DER");
    let twin = p256::ecdsa::Signature::from_scalars(sig.r().to_bytes(), (-*sig.s()).to_bytes())
        .expect("n - s is a valid scalar");
    let mut signature = b64.encode(twin.to_der().as_bytes()).into_bytes();
    signature.push(b'\n');
    Built {
        content: built.content.clone(),
        manifest: built.manifest.clone(),
        signature,
    }
}

/// Assembles content entries + manifest + signature into a compressed archive.
fn assemble(content: Vec<Entry>, manifest: &[u8], signature: Vec<u8>) -> Vec<u8> {
    let mut entries = content;
    entries.push(Entry::file(format::MANIFEST_JSON, manifest.to_vec()));
    entries.push(Entry::file(format::EXPORT_SIGNATURE, signature));
    zstd(&tar_bytes(&entries, 0))
}

struct Built {
    content: Vec<Entry>,
    manifest: Vec<u8>,
    signature: Vec<u8>,
}

fn build(draft: &Draft, signer: &dyn Signer) -> Built {
    let manifest = format::to_canonical_json(&draft.manifest());
    let signature = signature_entry(signer, &manifest);
    Built {
        content: draft.content_entries(),
        manifest,
        signature,
    }
}

impl Built {
    fn entries(&self) -> Vec<Entry> {
        let mut e = self.content.clone();
        e.push(Entry::file(format::MANIFEST_JSON, self.manifest.clone()));
        e.push(Entry::file(
            format::EXPORT_SIGNATURE,
            self.signature.clone(),
        ));
        e
    }
    fn archive(&self) -> Vec<u8> {
        assemble(self.content.clone(), &self.manifest, self.signature.clone())
    }
}

/// Generates every vector, in a fixed order.
pub fn generate() -> Vec<Vector> {
    let keys = VectorKeys::new();
    let std_draft = Draft::standard(&keys);
    let good = build(&std_draft, &keys.main);
    let mut out = Collector(Vec::new());
    // ---- valid ----
    out.add(
        "valid_basic",
        good.archive(),
        "valid",
        "a small room: replies, unicode, escapes, two media objects, P-256",
    );
    {
        let mut d = std_draft.clone();
        d.algorithm = Algorithm::Ed25519;
        d.key_id = keys.ed25519.key_id().to_string();
        out.add(
            "valid_ed25519",
            build(&d, &keys.ed25519).archive(),
            "valid",
            "signed with Ed25519",
        );
    }
    {
        let mut d = std_draft.clone();
        let (db, counts) = write_db_sql(&d.tables, &[&vec![], &vec![]]);
        d.db_sql = db;
        d.row_counts = counts;
        d.media.clear();
        out.add(
            "valid_empty_room",
            build(&d, &keys.main).archive(),
            "valid",
            "no rows and no media: empty COPY blocks",
        );
    }
    {
        let b = good.entries();
        let (first, rest) = b.split_at(2);
        let mut tar1 = tar_bytes(first, 0);
        tar1.truncate(tar1.len() - 1024);
        let mut bytes = zstd(&tar1);
        bytes.extend(zstd(&tar_bytes(rest, 0)));
        out.add(
            "valid_multi_frame",
            bytes,
            "valid",
            "the tar stream split over two concatenated zstd frames",
        );
    }
    {
        // A zstd skippable frame (magic 0x184D2A50, then a length) before the data frame:
        // decoders skip it, so it changes the archive's bytes but nothing that is extracted.
        let mut a = vec![0x50, 0x2a, 0x4d, 0x18, 8, 0, 0, 0];
        a.extend_from_slice(b"unsigned");
        a.extend_from_slice(&good.archive());
        out.add(
            "valid_skippable_frame",
            a,
            "valid",
            "a zstd skippable frame before the data: transport, not content (docs §1)",
        );
    }
    {
        let twin = good_twin_signature(&good);
        out.add(
            "valid_signature_twin",
            twin.archive(),
            "valid",
            "valid_basic with the other-S twin of its ECDSA signature: also valid, same manifest",
        );
    }
    out.add(
        "valid_record_padding",
        zstd(&tar_bytes(&good.entries(), 18)),
        "valid",
        "zero blocks after the end marker up to GNU tar's 10 KiB record",
    );
    {
        let mut d = std_draft.clone();
        d.media.push((
            format!(
                "{}/{}",
                "d".repeat(90),
                "long-name-needing-the-ustar-prefix.bin"
            ),
            b"x".to_vec(),
        ));
        out.add(
            "valid_long_path_prefix",
            build(&d, &keys.main).archive(),
            "valid",
            "a 135-byte path stored with the ustar prefix field",
        );
    }
    {
        let mut d = std_draft.clone();
        let big: Vec<u8> = (0u64..300_000).map(|i| splitmix64(i) as u8).collect();
        d.media.push(("att/0003-big.bin".into(), big));
        out.add(
            "valid_multi_block_media",
            build(&d, &keys.main).archive(),
            "valid",
            "a 300 KB incompressible object spanning many blocks and chunks",
        );
    }

    // ---- container ----
    {
        let mut a = good.archive();
        a.truncate(a.len() - 40);
        out.add(
            "truncated_frame",
            a,
            "fail_truncated",
            "the zstd frame is cut short",
        );
    }
    {
        let mut t = tar_bytes(&good.entries(), 0);
        t.truncate(t.len() - 1024 - 512);
        out.add(
            "truncated_tar",
            zstd(&t),
            "fail_truncated",
            "a complete zstd frame whose tar stream stops before the signature's data ends",
        );
    }
    {
        let mut t = tar_bytes(&good.entries(), 0);
        t.extend_from_slice(b"GARBAGE AFTER THE END MARKER");
        t.resize(t.len().div_ceil(512) * 512, 0);
        out.add(
            "trailing_garbage_tar",
            zstd(&t),
            "fail_trailing_garbage",
            "non-zero bytes after the tar end-of-archive marker",
        );
    }
    {
        let mut a = good.archive();
        a.extend_from_slice(b"not a zstd frame");
        out.add(
            "trailing_garbage_frame",
            a,
            "fail_trailing_garbage",
            "non-zstd bytes after the last frame",
        );
    }
    {
        let mut e = good.entries();
        e[0].padding_fill = b'A';
        out.add(
            "nonzero_padding",
            zstd(&tar_bytes(&e, 0)),
            "fail_nonzero_padding",
            "db.sql's block padding holds bytes nothing signs",
        );
    }
    {
        let mut e = good.entries();
        e[1].mode = 0o4755;
        out.add(
            "unsafe_mode",
            zstd(&tar_bytes(&e, 0)),
            "fail_unsafe_mode",
            "a media entry with mode 4755: tar -x as root would make a set-uid program",
        );
    }
    {
        let mut e = good.entries();
        e[1].corrupt_checksum = true;
        out.add(
            "bad_header_checksum",
            zstd(&tar_bytes(&e, 0)),
            "fail_malformed_archive",
            "a tar header whose checksum is wrong",
        );
    }
    out.add(
        "not_zstd",
        tar_bytes(&good.entries(), 0),
        "fail_malformed_archive",
        "an uncompressed tar: not a zstd frame",
    );

    // ---- hostile entries (each inserted after db.sql) ----
    let hostile = |entry: Entry| {
        let mut e = good.entries();
        e.insert(1, entry);
        zstd(&tar_bytes(&e, 0))
    };
    out.add(
        "absolute_path",
        hostile(Entry::file("/etc/passwd", b"x".to_vec())),
        "fail_absolute_path",
        "an entry at /etc/passwd",
    );
    out.add(
        "path_traversal",
        hostile(Entry::file("media/../../evil.sh", b"x".to_vec())),
        "fail_path_traversal",
        "media/../../evil.sh",
    );
    out.add(
        "invalid_path_dot",
        hostile(Entry::file("media/./a", b"x".to_vec())),
        "fail_invalid_path",
        "a `.` component",
    );
    out.add(
        "non_utf8_name",
        hostile(Entry::raw(b"media/\xff\xfe.bin", b'0', b"x".to_vec())),
        "fail_non_utf8_name",
        "a name that is not UTF-8",
    );
    out.add(
        "name_too_long",
        hostile(Entry::file(
            &format!("media/{}/{}", "a".repeat(120), "b".repeat(90)),
            b"x".to_vec(),
        )),
        "fail_name_too_long",
        "a 217-byte path (limit 200)",
    );
    out.add(
        "gnu_long_name",
        hostile(Entry::raw(b"././@LongLink", b'L', b"media/x\0".to_vec())),
        "fail_name_too_long",
        "a GNU long-name record",
    );
    {
        let mut e = Entry::raw(b"media/link", b'2', Vec::new());
        e.link = b"/etc/shadow".to_vec();
        out.add(
            "symlink",
            hostile(e),
            "fail_symlink",
            "a symbolic link to /etc/shadow",
        );
    }
    {
        let mut e = Entry::raw(b"media/hard", b'1', Vec::new());
        e.link = b"db.sql".to_vec();
        out.add(
            "hardlink",
            hostile(e),
            "fail_hardlink",
            "a hard link to db.sql",
        );
    }
    out.add(
        "char_device",
        hostile(Entry::raw(b"media/null", b'3', Vec::new())),
        "fail_special_file",
        "a character device",
    );
    out.add(
        "fifo",
        hostile(Entry::raw(b"media/pipe", b'6', Vec::new())),
        "fail_special_file",
        "a FIFO",
    );
    out.add(
        "directory",
        hostile(Entry::raw(b"media/dir/", b'5', Vec::new())),
        "fail_unsupported_entry_type",
        "a directory entry",
    );
    out.add(
        "pax_header",
        hostile(Entry::raw(
            b"PaxHeader/x",
            b'x',
            b"20 path=media/evil\n".to_vec(),
        )),
        "fail_unsupported_entry_type",
        "a PAX extended header",
    );
    out.add(
        "unexpected_entry",
        hostile(Entry::file("notes/readme.txt", b"hello".to_vec())),
        "fail_unexpected_entry",
        "a file outside db.sql, media/, manifest.json, export.signature",
    );

    // ---- entry set and order ----
    {
        let mut e = good.entries();
        let dup = e[1].clone();
        e.insert(2, dup);
        out.add(
            "duplicate_entry",
            zstd(&tar_bytes(&e, 0)),
            "fail_duplicate_entry",
            "the same media path twice",
        );
    }
    {
        let mut e = good.entries();
        e.swap(1, 2);
        out.add(
            "media_out_of_order",
            zstd(&tar_bytes(&e, 0)),
            "fail_entry_order",
            "media entries not in ascending path order",
        );
    }
    {
        let mut e = good.entries();
        e.swap(0, 1);
        out.add(
            "db_sql_not_first",
            zstd(&tar_bytes(&e, 0)),
            "fail_entry_order",
            "a media entry before db.sql",
        );
    }
    {
        let mut e = good.entries();
        let n = e.len();
        e.swap(n - 1, n - 2);
        out.add(
            "signature_before_manifest",
            zstd(&tar_bytes(&e, 0)),
            "fail_entry_order",
            "export.signature before manifest.json",
        );
    }
    {
        let mut e = good.entries();
        e.push(Entry::file("media/zzz-late.bin", b"late".to_vec()));
        out.add(
            "entry_after_signature",
            zstd(&tar_bytes(&e, 0)),
            "fail_entry_after_signature",
            "a media entry after export.signature",
        );
    }
    {
        let mut e = good.entries();
        e.pop();
        out.add(
            "missing_signature",
            zstd(&tar_bytes(&e, 0)),
            "fail_missing_signature",
            "no export.signature",
        );
    }
    {
        let e: Vec<Entry> = good.content.clone();
        out.add(
            "missing_manifest",
            zstd(&tar_bytes(&e, 0)),
            "fail_missing_manifest",
            "neither manifest.json nor export.signature",
        );
    }
    {
        let mut content = good.content.clone();
        content.remove(1);
        out.add(
            "missing_entry",
            assemble(content, &good.manifest, good.signature.clone()),
            "fail_missing_entry",
            "a media file listed in the signed manifest is absent",
        );
    }
    {
        let mut content = good.content.clone();
        content.push(Entry::file("media/zz-unlisted.bin", b"smuggled".to_vec()));
        out.add(
            "extra_entry",
            assemble(content, &good.manifest, good.signature.clone()),
            "fail_extra_entry",
            "a media file the signed manifest does not list",
        );
    }
    {
        let mut content = good.content.clone();
        content[2].data[0] ^= 0x20;
        out.add(
            "digest_mismatch",
            assemble(content, &good.manifest, good.signature.clone()),
            "fail_digest_mismatch",
            "one byte of a media file changed after signing",
        );
    }
    {
        let mut content = good.content.clone();
        content[2].data.push(b'!');
        out.add(
            "size_mismatch",
            assemble(content, &good.manifest, good.signature.clone()),
            "fail_size_mismatch",
            "a media file one byte longer than listed",
        );
    }

    // ---- bombs and limits ----
    {
        let mut d = std_draft.clone();
        d.media.push(("att/zeros.bin".into(), vec![0u8; 64 << 20]));
        out.add(
            "bomb_ratio",
            build(&d, &keys.main).archive(),
            "fail_compression_ratio",
            "64 MiB of zeros in a few KiB: stopped by the ratio limit",
        );
    }
    out.add_limited(
        "too_large",
        good.archive(),
        "fail_too_large",
        "max_total_bytes=4096",
        "more decompressed bytes than a configured limit",
    );
    out.add_limited(
        "too_many_entries",
        good.archive(),
        "fail_too_many_entries",
        "max_entries=3",
        "more entries than a configured limit",
    );
    out.add_limited(
        "manifest_too_large",
        good.archive(),
        "fail_manifest_too_large",
        "max_manifest_bytes=256",
        "manifest larger than a configured limit",
    );
    out.add_limited(
        "window_too_large",
        zstd_long_window(&tar_bytes(&good.entries(), 0)),
        "fail_malformed_archive",
        "max_window_log=20",
        "a frame whose window exceeds the configured maximum",
    );

    // ---- manifest ----
    {
        let mut d = std_draft.clone();
        d.format_version = format::FORMAT_VERSION + 1;
        out.add(
            "unsupported_version",
            build(&d, &keys.main).archive(),
            "fail_unsupported_version",
            "format_version 2: newer than this verifier",
        );
    }
    {
        let pretty = serde_json::to_vec_pretty(
            &serde_json::from_slice::<serde_json::Value>(&good.manifest).expect("manifest is JSON"),
        )
        .expect("serialises");
        let sig = signature_entry(&keys.main, &pretty);
        out.add(
            "manifest_not_canonical",
            assemble(good.content.clone(), &pretty, sig),
            "fail_manifest_not_canonical",
            "a pretty-printed (validly signed) manifest",
        );
    }
    {
        let mut v: serde_json::Value =
            serde_json::from_slice(&good.manifest).expect("manifest is JSON");
        v["room"]["id"] = serde_json::Value::String("x\"; DROP SCHEMA public; --".into());
        let bytes = serde_json::to_vec(&v).expect("serialises");
        let sig = signature_entry(&keys.main, &bytes);
        out.add(
            "manifest_invalid_room_id",
            assemble(good.content.clone(), &bytes, sig),
            "fail_manifest_invalid",
            "a room id carrying SQL injection, validly signed",
        );
    }
    {
        let mut v: serde_json::Value =
            serde_json::from_slice(&good.manifest).expect("manifest is JSON");
        v["tables"][0]["name"] =
            serde_json::Value::String("messages\" (x int); DROP TABLE users; --".into());
        let bytes = serde_json::to_vec(&v).expect("serialises");
        let sig = signature_entry(&keys.main, &bytes);
        out.add(
            "manifest_invalid_table_name",
            assemble(good.content.clone(), &bytes, sig),
            "fail_manifest_invalid",
            "a table name carrying SQL injection, validly signed",
        );
    }
    {
        let mut v: serde_json::Value =
            serde_json::from_slice(&good.manifest).expect("manifest is JSON");
        v["room"]["name"] = serde_json::Value::Null;
        let bytes = serde_json::to_vec(&v).expect("serialises");
        let sig = signature_entry(&keys.main, &bytes);
        out.add(
            "manifest_null_optional",
            assemble(good.content.clone(), &bytes, sig),
            "fail_manifest_invalid",
            "room.name is null instead of absent: bytes that do not round-trip (found by fuzzing)",
        );
    }

    // ---- signature and keys ----
    {
        let mut d = std_draft.clone();
        d.media[1].1 = b"notes: a different manifest\n".to_vec();
        let other = format::to_canonical_json(&d.manifest());
        let sig = signature_entry(&keys.main, &other);
        out.add(
            "signature_other_manifest",
            assemble(good.content.clone(), &good.manifest, sig),
            "fail_signature_invalid",
            "export.signature is a valid signature of a different manifest",
        );
    }
    out.add(
        "signature_not_base64",
        assemble(
            good.content.clone(),
            &good.manifest,
            b"%%% not base64 %%%\n".to_vec(),
        ),
        "fail_signature_malformed",
        "export.signature is not base64",
    );
    {
        let mut d = std_draft.clone();
        d.key_id = keys.stranger.key_id().to_string();
        out.add(
            "unknown_key",
            build(&d, &keys.stranger).archive(),
            "fail_unknown_key",
            "signed by a key absent from the trusted set",
        );
    }
    {
        let mut d = std_draft.clone();
        d.key_id = keys.revoked.key_id().to_string();
        out.add(
            "key_revoked",
            build(&d, &keys.revoked).archive(),
            "fail_key_revoked",
            "signed by a revoked key",
        );
    }
    {
        let mut d = std_draft.clone();
        d.key_id = keys.expired.key_id().to_string();
        out.add(
            "key_expired",
            build(&d, &keys.expired).archive(),
            "fail_key_expired",
            "signed after the key's not_after",
        );
    }
    {
        let mut d = std_draft.clone();
        d.key_id = keys.future.key_id().to_string();
        out.add(
            "key_not_yet_valid",
            build(&d, &keys.future).archive(),
            "fail_key_not_yet_valid",
            "signed before the key's not_before",
        );
    }
    {
        let mut d = std_draft.clone();
        d.algorithm = Algorithm::Ed25519;
        out.add(
            "key_algorithm_mismatch",
            build(&d, &keys.main).archive(),
            "fail_key_algorithm_mismatch",
            "manifest claims ed25519 for a P-256 key",
        );
    }
    {
        let mut d = std_draft.clone();
        d.key_id = keys.main.key_id().to_string();
        let wrong = build(&d, &keys.stranger);
        out.add(
            "signature_wrong_key",
            wrong.archive(),
            "fail_signature_invalid",
            "names the main key but was signed by another",
        );
    }

    // ---- db.sql ----
    {
        let mut d = std_draft.clone();
        d.row_counts[0] += 1;
        out.add(
            "row_count_mismatch",
            build(&d, &keys.main).archive(),
            "fail_row_count_mismatch",
            "the signed manifest claims one message more than db.sql holds",
        );
    }
    {
        let mut d = std_draft.clone();
        let text = String::from_utf8(d.db_sql.clone()).expect("db.sql is UTF-8");
        let injected = text.replacen(
            "COPY \"messages\"",
            "DROP TABLE users;\nCOPY \"messages\"",
            1,
        );
        d.db_sql = injected.into_bytes();
        out.add(
            "sql_injected_statement",
            build(&d, &keys.main).archive(),
            "fail_sql_unexpected_statement",
            "a DROP TABLE line between COPY blocks, in a validly signed bundle",
        );
    }
    {
        let mut d = std_draft.clone();
        let text = String::from_utf8(d.db_sql.clone()).expect("db.sql is UTF-8");
        d.db_sql = text.replacen("\tada\t", "\tada\textra\t", 1).into_bytes();
        out.add(
            "sql_field_count",
            build(&d, &keys.main).archive(),
            "fail_sql_field_count",
            "a row with one field too many",
        );
    }
    {
        let mut d = std_draft.clone();
        let text = String::from_utf8(d.db_sql.clone()).expect("db.sql is UTF-8");
        let cut = text.rfind("\\.\n").expect("db.sql has COPY blocks");
        d.db_sql = text.as_bytes()[..cut].to_vec();
        out.add(
            "sql_unterminated_copy",
            build(&d, &keys.main).archive(),
            "fail_sql_unterminated_copy",
            "the last COPY block lacks its \\. terminator",
        );
    }

    // ---- db.sql: where a row and a block end (docs/bundle-format.md §4.1) ----
    {
        // The attack that verified before the codec's rules: a one-column table whose first
        // "row" is `\.` CR, then a line of SQL. psql ends COPY at `\.` CR LF and runs the next
        // line; the old scanner counted both lines as rows of one field each.
        let notes = notes_table();
        let (mut d, text) = with_one_text_table(&std_draft, &notes, &["first"]);
        let smuggled = text.replacen(
            "FROM stdin;\n",
            "FROM stdin;\n\\.\r\nDROP TABLE users;\n",
            1,
        );
        d.db_sql = smuggled.into_bytes();
        d.row_counts = vec![3];
        out.add(
            "sql_end_marker_crlf",
            build(&d, &keys.main).archive(),
            "fail_sql_carriage_return",
            "a COPY line \\. CR LF then DROP TABLE: psql would end the block there and run it",
        );
    }
    let raw_row_cases: [(&'static str, &str, &str, &str); 9] = [
        (
            "sql_carriage_return_in_field",
            "a\rb",
            "fail_sql_carriage_return",
            "a raw CR inside a value (PostgreSQL ends the row there or refuses the file)",
        ),
        (
            "sql_end_marker_mid_line",
            "note \\.",
            "fail_sql_end_marker",
            "an unescaped \\. inside a value (PostgreSQL 15 ends the COPY data there)",
        ),
        (
            "sql_end_marker_with_text",
            "\\.more",
            "fail_sql_end_marker",
            "a line starting \\. with more text (psql and the server disagree on it)",
        ),
        (
            "sql_backslash_newline",
            "line one\\\nline two",
            "fail_sql_bad_escape",
            "a backslash before the LF (PostgreSQL joins the two lines into one row)",
        ),
        (
            "sql_backslash_tab",
            "a\\\tb",
            "fail_sql_bad_escape",
            "a backslash before a tab (PostgreSQL reads one field, a tab counter two)",
        ),
        (
            "sql_octal_escape",
            "\\101",
            "fail_sql_bad_escape",
            "an octal escape (never written; decodes to bytes the verifier cannot see)",
        ),
        (
            "sql_null_inside_field",
            "a\\Nb",
            "fail_sql_bad_escape",
            "\\N inside a longer field (only a whole field \\N means NULL)",
        ),
        (
            "sql_invalid_utf8",
            "caf\u{FFFD}",
            "fail_sql_invalid_text",
            "a value that is not UTF-8",
        ),
        (
            "sql_nul_byte",
            "a\0b",
            "fail_sql_invalid_text",
            "a raw NUL byte in a value",
        ),
    ];
    for (name, raw, expect, about) in raw_row_cases {
        let notes = notes_table();
        let (mut d, text) = with_one_text_table(&std_draft, &notes, &["first", "MARK"]);
        let mut bytes = text.replacen("MARK", raw, 1).into_bytes();
        if name == "sql_invalid_utf8" {
            let at = bytes
                .windows(3)
                .position(|w| w == "\u{FFFD}".as_bytes())
                .expect("placeholder present");
            bytes.splice(at..at + 3, [0xff]);
        }
        d.db_sql = bytes;
        out.add(name, build(&d, &keys.main).archive(), expect, about);
    }
    {
        let notes = notes_table();
        let (mut d, text) = with_one_text_table(&std_draft, &notes, &["first"]);
        d.db_sql = text
            .strip_suffix('\n')
            .expect("ends with LF")
            .as_bytes()
            .to_vec();
        out.add(
            "sql_final_line_without_lf",
            build(&d, &keys.main).archive(),
            "fail_sql_unterminated_copy",
            "db.sql ends with \\. but no LF",
        );
    }
    {
        // Every byte the rules give meaning to, written as the writer writes it: psql and
        // roomshard must load exactly these values.
        let notes = notes_table();
        let (d, _) = with_one_text_table(&std_draft, &notes, ESCAPE_VECTOR_VALUES);
        out.add(
            "valid_copy_escapes",
            build(&d, &keys.main).archive(),
            "valid",
            "values holding \\., \\N, CR, LF, tab and backslashes, escaped as the writer does",
        );
    }

    // ---- manifest timestamps and deceptive names ----
    {
        let mut d = std_draft.clone();
        d.created_at = "2026-02-31T23:59:60Z";
        out.add(
            "invalid_timestamp",
            build(&d, &keys.main).archive(),
            "fail_invalid_timestamp",
            "created_at 2026-02-31T23:59:60Z has the right shape but names no real instant",
        );
    }
    {
        let mut d = std_draft.clone();
        d.media.push((
            "att/evil\u{202E}gnp.exe".into(),
            b"MZ not a picture".to_vec(),
        ));
        out.add(
            "deceptive_path",
            build(&d, &keys.main).archive(),
            "fail_deceptive_path",
            "a media name with U+202E that displays as evilexe.png",
        );
    }
    let twin_cases: [(&'static str, [&str; 2], &str, &str); 4] = [
        (
            "path_case_twin",
            ["att/Readme", "att/readme"],
            "fail_path_case_twin",
            "media/att/Readme and media/att/readme: one file on case-insensitive file systems",
        ),
        (
            "path_normalization_twin",
            ["att/caf\u{e9}", "att/cafe\u{301}"],
            "fail_path_normalization_twin",
            "café in NFC and in NFD: one file on normalisation-insensitive file systems",
        ),
        (
            "path_file_dir_conflict",
            ["att/a", "att/a/b"],
            "fail_path_file_dir_conflict",
            "media/att/a is a file and media/att/a/b needs it to be a directory",
        ),
        (
            "path_bad_escape",
            ["att/50%off", "att/x"],
            "fail_invalid_path",
            "a media name with a % that starts no escape (names are percent-encoded keys)",
        ),
    ];
    for (name, paths, expect, about) in twin_cases {
        let mut d = std_draft.clone();
        for p in paths {
            d.media.push((p.to_string(), p.as_bytes().to_vec()));
        }
        out.add(name, build(&d, &keys.main).archive(), expect, about);
    }
    out.0
}

/// SplitMix64: a fixed, well-mixed byte source for incompressible test data.
fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Collects vectors with their `.expect` text.
struct Collector(Vec<Vector>);

impl Collector {
    fn add(&mut self, name: &'static str, archive: Vec<u8>, expect: &str, about: &str) {
        let expect = format!("expect: {expect}\nabout: {about}\n");
        self.0.push(Vector {
            name,
            archive,
            expect,
        });
    }

    fn add_limited(
        &mut self,
        name: &'static str,
        archive: Vec<u8>,
        expect: &str,
        limits: &str,
        about: &str,
    ) {
        let expect = format!("expect: {expect}\nlimits: {limits}\nabout: {about}\n");
        self.0.push(Vector {
            name,
            archive,
            expect,
        });
    }
}

/// Compresses with a 2^23-byte window declared in the frame header, to exercise the window limit.
fn zstd_long_window(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    // Streaming without a pledged size keeps the declared window at 2^23 even for small input.
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
    e.set_parameter(zstd::stream::raw::CParameter::WindowLog(23))
        .expect("window log 23 is valid");
    e.include_contentsize(false).expect("valid parameter");
    e.write_all(data).expect("writing to memory cannot fail");
    e.finish().expect("writing to memory cannot fail")
}

/// Writes every vector and `trusted-keys.json` into `dir`.
pub fn write_all(dir: &Path) -> io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let keys = VectorKeys::new();
    let mut set = serde_json::to_string_pretty(&keys.key_set())?;
    set.push('\n');
    std::fs::write(dir.join("trusted-keys.json"), set)?;
    let vectors = generate();
    for v in &vectors {
        std::fs::write(dir.join(format!("{}.tar.zst", v.name)), &v.archive)?;
        std::fs::write(dir.join(format!("{}.expect", v.name)), &v.expect)?;
    }
    Ok(vectors.len())
}
