//! Checks of [`ControlPlane`]'s documented behaviour: placement compare-and-swap with its audit
//! entry in one transaction, the audit chain, copy jobs, the import journal and import holds,
//! receipts. Every check works on fresh room ids and reads the audit log relative to its own
//! appends, so the suite runs against a control plane that already holds other records.

use super::{
    CheckResult, CheckSpec, Context, Failure, Kind, Report, Verdict, checks, ensure, expect_kind,
    fresh_room, run_checks,
};
use roomshard_core::{
    AuditEntry, ControlPlane, CopyJob, IdMap, ImportRecord, ImportState, JobKind, Placement,
    PlacementChange, PlacementState, ReceiptRecord, RoomId, check_audit_anchor, verify_audit_chain,
};
use sha2::Digest as _;

/// What the control-plane suite needs to know beyond the trait.
#[derive(Clone, Debug, Default)]
pub struct ControlSuiteConfig {
    /// Prefix of the room ids the suite creates (default `cf`).
    pub room_prefix: Option<String>,
}

impl ControlSuiteConfig {
    fn room(&self) -> Result<RoomId, Failure> {
        fresh_room(self.room_prefix.as_deref().unwrap_or("cf"))
    }
}

/// The checks of the control-plane suite, in the order [`run_control_plane_suite`] runs them.
pub fn control_plane_checks() -> Vec<CheckSpec<dyn ControlPlane, ControlSuiteConfig>> {
    checks!(dyn ControlPlane, ControlSuiteConfig;
        placement_changes_are_compare_and_swap_with_their_audit_entry,
        audit_appends_chain_and_the_head_anchors_them,
        concurrent_appends_never_fork_the_chain,
        jobs_save_replace_and_delete,
        import_journal_refuses_concurrent_imports_and_keeps_id_maps,
        import_holds_have_one_live_holder,
        receipts_are_recorded_once_and_listed_oldest_first,
        pages_list_everything_once_in_order,
    )
}

