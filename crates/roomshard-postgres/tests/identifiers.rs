//! Hostile identifiers against a real PostgreSQL 15: room ids with quotes, semicolons, comment
//! markers, Unicode lookalikes, reserved words and 48+ characters are either refused before any
//! SQL runs or reach the server quoted, creating exactly the schema `room_<id>` and nothing else;
//! reserved words as table and column names work end to end. Plus: two processes provisioning
//! one room at once, exactly one doing the work.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use roomshard_core::{
    Error, Grantee, IdRemap, KeyManager, Location, LogicalType, ProviderUrl, RoomId, RoomSchema,
    Scope, ShardStore, Table,
};
use roomshard_interop_tests::pg::Cluster;
use roomshard_postgres::PgShardStore;
use std::sync::Arc;

fn schema() -> RoomSchema {
    // Reserved words as table and column names: only quoting makes these work.
    let select = Table::new("select")
        .column("user", LogicalType::Text)
        .room_key()
        .column("order", LogicalType::Int8)
        .primary_key()
        .id()
        .column("from", LogicalType::Text)
        .build()
        .unwrap();
    let table = Table::new("table")
        .column("room_id", LogicalType::Text)
        .room_key()
        .column("group", LogicalType::Text)
        .primary_key()
        .build()
        .unwrap();
    RoomSchema::new("hostile-1", vec![select, table]).unwrap()
}

async fn store(cluster: &Cluster) -> PgShardStore {
    let url = ProviderUrl::parse(&cluster.url("postgres"), "--shards").unwrap();
    let pool = roomshard_postgres::connect(&url, 4).await.unwrap();
    let store = PgShardStore::new(pool, &url).unwrap();
    store.ensure_pooled_tables(&schema()).await.unwrap();
    store
}

fn located(store: &PgShardStore, room: &RoomId) -> Location {
    Location {
        shard: Some(store.locate_shard(room, None).unwrap()),
        ..Location::default()
    }
}

/// Every schema and table name in the database, outside the system catalogs.
fn catalog(cluster: &Cluster) -> String {
    cluster.query(
        "postgres",
        "SELECT string_agg(table_schema || '.' || table_name, ',' \
         ORDER BY (table_schema || '.' || table_name)::text COLLATE \"C\") \
         FROM information_schema.tables \
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
}

fn hostile() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        Just("'".to_string()),
        Just("\"".to_string()),
        Just(";".to_string()),
        Just("--".to_string()),
        Just("/*".to_string()),
        Just(" ".to_string()),
        Just("\\".to_string()),
        Just("$$".to_string()),
        Just("drop table select".to_string()),
        Just("select".to_string()),
        Just("user".to_string()),
        Just("Room".to_string()),
        Just("\u{430}".to_string()), // Cyrillic a
        Just("\u{e9}".to_string()),
        Just("\u{202e}".to_string()), // right-to-left override
        Just("\0".to_string()),
        Just("-".to_string()),
        Just("_".to_string()),
        "[a-z0-9]{1,12}",
    ];
    prop::collection::vec(fragment, 1..8).prop_map(|parts| parts.concat())
}

