//! Subscription counts: `pusher_internal:subscription_count` (`{"subscription_count": n}`)
//! to the subscribers of a channel whose count changed, for apps with
//! `enable_subscription_count`. Presence channels have member events instead and get none.
//!
//! Throttled as Pusher does it: a channel of up to [`BUSY`] subscribers gets every change;
//! a busier one at most one update per [`BUSY_EVERY`] (the latest count, sent when the
//! period ends).
//!
//! In a cluster each node writes its own count to the hash
//! `{p}rustaxum:subscriptions:{channel}` (node id → count); the total is the sum over
//! live nodes (a dead node's field is dropped when next seen), and the node whose
//! change it was publishes it to every node's subscribers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Script;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Apps;
use crate::channel::{Channel, ChannelKind};
use crate::cluster::redis::RedisBroker;
use crate::hub::{EnvelopeKind, Message};
use crate::lifecycle::{Lifecycle, LifecycleEvent};
use crate::publish::Fanout;
use crate::sync::lock;

/// Subscribers above which a channel's count updates are throttled.
pub const BUSY: usize = 100;
/// The least time between two updates of a busy channel.
pub const BUSY_EVERY: Duration = Duration::from_secs(5);

/// The event Pusher clients get.
pub const EVENT: &str = "pusher_internal:subscription_count";

const COUNT_LUA: &str = concat!(
    r"
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
",
    live_nodes_total_lua!(),
    "return total\n"
);

#[derive(Default)]
struct Throttle {
    last_sent: Option<Instant>,
    pending: bool,
}

/// Sends subscription counts for the apps that enable them.
pub struct SubscriptionCounts {
    fanout: Fanout,
    cluster: Option<Arc<RedisBroker>>,
    apps: Apps,
    throttles: Mutex<HashMap<Arc<str>, (Channel, Throttle)>>,
    script: Script,
}

impl std::fmt::Debug for SubscriptionCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionCounts").finish_non_exhaustive()
    }
}

fn counted(event: &LifecycleEvent) -> bool {
    matches!(event, LifecycleEvent::SubscriptionCount { .. })
}

impl SubscriptionCounts {
    /// Counts for `apps`, published through `fanout`.
    pub fn new(fanout: Fanout, cluster: Option<Arc<RedisBroker>>, apps: Apps) -> Arc<Self> {
        Arc::new(Self {
            fanout,
            cluster,
            apps,
            throttles: Mutex::default(),
            script: Script::new(COUNT_LUA),
        })
    }

    /// Watches `lifecycle` until `stop`; busy channels' pending counts go out each second.
    /// Nothing runs when no app enables subscription counts (apps do not change on reload).
    pub fn start(self: &Arc<Self>, lifecycle: &Lifecycle, stop: CancellationToken, tasks: &TaskTracker) {
        if !self.apps.iter().any(|a| a.enable_subscription_count) {
            return;
        }
        let this = self.clone();
        lifecycle.observe(65_536, counted, stop.clone(), tasks, move |event| {
            let this = this.clone();
            async move {
                if let LifecycleEvent::SubscriptionCount { channel, subscribers } = event {
                    this.changed(channel, subscribers).await;
                }
            }
        });
        let this = self.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => this.flush().await,
                }
            }
        });
    }

    fn enabled(&self, channel: &Channel) -> bool {
        channel.kind() != ChannelKind::Presence
            && self
                .apps
                .by_namespace(channel.app())
                .is_some_and(|a| a.enable_subscription_count)
    }

    async fn changed(&self, channel: Channel, local: usize) {
        if !self.enabled(&channel) {
            return;
        }
        let total = self.total(&channel, local).await;
        let send = {
            let mut throttles = lock(&self.throttles);
            let (_, t) = throttles
                .entry(channel.name_arc().clone())
                .or_insert_with(|| (channel.clone(), Throttle::default()));
            let recent = t.last_sent.is_some_and(|at| at.elapsed() < BUSY_EVERY);
            if total > BUSY && recent {
                t.pending = true;
                false
            } else {
                t.last_sent = Some(Instant::now());
                t.pending = false;
                true
            }
        };
        if send {
            self.publish(&channel, total).await;
        }
        if local == 0 && total == 0 {
            lock(&self.throttles).remove(channel.name());
        }
    }

    /// Sends the busy channels' counts whose period ended.
    async fn flush(&self) {
        let due: Vec<Channel> = {
            let mut throttles = lock(&self.throttles);
            throttles
                .values_mut()
                .filter(|(_, t)| t.pending && t.last_sent.is_none_or(|at| at.elapsed() >= BUSY_EVERY))
                .map(|(c, t)| {
                    t.pending = false;
                    t.last_sent = Some(Instant::now());
                    c.clone()
                })
                .collect()
        };
        for channel in due {
            let local = self.fanout.hub().subscriber_count(&channel);
            let total = self.total(&channel, local).await;
            self.publish(&channel, total).await;
        }
    }

    /// The channel's subscribers on every node, this node's being `local`.
    async fn total(&self, channel: &Channel, local: usize) -> usize {
        let Some(broker) = &self.cluster else { return local };
        let link = broker.link();
        let mut invocation = self.script.key(link.key(&format!("subscriptions:{}", channel.name())));
        invocation.arg(link.node_id()).arg(local).arg(link.key("node:"));
        match link
            .exec(|mut c| async move { invocation.invoke_async::<usize>(&mut c).await })
            .await
        {
            Ok(total) => total,
            Err(e) => {
                tracing::warn!(channel = %channel, error = %e, "subscription count: Redis failed; sending this node's");
                local
            }
        }
    }

    async fn publish(&self, channel: &Channel, total: usize) {
        let Ok(data) = serde_json::value::to_raw_value(&serde_json::json!({ "subscription_count": total })) else {
            return;
        };
        let message = Message::event(channel.clone(), EVENT, Arc::from(data)).kind(EnvelopeKind::SubscriptionCount);
        if let Err(e) = self.fanout.publish(message).await {
            tracing::warn!(channel = %channel, error = %e, "subscription count not published");
        }
    }
}
