//! The hub: channels, their subscribers, fan-out and live statistics.
//!
//! The hub knows connections only as [`ConnectionHandle`]s (an outbound queue and a
//! close signal); it never touches a socket, so every wire protocol shares it.
//!
//! Locking: one `std::sync::RwLock` over the channel map. Publishing takes the read
//! lock and only does `try_send` under it (no `.await`, no I/O), so fan-out to many
//! sockets never waits on a slow one.

mod connection;
pub mod latency;
mod member;
mod message;
mod names;
mod socket;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde::Serialize;

use tokio_util::sync::CancellationToken;

pub use connection::{CloseReason, Closed, ConnectionHandle, OutboxReceiver, SubscribeError, TryRecvError};
pub use member::{Member, UserId};
pub(crate) use message::{now_rfc3339, serialize_user_id};
#[cfg(feature = "server")]
pub(crate) use message::{payload_from_text, payload_text};
pub use message::{Envelope, EnvelopeKind, Message, Position, Protocol, Sender};
pub(crate) use names::event_name_problem;
pub use names::MAX_EVENT_NAME_LEN;
pub use socket::{InvalidSocketId, SocketId};

use crate::channel::{Channel, ChannelKind};
use crate::sync::{lock, read, write};
use connection::Delivery;

/// Limits the hub enforces per connection.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Outbound queue capacity per connection, in messages.
    pub send_queue_size: usize,
    /// Most channels one connection may join.
    pub max_channels_per_connection: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            send_queue_size: 256,
            max_channels_per_connection: 100,
        }
    }
}

struct ChannelState {
    channel: Channel,
    subscribers: HashMap<SocketId, Arc<ConnectionHandle>>,
    /// The counters of the channel's app, found once when the channel is created.
    app: Arc<AppCounters>,
}

/// One app's message counters.
#[derive(Debug, Default)]
struct AppCounters {
    published: AtomicU64,
    delivered: AtomicU64,
}

/// One app's live figures on this node (the default app under `""`).
#[derive(Debug, Clone, Default, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct AppSnapshot {
    /// Channels with at least one subscriber.
    pub channels: usize,
    /// Subscriptions over those channels.
    pub subscriptions: usize,
    /// Messages published to the app's channels.
    pub published: u64,
    /// Copies of them queued to sockets.
    pub delivered: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicUsize,
    /// Open connections by protocol (indexed by `Protocol as usize`).
    by_protocol: [AtomicUsize; 4],
    connections_total: AtomicU64,
    published: AtomicU64,
    delivered: AtomicU64,
    received: AtomicU64,
    slow_disconnects: AtomicU64,
    encoded: Arc<AtomicU64>,
}

/// A place reserved for one connection under a connection limit; released when dropped.
///
/// Reserve it before accepting the upgrade and keep it for the connection's whole life:
/// checking a count and registering later lets concurrent upgrades overshoot the limit.
#[derive(Debug)]
pub struct ConnectionSlot {
    slots: Arc<AtomicUsize>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.slots.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The in-process hub every transport and the local driver share.
pub struct Hub {
    config: HubConfig,
    slots: Arc<AtomicUsize>,
    channels: RwLock<HashMap<Arc<str>, ChannelState>>,
    connections: RwLock<HashMap<SocketId, Arc<ConnectionHandle>>>,
    /// Message counters per app namespace (`""`: the default app).
    apps: RwLock<HashMap<Arc<str>, Arc<AppCounters>>>,
    counters: Counters,
    latency: latency::LatencyHistogram,
    /// Time from queueing a message to the last socket writing it, per message.
    broadcast_duration: Arc<latency::LatencyHistogram>,
    shutdown: CancellationToken,
    /// Draining: still serving, but `/ready` says otherwise and HTTP connections are not
    /// kept alive, so a load balancer moves on before the node stops.
    draining: std::sync::atomic::AtomicBool,
    started: Instant,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A subscription was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribed {
    /// The channel's subscribers on this node, this connection included.
    pub subscribers: usize,
    /// This subscription made the channel occupied on this node (its first subscriber).
    pub occupied: bool,
}

/// What a publish reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PublishReport {
    /// Sockets whose queue took the message.
    pub delivered: usize,
    /// Sockets disconnected because their queue was full.
    pub dropped: usize,
    /// The message's offset in its channel's history, when the channel keeps one.
    #[serde(skip)]
    pub offset: Option<u64>,
}

/// A point-in-time view of the hub, as served by `GET /api/broadcast/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    /// Open connections.
    pub connections: usize,
    /// Channels with at least one subscriber, by canonical name.
    pub channels: BTreeMap<String, ChannelStats>,
    /// Message counters since start.
    pub messages: MessageCounters,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Connections closed because they could not keep up.
    pub slow_disconnects: u64,
    /// Seconds since the hub was created.
    pub uptime_seconds: u64,
}

