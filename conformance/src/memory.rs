//! [`MemoryIndexer`]: an in-memory [`Indexer`], the reference the indexer suite runs against and
//! a stand-in for Redis Streams or NATS JetStream in tests and local development.

use roomshard_core::{
    ChangeEvent, ConsumerGroup, Delivery, DeliveryTag, Error, EventId, IndexCapabilities, Indexer,
    Lag, Result, async_trait,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// An in-memory event stream with consumer groups: idempotent publish by event id (forever),
/// at-least-once delivery per group with redelivery after a visibility timeout, and lag.
/// Nothing survives the process; that is the point of it.
#[derive(Debug)]
pub struct MemoryIndexer {
    state: Mutex<State>,
    visibility: Duration,
    max_event_bytes: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    /// Events in publish order, with their publish time (ms since the epoch).
    events: Vec<(ChangeEvent, u64)>,
    ids: HashSet<EventId>,
    groups: HashMap<ConsumerGroup, Group>,
}

#[derive(Debug, Default)]
struct Group {
    /// Index of the next event never delivered to the group.
    next: usize,
    /// Delivered, not yet acknowledged: event index → (attempts, last delivery).
    pending: BTreeMap<usize, (u32, Instant)>,
    acked: HashSet<usize>,
}

impl MemoryIndexer {
    /// An indexer redelivering unacknowledged events after `visibility`.
    pub fn new(visibility: Duration) -> Self {
        MemoryIndexer {
            state: Mutex::new(State::default()),
            visibility,
            max_event_bytes: Some(1 << 20),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Indexer for MemoryIndexer {
    fn name(&self) -> &str {
        "memory"
    }

    fn capabilities(&self) -> IndexCapabilities {
        IndexCapabilities {
            publish: true,
            consume_ack: true,
            lag: true,
            idempotent_publish: true,
            max_event_bytes: self.max_event_bytes,
            dedupe_window_secs: None,
        }
    }

    async fn publish(&self, event: &ChangeEvent) -> Result<()> {
        let size = serde_json::to_vec(event)
            .map_err(|e| Error::invalid("change event", e.to_string()))?
            .len() as u64;
        if let Some(limit) = self.max_event_bytes.filter(|l| size > *l) {
            return Err(Error::QuotaExceeded {
                what: format!("serialised size of event {}", event.id),
                limit,
                used: size,
            });
        }
        let mut state = self.state();
        if state.ids.insert(event.id.clone()) {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            state.events.push((event.clone(), now));
        }
        Ok(())
    }

    async fn consume(&self, group: &ConsumerGroup, max: usize) -> Result<Vec<Delivery>> {
        let now = Instant::now();
        let visibility = self.visibility;
        let mut state = self.state();
        let State { events, groups, .. } = &mut *state;
        let g = groups.entry(group.clone()).or_default();
        let mut out = Vec::new();
        for (index, (attempts, at)) in g.pending.iter_mut() {
            if out.len() >= max {
                break;
            }
            if now.duration_since(*at) >= visibility {
                *attempts += 1;
                *at = now;
                out.push(delivery(*index, *attempts, &events[*index].0));
            }
        }
        while out.len() < max && g.next < events.len() {
            let index = g.next;
            g.next += 1;
            g.pending.insert(index, (1, now));
            out.push(delivery(index, 1, &events[index].0));
        }
        Ok(out)
    }

    async fn ack(&self, group: &ConsumerGroup, tags: &[DeliveryTag]) -> Result<()> {
        let mut state = self.state();
        if let Some(g) = state.groups.get_mut(group) {
            for tag in tags {
                if let Ok(index) = tag.0.parse::<usize>()
                    && g.pending.remove(&index).is_some()
                {
                    g.acked.insert(index);
                }
            }
        }
        Ok(())
    }

    async fn lag(&self, group: &ConsumerGroup) -> Result<Lag> {
        let state = self.state();
        let g = state
            .groups
            .get(group)
            .ok_or_else(|| Error::not_found(format!("consumer group {group}")))?;
        let unacked = state
            .events
            .iter()
            .enumerate()
            .filter(|(i, _)| !g.acked.contains(i));
        let (mut pending, mut oldest) = (0u64, None::<u64>);
        for (_, (_, at)) in unacked {
            pending += 1;
            oldest = Some(oldest.map_or(*at, |o| o.min(*at)));
        }
        Ok(Lag {
            pending,
            oldest_pending_unix_ms: oldest,
        })
    }
}

fn delivery(index: usize, attempt: u32, event: &ChangeEvent) -> Delivery {
    Delivery {
        tag: DeliveryTag(index.to_string()),
        attempt,
        event: event.clone(),
    }
}
