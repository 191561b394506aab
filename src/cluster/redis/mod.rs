//! The Redis broker: pub/sub between nodes, node heartbeats, control messages and
//! cluster stats. The Redis presence store (`presence::redis`) shares its [`RedisLink`].
//!
//! Keys and channels (all under `BROADCAST_CHANNELS_PREFIX`, written `{p}` here):
//!
//! | what | Redis |
//! |---|---|
//! | a broadcast on channel `c` | `PUBLISH {p}c {"event","data","socket","node","kind"}` |
//! | node liveness and its stats | `{p}rustaxum:node:{id}` (string, TTL 8 s, refreshed every 2 s) and set `{p}rustaxum:nodes` |
//! | control messages (terminate a user's connections) | `PUBLISH {p}rustaxum:control {"op","user_id","node"}` |
//! | presence members of `c` | hash `{p}rustaxum:presence:c:members` (user id → member JSON) |
//! | a user's sockets on `c` | set `{p}rustaxum:presence:c:sockets:{user}` of `node|socket` |
//! | channels with presence | set `{p}rustaxum:presence:channels` |
//!
//! On a Redis Cluster the same keys carry hash tags and channel messages travel on sharded
//! pub/sub (`SPUBLISH {p}rustaxum:shard:{tag}`, the message naming its channel in `ch`);
//! see [`RedisLink`].
//!
//! A node listens only to what it serves (its interest): the channels it has subscribers
//! for (on a cluster, their shards), subscribed before a join is answered and let go a
//! linger after the last subscriber left; with routing rules that copy, the whole prefix.
//!
//! A node that dies without saying goodbye stops refreshing its key; the presence
//! janitors of the live nodes then remove its members. After a resubscription (Redis
//! restarted, or was unreachable), or when the heartbeat finds the node's own key gone,
//! the broker beats at once and asks for a resync of what the node keeps in Redis
//! ([`RedisBroker::resync_requests`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::{AsyncCommands, RedisResult};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use crate::backend::{slot_of, RedisLink};
#[cfg(feature = "server")]
pub(crate) use control::ChannelRef;
pub(crate) use control::Control;
use control::ControlWire;
pub(crate) use wire::decode_wire;
pub(crate) use wire::escape_glob;
use wire::{wire_message, Wire};

mod control;
mod interest;
mod lanes;
mod nodes;
mod status;
mod wire;

// Public through `server::cluster`.
#[cfg(feature = "server")]
pub use interest::LINGER as INTEREST_LINGER;
#[cfg_attr(not(feature = "server"), allow(unreachable_pub))]
pub use lanes::{LaneHealth, LaneKind};
#[cfg(feature = "server")]
pub use status::BrokerStatus;

use super::{BackendError, Broker, Receiver};
use crate::backend::breaker::BreakerState;
use crate::backend::RedisConfig;
use crate::channel::Channel;
use crate::hub::{EnvelopeKind, Hub, Message};
use crate::setting::InvalidSetting;
use crate::sync::{lock, wait_until};

/// How often a node refreshes its liveness key.
#[cfg_attr(not(feature = "server"), allow(unreachable_pub))]
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a node's liveness key lives without refresh.
#[cfg_attr(not(feature = "server"), allow(unreachable_pub))]
pub const NODE_TTL: Duration = Duration::from_secs(8);
/// How often the subscription connection is checked with PING.
pub(crate) const SUBSCRIPTION_PING: Duration = Duration::from_secs(3);
pub(crate) use crate::backend::{BREAKER_COOLDOWN, COMMAND_TIMEOUT};

/// How following the Redis subscription ended.
enum Followed {
    /// The node is stopping.
    Stopped,
    /// It was up, then lost.
    Lost,
    /// It could not be set up.
    Failed(String),
}

