//! Shared support for roomshard's interop tests: a fixture builder that writes a realistic bundle
//! with `roomshard-bundle` (the real writer, not hand-made bytes), and helpers that run real
//! third-party tools and fail loudly when one is missing.
//!
//! Every tool these tests use must be installed (see `/work/shared/TESTING.md` and `.ci/`): a
//! missing tool is a test failure with a message saying what to install, never a silent skip.
#![allow(clippy::unwrap_used)]

pub mod pg;

use roomshard_bundle::{
    BundleMeta, BundleWriter, CopyValue, DbSqlWriter, HashingWriter, LocalP256Signer,
    WriterOptions, sidecar,
};
use roomshard_verify::format::{
    ColumnDescriptor, Exporter, KeySet, LogicalType, Manifest, RoomInfo, TableDescriptor,
};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// Room id of the fixture.
pub const ROOM: &str = "interop-room";
/// Signing time of the fixture (inside the key's validity).
pub const CREATED_AT: &str = "2026-06-01T12:00:00Z";

/// Text with unicode, tabs, newlines, carriage returns and backslashes (and things that look like
/// COPY escapes), stored in `samples.note` of row 1.
pub const TRICKY_TEXT: &str = "Grüße \u{1F44B} 漢字\ttab\nnewline\r\ncrlf \\ backslash \\N not-null \\. not-end 'quote' \"dq\"";
/// A second tricky text (messages.body of row 2): a literal `\.` line inside a value.
pub const TRICKY_BODY: &str = "line one\n\\.\nline three\t\u{00e9}\u{0301}";
/// Bytes in `samples.blob` of row 1: every byte value, including NUL, tab, newline and backslash.
pub fn tricky_bytes() -> Vec<u8> {
    (0u8..=255).chain([b'\\', b'\t', b'\n', 0]).collect()
}
/// JSON in `samples.doc` of row 1.
pub const TRICKY_JSON: &str =
    r#"{"a":[1,2.5,null,true,false],"k":"v\tw\\x \"q\"","nested":{"ü":"ñ","emoji":"🎉"}}"#;
/// UUID in `samples.uid` of row 1.
pub const UUID_1: &str = "0b9e4c1a-7f3d-4e2a-9c5b-1d2e3f405162";
/// Timestamp in `samples.at` of row 1 (COPY text form, microseconds).
pub const TS_1: &str = "2026-05-01 09:01:30.123456+00";

/// A bundle written into a temp dir, with everything a third-party tool needs to check it.
pub struct Fixture {
    /// The temp dir holding every file below (removed on drop).
    pub dir: tempfile::TempDir,
    /// `room_<id>.tar.zst`.
    pub archive: PathBuf,
    /// `room_<id>.tar.zst.sigstore.json`.
    pub sidecar: PathBuf,
    /// The signer's SPKI PEM public key.
    pub public_pem: PathBuf,
    /// `trusted-keys.json` holding that key.
    pub trusted_keys: PathBuf,
    /// The signer's key id.
    pub key_id: String,
    /// The manifest written into the archive.
    pub manifest: Manifest,
    /// Its exact bytes.
    pub manifest_bytes: Vec<u8>,
    /// SHA-256 (hex) of the archive file.
    pub archive_sha256: String,
    /// The table descriptors, in `db.sql` order.
    pub tables: Vec<TableDescriptor>,
    /// Row counts per table, as the SQL writer counted them.
    pub row_counts: Vec<u64>,
    /// Media objects by key (without the `media/` prefix), in archive order.
    pub media: Vec<(String, Vec<u8>)>,
}

impl Fixture {
    /// Path of a file inside the fixture's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn col(name: &str, t: LogicalType, nullable: bool) -> ColumnDescriptor {
    ColumnDescriptor::new(name, t, nullable)
}

