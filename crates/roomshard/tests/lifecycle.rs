//! Decentralise, revoke/regrant, rotate and recentralise on the embedded default, end to end.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use roomshard::flows;
use roomshard::home::{Home, HomeOptions};
use roomshard_core::{
    Error, IdRemap, ListRequest, ObjectBody, ObjectKey, Parity, Phase, PlacementState,
    ProgressEvent, PutOptions, RemapPolicy, RoomId, Scope,
};
use roomshard_example_mesh::{Media, Workload, schema};
use roomshard_verify::TrustedKeys;

fn workload(room: &str, messages: u64, seed: u64) -> Workload {
    Workload {
        seed,
        room_id: room.to_string(),
        messages,
        media: Media::Sizes(vec![10, 70_000, 1, 300_000, 5_000]),
    }
}

async fn seed(home: &Home, w: &Workload) -> RoomId {
    let rs = &home.roomshard;
    let room = RoomId::new(&w.room_id).unwrap();
    let scope = Scope::Pooled(room.clone());
    rs.shards
        .restore(
            &scope,
            &rs.schema,
            &mut w.dump_source(),
            &IdRemap {
                ids: RemapPolicy::OnCollision,
                media_keys: None,
            },
        )
        .await
        .unwrap();
    for m in w.media_objects() {
        let mut bytes = Vec::new();
        m.reader().read_to_end(&mut bytes).unwrap();
        rs.media
            .put(
                &scope,
                &ObjectKey::new(&m.key).unwrap(),
                ObjectBody::from_bytes(bytes),
                &PutOptions::default(),
            )
            .await
            .unwrap();
    }
    room
}

async fn open(dir: &std::path::Path, batch_rows: usize) -> Home {
    Home::open(
        dir,
        schema(),
        HomeOptions {
            batch_rows: Some(batch_rows),
            ..common::home_options(dir)
        },
    )
    .await
    .unwrap()
}

/// The actions of `room`'s audit entries, oldest first.
async fn audit_actions(rs: &roomshard::Roomshard, room: &RoomId) -> Vec<String> {
    rs.control
        .audit_log(Some(room))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.entry.action)
        .collect()
}

fn rows(p: &Parity) -> u64 {
    p.tables.iter().map(|t| t.rows).sum()
}

async fn keys_of(home: &Home, scope: &Scope) -> Vec<(String, u64)> {
    let page = home
        .roomshard
        .media
        .list(scope, &ListRequest::default())
        .await
        .unwrap();
    page.objects
        .into_iter()
        .map(|m| (m.key.as_str().to_string(), m.size))
        .collect()
}

#[derive(Default)]
struct Events(Mutex<Vec<ProgressEvent>>);

impl roomshard_core::ProgressSink for Events {
    fn emit(&self, event: ProgressEvent) {
        self.0.lock().unwrap().push(event);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decentralise_revoke_rotate_recentralise() {
    let dir = tempfile::tempdir().unwrap();
    let home = open(dir.path(), 100).await;
    let rs = &home.roomshard;
    let room = seed(&home, &workload("general", 400, 1)).await;
    let other = seed(&home, &workload("random", 50, 2)).await;
    let pooled = Scope::Pooled(room.clone());
    let before = rs.shards.parity(&pooled, &rs.schema).await.unwrap();
    let other_before = rs
        .shards
        .parity(&Scope::Pooled(other.clone()), &rs.schema)
        .await
        .unwrap();
    let media_before = keys_of(&home, &pooled).await;
    assert_eq!(media_before.len(), 5);

    // Plan: nothing changes.
    let plan = flows::plan(rs, &room).await.unwrap();
    assert_eq!(plan.rows, rows(&before));
    assert_eq!(plan.objects, 5);
    assert_eq!(plan.media_bytes, 10 + 70_000 + 1 + 300_000 + 5_000);
    assert_eq!(plan.assets.len(), 4);
    assert!(plan.monthly_cost_usd > 0.0);
    assert_eq!(
        rs.control.placement(&room).await.unwrap().map(|p| p.state),
        None,
        "plan must not record anything"
    );

    // Decentralise.
    let events = Events::default();
    let out = flows::decentralise(rs, &room, &events).await.unwrap();
    assert_eq!(out.placement.state, PlacementState::Sovereign);
    assert!(out.placement.is_sharded);
    assert!(!out.resumed);
    assert_eq!(
        out.parity, before,
        "the shard holds exactly the pooled rows"
    );
    let dedicated = out.placement.dedicated();
    assert_eq!(
        rs.shards.parity(&dedicated, &rs.schema).await.unwrap(),
        before
    );
    assert_eq!(
        rows(&rs.shards.parity(&pooled, &rs.schema).await.unwrap()),
        0
    );
    assert!(keys_of(&home, &pooled).await.is_empty());
    assert_eq!(keys_of(&home, &dedicated).await, media_before);
    assert_eq!(
        rs.shards
            .parity(&Scope::Pooled(other.clone()), &rs.schema)
            .await
            .unwrap(),
        other_before,
        "another room is untouched"
    );
    let events = events.0.into_inner().unwrap();
    assert!(
        matches!(events.first(), Some(ProgressEvent::Planned { rows: n, objects: 5, .. }) if *n == rows(&before))
    );
    for phase in [
        Phase::Provision,
        Phase::Copy,
        Phase::CatchUp,
        Phase::Cutover,
        Phase::Parity,
        Phase::Receipt,
        Phase::Cleanup,
    ] {
        assert!(events.contains(&ProgressEvent::Phase(phase)), "{phase:?}");
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ProgressEvent::Rows { .. }))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ProgressEvent::Objects { done: 5, .. }))
    );
    assert_eq!(events.last(), Some(&ProgressEvent::Finished));

    // The receipt verifies against the home's published key and names the placement.
    let trusted =
        TrustedKeys::from_json(&std::fs::read(home.trusted_keys_path()).unwrap()).unwrap();
    let receipt = roomshard_verify::dsse::verify_receipt(
        out.receipt.as_bytes(),
        &trusted,
        &roomshard::now_rfc3339(),
    )
    .unwrap();
    assert_eq!(receipt.predicate.room, "general");
    assert_eq!(receipt.predicate.version, out.placement.version);
    assert_eq!(
        receipt.predicate.manifest_sha256,
        roomshard::parity_digest(&before)
    );

    // Idempotent: again returns the same receipt, changes nothing.
    let again = flows::decentralise(rs, &room, &roomshard_core::NoProgress)
        .await
        .unwrap();
    assert_eq!(again.receipt, out.receipt);
    assert_eq!(again.placement, out.placement);

    // Revoke: sealed on every path.
    let sealed = flows::revoke(rs, &room).await.unwrap();
    assert_eq!(sealed.state, PlacementState::Sealed);
    let is_sealed = |e: Error| matches!(e, Error::Sealed { .. });
    assert!(is_sealed(
        flows::decentralise(rs, &room, &roomshard_core::NoProgress)
            .await
            .unwrap_err()
    ));
    assert!(is_sealed(flows::rotate(rs, &room).await.unwrap_err()));
    assert!(is_sealed(
        flows::recentralise(rs, &room, &roomshard_core::NoProgress)
            .await
            .unwrap_err()
    ));
    assert!(is_sealed(
        rs.shards.parity(&dedicated, &rs.schema).await.unwrap_err()
    ));
    let key = ObjectKey::new(&media_before[0].0).unwrap();
    assert!(is_sealed(rs.media.get(&dedicated, &key).await.unwrap_err()));
    assert!(is_sealed(
        rs.media
            .put(
                &dedicated,
                &key,
                ObjectBody::from_bytes(&b"x"[..]),
                &PutOptions::default()
            )
            .await
            .unwrap_err()
    ));
    assert!(is_sealed(
        rs.media
            .presign_get(&dedicated, &key, Duration::from_secs(60))
            .await
            .unwrap_err()
    ));
    // Revoke is idempotent.
    assert_eq!(flows::revoke(rs, &room).await.unwrap(), sealed);

    // Regrant: everything works again, with a new receipt.
    let (regranted, regrant_receipt) = flows::regrant(rs, &room).await.unwrap();
    assert_eq!(regranted.state, PlacementState::Sovereign);
    assert!(regranted.version > sealed.version);
    roomshard_verify::dsse::verify_receipt(
        regrant_receipt.as_bytes(),
        &trusted,
        &roomshard::now_rfc3339(),
    )
    .unwrap();
    assert_eq!(
        rs.shards.parity(&dedicated, &rs.schema).await.unwrap(),
        before
    );
    rs.media.get(&dedicated, &key).await.unwrap();

    // Rotate: a new key version, old objects still readable, a newer receipt.
    let (key_ref, rotate_receipt) = flows::rotate(rs, &room).await.unwrap();
    let after_rotate = rs.control.placement(&room).await.unwrap().unwrap();
    assert_eq!(
        after_rotate.kms_key_ref.as_deref(),
        Some(key_ref.id.as_str())
    );
    assert!(after_rotate.version > regranted.version);
    let verified = roomshard_verify::dsse::verify_receipt(
        rotate_receipt.as_bytes(),
        &trusted,
        &roomshard::now_rfc3339(),
    )
    .unwrap();
    assert_eq!(verified.predicate.version, after_rotate.version);
    let body = rs
        .media
        .get(&dedicated, &ObjectKey::new(&media_before[1].0).unwrap())
        .await
        .unwrap()
        .body
        .collect(1 << 20)
        .await
        .unwrap();
    assert_eq!(body.len() as u64, media_before[1].1);

    // Recentralise: back into the shared store, the shard and bucket gone.
    let first_key = rs
        .control
        .placement(&room)
        .await
        .unwrap()
        .unwrap()
        .kms_key_ref;
    assert!(first_key.is_some());
    let back = flows::recentralise(rs, &room, &roomshard_core::NoProgress)
        .await
        .unwrap();
    assert_eq!(back.state, PlacementState::Pooled);
    assert!(!back.is_sharded && back.shard_url.is_none() && back.media_bucket.is_none());
    assert_eq!(rs.shards.parity(&pooled, &rs.schema).await.unwrap(), before);
    assert_eq!(keys_of(&home, &pooled).await, media_before);
    assert!(matches!(
        rs.shards.parity(&dedicated, &rs.schema).await,
        Err(Error::NotFound { .. })
    ));
    assert!(!common::shard_exists(&home, &room).await);
    assert!(!dir.path().join("media/rooms/general").exists());

    // The audit log recorded it all and its chain holds.
    let audit = rs.control.verify_audit().await.unwrap();
    assert!(audit.is_intact(), "{audit:?}");
    let actions = audit_actions(rs, &room).await;
    for action in [
        "decentralise.started",
        "decentralise.finished",
        "room.revoked",
        "room.regranted",
        "key.rotated",
        "recentralise.started",
        "recentralise.finished",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }

    // Decentralising again works: the pending deletion of the old key is cancelled and the key
    // (same id, same alias) serves the room again; the room ends sovereign at exact parity.
    let again = flows::decentralise(rs, &room, &roomshard_core::NoProgress)
        .await
        .expect("re-decentralise after recentralise");
    assert_eq!(again.placement.state, PlacementState::Sovereign);
    assert_eq!(again.placement.kms_key_ref, first_key);
    assert_eq!(
        rs.shards.parity(&dedicated, &rs.schema).await.unwrap(),
        before
    );
    let actions = audit_actions(rs, &room).await;
    assert!(
        actions.iter().any(|a| a == "key.deletion_cancelled"),
        "{actions:?}"
    );
}