/// Counters of the broker's life, for the stats endpoint.
#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    publish_failures: AtomicU64,
    received: AtomicU64,
    skipped_own: AtomicU64,
    invalid: AtomicU64,
    subscriptions: AtomicU64,
    subscription_losses: AtomicU64,
    /// Messages from other nodes (or Laravel) that reached at least one local socket.
    delivered_locally: AtomicU64,
}

/// The Redis broker of one node.
pub struct RedisBroker {
    link: Arc<RedisLink>,
    subscribed: AtomicBool,
    /// Bumped on every successful (re)subscription.
    subscription_epoch: tokio::sync::watch::Sender<u64>,
    /// Bumped when what this node keeps in Redis may be lost or stale: after a
    /// resubscription (Redis restarted or was unreachable), or when the node's own
    /// liveness key had vanished (other nodes may have removed its members).
    resync_requests: tokio::sync::watch::Sender<u64>,
    control_events: tokio::sync::broadcast::Sender<Control>,
    counters: Counters,
    /// [`Config::security_fingerprint`] of this node, published in its heartbeat.
    fingerprint: String,
    /// Nodes already warned about (node id, fingerprint), so each difference is logged once.
    warned: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    /// What this node tells the others about itself with every heartbeat (its card for
    /// the cluster's dashboard and artisan), set by whoever computes it.
    card: std::sync::Mutex<serde_json::Value>,
    /// On a Redis Cluster: each shard channel subscription's health (empty otherwise).
    lanes: std::sync::Mutex<Vec<LaneHealth>>,
    /// The node holding the plain subscription (`host:port`), while it is up.
    plain_at: std::sync::Mutex<Option<String>>,
    /// The channels this node listens to in Redis.
    interest: interest::Interest,
    /// `PSUBSCRIBE` the whole prefix instead (routing rules copy foreign messages).
    receive_everything: AtomicBool,
    /// On a Redis Cluster: a join needs a shard subscribed now.
    shard_wake: tokio::sync::Notify,
    /// Bumped whenever the lanes' state is published.
    lanes_changed: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// A broker for the configured Redis; connects lazily, so a Redis that is down at
    /// start-up only makes the node degraded.
    ///
    /// `fingerprint` is this node's security fingerprint
    /// (`Config::security_fingerprint`), compared with the other nodes' in heartbeats.
    pub fn new(config: &RedisConfig, fingerprint: String) -> Result<Arc<Self>, InvalidSetting> {
        Ok(Arc::new(Self {
            link: Arc::new(RedisLink::new(config)?),
            subscribed: AtomicBool::new(false),
            subscription_epoch: tokio::sync::watch::Sender::new(0),
            resync_requests: tokio::sync::watch::Sender::new(0),
            control_events: tokio::sync::broadcast::channel(1024).0,
            counters: Counters::default(),
            fingerprint,
            warned: Default::default(),
            card: Default::default(),
            lanes: Default::default(),
            plain_at: Default::default(),
            interest: Default::default(),
            receive_everything: AtomicBool::new(false),
            shard_wake: tokio::sync::Notify::new(),
            lanes_changed: tokio::sync::watch::Sender::new(0),
        }))
    }

    /// This node's id in the cluster.
    pub fn node_id(&self) -> &str {
        self.link.node_id()
    }

    /// The command connection, shared with the Redis presence store.
    pub fn link(&self) -> &Arc<RedisLink> {
        &self.link
    }

    /// Changes whenever what this node keeps in Redis must be written again: after a
    /// resubscription, or when the node's liveness key had vanished.
    pub fn resync_requests(&self) -> tokio::sync::watch::Receiver<u64> {
        self.resync_requests.subscribe()
    }

    fn key(&self, rest: &str) -> String {
        self.link.key(rest)
    }

    /// Receive every message published under the prefix (`PSUBSCRIBE {prefix}*`), not only
    /// those of the channels with local subscribers: for routing rules that copy messages,
    /// since a message Laravel publishes on any channel may be copied to one served here.
    /// Set before [`start`](Self::start).
    pub fn receive_everything(&self, yes: bool) {
        self.receive_everything.store(yes, Ordering::Release);
    }

