//! What decentralise and recentralise share: a copy job's checkpoints and the media sync.

use std::cmp::Ordering;
use std::sync::Mutex;

use bytes::Bytes;
use roomshard_core::{
    CheckpointSink, CopyCheckpoint, CopyJob, CopyPass, CopyRequest, CopySource, DumpSink,
    DumpSource, Error, IdRemap, JobKind, ListPage, ListRequest, MediaStore, ObjectKey, ObjectMeta,
    ProgressEvent, ProgressSink, Result, RoomId, Scope, ShardStore, TableCount, async_trait,
};
use roomshard_verify::format::TableDescriptor;
use tokio::sync::mpsc;

use crate::support::now_unix_ms;
use crate::{Providers, Roomshard};

/// A copy job's state, saved to the control plane after every committed batch and object, so a
/// job killed at any point resumes where it was.
pub(crate) struct JobState<'a> {
    rs: &'a Roomshard,
    job: Mutex<CopyJob>,
}

impl<'a> JobState<'a> {
    /// The saved job of `room`/`kind`, or a fresh one (saved at once, so `rooms` shows it).
    pub(crate) async fn load(rs: &'a Roomshard, room: &RoomId, kind: JobKind) -> Result<Self> {
        let job = match rs.control.job(room, kind).await? {
            Some(job) => job,
            None => {
                let job = CopyJob {
                    room: room.clone(),
                    kind,
                    checkpoint: None,
                    media_after: None,
                    media_done: (0, 0),
                    updated_at_unix_ms: now_unix_ms(),
                };
                rs.control.save_job(&job).await?;
                job
            }
        };
        Ok(JobState {
            rs,
            job: Mutex::new(job),
        })
    }

    /// A copy of the current state.
    pub(crate) fn snapshot(&self) -> CopyJob {
        self.job
            .lock()
            .map(|j| j.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    async fn update(&self, edit: impl FnOnce(&mut CopyJob)) -> Result<()> {
        let job = {
            let mut guard = self.job.lock().unwrap_or_else(|p| p.into_inner());
            edit(&mut guard);
            guard.updated_at_unix_ms = now_unix_ms();
            guard.clone()
        };
        self.rs.control.save_job(&job).await
    }

    /// Forgets the job (it finished).
    pub(crate) async fn finish(self) -> Result<()> {
        let job = self.snapshot();
        self.rs.control.delete_job(&job.room, job.kind).await
    }
}

#[async_trait]
impl CheckpointSink for JobState<'_> {
    async fn save(&self, checkpoint: &CopyCheckpoint) -> Result<()> {
        let checkpoint = checkpoint.clone();
        self.update(move |job| job.checkpoint = Some(checkpoint))
            .await
    }
}

/// One end of a copy: a copy of the room (`scope`) and the providers that hold it — the
/// default ones for the pooled side, the placement's own ones for the dedicated side.
#[derive(Clone, Copy)]
pub(crate) struct Side<'a> {
    pub(crate) shards: &'a dyn ShardStore,
    pub(crate) media: &'a dyn MediaStore,
    pub(crate) scope: &'a Scope,
}

impl<'a> Side<'a> {
    /// The pooled side: the default providers.
    pub(crate) fn pooled(rs: &'a Roomshard, scope: &'a Scope) -> Self {
        Side {
            shards: rs.shards.as_ref(),
            media: rs.media.as_ref(),
            scope,
        }
    }

    /// A side on `providers`.
    pub(crate) fn on(providers: &'a Providers, scope: &'a Scope) -> Self {
        Side {
            shards: providers.shards.as_ref(),
            media: providers.media.as_ref(),
            scope,
        }
    }

    /// Whether both sides' rows are in one shard store, so its own resumable, incremental
    /// [`ShardStore::copy_room`] can move them; otherwise they go through dump and restore.
    pub(crate) fn same_shard_store(&self, other: &Side<'_>) -> bool {
        std::ptr::addr_eq(self.shards, other.shards)
    }

