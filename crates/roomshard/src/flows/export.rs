//! Export: a room as a signed `room_<id>.tar.zst` (bundle format v1) and its sidecar.
//!
//! The flow, top to bottom:
//!
//! 1. **Where from**: the placement decides the scope. A sealed room is refused (its key grant
//!    is revoked: nothing may leave); during a decentralise (`provisioning`, `copying`,
//!    `cutover`) the pooled copy is still authoritative; a sovereign room exports from its
//!    dedicated shard and bucket.
//! 2. **Rows**: [`ShardStore::dump`](roomshard_core::ShardStore::dump) streams COPY text into a
//!    [`DbSqlWriter`] spooled to a temporary file (the archive needs `db.sql`'s size before its
//!    bytes). The writer runs on a blocking thread fed through a bounded channel, so the runtime
//!    never blocks on file I/O.
//! 3. **Bundle**: the synchronous [`BundleWriter`] runs on a blocking thread, which also hashes
//!    its output. [`export`] hands that output back through a bounded channel to the caller's
//!    async writer; [`export_to_dir`] lets the thread write the file itself (a `DurableFile`,
//!    flushed to disk while it is written). Media bytes go the other way, listed and read
//!    through the [`MediaStore`](roomshard_core::MediaStore) page by page. The manifest is
//!    signed with the platform key through the async [`KeyManager`](roomshard_core::KeyManager)
//!    in between. Every channel is bounded, so memory does not grow with the room.
//! 4. **Sidecar and audit**: the Sigstore sidecar binds the archive digest to the manifest;
//!    `export.finished` goes into the audit log.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use roomshard_bundle::{
    BundleError, BundleMeta, BundleWriter, DbSqlWriter, HashingWriter, WriterOptions,
    archive_file_name, sidecar_to_sign,
};
use roomshard_core::{
    Algorithm, DumpSink, Error, ListRequest, ObjectKey, Phase, PlacementState, ProgressEvent,
    ProgressSink, Result, RoomId, Scope, TableDescriptor, async_trait,
};
use roomshard_verify::Manifest;
use roomshard_verify::format::RoomInfo;
use roomshard_verify::names::media_paths;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::{Providers, Roomshard};

/// How to export.
#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    /// The manifest's `created_at` (`YYYY-MM-DDTHH:MM:SSZ`); default: now.
    pub created_at: Option<String>,
    /// Where to spool `db.sql` (its size goes into the archive before its bytes); default: the
    /// system temp directory.
    pub spool_dir: Option<PathBuf>,
    /// zstd worker threads compressing the archive in independent frames
    /// (`roomshard_bundle::WriterOptions::zstd_workers`) while the writer thread frames, hashes
    /// and writes; 0 (the default) compresses on the writer thread into one frame. On two cores
    /// workers measured no faster — the export is CPU-bound on hashing, decryption and
    /// compression together (docs/benchmarks.md) — and cost ~13 MiB, so they are opt-in; with
    /// more cores they take compression off the writer thread, and independent frames can be
    /// decompressed in parallel. The archive bytes are the same for any count ≥ 1, so such an
    /// export is reproducible across machines; they differ from 0's.
    pub zstd_workers: u32,
}

/// What an export wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportOutcome {
    /// The room exported.
    pub room: RoomId,
    /// `room_<id>.tar.zst`.
    pub file_name: String,
    /// SHA-256 (hex) of `manifest.json`.
    pub manifest_sha256: String,
    /// SHA-256 (hex) of the archive.
    pub archive_sha256: String,
    /// Archive size in bytes.
    pub archive_bytes: u64,
    /// Rows over all tables.
    pub rows: u64,
    /// Media objects.
    pub objects: u64,
    /// Media bytes.
    pub media_bytes: u64,
    /// The Sigstore sidecar (`room_<id>.tar.zst.sigstore.json`), canonical JSON.
    pub sidecar: Vec<u8>,
}

