//! One view of the whole cluster, for the dashboard, `GET /api/broadcast/nodes` and
//! artisan: each node computes its own [`NodeCard`] every second and hands it to its
//! heartbeat (so every node reads every other node's card from Redis, at most 2 s old);
//! rates are computed here from two cards of the same node, so they stay right whichever
//! node a load balancer sends the reader to, and a node that restarts (its counters back
//! at zero) counts nothing negative. The last 15 minutes of the cluster's totals are kept
//! in memory, so a dashboard that reloads draws its charts at once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::AppState;
use crate::hub::Protocol;
use crate::sync::lock;

/// How often a node samples itself (and reads the others' cards).
const EVERY: Duration = Duration::from_secs(1);
/// Samples kept: 15 minutes.
const KEPT: usize = 900;

/// HTTP answers that refused or failed, counted per node (WebSocket upgrades included).
#[derive(Debug, Default)]
pub(crate) struct Answers {
    unauthorized: AtomicU64,
    forbidden: AtomicU64,
    throttled: AtomicU64,
    server_errors: AtomicU64,
}

impl Answers {
    /// Counts one answer.
    pub(crate) fn count(&self, status: StatusCode) {
        let counter = match status.as_u16() {
            401 => &self.unauthorized,
            403 => &self.forbidden,
            429 => &self.throttled,
            500..=599 => &self.server_errors,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `(401, 403, 429, 5xx)` answered so far.
    pub(crate) fn totals(&self) -> (u64, u64, u64, u64) {
        (
            self.unauthorized.load(Ordering::Relaxed),
            self.forbidden.load(Ordering::Relaxed),
            self.throttled.load(Ordering::Relaxed),
            self.server_errors.load(Ordering::Relaxed),
        )
    }
}

/// Requests refused, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Refused {
    /// 401: a missing or wrong token or signature.
    pub unauthorized: u64,
    /// 403: not allowed (a channel's rule, an origin).
    pub forbidden: u64,
    /// 429: over a rate limit or guessing tokens.
    pub throttled: u64,
}

/// Per-second rates of a node, from its last two cards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Rates {
    /// Messages published through the node per second ("in").
    pub published: f64,
    /// Messages queued to its sockets per second ("out").
    pub delivered: f64,
    /// Frames received from its clients per second.
    pub received: f64,
    /// Refused requests (401, 403, 429) per second.
    pub refused: f64,
    /// Failures per second: 5xx answers, publishes Redis refused, slow-client closes and
    /// failed webhook deliveries.
    pub failures: f64,
    /// CPU used, in percent of one core.
    pub cpu_percent: f64,
}

/// What a node tells the cluster about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct NodeCard {
    /// Its id (random per process, as on the Redis bus).
    pub id: String,
    /// Where it listens: host name (or address) and WebSocket port.
    pub address: String,
    /// Its version.
    pub version: String,
    /// Seconds since it started.
    pub uptime_seconds: u64,
    /// Draining before a stop (SIGTERM): `/ready` answers 503.
    pub draining: bool,
    /// Open WebSocket connections.
    pub connections: u64,
    /// Open connections by protocol (`native`, `pusher`, `emithub`, `rtc`).
    pub protocols: BTreeMap<String, u64>,
    /// Channels with a subscriber on it.
    pub channels: u64,
    /// Messages published through it since it started (its HTTP APIs, sockets and
    /// library; not the ones it received from other nodes), so the cluster's sum counts
    /// each message once.
    pub published: u64,
    /// Messages queued to its sockets since it started.
    pub delivered: u64,
    /// Frames received from its clients since it started.
    pub received: u64,
    /// CPU seconds used (user and system).
    pub cpu_seconds: f64,
    /// Resident memory, bytes.
    pub memory_bytes: u64,
    /// Open file descriptors (each socket is one).
    pub open_files: u64,
    /// `healthy`, `not used` (no Redis), or what is wrong with its Redis.
    pub redis: String,
    /// Requests refused since it started.
    pub refused: Refused,
    /// 5xx answers since it started.
    pub server_errors: u64,
    /// Publishes its Redis refused since it started.
    pub publish_failures: u64,
    /// Sockets closed because they could not keep up (4100) since it started.
    pub slow_disconnects: u64,
    /// Webhook deliveries that failed every try since it started.
    pub webhook_failures: u64,
    /// When it computed this card (Unix milliseconds).
    pub sampled_at_ms: u64,
    /// Its rates, computed by the node that reads the card (absent in the card itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rates: Option<Rates>,
}

