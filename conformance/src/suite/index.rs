//! Checks of [`Indexer`]'s documented behaviour. The stream is shared by every check (and by
//! whatever else uses the backend), so each check publishes events with ids of its own and
//! consumes with fresh consumer groups, looking only at its own events.

use super::{
    CheckResult, CheckSpec, Context, Failure, Kind, Report, Verdict, checks, ensure, expect_kind,
    expect_unsupported, fresh_room, run_checks,
};
use roomshard_core::{ChangeEvent, ChangeKind, ConsumerGroup, Delivery, EventId, Indexer};
use std::time::{Duration, Instant};

/// What the indexer suite needs to know beyond the trait.
#[derive(Clone, Debug)]
pub struct IndexSuiteConfig {
    /// The provider's visibility timeout: how long the redelivery check waits (blocking the
    /// calling thread between polls) before it expects an unacknowledged event again.
    pub visibility_timeout: Duration,
    /// Prefix of the room ids (and so event ids and group names) the suite creates.
    pub room_prefix: Option<String>,
}

impl Default for IndexSuiteConfig {
    fn default() -> Self {
        IndexSuiteConfig {
            visibility_timeout: Duration::from_secs(30),
            room_prefix: None,
        }
    }
}

/// The checks of the indexer suite, in the order [`run_indexer_suite`] runs them.
pub fn indexer_checks() -> Vec<CheckSpec<dyn Indexer, IndexSuiteConfig>> {
    checks!(dyn Indexer, IndexSuiteConfig;
        publish_is_idempotent_by_event_id,
        every_group_gets_every_event_and_acked_ones_never_again,
        unacknowledged_deliveries_come_back_with_a_higher_attempt,
        lag_counts_what_a_group_has_not_acknowledged,
        oversized_events_are_refused,
    )
}

