//! The Redis broker: pub/sub between nodes, node heartbeats, cluster stats, and the
//! Redis [`PresenceStore`].
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
//! A node that dies without saying goodbye stops refreshing its key; within the TTL plus
//! one janitor period (≤ 10 s) every live node's janitor removes its sockets, and the
//! users that had no other socket get `member_removed`. The scripts touch keys they
//! compute, so this needs a standalone Redis (or Sentinel), not Redis Cluster.
//!
//! Redis is not the only copy of presence: each node remembers its live members and the
//! leaves it could not write. After it resubscribes (Redis restarted, or was unreachable)
//! or finds its own liveness key gone, it beats at once and then rewrites its members and
//! removes its stale entries in one script, announcing `member_added` for users Redis had
//! lost and `member_removed` for users who left meanwhile.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, RedisResult, Script};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::breaker::{BreakerState, CircuitBreaker};
use super::{Broker, Fanout};
use crate::broadcasting::BroadcastError;
use crate::channel::Channel;
use crate::config::{Config, ConfigError};
use crate::hub::{now_rfc3339, EnvelopeKind, Hub, SocketId};
use crate::presence::{Member, PresenceError, PresenceStore, MEMBER_ADDED, MEMBER_REMOVED};
use crate::sync::lock;

/// How often a node refreshes its liveness key.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a node's liveness key lives without refresh.
pub const NODE_TTL: Duration = Duration::from_secs(8);
/// How often each node looks for dead nodes' presence entries.
pub const JANITOR: Duration = Duration::from_secs(2);
/// How often the subscription connection is checked with PING.
pub const SUBSCRIPTION_PING: Duration = Duration::from_secs(3);
/// Time limit of one Redis command or connection attempt.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive failures that open the circuit.
pub const BREAKER_THRESHOLD: u32 = 3;
/// How long the circuit stays open before a probe.
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(2);

const NAME: &str = "redis";

/// A message between nodes, and the format Laravel's Redis broadcaster publishes
/// (`{"event","data","socket"}`; `node` and `kind` are rustaxum's additions).
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    event: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    socket: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<std::borrow::Cow<'a, str>>,
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
}

/// The Redis broker of one node.
pub struct RedisBroker {
    node_id: String,
    prefix: String,
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    breaker: CircuitBreaker,
    subscribed: AtomicBool,
    /// Bumped on every successful (re)subscription.
    subscription_epoch: tokio::sync::watch::Sender<u64>,
    /// Bumped when what this node keeps in Redis may be lost or stale: after a
    /// resubscription (Redis restarted or was unreachable), or when the node's own
    /// liveness key had vanished (other nodes may have removed its members).
    resync_requests: tokio::sync::watch::Sender<u64>,
    counters: Counters,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("node_id", &self.node_id)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(reason: impl std::fmt::Display) -> BroadcastError {
    BroadcastError::Unavailable {
        driver: NAME.into(),
        reason: reason.to_string(),
    }
}

impl RedisBroker {
    /// A broker for the configured Redis; connects lazily, so a Redis that is down at
    /// start-up only makes the node degraded.
    pub fn new(config: &Config) -> Result<Arc<Self>, ConfigError> {
        let url = config.redis.connection_url();
        let client = redis::Client::open(url.as_str()).map_err(|e| ConfigError::Invalid {
            var: if config.redis.url.is_some() {
                "REDIS_URL"
            } else {
                "BROADCAST_REDIS_HOST"
            },
            value: config.redis.url.clone().unwrap_or_else(|| config.redis.host.clone()),
            reason: format!("not a usable Redis address: {e}"),
        })?;
        Ok(Arc::new(Self {
            node_id: format!("{:016x}", rand::random::<u64>()),
            prefix: config.redis.channels_prefix.clone(),
            client,
            conn: tokio::sync::Mutex::new(None),
            breaker: CircuitBreaker::new(BREAKER_THRESHOLD, BREAKER_COOLDOWN),
            subscribed: AtomicBool::new(false),
            subscription_epoch: tokio::sync::watch::Sender::new(0),
            resync_requests: tokio::sync::watch::Sender::new(0),
            counters: Counters::default(),
        }))
    }