impl NodeCard {
    /// Whether something is wrong with the node: its Redis, or it is stopping.
    pub(crate) fn degraded(&self) -> bool {
        self.draining || !(self.redis == "healthy" || self.redis == "not used")
    }

    /// Everything that counts as a failure, summed.
    fn failures(&self) -> u64 {
        self.server_errors
            .saturating_add(self.publish_failures)
            .saturating_add(self.slow_disconnects)
            .saturating_add(self.webhook_failures)
    }

    fn refusals(&self) -> u64 {
        self.refused
            .unauthorized
            .saturating_add(self.refused.forbidden)
            .saturating_add(self.refused.throttled)
    }

    /// Rates from `before`, an earlier card of the same node; `None` when the two are the
    /// same sample. A counter that went down (the node restarted) counts from zero.
    fn rates_since(&self, before: &NodeCard) -> Option<Rates> {
        let ms = self
            .sampled_at_ms
            .checked_sub(before.sampled_at_ms)
            .filter(|ms| *ms > 0)?;
        let secs = ms as f64 / 1000.0;
        let per = |now: u64, then: u64| (if now >= then { now - then } else { now }) as f64 / secs;
        let cpu = if self.cpu_seconds >= before.cpu_seconds {
            self.cpu_seconds - before.cpu_seconds
        } else {
            self.cpu_seconds
        };
        Some(Rates {
            published: per(self.published, before.published),
            delivered: per(self.delivered, before.delivered),
            received: per(self.received, before.received),
            refused: per(self.refusals(), before.refusals()),
            failures: per(self.failures(), before.failures()),
            cpu_percent: 100.0 * cpu / secs,
        })
    }
}

/// The cluster's sums.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Totals {
    /// Live nodes.
    pub nodes: usize,
    /// Nodes whose Redis is not healthy, or that are draining.
    pub degraded: usize,
    /// Open connections.
    pub connections: u64,
    /// Open connections by protocol.
    pub protocols: BTreeMap<String, u64>,
    /// Channels summed over the nodes (a channel with subscribers on two nodes counts twice).
    pub channels: u64,
    /// Messages published since each node started.
    pub published: u64,
    /// Messages delivered since each node started.
    pub delivered: u64,
    /// Requests refused since each node started.
    pub refused: Refused,
    /// Failures since each node started (5xx, Redis publishes, slow closes, webhooks).
    pub failures: u64,
    /// Resident memory, bytes.
    pub memory_bytes: u64,
    /// Open file descriptors.
    pub open_files: u64,
    /// Rates summed over the nodes.
    pub rates: Rates,
}

fn totals(cards: &[NodeCard]) -> Totals {
    let mut t = Totals {
        nodes: cards.len(),
        ..Totals::default()
    };
    for c in cards {
        t.degraded += usize::from(c.degraded());
        t.connections = t.connections.saturating_add(c.connections);
        for (p, n) in &c.protocols {
            *t.protocols.entry(p.clone()).or_default() += n;
        }
        t.channels = t.channels.saturating_add(c.channels);
        t.published = t.published.saturating_add(c.published);
        t.delivered = t.delivered.saturating_add(c.delivered);
        t.refused.unauthorized = t.refused.unauthorized.saturating_add(c.refused.unauthorized);
        t.refused.forbidden = t.refused.forbidden.saturating_add(c.refused.forbidden);
        t.refused.throttled = t.refused.throttled.saturating_add(c.refused.throttled);
        t.failures = t.failures.saturating_add(c.failures());
        t.memory_bytes = t.memory_bytes.saturating_add(c.memory_bytes);
        t.open_files = t.open_files.saturating_add(c.open_files);
        if let Some(r) = c.rates {
            t.rates.published += r.published;
            t.rates.delivered += r.delivered;
            t.rates.received += r.received;
            t.rates.refused += r.refused;
            t.rates.failures += r.failures;
            t.rates.cpu_percent += r.cpu_percent;
        }
    }
    t
}

