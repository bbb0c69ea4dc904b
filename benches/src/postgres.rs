//! `roomshard-benches postgres`: the PostgreSQL shard store against plain SQL on the same
//! server, in one run on the same data (docs/benchmarks.md, "PostgreSQL").
//!
//! Figures (each `name: value unit (baseline: …, ratio: x)`):
//! - `provision_ms_p50` / `_p99`: `ensure_shard` of a room schema of the Mesh schema (its tables,
//!   roomshard's own, the advisory lock and the catalog checks), against the goal of
//!   50 ms;
//! - `copy_rows`: a same-server bulk copy of one pooled room into its schema (`copy_room`, in
//!   checkpointed batches), against one `INSERT INTO room_x.t SELECT … WHERE room_id = $1` into a
//!   table without a key, the primary key built afterwards — the fastest plain SQL can do;
//! - `dump_rows`: `dump` of the room (COPY TO STDOUT, normalised, chunked) against
//!   `psql -c "COPY (SELECT …) TO STDOUT"` into `/dev/null`;
//! - `route_ns_p99`: a cached `Router::route` (the runtime router) over 10 000 rooms, against the
//!   2 µs goal; `acquire_ms_p50` / `_p99`: 200 tasks taking a routed transaction (the pool wait
//!   and the database's guard) under a budget of 16 connections, against a plain sqlx pool of 16
//!   taking `BEGIN; SELECT 1` at the same concurrency;
//! - `cutover_ms`, `write_pause_ms_p50` / `_p99` / `_max`: a whole decentralise of a room while
//!   a host writes into it at 1 000 writes/s (open loop: a write is scheduled every millisecond
//!   whatever the previous ones do), each write retried while the write fence refuses it and
//!   re-routed to the shard once the pooled rows are retired; a write's pause is the time from
//!   its schedule to its acknowledgement. `cutover_ms` is the read-only window the flow recorded,
//!   against the 1 s goal.

use roomshard_core::{
    Bytes, DumpSink, Location, LogicalType, NoCheckpoints, NoProgress, ProviderUrl, Result, RoomId,
    RoomSchema, Scope, ShardStore, Table, TableDescriptor, async_trait,
};
use roomshard_interop_tests::pg::Cluster;
use roomshard_postgres::PgShardStore;
use std::time::Instant;

/// `postgres` arguments.
#[derive(clap::Args)]
pub struct PostgresArgs {
    /// Small sizes (200k rows, 50 schemas), under a minute; the default.
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Full sizes (1M rows, 200 schemas).
    #[arg(long)]
    full: bool,
    /// Only the read-only cutover figures (`cutover_ms`, write latency and pauses), at the
    /// chosen size: what to re-run while tuning the cutover.
    #[arg(long)]
    cutover_only: bool,
    /// Only the same-server copy figure (`copy_rows`), at the chosen size.
    #[arg(long, conflicts_with = "cutover_only")]
    copy_only: bool,
    /// Runs of the copy figure, ours and the baseline's in turn (median of each).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn messages() -> RoomSchema {
    let t = Table::new("messages")
        .column("room_id", LogicalType::Text)
        .room_key()
        .column("id", LogicalType::Int8)
        .primary_key()
        .id()
        .column("author", LogicalType::Text)
        .not_null()
        .column("body", LogicalType::Text)
        .column("created_at", LogicalType::Timestamptz)
        .not_null()
        .build()
        .map_err(|e| e.to_string())
        .unwrap_or_else(|e| panic!("bench schema: {e}"));
    RoomSchema::new("bench-1", vec![t]).unwrap_or_else(|e| panic!("bench schema: {e}"))
}

/// The median of `v` (sorted in place); 0 when empty.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(v, 0.5)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Discard(u64);

#[async_trait]
impl DumpSink for Discard {
    async fn begin_table(&mut self, _table: &TableDescriptor) -> Result<()> {
        Ok(())
    }
    async fn rows(&mut self, chunk: Bytes) -> Result<()> {
        self.0 += chunk.len() as u64;
        Ok(())
    }
    async fn end_table(&mut self, _rows: u64) -> Result<()> {
        Ok(())
    }
}

/// Runs the benchmark and prints its figures.
pub fn bench_postgres(args: &PostgresArgs) -> std::result::Result<(), String> {
    let (rows, schemas) = if args.full {
        (1_000_000u64, 200usize)
    } else {
        (200_000, 50)
    };
    let _ = args.quick;
    let cluster = Cluster::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    if args.cutover_only {
        return rt.block_on(cutover_under_writes(&cluster, rows / 2));
    }
    let schemas = if args.copy_only { 0 } else { schemas };
    rt.block_on(run(
        &cluster,
        rows,
        schemas,
        args.runs.max(1),
        args.copy_only,
    ))
}

