//! The change log and the write fence against a real PostgreSQL 15: host writes (on a session
//! with another DateStyle and time zone than roomshard's) are logged by key and applied by a
//! changes pass exactly; a fence waits for writes in flight, refuses new ones with `RSC01`,
//! leaves other rooms and roomshard's own work alone, and dies with its holder.

#![allow(clippy::unwrap_used)]

use roomshard_core::{
    Bytes, CopyPass, CopyRequest, CopySource, DumpSource, Error, IdRemap, Location, LogicalType,
    NoCheckpoints, NoProgress, ProviderUrl, Result, RoomId, RoomSchema, Scope, ShardStore, Table,
    async_trait,
};
use roomshard_interop_tests::pg::Cluster;
use roomshard_postgres::{PgShardStore, is_cutover_refusal};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use std::str::FromStr;
use std::time::Duration;

/// A single-column integer key, a two-column key, and a key with a timestamp in it (whose text
/// form depends on the writer's DateStyle and time zone).
fn schema() -> RoomSchema {
    let messages = Table::new("messages")
        .column("room_id", LogicalType::Text)
        .room_key()
        .column("id", LogicalType::Int8)
        .primary_key()
        .id()
        .column("body", LogicalType::Text)
        .build()
        .unwrap();
    let reactions = Table::new("reactions")
        .column("room_id", LogicalType::Text)
        .room_key()
        .column("message_id", LogicalType::Int8)
        .primary_key()
        .column("who", LogicalType::Text)
        .primary_key()
        .column("emoji", LogicalType::Text)
        .build()
        .unwrap();
    let ticks = Table::new("ticks")
        .column("room_id", LogicalType::Text)
        .room_key()
        .column("at", LogicalType::Timestamptz)
        .primary_key()
        .column("n", LogicalType::Int4)
        .primary_key()
        .column("note", LogicalType::Text)
        .build()
        .unwrap();
    RoomSchema::new("track-1", vec![messages, reactions, ticks]).unwrap()
}

struct Rows(Vec<(String, Vec<u8>)>, Option<Vec<u8>>);

#[async_trait]
impl DumpSource for Rows {
    async fn next_table(&mut self) -> Result<Option<String>> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let (name, rows) = self.0.remove(0);
        self.1 = Some(rows);
        Ok(Some(name))
    }
    async fn next_rows(&mut self) -> Result<Option<Bytes>> {
        Ok(self.1.take().map(Bytes::from))
    }
}

/// Rows of `room`, ids from `base` (the shared tables' keys are unique across rooms).
fn seed_rows(room: &str, base: i64) -> Rows {
    let messages: String = (1..=50)
        .map(|i| format!("{room}\t{}\tmessage {i}\n", base + i))
        .collect();
    let reactions: String = (1..=20)
        .map(|i| {
            let m = base + i;
            format!("{room}\t{m}\tann\t+1\n{room}\t{m}\tbob\theart\n")
        })
        .collect();
    let ticks: String = (0..10)
        .map(|i| format!("{room}\t2026-01-01 0{i}:00:00.25+00\t{}\ttick\n", base + i))
        .collect();
    Rows(
        vec![
            ("messages".into(), messages.into_bytes()),
            ("reactions".into(), reactions.into_bytes()),
            ("ticks".into(), ticks.into_bytes()),
        ],
        None,
    )
}

async fn store(cluster: &Cluster) -> PgShardStore {
    let url = ProviderUrl::parse(&cluster.url("postgres"), "--shards").unwrap();
    let pool = roomshard_postgres::connect(&url, 6).await.unwrap();
    let store = PgShardStore::new(pool, &url).unwrap();
    store.ensure_pooled_tables(&schema()).await.unwrap();
    store
}

/// The host's own pool: a session unlike roomshard's (German dates, Berlin time).
async fn host(cluster: &Cluster) -> PgPool {
    let options = PgConnectOptions::from_str(&cluster.url("postgres"))
        .unwrap()
        .options([("DateStyle", "German, DMY"), ("TimeZone", "Europe/Berlin")]);
    PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap()
}

