//! What each provider can do, as flat `Copy` structs of flags and limits (the OpenDAL shape).
//!
//! Capabilities are how roomshard stays honest about differences between backends without
//! pretending they are equal: a profile is checked against them at startup (a `sovereign` profile
//! that promises encrypted, lifecycle-managed buckets refuses a store that cannot provide them),
//! flows pick a path from them (server-side copy or stream through), and the conformance suite
//! runs a behaviour test only when its flag is set. Every operation guarded by a flag returns
//! [`Error::Unsupported`](crate::Error::Unsupported) when the flag is `false`.
//!
//! Providers build these with struct-update syntax, so flags added later (always defaulting to
//! `false` / `None`) do not break them:
//!
//! ```
//! use roomshard_core::ShardCapabilities;
//! let caps = ShardCapabilities { dump: true, restore: true, ..Default::default() };
//! assert!(!caps.cross_server_copy);
//! ```

/// What a [`ShardStore`](crate::ShardStore) can do. Ensuring a shard, bulk copying, row-count
/// parity and deletion are always required; these flags cover the rest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ShardCapabilities {
    /// Places resources in a requested region (residency pinning); without it a pinned region
    /// is refused (`ensure_*.region`), never ignored.
    pub regions: bool,
    /// `copy_room` continues from a checkpoint instead of starting over (it always saves them).
    pub copy_resumable: bool,
    /// `copy_room` can read from another server ([`CopySource::server`](crate::CopySource) set).
    pub cross_server_copy: bool,
    /// `copy_room` supports [`CopyPass::CatchUp`](crate::CopyPass::CatchUp), so a room stays
    /// writable during the bulk copy and only the final delta runs in read-only cutover.
    pub catch_up: bool,
    /// `copy_room` supports [`CopyPass::Changes`](crate::CopyPass::Changes) and
    /// `track_changes` works: the store records which of a pooled room's rows the host changes
    /// while the room is tracked, so each catch-up touches only those rows instead of comparing
    /// the whole room (what keeps the read-only cutover short for a large room).
    pub change_log: bool,
    /// `fence_writes` makes the database itself refuse the host's writes to a pooled room's
    /// rows (after waiting for those in flight), so the cutover's read-only window holds even
    /// against a host that did not look at the placement.
    pub write_fence: bool,
    /// `dump` streams a room's rows in COPY text format.
    pub dump: bool,
    /// `restore` loads a dump into a room.
    pub restore: bool,
    /// `restore` can give colliding ids new values
    /// ([`RemapPolicy::OnCollision`](crate::RemapPolicy::OnCollision)).
    pub id_remap: bool,
    /// `parity` returns a content checksum per table, not only row counts.
    pub parity_checksums: bool,
    /// `chunk_parity` and `row_digests` work: counts and content hashes per primary-key range,
    /// so a copy job checks a large room chunk by chunk while it is writable, re-checks only the
    /// chunks that changed inside the read-only cutover, and names the rows of a mismatch. With
    /// `change_log`, `reset_applied` and `applied_in` say which chunks a catch-up touched.
    pub chunk_parity: bool,
    /// `size_bytes` reports storage used by a room.
    pub size_bytes: bool,
    /// `route` maps a room to a connection handle for the host's queries.
    pub route: bool,
    /// Every row change in a dedicated shard writes a change event to the shard's outbox in the
    /// same transaction (`read_outbox` / `trim_outbox` work).
    pub transactional_outbox: bool,
    /// Most dedicated shards one store can hold (e.g. an open-file budget); `None` if unbounded.
    pub max_shards: Option<u64>,
}