/// Chunks queued between the async side and a blocking thread, per channel. With chunks of at
/// most [`CHUNK_BYTES`], this bounds an export's buffered bytes to a few MiB whatever the room.
const CHANNEL_DEPTH: usize = 8;

/// Size of the archive chunks handed from the blocking writer to the async output.
const CHUNK_BYTES: usize = 64 * 1024;

/// Objects asked for per media listing page.
const LIST_PAGE: u32 = 1000;

/// What the pipeline's internal "the other side stopped" errors say; such an error is never the
/// cause of a failure, so the other side's error is reported instead.
const PIPELINE_STOPPED: &str = "export pipeline (the other side stopped)";

fn stopped() -> Error {
    Error::Unavailable {
        what: PIPELINE_STOPPED.to_string(),
        retryable: false,
        source: None,
    }
}

fn is_stopped(e: &Error) -> bool {
    matches!(e, Error::Unavailable { what, .. } if what == PIPELINE_STOPPED)
}

/// Picks the error that caused a two-sided failure: the one that is not merely "the other side
/// stopped".
fn first_cause(a: Error, b: Error) -> Error {
    if is_stopped(&a) { b } else { a }
}

fn bundle_err(e: BundleError) -> Error {
    match e {
        BundleError::Invalid { what } => Error::invalid("bundle", what),
        BundleError::Io(io) if io.kind() == io::ErrorKind::BrokenPipe => stopped(),
        other => Error::unavailable("writing the bundle", false, other),
    }
}

fn join_err(e: tokio::task::JoinError) -> Error {
    Error::unavailable("export worker thread", false, e)
}

/// Streams `room` as a signed bundle into `out`.
///
/// # Errors
/// [`Error::NotFound`] for a room with no placement and no pooled rows or objects;
/// [`Error::Sealed`] for a sealed room; any provider error; an error of `out` (as
/// [`Error::Unavailable`]). On error, what was written to `out` is an incomplete archive that no
/// verifier accepts (it ends inside a zstd frame): discard it ([`export_to_dir`] does).
pub async fn export<W: AsyncWrite + Unpin + Send>(
    rs: &Roomshard,
    room: &RoomId,
    mut out: W,
    options: &ExportOptions,
    progress: &dyn ProgressSink,
) -> Result<ExportOutcome> {
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(CHANNEL_DEPTH);
    let drain = async move {
        while let Some(chunk) = out_rx.recv().await {
            out.write_all(&chunk)
                .await
                .map_err(|e| Error::unavailable("writing the export", false, e))?;
        }
        out.flush()
            .await
            .map_err(|e| Error::unavailable("writing the export", false, e))
    };
    export_into(
        rs,
        room,
        ChannelWriter::new(out_tx),
        drain,
        options,
        progress,
    )
    .await
}

