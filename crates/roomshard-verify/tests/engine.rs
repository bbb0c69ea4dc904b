//! The streaming verifier against small bundles built here: one valid bundle verified through
//! both APIs in every chunking, and one bundle per rule of docs/bundle-format.md that breaks just
//! that rule and must be refused with its reason code.

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use roomshard_verify::format::{
    self, ColumnDescriptor, Exporter, FileEntry, LogicalType, Manifest, RoomInfo, SignatureInfo,
    TableDescriptor, TableEntry, Totals,
};
use roomshard_verify::{
    sql, verify_reader, Algorithm, FileStatus, KeySet, Reason, Report, TrustedKey, TrustedKeys,
    Verifier, VerifyLimits, VerifyOptions,
};
use sha2::{Digest, Sha256};

const KEY_ID: &str = "p256-test0000000001";
const CREATED_AT: &str = "2026-11-22T10:00:00Z";
const ROOM: &str = "general";

// ---------------------------------------------------------------------------------------------
// Building bundles

/// One tar entry: a header (normally a plain ustar regular file) and its data.
#[derive(Clone)]
struct Entry {
    header: tar::Header,
    data: Vec<u8>,
}

impl Entry {
    fn file(path: &str, data: &[u8]) -> Entry {
        Entry::raw(b"", path.as_bytes(), data, b'0')
    }

    /// An entry with explicit ustar `prefix` and `name` fields and typeflag.
    fn raw(prefix: &[u8], name: &[u8], data: &[u8], typeflag: u8) -> Entry {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::new(typeflag));
        let ustar = header.as_ustar_mut().expect("ustar header");
        ustar.name[..name.len()].copy_from_slice(name);
        ustar.prefix[..prefix.len()].copy_from_slice(prefix);
        header.set_cksum();
        Entry {
            header,
            data: data.to_vec(),
        }
    }

    fn path(&self) -> String {
        String::from_utf8_lossy(&self.header.path_bytes()).into_owned()
    }

    /// Edits the header's bytes, then fixes its checksum.
    fn edit(mut self, f: impl FnOnce(&mut [u8; 512])) -> Entry {
        f(self.header.as_mut_bytes());
        self.header.set_cksum();
        self
    }
}

/// The tar stream of `entries`, with the end-of-archive marker.
fn tar_stream(entries: &[Entry]) -> Vec<u8> {
    let mut out = tar_entries(entries);
    out.extend_from_slice(&[0; 1024]);
    out
}

/// Headers, data and padding, without the end-of-archive marker.
fn tar_entries(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(e.header.as_bytes());
        out.extend_from_slice(&e.data);
        out.resize(out.len() + (512 - e.data.len() % 512) % 512, 0);
    }
    out
}

fn zst(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).expect("zstd")
}

fn table() -> TableEntry {
    let col = |name: &str, logical_type, nullable| ColumnDescriptor {
        name: name.into(),
        logical_type,
        nullable,
        references: None,
    };
    TableEntry {
        descriptor: TableDescriptor {
            name: "messages".into(),
            columns: vec![
                col("id", LogicalType::Int8, false),
                col("room_id", LogicalType::Text, false),
                col("body", LogicalType::Text, true),
            ],
            primary_key: vec!["id".into()],
            room_key_column: "room_id".into(),
            id_columns: vec!["id".into()],
            media_columns: vec![],
        },
        row_count: 3,
    }
}

const ROWS: &str = "1\tgeneral\thello\n2\tgeneral\t\\N\n3\tgeneral\ttab\\there\n";

/// `db.sql` for `tables` with `rows` as the one table's COPY data.
fn db_sql(tables: &[TableEntry], rows: &str) -> String {
    let descriptors: Vec<&TableDescriptor> = tables.iter().map(|t| &t.descriptor).collect();
    let mut s: String = sql::preamble_lines(ROOM, &descriptors).concat();
    for (i, t) in descriptors.iter().enumerate() {
        s.push_str(&sql::copy_header_line(t));
        if i == 0 {
            s.push_str(rows);
        }
        s.push_str(roomshard_verify::copy::END_LINE);
    }
    s
}

/// Deterministic incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The content entries of the standard bundle: `db.sql` and two media files.
fn content() -> Vec<Entry> {
    vec![
        Entry::file("db.sql", db_sql(&[table()], ROWS).as_bytes()),
        Entry::file("media/att/1.png", &noise(3000, 1)),
        Entry::file("media/att/2.bin", b"second object\n"),
    ]
}

