//! The streaming verifier: zstd frames → ustar entries → per-entry checks, with a push API
//! ([`Verifier`]) and a pull API ([`verify_reader`]) over one state machine.
//!
//! Compressed chunks are hashed (optionally), decompressed into one reused buffer, and the tar
//! stream is parsed as it comes out ([`crate::tar`]). Each entry is checked against the order of
//! docs/bundle-format.md §2 when its header arrives, hashed while its data streams past, and
//! `db.sql` is scanned line by line ([`crate::sqlscan`]). Only `manifest.json` and
//! `export.signature` are buffered. Problems of the stream itself (framing, paths, order,
//! limits) stop verification at once; problems found by comparing against the manifest are
//! judged in [`Verifier::finish`], signature before content.

use crate::archive::{ArchiveReader, EntrySink};
use crate::error::{Reason, VerifyError};
use crate::format::{self, hex, Manifest, DB_SQL, EXPORT_SIGNATURE, MANIFEST_JSON, MEDIA_PREFIX};
use crate::keys::TrustedKeys;
use crate::names::{media_key, PathSet};
use crate::report::{FileResult, FileStatus, Report, SignerInfo, TableResult};
use crate::sql;
use crate::sqlscan::{CopyBlock, ScanProblem, SqlScan};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::Read;

/// Limits against decompression bombs and oversized metadata (docs/bundle-format.md §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyLimits {
    /// Most decompressed (tar) bytes accepted.
    pub max_total_bytes: u64,
    /// Most decompressed-to-compressed ratio accepted, once past `ratio_grace_bytes`.
    pub max_ratio: u64,
    /// Decompressed bytes before the ratio is enforced (small inputs have noisy ratios).
    pub ratio_grace_bytes: u64,
    /// Most tar entries.
    pub max_entries: u64,
    /// Largest `manifest.json`.
    pub max_manifest_bytes: u64,
    /// Most bytes of `db.sql` lines outside COPY data.
    pub max_sql_skeleton_bytes: u64,
    /// Largest zstd window accepted, as a power of two.
    pub max_window_log: u32,
}

impl Default for VerifyLimits {
    fn default() -> Self {
        VerifyLimits {
            max_total_bytes: 64 << 30,
            max_ratio: 250,
            ratio_grace_bytes: 8 << 20,
            max_entries: 100_000,
            max_manifest_bytes: 16 << 20,
            max_sql_skeleton_bytes: 4 << 20,
            max_window_log: 27,
        }
    }
}

impl VerifyLimits {
    /// The limit names [`VerifyLimits::set`] accepts (the field names).
    pub const NAMES: &'static [&'static str] = &[
        "max_total_bytes",
        "max_ratio",
        "ratio_grace_bytes",
        "max_entries",
        "max_manifest_bytes",
        "max_sql_skeleton_bytes",
        "max_window_log",
    ];

    /// Sets one limit by its field name, so vector files, the CLI's `--limit NAME=VALUE` and the
    /// WASM options all spell limits the same way.
    pub fn set(&mut self, name: &str, value: u64) -> Result<(), String> {
        let slot = match name {
            "max_total_bytes" => &mut self.max_total_bytes,
            "max_ratio" => &mut self.max_ratio,
            "ratio_grace_bytes" => &mut self.ratio_grace_bytes,
            "max_entries" => &mut self.max_entries,
            "max_manifest_bytes" => &mut self.max_manifest_bytes,
            "max_sql_skeleton_bytes" => &mut self.max_sql_skeleton_bytes,
            "max_window_log" => {
                self.max_window_log = u32::try_from(value)
                    .ok()
                    .filter(|v| (10..=31).contains(v))
                    .ok_or_else(|| format!("max_window_log must be 10..=31, not {value}"))?;
                return Ok(());
            }
            _ => {
                return Err(format!(
                    "unknown limit {name:?}; known limits: {}",
                    Self::NAMES.join(", ")
                ))
            }
        };
        *slot = value;
        Ok(())
    }
}

/// How to verify.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Limits.
    pub limits: VerifyLimits,
    /// Also hash the compressed input (needed to check a sidecar); costs one more SHA-256 pass.
    pub hash_archive: bool,
}

/// Largest `export.signature` accepted (docs/bundle-format.md §5).
const MAX_SIGNATURE_BYTES: u64 = 4096;

/// Push-style verifier: feed compressed bytes with [`Verifier::update`] in any chunking, then
/// call [`Verifier::finish`] for the report.
pub struct Verifier {
    options: VerifyOptions,
    failed: Option<VerifyError>,
    /// zstd frames and ustar entries: the one archive parser (shared with import's second pass).
    archive: ArchiveReader,
    entries: EntryChecker,
}

impl Verifier {
    /// A verifier trusting `keys`.
    pub fn new(keys: TrustedKeys, options: VerifyOptions) -> Self {
        let limits = options.limits;
        let archive = ArchiveReader::new(limits);
        Verifier {
            options,
            failed: archive.setup_error().cloned(),
            archive,
            entries: EntryChecker::new(keys, limits, options.hash_archive),
        }
    }

