//! [`Indexer`]: carries change events to the global index.

use crate::capabilities::IndexCapabilities;
use crate::error::{Error, Result};
use crate::events::ChangeEvent;
use crate::ids::validated_name;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A durable stream of [`ChangeEvent`]s with consumer groups (Redis Streams, NATS JetStream, an
/// in-memory queue).
///
/// Events reach it from each shard's transactional outbox through a relay, so an event exists
/// exactly when its change committed; the indexer's job is to not lose them afterwards and to
/// deliver each to every consumer group at least once.
///
/// # Contract for every method
///
/// See the [module docs](crate::traits).
#[async_trait]
pub trait Indexer: Send + Sync {
    /// A short name for the provider (`redis`, `nats`, `memory`), used in
    /// [`Error::Unsupported`] and logs.
    fn name(&self) -> &str;

    /// What this indexer can do. Must be constant for its lifetime.
    fn capabilities(&self) -> IndexCapabilities;

    /// Appends an event durably; returns once it is stored.
    ///
    /// # Behaviour
    /// - With `idempotent_publish`, publishing an id already stored (within
    ///   `dedupe_window_secs`) is `Ok` and stores nothing; without it, the event may be stored
    ///   twice and consumers de-duplicate by [`ChangeEvent::id`].
    /// - An event larger than `max_event_bytes` serialised is [`Error::QuotaExceeded`].
    ///
    /// # Requires capability
    /// `publish`.
    async fn publish(&self, event: &ChangeEvent) -> Result<()> {
        let _ = event;
        Err(Error::unsupported("publish", self.name()))
    }

    /// Up to `max` events for `group`, oldest first; creates the group (starting at the oldest
    /// retained event) if new.
    ///
    /// # Behaviour
    /// - Returns promptly, possibly with nothing (no long blocking wait inside).
    /// - A delivery not acknowledged within the provider's visibility timeout is delivered again
    ///   with `attempt` increased: at-least-once per group.
    /// - Groups are independent: each sees every event.
    ///
    /// # Requires capability
    /// `consume_ack`.
    async fn consume(&self, group: &ConsumerGroup, max: usize) -> Result<Vec<Delivery>> {
        let _ = (group, max);
        Err(Error::unsupported("consume", self.name()))
    }

    /// Acknowledges deliveries, so they are not delivered to `group` again.
    ///
    /// # Behaviour
    /// - **Idempotent**: acknowledging twice, or an unknown tag, is `Ok`.
    ///
    /// # Requires capability
    /// `consume_ack`.
    async fn ack(&self, group: &ConsumerGroup, tags: &[DeliveryTag]) -> Result<()> {
        let _ = (group, tags);
        Err(Error::unsupported("ack", self.name()))
    }

    /// How far `group` is behind: events published but not yet acknowledged by it.
    ///
    /// # Behaviour
    /// - An unknown group is [`Error::NotFound`].
    ///
    /// # Requires capability
    /// `lag`.
    async fn lag(&self, group: &ConsumerGroup) -> Result<Lag> {
        let _ = group;
        Err(Error::unsupported("lag", self.name()))
    }
}

/// A consumer group's name: 1–64 characters from `A-Z a-z 0-9 _ -` (valid as a Redis group and
/// a NATS durable name alike).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ConsumerGroup(String);

validated_name!(ConsumerGroup);

impl ConsumerGroup {
    /// Validates a group name.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(Error::invalid(
                "consumer group",
                format!("{name:?}: use 1-64 characters from A-Z a-z 0-9 _ -"),
            ));
        }
        Ok(ConsumerGroup(name))
    }
}

/// The provider's handle of one delivery, passed back to [`Indexer::ack`]. Opaque.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeliveryTag(pub String);

/// One event delivered to a consumer group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Acknowledge with this.
    pub tag: DeliveryTag,
    /// How many times this event was delivered to the group, this one included (1 the first
    /// time).
    pub attempt: u32,
    /// The event.
    pub event: ChangeEvent,
}

/// How far a consumer group is behind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lag {
    /// Events not yet acknowledged by the group.
    pub pending: u64,
    /// When the oldest of them was published, in milliseconds since the Unix epoch.
    pub oldest_pending_unix_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_group_names_are_portable() {
        assert!(ConsumerGroup::new("search-index_1").is_ok());
        for bad in ["", "a.b", "a b", "a>", "*", &"g".repeat(65)] {
            assert!(ConsumerGroup::new(bad).is_err(), "{bad:?}");
        }
    }
}
