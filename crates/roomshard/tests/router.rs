//! The runtime router (`roomshard::router`) on the test backend: routes that follow a room
//! through a decentralise, sealed and cutover answers, the pool LRU and idle TTL, and (on
//! PostgreSQL) the per-server connection budget under fan-out, counted in `pg_stat_activity`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use roomshard::flows;
use roomshard::home::{Home, HomeShards};
use roomshard::router::{Route, Routed, Router, RouterConfig};
use roomshard_core::{Error, Identifier, NoProgress, RoomId};
use roomshard_example_mesh::{Media, Workload, schema};
use roomshard_postgres::PgPools;
use roomshard_sqlite::SqlitePools;

fn workload(room: &str, messages: u64) -> Workload {
    Workload {
        seed: 3,
        room_id: room.to_string(),
        messages,
        media: Media::Sizes(vec![10, 2_000]),
    }
}

async fn seeded(home: &Home, room: &str, messages: u64) -> RoomId {
    let id = RoomId::new(room).unwrap();
    common::seed_workload(&home.roomshard, &id, &workload(room, messages)).await;
    id
}

fn messages() -> Identifier {
    Identifier::new("messages").unwrap()
}

/// The home's router, by engine, with the queries the tests run through it.
enum AnyRouter {
    Pg(Router<PgPools>),
    Lite(Router<SqlitePools>),
}

impl AnyRouter {
    fn new(home: &Home, config: RouterConfig) -> Self {
        let rs = home.roomshard.clone();
        match &home.shards {
            HomeShards::Postgres(s) => {
                AnyRouter::Pg(Router::new(rs, PgPools::new(s.clone()), config))
            }
            HomeShards::Sqlite(s) => {
                AnyRouter::Lite(Router::new(rs, SqlitePools::new(s.clone()), config))
            }
        }
    }

    /// The room's message count, read through the router.
    async fn count(&self, room: &RoomId) -> Result<i64, Error> {
        match self {
            AnyRouter::Pg(r) => pg_count(&r.route(room).await?).await,
            AnyRouter::Lite(r) => lite_count(&r.route(room).await?).await,
        }
    }

    fn metrics(&self) -> roomshard::router::RouterMetrics {
        match self {
            AnyRouter::Pg(r) => r.metrics(),
            AnyRouter::Lite(r) => r.metrics(),
        }
    }

    async fn sweep(&self) -> usize {
        match self {
            AnyRouter::Pg(r) => r.sweep().await,
            AnyRouter::Lite(r) => r.sweep().await,
        }
    }

    fn invalidate(&self, room: &RoomId) {
        match self {
            AnyRouter::Pg(r) => r.invalidate(room),
            AnyRouter::Lite(r) => r.invalidate(room),
        }
    }
}

fn count_sql<C>(routed: &Routed<C>, param: &str) -> String {
    let table = routed.qualify(&messages());
    if routed.is_shared() {
        format!("SELECT count(*) FROM {table} WHERE room_id = {param}")
    } else {
        format!("SELECT count(*) FROM {table}")
    }
}

async fn pg_count(route: &Route<PgPools>) -> Result<i64, Error> {
    let mut tx = route.begin().await?;
    let mut q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(count_sql(&tx, "$1")));
    if tx.is_shared() {
        q = q.bind(route.room().to_string());
    }
    let n = q.fetch_one(&mut *tx.conn).await.unwrap();
    tx.conn.commit().await.unwrap();
    Ok(n)
}

