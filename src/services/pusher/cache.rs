//! Cache channels (`cache-*`, `private-cache-*`, `presence-cache-*`): the last event
//! published on each is kept for [`CACHE_TTL`], and a new subscriber gets it at once
//! (or `pusher:cache_miss`).
//!
//! Every node keeps the last event of the cache channels it saw pass its fan-out (its
//! own publishes and other nodes'), in memory. In a cluster the publishing node also
//! writes it to Redis (`{p}rustaxum:cache:{channel}`, the cluster wire format, expiring
//! with the TTL), so a node that started after the event still finds it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::channel::Channel;
use crate::cluster::redis::{decode_wire, RedisBroker};
use crate::hub::{EnvelopeKind, Message};
use crate::publish::{Origin, PublishHook};
use crate::session::CLIENT_EVENT_PREFIX;
use crate::sync::lock;

/// How long a cache channel remembers its last event (Pusher: 30 minutes).
pub const CACHE_TTL: Duration = Duration::from_secs(30 * 60);

/// Cache channels one node remembers in memory; past it, expired entries are dropped
/// and, if that is not enough, the oldest half.
const MAX_ENTRIES: usize = 100_000;

/// The last event of every cache channel.
pub struct CacheChannels {
    memory: Mutex<HashMap<Arc<str>, (Instant, Message)>>,
    cluster: Option<Arc<RedisBroker>>,
    ttl: Duration,
}

impl std::fmt::Debug for CacheChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheChannels")
            .field("entries", &lock(&self.memory).len())
            .finish_non_exhaustive()
    }
}

impl CacheChannels {
    /// Cache channels of one node (`cluster: None`) or of a cluster.
    pub fn new(cluster: Option<Arc<RedisBroker>>) -> Arc<Self> {
        Self::with_ttl(cluster, CACHE_TTL)
    }

    /// The same with another time to live (tests).
    pub fn with_ttl(cluster: Option<Arc<RedisBroker>>, ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            memory: Mutex::default(),
            cluster,
            ttl,
        })
    }

    fn redis_key(broker: &RedisBroker, channel: &Channel) -> String {
        broker.link().channel_key("cache", channel)
    }

    /// The last event of `channel` within the TTL, if any.
    pub async fn last(&self, channel: &Channel) -> Option<Message> {
        let remembered = lock(&self.memory)
            .get(channel.name())
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, m)| m.clone());
        if let Some(message) = remembered {
            return Some(message);
        }
        let broker = self.cluster.as_ref()?;
        let key = Self::redis_key(broker, channel);
        let raw: Option<Vec<u8>> = broker
            .link()
            .exec_for(channel, |mut c| async move {
                redis::cmd("GET").arg(&key).query_async(&mut c).await
            })
            .await
            .map_err(|e| tracing::warn!(channel = %channel, error = %e, "cache channel: Redis read failed"))
            .ok()?;
        let (mut message, _) = decode_wire(channel.clone(), &raw?)?;
        message.except = None;
        Some(message)
    }

    fn remember(&self, message: &Message) {
        let mut memory = lock(&self.memory);
        if memory.len() >= MAX_ENTRIES && !memory.contains_key(message.channel.name()) {
            let ttl = self.ttl;
            memory.retain(|_, (at, _)| at.elapsed() < ttl);
            if memory.len() >= MAX_ENTRIES {
                let mut ages: Vec<Instant> = memory.values().map(|(at, _)| *at).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                memory.retain(|_, (at, _)| *at > cut);
            }
        }
        memory.insert(message.channel.name_arc().clone(), (Instant::now(), message.clone()));
    }
}

impl PublishHook for CacheChannels {
    fn published(&self, message: &Message, origin: Origin) {
        if message.kind != EnvelopeKind::Event
            || !message.channel.is_cache()
            || message.event.starts_with(CLIENT_EVENT_PREFIX)
        {
            return;
        }
        self.remember(message);
        let Some(broker) = self.cluster.clone().filter(|_| origin == Origin::Local) else {
            return;
        };
        let mut stored = message.clone();
        stored.except = None;
        let Ok(wire) = broker.encode(&stored) else { return };
        let key = Self::redis_key(&broker, &message.channel);
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let channel = message.channel.clone();
        tokio::spawn(async move {
            let set = broker
                .link()
                .exec_for(&channel, |mut c| async move {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(&wire)
                        .arg("PX")
                        .arg(ttl_ms)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await;
            if let Err(e) = set {
                tracing::warn!(error = %e, "cache channel: Redis write failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn message(channel: &str, event: &str) -> Message {
        let data = Arc::from(serde_json::value::to_raw_value(&serde_json::json!({"n": 1})).unwrap());
        Message::event(Channel::parse(channel).unwrap(), event, data)
    }

    #[tokio::test]
    async fn keeps_the_last_server_event_of_cache_channels_only() {
        let cache = CacheChannels::with_ttl(None, Duration::from_millis(200));
        let news = Channel::parse("cache-news").unwrap();
        assert!(cache.last(&news).await.is_none());
        cache.published(&message("cache-news", "first"), Origin::Local);
        cache.published(&message("cache-news", "second"), Origin::Remote);
        cache.published(&message("cache-news", "client-typing"), Origin::Local);
        cache.published(&message("news", "elsewhere"), Origin::Local);
        assert_eq!(cache.last(&news).await.unwrap().event.as_ref(), "second");
        assert!(cache.last(&Channel::parse("news").unwrap()).await.is_none());
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(cache.last(&news).await.is_none(), "expired");
    }
}
