//! The PostgreSQL control plane against a real PostgreSQL 15 server (one throwaway cluster per
//! test): the conformance suite, migrations (including two at once), placement
//! compare-and-swap, jobs, imports and their holds, the audit chain (tampering refused by the
//! database, tampering behind its back caught by `verify_audit`, concurrent appends from one
//! pool and from several) and receipts.

use roomshard_conformance::suite::{
    ControlSuiteConfig, control_plane_checks, run_control_plane_suite,
};
use roomshard_core::{
    AuditEntry, AuditRecord, ControlPlane, CopyCheckpoint, CopyJob, CopyPass, Error, IdMap,
    ImportHold, ImportRecord, ImportState, JobKind, Placement, PlacementChange, PlacementState,
    Profile, ProviderUrl, ReceiptRecord, RoomId, ServerUrl, TableCursor,
};
use roomshard_interop_tests::pg::Cluster;
use roomshard_postgres::PgControlPlane;
use sqlx::{Connection, PgConnection, PgPool};
use std::time::{Duration, Instant};

/// A pool on database `db` of `cluster`, opened the way hosts open it.
async fn pool_on(cluster: &Cluster, db: &str) -> PgPool {
    let url = ProviderUrl::parse(&cluster.url(db), "--control").expect("a PostgreSQL URL");
    roomshard_postgres::connect(&url, 8)
        .await
        .expect("connect to the test cluster")
}

async fn pool(cluster: &Cluster) -> PgPool {
    pool_on(cluster, "postgres").await
}

/// A fresh cluster and a migrated control plane on it.
async fn fresh() -> (Cluster, PgControlPlane) {
    let cluster = Cluster::start();
    let cp = PgControlPlane::new(pool(&cluster).await);
    cp.migrate().await.expect("migrate");
    (cluster, cp)
}

/// A connection outside roomshard, as an operator with psql (or an attacker) has.
async fn raw(cluster: &Cluster) -> PgConnection {
    PgConnection::connect(&cluster.url("postgres"))
        .await
        .expect("raw connection")
}

fn room(id: &str) -> RoomId {
    RoomId::new(id).expect("valid room id")
}

fn entry(actor: &str, n: u32, room_id: Option<&str>) -> AuditEntry {
    AuditEntry {
        at: "2026-11-22T10:00:00Z".into(),
        actor: actor.into(),
        action: "test.step".into(),
        room: room_id.map(room),
        detail: serde_json::json!({ "n": n, "zeta": [1, 2.5, "x"], "alpha": { "b": true, "a": null } }),
    }
}

/// The SQLSTATE of a database error (empty for any other error).
fn sqlstate(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()).unwrap_or_default(),
        _ => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_control_plane_conforms() {
    let cluster = Cluster::start();
    let url = ProviderUrl::parse(&cluster.url("postgres"), "--control").expect("url");
    let pool = roomshard_postgres::connect(&url, 8).await.expect("connect");
    let cp = PgControlPlane::new(pool);
    cp.migrate().await.expect("migrate");
    // Records from before the suite runs must not matter to it.
    cp.append_audit(&AuditEntry {
        at: "2026-11-22T09:00:00Z".into(),
        actor: "host".into(),
        action: "host.earlier".into(),
        room: None,
        detail: serde_json::json!({}),
    })
    .await
    .expect("earlier entry");
    let report = run_control_plane_suite(&cp, &ControlSuiteConfig::default()).await;
    println!("{report}");
    assert_eq!(report.failures(), 0, "{report}");
    assert_eq!(report.passed(), control_plane_checks().len(), "{report}");
    let json = report.to_json();
    assert_eq!(json["conforms"], true);
    assert_eq!(json["suite"], "control_plane");
    assert_eq!(json["provider"], "postgres");
    assert_eq!(
        json["checks"].as_array().map(Vec::len),
        Some(control_plane_checks().len())
    );
}