/// The manifest describing `content` exactly.
fn manifest_of(tables: Vec<TableEntry>, content: &[Entry]) -> Manifest {
    let mut files: Vec<FileEntry> = content
        .iter()
        .map(|e| FileEntry {
            path: e.path(),
            size: e.data.len() as u64,
            sha256: format::hex(&Sha256::digest(&e.data)),
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let media: Vec<&FileEntry> = files
        .iter()
        .filter(|f| f.path.starts_with("media/"))
        .collect();
    let totals = Totals {
        files: files.len() as u64,
        bytes: files.iter().map(|f| f.size).sum(),
        media_files: media.len() as u64,
        media_bytes: media.iter().map(|f| f.size).sum(),
        rows: tables.iter().map(|t| t.row_count).sum(),
    };
    Manifest {
        format: format::FORMAT_NAME.into(),
        format_version: format::FORMAT_VERSION,
        room: RoomInfo {
            id: ROOM.into(),
            name: Some("General".into()),
        },
        source_instance: "mesh.example.org".into(),
        exporter: Exporter {
            name: "roomshard".into(),
            version: "0.1.0".into(),
        },
        schema_version: "mesh-1".into(),
        tables,
        files,
        totals,
        created_at: CREATED_AT.into(),
        signature: SignatureInfo {
            key_id: KEY_ID.into(),
            algorithm: Algorithm::EcdsaP256Sha256,
        },
    }
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32]).expect("a valid scalar")
}

/// `export.signature` over `message`: base64 of the DER signature, newline-terminated.
fn sign(message: &[u8]) -> Vec<u8> {
    let sig: Signature = signing_key().sign(message);
    let mut text = base64::engine::general_purpose::STANDARD
        .encode(sig.to_der().as_bytes())
        .into_bytes();
    text.push(b'\n');
    text
}

/// `content`, then `manifest.json` with these bytes, then their signature.
fn signed_entries(content: Vec<Entry>, manifest_bytes: Vec<u8>) -> Vec<Entry> {
    let signature = sign(&manifest_bytes);
    let mut entries = content;
    entries.push(Entry::file("manifest.json", &manifest_bytes));
    entries.push(Entry::file("export.signature", &signature));
    entries
}

/// The entries of a valid bundle whose content is `content`.
fn bundle_of(content: Vec<Entry>) -> Vec<Entry> {
    let manifest = format::to_canonical_json(&manifest_of(vec![table()], &content));
    signed_entries(content, manifest)
}

/// The standard valid bundle's entries.
fn valid_entries() -> Vec<Entry> {
    bundle_of(content())
}

fn archive(entries: &[Entry]) -> Vec<u8> {
    zst(&tar_stream(entries))
}

fn trusted_key() -> TrustedKey {
    TrustedKey {
        id: KEY_ID.into(),
        alg: Algorithm::EcdsaP256Sha256,
        public_key_pem: signing_key()
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("PEM"),
        not_before: Some("2026-01-01T00:00:00Z".into()),
        not_after: Some("2027-01-01T00:00:00Z".into()),
        revoked: false,
    }
}

fn keys_with(key: TrustedKey) -> TrustedKeys {
    TrustedKeys::new(KeySet { keys: vec![key] }).expect("key set")
}

fn keys() -> TrustedKeys {
    keys_with(trusted_key())
}

fn verify(archive: &[u8]) -> Report {
    verify_reader(archive, keys(), VerifyOptions::default())
}

fn verify_limits(archive: &[u8], limits: VerifyLimits) -> Report {
    verify_reader(
        archive,
        keys(),
        VerifyOptions {
            limits,
            hash_archive: false,
        },
    )
}

/// Verifies with the push API in chunks of `chunk` bytes.
fn verify_pushed(archive: &[u8], chunk: usize, options: VerifyOptions) -> Report {
    let mut v = Verifier::new(keys(), options);
    for c in archive.chunks(chunk) {
        if v.update(c).is_err() {
            break;
        }
    }
    v.finish()
}

#[track_caller]
fn assert_refused(report: &Report, reason: Reason) {
    assert!(!report.valid, "expected {reason}, got a valid report");
    assert_eq!(
        report.reason(),
        Some(reason),
        "expected {reason}, got {:?}",
        report.error
    );
}

/// Signs `manifest` as given (serialised canonically) over the standard content.
fn with_manifest(manifest: &Manifest) -> Vec<u8> {
    archive(&signed_entries(
        content(),
        format::to_canonical_json(manifest),
    ))
}

fn standard_manifest() -> Manifest {
    manifest_of(vec![table()], &content())
}