/// A decentralise dropped at any `.await` (what a timeout or a crash does to it) resumes on the
/// next call and reaches exact parity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_decentralise_resumes_to_exact_parity() {
    let dir = tempfile::tempdir().unwrap();
    let home = Arc::new(open(dir.path(), 20).await);
    let rs = &home.roomshard;
    let room = seed(&home, &workload("interrupted", 600, 3)).await;
    let before = rs
        .shards
        .parity(&Scope::Pooled(room.clone()), &rs.schema)
        .await
        .unwrap();
    let media_before = keys_of(&home, &Scope::Pooled(room.clone())).await;
    let mut interruptions = 0;
    let mut states = Vec::new();
    let mut budget = Duration::from_millis(5);
    let outcome = loop {
        match tokio::time::timeout(
            budget,
            flows::decentralise(rs, &room, &roomshard_core::NoProgress),
        )
        .await
        {
            Ok(result) => break result.unwrap(),
            Err(_) => {
                interruptions += 1;
                // No placement yet: interrupted before anything was recorded.
                if let Some(p) = rs.control.placement(&room).await.unwrap() {
                    states.push(p.state);
                }
                budget += Duration::from_millis(5);
            }
        }
    };
    assert!(interruptions >= 3, "only {interruptions} interruptions");
    assert!(outcome.resumed);
    assert!(
        states.contains(&PlacementState::Copying),
        "interrupted while copying at least once: {states:?}"
    );
    assert_eq!(outcome.parity, before);
    assert_eq!(
        keys_of(&home, &common::dedicated(rs, &room).await).await,
        media_before
    );
    assert!(rs.control.jobs().await.unwrap().is_empty(), "job forgotten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_specific_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = open(dir.path(), 100).await;
    let rs = &home.roomshard;
    let empty = RoomId::new("nothing-here").unwrap();
    assert!(matches!(
        flows::decentralise(rs, &empty, &roomshard_core::NoProgress).await,
        Err(Error::NotFound { .. })
    ));
    let room = seed(&home, &workload("pooled", 20, 4)).await;
    // A pooled room has no key of its own to revoke, rotate or recentralise.
    assert!(matches!(
        flows::revoke(rs, &room).await,
        Err(Error::NotFound { .. } | Error::Conflict { .. })
    ));
    flows::plan(rs, &room).await.unwrap();
    common::insert_placement(rs, &roomshard_core::Placement::pooled(room.clone())).await;
    assert!(matches!(
        flows::revoke(rs, &room).await,
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        flows::rotate(rs, &room).await,
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        flows::recentralise(rs, &room, &roomshard_core::NoProgress).await,
        Err(Error::Conflict { .. })
    ));
    assert_eq!(
        rs.control.placement(&room).await.unwrap().unwrap().state,
        PlacementState::Pooled
    );
    assert!(!common::shard_exists(&home, &room).await);
}

/// A recentralise that stops after the flip to pooled, before the room's own bucket is dropped
/// (a failure there leaves what a crash there leaves), is finished by the next call; until then
/// decentralise refuses the room with the way forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recentralise_stopped_after_the_flip_finishes_its_cleanup_on_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    let home = open(dir.path(), 100).await;
    let room = seed(&home, &workload("general", 120, 3)).await;
    flows::decentralise(&home.roomshard, &room, &roomshard_core::NoProgress)
        .await
        .unwrap();
    let failing = Arc::new(common::FailingMedia::new(home.roomshard.media.clone(), 0));
    failing.fail(Some("drop_bucket"));
    let rs = roomshard::Roomshard {
        media: failing.clone(),
        ..home.roomshard.clone()
    };
    let err = flows::recentralise(&rs, &room, &roomshard_core::NoProgress)
        .await
        .expect_err("the bucket drop fails");
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    let placement = rs.control.placement(&room).await.unwrap().unwrap();
    assert_eq!(placement.state, PlacementState::Pooled);
    assert!(
        dir.path().join("media/rooms/general").exists(),
        "the bucket is left"
    );

    // Decentralise refuses it, naming the way forward.
    let refused = flows::decentralise(&rs, &room, &roomshard_core::NoProgress)
        .await
        .expect_err("cleanup pending");
    assert!(
        matches!(&refused, Error::Conflict { .. }) && refused.to_string().contains("recentralise"),
        "{refused}"
    );

    // The next recentralise finishes the cleanup, once.
    failing.fail(None);
    let done = flows::recentralise(&rs, &room, &roomshard_core::NoProgress)
        .await
        .expect("cleanup resumes");
    assert_eq!(done.state, PlacementState::Pooled);
    assert!(!dir.path().join("media/rooms/general").exists());
    assert!(!common::shard_exists(&home, &room).await);
    assert!(
        rs.control
            .job(&room, roomshard_core::JobKind::Recentralise)
            .await
            .unwrap()
            .is_none()
    );
    let finished = rs
        .control
        .audit_log(Some(&room))
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.action == "recentralise.finished")
        .count();
    assert_eq!(finished, 1);
    // And a further call is the ordinary refusal of a pooled room.
    assert!(matches!(
        flows::recentralise(&rs, &room, &roomshard_core::NoProgress).await,
        Err(Error::Conflict { .. })
    ));
    // Decentralising again now works.
    let again = flows::decentralise(&rs, &room, &roomshard_core::NoProgress)
        .await
        .unwrap();
    assert_eq!(again.placement.state, PlacementState::Sovereign);
}