/// One second of the cluster, for the dashboard's charts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Sample {
    /// Unix milliseconds.
    pub t: u64,
    /// Open connections.
    pub connections: u64,
    /// Messages published per second.
    pub published: f64,
    /// Messages delivered per second.
    pub delivered: f64,
    /// Refused requests per second.
    pub refused: f64,
    /// Failures per second.
    pub failures: f64,
}

/// `GET /api/broadcast/nodes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct NodesView {
    /// Whether this node is part of a cluster (Redis).
    pub clustered: bool,
    /// The id of the node that answered.
    pub node: String,
    /// Every live node, by id.
    pub nodes: Vec<NodeCard>,
    /// Their sums.
    pub totals: Totals,
}

/// This node's view of the cluster, refreshed every second.
#[derive(Debug, Default)]
pub(crate) struct ClusterView {
    pub(crate) answers: Answers,
    now: Mutex<NodesView>,
    history: Mutex<VecDeque<Sample>>,
}

impl ClusterView {
    /// The last view (empty until the first second has passed; see [`start`](Self::start)).
    pub(crate) fn view(&self) -> NodesView {
        lock(&self.now).clone()
    }

    /// The last view with this node's own card as it is now (its rates from the last
    /// sample): what an API answer shows, so a socket that just connected is counted.
    pub(crate) fn view_now(&self, st: &AppState) -> NodesView {
        let mut view = self.view();
        let mut own = card(st);
        if let Some(slot) = view.nodes.iter_mut().find(|n| n.id == own.id) {
            own.rates = slot.rates;
            *slot = own;
            view.totals = totals(&view.nodes);
        }
        view
    }

    /// The samples of the last 15 minutes, oldest first.
    pub(crate) fn history(&self) -> Vec<Sample> {
        lock(&self.history).iter().copied().collect()
    }

    /// Samples every second until `stop`.
    pub(crate) fn start(st: AppState, stop: CancellationToken, tasks: &TaskTracker) {
        tasks.spawn(async move {
            let mut before: HashMap<String, NodeCard> = HashMap::new();
            loop {
                st.cluster_view.refresh(&st, &mut before).await;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(EVERY) => {}
                }
            }
        });
    }

    /// Computes this node's card, reads the others', and updates the view and history.
    pub(crate) async fn refresh(&self, st: &AppState, before: &mut HashMap<String, NodeCard>) {
        let own = card(st);
        let mut cards = vec![own.clone()];
        if let Some(broker) = &st.cluster {
            broker.set_card(serde_json::to_value(&own).unwrap_or_default());
            if let Ok(others) = broker.node_cards().await {
                cards.extend(
                    others
                        .into_iter()
                        .filter(|(id, _)| *id != own.id)
                        .filter_map(|(_, v)| serde_json::from_value::<NodeCard>(v).ok()),
                );
            }
        }
        for c in &mut cards {
            let last = before.get(&c.id);
            c.rates = match last {
                Some(last) if last.sampled_at_ms == c.sampled_at_ms => last.rates,
                Some(last) => c.rates_since(last).or(last.rates),
                None => None,
            };
        }
        before.clear();
        before.extend(cards.iter().map(|c| (c.id.clone(), c.clone())));
        cards.sort_by(|a, b| a.id.cmp(&b.id));
        let totals = totals(&cards);
        let sample = Sample {
            t: own.sampled_at_ms,
            connections: totals.connections,
            published: totals.rates.published,
            delivered: totals.rates.delivered,
            refused: totals.rates.refused,
            failures: totals.rates.failures,
        };
        *lock(&self.now) = NodesView {
            clustered: st.cluster.is_some(),
            node: own.id,
            nodes: cards,
            totals,
        };
        let mut history = lock(&self.history);
        if history.len() == KEPT {
            history.pop_front();
        }
        history.push_back(sample);
    }
}