// ---------------------------------------------------------------------------------------------
// Valid bundles

#[test]
fn a_valid_bundle_verifies_in_every_chunking_through_both_apis() {
    let bytes = archive(&valid_entries());
    let options = VerifyOptions {
        hash_archive: true,
        ..VerifyOptions::default()
    };
    let whole = verify_reader(&bytes[..], keys(), options);
    assert!(whole.valid, "{:?}", whole.error);
    assert_eq!(whole.error, None);
    let signer = whole.signer.clone().expect("signer");
    assert_eq!(signer.key_id, KEY_ID);
    assert_eq!(signer.algorithm, Algorithm::EcdsaP256Sha256);
    assert_eq!(whole.room.as_ref().map(|r| r.id.as_str()), Some(ROOM));
    assert_eq!(whole.format_version, Some(1));
    assert_eq!(whole.created_at.as_deref(), Some(CREATED_AT));
    assert_eq!(whole.source_instance.as_deref(), Some("mesh.example.org"));
    assert_eq!(whole.compressed_bytes, bytes.len() as u64);
    assert_eq!(
        whole.decompressed_bytes,
        tar_stream(&valid_entries()).len() as u64
    );
    assert_eq!(
        whole.archive_sha256.as_deref(),
        Some(format::hex(&Sha256::digest(&bytes)).as_str())
    );
    let manifest = format::to_canonical_json(&standard_manifest());
    assert_eq!(
        whole.manifest_sha256.as_deref(),
        Some(format::hex(&Sha256::digest(&manifest)).as_str())
    );
    assert_eq!(whole.tables.len(), 1);
    assert_eq!(whole.tables[0].name, "messages");
    assert_eq!(whole.tables[0].expected_rows, Some(3));
    assert_eq!(whole.tables[0].found_rows, Some(3));
    let paths: Vec<&str> = whole.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["db.sql", "media/att/1.png", "media/att/2.bin"]);
    assert!(whole.files.iter().all(|f| f.status == FileStatus::Ok));
    assert_eq!(whole.files[1].size, 3000);

    for chunk in [1, 7, 4096, bytes.len()] {
        assert_eq!(
            verify_pushed(&bytes, chunk, options),
            whole,
            "chunk size {chunk}"
        );
    }
    let mut v = Verifier::new(keys(), options);
    v.update(&bytes).expect("valid");
    assert_eq!(v.compressed_bytes(), bytes.len() as u64);
    assert_eq!(v.decompressed_bytes(), whole.decompressed_bytes);
    assert_eq!(v.finish(), whole);
}

#[test]
fn concatenated_frames_and_record_padding_are_accepted() {
    let tar = tar_stream(&valid_entries());
    let mut bytes = Vec::new();
    for part in tar.chunks(1000) {
        bytes.extend(zst(part));
    }
    // GNU tar pads to a 10 KiB record; a further frame of zeros is padding too.
    bytes.extend(zst(&[0; 10240]));
    for chunk in [1, 333, bytes.len()] {
        let r = verify_pushed(&bytes, chunk, VerifyOptions::default());
        assert!(r.valid, "chunk {chunk}: {:?}", r.error);
    }
}

#[test]
fn gnu_magic_headers_are_accepted() {
    let entries: Vec<Entry> = valid_entries()
        .into_iter()
        .map(|e| e.edit(|b| b[257..265].copy_from_slice(b"ustar  \0")))
        .collect();
    let r = verify(&archive(&entries));
    assert!(r.valid, "{:?}", r.error);
}

#[test]
fn a_large_incompressible_entry_streams_through_the_push_api() {
    let mut content = content();
    content.push(Entry::file("media/big.bin", &noise(9 << 20, 42)));
    let bytes = archive(&bundle_of(content));
    let r = verify_pushed(&bytes, 64 * 1024, VerifyOptions::default());
    assert!(r.valid, "{:?}", r.error);
    assert!(r.decompressed_bytes > 9 << 20);
    assert_eq!(r.files.len(), 4);
}

#[test]
fn an_empty_table_and_a_signature_without_newline_verify() {
    let mut empty = table();
    empty.descriptor.name = "reactions".into();
    empty.row_count = 0;
    let tables = vec![table(), empty];
    let mut content = content();
    content[0] = Entry::file("db.sql", db_sql(&tables, ROWS).as_bytes());
    let manifest = format::to_canonical_json(&manifest_of(tables, &content));
    let mut entries = signed_entries(content, manifest);
    let last = entries.len() - 1;
    let mut sig = entries[last].data.clone();
    sig.pop();
    entries[last] = Entry::file("export.signature", &sig);
    let r = verify(&archive(&entries));
    assert!(r.valid, "{:?}", r.error);
    assert_eq!(r.tables[1].found_rows, Some(0));
}

