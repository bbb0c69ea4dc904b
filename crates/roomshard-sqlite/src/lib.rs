//! roomshard's embedded default database, on SQLite.
//!
//! - [`SqliteShardStore`]: a [`ShardStore`](roomshard_core::ShardStore) whose pooled scope is the
//!   host's shared tables in its global SQLite database and whose dedicated shards are one SQLite
//!   file per room.
//! - [`SqliteControlPlane`]: roomshard's [`ControlPlane`](roomshard_core::ControlPlane) tables in
//!   the same global database, created by the migrations this crate ships.
//! - [`SqlitePools`]: the runtime router's bounded pools on those files.
//! - [`open_global`]: opens that global database, with the settings both of them rely on.

mod codec;
mod control;
mod pools;
mod restore;
mod shard;
mod sql;

pub use control::SqliteControlPlane;
pub use pools::SqlitePools;
pub use shard::{DEFAULT_BATCH_ROWS, META_TABLE, SqliteShardStore};

use roomshard_core::{Error, Result};
use sqlx::SqlitePool;
use sqlx::sqlite::SqlitePoolOptions;
use std::path::Path;

/// Opens (creating if missing) the host's global SQLite database at `path`: the shared tables of
/// pooled rooms and the control plane live there, so both use this one pool.
///
/// Settings: WAL journal (readers never block the writer), `foreign_keys` off (descriptors
/// declare none; the host's own constraints are its business), a busy timeout of about 10 s
/// (concurrent writers wait instead of failing at once), `synchronous = NORMAL` (durable at
/// checkpoints, the usual WAL trade-off).
///
/// # Errors
/// [`Error::Unavailable`] if the file cannot be opened or created.
pub async fn open_global(path: &Path) -> Result<SqlitePool> {
    let options = shard::connect_options(path).create_if_missing(true);
    SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .map_err(|e| {
            Error::unavailable(
                format!("sqlite global database {}", path.display()),
                matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut),
                e,
            )
        })
}