/// The fixture's tables: `messages` (with a self-reference and a media column), `samples` (one
/// column of every logical type) and `pins` (always empty).
pub fn tables() -> Vec<TableDescriptor> {
    let reply_to = col("reply_to", LogicalType::Int8, true).referencing("messages", "id");
    let pinned = col("message_id", LogicalType::Int8, false).referencing("messages", "id");
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
                col("edited", LogicalType::Bool, false),
            ],
            primary_key: vec!["id".into()],
            room_key_column: "room_id".into(),
            id_columns: vec!["id".into()],
            media_columns: vec!["attachment_key".into()],
        },
        TableDescriptor {
            name: "samples".into(),
            columns: vec![
                col("id", LogicalType::Int4, false),
                col("room_id", LogicalType::Text, false),
                col("n8", LogicalType::Int8, true),
                col("n4", LogicalType::Int4, true),
                col("flag", LogicalType::Bool, true),
                col("f8", LogicalType::Float8, true),
                col("at", LogicalType::Timestamptz, true),
                col("blob", LogicalType::Bytea, true),
                col("doc", LogicalType::Jsonb, true),
                col("uid", LogicalType::Uuid, true),
                col("note", LogicalType::Text, true),
            ],
            primary_key: vec!["id".into()],
            room_key_column: "room_id".into(),
            id_columns: vec!["id".into()],
            media_columns: vec![],
        },
        TableDescriptor {
            name: "pins".into(),
            columns: vec![
                pinned,
                col("room_id", LogicalType::Text, false),
                col("pinned_by", LogicalType::Uuid, false),
            ],
            primary_key: vec!["message_id".into()],
            room_key_column: "room_id".into(),
            id_columns: vec![],
            media_columns: vec![],
        },
    ]
}

/// One expected `samples.f8` value per row id, as PostgreSQL prints it (`f8::text`).
pub const FLOAT_ROWS: &[(i32, f64, &str)] = &[
    (1, f64::NAN, "NaN"),
    (2, f64::INFINITY, "Infinity"),
    (3, f64::NEG_INFINITY, "-Infinity"),
    (4, -0.5, "-0.5"),
    (5, 0.1, "0.1"),
    (6, 1.0e300, "1e+300"),
    (7, -0.0, "-0"),
];

/// Rows of one table.
type Rows = Vec<Vec<CopyValue>>;

fn rows() -> (Rows, Rows, Rows) {
    use CopyValue as V;
    let t = |s: &str| V::Text(s.to_string());
    let messages = vec![
        vec![
            V::Int8(1),
            t(ROOM),
            t("ada"),
            t("Welcome 👋"),
            V::Null,
            V::Timestamptz("2026-05-01 09:00:00+00".into()),
            V::Null,
            V::Bool(false),
        ],
        vec![
            V::Int8(2),
            t(ROOM),
            t("grace"),
            t(TRICKY_BODY),
            V::Int8(1),
            V::Timestamptz("2026-05-01 09:01:30.250000+00".into()),
            t("att/0001-diagram.png"),
            V::Bool(true),
        ],
        vec![
            V::Int8(i64::MAX),
            t(ROOM),
            t("linus"),
            V::Null,
            V::Int8(2),
            V::Timestamptz("1970-01-01 00:00:00+00".into()),
            t("att/nested/deep/notes.txt"),
            V::Bool(false),
        ],
        vec![
            V::Int8(i64::MIN),
            t(ROOM),
            t("\\N"),
            t(""),
            V::Null,
            V::Timestamptz("2038-01-19 03:14:08.999999+00".into()),
            V::Null,
            V::Bool(true),
        ],
    ];
    let mut samples = Vec::new();
    for &(id, f, _) in FLOAT_ROWS {
        let full = id == 1;
        samples.push(vec![
            V::Int4(id),
            t(ROOM),
            V::Int8(if full {
                i64::MIN
            } else {
                i64::from(id) * 1_000_000_007
            }),
            V::Int4(if full { i32::MIN } else { i32::MAX - id }),
            V::Bool(id % 2 == 0),
            V::Float8(f),
            if full {
                V::Timestamptz(TS_1.into())
            } else {
                V::Null
            },
            if full {
                V::Bytea(tricky_bytes())
            } else {
                V::Bytea(Vec::new())
            },
            if full {
                V::Jsonb(TRICKY_JSON.into())
            } else {
                V::Jsonb("[]".into())
            },
            if full {
                V::Uuid(UUID_1.into())
            } else {
                V::Uuid(format!("00000000-0000-4000-8000-{id:012}"))
            },
            if full { t(TRICKY_TEXT) } else { t("") },
        ]);
    }
    // A row of NULLs in every nullable column.
    samples.push(vec![
        V::Int4(8),
        t(ROOM),
        V::Null,
        V::Null,
        V::Null,
        V::Null,
        V::Null,
        V::Null,
        V::Null,
        V::Null,
        V::Null,
    ]);
    (messages, samples, Vec::new())
}