fn dedicated(store: &PgShardStore, room: &RoomId) -> Scope {
    Scope::Dedicated(
        room.clone(),
        Location {
            shard: Some(store.locate_shard(room, None).unwrap()),
            ..Location::default()
        },
    )
}

async fn seeded_room(store: &PgShardStore, name: &str, base: i64) -> RoomId {
    let room = RoomId::new(name).unwrap();
    store
        .restore(
            &Scope::Pooled(room.clone()),
            &schema(),
            &mut seed_rows(name, base),
            &IdRemap::default(),
        )
        .await
        .unwrap();
    let Scope::Dedicated(_, at) = dedicated(store, &room) else {
        unreachable!()
    };
    store.ensure_shard(&room, &at, &schema()).await.unwrap();
    room
}

async fn pass(store: &PgShardStore, room: &RoomId, pass: CopyPass) -> Result<(u64, u64)> {
    let schema = schema();
    let outcome = store
        .copy_room(CopyRequest {
            schema: &schema,
            source: CopySource {
                scope: Scope::Pooled(room.clone()),
                server: None,
            },
            target: dedicated(store, room),
            pass,
            resume_from: None,
            checkpoints: &NoCheckpoints,
            progress: &NoProgress,
        })
        .await?;
    Ok((outcome.rows_written, outcome.rows_deleted))
}

async fn assert_equal(store: &PgShardStore, room: &RoomId) {
    let source = store
        .parity(&Scope::Pooled(room.clone()), &schema())
        .await
        .unwrap();
    let target = store
        .parity(&dedicated(store, room), &schema())
        .await
        .unwrap();
    assert_eq!(source, target, "pooled and dedicated copies of {room}");
}