#[tokio::test]
async fn migrate_twice_is_a_no_op_and_uses_its_own_ledger() {
    let (cluster, cp) = fresh().await;
    cp.migrate().await.expect("second migrate");
    PgControlPlane::new(pool(&cluster).await)
        .migrate()
        .await
        .expect("third migrate, new pool");
    let mut conn = raw(&cluster).await;
    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, sha256 FROM roomshard_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .expect("ledger");
    assert_eq!(
        applied.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        vec![1],
        "each migration applied once"
    );
    assert!(applied.iter().all(|(_, sha)| sha.len() == 64));
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables \
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY table_name",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tables");
    assert!(
        tables
            .iter()
            .all(|(schema, name)| schema == "public" && name.starts_with("roomshard_")),
        "only roomshard_ tables, in the default schema, and no _sqlx_migrations: {tables:?}"
    );
    for table in [
        "roomshard_migrations",
        "roomshard_placements",
        "roomshard_copy_jobs",
        "roomshard_imports",
        "roomshard_import_id_maps",
        "roomshard_audit",
        "roomshard_receipts",
    ] {
        assert!(
            tables.iter().any(|(_, n)| n == table),
            "{table} missing: {tables:?}"
        );
    }
    // Ids compare byte by byte whatever the database's locale.
    let collations: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT table_name::text || '.' || column_name::text, collation_name::text \
         FROM information_schema.columns \
         WHERE (table_name, column_name) IN (('roomshard_placements', 'room'), \
         ('roomshard_imports', 'id'), ('roomshard_copy_jobs', 'room'))",
    )
    .fetch_all(&mut conn)
    .await
    .expect("columns");
    assert_eq!(collations.len(), 3, "{collations:?}");
    assert!(
        collations.iter().all(|(_, c)| c.as_deref() == Some("C")),
        "{collations:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_migrations_apply_each_migration_once() {
    let cluster = Cluster::start();
    let a = PgControlPlane::new(pool(&cluster).await);
    let b = PgControlPlane::new(pool(&cluster).await);
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.expect("first concurrent migrate");
    rb.expect("second concurrent migrate");
    let counts: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT version, count(*) FROM roomshard_migrations GROUP BY version ORDER BY version",
    )
    .fetch_all(a.pool())
    .await
    .expect("ledger");
    assert_eq!(counts, vec![(1, 1)], "one ledger row per version");
    // And the schema works.
    a.append_audit(&entry("ops", 1, None))
        .await
        .expect("append");
    assert!(b.verify_audit().await.expect("verify").is_intact());
}

#[tokio::test]
async fn a_changed_migration_checksum_is_refused() {
    let (cluster, cp) = fresh().await;
    let mut conn = raw(&cluster).await;
    sqlx::query("UPDATE roomshard_migrations SET sha256 = $1 WHERE version = 1")
        .bind("0".repeat(64))
        .execute(&mut conn)
        .await
        .expect("tamper ledger");
    let err = cp.migrate().await.expect_err("checksum differs");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("migration 1"), "{err}");
}

#[tokio::test]
async fn a_migration_from_a_newer_build_is_refused() {
    let (cluster, cp) = fresh().await;
    let mut conn = raw(&cluster).await;
    sqlx::query("INSERT INTO roomshard_migrations VALUES (999, now(), $1)")
        .bind("f".repeat(64))
        .execute(&mut conn)
        .await
        .expect("future migration");
    let err = cp.migrate().await.expect_err("unknown migration");
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("999"), "{err}");
}

/// The tables land in the connection's current schema (here a host schema set as the
/// database's search_path), and the audit trigger guards that table even for a session whose
/// search_path points elsewhere.
#[tokio::test]
async fn tables_land_in_the_hosts_current_schema() {
    let cluster = Cluster::start();
    cluster.createdb("app");
    cluster.query(
        "app",
        "CREATE SCHEMA hostapp; ALTER DATABASE app SET search_path = hostapp",
    );
    let cp = PgControlPlane::new(pool_on(&cluster, "app").await);
    cp.migrate().await.expect("migrate");
    cp.append_audit(&entry("ops", 1, None))
        .await
        .expect("append");
    let schemas = cluster.query(
        "app",
        "SELECT string_agg(DISTINCT table_schema, ',') FROM information_schema.tables \
         WHERE table_name LIKE 'roomshard%'",
    );
    assert_eq!(schemas, "hostapp");
    let mut conn = PgConnection::connect(&cluster.url("app"))
        .await
        .expect("raw connection");
    sqlx::query("SET search_path = public")
        .execute(&mut conn)
        .await
        .expect("search_path");
    let err = sqlx::query(
        "INSERT INTO hostapp.roomshard_audit (seq, at, actor, action, room, detail, prev_hash, \
         hash) VALUES (7, 'now', 'mallory', 'x', NULL, '{}', 'x', 'x')",
    )
    .execute(&mut conn)
    .await
    .expect_err("a gap is refused");
    assert_eq!(sqlstate(&err), "RSA01", "{err}");
    assert!(cp.verify_audit().await.expect("verify").is_intact());
}