/// What a [`MediaStore`](crate::MediaStore) can do. `ensure_bucket`, `put`, `get`, `head`,
/// `list`, `delete`, `usage` and `drop_bucket` are always required.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MediaCapabilities {
    /// Places resources in a requested region (residency pinning); without it a pinned region
    /// is refused (`ensure_*.region`), never ignored.
    pub regions: bool,
    /// `put` consumes the body chunk by chunk; `false` means the provider buffers an object up to
    /// `max_object_size` in memory (acceptable for tests, not for production).
    pub streaming_put: bool,
    /// Large objects are uploaded in parts (so one object may exceed a single request's limit
    /// and an upload survives a dropped connection part by part).
    pub multipart: bool,
    /// `presign_get` issues short-lived URLs bound to room, key and expiry.
    pub presign_get: bool,
    /// `copy` copies server-side without streaming the bytes through roomshard.
    pub copy: bool,
    /// Buckets honour [`BucketSpec::lifecycle_ia_days`](crate::BucketSpec).
    pub bucket_lifecycle: bool,
    /// Buckets encrypt at rest with the room's key ([`BucketSpec::kms_key`](crate::BucketSpec)).
    pub bucket_encryption: bool,
    /// Buckets keep object versions ([`BucketSpec::versioning`](crate::BucketSpec)).
    pub versioning: bool,
    /// Buckets carry cost-allocation tags ([`BucketSpec::tags`](crate::BucketSpec)).
    pub tagging: bool,
    /// Buckets block public access ([`BucketSpec::block_public_access`](crate::BucketSpec)).
    pub public_access_block: bool,
    /// Objects are encrypted before they leave the process, with data keys wrapped by the room's
    /// key, so revoking the key seals the media even on storage that cannot encrypt by itself.
    pub client_side_encryption: bool,
    /// Largest object `put` accepts, in bytes; `None` if unbounded.
    pub max_object_size: Option<u64>,
    /// Longest expiry `presign_get` grants, in seconds; `None` if unbounded.
    pub max_presign_expiry_secs: Option<u64>,
}

/// What a [`KeyManager`](crate::KeyManager) can do. Room keys and data keys are always required.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyCapabilities {
    /// Places resources in a requested region (residency pinning); without it a pinned region
    /// is refused (`ensure_*.region`), never ignored.
    pub regions: bool,
    /// `grant` and `list_grants` work.
    pub grants: bool,
    /// `revoke` takes effect, sealing the room for the revoked grantee.
    pub revoke: bool,
    /// `rotate` gives a room key new material (old data keys still decrypt).
    pub rotate: bool,
    /// `sign` / `public_key` work with ECDSA P-256 SHA-256 keys (the bundle default).
    pub sign_p256: bool,
    /// `sign` / `public_key` work with Ed25519 keys.
    pub sign_ed25519: bool,
    /// Data keys are bound to their [`EncryptionContext`](crate::EncryptionContext): decrypting
    /// under another context fails.
    pub encryption_context: bool,
    /// `schedule_deletion` schedules a room key's destruction.
    pub schedule_deletion: bool,
    /// `cancel_deletion` withdraws a scheduled destruction.
    pub cancel_deletion: bool,
    /// `discard_room_key` removes a key nothing depends on (a rolled-back dedicated import's).
    pub discard_room_key: bool,
    /// `rewrap_data_key` re-wraps a data key under the current key version.
    pub rewrap: bool,
    /// `wrapped_key_version` tells which key version wrapped a data key.
    pub key_versions: bool,
    /// Most grants one key can hold; `None` if unbounded.
    pub max_grants_per_key: Option<u64>,
    /// Shortest deletion window `schedule_deletion` accepts, in days.
    pub min_deletion_days: Option<u64>,
    /// Longest deletion window `schedule_deletion` accepts, in days.
    pub max_deletion_days: Option<u64>,
}

/// What an [`Indexer`](crate::Indexer) can do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IndexCapabilities {
    /// `publish` works (`false` for a read-only view of someone else's stream).
    pub publish: bool,
    /// `consume` and `ack` work, with redelivery of unacknowledged events.
    pub consume_ack: bool,
    /// `lag` reports how far a consumer group is behind.
    pub lag: bool,
    /// Publishing an event id twice stores it once (within `dedupe_window_secs`). Without it,
    /// delivery is at-least-once and consumers must de-duplicate by event id.
    pub idempotent_publish: bool,
    /// Largest serialised event `publish` accepts, in bytes; `None` if unbounded.
    pub max_event_bytes: Option<u64>,
    /// How long publish de-duplication remembers an id, in seconds; `None` means forever.
    pub dedupe_window_secs: Option<u64>,
}