    /// Compressed bytes consumed so far.
    pub fn compressed_bytes(&self) -> u64 {
        self.archive.compressed_bytes()
    }

    /// Decompressed (tar) bytes processed so far.
    pub fn decompressed_bytes(&self) -> u64 {
        self.archive.decompressed_bytes()
    }

    /// Consumes the next chunk of the compressed archive. After the first error every call
    /// returns that error again; `finish` still gives the report.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), VerifyError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.options.hash_archive {
            self.entries.hasher.archive_update(chunk);
        }
        let result = self.archive.update(chunk, &mut self.entries);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    /// Ends the input and returns the report.
    pub fn finish(self) -> Report {
        self.finish_with_manifest().0
    }

    /// Ends the input and returns the report plus, only when the bundle is valid, the parsed
    /// manifest it was checked against — so a caller that goes on to use the bundle (import) has
    /// the table descriptors and file digests without reading the archive a second time to find
    /// `manifest.json` (which comes last).
    pub fn finish_with_manifest(self) -> (Report, Option<Manifest>) {
        let mut stream_error = self.failed;
        if stream_error.is_none() {
            stream_error = self.archive.finish().err();
        }
        let mut report = Report {
            compressed_bytes: self.archive.compressed_bytes(),
            decompressed_bytes: self.archive.decompressed_bytes(),
            ..Report::default()
        };
        let (verdict, manifest) = self.entries.conclude(&mut report);
        if stream_error.is_some() {
            // Only part of the input was hashed.
            report.archive_sha256 = None;
        }
        match stream_error.or(verdict) {
            Some(e) => {
                report.fail(&e);
                (report, None)
            }
            None => {
                report.valid = true;
                (report, manifest)
            }
        }
    }
}

/// Verifies an archive read from `reader` (pull style).
pub fn verify_reader<R: Read>(reader: R, keys: TrustedKeys, options: VerifyOptions) -> Report {
    feed_reader(reader, keys, options).finish()
}

/// [`verify_reader`], also returning the verified manifest when the bundle is valid (see
/// [`Verifier::finish_with_manifest`]).
pub fn verify_reader_with_manifest<R: Read>(
    reader: R,
    keys: TrustedKeys,
    options: VerifyOptions,
) -> (Report, Option<Manifest>) {
    feed_reader(reader, keys, options).finish_with_manifest()
}

/// A verifier fed with everything `reader` gives, up to its first error.
fn feed_reader<R: Read>(mut reader: R, keys: TrustedKeys, options: VerifyOptions) -> Verifier {
    let mut verifier = Verifier::new(keys, options);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if verifier.update(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                verifier.failed = Some(VerifyError::new(
                    Reason::Io,
                    format!("reading archive: {e}"),
                ));
                break;
            }
        }
    }
    verifier
}

/// A content entry as found: path, size, and (filled in at the end) its digest.
struct FoundFile {
    path: String,
    size: u64,
}

/// The entry being streamed.
enum Current {
    /// Between entries.
    None,
    /// `db.sql` or a media file: hashed (and, for `db.sql`, scanned) as it streams.
    Content { path: String, size: u64, sql: bool },
    /// `manifest.json`, buffered (its size was checked against the limit).
    Manifest(Vec<u8>),
    /// `export.signature`, buffered unless it is over the size limit.
    Signature(Option<Vec<u8>>),
}

/// The per-entry rules (docs/bundle-format.md §2–5): order, hashing, SQL scan, manifest and
/// signature. Streaming errors are returned at once; verdicts that need the manifest are kept for
/// [`EntryChecker::conclude`].
struct EntryChecker {
    keys: TrustedKeys,
    limits: VerifyLimits,
    hasher: Hashing,
    sql: SqlScan,
    sql_complete: bool,
    /// Whether `db.sql` is scanned on this thread (else the hashing worker scans it).
    sql_inline: bool,
    files: Vec<FoundFile>,
    seen: HashSet<String>,
    /// The media paths, checked for names that would extract as one file.
    names: PathSet,
    entries: u64,
    last_media: Option<String>,
    current: Current,
    manifest_sha256: Option<String>,
    manifest: Option<Result<Manifest, VerifyError>>,
    /// The exact bytes of `manifest.json`, which the signature covers.
    manifest_bytes: Vec<u8>,
    signature_seen: bool,
    signature: Option<Result<SignerInfo, VerifyError>>,
}

impl EntryChecker {
    fn new(keys: TrustedKeys, limits: VerifyLimits, hash_archive: bool) -> Self {
        EntryChecker {
            keys,
            limits,
            hasher: Hashing::new(hash_archive),
            sql: SqlScan::new(limits.max_sql_skeleton_bytes),
            sql_complete: false,
            sql_inline: true,
            files: Vec::new(),
            seen: HashSet::new(),
            names: PathSet::new(),
            entries: 0,
            last_media: None,
            current: Current::None,
            manifest_sha256: None,
            manifest: None,
            manifest_bytes: Vec::new(),
            signature_seen: false,
            signature: None,
        }
    }