#[test]
fn hostile_room_ids_are_refused_or_quoted_safely() {
    let cluster = Cluster::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(store(&cluster));
    let before = catalog(&cluster);
    let accepted = std::cell::Cell::new(0u32);
    let refused = std::cell::Cell::new(0u32);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 96,
        ..ProptestConfig::default()
    });
    let cases = prop_oneof![
        1 => hostile(),
        // Valid-looking ids around the 48-character limit.
        1 => "[a-z][a-z0-9_-]{30,55}",
    ];
    runner
        .run(&cases, |text| {
            match RoomId::new(text.clone()) {
                Err(e) => {
                    prop_assert!(matches!(e, Error::Invalid { .. }), "{text:?}: {e:?}");
                    refused.set(refused.get() + 1);
                }
                Ok(room) => {
                    accepted.set(accepted.get() + 1);
                    prop_assert!(text.len() <= 48, "{text:?} accepted at {} bytes", text.len());
                    let at = located(&store, &room);
                    let scope = Scope::Dedicated(room.clone(), at.clone());
                    rt.block_on(store.ensure_shard(&room, &at, &schema())).unwrap();
                    // Exactly the room's schema, with exactly its tables, appeared.
                    let name = format!("room_{}", room.as_str());
                    let tables = cluster.query(
                        "postgres",
                        &format!(
                            "SELECT string_agg(table_name::text, ',' ORDER BY table_name::text COLLATE \"C\") FROM \
                             information_schema.tables WHERE table_schema = '{name}'"
                        ),
                    );
                    prop_assert_eq!(tables, "roomshard_meta,select,table");
                    let counts = rt.block_on(store.row_counts(&scope, &schema())).unwrap();
                    prop_assert_eq!(counts.len(), 2);
                    rt.block_on(store.drop_room(&scope, &schema())).unwrap();
                    prop_assert_eq!(catalog(&cluster), before.clone(), "after {:?}", text);
                }
            }
            Ok(())
        })
        .unwrap();
    let (accepted, refused) = (accepted.get(), refused.get());
    eprintln!("{accepted} accepted and quoted safely, {refused} refused");
    assert!(
        accepted > 10 && refused > 10,
        "{accepted} accepted, {refused} refused"
    );
    assert_eq!(
        catalog(&cluster),
        before,
        "nothing else was created or dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_words_as_names_round_trip_through_copy() {
    let cluster = Cluster::start();
    let store = store(&cluster).await;
    let room = RoomId::new("reserved").unwrap();
    let at = located(&store, &room);
    store.ensure_shard(&room, &at, &schema()).await.unwrap();
    let scope = Scope::Dedicated(room.clone(), at);
    struct Rows(Vec<(String, Vec<u8>)>, Option<Vec<u8>>);
    #[roomshard_core::async_trait]
    impl roomshard_core::DumpSource for Rows {
        async fn next_table(&mut self) -> roomshard_core::Result<Option<String>> {
            Ok(if self.0.is_empty() {
                None
            } else {
                let (name, rows) = self.0.remove(0);
                self.1 = Some(rows);
                Some(name)
            })
        }
        async fn next_rows(&mut self) -> roomshard_core::Result<Option<roomshard_core::Bytes>> {
            Ok(self.1.take().map(roomshard_core::Bytes::from))
        }
    }
    let mut source = Rows(
        vec![
            (
                "select".into(),
                b"x\t1\tfrom 'here'; drop table \"table\"; --\n".to_vec(),
            ),
            ("table".into(), b"x\tg1\n".to_vec()),
        ],
        None,
    );
    store
        .restore(&scope, &schema(), &mut source, &IdRemap::default())
        .await
        .unwrap();
    let value = cluster.query("postgres", "SELECT \"from\" FROM room_reserved.\"select\"");
    assert_eq!(value, "from 'here'; drop table \"table\"; --");
    let counts = store.row_counts(&scope, &schema()).await.unwrap();
    assert_eq!(
        counts.iter().map(|c| c.rows).collect::<Vec<_>>(),
        [1, 1],
        "the value was stored as a value; nothing ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_provisioning_one_room_at_once_both_succeed_and_one_does_the_work() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let keys: Arc<dyn KeyManager> = Arc::new(
        roomshard_kms::local::LocalKeyManager::open(dir.path(), Grantee::new("mesh").unwrap())
            .unwrap(),
    );
    // Two stores on two pools: two processes, as far as the server can tell.
    let a = Arc::new(store(&cluster).await.with_key_gate(keys.clone()));
    let b = Arc::new(store(&cluster).await.with_key_gate(keys.clone()));
    for n in 0..8 {
        let room = RoomId::new(format!("race-{n}")).unwrap();
        keys.ensure_room_key(&room, &roomshard_core::KeySpec::default())
            .await
            .unwrap();
        let at = located(&a, &room);
        let (ra, rb) = tokio::join!(
            {
                let (a, room, at) = (a.clone(), room.clone(), at.clone());
                async move { a.ensure_shard(&room, &at, &schema()).await }
            },
            {
                let (b, room, at) = (b.clone(), room.clone(), at.clone());
                async move { b.ensure_shard(&room, &at, &schema()).await }
            }
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra, rb);
        // One wrapped data key: the second waited on the advisory lock, then found the shard
        // made and made nothing.
        let keys_stored = cluster.query(
            "postgres",
            &format!("SELECT count(*) FROM \"room_race-{n}\".roomshard_meta"),
        );
        assert_eq!(keys_stored, "1", "room race-{n}");
        let scope = Scope::Dedicated(room.clone(), at);
        assert_eq!(a.row_counts(&scope, &schema()).await.unwrap().len(), 2);
        assert_eq!(b.row_counts(&scope, &schema()).await.unwrap().len(), 2);
    }
}
