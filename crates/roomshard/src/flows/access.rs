//! Revoke and re-grant: "Revoke Mesh" seals a sovereign room by revoking this server's grant on
//! its key; re-granting unseals it.
//!
//! Revocation is enforced where the key is needed: the media store cannot unwrap object keys,
//! the shard store's key gate refuses the shard, and receipts and exports refuse the room. The
//! placement records `sealed` so routers answer at once without asking the key manager.

use roomshard_core::{Error, Placement, PlacementState, Result, RoomId};

use crate::Roomshard;

/// Revokes this server's grant on `room`'s key: the room becomes sealed and every read and write
/// path returns [`Error::Sealed`] until [`regrant`]. Idempotent.
///
/// # Errors
/// [`Error::Conflict`] for a room that is not sovereign (a pooled room is under the shared key,
/// which cannot be revoked for one room); [`Error::NotFound`] for an unknown room.
pub async fn revoke(rs: &Roomshard, room: &RoomId) -> Result<Placement> {
    let mut placement = sovereign_or_sealed(rs, room).await?;
    rs.own_providers(&placement)?
        .keys
        .revoke(room, &rs.config.grantee)
        .await?;
    if placement.state != PlacementState::Sealed {
        rs.move_placement(
            &mut placement,
            PlacementState::Sealed,
            "room.revoked",
            serde_json::json!({ "grantee": rs.config.grantee.to_string() }),
            |_| {},
        )
        .await?;
    }
    Ok(placement)
}

/// Restores this server's grant on `room`'s key and unseals the room; issues a new receipt.
/// Idempotent. Returns the placement and the receipt (DSSE envelope JSON).
///
/// # Errors
/// As [`revoke`].
pub async fn regrant(rs: &Roomshard, room: &RoomId) -> Result<(Placement, String)> {
    let mut placement = sovereign_or_sealed(rs, room).await?;
    rs.own_providers(&placement)?
        .keys
        .grant(room, &rs.config.grantee)
        .await?;
    if placement.state == PlacementState::Sealed {
        rs.move_placement(
            &mut placement,
            PlacementState::Sovereign,
            "room.regranted",
            serde_json::json!({ "grantee": rs.config.grantee.to_string() }),
            |_| {},
        )
        .await?;
    }
    let existing = rs
        .control
        .receipts(room)
        .await?
        .into_iter()
        .rev()
        .find(|r| r.version == placement.version);
    let receipt = match existing {
        Some(r) => r.envelope,
        None => {
            let digest = hex_sha256(placement_summary(&placement).as_bytes());
            let envelope = rs.issue_receipt(&placement, "regrant", &digest).await?;
            String::from_utf8_lossy(&envelope).into_owned()
        }
    };
    Ok((placement, receipt))
}

async fn sovereign_or_sealed(rs: &Roomshard, room: &RoomId) -> Result<Placement> {
    let placement = rs
        .control
        .placement(room)
        .await?
        .ok_or_else(|| Error::not_found(format!("placement of room {room}")))?;
    match placement.state {
        PlacementState::Sovereign | PlacementState::Sealed => Ok(placement),
        other => Err(Error::conflict(format!(
            "room {room} is {other}: only a sovereign room has its own key to revoke or re-grant"
        ))),
    }
}

/// What a receipt without a manifest or parity speaks for: the placement itself.
pub(crate) fn placement_summary(placement: &Placement) -> String {
    serde_json::to_string(placement).unwrap_or_default()
}

pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