/// Sets `failing` to fail `op` as soon as `phase` starts.
struct FailAtPhase {
    failing: Arc<common::FailingMedia>,
    phase: Phase,
    op: &'static str,
}

impl roomshard_core::ProgressSink for FailAtPhase {
    fn emit(&self, event: ProgressEvent) {
        if event == ProgressEvent::Phase(self.phase) {
            self.failing.fail(Some(self.op));
        }
    }
}

/// A home whose media store fails on demand, and a decentralise of `room` stopped by a failure
/// of `op` once `phase` began, leaving the room in `expected`.
async fn stopped_decentralise(
    home: &Home,
    room: &RoomId,
    phase: Phase,
    op: &'static str,
    expected: PlacementState,
) -> (roomshard::Roomshard, Arc<common::FailingMedia>) {
    let failing = Arc::new(common::FailingMedia::new(home.roomshard.media.clone(), 0));
    let rs = roomshard::Roomshard {
        media: failing.clone(),
        ..home.roomshard.clone()
    };
    let sink = FailAtPhase {
        failing: failing.clone(),
        phase,
        op,
    };
    let err = flows::decentralise(&rs, room, &sink)
        .await
        .expect_err("the media store fails");
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    let state = rs.control.placement(room).await.unwrap().unwrap().state;
    assert_eq!(state, expected, "stopped in {expected}");
    failing.fail(None);
    (rs, failing)
}

/// Nothing of the room's own is left: no shard file, bucket directory, key directory or job.
async fn assert_only_pooled(home: &Home, dir: &std::path::Path, room: &RoomId) {
    let rs = &home.roomshard;
    let p = rs.control.placement(room).await.unwrap().unwrap();
    assert_eq!(p.state, PlacementState::Pooled);
    assert_eq!(
        (
            p.shard_url.is_none(),
            p.media_bucket.is_none(),
            p.kms_key_ref.is_none()
        ),
        (true, true, true),
        "{p:?}"
    );
    assert!(!common::shard_exists(home, room).await);
    assert!(!dir.join(format!("media/rooms/{room}")).exists());
    assert!(!dir.join(format!("keys/rooms/{room}")).exists());
    assert!(rs.control.jobs().await.unwrap().is_empty());
}

/// Every state a decentralise can stop in has a way forward (decentralise resumes to exact
/// parity) and a way back (abort: the room is pooled as before, with nothing of its own left,
/// and can be decentralised afterwards), each tried from that state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stopped_decentralise_state_goes_forward_or_back() {
    let cases = [
        (
            Phase::Provision,
            "ensure_bucket",
            PlacementState::Provisioning,
        ),
        (Phase::Copy, "copy", PlacementState::Copying),
        (Phase::Cutover, "list", PlacementState::Cutover),
    ];
    for (phase, op, state) in cases {
        for forward in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let home = open(dir.path(), 50).await;
            let room = seed(&home, &workload("general", 150, 8)).await;
            let pooled = Scope::Pooled(room.clone());
            let before = home
                .roomshard
                .shards
                .parity(&pooled, &home.roomshard.schema)
                .await
                .unwrap();
            let media_before = keys_of(&home, &pooled).await;
            let (rs, _failing) = stopped_decentralise(&home, &room, phase, op, state).await;
            if forward {
                let done = flows::decentralise(&rs, &room, &roomshard_core::NoProgress)
                    .await
                    .unwrap_or_else(|e| panic!("resume from {state}: {e}"));
                assert_eq!(done.placement.state, PlacementState::Sovereign);
                assert_eq!(done.parity, before, "from {state}");
                continue;
            }
            let aborted = flows::abort(&rs, &room)
                .await
                .unwrap_or_else(|e| panic!("abort from {state}: {e}"));
            assert_eq!(aborted.from, state);
            assert_eq!(aborted.placement.state, PlacementState::Pooled);
            assert_only_pooled(&home, dir.path(), &room).await;
            assert_eq!(
                rs.shards.parity(&pooled, &rs.schema).await.unwrap(),
                before,
                "abort from {state} left the pooled rows as they were"
            );
            assert_eq!(keys_of(&home, &pooled).await, media_before);
            let actions = audit_actions(&rs, &room).await;
            assert!(
                actions.ends_with(&[
                    "decentralise.aborted".to_string(),
                    "decentralise.abort_finished".to_string()
                ]),
                "{actions:?}"
            );
            assert!(rs.control.verify_audit().await.unwrap().is_intact());
            // Nothing left to abort; decentralising again works.
            assert!(matches!(
                flows::abort(&rs, &room).await,
                Err(Error::Conflict { .. })
            ));
            let again = flows::decentralise(&rs, &room, &roomshard_core::NoProgress)
                .await
                .unwrap();
            assert_eq!(again.parity, before);
        }
    }
}

/// An abort that stops halfway (the bucket drop fails) leaves the room pooled with a marker:
/// decentralise refuses it naming `abort`, and the next abort finishes the cleanup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_stopped_halfway_is_finished_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let home = open(dir.path(), 50).await;
    let room = seed(&home, &workload("general", 100, 9)).await;
    let (rs, failing) =
        stopped_decentralise(&home, &room, Phase::Copy, "copy", PlacementState::Copying).await;
    failing.fail(Some("drop_bucket"));
    flows::abort(&rs, &room)
        .await
        .expect_err("the bucket drop fails");
    assert_eq!(
        rs.control.placement(&room).await.unwrap().unwrap().state,
        PlacementState::Pooled
    );
    let refused = flows::decentralise(&rs, &room, &roomshard_core::NoProgress)
        .await
        .expect_err("abort unfinished");
    assert!(
        matches!(&refused, Error::Conflict { .. }) && refused.to_string().contains("abort"),
        "{refused}"
    );
    failing.fail(None);
    let finished = flows::abort(&rs, &room).await.unwrap();
    assert_eq!(finished.from, PlacementState::Pooled);
    assert_only_pooled(&home, dir.path(), &room).await;
    flows::decentralise(&rs, &room, &roomshard_core::NoProgress)
        .await
        .unwrap();
}

