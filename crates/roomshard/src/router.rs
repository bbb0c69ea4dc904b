//! The runtime router: the host's `getPrismaForRoom(roomId)`. [`Router::route`] names where a
//! room's queries go (a bounded pool and how to write table names) for pooled and sovereign
//! rooms alike, and [`Route::begin`] gives the connection a request runs on.
//!
//! # What it guarantees
//! - **A hard budget per server.** Pools are keyed by server ([`RouteHandle::pool`]), never by
//!   room: ten thousand rooms on one server share one pool of at most
//!   [`RouterConfig::budget_per_server`] connections. A pool is opened (lazily) and closed under
//!   its server's gate, so a closing pool and its replacement never hold connections at once.
//! - **An LRU of pools with an idle TTL** ([`RouterConfig::pool_idle_ttl`],
//!   [`RouterConfig::max_pools`]), swept by [`Router::sweep`] (and by cache misses, at most once
//!   per [`SWEEP_EVERY`]). A pool
//!   in use — a [`Route`] alive for its server, or a connection checked out — is never closed.
//! - **Race-free cold creation.** Concurrent first requests for a server open one pool.
//! - **Never stale data.** A sealed room answers [`Error::Sealed`]; a room in its cutover answers
//!   a retryable [`Error::Unavailable`] ("retry shortly"). Placements are cached for
//!   [`RouterConfig::placement_ttl`] only where the provider guards moves in the database
//!   ([`ConnectionPools::guards_moves`], PostgreSQL): there every pooled request's transaction
//!   is admitted by the database itself, so a cached route that went stale in the flip is
//!   refused ([`Admission::Moved`]), dropped and routed again, transparently. Where it does not
//!   (SQLite), the placement is read on every request.
//! - **Metrics**: [`Router::metrics`] (hits, misses, evictions, waiters, open connections) and
//!   `tracing` events (target `roomshard::router`) on misses, pool opens and closes.
//!
//! What the cache cannot see without asking: a seal or a recentralise made by another process
//! reaches a PostgreSQL router within `placement_ttl` (default 1 s); [`Router::invalidate`]
//! makes a change this process made visible at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hashlink::LruCache;
use roomshard_core::{
    Admission, ConnectionPools, Error, Identifier, PlacementState, Result, RoomId, RouteHandle,
    Scope,
};
use serde::Serialize;

use crate::Roomshard;

/// How often cache misses sweep idle pools ([`Router::sweep`] called directly always runs).
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Settings of a [`Router`].
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// Most connections the router's pool on one server holds at once (default 16).
    pub budget_per_server: u32,
    /// How long a looked-up placement is trusted where the provider guards moves (default 1 s).
    pub placement_ttl: Duration,
    /// Most rooms whose routes are cached (default 100 000); the least recently used go first.
    pub cache_capacity: usize,
    /// An unused pool is closed after this long (default 5 minutes).
    pub pool_idle_ttl: Duration,
    /// Most pools open at once (default 256; SQLite opens one per shard file); past it the least
    /// recently used idle ones close.
    pub max_pools: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            budget_per_server: 16,
            placement_ttl: Duration::from_secs(1),
            cache_capacity: 100_000,
            pool_idle_ttl: Duration::from_secs(300),
            max_pools: 256,
        }
    }
}

/// A snapshot of the router's counters (see the [module docs](self)).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RouterMetrics {
    /// Routes answered from the cache.
    pub hits: u64,
    /// Routes that read the placement.
    pub misses: u64,
    /// Cached routes pushed out by capacity, and pools closed by the sweep.
    pub evictions: u64,
    /// Requests waiting for a connection now.
    pub waiters: u64,
    /// Connections the router's pools hold open now (idle and in use).
    pub open_connections: u64,
    /// Pools open now.
    pub open_pools: u64,
    /// Requests refused because their room was in its cutover.
    pub cutover_refusals: u64,
    /// Stale routes the database refused and the router routed again.
    pub reroutes: u64,
}

/// The runtime router (see the [module docs](self)). Cheap to clone: clones share the cache,
/// the pools and the counters.
pub struct Router<P: ConnectionPools> {
    inner: Arc<Inner<P>>,
}

impl<P: ConnectionPools> Clone for Router<P> {
    fn clone(&self) -> Self {
        Router {
            inner: self.inner.clone(),
        }
    }
}

impl<P: ConnectionPools> std::fmt::Debug for Router<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("pools", &self.inner.pools.name())
            .field("config", &self.inner.config)
            .finish()
    }
}

