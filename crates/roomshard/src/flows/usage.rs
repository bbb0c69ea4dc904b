//! Usage: what a room holds where it is served from, for metering, quotas and the operator.

use roomshard_core::{Placement, PlacementState, Result, RoomId, TableCount};
use serde::{Deserialize, Serialize};

use crate::Roomshard;

/// A room's storage, read from the copy that serves it (the shared tables and bucket while it is
/// pooled or being decentralised, its own shard and bucket once sovereign).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomUsage {
    /// The room.
    pub room: RoomId,
    /// Its placement state.
    pub state: PlacementState,
    /// Rows per table, in schema order.
    pub tables: Vec<TableCount>,
    /// Rows over all tables.
    pub rows: u64,
    /// Bytes of its rows: a dedicated PostgreSQL schema's `pg_total_relation_size` over its
    /// tables (indexes and TOAST included), a shard file's size; for a pooled room the store's
    /// estimate of its share of the shared tables. `None` when the store cannot tell
    /// (no `size_bytes` capability).
    pub shard_bytes: Option<u64>,
    /// Media objects.
    pub objects: u64,
    /// Media bytes.
    pub media_bytes: u64,
}

/// The usage of `room`. Reads only: a room the control plane does not know is read as pooled
/// and not registered.
///
/// # Errors
/// [`roomshard_core::Error::Sealed`] for a sealed room (its rows cannot be read without the
/// grant); [`roomshard_core::Error::NotFound`] for a sovereign room whose shard is gone;
/// whatever a provider returns.
pub async fn usage(rs: &Roomshard, room: &RoomId) -> Result<RoomUsage> {
    let placement = match rs.control.placement(room).await? {
        Some(p) => p,
        None => Placement::pooled(room.clone()),
    };
    let scope = placement.scope();
    let (shards, media) = if placement.is_sharded {
        let own = rs.own_providers(&placement)?;
        (own.shards, own.media)
    } else {
        (rs.shards.clone(), rs.media.clone())
    };
    let tables = shards.row_counts(&scope, &rs.schema).await?;
    let shard_bytes = if shards.capabilities().size_bytes {
        Some(shards.size_bytes(&scope, &rs.schema).await?)
    } else {
        None
    };
    let objects = media.usage(&scope).await?;
    Ok(RoomUsage {
        room: room.clone(),
        state: placement.state,
        rows: tables.iter().map(|t| t.rows).sum(),
        tables,
        shard_bytes,
        objects: objects.objects,
        media_bytes: objects.bytes,
    })
}