    /// This node's id in the cluster.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    fn key(&self, rest: &str) -> String {
        format!("{}rustaxum:{rest}", self.prefix)
    }

    async fn connection(&self) -> Result<ConnectionManager, BroadcastError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            COMMAND_TIMEOUT * 2,
            self.client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| unavailable("connecting timed out"))?
        .map_err(unavailable)?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Runs one Redis operation behind the circuit breaker and a time limit.
    async fn exec<T, F, Fut>(&self, op: F) -> Result<T, BroadcastError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let Some(permit) = self.breaker.allow() else {
            return Err(unavailable("circuit open after repeated failures; retrying shortly"));
        };
        let result = match self.connection().await {
            Ok(conn) => match tokio::time::timeout(COMMAND_TIMEOUT, op(conn)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(unavailable(e)),
                Err(_) => Err(unavailable("command timed out")),
            },
            Err(e) => Err(e),
        };
        match &result {
            Ok(_) => permit.success(),
            Err(_) => permit.failure(),
        }
        result
    }

    /// Starts the subscriber, heartbeat and janitor tasks; they stop when `stop` is cancelled.
    pub fn start(self: &Arc<Self>, fanout: Fanout, stop: CancellationToken, tasks: &TaskTracker) {
        tasks.spawn(self.clone().subscribe_loop(fanout.hub().clone(), stop.clone()));
        tasks.spawn(self.clone().heartbeat_loop(fanout.hub().clone(), stop.clone()));
        tasks.spawn(self.clone().janitor_loop(fanout, stop));
    }

    async fn subscribe_loop(self: Arc<Self>, hub: Arc<Hub>, stop: CancellationToken) {
        let pattern = format!("{}*", escape_glob(&self.prefix));
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() {
            let connected = tokio::time::timeout(COMMAND_TIMEOUT * 2, async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.psubscribe(&pattern).await?;
                RedisResult::Ok(pubsub)
            })
            .await;
            if let Ok(Ok(pubsub)) = connected {
                self.subscribed.store(true, Ordering::Release);
                self.counters.subscriptions.fetch_add(1, Ordering::Relaxed);
                self.subscription_epoch.send_modify(|n| *n = n.wrapping_add(1));
                tracing::info!(node = %self.node_id, pattern = %pattern, "subscribed to Redis");
                backoff = Duration::from_millis(100);
                let (mut sink, mut messages) = pubsub.split();
                // A Redis that stops answering without closing the connection (a frozen
                // process, a silent partition) is caught by a periodic PING.
                let mut keepalive = tokio::time::interval(SUBSCRIPTION_PING);
                keepalive.tick().await;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        msg = messages.next() => match msg {
                            Some(msg) => self.deliver(&hub, &msg),
                            None => break,
                        },
                        _ = keepalive.tick() => {
                            let pong = tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await;
                            if !matches!(pong, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                self.subscribed.store(false, Ordering::Release);
                self.counters.subscription_losses.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %self.node_id, "lost the Redis subscription; reconnecting");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    fn control_channel(&self) -> String {
        // ':' cannot appear in a channel name, so this never collides with one.
        self.key("control")
    }

    fn control(&self, hub: &Hub, payload: &[u8]) {
        let Ok(msg) = serde_json::from_slice::<Value>(payload) else {
            self.counters.invalid.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if msg["node"].as_str() == Some(self.node_id.as_str()) {
            return;
        }
        if let ("terminate_user", Some(user)) = (msg["op"].as_str().unwrap_or(""), msg["user_id"].as_str()) {
            let closed = hub.terminate_user(user);
            tracing::info!(user, closed, "terminated user connections on request of another node");
        }
    }

    fn deliver(&self, hub: &Hub, msg: &redis::Msg) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let name = msg.get_channel_name();
        if name == self.control_channel() {
            return self.control(hub, msg.get_payload_bytes());
        }
        let Some(channel) = name
            .strip_prefix(self.prefix.as_str())
            .and_then(|n| Channel::parse(n).ok())
        else {
            self.counters.invalid.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let payload = msg.get_payload_bytes();
        let Ok(wire) = serde_json::from_slice::<Wire<'_>>(payload) else {
            self.counters.invalid.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(channel = %channel, "ignoring a Redis message that is not {{\"event\",\"data\"}} JSON");
            return;
        };
        if wire.node.as_deref() == Some(self.node_id.as_str()) {
            self.counters.skipped_own.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let except = match &wire.socket {
            Some(Value::String(s)) => s.parse::<SocketId>().ok(),
            _ => None,
        };
        let kind = match wire.kind.as_deref() {
            Some("member_added") => EnvelopeKind::MemberAdded,
            Some("member_removed") => EnvelopeKind::MemberRemoved,
            _ => EnvelopeKind::Event,
        };
        let data: Arc<RawValue> = match wire.data {
            Some(d) => Arc::from(d.to_owned()),
            None => match serde_json::value::to_raw_value(&json!({})) {
                Ok(d) => Arc::from(d),
                Err(_) => return,
            },
        };
        hub.publish_kind(&channel, wire.event.as_ref().into(), data, except, kind, now_rfc3339());
    }

    async fn heartbeat_loop(self: Arc<Self>, hub: Arc<Hub>, stop: CancellationToken) {
        let node_key = self.key(&format!("node:{}", self.node_id));
        let nodes_key = self.key("nodes");
        let mut epochs = self.subscription_epoch.subscribe();
        let mut owe_resync = false;
        loop {
            let snapshot =
                serde_json::to_string(&json!({"node": self.node_id, "stats": hub.snapshot()})).unwrap_or_default();
            let (nk, nsk, id) = (node_key.clone(), nodes_key.clone(), self.node_id.clone());
            let ttl = NODE_TTL.as_millis() as u64;
            let beat = self
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
        let _ = self.exec(|mut c| async move { c.del::<_, ()>(&node_key).await }).await;
    }

    async fn janitor_loop(self: Arc<Self>, fanout: Fanout, stop: CancellationToken) {
        let script = Script::new(CLEANUP_LUA);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(JANITOR) => {}
            }
            let channels_key = self.key("presence:channels");
            let ck = channels_key.clone();
            let Ok(channels) = self
                .exec(|mut c| async move { c.smembers::<_, Vec<String>>(&ck).await })
                .await
            else {
                continue;
            };
            for name in channels {
                let Ok(channel) = Channel::parse(&name) else {
                    continue;
                };
                let members_key = self.key(&format!("presence:{name}:members"));
                let sockets_prefix = self.key(&format!("presence:{name}:sockets:"));
                let node_prefix = self.key("node:");
                // Never this node: it is alive, even if its key is momentarily missing.
                let node_id = self.node_id.clone();
                let (s, ck, n) = (&script, channels_key.clone(), name.clone());
                let removed: Vec<String> = match self
                    .exec(|mut c| async move {
                        s.key(members_key)
                            .key(ck)
                            .arg(n)
                            .arg(sockets_prefix)
                            .arg(node_prefix)
                            .arg(node_id)
                            .invoke_async(&mut c)
                            .await
                    })
                    .await
                {
                    Ok(r) => r,
                    Err(_) => continue,
                };
                for member in removed {
                    let Ok(raw) = RawValue::from_string(member) else {
                        continue;
                    };
                    tracing::info!(channel = %channel, member = raw.get(), "removing a member of a node that stopped");
                    if let Err(e) = fanout
                        .publish(
                            &channel,
                            MEMBER_REMOVED,
                            Arc::from(raw),
                            None,
                            EnvelopeKind::MemberRemoved,
                        )
                        .await
                    {
                        tracing::warn!(error = %e, "announcing a removed member failed");
                    }
                }
            }
        }
    }

    /// Stats summed over live nodes: `{"scope":"cluster","nodes","connections","channels"}`.
    pub async fn cluster_stats(&self) -> Result<Value, BroadcastError> {
        let nodes_key = self.key("nodes");
        let prefix = self.key("node:");
        let (ids, values): (Vec<String>, Vec<Option<String>>) = self
            .exec(|mut c| async move {
                let ids: Vec<String> = c.smembers(&nodes_key).await?;
                let keys: Vec<String> = ids.iter().map(|id| format!("{prefix}{id}")).collect();
                let values: Vec<Option<String>> = if keys.is_empty() {
                    Vec::new()
                } else {
                    c.mget(&keys).await?
                };
                let dead: Vec<&String> = ids
                    .iter()
                    .zip(&values)
                    .filter(|(_, v)| v.is_none())
                    .map(|(id, _)| id)
                    .collect();
                if !dead.is_empty() {
                    c.srem::<_, _, ()>(&nodes_key, dead).await?;
                }
                Ok((ids, values))
            })
            .await?;
        let mut connections = 0u64;
        let mut channels = serde_json::Map::new();
        let mut live = Vec::new();
        let mut messages = json!({"published": 0, "delivered": 0, "received": 0});
        for (id, value) in ids.iter().zip(values) {
            let Some(stats) = value.and_then(|v| serde_json::from_str::<Value>(&v).ok()) else {
                continue;
            };
            live.push(id.clone());
            let s = &stats["stats"];
            connections += s["connections"].as_u64().unwrap_or(0);
            for key in ["published", "delivered", "received"] {
                messages[key] = json!(messages[key].as_u64().unwrap_or(0) + s["messages"][key].as_u64().unwrap_or(0));
            }
            if let Some(map) = s["channels"].as_object() {
                for (name, c) in map {
                    let entry = channels
                        .entry(name.clone())
                        .or_insert_with(|| json!({"kind": c["kind"], "subscribers": 0}));
                    entry["subscribers"] =
                        json!(entry["subscribers"].as_u64().unwrap_or(0) + c["subscribers"].as_u64().unwrap_or(0));
                }
            }
        }
        live.sort();
        Ok(json!({
            "scope": "cluster",
            "nodes": live,
            "connections": connections,
            "channels": channels,
            "messages": messages,
        }))
    }

    /// Health and counters for `/ready` and the stats endpoint.
    pub fn status(&self) -> Value {
        let c = &self.counters;
        json!({
            "node_id": self.node_id,
            "subscribed": self.subscribed.load(Ordering::Acquire),
            "circuit": self.breaker.state(),
            "circuit_opened_total": self.breaker.opened_total(),
            "published": c.published.load(Ordering::Relaxed),
            "publish_failures": c.publish_failures.load(Ordering::Relaxed),
            "received": c.received.load(Ordering::Relaxed),
            "skipped_own": c.skipped_own.load(Ordering::Relaxed),
            "invalid": c.invalid.load(Ordering::Relaxed),
            "subscriptions": c.subscriptions.load(Ordering::Relaxed),
            "subscription_losses": c.subscription_losses.load(Ordering::Relaxed),
        })
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(
        &self,
        channel: &Channel,
        event: &str,
        data: &RawValue,
        except: Option<SocketId>,
        kind: &EnvelopeKind,
    ) -> Result<(), BroadcastError> {
        let wire = Wire {
            event: event.into(),
            data: Some(data),
            socket: except.map(|s| Value::String(s.to_string())),
            node: Some(self.node_id.as_str().into()),
            kind: match kind {
                EnvelopeKind::Event => None,
                EnvelopeKind::MemberAdded => Some("member_added".into()),
                EnvelopeKind::MemberRemoved => Some("member_removed".into()),
            },
        };
        let payload = serde_json::to_string(&wire)?;
        let target = format!("{}{}", self.prefix, channel.name());
        let result = self
            .exec(|mut c| async move { c.publish::<_, _, ()>(&target, payload).await })
            .await;
        match &result {
            Ok(()) => self.counters.published.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counters.publish_failures.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    async fn terminate_user(&self, user_id: &str) -> Result<(), BroadcastError> {
        let payload = json!({"op": "terminate_user", "user_id": user_id, "node": self.node_id}).to_string();
        let target = self.control_channel();
        self.exec(|mut c| async move { c.publish::<_, _, ()>(&target, payload).await })
            .await
    }

    /// Subscribed, and the circuit closed: a half-open circuit has not shown yet that
    /// Redis answers again, so `/ready` keeps saying degraded until a probe succeeds.
    fn healthy(&self) -> bool {
        self.subscribed.load(Ordering::Acquire) && self.breaker.state() == BreakerState::Closed
    }
}

fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

const JOIN_LUA: &str = r"
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[4])
return redis.call('SCARD', KEYS[2])
";

const LEAVE_LUA: &str = r"
if redis.call('SREM', KEYS[2], ARGV[2]) == 0 then return false end
if redis.call('SCARD', KEYS[2]) > 0 then return false end
local m = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[3]) end
return m
";

const CLEANUP_LUA: &str = r"
local removed = {}
for _, user in ipairs(redis.call('HKEYS', KEYS[1])) do
  local skey = ARGV[2] .. user
  for _, e in ipairs(redis.call('SMEMBERS', skey)) do
    local node = string.match(e, '^([^|]+)|')
    if node and node ~= ARGV[4] and redis.call('EXISTS', ARGV[3] .. node) == 0 then
      redis.call('SREM', skey, e)
    end
  end
  if redis.call('SCARD', skey) == 0 then
    local m = redis.call('HGET', KEYS[1], user)
    redis.call('HDEL', KEYS[1], user)
    if m then table.insert(removed, m) end
  end
end
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[1]) end
return removed
";

/// This node's presence, written back after Redis lost it. KEYS: members hash, channels
/// set. ARGV: channel, sockets key prefix, this node's entry prefix (`node|`), JSON array
/// of live sockets `{u: user, m: member JSON, e: entry}`, JSON array of users whose leave
/// was not written. Returns (members added, members removed, those users still present).
const RESYNC_LUA: &str = r"
local live = cjson.decode(ARGV[4])
local orphans = cjson.decode(ARGV[5])
local wanted = {}
for _, s in ipairs(live) do wanted[s.e] = true end
local users = {}
for _, u in ipairs(redis.call('HKEYS', KEYS[1])) do users[u] = true end
for _, u in ipairs(orphans) do users[u] = true end
local removed = {}
for u, _ in pairs(users) do
  local skey = ARGV[2] .. u
  for _, e in ipairs(redis.call('SMEMBERS', skey)) do
    if string.sub(e, 1, #ARGV[3]) == ARGV[3] and not wanted[e] then redis.call('SREM', skey, e) end
  end
  if redis.call('SCARD', skey) == 0 then
    local m = redis.call('HGET', KEYS[1], u)
    if m then
      redis.call('HDEL', KEYS[1], u)
      table.insert(removed, m)
    end
  end
end
local added = {}
for _, s in ipairs(live) do
  local skey = ARGV[2] .. s.u
  if redis.call('SCARD', skey) == 0 then table.insert(added, s.m) end
  redis.call('SADD', skey, s.e)
  redis.call('HSET', KEYS[1], s.u, s.m)
end
if redis.call('HLEN', KEYS[1]) > 0 then
  redis.call('SADD', KEYS[2], ARGV[1])
else
  redis.call('SREM', KEYS[2], ARGV[1])
end
local present = {}
for _, u in ipairs(orphans) do
  if redis.call('HEXISTS', KEYS[1], u) == 1 then table.insert(present, u) end
end
return {added, removed, present}
";

/// Presence shared by every node through Redis (see the module docs for the keys).
///
/// Redis is not the only copy: each node remembers its own live members, and leaves that
/// could not reach Redis. Whenever the node (re)subscribes, it writes its live members back
/// and removes its stale entries ([`resync`](Self::resync)), announcing the difference, so a
/// Redis restart or outage loses no member and forgets no departure.
#[derive(Debug)]
pub struct RedisPresence {
    broker: Arc<RedisBroker>,
    join: Script,
    leave: Script,
    resync: Script,
    /// This node's live members: channel → socket → member.
    local: std::sync::Mutex<HashMap<String, HashMap<SocketId, Member>>>,
    /// Members whose leave could not be written to Redis: channel → user → member.
    orphans: std::sync::Mutex<HashMap<String, HashMap<String, Member>>>,
    /// Joins and leaves share it; a resync takes it alone, so none interleaves with it.
    resyncing: tokio::sync::RwLock<()>,
}

impl RedisPresence {
    /// Presence over `broker`'s Redis.
    pub fn new(broker: Arc<RedisBroker>) -> Arc<Self> {
        Arc::new(Self {
            broker,
            join: Script::new(JOIN_LUA),
            leave: Script::new(LEAVE_LUA),
            resync: Script::new(RESYNC_LUA),
            local: Default::default(),
            orphans: Default::default(),
            resyncing: Default::default(),
        })
    }

    /// Re-registers this node's members whenever the broker asks (after it resubscribed to
    /// Redis, or found its liveness key gone), announcing through `fanout`; stops when
    /// `stop` is cancelled.
    pub fn start(self: &Arc<Self>, fanout: Fanout, stop: CancellationToken, tasks: &TaskTracker) {
        let this = self.clone();
        let mut requests = self.broker.resync_requests.subscribe();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = requests.changed() => if changed.is_err() { return },
                }
                // Redis may answer subscriptions before commands (or the circuit may still
                // be open): retry until it takes, or until stopped.
                let mut backoff = Duration::from_millis(100);
                while let Err(e) = this.resync(&fanout).await {
                    tracing::warn!(error = %e, "re-registering presence members failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BREAKER_COOLDOWN);
                }
            }
        });
    }

    /// Makes Redis agree with this node about this node's members, then announces
    /// `member_added` for users Redis had lost and `member_removed` for users who left
    /// while Redis could not be told.
    pub async fn resync(&self, fanout: &Fanout) -> Result<(), PresenceError> {
        let _alone = self.resyncing.write().await;
        let mut channels: Vec<String> = lock(&self.local).keys().cloned().collect();
        channels.extend(lock(&self.orphans).keys().cloned());
        channels.sort();
        channels.dedup();
        for name in channels {
            let Ok(channel) = Channel::parse(&name) else { continue };
            let live: Vec<Value> = lock(&self.local)
                .get(&name)
                .map(|sockets| {
                    sockets
                        .iter()
                        .map(|(socket, m)| {
                            let member = serde_json::to_string(m).unwrap_or_default();
                            json!({"u": m.user_id, "m": member, "e": self.entry(*socket)})
                        })
                        .collect()
                })
                .unwrap_or_default();
            let orphans: Vec<Member> = lock(&self.orphans)
                .get(&name)
                .map(|users| users.values().cloned().collect())
                .unwrap_or_default();
            let orphan_ids: Vec<&str> = orphans.iter().map(|m| m.user_id.as_str()).collect();
            let (members, _, channels_key) = self.keys(&name, "");
            let args = [
                name.clone(),
                self.broker.key(&format!("presence:{name}:sockets:")),
                format!("{}|", self.broker.node_id),
                Value::Array(live).to_string(),
                json!(orphan_ids).to_string(),
            ];
            let script = &self.resync;
            let (added, removed, present): (Vec<String>, Vec<String>, Vec<String>) = self
                .broker
                .exec(|mut c| async move {
                    let mut call = script.key(members);
                    call.key(channels_key);
                    for arg in args {
                        call.arg(arg);
                    }
                    call.invoke_async(&mut c).await
                })
                .await
                .map_err(presence_error)?;
            lock(&self.orphans).remove(&name);
            let mut gone: Vec<Member> = removed.iter().filter_map(|m| parse_member(m)).collect();
            for orphan in orphans {
                let announced = gone.iter().any(|m| m.user_id == orphan.user_id);
                if !announced && !present.contains(&orphan.user_id) {
                    gone.push(orphan);
                }
            }
            for member in gone {
                announce(fanout, &channel, MEMBER_REMOVED, &member, EnvelopeKind::MemberRemoved).await;
            }
            for member in added.iter().filter_map(|m| parse_member(m)) {
                announce(fanout, &channel, MEMBER_ADDED, &member, EnvelopeKind::MemberAdded).await;
            }
        }
        Ok(())
    }

    fn keys(&self, channel: &str, user_id: &str) -> (String, String, String) {
        (
            self.broker.key(&format!("presence:{channel}:members")),
            self.broker.key(&format!("presence:{channel}:sockets:{user_id}")),
            self.broker.key("presence:channels"),
        )
    }

    fn entry(&self, socket: SocketId) -> String {
        format!("{}|{socket}", self.broker.node_id)
    }

    /// Runs a presence script with KEYS = (members, the user's sockets, channels) and `args`.
    async fn run<T, const N: usize>(
        &self,
        script: &Script,
        channel: &str,
        user_id: &str,
        args: [String; N],
    ) -> Result<T, PresenceError>
    where
        T: redis::FromRedisValue + Send,
    {
        let (members, sockets, channels) = self.keys(channel, user_id);
        self.broker
            .exec(|mut c| async move {
                let mut call = script.key(members);
                call.key(sockets).key(channels);
                for arg in args {
                    call.arg(arg);
                }
                call.invoke_async(&mut c).await
            })
            .await
            .map_err(presence_error)
    }
}