    /// Listens to `channel` in Redis for as long as the node runs, subscribers or not (the
    /// Pusher watchlist channel, whose messages go to watchers, not subscribers).
    pub fn pin(&self, channel: &Channel) {
        self.interest
            .pin(channel, interest::redis_names(self.link.prefix(), channel));
    }

    /// Starts the subscriber and heartbeat tasks; they stop when `stop` is cancelled.
    pub fn start(self: &Arc<Self>, fanout: Arc<dyn Receiver>, stop: CancellationToken, tasks: &TaskTracker) {
        if self.link.is_cluster() {
            tasks.spawn(self.clone().plain_loop(fanout.clone(), stop.clone()));
        }
        tasks.spawn(self.clone().subscribe_loop(fanout.clone(), stop.clone()));
        tasks.spawn(self.clone().heartbeat_loop(fanout.hub().clone(), stop));
    }

    /// Follows the node's subscriptions: on one Redis (or Sentinel's master) the plain
    /// one; on a Redis Cluster the shard channels (the plain one has
    /// [`plain_loop`](Self::plain_loop)).
    async fn subscribe_loop(self: Arc<Self>, fanout: Arc<dyn Receiver>, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() {
            let lost = if self.link.is_cluster() {
                self.follow_cluster(&fanout, &stop).await
            } else {
                self.follow_plain(None, &fanout, &stop).await
            };
            if !self.lost(lost, &mut backoff, &stop).await {
                return;
            }
        }
    }

    /// On a Redis Cluster: holds the plain subscription (control notices, Laravel's
    /// `PUBLISH`es) on a connection to one seed node, moving to the next seed when that
    /// one fails: the cluster forwards every `PUBLISH` to all its nodes, and one connection
    /// (not the cluster connection, which could subscribe on two nodes after a failure)
    /// means each message arrives once.
    async fn plain_loop(self: Arc<Self>, fanout: Arc<dyn Receiver>, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0usize;
        while !stop.is_cancelled() {
            let lost = self.follow_plain(Some(attempt), &fanout, &stop).await;
            attempt = attempt.wrapping_add(1);
            if !self.lost(lost, &mut backoff, &stop).await {
                return;
            }
        }
    }

