//! Decentralise: move a room from the shared database, bucket and key into its own.
//!
//! ```text
//! plan ─► Pooled ─► Provisioning ─► Copying ─────────► Cutover ─────────► Sovereign ─► receipt, cleanup
//!                   key, bucket,    bulk rows+media,   read-only: final   parity equal
//!                   shard           catch-up passes    catch-up, parity   (else back to Copying)
//! ```
//!
//! Every step is idempotent and its progress is saved (the placement's state in the control
//! plane, the copy job's checkpoint and media cursor), so calling [`decentralise`] again after a
//! crash — or a `kill -9` — resumes where the last call stopped and converges to the same shard.
//! The pooled copy stays authoritative until parity holds at cutover; it is deleted only after
//! the placement says `sovereign`.

use roomshard_core::{
    Adopted, CopyPass, Error, JobKind, KeySpec, Parity, Phase, Placement, PlacementState,
    ProgressEvent, ProgressSink, ProviderNames, Result, RoomId, Scope, ServerUrl,
};
use serde::{Deserialize, Serialize};

use super::chunks::{ChunkCheck, Copies};
use super::copy::{
    JobState, Side, bulk_copy_media, copy_pass, media_difference, media_totals, reconcile_media,
    replace_rows, sealed,
};
use crate::Roomshard;
use crate::support::parity_digest;

/// Catch-up passes while writes continue before cutover is attempted anyway.
const MAX_CATCH_UP_PASSES: usize = 5;
/// Cutovers attempted before giving up when parity keeps failing.
const MAX_CUTOVERS: usize = 3;
/// Repairs of mismatched chunks while the room is writable before cutover is attempted anyway
/// (its own check then decides).
const MAX_CHUNK_REPAIRS: usize = 3;
/// Bytes per row assumed for a cost estimate when the store cannot tell.
const ESTIMATED_ROW_BYTES: u64 = 256;

/// What a decentralise will do, before it does it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The room.
    pub room: RoomId,
    /// The assets to create, in order (`key room/<id>`, `bucket …`, `shard …`).
    pub assets: Vec<String>,
    /// Rows per table now (they may still change while copying).
    pub parity: Parity,
    /// Rows over all tables.
    pub rows: u64,
    /// Media objects.
    pub objects: u64,
    /// Media bytes.
    pub media_bytes: u64,
    /// Estimated monthly storage cost of the room's own resources, in US dollars.
    pub monthly_cost_usd: f64,
}

/// What a finished decentralise did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecentraliseOutcome {
    /// The room's placement now (sovereign).
    pub placement: Placement,
    /// Parity of the shard, equal to the pooled copy's at cutover.
    pub parity: Parity,
    /// The Sovereignty Receipt (DSSE envelope JSON).
    pub receipt: String,
    /// Whether this call resumed a job a previous one left unfinished.
    pub resumed: bool,
}

/// Plans a decentralise without changing anything: what will be created, how much will be
/// copied, what it will cost a month.
///
/// # Errors
/// [`Error::NotFound`] for a room with neither rows nor objects in the shared store;
/// [`Error::Conflict`] for a room that is not pooled.
pub async fn plan(rs: &Roomshard, room: &RoomId) -> Result<Plan> {
    if let Some(p) = rs.control.placement(room).await?
        && p.state != PlacementState::Pooled
    {
        return Err(Error::conflict(format!(
            "room {room} is {}, not pooled: there is nothing to plan",
            p.state
        )));
    }
    let scope = Scope::Pooled(room.clone());
    let parity = rs.shards.parity(&scope, &rs.schema).await?;
    let rows: u64 = parity.tables.iter().map(|t| t.rows).sum();
    let (objects, media_bytes) = media_totals(Side::pooled(rs, &scope)).await?;
    if rows == 0 && objects == 0 {
        return Err(Error::not_found(format!(
            "room {room} (no rows and no objects in the shared store)"
        )));
    }
    let shard_bytes = if rs.shards.capabilities().size_bytes {
        rs.shards.size_bytes(&scope, &rs.schema).await?
    } else {
        rows * ESTIMATED_ROW_BYTES
    };
    let gib = (shard_bytes + media_bytes) as f64 / (1u64 << 30) as f64;
    Ok(Plan {
        room: room.clone(),
        assets: vec![
            format!(
                "key {} in {}",
                roomshard_core::room_key_alias(room),
                rs.keys.name()
            ),
            format!("grant on that key to {}", rs.config.grantee),
            format!("bucket for room {room} in {}", rs.media.name()),
            format!("shard room_{room} in {}", rs.shards.name()),
        ],
        parity,
        rows,
        objects,
        media_bytes,
        monthly_cost_usd: gib * rs.config.price_per_gib_month_usd,
    })
}