async fn announce(fanout: &Fanout, channel: &Channel, event: &str, member: &Member, kind: EnvelopeKind) {
    let Ok(raw) = serde_json::value::to_raw_value(member) else {
        return;
    };
    if let Err(e) = fanout.publish(channel, event, Arc::from(raw), None, kind).await {
        tracing::warn!(channel = %channel, error = %e, "announcing a presence change failed");
    }
}

fn presence_error(e: BroadcastError) -> PresenceError {
    PresenceError(e.to_string())
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn join(&self, channel: &str, member: &Member, socket: SocketId) -> Result<bool, PresenceError> {
        let _shared = self.resyncing.read().await;
        let json = serde_json::to_string(member).map_err(|e| PresenceError(e.to_string()))?;
        let args = [member.user_id.clone(), json, self.entry(socket), channel.to_string()];
        let count: u64 = self.run(&self.join, channel, &member.user_id, args).await?;
        lock(&self.local)
            .entry(channel.to_string())
            .or_default()
            .insert(socket, member.clone());
        if let Some(users) = lock(&self.orphans).get_mut(channel) {
            users.remove(&member.user_id);
        }
        Ok(count == 1)
    }

    async fn leave(&self, channel: &str, user_id: &str, socket: SocketId) -> Result<Option<Member>, PresenceError> {
        let _shared = self.resyncing.read().await;
        let mine = {
            let mut local = lock(&self.local);
            let member = local.get_mut(channel).and_then(|sockets| sockets.remove(&socket));
            if local.get(channel).is_some_and(HashMap::is_empty) {
                local.remove(channel);
            }
            member
        };
        let args = [user_id.to_string(), self.entry(socket), channel.to_string()];
        match self.run::<Option<String>, 3>(&self.leave, channel, user_id, args).await {
            Ok(removed) => Ok(removed.and_then(|m| parse_member(&m))),
            Err(e) => {
                // Redis will hear of it at the next resync; the others get member_removed then.
                if let Some(member) = mine {
                    lock(&self.orphans)
                        .entry(channel.to_string())
                        .or_default()
                        .insert(member.user_id.clone(), member);
                }
                Err(e)
            }
        }
    }

    async fn members(&self, channel: &str) -> Result<Vec<Member>, PresenceError> {
        let key = self.broker.key(&format!("presence:{channel}:members"));
        let values: Vec<String> = self
            .broker
            .exec(|mut c| async move { c.hvals(&key).await })
            .await
            .map_err(presence_error)?;
        let mut members: Vec<Member> = values.iter().filter_map(|v| parse_member(v)).collect();
        members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(members)
    }
}

fn parse_member(json: &str) -> Option<Member> {
    #[derive(Deserialize)]
    struct Stored {
        user_id: String,
        #[serde(default)]
        user_info: Value,
    }
    serde_json::from_str::<Stored>(json).ok().map(|s| Member {
        user_id: s.user_id,
        user_info: s.user_info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_in_the_prefix_are_escaped() {
        assert_eq!(escape_glob("app_"), "app_");
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn laravel_payloads_parse() {
        let w: Wire<'_> =
            serde_json::from_str(r#"{"event":"App\\Events\\OrderShipped","data":{"id":1},"socket":null}"#).unwrap();
        assert_eq!(w.event, "App\\Events\\OrderShipped");
        assert_eq!(w.data.unwrap().get(), r#"{"id":1}"#);
        assert!(w.node.is_none());
    }
}
