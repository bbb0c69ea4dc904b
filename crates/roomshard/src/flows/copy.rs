//! What decentralise and recentralise share: a copy job's checkpoints and the media sync.

use std::cmp::Ordering;
use std::sync::Mutex;

use roomshard_core::{
    CheckpointSink, CopyCheckpoint, CopyJob, CopyPass, CopyRequest, CopySource, Error, JobKind,
    ListPage, ListRequest, ObjectKey, ObjectMeta, ProgressEvent, ProgressSink, Result, RoomId,
    Scope, async_trait,
};

use crate::Roomshard;
use crate::support::now_unix_ms;

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

/// Pages through a scope's objects in ascending key order.
struct Listing<'a> {
    rs: &'a Roomshard,
    scope: &'a Scope,
    page: std::vec::IntoIter<ObjectMeta>,
    token: Option<String>,
    done: bool,
}

impl<'a> Listing<'a> {
    fn new(rs: &'a Roomshard, scope: &'a Scope, after: Option<String>) -> Self {
        Listing {
            rs,
            scope,
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
                .rs
                .media
                .list(
                    self.scope,
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

/// Objects and bytes of a scope.
pub(crate) async fn media_totals(rs: &Roomshard, scope: &Scope) -> Result<(u64, u64)> {
    let usage = rs.media.usage(scope).await?;
    Ok((usage.objects, usage.bytes))
}

async fn copy_object(rs: &Roomshard, from: &Scope, to: &Scope, key: &ObjectKey) -> Result<()> {
    if rs.media.capabilities().copy {
        rs.media.copy(from, key, to, key).await?;
    } else {
        let object = rs.media.get(from, key).await?;
        let options = roomshard_core::PutOptions {
            content_type: object.meta.content_type.clone(),
        };
        rs.media.put(to, key, object.body, &options).await?;
    }
    Ok(())
}

/// Copies every object of `from` into `to`, in ascending key order, after the job's saved
/// cursor; the cursor is saved after each object.
pub(crate) async fn bulk_copy_media(
    rs: &Roomshard,
    from: &Scope,
    to: &Scope,
    job: &JobState<'_>,
    total: u64,
    progress: &dyn ProgressSink,
) -> Result<()> {
    let start = job.snapshot();
    let mut listing = Listing::new(rs, from, start.media_after.clone());
    let (mut done, mut bytes) = start.media_done;
    while let Some(meta) = listing.next().await? {
        copy_object(rs, from, to, &meta.key).await?;
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
pub(crate) async fn reconcile_media(rs: &Roomshard, from: &Scope, to: &Scope) -> Result<u64> {
    let mut src = Listing::new(rs, from, None);
    let mut dst = Listing::new(rs, to, None);
    let mut a = src.next().await?;
    let mut b = dst.next().await?;
    let mut changed = 0;
    loop {
        match (&a, &b) {
            (None, None) => return Ok(changed),
            (Some(s), None) => {
                copy_object(rs, from, to, &s.key).await?;
                changed += 1;
                a = src.next().await?;
            }
            (None, Some(d)) => {
                rs.media.delete(to, &d.key).await?;
                changed += 1;
                b = dst.next().await?;
            }
            (Some(s), Some(d)) => match s.key.as_str().cmp(d.key.as_str()) {
                Ordering::Less => {
                    copy_object(rs, from, to, &s.key).await?;
                    changed += 1;
                    a = src.next().await?;
                }
                Ordering::Greater => {
                    rs.media.delete(to, &d.key).await?;
                    changed += 1;
                    b = dst.next().await?;
                }
                Ordering::Equal => {
                    if s.size != d.size {
                        copy_object(rs, from, to, &s.key).await?;
                        changed += 1;
                    }
                    a = src.next().await?;
                    b = dst.next().await?;
                }
            },
        }
    }
}

/// Whether two scopes hold the same keys with the same sizes; the first difference otherwise.
pub(crate) async fn media_difference(
    rs: &Roomshard,
    left: &Scope,
    right: &Scope,
) -> Result<Option<String>> {
    let mut l = Listing::new(rs, left, None);
    let mut r = Listing::new(rs, right, None);
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
                    describe(&a, left),
                    describe(&b, right)
                )));
            }
        }
    }
}

/// One copy pass of a room's rows from `from` into `to` (the two scopes of the same room), saving
/// checkpoints into `job`. Returns rows written plus deleted: the delta a catch-up closed.
pub(crate) async fn copy_pass(
    rs: &Roomshard,
    from: &Scope,
    to: &Scope,
    pass: CopyPass,
    resume_from: Option<CopyCheckpoint>,
    job: &JobState<'_>,
    progress: &dyn ProgressSink,
) -> Result<u64> {
    let outcome = rs
        .shards
        .copy_room(CopyRequest {
            schema: &rs.schema,
            source: CopySource {
                scope: from.clone(),
                server: None,
            },
            target: to.clone(),
            pass,
            resume_from,
            checkpoints: job,
            progress,
        })
        .await?;
    Ok(outcome.rows_written + outcome.rows_deleted)
}

/// `Error::Sealed` for a sealed room.
pub(crate) fn sealed(room: &RoomId) -> Error {
    Error::Sealed { room: room.clone() }
}