    /// Decodes `export.signature` and checks it over the manifest's bytes with the key the
    /// manifest names. `None` when the manifest is unusable (its own error is reported first).
    fn check_signature(&self, text: &[u8]) -> Option<Result<SignerInfo, VerifyError>> {
        use base64::Engine as _;
        let m = match &self.manifest {
            Some(Ok(m)) => m,
            _ => return None,
        };
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        let signature = match base64::engine::general_purpose::STANDARD.decode(text) {
            Ok(s) => s,
            Err(e) => {
                return Some(Err(VerifyError::new(
                    Reason::SignatureMalformed,
                    format!("{EXPORT_SIGNATURE} is not padded standard base64: {e}"),
                )))
            }
        };
        Some(
            self.keys
                .verify(
                    &m.signature.key_id,
                    m.signature.algorithm,
                    &m.created_at,
                    &self.manifest_bytes,
                    &signature,
                    Reason::SignatureInvalid,
                )
                .map(|key| SignerInfo {
                    key_id: key.id.clone(),
                    algorithm: key.alg,
                }),
        )
    }

    /// Checks that an entry may appear here (path kind, uniqueness, order).
    fn check_order(&mut self, path: &str) -> Result<(), VerifyError> {
        let order = |detail: String| Err(VerifyError::new(Reason::EntryOrder, detail));
        if self.signature_seen {
            return Err(VerifyError::new(
                Reason::EntryAfterSignature,
                format!("entry {path:?} after {EXPORT_SIGNATURE}"),
            ));
        }
        let media = path.starts_with(MEDIA_PREFIX);
        if !(media || path == DB_SQL || path == MANIFEST_JSON || path == EXPORT_SIGNATURE) {
            return Err(VerifyError::new(
                Reason::UnexpectedEntry,
                format!("entry {path:?} is not db.sql, media/…, manifest.json or export.signature"),
            ));
        }
        if !self.seen.insert(path.to_string()) {
            return Err(VerifyError::new(
                Reason::DuplicateEntry,
                format!("entry {path:?} appears twice"),
            ));
        }
        if path == DB_SQL && self.entries > 0 {
            return order(format!("{DB_SQL} is not the first entry"));
        }
        if (media || path == DB_SQL) && self.manifest.is_some() {
            return order(format!("content entry {path:?} after {MANIFEST_JSON}"));
        }
        if path == EXPORT_SIGNATURE && self.manifest.is_none() {
            return order(format!("{EXPORT_SIGNATURE} before {MANIFEST_JSON}"));
        }
        if media {
            media_key(path)?;
            self.names.insert(path)?;
            if let Some(last) = &self.last_media {
                if path < last.as_str() {
                    return order(format!(
                        "media entry {path:?} after {last:?} (media must be in ascending byte order)"
                    ));
                }
            }
            self.last_media = Some(path.to_string());
        }
        Ok(())
    }