/// The export itself: the archive goes to `sink` on the blocking writer thread, while `drain`
/// (which takes what a channel sink sends; a no-op for a file) runs alongside the media feed and
/// the signing. Returns once `sink` is finished (for a file: on disk).
async fn export_into<S: ArchiveSink>(
    rs: &Roomshard,
    room: &RoomId,
    sink: S,
    drain: impl std::future::Future<Output = Result<()>>,
    options: &ExportOptions,
    progress: &dyn ProgressSink,
) -> Result<ExportOutcome> {
    let (scope, on) = export_scope(rs, room).await?;
    let created_at = options
        .created_at
        .clone()
        .unwrap_or_else(crate::now_rfc3339);
    let tables = rs.schema.tables().to_vec();

    // 1. Rows → spooled db.sql.
    progress.emit(ProgressEvent::Phase(Phase::Copy));
    let (spool, sql_size, row_counts) =
        spool_db_sql(rs, &on, &scope, room, &tables, options, progress).await?;
    let rows: u64 = row_counts.iter().sum();
    let usage = on.media.usage(&scope).await?;
    progress.emit(ProgressEvent::Planned {
        tables: tables.len() as u64,
        rows,
        objects: usage.objects,
        bytes: usage.bytes,
    });

    // 2. The archive, written (and hashed) on a blocking thread.
    let meta = BundleMeta {
        room: RoomInfo {
            id: room.to_string(),
            name: None,
        },
        source_instance: rs.config.instance.clone(),
        schema_version: rs.schema.version().to_string(),
        created_at,
        tables,
        exporter: None,
    };
    let (media_tx, media_rx) = mpsc::channel::<MediaMsg>(CHANNEL_DEPTH);
    let (manifest_tx, manifest_rx) = oneshot::channel::<Vec<u8>>();
    let (sig_tx, sig_rx) = oneshot::channel::<Vec<u8>>();
    let key_id = rs.config.signing_key_id.clone();
    let algorithm = rs.config.signing_algorithm;
    let writer_options = WriterOptions {
        zstd_workers: options.zstd_workers,
        ..WriterOptions::default()
    };
    let writer_task = tokio::task::spawn_blocking(move || {
        write_archive(WriteJob {
            options: writer_options,
            spool,
            sql_size,
            meta,
            row_counts,
            key_id,
            algorithm,
            out: HashingWriter::new(sink),
            media: media_rx,
            manifest_tx,
            sig_rx,
        })
    });

    let feed = feed_media(&on, &scope, media_tx, usage.objects, progress);
    let sign = async {
        let manifest_bytes = manifest_rx.await.map_err(|_| stopped())?;
        progress.emit(ProgressEvent::Phase(Phase::Receipt));
        let signature = rs
            .keys
            .sign(&rs.config.signing_key, &manifest_bytes)
            .await?;
        sig_tx.send(signature).map_err(|_| stopped())?;
        Ok::<_, Error>(())
    };
    let pipeline = async { tokio::try_join!(drain, feed, sign) };
    let (piped, written) = tokio::join!(pipeline, writer_task);
    let written = written.map_err(join_err)?;
    let ((), (objects, media_bytes), (), archive) = match (piped, written) {
        (Ok((d, f, s)), Ok(w)) => (d, f, s, w),
        (Err(a), Err(b)) => return Err(first_cause(b, a)),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
    };
    let WrittenArchive {
        manifest,
        manifest_sha256,
        archive_digest,
        archive_bytes,
    } = archive;

    // 3. Sidecar and audit.
    let pending = sidecar_to_sign(&archive_digest, &manifest, &manifest_sha256)
        .map_err(|e| Error::invalid("sidecar", e.to_string()))?;
    let signature = rs
        .keys
        .sign(&rs.config.signing_key, pending.message())
        .await?;
    let sidecar = pending.into_sidecar(&rs.config.signing_key_id, &signature);
    let outcome = ExportOutcome {
        room: room.clone(),
        file_name: archive_file_name(room.as_str()),
        manifest_sha256,
        archive_sha256: hex::encode(archive_digest),
        archive_bytes,
        rows: manifest.totals.rows,
        objects,
        media_bytes,
        sidecar,
    };
    rs.audit(
        "export.finished",
        Some(room),
        serde_json::json!({
            "scope": crate::support::scope_detail(&scope),
            "manifest_sha256": outcome.manifest_sha256,
            "archive_sha256": outcome.archive_sha256,
            "archive_bytes": outcome.archive_bytes,
            "rows": outcome.rows,
            "objects": outcome.objects,
            "media_bytes": outcome.media_bytes,
            "created_at": manifest.created_at,
        }),
    )
    .await?;
    progress.emit(ProgressEvent::Finished);
    Ok(outcome)
}