// ---------------------------------------------------------------------------------------------
// Container (section 1)

#[test]
fn truncated_inputs() {
    let bytes = archive(&valid_entries());
    for cut in [1, 3, 10, bytes.len() / 2, bytes.len() - 1] {
        assert_refused(&verify(&bytes[..cut]), Reason::Truncated);
    }
    assert_refused(&verify(&[]), Reason::Truncated);
    let tar = tar_stream(&valid_entries());
    // Complete frames, but the tar stream stops inside data, inside a header, between entries,
    // or after only one zero block.
    let entries_only = tar_entries(&valid_entries());
    for len in [
        700,
        1024 + 100,
        1024,
        entries_only.len(),
        entries_only.len() + 512,
    ] {
        assert_refused(&verify(&zst(&tar[..len])), Reason::Truncated);
    }
    // A further frame that is cut off after its magic.
    let mut more = bytes.clone();
    more.extend_from_slice(&zst(&[0; 512])[..6]);
    assert_refused(&verify(&more), Reason::Truncated);
}

#[test]
fn trailing_garbage_in_the_tar_stream_and_after_the_last_frame() {
    let mut tar = tar_stream(&valid_entries());
    tar.extend_from_slice(b"\0\0\0junk after the end of the archive");
    assert_refused(&verify(&zst(&tar)), Reason::TrailingGarbage);

    let bytes = archive(&valid_entries());
    for garbage in [&b"GARBAGE GARBAGE GARBAGE"[..], b"ju", b"\0"] {
        let mut with = bytes.clone();
        with.extend_from_slice(garbage);
        for chunk in [1, 4096] {
            let r = verify_pushed(&with, chunk, VerifyOptions::default());
            assert_refused(&r, Reason::TrailingGarbage);
        }
    }
    // A second valid frame holding non-zero data.
    let mut with = bytes;
    with.extend(zst(b"more data"));
    assert_refused(&verify(&with), Reason::TrailingGarbage);
}

/// A zstd frame (64 KiB window, no checksum) of the given raw blocks, the last one marked last.
fn raw_block_frame(blocks: &[&[u8]]) -> Vec<u8> {
    let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x30];
    for (i, block) in blocks.iter().enumerate() {
        let last = u32::from(i + 1 == blocks.len());
        let header = (block.len() as u32) << 3 | last;
        frame.extend_from_slice(&header.to_le_bytes()[..3]);
        frame.extend_from_slice(block);
    }
    frame
}

#[test]
fn the_first_defect_is_reported_whatever_the_chunking() {
    // Found by the verify_archive fuzz target: a block whose tar bytes are already wrong (data
    // after the end-of-archive marker) followed by a corrupt block was refused for the tar
    // defect in small chunks and for the corrupt block when pushed whole, because zstd drops
    // the output of a call that then fails.
    let mut tar_part = vec![0u8; 1024];
    tar_part.push(b'x');
    let mut input = raw_block_frame(&[&tar_part, b"second block"]);
    let second_header = 6 + 3 + tar_part.len();
    input[second_header] |= 0b110; // block type 3: reserved, a decoding error
    for chunk in [1, 2, 3, 7, 64, 4096, input.len()] {
        let r = verify_pushed(&input, chunk, VerifyOptions::default());
        assert_refused(&r, Reason::TrailingGarbage);
    }
    assert_refused(&verify(&input), Reason::TrailingGarbage);

    // The same corrupt block with no defect before it is malformed in every chunking.
    let mut input = raw_block_frame(&[&[0u8; 512], b"second block"]);
    input[6 + 3 + 512] |= 0b110;
    for chunk in [1, 5, 4096, input.len()] {
        let r = verify_pushed(&input, chunk, VerifyOptions::default());
        assert_refused(&r, Reason::MalformedArchive);
    }
}