async fn log_rows(cluster: &Cluster, room: &str) -> u64 {
    cluster
        .query(
            "postgres",
            &format!("SELECT count(*) FROM public.roomshard_change_log WHERE room = '{room}'"),
        )
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changes_pass_applies_exactly_the_logged_host_writes() {
    let cluster = Cluster::start();
    let store = store(&cluster).await;
    let host = host(&cluster).await;
    let room = seeded_room(&store, "logged", 0).await;
    let other = seeded_room(&store, "bystander", 100_000).await;

    // Not tracked: a changes pass is refused, and says what to do instead.
    let err = pass(&store, &room, CopyPass::Changes).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("not tracked"), "{err}");

    assert!(!store.track_changes(&room, &schema(), true).await.unwrap());
    assert!(
        store.track_changes(&room, &schema(), true).await.unwrap(),
        "tracking again reports it was on"
    );
    pass(&store, &room, CopyPass::Bulk).await.unwrap();
    assert_equal(&store, &room).await;

    // The host writes: inserts, updates, deletes, a key change, a row moved to another room,
    // an upsert, and changes to a timestamp key written in German/Berlin form.
    for sql in [
        "INSERT INTO public.messages VALUES ('logged', 51, 'new'), ('logged', 52, 'newer')",
        "UPDATE public.messages SET body = 'edited' WHERE room_id = 'logged' AND id IN (3, 4)",
        "DELETE FROM public.messages WHERE room_id = 'logged' AND id = 7",
        "UPDATE public.messages SET id = 1007 WHERE room_id = 'logged' AND id = 8",
        "UPDATE public.messages SET room_id = 'bystander', id = 2009 WHERE room_id = 'logged' AND id = 9",
        "INSERT INTO public.reactions VALUES ('logged', 1, 'ann', 'tada') \
         ON CONFLICT (message_id, who) DO UPDATE SET emoji = EXCLUDED.emoji",
        "DELETE FROM public.reactions WHERE room_id = 'logged' AND message_id = 2 AND who = 'bob'",
        "UPDATE public.ticks SET note = 'moved' WHERE room_id = 'logged' AND n = 3",
        "INSERT INTO public.ticks VALUES ('logged', '2026-06-01 12:00:00.5+02', 99, 'summer')",
        "DELETE FROM public.ticks WHERE room_id = 'logged' AND n = 5",
        "UPDATE public.messages SET body = 'not ours' WHERE room_id = 'bystander' AND id = 100001",
    ] {
        sqlx::query(sql).execute(&host).await.unwrap();
    }
    // A rolled-back write leaves no log entry and no change.
    let mut tx = host.begin().await.unwrap();
    sqlx::query("DELETE FROM public.messages WHERE room_id = 'logged' AND id = 10")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        log_rows(&cluster, "bystander").await,
        0,
        "untracked rooms log nothing"
    );
    assert!(log_rows(&cluster, "logged").await >= 12);

    let (written, deleted) = pass(&store, &room, CopyPass::Changes).await.unwrap();
    // Written: 51, 52, 3, 4, 1007, reaction (1, ann), tick 3, tick 99. Deleted: 7, 8, 9,
    // reaction (2, bob), tick 5.
    assert_eq!((written, deleted), (8, 5));
    assert_equal(&store, &room).await;
    assert_eq!(
        log_rows(&cluster, "logged").await,
        0,
        "applied entries are gone"
    );
    assert_eq!(
        pass(&store, &room, CopyPass::Changes).await.unwrap(),
        (0, 0),
        "a repeated pass does nothing twice"
    );

    // Many changes: more than one batch of the log.
    sqlx::query(
        "INSERT INTO public.messages SELECT 'logged', g, 'bulk ' || g FROM generate_series(10000, 22000) g",
    )
    .execute(&host)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE public.messages SET body = body || '!' WHERE room_id = 'logged' AND id >= 10000",
    )
    .execute(&host)
    .await
    .unwrap();
    let (written, deleted) = pass(&store, &room, CopyPass::Changes).await.unwrap();
    assert!(written >= 12_001 && deleted == 0, "{written} {deleted}");
    assert_equal(&store, &room).await;

    // Off: the log is forgotten and a changes pass is refused again.
    sqlx::query("INSERT INTO public.messages VALUES ('logged', 60, 'late')")
        .execute(&host)
        .await
        .unwrap();
    assert!(store.track_changes(&room, &schema(), false).await.unwrap());
    assert!(!store.track_changes(&room, &schema(), false).await.unwrap());
    assert_eq!(log_rows(&cluster, "logged").await, 0);
    let err = pass(&store, &room, CopyPass::Changes).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    // The bystander's rows were never touched by any of it.
    let n: i64 = sqlx::query("SELECT count(*) FROM public.messages WHERE room_id = 'bystander'")
        .fetch_one(&host)
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 51);
    let _ = other;
}

