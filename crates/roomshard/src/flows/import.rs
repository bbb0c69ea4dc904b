//! Import: verify a bundle, then load it under a new room id, all or nothing.
//!
//! The flow, top to bottom:
//!
//! 1. **Verify first**: the whole archive goes through the verifier before anything is written;
//!    an invalid bundle is refused with its reason code and leaves no trace.
//! 2. **Same tables**: the manifest's table descriptors must equal the host's (schema drift is
//!    refused, naming the first difference).
//! 3. **New room**: a fresh room id (given, or derived from the bundle's), with no placement and
//!    no pooled rows or objects.
//! 4. **Journal**: the import is recorded as *staging* before the first write, so a crash at any
//!    later point is rolled back by [`recover_imports`] (which [`Home::open`] runs).
//! 5. **Load**: a second, streaming pass over the archive — through the verifier's own parser
//!    ([`ArchiveReader`], so no second tar or zstd reader can see other entries than the
//!    verified ones) and from an [`ArchiveSource`] that can be read again (a file, a bucket
//!    object, an upload) — re-hashes every entry against the verified manifest, so a file
//!    swapped between the passes fails (and is rolled back) instead of loading unverified bytes. `db.sql` is spooled to an unlinked temporary file and, once its
//!    digest matches, its COPY blocks are fed to [`ShardStore::restore`] (never executing any
//!    SQL) while the same pass goes on to stream the media entries to [`MediaStore::put`]: rows
//!    and objects load side by side.
//! 6. **Commit**: placement, journal marked done with its id maps, a Sovereignty Receipt, an
//!    audit entry. Any error from step 4 on rolls everything back and returns the original error.
//!
//! [`Home::open`]: crate::home::Home::open
//! [`ShardStore::restore`]: roomshard_core::ShardStore::restore
//! [`MediaStore::put`]: roomshard_core::MediaStore::put

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use roomshard_core::{
    Adopted, DumpSource, Error, IdMap, IdRemap, ImportRecord, ImportState, KeyRewrite, KeySpec,
    ObjectBody, Phase, Placement, PlacementChange, PlacementState, Profile, ProgressEvent,
    ProgressSink, PutOptions, RemapPolicy, Result, RoomId, Scope, TableCount, TableDescriptor,
    async_trait,
};
use roomshard_verify::archive::{ArchiveReader, EntrySink};
use roomshard_verify::copy::END_LINE as COPY_END_LINE;
use roomshard_verify::format::{DB_SQL, EXPORT_SIGNATURE, MANIFEST_JSON, MEDIA_PREFIX};
use roomshard_verify::names::media_key;
use roomshard_verify::sql::copy_header_line;
use roomshard_verify::{
    Manifest, Reason, TrustedKeys, VerifyError, VerifyLimits, VerifyOptions,
    verify_reader_with_manifest,
};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::Roomshard;
use crate::support::now_unix_ms;

/// Where an imported room goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImportTarget {
    /// Into the host's shared tables and bucket (ids remapped where they collide).
    #[default]
    Pooled,
    /// Into its own shard, bucket and key (sovereign from the start).
    Dedicated,
}

/// How to import.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// The new room id; default: derived from the bundle's id plus a random suffix.
    pub new_room: Option<RoomId>,
    /// Where the room goes.
    pub target: ImportTarget,
    /// Verifier limits (default: the format's defaults).
    pub limits: VerifyLimits,
    /// Where to spool `db.sql` while its rows load (an unlinked temporary file, gone when the
    /// import ends); default: the system temp directory.
    pub spool_dir: Option<PathBuf>,
    /// Import a bundle this home already imported (same manifest digest) once more, as another
    /// room. Off by default: a second import of the same export is usually a mistake (a retried
    /// upload, a double click), and would silently make a renumbered copy.
    pub allow_duplicate: bool,
}

/// What an import did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportOutcome {
    /// The import's id in the import history.
    pub import_id: String,
    /// The room id in the bundle.
    pub source_room: String,
    /// The room id it now has.
    pub new_room: RoomId,
    /// The key that signed the bundle.
    pub signer_key_id: String,
    /// SHA-256 (hex) of the bundle's manifest.
    pub manifest_sha256: String,
    /// Rows restored per table.
    pub tables: Vec<TableCount>,
    /// Media objects stored.
    pub objects: u64,
    /// Ids that changed.
    pub id_maps: Vec<IdMap>,
    /// The new Sovereignty Receipt (DSSE envelope JSON).
    pub receipt: Vec<u8>,
}

/// Messages queued between the archive reader thread and the async side, per channel; with
/// chunks of at most [`CHUNK_BYTES`] (or one row, if longer) this bounds an import's memory.
const CHANNEL_DEPTH: usize = 8;

/// Target size of row and media chunks.
const CHUNK_BYTES: usize = 64 * 1024;

/// Longest bundle room id kept in a derived new id: 48 minus `-` and 6 hex digits.
const DERIVED_PREFIX_MAX: usize = 41;

/// What the pipeline's internal "the other side stopped" errors say; never the cause of a
/// failure, so the other side's error is reported instead.
const PIPELINE_STOPPED: &str = "import pipeline (the other side stopped)";

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

fn join_err(e: tokio::task::JoinError) -> Error {
    Error::unavailable("import worker thread", false, e)
}

