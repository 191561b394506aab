//! Webhooks in Pusher's format: `POST {"time_ms", "events": [...]}` to each configured
//! URL, signed with the app's secret (`X-Pusher-Key`, `X-Pusher-Signature` = hex
//! HMAC-SHA256 of the body).
//!
//! Events come from the session core's lifecycle: `channel_occupied`, `channel_vacated`,
//! `member_added`, `member_removed` (after a grace delay, and not at all when the user is
//! back by then, so a page reload does not flap), `client_event`. In a cluster,
//! occupancy is counted in Redis (a set of nodes per channel), so `channel_occupied`
//! fires once when the first node gets a subscriber and `channel_vacated` once when the
//! last one loses its last (a node that dies is reaped by the others); member events are
//! once per cluster already (the presence store decides).
//!
//! Delivery never blocks fan-out: events go through bounded queues (full → counted as
//! dropped), one sender task per URL batches them, retries 5xx, 408, 429 and network
//! errors with back-off for `BROADCAST_WEBHOOK_RETRY_FOR`, then counts them as failed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Script;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Pattern;
use crate::channel::Channel;
use crate::cluster::redis::RedisBroker;
use crate::lifecycle::{Lifecycle, LifecycleEvent};
use crate::presence::Presence;
use crate::sync::lock;

/// Events one target's queue holds before new ones are dropped (and counted).
const QUEUE: usize = 10_000;
/// Most events in one request.
const BATCH: usize = 100;
/// How long a request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a cluster node looks for dead nodes' occupied channels.
const REAP_EVERY: Duration = Duration::from_secs(2);

/// The event names a target may ask for.
pub(crate) const EVENTS: [&str; 7] = [
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_event",
    "cache_miss",
    "emithub_channel_changed",
];

/// One webhook URL of an app (`[[apps.webhooks]]` in the apps file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTarget {
    /// Where to POST.
    pub url: String,
    /// Which events (empty: all).
    #[serde(default)]
    pub events: Vec<String>,
    /// Channel patterns, native spelling (empty: all), e.g. `orders.*`.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// Webhook settings (`BROADCAST_WEBHOOK_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `BROADCAST_WEBHOOK_URLS`: the environment app's URLs (signed with
    /// `PUSHER_APP_KEY`/`PUSHER_APP_SECRET`).
    pub urls: Vec<String>,
    /// `BROADCAST_WEBHOOK_EVENTS`: which events they get (empty: all).
    pub events: Vec<String>,
    /// `BROADCAST_WEBHOOK_RETRY_FOR`: how long a batch is retried, default 60 s.
    pub retry_for: Duration,
    /// `BROADCAST_WEBHOOK_MEMBER_DELAY`: how long `member_removed` waits, default 3 s.
    pub member_delay: Duration,
    /// `BROADCAST_WEBHOOK_ALLOW_PRIVATE`: no warning for URLs that point at loopback,
    /// private or link-local addresses (a receiver on the same host or network), default off.
    pub allow_private: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            events: Vec::new(),
            retry_for: Duration::from_secs(60),
            member_delay: Duration::from_secs(3),
            allow_private: false,
        }
    }
}

/// One event of a webhook body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct WebhookEvent {
    /// `channel_occupied`, `member_added`, ...
    pub name: &'static str,
    /// The channel, Pusher spelling (`private-orders.1`).
    pub channel: String,
    /// Member and client events: the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<crate::hub::Sender>,
    /// Client events: the event name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Client events: the data, JSON-encoded as a string (as Pusher sends it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Client events: the sender's socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_id: Option<String>,
    /// EmitHub changes: the channel's id, name and new status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    /// EmitHub changes: the channel's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_name: Option<String>,
    /// EmitHub changes: `Created`, `Active`, `Paused`, `Stopped` or `Deleted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip)]
    native: String,
    /// The app whose targets get it (`None`: the default app).
    #[serde(skip)]
    app: Option<String>,
}