    /// After a subscription ended: counts and logs it, then waits before the next try.
    /// `false` when the node is stopping.
    async fn lost(&self, lost: Followed, backoff: &mut Duration, stop: &CancellationToken) -> bool {
        match lost {
            Followed::Stopped => return false,
            Followed::Lost => {
                self.counters.subscription_losses.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %self.link.node_id(), "lost the Redis subscription; reconnecting");
                *backoff = Duration::from_millis(100);
            }
            Followed::Failed(e) => tracing::debug!(error = %e, "could not subscribe to Redis"),
        }
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep(*backoff) => {}
        }
        *backoff = (*backoff * 2).min(Duration::from_secs(2));
        true
    }

    /// The pattern every channel Laravel (or anyone) publishes on matches: `{prefix}*`.
    fn pattern(&self) -> String {
        format!("{}*", escape_glob(self.link.prefix()))
    }

    fn subscription_up(&self, what: &str) {
        self.counters.subscriptions.fetch_add(1, Ordering::Relaxed);
        self.subscription_epoch.send_modify(|n| *n = n.wrapping_add(1));
        tracing::info!(node = %self.link.node_id(), subscription = %what, "subscribed to Redis");
    }

    /// The node's plain subscription, on a connection of its own until it fails: to the
    /// one Redis (or the master Sentinel names) when `seed` is `None`, else to that
    /// attempt's seed node of a Redis Cluster. It carries the control channel and the
    /// channels this node has subscribers for ([`interest`]: subscribed as joins ask, let
    /// go after [`interest::LINGER`] without subscribers), or with
    /// [`receive_everything`](Self::receive_everything) `PSUBSCRIBE {prefix}*`.
    async fn follow_plain(
        &self,
        seed: Option<usize>,
        fanout: &Arc<dyn Receiver>,
        stop: &CancellationToken,
    ) -> Followed {
        let everything = self.receive_everything.load(Ordering::Acquire);
        let pattern = self.pattern();
        let control = self.control_channel();
        let connected = tokio::time::timeout(COMMAND_TIMEOUT * 2, async {
            let client = match seed {
                None => self.link.pubsub_client().await?,
                Some(attempt) => self.link.cluster_seed_client(attempt).transpose()?,
            };
            let client = client.ok_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no Redis to subscribe to"))
            })?;
            let at = client.get_connection_info().addr().to_string();
            let mut pubsub = client.get_async_pubsub().await?;
            if everything {
                pubsub.psubscribe(&pattern).await?;
            } else {
                pubsub.subscribe(&control).await?;
            }
            RedisResult::Ok((pubsub, at))
        })
        .await;
        let (pubsub, at) = match connected {
            Ok(Ok(connected)) => connected,
            Ok(Err(e)) => return Followed::Failed(e.to_string()),
            Err(_) => return Followed::Failed("timed out".into()),
        };
        let (mut sink, mut messages) = pubsub.split();
        // Exactly what is listened to now, on the new connection.
        let listened = self.interest.everything();
        let count = listened.len();
        if let Err(unsent) = self.subscribe_batch(&mut sink, listened, everything).await {
            self.interest.lost(unsent);
            return Followed::Failed("subscribing the live channels failed".into());
        }
        self.plain_held(Some(at.clone()));
        if everything {
            self.subscription_up(&format!("{pattern} on {at}"));
        } else {
            self.subscription_up(&format!("{control} and {count} channels on {at}"));
        }
        // A Redis that stops answering without closing the connection (a frozen
        // process, a silent partition) is caught by a periodic PING.
        let mut keepalive = tokio::time::interval(SUBSCRIPTION_PING);
        keepalive.tick().await;
        let mut linger = tokio::time::interval(Duration::from_secs(1));
        let ended = loop {
            tokio::select! {
                _ = stop.cancelled() => break Followed::Stopped,
                msg = messages.next() => match msg {
                    Some(msg) => self.deliver(fanout, msg.get_channel_name(), msg.get_payload_bytes(), false),
                    None => break Followed::Lost,
                },
                _ = self.interest.wake.notified() => {
                    let batch = self.interest.take_pending();
                    if let Err(unsent) = self.subscribe_batch(&mut sink, batch, everything).await {
                        self.interest.lost(unsent);
                        break Followed::Lost;
                    }
                }
                _ = linger.tick(), if !everything => {
                    let gone = self.interest.vacated(fanout.hub(), interest::LINGER);
                    for chunk in gone.chunks(interest::BATCH) {
                        let done = tokio::time::timeout(COMMAND_TIMEOUT, sink.unsubscribe(chunk)).await;
                        if !matches!(done, Ok(Ok(()))) {
                            break;
                        }
                    }
                }
                _ = keepalive.tick() => {
                    let pong = tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        break Followed::Lost;
                    }
                }
            }
        };
        self.interest.lost(Vec::new());
        self.plain_held(None);
        ended
    }

    /// `SUBSCRIBE`s `batch` in commands of [`interest::BATCH`] names (nothing to send when
    /// the whole prefix is received anyway); on failure gives the batch back.
    async fn subscribe_batch(
        &self,
        sink: &mut redis::aio::PubSubSink,
        batch: Vec<(String, Channel)>,
        everything: bool,
    ) -> Result<(), Vec<(String, Channel)>> {
        if !everything {
            for chunk in batch.chunks(interest::BATCH) {
                let names: Vec<&str> = chunk.iter().map(|(n, _)| n.as_str()).collect();
                let done = tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(names)).await;
                if !matches!(done, Ok(Ok(()))) {
                    return Err(batch);
                }
            }
        }
        self.interest.subscribed(batch);
        Ok(())
    }

    /// Where the plain subscription lives now (`None`: it is down).
    fn plain_held(&self, at: Option<String>) {
        *lock(&self.plain_at) = at;
        self.refresh_subscribed();
    }

    /// A Redis Cluster: `PSUBSCRIBE {prefix}*` and `SSUBSCRIBE` of every shard channel on a
    /// cluster connection of its own, followed lane by lane ([`lanes`]): a master that
    /// stops answering takes down only the lanes it carries, and each lane is subscribed
    /// again when its master answers (or its slot's new owner, after a move). The follow
    /// ends only when every lane has been down for three checks in a row; the connection
    /// is then built again from the seed nodes.
    async fn follow_cluster(self: &Arc<Self>, fanout: &Arc<dyn Receiver>, stop: &CancellationToken) -> Followed {
        let mut lanes = LaneHealth::shards(self.link.shard_channels());
        let signals = Arc::new(lanes::Signals::default());
        // Messages are delivered where the cluster connection hands them over (no queue
        // of ours between). `live` keeps a connection being torn down from delivering
        // anything more.
        let live = Arc::new(AtomicBool::new(true));
        let sender = {
            let (this, fanout, signals, live) = (self.clone(), fanout.clone(), signals.clone(), live.clone());
            move |push: redis::PushInfo| -> Result<(), ()> {
                if !live.load(Ordering::Acquire) {
                    return Ok(());
                }
                match (push.kind, &push.data[..]) {
                    (redis::PushKind::SMessage, [channel, payload]) => {
                        this.deliver_value(&fanout, channel, payload, true)
                    }
                    (redis::PushKind::PMessage, [_, channel, payload]) => {
                        this.deliver_value(&fanout, channel, payload, false)
                    }
                    (redis::PushKind::SUnsubscribe, [channel, ..]) => signals.taken_away(channel),
                    (redis::PushKind::Disconnection, _) => signals.connection_dropped(),
                    _ => {}
                }
                Ok(())
            }
        };
        let connected = tokio::time::timeout(COMMAND_TIMEOUT * 4, self.link.cluster_pubsub(sender)).await;
        let mut conn = match connected {
            Ok(Ok(Some(conn))) => conn,
            Ok(Ok(None)) => return Followed::Failed("not a Redis Cluster".into()),
            Ok(Err(e)) => return Followed::Failed(e.to_string()),
            Err(_) => return Followed::Failed("timed out".into()),
        };
        let mut ever_up = false;
        let mut all_down = 0u32;
        let mut pinger = lanes::Pinger::default();
        let ended = loop {
            let wanted: std::collections::HashSet<usize> = if self.receive_everything.load(Ordering::Acquire) {
                (0..lanes.len()).collect()
            } else {
                self.interest
                    .channels()
                    .iter()
                    .filter_map(|c| self.link.shard_index(c))
                    .collect()
            };
            let checked = lanes::check(&self.link, &mut conn, &mut pinger, &mut lanes, &wanted, &signals).await;
            for channel in &checked.down {
                tracing::warn!(node = %self.link.node_id(), subscription = %channel, "a Redis Cluster master stopped answering: its channels stop until it is back");
            }
            if !checked.up.is_empty() {
                self.counters.subscriptions.fetch_add(1, Ordering::Relaxed);
                if ever_up {
                    tracing::info!(node = %self.link.node_id(), shards = ?checked.up, "subscribed to Redis Cluster shards again");
                } else {
                    let up = lanes.iter().filter(|l| l.subscribed).count();
                    tracing::info!(node = %self.link.node_id(), "subscribed to {up} of {} Redis Cluster shard channels", lanes.len());
                    ever_up = true;
                }
            }
            self.show_lanes(&lanes);
            let needed = lanes.iter().any(|l| l.wanted);
            all_down = if !needed || lanes.iter().any(|l| l.subscribed) {
                0
            } else {
                all_down + 1
            };
            if all_down >= 3 {
                break if ever_up {
                    Followed::Lost
                } else {
                    Followed::Failed("no master answers".into())
                };
            }
            tokio::select! {
                _ = stop.cancelled() => break Followed::Stopped,
                _ = signals.wake.notified() => {}
                _ = self.shard_wake.notified() => {}
                _ = tokio::time::sleep(lanes::CHECK) => {}
            }
        };
        live.store(false, Ordering::Release);
        lock(&self.lanes).clear();
        ended
    }

    /// Publishes the lanes' state for the stats, `/ready` and the dashboard.
    fn show_lanes(&self, lanes: &[LaneHealth]) {
        *lock(&self.lanes) = lanes.to_vec();
        self.refresh_subscribed();
        self.lanes_changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Subscribed: the plain subscription is up, or (on a Redis Cluster) some shard is.
    fn refresh_subscribed(&self) {
        let plain = lock(&self.plain_at).is_some();
        let shards = lock(&self.lanes).iter().any(|l| l.subscribed);
        self.subscribed.store(plain || shards, Ordering::Release);
    }

    fn deliver_value(&self, fanout: &Arc<dyn Receiver>, channel: &redis::Value, payload: &redis::Value, sharded: bool) {
        match (channel, payload) {
            (redis::Value::BulkString(channel), redis::Value::BulkString(payload)) => {
                match std::str::from_utf8(channel) {
                    Ok(name) => self.deliver(fanout, name, payload, sharded),
                    Err(_) => {
                        self.counters.invalid.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ => {
                self.counters.invalid.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn control_channel(&self) -> String {
        // ':' cannot appear in a channel name, so this never collides with one.
        self.key("control")
    }

    fn control(&self, hub: &Hub, payload: &[u8]) {
        let Ok(wire) = serde_json::from_slice::<ControlWire<'_>>(payload) else {
            self.counters.invalid.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if wire.node == self.link.node_id() {
            return;
        }
        match wire.control {
            Control::TerminateUser { user_id } => {
                let closed = hub.terminate_user(&user_id);
                tracing::info!(user = %user_id, closed, "terminated user connections on request of another node");
            }
            // Other services' notices go to their listeners.
            notice @ Control::ManagedChannelChanged { .. } => {
                let _ = self.control_events.send(notice);
            }
        }
    }

    /// Tells every other node about `control` (what the broker does not act on itself
    /// reaches their [`control_events`] listeners).
    ///
    /// [`control_events`]: Self::control_events
    pub async fn publish_control(&self, control: Control) -> Result<(), BackendError> {
        let message = serde_json::to_string(&ControlWire {
            control,
            node: self.link.node_id().into(),
        })?;
        let target = self.control_channel();
        self.link
            .exec(|mut c| async move { c.publish::<_, _, ()>(&target, message).await })
            .await
    }

    /// Control notices from other nodes that the broker does not handle itself.
    pub fn control_events(&self) -> tokio::sync::broadcast::Receiver<Control> {
        self.control_events.subscribe()
    }

    /// A message received on Redis channel `name`; `sharded` when it came on a shard
    /// channel of a Redis Cluster (the hub channel is then in the message).
    fn deliver(&self, fanout: &Arc<dyn Receiver>, name: &str, payload: &[u8], sharded: bool) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        if !sharded && name == self.control_channel() {
            return self.control(fanout.hub(), payload);
        }
        let Ok(wire) = serde_json::from_slice::<Wire<'_>>(payload) else {
            self.counters.invalid.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(redis_channel = %name, "ignoring a Redis message that is not {{\"event\",\"data\"}} JSON");
            return;
        };
        let channel = if sharded {
            wire.ch.as_deref().and_then(|c| Channel::from_key(c).ok())
        } else {
            name.strip_prefix(self.link.prefix())
                .and_then(|n| Channel::from_key(n).ok())
        };
        let Some(channel) = channel else {
            self.counters.invalid.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // A node delivers its own messages itself, except those the history script
        // published: they come back here so that every node delivers them in offset order.
        if wire.node.as_deref() == Some(self.link.node_id()) && !wire.all {
            self.counters.skipped_own.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some((message, from)) = wire_message(channel, wire) else {
            self.counters.invalid.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // A message from another node went through routing there; one published straight
        // into Redis (a Laravel app) is routed here, by every node alike.
        let report = if from.is_some() {
            fanout.deliver_remote(message)
        } else {
            fanout.deliver_foreign(message)
        };
        if report.delivered > 0 {
            self.counters.delivered_locally.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, message: &Message) -> Result<(), BackendError> {
        let payload = self.encode(message)?;
        let mut publish = redis::cmd(self.link.publish_command());
        publish.arg(self.link.pubsub_channel(&message.channel)).arg(payload);
        let result = self
            .link
            .exec_for(&message.channel, |mut c| async move {
                publish.query_async::<()>(&mut c).await
            })
            .await;
        match &result {
            Ok(()) => self.counters.published.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counters.publish_failures.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    async fn listen(&self, channel: &Channel) {
        self.interest
            .listen(channel, interest::redis_names(self.link.prefix(), channel))
            .await;
        // On a Redis Cluster the nodes' messages travel on the channel's shard: wait until
        // it is subscribed (unless the cluster is unreachable: it is when it is back).
        let Some(shard) = self.link.shard_index(channel) else {
            return;
        };
        let changed = self.lanes_changed.subscribe();
        let up = || lock(&self.lanes).iter().any(|l| l.shard == Some(shard) && l.subscribed);
        if up() || !self.subscribed.load(Ordering::Acquire) {
            return;
        }
        self.shard_wake.notify_one();
        wait_until(changed, COMMAND_TIMEOUT * 2, up).await;
    }

    async fn terminate_user(&self, user_id: &str) -> Result<(), BackendError> {
        self.publish_control(Control::TerminateUser {
            user_id: user_id.to_string(),
        })
        .await
    }

    /// Subscribed (on a Redis Cluster: at least one lane up), and the coordination
    /// circuit closed: a half-open circuit has not shown yet that Redis answers again, so
    /// `/ready` keeps saying degraded until a probe succeeds. A cluster with some shards
    /// down stays ready (`partial`): every node sees the same dead master, and taking
    /// them all out of the load balancer would stop the healthy shards too.
    fn healthy(&self) -> bool {
        self.subscribed.load(Ordering::Acquire) && self.link.breaker().state() == BreakerState::Closed
    }
}

impl RedisBroker {
    /// `message` as the other nodes read it (`{"event","data","socket","node",...}`).
    pub(crate) fn encode(&self, message: &Message) -> Result<String, BackendError> {
        let wire = Wire {
            event: message.event.as_ref().into(),
            data: Some(&message.data),
            txt: message.text.as_deref().map(Into::into),
            socket: message.except.map(|s| Value::String(s.to_string())),
            node: Some(self.link.node_id().into()),
            kind: match message.kind {
                EnvelopeKind::Event => None,
                EnvelopeKind::MemberAdded => Some("member_added".into()),
                EnvelopeKind::MemberRemoved => Some("member_removed".into()),
                EnvelopeKind::SubscriptionCount => Some("subscription_count".into()),
                EnvelopeKind::Watchlist => Some("watchlist".into()),
            },
            user: message.sender.clone(),
            ts: Some(message.timestamp.as_ref().into()),
            pos: message.position.clone(),
            all: false,
            ch: self.link.is_cluster().then(|| message.channel.name().into()),
        };
        Ok(serde_json::to_string(&wire)?)
    }
}

#[cfg(test)]
mod tests;