fn open_err(source: &dyn ArchiveSource, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::not_found(format!("bundle {}", source.describe()))
    } else {
        Error::unavailable(format!("reading {}", source.describe()), false, e)
    }
}

fn read_err(e: io::Error) -> Error {
    Error::invalid(
        "bundle",
        format!("changed_between_passes: reading it again failed: {e}"),
    )
}

/// What the verification pass established.
struct Verified {
    manifest: Manifest,
    manifest_sha256: String,
    signer_key_id: String,
}

/// Where an import reads its archive from: anything that can be read from the start again.
///
/// Import reads the archive twice — once to verify it, once to load it, re-hashing every entry
/// against the verified manifest — so that nothing is written before the whole bundle is known
/// good and memory stays bounded whatever its size. A source is therefore a reader factory, not a
/// reader: a file (`PathBuf`), an object in a bucket (a GET per call), a spooled HTTP upload
/// ([`ReaderFn`]). If the two reads differ, the second pass refuses with
/// `changed_between_passes` and the import is rolled back.
pub trait ArchiveSource: Send + Sync {
    /// A fresh reader positioned at the archive's first byte.
    fn open(&self) -> io::Result<Box<dyn Read + Send>>;
    /// What to call the source in errors and logs (a path, a URL without credentials).
    fn describe(&self) -> String;
}

impl ArchiveSource for PathBuf {
    fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(std::fs::File::open(self)?))
    }
    fn describe(&self) -> String {
        self.display().to_string()
    }
}

/// An [`ArchiveSource`] from a closure, for sources roomshard has no type for (an upload, a
/// bucket object, bytes in memory).
pub struct ReaderFn<F> {
    name: String,
    open: F,
}

impl<F> ReaderFn<F>
where
    F: Fn() -> io::Result<Box<dyn Read + Send>> + Send + Sync,
{
    /// A source called `name` whose every read starts with a call to `open`.
    pub fn new(name: impl Into<String>, open: F) -> Self {
        ReaderFn {
            name: name.into(),
            open,
        }
    }
}

impl<F> ArchiveSource for ReaderFn<F>
where
    F: Fn() -> io::Result<Box<dyn Read + Send>> + Send + Sync,
{
    fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        (self.open)()
    }
    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// Verifies the bundle at `path` against `trusted`, then imports it: [`import_archive`] over the
/// file.
///
/// # Errors
/// As [`import_archive`].
pub async fn import_file(
    rs: &Roomshard,
    path: &Path,
    trusted: &TrustedKeys,
    options: &ImportOptions,
    progress: &dyn ProgressSink,
) -> Result<ImportOutcome> {
    import_archive(rs, Arc::new(path.to_path_buf()), trusted, options, progress).await
}

/// Verifies the bundle `source` gives against `trusted`, then imports it.
///
/// # Errors
/// [`Error::Invalid`] (`what` = `bundle`, `detail` = `<reason code>: <detail>`) for a bundle the
/// verifier refuses, with nothing written; [`Error::Invalid`] for a bundle whose tables differ
/// from the host's; [`Error::Conflict`] when the new room id is taken; any provider error, after
/// which everything the import wrote has been rolled back.
pub async fn import_archive(
    rs: &Roomshard,
    source: Arc<dyn ArchiveSource>,
    trusted: &TrustedKeys,
    options: &ImportOptions,
    progress: &dyn ProgressSink,
) -> Result<ImportOutcome> {
    // 1. Verify the whole archive before writing anything.
    let verified = verify(source.clone(), trusted, options.limits).await?;
    let manifest = &verified.manifest;

    // 2. Schema drift is refused (for now).
    check_tables(manifest, rs.schema.tables())?;

    // 3. Not a second copy of an earlier import, unless asked for (checked here for a clear
    //    early answer, and again atomically by begin_import against concurrent imports).
    if !options.allow_duplicate {
        let earlier = rs.control.imports(Some(ImportState::Done)).await?;
        if let Some(prev) = earlier
            .iter()
            .find(|r| r.manifest_sha256 == verified.manifest_sha256)
        {
            return Err(Error::conflict(format!(
                "this bundle (manifest sha256 {}) was already imported here as room {} \
                 (import {}); allow duplicates (roomshard import --allow-duplicate) to import \
                 another copy",
                prev.manifest_sha256, prev.new_room, prev.id
            )));
        }
    }

    // The new room: as given; else the bundle's own id when this home has no such room; else
    // that id with a random suffix (also when a concurrent import claims the free id first).
    let chosen = options.new_room.is_some();
    let mut new_room = match &options.new_room {
        Some(r) => r.clone(),
        None => match RoomId::new(&manifest.room.id) {
            Ok(own) if is_free(rs, &own).await? => own,
            _ => derive_room_id(&manifest.room.id)?,
        },
    };
    // 4. Claim the import for this process (so no recovery elsewhere rolls it back while it
    //    runs), then journal it before anything is written.
    let id = uuid::Uuid::new_v4().to_string();
    let _hold = rs.control.hold_import(&id).await?.ok_or_else(|| {
        Error::conflict(format!("import id {id} is already held by a live process"))
    })?;
    let mut attempts = 0;
    let record = loop {
        let taken = if rs.control.placement(&new_room).await?.is_some() {
            Err(Error::conflict(format!(
                "room {new_room} already exists; import under another id"
            )))
        } else {
            ensure_unused(rs, &new_room).await
        };
        match taken {
            // A concurrent import took the free source id after it was chosen (it is writing
            // rows there, or has committed): take a derived id, as when it was taken before.
            Err(Error::Conflict { .. }) if !chosen && attempts < 3 => {
                attempts += 1;
                new_room = derive_room_id(&manifest.room.id)?;
                continue;
            }
            other => other?,
        }
        let record = ImportRecord {
            id: id.clone(),
            source_room: manifest.room.id.clone(),
            new_room: new_room.clone(),
            manifest_sha256: verified.manifest_sha256.clone(),
            signer_key_id: verified.signer_key_id.clone(),
            state: ImportState::Staging,
            started_at_unix_ms: now_unix_ms(),
        };
        match rs
            .control
            .begin_import(&record, options.allow_duplicate)
            .await
        {
            Ok(()) => break record,
            // Another import took the free room id between our check and our journal entry.
            Err(Error::Conflict { what })
                if !chosen
                    && attempts < 3
                    && what.contains(&format!("into room {new_room} right now")) =>
            {
                attempts += 1;
                new_room = derive_room_id(&manifest.room.id)?;
            }
            Err(Error::Conflict { what }) => {
                return Err(Error::conflict(format!(
                    "{what}; allow duplicates (roomshard import --allow-duplicate) to import \
                     another copy, or wait for it to finish"
                )));
            }
            Err(e) => return Err(e),
        }
    };

    // 5–6. Load and commit; roll back on any error.
    match load_and_commit(rs, source, &verified, &record, options, progress).await {
        Ok(outcome) => Ok(outcome),
        Err(e) => {
            if let Err(rollback) = roll_back(rs, &record).await {
                tracing::error!(
                    import = %record.id,
                    room = %record.new_room,
                    error = %rollback,
                    "rolling back a failed import failed; recover_imports will retry"
                );
            }
            Err(e)
        }
    }
}