/// A customer's own resources for a room to use instead of new ones (bring your own): each is
/// checked to exist, used, recorded in the placement as adopted, and never created or deleted —
/// recentralise and abort leave it, with its contents, as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Adoption {
    /// An existing database / schema / file, in the shard store's URL form.
    pub shard: Option<ServerUrl>,
    /// An existing bucket, by name.
    pub bucket: Option<String>,
    /// An existing key, by the key manager's reference (a KMS key ARN).
    pub key: Option<String>,
}

/// How to decentralise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecentraliseOptions {
    /// Resources to adopt instead of creating (default: create all three). Read when the
    /// decentralise starts; a resumed one keeps what its placement recorded.
    pub adopt: Adoption,
    /// Which registered providers ([`crate::registry`]) get the room's own shard, bucket and
    /// key (default: the `default` ones). Checked and recorded in the placement when the
    /// decentralise starts; a resumed one keeps what its placement recorded.
    pub providers: ProviderNames,
}

/// Decentralises `room`, or resumes the decentralise a crash interrupted; on a room already
/// sovereign it returns its latest receipt.
///
/// # Errors
/// [`Error::Sealed`] for a sealed room; [`Error::Conflict`] for a room being recentralised, or
/// when parity still fails after repeated cutovers; whatever a provider returns (the job stays
/// resumable).
pub async fn decentralise(
    rs: &Roomshard,
    room: &RoomId,
    progress: &dyn ProgressSink,
) -> Result<DecentraliseOutcome> {
    decentralise_with(rs, room, &DecentraliseOptions::default(), progress).await
}

