//! Abort: the way back from every state a decentralise or recentralise can stop in.
//!
//! | state | forward | back (`abort`) |
//! |---|---|---|
//! | `provisioning`, `copying`, `cutover` | `decentralise` resumes | the room stays pooled: its half-made shard, bucket and key are removed |
//! | `recentralising` | `recentralise` resumes | the room stays sovereign: the rows and objects copied back so far are removed from the shared store |
//! | `pooled` with an unfinished abort | — | `abort` finishes removing the half-made resources |
//!
//! The side that was authoritative before the job started is never touched, so an abort loses
//! nothing; every step is idempotent, so an abort killed halfway is finished by running it again.

use roomshard_core::{Error, JobKind, Placement, PlacementState, Profile, Result, RoomId, Scope};

use crate::Roomshard;

/// What [`abort`] undid.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AbortOutcome {
    /// The state the room was in (`pooled` when an earlier abort was being finished).
    pub from: PlacementState,
    /// The room's placement now: pooled after an aborted decentralise, sovereign after an
    /// aborted recentralise.
    pub placement: Placement,
}

/// Aborts the decentralise or recentralise `room` is in the middle of, returning it to where it
/// was before that job started.
///
/// # Errors
/// [`Error::Conflict`] for a room with nothing in progress (pooled, sovereign, sealed);
/// [`Error::NotFound`] for an unknown room; whatever a provider returns (run it again).
pub async fn abort(rs: &Roomshard, room: &RoomId) -> Result<AbortOutcome> {
    let mut placement = rs
        .control
        .placement(room)
        .await?
        .ok_or_else(|| Error::not_found(format!("placement of room {room}")))?;
    let from = placement.state;
    match from {
        PlacementState::Provisioning | PlacementState::Copying | PlacementState::Cutover => {
            // Flip first: the pooled copy was authoritative all along, and from here on no
            // router sends anything to the half-made shard. The decentralise job record stays
            // as the marker of the unfinished cleanup, which decentralise refuses to start over,
            // and the placement keeps naming the half-made resources until they are gone.
            if rs.control.job(room, JobKind::Decentralise).await?.is_none() {
                save_marker(rs, room).await?;
            }
            rs.move_placement(
                &mut placement,
                PlacementState::Pooled,
                "decentralise.aborted",
                serde_json::json!({}),
                |_| {},
            )
            .await?;
            remove_half_made(rs, &mut placement).await?;
        }
        PlacementState::Pooled if rs.control.job(room, JobKind::Decentralise).await?.is_some() => {
            remove_half_made(rs, &mut placement).await?;
        }
        PlacementState::Recentralising => {
            // Forget the job first, so a recentralise run after a crash in the middle of this
            // starts its copy from the beginning instead of resuming from a checkpoint whose
            // rows are being removed.
            rs.control.delete_job(room, JobKind::Recentralise).await?;
            let pooled = Scope::Pooled(room.clone());
            rs.shards.drop_room(&pooled, &rs.schema).await?;
            rs.media.purge(&pooled).await?;
            rs.move_placement(
                &mut placement,
                PlacementState::Sovereign,
                "recentralise.aborted",
                serde_json::json!({}),
                |_| {},
            )
            .await?;
        }
        other => {
            return Err(Error::conflict(format!(
                "room {room} is {other} with no job in progress: there is nothing to abort"
            )));
        }
    }
    Ok(AbortOutcome { from, placement })
}

/// An empty decentralise job record, the marker of an abort whose cleanup has not finished.
async fn save_marker(rs: &Roomshard, room: &RoomId) -> Result<()> {
    rs.control
        .save_job(&roomshard_core::CopyJob {
            room: room.clone(),
            kind: JobKind::Decentralise,
            checkpoint: None,
            media_after: None,
            media_done: (0, 0),
            updated_at_unix_ms: crate::support::now_unix_ms(),
        })
        .await
}

/// A placement's fields naming the room's own resources, cleared once those are removed.
pub(crate) fn clear_own_resources(p: &mut Placement) {
    p.shard_url = None;
    p.media_bucket = None;
    p.kms_key_ref = None;
    p.profile = Profile::Standard;
    p.region = None;
    p.adopted = roomshard_core::Adopted::default();
    p.providers = roomshard_core::ProviderNames::default();
}

/// Drops the shard and the bucket the placement records (adopted ones are left as they are);
/// returns that location, for the key's turn.
pub(crate) async fn drop_shard_and_bucket(
    rs: &Roomshard,
    placement: &Placement,
) -> Result<roomshard_core::Location> {
    let at = placement.location();
    let own = rs.own_providers(placement)?;
    own.shards
        .drop_room(&placement.dedicated(), &rs.schema)
        .await?;
    own.media.drop_bucket(&placement.room, &at).await?;
    Ok(at)
}

/// Removes what an aborted decentralise made at the location its placement recorded — the
/// room's shard, bucket and key (nothing is encrypted under that key that is not also in the
/// pooled copy), never an adopted one — then forgets the location and the job record.
async fn remove_half_made(rs: &Roomshard, placement: &mut Placement) -> Result<()> {
    let room = &placement.room.clone();
    let at = drop_shard_and_bucket(rs, placement).await?;
    let keys = rs.own_providers(placement)?.keys;
    let caps = keys.capabilities();
    let key = if at.adopted.key {
        "kept (adopted)"
    } else if caps.discard_room_key {
        keys.discard_room_key(room).await?;
        "discarded"
    } else if caps.schedule_deletion {
        match keys
            .schedule_deletion(room, crate::flows::recentralise::KEY_DELETION_DAYS)
            .await
        {
            Ok(_) | Err(Error::Conflict { .. }) | Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        "scheduled for deletion"
    } else {
        "kept (the key manager can neither discard nor delete keys)"
    };
    let kept = |adopted: bool| if adopted { "kept (adopted)" } else { "dropped" };
    rs.move_placement(
        placement,
        PlacementState::Pooled,
        "decentralise.abort_finished",
        serde_json::json!({
            "shard": kept(at.adopted.shard),
            "bucket": kept(at.adopted.bucket),
            "key": key,
        }),
        clear_own_resources,
    )
    .await?;
    if rs.shards.capabilities().change_log {
        // The pooled copy stays; its changes need no recording any more.
        rs.shards.track_changes(room, &rs.schema, false).await?;
    }
    rs.control.delete_job(room, JobKind::Decentralise).await
}
