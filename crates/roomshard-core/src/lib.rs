//! roomshard's contracts: the types and traits every part of roomshard, and every storage
//! provider, agrees on.
//!
//! roomshard gives each chat room data sovereignty: its rows, objects and key can move out of a
//! shared database, bucket and KMS key into its own, be exported as a signed bundle, and be sealed
//! by revoking a key grant. What does the storing is pluggable — PostgreSQL or SQLite, S3 or a
//! directory, AWS KMS or Vault or local keys, Redis or NATS — and this crate is where the plugs
//! are defined:
//!
//! - the four provider traits, [`ShardStore`], [`MediaStore`], [`KeyManager`] and [`Indexer`],
//!   each with a written contract per method and a flat capability struct
//!   ([`capabilities`]);
//! - validated names ([`RoomId`], [`SchemaName`], [`Identifier`], [`ObjectKey`]) — the only way a
//!   room-derived name reaches SQL, a path or a bucket;
//! - how a host declares its room tables ([`RoomSchema`], [`Table`]), using the bundle format's
//!   descriptor types, re-exported here;
//! - change and progress events ([`events`]), placements and their state machine
//!   ([`placement`]), streamed bodies ([`ObjectBody`]), and the one [`Error`].
//!
//! # Why a crate of its own
//!
//! A third party writing a provider depends on `roomshard-core` alone, and the crates that hold
//! heavy dependencies (sqlx, the AWS SDK, vaultrs, redis) are separate providers that nothing else
//! has to compile. So this crate's public API names **no** backend type: no sqlx pool, no AWS
//! client, no tokio reader. Streams are `futures-core` streams of `bytes::Bytes` (see [`body`]),
//! async methods go through [`macro@async_trait`] (re-exported), and backend errors appear only boxed
//! inside [`Error`]. A provider's own API may expose its backend's types (a connection from a
//! [`RouteHandle`], say); the contract never does.
//!
//! The rationale, the capability tables and the placement state machine are written up in
//! `docs/core-contracts.md`.

#![forbid(unsafe_code)]

pub mod body;
pub mod capabilities;
pub mod error;
pub mod events;
pub mod ids;
pub mod placement;
pub mod schema;
pub mod traits;
pub mod urls;

pub use body::ObjectBody;
pub use capabilities::{IndexCapabilities, KeyCapabilities, MediaCapabilities, ShardCapabilities};
pub use error::{BoxError, Error, Result};
pub use events::{
    ChangeEvent, ChangeKind, EventId, NoProgress, Phase, ProgressEvent, ProgressSink,
};
pub use ids::{Identifier, ObjectKey, RoomId, SchemaName};
pub use placement::{
    Adopted, Location, Placement, PlacementState, Profile, ProviderName, ProviderNames, Scope,
    ServerUrl,
};
pub use schema::{RESERVED_TABLE_PREFIX, RoomSchema, Table};
pub use traits::*;
pub use urls::ProviderUrl;

/// The bundle format's descriptor types, re-exported so providers need only this crate.
pub use roomshard_verify::format::{
    Algorithm, ColumnDescriptor, ColumnRef, LogicalType, TableDescriptor,
};

/// Re-exported so providers implement the traits without depending on `async-trait` themselves.
pub use async_trait::async_trait;
/// The chunk type of streamed rows and objects.
pub use bytes::Bytes;
/// The stream trait [`ObjectBody`] implements.
pub use futures_core::Stream;