/// Runs the verifier over the file; a valid bundle comes back with its verified manifest.
async fn verify(
    source: Arc<dyn ArchiveSource>,
    trusted: &TrustedKeys,
    limits: VerifyLimits,
) -> Result<Verified> {
    let keys = trusted.clone();
    let (report, manifest) = tokio::task::spawn_blocking(move || -> Result<_> {
        let reader = source.open().map_err(|e| open_err(&*source, e))?;
        Ok(verify_reader_with_manifest(
            io::BufReader::with_capacity(CHUNK_BYTES, reader),
            keys,
            VerifyOptions {
                limits,
                hash_archive: false,
            },
        ))
    })
    .await
    .map_err(join_err)??;
    if !report.valid {
        let (reason, detail) = report
            .error
            .map(|e| (e.reason, e.detail))
            .unwrap_or_else(|| ("invalid".to_string(), "refused".to_string()));
        return Err(Error::invalid("bundle", format!("{reason}: {detail}")));
    }
    let (Some(manifest), Some(manifest_sha256), Some(signer)) =
        (manifest, report.manifest_sha256, report.signer)
    else {
        return Err(Error::invalid(
            "bundle",
            "the verifier reported no manifest, manifest digest or signer",
        ));
    };
    Ok(Verified {
        manifest,
        manifest_sha256,
        signer_key_id: signer.key_id,
    })
}

/// The manifest's tables must be exactly the host's.
fn check_tables(manifest: &Manifest, ours: &[TableDescriptor]) -> Result<()> {
    let theirs: Vec<&TableDescriptor> = manifest.tables.iter().map(|t| &t.descriptor).collect();
    for (i, mine) in ours.iter().enumerate() {
        match theirs.get(i) {
            None => {
                return Err(drift(format!(
                    "the bundle lacks table {:?} (it has {} tables, this server {})",
                    mine.name,
                    theirs.len(),
                    ours.len()
                )));
            }
            Some(t) if *t == mine => {}
            Some(t) if t.name != mine.name => {
                return Err(drift(format!(
                    "table {} is {:?} in the bundle, {:?} here",
                    i + 1,
                    t.name,
                    mine.name
                )));
            }
            Some(t) => return Err(drift(describe_difference(t, mine))),
        }
    }
    if let Some(extra) = theirs.get(ours.len()) {
        return Err(drift(format!(
            "the bundle has table {:?}, which this server does not",
            extra.name
        )));
    }
    Ok(())
}

fn drift(detail: String) -> Error {
    Error::invalid(
        "bundle",
        format!(
            "schema_mismatch: {detail} (importing across schema versions is not supported yet)"
        ),
    )
}

/// The first difference between two descriptors of the same table, for people.
fn describe_difference(theirs: &TableDescriptor, mine: &TableDescriptor) -> String {
    let name = &mine.name;
    for (i, c) in mine.columns.iter().enumerate() {
        match theirs.columns.get(i) {
            Some(t) if t == c => {}
            Some(t) => {
                return format!(
                    "column {} of table {name} is {t:?} in the bundle, {c:?} here",
                    i + 1
                );
            }
            None => return format!("table {name} lacks column {:?} in the bundle", c.name),
        }
    }
    if let Some(extra) = theirs.columns.get(mine.columns.len()) {
        return format!(
            "table {name} has column {:?} in the bundle, which this server does not",
            extra.name
        );
    }
    let fields: [(&str, String, String); 4] = [
        (
            "primary_key",
            format!("{:?}", theirs.primary_key),
            format!("{:?}", mine.primary_key),
        ),
        (
            "room_key_column",
            format!("{:?}", theirs.room_key_column),
            format!("{:?}", mine.room_key_column),
        ),
        (
            "id_columns",
            format!("{:?}", theirs.id_columns),
            format!("{:?}", mine.id_columns),
        ),
        (
            "media_columns",
            format!("{:?}", theirs.media_columns),
            format!("{:?}", mine.media_columns),
        ),
    ];
    for (field, t, m) in fields {
        if t != m {
            return format!("{field} of table {name} is {t} in the bundle, {m} here");
        }
    }
    format!("table {name} differs")
}