#[test]
fn malformed_archives() {
    let garbage = noise(5000, 9);
    assert_refused(&verify(&garbage), Reason::MalformedArchive);

    let mut bytes = archive(&valid_entries());
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    bytes[mid + 1] ^= 0x55;
    let r = verify(&bytes);
    assert!(
        matches!(
            r.reason(),
            Some(Reason::MalformedArchive) | Some(Reason::DigestMismatch)
        ),
        "{:?}",
        r.error
    );

    let mut entries = valid_entries();
    // Bad header checksum.
    let mut bad = entries.clone();
    bad[1].header.as_mut_bytes()[0] ^= 1;
    assert_refused(&verify(&archive(&bad)), Reason::MalformedArchive);
    // Missing magic.
    let mut bad = entries.clone();
    bad[1] = bad[1]
        .clone()
        .edit(|b| b[257..265].copy_from_slice(&[0; 8]));
    assert_refused(&verify(&archive(&bad)), Reason::MalformedArchive);
    // Base-256 size.
    let mut bad = entries.clone();
    bad[1] = bad[1]
        .clone()
        .edit(|b| b[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0b, 0xb8]));
    assert_refused(&verify(&archive(&bad)), Reason::MalformedArchive);
    // A lone zero block followed by more entries.
    let mut tar = tar_entries(&entries[..1]);
    tar.extend_from_slice(&[0; 512]);
    tar.extend(tar_stream(&entries.split_off(1)));
    assert_refused(&verify(&zst(&tar)), Reason::MalformedArchive);
}

#[test]
fn a_zstd_window_over_the_limit_is_malformed() {
    let bytes = archive(&valid_entries());
    let limits = VerifyLimits {
        max_window_log: 10,
        ..VerifyLimits::default()
    };
    assert_refused(&verify_limits(&bytes, limits), Reason::MalformedArchive);
}

#[test]
fn non_regular_entries_are_refused_by_type() {
    let cases: [(u8, Reason); 10] = [
        (b'1', Reason::Hardlink),
        (b'2', Reason::Symlink),
        (b'3', Reason::SpecialFile),
        (b'4', Reason::SpecialFile),
        (b'6', Reason::SpecialFile),
        (b'L', Reason::NameTooLong),
        (b'K', Reason::NameTooLong),
        (b'5', Reason::UnsupportedEntryType),
        (b'x', Reason::UnsupportedEntryType),
        (b'7', Reason::UnsupportedEntryType),
    ];
    for (typeflag, reason) in cases {
        let mut entries = valid_entries();
        entries.insert(1, Entry::raw(b"", b"media/att/0", b"", typeflag));
        assert_refused(&verify(&archive(&entries)), reason);
    }
    // Old writers' NUL typeflag is a regular file.
    let entries: Vec<Entry> = valid_entries()
        .into_iter()
        .map(|e| e.edit(|b| b[156] = 0))
        .collect();
    assert!(verify(&archive(&entries)).valid);
}

#[test]
fn entry_paths_are_checked() {
    let long_prefix = [b'p'; 150];
    let cases: Vec<(Entry, Reason)> = vec![
        (
            Entry::raw(b"", b"/etc/passwd", b"x", b'0'),
            Reason::AbsolutePath,
        ),
        (
            Entry::raw(b"", b"media/../../x", b"x", b'0'),
            Reason::PathTraversal,
        ),
        (
            Entry::raw(b"media", b"../x", b"x", b'0'),
            Reason::PathTraversal,
        ),
        (
            Entry::raw(b"", b"media/\xff\xfe", b"x", b'0'),
            Reason::NonUtf8Name,
        ),
        (
            Entry::raw(&long_prefix, &[b'n'; 60], b"x", b'0'),
            Reason::NameTooLong,
        ),
        (
            Entry::raw(b"", b"media/./x", b"x", b'0'),
            Reason::InvalidPath,
        ),
        (
            Entry::raw(b"", b"media//x", b"x", b'0'),
            Reason::InvalidPath,
        ),
        (
            Entry::raw(b"", b"media/a\\b", b"x", b'0'),
            Reason::InvalidPath,
        ),
        (
            Entry::raw(b"", b"media/a\nb", b"x", b'0'),
            Reason::InvalidPath,
        ),
        (
            Entry::raw(b"", b"notes.txt", b"x", b'0'),
            Reason::UnexpectedEntry,
        ),
    ];
    for (entry, reason) in cases {
        let mut entries = valid_entries();
        entries.insert(1, entry);
        assert_refused(&verify(&archive(&entries)), reason);
    }
    // A prefix joins the name with `/`.
    let mut entries = valid_entries();
    entries[2] = Entry::raw(b"media/att", b"2.bin", &entries[2].data, b'0');
    assert!(verify(&archive(&entries)).valid);
}

// ---------------------------------------------------------------------------------------------
// Entries and their order (section 2)