/// The scope holding the room's authoritative copy now (see the module docs), and the
/// providers holding it: the placement's own for a dedicated scope, the default ones otherwise.
async fn export_scope(rs: &Roomshard, room: &RoomId) -> Result<(Scope, Providers)> {
    let defaults = rs.providers_for(&roomshard_core::ProviderNames::default())?;
    match rs.control.placement(room).await? {
        Some(p) if p.state == PlacementState::Sealed => Err(Error::Sealed { room: room.clone() }),
        // Pooled, provisioning, copying, cutover: pooled; sovereign, recentralising: dedicated.
        Some(p) if p.is_sharded => Ok((p.scope(), rs.own_providers(&p)?)),
        Some(p) => Ok((p.scope(), defaults)),
        None => {
            // A room roomshard has never seen is pooled, if it exists at all.
            let scope = Scope::Pooled(room.clone());
            let counts = rs.shards.row_counts(&scope, &rs.schema).await?;
            let has_rows = counts.iter().any(|t| t.rows > 0);
            let has_objects = rs.media.usage(&scope).await?.objects > 0;
            if has_rows || has_objects {
                Ok((scope, defaults))
            } else {
                Err(Error::not_found(format!("room {room}")))
            }
        }
    }
}

/// One message to the blocking `db.sql` writer.
enum SqlMsg {
    Begin(String),
    Rows(Bytes),
}

/// A [`DumpSink`] that hands tables and rows to the blocking `db.sql` writer.
struct SpoolSink<'a> {
    tx: mpsc::Sender<SqlMsg>,
    progress: &'a dyn ProgressSink,
    table: String,
    done: u64,
}

#[async_trait]
impl DumpSink for SpoolSink<'_> {
    async fn begin_table(&mut self, table: &TableDescriptor) -> Result<()> {
        self.table = table.name.clone();
        self.done = 0;
        self.tx
            .send(SqlMsg::Begin(table.name.clone()))
            .await
            .map_err(|_| stopped())
    }

    async fn rows(&mut self, chunk: Bytes) -> Result<()> {
        self.done += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        self.tx
            .send(SqlMsg::Rows(chunk))
            .await
            .map_err(|_| stopped())?;
        self.progress.emit(ProgressEvent::Rows {
            table: self.table.clone(),
            done: self.done,
            total: None,
        });
        Ok(())
    }

    async fn end_table(&mut self, rows: u64) -> Result<()> {
        self.progress.emit(ProgressEvent::Rows {
            table: self.table.clone(),
            done: rows,
            total: Some(rows),
        });
        Ok(())
    }
}

/// Dumps the room into a temporary file through [`DbSqlWriter`]; returns the file (rewound), its
/// size and the row counts in schema order.
async fn spool_db_sql(
    rs: &Roomshard,
    on: &Providers,
    scope: &Scope,
    room: &RoomId,
    tables: &[TableDescriptor],
    options: &ExportOptions,
    progress: &dyn ProgressSink,
) -> Result<(std::fs::File, u64, Vec<u64>)> {
    let file = match &options.spool_dir {
        Some(dir) => tempfile::tempfile_in(dir),
        None => tempfile::tempfile(),
    }
    .map_err(|e| Error::unavailable("creating the db.sql spool file", false, e))?;
    let (tx, mut rx) = mpsc::channel::<SqlMsg>(CHANNEL_DEPTH);
    let room_id = room.to_string();
    let descriptors = tables.to_vec();
    let writer = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut sql = DbSqlWriter::new(io::BufWriter::new(file), &room_id, &descriptors)
            .map_err(bundle_err)?;
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                SqlMsg::Begin(name) => sql.begin_table(&name).map_err(bundle_err)?,
                SqlMsg::Rows(chunk) => {
                    sql.write_copy_text(&chunk).map_err(bundle_err)?;
                }
            }
        }
        let (buffered, counts) = sql.finish().map_err(bundle_err)?;
        let mut file = buffered.into_inner().map_err(|e| {
            Error::unavailable("writing the db.sql spool file", false, e.into_error())
        })?;
        let size = file
            .stream_position()
            .and_then(|size| file.seek(SeekFrom::Start(0)).map(|_| size))
            .map_err(|e| Error::unavailable("rewinding the db.sql spool file", false, e))?;
        Ok((file, size, counts))
    });
    let mut sink = SpoolSink {
        tx,
        progress,
        table: String::new(),
        done: 0,
    };
    let dumped = on.shards.dump(scope, &rs.schema, &mut sink).await;
    drop(sink);
    let written = writer.await.map_err(join_err)?;
    match (dumped, written) {
        (Ok(_), Ok(w)) => Ok(w),
        (Err(a), Err(b)) => Err(first_cause(b, a)),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
    }
}

