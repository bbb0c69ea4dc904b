//! [`ConnectionPools`]: the bounded, per-server connection pools a SQL provider gives the host's
//! runtime router (`roomshard::router`), and the guard that keeps routed requests off a room
//! that is mid-move.

use async_trait::async_trait;

use super::shard::RouteHandle;
use crate::error::Result;

/// What [`ConnectionPools::acquire`] found when it admitted a request for a room.
#[derive(Debug)]
pub enum Admission<C> {
    /// The request may run on this connection (or transaction): its reads and writes see the
    /// room's authoritative copy for as long as the provider keeps it.
    Admitted(C),
    /// The room is in its read-only cutover: answer "retry shortly".
    InCutover,
    /// The room no longer lives where the handle points (its pooled rows were retired by a
    /// decentralise): the caller's cached route is stale; route again.
    Moved,
}

/// Bounded connection pools keyed by server, as a SQL provider (PostgreSQL, SQLite) opens them
/// for the host's request traffic.
///
/// The router owns the pools' lifetimes (which exist, when an idle one closes) and the budget;
/// the provider knows how to open one and how to admit a request on it. The pool and connection
/// types are the provider's own backend types, which this crate deliberately cannot name.
///
/// # Behaviour
/// - [`open_pool`](Self::open_pool) opens a pool on the server a [`RouteHandle::pool`] names
///   that never holds more than `budget` connections at once; an unknown server is
///   [`Error::NotFound`](crate::Error::NotFound). Opening is lazy where the backend allows it
///   (no connection until the first request).
/// - [`acquire`](Self::acquire) waits for a connection within the pool's bound, then admits the
///   request: a provider that [`guards_moves`](Self::guards_moves) checks in the database, for
///   the lifetime of what it returns, that the room is not fenced for its cutover
///   ([`Admission::InCutover`]) and that the handle's copy is still the room's
///   ([`Admission::Moved`]).
/// - [`close_pool`](Self::close_pool) waits until every connection of the pool has closed.
#[async_trait]
pub trait ConnectionPools: Send + Sync + 'static {
    /// The provider's pool type (cheap to clone: a handle to shared state).
    type Pool: Clone + Send + Sync + 'static;
    /// What a request runs on: a transaction or a pooled connection.
    type Conn: Send + 'static;

    /// The provider's name, for errors and metrics.
    fn name(&self) -> &str;

    /// Whether [`acquire`](Self::acquire) checks cutover and moves in the database itself. When
    /// it does not, the router re-reads the room's placement on every request instead of
    /// trusting its cache.
    fn guards_moves(&self) -> bool;

    /// Opens a pool on `server` bounded by `budget` connections (see the trait docs).
    async fn open_pool(&self, server: &str, budget: u32) -> Result<Self::Pool>;

    /// A connection of `pool` for a request on `handle`'s room, admitted or refused (see the
    /// trait docs).
    async fn acquire(
        &self,
        pool: &Self::Pool,
        handle: &RouteHandle,
    ) -> Result<Admission<Self::Conn>>;

    /// Closes `pool`, waiting for its connections to close.
    async fn close_pool(&self, pool: Self::Pool);

    /// Connections `pool` holds open now (idle and in use).
    fn open_connections(&self, pool: &Self::Pool) -> u32;

    /// Connections of `pool` idle now.
    fn idle_connections(&self, pool: &Self::Pool) -> u32;
}