#[test]
fn entry_order_rules() {
    let base = valid_entries();
    let reorder =
        |order: &[usize]| -> Vec<Entry> { order.iter().map(|&i| base[i].clone()).collect() };
    // 0 db.sql, 1 media/att/1.png, 2 media/att/2.bin, 3 manifest.json, 4 export.signature
    for order in [
        &[1, 0, 2, 3, 4][..], // db.sql not first
        &[0, 2, 1, 3, 4],     // media descending
        &[0, 1, 3, 2, 4],     // media after the manifest
        &[0, 1, 2, 4, 3],     // signature before the manifest
    ] {
        assert_refused(&verify(&archive(&reorder(order))), Reason::EntryOrder);
    }
    assert_refused(
        &verify(&archive(&reorder(&[0, 1, 1, 2, 3, 4]))),
        Reason::DuplicateEntry,
    );
    assert_refused(
        &verify(&archive(&reorder(&[0, 1, 2, 1, 3, 4]))),
        Reason::DuplicateEntry,
    );
    assert_refused(
        &verify(&archive(&reorder(&[0, 1, 2, 3, 3, 4]))),
        Reason::DuplicateEntry,
    );
    assert_refused(
        &verify(&archive(&reorder(&[0, 1, 2, 3, 4, 2]))),
        Reason::EntryAfterSignature,
    );
    let mut after = base.clone();
    after.push(Entry::file("media/zzz", b"late"));
    assert_refused(&verify(&archive(&after)), Reason::EntryAfterSignature);
    assert_refused(
        &verify(&archive(&reorder(&[0, 1, 2, 4]))),
        Reason::EntryOrder,
    );
    assert_refused(
        &verify(&archive(&reorder(&[0, 1, 2]))),
        Reason::MissingManifest,
    );
    assert_refused(
        &verify(&archive(&reorder(&[0, 1, 2, 3]))),
        Reason::MissingSignature,
    );
}

#[test]
fn limits_on_entries_size_and_ratio() {
    let bytes = archive(&valid_entries());
    let limits = VerifyLimits {
        max_entries: 4,
        ..VerifyLimits::default()
    };
    assert_refused(&verify_limits(&bytes, limits), Reason::TooManyEntries);
    let limits = VerifyLimits {
        max_total_bytes: 5000,
        ..VerifyLimits::default()
    };
    let r = verify_limits(&bytes, limits);
    assert_refused(&r, Reason::TooLarge);
    assert!(r.decompressed_bytes <= 5000);

    // A bomb: 16 MiB of zeros; refused soon after the grace, without inflating it all.
    let mut content = content();
    content.push(Entry::file("media/zeros", &vec![0; 16 << 20]));
    let bomb = archive(&bundle_of(content));
    let limits = VerifyLimits {
        ratio_grace_bytes: 1 << 20,
        ..VerifyLimits::default()
    };
    let r = verify_limits(&bomb, limits);
    assert_refused(&r, Reason::CompressionRatio);
    assert!(r.decompressed_bytes < 2 << 20, "{}", r.decompressed_bytes);
    let limits = VerifyLimits {
        max_ratio: 1 << 40,
        ..VerifyLimits::default()
    };
    assert!(verify_limits(&bomb, limits).valid);
}

// ---------------------------------------------------------------------------------------------
// Manifest (section 3) and signature (section 5)

#[test]
fn manifest_rules() {
    let limits = VerifyLimits {
        max_manifest_bytes: 100,
        ..VerifyLimits::default()
    };
    let r = verify_limits(&archive(&valid_entries()), limits);
    assert_refused(&r, Reason::ManifestTooLarge);

    let mut m = standard_manifest();
    m.format_version = 2;
    assert_refused(&verify(&with_manifest(&m)), Reason::UnsupportedVersion);

    let pretty = serde_json::to_vec_pretty(&standard_manifest()).expect("json");
    let r = verify(&archive(&signed_entries(content(), pretty)));
    assert_refused(&r, Reason::ManifestNotCanonical);

    let mut m = standard_manifest();
    m.totals.rows += 1;
    let r = verify(&with_manifest(&m));
    assert_refused(&r, Reason::ManifestInvalid);
    assert!(r.files.iter().all(|f| f.status == FileStatus::Unchecked));
    assert!(r.manifest_sha256.is_some());
}