/// `<source id, truncated>-<6 random hex digits>`.
fn derive_room_id(source: &str) -> Result<RoomId> {
    let prefix: String = source.chars().take(DERIVED_PREFIX_MAX).collect();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    RoomId::new(format!("{prefix}-{}", &suffix[..6]))
}

/// Whether `room` is unknown here: no placement, no pooled rows, no objects.
async fn is_free(rs: &Roomshard, room: &RoomId) -> Result<bool> {
    if rs.control.placement(room).await?.is_some() {
        return Ok(false);
    }
    match ensure_unused(rs, room).await {
        Ok(()) => Ok(true),
        Err(Error::Conflict { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Refuses a new room id that already holds pooled rows or objects (a room the host has but
/// roomshard never placed): rollback deletes everything under the new id, so it must start
/// empty.
async fn ensure_unused(rs: &Roomshard, room: &RoomId) -> Result<()> {
    let scope = Scope::Pooled(room.clone());
    let counts = rs.shards.row_counts(&scope, &rs.schema).await?;
    let objects = rs.media.usage(&scope).await?.objects;
    if counts.iter().any(|t| t.rows > 0) || objects > 0 {
        return Err(Error::conflict(format!(
            "room {room} already has rows or objects; import under another id"
        )));
    }
    Ok(())
}

/// Steps 5 and 6 of the module docs.
async fn load_and_commit(
    rs: &Roomshard,
    source: Arc<dyn ArchiveSource>,
    verified: &Verified,
    record: &ImportRecord,
    options: &ImportOptions,
    progress: &dyn ProgressSink,
) -> Result<ImportOutcome> {
    let manifest = &verified.manifest;
    let new_room = &record.new_room;
    progress.emit(ProgressEvent::Planned {
        tables: manifest.tables.len() as u64,
        rows: manifest.totals.rows,
        objects: manifest.totals.media_files,
        bytes: manifest.totals.media_bytes,
    });
    progress.emit(ProgressEvent::Phase(Phase::Provision));
    let rewrite = KeyRewrite {
        from_prefix: format!("{}/", manifest.room.id),
        to_prefix: format!("{new_room}/"),
    };
    let (scope, remap, mut placement) = match options.target {
        ImportTarget::Pooled => {
            let mut p = Placement::pooled(new_room.clone());
            p.profile = Profile::Standard;
            (
                Scope::Pooled(new_room.clone()),
                IdRemap {
                    ids: RemapPolicy::OnCollision,
                    media_keys: Some(rewrite.clone()),
                },
                p,
            )
        }
        ImportTarget::Dedicated => {
            let mut tags = BTreeMap::new();
            tags.insert("roomshard:room".to_string(), new_room.to_string());
            tags.insert("roomshard:import".to_string(), record.id.clone());
            let at = rs.locate(new_room)?;
            let key = rs
                .keys
                .ensure_room_key(
                    new_room,
                    &KeySpec {
                        tags,
                        region: at.region.clone(),
                        adopt: None,
                    },
                )
                .await?;
            // A manager without grants lets its principal use every key it holds.
            if rs.keys.capabilities().grants {
                rs.keys.grant(new_room, &rs.config.grantee).await?;
            }
            let mut spec = rs.config.bucket_spec.clone();
            spec.region = at.region.clone();
            let bucket = rs.media.ensure_bucket(new_room, &at, &spec).await?;
            let shard = rs.shards.ensure_shard(new_room, &at, &rs.schema).await?;
            let p = Placement {
                room: new_room.clone(),
                is_sharded: PlacementState::Sovereign.serves_from_shard(),
                shard_url: Some(shard.url),
                media_bucket: Some(bucket.name),
                kms_key_ref: Some(key.id),
                profile: rs.config.profile,
                region: rs.config.region.clone().or(bucket.region),
                adopted: Adopted::default(),
                // A dedicated import lands on the default providers (the ones it made
                // everything with above).
                providers: roomshard_core::ProviderNames::default(),
                state: PlacementState::Sovereign,
                version: 1,
            };
            (
                p.dedicated(),
                IdRemap {
                    ids: RemapPolicy::Keep,
                    media_keys: Some(rewrite.clone()),
                },
                p,
            )
        }
    };

    // The second pass: rows and objects, re-hashed against the verified manifest.
    progress.emit(ProgressEvent::Phase(Phase::Copy));
    let (sql_tx, sql_rx) = mpsc::channel::<SqlMsg>(CHANNEL_DEPTH);
    let (spool_tx, spool_rx) = oneshot::channel::<std::fs::File>();
    let (media_tx, media_rx) = mpsc::channel::<MediaItem>(1);
    let tables: Vec<TableDescriptor> = manifest
        .tables
        .iter()
        .map(|t| t.descriptor.clone())
        .collect();
    let job = ReadJob {
        source,
        files: manifest
            .files
            .iter()
            .map(|f| (f.path.clone(), (f.size, f.sha256.clone())))
            .collect(),
        manifest_sha256: verified.manifest_sha256.clone(),
        // The verifier accepted the archive under these limits.
        limits: options.limits,
        spool_dir: options.spool_dir.clone(),
        spool_tx,
        media_tx,
    };
    let reader = tokio::task::spawn_blocking(move || read_archive(job));
    // The verified db.sql, once the reader has spooled it, parsed into COPY blocks for restore.
    let feeder = async move {
        let spool = spool_rx.await.map_err(|_| stopped())?;
        tokio::task::spawn_blocking(move || feed_db_sql(spool, &tables, &sql_tx))
            .await
            .map_err(join_err)?
    };
    let restore = async {
        let mut source = ChannelSource {
            rx: sql_rx,
            progress,
            table: String::new(),
            done: 0,
            ended: false,
        };
        rs.shards
            .restore(&scope, &rs.schema, &mut source, &remap)
            .await
    };
    let media = async {
        // Owned by this future, so a failure here closes the channel and frees the reader.
        let mut media_rx = media_rx;
        let (mut objects, mut bytes) = (0u64, 0u64);
        while let Some(item) = media_rx.recv().await {
            let key = rewrite.apply(&item.key)?;
            let stream = futures::stream::unfold(item.body, |mut rx| async move {
                rx.recv().await.map(|chunk| (chunk, rx))
            });
            let body = ObjectBody::new(stream, Some(item.size));
            rs.media
                .put(&scope, &key, body, &PutOptions::default())
                .await?;
            objects += 1;
            bytes += item.size;
            progress.emit(ProgressEvent::Objects {
                done: objects,
                total: Some(manifest.totals.media_files),
                bytes,
            });
        }
        Ok::<_, Error>(objects)
    };
    let loaded = async { tokio::try_join!(restore, media, feeder) };
    let (loaded, read) = tokio::join!(loaded, reader);
    let read = read.map_err(join_err)?;
    let (restored, objects) = match (loaded, read) {
        (Ok((restored, objects, ())), Ok(())) => (restored, objects),
        (Err(a), Err(b)) => return Err(if is_stopped(&a) { b } else { a }),
        (Err(e), Ok(())) | (Ok(_), Err(e)) => return Err(e),
    };

    // Commit.
    progress.emit(ProgressEvent::Phase(Phase::Receipt));
    // The placement and its audit entry in one transaction; the journal is closed after it (a
    // crash in between leaves a staging import whose rollback removes the placement again).
    let entry = rs.audit_entry(
        "import.finished",
        Some(new_room),
        serde_json::json!({
            "import_id": record.id,
            "source_room": record.source_room,
            "source_instance": manifest.source_instance,
            "manifest_sha256": record.manifest_sha256,
            "signer_key_id": record.signer_key_id,
            "scope": crate::support::scope_detail(&scope),
            "rows": restored.tables.iter().map(|t| t.rows).sum::<u64>(),
            "objects": objects,
            "remapped_ids": restored.id_maps.iter().map(|m| m.changes.len()).sum::<usize>(),
            "placement": { "to": placement.state.as_str(), "version": placement.version },
        }),
    );
    rs.control
        .change_placement(PlacementChange::Insert(&placement), &entry)
        .await?;
    rs.control
        .finish_import(&record.id, &restored.id_maps)
        .await?;
    // The stored placement may be normalised by the control plane; receipts carry its version.
    if let Some(stored) = rs.control.placement(new_room).await? {
        placement = stored;
    }
    let receipt = rs
        .issue_receipt(&placement, "import", &verified.manifest_sha256)
        .await?;
    progress.emit(ProgressEvent::Finished);
    Ok(ImportOutcome {
        import_id: record.id.clone(),
        source_room: record.source_room.clone(),
        new_room: new_room.clone(),
        signer_key_id: record.signer_key_id.clone(),
        manifest_sha256: record.manifest_sha256.clone(),
        tables: restored.tables,
        objects,
        id_maps: restored.id_maps,
        receipt,
    })
}

/// One message from the archive reader to [`ShardStore::restore`](roomshard_core::ShardStore).
enum SqlMsg {
    /// A table's COPY block starts.
    Table(String),
    /// Whole rows of it.
    Rows(Bytes),
    /// Its `\.`.
    EndTable,
    /// `db.sql` ended and its digest matched: the dump is complete.
    End,
    /// The archive failed (digest mismatch, unreadable): the restore must fail.
    Fail(Error),
}

/// A [`DumpSource`] over the archive reader's channel. A channel closed before [`SqlMsg::End`] is
/// an error, never the end of the dump, so a reader that died cannot commit a partial room.
struct ChannelSource<'a> {
    rx: mpsc::Receiver<SqlMsg>,
    progress: &'a dyn ProgressSink,
    table: String,
    done: u64,
    ended: bool,
}

impl ChannelSource<'_> {
    async fn next_msg(&mut self) -> Result<SqlMsg> {
        match self.rx.recv().await {
            Some(SqlMsg::Fail(e)) => Err(e),
            Some(msg) => Ok(msg),
            None => Err(stopped()),
        }
    }
}

#[async_trait]
impl DumpSource for ChannelSource<'_> {
    async fn next_table(&mut self) -> Result<Option<String>> {
        if self.ended {
            return Ok(None);
        }
        match self.next_msg().await? {
            SqlMsg::Table(name) => {
                self.table = name.clone();
                self.done = 0;
                Ok(Some(name))
            }
            SqlMsg::End => {
                self.ended = true;
                Ok(None)
            }
            _ => Err(Error::corrupt("db.sql", "rows outside a COPY block")),
        }
    }

    async fn next_rows(&mut self) -> Result<Option<Bytes>> {
        match self.next_msg().await? {
            SqlMsg::Rows(chunk) => {
                self.done += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
                self.progress.emit(ProgressEvent::Rows {
                    table: self.table.clone(),
                    done: self.done,
                    total: None,
                });
                Ok(Some(chunk))
            }
            SqlMsg::EndTable => Ok(None),
            _ => Err(Error::corrupt("db.sql", "a COPY block does not end")),
        }
    }
}

/// One media entry on its way to [`MediaStore::put`](roomshard_core::MediaStore::put).
struct MediaItem {
    /// The key in the bundle (before any rewrite).
    key: String,
    size: u64,
    /// Its bytes; an `Err` as the last item when its digest does not match the manifest.
    body: mpsc::Receiver<Result<Bytes>>,
}

/// What the archive reader thread needs.
struct ReadJob {
    source: Arc<dyn ArchiveSource>,
    /// The verified manifest's files: path → (size, sha256).
    files: HashMap<String, (u64, String)>,
    manifest_sha256: String,
    /// The limits the first pass verified under.
    limits: VerifyLimits,
    spool_dir: Option<PathBuf>,
    /// Receives `db.sql`, spooled and rewound, once its digest matched.
    spool_tx: oneshot::Sender<std::fs::File>,
    media_tx: mpsc::Sender<MediaItem>,
}

fn mismatch(path: &str) -> Error {
    Error::invalid(
        "bundle",
        format!("changed_between_passes: {path} differs from the verified manifest"),
    )
}

/// The second pass (blocking thread): reads the archive again through the verifier's own parser
/// ([`ArchiveReader`]), spools `db.sql` and streams the media entries to the async side,
/// checking every entry against the verified manifest. Dropping `spool_tx` unsent (any error
/// before `db.sql` is spooled) stops the restore.
fn read_archive(job: ReadJob) -> Result<()> {
    let reader = job.source.open().map_err(|e| open_err(&*job.source, e))?;
    let mut archive = ArchiveReader::new(job.limits);
    let mut sink = LoadSink {
        files: job.files,
        manifest_sha256: job.manifest_sha256,
        max_manifest_bytes: job.limits.max_manifest_bytes,
        spool_dir: job.spool_dir,
        spool_tx: Some(job.spool_tx),
        media_tx: job.media_tx,
        manifest_seen: false,
        current: Entry::None,
        error: None,
    };
    let parsed = archive.read_all(reader, &mut sink);
    if let Some(e) = sink.error.take() {
        return Err(e);
    }
    if let Err(e) = parsed {
        // The first pass accepted these bytes, so a parser refusal now means they changed.
        return Err(Error::invalid(
            "bundle",
            format!(
                "changed_between_passes: reading it again failed: {}: {}",
                e.reason.as_str(),
                e.detail
            ),
        ));
    }
    if sink.spool_tx.is_some() || !sink.manifest_seen || !sink.files.is_empty() {
        return Err(Error::invalid(
            "bundle",
            "changed_between_passes: entries of the verified manifest are missing",
        ));
    }
    Ok(())
}

/// The entry [`LoadSink`] is in.
enum Entry {
    /// Between entries, or in `export.signature` (already checked by the first pass).
    None,
    /// `manifest.json`: hashed, compared with the verified manifest's digest.
    Manifest { hasher: Sha256 },
    /// `db.sql`, spooled to an unlinked temporary file while it is hashed.
    Sql {
        hasher: Sha256,
        out: io::BufWriter<std::fs::File>,
        expected: String,
    },
    /// A media entry streaming to [`MediaStore::put`](roomshard_core::MediaStore::put). The
    /// latest data is held back in `pending` until the entry's digest is known, so the put
    /// never completes on bytes that do not match.
    Media {
        name: String,
        hasher: Sha256,
        pending: Vec<u8>,
        body: mpsc::Sender<Result<Bytes>>,
        expected: String,
    },
}

/// What the second pass does with each entry, as the [`ArchiveReader`] hands it over.
struct LoadSink {
    /// The verified manifest's files not seen yet: path → (size, sha256).
    files: HashMap<String, (u64, String)>,
    manifest_sha256: String,
    max_manifest_bytes: u64,
    spool_dir: Option<PathBuf>,
    /// Taken when db.sql is spooled: `None` from then on.
    spool_tx: Option<oneshot::Sender<std::fs::File>>,
    media_tx: mpsc::Sender<MediaItem>,
    manifest_seen: bool,
    current: Entry,
    /// The import's own error; the parser is stopped with a placeholder and this is reported.
    error: Option<Error>,
}

impl LoadSink {
    /// Keeps `e` and stops the parser.
    fn stop(&mut self, e: Error) -> VerifyError {
        let placeholder = VerifyError::new(Reason::Io, e.to_string());
        self.error.get_or_insert(e);
        placeholder
    }

    fn begin(&mut self, name: String, size: u64) -> Result<Entry> {
        if name == EXPORT_SIGNATURE {
            return Ok(Entry::None);
        }
        if name == MANIFEST_JSON {
            if size > self.max_manifest_bytes {
                return Err(mismatch(MANIFEST_JSON));
            }
            return Ok(Entry::Manifest {
                hasher: Sha256::new(),
            });
        }
        let Some((expected_size, expected)) = self.files.remove(&name) else {
            return Err(Error::invalid(
                "bundle",
                format!("changed_between_passes: unexpected or repeated entry {name:?}"),
            ));
        };
        if size != expected_size {
            return Err(mismatch(&name));
        }
        if name == DB_SQL {
            // `files.remove` above already refused a second db.sql.
            let spool_err = |e: io::Error| Error::unavailable("spooling db.sql", false, e);
            let file = match &self.spool_dir {
                Some(d) => tempfile::tempfile_in(d),
                None => tempfile::tempfile(),
            }
            .map_err(spool_err)?;
            return Ok(Entry::Sql {
                hasher: Sha256::new(),
                out: io::BufWriter::with_capacity(CHUNK_BYTES, file),
                expected,
            });
        }
        if !name.starts_with(MEDIA_PREFIX) {
            return Err(mismatch(&name));
        }
        // The entry name is the object key's portable spelling (docs/bundle-format.md §2.1).
        let key = media_key(&name).map_err(|e| Error::corrupt("archive", e.detail))?;
        if self.spool_tx.is_some() {
            return Err(mismatch(DB_SQL));
        }
        let (body_tx, body_rx) = mpsc::channel::<Result<Bytes>>(CHANNEL_DEPTH);
        self.media_tx
            .blocking_send(MediaItem {
                key,
                size,
                body: body_rx,
            })
            .map_err(|_| stopped())?;
        Ok(Entry::Media {
            name,
            hasher: Sha256::new(),
            pending: Vec::with_capacity(CHUNK_BYTES),
            body: body_tx,
            expected,
        })
    }

    fn data(&mut self, data: &[u8]) -> Result<()> {
        match &mut self.current {
            Entry::None => {}
            Entry::Manifest { hasher } => hasher.update(data),
            Entry::Sql { hasher, out, .. } => {
                hasher.update(data);
                out.write_all(data)
                    .map_err(|e| Error::unavailable("spooling db.sql", false, e))?;
            }
            Entry::Media {
                hasher,
                pending,
                body,
                ..
            } => {
                hasher.update(data);
                if !pending.is_empty() && pending.len() + data.len() > CHUNK_BYTES {
                    let full = std::mem::replace(pending, Vec::with_capacity(CHUNK_BYTES));
                    body.blocking_send(Ok(Bytes::from(full)))
                        .map_err(|_| stopped())?;
                }
                pending.extend_from_slice(data);
            }
        }
        Ok(())
    }

    fn end(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.current, Entry::None) {
            Entry::None => {}
            Entry::Manifest { hasher } => {
                if hex::encode(hasher.finalize()) != self.manifest_sha256 {
                    return Err(mismatch(MANIFEST_JSON));
                }
                self.manifest_seen = true;
            }
            Entry::Sql {
                hasher,
                out,
                expected,
            } => {
                if hex::encode(hasher.finalize()) != expected {
                    return Err(mismatch(DB_SQL));
                }
                let spool_err = |e: io::Error| Error::unavailable("spooling db.sql", false, e);
                let mut file = out.into_inner().map_err(|e| spool_err(e.into_error()))?;
                file.seek(io::SeekFrom::Start(0)).map_err(spool_err)?;
                if let Some(tx) = self.spool_tx.take() {
                    tx.send(file).map_err(|_| stopped())?;
                }
            }
            Entry::Media {
                name,
                hasher,
                pending,
                body,
                expected,
            } => {
                if hex::encode(hasher.finalize()) != expected {
                    let e = mismatch(&name);
                    let _ = body.blocking_send(Err(e.clone_for_report()));
                    return Err(e);
                }
                if !pending.is_empty() {
                    body.blocking_send(Ok(Bytes::from(pending)))
                        .map_err(|_| stopped())?;
                }
            }
        }
        Ok(())
    }
}

impl EntrySink for LoadSink {
    fn begin_entry(&mut self, path: String, size: u64) -> std::result::Result<(), VerifyError> {
        match self.begin(path, size) {
            Ok(entry) => {
                self.current = entry;
                Ok(())
            }
            Err(e) => Err(self.stop(e)),
        }
    }

    fn entry_data(&mut self, data: &[u8]) -> std::result::Result<(), VerifyError> {
        self.data(data).map_err(|e| self.stop(e))
    }

    fn end_entry(&mut self) -> std::result::Result<(), VerifyError> {
        self.end().map_err(|e| self.stop(e))
    }
}

/// Feeds a spooled, verified `db.sql` to the restore as COPY blocks (blocking thread). Any error
/// also goes down the channel, so the restore fails rather than committing part of the rows.
fn feed_db_sql(
    spool: std::fs::File,
    tables: &[TableDescriptor],
    tx: &mpsc::Sender<SqlMsg>,
) -> Result<()> {
    let send = |msg: SqlMsg| tx.blocking_send(msg).map_err(|_| stopped());
    match stream_db_sql(&mut io::BufReader::new(spool), tables, &send) {
        Ok(()) => send(SqlMsg::End),
        Err(e) if is_stopped(&e) => Err(e),
        Err(e) => {
            let _ = send(SqlMsg::Fail(e.clone_for_report()));
            Err(e)
        }
    }
}

/// Parses `db.sql` into COPY blocks: a line equal to a table's `COPY … FROM stdin;` header starts
/// it, lines up to `\.` are its rows, every other line (preamble, `CREATE TABLE`) is skipped —
/// the verifier already checked it is exactly the expected skeleton. Nothing is executed.
fn stream_db_sql(
    input: &mut impl Read,
    tables: &[TableDescriptor],
    send: &impl Fn(SqlMsg) -> Result<()>,
) -> Result<()> {
    let headers: HashMap<String, String> = tables
        .iter()
        .map(|t| (copy_header_line(t), t.name.clone()))
        .collect();
    let mut reader = io::BufReader::with_capacity(CHUNK_BYTES, input);
    let mut line = Vec::new();
    let mut in_copy = false;
    let mut chunk: Vec<u8> = Vec::with_capacity(CHUNK_BYTES);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(read_err)?;
        if n == 0 {
            break;
        }
        if in_copy {
            if line == COPY_END_LINE.as_bytes() {
                if !chunk.is_empty() {
                    send(SqlMsg::Rows(Bytes::from(std::mem::take(&mut chunk))))?;
                }
                send(SqlMsg::EndTable)?;
                in_copy = false;
            } else {
                chunk.extend_from_slice(&line);
                if chunk.len() >= CHUNK_BYTES {
                    send(SqlMsg::Rows(Bytes::from(std::mem::replace(
                        &mut chunk,
                        Vec::with_capacity(CHUNK_BYTES),
                    ))))?;
                }
            }
        } else if let Some(table) = std::str::from_utf8(&line).ok().and_then(|l| headers.get(l)) {
            send(SqlMsg::Table(table.clone()))?;
            in_copy = true;
        }
    }
    if in_copy {
        return Err(Error::corrupt("db.sql", "a COPY block never ends"));
    }
    Ok(())
}

