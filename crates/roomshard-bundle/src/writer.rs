//! The streaming bundle writer: `room_<id>.tar.zst` in the entry order of docs/bundle-format.md
//! §2, hashing each entry as it passes, the manifest last, then its signature.

use std::io::{self, Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use roomshard_verify::format::{
    DB_SQL, EXPORT_SIGNATURE, Exporter, FORMAT_NAME, FORMAT_VERSION, FileEntry, MANIFEST_JSON,
    MEDIA_PREFIX, RoomInfo, SignatureInfo, TableDescriptor, TableEntry, Totals, hex,
    to_canonical_json, validate_manifest, validate_path, validate_room_id, validate_tables,
    validate_timestamp,
};
use roomshard_verify::names::{PathSet, media_key, media_paths};
use roomshard_verify::{Algorithm, Manifest, VerifyLimits};
use sha2::{Digest, Sha256};

use crate::error::BundleError;
use crate::frames::FrameEncoder;
use crate::signer::Signer;

/// Largest signature accepted, in bytes (its base64 stays under the verifier's 4 KiB limit).
const MAX_SIGNATURE_BYTES: usize = 3000;

/// What the manifest says about the export, apart from what the writer computes (files, hashes,
/// row counts, totals, signature).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleMeta {
    /// The room exported.
    pub room: RoomInfo,
    /// The exporting server (free text, e.g. its host name).
    pub source_instance: String,
    /// The host's schema version for the room tables (free text).
    pub schema_version: String,
    /// Export (signing) time, `YYYY-MM-DDTHH:MM:SSZ`; also every entry's tar mtime, so the
    /// archive's bytes depend only on the inputs.
    pub created_at: String,
    /// The room-scoped tables, in `db.sql` order.
    pub tables: Vec<TableDescriptor>,
    /// The exporting software; `None` means [`default_exporter`].
    pub exporter: Option<Exporter>,
}

/// `roomshard` and this crate's version: the exporter recorded when [`BundleMeta::exporter`] is
/// `None`.
pub fn default_exporter() -> Exporter {
    Exporter {
        name: "roomshard".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// `room_<id>.tar.zst`, the archive's file name (and the sidecar's subject name).
pub fn archive_file_name(room_id: &str) -> String {
    format!("room_{room_id}.tar.zst")
}

/// Compression settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// zstd level (default 3: fast, and media is mostly incompressible anyway). Levels up to 22
    /// stay within the verifier's 2^27 window limit.
    pub zstd_level: i32,
    /// zstd worker threads; 0 compresses on the calling thread into one frame, N ≥ 1 cuts the
    /// tar stream into independent frames of [`FRAME_BYTES`](crate::FRAME_BYTES) compressed on
    /// N threads while the calling thread frames, hashes and writes (module `frames`). Output
    /// with workers differs from output without, but is the same for any number of workers ≥ 1.
    pub zstd_workers: u32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            zstd_level: 3,
            zstd_workers: 0,
        }
    }
}

/// A [`Write`] that passes bytes through and SHA-256s them, so an export learns its archive's
/// digest (for the sidecar) while writing it, without reading the file back.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> std::fmt::Debug for HashingWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashingWriter")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Bytes written through so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// SHA-256 of the bytes written so far.
    pub fn sha256(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }

    /// The wrapped writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Unwraps into the inner writer and the SHA-256 of everything written.
    pub fn into_parts(self) -> (W, [u8; 32]) {
        let digest = self.hasher.finalize().into();
        (self.inner, digest)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let written = buf.get(..n).unwrap_or(buf);
        self.hasher.update(written);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads at most `limit` bytes from `inner`, hashing and counting them.
struct EntryReader<'a, R: Read> {
    inner: &'a mut R,
    remaining: u64,
    count: u64,
    hasher: Sha256,
}