#[tokio::test]
async fn placements_insert_get_list_cas_and_delete_each_with_its_audit_entry() {
    let (_cluster, cp) = fresh().await;
    assert_eq!(cp.name(), "postgres");
    assert_eq!(cp.placement(&room("general")).await.expect("get"), None);

    let mut general = Placement::pooled(room("general"));
    insert(&cp, &general).await.expect("insert");
    let err = insert(&cp, &general).await.expect_err("second insert");
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");

    let mut sovereign = Placement::pooled(room("alpha"));
    sovereign.profile = Profile::Byo;
    sovereign.shard_url = Some(ServerUrl::new("postgres://u:s3cret@db1/mesh"));
    sovereign.media_bucket = Some("roomshard-alpha".into());
    sovereign.kms_key_ref = Some("arn:aws:kms:eu-west-1:1:key/abc".into());
    sovereign.region = Some("eu-west-1".into());
    sovereign.adopted.bucket = true;
    sovereign.providers.media = "acme".parse().expect("provider name");
    insert(&cp, &sovereign).await.expect("insert alpha");
    assert_eq!(
        cp.placement(&room("alpha")).await.expect("get"),
        Some(sovereign.clone()),
        "every field, including the URL's password, round-trips"
    );
    let all = cp.placements().await.expect("list");
    assert_eq!(
        all,
        vec![sovereign.clone(), general.clone()],
        "ordered by room"
    );

    // Compare-and-swap.
    let stale = general.clone();
    general
        .transition(PlacementState::Provisioning)
        .expect("move");
    update(&cp, &general, 0).await.expect("cas at 0");
    let mut loser = stale.clone();
    loser
        .transition(PlacementState::Provisioning)
        .expect("move");
    loser.media_bucket = Some("other".into());
    let err = update(&cp, &loser, 0).await.expect_err("stale version");
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(
        cp.placement(&room("general")).await.expect("get"),
        Some(general.clone()),
        "the loser changed nothing"
    );
    let mut same_version = general.clone();
    same_version.region = Some("x".into());
    let err = update(&cp, &same_version, general.version)
        .await
        .expect_err("version not bumped");
    assert!(matches!(err, Error::Invalid { .. }), "{err}");

    let mut ghost = Placement::pooled(room("ghost"));
    ghost.version = 1;
    let err = update(&cp, &ghost, 0).await.expect_err("no room");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");

    // Delete: version-checked, idempotent on a missing placement.
    let err = delete(&cp, &room("general"), 0)
        .await
        .expect_err("stale delete");
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    delete(&cp, &room("general"), general.version)
        .await
        .expect("delete");
    delete(&cp, &room("general"), general.version)
        .await
        .expect("delete again");
    assert_eq!(cp.placement(&room("general")).await.expect("get"), None);
    assert_eq!(cp.placements().await.expect("list"), vec![sovereign]);

    // Every change that happened has its entry, every refused one has none.
    let log = cp.audit_log(None).await.expect("log");
    let actions: Vec<&str> = log.iter().map(|r| r.entry.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "placement.insert",
            "placement.insert",
            "placement.update",
            "placement.delete",
            "placement.delete"
        ]
    );
    assert_eq!(cp.audit_head().await.expect("head"), log.last().cloned());
    assert!(cp.verify_audit().await.expect("verify").is_intact());
}

/// [`ControlPlane::change_placement`] with an entry naming the change.
async fn insert(cp: &PgControlPlane, p: &Placement) -> roomshard_core::Result<AuditRecord> {
    cp.change_placement(PlacementChange::Insert(p), &change_entry("insert", &p.room))
        .await
}

async fn update(
    cp: &PgControlPlane,
    next: &Placement,
    expected_version: u64,
) -> roomshard_core::Result<AuditRecord> {
    let change = PlacementChange::Update {
        next,
        expected_version,
    };
    cp.change_placement(change, &change_entry("update", &next.room))
        .await
}

async fn delete(
    cp: &PgControlPlane,
    room: &RoomId,
    expected_version: u64,
) -> roomshard_core::Result<AuditRecord> {
    let change = PlacementChange::Delete {
        room,
        expected_version,
    };
    cp.change_placement(change, &change_entry("delete", room))
        .await
}

fn change_entry(what: &str, room: &RoomId) -> AuditEntry {
    AuditEntry {
        at: "2026-11-22T10:00:00Z".into(),
        actor: "test".into(),
        action: format!("placement.{what}"),
        room: Some(room.clone()),
        detail: serde_json::json!({}),
    }
}

/// A change whose audit append fails leaves the placement as it was: both or neither.
#[tokio::test]
async fn a_placement_change_whose_audit_entry_fails_changes_nothing() {
    let (cluster, cp) = fresh().await;
    let mut general = Placement::pooled(room("general"));
    insert(&cp, &general).await.expect("insert");
    // Make PostgreSQL refuse every audit insert (as a full disk or a broken chain would).
    let mut conn = raw(&cluster).await;
    sqlx::raw_sql(
        "CREATE FUNCTION test_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'test: audit refused'; END $$; \
         CREATE TRIGGER test_refuse_audit BEFORE INSERT ON roomshard_audit \
         FOR EACH ROW EXECUTE FUNCTION test_refuse_audit();",
    )
    .execute(&mut conn)
    .await
    .expect("trigger");
    let before = general.clone();
    general
        .transition(PlacementState::Provisioning)
        .expect("move");
    update(&cp, &general, 0)
        .await
        .expect_err("the audit insert fails");
    assert_eq!(
        cp.placement(&room("general")).await.expect("get"),
        Some(before),
        "the placement did not move without its entry"
    );
    let other = Placement::pooled(room("other"));
    insert(&cp, &other)
        .await
        .expect_err("the audit insert fails");
    assert_eq!(cp.placement(&room("other")).await.expect("get"), None);
    let other_delete = delete(&cp, &room("general"), 0).await;
    assert!(other_delete.is_err(), "{other_delete:?}");
    assert!(cp.placement(&room("general")).await.expect("get").is_some());
    assert_eq!(cp.audit_log(None).await.expect("log").len(), 1);
}

