//! [`SqlitePools`]: the router's bounded pools on SQLite files: the global database for pooled
//! rooms, one file per dedicated room.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use roomshard_core::{Admission, ConnectionPools, Error, Result, RouteHandle, async_trait};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Sqlite, SqlitePool};

use crate::shard::{SqliteShardStore, connect_options};
use crate::sql::db_err;

/// The router's pools on the files of a [`SqliteShardStore`] (see [`ConnectionPools`]).
///
/// - A "server" is a file: the global database (pooled rooms; its tables are `"main"."<t>"`,
///   filtered by room) or a shard file in the store's directory (a dedicated room; its tables
///   are bare names). Any other path, and a missing shard file, is [`Error::NotFound`]; a
///   shard file is never created.
/// - A request runs on a pooled connection. SQLite has no fence of its own, so the pools do
///   not guard moves ([`guards_moves`](ConnectionPools::guards_moves) is false) and the router
///   re-reads the room's placement on every request instead (a local read of the global file).
#[derive(Clone, Debug)]
pub struct SqlitePools {
    store: Arc<SqliteShardStore>,
    acquire_timeout: Duration,
}

impl SqlitePools {
    /// Pools on `store`'s files.
    pub fn new(store: Arc<SqliteShardStore>) -> Self {
        SqlitePools {
            store,
            acquire_timeout: Duration::from_secs(10),
        }
    }

    /// The file a route's pool key names, if the store owns it.
    fn file(&self, server: &str) -> Result<PathBuf> {
        let path = PathBuf::from(server);
        let global = self.store.global_path();
        if path == global {
            return Ok(path);
        }
        let in_dir = path.parent() == Some(self.store.shards_dir())
            && path.extension().is_some_and(|e| e == "sqlite3");
        if !in_dir {
            return Err(Error::not_found(format!(
                "server {server}: neither the global database nor a shard file of this store"
            )));
        }
        Ok(path)
    }
}

#[async_trait]
impl ConnectionPools for SqlitePools {
    type Pool = SqlitePool;
    type Conn = PoolConnection<Sqlite>;

    fn name(&self) -> &str {
        "sqlite"
    }

    fn guards_moves(&self) -> bool {
        false
    }

    async fn open_pool(&self, server: &str, budget: u32) -> Result<SqlitePool> {
        let path = self.file(server)?;
        if !exists(&path).await {
            return Err(Error::not_found(format!("shard file {}", path.display())));
        }
        SqlitePoolOptions::new()
            .max_connections(budget.max(1))
            .min_connections(0)
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(Some(Duration::from_secs(60)))
            .connect_with(connect_options(&path).create_if_missing(false))
            .await
            .map_err(db_err(format!("opening {}", path.display())))
    }

    async fn acquire(
        &self,
        pool: &SqlitePool,
        _handle: &RouteHandle,
    ) -> Result<Admission<PoolConnection<Sqlite>>> {
        let conn = pool
            .acquire()
            .await
            .map_err(db_err("connecting for a routed request"))?;
        Ok(Admission::Admitted(conn))
    }

    async fn close_pool(&self, pool: SqlitePool) {
        pool.close().await;
    }

    fn open_connections(&self, pool: &SqlitePool) -> u32 {
        pool.size()
    }

    fn idle_connections(&self, pool: &SqlitePool) -> u32 {
        u32::try_from(pool.num_idle()).unwrap_or(u32::MAX)
    }
}

async fn exists(path: &Path) -> bool {
    tokio::fs::try_exists(path).await.unwrap_or(false)
}
