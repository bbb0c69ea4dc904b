//! Runs the provider behaviour suite against this workspace's own providers: each test asserts
//! the report has no failure and prints it (`cargo test -- --nocapture` to see it on success).

use roomshard_conformance::suite::{
    KeySuiteConfig, MediaSuiteConfig, ShardSuiteConfig, fixture_schema, run_key_manager_suite,
    run_media_suite, run_shard_suite,
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
    let store = SqliteShardStore::open(global, &dir.path().join("shards")).expect("open store");
    store
        .ensure_pooled_tables(&fixture_schema().expect("fixture schema"))
        .await
        .expect("shared tables");
    let config = ShardSuiteConfig {
        pooled_tables: true,
        room_prefix: None,
    };
    let report = run_shard_suite(&store, &config).await;
    println!("{report}");
    assert_eq!(report.failures(), 0, "{report}");
}