    /// Everything not judged while streaming, in the order of the spec: presence of manifest and
    /// signature, the manifest, the signature, the entry set, sizes, digests, then `db.sql`.
    /// Fills the report with what is known and returns the first problem.
    fn conclude(mut self, report: &mut Report) -> (Option<VerifyError>, Option<Manifest>) {
        let (digests, archive_digest, worker_scan) = self.hasher.finish();
        if let Some(scan) = worker_scan {
            self.sql = scan;
        }
        report.archive_sha256 = archive_digest.map(|d| hex(&d));
        let mut problems = Problems::default();
        if self.manifest.is_none() {
            problems.note(Reason::MissingManifest, || format!("no {MANIFEST_JSON}"));
        } else if !self.signature_seen {
            problems.note(Reason::MissingSignature, || {
                format!("no {EXPORT_SIGNATURE}")
            });
        }
        report.manifest_sha256 = self.manifest_sha256;
        let manifest = match self.manifest {
            Some(Ok(m)) => Some(m),
            Some(Err(e)) => {
                problems.add(e);
                None
            }
            None => None,
        };
        match self.signature {
            Some(Ok(signer)) => report.signer = Some(signer),
            Some(Err(e)) => problems.add(e),
            None => {}
        }
        let found: Vec<(FoundFile, Option<[u8; 32]>)> = self
            .files
            .into_iter()
            .zip(digests.into_iter().chain(std::iter::repeat(None)))
            .collect();
        let m = match manifest {
            Some(m) => m,
            None => {
                report.files = found
                    .into_iter()
                    .map(|(f, d)| FileResult {
                        path: f.path,
                        size: f.size,
                        sha256: d.map(|d| hex(&d)),
                        status: FileStatus::Unchecked,
                    })
                    .collect();
                if self.sql_complete {
                    let (_, blocks, _) = self.sql.finish();
                    report.tables = table_results(None, &blocks);
                }
                return (problems.first, None);
            }
        };
        report.room = Some(m.room.clone());
        report.format_version = Some(m.format_version);
        report.created_at = Some(m.created_at.clone());
        report.source_instance = Some(m.source_instance.clone());

        // The entry set, then sizes, then digests, each in archive order.
        let listed: HashMap<&str, &format::FileEntry> =
            m.files.iter().map(|f| (f.path.as_str(), f)).collect();
        let present: HashSet<&str> = found.iter().map(|(f, _)| f.path.as_str()).collect();
        if let Some(f) = m.files.iter().find(|f| !present.contains(f.path.as_str())) {
            problems.note(Reason::MissingEntry, || {
                format!("{:?} is listed in the manifest but absent", f.path)
            });
        }
        let mut results = Vec::with_capacity(found.len());
        let (mut extra, mut size, mut digest) = (None, None, None);
        for (f, d) in &found {
            let hex_digest = d.map(|d| hex(&d));
            let status = match listed.get(f.path.as_str()) {
                None => {
                    extra.get_or_insert_with(|| {
                        format!("{:?} is not listed in the manifest", f.path)
                    });
                    FileStatus::Extra
                }
                Some(l) if l.size != f.size => {
                    size.get_or_insert_with(|| {
                        format!(
                            "{:?} has {} bytes, the manifest says {}",
                            f.path, f.size, l.size
                        )
                    });
                    FileStatus::SizeMismatch
                }
                Some(l) if hex_digest.as_deref() != Some(l.sha256.as_str()) => {
                    digest.get_or_insert_with(|| {
                        format!(
                            "{:?} has SHA-256 {}, the manifest says {}",
                            f.path,
                            hex_digest.as_deref().unwrap_or("(not computed)"),
                            l.sha256
                        )
                    });
                    FileStatus::DigestMismatch
                }
                Some(_) => FileStatus::Ok,
            };
            results.push(FileResult {
                path: f.path.clone(),
                size: f.size,
                sha256: hex_digest,
                status,
            });
        }
        for f in m
            .files
            .iter()
            .filter(|f| !present.contains(f.path.as_str()))
        {
            results.push(FileResult {
                path: f.path.clone(),
                size: f.size,
                sha256: None,
                status: FileStatus::Missing,
            });
        }
        report.files = results;
        for (reason, detail) in [
            (Reason::ExtraEntry, extra),
            (Reason::SizeMismatch, size),
            (Reason::DigestMismatch, digest),
        ] {
            if let Some(detail) = detail {
                problems.add(VerifyError::new(reason, detail));
            }
        }

        if self.sql_complete {
            let (skeleton, blocks, scan_problem) = self.sql.finish();
            report.tables = table_results(Some(&m), &blocks);
            if let Some(e) = check_sql(&m, &skeleton, &blocks, scan_problem) {
                problems.add(e);
            }
        } else {
            report.tables = table_results(Some(&m), &[]);
        }
        (problems.first, Some(m))
    }
}

/// The first problem noted wins.
#[derive(Default)]
struct Problems {
    first: Option<VerifyError>,
}

impl Problems {
    fn add(&mut self, e: VerifyError) {
        if self.first.is_none() {
            self.first = Some(e);
        }
    }

    fn note(&mut self, reason: Reason, detail: impl FnOnce() -> String) {
        if self.first.is_none() {
            self.first = Some(VerifyError::new(reason, detail()));
        }
    }
}

/// Row counts per table: the manifest's tables in order, then blocks it does not name.
fn table_results(m: Option<&Manifest>, blocks: &[CopyBlock]) -> Vec<TableResult> {
    let found = |name: &str| blocks.iter().find(|b| b.table == name).map(|b| b.rows);
    let mut out: Vec<TableResult> = m
        .map(|m| m.tables.as_slice())
        .unwrap_or(&[])
        .iter()
        .map(|t| TableResult {
            name: t.descriptor.name.clone(),
            expected_rows: Some(t.row_count),
            found_rows: found(&t.descriptor.name),
        })
        .collect();
    for b in blocks {
        if !out.iter().any(|t| t.name == b.table) {
            out.push(TableResult {
                name: b.table.clone(),
                expected_rows: None,
                found_rows: Some(b.rows),
            });
        }
    }
    out
}