/// A recentralise stopped while copying back goes forward (recentralise resumes to pooled) or
/// back (abort: sovereign again, the shard unchanged, nothing left in the shared store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_recentralise_goes_forward_or_back() {
    for forward in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let home = open(dir.path(), 50).await;
        let room = seed(&home, &workload("general", 150, 10)).await;
        let done = flows::decentralise(&home.roomshard, &room, &roomshard_core::NoProgress)
            .await
            .unwrap();
        let failing = Arc::new(common::FailingMedia::new(home.roomshard.media.clone(), 0));
        let rs = roomshard::Roomshard {
            media: failing.clone(),
            ..home.roomshard.clone()
        };
        failing.fail(Some("copy"));
        flows::recentralise(&rs, &room, &roomshard_core::NoProgress)
            .await
            .expect_err("copy back fails");
        failing.fail(None);
        let pooled = Scope::Pooled(room.clone());
        let dedicated = common::dedicated(&rs, &room).await;
        assert_eq!(
            rs.control.placement(&room).await.unwrap().unwrap().state,
            PlacementState::Recentralising
        );
        assert!(
            rows(&rs.shards.parity(&pooled, &rs.schema).await.unwrap()) > 0,
            "rows were copied back before the failure"
        );
        if forward {
            let p = flows::recentralise(&rs, &room, &roomshard_core::NoProgress)
                .await
                .unwrap();
            assert_eq!(p.state, PlacementState::Pooled);
            assert_eq!(
                rs.shards.parity(&pooled, &rs.schema).await.unwrap(),
                done.parity
            );
            continue;
        }
        let aborted = flows::abort(&rs, &room).await.unwrap();
        assert_eq!(aborted.from, PlacementState::Recentralising);
        assert_eq!(aborted.placement.state, PlacementState::Sovereign);
        assert_eq!(
            rows(&rs.shards.parity(&pooled, &rs.schema).await.unwrap()),
            0
        );
        assert!(keys_of(&home, &pooled).await.is_empty());
        assert_eq!(
            rs.shards.parity(&dedicated, &rs.schema).await.unwrap(),
            done.parity,
            "the shard is untouched"
        );
        assert!(rs.control.jobs().await.unwrap().is_empty());
        // Sovereign again: a later recentralise runs from the start and succeeds.
        let p = flows::recentralise(&rs, &room, &roomshard_core::NoProgress)
            .await
            .unwrap();
        assert_eq!(p.state, PlacementState::Pooled);
    }
}

/// `Roomshard::new` refuses at startup what the providers cannot do, naming provider and
/// capability, before any key, bucket or shard exists; the signing algorithm comes from the key
/// manager's public key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn construction_checks_settings_against_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    let home = open(dir.path(), 50).await;
    let rs = &home.roomshard;
    assert_eq!(
        rs.config.signing_algorithm,
        roomshard_core::Algorithm::EcdsaP256Sha256,
        "from the local key manager's public key"
    );
    let build = |config: roomshard::Config, keys: Arc<dyn roomshard::KeyManager>| {
        roomshard::Roomshard::new(
            rs.shards.clone(),
            rs.media.clone(),
            keys,
            rs.control.clone(),
            rs.schema.clone(),
            config,
        )
    };
    // The sovereign default asks for lifecycle rules a directory cannot keep.
    let mut config = rs.config.clone();
    config.bucket_spec = roomshard_core::BucketSpec::default();
    let err = build(config, rs.keys.clone()).await.expect_err("lifecycle");
    assert!(
        matches!(&err, Error::Unsupported { operation: "ensure_bucket.lifecycle_ia_days", provider } if provider == "local"),
        "{err}"
    );
    // A pinned region needs every provider to place resources in regions; the embedded ones
    // have none, so residency is refused at startup (the shard store is asked first).
    let mut config = rs.config.clone();
    config.region = Some("eu-central-1".into());
    let err = build(config, rs.keys.clone()).await.expect_err("region");
    assert!(
        matches!(&err, Error::Unsupported { operation: "ensure_shard.region", provider } if provider == common::shard_provider()),
        "{err}"
    );
    // A key manager that cannot revoke cannot serve the sovereign profile.
    let no_revoke: Arc<dyn roomshard::KeyManager> = Arc::new(NoRevoke(rs.keys.clone()));
    let err = build(rs.config.clone(), no_revoke.clone())
        .await
        .expect_err("revoke");
    assert!(
        matches!(&err, Error::Unsupported { operation: "profile.sovereign.revoke", provider } if provider == "no-revoke"),
        "{err}"
    );
    // An unknown signing key is refused at once too.
    let mut config = rs.config.clone();
    config.signing_key = roomshard_core::SigningKeyId::new("nope").unwrap();
    assert!(matches!(
        build(config, rs.keys.clone()).await,
        Err(Error::NotFound { .. })
    ));
    // Nothing was created by the refused constructions.
    assert!(
        !dir.path().join("keys/rooms").exists()
            || std::fs::read_dir(dir.path().join("keys/rooms"))
                .unwrap()
                .next()
                .is_none()
    );
    // The standard profile does not need revoke.
    let mut config = rs.config.clone();
    config.profile = roomshard_core::Profile::Standard;
    build(config, no_revoke).await.expect("standard profile");
}

/// A key manager without `revoke`.
struct NoRevoke(Arc<dyn roomshard::KeyManager>);

#[roomshard_core::async_trait]
impl roomshard::KeyManager for NoRevoke {
    fn name(&self) -> &str {
        "no-revoke"
    }
    fn capabilities(&self) -> roomshard_core::KeyCapabilities {
        roomshard_core::KeyCapabilities {
            revoke: false,
            ..self.0.capabilities()
        }
    }
    async fn ensure_room_key(
        &self,
        room: &RoomId,
        spec: &roomshard_core::KeySpec,
    ) -> roomshard::Result<roomshard_core::KeyRef> {
        self.0.ensure_room_key(room, spec).await
    }
    async fn generate_data_key(
        &self,
        room: &RoomId,
        context: &roomshard_core::EncryptionContext,
    ) -> roomshard::Result<roomshard_core::DataKey> {
        self.0.generate_data_key(room, context).await
    }
    async fn decrypt_data_key(
        &self,
        room: &RoomId,
        wrapped: &[u8],
        context: &roomshard_core::EncryptionContext,
    ) -> roomshard::Result<roomshard_core::SecretBytes> {
        self.0.decrypt_data_key(room, wrapped, context).await
    }
    async fn public_key(
        &self,
        key: &roomshard_core::SigningKeyId,
    ) -> roomshard::Result<roomshard_core::PublicKey> {
        self.0.public_key(key).await
    }
}