#[tokio::test]
async fn jobs_save_replace_get_list_and_delete() {
    let (_cluster, cp) = fresh().await;
    let mut job = CopyJob {
        room: room("general"),
        kind: JobKind::Decentralise,
        checkpoint: None,
        media_after: None,
        media_done: (0, 0),
        updated_at_unix_ms: 1_700_000_000_000,
    };
    cp.save_job(&job).await.expect("save");
    assert_eq!(
        cp.job(&room("general"), JobKind::Decentralise)
            .await
            .expect("get"),
        Some(job.clone())
    );
    assert_eq!(
        cp.job(&room("general"), JobKind::Recentralise)
            .await
            .expect("get"),
        None
    );

    job.checkpoint = Some(CopyCheckpoint {
        pass: CopyPass::Bulk,
        tables_done: vec!["rooms".into(), "members".into()],
        current: Some(TableCursor {
            table: "messages".into(),
            after_key: vec!["general".into(), "42".into(), "tab\there".into()],
            rows_done: 4200,
        }),
        provider_state: Some(serde_json::json!({ "wal": "0/16B6C50" })),
    });
    job.media_after = Some("media/2026/a.png".into());
    job.media_done = (17, 1 << 40);
    job.updated_at_unix_ms += 1;
    cp.save_job(&job).await.expect("replace");
    assert_eq!(
        cp.job(&room("general"), JobKind::Decentralise)
            .await
            .expect("get"),
        Some(job.clone()),
        "the checkpoint round-trips"
    );

    let back = CopyJob {
        room: room("general"),
        kind: JobKind::Recentralise,
        ..job.clone()
    };
    let other = CopyJob {
        room: room("alpha"),
        kind: JobKind::Recentralise,
        checkpoint: None,
        ..job.clone()
    };
    cp.save_job(&back).await.expect("save");
    cp.save_job(&other).await.expect("save");
    assert_eq!(
        cp.jobs().await.expect("list"),
        vec![other.clone(), job.clone(), back.clone()],
        "ordered by room, then kind"
    );

    let too_big = CopyJob {
        media_done: (u64::MAX, 0),
        ..job.clone()
    };
    let err = cp.save_job(&too_big).await.expect_err("past bigint");
    assert!(matches!(err, Error::Invalid { .. }), "{err}");

    cp.delete_job(&room("general"), JobKind::Decentralise)
        .await
        .expect("delete");
    cp.delete_job(&room("general"), JobKind::Decentralise)
        .await
        .expect("delete again");
    assert_eq!(cp.jobs().await.expect("list"), vec![other, back]);
}

fn import(id: &str, new_room: &str, started: u64) -> ImportRecord {
    ImportRecord {
        id: id.into(),
        source_room: "general".into(),
        new_room: room(new_room),
        manifest_sha256: "ab".repeat(32),
        signer_key_id: "ed25519:abcd".into(),
        state: ImportState::Staging,
        started_at_unix_ms: started,
    }
}

/// begin_import refuses, atomically with its insert, a second staging import into one room and
/// (unless duplicates are allowed) a second import of one bundle.
#[tokio::test]
async fn begin_import_refuses_a_concurrent_import_of_the_same_room_or_bundle() {
    let (_cluster, cp) = fresh().await;
    let first = import("imp-1", "general", 100);
    cp.begin_import(&first, false).await.expect("begin");
    // Same room, another bundle: refused even with duplicates allowed.
    let mut same_room = import("imp-2", "general", 200);
    same_room.manifest_sha256 = "1".repeat(64);
    let err = cp
        .begin_import(&same_room, true)
        .await
        .expect_err("same room");
    assert!(
        matches!(&err, Error::Conflict { .. })
            && err
                .to_string()
                .contains("imp-1 is importing into room general right now"),
        "{err}"
    );
    // Same bundle, another room: refused unless allowed.
    let same_bundle = import("imp-3", "general-2", 300);
    let err = cp
        .begin_import(&same_bundle, false)
        .await
        .expect_err("same bundle");
    assert!(
        err.to_string().contains("is importing this bundle"),
        "{err}"
    );
    cp.begin_import(&same_bundle, true).await.expect("allowed");
    // Once done, the bundle is "already imported".
    cp.finish_import("imp-1", &[]).await.expect("finish");
    let fourth = import("imp-4", "general-4", 400);
    cp.delete_import("imp-3").await.expect("delete");
    let err = cp
        .begin_import(&fourth, false)
        .await
        .expect_err("done earlier");
    assert!(
        err.to_string()
            .contains("was already imported here as room general"),
        "{err}"
    );
    let ids: Vec<String> = cp
        .imports(None)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["imp-1"], "refused imports wrote nothing");
}