/// The fixture's media objects (keys without `media/`), in ascending byte order of path.
pub fn media() -> Vec<(String, Vec<u8>)> {
    let png: Vec<u8> = (0u32..70_000)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut m = vec![
        ("att/0001-diagram.png".to_string(), png),
        (
            "att/nested/deep/notes.txt".to_string(),
            "notes: ünïcödé\n".as_bytes().to_vec(),
        ),
        (
            "avatars/ada.svg".to_string(),
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n".to_vec(),
        ),
        ("empty.bin".to_string(), Vec::new()),
    ];
    m.sort();
    m
}

/// Options for [`build_fixture_with`]: what differs between otherwise identical fixtures.
#[derive(Clone, Debug)]
pub struct FixtureOptions {
    /// Extra bytes appended to the last media object (so two fixtures differ in content).
    pub media_suffix: Vec<u8>,
    /// Signing time.
    pub created_at: String,
}

impl Default for FixtureOptions {
    fn default() -> Self {
        FixtureOptions {
            media_suffix: Vec::new(),
            created_at: CREATED_AT.into(),
        }
    }
}

/// Writes the standard fixture bundle with a fresh P-256 key.
pub fn build_fixture() -> Fixture {
    build_fixture_with(&FixtureOptions::default(), None)
}

/// Writes a fixture bundle with `options`, signed by `signer` (a fresh key when `None`).
pub fn build_fixture_with(options: &FixtureOptions, signer: Option<&LocalP256Signer>) -> Fixture {
    let started = Instant::now();
    let fresh;
    let signer = match signer {
        Some(s) => s,
        None => {
            fresh = LocalP256Signer::generate(None).expect("generating a P-256 key");
            &fresh
        }
    };
    // ROOMSHARD_INTEROP_KEEP=1 keeps the fixture directory for inspection after the test.
    let dir = tempfile::Builder::new()
        .prefix("roomshard-interop-")
        .disable_cleanup(std::env::var_os("ROOMSHARD_INTEROP_KEEP").is_some())
        .tempdir()
        .expect("creating a temp dir");
    let tables = tables();
    let (messages, samples, pins) = rows();

    // db.sql, through the real SQL writer.
    let mut sql = DbSqlWriter::new(Vec::new(), ROOM, &tables).expect("fixture tables are valid");
    for (t, table_rows) in tables.iter().zip([&messages, &samples, &pins]) {
        sql.begin_table(&t.name).expect("tables in manifest order");
        for r in table_rows {
            sql.write_row(r).expect("fixture rows match their tables");
        }
    }
    let (db_sql, row_counts) = sql.finish().expect("db.sql finishes");
    assert_eq!(
        row_counts,
        vec![4, 8, 0],
        "row counts reported by DbSqlWriter"
    );

    let mut media = media();
    if let Some(last) = media.last_mut() {
        last.1.extend_from_slice(&options.media_suffix);
    }

    // The archive, hashed while written.
    let archive = dir.path().join(format!("room_{ROOM}.tar.zst"));
    let file = fs::File::create(&archive).expect("creating the archive file");
    let meta = BundleMeta {
        room: RoomInfo {
            id: ROOM.into(),
            name: Some("Interop Room — ünïcödé".into()),
        },
        source_instance: "interop.example.org".into(),
        schema_version: "interop-1".into(),
        created_at: options.created_at.clone(),
        tables: tables.clone(),
        exporter: Some(Exporter {
            name: "roomshard-interop-tests".into(),
            version: "1".into(),
        }),
    };
    let mut writer = BundleWriter::new(HashingWriter::new(file), meta, WriterOptions::default())
        .expect("starting the bundle writer");
    writer
        .add_db_sql(db_sql.len() as u64, &db_sql[..])
        .expect("writing db.sql");
    for (key, data) in &media {
        writer
            .add_media(key, data.len() as u64, &data[..])
            .expect("writing a media object");
    }
    let finished = writer
        .finish(&row_counts, signer)
        .expect("finishing the bundle");
    let (file, digest) = finished.out.into_parts();
    file.sync_all().expect("syncing the archive");
    drop(file);
    let archive_sha256 = hex::encode(digest);
    assert_eq!(
        archive_sha256,
        sha256_hex(&fs::read(&archive).expect("reading the archive back")),
        "HashingWriter's digest is the SHA-256 of the file written"
    );

    let manifest_sha256 = sha256_hex(&finished.manifest_bytes);
    assert_eq!(
        manifest_sha256, finished.manifest_sha256,
        "Finished::manifest_sha256"
    );
    let sidecar_bytes = sidecar(&digest, &finished.manifest, &manifest_sha256, signer)
        .expect("writing the sidecar");
    let sidecar_path = dir
        .path()
        .join(format!("room_{ROOM}.tar.zst.sigstore.json"));
    fs::write(&sidecar_path, sidecar_bytes).expect("writing the sidecar");

    let public_pem = dir.path().join("public.pem");
    fs::write(&public_pem, signer.public_key_pem().expect("PEM")).expect("writing public.pem");
    let key = signer
        .trusted_key(
            Some("2026-01-01T00:00:00Z".into()),
            Some("2027-01-01T00:00:00Z".into()),
        )
        .expect("trusted key entry");
    let key_id = key.id.clone();
    let trusted_keys = dir.path().join("trusted-keys.json");
    let set = KeySet { keys: vec![key] };
    fs::write(
        &trusted_keys,
        serde_json::to_vec_pretty(&set).expect("key set JSON"),
    )
    .expect("writing trusted-keys.json");

    eprintln!(
        "fixture: {} ({} bytes) written in {:?}",
        archive.display(),
        fs::metadata(&archive).map(|m| m.len()).unwrap_or(0),
        started.elapsed()
    );
    Fixture {
        dir,
        archive,
        sidecar: sidecar_path,
        public_pem,
        trusted_keys,
        key_id,
        manifest: finished.manifest,
        manifest_bytes: finished.manifest_bytes,
        archive_sha256,
        tables,
        row_counts,
        media,
    }
}

