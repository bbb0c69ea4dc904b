//! Behaviour tests of `SqliteShardStore` against the `ShardStore` contract, on the Mesh schema.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod shard_support;

use roomshard_core::{
    CheckpointSink, CopyCheckpoint, CopyPass, CopyRequest, CopySource, Error, Grantee, IdRemap,
    KeyManager, KeyRewrite, NoCheckpoints, NoProgress, Parity, RemapPolicy, Result, RoomSchema,
    Scope, ShardStore,
};
use roomshard_example_mesh::schema;
use roomshard_kms::local::LocalKeyManager;
use sha2::{Digest, Sha256};
use shard_support::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

const BATCH: usize = 50;

async fn seed_two_pooled_rooms(e: &Env, s: &RoomSchema) {
    e.store
        .ensure_pooled_tables(s)
        .await
        .expect("pooled tables");
    let a = e
        .store
        .restore(
            &Scope::Pooled(room("alpha")),
            s,
            &mut VecSource::from_db_sql(&db_sql(&workload("alpha", 1))),
            &IdRemap::default(),
        )
        .await
        .expect("seed alpha");
    assert!(a.id_maps.is_empty());
    e.store
        .restore(
            &Scope::Pooled(room("beta")),
            s,
            &mut VecSource::from_db_sql(&db_sql(&workload("beta", 2))),
            &IdRemap {
                ids: RemapPolicy::OnCollision,
                media_keys: None,
            },
        )
        .await
        .expect("seed beta");
}

fn bulk<'a>(s: &'a RoomSchema, from: Scope, to: Scope) -> CopyRequest<'a> {
    CopyRequest {
        schema: s,
        source: CopySource {
            scope: from,
            server: None,
        },
        target: to,
        pass: CopyPass::Bulk,
        resume_from: None,
        checkpoints: &NoCheckpoints,
        progress: &NoProgress,
    }
}

