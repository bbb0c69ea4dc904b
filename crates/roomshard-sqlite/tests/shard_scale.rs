//! The standard `quick` workload's rows (10k messages) through restore, bulk copy, parity and
//! dump, with the default batch size: checks the paths stay correct past many batches.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod shard_support;

use roomshard_core::{
    CopyPass, CopyRequest, CopySource, IdRemap, NoCheckpoints, NoProgress, Scope, ShardStore,
};
use roomshard_example_mesh::{Media, Workload, schema};
use shard_support::*;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread")]
async fn quick_workload_round_trip() {
    let e = env(roomshard_sqlite::DEFAULT_BATCH_ROWS).await;
    let s = schema();
    let w = Workload {
        media: Media::Sizes(vec![1; 200]),
        ..Workload::quick()
    };
    let sql = db_sql(&w);
    let r = room(&w.room_id);
    e.store.ensure_pooled_tables(&s).await.unwrap();
    let t0 = Instant::now();
    e.store
        .restore(
            &Scope::Pooled(r.clone()),
            &s,
            &mut VecSource::from_db_sql(&sql),
            &IdRemap::default(),
        )
        .await
        .unwrap();
    let t_restore = t0.elapsed();
    e.store
        .ensure_shard(&r, &at(&e.store, &r), &s)
        .await
        .unwrap();
    let t0 = Instant::now();
    let out = e
        .store
        .copy_room(CopyRequest {
            schema: &s,
            source: CopySource {
                scope: Scope::Pooled(r.clone()),
                server: None,
            },
            target: dedicated(&e.store, &r),
            pass: CopyPass::Bulk,
            resume_from: None,
            checkpoints: &NoCheckpoints,
            progress: &NoProgress,
        })
        .await
        .unwrap();
    let t_copy = t0.elapsed();
    let t0 = Instant::now();
    let a = e.store.parity(&Scope::Pooled(r.clone()), &s).await.unwrap();
    let b = e.store.parity(&dedicated(&e.store, &r), &s).await.unwrap();
    let t_parity = t0.elapsed();
    assert_eq!(a, b);
    let mut sink = DbSqlSink::new(&w.room_id, s.tables());
    e.store
        .dump(&dedicated(&e.store, &r), &s, &mut sink)
        .await
        .unwrap();
    assert!(sink.out == sql);
    eprintln!(
        "rows {} restore {t_restore:?} copy {t_copy:?} parity x2 {t_parity:?}",
        out.rows_written
    );
}