async fn run(
    cluster: &Cluster,
    rows: u64,
    schemas: usize,
    runs: usize,
    copy_only: bool,
) -> std::result::Result<(), String> {
    let err = |e: roomshard_core::Error| e.to_string();
    let url = ProviderUrl::parse(&cluster.url("postgres"), "--shards").map_err(err)?;
    let pool = roomshard_postgres::connect(&url, 8).await.map_err(err)?;
    let store = PgShardStore::new(pool, &url).map_err(err)?;
    let schema = messages();
    store.ensure_pooled_tables(&schema).await.map_err(err)?;

    // Provisioning: the Mesh schema, one room schema after another.
    let mesh = roomshard_example_mesh::schema();
    let mut times = Vec::with_capacity(schemas);
    for n in 0..schemas {
        let room = RoomId::new(format!("prov-{n}")).map_err(err)?;
        let at = Location {
            shard: Some(store.locate_shard(&room, None).map_err(err)?),
            ..Location::default()
        };
        let started = Instant::now();
        store.ensure_shard(&room, &at, &mesh).await.map_err(err)?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    for (name, p) in [("p50", 0.5), ("p99", 0.99)]
        .into_iter()
        .filter(|_| !copy_only)
    {
        let v = percentile(&times, p);
        println!(
            "provision_ms_{name}: {v:.2} ms (baseline: goal 50 ms, ratio: {:.3}) [{schemas} schemas of {} tables]",
            v / 50.0,
            mesh.tables().len()
        );
    }

    // The pooled room, and another room's rows around it (the filter must work).
    let seed = |room: &str, from: u64| {
        format!(
            "INSERT INTO public.messages (room_id, id, author, body, created_at) \
             SELECT '{room}', g, 'user-' || (g % 97), repeat('m', 40 + (g % 80)), \
             timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second' \
             FROM generate_series({from}, {}) AS g",
            from + rows - 1
        )
    };
    cluster.query("postgres", &seed("other", 1));
    cluster.query("postgres", &seed("bench", rows + 1));
    cluster.query("postgres", "VACUUM ANALYZE public.messages");

    // The copy, `args.runs` times, each of ours and the baseline's in turn into a fresh
    // schema (median of each): one INSERT … SELECT into a keyless table, the key built after,
    // against `copy_room`'s checkpointed batches.
    let room = RoomId::new("bench").map_err(err)?;
    let at = Location {
        shard: Some(store.locate_shard(&room, None).map_err(err)?),
        ..Location::default()
    };
    let dedicated = Scope::Dedicated(room.clone(), at.clone());
    let (mut base_runs, mut our_runs) = (Vec::new(), Vec::new());
    for run in 0..runs {
        cluster.query(
            "postgres",
            "DROP SCHEMA IF EXISTS room_base CASCADE; CREATE SCHEMA room_base",
        );
        let started = Instant::now();
        cluster.query(
            "postgres",
            "CREATE TABLE room_base.messages (room_id text NOT NULL, id bigint NOT NULL, \
             author text NOT NULL, body text, created_at timestamptz NOT NULL); \
             INSERT INTO room_base.messages SELECT room_id, id, author, body, created_at \
             FROM public.messages WHERE room_id = 'bench'; \
             ALTER TABLE room_base.messages ADD PRIMARY KEY (id)",
        );
        base_runs.push(started.elapsed().as_secs_f64());

        if run > 0 {
            cluster.query("postgres", "DROP SCHEMA room_bench CASCADE");
        }
        store.ensure_shard(&room, &at, &schema).await.map_err(err)?;
        let started = Instant::now();
        let out = store
            .copy_room(roomshard_core::CopyRequest {
                schema: &schema,
                source: roomshard_core::CopySource {
                    scope: Scope::Pooled(room.clone()),
                    server: None,
                },
                target: dedicated.clone(),
                pass: roomshard_core::CopyPass::Bulk,
                resume_from: None,
                checkpoints: &NoCheckpoints,
                progress: &NoProgress,
            })
            .await
            .map_err(err)?;
        our_runs.push(started.elapsed().as_secs_f64());
        if out.tables[0].rows != rows {
            return Err(format!(
                "copied {} rows, expected {rows}",
                out.tables[0].rows
            ));
        }
    }
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.3}"))
            .collect::<Vec<_>>()
            .join("/")
    };
    let runs_text = format!("ours {} s, baseline {} s", fmt(&our_runs), fmt(&base_runs));
    let (ours_s, base_s) = (median(&mut our_runs), median(&mut base_runs));
    let (ours_tp, base_tp) = (rows as f64 / ours_s, rows as f64 / base_s);
    println!(
        "copy_rows: {ours_tp:.0} rows/s (baseline: INSERT … SELECT + primary key after, {base_tp:.0} rows/s, ratio: {:.3}) [{rows} rows, {} batches, median of {runs}: {runs_text}]",
        ours_tp / base_tp,
        rows.div_ceil(roomshard_postgres::DEFAULT_BATCH_ROWS as u64)
    );

    if copy_only {
        return Ok(());
    }

    // Dump vs psql's COPY to /dev/null.
    let started = Instant::now();
    let mut sink = Discard(0);
    store
        .dump(&dedicated, &schema, &mut sink)
        .await
        .map_err(err)?;
    let ours_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let status = cluster
        .psql_cmd("postgres")
        .arg("-c")
        .arg(
            "COPY (SELECT room_id, id, author, body, created_at FROM room_bench.messages \
             ORDER BY id) TO STDOUT",
        )
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("psql COPY failed".into());
    }
    let base_s = started.elapsed().as_secs_f64();
    println!(
        "dump_rows: {:.0} rows/s (baseline: psql COPY TO STDOUT > /dev/null, {:.0} rows/s, ratio: {:.3}) [{:.1} MB]",
        rows as f64 / ours_s,
        rows as f64 / base_s,
        base_s / ours_s,
        sink.0 as f64 / 1e6
    );

    router_figures(cluster).await?;
    cutover_under_writes(cluster, rows / 2).await
}

