//! What roomshard tells the world: change events for the global index, and progress of copy jobs.

use crate::error::Result;
use crate::ids::{Identifier, RoomId, check_printable, validated_name};
use serde::{Deserialize, Serialize};

/// A change event's unique id, the key of publish idempotency.
///
/// 1–200 printable ASCII characters. Ids should be **deterministic** where the event comes from —
/// for the outbox, the shard and the outbox row's sequence number (e.g. `general:7f3a:42`) — so a
/// relay that crashes after publishing and publishes again sends the same id and the indexer
/// drops the repeat.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventId(String);

validated_name!(EventId);

impl EventId {
    /// Longest id, in bytes.
    pub const MAX_LEN: usize = 200;

    /// Validates an event id.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        check_printable("event id", &id, Self::MAX_LEN)?;
        Ok(EventId(id))
    }
}

/// Something that happened to a room, for the global index (search, feeds, audit consumers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Unique id; publishing the same id twice is one event.
    pub id: EventId,
    /// The room it happened in.
    pub room: RoomId,
    /// What happened.
    pub kind: ChangeKind,
    /// The table, for row events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<Identifier>,
    /// The row's primary key, for row events: the key value, or an array of values for a
    /// composite key, as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<serde_json::Value>,
    /// When it happened, in milliseconds since the Unix epoch (UTC).
    pub at_unix_ms: u64,
    /// Kind-specific data: the new row for inserts and updates, the new placement for placement
    /// changes, `null` if there is nothing to add.
    pub payload: serde_json::Value,
}

/// What a [`ChangeEvent`] reports. `#[non_exhaustive]`: consumers must ignore kinds they do not
/// know rather than fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChangeKind {
    /// A row was inserted.
    RowInserted,
    /// A row was updated.
    RowUpdated,
    /// A row was deleted.
    RowDeleted,
    /// The room's placement changed (state, server, bucket or key).
    PlacementChanged,
    /// The room was sealed (its key grant revoked).
    Sealed,
    /// A sealed room's grant was restored.
    Unsealed,
    /// The room's key was rotated.
    KeyRotated,
    /// The room was created or replaced by an import.
    Imported,
}

/// The steps of a copy job (decentralise, recentralise, move), in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Creating the target shard, bucket and key.
    Provision,
    /// Bulk copy of rows and objects while the room stays writable.
    Copy,
    /// Copying what changed during the bulk copy.
    CatchUp,
    /// The short read-only window: final delta, then the router flips.
    Cutover,
    /// Comparing per-table counts and checksums of source and target.
    Parity,
    /// Issuing the signed Sovereignty Receipt.
    Receipt,
    /// Removing the room's data from where it was.
    Cleanup,
}

/// One observation of a running copy job. Sinks receive them in order; counts are cumulative.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProgressEvent {
    /// The job's size, estimated before copying (rows may still be written meanwhile).
    Planned {
        /// Tables to copy.
        tables: u64,
        /// Rows over all tables.
        rows: u64,
        /// Media objects.
        objects: u64,
        /// Media bytes.
        bytes: u64,
    },
    /// A new phase started.
    Phase(Phase),
    /// Rows copied so far in one table.
    Rows {
        /// The table.
        table: String,
        /// Rows copied so far.
        done: u64,
        /// Rows expected, if known (an estimate: `done` may exceed it).
        total: Option<u64>,
    },
    /// Media objects copied so far.
    Objects {
        /// Objects copied so far.
        done: u64,
        /// Objects expected, if known.
        total: Option<u64>,
        /// Bytes copied so far.
        bytes: u64,
    },
    /// The job finished successfully.
    Finished,
}

/// Receives [`ProgressEvent`]s (a progress bar, a log, a job table).
///
/// `emit` is called on the copying task, so it must be quick and must not block: hand the event
/// to a channel or update an atomic. Progress is informational; anything that must survive a
/// crash goes through [`CheckpointSink`](crate::CheckpointSink) instead. Closures
/// `Fn(ProgressEvent)` are sinks.
pub trait ProgressSink: Send + Sync {
    /// Records one event.
    fn emit(&self, event: ProgressEvent);
}

/// A [`ProgressSink`] that drops every event.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn emit(&self, _event: ProgressEvent) {}
}

impl<F: Fn(ProgressEvent) + Send + Sync> ProgressSink for F {
    fn emit(&self, event: ProgressEvent) {
        self(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn event_ids_are_printable_ascii() {
        assert!(EventId::new("general:7f3a:42").is_ok());
        for bad in ["", "a b", "a\nb", "é", &"x".repeat(201)] {
            assert!(EventId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn change_event_json_shape_is_stable() {
        let event = ChangeEvent {
            id: EventId::new("general:1").expect("valid"),
            room: RoomId::new("general").expect("valid"),
            kind: ChangeKind::RowInserted,
            table: Some(Identifier::new("messages").expect("valid")),
            key: Some(serde_json::json!(42)),
            at_unix_ms: 1_700_000_000_000,
            payload: serde_json::json!({"body": "hi"}),
        };
        let json = serde_json::to_value(&event).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({
                "id": "general:1", "room": "general", "kind": "row_inserted",
                "table": "messages", "key": 42, "at_unix_ms": 1_700_000_000_000u64,
                "payload": {"body": "hi"}
            })
        );
        let back: ChangeEvent = serde_json::from_value(json).expect("parses");
        assert_eq!(back, event);
    }

    #[test]
    fn closures_and_no_progress_are_sinks() {
        let seen = Mutex::new(Vec::new());
        let sink = |e: ProgressEvent| seen.lock().expect("not poisoned").push(e);
        let sinks: [&dyn ProgressSink; 2] = [&NoProgress, &sink];
        for s in sinks {
            s.emit(ProgressEvent::Phase(Phase::Copy));
        }
        assert_eq!(
            *seen.lock().expect("not poisoned"),
            [ProgressEvent::Phase(Phase::Copy)]
        );
    }
}