    fn same_media_store(&self, other: &Side<'_>) -> bool {
        std::ptr::addr_eq(self.media, other.media)
    }
}

/// Pages through a scope's objects in ascending key order.
struct Listing<'a> {
    side: Side<'a>,
    page: std::vec::IntoIter<ObjectMeta>,
    token: Option<String>,
    done: bool,
}

impl<'a> Listing<'a> {
    fn new(side: Side<'a>, after: Option<String>) -> Self {
        Listing {
            side,
            page: Vec::new().into_iter(),
            token: after,
            done: false,
        }
    }

    async fn next(&mut self) -> Result<Option<ObjectMeta>> {
        loop {
            if let Some(meta) = self.page.next() {
                return Ok(Some(meta));
            }
            if self.done {
                return Ok(None);
            }
            let ListPage {
                objects,
                next_page_token,
            } = self
                .side
                .media
                .list(
                    self.side.scope,
                    &ListRequest {
                        prefix: None,
                        page_token: self.token.take(),
                        limit: Some(500),
                    },
                )
                .await?;
            self.done = next_page_token.is_none();
            self.token = next_page_token;
            self.page = objects.into_iter();
        }
    }
}

/// Objects and bytes of a side.
pub(crate) async fn media_totals(side: Side<'_>) -> Result<(u64, u64)> {
    let usage = side.media.usage(side.scope).await?;
    Ok((usage.objects, usage.bytes))
}

/// Copies one object: server-side within one media store that can, else streamed `get` into
/// `put` (always between two different stores).
async fn copy_object(from: Side<'_>, to: Side<'_>, key: &ObjectKey) -> Result<()> {
    if from.same_media_store(&to) && from.media.capabilities().copy {
        from.media.copy(from.scope, key, to.scope, key).await?;
    } else {
        let object = from.media.get(from.scope, key).await?;
        let options = roomshard_core::PutOptions {
            content_type: object.meta.content_type.clone(),
        };
        to.media.put(to.scope, key, object.body, &options).await?;
    }
    Ok(())
}

/// Copies every object of `from` into `to`, in ascending key order, after the job's saved
/// cursor; the cursor is saved after each object.
pub(crate) async fn bulk_copy_media(
    from: Side<'_>,
    to: Side<'_>,
    job: &JobState<'_>,
    total: u64,
    progress: &dyn ProgressSink,
) -> Result<()> {
    let start = job.snapshot();
    let mut listing = Listing::new(from, start.media_after.clone());
    let (mut done, mut bytes) = start.media_done;
    while let Some(meta) = listing.next().await? {
        copy_object(from, to, &meta.key).await?;
        done += 1;
        bytes += meta.size;
        let key = meta.key.as_str().to_string();
        job.update(|j| {
            j.media_after = Some(key);
            j.media_done = (done, bytes);
        })
        .await?;
        progress.emit(ProgressEvent::Objects {
            done,
            total: Some(total),
            bytes,
        });
    }
    Ok(())
}

/// Makes `to`'s objects equal `from`'s (same keys, same sizes): copies missing or differing
/// objects and deletes extra ones, by merging the two ascending listings. Returns the number of
/// objects changed.
pub(crate) async fn reconcile_media(from: Side<'_>, to: Side<'_>) -> Result<u64> {
    let mut src = Listing::new(from, None);
    let mut dst = Listing::new(to, None);
    let mut a = src.next().await?;
    let mut b = dst.next().await?;
    let mut changed = 0;
    loop {
        match (&a, &b) {
            (None, None) => return Ok(changed),
            (Some(s), None) => {
                copy_object(from, to, &s.key).await?;
                changed += 1;
                a = src.next().await?;
            }
            (None, Some(d)) => {
                to.media.delete(to.scope, &d.key).await?;
                changed += 1;
                b = dst.next().await?;
            }
            (Some(s), Some(d)) => match s.key.as_str().cmp(d.key.as_str()) {
                Ordering::Less => {
                    copy_object(from, to, &s.key).await?;
                    changed += 1;
                    a = src.next().await?;
                }
                Ordering::Greater => {
                    to.media.delete(to.scope, &d.key).await?;
                    changed += 1;
                    b = dst.next().await?;
                }
                Ordering::Equal => {
                    if s.size != d.size {
                        copy_object(from, to, &s.key).await?;
                        changed += 1;
                    }
                    a = src.next().await?;
                    b = dst.next().await?;
                }
            },
        }
    }
}

