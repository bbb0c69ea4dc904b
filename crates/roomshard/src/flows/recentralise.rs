//! Recentralise: bring a sovereign room back into the shared tables and bucket, and delete its
//! own resources.
//!
//! ```text
//! Sovereign ─► Recentralising ─► (bulk rows + media into the shared store, catch-up, parity) ─► Pooled ─► drop shard, bucket; key deletion scheduled
//! ```
//!
//! The dedicated shard serves until parity holds, and resumes like a decentralise: calling
//! [`recentralise`] again after a crash continues from the saved checkpoint. Writes to the room
//! should pause while it runs (the host treats `recentralising` as read-only): the final
//! catch-up pass then makes the shared copy exact.

use roomshard_core::{
    CopyPass, Error, JobKind, Phase, Placement, PlacementState, ProgressEvent, ProgressSink,
    Result, RoomId, Scope,
};

use super::copy::{
    JobState, Side, bulk_copy_media, copy_pass, media_difference, media_totals, reconcile_media,
    replace_rows, sealed,
};
use crate::Roomshard;

/// Days before a recentralised room's key is deleted (the shortest window KMSs allow).
pub(crate) const KEY_DELETION_DAYS: u32 = 7;

/// Recentralises `room`, resuming a job a crash interrupted. Returns the pooled placement.
///
/// # Errors
/// [`Error::Sealed`] for a sealed room (its data cannot be read to move it);
/// [`Error::Conflict`] for a room that is not sovereign or when parity fails (the shard still
/// serves; run it again).
pub async fn recentralise(
    rs: &Roomshard,
    room: &RoomId,
    progress: &dyn ProgressSink,
) -> Result<Placement> {
    let mut placement = rs
        .control
        .placement(room)
        .await?
        .ok_or_else(|| Error::not_found(format!("placement of room {room}")))?;
    match placement.state {
        PlacementState::Sealed => return Err(sealed(room)),
        PlacementState::Sovereign => {
            rs.move_placement(
                &mut placement,
                PlacementState::Recentralising,
                "recentralise.started",
                serde_json::json!({}),
                |_| {},
            )
            .await?;
        }
        PlacementState::Recentralising => {}
        // Pooled with the job still recorded: an earlier run flipped the placement and then
        // crashed (or failed) before the room's own resources were removed. Finish that.
        PlacementState::Pooled if rs.control.job(room, JobKind::Recentralise).await?.is_some() => {
            let job = JobState::load(rs, room, JobKind::Recentralise).await?;
            let pooled = Scope::Pooled(room.clone());
            let rows = rs.shards.row_counts(&pooled, &rs.schema).await?;
            let (objects, _) = media_totals(Side::pooled(rs, &pooled)).await?;
            remove_own_resources(
                rs,
                &mut placement,
                rows.iter().map(|t| t.rows).sum(),
                objects,
                progress,
            )
            .await?;
            job.finish().await?;
            progress.emit(ProgressEvent::Finished);
            return Ok(placement);
        }
        other => {
            return Err(Error::conflict(format!(
                "room {room} is {other}; only a sovereign room can be recentralised"
            )));
        }
    }
    let pooled = Scope::Pooled(room.clone());
    let dedicated = placement.dedicated();
    let own = rs.own_providers(&placement)?;
    let from = Side::on(&own, &dedicated);
    let to = Side::pooled(rs, &pooled);
    let job = JobState::load(rs, room, JobKind::Recentralise).await?;
    let counts = own.shards.row_counts(&dedicated, &rs.schema).await?;
    let (objects, bytes) = media_totals(from).await?;
    progress.emit(ProgressEvent::Planned {
        tables: counts.len() as u64,
        rows: counts.iter().map(|t| t.rows).sum(),
        objects,
        bytes,
    });

    progress.emit(ProgressEvent::Phase(Phase::Copy));
    let resume = job
        .snapshot()
        .checkpoint
        .filter(|c| c.pass == CopyPass::Bulk);
    if from.same_shard_store(&to) {
        copy_pass(rs, from, to, CopyPass::Bulk, resume, &job, progress).await?;
    }
    bulk_copy_media(from, to, &job, objects, progress).await?;
    progress.emit(ProgressEvent::Phase(Phase::CatchUp));
    if from.same_shard_store(&to) {
        copy_pass(rs, from, to, CopyPass::CatchUp, None, &job, progress).await?;
    } else {
        // From another registered store: one dump streamed into the pooled store's restore.
        replace_rows(rs, from, to, progress).await?;
    }
    reconcile_media(from, to).await?;

    progress.emit(ProgressEvent::Phase(Phase::Parity));
    let source = own.shards.parity(&dedicated, &rs.schema).await?;
    let target = rs.shards.parity(&pooled, &rs.schema).await?;
    let tables = source.mismatched_tables(&target);
    let media = media_difference(from, to).await?;
    if !tables.is_empty() || media.is_some() {
        return Err(Error::conflict(format!(
            "room {room}: parity fails after copying back (tables {tables:?}, media {media:?}); \
             the shard still serves, run recentralise again"
        )));
    }
    if rs.shards.capabilities().write_fence {
        // The shared tables take the room's writes again.
        rs.shards.retire_pooled(room, &rs.schema, false).await?;
    }
    rs.move_placement(
        &mut placement,
        PlacementState::Pooled,
        "recentralise.pooled",
        serde_json::json!({}),
        |_| {},
    )
    .await?;

    remove_own_resources(
        rs,
        &mut placement,
        target.tables.iter().map(|t| t.rows).sum(),
        objects,
        progress,
    )
    .await?;
    job.finish().await?;
    progress.emit(ProgressEvent::Finished);
    Ok(placement)
}

/// The cleanup after the flip to pooled, at the location the placement still records: drops
/// the shard and the bucket, schedules the key's deletion (adopted ones are left as they are),
/// then forgets the location with `recentralise.finished`. Every step is idempotent, so a run
/// that crashed halfway through it is finished by calling [`recentralise`] again.
async fn remove_own_resources(
    rs: &Roomshard,
    placement: &mut Placement,
    rows: u64,
    objects: u64,
    progress: &dyn ProgressSink,
) -> Result<()> {
    progress.emit(ProgressEvent::Phase(Phase::Cleanup));
    let room = &placement.room.clone();
    let at = super::abort::drop_shard_and_bucket(rs, placement).await?;
    let keys = rs.own_providers(placement)?.keys;
    let deletion = if keys.capabilities().schedule_deletion && !at.adopted.key {
        match keys.schedule_deletion(room, KEY_DELETION_DAYS).await {
            Ok(d) => Some(d.deletion_at_unix_ms),
            // Already scheduled by an earlier, interrupted run.
            Err(Error::Conflict { .. }) => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let version = placement.version;
    rs.move_placement(
        placement,
        PlacementState::Pooled,
        "recentralise.finished",
        serde_json::json!({
            "rows": rows,
            "objects": objects,
            "key_deletion_at_unix_ms": deletion,
            "adopted_kept": at.adopted,
            "pooled_version": version,
        }),
        super::abort::clear_own_resources,
    )
    .await?;
    Ok(())
}