/// Bring your own: a customer's database file, bucket and key are adopted — used, recorded as
/// adopted, never created — and recentralising or aborting leaves them, contents included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopted_resources_are_used_and_never_created_or_deleted() {
    if common::backend() == common::Backend::Postgres {
        // The customer's database here is an SQLite file outside the home. On PostgreSQL an
        // adopted shard is the room's own schema made by the customer, checked against a real
        // server by the shard conformance suite (an_adopted_shard_is_never_created_or_dropped,
        // crates/roomshard-postgres/tests/shard.rs).
        eprintln!("SQLite-specific; PostgreSQL adoption is checked by the conformance suite");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home = open(&dir.path().join("home"), 100).await;
    let rs = &home.roomshard;
    let room = seed(&home, &workload("acme", 120, 7)).await;
    let pooled = Scope::Pooled(room.clone());
    let before = rs.shards.parity(&pooled, &rs.schema).await.unwrap();
    let media_before = keys_of(&home, &pooled).await;

    // The customer's own: a database file outside the home, a bucket (directory) of their own
    // name, and the room's key made beforehand.
    let theirs = dir.path().join("customer").join("acme-db.sqlite3");
    let shard_url = roomshard_core::ServerUrl::new(format!("sqlite://{}", theirs.display()));
    let bucket_dir = home.dir().join("media").join("customer").join("acme");
    std::fs::create_dir_all(&bucket_dir).unwrap();
    let key = rs
        .keys
        .ensure_room_key(&room, &roomshard_core::KeySpec::default())
        .await
        .unwrap();
    let adopt = flows::Adoption {
        shard: Some(shard_url.clone()),
        bucket: Some("customer/acme".into()),
        key: Some(key.id.clone()),
    };
    let options = flows::DecentraliseOptions {
        adopt: adopt.clone(),
        ..flows::DecentraliseOptions::default()
    };

    // Their database does not exist yet: refused, nothing is created, and abort hands every
    // adopted resource back untouched.
    let err = flows::decentralise_with(rs, &room, &options, &roomshard_core::NoProgress)
        .await
        .expect_err("a missing adopted database");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("never created"), "{err}");
    assert!(!theirs.exists(), "the adopted database was created");
    flows::abort(rs, &room).await.unwrap();
    let p = rs.control.placement(&room).await.unwrap().unwrap();
    assert_eq!(p.state, PlacementState::Pooled);
    assert_eq!(p.location(), roomshard_core::Location::default(), "{p:?}");
    assert!(bucket_dir.is_dir(), "abort removed the adopted bucket");
    assert!(
        !rs.keys.cancel_deletion(&room).await.unwrap(),
        "abort scheduled the adopted key's deletion"
    );
    assert_eq!(rs.shards.parity(&pooled, &rs.schema).await.unwrap(), before);

    // Their database exists (an empty SQLite file): adopted, used, recorded.
    std::fs::create_dir_all(theirs.parent().unwrap()).unwrap();
    std::fs::write(&theirs, b"").unwrap();
    let out = flows::decentralise_with(rs, &room, &options, &roomshard_core::NoProgress)
        .await
        .unwrap();
    let p = &out.placement;
    assert_eq!(p.state, PlacementState::Sovereign);
    assert!(
        p.adopted.shard && p.adopted.bucket && p.adopted.key,
        "{p:?}"
    );
    assert_eq!(p.shard_url.as_ref(), Some(&shard_url));
    assert_eq!(p.media_bucket.as_deref(), Some("customer/acme"));
    assert_eq!(p.kms_key_ref.as_deref(), Some(key.id.as_str()));
    assert_eq!(out.parity, before);
    let theirs_scope = p.dedicated();
    assert_eq!(keys_of(&home, &theirs_scope).await, media_before);
    assert!(
        std::fs::read_dir(&bucket_dir).unwrap().count() > 0,
        "the objects are in the customer's bucket"
    );
    assert!(
        !home.dir().join("shards/room_acme.sqlite3").exists(),
        "a shard of roomshard's own was made besides the adopted one"
    );

    // Recentralise: the room is pooled again, and the customer keeps all three, with the data.
    flows::recentralise(rs, &room, &roomshard_core::NoProgress)
        .await
        .unwrap();
    assert_eq!(rs.shards.parity(&pooled, &rs.schema).await.unwrap(), before);
    let p = rs.control.placement(&room).await.unwrap().unwrap();
    assert_eq!(p.location(), roomshard_core::Location::default());
    assert!(
        theirs.is_file(),
        "recentralise deleted the adopted database"
    );
    assert_eq!(
        rs.shards.parity(&theirs_scope, &rs.schema).await.unwrap(),
        before,
        "the adopted database keeps its rows"
    );
    assert_eq!(keys_of(&home, &theirs_scope).await, media_before);
    assert!(
        !rs.keys.cancel_deletion(&room).await.unwrap(),
        "recentralise scheduled the adopted key's deletion"
    );
    let actions = audit_actions(rs, &room).await;
    assert!(
        actions.contains(&"recentralise.finished".to_string()),
        "{actions:?}"
    );
}

/// `flows::verify_audit`: an intact log holds every recorded receipt's anchor and a head noted
/// earlier; an unknown head is reported as a cut tail; a handed-in receipt of another key set is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_audit_checks_the_chain_receipt_anchors_and_an_expected_head() {
    let dir = tempfile::tempdir().unwrap();
    let home = open(dir.path(), 100).await;
    let rs = &home.roomshard;
    let room = seed(&home, &workload("general", 40, 3)).await;
    let out = flows::decentralise(rs, &room, &roomshard_core::NoProgress)
        .await
        .unwrap();
    let trusted =
        TrustedKeys::from_json(&std::fs::read(home.trusted_keys_path()).unwrap()).unwrap();
    let held = vec![("kept.json".to_string(), out.receipt.as_bytes().to_vec())];
    let first = flows::verify_audit(
        rs,
        &trusted,
        &flows::AuditCheckOptions {
            expect_head: None,
            receipts: held.clone(),
        },
    )
    .await
    .unwrap();
    assert!(first.intact(), "{first:?}");
    assert!(
        first.anchors.len() >= 2 && first.anchors.iter().all(|a| a.problem.is_none()),
        "the recorded and the handed-in receipt both anchor: {first:?}"
    );
    // The head noted now is found later, after more entries.
    flows::rotate(rs, &room).await.unwrap();
    let later = flows::verify_audit(
        rs,
        &trusted,
        &flows::AuditCheckOptions {
            expect_head: Some(first.head.clone()),
            receipts: Vec::new(),
        },
    )
    .await
    .unwrap();
    assert!(
        later.intact() && later.expected_head_seq == Some(first.rows),
        "{later:?}"
    );
    let cut = flows::verify_audit(
        rs,
        &trusted,
        &flows::AuditCheckOptions {
            expect_head: Some("0".repeat(64)),
            receipts: Vec::new(),
        },
    )
    .await
    .unwrap();
    let (_, why) = cut.broken.expect("an unknown head");
    assert!(why.contains("removed from its end"), "{why}");
    // A receipt checked against a key set that did not sign it is refused.
    let other = tempfile::tempdir().unwrap();
    let other_home = open(other.path(), 100).await;
    let strangers =
        TrustedKeys::from_json(&std::fs::read(other_home.trusted_keys_path()).unwrap()).unwrap();
    let err = flows::verify_audit(
        rs,
        &strangers,
        &flows::AuditCheckOptions {
            expect_head: None,
            receipts: held,
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert!(
        err.to_string().contains("not a receipt of this home"),
        "{err}"
    );
}

/// Every file under `dir` (recursively), relative, sorted.
fn tree(dir: &std::path::Path) -> Vec<String> {
    common::files_under(dir)
        .iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .collect()
}

/// Whether some file of `files` is under `sub/` and names `room`.
fn holds(files: &[String], sub: &str, room: &str) -> bool {
    files
        .iter()
        .any(|f| f.starts_with(&format!("{sub}/")) && f.contains(room))
}

/// A shard store that passes everything on to `inner`, except that while `fail_dump` is set its
/// `dump` fails after the first table: a source lost midway through a cross-store copy.
struct DumpFailsMidway {
    inner: Arc<dyn roomshard_core::ShardStore>,
    fail_dump: std::sync::atomic::AtomicBool,
}

/// The sink [`DumpFailsMidway`] hands its inner store: refuses the second table.
struct FirstTableOnly<'a> {
    sink: &'a mut dyn roomshard_core::DumpSink,
    tables: usize,
}

#[roomshard_core::async_trait]
impl roomshard_core::DumpSink for FirstTableOnly<'_> {
    async fn begin_table(
        &mut self,
        table: &roomshard_core::TableDescriptor,
    ) -> roomshard_core::Result<()> {
        self.tables += 1;
        if self.tables > 1 {
            return Err(Error::unavailable(
                "test shard store",
                true,
                std::io::Error::other("lost the source midway"),
            ));
        }
        self.sink.begin_table(table).await
    }
    async fn rows(&mut self, chunk: bytes::Bytes) -> roomshard_core::Result<()> {
        self.sink.rows(chunk).await
    }
    async fn end_table(&mut self, rows: u64) -> roomshard_core::Result<()> {
        self.sink.end_table(rows).await
    }
}