/// Errors are not `Clone`; the copy sent to the other side keeps kind and message.
trait CloneForReport {
    fn clone_for_report(&self) -> Error;
}

impl CloneForReport for Error {
    fn clone_for_report(&self) -> Error {
        match self {
            Error::Invalid { what, detail } => Error::invalid(what.clone(), detail.clone()),
            Error::Corrupt { what, detail } => Error::corrupt(what.clone(), detail.clone()),
            other => Error::invalid("bundle", other.to_string()),
        }
    }
}

/// Undoes everything an import may have written under its new room id (both targets, since the
/// journal does not say which): rows, objects, the dedicated shard and bucket, the placement, the
/// journal entry. Every step is idempotent, so a rollback interrupted halfway is finished by
/// running it again.
async fn roll_back(rs: &Roomshard, record: &ImportRecord) -> Result<()> {
    let room = &record.new_room;
    if let Some(p) = rs.control.placement(room).await? {
        // Only after a crash between recording the placement and closing the journal.
        let entry = rs.audit_entry(
            "import.placement_removed",
            Some(room),
            serde_json::json!({
                "import_id": record.id,
                "placement": { "from": p.state.as_str(), "version": p.version },
            }),
        );
        rs.control
            .change_placement(
                PlacementChange::Delete {
                    room,
                    expected_version: p.version,
                },
                &entry,
            )
            .await?;
    }
    let pooled = Scope::Pooled(room.clone());
    rs.shards.drop_room(&pooled, &rs.schema).await?;
    rs.media.purge(&pooled).await?;
    // Where a dedicated import of this room put (or would put) its shard and bucket: no
    // placement names them yet, and an import never adopts (`locate` is what it used).
    let at = rs.locate(room)?;
    rs.shards
        .drop_room(&Scope::Dedicated(room.clone(), at.clone()), &rs.schema)
        .await?;
    rs.media.drop_bucket(room, &at).await?;
    // A dedicated import made the room's key (and its grant) before writing anything; no
    // placement names the room yet, so nothing else depends on that key.
    if rs.keys.capabilities().discard_room_key {
        rs.keys.discard_room_key(room).await?;
    }
    rs.control.delete_import(&record.id).await?;
    rs.audit(
        "import.rolled_back",
        Some(room),
        serde_json::json!({
            "import_id": record.id,
            "source_room": record.source_room,
            "manifest_sha256": record.manifest_sha256,
        }),
    )
    .await
}

/// Rolls back every import a crash left in the staging state; returns their ids.
///
/// An import that another live process is running (it holds the import,
/// [`ControlPlane::hold_import`](roomshard_core::ControlPlane::hold_import)) is left alone; so is
/// one that finished between listing and claiming it.
pub async fn recover_imports(rs: &Roomshard) -> Result<Vec<String>> {
    let mut rolled_back = Vec::new();
    for record in rs.control.imports(Some(ImportState::Staging)).await? {
        let Some(_hold) = rs.control.hold_import(&record.id).await? else {
            tracing::info!(import = %record.id, room = %record.new_room, "import still running elsewhere; not rolled back");
            continue;
        };
        let still_staging = rs
            .control
            .imports(Some(ImportState::Staging))
            .await?
            .iter()
            .any(|r| r.id == record.id);
        if !still_staging {
            continue;
        }
        roll_back(rs, &record).await?;
        rolled_back.push(record.id);
    }
    Ok(rolled_back)
}
