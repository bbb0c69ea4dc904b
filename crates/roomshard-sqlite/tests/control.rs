//! The SQLite control plane against a real database file: migrations, placement
//! compare-and-swap, jobs, imports, the audit chain (including tampering and concurrent
//! appends) and receipts.

use roomshard_core::{
    AuditEntry, AuditRecord, ControlPlane, CopyCheckpoint, CopyJob, CopyPass, Error, IdMap,
    ImportRecord, ImportState, JobKind, Placement, PlacementChange, PlacementState, Profile,
    ReceiptRecord, RoomId, ServerUrl, TableCursor,
};
use roomshard_sqlite::SqliteControlPlane;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Connection, SqliteConnection, SqlitePool};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
}

/// The host's global database, opened the way hosts open it.
async fn pool(path: &Path) -> SqlitePool {
    roomshard_sqlite::open_global(path)
        .await
        .expect("open global database")
}

async fn fresh() -> (TempDir, PathBuf, SqliteControlPlane) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("global.db");
    let cp = SqliteControlPlane::new(pool(&path).await);
    cp.migrate().await.expect("migrate");
    (dir, path, cp)
}

/// A connection outside roomshard, as an attacker (or an operator with the sqlite3 shell) has.
async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnection::connect_with(&options(path))
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

#[tokio::test]
async fn migrate_twice_is_idempotent_and_uses_its_own_ledger() {
    let (_dir, path, cp) = fresh().await;
    cp.migrate().await.expect("second migrate");
    SqliteControlPlane::new(pool(&path).await)
        .migrate()
        .await
        .expect("third migrate, new pool");
    let mut conn = raw(&path).await;
    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, sha256 FROM roomshard_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .expect("ledger");
    assert_eq!(
        applied.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "each migration applied once, in order"
    );
    assert!(applied.iter().all(|(_, sha)| sha.len() == 64));
    let sqlx_ledger: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(&mut conn)
    .await
    .expect("sqlite_master");
    assert_eq!(sqlx_ledger, None, "sqlx's ledger is the host's, never ours");
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tables");
    assert!(
        names.iter().all(|n| n.starts_with("roomshard_")),
        "{names:?}"
    );
    for table in [
        "roomshard_placements",
        "roomshard_copy_jobs",
        "roomshard_imports",
        "roomshard_import_id_maps",
        "roomshard_audit",
        "roomshard_receipts",
    ] {
        assert!(
            names.iter().any(|n| n == table),
            "{table} missing: {names:?}"
        );
    }
}

#[tokio::test]
async fn a_changed_migration_checksum_is_refused() {
    let (_dir, path, cp) = fresh().await;
    let mut conn = raw(&path).await;
    sqlx::query("UPDATE roomshard_migrations SET sha256 = ? WHERE version = 1")
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
    let (_dir, path, cp) = fresh().await;
    let mut conn = raw(&path).await;
    sqlx::query("INSERT INTO roomshard_migrations VALUES (999, 'later', ?)")
        .bind("f".repeat(64))
        .execute(&mut conn)
        .await
        .expect("future migration");
    let err = cp.migrate().await.expect_err("unknown migration");
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
}