/// Runs every control-plane check against `cp` and reports each.
pub async fn run_control_plane_suite(
    cp: &(dyn ControlPlane + 'static),
    config: &ControlSuiteConfig,
) -> Report {
    run_checks(
        "control_plane",
        cp.name(),
        &control_plane_checks(),
        cp,
        config,
    )
    .await
}

fn entry(action: &str, room: &RoomId) -> AuditEntry {
    AuditEntry {
        at: "2026-11-22T10:00:00Z".to_string(),
        actor: "conformance".to_string(),
        action: action.to_string(),
        room: Some(room.clone()),
        detail: serde_json::json!({ "suite": "control_plane" }),
    }
}

async fn actions(cp: &dyn ControlPlane, room: &RoomId) -> Result<Vec<String>, Failure> {
    Ok(cp
        .audit_log(Some(room))
        .await
        .context("audit_log of the room")?
        .into_iter()
        .map(|r| r.entry.action)
        .collect())
}

/// "Both are stored or neither is": insert (`AlreadyExists` twice), compare-and-swap update
/// (`Conflict` on a stale version, `Invalid` when the version does not grow, `NotFound` without
/// a placement), delete (`Conflict` on a stale version, idempotent when missing) — and exactly
/// the changes that happened have an audit entry. Every field reads back as written: location,
/// adoption and provider names included (a placement is where flows find a room again).
pub async fn placement_changes_are_compare_and_swap_with_their_audit_entry(
    cp: &dyn ControlPlane,
    config: &ControlSuiteConfig,
) -> CheckResult {
    let room = config.room()?;
    let mut p = Placement::pooled(room.clone());
    cp.change_placement(PlacementChange::Insert(&p), &entry("cf.insert", &room))
        .await
        .context("insert")?;
    expect_kind(
        cp.change_placement(PlacementChange::Insert(&p), &entry("cf.refused", &room))
            .await,
        Kind::AlreadyExists,
        "a second insert",
    )?;
    let stored = cp.placement(&room).await.context("placement")?;
    ensure(stored.as_ref() == Some(&p), || {
        format!("inserted {p:?}, read back {stored:?}")
    })?;
    let stale = p.clone();
    p.transition(PlacementState::Provisioning)
        .map_err(|e| Failure::new(format!("transition: {e}")))?;
    // What a decentralise records before creating anything: every field must come back.
    p.shard_url = Some(roomshard_core::ServerUrl::new(
        "postgres://u:pw@db2/mesh?schema=room_x",
    ));
    p.media_bucket = Some("mesh-room-x".to_string());
    p.kms_key_ref = Some("arn:aws:kms:eu-west-1:1:key/x".to_string());
    p.region = Some("eu-west-1".to_string());
    p.adopted = roomshard_core::Adopted {
        shard: false,
        bucket: true,
        key: true,
    };
    let name = |n: &str| {
        roomshard_core::ProviderName::new(n).map_err(|e| Failure::new(format!("name: {e}")))
    };
    p.providers = roomshard_core::ProviderNames {
        shards: name("db2")?,
        media: name("acme")?,
        keys: name("acme-kms")?,
    };
    let update = |next, expected_version| PlacementChange::Update {
        next,
        expected_version,
    };
    cp.change_placement(update(&p, stale.version), &entry("cf.update", &room))
        .await
        .context("compare-and-swap update")?;
    let stored = cp.placement(&room).await.context("placement")?;
    ensure(stored.as_ref() == Some(&p), || {
        format!("updated to {p:?}, read back {stored:?}")
    })?;
    let mut loser = stale.clone();
    loser.version += 1;
    loser.media_bucket = Some("other".to_string());
    expect_kind(
        cp.change_placement(update(&loser, stale.version), &entry("cf.refused", &room))
            .await,
        Kind::Conflict,
        "an update from a stale version",
    )?;
    let mut same = p.clone();
    same.region = Some("x".to_string());
    expect_kind(
        cp.change_placement(update(&same, p.version), &entry("cf.refused", &room))
            .await,
        Kind::Invalid,
        "an update that keeps the version",
    )?;
    let ghost = config.room()?;
    let mut g = Placement::pooled(ghost.clone());
    g.version = 1;
    expect_kind(
        cp.change_placement(update(&g, 0), &entry("cf.refused", &ghost))
            .await,
        Kind::NotFound,
        "an update of a room without a placement",
    )?;
    let stored = cp.placement(&room).await.context("placement")?;
    ensure(stored.as_ref() == Some(&p), || {
        format!("refused changes changed the placement: {stored:?}, expected {p:?}")
    })?;
    let delete = |expected_version| PlacementChange::Delete {
        room: &room,
        expected_version,
    };
    expect_kind(
        cp.change_placement(delete(stale.version), &entry("cf.refused", &room))
            .await,
        Kind::Conflict,
        "a delete from a stale version",
    )?;
    cp.change_placement(delete(p.version), &entry("cf.delete", &room))
        .await
        .context("delete")?;
    cp.change_placement(delete(p.version), &entry("cf.delete", &room))
        .await
        .context("delete of a missing placement (idempotent)")?;
    let gone = cp.placement(&room).await.context("placement")?;
    ensure(gone.is_none(), || format!("deleted, but {gone:?}"))?;
    let got = actions(cp, &room).await?;
    ensure(
        got == ["cf.insert", "cf.update", "cf.delete", "cf.delete"],
        || format!("audit entries {got:?}: refused changes must append none, done ones one each"),
    )?;
    let ghost_actions = actions(cp, &ghost).await?;
    ensure(ghost_actions.is_empty(), || {
        format!("a refused update appended {ghost_actions:?}")
    })?;
    Ok(Verdict::Passed)
}

/// "`prev_hash` is that row's `hash`, `seq` is its `seq + 1`, `hash` is `compute_hash`"; the
/// whole chain verifies; `audit_head` is the newest record and anchors it.
pub async fn audit_appends_chain_and_the_head_anchors_them(
    cp: &dyn ControlPlane,
    config: &ControlSuiteConfig,
) -> CheckResult {
    let room = config.room()?;
    let mut records = Vec::new();
    for i in 0..3 {
        records.push(
            cp.append_audit(&entry(&format!("cf.append.{i}"), &room))
                .await
                .context("append_audit")?,
        );
    }
    for pair in records.windows(2) {
        ensure(
            pair[1].seq == pair[0].seq + 1 && pair[1].prev_hash == pair[0].hash,
            || format!("{:?} does not follow {:?}", pair[1], pair[0]),
        )?;
    }
    for r in &records {
        ensure(
            r.hash == roomshard_core::AuditRecord::compute_hash(r.seq, &r.prev_hash, &r.entry),
            || {
                format!(
                    "record {} has a hash that does not match its contents",
                    r.seq
                )
            },
        )?;
    }
    let head = cp.audit_head().await.context("audit_head")?;
    let last = records.last().cloned();
    // Another writer may have appended since; the head is then newer, never older.
    ensure(
        head.as_ref().map(|h| h.seq) >= last.as_ref().map(|l| l.seq),
        || format!("audit_head {head:?} is older than the last append {last:?}"),
    )?;
    let log = cp.audit_log(None).await.context("audit_log")?;
    let v = verify_audit_chain(&log);
    ensure(v.is_intact(), || {
        format!("the chain does not verify: {v:?}")
    })?;
    let from_trait = cp.verify_audit().await.context("verify_audit")?;
    ensure(from_trait.is_intact(), || {
        format!("verify_audit reports {from_trait:?}")
    })?;
    for r in &records {
        let anchor = roomshard_core::AuditAnchor {
            seq: r.seq,
            hash: r.hash.clone(),
        };
        if let Some(problem) = check_audit_anchor(&log, &anchor) {
            return Err(Failure::new(format!(
                "anchor of record {}: {problem}",
                r.seq
            )));
        }
    }
    let mine = cp.audit_log(Some(&room)).await.context("audit_log(room)")?;
    ensure(mine == records, || {
        format!("audit_log(room) is {mine:?}, not the records appended")
    })?;
    Ok(Verdict::Passed)
}

/// "Serialised: concurrent appends never fork the chain."
pub async fn concurrent_appends_never_fork_the_chain(
    cp: &dyn ControlPlane,
    config: &ControlSuiteConfig,
) -> CheckResult {
    let room = config.room()?;
    let appends = (0..16).map(|i| {
        let e = entry(&format!("cf.concurrent.{i}"), &room);
        async move { cp.append_audit(&e).await }
    });
    let results = futures::future::join_all(appends).await;
    let mut seqs = Vec::new();
    for r in results {
        seqs.push(r.context("a concurrent append_audit")?.seq);
    }
    seqs.sort_unstable();
    seqs.dedup();
    ensure(seqs.len() == 16, || {
        format!("16 concurrent appends got {} distinct seqs", seqs.len())
    })?;
    let v = cp.verify_audit().await.context("verify_audit")?;
    ensure(v.is_intact(), || format!("after concurrent appends: {v:?}"))?;
    Ok(Verdict::Passed)
}

/// "Stores a job's state, replacing the previous state of the same `(room, kind)`"; delete is
/// idempotent.
pub async fn jobs_save_replace_and_delete(
    cp: &dyn ControlPlane,
    config: &ControlSuiteConfig,
) -> CheckResult {
    let room = config.room()?;
    let mut job = CopyJob {
        room: room.clone(),
        kind: JobKind::Decentralise,
        checkpoint: None,
        media_after: None,
        media_done: (0, 0),
        updated_at_unix_ms: 1,
    };
    cp.save_job(&job).await.context("save_job")?;
    job.media_after = Some("m/7".to_string());
    job.media_done = (7, 700);
    job.updated_at_unix_ms = 2;
    cp.save_job(&job).await.context("save_job again")?;
    let got = cp.job(&room, JobKind::Decentralise).await.context("job")?;
    ensure(got.as_ref() == Some(&job), || {
        format!("saved {job:?}, read {got:?}")
    })?;
    let other = cp
        .job(&room, JobKind::Recentralise)
        .await
        .context("job of the other kind")?;
    ensure(other.is_none(), || format!("another kind's job: {other:?}"))?;
    cp.delete_job(&room, JobKind::Decentralise)
        .await
        .context("delete_job")?;
    cp.delete_job(&room, JobKind::Decentralise)
        .await
        .context("delete_job again (idempotent)")?;
    let listed = cp.jobs().await.context("jobs")?;
    ensure(!listed.iter().any(|j| j.room == room), || {
        format!("a deleted job is still listed: {listed:?}")
    })?;
    Ok(Verdict::Passed)
}

fn record(id: &str, new_room: &RoomId, manifest: &str) -> ImportRecord {
    ImportRecord {
        id: id.to_string(),
        source_room: "general".to_string(),
        new_room: new_room.clone(),
        manifest_sha256: manifest.to_string(),
        signer_key_id: "p256-conformance".to_string(),
        state: ImportState::Staging,
        started_at_unix_ms: 1,
    }
}

/// `begin_import`: `AlreadyExists` for a taken id; `Conflict` for a second staging import into
/// one room, and for a second import of one bundle unless allowed; `finish_import` stores the id
/// maps; `delete_import` is idempotent.
pub async fn import_journal_refuses_concurrent_imports_and_keeps_id_maps(
    cp: &dyn ControlPlane,
    config: &ControlSuiteConfig,
) -> CheckResult {
    let room = config.room()?;
    let other_room = config.room()?;
    // Unique per run: the manifest digest and import ids embed the room id.
    let manifest = format!("{:x}", sha2::Sha256::digest(room.as_str()));
    let id = |n: u32| format!("{}-{n}", room.as_str());
    let first = record(&id(1), &room, &manifest);
    cp.begin_import(&first, false)
        .await
        .context("begin_import")?;
    expect_kind(
        cp.begin_import(&first, true).await,
        Kind::AlreadyExists,
        "begin_import with a taken id",
    )?;
    let mut same_room = record(&id(2), &room, &"1".repeat(64));
    same_room.source_room = "other".to_string();
    expect_kind(
        cp.begin_import(&same_room, true).await,
        Kind::Conflict,
        "a second staging import into the same room",
    )?;
    let same_bundle = record(&id(3), &other_room, &manifest);
    expect_kind(
        cp.begin_import(&same_bundle, false).await,
        Kind::Conflict,
        "a second import of the same bundle",
    )?;
    cp.begin_import(&same_bundle, true)
        .await
        .context("a second import of the same bundle, duplicates allowed")?;
    let maps = vec![IdMap {
        table: "messages".to_string(),
        column: "id".to_string(),
        changes: vec![("1".to_string(), "101".to_string())],
    }];
    cp.finish_import(&first.id, &maps)
        .await
        .context("finish_import")?;
    let stored = cp
        .import_id_maps(&first.id)
        .await
        .context("import_id_maps")?;
    ensure(stored == maps, || {
        format!("stored maps {stored:?}, not {maps:?}")
    })?;
    let done = cp
        .imports(Some(ImportState::Done))
        .await
        .context("imports(done)")?;
    ensure(done.iter().any(|r| r.id == first.id), || {
        "a finished import is not listed as done".to_string()
    })?;
    for r in [&first, &same_bundle] {
        cp.delete_import(&r.id).await.context("delete_import")?;
        cp.delete_import(&r.id)
            .await
            .context("delete_import again (idempotent)")?;
    }
    let left = cp.imports(None).await.context("imports")?;
    ensure(
        !left.iter().any(|r| r.id.starts_with(room.as_str())),
        || "deleted imports are still listed".to_string(),
    )?;
    Ok(Verdict::Passed)
}

/// `hold_import`: one live holder per id; released on drop.
pub async fn import_holds_have_one_live_holder(
    cp: &dyn ControlPlane,
    config: &ControlSuiteConfig,
) -> CheckResult {
    let id = format!("{}-hold", config.room()?.as_str());
    let hold = cp
        .hold_import(&id)
        .await
        .context("hold_import")?
        .ok_or_else(|| Failure::new("a fresh import id is already held"))?;
    let again = cp.hold_import(&id).await.context("hold_import again")?;
    ensure(again.is_none(), || {
        "a held import id was handed out a second time".to_string()
    })?;
    drop(hold);
    let after = cp
        .hold_import(&id)
        .await
        .context("hold_import after drop")?;
    ensure(after.is_some(), || {
        "dropping the hold did not release it".to_string()
    })?;
    Ok(Verdict::Passed)
}

/// "Recording the same receipt twice (a retry) is `Ok`; a different envelope for the same room,
/// version and reason is `AlreadyExists`"; receipts are listed oldest first.
pub async fn receipts_are_recorded_once_and_listed_oldest_first(
    cp: &dyn ControlPlane,
    config: &ControlSuiteConfig,
) -> CheckResult {
    let room = config.room()?;
    let receipt = |version, reason: &str| ReceiptRecord {
        room: room.clone(),
        version,
        reason: reason.to_string(),
        issued: "2026-11-22T10:00:00Z".to_string(),
        envelope: format!("{{\"v\":{version}}}"),
    };
    let first = receipt(1, "decentralise");
    let second = receipt(2, "rotate");
    cp.record_receipt(&first).await.context("record_receipt")?;
    cp.record_receipt(&second).await.context("record_receipt")?;
    cp.record_receipt(&first)
        .await
        .context("recording the same receipt again (a retry)")?;
    let mut forged = receipt(1, "decentralise");
    forged.envelope = "{\"other\":true}".to_string();
    expect_kind(
        cp.record_receipt(&forged).await,
        Kind::AlreadyExists,
        "recording another envelope for the same room, version and reason",
    )?;
    let listed = cp.receipts(&room).await.context("receipts")?;
    ensure(listed == [first, second], || {
        format!("receipts listed as {listed:?}")
    })?;
    Ok(Verdict::Passed)
}

/// `placements_page`, `audit_page` and `imports_page` (pages of 2 and 1) list exactly what the
/// whole-list reads list, once each, in their order; an empty page is the end.
pub async fn pages_list_everything_once_in_order(
    cp: &dyn ControlPlane,
    config: &ControlSuiteConfig,
) -> CheckResult {
    let mut mine = Vec::new();
    for _ in 0..5 {
        let room = config.room()?;
        cp.change_placement(
            PlacementChange::Insert(&Placement::pooled(room.clone())),
            &entry("cf.paged", &room),
        )
        .await
        .context("insert")?;
        mine.push(room);
    }
    let mut paged: Vec<Placement> = Vec::new();
    loop {
        let after = paged.last().map(|p| p.room.clone());
        let page = cp
            .placements_page(after.as_ref(), 2)
            .await
            .context("placements_page")?;
        ensure(page.len() <= 2, || {
            format!("a page of 2 held {}", page.len())
        })?;
        if page.is_empty() {
            break;
        }
        paged.extend(page);
    }
    let whole = cp.placements().await.context("placements")?;
    ensure(paged == whole, || {
        "placements read in pages of 2 differ from placements()".to_string()
    })?;
    ensure(paged.windows(2).all(|w| w[0].room < w[1].room), || {
        "placements_page is not in strictly ascending room order".to_string()
    })?;
    ensure(
        mine.iter().all(|r| paged.iter().any(|p| &p.room == r)),
        || "a placement is missing from the pages".to_string(),
    )?;

    let room = &mine[0];
    for i in 0..4 {
        cp.append_audit(&entry(&format!("cf.paged.{i}"), room))
            .await
            .context("append_audit")?;
    }
    let mut records = Vec::new();
    loop {
        let after = records
            .last()
            .map_or(0, |r: &roomshard_core::AuditRecord| r.seq);
        let page = cp
            .audit_page(Some(room), after, 2)
            .await
            .context("audit_page")?;
        if page.is_empty() {
            break;
        }
        records.extend(page);
    }
    let whole = cp.audit_log(Some(room)).await.context("audit_log")?;
    ensure(records == whole && records.len() == 5, || {
        format!(
            "audit pages of the room: {} records, audit_log: {}",
            records.len(),
            whole.len()
        )
    })?;

    let ids: Vec<String> = (0..3).map(|i| format!("{room}-page-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let mut r = record(id, &mine[i + 1], &"2".repeat(64));
        // Two share a start time: the id orders them.
        r.started_at_unix_ms = [5, 5, 7][i];
        cp.begin_import(&r, true).await.context("begin_import")?;
    }
    let mut listed: Vec<ImportRecord> = Vec::new();
    loop {
        let after = listed.last().map(|r| (r.started_at_unix_ms, r.id.clone()));
        let page = cp
            .imports_page(
                Some(ImportState::Staging),
                after.as_ref().map(|(t, id)| (*t, id.as_str())),
                1,
            )
            .await
            .context("imports_page")?;
        if page.is_empty() {
            break;
        }
        listed.extend(page);
    }
    let whole = cp
        .imports(Some(ImportState::Staging))
        .await
        .context("imports")?;
    ensure(listed == whole, || {
        "imports read in pages of 1 differ from imports()".to_string()
    })?;
    let order: Vec<&str> = listed
        .iter()
        .filter(|r| ids.contains(&r.id))
        .map(|r| r.id.as_str())
        .collect();
    ensure(
        order == ids.iter().map(String::as_str).collect::<Vec<_>>(),
        || format!("imports not oldest first, then by id: {order:?}"),
    )?;
    for id in &ids {
        cp.delete_import(id).await.context("delete_import")?;
    }
    Ok(Verdict::Passed)
}