/// Runs every indexer check against `index` and reports each.
pub async fn run_indexer_suite(
    index: &(dyn Indexer + 'static),
    config: &IndexSuiteConfig,
) -> Report {
    run_checks("indexer", index.name(), &indexer_checks(), index, config).await
}

/// `n` events of a fresh room, and a fresh group name to read them with.
fn events(config: &IndexSuiteConfig, n: u64) -> Result<(Vec<ChangeEvent>, ConsumerGroup), Failure> {
    let room = fresh_room(config.room_prefix.as_deref().unwrap_or("cf"))?;
    let events = (0..n)
        .map(|i| {
            Ok(ChangeEvent {
                id: EventId::new(format!("{room}:{i}"))
                    .map_err(|e| Failure::new(format!("event id: {e}")))?,
                room: room.clone(),
                kind: ChangeKind::RowInserted,
                table: None,
                key: Some(serde_json::json!(i)),
                at_unix_ms: 1_764_000_000_000 + i,
                payload: serde_json::json!({ "n": i }),
            })
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    let group = ConsumerGroup::new(format!("g-{room}"))
        .map_err(|e| Failure::new(format!("group name: {e}")))?;
    Ok((events, group))
}

async fn publish_all(index: &dyn Indexer, events: &[ChangeEvent]) -> Result<(), Failure> {
    for e in events {
        index.publish(e).await.context("publish")?;
    }
    Ok(())
}

/// Consumes for `group` until nothing comes back, keeping the deliveries of `mine` only.
async fn drain(
    index: &dyn Indexer,
    group: &ConsumerGroup,
    mine: &[ChangeEvent],
) -> Result<Vec<Delivery>, Failure> {
    let mut out = Vec::new();
    loop {
        let batch = index.consume(group, 500).await.context("consume")?;
        if batch.is_empty() {
            return Ok(out);
        }
        // Others' events are acknowledged so they do not come back and keep this looping.
        let (own, others): (Vec<Delivery>, Vec<Delivery>) = batch
            .into_iter()
            .partition(|d| mine.iter().any(|e| e.id == d.event.id));
        let tags: Vec<_> = others.into_iter().map(|d| d.tag).collect();
        index
            .ack(group, &tags)
            .await
            .context("ack of other events")?;
        out.extend(own);
    }
}

fn ids(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| d.event.id.to_string()).collect()
}

/// "With `idempotent_publish`, publishing an id already stored is `Ok` and stores nothing."
pub async fn publish_is_idempotent_by_event_id(
    index: &dyn Indexer,
    config: &IndexSuiteConfig,
) -> CheckResult {
    let (events, group) = events(config, 2)?;
    if !index.capabilities().publish {
        return expect_unsupported(index.publish(&events[0]).await, "publish", "publish");
    }
    publish_all(index, &events).await?;
    publish_all(index, &events).await?;
    if !index.capabilities().consume_ack {
        return Ok(Verdict::NotApplicable(
            "consume_ack is off: stored events cannot be read back".to_string(),
        ));
    }
    let got = drain(index, &group, &events).await?;
    if !index.capabilities().idempotent_publish {
        ensure(got.len() >= 2, || {
            format!("published twice, delivered {:?}", ids(&got))
        })?;
        return Ok(Verdict::NotApplicable(
            "idempotent_publish is off: duplicates are allowed, consumers de-duplicate".to_string(),
        ));
    }
    let want: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    ensure(ids(&got) == want, || {
        format!(
            "each id published twice, delivered {:?}; expected {want:?} once each",
            ids(&got)
        )
    })?;
    ensure(got.iter().zip(&events).all(|(d, e)| d.event == *e), || {
        "a delivered event differs from the one published".to_string()
    })?;
    Ok(Verdict::Passed)
}

/// "Groups are independent: each sees every event", oldest first; an acknowledged delivery is
/// not delivered to that group again.
pub async fn every_group_gets_every_event_and_acked_ones_never_again(
    index: &dyn Indexer,
    config: &IndexSuiteConfig,
) -> CheckResult {
    let caps = index.capabilities();
    let (events, group) = events(config, 3)?;
    if !caps.consume_ack {
        return expect_unsupported(index.consume(&group, 1).await, "consume", "consume_ack");
    }
    publish_all(index, &events).await?;
    let other = ConsumerGroup::new(format!("{group}-b"))
        .map_err(|e| Failure::new(format!("group name: {e}")))?;
    let want: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    for g in [&group, &other] {
        let got = drain(index, g, &events).await?;
        ensure(ids(&got) == want, || {
            format!("group {g} got {:?}, expected {want:?} in order", ids(&got))
        })?;
        ensure(got.iter().all(|d| d.attempt == 1), || {
            "a first delivery has attempt != 1".to_string()
        })?;
        let tags: Vec<_> = got.iter().map(|d| d.tag.clone()).collect();
        index.ack(g, &tags).await.context("ack")?;
        index
            .ack(g, &tags)
            .await
            .context("ack again (idempotent)")?;
        let again = drain(index, g, &events).await?;
        ensure(again.is_empty(), || {
            format!("group {g} got acknowledged events again: {:?}", ids(&again))
        })?;
    }
    Ok(Verdict::Passed)
}

/// "A delivery not acknowledged within the visibility timeout is delivered again with `attempt`
/// increased."
pub async fn unacknowledged_deliveries_come_back_with_a_higher_attempt(
    index: &dyn Indexer,
    config: &IndexSuiteConfig,
) -> CheckResult {
    let (events, group) = events(config, 1)?;
    if !index.capabilities().consume_ack {
        return expect_unsupported(index.consume(&group, 1).await, "consume", "consume_ack");
    }
    publish_all(index, &events).await?;
    let first = drain(index, &group, &events).await?;
    ensure(first.len() == 1, || {
        format!("first delivery: {:?}", ids(&first))
    })?;
    let deadline = Instant::now() + config.visibility_timeout * 3 + Duration::from_secs(1);
    let again = loop {
        std::thread::sleep(config.visibility_timeout / 4 + Duration::from_millis(1));
        let got = drain(index, &group, &events).await?;
        if !got.is_empty() {
            break got;
        }
        if Instant::now() > deadline {
            return Err(Failure::new(format!(
                "an unacknowledged event was not delivered again within 3× the visibility \
                 timeout ({:?})",
                config.visibility_timeout
            )));
        }
    };
    ensure(again.len() == 1 && again[0].attempt >= 2, || {
        format!(
            "redelivered {:?} with attempts {:?}",
            ids(&again),
            again.iter().map(|d| d.attempt).collect::<Vec<_>>()
        )
    })?;
    let tags = [
        again[0].tag.clone(),
        roomshard_core::DeliveryTag("no-such-tag".to_string()),
    ];
    index
        .ack(&group, &tags)
        .await
        .context("ack with an unknown tag (Ok)")?;
    Ok(Verdict::Passed)
}

/// "How far `group` is behind: events published but not yet acknowledged by it"; an unknown
/// group is `NotFound`.
pub async fn lag_counts_what_a_group_has_not_acknowledged(
    index: &dyn Indexer,
    config: &IndexSuiteConfig,
) -> CheckResult {
    let (events, group) = events(config, 3)?;
    if !index.capabilities().lag {
        return expect_unsupported(index.lag(&group).await, "lag", "lag");
    }
    expect_kind(
        index.lag(&group).await,
        Kind::NotFound,
        "lag of an unknown group",
    )?;
    publish_all(index, &events).await?;
    // Create the group and read everything, acknowledging only others' events.
    let mine = drain(index, &group, &events).await?;
    let before = index.lag(&group).await.context("lag")?;
    ensure(
        before.pending >= 3 && before.oldest_pending_unix_ms.is_some(),
        || format!("3 own events unacknowledged, lag says {before:?}"),
    )?;
    let tags: Vec<_> = mine.iter().map(|d| d.tag.clone()).collect();
    index.ack(&group, &tags).await.context("ack")?;
    let after = index.lag(&group).await.context("lag after ack")?;
    ensure(after.pending + 3 == before.pending, || {
        format!("acknowledging 3 events moved lag from {before:?} to {after:?}")
    })?;
    Ok(Verdict::Passed)
}

/// "An event larger than `max_event_bytes` serialised is `QuotaExceeded`."
pub async fn oversized_events_are_refused(
    index: &dyn Indexer,
    config: &IndexSuiteConfig,
) -> CheckResult {
    let Some(limit) = index.capabilities().max_event_bytes else {
        return Ok(Verdict::NotApplicable(
            "max_event_bytes is unbounded".to_string(),
        ));
    };
    let (mut events, _) = events(config, 1)?;
    let size = usize::try_from(limit)
        .unwrap_or(usize::MAX - 1)
        .saturating_add(1);
    events[0].payload = serde_json::Value::String("x".repeat(size));
    expect_kind(
        index.publish(&events[0]).await,
        Kind::QuotaExceeded,
        "publishing an event over max_event_bytes",
    )?;
    Ok(Verdict::Passed)
}