#[test]
fn signature_rules() {
    let content_entries = content();
    let manifest = format::to_canonical_json(&standard_manifest());
    let mut other = standard_manifest();
    other.created_at = "2026-11-22T10:00:01Z".into();
    let mut entries = signed_entries(content_entries, manifest);
    let last = entries.len() - 1;
    entries[last] = Entry::file(
        "export.signature",
        &sign(&format::to_canonical_json(&other)),
    );
    let r = verify(&archive(&entries));
    assert_refused(&r, Reason::SignatureInvalid);
    assert_eq!(r.signer, None);

    for bad in [&b"not base64!\n"[..], b"QUJD\n\n", b"QUJ"] {
        entries[last] = Entry::file("export.signature", bad);
        assert_refused(&verify(&archive(&entries)), Reason::SignatureMalformed);
    }
    entries[last] = Entry::file("export.signature", &vec![b'A'; 5000]);
    assert_refused(&verify(&archive(&entries)), Reason::SignatureMalformed);

    let mut m = standard_manifest();
    m.signature.algorithm = Algorithm::Ed25519;
    assert_refused(&verify(&with_manifest(&m)), Reason::KeyAlgorithmMismatch);
}

#[test]
fn key_set_rules() {
    let bytes = archive(&valid_entries());
    let check = |key: TrustedKey, reason: Reason| {
        let r = verify_reader(&bytes[..], keys_with(key), VerifyOptions::default());
        assert_refused(&r, reason);
    };
    let mut k = trusted_key();
    k.id = "p256-someoneelse".into();
    check(k, Reason::UnknownKey);
    let mut k = trusted_key();
    k.revoked = true;
    check(k, Reason::KeyRevoked);
    let mut k = trusted_key();
    k.not_after = Some("2026-11-22T09:59:59Z".into());
    check(k, Reason::KeyExpired);
    let mut k = trusted_key();
    k.not_before = Some("2026-11-22T10:00:01Z".into());
    check(k, Reason::KeyNotYetValid);
    // Validity is judged at signing time, boundaries included.
    let mut k = trusted_key();
    k.not_before = Some(CREATED_AT.into());
    k.not_after = Some(CREATED_AT.into());
    assert!(verify_reader(&bytes[..], keys_with(k), VerifyOptions::default()).valid);
}

#[test]
fn signature_problems_come_before_content_problems() {
    let mut entries = valid_entries();
    entries[1].data[0] ^= 1;
    let r = verify_reader(
        &archive(&entries)[..],
        keys_with(TrustedKey {
            revoked: true,
            ..trusted_key()
        }),
        VerifyOptions::default(),
    );
    assert_refused(&r, Reason::KeyRevoked);
}

// ---------------------------------------------------------------------------------------------
// Content against the manifest

/// A bundle whose manifest describes `content()` but whose archive holds `actual` instead.
fn tampered(actual: Vec<Entry>) -> Report {
    let manifest = format::to_canonical_json(&standard_manifest());
    verify(&archive(&signed_entries(actual, manifest)))
}

#[test]
fn files_against_the_manifest() {
    let mut c = content();
    c[1].data[10] ^= 0x40;
    let r = tampered(c);
    assert_refused(&r, Reason::DigestMismatch);
    assert_eq!(r.files[1].status, FileStatus::DigestMismatch);
    assert_eq!(r.files[0].status, FileStatus::Ok);
    assert!(r.signer.is_some(), "the signature itself verified");

    let mut c = content();
    c[2] = Entry::file("media/att/2.bin", b"second object, longer\n");
    let r = tampered(c);
    assert_refused(&r, Reason::SizeMismatch);
    assert_eq!(r.files[2].status, FileStatus::SizeMismatch);

    let mut c = content();
    c.remove(2);
    let r = tampered(c);
    assert_refused(&r, Reason::MissingEntry);
    let last = r.files.last().expect("files");
    assert_eq!(
        (last.path.as_str(), last.status, last.sha256.as_deref()),
        ("media/att/2.bin", FileStatus::Missing, None)
    );

    let mut c = content();
    c.push(Entry::file("media/att/3.bin", b"unlisted"));
    let r = tampered(c);
    assert_refused(&r, Reason::ExtraEntry);
    assert_eq!(r.files[3].status, FileStatus::Extra);

    // Missing before extra before size before digest.
    let mut c = content();
    c[1].data[10] ^= 0x40;
    c[2] = Entry::file("media/att/2.bin", b"x");
    c.push(Entry::file("media/att/3.bin", b"unlisted"));
    assert_refused(&tampered(c.clone()), Reason::ExtraEntry);
    c.pop();
    assert_refused(&tampered(c), Reason::SizeMismatch);
}