/// One message to the blocking archive writer about media.
enum MediaMsg {
    /// The object at entry path `path` (`media/…`) of `size` bytes follows.
    Start { path: String, size: u64 },
    /// Some of its bytes.
    Chunk(Bytes),
    /// Its end (the writer then checks it got exactly `size` bytes).
    End,
}

/// Lists the scope's objects, names them portably (`roomshard_verify::names::media_paths`:
/// keys that are case or normalisation twins, or a file and a directory at once, get escaped
/// names) and streams each into the archive writer in ascending entry-path order. Returns the
/// objects and bytes sent. Memory: the keys of the room (at most the format's entry limit).
async fn feed_media(
    on: &Providers,
    scope: &Scope,
    tx: mpsc::Sender<MediaMsg>,
    planned_objects: u64,
    progress: &dyn ProgressSink,
) -> Result<(u64, u64)> {
    let mut keys: Vec<ObjectKey> = Vec::new();
    let mut page_token = None;
    loop {
        let page = on
            .media
            .list(
                scope,
                &ListRequest {
                    prefix: None,
                    page_token: page_token.take(),
                    limit: Some(LIST_PAGE),
                },
            )
            .await?;
        keys.extend(page.objects.into_iter().map(|meta| meta.key));
        match page.next_page_token {
            Some(token) => page_token = Some(token),
            None => break,
        }
    }
    let names = media_paths(&keys.iter().map(ObjectKey::as_str).collect::<Vec<_>>());
    let mut order: Vec<(String, ObjectKey)> = names.into_iter().zip(keys).collect();
    order.sort();
    let (mut objects, mut bytes) = (0u64, 0u64);
    for (path, key) in order {
        let mut got = on.media.get(scope, &key).await?;
        tx.send(MediaMsg::Start {
            path,
            size: got.meta.size,
        })
        .await
        .map_err(|_| stopped())?;
        while let Some(chunk) = got.body.next_chunk().await {
            let chunk = chunk?;
            bytes += chunk.len() as u64;
            tx.send(MediaMsg::Chunk(chunk))
                .await
                .map_err(|_| stopped())?;
        }
        tx.send(MediaMsg::End).await.map_err(|_| stopped())?;
        objects += 1;
        progress.emit(ProgressEvent::Objects {
            done: objects,
            total: Some(planned_objects),
            bytes,
        });
    }
    Ok((objects, bytes))
}

/// Everything the blocking archive writer needs.
struct WriteJob<S: ArchiveSink> {
    options: WriterOptions,
    spool: std::fs::File,
    sql_size: u64,
    meta: BundleMeta,
    row_counts: Vec<u64>,
    key_id: String,
    algorithm: Algorithm,
    out: HashingWriter<S>,
    media: mpsc::Receiver<MediaMsg>,
    manifest_tx: oneshot::Sender<Vec<u8>>,
    sig_rx: oneshot::Receiver<Vec<u8>>,
}

/// What the archive writer produced.
struct WrittenArchive {
    manifest: Manifest,
    manifest_sha256: String,
    archive_digest: [u8; 32],
    archive_bytes: u64,
}

