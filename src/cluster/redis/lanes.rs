//! Following a Redis Cluster's sharded pub/sub one *lane* at a time, so that a master
//! that dies stops only the channels it carries.
//!
//! A node's subscriptions on a cluster are lanes: one `SSUBSCRIBE` per shard channel, on
//! the master owning its slot, all on one cluster connection; and the `PSUBSCRIBE
//! {prefix}*` pattern (Laravel's `PUBLISH`es, control notices), which the broker holds on
//! a plain connection to one seed node (a cluster forwards every `PUBLISH` to all nodes).
//! Every [`CHECK`] the follower reads the slot map (`CLUSTER SLOTS`), PINGs each master
//! once on a plain connection of its own (a dead master's errors never reach the
//! cluster connection), and for each shard lane:
//!
//! - master unreachable → the lane is down (logged once; `shards_down` in the stats);
//! - master reachable and the lane down, or the server took the subscription away (its
//!   slot moved: a `SUNSUBSCRIBE` push), or a connection dropped → subscribe it again
//!   (the command follows `MOVED` to the slot's new owner).
//!
//! The cluster connection itself re-subscribes what it tracks after reconnecting to a
//! node; the check makes that visible and covers what it cannot know (a slot taken away).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use serde::Serialize;

use crate::backend::breaker::BreakerState;
use crate::backend::{slot_of, RedisLink, COMMAND_TIMEOUT};
use crate::sync::lock;

/// How often the lanes are checked (and a lost one subscribed again).
pub(super) const CHECK: Duration = super::SUBSCRIPTION_PING;

/// What a subscription is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LaneKind {
    /// The plain subscription (on one seed node): control notices and Laravel's
    /// `PUBLISH`es of the node's channels (or the whole `{prefix}*` pattern).
    Plain,
    /// `SSUBSCRIBE` of one shard channel: the nodes' channel messages on that shard.
    Shard,
}

/// One subscription of a node on a Redis Cluster, as the stats show it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct LaneHealth {
    /// The shard channel, or what the plain subscription carries.
    pub channel: String,
    /// Plain or shard.
    pub kind: LaneKind,
    /// Its hash slot.
    pub slot: u16,
    /// The master owning the slot (`host:port`), when the slot map is known.
    pub master: Option<String>,
    /// Whether the subscription is up.
    pub subscribed: bool,
    /// Whether this node needs it: for a shard, whether it has subscribers of a channel
    /// on it (a shard it does not need is not subscribed, and not down).
    pub wanted: bool,
    /// For a shard: its index among the shard channels.
    #[serde(skip)]
    pub shard: Option<usize>,
    /// For a shard: the circuit breaker of the commands on it (publishes, history).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit: Option<BreakerState>,
}

/// What the push handler tells the follower.
#[derive(Debug, Default)]
pub(super) struct Signals {
    /// Shard channels the server unsubscribed us from (their slot moved).
    taken: Mutex<HashSet<String>>,
    /// A connection to some master dropped.
    dropped: AtomicBool,
    /// Wakes the follower for an early check.
    pub wake: tokio::sync::Notify,
}

impl Signals {
    pub(super) fn taken_away(&self, channel: &redis::Value) {
        if let redis::Value::BulkString(name) = channel {
            if let Ok(name) = std::str::from_utf8(name) {
                lock(&self.taken).insert(name.to_string());
            }
        }
        self.wake.notify_one();
    }