impl WebhookEvent {
    fn channel(name: &'static str, channel: &Channel) -> Self {
        Self {
            name,
            channel: channel.pusher_name(),
            user_id: None,
            event: None,
            data: None,
            socket_id: None,
            channel_id: None,
            channel_name: None,
            status: None,
            native: channel.local_name().to_string(),
            app: channel.app().map(str::to_string),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    time_ms: i64,
    events: &'a [WebhookEvent],
}

/// What webhook delivery did, for stats and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct WebhookStats {
    /// Configured URLs.
    pub targets: usize,
    /// Events delivered (acknowledged with 2xx).
    pub delivered: u64,
    /// Requests that succeeded.
    pub requests: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// Events given up on after the retry time (or refused with 4xx).
    pub failed: u64,
    /// Events dropped because a queue was full.
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

struct Target {
    /// The app it belongs to (`None`: the default app).
    app: Option<String>,
    url: String,
    key: String,
    secret: String,
    events: Vec<String>,
    channels: Vec<Pattern>,
    queue: mpsc::Sender<WebhookEvent>,
}

impl Target {
    fn wants(&self, e: &WebhookEvent) -> bool {
        self.app == e.app
            && (self.events.is_empty() || self.events.iter().any(|n| n == e.name))
            && (self.channels.is_empty() || self.channels.iter().any(|p| p.matches(&e.native).is_some()))
    }
}

/// An app's webhook: its URL with the key and secret that sign it.
#[derive(Debug, Clone)]
pub(crate) struct SignedTarget {
    /// The target.
    pub target: WebhookTarget,
    /// `X-Pusher-Key`.
    pub key: String,
    /// Signs the body.
    pub secret: String,
    /// The app's channel namespace (`None`: the default app): only its channels' events.
    pub app: Option<String>,
}

const OCCUPY_LUA: &str = r"
local added = redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
if added == 1 and redis.call('SCARD', KEYS[1]) == 1 then return 1 end
return 0
";

const VACATE_LUA: &str = r"
local removed = redis.call('SREM', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[2])
if removed == 1 and redis.call('SCARD', KEYS[1]) == 0 then return 1 end
return 0
";

const REAP_LUA: &str = r"
local channels = redis.call('SMEMBERS', KEYS[1])
local empty = {}
for _, c in ipairs(channels) do
  local k = ARGV[2] .. c
  if redis.call('SREM', k, ARGV[1]) == 1 and redis.call('SCARD', k) == 0 then
    table.insert(empty, c)
  end
end
redis.call('DEL', KEYS[1])
return empty
";

/// The webhooks of one node.
pub(crate) struct Webhooks {
    hub: Arc<crate::hub::Hub>,
    targets: Vec<Arc<Target>>,
    counters: Arc<Counters>,
    cluster: Option<Arc<RedisBroker>>,
    presence: Presence,
    member_delay: Duration,
    retry_for: Duration,
    /// `BROADCAST_WEBHOOK_ALLOW_PRIVATE`: no warning for internal addresses.
    allow_private: bool,
    /// Removals waiting out the grace delay: (channel, user) → generation.
    pending: Mutex<HashMap<(String, String), u64>>,
    generation: AtomicU64,
    scripts: [Script; 3],
    receivers: Mutex<Vec<(Arc<Target>, mpsc::Receiver<WebhookEvent>)>>,
    /// Channels whose occupancy this node wrote for a `channel_occupied` it handled: the
    /// only ones a resync writes again. A channel whose event is still queued is left to
    /// the event, which would otherwise find this node already registered and stay silent.
    announced: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field(
                "targets",
                &self
                    .targets
                    .iter()
                    .map(|t| crate::net::shown_url(&t.url))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Webhooks for `targets`; `None` when there are none.
    pub(crate) fn new(
        targets: Vec<SignedTarget>,
        config: &WebhookConfig,
        hub: Arc<crate::hub::Hub>,
        presence: Presence,
        cluster: Option<Arc<RedisBroker>>,
    ) -> Result<Option<Arc<Self>>, String> {
        if targets.is_empty() {
            return Ok(None);
        }
        let mut built = Vec::new();
        let mut receivers = Vec::new();
        for t in targets {
            if let Some(bad) = t.target.events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
                return Err(format!("unknown webhook event {bad:?}; one of {}", EVENTS.join(", ")));
            }
            if !(t.target.url.starts_with("http://") || t.target.url.starts_with("https://")) {
                return Err(format!(
                    "webhook URL {:?} must start with http:// or https://",
                    t.target.url
                ));
            }
            let channels = t
                .target
                .channels
                .iter()
                .map(|p| Pattern::parse(p))
                .collect::<Result<Vec<_>, _>>()?;
            let (tx, rx) = mpsc::channel(QUEUE);
            let target = Arc::new(Target {
                app: t.app,
                url: t.target.url,
                key: t.key,
                secret: t.secret,
                events: t.target.events,
                channels,
                queue: tx,
            });
            receivers.push((target.clone(), rx));
            built.push(target);
        }
        Ok(Some(Arc::new(Self {
            hub,
            targets: built,
            counters: Arc::default(),
            cluster,
            presence,
            member_delay: config.member_delay,
            retry_for: config.retry_for,
            allow_private: config.allow_private,
            pending: Mutex::default(),
            generation: AtomicU64::new(0),
            scripts: [Script::new(OCCUPY_LUA), Script::new(VACATE_LUA), Script::new(REAP_LUA)],
            receivers: Mutex::new(receivers),
            announced: Mutex::default(),
        })))
    }

    /// What delivery did so far.
    pub(crate) fn stats(&self) -> WebhookStats {
        let c = &self.counters;
        WebhookStats {
            targets: self.targets.len(),
            delivered: c.delivered.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }

    /// Watches `lifecycle` (and EmitHub's `changes`) and delivers until `stop`.
    pub(crate) fn start(
        self: &Arc<Self>,
        lifecycle: &Lifecycle,
        mut changes: tokio::sync::broadcast::Receiver<crate::lifecycle::ChannelChange>,
        stop: CancellationToken,
        tasks: &TaskTracker,
    ) {
        let this = self.clone();
        let watching = stop.clone();
        tasks.spawn(async move {
            loop {
                let change = tokio::select! {
                    _ = watching.cancelled() => return,
                    c = changes.recv() => match c {
                        Ok(c) => c,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            this.counters.dropped.fetch_add(n, Ordering::Relaxed);
                            continue;
                        }
                        Err(_) => return,
                    },
                };
                if let Ok(channel) = Channel::parse(&change.channel) {
                    let mut e = WebhookEvent::channel("emithub_channel_changed", &channel);
                    e.channel_id = Some(change.id);
                    e.channel_name = Some(change.name);
                    e.status = Some(change.status);
                    this.emit(e);
                }
            }
        });
        // A receiver's redirect is not followed (it could point anywhere, and would carry
        // the signed body there); no Referer either (it would carry the URL's secrets).
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .build()
            .unwrap_or_default();
        if !self.allow_private {
            let urls: Vec<String> = self.targets.iter().map(|t| t.url.clone()).collect();
            tasks.spawn(warn_internal(urls));
        }
        for (target, rx) in std::mem::take(&mut *lock(&self.receivers)) {
            let counters = self.counters.clone();
            let (http, stop, retry_for) = (http.clone(), stop.clone(), self.retry_for);
            tasks.spawn(send_loop(target, rx, http, counters, retry_for, stop));
        }
        let this = self.clone();
        lifecycle.observe(65_536, LifecycleEvent::notable, stop.clone(), tasks, move |event| {
            let this = this.clone();
            async move { this.observe(event).await }
        });
        if let Some(broker) = &self.cluster {
            // Redis restarted or was unreachable: what it knew of this node's occupied
            // channels may be gone; write it again (no event: nothing changed here).
            let mut resyncs = broker.resync_requests();
            let (this, stop) = (self.clone(), stop.clone());
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        changed = resyncs.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            this.reregister().await;
                        }
                    }
                }
            });
        }
        if self.cluster.is_some() {
            let this = self.clone();
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(REAP_EVERY);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => this.reap().await,
                    }
                }
            });
        }
    }

    /// A subscriber of cache channel `channel` found no event to get (`cache_miss`).
    pub(crate) fn cache_miss(&self, channel: &Channel) {
        self.emit(WebhookEvent::channel("cache_miss", channel));
    }

    fn emit(&self, event: WebhookEvent) {
        for t in &self.targets {
            if t.wants(&event) && t.queue.try_send(event.clone()).is_err() {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn observe(self: &Arc<Self>, event: LifecycleEvent) {
        match event {
            LifecycleEvent::ChannelOccupied { channel } => {
                let first = self.cluster_says(0, &channel).await;
                lock(&self.announced).insert(channel.name().to_string());
                if first {
                    self.emit(WebhookEvent::channel("channel_occupied", &channel));
                }
            }
            LifecycleEvent::ChannelVacated { channel } => {
                lock(&self.announced).remove(channel.name());
                if self.cluster_says(1, &channel).await {
                    self.emit(WebhookEvent::channel("channel_vacated", &channel));
                }
            }
            LifecycleEvent::MemberAdded { channel, member } => {
                let key = (channel.name().to_string(), member.user_id.clone());
                // Back within the grace delay: neither the removal nor this addition.
                if lock(&self.pending).remove(&key).is_some() {
                    return;
                }
                let mut e = WebhookEvent::channel("member_added", &channel);
                e.user_id = Some(member.id().sender());
                self.emit(e);
            }
            LifecycleEvent::MemberRemoved { channel, member } => {
                let key = (channel.name().to_string(), member.user_id.clone());
                let generation = self.generation.fetch_add(1, Ordering::Relaxed);
                lock(&self.pending).insert(key.clone(), generation);
                let this = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(this.member_delay).await;
                    let still = {
                        let mut pending = lock(&this.pending);
                        match pending.get(&key) {
                            Some(g) if *g == generation => pending.remove(&key).is_some(),
                            _ => false,
                        }
                    };
                    if !still {
                        return;
                    }
                    // Back on another node meanwhile (a cluster): no removal either.
                    if let Ok(members) = this.presence.members(channel.name()).await {
                        if members.iter().any(|m| m.user_id == member.user_id) {
                            return;
                        }
                    }
                    let mut e = WebhookEvent::channel("member_removed", &channel);
                    e.user_id = Some(member.id().sender());
                    this.emit(e);
                });
            }
            LifecycleEvent::ClientEvent {
                channel,
                event,
                socket,
                user,
                data,
            } => {
                let mut e = WebhookEvent::channel("client_event", &channel);
                e.event = Some(event.to_string());
                e.data = Some(crate::hub::payload_text(&data, None).into_owned());
                e.socket_id = Some(socket.to_string());
                e.user_id = user;
                self.emit(e);
            }
            LifecycleEvent::ConnectionOpened { .. }
            | LifecycleEvent::ConnectionClosed { .. }
            | LifecycleEvent::SubscriptionCount { .. } => {}
        }
    }

    /// One node: always. A cluster: whether this node's change is the cluster's first
    /// occupant (`script` 0) or its last (`script` 1). When Redis cannot say, the event is
    /// sent (a duplicate is better than a loss).
    async fn cluster_says(&self, script: usize, channel: &Channel) -> bool {
        match self.occupancy(script, channel).await {
            Ok(first_or_last) => first_or_last,
            Err(e) => {
                tracing::warn!(channel = %channel, error = %e, "webhook occupancy unknown (Redis); sending the event");
                true
            }
        }
    }

    /// Runs occupancy `script` for this node and `channel` (always true on one node).
    async fn occupancy(&self, script: usize, channel: &Channel) -> Result<bool, crate::backend::BackendError> {
        let Some(broker) = &self.cluster else { return Ok(true) };
        let link = broker.link();
        let mut invocation = self.scripts[script].key(link.key(&format!("webhooks:occupancy:{}", channel.name())));
        invocation
            .key(link.key(&format!("webhooks:node:{}", link.node_id())))
            .arg(link.node_id())
            .arg(channel.name());
        let n: i64 = link
            .exec(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(n == 1)
    }

    /// Writes this node's occupied channels to Redis again (those whose
    /// `channel_occupied` was handled; see `announced`).
    async fn reregister(&self) {
        let occupied = self.hub.snapshot().channels;
        let channels: Vec<String> = lock(&self.announced)
            .iter()
            .filter(|c| occupied.contains_key(*c))
            .cloned()
            .collect();
        let mut restored = 0;
        for name in channels {
            let Ok(channel) = Channel::from_key(&name) else {
                continue;
            };
            // Redis has just come back: its circuit breaker may still be cooling down.
            for attempt in 0..20 {
                match self.occupancy(0, &channel).await {
                    Ok(_) => {
                        restored += 1;
                        break;
                    }
                    Err(e) if attempt == 19 => {
                        tracing::warn!(channel = %name, error = %e, "could not write webhook occupancy again");
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
        }
        tracing::info!(channels = restored, "webhook occupancy written to Redis again");
    }

    /// Sends `channel_vacated` for the channels only dead nodes occupied.
    async fn reap(&self) {
        let Some(broker) = &self.cluster else { return };
        let link = broker.link();
        let prefix = link.key("webhooks:node:");
        let pattern = format!("{}*", crate::cluster::redis::escape_glob(&prefix));
        let prefix_key = prefix.clone();
        let keys: Vec<String> = match link
            .exec(|mut c| async move { c.scan_keys(&pattern, &prefix_key).await })
            .await
        {
            Ok(keys) => keys,
            Err(_) => return,
        };
        for key in keys {
            let Some(node) = key.strip_prefix(&prefix).map(str::to_string) else {
                continue;
            };
            if node == link.node_id() {
                continue;
            }
            let alive_key = link.key(&format!("node:{node}"));
            let alive: bool = match link
                .exec(|mut c| async move { redis::AsyncCommands::exists(&mut c, &alive_key).await })
                .await
            {
                Ok(a) => a,
                Err(_) => return,
            };
            if alive {
                continue;
            }
            let mut invocation = self.scripts[2].key(&key);
            invocation.arg(&node).arg(link.key("webhooks:occupancy:"));
            let emptied: Vec<String> = match link
                .exec(|mut c| async move { invocation.invoke_async(&mut c).await })
                .await
            {
                Ok(v) => v,
                Err(_) => return,
            };
            for name in emptied {
                if let Ok(channel) = Channel::from_key(&name) {
                    tracing::info!(%node, channel = %name, "a dead node's channel is vacated");
                    self.emit(WebhookEvent::channel("channel_vacated", &channel));
                }
            }
        }
    }
}

mod delivery;
use delivery::{send_loop, warn_internal};

#[cfg(test)]
mod tests;
