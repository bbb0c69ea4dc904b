//! [`PgPools`]: the router's bounded pools on PostgreSQL servers, and the guard every routed
//! request's transaction starts with.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use roomshard_core::{
    Admission, ConnectionPools, Error, Namespace, Result, RouteHandle, async_trait,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::shard::PgShardStore;
use crate::sql::{Ns, db_err, q};

/// The `application_name` of the router's connections, so a DBA (and the budget test) can tell
/// them apart in `pg_stat_activity`.
pub const ROUTER_APPLICATION_NAME: &str = "roomshard-router";

/// How long a request waits for a connection of a server's pool before it is told to retry.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// One server the router may open a pool on.
#[derive(Clone)]
struct Server {
    options: PgConnectOptions,
    store: Arc<PgShardStore>,
}

/// The router's pools on the PostgreSQL servers of one or more [`PgShardStore`]s (see
/// [`ConnectionPools`]).
///
/// - A pool is keyed by server ([`PgShardStore::server`]), bounded by the router's budget, lazy
///   (no connection before the first request), and its connections carry
///   `application_name = roomshard-router`.
/// - A request runs in a transaction. For a pooled room it starts with the guard
///   `roomshard_guard(room)` (one round trip): the room's fence lock in shared mode for the
///   transaction, refused while a cutover holds it ([`Admission::InCutover`]), and a check that
///   the room's pooled rows are not retired ([`Admission::Moved`]). The shared lock keeps a fence
///   waiting until the request ends, so no request reads the pooled copy across the flip. A
///   dedicated room's transaction is a plain `BEGIN`.
/// - Opening a pool installs the guard (no lock on the host's tables).
#[derive(Clone, Default)]
pub struct PgPools {
    servers: HashMap<String, Server>,
    acquire_timeout: Option<Duration>,
}

impl std::fmt::Debug for PgPools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Connect options hold the password: list the servers only (already redacted).
        f.debug_struct("PgPools")
            .field("servers", &self.servers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PgPools {
    /// Pools on `store`'s server (add more with [`with_store`](Self::with_store)).
    pub fn new(store: Arc<PgShardStore>) -> Self {
        PgPools::default().with_store(store)
    }

    /// Adds the server of another store (a second database server the host places rooms on).
    pub fn with_store(mut self, store: Arc<PgShardStore>) -> Self {
        let options = (*store.pool().connect_options())
            .clone()
            .application_name(ROUTER_APPLICATION_NAME);
        self.servers
            .insert(store.server().to_string(), Server { options, store });
        self
    }

    /// How long a request waits for a connection before it gets a retryable
    /// [`Error::Unavailable`] (default [`DEFAULT_ACQUIRE_TIMEOUT`]).
    pub fn with_acquire_timeout(mut self, wait: Duration) -> Self {
        self.acquire_timeout = Some(wait);
        self
    }
}

#[async_trait]
impl ConnectionPools for PgPools {
    type Pool = PgPool;
    type Conn = Transaction<'static, Postgres>;

    fn name(&self) -> &str {
        "postgres"
    }

    fn guards_moves(&self) -> bool {
        true
    }

    async fn open_pool(&self, server: &str, budget: u32) -> Result<PgPool> {
        let s = self
            .servers
            .get(server)
            .ok_or_else(|| Error::not_found(format!("PostgreSQL server {server} of a route")))?;
        s.store.install_guard().await?;
        Ok(PgPoolOptions::new()
            .max_connections(budget.max(1))
            .min_connections(0)
            .acquire_timeout(self.acquire_timeout.unwrap_or(DEFAULT_ACQUIRE_TIMEOUT))
            .idle_timeout(Some(Duration::from_secs(60)))
            .connect_lazy_with(s.options.clone()))
    }

    async fn acquire(
        &self,
        pool: &PgPool,
        handle: &RouteHandle,
    ) -> Result<Admission<Transaction<'static, Postgres>>> {
        let mut tx = pool
            .begin()
            .await
            .map_err(db_err("starting a routed request"))?;
        let Namespace::Shared { schema, room } = &handle.namespace else {
            return Ok(Admission::Admitted(tx));
        };
        let ns = Ns::ident(schema);
        let verdict: String = q(format!("SELECT {}.\"roomshard_guard\"($1)", ns.quoted))
            .bind(room.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err("admitting a routed request"))?
            .try_get(0)
            .map_err(db_err("admitting a routed request"))?;
        Ok(match verdict.as_str() {
            "ok" => Admission::Admitted(tx),
            "cutover" => Admission::InCutover,
            _ => Admission::Moved,
        })
    }

    async fn close_pool(&self, pool: PgPool) {
        pool.close().await;
    }

    fn open_connections(&self, pool: &PgPool) -> u32 {
        pool.size()
    }

    fn idle_connections(&self, pool: &PgPool) -> u32 {
        u32::try_from(pool.num_idle()).unwrap_or(u32::MAX)
    }
}