/// Eight imports into one room begun at once from four pools (as four processes would):
/// exactly one passes the check, the others are refused as conflicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_begin_imports_into_one_room_admit_exactly_one() {
    let (cluster, _cp) = fresh().await;
    let mut planes = Vec::new();
    for _ in 0..4 {
        planes.push(PgControlPlane::new(pool(&cluster).await));
    }
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let cp = planes[t % planes.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut record = import(&format!("imp-{t}"), "contested", 100 + t as u64);
            record.manifest_sha256 = format!("{t:064}");
            cp.begin_import(&record, true).await
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => admitted += 1,
            Err(Error::Conflict { .. }) => {}
            Err(other) => panic!("expected Ok or Conflict, got {other}"),
        }
    }
    assert_eq!(admitted, 1);
    assert_eq!(planes[0].imports(None).await.expect("list").len(), 1);
}

/// Polls `hold_import` until it hands out the hold: another session's release reaches the
/// server asynchronously.
async fn hold_eventually(cp: &PgControlPlane, id: &str) -> ImportHold {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(hold) = cp.hold_import(id).await.expect("hold_import") {
            return hold;
        }
        assert!(Instant::now() < deadline, "{id} was never released");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// hold_import: one holder per id, in this process and across control planes on separate
/// pools (each its own sessions, as two processes have); released on drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_import_has_one_live_holder_and_is_released_on_drop() {
    let (cluster, cp) = fresh().await;
    let other = PgControlPlane::new(pool(&cluster).await);
    let hold = cp.hold_import("imp-1").await.expect("hold").expect("free");
    assert!(cp.hold_import("imp-1").await.expect("again").is_none());
    assert!(
        cp.clone()
            .hold_import("imp-1")
            .await
            .expect("clone")
            .is_none(),
        "a clone shares the process's claims"
    );
    assert!(
        other.hold_import("imp-1").await.expect("other").is_none(),
        "another control plane on another pool sees it held"
    );
    let second = other
        .hold_import("imp-2")
        .await
        .expect("hold")
        .expect("free");
    assert!(cp.hold_import("imp-2").await.expect("held").is_none());
    drop(hold);
    // In the process that dropped it, a new claim waits for the release instead of failing.
    let again = cp.hold_import("imp-1").await.expect("after drop");
    assert!(again.is_some(), "released on drop, for this process");
    drop(again);
    let taken = hold_eventually(&other, "imp-1").await;
    assert!(cp.hold_import("imp-1").await.expect("held").is_none());
    drop(taken);
    drop(second);
    let back = hold_eventually(&cp, "imp-2").await;
    drop(back);
    assert!(
        cp.hold_import("../x").await.is_err(),
        "ids are checked as on SQLite"
    );
}

/// A holder whose session dies (its process killed with kill -9 closes the socket; here the
/// server ends the session) releases the claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_whose_session_dies_is_released() {
    let (cluster, cp) = fresh().await;
    let other = PgControlPlane::new(pool(&cluster).await);
    let hold = cp.hold_import("imp-9").await.expect("hold").expect("free");
    assert!(other.hold_import("imp-9").await.expect("held").is_none());
    let mut conn = raw(&cluster).await;
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut conn)
    .await
    .expect("terminate the holder's session");
    assert_eq!(killed, vec![true], "one session held one advisory lock");
    let taken = hold_eventually(&other, "imp-9").await;
    drop(taken);
    // Dropping the dead hold later is harmless.
    drop(hold);
}

#[tokio::test]
async fn imports_begin_finish_with_id_maps_list_and_delete() {
    let (_cluster, cp) = fresh().await;
    let first = import("imp-1", "general-2", 100);
    let second = import("imp-2", "general-3", 200);
    cp.begin_import(&second, true).await.expect("begin");
    cp.begin_import(&first, true).await.expect("begin");
    let err = cp
        .begin_import(&first, true)
        .await
        .expect_err("duplicate id");
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");

    assert_eq!(
        cp.imports(None).await.expect("list"),
        vec![first.clone(), second.clone()],
        "oldest first"
    );

    let maps = vec![
        IdMap {
            table: "messages".into(),
            column: "id".into(),
            changes: vec![("2".into(), "102".into()), ("1".into(), "101".into())],
        },
        IdMap {
            table: "members".into(),
            column: "user_id".into(),
            changes: vec![("u1".into(), "u9".into())],
        },
    ];
    cp.finish_import("imp-1", &maps).await.expect("finish");
    cp.finish_import("imp-1", &maps)
        .await
        .expect("finish again converges");
    assert_eq!(
        cp.import_id_maps("imp-1").await.expect("maps"),
        maps,
        "in the order given"
    );
    assert_eq!(
        cp.import_id_maps("imp-2").await.expect("maps"),
        Vec::<IdMap>::new()
    );
    let err = cp.finish_import("nope", &maps).await.expect_err("unknown");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    // One old value mapped twice is a unique violation: a conflict, and nothing is written.
    let twice = vec![IdMap {
        table: "messages".into(),
        column: "id".into(),
        changes: vec![("1".into(), "101".into()), ("1".into(), "201".into())],
    }];
    let err = cp
        .finish_import("imp-2", &twice)
        .await
        .expect_err("duplicate old value");
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(
        cp.imports(Some(ImportState::Staging))
            .await
            .expect("staging"),
        vec![second.clone()],
        "the failed finish left the import staging"
    );

    let done = ImportRecord {
        state: ImportState::Done,
        ..first.clone()
    };
    assert_eq!(
        cp.imports(Some(ImportState::Done)).await.expect("done"),
        vec![done.clone()]
    );

    cp.delete_import("imp-1").await.expect("delete");
    cp.delete_import("imp-1").await.expect("delete again");
    assert_eq!(
        cp.import_id_maps("imp-1").await.expect("maps"),
        Vec::<IdMap>::new()
    );
    assert_eq!(cp.imports(None).await.expect("list"), vec![second]);
}