/// Writes the whole archive (blocking thread) and finishes the sink.
fn write_archive<S: ArchiveSink>(job: WriteJob<S>) -> Result<WrittenArchive> {
    let WriteJob {
        options,
        spool,
        sql_size,
        meta,
        row_counts,
        key_id,
        algorithm,
        out,
        mut media,
        manifest_tx,
        sig_rx,
    } = job;
    let mut writer = BundleWriter::new(out, meta, options).map_err(bundle_err)?;
    writer
        .add_db_sql(sql_size, io::BufReader::new(spool))
        .map_err(bundle_err)?;
    while let Some(msg) = media.blocking_recv() {
        let MediaMsg::Start { path, size } = msg else {
            return Err(Error::invalid(
                "export pipeline",
                "media bytes arrived outside an object",
            ));
        };
        let reader = MediaReader {
            rx: &mut media,
            current: Bytes::new(),
            ended: false,
        };
        writer
            .add_media_path(&path, size, reader)
            .map_err(bundle_err)?;
    }
    let pending = writer
        .finish_manifest(&row_counts, &key_id, algorithm)
        .map_err(bundle_err)?;
    manifest_tx
        .send(pending.manifest_bytes().to_vec())
        .map_err(|_| stopped())?;
    let signature = sig_rx.blocking_recv().map_err(|_| stopped())?;
    let finished = pending.write_signature(&signature).map_err(bundle_err)?;
    let archive_bytes = finished.out.bytes_written();
    let (sink, archive_digest) = finished.out.into_parts();
    sink.finish()
        .map_err(|e| bundle_err(BundleError::from(e)))?;
    Ok(WrittenArchive {
        manifest: finished.manifest,
        manifest_sha256: finished.manifest_sha256,
        archive_digest,
        archive_bytes,
    })
}

/// Where the blocking archive writer puts the archive.
trait ArchiveSink: Write + Send + 'static {
    /// Flushes and closes the sink; `Ok` only once every byte is where it is going (for a
    /// channel: handed over, and the channel closed so the other side sees the end).
    fn finish(self) -> io::Result<()>;
}