#[tokio::test]
async fn placements_insert_get_list_cas_and_delete_each_with_its_audit_entry() {
    let (_dir, _path, cp) = fresh().await;
    assert_eq!(cp.name(), "sqlite");
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

    // Every change that happened has its entry, every refused one has none: inserts of general
    // and alpha, the CAS at 0, the delete and the idempotent delete again.
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
async fn insert(cp: &SqliteControlPlane, p: &Placement) -> roomshard_core::Result<AuditRecord> {
    cp.change_placement(PlacementChange::Insert(p), &change_entry("insert", &p.room))
        .await
}

async fn update(
    cp: &SqliteControlPlane,
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
    cp: &SqliteControlPlane,
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
    let (_dir, path, cp) = fresh().await;
    let mut general = Placement::pooled(room("general"));
    insert(&cp, &general).await.expect("insert");
    // Make SQLite refuse every audit insert (as a full disk or a broken chain would).
    let mut conn = SqliteConnection::connect_with(&options(&path))
        .await
        .expect("connect");
    sqlx::query(
        "CREATE TRIGGER test_refuse_audit BEFORE INSERT ON roomshard_audit \
         BEGIN SELECT RAISE(ABORT, 'test: audit refused'); END",
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
    let mut other = Placement::pooled(room("other"));
    other.version = 0;
    insert(&cp, &other)
        .await
        .expect_err("the audit insert fails");
    assert_eq!(cp.placement(&room("other")).await.expect("get"), None);
    assert_eq!(cp.audit_log(None).await.expect("log").len(), 1);
}

#[tokio::test]
async fn jobs_save_replace_get_list_and_delete() {
    let (_dir, _path, cp) = fresh().await;
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
    let (_dir, _path, cp) = fresh().await;
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
    // Once done, the bundle is "already imported"; the room is free for another staging import
    // only after the first is gone.
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

/// hold_import: one holder per id, in this process and across control planes on the same file
/// (each its own open file, as two processes are); released on drop.
#[tokio::test]
async fn hold_import_has_one_live_holder_and_is_released_on_drop() {
    let (_dir, path, cp) = fresh().await;
    let other = SqliteControlPlane::new(pool(&path).await);
    let hold = cp.hold_import("imp-1").await.expect("hold").expect("free");
    assert!(cp.hold_import("imp-1").await.expect("again").is_none());
    assert!(
        other.hold_import("imp-1").await.expect("other").is_none(),
        "another holder of the database file sees it held"
    );
    let second = other
        .hold_import("imp-2")
        .await
        .expect("hold")
        .expect("free");
    drop(hold);
    let taken = other.hold_import("imp-1").await.expect("after drop");
    assert!(taken.is_some(), "released on drop");
    drop(second);
    assert!(
        cp.hold_import("../x").await.is_err(),
        "ids are checked before they name a file"
    );
}

#[tokio::test]
async fn imports_begin_finish_with_id_maps_list_and_delete() {
    let (_dir, _path, cp) = fresh().await;
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
            changes: vec![("1".into(), "101".into()), ("2".into(), "102".into())],
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
    assert_eq!(cp.import_id_maps("imp-1").await.expect("maps"), maps);
    assert_eq!(
        cp.import_id_maps("imp-2").await.expect("maps"),
        Vec::<IdMap>::new()
    );
    let err = cp.finish_import("nope", &maps).await.expect_err("unknown");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");

    let done = ImportRecord {
        state: ImportState::Done,
        ..first.clone()
    };
    assert_eq!(
        cp.imports(Some(ImportState::Done)).await.expect("done"),
        vec![done.clone()]
    );
    assert_eq!(
        cp.imports(Some(ImportState::Staging))
            .await
            .expect("staging"),
        vec![second.clone()]
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
    let (_dir, _path, cp) = fresh().await;
    let empty = cp.verify_audit().await.expect("verify empty");
    assert!(empty.is_intact());
    assert_eq!(empty.rows, 0);

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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_never_fork_the_chain() {
    let (_dir, path, _cp) = fresh().await;
    // Two pools and a control plane per task: only the database can serialise them.
    let pools = [pool(&path).await, pool(&path).await];
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let cp = SqliteControlPlane::new(pools[t as usize % 2].clone());
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
    let cp = SqliteControlPlane::new(pools[0].clone());
    let v = cp.verify_audit().await.expect("verify");
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.rows, 200);
    let log = cp.audit_log(None).await.expect("log");
    assert_eq!(log.len(), 200);
    assert_eq!(log.last().map(|r| r.seq), Some(200));
}

async fn drop_audit_triggers(conn: &mut SqliteConnection) {
    for trigger in [
        "roomshard_audit_no_update",
        "roomshard_audit_no_delete",
        "roomshard_audit_append_only",
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TRIGGER {trigger}")))
            .execute(&mut *conn)
            .await
            .expect("drop trigger");
    }
}

#[tokio::test]
async fn the_database_refuses_to_edit_delete_or_splice_audit_rows() {
    let (_dir, path, cp) = fresh().await;
    for n in 0..3 {
        cp.append_audit(&entry("ops", n, None))
            .await
            .expect("append");
    }
    let mut conn = raw(&path).await;
    let err = sqlx::query("UPDATE roomshard_audit SET actor = 'mallory' WHERE seq = 2")
        .execute(&mut conn)
        .await
        .expect_err("update refused");
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = sqlx::query("DELETE FROM roomshard_audit WHERE seq = 2")
        .execute(&mut conn)
        .await
        .expect_err("delete refused");
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = sqlx::query(
        "INSERT OR REPLACE INTO roomshard_audit SELECT seq, at, 'mallory', action, room, detail, \
         prev_hash, hash FROM roomshard_audit WHERE seq = 2",
    )
    .execute(&mut conn)
    .await
    .expect_err("replace refused");
    assert!(err.to_string().contains("append-only"), "{err}");
    assert!(cp.verify_audit().await.expect("verify").is_intact());
    assert_eq!(cp.audit_log(None).await.expect("log").len(), 3);
}

#[tokio::test]
async fn an_edited_detail_is_reported_at_its_seq() {
    let (_dir, path, cp) = fresh().await;
    for n in 0..5 {
        cp.append_audit(&entry("ops", n, None))
            .await
            .expect("append");
    }
    let mut conn = raw(&path).await;
    drop_audit_triggers(&mut conn).await;
    sqlx::query("UPDATE roomshard_audit SET detail = ? WHERE seq = 3")
        .bind(r#"{"n":99}"#)
        .execute(&mut conn)
        .await
        .expect("edit");
    let v = cp.verify_audit().await.expect("verify");
    assert_eq!(v.broken.as_ref().map(|b| b.0), Some(3), "{v:?}");
    assert_eq!(v.rows, 5);
}

#[tokio::test]
async fn a_reformatted_detail_is_reported_even_when_it_parses_the_same() {
    let (_dir, path, cp) = fresh().await;
    for n in 0..3 {
        cp.append_audit(&entry("ops", n, None))
            .await
            .expect("append");
    }
    let mut conn = raw(&path).await;
    drop_audit_triggers(&mut conn).await;
    sqlx::query("UPDATE roomshard_audit SET detail = ' ' || detail WHERE seq = 2")
        .execute(&mut conn)
        .await
        .expect("edit");
    let v = cp.verify_audit().await.expect("verify");
    assert_eq!(v.broken.as_ref().map(|b| b.0), Some(2), "{v:?}");

    sqlx::query("UPDATE roomshard_audit SET detail = 'not json' WHERE seq = 1")
        .execute(&mut conn)
        .await
        .expect("edit");
    let v = cp.verify_audit().await.expect("verify");
    assert_eq!(v.broken.as_ref().map(|b| b.0), Some(1), "{v:?}");
}

#[tokio::test]
async fn a_deleted_middle_row_is_reported_at_the_next_seq() {
    let (_dir, path, cp) = fresh().await;
    for n in 0..5 {
        cp.append_audit(&entry("ops", n, None))
            .await
            .expect("append");
    }
    let mut conn = raw(&path).await;
    drop_audit_triggers(&mut conn).await;
    sqlx::query("DELETE FROM roomshard_audit WHERE seq = 3")
        .execute(&mut conn)
        .await
        .expect("delete");
    let v = cp.verify_audit().await.expect("verify");
    assert_eq!(v.broken.as_ref().map(|b| b.0), Some(4), "{v:?}");
    assert_eq!(v.rows, 4);
}

#[tokio::test]
async fn receipts_record_and_list_oldest_first() {
    let (_dir, _path, cp) = fresh().await;
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
    cp.record_receipt(&a).await.expect("record");
    cp.record_receipt(&c).await.expect("record");
    cp.record_receipt(&b).await.expect("record");
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
        vec![a, b]
    );
    assert_eq!(cp.receipts(&room("alpha")).await.expect("list"), vec![c]);
    assert_eq!(
        cp.receipts(&room("nobody")).await.expect("list"),
        Vec::new()
    );
}

#[tokio::test]
async fn a_locked_database_is_a_retryable_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("global.db");
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options(&path).busy_timeout(std::time::Duration::from_millis(50)))
        .await
        .expect("pool");
    let cp = SqliteControlPlane::new(pool);
    cp.migrate().await.expect("migrate");
    let mut holder = raw(&path).await;
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .expect("hold the write lock");
    let err = cp
        .append_audit(&entry("ops", 1, None))
        .await
        .expect_err("locked");
    assert!(err.is_retryable(), "{err:?}");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("release");
    cp.append_audit(&entry("ops", 1, None))
        .await
        .expect("after release");
}

/// A database made by a build that knew only migration 1 (placements without the `adopted_*`
/// columns) upgrades in place: its placements read back, as not adopted, and can change.
#[tokio::test]
#[allow(clippy::unwrap_used)]
async fn a_version_1_database_upgrades_and_keeps_its_placements() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("global.sqlite3");
    let v1 = include_str!("../migrations/control/0001_init.sql");
    {
        let p = pool(&path).await;
        sqlx::raw_sql(v1).execute(&p).await.unwrap();
        sqlx::query(
            "CREATE TABLE roomshard_migrations (version INTEGER NOT NULL PRIMARY KEY, \
             applied_at TEXT NOT NULL, sha256 TEXT NOT NULL)",
        )
        .execute(&p)
        .await
        .unwrap();
        sqlx::query("INSERT INTO roomshard_migrations VALUES (1, '2026-11-01T00:00:00Z', ?)")
            .bind(hex::encode(Sha256::digest(v1.as_bytes())))
            .execute(&p)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO roomshard_placements (room, is_sharded, shard_url, media_bucket, \
             kms_key_ref, profile, region, state, version) VALUES ('old', 1, \
             'sqlite:///srv/shards/room_old.sqlite3', 'rooms/old', 'local:room/old', \
             'sovereign', NULL, 'sovereign', 5)",
        )
        .execute(&p)
        .await
        .unwrap();
        p.close().await;
    }
    let cp = SqliteControlPlane::new(pool(&path).await);
    cp.migrate().await.expect("upgrade to the current schema");
    let old = cp.placement(&room("old")).await.unwrap().expect("kept");
    assert_eq!(old.version, 5);
    assert!(old.adopted.is_none(), "{old:?}");
    assert!(
        old.providers.is_default(),
        "rows from before migration 3 were on the default providers: {old:?}"
    );
    assert_eq!(old.media_bucket.as_deref(), Some("rooms/old"));
    let mut next = old.clone();
    next.adopted.key = true;
    next.providers.shards = "db2".parse().unwrap();
    next.version = 6;
    cp.change_placement(
        PlacementChange::Update {
            next: &next,
            expected_version: 5,
        },
        &entry("test", 1, Some("old")),
    )
    .await
    .unwrap();
    assert!(
        cp.placement(&room("old"))
            .await
            .unwrap()
            .unwrap()
            .adopted
            .key
    );
    assert_eq!(
        cp.placement(&room("old"))
            .await
            .unwrap()
            .unwrap()
            .providers
            .shards
            .as_str(),
        "db2"
    );
}