/// A valid, signed bundle whose `db.sql` is `sql` and whose one table has `rows` rows.
fn with_sql(sql: &str, rows: u64) -> Report {
    let mut t = table();
    t.row_count = rows;
    let mut c = content();
    c[0] = Entry::file("db.sql", sql.as_bytes());
    let manifest = format::to_canonical_json(&manifest_of(vec![t], &c));
    verify(&archive(&signed_entries(c, manifest)))
}

#[test]
fn db_sql_rules() {
    let good = db_sql(&[table()], ROWS);
    assert!(with_sql(&good, 3).valid);

    let r = with_sql(&good, 4);
    assert_refused(&r, Reason::RowCountMismatch);
    assert_eq!(r.tables[0].expected_rows, Some(4));
    assert_eq!(r.tables[0].found_rows, Some(3));

    let dropped = good.replacen("COPY", "DROP TABLE \"users\";\nCOPY", 1);
    assert_refused(&with_sql(&dropped, 3), Reason::SqlUnexpectedStatement);
    let appended = format!("{good}DROP TABLE \"users\";\n");
    assert_refused(&with_sql(&appended, 3), Reason::SqlUnexpectedStatement);
    let no_newline = format!("{good}SELECT 1;");
    assert_refused(&with_sql(&no_newline, 3), Reason::SqlUnexpectedStatement);
    let renamed = good.replace("COPY \"messages\"", "COPY \"users\"");
    assert_refused(&with_sql(&renamed, 3), Reason::SqlUnexpectedStatement);

    let extra_field = db_sql(
        &[table()],
        "1\tgeneral\thello\textra\n2\tgeneral\t\\N\n3\tgeneral\tx\n",
    );
    assert_refused(&with_sql(&extra_field, 3), Reason::SqlFieldCount);
    let short_row = db_sql(&[table()], "1\tgeneral\n2\tgeneral\t\\N\n3\tgeneral\tx\n");
    assert_refused(&with_sql(&short_row, 3), Reason::SqlFieldCount);

    let unterminated = good.trim_end_matches("\\.\n").to_string();
    assert_refused(&with_sql(&unterminated, 3), Reason::SqlUnterminatedCopy);
    let cut_row = unterminated.trim_end_matches('\n').to_string();
    assert_refused(&with_sql(&cut_row, 3), Reason::SqlUnterminatedCopy);

    let mut c = content();
    c[0] = Entry::file("db.sql", good.as_bytes());
    let manifest = format::to_canonical_json(&manifest_of(vec![table()], &c));
    let bytes = archive(&signed_entries(c, manifest));
    let limits = VerifyLimits {
        max_sql_skeleton_bytes: 64,
        ..VerifyLimits::default()
    };
    assert_refused(
        &verify_limits(&bytes, limits),
        Reason::SqlUnexpectedStatement,
    );
}

#[test]
fn a_failed_stream_still_reports_what_it_learnt() {
    let mut bytes = zst(&tar_entries(&valid_entries()));
    bytes.extend_from_slice(&zst(&[0; 1024])[..5]);
    let r = verify(&bytes);
    assert_refused(&r, Reason::Truncated);
    assert!(r.signer.is_some());
    assert_eq!(r.room.as_ref().map(|x| x.id.as_str()), Some(ROOM));
    assert_eq!(r.files.len(), 3);
}

#[test]
fn io_errors_are_reported() {
    struct Failing;
    impl std::io::Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::new(
                std::io::ErrorKind::Other,
                "disk on fire",
            ))
        }
    }
    let r = verify_reader(Failing, keys(), VerifyOptions::default());
    assert_refused(&r, Reason::Io);
}

/// Found by fuzzing `parse_manifest`: `null` for an optional field parsed as absent, so two byte
/// strings meant the same manifest.
#[test]
fn manifest_with_null_for_an_optional_field_is_invalid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../conformance/vectors/manifest_null_optional.tar.zst");
    let bytes = std::fs::read(&path).expect("the manifest_null_optional vector");
    let tar = zstd::decode_all(&bytes[..]).expect("zstd");
    let mut archive = ::tar::Archive::new(&tar[..]);
    let mut manifest = Vec::new();
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        if entry.path().expect("path").to_str() == Some("manifest.json") {
            std::io::Read::read_to_end(&mut entry, &mut manifest).expect("read");
        }
    }
    assert!(manifest.windows(11).any(|w| w == b"\"name\":null"));
    let err = roomshard_verify::format::parse_manifest(&manifest).expect_err("null name refused");
    assert_eq!(err.reason, roomshard_verify::Reason::ManifestInvalid);
}