/// This node's card, now.
fn card(st: &AppState) -> NodeCard {
    let hub = st.node.hub();
    let config = st.config.load();
    let snapshot = hub.snapshot();
    let protocols = [
        (Protocol::Native, "native"),
        (Protocol::Pusher, "pusher"),
        (Protocol::EmitHub, "emithub"),
        (Protocol::Rtc, "rtc"),
    ]
    .into_iter()
    .map(|(p, name)| (name.to_string(), hub.protocol_connection_count(p) as u64))
    .collect();
    let (unauthorized, forbidden, throttled, server_errors) = st.cluster_view.answers.totals();
    let process = super::stats::ProcessFigures::read();
    // One status per card (it gathers the lanes and counters).
    let broker = st.cluster.as_ref().map(|b| b.status());
    let redis = match &broker {
        None => "not used".to_string(),
        Some(s) => {
            if !s.shards_down.is_empty() {
                format!("{} shard(s) down", s.shards_down.len())
            } else if s.circuit != crate::backend::breaker::BreakerState::Closed {
                "unavailable (circuit open)".to_string()
            } else if !s.subscribed {
                "subscription down".to_string()
            } else {
                "healthy".to_string()
            }
        }
    };
    let host = if config.server.host.is_unspecified() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| config.server.host.to_string())
    } else {
        config.server.host.to_string()
    };
    NodeCard {
        id: broker
            .as_ref()
            .map_or_else(|| "this node".to_string(), |b| b.node_id.clone()),
        address: format!("{host}:{}", config.server.port),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_seconds: snapshot.uptime_seconds,
        draining: hub.is_draining(),
        connections: hub.connection_count() as u64,
        protocols,
        channels: snapshot.channels.len() as u64,
        // Clustered, every message published here goes to Redis once; the hub's own count
        // includes the messages other nodes published.
        published: broker.as_ref().map_or(snapshot.messages.published, |b| b.published),
        delivered: snapshot.messages.delivered,
        received: snapshot.messages.received,
        cpu_seconds: process.cpu_seconds.unwrap_or(0.0),
        memory_bytes: process.resident_bytes.unwrap_or(0),
        open_files: process.open_fds.unwrap_or(0),
        redis,
        refused: Refused {
            unauthorized,
            forbidden,
            throttled,
        },
        server_errors,
        publish_failures: broker.as_ref().map_or(0, |b| b.publish_failures),
        slow_disconnects: snapshot.slow_disconnects,
        webhook_failures: st.webhooks.as_ref().map_or(0, |w| w.stats().failed),
        sampled_at_ms: u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0),
        rates: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64, published: u64, cpu: f64) -> NodeCard {
        NodeCard {
            id: "a".into(),
            published,
            cpu_seconds: cpu,
            sampled_at_ms: ms,
            redis: "healthy".into(),
            ..NodeCard::default()
        }
    }

    #[test]
    fn rates_come_from_two_cards_of_one_node_and_a_restart_counts_nothing_negative() {
        let r = at(3000, 300, 1.5).rates_since(&at(1000, 100, 1.0)).unwrap();
        assert_eq!((r.published, r.cpu_percent), (100.0, 25.0));
        // Restarted: its counter fell from 300 to 40 in 2 s: 40 new messages, 20/s.
        let r = at(5000, 40, 0.2).rates_since(&at(3000, 300, 1.5)).unwrap();
        assert_eq!(r.published, 20.0);
        assert!(at(3000, 300, 1.5).rates_since(&at(3000, 300, 1.5)).is_none());
    }

    #[test]
    fn totals_sum_the_nodes_and_count_the_degraded() {
        let mut a = at(1000, 10, 0.0);
        a.connections = 3;
        a.protocols.insert("native".into(), 3);
        a.rates = Some(Rates {
            delivered: 5.0,
            ..Rates::default()
        });
        let mut b = a.clone();
        b.id = "b".into();
        b.redis = "unavailable (circuit open)".into();
        let t = totals(&[a, b]);
        assert_eq!((t.nodes, t.degraded, t.connections, t.published), (2, 1, 6, 20));
        assert_eq!(t.protocols["native"], 6);
        assert_eq!(t.rates.delivered, 10.0);
    }
}
