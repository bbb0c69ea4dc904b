//! Runs the provider behaviour suite against this workspace's own providers: each test asserts
//! the report has no failure and prints it (`cargo test -- --nocapture` to see it on success).

use roomshard_conformance::suite::{
    ControlSuiteConfig, IndexSuiteConfig, KeySuiteConfig, MediaSuiteConfig, ShardSuiteConfig,
    control_plane_checks, fixture_schema, indexer_checks, run_control_plane_suite,
    run_indexer_suite, run_key_manager_suite, run_media_suite, run_shard_suite,
};
use roomshard_core::{Grantee, KeyManager, SigningKeyId};
use roomshard_kms::local::LocalKeyManager;
use roomshard_media::local::LocalMediaStore;
use roomshard_sqlite::SqliteShardStore;
use std::sync::Arc;

fn acting_as() -> Grantee {
    Grantee::new("conformance-service").expect("valid grantee")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_key_manager_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let km = LocalKeyManager::open(dir.path(), acting_as()).expect("open key directory");
    let config = KeySuiteConfig {
        acting_as: Some(acting_as()),
        signing_keys: vec![
            SigningKeyId::new(LocalKeyManager::PLATFORM_SIGNING_KEY).expect("valid key id"),
        ],
        room_prefix: None,
    };
    let report = run_key_manager_suite(&km, &config).await;
    println!("{report}");
    assert_eq!(report.failures(), 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_media_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys: Arc<dyn KeyManager> = Arc::new(
        LocalKeyManager::open(dir.path().join("keys"), acting_as()).expect("open key directory"),
    );
    let store = LocalMediaStore::open(&dir.path().join("media"), keys.clone()).expect("open store");
    let config = MediaSuiteConfig {
        keys: Some(keys),
        acting_as: Some(acting_as()),
        room_prefix: None,
    };
    let report = run_media_suite(&store, &config).await;
    println!("{report}");
    assert_eq!(report.failures(), 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_shard_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let global = roomshard_sqlite::open_global(&dir.path().join("global.db"))
        .await
        .expect("open global database");
    let store =
        SqliteShardStore::open(global.clone(), &dir.path().join("shards")).expect("open store");
    store
        .ensure_pooled_tables(&fixture_schema().expect("fixture schema"))
        .await
        .expect("shared tables");
    // A second store of its own (another shard directory), for the two-store round trip.
    let peer = SqliteShardStore::open(global, &dir.path().join("peer-shards")).expect("peer");
    let config = ShardSuiteConfig {
        pooled_tables: true,
        room_prefix: None,
        peer: Some(Arc::new(peer)),
    };
    let report = run_shard_suite(&store, &config).await;
    println!("{report}");
    assert_eq!(report.failures(), 0, "{report}");
    let round_trip = report
        .checks
        .iter()
        .find(|c| c.name == "a_dump_restores_into_another_store_and_back")
        .expect("the two-store check runs");
    assert_eq!(
        round_trip.outcome,
        roomshard_conformance::suite::Outcome::Passed,
        "with a peer it applies: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pools_conform() {
    let dir = tempfile::tempdir().expect("tempdir");
    let global = roomshard_sqlite::open_global(&dir.path().join("global.db"))
        .await
        .expect("open global database");
    let store =
        Arc::new(SqliteShardStore::open(global, &dir.path().join("shards")).expect("open store"));
    store
        .ensure_pooled_tables(&fixture_schema().expect("fixture schema"))
        .await
        .expect("shared tables");
    let config = ShardSuiteConfig {
        pooled_tables: true,
        room_prefix: None,
        peer: None,
    };
    let pools = roomshard_sqlite::SqlitePools::new(store.clone());
    let report =
        roomshard_conformance::suite::run_pools_suite(&pools, store.as_ref(), &config).await;
    println!("{report}");
    assert_eq!(report.failures(), 0, "{report}");
    assert_eq!(
        report.passed(),
        2,
        "budget and unknown server checked: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_control_plane_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = roomshard_sqlite::open_global(&dir.path().join("global.sqlite3"))
        .await
        .expect("open database");
    let cp = roomshard_sqlite::SqliteControlPlane::new(pool);
    roomshard_core::ControlPlane::migrate(&cp)
        .await
        .expect("migrate");
    // Records from before the suite runs must not matter to it.
    roomshard_core::ControlPlane::append_audit(
        &cp,
        &roomshard_core::AuditEntry {
            at: "2026-11-22T09:00:00Z".into(),
            actor: "host".into(),
            action: "host.earlier".into(),
            room: None,
            detail: serde_json::json!({}),
        },
    )
    .await
    .expect("earlier entry");
    let report = run_control_plane_suite(&cp, &ControlSuiteConfig::default()).await;
    println!("{report}");
    assert_eq!(report.failures(), 0, "{report}");
    assert_eq!(report.passed(), control_plane_checks().len(), "{report}");
    // One call, one JSON report a third party can store.
    let json = report.to_json();
    assert_eq!(json["conforms"], true);
    assert_eq!(json["suite"], "control_plane");
    assert_eq!(
        json["checks"].as_array().map(Vec::len),
        Some(control_plane_checks().len())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_indexer_conforms() {
    let visibility = std::time::Duration::from_millis(50);
    let index = roomshard_conformance::memory::MemoryIndexer::new(visibility);
    let config = IndexSuiteConfig {
        visibility_timeout: visibility,
        room_prefix: None,
    };
    let report = run_indexer_suite(&index, &config).await;
    println!("{report}");
    assert_eq!(report.failures(), 0, "{report}");
    assert_eq!(report.passed(), indexer_checks().len(), "{report}");
    assert_eq!(report.to_json()["conforms"], true);
}