/// SHA-256 of bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The absolute path of a tool on `PATH`; panics with an install hint when it is missing.
pub fn require_tool(name: &str, install_hint: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return candidate;
        }
    }
    panic!(
        "REQUIRED TOOL MISSING: `{name}` is not on PATH ({}). These interop tests run real \
         third-party tools and never skip; install it: {install_hint}",
        path.to_string_lossy()
    );
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs a command and returns its output; panics if it cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; panics with its exit status, stdout and stderr otherwise.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    if !out.status.success() {
        panic!(
            "command failed ({}): {cmd:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Describes an output for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Extracts the archive with GNU tar + zstd into `dest` (created), returning `dest`.
pub fn extract_with_gnu_tar(archive: &Path, dest: &Path) -> PathBuf {
    let tar = require_tool("tar", "apt-get install -y tar (GNU tar)");
    require_tool("zstd", "apt-get install -y zstd");
    fs::create_dir_all(dest).expect("creating the extraction dir");
    run_ok(
        Command::new(tar)
            .arg("-I")
            .arg("zstd")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(dest),
    );
    dest.to_path_buf()
}

/// The repository root (the workspace containing this package).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Makes an unrelated P-256 key pair with openssl (private PEM at `private`, SPKI PEM at
/// `public`): the "another key" of negative tests.
pub fn openssl_p256_key_pair(openssl: &Path, private: &Path, public: &Path) {
    run_ok(
        Command::new(openssl)
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(private),
    );
    run_ok(
        Command::new(openssl)
            .args(["ec", "-pubout", "-in"])
            .arg(private)
            .arg("-out")
            .arg(public),
    );
}