#[roomshard_core::async_trait]
impl roomshard_core::ShardStore for DumpFailsMidway {
    fn name(&self) -> &str {
        "dump-fails-midway"
    }
    fn capabilities(&self) -> roomshard_core::ShardCapabilities {
        self.inner.capabilities()
    }
    fn locate_shard(
        &self,
        room: &RoomId,
        region: Option<&str>,
    ) -> roomshard_core::Result<roomshard_core::ServerUrl> {
        self.inner.locate_shard(room, region)
    }
    async fn ensure_shard(
        &self,
        room: &RoomId,
        at: &roomshard_core::Location,
        schema: &roomshard::RoomSchema,
    ) -> roomshard_core::Result<roomshard_core::ShardRef> {
        self.inner.ensure_shard(room, at, schema).await
    }
    async fn copy_room(
        &self,
        request: roomshard_core::CopyRequest<'_>,
    ) -> roomshard_core::Result<roomshard_core::CopyOutcome> {
        self.inner.copy_room(request).await
    }
    async fn parity(
        &self,
        scope: &Scope,
        schema: &roomshard::RoomSchema,
    ) -> roomshard_core::Result<Parity> {
        self.inner.parity(scope, schema).await
    }
    async fn row_counts(
        &self,
        scope: &Scope,
        schema: &roomshard::RoomSchema,
    ) -> roomshard_core::Result<Vec<roomshard_core::TableCount>> {
        self.inner.row_counts(scope, schema).await
    }
    async fn drop_room(
        &self,
        scope: &Scope,
        schema: &roomshard::RoomSchema,
    ) -> roomshard_core::Result<()> {
        self.inner.drop_room(scope, schema).await
    }
    async fn dump(
        &self,
        scope: &Scope,
        schema: &roomshard::RoomSchema,
        sink: &mut dyn roomshard_core::DumpSink,
    ) -> roomshard_core::Result<Vec<roomshard_core::TableCount>> {
        if self.fail_dump.load(std::sync::atomic::Ordering::SeqCst) {
            let mut first = FirstTableOnly { sink, tables: 0 };
            return self.inner.dump(scope, schema, &mut first).await;
        }
        self.inner.dump(scope, schema, sink).await
    }
    async fn restore(
        &self,
        scope: &Scope,
        schema: &roomshard::RoomSchema,
        source: &mut dyn roomshard_core::DumpSource,
        remap: &IdRemap,
    ) -> roomshard_core::Result<roomshard_core::RestoreOutcome> {
        self.inner.restore(scope, schema, source, remap).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_on_a_registered_provider_lives_there_from_decentralise_to_recentralise() {
    use roomshard_core::KeyManager as _;
    let dir = tempfile::tempdir().unwrap();
    let home = open(&dir.path().join("home"), 25).await;
    // A second set of providers ("east": its own shard directory, media directory and key
    // directory — what a second database server, a customer's bucket and their KMS would be).
    let east = open(&dir.path().join("east"), 25).await;
    // East's bucket fails its third put once: the cross-store media copy must resume.
    let east_media = Arc::new(common::FailingMedia::new(east.roomshard.media.clone(), 3));
    // And east's shard store can lose its source midway through a dump (used at recentralise).
    let east_shards = Arc::new(DumpFailsMidway {
        inner: east.shards.as_dyn(),
        fail_dump: std::sync::atomic::AtomicBool::new(false),
    });
    let registered = home
        .roomshard
        .clone()
        .with_shards("east", east_shards.clone())
        .unwrap()
        .with_media("east", east_media.clone())
        .unwrap()
        .with_keys("east", east.keys.clone())
        .unwrap();
    let rs = &registered;

    // Registration refuses `default`, a taken name and a malformed one.
    for (name, kind) in [
        ("default", "exists"),
        ("east", "exists"),
        ("East!", "provider name"),
    ] {
        let err = rs
            .clone()
            .with_shards(name, east.shards.as_dyn())
            .expect_err("refused");
        assert!(err.to_string().contains(kind), "{name}: {err}");
    }

    let west_room = seed(&home, &workload("west1", 60, 1)).await;
    let room = seed(&home, &workload("east1", 90, 2)).await;
    let pooled = Scope::Pooled(room.clone());
    let before = rs.shards.parity(&pooled, &rs.schema).await.unwrap();
    let media_before = keys_of(&home, &pooled).await;
    let east_files_before = tree(east.dir());

    // An unknown provider name is refused before anything is recorded or made.
    let nowhere = flows::DecentraliseOptions {
        providers: roomshard_core::ProviderNames {
            shards: "nowhere".parse().unwrap(),
            ..Default::default()
        },
        ..Default::default()
    };
    let err = flows::decentralise_with(rs, &room, &nowhere, &roomshard_core::NoProgress)
        .await
        .expect_err("unknown provider");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("default, east"), "{err}");
    let p = rs.control.placement(&room).await.unwrap().unwrap();
    assert_eq!(p.state, PlacementState::Pooled, "{p:?}");
    assert_eq!(p.location(), roomshard_core::Location::default());

    // West on the default providers, east on "east".
    flows::decentralise(rs, &west_room, &roomshard_core::NoProgress)
        .await
        .unwrap();
    let names = roomshard_core::ProviderNames {
        shards: "east".parse().unwrap(),
        media: "east".parse().unwrap(),
        keys: "east".parse().unwrap(),
    };
    let options = flows::DecentraliseOptions {
        providers: names.clone(),
        ..Default::default()
    };
    let err = flows::decentralise_with(rs, &room, &options, &roomshard_core::NoProgress)
        .await
        .expect_err("the third put into east's bucket fails");
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    let p = rs.control.placement(&room).await.unwrap().unwrap();
    assert_eq!(p.state, PlacementState::Copying, "{p:?}");
    assert_eq!(p.providers, names, "recorded before anything was made");
    let out = flows::decentralise_with(rs, &room, &options, &roomshard_core::NoProgress)
        .await
        .unwrap();
    assert!(out.resumed);
    assert_eq!(out.placement.state, PlacementState::Sovereign);
    assert_eq!(out.placement.providers, names, "recorded in the placement");
    assert_eq!(
        rs.control
            .placement(&room)
            .await
            .unwrap()
            .unwrap()
            .providers,
        names,
        "and stored by the control plane"
    );
    assert_eq!(
        out.parity.tables.iter().map(|t| t.rows).sum::<u64>(),
        rows(&before)
    );
    assert_eq!(
        out.parity.mismatched_tables(&before),
        Vec::<String>::new(),
        "rows crossed stores unchanged (dump streamed into restore)"
    );
    // Everything of the east room is under east's directories, nothing of it under home's.
    let east_files: Vec<String> = tree(east.dir())
        .into_iter()
        .filter(|f| !east_files_before.contains(f))
        .collect();
    for sub in ["media", "keys"] {
        assert!(holds(&east_files, sub, "east1"), "{sub}: {east_files:?}");
    }
    // The shard: east's file or east's database's schema, and not home's.
    assert!(
        common::shard_exists(&east, &room).await,
        "east holds the shard"
    );
    assert!(
        !common::shard_exists(&home, &room).await,
        "home holds no shard of it"
    );
    let home_files = tree(home.dir());
    assert!(
        !home_files
            .iter()
            .any(|f| f.contains("east1") && !f.starts_with("tmp/")),
        "{home_files:?}"
    );
    assert!(
        common::shard_exists(&home, &west_room).await,
        "west1 is on home's own store"
    );
    let dedicated = out.placement.dedicated();
    assert_eq!(
        east.roomshard
            .media
            .list(&dedicated, &ListRequest::default())
            .await
            .unwrap()
            .objects
            .len(),
        media_before.len(),
        "every object copied (get → put across stores)"
    );

    // A host without the registration cannot reach the room and says why.
    std::fs::create_dir_all(dir.path().join("out-unregistered")).unwrap();
    let err = flows::export_to_dir(
        &home.roomshard,
        &room,
        &dir.path().join("out-unregistered"),
        &flows::ExportOptions::default(),
        &roomshard_core::NoProgress,
    )
    .await
    .expect_err("east is not registered there");
    assert!(err.to_string().contains("\"east\""), "{err}");

    // Export reads the east shard and bucket, and the export verifies.
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let (archive, _, exported) = flows::export_to_dir(
        rs,
        &room,
        &out_dir,
        &flows::ExportOptions::default(),
        &roomshard_core::NoProgress,
    )
    .await
    .unwrap();
    let trusted =
        TrustedKeys::from_json(&std::fs::read(home.trusted_keys_path()).unwrap()).unwrap();
    let report = roomshard_verify::verify_reader(
        std::fs::File::open(&archive).unwrap(),
        trusted,
        roomshard_verify::VerifyOptions::default(),
    );
    assert!(report.valid, "{report:?}");
    assert_eq!(exported.objects as usize, media_before.len());

    // Revoke, re-grant and rotate act on east's key manager.
    flows::revoke(rs, &room).await.unwrap();
    assert!(
        east.keys.list_grants(&room).await.unwrap().is_empty(),
        "the grant in east's key manager is gone"
    );
    flows::regrant(rs, &room).await.unwrap();
    assert_eq!(east.keys.list_grants(&room).await.unwrap().len(), 1);
    let (rotated, _) = flows::rotate(rs, &room).await.unwrap();
    assert_eq!(
        rs.control
            .placement(&room)
            .await
            .unwrap()
            .unwrap()
            .kms_key_ref,
        Some(rotated.id.clone())
    );
    assert!(
        home.keys
            .list_grants(&room)
            .await
            .map_or(true, |g| g.is_empty()),
        "the default key manager never held a grant on the east room"
    );

    // Recentralise brings rows and objects back into the home's pooled store and removes the
    // room's shard and bucket from east.
    // A dump from east that fails after its first table leaves nothing in the pooled tables
    // (the restore is all or nothing and never takes a cut stream for the end), and the shard
    // still serves; the next recentralise converges.
    east_shards
        .fail_dump
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = flows::recentralise(rs, &room, &roomshard_core::NoProgress)
        .await
        .expect_err("east's dump fails midway");
    assert!(
        matches!(err, Error::Unavailable { .. }) && err.to_string().contains("test shard store"),
        "the dump's own error is the one reported: {err}"
    );
    assert_eq!(
        rows(&rs.shards.parity(&pooled, &rs.schema).await.unwrap()),
        0,
        "no row of the cut dump reached the pooled tables"
    );
    assert_eq!(
        rs.control.placement(&room).await.unwrap().unwrap().state,
        PlacementState::Recentralising
    );
    east_shards
        .fail_dump
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let p = flows::recentralise(rs, &room, &roomshard_core::NoProgress)
        .await
        .unwrap();
    assert_eq!(p.state, PlacementState::Pooled);
    assert!(
        p.providers.is_default(),
        "forgotten with the location: {p:?}"
    );
    let after = rs.shards.parity(&pooled, &rs.schema).await.unwrap();
    assert_eq!(after.mismatched_tables(&before), Vec::<String>::new());
    assert_eq!(keys_of(&home, &pooled).await, media_before);
    let left: Vec<String> = tree(east.dir())
        .into_iter()
        .filter(|f| f.contains("east1") && !f.starts_with("keys/"))
        .collect();
    assert!(left.is_empty(), "east still holds {left:?}");
    // West was never touched.
    assert_eq!(
        rs.control
            .placement(&west_room)
            .await
            .unwrap()
            .unwrap()
            .state,
        PlacementState::Sovereign
    );
}

/// The read-only cutover is bounded: past `cutover_limit` each attempt aborts, the placement goes
/// back to `copying` (writes reopen on the pooled copy, which is untouched), and after
/// `MAX_CUTOVERS` attempts the call fails saying so; with a workable limit the same job then
/// finishes, and the flip records how long the room was read-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cutover_past_its_limit_aborts_and_writes_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut home = open(dir.path(), 50).await;
    let room = seed(&home, &workload("bounded", 300, 2)).await;
    let pooled = Scope::Pooled(room.clone());
    let before = home
        .roomshard
        .shards
        .parity(&pooled, &home.roomshard.schema)
        .await
        .unwrap();
    home.roomshard.config.cutover_limit = Duration::from_micros(1);
    let rs = &home.roomshard;
    let err = flows::decentralise(rs, &room, &roomshard_core::NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, roomshard_core::Error::Conflict { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("exceeded its limit of 0 ms 3 times"),
        "{err}"
    );
    let placement = rs.control.placement(&room).await.unwrap().unwrap();
    assert_eq!(placement.state, PlacementState::Copying, "writes reopened");
    assert_eq!(
        rs.shards.parity(&pooled, &rs.schema).await.unwrap(),
        before,
        "the pooled copy is untouched and authoritative"
    );
    let actions = audit_actions(rs, &room).await;
    let aborted = actions
        .iter()
        .filter(|a| *a == "decentralise.cutover_aborted")
        .count();
    assert_eq!(aborted, 3, "{actions:?}");
    assert!(!actions.iter().any(|a| a == "decentralise.sovereign"));

    home.roomshard.config.cutover_limit = Duration::from_secs(30);
    let rs = &home.roomshard;
    let outcome = flows::decentralise(rs, &room, &roomshard_core::NoProgress)
        .await
        .unwrap();
    assert!(outcome.resumed);
    assert_eq!(outcome.parity, before);
    let flip = rs
        .control
        .audit_log(Some(&room))
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.entry.action == "decentralise.sovereign")
        .expect("flipped");
    let ms = flip.entry.detail["cutover_ms"]
        .as_u64()
        .expect("cutover_ms");
    assert!(ms < 30_000, "{ms}");
}

