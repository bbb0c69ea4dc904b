//! Export and import end to end on the embedded default: bundles verify, imports reproduce the
//! room (modulo the new id and remapped ids), and every failure leaves nothing behind.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use roomshard::flows::{
    ArchiveSource, ExportOptions, ImportOptions, ImportTarget, ReaderFn, export, export_to_dir,
    import_archive, import_file, recover_imports,
};
use roomshard::home::Home;
use roomshard::{Error, Placement, PlacementState, RoomId, Roomshard};
use roomshard_core::{
    ImportRecord, ImportState, NoProgress, Result as CoreResult, Scope, async_trait,
};
use roomshard_example_mesh::schema;
use roomshard_verify::{TrustedKeys, VerifyLimits, VerifyOptions, verify_reader};

const CREATED_AT: &str = "2026-11-22T10:00:00Z";

fn room(id: &str) -> RoomId {
    RoomId::new(id).unwrap()
}

fn trusted(home: &Home) -> TrustedKeys {
    TrustedKeys::from_json(&std::fs::read(home.trusted_keys_path()).unwrap()).unwrap()
}

fn options() -> ExportOptions {
    ExportOptions {
        created_at: Some(CREATED_AT.to_string()),
        ..ExportOptions::default()
    }
}

/// A home with pooled room `id` seeded from the small workload.
/// A staging journal entry as a killed import leaves it.
fn staging_record(id: impl Into<String>, new_room: RoomId) -> ImportRecord {
    ImportRecord {
        id: id.into(),
        source_room: "general".into(),
        new_room,
        manifest_sha256: "0".repeat(64),
        signer_key_id: "p256-test".into(),
        state: ImportState::Staging,
        started_at_unix_ms: 1,
    }
}

async fn seeded(dir: &Path, id: &str) -> Home {
    let home = open_home(dir, schema()).await;
    seed_workload(&home.roomshard, &room(id), &small_workload(id)).await;
    home
}

async fn export_room(home: &Home, id: &str, out: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(out).unwrap();
    let (archive, sidecar, _) =
        export_to_dir(&home.roomshard, &room(id), out, &options(), &NoProgress)
            .await
            .expect("export");
    (archive, sidecar)
}

/// Imports `archive` (exported by `from`) into `home` with the default options.
async fn import_default(
    home: &Home,
    archive: &Path,
    from: &Home,
) -> roomshard::flows::ImportOutcome {
    import_file(
        &home.roomshard,
        archive,
        &trusted(from),
        &ImportOptions::default(),
        &NoProgress,
    )
    .await
    .expect("import")
}