    pub(super) fn connection_dropped(&self) {
        self.dropped.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

impl LaneHealth {
    /// One lane per shard channel, none subscribed yet.
    pub(super) fn shards(channels: Vec<String>) -> Vec<LaneHealth> {
        channels
            .into_iter()
            .enumerate()
            .map(|(i, channel)| LaneHealth {
                slot: slot_of(&channel),
                channel,
                kind: LaneKind::Shard,
                master: None,
                subscribed: false,
                wanted: false,
                shard: Some(i),
                circuit: None,
            })
            .collect()
    }
}

/// What one check changed.
#[derive(Debug, Default)]
pub(super) struct Checked {
    /// Lanes that came up (for the first time or again).
    pub up: Vec<String>,
    /// Lanes that went down.
    pub down: Vec<String>,
}

/// The masters' slot ranges (`CLUSTER SLOTS`): `(first, last, "host:port")`.
async fn slot_map(conn: &mut ClusterConnection) -> Option<Vec<(u16, u16, String)>> {
    let reply = tokio::time::timeout(
        COMMAND_TIMEOUT,
        conn.route_command(
            redis::cmd("CLUSTER").arg("SLOTS").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        ),
    )
    .await
    .ok()?
    .ok()?;
    let redis::Value::Array(ranges) = reply else {
        return None;
    };
    let int = |v: &redis::Value| match v {
        redis::Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let map = ranges
        .iter()
        .filter_map(|range| {
            let redis::Value::Array(fields) = range else {
                return None;
            };
            let redis::Value::Array(master) = fields.get(2)? else {
                return None;
            };
            let (first, last) = (int(fields.first()?)?, int(fields.get(1)?)?);
            let (host, port) = (text(master.first()?)?, int(master.get(1)?)?);
            Some((first, last, format!("{host}:{port}")))
        })
        .collect();
    Some(map)
}

/// PINGs masters on plain connections of their own (cached per master), so that a
/// dead master's errors never touch the cluster connection carrying the subscriptions.
#[derive(Default)]
pub(super) struct Pinger {
    connections: HashMap<String, MultiplexedConnection>,
}

impl Pinger {
    /// PINGs each of `masters` once, concurrently: whether each answered.
    async fn ping_all(&mut self, link: &RedisLink, masters: BTreeSet<String>) -> HashMap<String, bool> {
        let pings = masters.into_iter().map(|master| {
            let cached = self.connections.get(&master).cloned();
            async move {
                let conn = match cached {
                    Some(conn) => Some(conn),
                    None => connect(link, &master).await,
                };
                let answered = match conn.clone() {
                    Some(mut conn) => matches!(
                        tokio::time::timeout(
                            COMMAND_TIMEOUT,
                            redis::cmd("PING").query_async::<redis::Value>(&mut conn)
                        )
                        .await,
                        Ok(Ok(_))
                    ),
                    None => false,
                };
                (master, conn.filter(|_| answered))
            }
        });
        let results = futures_util::future::join_all(pings).await;
        // Masters that left the topology (or did not answer) lose their connection.
        self.connections.clear();
        let mut answers = HashMap::new();
        for (master, conn) in results {
            answers.insert(master.clone(), conn.is_some());
            if let Some(conn) = conn {
                self.connections.insert(master, conn);
            }
        }
        answers
    }
}

async fn connect(link: &RedisLink, master: &str) -> Option<MultiplexedConnection> {
    let client = link.cluster_node_client(master)?.ok()?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT));
    client.get_multiplexed_async_connection_with_config(&config).await.ok()
}

/// Checks every lane once: PINGs each master (once, however many lanes it carries) and
/// subscribes the lanes of reachable masters that are down, were taken away, or may have
/// been lost with a dropped connection.
pub(super) async fn check(
    link: &RedisLink,
    conn: &mut ClusterConnection,
    pinger: &mut Pinger,
    lanes: &mut [LaneHealth],
    wanted: &HashSet<usize>,
    signals: &Signals,
) -> Checked {
    let taken: HashSet<String> = std::mem::take(&mut *lock(&signals.taken));
    // Shards without local channels are let go (their channels emptied a linger ago).
    for lane in lanes.iter_mut() {
        lane.wanted = lane.shard.is_some_and(|i| wanted.contains(&i));
        if !lane.wanted && lane.subscribed {
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, conn.sunsubscribe(&lane.channel)).await;
            lane.subscribed = false;
        }
    }
    let dropped = signals.dropped.swap(false, Ordering::AcqRel);
    if let Some(map) = slot_map(conn).await {
        for lane in lanes.iter_mut() {
            lane.master = map
                .iter()
                .find(|(first, last, _)| (*first..=*last).contains(&lane.slot))
                .map(|(_, _, master)| master.clone());
        }
    }
    // One PING per master; a lane whose master is not known yet is tried directly.
    let masters: BTreeSet<String> = lanes
        .iter()
        .filter(|l| l.wanted)
        .filter_map(|l| l.master.clone())
        .collect();
    let answers = pinger.ping_all(link, masters).await;
    let mut checked = Checked::default();
    for lane in lanes.iter_mut().filter(|l| l.wanted) {
        let reachable = match &lane.master {
            Some(master) => answers.get(master).copied().unwrap_or(false),
            None => true,
        };
        if !reachable {
            if lane.subscribed {
                lane.subscribed = false;
                checked.down.push(lane.channel.clone());
            }
            continue;
        }
        if lane.subscribed && !dropped && !taken.contains(&lane.channel) {
            continue;
        }
        let subscribed = tokio::time::timeout(COMMAND_TIMEOUT * 2, conn.ssubscribe(&lane.channel)).await;
        match subscribed {
            Ok(Ok(())) => {
                if !lane.subscribed || taken.contains(&lane.channel) {
                    checked.up.push(lane.channel.clone());
                }
                lane.subscribed = true;
            }
            _ => {
                if lane.subscribed {
                    checked.down.push(lane.channel.clone());
                }
                lane.subscribed = false;
            }
        }
    }
    checked
}