#[tokio::test]
async fn audit_appends_chain_and_verify() {
    let (_cluster, cp) = fresh().await;
    let empty = cp.verify_audit().await.expect("verify empty");
    assert!(empty.is_intact());
    assert_eq!(empty.rows, 0);
    assert_eq!(cp.audit_head().await.expect("head"), None);

    let mut records = Vec::new();
    for n in 0..5 {
        let r = cp
            .append_audit(&entry(
                "ops",
                n,
                if n % 2 == 0 { Some("general") } else { None },
            ))
            .await
            .expect("append");
        assert_eq!(r.seq, u64::from(n) + 1);
        records.push(r);
    }
    assert_eq!(records[0].prev_hash, roomshard_core::GENESIS_HASH);
    assert_eq!(records[1].prev_hash, records[0].hash);
    assert_eq!(cp.audit_log(None).await.expect("log"), records);
    let general: Vec<u64> = cp
        .audit_log(Some(&room("general")))
        .await
        .expect("room log")
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(general, vec![1, 3, 5]);

    let v = cp.verify_audit().await.expect("verify");
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.rows, 5);
    assert_eq!(v.head, records[4].hash);
    assert_eq!(
        cp.audit_head().await.expect("head"),
        records.last().cloned()
    );
}

/// Checks a log of `total` rows: intact, `seq` 1..=total.
async fn assert_whole_chain(cp: &PgControlPlane, total: u64) {
    let v = cp.verify_audit().await.expect("verify");
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.rows, total);
    let log = cp.audit_log(None).await.expect("log");
    assert_eq!(
        log.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_never_fork_the_chain() {
    let (_cluster, cp) = fresh().await;
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let cp = cp.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..25 {
                cp.append_audit(&entry(&format!("task-{t}"), n, Some("general")))
                    .await
                    .expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert_whole_chain(&cp, 200).await;
}

/// As above, but each task has its own control plane on one of four pools: no in-process
/// queue is shared, so only the database's lock serialises the appends (and the placement
/// changes with theirs).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_from_separate_pools_never_fork_the_chain() {
    let (cluster, _cp) = fresh().await;
    let mut pools = Vec::new();
    for _ in 0..4 {
        pools.push(pool(&cluster).await);
    }
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let cp = PgControlPlane::new(pools[t as usize % pools.len()].clone());
        tasks.push(tokio::spawn(async move {
            let room_id = format!("room-{t}");
            let mut p = Placement::pooled(room(&room_id));
            insert(&cp, &p).await.expect("insert");
            for n in 0..20 {
                if n % 5 == 4 {
                    let expected = p.version;
                    p.version += 1;
                    update(&cp, &p, expected).await.expect("update");
                } else {
                    cp.append_audit(&entry(&format!("task-{t}"), n, Some(&room_id)))
                        .await
                        .expect("append");
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert_whole_chain(&PgControlPlane::new(pools[0].clone()), 8 * 21).await;
}

async fn append_three(cp: &PgControlPlane) -> Vec<AuditRecord> {
    let mut out = Vec::new();
    for n in 0..3 {
        out.push(
            cp.append_audit(&entry("ops", n, None))
                .await
                .expect("append"),
        );
    }
    out
}

#[tokio::test]
async fn the_database_refuses_to_edit_delete_or_splice_audit_rows() {
    let (cluster, cp) = fresh().await;
    let records = append_three(&cp).await;
    let mut conn = raw(&cluster).await;
    let refused = [
        (
            "update",
            "UPDATE roomshard_audit SET actor = 'mallory' WHERE seq = 2".to_string(),
        ),
        (
            "delete",
            "DELETE FROM roomshard_audit WHERE seq = 2".to_string(),
        ),
        ("delete all", "DELETE FROM roomshard_audit".to_string()),
        ("truncate", "TRUNCATE roomshard_audit".to_string()),
        (
            "re-insert of an old seq over itself",
            "INSERT INTO roomshard_audit SELECT seq, at, 'mallory', action, room, detail, \
             prev_hash, hash FROM roomshard_audit WHERE seq = 2 \
             ON CONFLICT (seq) DO UPDATE SET actor = excluded.actor"
                .to_string(),
        ),
        (
            "a gap",
            "INSERT INTO roomshard_audit VALUES (5, 'now', 'mallory', 'x', NULL, '{}', \
             'x', 'x')"
                .to_string(),
        ),
        (
            "the next seq on another prev_hash",
            format!(
                "INSERT INTO roomshard_audit VALUES (4, 'now', 'mallory', 'x', NULL, '{{}}', \
                 '{}', 'x')",
                records[1].hash
            ),
        ),
        (
            "the next seq on the genesis hash",
            format!(
                "INSERT INTO roomshard_audit VALUES (4, 'now', 'mallory', 'x', NULL, '{{}}', \
                 '{}', 'x')",
                roomshard_core::GENESIS_HASH
            ),
        ),
    ];
    for (what, sql) in refused {
        let err = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .expect_err(what);
        assert_eq!(sqlstate(&err), "RSA01", "{what}: {err}");
        assert!(err.to_string().contains("append-only"), "{what}: {err}");
    }
    let v = cp.verify_audit().await.expect("verify");
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.rows, 3);
    assert_eq!(cp.audit_log(None).await.expect("log"), records);
    // The chain goes on from where it was.
    let next = cp
        .append_audit(&entry("ops", 4, None))
        .await
        .expect("append");
    assert_eq!(next.seq, 4);
    assert_eq!(next.prev_hash, records[2].hash);
}

/// The database checks the linkage (seq, prev_hash) only; a row that links correctly but whose
/// hash is not its contents' is accepted there and caught by the chain.
#[tokio::test]
async fn a_forged_row_that_links_is_caught_by_verify() {
    let (cluster, cp) = fresh().await;
    let records = append_three(&cp).await;
    let mut conn = raw(&cluster).await;
    sqlx::query(
        "INSERT INTO roomshard_audit VALUES (4, '2026-11-22T10:00:00Z', 'mallory', 'x', NULL, \
         '{}', $1, $2)",
    )
    .bind(records[2].hash.as_str())
    .bind("f".repeat(64))
    .execute(&mut conn)
    .await
    .expect("a linking row is accepted by the database");
    let v = cp.verify_audit().await.expect("verify");
    assert_eq!(v.broken.as_ref().map(|b| b.0), Some(4), "{v:?}");
}

/// Disables the append-only trigger, as the table's owner can.
async fn disable_audit_trigger(conn: &mut PgConnection) {
    sqlx::query("ALTER TABLE roomshard_audit DISABLE TRIGGER USER")
        .execute(&mut *conn)
        .await
        .expect("disable the trigger");
}

#[tokio::test]
async fn an_edited_detail_is_reported_at_its_seq() {
    let (cluster, cp) = fresh().await;
    for n in 0..5 {
        cp.append_audit(&entry("ops", n, None))
            .await
            .expect("append");
    }
    let mut conn = raw(&cluster).await;
    disable_audit_trigger(&mut conn).await;
    sqlx::query("UPDATE roomshard_audit SET detail = $1 WHERE seq = 3")
        .bind(r#"{"n":99}"#)
        .execute(&mut conn)
        .await
        .expect("edit");
    let v = cp.verify_audit().await.expect("verify");
    assert_eq!(v.broken.as_ref().map(|b| b.0), Some(3), "{v:?}");
    assert_eq!(v.rows, 5);
    let head: String =
        sqlx::query_scalar("SELECT hash FROM roomshard_audit ORDER BY seq DESC LIMIT 1")
            .fetch_one(&mut conn)
            .await
            .expect("head");
    assert_eq!(v.head, head, "a broken chain reports the stored last hash");
}

#[tokio::test]
async fn a_reformatted_detail_is_reported_even_when_it_parses_the_same() {
    let (cluster, cp) = fresh().await;
    append_three(&cp).await;
    let mut conn = raw(&cluster).await;
    disable_audit_trigger(&mut conn).await;
    sqlx::query("UPDATE roomshard_audit SET detail = ' ' || detail WHERE seq = 2")
        .execute(&mut conn)
        .await
        .expect("edit");
    let v = cp.verify_audit().await.expect("verify");
    assert_eq!(v.broken.as_ref().map(|b| b.0), Some(2), "{v:?}");
    assert_eq!(v.rows, 3);

    sqlx::query("UPDATE roomshard_audit SET detail = 'not json' WHERE seq = 1")
        .execute(&mut conn)
        .await
        .expect("edit");
    let v = cp.verify_audit().await.expect("verify");
    assert_eq!(v.broken.as_ref().map(|b| b.0), Some(1), "{v:?}");
}

#[tokio::test]
async fn a_deleted_middle_row_is_reported_at_the_next_seq() {
    let (cluster, cp) = fresh().await;
    for n in 0..5 {
        cp.append_audit(&entry("ops", n, None))
            .await
            .expect("append");
    }
    let mut conn = raw(&cluster).await;
    disable_audit_trigger(&mut conn).await;
    sqlx::query("DELETE FROM roomshard_audit WHERE seq = 3")
        .execute(&mut conn)
        .await
        .expect("delete");
    let v = cp.verify_audit().await.expect("verify");
    assert_eq!(v.broken.as_ref().map(|b| b.0), Some(4), "{v:?}");
    assert_eq!(v.rows, 4);
}

/// verify_audit reads the log a page at a time; a chain longer than a page verifies whole, and
/// a break past the first page is found at its seq.
#[tokio::test]
async fn a_log_longer_than_a_page_verifies_and_breaks_are_found_past_it() {
    let (cluster, cp) = fresh().await;
    for n in 0..1205 {
        cp.append_audit(&entry("ops", n, None))
            .await
            .expect("append");
    }
    assert_whole_chain(&cp, 1205).await;
    let mut conn = raw(&cluster).await;
    disable_audit_trigger(&mut conn).await;
    sqlx::query("UPDATE roomshard_audit SET actor = 'mallory' WHERE seq = 1100")
        .execute(&mut conn)
        .await
        .expect("edit");
    let v = cp.verify_audit().await.expect("verify");
    assert_eq!(v.broken.as_ref().map(|b| b.0), Some(1100), "{v:?}");
    assert_eq!(v.rows, 1205);
}

#[tokio::test]
async fn receipts_record_and_list_oldest_first() {
    let (_cluster, cp) = fresh().await;
    let receipt = |version: u64, reason: &str, room_id: &str| ReceiptRecord {
        room: room(room_id),
        version,
        reason: reason.into(),
        issued: "2026-11-22T10:00:00Z".into(),
        envelope: format!(r#"{{"payloadType":"x","v":{version}}}"#),
    };
    let a = receipt(4, "decentralise", "general");
    let b = receipt(5, "rotate", "general");
    let c = receipt(1, "import", "alpha");
    let d = receipt(2, "regrant", "general");
    cp.record_receipt(&a).await.expect("record");
    cp.record_receipt(&c).await.expect("record");
    cp.record_receipt(&b).await.expect("record");
    cp.record_receipt(&d).await.expect("record");
    cp.record_receipt(&a)
        .await
        .expect("recording again converges");
    let forged = ReceiptRecord {
        envelope: "{}".into(),
        ..a.clone()
    };
    let err = cp.record_receipt(&forged).await.expect_err("different");
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert_eq!(
        cp.receipts(&room("general")).await.expect("list"),
        vec![a, b, d],
        "oldest first, not by version"
    );
    assert_eq!(cp.receipts(&room("alpha")).await.expect("list"), vec![c]);
    assert_eq!(
        cp.receipts(&room("nobody")).await.expect("list"),
        Vec::new()
    );
}

/// A value PostgreSQL cannot store in text (a NUL character) is bad input, and nothing of the
/// change is written.
#[tokio::test]
async fn a_value_postgres_cannot_store_is_invalid_and_writes_nothing() {
    let (_cluster, cp) = fresh().await;
    let mut e = entry("ops", 1, None);
    e.actor = "nul\0here".into();
    let err = cp.append_audit(&e).await.expect_err("NUL in text");
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    let p = Placement::pooled(room("general"));
    let err = cp
        .change_placement(PlacementChange::Insert(&p), &e)
        .await
        .expect_err("NUL in the audit entry");
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert_eq!(cp.placement(&room("general")).await.expect("get"), None);
    assert_eq!(cp.audit_log(None).await.expect("log"), Vec::new());
}

/// A server that goes away is a retryable unavailable, and the error names no password.
#[tokio::test]
async fn a_stopped_server_is_a_retryable_unavailable() {
    let cluster = Cluster::start();
    let url = ProviderUrl::parse(
        &cluster
            .url("postgres")
            .replace("postgres@", "postgres:hunter2@"),
        "--control",
    )
    .expect("url");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(roomshard_postgres::connect_options(&url).expect("options"))
        .await
        .expect("connect");
    let cp = PgControlPlane::new(pool);
    cp.migrate().await.expect("migrate");
    drop(cluster);
    let err = cp
        .append_audit(&entry("ops", 1, None))
        .await
        .expect_err("the server is gone");
    assert!(err.is_retryable(), "{err:?}");
    let mut text = format!("{err} {err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(&format!(" {s} {s:?}"));
        source = s.source();
    }
    assert!(!text.contains("hunter2"), "{text}");
}