/// Asserts a home holds no trace of any room: no placement, no import, no object, no shard.
async fn assert_empty(home: &Home, rooms: &[&RoomId]) {
    let rs = &home.roomshard;
    assert!(rs.control.placements().await.unwrap().is_empty());
    assert!(rs.control.imports(None).await.unwrap().is_empty());
    assert!(media_files(home).is_empty(), "{:?}", media_files(home));
    assert!(files_under(&home.dir().join("shards")).is_empty());
    // No room key or grant either (dedicated imports make one before writing).
    assert!(
        files_under(&home.dir().join("keys").join("rooms")).is_empty(),
        "{:?}",
        files_under(&home.dir().join("keys").join("rooms"))
    );
    for r in rooms {
        let parity = rs
            .shards
            .parity(&Scope::Pooled((*r).clone()), &rs.schema)
            .await
            .unwrap();
        assert!(parity.tables.iter().all(|t| t.rows == 0), "{parity:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_verifies_with_sidecar_and_matches_parity() {
    let tmp = tempfile::tempdir().unwrap();
    let home = seeded(&tmp.path().join("a"), "general").await;
    let rs = &home.roomshard;
    let events = std::sync::Mutex::new(Vec::new());
    let sink = |e| events.lock().unwrap().push(e);
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let (archive, sidecar, outcome) = export_to_dir(rs, &room("general"), &out, &options(), &sink)
        .await
        .expect("export");
    assert_eq!(archive, out.join("room_general.tar.zst"));
    assert_eq!(outcome.file_name, "room_general.tar.zst");
    assert!(
        !files_under(&out)
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".partial"))
    );

    let keys = trusted(&home);
    let report = verify_reader(
        std::fs::File::open(&archive).unwrap(),
        keys.clone(),
        VerifyOptions {
            limits: VerifyLimits::default(),
            hash_archive: true,
        },
    );
    assert!(report.valid, "{:?}", report.error);
    assert_eq!(
        report.archive_sha256.as_deref(),
        Some(outcome.archive_sha256.as_str())
    );
    assert_eq!(
        report.manifest_sha256.as_deref(),
        Some(outcome.manifest_sha256.as_str())
    );
    assert_eq!(
        std::fs::metadata(&archive).unwrap().len(),
        outcome.archive_bytes
    );
    let info = roomshard_verify::verify_sidecar(&std::fs::read(&sidecar).unwrap(), &report, &keys)
        .expect("sidecar verifies");
    assert_eq!(info.key_id, rs.config.signing_key_id);
    assert_eq!(std::fs::read(&sidecar).unwrap(), outcome.sidecar);

    let parity = rs
        .shards
        .parity(&Scope::Pooled(room("general")), &rs.schema)
        .await
        .unwrap();
    let found: Vec<(String, u64)> = report
        .tables
        .iter()
        .map(|t| (t.name.clone(), t.found_rows.unwrap()))
        .collect();
    let expected: Vec<(String, u64)> = parity
        .tables
        .iter()
        .map(|t| (t.table.clone(), t.rows))
        .collect();
    assert_eq!(found, expected);
    assert_eq!(outcome.rows, expected.iter().map(|t| t.1).sum::<u64>());
    assert_eq!(outcome.objects, 4);
    assert_eq!(outcome.media_bytes, 73_010);

    let events = events.lock().unwrap().clone();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, roomshard::ProgressEvent::Planned { .. }))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, roomshard::ProgressEvent::Rows { .. }))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, roomshard::ProgressEvent::Objects { done: 4, .. }))
    );
    let audit = rs.control.audit_log(Some(&room("general"))).await.unwrap();
    assert!(audit.iter().any(|a| a.entry.action == "export.finished"));

    // Same inputs, same bytes.
    let mut again = Vec::new();
    let second = export(rs, &room("general"), &mut again, &options(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(second.archive_sha256, outcome.archive_sha256);
    assert_eq!(again, std::fs::read(&archive).unwrap());

    // zstd workers: an equally valid archive (on a large room, different bytes from the
    // default's), the same bytes for any count ≥ 1 — reproducible across machines too.
    let mut with_workers = Vec::new();
    for workers in [1, 3] {
        let mut bytes = Vec::new();
        let with = ExportOptions {
            zstd_workers: workers,
            ..options()
        };
        export(rs, &room("general"), &mut bytes, &with, &NoProgress)
            .await
            .unwrap();
        let report = verify_reader(&bytes[..], keys.clone(), VerifyOptions::default());
        assert!(report.valid, "{workers} workers: {:?}", report.error);
        with_workers.push(bytes);
    }
    assert!(
        with_workers[0] == with_workers[1],
        "1 and 3 zstd workers wrote different archives"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn import_into_another_home_reproduces_rows_and_media() {
    let tmp = tempfile::tempdir().unwrap();
    let a = seeded(&tmp.path().join("a"), "general").await;
    // An object whose key embeds the room id is moved under the new id.
    put(
        &a.roomshard,
        &Scope::Pooled(room("general")),
        "general/avatar.png",
        b"avatar".to_vec(),
    )
    .await;
    let (archive, _) = export_room(&a, "general", &tmp.path().join("out")).await;

    let b = open_home(&tmp.path().join("b"), schema()).await;
    let outcome = import_default(&b, &archive, &a).await;
    let new = outcome.new_room.clone();
    // A fresh home has no room `general`: the import keeps the bundle's own id.
    assert_eq!(new, room("general"));
    assert_eq!(outcome.source_room, "general");
    assert!(outcome.id_maps.is_empty(), "{:?}", outcome.id_maps);
    assert_eq!(outcome.objects, 5);

    let original = dump_text(&a.roomshard, &Scope::Pooled(room("general"))).await;
    let imported = dump_text(&b.roomshard, &Scope::Pooled(new.clone())).await;
    assert_eq!(with_room(&imported, new.as_str(), "general"), original);

    let mut before = objects(&a.roomshard, &Scope::Pooled(room("general"))).await;
    let avatar = before.remove("general/avatar.png").unwrap();
    before.insert(format!("{new}/avatar.png"), avatar);
    assert_eq!(
        objects(&b.roomshard, &Scope::Pooled(new.clone())).await,
        before
    );

    let placement = b.roomshard.control.placement(&new).await.unwrap().unwrap();
    assert_eq!(placement.state, PlacementState::Pooled);
    let imports = b.roomshard.control.imports(None).await.unwrap();
    assert_eq!(imports.len(), 1);
    assert_eq!(imports[0].state, ImportState::Done);
    assert_eq!(imports[0].manifest_sha256, outcome.manifest_sha256);
    let receipts = b.roomshard.control.receipts(&new).await.unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].reason, "import");
    let audit = b.roomshard.control.audit_log(Some(&new)).await.unwrap();
    assert!(audit.iter().any(|r| r.entry.action == "import.finished"));

    // The imported room exports again, and that bundle verifies too.
    let (again, _) = export_room(&b, new.as_str(), &tmp.path().join("out2")).await;
    let report = verify_reader(
        std::fs::File::open(&again).unwrap(),
        trusted(&b),
        VerifyOptions::default(),
    );
    assert!(report.valid, "{:?}", report.error);
}

/// A bundle crosses engines both ways: exported from SQLite, imported into PostgreSQL; exported
/// from there, imported into SQLite again; rows (modulo the room id) and objects equal at every
/// step, and each bundle verifies. Runs on both engines whatever `ROOMSHARD_TEST_BACKEND` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_crosses_engines_sqlite_to_postgres_and_back() {
    let tmp = tempfile::tempdir().unwrap();
    let open_on = |backend: Backend, dir: PathBuf| async move {
        Home::open(&dir, schema(), options_on(backend, &dir))
            .await
            .unwrap()
    };
    let a = open_on(Backend::Sqlite, tmp.path().join("a")).await;
    assert!(matches!(a.shards, roomshard::home::HomeShards::Sqlite(_)));
    seed_workload(&a.roomshard, &room("general"), &small_workload("general")).await;
    let original = dump_text(&a.roomshard, &Scope::Pooled(room("general"))).await;
    let original_objects = objects(&a.roomshard, &Scope::Pooled(room("general"))).await;
    let (archive, _) = export_room(&a, "general", &tmp.path().join("out-a")).await;

    // SQLite → PostgreSQL.
    let b = open_on(Backend::Postgres, tmp.path().join("b")).await;
    assert!(matches!(b.shards, roomshard::home::HomeShards::Postgres(_)));
    let into_pg = import_default(&b, &archive, &a).await;
    let on_pg = into_pg.new_room.clone();
    let dumped = dump_text(&b.roomshard, &Scope::Pooled(on_pg.clone())).await;
    assert_eq!(with_room(&dumped, on_pg.as_str(), "general"), original);
    assert_eq!(
        objects(&b.roomshard, &Scope::Pooled(on_pg.clone()))
            .await
            .len(),
        original_objects.len()
    );

    // PostgreSQL → SQLite, from a sovereign room (its own schema) this time.
    roomshard::flows::decentralise(&b.roomshard, &on_pg, &NoProgress)
        .await
        .unwrap();
    let (archive, _) = export_room(&b, on_pg.as_str(), &tmp.path().join("out-b")).await;
    let c = open_on(Backend::Sqlite, tmp.path().join("c")).await;
    let into_sqlite = import_default(&c, &archive, &b).await;
    let back = into_sqlite.new_room.clone();
    let dumped = dump_text(&c.roomshard, &Scope::Pooled(back.clone())).await;
    assert_eq!(with_room(&dumped, back.as_str(), "general"), original);
    assert_eq!(
        objects(&c.roomshard, &Scope::Pooled(back.clone())).await,
        original_objects
    );
    let report = verify_reader(
        std::fs::File::open(&archive).unwrap(),
        trusted(&b),
        VerifyOptions::default(),
    );
    assert!(report.valid, "{:?}", report.error);
}