/// A host writing as fast as it can while its room is decentralised, routing each write by the
/// room's placement (as the router does) and retrying what the database refuses: every
/// acknowledged write is in the shard afterwards, none is left behind in the shared tables.
/// PostgreSQL only: the write fence that makes this hold is the database's (the embedded
/// SQLite default has none, see docs/postgres.md "The write fence").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_writes_during_a_decentralise_are_never_lost() {
    if common::backend() != common::Backend::Postgres {
        eprintln!("needs the database's write fence: runs with ROOMSHARD_TEST_BACKEND=postgres");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home = open(dir.path(), 25).await;
    let room = seed(&home, &workload("busy", 400, 7)).await;
    let url = common::home_options(dir.path()).providers.shards.unwrap();
    let host = roomshard_postgres::connect(&url, 3).await.unwrap();
    let rs = Arc::new(home.roomshard.clone());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let writer = {
        let rs = rs.clone();
        let room = room.clone();
        let done = done.clone();
        let host = host.clone();
        tokio::spawn(async move {
            let messages = roomshard_core::Identifier::new("messages").unwrap();
            let (mut acked, mut refused, mut after_flip) = (Vec::new(), 0u64, 0u64);
            let mut id = 5_000_000i64;
            while after_flip < 30 {
                let placement = rs.control.placement(&room).await.unwrap();
                let sovereign = placement
                    .as_ref()
                    .is_some_and(|p| p.state == PlacementState::Sovereign);
                let scope = match &placement {
                    Some(p) if sovereign => p.scope(),
                    _ => Scope::Pooled(room.clone()),
                };
                let table = rs.shards.route(&scope).await.unwrap().qualify(&messages);
                let sql = format!(
                    "INSERT INTO {table} (id, room_id, author_id, body, reply_to, sent_at, edited) \
                     VALUES ($1, $2, 1, 'written during the move', NULL, now(), false)"
                );
                match sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .bind(room.as_str())
                    .execute(&host)
                    .await
                {
                    Ok(_) => {
                        acked.push(id);
                        id += 1;
                        if sovereign && done.load(std::sync::atomic::Ordering::SeqCst) {
                            after_flip += 1;
                        }
                    }
                    Err(e)
                        if roomshard_postgres::is_cutover_refusal(&e)
                            || roomshard_postgres::is_moved_refusal(&e) =>
                    {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err(e) => panic!("write {id}: {e}"),
                }
            }
            (acked, refused)
        })
    };
    // Let the writer get going before the copy starts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let outcome = flows::decentralise(&rs, &room, &roomshard_core::NoProgress)
        .await
        .unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let (acked, refused) = writer.await.unwrap();
    let shard = outcome.placement.scope();
    let table = rs
        .shards
        .route(&shard)
        .await
        .unwrap()
        .qualify(&roomshard_core::Identifier::new("messages").unwrap());
    let have: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM {table} WHERE id >= 5000000 ORDER BY id"
    )))
    .fetch_all(&host)
    .await
    .unwrap();
    assert_eq!(
        have, acked,
        "every acknowledged write, and only those, is in the shard"
    );
    assert!(
        acked.len() > 30,
        "the writer wrote during the move: {}",
        acked.len()
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM public.messages WHERE room_id = $1")
        .bind(room.as_str())
        .fetch_one(&host)
        .await
        .unwrap();
    assert_eq!(left, 0, "nothing of the room stays in the shared tables");
    eprintln!(
        "{} writes acknowledged during and after the move, {refused} refused and retried",
        acked.len()
    );
}