fn counts(p: &Parity) -> Vec<u64> {
    p.tables.iter().map(|t| t.rows).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_copy_decentralises_and_recentralises_with_parity() {
    let e = env(BATCH).await;
    let s = schema();
    seed_two_pooled_rooms(&e, &s).await;
    let alpha = room("alpha");
    let pooled = Scope::Pooled(alpha.clone());
    let dedicated = dedicated(&e.store, &alpha);
    let beta_before = e
        .store
        .parity(&Scope::Pooled(room("beta")), &s)
        .await
        .unwrap();

    let expected = workload("alpha", 1).write_db_sql(std::io::sink()).unwrap();
    let p_src = e.store.parity(&pooled, &s).await.unwrap();
    assert_eq!(
        counts(&p_src),
        expected,
        "pooled parity counts only alpha's rows"
    );

    e.store
        .ensure_shard(&alpha, &at(&e.store, &alpha), &s)
        .await
        .unwrap();
    let outcome = e
        .store
        .copy_room(bulk(&s, pooled.clone(), dedicated.clone()))
        .await
        .unwrap();
    assert_eq!(outcome.rows_written, expected.iter().sum::<u64>());
    assert_eq!(
        outcome.tables.iter().map(|t| t.rows).collect::<Vec<_>>(),
        expected
    );
    let p_dst = e.store.parity(&dedicated, &s).await.unwrap();
    assert!(
        p_src.mismatched_tables(&p_dst).is_empty(),
        "{p_src:?} {p_dst:?}"
    );
    assert_eq!(p_src, p_dst);

    // Re-running a bulk pass converges (upserts).
    e.store
        .copy_room(bulk(&s, pooled.clone(), dedicated.clone()))
        .await
        .unwrap();
    assert_eq!(e.store.parity(&dedicated, &s).await.unwrap(), p_src);

    // Recentralise: pooled rows gone, copied back from the shard.
    e.store.drop_room(&pooled, &s).await.unwrap();
    assert_eq!(
        counts(&e.store.parity(&pooled, &s).await.unwrap()),
        vec![0; 5]
    );
    e.store
        .copy_room(bulk(&s, dedicated.clone(), pooled.clone()))
        .await
        .unwrap();
    assert_eq!(e.store.parity(&pooled, &s).await.unwrap(), p_src);
    assert_eq!(
        e.store
            .parity(&Scope::Pooled(room("beta")), &s)
            .await
            .unwrap(),
        beta_before,
        "the other room is untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_into_missing_shard_is_not_found_and_same_place_is_invalid() {
    let e = env(BATCH).await;
    let s = schema();
    seed_two_pooled_rooms(&e, &s).await;
    let alpha = room("alpha");
    let err = e
        .store
        .copy_room(bulk(
            &s,
            Scope::Pooled(alpha.clone()),
            dedicated(&e.store, &alpha),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let err = e
        .store
        .copy_room(bulk(
            &s,
            Scope::Pooled(alpha.clone()),
            Scope::Pooled(alpha.clone()),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    let err = e
        .store
        .copy_room(bulk(
            &s,
            Scope::Pooled(alpha.clone()),
            dedicated(&e.store, &room("beta")),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
}

/// Fails every save after the first `ok` ones, remembering the last stored checkpoint.
struct FlakyCheckpoints {
    ok: usize,
    saved: Mutex<Vec<CopyCheckpoint>>,
}

#[roomshard_core::async_trait]
impl CheckpointSink for FlakyCheckpoints {
    async fn save(&self, checkpoint: &CopyCheckpoint) -> Result<()> {
        let mut saved = self.saved.lock().unwrap();
        if saved.len() >= self.ok {
            return Err(Error::unavailable("job table", true, "injected failure"));
        }
        saved.push(checkpoint.clone());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn interrupted_copy_resumes_from_its_last_checkpoint() {
    let e = env(BATCH).await;
    let s = schema();
    seed_two_pooled_rooms(&e, &s).await;
    let alpha = room("alpha");
    let pooled = Scope::Pooled(alpha.clone());
    let dedicated = dedicated(&e.store, &alpha);
    e.store
        .ensure_shard(&alpha, &at(&e.store, &alpha), &s)
        .await
        .unwrap();
    let total: u64 = workload("alpha", 1)
        .write_db_sql(std::io::sink())
        .unwrap()
        .iter()
        .sum();

    // Members (6 rows) + one table-done save, then messages batches: fail in the messages table.
    let flaky = FlakyCheckpoints {
        ok: 5,
        saved: Mutex::new(Vec::new()),
    };
    let mut req = bulk(&s, pooled.clone(), dedicated.clone());
    req.checkpoints = &flaky;
    let err = e.store.copy_room(req).await.unwrap_err();
    assert!(err.is_retryable(), "the sink's error is returned: {err}");
    let last = flaky
        .saved
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("saved some");
    let cursor = last.current.clone().expect("inside a table");
    assert_eq!(cursor.table, "messages");
    assert!(last.tables_done.contains(&"members".to_string()));

    let rows_written = Arc::new(Mutex::new(0u64));
    let mut req = bulk(&s, pooled.clone(), dedicated.clone());
    req.resume_from = Some(last);
    let out = e.store.copy_room(req).await.unwrap();
    *rows_written.lock().unwrap() = out.rows_written;
    assert!(
        out.rows_written < total,
        "resumed, not restarted: {} of {total}",
        out.rows_written
    );
    assert_eq!(
        e.store.parity(&pooled, &s).await.unwrap(),
        e.store.parity(&dedicated, &s).await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn catch_up_inserts_updates_and_deletes_until_equal() {
    let e = env(BATCH).await;
    let s = schema();
    seed_two_pooled_rooms(&e, &s).await;
    let alpha = room("alpha");
    let pooled = Scope::Pooled(alpha.clone());
    let dedicated = dedicated(&e.store, &alpha);
    e.store
        .ensure_shard(&alpha, &at(&e.store, &alpha), &s)
        .await
        .unwrap();
    e.store
        .copy_room(bulk(&s, pooled.clone(), dedicated.clone()))
        .await
        .unwrap();
    let beta_shard_rows = e
        .store
        .parity(&Scope::Pooled(room("beta")), &s)
        .await
        .unwrap();

    // Writes to the source while the room stays writable.
    let g = &e.global;
    sqlx::query(
        "INSERT INTO messages (id, room_id, author_id, body, reply_to, sent_at, edited) \
         VALUES (100000, 'alpha', 1, 'late', 3, '2026-02-01 00:00:00+00', 0)",
    )
    .execute(g)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE messages SET body = 'edited\tbody', edited = 1 WHERE room_id = 'alpha' AND id = 7",
    )
    .execute(g)
    .await
    .unwrap();
    let deleted = sqlx::query(
        "DELETE FROM reactions WHERE rowid = (SELECT rowid FROM reactions WHERE room_id = 'alpha' \
         ORDER BY message_id, member_id, emoji LIMIT 1 OFFSET 10)",
    )
    .execute(g)
    .await
    .unwrap();
    assert_eq!(deleted.rows_affected(), 1);
    // Another room's change must not leak into alpha's shard.
    sqlx::query("UPDATE members SET display_name = 'x' WHERE room_id = 'beta'")
        .execute(g)
        .await
        .unwrap();

    assert!(
        !e.store
            .parity(&pooled, &s)
            .await
            .unwrap()
            .mismatched_tables(&e.store.parity(&dedicated, &s).await.unwrap())
            .is_empty()
    );
    let mut req = bulk(&s, pooled.clone(), dedicated.clone());
    req.pass = CopyPass::CatchUp;
    let out = e.store.copy_room(req).await.unwrap();
    assert_eq!((out.rows_written, out.rows_deleted), (2, 1), "{out:?}");
    assert_eq!(
        e.store.parity(&pooled, &s).await.unwrap(),
        e.store.parity(&dedicated, &s).await.unwrap()
    );
    let mut req = bulk(&s, pooled.clone(), dedicated.clone());
    req.pass = CopyPass::CatchUp;
    let out = e.store.copy_room(req).await.unwrap();
    assert_eq!((out.rows_written, out.rows_deleted), (0, 0));
    drop(beta_shard_rows);
}

#[tokio::test(flavor = "multi_thread")]
async fn catch_up_recentralises_from_the_shard_and_reports_progress() {
    let e = env(BATCH).await;
    let s = schema();
    seed_two_pooled_rooms(&e, &s).await;
    let alpha = room("alpha");
    let pooled = Scope::Pooled(alpha.clone());
    let dedicated = dedicated(&e.store, &alpha);
    e.store
        .ensure_shard(&alpha, &at(&e.store, &alpha), &s)
        .await
        .unwrap();
    e.store
        .copy_room(bulk(&s, pooled.clone(), dedicated.clone()))
        .await
        .unwrap();
    let beta = e
        .store
        .parity(&Scope::Pooled(room("beta")), &s)
        .await
        .unwrap();

    // The room is served from its shard now; writes land there.
    let shard = e.store.pool_for(&dedicated).await.unwrap();
    let deleted = sqlx::query("DELETE FROM messages WHERE id > 250")
        .execute(&shard)
        .await
        .unwrap()
        .rows_affected();
    sqlx::query("UPDATE members SET role = 'admin' WHERE id = 2")
        .execute(&shard)
        .await
        .unwrap();

    let events = Mutex::new(Vec::new());
    let progress = |ev: roomshard_core::ProgressEvent| events.lock().unwrap().push(ev);
    let saved = FlakyCheckpoints {
        ok: usize::MAX,
        saved: Mutex::new(Vec::new()),
    };
    let mut req = bulk(&s, dedicated.clone(), pooled.clone());
    req.pass = CopyPass::CatchUp;
    req.progress = &progress;
    req.checkpoints = &saved;
    let out = e.store.copy_room(req).await.unwrap();
    assert_eq!((out.rows_written, out.rows_deleted), (1, deleted));
    assert_eq!(
        e.store.parity(&pooled, &s).await.unwrap(),
        e.store.parity(&dedicated, &s).await.unwrap()
    );
    assert_eq!(
        e.store
            .parity(&Scope::Pooled(room("beta")), &s)
            .await
            .unwrap(),
        beta
    );
    assert!(events.lock().unwrap().iter().any(|ev| matches!(
        ev,
        roomshard_core::ProgressEvent::Rows { table, .. } if table == "messages"
    )));
    let saved = saved.saved.lock().unwrap();
    let last = saved.last().unwrap();
    assert_eq!(last.pass, CopyPass::CatchUp);
    assert_eq!(last.tables_done.len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_keep_then_dump_equals_db_sql_writer_byte_for_byte() {
    let e = env(BATCH).await;
    let s = schema();
    let alpha = room("alpha");
    let scope = dedicated(&e.store, &alpha);
    let w = Workload {
        messages: 3000,
        ..workload("alpha", 9)
    };
    let sql = db_sql(&w);
    e.store
        .ensure_shard(&alpha, &at(&e.store, &alpha), &s)
        .await
        .unwrap();
    let out = e
        .store
        .restore(
            &scope,
            &s,
            &mut VecSource::from_db_sql(&sql),
            &IdRemap::default(),
        )
        .await
        .unwrap();
    assert!(out.id_maps.is_empty());
    let expected_counts = w.write_db_sql(std::io::sink()).unwrap();
    assert_eq!(
        out.tables.iter().map(|t| t.rows).collect::<Vec<_>>(),
        expected_counts
    );

    let mut sink = DbSqlSink::new("alpha", s.tables());
    let counts = e.store.dump(&scope, &s, &mut sink).await.unwrap();
    assert_eq!(
        counts.iter().map(|t| t.rows).collect::<Vec<_>>(),
        expected_counts
    );
    assert!(sink.out == sql, "dump differs from DbSqlWriter output");
    assert!(sink.chunks > 5, "the dump streams in chunks");
    assert!(sink.largest_chunk < 80 * 1024);

    // Parity checksums are the SHA-256 of exactly those bytes.
    let parity = e.store.parity(&scope, &s).await.unwrap();
    for ((name, rows), p) in copy_blocks(&sql).into_iter().zip(&parity.tables) {
        assert_eq!(p.table, name);
        assert_eq!(
            p.checksum.as_deref(),
            Some(hex::encode(Sha256::digest(&rows)).as_str())
        );
    }

    // Restoring the same dump again collides under Keep, and leaves the shard as it was.
    let err = e
        .store
        .restore(
            &scope,
            &s,
            &mut VecSource::from_db_sql(&sql),
            &IdRemap::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(e.store.parity(&scope, &s).await.unwrap(), parity);
}

use roomshard_example_mesh::Workload;

/// Applies id maps to a table's COPY rows: the expected content after a remapping restore.
fn remap_rows(
    rows: &[u8],
    table: &str,
    new_room: &str,
    maps: &HashMap<(String, String), BTreeMap<String, String>>,
    s: &RoomSchema,
    media: Option<&KeyRewrite>,
) -> Vec<u8> {
    let t = s.table(table).unwrap();
    let mut out = Vec::new();
    for line in std::str::from_utf8(rows).unwrap().lines() {
        let mut fields: Vec<String> = line.split('\t').map(str::to_string).collect();
        for (i, c) in t.columns.iter().enumerate() {
            if c.name == t.room_key_column {
                fields[i] = new_room.to_string();
            }
            let target = if t.id_columns.contains(&c.name) {
                Some((table.to_string(), c.name.clone()))
            } else {
                c.references
                    .as_ref()
                    .map(|r| (r.table.clone(), r.column.clone()))
            };
            if let Some(m) = target.and_then(|k| maps.get(&k))
                && let Some(new) = m.get(&fields[i])
            {
                fields[i] = new.clone();
            }
            if let Some(rw) = media
                && t.media_columns.contains(&c.name)
            {
                fields[i] = rw.apply(&fields[i]).unwrap().as_str().to_string();
            }
        }
        out.extend_from_slice(fields.join("\t").as_bytes());
        out.push(b'\n');
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_on_collision_remaps_ids_and_rewrites_every_reference() {
    let e = env(BATCH).await;
    let s = schema();
    e.store.ensure_pooled_tables(&s).await.unwrap();
    let sql = db_sql(&workload("origin", 3));
    let one = Scope::Pooled(room("one"));
    let two = Scope::Pooled(room("two"));
    e.store
        .restore(
            &one,
            &s,
            &mut VecSource::from_db_sql(&sql),
            &IdRemap::default(),
        )
        .await
        .unwrap();
    let one_before = e.store.parity(&one, &s).await.unwrap();

    // Keep refuses: ids are unique across the shared tables.
    let err = e
        .store
        .restore(
            &two,
            &s,
            &mut VecSource::from_db_sql(&sql),
            &IdRemap::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(counts(&e.store.parity(&two, &s).await.unwrap()), vec![0; 5]);

    let rewrite = KeyRewrite {
        from_prefix: "att/".into(),
        to_prefix: "rooms/two/att/".into(),
    };
    let out = e
        .store
        .restore(
            &two,
            &s,
            // Tables in reverse order: references are rewritten whatever the order.
            &mut VecSource::new(copy_blocks(&sql).into_iter().rev().collect()),
            &IdRemap {
                ids: RemapPolicy::OnCollision,
                media_keys: Some(rewrite.clone()),
            },
        )
        .await
        .unwrap();
    let mut maps: HashMap<(String, String), BTreeMap<String, String>> = HashMap::new();
    for m in &out.id_maps {
        maps.insert(
            (m.table.clone(), m.column.clone()),
            m.changes.iter().cloned().collect(),
        );
    }
    let keys: Vec<_> = {
        let mut k: Vec<_> = maps.keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys,
        [
            ("attachments".to_string(), "id".to_string()),
            ("members".into(), "id".into()),
            ("messages".into(), "id".into())
        ]
    );
    // New integer ids are above every existing one.
    let max_msg = 300;
    assert!(
        maps[&("messages".to_string(), "id".to_string())]
            .values()
            .all(|v| v.parse::<i64>().unwrap() > max_msg)
    );

    let mut sink = TablesSink::default();
    e.store.dump(&two, &s, &mut sink).await.unwrap();
    for ((name, rows), (dname, drows, _)) in copy_blocks(&sql).into_iter().zip(&sink.tables) {
        assert_eq!(&name, dname);
        let expected = remap_rows(&rows, &name, "two", &maps, &s, Some(&rewrite));
        assert!(
            &expected == drows,
            "table {name}: references rewritten consistently"
        );
    }
    assert_eq!(
        e.store.parity(&one, &s).await.unwrap(),
        one_before,
        "room one untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_restore_leaves_nothing_behind() {
    let e = env(BATCH).await;
    let s = schema();
    seed_two_pooled_rooms(&e, &s).await;
    let before = e
        .store
        .parity(&Scope::Pooled(room("beta")), &s)
        .await
        .unwrap();
    let sql = db_sql(&workload("gamma", 4));
    let mut blocks = copy_blocks(&sql);
    // A corrupt row late in the last table.
    let (name, rows) = blocks.last_mut().unwrap();
    assert_eq!(name, "reactions");
    let n = rows.iter().filter(|b| **b == b'\n').count();
    rows.extend_from_slice(b"notanumber\tgamma\t1\t:)\n");
    let gamma = Scope::Pooled(room("gamma"));
    let remap = IdRemap {
        ids: RemapPolicy::OnCollision,
        media_keys: None,
    };
    let err = e
        .store
        .restore(&gamma, &s, &mut VecSource::new(blocks.clone()), &remap)
        .await
        .unwrap_err();
    match &err {
        Error::Corrupt { what, detail } => {
            assert!(what.contains("reactions"), "{err}");
            assert!(detail.contains(&format!("row {}", n + 1)), "{err}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert_eq!(
        counts(&e.store.parity(&gamma, &s).await.unwrap()),
        vec![0; 5]
    );
    assert_eq!(
        e.store
            .parity(&Scope::Pooled(room("beta")), &s)
            .await
            .unwrap(),
        before
    );

    // Unknown and repeated tables are Invalid, also with nothing left behind.
    let mut bad = copy_blocks(&sql);
    bad.push(("nope".into(), Vec::new()));
    let err = e
        .store
        .restore(&gamma, &s, &mut VecSource::new(bad), &remap)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    let mut twice = copy_blocks(&sql);
    twice.push(twice[0].clone());
    let err = e
        .store
        .restore(&gamma, &s, &mut VecSource::new(twice), &remap)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert_eq!(
        counts(&e.store.parity(&gamma, &s).await.unwrap()),
        vec![0; 5]
    );

    // The staging tables went with the rollback: the same dump, fixed, now restores.
    for _ in 0..3 {
        // Several times, so every pooled connection is exercised.
        let t = Scope::Pooled(room(&format!("g{}", rand_suffix())));
        e.store
            .restore(&t, &s, &mut VecSource::from_db_sql(&sql), &remap)
            .await
            .unwrap();
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_room_is_idempotent_and_scoped() {
    let e = env(BATCH).await;
    let s = schema();
    seed_two_pooled_rooms(&e, &s).await;
    let alpha = room("alpha");
    e.store
        .ensure_shard(&alpha, &at(&e.store, &alpha), &s)
        .await
        .unwrap();
    e.store
        .copy_room(bulk(
            &s,
            Scope::Pooled(alpha.clone()),
            dedicated(&e.store, &alpha),
        ))
        .await
        .unwrap();
    let path = e.store.shard_path(&alpha).unwrap();
    assert!(path.exists());
    let size = e
        .store
        .size_bytes(&dedicated(&e.store, &alpha), &s)
        .await
        .unwrap();
    assert!(size > 0);
    assert!(
        e.store
            .size_bytes(&Scope::Pooled(alpha.clone()), &s)
            .await
            .unwrap()
            > 0
    );

    for _ in 0..2 {
        e.store
            .drop_room(&dedicated(&e.store, &alpha), &s)
            .await
            .unwrap();
    }
    assert!(!path.exists());
    let mut wal = path.clone().into_os_string();
    wal.push("-wal");
    assert!(!std::path::Path::new(&wal).exists());
    let err = e
        .store
        .parity(&dedicated(&e.store, &alpha), &s)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let err = e
        .store
        .size_bytes(&dedicated(&e.store, &alpha), &s)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");

    let beta = e
        .store
        .parity(&Scope::Pooled(room("beta")), &s)
        .await
        .unwrap();
    for _ in 0..2 {
        e.store
            .drop_room(&Scope::Pooled(alpha.clone()), &s)
            .await
            .unwrap();
    }
    assert_eq!(
        counts(
            &e.store
                .parity(&Scope::Pooled(alpha.clone()), &s)
                .await
                .unwrap()
        ),
        vec![0; 5]
    );
    assert_eq!(
        e.store
            .parity(&Scope::Pooled(room("beta")), &s)
            .await
            .unwrap(),
        beta
    );

    // A dropped shard can be created again.
    e.store
        .ensure_shard(&alpha, &at(&e.store, &alpha), &s)
        .await
        .unwrap();
    assert_eq!(
        counts(
            &e.store
                .parity(&dedicated(&e.store, &alpha), &s)
                .await
                .unwrap()
        ),
        vec![0; 5]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ensure_is_idempotent_and_refuses_differing_tables() {
    let e = env(BATCH).await;
    let s = schema();
    let alpha = room("alpha");
    e.store
        .ensure_shard(&alpha, &at(&e.store, &alpha), &s)
        .await
        .unwrap();
    e.store
        .ensure_shard(&alpha, &at(&e.store, &alpha), &s)
        .await
        .unwrap();
    e.store.ensure_pooled_tables(&s).await.unwrap();
    e.store.ensure_pooled_tables(&s).await.unwrap();

    let pool = e
        .store
        .pool_for(&dedicated(&e.store, &alpha))
        .await
        .unwrap();
    sqlx::query("DROP TABLE reactions")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE reactions (message_id INTEGER NOT NULL, room_id TEXT NOT NULL, emoji TEXT NOT NULL, PRIMARY KEY (message_id, emoji))")
        .execute(&pool)
        .await
        .unwrap();
    let err = e
        .store
        .ensure_shard(&alpha, &at(&e.store, &alpha), &s)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    // The host's data was not altered to fit.
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pragma_table_info('reactions')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 3);

    sqlx::query("ALTER TABLE members ADD COLUMN extra TEXT")
        .execute(&e.global)
        .await
        .unwrap();
    let err = e.store.ensure_pooled_tables(&s).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn shard_files_stay_inside_the_shard_directory() {
    let e = env(BATCH).await;
    for hostile in [
        "../x",
        "a/b",
        "..",
        ".hidden",
        "x\0y",
        "a\\b",
        "ROOM",
        "x\"; DROP TABLE t; --",
    ] {
        assert!(roomshard_core::RoomId::new(hostile).is_err(), "{hostile:?}");
    }
    let shards = e.dir.path().join("shards");
    for id in ["general", "a-b_c-9", "0", &"z".repeat(48)] {
        let path = e.store.shard_path(&room(id)).unwrap();
        assert_eq!(path.parent(), Some(shards.as_path()));
        assert_eq!(
            path.file_name().unwrap().to_str().unwrap(),
            format!("room_{id}.sqlite3")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_key_grant_seals_every_shard_path() {
    let e = env(BATCH).await;
    let s = schema();
    let grantee = Grantee::new("mesh-host").unwrap();
    let keys = Arc::new(LocalKeyManager::open(e.dir.path().join("keys"), grantee.clone()).unwrap());
    let alpha = room("alpha");
    keys.ensure_room_key(&alpha, &roomshard_core::KeySpec::default())
        .await
        .unwrap();
    keys.grant(&alpha, &grantee).await.unwrap();
    let store =
        roomshard_sqlite::SqliteShardStore::open(e.global.clone(), &e.dir.path().join("gated"))
            .unwrap()
            .with_batch_rows(BATCH)
            .with_key_gate(keys.clone());
    seed_two_pooled_rooms(&e, &s).await;
    let pooled = Scope::Pooled(alpha.clone());
    let dedicated = dedicated(&store, &alpha);

    store
        .ensure_shard(&alpha, &at(&store, &alpha), &s)
        .await
        .unwrap();
    store
        .copy_room(bulk(&s, pooled.clone(), dedicated.clone()))
        .await
        .unwrap();
    let parity = store.parity(&dedicated, &s).await.unwrap();

    keys.revoke(&alpha, &grantee).await.unwrap();
    let sealed = |r: Result<()>, what: &str| match r {
        Err(Error::Sealed { room }) => assert_eq!(room.as_str(), "alpha", "{what}"),
        other => panic!("{what}: expected Sealed, got {other:?}"),
    };
    sealed(
        store
            .ensure_shard(&alpha, &at(&store, &alpha), &s)
            .await
            .map(drop),
        "ensure_shard",
    );
    sealed(
        store
            .copy_room(bulk(&s, pooled.clone(), dedicated.clone()))
            .await
            .map(drop),
        "copy to the shard",
    );
    sealed(
        store
            .copy_room(bulk(&s, dedicated.clone(), pooled.clone()))
            .await
            .map(drop),
        "copy from the shard",
    );
    sealed(store.parity(&dedicated, &s).await.map(drop), "parity");
    sealed(
        store
            .dump(&dedicated, &s, &mut TablesSink::default())
            .await
            .map(drop),
        "dump",
    );
    sealed(
        store
            .restore(
                &dedicated,
                &s,
                &mut VecSource::new(Vec::new()),
                &IdRemap::default(),
            )
            .await
            .map(drop),
        "restore",
    );
    sealed(store.pool_for(&dedicated).await.map(drop), "pool_for");
    sealed(
        store.size_bytes(&dedicated, &s).await.map(drop),
        "size_bytes",
    );
    // A room that never had a shard cannot get one while sealed, and leaves no file.
    let beta = room("beta");
    keys.ensure_room_key(&beta, &roomshard_core::KeySpec::default())
        .await
        .unwrap();
    keys.revoke(&beta, &grantee).await.unwrap();
    assert!(matches!(
        store.ensure_shard(&beta, &at(&store, &beta), &s).await,
        Err(Error::Sealed { .. })
    ));
    assert!(!store.shard_path(&beta).unwrap().exists());

    // Restoring the grant unseals, with the data intact.
    keys.grant(&alpha, &grantee).await.unwrap();
    assert_eq!(store.parity(&dedicated, &s).await.unwrap(), parity);
}

#[tokio::test(flavor = "multi_thread")]
async fn text_and_uuid_ids_are_remapped_and_forward_references_follow() {
    use roomshard_core::{LogicalType, Table};
    // `notes` comes first and references `tags`, declared after it: a forward reference.
    let notes = Table::new("notes")
        .column("id", LogicalType::Uuid)
        .primary_key()
        .id()
        .column("room_id", LogicalType::Text)
        .room_key()
        .column("tag", LogicalType::Text)
        .references("tags", "name")
        .build()
        .unwrap();
    let tags = Table::new("tags")
        .column("name", LogicalType::Text)
        .primary_key()
        .id()
        .column("room_id", LogicalType::Text)
        .room_key()
        .column("parent", LogicalType::Text)
        .references("tags", "name")
        .build()
        .unwrap();
    let s = RoomSchema::new("fwd-1", vec![notes, tags]).unwrap();
    let e = env(BATCH).await;
    e.store.ensure_pooled_tables(&s).await.unwrap();
    let u1 = "00000000-0000-4000-8000-000000000001";
    let u2 = "00000000-0000-4000-8000-000000000002";
    let blocks = vec![
        (
            "tags".to_string(),
            b"red\tx\t\\N\nred-1\tx\tred\nblue\tx\tred\n".to_vec(),
        ),
        (
            "notes".to_string(),
            format!("{u1}\tx\tred\n{u2}\tx\tblue\n").into_bytes(),
        ),
    ];
    let one = Scope::Pooled(room("one"));
    let two = Scope::Pooled(room("two"));
    e.store
        .restore(
            &one,
            &s,
            &mut VecSource::new(blocks.clone()),
            &IdRemap::default(),
        )
        .await
        .unwrap();
    // Every id of the second import collides with room one's.
    let out = e
        .store
        .restore(
            &two,
            &s,
            &mut VecSource::new(blocks),
            &IdRemap {
                ids: RemapPolicy::OnCollision,
                media_keys: None,
            },
        )
        .await
        .unwrap();
    let map = |table: &str| -> BTreeMap<String, String> {
        out.id_maps
            .iter()
            .find(|m| m.table == table)
            .unwrap()
            .changes
            .iter()
            .cloned()
            .collect()
    };
    let tag_map = map("tags");
    // `red-1` exists (room one), so `red` becomes `red-2`; `red-1` becomes `red-1-1`.
    assert_eq!(tag_map["red"], "red-2");
    assert_eq!(tag_map["red-1"], "red-1-1");
    assert_eq!(tag_map["blue"], "blue-1");
    let note_map = map("notes");
    assert_eq!(note_map.len(), 2);
    assert!(
        note_map
            .values()
            .all(|v| v != u1 && v != u2 && v.len() == 36)
    );

    let mut sink = TablesSink::default();
    e.store.dump(&two, &s, &mut sink).await.unwrap();
    let notes = String::from_utf8(sink.tables[0].1.clone()).unwrap();
    let tags = String::from_utf8(sink.tables[1].1.clone()).unwrap();
    assert!(
        notes.contains(&format!("{}\ttwo\tred-2\n", note_map[u1])),
        "{notes}"
    );
    assert!(
        notes.contains(&format!("{}\ttwo\tblue-1\n", note_map[u2])),
        "{notes}"
    );
    assert_eq!(
        tags,
        "blue-1\ttwo\tred-2\nred-1-1\ttwo\tred-2\nred-2\ttwo\t\\N\n"
    );
    let mut sink = TablesSink::default();
    e.store.dump(&one, &s, &mut sink).await.unwrap();
    assert_eq!(
        String::from_utf8(sink.tables[1].1.clone()).unwrap(),
        "blue\tone\tred\nred\tone\t\\N\nred-1\tone\tred\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn host_rows_that_do_not_fit_their_type_are_corrupt_not_dumped() {
    let e = env(BATCH).await;
    let s = schema();
    e.store.ensure_pooled_tables(&s).await.unwrap();
    sqlx::query(
        "INSERT INTO rooms (room_id, name, topic, created_at) \
         VALUES ('bad', 'n', NULL, '2026-01-01T00:00:00Z')",
    )
    .execute(&e.global)
    .await
    .unwrap();
    let scope = Scope::Pooled(room("bad"));
    let err = e
        .store
        .dump(&scope, &s, &mut TablesSink::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { what, .. } if what.contains("rooms")),
        "{err}"
    );
    let err = e.store.parity(&scope, &s).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}