struct Inner<P: ConnectionPools> {
    rs: Roomshard,
    pools: P,
    config: RouterConfig,
    cache: Mutex<LruCache<RoomId, Cached>>,
    servers: Mutex<HashMap<String, Arc<Slot<P::Pool>>>>,
    /// When a cache miss last swept the pools (at most once per [`SWEEP_EVERY`]).
    last_sweep: Mutex<Instant>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    waiters: AtomicU64,
    cutover_refusals: AtomicU64,
    reroutes: AtomicU64,
}

struct Cached {
    handle: RouteHandle,
    at: Instant,
}

/// One server's pool. `pool` is read on every request (a clone of the handle); `gate`
/// serialises opening and closing it, so only one pool per server ever holds connections.
struct Slot<Pool> {
    server: String,
    pool: Mutex<Option<Pool>>,
    gate: Arc<tokio::sync::Mutex<()>>,
    last_used: Mutex<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<P: ConnectionPools> Router<P> {
    /// A router over `rs`'s placements and shard stores, opening connections through `pools`.
    pub fn new(rs: Roomshard, pools: P, config: RouterConfig) -> Self {
        Router {
            inner: Arc::new(Inner {
                rs,
                pools,
                cache: Mutex::new(LruCache::new(config.cache_capacity.max(1))),
                config,
                servers: Mutex::new(HashMap::new()),
                last_sweep: Mutex::new(Instant::now()),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                evictions: AtomicU64::new(0),
                waiters: AtomicU64::new(0),
                cutover_refusals: AtomicU64::new(0),
                reroutes: AtomicU64::new(0),
            }),
        }
    }

    /// Where `room`'s queries go now.
    ///
    /// # Errors
    /// [`Error::Sealed`] for a sealed room; [`Error::Unavailable`] (retryable) for a room in its
    /// cutover; the control plane's and shard store's errors.
    pub async fn route(&self, room: &RoomId) -> Result<Route<P>> {
        let inner = &self.inner;
        let handle = match self.cached(room) {
            Some(handle) => {
                inner.hits.fetch_add(1, Ordering::Relaxed);
                handle
            }
            None => {
                inner.misses.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(target: "roomshard::router", %room, "route miss");
                let handle = self.resolve(room).await?;
                if inner.pools.guards_moves() {
                    let mut cache = lock(&inner.cache);
                    let full = cache.len() >= cache.capacity() && !cache.contains_key(room);
                    cache.insert(
                        room.clone(),
                        Cached {
                            handle: handle.clone(),
                            at: Instant::now(),
                        },
                    );
                    if full {
                        inner.evictions.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if self.sweep_due() {
                    self.sweep().await;
                }
                handle
            }
        };
        let slot = {
            let mut servers = lock(&inner.servers);
            servers
                .entry(handle.pool.clone())
                .or_insert_with(|| {
                    Arc::new(Slot {
                        server: handle.pool.clone(),
                        pool: Mutex::new(None),
                        gate: Arc::new(tokio::sync::Mutex::new(())),
                        last_used: Mutex::new(Instant::now()),
                    })
                })
                .clone()
        };
        Ok(Route {
            router: self.clone(),
            room: room.clone(),
            handle,
            slot,
        })
    }

    /// Forgets `room`'s cached route: the next request reads its placement.
    pub fn invalidate(&self, room: &RoomId) {
        lock(&self.inner.cache).remove(room);
    }

    /// The counters now (see [`RouterMetrics`]).
    pub fn metrics(&self) -> RouterMetrics {
        let inner = &self.inner;
        let (open_connections, open_pools) = {
            let servers = lock(&inner.servers);
            servers
                .values()
                .filter_map(|s| lock(&s.pool).clone())
                .fold((0u64, 0u64), |(c, p), pool| {
                    (c + u64::from(inner.pools.open_connections(&pool)), p + 1)
                })
        };
        RouterMetrics {
            hits: inner.hits.load(Ordering::Relaxed),
            misses: inner.misses.load(Ordering::Relaxed),
            evictions: inner.evictions.load(Ordering::Relaxed),
            waiters: inner.waiters.load(Ordering::Relaxed),
            open_connections,
            open_pools,
            cutover_refusals: inner.cutover_refusals.load(Ordering::Relaxed),
            reroutes: inner.reroutes.load(Ordering::Relaxed),
        }
    }

    /// Closes pools idle past [`RouterConfig::pool_idle_ttl`], and the least recently used idle
    /// ones past [`RouterConfig::max_pools`]. A pool with a live [`Route`] or a checked-out
    /// connection is never closed. Returns how many closed.
    pub async fn sweep(&self) -> usize {
        let inner = &self.inner;
        let now = Instant::now();
        let mut closing = Vec::new();
        {
            let mut servers = lock(&inner.servers);
            let mut open: Vec<(Instant, String)> = servers
                .values()
                .filter(|s| lock(&s.pool).is_some())
                .map(|s| (*lock(&s.last_used), s.server.clone()))
                .collect();
            open.sort();
            let mut over = open.len().saturating_sub(inner.config.max_pools);
            for (last, server) in open {
                let Some(slot) = servers.get(&server) else {
                    continue;
                };
                let expired = now.duration_since(last) >= inner.config.pool_idle_ttl;
                if !expired && over == 0 {
                    continue;
                }
                // Routes are made under this lock, so none can appear between this check and
                // taking the pool below.
                if Arc::strong_count(slot) > 1 {
                    continue;
                }
                let Ok(gate) = slot.gate.clone().try_lock_owned() else {
                    continue;
                };
                let mut pool = lock(&slot.pool);
                let busy = pool.as_ref().is_some_and(|p| {
                    inner.pools.open_connections(p) > inner.pools.idle_connections(p)
                });
                if busy {
                    continue;
                }
                if let Some(p) = pool.take() {
                    over = over.saturating_sub(1);
                    closing.push((gate, p, server.clone()));
                }
            }
            // Slots with no pool, no route and nobody at the gate are forgotten.
            servers.retain(|_, s| {
                Arc::strong_count(s) > 1 || lock(&s.pool).is_some() || s.gate.try_lock().is_err()
            });
        }
        let n = closing.len();
        for (gate, pool, server) in closing {
            // Still holding the gate: a request for this server waits for the close before it
            // opens a new pool, so the two never hold connections at once.
            inner.pools.close_pool(pool).await;
            inner.evictions.fetch_add(1, Ordering::Relaxed);
            tracing::info!(target: "roomshard::router", server = %server, "closed an idle pool");
            drop(gate);
        }
        n
    }

    /// Whether a cache miss should sweep now: at most once per [`SWEEP_EVERY`], so a router
    /// that reads the placement on every request (SQLite) does not walk its pools each time.
    fn sweep_due(&self) -> bool {
        let mut last = lock(&self.inner.last_sweep);
        if last.elapsed() >= SWEEP_EVERY {
            *last = Instant::now();
            true
        } else {
            false
        }
    }

    fn cached(&self, room: &RoomId) -> Option<RouteHandle> {
        let inner = &self.inner;
        if !inner.pools.guards_moves() {
            return None;
        }
        let mut cache = lock(&inner.cache);
        match cache.get(room) {
            Some(c) if c.at.elapsed() < inner.config.placement_ttl => Some(c.handle.clone()),
            Some(_) => {
                cache.remove(room);
                None
            }
            None => None,
        }
    }

    /// Reads the placement and asks the shard store holding the room for its handle.
    async fn resolve(&self, room: &RoomId) -> Result<RouteHandle> {
        let rs = &self.inner.rs;
        let placement = rs.control.placement(room).await?;
        let (scope, shards) = match placement {
            None => (Scope::Pooled(room.clone()), rs.shards.clone()),
            Some(p) => match p.state {
                PlacementState::Sealed => return Err(Error::Sealed { room: room.clone() }),
                PlacementState::Cutover => {
                    self.inner.cutover_refusals.fetch_add(1, Ordering::Relaxed);
                    return Err(in_cutover(room));
                }
                PlacementState::Pooled | PlacementState::Provisioning | PlacementState::Copying => {
                    (Scope::Pooled(room.clone()), rs.shards.clone())
                }
                PlacementState::Sovereign | PlacementState::Recentralising => {
                    (p.scope(), rs.own_providers(&p)?.shards)
                }
            },
        };
        shards.route(&scope).await
    }

    /// The pool of `slot`, opening it (once, under the server's gate) if it is not open.
    async fn pool(&self, slot: &Slot<P::Pool>) -> Result<P::Pool> {
        *lock(&slot.last_used) = Instant::now();
        if let Some(pool) = lock(&slot.pool).clone() {
            return Ok(pool);
        }
        let _gate = slot.gate.lock().await;
        if let Some(pool) = lock(&slot.pool).clone() {
            return Ok(pool);
        }
        let pool = self
            .inner
            .pools
            .open_pool(&slot.server, self.inner.config.budget_per_server)
            .await?;
        tracing::info!(target: "roomshard::router", server = %slot.server, budget = self.inner.config.budget_per_server, "opened a pool");
        *lock(&slot.pool) = Some(pool.clone());
        Ok(pool)
    }
}

fn in_cutover(room: &RoomId) -> Error {
    Error::unavailable(
        format!("room {room} is in its read-only cutover; retry shortly"),
        true,
        "the room is moving to its own shard",
    )
}

/// Where one room's queries go (see [`Router::route`]). Holding it keeps its server's pool
/// open; drop it when the request is done.
pub struct Route<P: ConnectionPools> {
    router: Router<P>,
    room: RoomId,
    handle: RouteHandle,
    slot: Arc<Slot<P::Pool>>,
}

impl<P: ConnectionPools> std::fmt::Debug for Route<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("room", &self.room)
            .field("handle", &self.handle)
            .finish()
    }
}

impl<P: ConnectionPools> Route<P> {
    /// The room.
    pub fn room(&self) -> &RoomId {
        &self.room
    }