async fn lite_count(route: &Route<SqlitePools>) -> Result<i64, Error> {
    let mut c = route.begin().await?;
    let mut q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(count_sql(&c, "?1")));
    if c.is_shared() {
        q = q.bind(route.room().to_string());
    }
    Ok(q.fetch_one(&mut *c.conn).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_follows_its_room_through_a_decentralise() {
    let dir = tempfile::tempdir().unwrap();
    let home = common::open_home(dir.path(), schema()).await;
    let room = seeded(&home, "follows", 30).await;
    // A TTL longer than the test, so the stale cached route is really what the flip meets.
    let config = RouterConfig {
        placement_ttl: Duration::from_secs(600),
        ..RouterConfig::default()
    };
    let router = AnyRouter::new(&home, config);

    assert_eq!(
        router.count(&room).await.unwrap(),
        30,
        "pooled, through the router"
    );
    assert_eq!(router.count(&room).await.unwrap(), 30);
    flows::decentralise(&home.roomshard, &room, &NoProgress)
        .await
        .unwrap();
    // The cached route still says pooled: on PostgreSQL the database refuses it (the pooled
    // rows are retired) and the router routes again by itself; on SQLite the placement is read
    // on every request.
    assert_eq!(
        router.count(&room).await.unwrap(),
        30,
        "sovereign, through the router"
    );
    let m = router.metrics();
    match &home.shards {
        HomeShards::Postgres(_) => {
            assert_eq!(m.reroutes, 1, "{m:?}");
            assert_eq!((m.hits, m.misses), (2, 2), "{m:?}");
            assert_eq!(
                m.open_pools, 1,
                "one server, one pool for both scopes: {m:?}"
            );
        }
        HomeShards::Sqlite(_) => {
            assert_eq!((m.hits, m.misses, m.reroutes), (0, 3, 0), "{m:?}");
            assert_eq!(m.open_pools, 2, "the global file and the shard file: {m:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_room_answers_sealed_and_a_cutover_answers_retry() {
    let dir = tempfile::tempdir().unwrap();
    let home = common::open_home(dir.path(), schema()).await;
    let rs = &home.roomshard;
    let room = seeded(&home, "sealme", 5).await;
    let router = AnyRouter::new(&home, RouterConfig::default());

    flows::decentralise(rs, &room, &NoProgress).await.unwrap();
    assert_eq!(router.count(&room).await.unwrap(), 5);
    flows::revoke(rs, &room).await.unwrap();
    router.invalidate(&room);
    match router.count(&room).await {
        Err(Error::Sealed { room: r }) => assert_eq!(r, room),
        other => panic!("a sealed room gave {other:?}"),
    }
    flows::regrant(rs, &room).await.unwrap();
    router.invalidate(&room);
    assert_eq!(
        router.count(&room).await.unwrap(),
        5,
        "readable again once regranted"
    );

    // A room in its cutover (as a crash would leave it recorded): retry, never data.
    let other = seeded(&home, "cutover", 5).await;
    let mut p = roomshard::Placement::pooled(other.clone());
    for next in [
        roomshard::PlacementState::Provisioning,
        roomshard::PlacementState::Copying,
        roomshard::PlacementState::Cutover,
    ] {
        p.transition(next).unwrap();
    }
    common::insert_placement(rs, &p).await;
    match router.count(&other).await {
        Err(e @ Error::Unavailable { .. }) => {
            assert!(e.is_retryable(), "{e}");
            assert!(e.to_string().contains("cutover"), "{e}");
        }
        other => panic!("a room in cutover gave {other:?}"),
    }
    assert_eq!(router.metrics().cutover_refusals, 1);
}

/// On PostgreSQL the fence itself refuses a cached pooled route while the cutover holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_room_refuses_a_cached_route_on_postgres() {
    if common::backend() != common::Backend::Postgres {
        eprintln!("needs the database's write fence: runs with ROOMSHARD_TEST_BACKEND=postgres");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home = common::open_home(dir.path(), schema()).await;
    let rs = &home.roomshard;
    let room = seeded(&home, "fenced", 5).await;
    let router = AnyRouter::new(&home, RouterConfig::default());
    assert_eq!(router.count(&room).await.unwrap(), 5);
    let fence = rs
        .shards
        .fence_writes(&room, &rs.schema, Duration::from_secs(2))
        .await
        .unwrap();
    match router.count(&room).await {
        Err(e) => assert!(e.is_retryable() && e.to_string().contains("cutover"), "{e}"),
        Ok(n) => panic!("read {n} rows of a fenced room"),
    }
    fence.lift().await.unwrap();
    assert_eq!(
        router.count(&room).await.unwrap(),
        5,
        "reads reopen with the fence lifted"
    );
    assert_eq!(router.metrics().hits, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_in_use_is_never_closed_and_an_idle_one_is() {
    let dir = tempfile::tempdir().unwrap();
    let home = common::open_home(dir.path(), schema()).await;
    let room = seeded(&home, "idle", 4).await;
    let config = RouterConfig {
        pool_idle_ttl: Duration::ZERO,
        ..RouterConfig::default()
    };
    let router = AnyRouter::new(&home, config);
    assert_eq!(router.count(&room).await.unwrap(), 4);
    // Hold a route and a connection, then sweep with a zero TTL: nothing closes.
    match &router {
        AnyRouter::Pg(r) => {
            let route = r.route(&room).await.unwrap();
            let tx = route.begin().await.unwrap();
            assert_eq!(r.sweep().await, 0, "closed a pool with a live route");
            drop(route);
            assert_eq!(r.sweep().await, 0, "closed a pool with a connection out");
            tx.conn.commit().await.unwrap();
        }
        AnyRouter::Lite(r) => {
            let route = r.route(&room).await.unwrap();
            let conn = route.begin().await.unwrap();
            assert_eq!(r.sweep().await, 0, "closed a pool with a live route");
            drop(route);
            assert_eq!(r.sweep().await, 0, "closed a pool with a connection out");
            drop(conn);
        }
    }
    assert_eq!(router.metrics().open_pools, 1);
    // A dropped connection goes back to its pool in the background: give it a moment.
    let mut closed = 0;
    for _ in 0..100 {
        closed = router.sweep().await;
        if closed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(closed, 1, "the idle pool closes");
    let m = router.metrics();
    assert_eq!((m.open_pools, m.open_connections), (0, 0), "{m:?}");
    assert!(m.evictions >= 1, "{m:?}");
    // And the next request opens it again.
    assert_eq!(router.count(&room).await.unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_pools_the_least_recently_used_idle_pool_closes() {
    let dir = tempfile::tempdir().unwrap();
    let home = common::open_home(dir.path(), schema()).await;
    let mut rooms = Vec::new();
    for name in ["lru-a", "lru-b", "lru-c"] {
        let room = seeded(&home, name, 3).await;
        flows::decentralise(&home.roomshard, &room, &NoProgress)
            .await
            .unwrap();
        rooms.push(room);
    }
    let config = RouterConfig {
        max_pools: 1,
        ..RouterConfig::default()
    };
    let router = AnyRouter::new(&home, config);
    for room in &rooms {
        assert_eq!(router.count(room).await.unwrap(), 3);
    }
    router.sweep().await;
    let m = router.metrics();
    assert!(m.open_pools <= 1, "{m:?}");
    match &home.shards {
        // A file per shard: three pools, two of them closed by the LRU.
        HomeShards::Sqlite(_) => assert!(m.evictions >= 2, "{m:?}"),
        // One server: one pool for every room, nothing to evict.
        HomeShards::Postgres(_) => assert_eq!((m.open_pools, m.evictions), (1, 0), "{m:?}"),
    }
}

/// Rooms in the fan-out test: small in CI, `ROOMSHARD_ROUTER_ROOMS=10000` for the full size.
fn fan_out_rooms() -> i64 {
    std::env::var("ROOMSHARD_ROUTER_ROOMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

/// 200 tasks over many rooms (pooled, plus a few sovereign) on one server: the router's
/// connections, counted by the server itself, never exceed the budget, and the budget is
/// actually reached (so the count could have caught a pool per room).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_server_budget_holds_under_fan_out() {
    if common::backend() != common::Backend::Postgres {
        eprintln!(
            "counts connections in pg_stat_activity: runs with ROOMSHARD_TEST_BACKEND=postgres"
        );
        return;
    }
    const BUDGET: u32 = 6;
    const TASKS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let home = common::open_home(dir.path(), schema()).await;
    let HomeShards::Postgres(store) = &home.shards else {
        unreachable!()
    };
    let n = fan_out_rooms();
    sqlx::query(
        "INSERT INTO public.messages (id, room_id, author_id, body, reply_to, sent_at, edited) \
         SELECT 10000000 + g, 'fan' || g, 1, 'hello', NULL, now(), false \
         FROM generate_series(1, $1) g",
    )
    .bind(n)
    .execute(store.pool())
    .await
    .unwrap();
    let mut sovereign = Vec::new();
    for name in ["fan-s1", "fan-s2", "fan-s3"] {
        let room = seeded(&home, name, 7).await;
        flows::decentralise(&home.roomshard, &room, &NoProgress)
            .await
            .unwrap();
        sovereign.push(room);
    }
    let router = Router::new(
        home.roomshard.clone(),
        PgPools::new(store.clone()),
        RouterConfig {
            budget_per_server: BUDGET,
            ..RouterConfig::default()
        },
    );

    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak, pool) = (stop.clone(), peak.clone(), store.pool().clone());
        tokio::spawn(async move {
            let mut samples = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let open: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE application_name = $1 AND datname = current_database()",
                )
                .bind(roomshard_postgres::ROUTER_APPLICATION_NAME)
                .fetch_one(&pool)
                .await
                .unwrap();
                peak.fetch_max(u64::try_from(open).unwrap(), Ordering::SeqCst);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            samples
        })
    };
    let max_waiters = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let router = router.clone();
            let sovereign = sovereign.clone();
            let max_waiters = max_waiters.clone();
            tokio::spawn(async move {
                let per_task = (n as usize / TASKS).max(1) * 2;
                for i in 0..per_task {
                    let k = (t * per_task + i) % (n as usize) + 1;
                    let (room, want) = if i % 10 == 0 {
                        (sovereign[k % sovereign.len()].clone(), 7)
                    } else {
                        (RoomId::new(format!("fan{k}")).unwrap(), 1)
                    };
                    let route = router.route(&room).await.unwrap();
                    let got = pg_count(&route).await.unwrap();
                    assert_eq!(got, want, "room {room}");
                    max_waiters.fetch_max(router.metrics().waiters, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let samples = sampler.await.unwrap();
    let peak = peak.load(Ordering::SeqCst);
    let m = router.metrics();
    eprintln!(
        "fan-out: {n} rooms, {TASKS} tasks, budget {BUDGET}: peak {peak} connections over \
         {samples} samples, max waiters {}, {m:?}",
        max_waiters.load(Ordering::SeqCst)
    );
    assert!(
        peak <= u64::from(BUDGET),
        "peak {peak} connections > budget {BUDGET}"
    );
    assert_eq!(
        peak,
        u64::from(BUDGET),
        "the fan-out never reached the budget: {m:?}"
    );
    assert!(
        max_waiters.load(Ordering::SeqCst) > u64::from(BUDGET),
        "no queueing seen: {m:?}"
    );
    assert_eq!(m.open_pools, 1, "pools are per server, not per room: {m:?}");
    assert!(m.open_connections <= u64::from(BUDGET), "{m:?}");
    assert!(
        m.misses >= u64::try_from(n).unwrap().min(TASKS as u64),
        "{m:?}"
    );
}