/// [`decentralise`] with options (adopting a customer's own shard, bucket or key).
///
/// # Errors
/// As [`decentralise`]; [`Error::NotFound`] for an adopted resource that does not exist.
pub async fn decentralise_with(
    rs: &Roomshard,
    room: &RoomId,
    options: &DecentraliseOptions,
    progress: &dyn ProgressSink,
) -> Result<DecentraliseOutcome> {
    if rs.control.placement(room).await?.is_none() {
        // Check the room exists before recording anything about it.
        plan(rs, room).await?;
    }
    let mut placement = rs.placement_or_pooled(room).await?;
    if placement.state == PlacementState::Pooled
        && rs.control.job(room, JobKind::Decentralise).await?.is_some()
    {
        // The marker an abort leaves until it has removed the half-made shard, bucket and key.
        return Err(Error::conflict(format!(
            "room {room}: an earlier abort did not finish removing the half-made shard, bucket \
             and key; run abort {room} again to finish it first"
        )));
    }
    if placement.state == PlacementState::Pooled
        && rs.control.job(room, JobKind::Recentralise).await?.is_some()
    {
        // Its old shard, bucket or key may still exist and would be reused with stale data.
        return Err(Error::conflict(format!(
            "room {room}: an earlier recentralise did not finish removing the room's own shard, \
             bucket and key; run recentralise {room} again to finish it first"
        )));
    }
    let existing_job = rs.control.job(room, JobKind::Decentralise).await?;
    let resumed = placement.state != PlacementState::Pooled || existing_job.is_some();
    match placement.state {
        PlacementState::Sealed => return Err(sealed(room)),
        PlacementState::Recentralising => {
            return Err(Error::conflict(format!(
                "room {room} is being recentralised; run recentralise to finish it first"
            )));
        }
        PlacementState::Sovereign if existing_job.is_none() => {
            // Already done: answer with the receipt of the current placement.
            let own = rs.own_providers(&placement)?;
            let parity = own.shards.parity(&placement.scope(), &rs.schema).await?;
            let receipt = receipt_for(rs, &placement, &parity).await?;
            return Ok(DecentraliseOutcome {
                placement,
                parity,
                receipt,
                resumed: false,
            });
        }
        _ => {}
    }
    let pooled = Scope::Pooled(room.clone());

    // 1. Plan (only when starting: a resumed job already has its plan behind it), and record
    //    where the room's own resources will be *before* any is made, so a crash or an abort
    //    from here on knows exactly what may exist.
    let plan = if placement.state == PlacementState::Pooled {
        let plan = plan(rs, room).await?;
        let profile = rs.config.profile;
        let region = rs.config.region.clone();
        let adopt = &options.adopt;
        let names = options.providers.clone();
        let target = rs.providers_for(&names)?;
        let shard_url = match &adopt.shard {
            Some(url) => url.clone(),
            None => target.shards.locate_shard(room, region.as_deref())?,
        };
        let bucket = match &adopt.bucket {
            Some(name) => name.clone(),
            None => target.media.locate_bucket(room)?,
        };
        let adopted = Adopted {
            shard: adopt.shard.is_some(),
            bucket: adopt.bucket.is_some(),
            key: adopt.key.is_some(),
        };
        let key = adopt.key.clone();
        rs.move_placement(
            &mut placement,
            PlacementState::Provisioning,
            "decentralise.started",
            serde_json::json!({
                "rows": plan.rows,
                "objects": plan.objects,
                "media_bytes": plan.media_bytes,
                "shard": shard_url.to_string(),
                "bucket": bucket,
                "adopted": adopted,
                "providers": names,
            }),
            |p| {
                p.providers = names.clone();
                p.profile = profile;
                p.region = region;
                p.shard_url = Some(shard_url);
                p.media_bucket = Some(bucket);
                p.kms_key_ref = key;
                p.adopted = adopted;
            },
        )
        .await?;
        Some(plan)
    } else {
        None
    };
    let own = rs.own_providers(&placement)?;
    let job = JobState::load(rs, room, JobKind::Decentralise).await?;
    let (objects_total, bytes_total) = media_totals(Side::pooled(rs, &pooled)).await?;
    if let Some(plan) = &plan {
        progress.emit(ProgressEvent::Planned {
            tables: rs.schema.tables().len() as u64,
            rows: plan.rows,
            objects: plan.objects,
            bytes: plan.media_bytes,
        });
    }

    // 2. Provision the room's own key, bucket and shard (each idempotent).
    if placement.state == PlacementState::Provisioning {
        progress.emit(ProgressEvent::Phase(Phase::Provision));
        // A room recentralised earlier has its old key scheduled for deletion; decentralising
        // again within the window cancels that and reuses the key (its alias stays the room's,
        // and nothing encrypted under it was lost), rather than minting a second key for one
        // room. A key manager that cannot cancel surfaces the conflict from ensure_room_key.
        let at = placement.location();
        if own.keys.capabilities().cancel_deletion && !at.adopted.key {
            match own.keys.cancel_deletion(room).await {
                Ok(true) => {
                    rs.audit("key.deletion_cancelled", Some(room), serde_json::json!({}))
                        .await?;
                }
                Ok(false) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let key = own
            .keys
            .ensure_room_key(
                room,
                &KeySpec {
                    region: at.region.clone(),
                    adopt: at.key.clone().filter(|_| at.adopted.key),
                    ..KeySpec::default()
                },
            )
            .await?;
        if own.keys.capabilities().grants {
            own.keys.grant(room, &rs.config.grantee).await?;
        }
        let mut spec = rs.config.bucket_spec.clone();
        spec.region = at.region.clone();
        let bucket = own.media.ensure_bucket(room, &at, &spec).await?;
        let shard = own.shards.ensure_shard(room, &at, &rs.schema).await?;
        if Some(&shard.url) != at.shard.as_ref() || Some(&bucket.name) != at.bucket.as_ref() {
            return Err(Error::corrupt(
                format!("provisioning room {room}"),
                format!(
                    "the providers made {} and {:?}, not the recorded {:?} and {:?}",
                    shard.url, bucket.name, at.shard, at.bucket
                ),
            ));
        }
        let detail = serde_json::json!({
            "shard": shard.url.to_string(),
            "bucket": bucket.name,
            "key": key.id,
        });
        rs.move_placement(
            &mut placement,
            PlacementState::Copying,
            "decentralise.provisioned",
            detail,
            |p| {
                p.kms_key_ref = Some(key.id);
            },
        )
        .await?;
    }

    let dedicated = placement.dedicated();
    let from = Side::pooled(rs, &pooled);
    let to = Side::on(&own, &dedicated);
    // Rows move with the store's own resumable copy when the shard is in the pooled store;
    // onto another registered store they move as one dump → restore inside the read-only
    // cutover (media still copies while the room stays writable).
    let same_store = from.same_shard_store(&to);
    // With a change log the catch-up passes apply only what the host wrote since the last one,
    // and with a write fence the database itself holds the host's writes off during cutover.
    let caps = rs.shards.capabilities();
    let use_log = same_store && caps.change_log;
    let fenced = caps.write_fence;
    // After a failed parity check the next round compares the whole room once (whatever the
    // log missed, e.g. writes with the row triggers disabled), then follows the log again.
    let mut full_check = false;
    let mut held_fence = None;
    // The shard's parity as checked at the flip, for the receipt (a resumed job hashes again).
    let mut flipped_parity = None;
    // With chunk parity the copies are compared range by range while the room is writable,
    // and the cutover re-checks only the ranges not known to match (see `flows::chunks`).
    let chunked = use_log && caps.chunk_parity;
    let copies = Copies {
        rs,
        target: own.shards.as_ref(),
        room,
        pooled: &pooled,
        dedicated: &dedicated,
    };
    let mut chunks: Option<ChunkCheck> = None;

    // 3. Copy while the pooled room stays writable: bulk, then catch-up passes until the delta
    //    is small. 4. Cutover: read-only, final catch-up, parity; parity failing reopens writes.
    let mut cutovers = 0;
    while matches!(
        placement.state,
        PlacementState::Copying | PlacementState::Cutover
    ) {
        if placement.state == PlacementState::Copying {
            progress.emit(ProgressEvent::Phase(Phase::Copy));
            let mut resume = job
                .snapshot()
                .checkpoint
                .filter(|c| c.pass == CopyPass::Bulk);
            if use_log && !rs.shards.track_changes(room, &rs.schema, true).await? {
                // Tracking starts now: rows an earlier, untracked bulk pass copied may have
                // changed unrecorded since, so the bulk copy starts over (it upserts).
                resume = None;
            }
            if same_store {
                copy_pass(rs, from, to, CopyPass::Bulk, resume, &job, progress).await?;
            }
            bulk_copy_media(from, to, &job, objects_total, progress).await?;
            progress.emit(ProgressEvent::Phase(Phase::CatchUp));
            for _ in 0..MAX_CATCH_UP_PASSES {
                let rows = if same_store {
                    let pass = if use_log && !full_check {
                        CopyPass::Changes
                    } else {
                        CopyPass::CatchUp
                    };
                    full_check = false;
                    copy_pass(rs, from, to, pass, None, &job, progress).await?
                } else {
                    0
                };
                let changed = rows + reconcile_media(from, to).await?;
                if changed <= rs.config.cutover_threshold_rows {
                    break;
                }
            }
            if chunked {
                // Check while writable, so the cutover re-checks only what changes from here.
                progress.emit(ProgressEvent::Phase(Phase::Parity));
                for repair in 1..=MAX_CHUNK_REPAIRS {
                    match chunks.as_mut() {
                        Some(check) => check.recheck(copies, true).await?,
                        None => chunks = Some(ChunkCheck::first(copies).await?),
                    }
                    let Some(check) = chunks.as_ref() else {
                        break;
                    };
                    if check.matches() {
                        rs.audit("decentralise.parity_checked", Some(room), check.detail(&[]))
                            .await?;
                        break;
                    }
                    let rows = check.name_rows(copies).await?;
                    tracing::warn!(%room, tables = ?check.tables(), "chunk parity mismatch; repairing");
                    rs.audit(
                        "decentralise.parity_mismatch",
                        Some(room),
                        check.detail(&rows),
                    )
                    .await?;
                    if repair == MAX_CHUNK_REPAIRS {
                        break;
                    }
                    // The change log did not explain these rows: compare and repair them all.
                    copy_pass(rs, from, to, CopyPass::CatchUp, None, &job, progress).await?;
                }
                // Writes went on during the check: catch up again, and re-check what that
                // touched (cutting ranges that grew), so the cutover's final pass and its
                // re-check stay as small as the writes of the last moment.
                progress.emit(ProgressEvent::Phase(Phase::CatchUp));
                for _ in 0..MAX_CATCH_UP_PASSES {
                    let rows =
                        copy_pass(rs, from, to, CopyPass::Changes, None, &job, progress).await?;
                    if rows <= rs.config.cutover_threshold_rows {
                        break;
                    }
                }
                if let Some(check) = chunks.as_mut().filter(|c| c.matches()) {
                    check.recheck(copies, true).await?;
                    copy_pass(rs, from, to, CopyPass::Changes, None, &job, progress).await?;
                }
            }
            rs.move_placement(
                &mut placement,
                PlacementState::Cutover,
                "decentralise.cutover",
                serde_json::json!({}),
                |_| {},
            )
            .await?;
        }
        progress.emit(ProgressEvent::Phase(Phase::Cutover));
        // The read-only window, bounded: past `cutover_limit` the attempt is dropped (each
        // step is all or nothing, or idempotent) and writes reopen on the pooled copy.
        let limit = rs.config.cutover_limit;
        let started = std::time::Instant::now();
        // Milliseconds per step of the window, for the audit and whoever tunes it.
        let mut steps = serde_json::Map::new();
        let checked = tokio::time::timeout(limit, async {
            let mut lap = std::time::Instant::now();
            let mut step = |name: &str| {
                let ms = u64::try_from(lap.elapsed().as_millis()).unwrap_or(u64::MAX);
                steps.insert(format!("{name}_ms"), ms.into());
                lap = std::time::Instant::now();
            };
            // The fence waits for the host's writes in flight and refuses new ones; dropped
            // with this future on a timeout or an error, it reopens them.
            let fence = if fenced {
                Some(rs.shards.fence_writes(room, &rs.schema, limit).await?)
            } else {
                None
            };
            step("fence");
            if same_store {
                let pass = if use_log && !full_check {
                    CopyPass::Changes
                } else {
                    CopyPass::CatchUp
                };
                copy_pass(rs, from, to, pass, None, &job, progress).await?;
            } else {
                replace_rows(rs, from, to, progress).await?;
            }
            step("catch_up");
            reconcile_media(from, to).await?;
            step("media");
            progress.emit(ProgressEvent::Phase(Phase::Parity));
            let (tables, target, rows) = match chunks.as_mut() {
                Some(check) if chunked => {
                    check.recheck(copies, false).await?;
                    let rows = if check.matches() {
                        Vec::new()
                    } else {
                        check.name_rows(copies).await?
                    };
                    (check.tables(), None, Some(check.detail(&rows)))
                }
                _ => {
                    // Both sides at once (two sessions, two server processes): the read-only
                    // window is the longer of the two hashes, not their sum.
                    let (source, target) = tokio::try_join!(
                        rs.shards.parity(&pooled, &rs.schema),
                        own.shards.parity(&dedicated, &rs.schema),
                    )?;
                    (source.mismatched_tables(&target), Some(target), None)
                }
            };
            step("parity");
            let media = media_difference(from, to).await?;
            step("media_check");
            Ok::<_, Error>((fence, tables, media, target, rows))
        })
        .await;
        let cutover_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        let Ok(checked) = checked else {
            cutovers += 1;
            tracing::warn!(%room, cutover_ms, limit_ms, "cutover exceeded its limit; writes reopen");
            rs.move_placement(
                &mut placement,
                PlacementState::Copying,
                "decentralise.cutover_aborted",
                serde_json::json!({ "cutover_ms": cutover_ms, "limit_ms": limit_ms }),
                |_| {},
            )
            .await?;
            if cutovers >= MAX_CUTOVERS {
                return Err(Error::conflict(format!(
                    "room {room}: the read-only cutover exceeded its limit of {limit_ms} ms \
                     {cutovers} times (last {cutover_ms} ms); the room is writable in the shared \
                     store again, run decentralise again once writes calm down or raise the limit"
                )));
            }
            continue;
        };
        let (fence, tables, media, target, chunk_detail) = checked?;
        if tables.is_empty() && media.is_none() {
            flipped_parity = target;
            // Held through the flip until the pooled rows are retired: a host write that
            // missed the placement change must not land in rows nothing reads any more.
            held_fence = fence;
            rs.move_placement(
                &mut placement,
                PlacementState::Sovereign,
                "decentralise.sovereign",
                serde_json::json!({
                    "cutover_ms": cutover_ms,
                    "steps": steps,
                    "chunks": chunk_detail,
                }),
                |_| {},
            )
            .await?;
        } else {
            if let Some(fence) = fence {
                fence.lift().await?;
            }
            full_check = true;
            cutovers += 1;
            rs.move_placement(
                &mut placement,
                PlacementState::Copying,
                "decentralise.parity_failed",
                serde_json::json!({ "tables": tables, "media": media, "chunks": chunk_detail }),
                |_| {},
            )
            .await?;
            if cutovers >= MAX_CUTOVERS {
                return Err(Error::conflict(format!(
                    "room {room}: parity still fails after {cutovers} cutovers (tables {tables:?}, \
                     media {media:?}{rows}); the room is writable in the shared store again, run \
                     decentralise again once writes calm down",
                    rows = chunk_detail
                        .as_ref()
                        .map(|d| format!(", rows {}", d["rows"]))
                        .unwrap_or_default(),
                )));
            }
        }
    }

    // 5. Writes reopen — in the shard: the pooled rows are retired for good first, so a host
    //    that read the placement before the flip gets "moved" and retries there — then the
    //    receipt, then the pooled copy goes (the shard is authoritative now).
    if fenced {
        rs.shards.retire_pooled(room, &rs.schema, true).await?;
    }
    if let Some(fence) = held_fence {
        fence.lift().await?;
    }
    progress.emit(ProgressEvent::Phase(Phase::Receipt));
    let parity = match flipped_parity {
        Some(parity) => parity,
        None => own.shards.parity(&dedicated, &rs.schema).await?,
    };
    let receipt = receipt_for(rs, &placement, &parity).await?;
    progress.emit(ProgressEvent::Phase(Phase::Cleanup));
    if use_log {
        // Before the drop, so the pooled rows' deletion is not logged row by row.
        rs.shards.track_changes(room, &rs.schema, false).await?;
    }
    rs.shards.drop_room(&pooled, &rs.schema).await?;
    rs.media.purge(&pooled).await?;
    let rows: u64 = parity.tables.iter().map(|t| t.rows).sum();
    rs.audit(
        "decentralise.finished",
        Some(room),
        serde_json::json!({
            "rows": rows,
            "objects": objects_total,
            "media_bytes": bytes_total,
            "parity_sha256": parity_digest(&parity),
            "version": placement.version,
            "resumed": resumed,
        }),
    )
    .await?;
    job.finish().await?;
    progress.emit(ProgressEvent::Finished);
    Ok(DecentraliseOutcome {
        placement,
        parity,
        receipt,
        resumed,
    })
}

/// The decentralise receipt of the placement's current version: the one already issued (a
/// resumed job that crashed after issuing it), or a new one over the shard's parity.
async fn receipt_for(rs: &Roomshard, placement: &Placement, parity: &Parity) -> Result<String> {
    if let Some(existing) = rs
        .control
        .receipts(&placement.room)
        .await?
        .into_iter()
        .rev()
        .find(|r| r.version == placement.version)
    {
        return Ok(existing.envelope);
    }
    let envelope = rs
        .issue_receipt(placement, "decentralise", &parity_digest(parity))
        .await?;
    Ok(String::from_utf8_lossy(&envelope).into_owned())
}
