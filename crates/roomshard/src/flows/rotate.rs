//! Rotate: a new version of a sovereign room's key. Data keys wrapped under older versions stay
//! readable and are re-wrapped lazily when accessed (or by a provider's own re-wrap pass).

use roomshard_core::{Error, KeyRef, PlacementState, Result, RoomId};

use super::access::{hex_sha256, placement_summary};
use crate::Roomshard;

/// Rotates `room`'s key and issues a new receipt naming it. Returns the key and the receipt.
///
/// # Errors
/// [`Error::Sealed`] for a sealed room; [`Error::Conflict`] for a room that is not sovereign.
pub async fn rotate(rs: &Roomshard, room: &RoomId) -> Result<(KeyRef, String)> {
    let mut placement = rs
        .control
        .placement(room)
        .await?
        .ok_or_else(|| Error::not_found(format!("placement of room {room}")))?;
    match placement.state {
        PlacementState::Sovereign => {}
        PlacementState::Sealed => return Err(Error::Sealed { room: room.clone() }),
        other => {
            return Err(Error::conflict(format!(
                "room {room} is {other}: only a sovereign room has its own key to rotate"
            )));
        }
    }
    let key = rs.own_providers(&placement)?.keys.rotate(room).await?;
    let key_id = key.id.clone();
    // A new version of the placement, so the receipt supersedes the previous one.
    let expected = placement.version;
    placement.kms_key_ref = Some(key_id.clone());
    placement.version += 1;
    rs.update_placement(
        &placement,
        expected,
        "key.rotated",
        serde_json::json!({ "key": key_id }),
        Some(placement.state),
    )
    .await?;
    let digest = hex_sha256(placement_summary(&placement).as_bytes());
    let envelope = rs.issue_receipt(&placement, "rotate", &digest).await?;
    Ok((key, String::from_utf8_lossy(&envelope).into_owned()))
}
