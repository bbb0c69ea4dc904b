//! The PostgreSQL shard store against a real PostgreSQL 15 cluster started for each test
//! (`roomshard_interop_tests::pg::Cluster`: it fails loudly when the server cannot start).

use roomshard_conformance::suite::{Outcome, ShardSuiteConfig, fixture_schema, run_shard_suite};
use roomshard_core::{ProviderUrl, ShardStore};
use roomshard_interop_tests::pg::Cluster;
use roomshard_postgres::PgShardStore;
use std::sync::Arc;

async fn store(cluster: &Cluster, db: &str) -> PgShardStore {
    let url = ProviderUrl::parse(&cluster.url(db), "--shards").expect("url");
    let pool = roomshard_postgres::connect(&url, 8).await.expect("connect");
    let store = PgShardStore::new(pool, &url).expect("store");
    store
        .ensure_pooled_tables(&fixture_schema().expect("fixture schema"))
        .await
        .expect("shared tables");
    store
}

fn assert_round_trip_ran(report: &roomshard_conformance::suite::Report) {
    let round_trip = report
        .checks
        .iter()
        .find(|c| c.name == "a_dump_restores_into_another_store_and_back")
        .expect("the two-store check runs");
    assert_eq!(round_trip.outcome, Outcome::Passed, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_shard_store_conforms() {
    let cluster = Cluster::start();
    cluster.createdb("mesh");
    cluster.createdb("peer");
    let shards = store(&cluster, "mesh").await;
    let peer = store(&cluster, "peer").await;
    let config = ShardSuiteConfig {
        pooled_tables: true,
        room_prefix: None,
        peer: Some(Arc::new(peer)),
    };
    let report = run_shard_suite(&shards, &config).await;
    println!("{report}");
    assert_eq!(report.failures(), 0, "{report}");
    assert_round_trip_ran(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pools_conform() {
    let cluster = Cluster::start();
    cluster.createdb("mesh");
    let shards = Arc::new(store(&cluster, "mesh").await);
    let config = ShardSuiteConfig {
        pooled_tables: true,
        room_prefix: None,
        peer: None,
    };
    let pools = roomshard_postgres::PgPools::new(shards.clone());
    let report =
        roomshard_conformance::suite::run_pools_suite(&pools, shards.as_ref(), &config).await;
    println!("{report}");
    assert_eq!(report.failures(), 0, "{report}");
    assert_eq!(
        report.passed(),
        3,
        "budget, unknown server and the guard: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_moves_between_postgres_and_sqlite_and_back() {
    let cluster = Cluster::start();
    cluster.createdb("mesh");
    let shards = store(&cluster, "mesh").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let global = roomshard_sqlite::open_global(&dir.path().join("global.db"))
        .await
        .expect("sqlite");
    let sqlite = roomshard_sqlite::SqliteShardStore::open(global, &dir.path().join("shards"))
        .expect("sqlite store");
    sqlite
        .ensure_pooled_tables(&fixture_schema().expect("fixture schema"))
        .await
        .expect("sqlite shared tables");
    let config = ShardSuiteConfig {
        pooled_tables: true,
        room_prefix: Some("xe".into()),
        peer: Some(Arc::new(sqlite)),
    };
    let report = run_shard_suite(&shards, &config).await;
    println!("{report}");
    assert_eq!(report.failures(), 0, "{report}");
    assert_round_trip_ran(&report);
    assert_eq!(shards.name(), "postgres");
}
