//! A node's life in the cluster: its heartbeat (liveness key, the nodes set, the
//! subscription epoch that asks the others to resync) and its health and counters.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::*;

impl RedisBroker {
    pub(super) async fn heartbeat_loop(self: Arc<Self>, hub: Arc<Hub>, stop: CancellationToken) {
        let node_key = self.key(&format!("node:{}", self.link.node_id()));
        let nodes_key = self.key("nodes");
        let mut epochs = self.subscription_epoch.subscribe();
        let mut owe_resync = false;
        let mut beats: u32 = 0;
        loop {
            let snapshot = serde_json::to_string(&json!({
                "node": self.link.node_id(),
                "security": self.fingerprint,
                "stats": hub.snapshot(),
                "apps": hub.app_snapshots(),
                "card": self.card(),
            }))
            .unwrap_or_default();
            let (nk, nsk, id) = (node_key.clone(), nodes_key.clone(), self.link.node_id().to_string());
            let ttl = NODE_TTL.as_millis() as u64;
            let beat = self
                .link
                .exec(|mut c| async move {
                    let (previous,): (Option<String>,) = redis::pipe()
                        .set_options(
                            &nk,
                            snapshot,
                            redis::SetOptions::default()
                                .get(true)
                                .with_expiration(redis::SetExpiry::PX(ttl)),
                        )
                        .sadd(&nsk, &id)
                        .ignore()
                        .query_async(&mut c)
                        .await?;
                    Ok(previous)
                })
                .await;
            match beat {
                Ok(previous) => {
                    // The key was gone (first beat, Redis restarted, or it expired while
                    // Redis was unreachable): the node's presence entries must be rewritten.
                    if owe_resync || previous.is_none() {
                        self.resync_requests.send_modify(|n| *n = n.wrapping_add(1));
                        owe_resync = false;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
            }
            // Every fifth beat (the heartbeats carry whole snapshots: not worth reading
            // back every 2 s).
            if beats % 5 == 0 {
                if let Err(e) = self.compare_security().await {
                    tracing::debug!(error = %e, "comparing security settings with the other nodes failed");
                }
            }
            beats = beats.wrapping_add(1);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(HEARTBEAT) => {}
                // Resubscribed: beat now, then have presence re-registered.
                changed = epochs.changed() => match changed {
                    Ok(()) => owe_resync = true,
                    Err(_) => break,
                },
            }
        }
        // Leaving on purpose: drop the liveness key so the cluster stops counting us.
        let _ = self
            .link
            .exec(|mut c| async move { c.del::<_, ()>(&node_key).await })
            .await;
    }

    /// Health and counters for `/ready` and the stats endpoint.
    pub fn status(&self) -> BrokerStatus {
        let c = &self.counters;
        let link = &self.link;
        let mut lanes = lock(&self.lanes).clone();
        if link.is_cluster() {
            let held = lock(&self.plain_at).clone();
            let what = if self.receive_everything.load(Ordering::Acquire) {
                self.pattern()
            } else {
                format!("{} and {} channels", self.control_channel(), self.interest.len())
            };
            lanes.insert(
                0,
                LaneHealth {
                    slot: slot_of(&self.control_channel()),
                    channel: what,
                    kind: LaneKind::Plain,
                    subscribed: held.is_some(),
                    wanted: true,
                    master: held,
                    shard: None,
                    circuit: None,
                },
            );
        }
        for lane in &mut lanes {
            lane.circuit = lane.shard.and_then(|i| link.shard_breaker(i)).map(|b| b.state());
        }
        let shard_breakers = (0..link.shard_channels().len()).filter_map(|i| link.shard_breaker(i));
        BrokerStatus {
            node_id: self.link.node_id().to_string(),
            subscribed: self.subscribed.load(Ordering::Acquire),
            circuit: self.link.breaker().state(),
            circuit_opened_total: shard_breakers.fold(link.breaker().opened_total(), |n, b| n + b.opened_total()),
            shards_down: lanes
                .iter()
                .filter(|l| l.wanted && (!l.subscribed || l.circuit == Some(BreakerState::Open)))
                .map(|l| l.channel.clone())
                .collect(),
            lanes,
            published: c.published.load(Ordering::Relaxed),
            publish_failures: c.publish_failures.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            skipped_own: c.skipped_own.load(Ordering::Relaxed),
            invalid: c.invalid.load(Ordering::Relaxed),
            subscriptions: c.subscriptions.load(Ordering::Relaxed),
            subscription_losses: c.subscription_losses.load(Ordering::Relaxed),
            delivered_locally: c.delivered_locally.load(Ordering::Relaxed),
            listening: if self.receive_everything.load(Ordering::Acquire) {
                None
            } else {
                Some(self.interest.len())
            },
        }
    }
}

/// A broker's health and counters (`redis` in `/ready` and the stats).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct BrokerStatus {
    /// This node's id.
    pub node_id: String,
    /// Whether the pub/sub subscription is up.
    pub subscribed: bool,
    /// The circuit breaker's state.
    pub circuit: BreakerState,
    /// How often a circuit opened (the coordination one and, on a Redis Cluster, the
    /// shards').
    pub circuit_opened_total: u64,
    /// On a Redis Cluster: the subscriptions this node needs (plain and shard channels)
    /// that are down or whose shard's circuit is open: channels on those shards are not delivered
    /// between nodes (and their publishes are refused) until their master is back.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards_down: Vec<String>,
    /// On a Redis Cluster: every subscription lane, its slot, master, state and whether
    /// this node needs it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lanes: Vec<LaneHealth>,
    /// Messages published to Redis.
    pub published: u64,
    /// Publishes that failed.
    pub publish_failures: u64,
    /// Messages received from Redis.
    pub received: u64,
    /// Own messages received back and skipped.
    pub skipped_own: u64,
    /// Messages on the prefix that were not ours to read.
    pub invalid: u64,
    /// Successful (re)subscriptions.
    pub subscriptions: u64,
    /// Subscriptions lost.
    pub subscription_losses: u64,
    /// Of `received`, the messages that reached at least one socket of this node (the
    /// rest was received for nothing: watchlist notices, a channel just left).
    pub delivered_locally: u64,
    /// Redis channels this node listens to (those of its channels with subscribers, and
    /// Laravel's spelling of its presence channels); absent when it receives the whole
    /// prefix (routing rules that copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listening: Option<usize>,
}