/// Whether two sides hold the same keys with the same sizes; the first difference otherwise.
pub(crate) async fn media_difference(left: Side<'_>, right: Side<'_>) -> Result<Option<String>> {
    let mut l = Listing::new(left, None);
    let mut r = Listing::new(right, None);
    loop {
        match (l.next().await?, r.next().await?) {
            (None, None) => return Ok(None),
            (Some(a), Some(b)) if a.key == b.key && a.size == b.size => {}
            (a, b) => {
                let describe = |m: &Option<ObjectMeta>, s: &Scope| match m {
                    Some(m) => format!("{} ({} bytes) in the {s}", m.key.as_str(), m.size),
                    None => format!("no more objects in the {s}"),
                };
                return Ok(Some(format!(
                    "{} vs {}",
                    describe(&a, left.scope),
                    describe(&b, right.scope)
                )));
            }
        }
    }
}

/// One copy pass of a room's rows from `from` into `to` (the two scopes of the same room, in
/// one shard store: [`Side::same_shard_store`]), saving checkpoints into `job`. Returns rows
/// written plus deleted: the delta a catch-up closed.
pub(crate) async fn copy_pass(
    rs: &Roomshard,
    from: Side<'_>,
    to: Side<'_>,
    pass: CopyPass,
    resume_from: Option<CopyCheckpoint>,
    job: &JobState<'_>,
    progress: &dyn ProgressSink,
) -> Result<u64> {
    let outcome = to
        .shards
        .copy_room(CopyRequest {
            schema: &rs.schema,
            source: CopySource {
                scope: from.scope.clone(),
                server: None,
            },
            target: to.scope.clone(),
            pass,
            resume_from,
            checkpoints: job,
            progress,
        })
        .await?;
    Ok(outcome.rows_written + outcome.rows_deleted)
}

/// Makes `to`'s rows equal `from`'s when the two are in different shard stores (a room moving
/// onto another registered provider): if parity already holds, nothing; otherwise `to` is
/// emptied (a dedicated shard is dropped and made again — an adopted one that holds rows is
/// refused, it is the customer's) and `from`'s dump is streamed into `to`'s restore. Callers
/// run it while the room is read-only (the cutover, a recentralise), since a dump is a snapshot
/// and nothing records the writes after it. Returns the rows loaded.
pub(crate) async fn replace_rows(
    rs: &Roomshard,
    from: Side<'_>,
    to: Side<'_>,
    progress: &dyn ProgressSink,
) -> Result<u64> {
    let source = from.shards.parity(from.scope, &rs.schema).await?;
    let target = to.shards.parity(to.scope, &rs.schema).await?;
    if source.mismatched_tables(&target).is_empty() {
        return Ok(0);
    }
    if target.tables.iter().any(|t| t.rows > 0) {
        if let Scope::Dedicated(room, at) = to.scope {
            if at.adopted.shard {
                return Err(Error::conflict(format!(
                    "room {room}: the adopted shard {} already holds rows that differ from the \
                     room's; it is the customer's, so roomshard will not empty it — empty it, \
                     or adopt an empty one",
                    at.shard
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                )));
            }
            to.shards.drop_room(to.scope, &rs.schema).await?;
            to.shards.ensure_shard(room, at, &rs.schema).await?;
        } else {
            to.shards.drop_room(to.scope, &rs.schema).await?;
        }
    }
    let loaded = stream_rows(rs, from, to).await?;
    let rows: u64 = loaded.iter().map(|t| t.rows).sum();
    for t in &loaded {
        progress.emit(ProgressEvent::Rows {
            table: t.table.clone(),
            done: t.rows,
            total: Some(t.rows),
        });
    }
    Ok(rows)
}