    /// The pool key and namespace as routed. Name tables with the [`Routed`] that
    /// [`begin`](Self::begin) returns instead: it knows when the room moved meanwhile.
    pub fn handle(&self) -> &RouteHandle {
        &self.handle
    }

    /// A connection (a transaction on PostgreSQL) for one request on the room, within its
    /// server's budget, admitted against the room's cutover and moves. A route the database
    /// finds stale is dropped from the cache and the request routed again once, so the caller
    /// only ever sees the room where it lives now — name tables with [`Routed::qualify`] of
    /// what this returns, not with this route's (they differ after such a move).
    ///
    /// # Errors
    /// A retryable [`Error::Unavailable`] while the room is in its cutover or the pool's
    /// connections stay busy; [`Error::Sealed`] if the room was sealed meanwhile.
    pub async fn begin(&self) -> Result<Routed<P::Conn>> {
        match self.admit().await? {
            Admission::Admitted(conn) => Ok(self.routed(conn)),
            Admission::InCutover => Err(self.refuse_cutover()),
            Admission::Moved => {
                let router = &self.router;
                router.inner.reroutes.fetch_add(1, Ordering::Relaxed);
                router.invalidate(&self.room);
                tracing::debug!(target: "roomshard::router", room = %self.room, "stale route refused; routing again");
                let fresh = router.route(&self.room).await?;
                match fresh.admit().await? {
                    Admission::Admitted(conn) => Ok(fresh.routed(conn)),
                    Admission::InCutover => Err(fresh.refuse_cutover()),
                    Admission::Moved => Err(Error::unavailable(
                        format!("room {} moved twice while routing; retry", self.room),
                        true,
                        "stale route",
                    )),
                }
            }
        }
    }