/// Writes one extra row straight into the room's shard the first time the catch-up phase starts:
/// a difference no change log can explain, which only parity finds.
struct StrayRow<'a> {
    rs: &'a roomshard::Roomshard,
    room: RoomId,
    done: std::sync::atomic::AtomicBool,
}

impl roomshard_core::ProgressSink for StrayRow<'_> {
    fn emit(&self, event: ProgressEvent) {
        if event != ProgressEvent::Phase(Phase::CatchUp)
            || self.done.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let pooled = Scope::Pooled(self.room.clone());
                let text = common::dump_text(self.rs, &pooled).await;
                let first = text["messages"]
                    .lines()
                    .next()
                    .expect("a message")
                    .to_string();
                let target = common::dedicated(self.rs, &self.room).await;
                // Its id collides in the shard, so the restore gives it a new one.
                common::seed_rows(
                    self.rs,
                    &target,
                    vec![("messages".to_string(), format!("{first}\n").into_bytes())],
                )
                .await;
            });
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_mismatch_is_named_repaired_and_rechecked_without_starting_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut home = open(dir.path(), 50).await;
    home.roomshard.config.parity_chunk_rows = 40;
    let room = seed(&home, &workload("strayrow", 300, 3)).await;
    let rs = &home.roomshard;
    let pooled = Scope::Pooled(room.clone());
    let before = rs.shards.parity(&pooled, &rs.schema).await.unwrap();
    let sink = StrayRow {
        rs,
        room: room.clone(),
        done: false.into(),
    };
    let outcome = flows::decentralise(rs, &room, &sink).await.unwrap();
    assert!(sink.done.into_inner(), "the stray row was written");
    assert_eq!(outcome.parity, before, "the stray row was repaired away");
    let log = rs.control.audit_log(Some(&room)).await.unwrap();
    let detail = |action: &str| {
        log.iter()
            .find(|r| r.entry.action == action)
            .map(|r| r.entry.detail.clone())
    };
    if !rs.shards.capabilities().chunk_parity {
        // Without chunk parity the full catch-up of the cutover repairs it just the same.
        assert!(detail("decentralise.parity_mismatch").is_none());
        return;
    }
    let mismatch = detail("decentralise.parity_mismatch").expect("the mismatch is audited");
    let total = mismatch["chunks_total"].as_u64().unwrap();
    assert!(
        total >= 8,
        "300 messages in chunks of 40, and more tables: {mismatch}"
    );
    assert_eq!(
        mismatch["chunks_checked"], total,
        "the first check covers every chunk"
    );
    assert_eq!(mismatch["chunks_mismatched"], 1, "{mismatch}");
    let rows = mismatch["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "exactly the stray row is named: {mismatch}");
    assert_eq!(rows[0]["table"], "messages");
    assert_eq!(rows[0]["problem"], "only in the shard");
    let stray = rows[0]["key"][0].as_str().unwrap().to_string();
    let dump = common::dump_text(rs, &Scope::Pooled(room.clone())).await;
    assert!(
        dump.values().all(|t| t.is_empty()),
        "the pooled copy is gone"
    );
    let shard = common::dump_text(rs, &outcome.placement.dedicated()).await;
    assert!(
        !shard["messages"]
            .lines()
            .any(|l| l.split('\t').any(|f| f == stray)),
        "the stray row {stray} is gone from the shard"
    );
    // The re-check after the repair resumes: only the mismatched chunk (and any a catch-up
    // touched), not the whole room again.
    let checked = detail("decentralise.parity_checked").expect("the re-check is audited");
    eprintln!("mismatch: {mismatch}\nre-check: {checked}");
    let n = checked["chunks_checked"].as_u64().unwrap();
    assert!(
        n >= 1 && n < total,
        "re-checked {n} of {total} chunks: {checked}"
    );
    assert_eq!(checked["chunks_mismatched"], 0);
    // And the cutover re-checked only what changed since (nothing: no writes).
    let flip = detail("decentralise.sovereign").unwrap();
    assert_eq!(flip["chunks"]["chunks_checked"], 0, "{flip}");
}

/// Adds `n` messages to the pooled room (new ids, past every key) when the catch-up phase starts
/// the second time — after the first chunk check, which a chunk-parity store runs in between:
/// the writes a host makes while that check runs.
struct LateWrites<'a> {
    rs: &'a roomshard::Roomshard,
    room: RoomId,
    n: usize,
    catch_ups: std::sync::atomic::AtomicUsize,
    done: std::sync::atomic::AtomicBool,
}

impl roomshard_core::ProgressSink for LateWrites<'_> {
    fn emit(&self, event: ProgressEvent) {
        if event != ProgressEvent::Phase(Phase::CatchUp)
            || self
                .catch_ups
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                != 1
        {
            return;
        }
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let pooled = Scope::Pooled(self.room.clone());
                let text = common::dump_text(self.rs, &pooled).await;
                let first = text["messages"]
                    .lines()
                    .next()
                    .expect("a message")
                    .to_string();
                let desc = self.rs.schema.table("messages").expect("messages");
                let id = desc
                    .columns
                    .iter()
                    .position(|c| c.name == "id")
                    .expect("id");
                // Copies of the first message with new ids past every existing one.
                let rows: String = (0..self.n)
                    .map(|i| {
                        let mut fields: Vec<String> =
                            first.split('\t').map(str::to_string).collect();
                        fields[id] = (5_000_000 + i).to_string();
                        format!("{}\n", fields.join("\t"))
                    })
                    .collect();
                common::seed_rows(
                    self.rs,
                    &pooled,
                    vec![("messages".to_string(), rows.into_bytes())],
                )
                .await;
            });
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_grew_while_writable_is_cut_again_before_the_cutover() {
    let dir = tempfile::tempdir().unwrap();
    let mut home = open(dir.path(), 50).await;
    home.roomshard.config.parity_chunk_rows = 40;
    let room = seed(&home, &workload("growing", 300, 4)).await;
    let rs = &home.roomshard;
    let sink = LateWrites {
        rs,
        room: room.clone(),
        n: 130,
        catch_ups: 0.into(),
        done: false.into(),
    };
    let outcome = flows::decentralise(rs, &room, &sink).await.unwrap();
    if !rs.shards.capabilities().chunk_parity {
        // One catch-up phase only: nothing to cut, and the room moved whole.
        assert!(!sink.done.into_inner());
        return;
    }
    assert!(sink.done.into_inner(), "the late writes were made");
    let messages = outcome
        .parity
        .tables
        .iter()
        .find(|t| t.table == "messages")
        .unwrap()
        .rows;
    assert_eq!(messages, 430, "every late write reached the shard");
    let log = rs.control.audit_log(Some(&room)).await.unwrap();
    let checks: Vec<serde_json::Value> = log
        .iter()
        .filter(|r| r.entry.action == "decentralise.parity_checked")
        .map(|r| r.entry.detail.clone())
        .collect();
    let first = checks.first().expect("the first check is audited")["chunks_total"]
        .as_u64()
        .unwrap();
    let flip = log
        .iter()
        .find(|r| r.entry.action == "decentralise.sovereign")
        .unwrap()
        .entry
        .detail["chunks"]
        .clone();
    let last = flip["chunks_total"].as_u64().unwrap();
    // 130 rows landed in the open last range: cut into chunks of 40 before the cutover.
    assert!(
        last >= first + 3,
        "ranges {first} at the first check, {last} at the flip: {flip}"
    );
    assert!(flip["chunks_checked"].as_u64().unwrap() <= 1, "{flip}");
}