/// One acknowledged host write: milliseconds from its schedule to its acknowledgement, and
/// whether the write fence refused it at least once.
type Write = (f64, bool);

/// The host's open-loop writer: one write into room `busy` scheduled every millisecond (each its
/// own task) until `stop`, ids from `first`; a write the fence refuses is retried with backoff
/// (10 ms doubling to 100 ms, as a polite client does), and one refused as moved is re-routed to
/// the room's schema.
fn open_loop_writer(
    host: sqlx::PgPool,
    first: i64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Vec<tokio::task::JoinHandle<std::result::Result<Write, String>>>> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    tokio::spawn(async move {
        let moved = Arc::new(AtomicBool::new(false));
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = Vec::new();
        let mut id = first;
        while !stop.load(Ordering::SeqCst) {
            tick.tick().await;
            let scheduled = Instant::now();
            let (host, moved) = (host.clone(), moved.clone());
            id += 1;
            let this = id;
            tasks.push(tokio::spawn(async move {
                let mut backoff = std::time::Duration::from_millis(10);
                let mut refused = false;
                loop {
                    let table = if moved.load(Ordering::SeqCst) {
                        "room_busy.messages"
                    } else {
                        "public.messages"
                    };
                    let sql = format!(
                        "INSERT INTO {table} (room_id, id, author, body, created_at) \
                         VALUES ('busy', $1, 'writer', 'during the move', now())"
                    );
                    match sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(this)
                        .execute(&host)
                        .await
                    {
                        Ok(_) => return Ok((scheduled.elapsed().as_secs_f64() * 1000.0, refused)),
                        Err(e) if roomshard_postgres::is_moved_refusal(&e) => {
                            moved.store(true, Ordering::SeqCst);
                        }
                        Err(e) if roomshard_postgres::is_cutover_refusal(&e) => {
                            refused = true;
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(std::time::Duration::from_millis(100));
                        }
                        Err(e) => return Err(format!("write {this}: {e}")),
                    }
                }
            }));
        }
        tasks
    })
}