/// One piece of a dump on its way from a [`DumpSink`] to a [`DumpSource`].
enum Piece {
    Table(String),
    Rows(Bytes),
    EndTable,
    /// The dump finished: without it, a closed channel means the dump failed.
    Done,
}

/// The dump side of [`stream_rows`]: hands each piece to the restore through a bounded channel
/// (at most [`PIPE_DEPTH`] chunks of ~64 KiB in flight, whatever the room's size).
struct PipeSink {
    tx: mpsc::Sender<Piece>,
    /// The restore stopped reading (it failed): its error is the one to report.
    closed: bool,
}

const PIPE_DEPTH: usize = 8;

impl PipeSink {
    async fn send(&mut self, piece: Piece) -> Result<()> {
        if self.tx.send(piece).await.is_err() {
            self.closed = true;
            return Err(Error::unavailable(
                "streaming rows into the other shard store",
                false,
                std::io::Error::other("the restore stopped reading"),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl DumpSink for PipeSink {
    async fn begin_table(&mut self, table: &TableDescriptor) -> Result<()> {
        self.send(Piece::Table(table.name.clone())).await
    }
    async fn rows(&mut self, chunk: Bytes) -> Result<()> {
        self.send(Piece::Rows(chunk)).await
    }
    async fn end_table(&mut self, _rows: u64) -> Result<()> {
        self.send(Piece::EndTable).await
    }
}

/// The restore side of [`stream_rows`].
struct PipeSource {
    rx: mpsc::Receiver<Piece>,
}

fn cut_short() -> Error {
    Error::corrupt(
        "rows streamed from the other shard store",
        "the dump stopped before it finished",
    )
}

#[async_trait]
impl DumpSource for PipeSource {
    async fn next_table(&mut self) -> Result<Option<String>> {
        match self.rx.recv().await {
            Some(Piece::Table(name)) => Ok(Some(name)),
            Some(Piece::Done) => Ok(None),
            Some(Piece::Rows(_) | Piece::EndTable) => Err(Error::corrupt(
                "rows streamed from the other shard store",
                "rows outside a table",
            )),
            None => Err(cut_short()),
        }
    }
    async fn next_rows(&mut self) -> Result<Option<Bytes>> {
        match self.rx.recv().await {
            Some(Piece::Rows(chunk)) => Ok(Some(chunk)),
            Some(Piece::EndTable) => Ok(None),
            Some(Piece::Table(_) | Piece::Done) => Err(Error::corrupt(
                "rows streamed from the other shard store",
                "a table without its end",
            )),
            None => Err(cut_short()),
        }
    }
}

/// Streams `from`'s dump into `to`'s restore (ids kept: it is the same room), concurrently
/// through a bounded channel. The restore is all or nothing, so a dump that fails midway
/// leaves `to` as it was; the error reported is the one that started it.
async fn stream_rows(rs: &Roomshard, from: Side<'_>, to: Side<'_>) -> Result<Vec<TableCount>> {
    let (tx, rx) = mpsc::channel(PIPE_DEPTH);
    let dump = async move {
        let mut sink = PipeSink { tx, closed: false };
        let mut result = from.shards.dump(from.scope, &rs.schema, &mut sink).await;
        if result.is_ok() {
            result = sink.send(Piece::Done).await.map(|()| Vec::new());
        }
        (result, sink.closed)
    };
    let restore = async {
        let mut source = PipeSource { rx };
        to.shards
            .restore(to.scope, &rs.schema, &mut source, &IdRemap::default())
            .await
    };
    let ((dumped, restore_stopped), restored) = tokio::join!(dump, restore);
    match (dumped, restored) {
        (Err(e), _) if !restore_stopped => Err(e),
        (_, Err(e)) => Err(e),
        (_, Ok(outcome)) => Ok(outcome.tables),
    }
}

/// `Error::Sealed` for a sealed room.
pub(crate) fn sealed(room: &RoomId) -> Error {
    Error::Sealed { room: room.clone() }
}