/// The `db.sql` rules of docs/bundle-format.md §4, given its scan.
fn check_sql(
    m: &Manifest,
    skeleton: &[u8],
    blocks: &[CopyBlock],
    problem: Option<ScanProblem>,
) -> Option<VerifyError> {
    match problem {
        Some(ScanProblem::UnterminatedCopy) => {
            return Some(VerifyError::new(
                Reason::SqlUnterminatedCopy,
                "db.sql: a COPY block does not end with \\.",
            ))
        }
        Some(ScanProblem::SkeletonTooLarge) => {
            return Some(VerifyError::new(
                Reason::SqlUnexpectedStatement,
                "db.sql: more text outside COPY data than the limit allows",
            ))
        }
        Some(ScanProblem::Data(fault, line)) => {
            return Some(VerifyError::new(
                fault.reason(),
                format!("db.sql line {line}: {}", fault.describe()),
            ))
        }
        None => {}
    }
    let descriptors: Vec<&format::TableDescriptor> =
        m.tables.iter().map(|t| &t.descriptor).collect();
    let mut expected = sql::preamble_lines(&m.room.id, &descriptors);
    for t in &descriptors {
        expected.push(sql::copy_header_line(t));
        expected.push(crate::copy::END_LINE.to_string());
    }
    let mut actual = skeleton.split_inclusive(|&b| b == b'\n');
    for (i, want) in expected.iter().enumerate() {
        match actual.next() {
            Some(line) if line == want.as_bytes() => {}
            other => {
                return Some(VerifyError::new(
                    Reason::SqlUnexpectedStatement,
                    format!(
                        "db.sql: statement line {} is {}, expected {:?}",
                        i + 1,
                        other
                            .map_or_else(|| "missing".to_string(), |l| format!("{:?}", shorten(l))),
                        want
                    ),
                ))
            }
        }
    }
    if let Some(line) = actual.next() {
        return Some(VerifyError::new(
            Reason::SqlUnexpectedStatement,
            format!(
                "db.sql: unexpected statement line {}: {:?}",
                expected.len() + 1,
                shorten(line)
            ),
        ));
    }
    // The skeleton matched, so the blocks are the manifest's tables in order.
    for (t, b) in m.tables.iter().zip(blocks) {
        let columns = t.descriptor.columns.len() as u64;
        if b.rows > 0 && (b.min_fields != columns || b.max_fields != columns) {
            let wrong = if b.min_fields != columns {
                b.min_fields
            } else {
                b.max_fields
            };
            return Some(VerifyError::new(
                Reason::SqlFieldCount,
                format!(
                    "db.sql: table {:?} has a row with {wrong} fields, expected {columns}",
                    t.descriptor.name
                ),
            ));
        }
    }
    for (t, b) in m.tables.iter().zip(blocks) {
        if b.rows != t.row_count {
            return Some(VerifyError::new(
                Reason::RowCountMismatch,
                format!(
                    "db.sql: table {:?} has {} rows, the manifest says {}",
                    t.descriptor.name, b.rows, t.row_count
                ),
            ));
        }
    }
    None
}

/// A line for an error message: lossy UTF-8, at most 120 characters.
fn shorten(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(line);
    if s.chars().count() > 120 {
        let mut t: String = s.chars().take(120).collect();
        t.push('…');
        t
    } else {
        s.into_owned()
    }
}

impl EntrySink for EntryChecker {
    fn begin_entry(&mut self, path: String, size: u64) -> Result<(), VerifyError> {
        self.check_order(&path)?;
        self.entries += 1;
        self.current = if path == MANIFEST_JSON {
            if size > self.limits.max_manifest_bytes {
                return Err(VerifyError::new(
                    Reason::ManifestTooLarge,
                    format!(
                        "{MANIFEST_JSON} has {size} bytes, the limit is {}",
                        self.limits.max_manifest_bytes
                    ),
                ));
            }
            Current::Manifest(Vec::with_capacity(usize::try_from(size).unwrap_or(0)))
        } else if path == EXPORT_SIGNATURE {
            self.signature_seen = true;
            if size > MAX_SIGNATURE_BYTES {
                self.signature = Some(Err(VerifyError::new(
                    Reason::SignatureMalformed,
                    format!("{EXPORT_SIGNATURE} has {size} bytes, more than {MAX_SIGNATURE_BYTES}"),
                )));
                Current::Signature(None)
            } else {
                Current::Signature(Some(Vec::with_capacity(size as usize)))
            }
        } else {
            let sql = path == DB_SQL;
            self.hasher.begin_entry(size, sql);
            self.sql_inline = !(sql
                && self
                    .hasher
                    .scan_in_worker(&mut self.sql, self.limits.max_sql_skeleton_bytes));
            Current::Content { path, size, sql }
        };
        Ok(())
    }

    fn entry_data(&mut self, data: &[u8]) -> Result<(), VerifyError> {
        match &mut self.current {
            Current::Content { sql, .. } => {
                self.hasher.update(data);
                if *sql && self.sql_inline {
                    self.sql.feed(data);
                }
            }
            Current::Manifest(bytes) => bytes.extend_from_slice(data),
            Current::Signature(Some(bytes)) => bytes.extend_from_slice(data),
            Current::Signature(None) | Current::None => {}
        }
        Ok(())
    }

