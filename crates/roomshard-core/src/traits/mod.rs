//! The four provider contracts: [`ShardStore`], [`MediaStore`], [`KeyManager`], [`Indexer`];
//! and [`ConnectionPools`], what a SQL provider adds for the host's runtime router.
//!
//! Each method's docs carry a **Behaviour** section (what a provider must do, which error kinds
//! it returns) and a **Requires capability** section; the conformance suite checks exactly those
//! sentences, per provider, for the capabilities the provider declares.
//!
//! # Rules shared by all four traits
//!
//! - **Object-safe, `Send + Sync`**: flows hold `Arc<dyn ShardStore>` and friends, chosen at
//!   runtime from a profile. Methods are `async` through [`async_trait`](crate::async_trait) (re-exported by this
//!   crate, so a provider needs no extra dependency to implement them).
//! - **Capabilities**: `capabilities()` is cheap and constant. Every method whose behaviour
//!   depends on a capability flag has a default implementation returning
//!   [`Error::Unsupported`](crate::Error::Unsupported) with the method's name and the provider's
//!   [`name`](ShardStore::name); a provider overrides it exactly when it sets the flag. Methods
//!   without a flag are required. (The same rule lets this crate add optional methods in a
//!   minor release without breaking providers.)
//! - **Idempotency**: "ensure", "drop", "delete", "revoke", "ack" and "trim" operations may be
//!   repeated with the same effect; callers retry them freely after a crash or a timeout.
//! - **Cancellation**: any future may be dropped at an `.await` (timeouts, shutdown). A dropped
//!   operation must not leave a state that later reads as success (a truncated object, a
//!   half-restored room); repeating it converges.
//! - **Errors**: backend failures become [`Error`](crate::Error) kinds — transient ones
//!   [`Error::Unavailable`](crate::Error::Unavailable) with `retryable: true`; backend error
//!   types only appear boxed as sources. Bad arguments are
//!   [`Error::Invalid`](crate::Error::Invalid) before any side effect.
//! - **Sealed rooms**: an operation that needs a room's key after its grant was revoked returns
//!   [`Error::Sealed`](crate::Error::Sealed), not `PermissionDenied`, where the provider can tell.
//! - **Names**: room-derived names reach SQL, paths and buckets only through the validated
//!   newtypes of [`ids`](crate::ids); providers never `format!` raw input into a statement.
//! - **Streaming**: rows and objects move in chunks; no method requires a whole table or object
//!   in memory.

mod control;
mod index;
mod keys;
mod media;
mod route;
mod shard;

pub use control::{
    AuditAnchor, AuditChainCheck, AuditEntry, AuditRecord, AuditVerification, ControlPlane,
    CopyJob, GENESIS_HASH, ImportHold, ImportRecord, ImportState, JobKind, PlacementChange,
    ReceiptRecord, check_audit_anchor, verify_audit_chain,
};
pub use index::{ConsumerGroup, Delivery, DeliveryTag, Indexer, Lag};
pub use keys::{
    DataKey, EncryptionContext, Grant, GrantId, Grantee, KeyManager, KeyRef, KeySpec, KeyVersions,
    PublicKey, ScheduledDeletion, SecretBytes, SigningKeyId, room_key_alias,
};
pub use media::{
    BucketRef, BucketSpec, GetObject, ListPage, ListRequest, MediaStore, ObjectMeta, PutOptions,
    SignedUrl, Usage,
};
pub use route::{Admission, ConnectionPools};
pub use shard::{
    CheckpointSink, ChunkParity, ChunkPlan, CopyCheckpoint, CopyOutcome, CopyPass, CopyRequest,
    CopySource, DumpSink, DumpSource, IdMap, IdRemap, KeyRange, KeyRewrite, Namespace,
    NoCheckpoints, OutboxEntry, Parity, RemapPolicy, RestoreOutcome, RouteHandle, RowDigest,
    ShardRef, ShardStore, TableCount, TableCursor, TableParity, WriteFence,
};

#[cfg(test)]
mod tests;