/// Stops a writer and collects its writes.
async fn finish_writer(
    stop: &std::sync::atomic::AtomicBool,
    writer: tokio::task::JoinHandle<
        Vec<tokio::task::JoinHandle<std::result::Result<Write, String>>>,
    >,
) -> std::result::Result<Vec<Write>, String> {
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut out = Vec::new();
    for t in writer.await.map_err(|e| e.to_string())? {
        out.push(t.await.map_err(|e| e.to_string())??);
    }
    Ok(out)
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// A decentralise of a `rows`-row room with 1 000 host writes/s arriving (see the module docs).
async fn cutover_under_writes(cluster: &Cluster, rows: u64) -> std::result::Result<(), String> {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let err = |e: roomshard_core::Error| e.to_string();
    let (_dir, home, url) = pg_home(cluster, "cutover").await?;
    cluster.query(
        "cutover",
        &format!(
            "INSERT INTO public.messages (room_id, id, author, body, created_at) \
             SELECT 'busy', g, 'user-' || (g % 97), repeat('m', 40 + (g % 80)), \
             timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second' \
             FROM generate_series(1, {rows}) AS g"
        ),
    );
    cluster.query("cutover", "VACUUM ANALYZE public.messages");
    let host = sqlx_pool(&url).await?;
    let room = RoomId::new("busy").map_err(err)?;

    // Baseline: the same writer for 3 s with nothing else going on (the trigger installed, as
    // during the move).
    if let roomshard::home::HomeShards::Postgres(store) = &home.shards {
        store.install_change_log(&messages()).await.map_err(err)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = open_loop_writer(host.clone(), 20_000_000, stop.clone());
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let alone = sorted(
        finish_writer(&stop, writer)
            .await?
            .into_iter()
            .map(|w| w.0)
            .collect(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writer = open_loop_writer(host.clone(), 10_000_000, stop.clone());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let started = Instant::now();
    let outcome = roomshard::flows::decentralise(&home.roomshard, &room, &NoProgress)
        .await
        .map_err(err)?;
    let flow_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let writes = finish_writer(&stop, writer).await?;
    let acked = writes.len() as u64;
    let in_shard: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM room_busy.messages WHERE id > 10000000 AND id < 20000000",
    )
    .fetch_one(&host)
    .await
    .map_err(|e| e.to_string())?;
    if u64::try_from(in_shard).unwrap_or(0) != acked {
        return Err(format!(
            "{acked} writes acknowledged, {in_shard} in the shard"
        ));
    }
    let flip = home
        .roomshard
        .control
        .audit_log(Some(&room))
        .await
        .map_err(err)?
        .into_iter()
        .rev()
        .find(|r| r.entry.action == "decentralise.sovereign")
        .map(|r| r.entry.detail)
        .ok_or("no decentralise.sovereign in the audit log")?;
    let cutover_ms = flip["cutover_ms"]
        .as_u64()
        .ok_or("no cutover_ms in the audit log")?;
    let total: u64 = outcome.parity.tables.iter().map(|t| t.rows).sum();
    println!(
        "cutover_ms: {cutover_ms} ms (baseline: goal 1000 ms, ratio: {:.3}) [{rows} rows + {} written before the flip, a {flow_s:.1} s decentralise, 1000 writes/s arriving; steps {}; chunks re-checked {} of {} in {}]",
        cutover_ms as f64 / 1000.0,
        total - rows,
        flip["steps"],
        flip["chunks"]["chunks_checked"],
        flip["chunks"]["chunks_total"],
        flip["chunks"]["timings"],
    );
    let all = sorted(writes.iter().map(|w| w.0).collect());
    let paused = sorted(writes.iter().filter(|w| w.1).map(|w| w.0).collect());
    for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (v, b) = (percentile(&all, p), percentile(&alone, p));
        println!(
            "write_latency_ms_{name}: {v:.2} ms (baseline: the same writer alone, {b:.2} ms, ratio: {:.2}) [{acked} writes during the decentralise, none lost; {} alone]",
            v / b.max(1e-9),
            alone.len()
        );
    }
    for (name, p) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
        let v = percentile(&paused, p);
        println!(
            "write_pause_ms_{name}: {v:.1} ms (baseline: goal 1000 ms, ratio: {:.3}) [the {} writes the fence held off, schedule to acknowledgement]",
            v / 1000.0,
            paused.len()
        );
    }
    Ok(())
}

/// A home whose control plane and shards are the new database `db` of `cluster`, for the
/// bench schema; the directory lives as long as the returned guard.
async fn pg_home(
    cluster: &Cluster,
    db: &str,
) -> std::result::Result<(tempfile::TempDir, roomshard::home::Home, ProviderUrl), String> {
    let err = |e: roomshard_core::Error| e.to_string();
    cluster.createdb(db);
    let url = ProviderUrl::parse(&cluster.url(db), "--control").map_err(err)?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut options = roomshard::home::HomeOptions::default();
    options.providers.control = Some(url.clone());
    options.providers.shards = Some(ProviderUrl::parse(url.expose(), "--shards").map_err(err)?);
    let home = roomshard::home::Home::open(dir.path(), messages(), options)
        .await
        .map_err(err)?;
    Ok((dir, home, url))
}

/// The runtime router over 10 000 pooled rooms (see the module docs).
async fn router_figures(cluster: &Cluster) -> std::result::Result<(), String> {
    use roomshard::router::{Router, RouterConfig};
    use roomshard_postgres::PgPools;
    const ROOMS: u64 = 10_000;
    const TASKS: usize = 200;
    const PER_TASK: usize = 50;
    const BUDGET: u32 = 16;
    let err = |e: roomshard_core::Error| e.to_string();
    let (_dir, home, _) = pg_home(cluster, "router").await?;
    let roomshard::home::HomeShards::Postgres(store) = &home.shards else {
        return Err("the router bench needs PostgreSQL shards".into());
    };
    let router = Router::new(
        home.roomshard.clone(),
        PgPools::new(store.clone()),
        RouterConfig {
            budget_per_server: BUDGET,
            // Longer than the warm-up, so every measured lookup is a cache hit.
            placement_ttl: std::time::Duration::from_secs(600),
            ..RouterConfig::default()
        },
    );
    let rooms: Vec<RoomId> = (0..ROOMS)
        .map(|n| RoomId::new(format!("r{n}")))
        .collect::<Result<_>>()
        .map_err(err)?;
    for room in &rooms {
        std::hint::black_box(router.route(room).await.map_err(err)?);
    }
    let mut ns = Vec::with_capacity(rooms.len());
    // A stride through the rooms, so consecutive lookups hit different cache entries.
    for k in 0..ROOMS {
        let room = &rooms[((k * 7919) % ROOMS) as usize];
        let started = Instant::now();
        let route = router.route(room).await.map_err(err)?;
        ns.push(started.elapsed().as_nanos() as f64);
        std::hint::black_box(route);
    }
    let ns = sorted(ns);
    let p99 = percentile(&ns, 0.99);
    let m = router.metrics();
    println!(
        "route_ns_p99: {p99:.0} ns (baseline: goal 2000 ns, ratio: {:.3}) [{ROOMS} rooms cached, p50 {:.0} ns, {} hits]",
        p99 / 2000.0,
        percentile(&ns, 0.5),
        m.hits
    );

    // Acquire under the budget: the router's routed transactions vs a plain pool of the budget.
    let plain = sqlx::postgres::PgPoolOptions::new()
        .max_connections(BUDGET)
        .connect_lazy_with((*store.pool().connect_options()).clone());
    let rooms = std::sync::Arc::new(rooms);
    let mut ours = Vec::new();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (router, rooms) = (router.clone(), rooms.clone());
        tasks.push(tokio::spawn(async move {
            let mut waits = Vec::with_capacity(PER_TASK);
            for i in 0..PER_TASK {
                let room = &rooms[(t * PER_TASK + i) % rooms.len()];
                let started = Instant::now();
                let mut tx = router
                    .route(room)
                    .await
                    .map_err(|e| e.to_string())?
                    .begin()
                    .await
                    .map_err(|e| e.to_string())?;
                waits.push(started.elapsed().as_secs_f64() * 1000.0);
                sqlx::query("SELECT 1")
                    .execute(&mut *tx.conn)
                    .await
                    .map_err(|e| e.to_string())?;
                tx.conn.commit().await.map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(waits)
        }));
    }
    for t in tasks {
        ours.extend(t.await.map_err(|e| e.to_string())??);
    }
    let mut base = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let plain = plain.clone();
        tasks.push(tokio::spawn(async move {
            let mut waits = Vec::with_capacity(PER_TASK);
            for _ in 0..PER_TASK {
                let started = Instant::now();
                let mut tx = plain.begin().await.map_err(|e| e.to_string())?;
                sqlx::query("SELECT 1")
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
                waits.push(started.elapsed().as_secs_f64() * 1000.0);
                sqlx::query("SELECT 1")
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
                tx.commit().await.map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(waits)
        }));
    }
    for t in tasks {
        base.extend(t.await.map_err(|e| e.to_string())??);
    }
    let (ours, base) = (sorted(ours), sorted(base));
    let m = router.metrics();
    for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (v, b) = (percentile(&ours, p), percentile(&base, p));
        println!(
            "acquire_ms_{name}: {v:.2} ms (baseline: a plain sqlx pool of {BUDGET}, BEGIN + SELECT 1, {b:.2} ms, ratio: {:.2}) [{TASKS} tasks x {PER_TASK} requests, budget {BUDGET}; {} connections open after]",
            v / b.max(1e-9),
            m.open_connections
        );
    }
    if m.open_connections > u64::from(BUDGET) {
        return Err(format!(
            "{} connections > budget {BUDGET}",
            m.open_connections
        ));
    }
    Ok(())
}

/// A plain pool of the host's own (no roomshard session settings), for its writes.
async fn sqlx_pool(url: &ProviderUrl) -> std::result::Result<sqlx::PgPool, String> {
    roomshard_postgres::connect(url, 12)
        .await
        .map_err(|e| e.to_string())
}