    fn end_entry(&mut self) -> Result<(), VerifyError> {
        match std::mem::replace(&mut self.current, Current::None) {
            Current::Content { path, size, sql } => {
                self.hasher.end_entry();
                self.sql_complete |= sql;
                self.files.push(FoundFile { path, size });
            }
            Current::Manifest(bytes) => {
                self.manifest_sha256 = Some(hex(&Sha256::digest(&bytes)));
                self.manifest = Some(format::parse_manifest(&bytes));
                self.manifest_bytes = bytes;
            }
            Current::Signature(Some(bytes)) => {
                self.signature = self.check_signature(&bytes);
            }
            Current::Signature(None) | Current::None => {}
        }
        Ok(())
    }
}

/// What [`Hashing::finish`] gives: per-entry digests, the archive's digest, the `db.sql` scan.
type HashResults = (Vec<Option<[u8; 32]>>, Option<[u8; 32]>, Option<SqlScan>);

/// SHA-256 of each content entry, in entry order, and optionally of the compressed archive.
///
/// Where threads exist, a worker thread hashes while this thread decompresses, so the two use
/// two cores. The archive always goes to the worker, and so does `db.sql`, which the worker
/// also scans (decompressing text is this thread's slowest part). Another entry goes to it
/// unless the worker already has as many bytes queued as the entry holds (incompressible media
/// decompress faster than SHA-256 runs): then this thread hashes the entry while the worker
/// drains its queue, so both cores hash. In WASM everything runs inline.
struct Hashing {
    /// Hashes the current entry when it is hashed inline.
    inline: Sha256,
    /// Whether the current entry goes to the worker.
    #[cfg(not(target_arch = "wasm32"))]
    to_worker: bool,
    /// Per completed entry: its digest, or `None` when the worker computes it.
    digests: Vec<Option<[u8; 32]>>,
    /// Hashes the archive when there is no worker.
    archive: Option<Sha256>,
    #[cfg(not(target_arch = "wasm32"))]
    worker: Option<worker::HashWorker>,
}

impl Hashing {
    fn new(hash_archive: bool) -> Self {
        #[cfg(not(target_arch = "wasm32"))]
        let worker = worker::HashWorker::spawn();
        #[cfg(not(target_arch = "wasm32"))]
        let archive_inline = hash_archive && worker.is_none();
        #[cfg(target_arch = "wasm32")]
        let archive_inline = hash_archive;
        Hashing {
            inline: Sha256::new(),
            #[cfg(not(target_arch = "wasm32"))]
            to_worker: false,
            digests: Vec::new(),
            archive: if archive_inline {
                Some(Sha256::new())
            } else {
                None
            },
            #[cfg(not(target_arch = "wasm32"))]
            worker,
        }
    }

    /// Hashes the next chunk of the compressed archive.
    fn archive_update(&mut self, chunk: &[u8]) {
        match &mut self.archive {
            Some(h) => h.update(chunk),
            None =>
            {
                #[cfg(not(target_arch = "wasm32"))]
                if let Some(w) = &mut self.worker {
                    w.update(worker::Stream::Archive, chunk);
                }
            }
        }
    }