async fn host_write(host: &PgPool, room: &str, id: i64) -> std::result::Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO public.messages VALUES ($1, $2, 'x') ON CONFLICT (id) DO UPDATE SET body = 'y'")
        .bind(room)
        .bind(id)
        .execute(host)
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_waits_for_writes_in_flight_refuses_new_ones_and_dies_with_its_holder() {
    let cluster = Cluster::start();
    let store = std::sync::Arc::new(store(&cluster).await);
    let host = host(&cluster).await;
    let room = seeded_room(&store, "fenced", 0).await;
    seeded_room(&store, "free", 100_000).await;
    // Installing the triggers never stalls the host behind a long transaction: it gives up.
    let mut long = host.begin().await.unwrap();
    sqlx::query("UPDATE public.messages SET body = 'long' WHERE room_id = 'free' AND id = 100001")
        .execute(&mut *long)
        .await
        .unwrap();
    let err = store.install_change_log(&schema()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    long.commit().await.unwrap();
    host_write(&host, "free", 200).await.unwrap();
    store.install_change_log(&schema()).await.unwrap();
    host_write(&host, "fenced", 100).await.unwrap();

    // A host transaction in flight on the room holds the fence off.
    let mut in_flight = host.begin().await.unwrap();
    sqlx::query(
        "UPDATE public.messages SET body = 'in flight' WHERE room_id = 'fenced' AND id = 1",
    )
    .execute(&mut *in_flight)
    .await
    .unwrap();
    let fencing = {
        let store = store.clone();
        let room = room.clone();
        tokio::spawn(async move {
            store
                .fence_writes(&room, &schema(), Duration::from_secs(20))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !fencing.is_finished(),
        "the fence waits for the write in flight"
    );
    // Meanwhile a new write to the room is already refused, another room's is not.
    let refused = host_write(&host, "fenced", 101).await.unwrap_err();
    assert!(is_cutover_refusal(&refused), "{refused}");
    host_write(&host, "free", 201).await.unwrap();
    // The write in flight finishes (its room's lock is already its own) and commits.
    sqlx::query(
        "UPDATE public.messages SET body = 'in flight 2' WHERE room_id = 'fenced' AND id = 2",
    )
    .execute(&mut *in_flight)
    .await
    .unwrap();
    in_flight.commit().await.unwrap();
    let fence = tokio::time::timeout(Duration::from_secs(10), fencing)
        .await
        .expect("the fence is taken once the write in flight ends")
        .unwrap()
        .unwrap();

    let refused = host_write(&host, "fenced", 102).await.unwrap_err();
    assert!(is_cutover_refusal(&refused), "{refused}");
    let text = refused.to_string();
    assert!(text.contains("read-only cutover"), "{text}");
    host_write(&host, "free", 202).await.unwrap();
    // roomshard's own work is not fenced: a copy reads, a drop of the pooled rows deletes.
    pass(&store, &room, CopyPass::Bulk).await.unwrap();
    // A second fence on the same room waits for the first, and gives up after its wait.
    let err = match store
        .fence_writes(&room, &schema(), Duration::from_millis(200))
        .await
    {
        Err(e) => e,
        Ok(_) => panic!("a second fence while the first is held"),
    };
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.to_string().contains("write fence of room fenced"),
        "{err}"
    );

    fence.lift().await.unwrap();
    host_write(&host, "fenced", 103).await.unwrap();

    // Dropped without lifting (a cancelled cutover): writes reopen by themselves.
    let fence = store
        .fence_writes(&room, &schema(), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(is_cutover_refusal(
        &host_write(&host, "fenced", 104).await.unwrap_err()
    ));
    drop(fence);
    let reopened = async {
        loop {
            if host_write(&host, "fenced", 104).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), reopened)
        .await
        .expect("writes reopen once the dropped fence's session ends");

    // A fence that cannot drain the writes in flight gives up and fences nothing.
    let mut in_flight = host.begin().await.unwrap();
    sqlx::query("UPDATE public.messages SET body = 'long' WHERE room_id = 'fenced' AND id = 3")
        .execute(&mut *in_flight)
        .await
        .unwrap();
    let err = match store
        .fence_writes(&room, &schema(), Duration::from_millis(300))
        .await
    {
        Err(e) => e,
        Ok(_) => panic!("a fence with a long write in flight"),
    };
    assert!(err.is_retryable(), "{err}");
    in_flight.commit().await.unwrap();
    host_write(&host, "fenced", 105).await.unwrap();

    // While fenced, roomshard's own drop of the pooled rows goes through.
    let fence = store
        .fence_writes(&room, &schema(), Duration::from_secs(5))
        .await
        .unwrap();
    store
        .drop_room(&Scope::Pooled(room.clone()), &schema())
        .await
        .unwrap();
    fence.lift().await.unwrap();
    let n: i64 = sqlx::query("SELECT count(*) FROM public.messages WHERE room_id = 'fenced'")
        .fetch_one(&host)
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);

    // Retired (the room lives in its own shard): host writes are refused for good, with their
    // own code, until a recentralise restores the pooled rows as a place to write.
    store.retire_pooled(&room, &schema(), true).await.unwrap();
    store.retire_pooled(&room, &schema(), true).await.unwrap();
    let moved = host_write(&host, "fenced", 106).await.unwrap_err();
    assert!(roomshard_postgres::is_moved_refusal(&moved), "{moved}");
    assert!(!is_cutover_refusal(&moved));
    assert!(
        moved.to_string().contains("lives in its own shard"),
        "{moved}"
    );
    host_write(&host, "free", 203).await.unwrap();
    // roomshard's own writes still pass (a recentralise copies the rows back first).
    store
        .restore(
            &Scope::Pooled(room.clone()),
            &schema(),
            &mut seed_rows("fenced", 0),
            &IdRemap::default(),
        )
        .await
        .unwrap();
    store.retire_pooled(&room, &schema(), false).await.unwrap();
    host_write(&host, "fenced", 106).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_waits_for_a_slow_write_in_short_attempts_with_the_room_writable_between() {
    let cluster = Cluster::start();
    let store = std::sync::Arc::new(store(&cluster).await);
    let host = host(&cluster).await;
    let room = seeded_room(&store, "slow", 0).await;
    store.install_change_log(&schema()).await.unwrap();
    let mut slow = host.begin().await.unwrap();
    sqlx::query("UPDATE public.messages SET body = 'slow' WHERE room_id = 'slow' AND id = 1")
        .execute(&mut *slow)
        .await
        .unwrap();
    let tracking = {
        let store = store.clone();
        let room = room.clone();
        tokio::spawn(async move { store.track_changes(&room, &schema(), true).await })
    };
    // While the barrier waits for the slow write, the room takes writes between its attempts.
    let (mut accepted, mut refused) = (0, 0);
    let started = std::time::Instant::now();
    let mut id = 500;
    while started.elapsed() < Duration::from_millis(2_500) {
        match host_write(&host, "slow", id).await {
            Ok(()) => accepted += 1,
            Err(e) if is_cutover_refusal(&e) => refused += 1,
            Err(e) => panic!("{e}"),
        }
        id += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!tracking.is_finished(), "tracking waits for the slow write");
    assert!(
        accepted > 10 && refused > 0,
        "accepted {accepted}, refused {refused}"
    );
    slow.commit().await.unwrap();
    let was = tokio::time::timeout(Duration::from_secs(5), tracking)
        .await
        .expect("tracking finishes once the slow write ends")
        .unwrap()
        .unwrap();
    assert!(!was);
    // Tracked from here: a write is logged.
    host_write(&host, "slow", 9_999).await.unwrap();
    assert!(log_rows(&cluster, "slow").await >= 1);
}

/// Chunk parity against host writes in another DateStyle and time zone: `applied_in` names
/// exactly the ranges a changes pass touched (typed comparison, composite and timestamp keys),
/// the copies match over every range afterwards, and a `TRUNCATE` (which no row trigger sees)
/// is refused while a room is tracked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_keys_name_exactly_the_chunks_a_pass_touched_and_truncate_is_refused() {
    use roomshard_core::{ChunkPlan, KeyRange};
    let cluster = Cluster::start();
    let store = store(&cluster).await;
    let host = host(&cluster).await;
    let base = 200_000;
    let room = seeded_room(&store, "chunked", base).await;
    store.track_changes(&room, &schema(), true).await.unwrap();
    pass(&store, &room, CopyPass::Bulk).await.unwrap();
    let pooled = Scope::Pooled(room.clone());
    let split = store
        .chunk_parity(&pooled, &schema(), &ChunkPlan::Split { rows_per_chunk: 10 })
        .await
        .unwrap();
    let shape: Vec<(&str, u64)> = split
        .iter()
        .map(|c| (c.range.table.as_str(), c.rows))
        .collect();
    // messages 50 rows: 5 ranges and an empty last; reactions 40: 4 and an empty last; ticks
    // 10: 1 and an empty last.
    assert_eq!(
        shape,
        [
            ("messages", 10),
            ("messages", 10),
            ("messages", 10),
            ("messages", 10),
            ("messages", 10),
            ("messages", 0),
            ("reactions", 10),
            ("reactions", 10),
            ("reactions", 10),
            ("reactions", 10),
            ("reactions", 0),
            ("ticks", 10),
            ("ticks", 0),
        ]
    );
    assert_eq!(
        split[7].range.after,
        Some(vec![(base + 5).to_string(), "bob".to_string()]),
        "a composite key bound, in COPY text form"
    );
    assert_eq!(
        split[12].range.after,
        Some(vec![
            "2026-01-01 09:00:00.25+00".to_string(),
            (base + 9).to_string()
        ]),
        "a timestamp key bound, in roomshard's UTC text form"
    );
    let ranges: Vec<KeyRange> = split.iter().map(|c| c.range.clone()).collect();
    store.reset_applied(&room).await.unwrap();
    for sql in [
        format!(
            "UPDATE public.messages SET body = 'edited' WHERE id = {}",
            base + 15
        ),
        format!(
            "INSERT INTO public.messages VALUES ('chunked', {}, 'last')",
            base + 1000
        ),
        format!(
            "DELETE FROM public.reactions WHERE message_id = {} AND who = 'bob'",
            base + 3
        ),
        format!(
            "UPDATE public.ticks SET note = 'tock' WHERE n = {}",
            base + 3
        ),
        // 12:00 in Berlin is 11:00 UTC: after every seeded tick (as a value, not as text).
        format!(
            "INSERT INTO public.ticks VALUES ('chunked', '01.01.2026 12:00:00 CET', {}, 'late')",
            base + 99
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&host)
            .await
            .unwrap();
    }
    assert!(
        store
            .applied_in(&room, &schema(), &ranges)
            .await
            .unwrap()
            .is_empty(),
        "logged but not yet applied: nothing applied"
    );
    pass(&store, &room, CopyPass::Changes).await.unwrap();
    assert_eq!(
        store.applied_in(&room, &schema(), &ranges).await.unwrap(),
        vec![1, 5, 6, 11, 12]
    );
    let plan = ChunkPlan::Ranges(ranges.clone());
    let source = store.chunk_parity(&pooled, &schema(), &plan).await.unwrap();
    let target = store
        .chunk_parity(&dedicated(&store, &room), &schema(), &plan)
        .await
        .unwrap();
    for (s, t) in source.iter().zip(&target) {
        assert!(s.matches(t), "{s:?} vs {t:?}");
    }
    assert_eq!(
        source[5].rows, 1,
        "the insert past the last key is in the open range"
    );
    assert_eq!(source[12].rows, 1, "the late tick is in the open range");
    store.reset_applied(&room).await.unwrap();
    assert!(
        store
            .applied_in(&room, &schema(), &ranges)
            .await
            .unwrap()
            .is_empty()
    );

    // A range whose bound does not fit the table's key is refused as a key range (not as a
    // copy checkpoint), by both calls that take ranges, and nothing is read.
    let mut bad = ranges[0].clone();
    bad.up_to = Some(vec!["1".to_string(), "2".to_string(), "3".to_string()]);
    let bad_plan = ChunkPlan::Ranges(vec![bad.clone()]);
    for err in [
        store
            .chunk_parity(&pooled, &schema(), &bad_plan)
            .await
            .unwrap_err(),
        store
            .applied_in(&room, &schema(), std::slice::from_ref(&bad))
            .await
            .unwrap_err(),
    ] {
        match &err {
            Error::Invalid { what, detail } => {
                assert_eq!(what, "key range", "{err}");
                assert!(detail.contains("has 3 key values"), "{err}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    // TRUNCATE would bypass the log: refused while a room is tracked, with its own code.
    let err = sqlx::query("TRUNCATE public.messages")
        .execute(&host)
        .await
        .unwrap_err();
    let code = err
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.to_string());
    assert_eq!(code.as_deref(), Some("RSC03"), "{err}");
    let n: i64 = sqlx::query("SELECT count(*) FROM public.messages")
        .fetch_one(&host)
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 51, "nothing was truncated");
    store.track_changes(&room, &schema(), false).await.unwrap();
    sqlx::query("TRUNCATE public.messages")
        .execute(&host)
        .await
        .unwrap();
}