    fn routed(&self, conn: P::Conn) -> Routed<P::Conn> {
        Routed {
            conn,
            room: self.room.clone(),
            handle: self.handle.clone(),
        }
    }

    fn refuse_cutover(&self) -> Error {
        self.router
            .inner
            .cutover_refusals
            .fetch_add(1, Ordering::Relaxed);
        in_cutover(&self.room)
    }

    async fn admit(&self) -> Result<Admission<P::Conn>> {
        let inner = &self.router.inner;
        let pool = self.router.pool(&self.slot).await?;
        inner.waiters.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&inner.waiters);
        inner.pools.acquire(&pool, &self.handle).await
    }
}

/// An admitted request: its connection and the names its statements must use.
#[derive(Debug)]
pub struct Routed<C> {
    /// The connection (on PostgreSQL, a transaction: commit it when done; dropping it rolls
    /// back).
    pub conn: C,
    room: RoomId,
    handle: RouteHandle,
}

impl<C> Routed<C> {
    /// The room.
    pub fn room(&self) -> &RoomId {
        &self.room
    }

    /// Where the request was admitted.
    pub fn handle(&self) -> &RouteHandle {
        &self.handle
    }

    /// Whether statements must filter on the room key column (a pooled room in shared tables).
    pub fn is_shared(&self) -> bool {
        matches!(
            self.handle.namespace,
            roomshard_core::Namespace::Shared { .. }
        )
    }

    /// `table`'s name as SQL for this request (see [`RouteHandle::qualify`]).
    pub fn qualify(&self, table: &Identifier) -> String {
        self.handle.qualify(table)
    }
}

/// Counts a request waiting for a connection; uncounts it however the wait ends (a dropped
/// future included).
struct Waiting<'a>(&'a AtomicU64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