    /// A content entry of `size` bytes starts: decides where it is hashed. It goes to the
    /// worker unless the worker already has at least `size` bytes queued, so that it stays busy
    /// while this thread hashes the entry itself. `db.sql` (`busy`: this thread also scans it,
    /// and decompressing text is slow) always goes to the worker.
    #[cfg_attr(target_arch = "wasm32", allow(unused_variables))]
    fn begin_entry(&mut self, size: u64, busy: bool) {
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.to_worker = self
                .worker
                .as_mut()
                .map_or(false, |w| busy || w.queued_bytes() < size);
        }
    }

    /// Hands the `db.sql` scan to the worker when it hashes the current entry, so the worker
    /// also feeds it the entry's bytes and [`Hashing::finish`] returns it; `false` (and `scan`
    /// left alone) if the entry is hashed on this thread.
    #[cfg_attr(target_arch = "wasm32", allow(unused_variables))]
    fn scan_in_worker(&mut self, scan: &mut SqlScan, max_skeleton: u64) -> bool {
        #[cfg(not(target_arch = "wasm32"))]
        {
            if self.to_worker {
                if let Some(w) = &mut self.worker {
                    w.scan_entry(std::mem::replace(scan, SqlScan::new(max_skeleton)));
                    return true;
                }
            }
        }
        false
    }

    /// Hashes the next piece of the current entry.
    fn update(&mut self, data: &[u8]) {
        #[cfg(not(target_arch = "wasm32"))]
        {
            if self.to_worker {
                if let Some(w) = &mut self.worker {
                    w.update(worker::Stream::Entry, data);
                    return;
                }
            }
        }
        self.inline.update(data);
    }

    /// The current entry is complete.
    fn end_entry(&mut self) {
        #[cfg(not(target_arch = "wasm32"))]
        {
            if self.to_worker {
                if let Some(w) = &mut self.worker {
                    w.end_entry();
                    self.digests.push(None);
                    return;
                }
            }
        }
        self.digests.push(Some(self.inline.finalize_reset().into()));
    }

    /// The digests of all completed entries in order (an entry cut short is dropped; `None`
    /// only if the worker thread died, which no digest then matches), the archive's digest
    /// if it was hashed, and the `db.sql` scan if the worker ran it.
    fn finish(self) -> HashResults {
        let archive = self.archive.map(|h| h.finalize().into());
        #[cfg(not(target_arch = "wasm32"))]
        {
            if let Some(w) = self.worker {
                let hashed_archive = w.hashed_archive();
                let (from_worker, worker_archive, scan) = w.finish();
                let mut from_worker = from_worker.into_iter();
                let digests = self
                    .digests
                    .into_iter()
                    .map(|d| d.or_else(|| from_worker.next()))
                    .collect();
                return (
                    digests,
                    if hashed_archive {
                        worker_archive
                    } else {
                        archive
                    },
                    scan,
                );
            }
        }
        (self.digests, archive, None)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod worker {
    //! The hashing thread: data goes to it in pooled buffers over a bounded channel, so memory
    //! stays at `BUFFERS * BUFFER_BYTES` however fast decompression runs.

    use crate::sqlscan::SqlScan;
    use sha2::{Digest, Sha256};
    use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
    use std::thread::JoinHandle;

    const BUFFER_BYTES: usize = 256 * 1024;
    const BUFFERS: usize = 32;

    /// The two byte streams the worker hashes.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Stream {
        /// Content entries, one after the other.
        Entry,
        /// The compressed archive.
        Archive,
    }

    enum Job {
        Data(Stream, Vec<u8>),
        /// The current entry is `db.sql`: feed it to this scan too.
        Scan(SqlScan),
        EndEntry,
    }

    /// What the thread computed: entry digests in order, the archive's digest, and the last
    /// `db.sql` scan it was given.
    type Digests = (Vec<[u8; 32]>, Option<[u8; 32]>, Option<SqlScan>);

    pub(super) struct HashWorker {
        jobs: SyncSender<Job>,
        returned: Receiver<Vec<u8>>,
        /// Buffers back from the thread, ready for reuse.
        free: Vec<Vec<u8>>,
        /// Buffers allocated so far (at most `BUFFERS`).
        allocated: usize,
        /// Buffers sent and not yet returned.
        in_flight: usize,
        /// Data not yet sent, per stream.
        entry_pending: Vec<u8>,
        archive_pending: Vec<u8>,
        hashed_archive: bool,
        thread: JoinHandle<Digests>,
    }

    impl HashWorker {
        /// Starts the thread; `None` if the platform refuses.
        pub(super) fn spawn() -> Option<Self> {
            let (jobs, job_rx) = sync_channel::<Job>(BUFFERS);
            let (returned_tx, returned) = channel::<Vec<u8>>();
            let thread = std::thread::Builder::new()
                .name("roomshard-verify-hash".into())
                .spawn(move || {
                    let mut entry = Sha256::new();
                    let mut archive: Option<Sha256> = None;
                    let mut digests = Vec::new();
                    let mut scan: Option<SqlScan> = None;
                    let mut scanning = false;
                    for job in job_rx {
                        match job {
                            Job::Data(stream, mut buf) => {
                                match stream {
                                    Stream::Entry => {
                                        entry.update(&buf);
                                        if let (true, Some(s)) = (scanning, &mut scan) {
                                            s.feed(&buf);
                                        }
                                    }
                                    Stream::Archive => {
                                        archive.get_or_insert_with(Sha256::new).update(&buf)
                                    }
                                }
                                buf.clear();
                                // The verifier may be gone; the buffer is then simply freed.
                                let _ = returned_tx.send(buf);
                            }
                            Job::Scan(s) => {
                                scan = Some(s);
                                scanning = true;
                            }
                            Job::EndEntry => {
                                scanning = false;
                                digests.push(entry.finalize_reset().into());
                            }
                        }
                    }
                    (digests, archive.map(|h| h.finalize().into()), scan)
                })
                .ok()?;
            Some(HashWorker {
                jobs,
                returned,
                free: Vec::new(),
                allocated: 0,
                in_flight: 0,
                entry_pending: Vec::new(),
                archive_pending: Vec::new(),
                hashed_archive: false,
                thread,
            })
        }

        pub(super) fn queued_bytes(&mut self) -> u64 {
            self.collect_returned();
            (self.in_flight * BUFFER_BYTES) as u64
        }

        /// Whether any archive bytes were given.
        pub(super) fn hashed_archive(&self) -> bool {
            self.hashed_archive
        }

        pub(super) fn update(&mut self, stream: Stream, mut data: &[u8]) {
            self.hashed_archive |= stream == Stream::Archive;
            while !data.is_empty() {
                if self.pending(stream).capacity() == 0 {
                    let buf = self.take_buffer();
                    *self.pending(stream) = buf;
                }
                let pending = self.pending(stream);
                let n = (BUFFER_BYTES - pending.len()).min(data.len());
                pending.extend_from_slice(&data[..n]);
                data = &data[n..];
                if pending.len() == BUFFER_BYTES {
                    self.flush(stream);
                }
            }
        }

        /// The current entry (nothing of it sent yet) is `db.sql`, to be scanned by `scan`.
        pub(super) fn scan_entry(&mut self, scan: SqlScan) {
            self.flush(Stream::Entry);
            // Fails only if the thread is gone, which `finish` reports as missing digests.
            let _ = self.jobs.send(Job::Scan(scan));
        }

        pub(super) fn end_entry(&mut self) {
            self.flush(Stream::Entry);
            // Fails only if the thread is gone, which `finish` reports as missing digests.
            let _ = self.jobs.send(Job::EndEntry);
        }

        pub(super) fn finish(mut self) -> Digests {
            self.flush(Stream::Archive);
            drop(self.jobs);
            // The thread does not panic; if it somehow did, the digests are missing and the
            // report says so per file.
            self.thread.join().unwrap_or_default()
        }

        fn pending(&mut self, stream: Stream) -> &mut Vec<u8> {
            match stream {
                Stream::Entry => &mut self.entry_pending,
                Stream::Archive => &mut self.archive_pending,
            }
        }

        fn flush(&mut self, stream: Stream) {
            if !self.pending(stream).is_empty() {
                let full = std::mem::take(self.pending(stream));
                if self.jobs.send(Job::Data(stream, full)).is_ok() {
                    self.in_flight += 1;
                }
            }
        }

        fn collect_returned(&mut self) {
            while let Ok(buf) = self.returned.try_recv() {
                self.in_flight -= 1;
                self.free.push(buf);
            }
        }

        /// An empty buffer: a returned one, a new one while under the pool size, or the next
        /// one the thread returns.
        fn take_buffer(&mut self) -> Vec<u8> {
            self.collect_returned();
            if let Some(buf) = self.free.pop() {
                return buf;
            }
            if self.allocated < BUFFERS {
                self.allocated += 1;
                return Vec::with_capacity(BUFFER_BYTES);
            }
            match self.returned.recv() {
                Ok(buf) => {
                    self.in_flight -= 1;
                    buf
                }
                Err(_) => Vec::with_capacity(BUFFER_BYTES),
            }
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn hashing_gives_digests_in_entry_order_wherever_entries_are_hashed() {
        let entries: Vec<Vec<u8>> = (0..7u8)
            .map(|i| {
                (0..(usize::from(i) * 150_000))
                    .map(|j| (j % 251) as u8 ^ i)
                    .collect()
            })
            .collect();
        let archive: Vec<u8> = (0..1_000_000u32).map(|j| (j % 253) as u8).collect();
        let mut h = Hashing::new(true);
        for (i, e) in entries.iter().enumerate() {
            h.begin_entry(e.len() as u64, false);
            // Force both routes: worker and inline.
            h.to_worker = i % 3 != 1;
            for piece in e.chunks(70_000) {
                h.update(piece);
                h.archive_update(&archive[..archive.len() / 7]);
            }
            h.end_entry();
        }
        let mut archive_hash = Sha256::new();
        for _ in 0..entries
            .iter()
            .map(|e| e.chunks(70_000).count())
            .sum::<usize>()
        {
            archive_hash.update(&archive[..archive.len() / 7]);
        }
        let (digests, archive_digest, _) = h.finish();
        let want: Vec<Option<[u8; 32]>> = entries
            .iter()
            .map(|e| Some(Sha256::digest(e).into()))
            .collect();
        assert_eq!(digests, want);
        assert_eq!(archive_digest, Some(archive_hash.finalize().into()));
    }

    #[test]
    fn the_worker_scans_db_sql_like_this_thread_would() {
        let mut sql = b"SET x;\nCOPY \"t\" (\"a\", \"b\") FROM stdin;\n".to_vec();
        for i in 0..20_000 {
            sql.extend_from_slice(format!("{i}\tsome text\n").as_bytes());
        }
        sql.extend_from_slice(b"\\.\n");
        let mut inline = SqlScan::new(1 << 20);
        inline.feed(&sql);
        let mut h = Hashing::new(false);
        h.begin_entry(sql.len() as u64, true);
        let mut scan = SqlScan::new(1 << 20);
        assert!(h.scan_in_worker(&mut scan, 1 << 20));
        for piece in sql.chunks(70_000) {
            h.update(piece);
        }
        h.end_entry();
        let (digests, _, from_worker) = h.finish();
        assert_eq!(digests, vec![Some(Sha256::digest(&sql).into())]);
        let (skeleton, blocks, problem) = from_worker.expect("the worker's scan").finish();
        let (want_skeleton, want_blocks, want_problem) = inline.finish();
        assert_eq!(skeleton, want_skeleton);
        assert_eq!(blocks, want_blocks);
        assert_eq!(problem, want_problem);
        assert_eq!(blocks[0].rows, 20_000);
    }
}