/// Parses COPY text rows into fields.
fn rows(text: &str) -> Vec<Vec<&str>> {
    text.lines().map(|l| l.split('\t').collect()).collect()
}

/// Checks that every reference in a Mesh room's dump points at a row of the same dump.
fn assert_references_consistent(dump: &BTreeMap<String, String>) {
    let ids =
        |t: &str| -> BTreeSet<String> { rows(&dump[t]).iter().map(|r| r[0].to_string()).collect() };
    let members = ids("members");
    let messages = ids("messages");
    for m in rows(&dump["messages"]) {
        assert!(members.contains(m[2]), "author {}", m[2]);
        assert!(
            m[4] == "\\N" || messages.contains(m[4]),
            "reply_to {}",
            m[4]
        );
    }
    for a in rows(&dump["attachments"]) {
        assert!(messages.contains(a[2]), "attachment of {}", a[2]);
    }
    for r in rows(&dump["reactions"]) {
        assert!(messages.contains(r[0]) && members.contains(r[2]), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn importing_twice_remaps_colliding_ids_consistently() {
    let tmp = tempfile::tempdir().unwrap();
    let a = seeded(&tmp.path().join("a"), "general").await;
    let (archive, _) = export_room(&a, "general", &tmp.path().join("out")).await;
    let b = open_home(&tmp.path().join("b"), schema()).await;
    let keys = trusted(&a);
    let first = import_file(
        &b.roomshard,
        &archive,
        &keys,
        &ImportOptions::default(),
        &NoProgress,
    )
    .await
    .unwrap();
    let second = import_file(
        &b.roomshard,
        &archive,
        &keys,
        &ImportOptions {
            new_room: Some(room("copy")),
            allow_duplicate: true,
            ..ImportOptions::default()
        },
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(second.new_room, room("copy"));
    assert!(first.id_maps.is_empty());
    let remapped: BTreeSet<&str> = second
        .id_maps
        .iter()
        .filter(|m| !m.changes.is_empty())
        .map(|m| m.table.as_str())
        .collect();
    assert_eq!(
        remapped,
        BTreeSet::from(["attachments", "members", "messages"])
    );
    assert_eq!(
        b.roomshard
            .control
            .import_id_maps(&second.import_id)
            .await
            .unwrap(),
        second.id_maps
    );

    let original = dump_text(&a.roomshard, &Scope::Pooled(room("general"))).await;
    let one = dump_text(&b.roomshard, &Scope::Pooled(first.new_room.clone())).await;
    let two = dump_text(&b.roomshard, &Scope::Pooled(room("copy"))).await;
    assert_references_consistent(&one);
    assert_references_consistent(&two);
    for (table, text) in &original {
        assert_eq!(two[table].lines().count(), text.lines().count(), "{table}");
    }
    // Undoing the remap gives the original rows back.
    let undo = |table: &str| -> BTreeMap<String, String> {
        second
            .id_maps
            .iter()
            .filter(|m| m.table == table)
            .flat_map(|m| m.changes.iter().map(|(o, n)| (n.clone(), o.clone())))
            .collect()
    };
    let (members_back, messages_back) = (undo("members"), undo("messages"));
    let mut fixed: Vec<Vec<String>> = two["messages"]
        .lines()
        .map(|line| {
            let mut f: Vec<String> = line.split('\t').map(str::to_string).collect();
            for i in [0, 4] {
                if let Some(o) = messages_back.get(&f[i]) {
                    f[i] = o.clone();
                }
            }
            if let Some(o) = members_back.get(&f[2]) {
                f[2] = o.clone();
            }
            f[1] = "general".to_string();
            f
        })
        .collect();
    fixed.sort_by_key(|f| f[0].parse::<i64>().unwrap());
    let undone: String = fixed.iter().map(|f| f.join("\t") + "\n").collect();
    assert_eq!(undone, original["messages"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn import_into_a_dedicated_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let a = seeded(&tmp.path().join("a"), "general").await;
    let (archive, _) = export_room(&a, "general", &tmp.path().join("out")).await;
    let b = open_home(&tmp.path().join("b"), schema()).await;
    let outcome = import_file(
        &b.roomshard,
        &archive,
        &trusted(&a),
        &ImportOptions {
            new_room: Some(room("sovereign-copy")),
            target: ImportTarget::Dedicated,
            ..ImportOptions::default()
        },
        &NoProgress,
    )
    .await
    .expect("dedicated import");
    let new = outcome.new_room;
    let p = b.roomshard.control.placement(&new).await.unwrap().unwrap();
    assert_eq!(p.state, PlacementState::Sovereign);
    assert!(p.is_sharded && p.media_bucket.is_some() && p.kms_key_ref.is_some());
    let original = dump_text(&a.roomshard, &Scope::Pooled(room("general"))).await;
    let imported = dump_text(&b.roomshard, &dedicated(&b.roomshard, &new).await).await;
    assert_eq!(with_room(&imported, new.as_str(), "general"), original);
    assert_eq!(
        objects(&b.roomshard, &dedicated(&b.roomshard, &new).await).await,
        objects(&a.roomshard, &Scope::Pooled(room("general"))).await
    );
    // Nothing landed in the pooled scope.
    assert!(
        objects(&b.roomshard, &Scope::Pooled(new.clone()))
            .await
            .is_empty()
    );
    // A sovereign room exports from its shard.
    let (again, _) = export_room(&b, new.as_str(), &tmp.path().join("out2")).await;
    assert!(
        verify_reader(
            std::fs::File::open(&again).unwrap(),
            trusted(&b),
            VerifyOptions::default()
        )
        .valid
    );
}

/// Reads `limits: a=1 b=2` from a vector's `.expect` file.
fn expect_limits(expect: &str) -> VerifyLimits {
    let mut limits = VerifyLimits::default();
    for line in expect.lines() {
        if let Some(rest) = line.strip_prefix("limits:") {
            for pair in rest.split_whitespace() {
                let (name, value) = pair.split_once('=').unwrap();
                limits.set(name, value.parse().unwrap()).unwrap();
            }
        }
    }
    limits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_failing_vector_is_refused_and_leaves_nothing() {
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/vectors");
    let keys =
        TrustedKeys::from_json(&std::fs::read(vectors.join("trusted-keys.json")).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let home = open_home(&tmp.path().join("h"), schema()).await;
    let victim = room("victim");
    let mut seen = 0;
    let mut names: Vec<PathBuf> = std::fs::read_dir(&vectors)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .collect();
    names.sort();
    for path in names {
        let stem = path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".tar.zst", "");
        let expect = std::fs::read_to_string(vectors.join(format!("{stem}.expect"))).unwrap();
        if expect.starts_with("expect: valid") {
            continue;
        }
        let reason = expect
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("expect: fail_")
            .to_string();
        seen += 1;
        let err = import_file(
            &home.roomshard,
            &path,
            &keys,
            &ImportOptions {
                new_room: Some(victim.clone()),
                target: ImportTarget::Pooled,
                limits: expect_limits(&expect),
                spool_dir: Some(home.tmp_dir()),
                allow_duplicate: false,
            },
            &NoProgress,
        )
        .await
        .expect_err(&stem);
        match &err {
            Error::Invalid { what, detail } => {
                assert_eq!(what, "bundle", "{stem}: {err}");
                assert!(
                    detail.starts_with(&format!("{reason}: ")),
                    "{stem}: {detail}"
                );
            }
            other => panic!("{stem}: {other}"),
        }
        assert_empty(&home, &[&victim]).await;
    }
    assert!(seen >= 27, "only {seen} failing vectors");
    let audit = home.roomshard.control.audit_log(None).await.unwrap();
    assert!(audit.iter().all(|r| !r.entry.action.starts_with("import.")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bundle_of_another_schema_is_refused_before_writing() {
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/vectors");
    let keys =
        TrustedKeys::from_json(&std::fs::read(vectors.join("trusted-keys.json")).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let home = open_home(&tmp.path().join("h"), schema()).await;
    let err = import_file(
        &home.roomshard,
        &vectors.join("valid_basic.tar.zst"),
        &keys,
        &ImportOptions {
            new_room: Some(room("victim")),
            ..ImportOptions::default()
        },
        &NoProgress,
    )
    .await
    .expect_err("schema drift");
    assert!(
        matches!(&err, Error::Invalid { detail, .. } if detail.starts_with("schema_mismatch")),
        "{err}"
    );
    assert_empty(&home, &[&room("victim")]).await;
}

/// A second open of a home (another process: its own database handle and lock files) while an
/// import is staging leaves the import alone — it completes — instead of rolling it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opening_a_home_during_a_live_import_does_not_roll_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let a = seeded(&tmp.path().join("a"), "general").await;
    let (archive, _) = export_room(&a, "general", &tmp.path().join("out")).await;
    let dir = tmp.path().join("b");
    let b = open_home(&dir, schema()).await;
    let slow = Arc::new(FailingMedia::new(b.roomshard.media.clone(), 0));
    slow.put_delay_ms
        .store(150, std::sync::atomic::Ordering::SeqCst);
    let rs = Roomshard {
        media: slow.clone(),
        ..b.roomshard.clone()
    };
    let keys = trusted(&a);
    let running = tokio::spawn(async move {
        import_file(
            &rs,
            &archive,
            &keys,
            &ImportOptions {
                new_room: Some(room("live")),
                ..ImportOptions::default()
            },
            &NoProgress,
        )
        .await
    });
    // Wait until the import is journalled and writing objects.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while slow.puts.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the import never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let staging = b
        .roomshard
        .control
        .imports(Some(ImportState::Staging))
        .await
        .unwrap();
    assert_eq!(
        staging.len(),
        1,
        "the import is staging while the home is opened"
    );
    let other = open_home(&dir, schema()).await;
    assert!(
        !running.is_finished(),
        "the second open ran while the import was still running"
    );
    assert!(
        recover_imports(&other.roomshard).await.unwrap().is_empty(),
        "nothing to roll back: the staging import is live"
    );
    let outcome = running.await.unwrap().expect("the live import completes");
    assert_eq!(outcome.new_room, room("live"));
    assert!(
        other
            .roomshard
            .control
            .imports(Some(ImportState::Staging))
            .await
            .unwrap()
            .is_empty()
    );
    // And a staging import nobody holds (its process died) is still rolled back by an open.
    other
        .roomshard
        .control
        .begin_import(
            &staging_record("00000000-0000-4000-8000-0000000000aa", room("dead")),
            true,
        )
        .await
        .unwrap();
    assert_eq!(recover_imports(&other.roomshard).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_import_failing_after_writes_began_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let a = seeded(&tmp.path().join("a"), "general").await;
    let (archive, _) = export_room(&a, "general", &tmp.path().join("out")).await;
    let b = open_home(&tmp.path().join("b"), schema()).await;
    for target in [ImportTarget::Pooled, ImportTarget::Dedicated] {
        let rs = Roomshard {
            media: Arc::new(FailingMedia::new(b.roomshard.media.clone(), 3)),
            ..b.roomshard.clone()
        };
        let err = import_file(
            &rs,
            &archive,
            &trusted(&a),
            &ImportOptions {
                new_room: Some(room("doomed")),
                target,
                ..ImportOptions::default()
            },
            &NoProgress,
        )
        .await
        .expect_err("the third put fails");
        assert!(err.to_string().contains("test store"), "{err}");
        assert_empty(&b, &[&room("doomed")]).await;
        let audit = b
            .roomshard
            .control
            .audit_log(Some(&room("doomed")))
            .await
            .unwrap();
        assert!(audit.iter().any(|r| r.entry.action == "import.rolled_back"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_media_key_the_new_id_makes_too_long_fails_after_the_rows_and_rolls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let a = open_home(&tmp.path().join("a"), schema()).await;
    seed_workload(&a.roomshard, &room("a"), &small_workload("a")).await;
    // 190 bytes (the limit is 194); under a 48-character room id it would be 237.
    let long_key = format!("a/{}", vec!["k".repeat(20); 9].join("/"));
    put(
        &a.roomshard,
        &Scope::Pooled(room("a")),
        &long_key,
        b"x".to_vec(),
    )
    .await;
    let (archive, _) = export_room(&a, "a", &tmp.path().join("out")).await;
    let b = open_home(&tmp.path().join("b"), schema()).await;
    let long_room = room(&"r".repeat(48));
    let err = import_file(
        &b.roomshard,
        &archive,
        &trusted(&a),
        &ImportOptions {
            new_room: Some(long_room.clone()),
            ..ImportOptions::default()
        },
        &NoProgress,
    )
    .await
    .expect_err("key too long");
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert_empty(&b, &[&long_room]).await;
}

/// A shard store that, when asked to create a shard, replaces the bundle being imported with
/// another one: the file changes between the verification pass and the loading pass.
struct SwapOnEnsureShard {
    inner: Arc<dyn roomshard_core::ShardStore>,
    target: PathBuf,
    replacement: Vec<u8>,
}

#[async_trait]
impl roomshard_core::ShardStore for SwapOnEnsureShard {
    fn name(&self) -> &str {
        "swap"
    }
    fn capabilities(&self) -> roomshard_core::ShardCapabilities {
        self.inner.capabilities()
    }
    fn locate_shard(
        &self,
        room: &RoomId,
        region: Option<&str>,
    ) -> CoreResult<roomshard_core::ServerUrl> {
        self.inner.locate_shard(room, region)
    }
    async fn ensure_shard(
        &self,
        room: &RoomId,
        at: &roomshard::Location,
        schema: &roomshard::RoomSchema,
    ) -> CoreResult<roomshard_core::ShardRef> {
        std::fs::write(&self.target, &self.replacement).unwrap();
        self.inner.ensure_shard(room, at, schema).await
    }
    async fn copy_room(
        &self,
        request: roomshard_core::CopyRequest<'_>,
    ) -> CoreResult<roomshard_core::CopyOutcome> {
        self.inner.copy_room(request).await
    }
    async fn parity(
        &self,
        scope: &Scope,
        schema: &roomshard::RoomSchema,
    ) -> CoreResult<roomshard_core::Parity> {
        self.inner.parity(scope, schema).await
    }
    async fn drop_room(&self, scope: &Scope, schema: &roomshard::RoomSchema) -> CoreResult<()> {
        self.inner.drop_room(scope, schema).await
    }
    async fn dump(
        &self,
        scope: &Scope,
        schema: &roomshard::RoomSchema,
        sink: &mut dyn roomshard_core::DumpSink,
    ) -> CoreResult<Vec<roomshard_core::TableCount>> {
        self.inner.dump(scope, schema, sink).await
    }
    async fn restore(
        &self,
        scope: &Scope,
        schema: &roomshard::RoomSchema,
        source: &mut dyn roomshard_core::DumpSource,
        remap: &roomshard_core::IdRemap,
    ) -> CoreResult<roomshard_core::RestoreOutcome> {
        self.inner.restore(scope, schema, source, remap).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bundle_swapped_between_the_passes_is_rolled_back() {
    let tmp = tempfile::tempdir().unwrap();
    let a = seeded(&tmp.path().join("a"), "general").await;
    let (archive, _) = export_room(&a, "general", &tmp.path().join("out")).await;
    // Another valid bundle of the same room, with one row more.
    seed_rows(
        &a.roomshard,
        &Scope::Pooled(room("general")),
        vec![(
            "members".to_string(),
            b"999\tgeneral\tintruder\t\\N\t2026-01-01 00:00:00+00\tmember\n".to_vec(),
        )],
    )
    .await;
    let (other, _) = export_room(&a, "general", &tmp.path().join("other")).await;
    let replacement = std::fs::read(&other).unwrap();
    assert_ne!(replacement, std::fs::read(&archive).unwrap());

    let b = open_home(&tmp.path().join("b"), schema()).await;
    let rs = Roomshard {
        shards: Arc::new(SwapOnEnsureShard {
            inner: b.roomshard.shards.clone(),
            target: archive.clone(),
            replacement,
        }),
        ..b.roomshard.clone()
    };
    let err = import_file(
        &rs,
        &archive,
        &trusted(&a),
        &ImportOptions {
            new_room: Some(room("swapped")),
            target: ImportTarget::Dedicated,
            ..ImportOptions::default()
        },
        &NoProgress,
    )
    .await
    .expect_err("swapped");
    assert!(err.to_string().contains("changed_between_passes"), "{err}");
    assert_empty(&b, &[&room("swapped")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_staging_import_left_by_a_crash_is_rolled_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("h");
    let ghost = room("ghost");
    {
        let home = open_home(&dir, schema()).await;
        let rs = &home.roomshard;
        for (i, r) in [ghost.clone(), room("ghost2")].into_iter().enumerate() {
            rs.control
                .begin_import(
                    &staging_record(format!("00000000-0000-4000-8000-00000000000{i}"), r.clone()),
                    true,
                )
                .await
                .unwrap();
            // A partial load, as a killed import leaves it.
            seed_workload(rs, &r, &small_workload(r.as_str())).await;
        }
        // A crash after the placement was written, too.
        insert_placement(rs, &Placement::pooled(room("ghost2"))).await;
        // One recovered in place…
        assert_eq!(recover_imports(rs).await.unwrap().len(), 2);
        assert_empty(&home, &[&ghost, &room("ghost2")]).await;
        // …and another left behind for the next open.
        rs.control
            .begin_import(
                &staging_record("00000000-0000-4000-8000-000000000009", ghost.clone()),
                true,
            )
            .await
            .unwrap();
        seed_workload(rs, &ghost, &small_workload("ghost")).await;
        assert!(!media_files(&home).is_empty());
    }
    let home = open_home(&dir, schema()).await;
    assert_empty(&home, &[&ghost]).await;
    let audit = home
        .roomshard
        .control
        .audit_log(Some(&ghost))
        .await
        .unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|r| r.entry.action == "import.rolled_back")
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sealed_room_is_not_exported_and_no_file_is_left() {
    let tmp = tempfile::tempdir().unwrap();
    let home = seeded(&tmp.path().join("a"), "general").await;
    let mut p = Placement::pooled(room("general"));
    p.state = PlacementState::Sealed;
    p.is_sharded = true;
    insert_placement(&home.roomshard, &p).await;
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let err = export_to_dir(
        &home.roomshard,
        &room("general"),
        &out,
        &options(),
        &NoProgress,
    )
    .await
    .expect_err("sealed");
    assert!(matches!(err, Error::Sealed { .. }), "{err}");
    assert!(files_under(&out).is_empty());

    let err = export_to_dir(
        &home.roomshard,
        &room("nobody"),
        &out,
        &options(),
        &NoProgress,
    )
    .await
    .expect_err("unknown room");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(files_under(&out).is_empty());
}

/// An `AsyncWrite` that fails once `limit` bytes were written.
struct FailingWriter {
    written: usize,
    limit: usize,
}

impl tokio::io::AsyncWrite for FailingWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.written + buf.len() > self.limit {
            return std::task::Poll::Ready(Err(std::io::Error::other("disk full")));
        }
        self.written += buf.len();
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_writer_fails_the_export_without_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    let home = seeded(&tmp.path().join("a"), "general").await;
    // Incompressible and larger than every channel buffer together, so the writer thread would
    // block on a full channel if a failed output did not close it.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..2 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    put(
        &home.roomshard,
        &Scope::Pooled(room("general")),
        "zz/noise.bin",
        noise,
    )
    .await;
    for limit in [0, 100, 70_000, 1 << 20] {
        let out = FailingWriter { written: 0, limit };
        let err = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            export(
                &home.roomshard,
                &room("general"),
                out,
                &options(),
                &NoProgress,
            ),
        )
        .await
        .expect("no hang")
        .expect_err("writer fails");
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
        assert!(err.to_string().contains("writing the export"), "{err}");
    }
    // The spool files went with the failed exports.
    let spool = tmp.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let _ = export(
        &home.roomshard,
        &room("general"),
        FailingWriter {
            written: 0,
            limit: 10,
        },
        &ExportOptions {
            spool_dir: Some(spool.clone()),
            ..options()
        },
        &NoProgress,
    )
    .await;
    assert!(files_under(&spool).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_no_file_system_keeps_apart_export_under_portable_names_and_import_back() {
    let tmp = tempfile::tempdir().unwrap();
    let a = seeded(&tmp.path().join("a"), "general").await;
    let scope = Scope::Pooled(room("general"));
    // Case twins, normalisation twins (NFC and NFD), a bidi override, a literal `%`.
    let keys = [
        ("twins/Readme", "media/twins/%52eadme"),
        ("twins/readme", "media/twins/readme"),
        ("twins/caf\u{e9}", "media/twins/caf%c3%a9"),
        ("twins/cafe\u{301}", "media/twins/cafe%cc%81"),
        ("evil\u{202e}gnp.exe", "media/evil%e2%80%aegnp.exe"),
        ("sale/100%.png", "media/sale/100%25.png"),
    ];
    for (key, _) in keys {
        put(&a.roomshard, &scope, key, key.as_bytes().to_vec()).await;
    }
    let (archive, _) = export_room(&a, "general", &tmp.path().join("out")).await;
    let (report, manifest) = roomshard_verify::verify_reader_with_manifest(
        std::fs::File::open(&archive).unwrap(),
        trusted(&a),
        VerifyOptions::default(),
    );
    assert!(report.valid, "{:?}", report.error);
    let paths: BTreeSet<String> = manifest
        .unwrap()
        .files
        .into_iter()
        .map(|f| f.path)
        .collect();
    for (key, path) in keys {
        assert!(
            paths.contains(path),
            "{key:?} exported as {path:?}: {paths:?}"
        );
    }

    let b = open_home(&tmp.path().join("b"), schema()).await;
    let outcome = import_default(&b, &archive, &a).await;
    let imported = objects(&b.roomshard, &Scope::Pooled(outcome.new_room.clone())).await;
    for (key, _) in keys {
        assert_eq!(
            imported.get(key).map(Vec::as_slice),
            Some(key.as_bytes()),
            "{key:?} comes back under its own key"
        );
    }
    assert_eq!(imported, objects(&a.roomshard, &scope).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_import_of_the_same_bundle_is_refused_unless_duplicates_are_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let a = seeded(&tmp.path().join("a"), "general").await;
    let (archive, _) = export_room(&a, "general", &tmp.path().join("out")).await;
    let b = open_home(&tmp.path().join("b"), schema()).await;
    let first = import_default(&b, &archive, &a).await;
    assert_eq!(first.new_room, room("general"));

    let err = import_file(
        &b.roomshard,
        &archive,
        &trusted(&a),
        &ImportOptions::default(),
        &NoProgress,
    )
    .await
    .expect_err("a duplicate");
    assert!(
        matches!(&err, Error::Conflict { .. })
            && err
                .to_string()
                .contains("already imported here as room general")
            && err.to_string().contains("--allow-duplicate"),
        "{err}"
    );
    assert_eq!(b.roomshard.control.imports(None).await.unwrap().len(), 1);
    assert_eq!(b.roomshard.control.placements().await.unwrap().len(), 1);

    let copy = import_file(
        &b.roomshard,
        &archive,
        &trusted(&a),
        &ImportOptions {
            allow_duplicate: true,
            ..ImportOptions::default()
        },
        &NoProgress,
    )
    .await
    .expect("allowed duplicate");
    // `general` is taken now, so the copy gets a derived id.
    let id = copy.new_room.as_str();
    assert!(
        id.starts_with("general-") && id.len() == "general-".len() + 6,
        "{id}"
    );
    assert_eq!(copy.manifest_sha256, first.manifest_sha256);
}

/// A reader factory over bytes in memory (an upload, a bucket object): the first read gets
/// `first`, every later one `later`.
fn memory_source(first: Vec<u8>, later: Vec<u8>) -> Arc<dyn ArchiveSource> {
    let opened = std::sync::atomic::AtomicUsize::new(0);
    Arc::new(ReaderFn::new("upload:room_general.tar.zst", move || {
        let n = opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let bytes = if n == 0 { first.clone() } else { later.clone() };
        Ok(Box::new(std::io::Cursor::new(bytes)) as Box<dyn std::io::Read + Send>)
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn import_reads_any_reopenable_source_through_the_verifiers_parser() {
    let tmp = tempfile::tempdir().unwrap();
    let a = seeded(&tmp.path().join("a"), "general").await;
    let (archive, _) = export_room(&a, "general", &tmp.path().join("out")).await;
    let bytes = std::fs::read(&archive).unwrap();
    let b = open_home(&tmp.path().join("b"), schema()).await;
    let import = |source: Arc<dyn ArchiveSource>, new_room: &str| {
        let rs = b.roomshard.clone();
        let keys = trusted(&a);
        let new_room = room(new_room);
        async move {
            import_archive(
                &rs,
                source,
                &keys,
                &ImportOptions {
                    new_room: Some(new_room),
                    allow_duplicate: true,
                    ..ImportOptions::default()
                },
                &NoProgress,
            )
            .await
        }
    };

    // The second read ends with bytes the first did not have: the parser of the second pass is
    // the verifier's, so it refuses them for the same reason the verifier would.
    let mut garbage = bytes.clone();
    garbage.extend_from_slice(b"not zstd");
    let err = import(memory_source(bytes.clone(), garbage), "tail")
        .await
        .expect_err("trailing bytes on the second read");
    assert!(
        err.to_string()
            .contains("changed_between_passes: reading it again failed: trailing_garbage"),
        "{err}"
    );
    assert_empty(&b, &[&room("tail")]).await;

    // The second read is cut short: refused, and nothing stays.
    let cut = bytes[..bytes.len() / 2].to_vec();
    let err = import(memory_source(bytes.clone(), cut), "cut")
        .await
        .expect_err("truncated second read");
    assert!(err.to_string().contains("changed_between_passes"), "{err}");
    assert_empty(&b, &[&room("cut")]).await;

    // Unchanged: the room loads from memory as from a file.
    let outcome = import(memory_source(bytes.clone(), bytes.clone()), "upload")
        .await
        .expect("import from memory");
    assert_eq!(outcome.new_room, room("upload"));
    let want = a
        .roomshard
        .shards
        .row_counts(&Scope::Pooled(room("general")), &a.roomshard.schema)
        .await
        .unwrap();
    assert_eq!(outcome.tables, want);
    assert!(outcome.objects > 0);
}