impl<R: Read> Read for EntryReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let max = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..max])?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Whether `reader` has no bytes left.
fn at_eof<R: Read>(reader: &mut R) -> io::Result<bool> {
    let mut byte = [0u8; 1];
    loop {
        match reader.read(&mut byte) {
            Ok(n) => return Ok(n == 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Seconds since the Unix epoch of a validated `YYYY-MM-DDTHH:MM:SSZ` timestamp (0 before 1970).
fn unix_seconds(ts: &str) -> u64 {
    let num =
        |r: std::ops::Range<usize>| -> i64 { ts.get(r).and_then(|s| s.parse().ok()).unwrap_or(0) };
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + num(11..13) * 3600 + num(14..16) * 60 + num(17..19);
    u64::try_from(secs).unwrap_or(0)
}

type Tar<W> = tar::Builder<Compressor<W>>;

/// The zstd layer: one frame on the calling thread, or independent frames on workers.
enum Compressor<W: Write> {
    Single(zstd::stream::write::Encoder<'static, W>),
    Frames(FrameEncoder<W>),
}

impl<W: Write> Compressor<W> {
    fn new(out: W, options: &WriterOptions) -> io::Result<Self> {
        if options.zstd_workers > 0 {
            return Ok(Compressor::Frames(FrameEncoder::new(
                out,
                options.zstd_level,
                options.zstd_workers,
            )?));
        }
        let mut encoder = zstd::stream::write::Encoder::new(out, options.zstd_level)?;
        encoder.include_checksum(true)?;
        Ok(Compressor::Single(encoder))
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Single(e) => e.finish(),
            Compressor::Frames(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Single(e) => e.write(buf),
            Compressor::Frames(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Single(e) => e.flush(),
            Compressor::Frames(e) => e.flush(),
        }
    }
}

/// Largest mtime a ustar header holds in octal (11 digits); later times are clamped so headers
/// never fall back to base-256 numbers.
const MAX_USTAR_MTIME: u64 = 0o777_7777_7777;

/// A deterministic ustar header for a regular file: mode 0644, uid/gid 0, no user or group
/// names, the export's mtime. Fails (with nothing written) when the path does not fit ustar's
/// name/prefix split.
fn entry_header(path: &str, mtime: u64, size: u64) -> Result<tar::Header, BundleError> {
    let mut header = tar::Header::new_ustar();
    header
        .set_path(path)
        .map_err(|e| BundleError::invalid(format!("entry path {path:?}: {e}")))?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime.min(MAX_USTAR_MTIME));
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    Ok(header)
}

/// Appends an entry with `header`, streaming and hashing `size` bytes of `reader`, and returns
/// its SHA-256. A reader yielding fewer or more than `size` bytes is [`BundleError::Invalid`];
/// by then the entry is (partly) written, so the caller must poison the archive on any error.
fn append_entry<W: Write, R: Read>(
    tar: &mut Tar<W>,
    header: &tar::Header,
    path: &str,
    size: u64,
    reader: &mut R,
) -> Result<[u8; 32], BundleError> {
    let mut entry = EntryReader {
        inner: reader,
        remaining: size,
        count: 0,
        hasher: Sha256::new(),
    };
    tar.append(header, &mut entry)?;
    if entry.count != size {
        return Err(BundleError::invalid(format!(
            "{path}: reader ended after {} of the {size} bytes declared",
            entry.count
        )));
    }
    let digest: [u8; 32] = entry.hasher.finalize().into();
    if !at_eof(reader)? {
        return Err(BundleError::invalid(format!(
            "{path}: reader has more than the {size} bytes declared"
        )));
    }
    Ok(digest)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Nothing written yet: `db.sql` comes next.
    Start,
    /// `db.sql` written; media or the manifest may follow.
    Content,
    /// A call failed mid-entry; the archive is incomplete.
    Poisoned,
}

/// Streams a bundle to `W`: [`add_db_sql`](Self::add_db_sql) first, then
/// [`add_media`](Self::add_media) in ascending key order, then [`finish`](Self::finish) (or
/// [`finish_manifest`](Self::finish_manifest) and [`PendingSignature::write_signature`] for
/// signers that cannot be called synchronously).
///
/// Each entry is hashed as it is copied, so memory stays constant whatever the room's size; only
/// each file's path, size and digest are kept for the manifest. Output is byte-reproducible:
/// the same inputs, options and key give the same archive (headers are normalised and ECDSA
/// nonces are RFC 6979).
///
/// After an error while an entry was being written the writer is poisoned: every further call
/// returns [`BundleError::Poisoned`], and the output ends inside a zstd frame, so nothing will
/// mistake it for a complete bundle.
pub struct BundleWriter<W: Write> {
    tar: Tar<W>,
    meta: BundleMeta,
    mtime: u64,
    files: Vec<FileEntry>,
    last_media: Option<String>,
    names: PathSet,
    state: State,
}

impl<W: Write> std::fmt::Debug for BundleWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleWriter")
            .field("room", &self.meta.room.id)
            .field("files", &self.files.len())
            .field("last_media", &self.last_media)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<W: Write> BundleWriter<W> {
    /// Validates `meta` (room id, timestamp, table descriptors) and starts the zstd stream.
    pub fn new(out: W, meta: BundleMeta, options: WriterOptions) -> Result<Self, BundleError> {
        validate_room_id(&meta.room.id).map_err(|e| BundleError::invalid(e.detail))?;
        validate_timestamp(&meta.created_at)
            .map_err(|e| BundleError::invalid(format!("created_at: {}", e.detail)))?;
        validate_tables(&meta.tables).map_err(|e| BundleError::invalid(e.detail))?;
        if !zstd::compression_level_range().contains(&options.zstd_level) {
            return Err(BundleError::invalid(format!(
                "zstd level {} is outside {:?}",
                options.zstd_level,
                zstd::compression_level_range()
            )));
        }
        let encoder = Compressor::new(out, &options)?;
        let mtime = unix_seconds(&meta.created_at);
        Ok(BundleWriter {
            tar: tar::Builder::new(encoder),
            meta,
            mtime,
            files: Vec::new(),
            last_media: None,
            names: PathSet::new(),
            state: State::Start,
        })
    }

    fn add(&mut self, path: String, size: u64, reader: &mut impl Read) -> Result<(), BundleError> {
        let header = entry_header(&path, self.mtime, size)?;
        match append_entry(&mut self.tar, &header, &path, size, reader) {
            Ok(digest) => {
                self.files.push(FileEntry {
                    path,
                    size,
                    sha256: hex(&digest),
                });
                Ok(())
            }
            Err(e) => {
                self.state = State::Poisoned;
                Err(e)
            }
        }
    }

    /// Adds `db.sql`: exactly `size` bytes from `reader` (e.g. written by
    /// [`crate::DbSqlWriter`] to a temporary file). Must be the first entry.
    pub fn add_db_sql(&mut self, size: u64, mut reader: impl Read) -> Result<(), BundleError> {
        match self.state {
            State::Start => {}
            State::Content => {
                return Err(BundleError::invalid("db.sql was already added"));
            }
            State::Poisoned => return Err(BundleError::Poisoned),
        }
        self.add(DB_SQL.to_string(), size, &mut reader)?;
        self.state = State::Content;
        Ok(())
    }

    /// Adds media object `key` under its own portable entry name
    /// (`roomshard_verify::names::media_paths` of the key alone: `media/<key>` for ordinary
    /// keys, with `%`, control characters, backslashes and the like escaped): exactly `size`
    /// bytes from `reader`. For a whole room, whose keys may be case or normalisation twins or
    /// a file and a directory at once, compute the names with `media_paths` over all keys and
    /// use [`add_media_path`](Self::add_media_path).
    pub fn add_media(
        &mut self,
        key: &str,
        size: u64,
        reader: impl Read,
    ) -> Result<(), BundleError> {
        let path = media_paths(&[key]).remove(0);
        self.add_media_path(&path, size, reader)
    }

    /// Adds a media entry at `path` (`media/…`, as `media_paths` names it): exactly `size` bytes
    /// from `reader`. Paths must be strictly ascending (byte order), decode to an object key, make
    /// a valid entry path (docs/bundle-format.md §1: at most 200 bytes, no `..`, empty or `.`
    /// components, no control or deceptive characters) and not be a case or normalisation twin
    /// of, or a file/directory conflict with, an earlier one — everything a verifier checks.
    pub fn add_media_path(
        &mut self,
        path: &str,
        size: u64,
        mut reader: impl Read,
    ) -> Result<(), BundleError> {
        match self.state {
            State::Start => return Err(BundleError::invalid("db.sql must be added before media")),
            State::Content => {}
            State::Poisoned => return Err(BundleError::Poisoned),
        }
        validate_path(path).map_err(|e| BundleError::invalid(e.detail))?;
        media_key(path).map_err(|e| BundleError::invalid(e.detail))?;
        if let Some(last) = &self.last_media
            && path <= last.as_str()
        {
            return Err(BundleError::invalid(format!(
                "media entry {path:?} is not after {last:?}; add media in strictly ascending entry-path order"
            )));
        }
        // db.sql + media + manifest.json + export.signature must fit the entry limit every
        // default verifier applies; refusing here beats writing a bundle nobody will accept.
        let entries = self.files.len() as u64 + 1 + 2;
        if entries > VerifyLimits::default().max_entries {
            return Err(BundleError::invalid(format!(
                "media entry {path:?} would make {entries} archive entries, over the {} a default verifier accepts",
                VerifyLimits::default().max_entries
            )));
        }
        self.names.insert(path).map_err(|e| {
            BundleError::invalid(format!("{e}; name a room's objects with media_paths"))
        })?;
        self.add(path.to_string(), size, &mut reader)?;
        self.last_media = Some(path.to_string());
        Ok(())
    }

    /// Builds and writes `manifest.json` (signed by `key_id` with `algorithm`) and returns the
    /// bytes to sign. `row_counts` are the tables' row counts in descriptor order (from
    /// [`crate::DbSqlWriter::finish`]).
    pub fn finish_manifest(
        mut self,
        row_counts: &[u64],
        key_id: &str,
        algorithm: Algorithm,
    ) -> Result<PendingSignature<W>, BundleError> {
        match self.state {
            State::Start => return Err(BundleError::invalid("db.sql was never added")),
            State::Content => {}
            State::Poisoned => return Err(BundleError::Poisoned),
        }
        if row_counts.len() != self.meta.tables.len() {
            return Err(BundleError::invalid(format!(
                "{} row counts for {} tables",
                row_counts.len(),
                self.meta.tables.len()
            )));
        }
        let manifest = self.build_manifest(row_counts, key_id, algorithm);
        validate_manifest(&manifest).map_err(|e| BundleError::invalid(e.detail))?;
        let manifest_bytes = to_canonical_json(&manifest);
        let size = manifest_bytes.len() as u64;
        if size > VerifyLimits::default().max_manifest_bytes {
            return Err(BundleError::invalid(format!(
                "manifest.json would be {size} bytes, over the {} a default verifier accepts",
                VerifyLimits::default().max_manifest_bytes
            )));
        }
        let header = entry_header(MANIFEST_JSON, self.mtime, size)?;
        if let Err(e) = append_entry(
            &mut self.tar,
            &header,
            MANIFEST_JSON,
            size,
            &mut manifest_bytes.as_slice(),
        ) {
            self.state = State::Poisoned;
            return Err(e);
        }
        Ok(PendingSignature {
            tar: self.tar,
            mtime: self.mtime,
            manifest,
            manifest_bytes,
        })
    }

    fn build_manifest(
        &mut self,
        row_counts: &[u64],
        key_id: &str,
        algorithm: Algorithm,
    ) -> Manifest {
        let mut files = std::mem::take(&mut self.files);
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut totals = Totals::default();
        for f in &files {
            totals.files += 1;
            totals.bytes += f.size;
            if f.path.starts_with(MEDIA_PREFIX) {
                totals.media_files += 1;
                totals.media_bytes += f.size;
            }
        }
        totals.rows = row_counts.iter().sum();
        let tables = self
            .meta
            .tables
            .iter()
            .zip(row_counts)
            .map(|(descriptor, &row_count)| TableEntry {
                descriptor: descriptor.clone(),
                row_count,
            })
            .collect();
        Manifest {
            format: FORMAT_NAME.to_string(),
            format_version: FORMAT_VERSION,
            room: self.meta.room.clone(),
            source_instance: self.meta.source_instance.clone(),
            exporter: self.meta.exporter.clone().unwrap_or_else(default_exporter),
            schema_version: self.meta.schema_version.clone(),
            tables,
            files,
            totals,
            created_at: self.meta.created_at.clone(),
            signature: SignatureInfo {
                key_id: key_id.to_string(),
                algorithm,
            },
        }
    }

    /// Writes the manifest, signs it with `signer`, writes `export.signature` and ends the tar
    /// and zstd streams.
    pub fn finish(
        self,
        row_counts: &[u64],
        signer: &dyn Signer,
    ) -> Result<Finished<W>, BundleError> {
        let pending = self.finish_manifest(row_counts, signer.key_id(), signer.algorithm())?;
        let signature = signer.sign(pending.manifest_bytes())?;
        pending.write_signature(&signature)
    }
}

/// A bundle whose manifest is written and awaits its signature: for signers that are
/// asynchronous or remote (KMS), sign [`manifest_bytes`](Self::manifest_bytes) however needed,
/// then call [`write_signature`](Self::write_signature).
pub struct PendingSignature<W: Write> {
    tar: Tar<W>,
    mtime: u64,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
}

impl<W: Write> std::fmt::Debug for PendingSignature<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSignature")
            .field("manifest", &self.manifest)
            .finish_non_exhaustive()
    }
}

impl<W: Write> PendingSignature<W> {
    /// The exact bytes of `manifest.json`: what must be signed.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The manifest written.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Writes `export.signature` (standard base64 of `signature` and a newline) and ends the tar
    /// and zstd streams. `signature` is DER for ECDSA P-256, 64 bytes for Ed25519; its shape is
    /// checked (a wrong one is [`BundleError::Signing`]), its validity is the signer's affair.
    pub fn write_signature(mut self, signature: &[u8]) -> Result<Finished<W>, BundleError> {
        let algorithm = self.manifest.signature.algorithm;
        let shape_ok = match algorithm {
            Algorithm::EcdsaP256Sha256 => p256::ecdsa::Signature::from_der(signature).is_ok(),
            Algorithm::Ed25519 => signature.len() == 64,
        };
        if !shape_ok || signature.len() > MAX_SIGNATURE_BYTES {
            return Err(BundleError::signing(
                format!(
                    "a {} signature of {} bytes is malformed (ECDSA must be DER, Ed25519 64 bytes)",
                    algorithm.as_str(),
                    signature.len()
                ),
                None,
            ));
        }
        let signature_b64 = STANDARD.encode(signature);
        let text = format!("{signature_b64}\n");
        let size = text.len() as u64;
        let header = entry_header(EXPORT_SIGNATURE, self.mtime, size)?;
        append_entry(
            &mut self.tar,
            &header,
            EXPORT_SIGNATURE,
            size,
            &mut text.as_bytes(),
        )?;
        let encoder = self.tar.into_inner()?;
        let out = encoder.finish()?;
        let manifest_sha256 = hex(&Sha256::digest(&self.manifest_bytes));
        Ok(Finished {
            manifest: self.manifest,
            manifest_bytes: self.manifest_bytes,
            manifest_sha256,
            signature_b64,
            out,
        })
    }
}

/// A complete bundle: what was written, and the output back.
#[derive(Debug)]
#[non_exhaustive]
pub struct Finished<W> {
    /// The manifest.
    pub manifest: Manifest,
    /// `manifest.json`'s exact bytes.
    pub manifest_bytes: Vec<u8>,
    /// SHA-256 (hex) of `manifest.json`, the digest sidecars and receipts bind to.
    pub manifest_sha256: String,
    /// `export.signature` without its trailing newline.
    pub signature_b64: String,
    /// The output writer (e.g. a [`HashingWriter`] holding the archive digest).
    pub out: W,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_known_values() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), 0);
        assert_eq!(unix_seconds("2000-03-01T00:00:00Z"), 951_868_800);
        assert_eq!(unix_seconds("2026-11-22T10:00:00Z"), 1_795_341_600);
        assert_eq!(unix_seconds("1969-12-31T23:59:59Z"), 0);
    }
}