/// One channel's live figures.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ChannelStats {
    /// The channel's kind.
    pub kind: ChannelKind,
    /// Subscribed connections.
    pub subscribers: usize,
    /// Presence members (users, not connections); filled in by the API for presence channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<usize>,
}

/// Message counters since start.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct MessageCounters {
    /// Messages published (one per channel per broadcast).
    pub published: u64,
    /// Copies queued to sockets.
    pub delivered: u64,
    /// Frames received from clients.
    pub received: u64,
    /// Frames encoded (at most one per message per wire protocol).
    pub encoded: u64,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new(HubConfig::default())
    }
}

impl Hub {
    /// A hub with the given limits.
    pub fn new(config: HubConfig) -> Self {
        Self {
            config,
            slots: Arc::default(),
            channels: RwLock::new(HashMap::new()),
            connections: RwLock::new(HashMap::new()),
            apps: RwLock::default(),
            counters: Counters::default(),
            latency: latency::LatencyHistogram::default(),
            broadcast_duration: Arc::default(),
            shutdown: CancellationToken::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            started: Instant::now(),
        }
    }

    /// Reserves a place for one more connection if fewer than `max` are open or being
    /// opened (`max == 0`: no limit). Atomic: of any number of concurrent callers, at most
    /// `max` hold a slot at once.
    pub fn reserve_connection(&self, max: usize) -> Option<ConnectionSlot> {
        self.slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then(|| n.saturating_add(1))
            })
            .ok()?;
        Some(ConnectionSlot {
            slots: self.slots.clone(),
        })
    }

    /// Registers a new connection and returns its handle and the receiving end of its
    /// outbound queue. Call [`disconnect`](Self::disconnect) when the socket ends.
    pub fn connect(&self, protocol: Protocol) -> (Arc<ConnectionHandle>, crate::hub::OutboxReceiver) {
        let (handle, rx) = ConnectionHandle::new(protocol, self.config.send_queue_size);
        write(&self.connections).insert(handle.id(), handle.clone());
        // After the insert: a shutdown either saw this connection or is seen here.
        if self.is_shutting_down() {
            handle.ask_to_close();
        }
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        self.counters.by_protocol[protocol as usize].fetch_add(1, Ordering::Relaxed);
        self.counters.connections_total.fetch_add(1, Ordering::Relaxed);
        (handle, rx)
    }

    /// Removes a connection from every channel and from the hub. Idempotent. Returns the
    /// channels it left, each with its subscribers left on this node (0: vacated).
    pub fn disconnect(&self, handle: &ConnectionHandle) -> Vec<(Channel, usize)> {
        let channels = std::mem::take(&mut *lock(&handle.channels));
        let mut left = Vec::new();
        if !channels.is_empty() {
            let mut map = write(&self.channels);
            for channel in channels {
                if let Some(remaining) = remove_subscriber(&mut map, &channel, handle.id()) {
                    left.push((channel, remaining));
                }
            }
        }
        if write(&self.connections).remove(&handle.id()).is_some() {
            self.counters.connections.fetch_sub(1, Ordering::Relaxed);
            self.counters.by_protocol[handle.protocol() as usize].fetch_sub(1, Ordering::Relaxed);
        }
        left
    }

    /// Subscribes a connection to a channel whose join was already authorized.
    /// Subscribing twice is not an error.
    pub fn subscribe(&self, handle: &Arc<ConnectionHandle>, channel: &Channel) -> Result<Subscribed, SubscribeError> {
        if handle.is_closing() {
            return Err(SubscribeError::Closing);
        }
        {
            let mut mine = lock(&handle.channels);
            if !mine.contains(channel) {
                if mine.len() >= self.config.max_channels_per_connection {
                    return Err(SubscribeError::TooManyChannels(self.config.max_channels_per_connection));
                }
                // Most sockets join one channel: room for one, not the four a first push
                // reserves (tens of thousands of idle sockets each keep this).
                if mine.is_empty() {
                    mine.reserve_exact(1);
                }
                mine.push(channel.clone());
            }
        }
        let mut map = write(&self.channels);
        let mut occupied = false;
        if !map.contains_key(channel.name()) {
            let app = self.app_counters(channel);
            map.insert(
                channel.name_arc().clone(),
                ChannelState {
                    channel: channel.clone(),
                    subscribers: HashMap::new(),
                    app,
                },
            );
            occupied = true;
        }
        let Some(state) = map.get_mut(channel.name()) else {
            unreachable!("inserted above under the same lock")
        };
        state.subscribers.insert(handle.id(), handle.clone());
        Ok(Subscribed {
            subscribers: state.subscribers.len(),
            occupied,
        })
    }

    /// Unsubscribes a connection: `None` when it was not subscribed, otherwise the
    /// channel's subscribers left on this node (0: vacated).
    pub fn unsubscribe(&self, handle: &ConnectionHandle, channel: &Channel) -> Option<usize> {
        let was = {
            let mut mine = lock(&handle.channels);
            let before = mine.len();
            mine.retain(|c| c != channel);
            mine.len() != before
        };
        if !was {
            return None;
        }
        remove_subscriber(&mut write(&self.channels), channel, handle.id())
    }

    /// The counters of `channel`'s app, created on first use.
    fn app_counters(&self, channel: &Channel) -> Arc<AppCounters> {
        let app = channel.app().unwrap_or("");
        if let Some(c) = read(&self.apps).get(app) {
            return c.clone();
        }
        write(&self.apps).entry(Arc::from(app)).or_default().clone()
    }

    /// Queues `message` to every subscriber of its channel on this node, except its
    /// `except` socket. Returns what it reached.
    ///
    /// This reaches this node's sockets only and skips the publish hooks: publish through
    /// the publish pipeline's `Fanout`, the one publish path, so hooks and the other
    /// nodes see the message too.
    ///
    /// Never waits: a subscriber whose queue is full is closed with
    /// [`CloseReason::SLOW_CONSUMER`] and counted, and the others still receive.
    pub fn deliver(&self, message: Message) -> PublishReport {
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        let mut report = PublishReport::default();
        let mut slow = Vec::new();
        let except = message.except;
        {
            let map = read(&self.channels);
            let Some(state) = map.get(message.channel.name()) else {
                if let Some(app) = read(&self.apps).get(message.channel.app().unwrap_or("")) {
                    app.published.fetch_add(1, Ordering::Relaxed);
                }
                return report;
            };
            state.app.published.fetch_add(1, Ordering::Relaxed);
            let envelope = Arc::new(Envelope::new(
                state.channel.clone(),
                message,
                self.counters.encoded.clone(),
                Some(self.broadcast_duration.clone()),
            ));
            for (id, conn) in &state.subscribers {
                if Some(*id) == except || conn.is_closing() {
                    continue;
                }
                match conn.try_deliver(&envelope) {
                    Delivery::Queued => report.delivered += 1,
                    Delivery::Full => slow.push(conn.clone()),
                    Delivery::Gone => {}
                }
            }
            if report.delivered > 0 {
                envelope.reached();
            }
            state
                .app
                .delivered
                .fetch_add(report.delivered as u64, Ordering::Relaxed);
        }
        report.dropped = self.disconnect_slow(&slow);
        self.counters
            .delivered
            .fetch_add(report.delivered as u64, Ordering::Relaxed);
        report
    }

    /// Closes connections whose queue was full with [`CloseReason::SLOW_CONSUMER`] and
    /// counts them; returns how many.
    fn disconnect_slow(&self, slow: &[Arc<ConnectionHandle>]) -> usize {
        for conn in slow {
            tracing::warn!(socket_id = %conn.id(), "disconnecting slow consumer");
            conn.close(CloseReason::SLOW_CONSUMER);
        }
        self.counters
            .slow_disconnects
            .fetch_add(slow.len() as u64, Ordering::Relaxed);
        slow.len()
    }

    /// Queues `message` to the listed sockets of this node (not to a channel's
    /// subscribers): one envelope, encoded once per protocol. Returns what it reached.
    pub fn deliver_to(&self, sockets: &[SocketId], message: Message) -> PublishReport {
        let mut report = PublishReport::default();
        let conns: Vec<_> = {
            let map = read(&self.connections);
            sockets.iter().filter_map(|id| map.get(id).cloned()).collect()
        };
        if conns.is_empty() {
            return report;
        }
        let envelope = Arc::new(Envelope::new(
            message.channel.clone(),
            message,
            self.counters.encoded.clone(),
            Some(self.broadcast_duration.clone()),
        ));
        let mut slow = Vec::new();
        for conn in conns {
            match conn.try_deliver(&envelope) {
                Delivery::Queued => report.delivered += 1,
                Delivery::Full => slow.push(conn),
                Delivery::Gone => {}
            }
        }
        if report.delivered > 0 {
            envelope.reached();
        }
        report.dropped = self.disconnect_slow(&slow);
        self.counters
            .delivered
            .fetch_add(report.delivered as u64, Ordering::Relaxed);
        report
    }

    /// Records how long a written message waited since the hub queued it.
    pub fn record_write_latency(&self, waited: std::time::Duration) {
        self.latency.record(waited);
    }

    /// The publish-to-write latency histogram so far.
    pub fn write_latency(&self) -> latency::LatencySnapshot {
        self.latency.snapshot()
    }

    /// Per message: the time from the hub queueing it to the last of its sockets being
    /// done with it (written, or dropped by a closing socket), so far.
    pub fn broadcast_duration(&self) -> latency::LatencySnapshot {
        self.broadcast_duration.snapshot()
    }

    /// Counts a frame received from a client.
    pub fn record_received(&self) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Subscriber count of a channel (0 when nobody is subscribed).
    pub fn subscriber_count(&self, channel: &Channel) -> usize {
        read(&self.channels)
            .get(channel.name())
            .map_or(0, |s| s.subscribers.len())
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.counters.connections.load(Ordering::Relaxed)
    }

    /// Open connections speaking `protocol`.
    pub fn protocol_connection_count(&self, protocol: Protocol) -> usize {
        self.counters.by_protocol[protocol as usize].load(Ordering::Relaxed)
    }

    /// The handle of an open connection.
    pub fn connection(&self, id: SocketId) -> Option<Arc<ConnectionHandle>> {
        read(&self.connections).get(&id).cloned()
    }

    /// How long the hub has been up.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Closes every connection subscribed to `channel` with `reason`; returns how many.
    pub fn close_channel(&self, channel: &Channel, reason: CloseReason) -> usize {
        let victims: Vec<_> = read(&self.channels)
            .get(channel.name())
            .map(|s| s.subscribers.values().cloned().collect())
            .unwrap_or_default();
        for c in &victims {
            c.close(reason);
        }
        victims.len()
    }

    /// Closes every connection of `user_id` with [`CloseReason::TERMINATED`]; returns how many.
    pub fn terminate_user(&self, user_id: &str) -> usize {
        let victims: Vec<_> = read(&self.connections)
            .values()
            .filter(|c| c.user().as_deref() == Some(user_id))
            .cloned()
            .collect();
        for c in &victims {
            c.close(CloseReason::TERMINATED);
        }
        victims.len()
    }

    /// Live figures for the stats endpoint and the CLI.
    pub fn snapshot(&self) -> StatsSnapshot {
        let channels = read(&self.channels)
            .values()
            .map(|s| {
                (
                    s.channel.name().to_string(),
                    ChannelStats {
                        kind: s.channel.kind(),
                        subscribers: s.subscribers.len(),
                        members: None,
                    },
                )
            })
            .collect();
        let c = &self.counters;
        StatsSnapshot {
            connections: c.connections.load(Ordering::Relaxed),
            channels,
            messages: MessageCounters {
                published: c.published.load(Ordering::Relaxed),
                delivered: c.delivered.load(Ordering::Relaxed),
                received: c.received.load(Ordering::Relaxed),
                encoded: c.encoded.load(Ordering::Relaxed),
            },
            connections_total: c.connections_total.load(Ordering::Relaxed),
            slow_disconnects: c.slow_disconnects.load(Ordering::Relaxed),
            uptime_seconds: self.started.elapsed().as_secs(),
        }
    }

    /// Each app's figures on this node, by namespace (`""`: the default app).
    pub fn app_snapshots(&self) -> BTreeMap<String, AppSnapshot> {
        let mut out: BTreeMap<String, AppSnapshot> = read(&self.apps)
            .iter()
            .map(|(app, c)| {
                let snap = AppSnapshot {
                    published: c.published.load(Ordering::Relaxed),
                    delivered: c.delivered.load(Ordering::Relaxed),
                    ..AppSnapshot::default()
                };
                (app.to_string(), snap)
            })
            .collect();
        for state in read(&self.channels).values() {
            let app = out.entry(state.channel.app().unwrap_or("").to_string()).or_default();
            app.channels += 1;
            app.subscriptions += state.subscribers.len();
        }
        out
    }

    /// Asks every connection to close with [`CloseReason::SHUTDOWN`].
    pub fn shutdown(&self) {
        self.shutdown.cancel();
        let open: Vec<_> = read(&self.connections).values().cloned().collect();
        for conn in open {
            conn.ask_to_close();
        }
    }

    /// Like [`shutdown`](Self::shutdown), every socket closed with `reason` (a node that
    /// drained asks its clients to reconnect elsewhere: 1012, Pusher 4200).
    pub fn shutdown_with(&self, reason: CloseReason) {
        self.shutdown.cancel();
        let open: Vec<_> = read(&self.connections).values().cloned().collect();
        for conn in open {
            conn.close(reason);
        }
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Starts draining: the node keeps serving, `/ready` answers 503 and HTTP responses
    /// ask for the connection to be closed (see [`is_draining`](Self::is_draining)).
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether the node is draining (or shutting down).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire) || self.is_shutting_down()
    }
}

/// Removes `id` from `channel`: `None` when it was not there, else the subscribers left
/// (the channel is forgotten at 0).
fn remove_subscriber(map: &mut HashMap<Arc<str>, ChannelState>, channel: &Channel, id: SocketId) -> Option<usize> {
    let state = map.get_mut(channel.name())?;
    state.subscribers.remove(&id)?;
    let remaining = state.subscribers.len();
    if remaining == 0 {
        map.remove(channel.name());
    }
    Some(remaining)
}

#[cfg(test)]
mod tests;