impl ArchiveSink for ChannelWriter {
    fn finish(mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

/// Bytes written between two background `fdatasync`s of [`DurableFile`].
const WRITEBACK_BYTES: u64 = 8 * 1024 * 1024;

/// A file written through a 1 MiB buffer whose data is flushed to disk *while* it is written:
/// after every [`WRITEBACK_BYTES`], a helper thread runs `fdatasync` on a clone of the handle
/// (the writer never waits for it; a tick that finds a sync still running is dropped). By the
/// final `fsync` only the tail is left to flush, so durability overlaps compression instead of
/// following it (RocksDB's `bytes_per_sync`, without `sync_file_range` and without `unsafe`).
struct DurableFile {
    out: io::BufWriter<std::fs::File>,
    since_sync: u64,
    tick: Option<std::sync::mpsc::SyncSender<()>>,
    syncer: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl DurableFile {
    fn new(file: std::fs::File) -> io::Result<Self> {
        let clone = file.try_clone()?;
        let (tick, ticks) = std::sync::mpsc::sync_channel::<()>(1);
        let syncer = std::thread::Builder::new()
            .name("roomshard-export-sync".to_string())
            .spawn(move || {
                while ticks.recv().is_ok() {
                    clone.sync_data()?;
                }
                Ok(())
            })?;
        Ok(DurableFile {
            out: io::BufWriter::with_capacity(1 << 20, file),
            since_sync: 0,
            tick: Some(tick),
            syncer: Some(syncer),
        })
    }

    /// Stops the helper thread, returning its first error.
    fn stop_syncer(&mut self) -> io::Result<()> {
        drop(self.tick.take());
        match self.syncer.take().map(std::thread::JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(io::Error::other("the export's sync thread panicked")),
        }
    }
}

impl Write for DurableFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.out.write(data)?;
        self.since_sync += n as u64;
        if self.since_sync >= WRITEBACK_BYTES {
            // Hand the buffered bytes to the kernel, then let the helper flush them.
            self.out.flush()?;
            self.since_sync = 0;
            if let Some(tick) = &self.tick {
                match tick.try_send(()) {
                    Ok(()) | Err(std::sync::mpsc::TrySendError::Full(())) => {}
                    Err(std::sync::mpsc::TrySendError::Disconnected(())) => {
                        // The helper stopped on an error: report it now.
                        return Err(self.stop_syncer().err().unwrap_or_else(|| {
                            io::Error::other("the export's sync thread stopped")
                        }));
                    }
                }
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl ArchiveSink for DurableFile {
    fn finish(mut self) -> io::Result<()> {
        self.out.flush()?;
        self.stop_syncer()?;
        self.out.get_ref().sync_all()
    }
}

impl Drop for DurableFile {
    fn drop(&mut self) {
        // On an error path: stop the helper (its result no longer matters).
        let _ = self.stop_syncer();
    }
}

/// A [`Read`] over one object's chunks on the media channel; ends at [`MediaMsg::End`].
struct MediaReader<'a> {
    rx: &'a mut mpsc::Receiver<MediaMsg>,
    current: Bytes,
    ended: bool,
}

impl Read for MediaReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(MediaMsg::Chunk(chunk)) => self.current = chunk,
                Some(MediaMsg::End) => self.ended = true,
                Some(MediaMsg::Start { path, .. }) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("object {path:?} started before the previous one ended"),
                    ));
                }
                // The async side stopped (its error is the one reported).
                None => return Err(io::Error::from(io::ErrorKind::BrokenPipe)),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// A [`Write`] that hands the archive to the async side in [`CHUNK_BYTES`] chunks over a
/// bounded channel (blocking when the output is slower than the writer).
struct ChannelWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<Vec<u8>>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK_BYTES),
        }
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        self.tx
            .blocking_send(full)
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK_BYTES - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK_BYTES {
            self.send_buffer()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

/// Exports `room` into `dir/room_<id>.tar.zst` and `dir/room_<id>.tar.zst.sigstore.json`,
/// atomically (temporary files renamed into place only when complete).
pub async fn export_to_dir(
    rs: &Roomshard,
    room: &RoomId,
    dir: &Path,
    options: &ExportOptions,
    progress: &dyn ProgressSink,
) -> Result<(PathBuf, PathBuf, ExportOutcome)> {
    let name = archive_file_name(room.as_str());
    let archive = dir.join(&name);
    let sidecar = dir.join(format!("{name}.sigstore.json"));
    let archive_partial = dir.join(format!("{name}.partial"));
    let sidecar_partial = dir.join(format!("{name}.sigstore.json.partial"));
    let result = async {
        let file = tokio::fs::File::create(&archive_partial)
            .await
            .map_err(|e| io_err(&archive_partial, e))?
            .into_std()
            .await;
        // Written and fsynced by the archive writer thread itself: no async hop per chunk.
        let sink = DurableFile::new(file).map_err(|e| io_err(&archive_partial, e))?;
        let outcome = export_into(
            rs,
            room,
            sink,
            std::future::ready(Ok(())),
            options,
            progress,
        )
        .await?;
        tokio::fs::write(&sidecar_partial, &outcome.sidecar)
            .await
            .map_err(|e| io_err(&sidecar_partial, e))?;
        tokio::fs::rename(&archive_partial, &archive)
            .await
            .map_err(|e| io_err(&archive, e))?;
        tokio::fs::rename(&sidecar_partial, &sidecar)
            .await
            .map_err(|e| io_err(&sidecar, e))?;
        Ok::<_, Error>(outcome)
    }
    .await;
    match result {
        Ok(outcome) => Ok((archive, sidecar, outcome)),
        Err(e) => {
            // Leave no half-written file, and no archive without its sidecar.
            for p in [&archive_partial, &sidecar_partial] {
                let _ = tokio::fs::remove_file(p).await;
            }
            if tokio::fs::try_exists(&archive).await.unwrap_or(false)
                && !tokio::fs::try_exists(&sidecar).await.unwrap_or(false)
            {
                let _ = tokio::fs::remove_file(&archive).await;
            }
            Err(e)
        }
    }
}

fn io_err(path: &Path, e: io::Error) -> Error {
    Error::unavailable(format!("writing {}", path.display()), false, e)
}
