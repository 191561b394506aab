//! The command connection every Redis user of a node shares: one lazily connected
//! connection behind a circuit breaker and a time limit, the node's id and the key
//! prefix. The broker, the Redis presence store and the other Redis stores all run their
//! commands here, whichever Redis deployment is behind it:
//!
//! - **one Redis**: a `ConnectionManager` (reconnects by itself);
//! - **Sentinel**: a multiplexed connection to the master Sentinel names, dropped after
//!   a failure so that the next command asks Sentinel again (a failover moves the master);
//! - **Redis Cluster**: a cluster connection (follows `MOVED`/`ASK` and slot changes).
//!   Keys are hash-tagged so that every script touches one slot: the node-coordination
//!   keys (nodes, presence, webhook occupancy, subscription counts, watchlists, EmitHub,
//!   typed-frame records) share the tag `{rustaxum}`; a channel's own keys (history,
//!   cache) carry the tag of its pub/sub shard, so they spread over the masters with the
//!   channel traffic.

use std::future::Future;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, Pipeline, RedisConnectionInfo, RedisFuture, RedisResult, Value};

use super::breaker::CircuitBreaker;
use super::{RedisConfig, RedisTopology};
use super::{BREAKER_COOLDOWN, BREAKER_THRESHOLD, COMMAND_TIMEOUT};
use crate::backend::BackendError;
use crate::channel::Channel;
use crate::setting::InvalidSetting;

/// Hash slots of a Redis Cluster.
const SLOTS: u16 = 16384;

/// The Redis deployment behind a link.
enum Backend {
    Single(redis::Client),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    Cluster { nodes: Vec<String>, client: ClusterClient },
}

/// One node's connection to Redis.
pub struct RedisLink {
    /// Where it connects, without a password (for errors and logs).
    address: String,
    node_id: String,
    prefix: String,
    backend: Backend,
    conn: tokio::sync::Mutex<Option<RedisConn>>,
    /// Guards the node-coordination commands (on one Redis: every command).
    breaker: CircuitBreaker,
    /// On a Redis Cluster: the hash tag of each sharded pub/sub channel, chosen so that
    /// the shards' slots are spread evenly over the slot space. Empty otherwise.
    shards: Vec<String>,
    /// On a Redis Cluster: one breaker per shard, guarding the commands on that shard's
    /// slot (its publishes, history and cache), so a master that dies opens the circuit
    /// of its own shards only. Empty otherwise.
    shard_breakers: Vec<CircuitBreaker>,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("node_id", &self.node_id)
            .field("prefix", &self.prefix)
            .field("topology", &self.topology())
            .finish_non_exhaustive()
    }
}

/// A command connection to whichever Redis deployment the node runs on.
#[derive(Clone)]
pub enum RedisConn {
    /// One Redis.
    Single(ConnectionManager),
    /// The master Sentinel named.
    Sentinel(MultiplexedConnection),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Sentinel(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Sentinel(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Sentinel(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisConn {
    /// The keys matching `pattern` (`SCAN MATCH`). On a cluster the scan runs on the
    /// master owning `slot_key`'s slot: callers scan keys of one hash tag.
    pub async fn scan_keys(&mut self, pattern: &str, slot_key: &str) -> RedisResult<Vec<String>> {
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(500);
            let (next, batch): (u64, Vec<String>) = match self {
                Self::Cluster(c) => {
                    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
                        slot_key,
                        SlotAddr::Master,
                    )));
                    redis::from_redis_value(c.route_command(cmd, route).await?)?
                }
                _ => cmd.query_async(self).await?,
            };
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

fn invalid(config: &RedisConfig, e: impl std::fmt::Display) -> InvalidSetting {
    let (var, value) = match config.topology() {
        RedisTopology::Cluster => ("REDIS_CLUSTER_NODES", config.cluster_nodes.join(",")),
        RedisTopology::Sentinel => ("REDIS_SENTINELS", config.sentinels.join(",")),
        RedisTopology::Single if config.url.is_some() => ("REDIS_URL", String::from("(set)")),
        RedisTopology::Single => ("BROADCAST_REDIS_HOST", config.host.clone()),
    };
    InvalidSetting {
        var,
        value,
        reason: format!("not a usable Redis address: {e}"),
    }
}

/// The hash slot of `key` (CRC16 of its hash tag, or of the whole key without one).
pub(crate) fn slot_of(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % SLOTS
}

/// One hash tag per shard, shard `i`'s slot in the `i`-th of `count` equal slot ranges,
/// so that the shards spread over the masters as evenly as the cluster's slots do.
fn shard_tags(count: u16) -> Vec<String> {
    let count = u32::from(count.max(1));
    let mut tags: Vec<Option<String>> = vec![None; count as usize];
    let mut missing = tags.len();
    let mut n: u32 = 0;
    while missing > 0 {
        let tag = n.to_string();
        let slot = u32::from(crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes()) % SLOTS);
        let range = (slot * count / u32::from(SLOTS)) as usize;
        if tags[range].is_none() {
            tags[range] = Some(tag);
            missing -= 1;
        }
        n += 1;
    }
    tags.into_iter().flatten().collect()
}

impl RedisLink {
    /// A link to the configured Redis with a fresh node id; connects on first use, so a
    /// Redis that is down at start-up only makes the node degraded.
    pub fn new(config: &RedisConfig) -> Result<Self, InvalidSetting> {
        let backend = match config.topology() {
            RedisTopology::Single => {
                Backend::Single(redis::Client::open(config.connection_url().as_str()).map_err(|e| invalid(config, e))?)
            }
            RedisTopology::Sentinel => {
                let mut info = RedisConnectionInfo::default().set_db(i64::from(config.database));
                if let Some(u) = &config.username {
                    info = info.set_username(u);
                }
                if let Some(p) = &config.password {
                    info = info.set_password(p);
                }
                let sentinels: Vec<String> = config.sentinels.iter().map(|s| config.node_url(s)).collect();
                let client = SentinelClient::build(
                    sentinels,
                    config.sentinel_master.clone(),
                    Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(info)),
                    SentinelServerType::Master,
                )
                .map_err(|e| invalid(config, e))?;
                Backend::Sentinel(tokio::sync::Mutex::new(client))
            }
            RedisTopology::Cluster => {
                let nodes: Vec<String> = config.cluster_nodes.iter().map(|n| config.node_url(n)).collect();
                let client = Self::cluster_builder(&nodes).build().map_err(|e| invalid(config, e))?;
                Backend::Cluster { nodes, client }
            }
        };
        let shards = match config.topology() {
            RedisTopology::Cluster => shard_tags(config.cluster_shards),
            _ => Vec::new(),
        };
        let shard_breakers = shards
            .iter()
            .enumerate()
            .map(|(i, tag)| {
                CircuitBreaker::labelled(
                    format!("shard {i} ({{{tag}}}) of the Redis Cluster of {}", config.address()),
                    BREAKER_THRESHOLD,
                    BREAKER_COOLDOWN,
                )
            })
            .collect();
        Ok(Self {
            address: config.address(),
            node_id: format!("{:016x}", rand::random::<u64>()),
            prefix: config.channels_prefix.clone(),
            backend,
            conn: tokio::sync::Mutex::new(None),
            breaker: CircuitBreaker::labelled(
                format!("Redis at {}", config.address()),
                BREAKER_THRESHOLD,
                BREAKER_COOLDOWN,
            ),
            shards,
            shard_breakers,
        })
    }

    fn cluster_builder(nodes: &[String]) -> redis::cluster::ClusterClientBuilder {
        redis::cluster::ClusterClientBuilder::new(nodes.to_vec())
            .connection_timeout(COMMAND_TIMEOUT)
            .response_timeout(COMMAND_TIMEOUT)
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(200)
    }

    /// The Redis deployment this link talks to.
    pub fn topology(&self) -> RedisTopology {
        match self.backend {
            Backend::Single(_) => RedisTopology::Single,
            Backend::Sentinel(_) => RedisTopology::Sentinel,
            Backend::Cluster { .. } => RedisTopology::Cluster,
        }
    }

    /// Whether this link talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster { .. })
    }

    /// This node's id in the cluster.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The prefix of every Redis channel and key (`BROADCAST_CHANNELS_PREFIX`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A rustaxum key: `{prefix}rustaxum:{rest}`; on a Redis Cluster
    /// `{prefix}{rustaxum}:{rest}`, so that all of them share one slot and the scripts
    /// that coordinate nodes (presence, occupancy, counts, watchlists) can run there.
    pub fn key(&self, rest: &str) -> String {
        if self.is_cluster() {
            format!("{}{{rustaxum}}:{rest}", self.prefix)
        } else {
            format!("{}rustaxum:{rest}", self.prefix)
        }
    }

    /// A key of `channel`'s own (`kind` is e.g. `history`): `{prefix}rustaxum:{kind}:{channel}`;
    /// on a Redis Cluster it carries the hash tag of the channel's pub/sub shard, so a
    /// script may keep the channel's data and publish on its shard in one slot.
    pub fn channel_key(&self, kind: &str, channel: &Channel) -> String {
        match self.shard_tag(channel) {
            Some(tag) => format!("{}rustaxum:{kind}:{{{tag}}}:{}", self.prefix, channel.name()),
            None => self.key(&format!("{kind}:{}", channel.name())),
        }
    }

    fn shard_tag(&self, channel: &Channel) -> Option<&str> {
        self.shard_index(channel)
            .and_then(|i| self.shards.get(i))
            .map(String::as_str)
    }

    /// Which of the shards `channel` lives on (`None` unless on a Redis Cluster).
    pub fn shard_index(&self, channel: &Channel) -> Option<usize> {
        if self.shards.is_empty() {
            return None;
        }
        Some(usize::from(slot_of(channel.name())) * self.shards.len() / usize::from(SLOTS))
    }

    /// The Redis channel `channel`'s messages travel on: `{prefix}{channel}` (what Laravel
    /// publishes on), or on a Redis Cluster the sharded channel of its shard.
    pub fn pubsub_channel(&self, channel: &Channel) -> String {
        match self.shard_tag(channel) {
            Some(tag) => self.shard_channel(tag),
            None => format!("{}{}", self.prefix, channel.name()),
        }
    }

    fn shard_channel(&self, tag: &str) -> String {
        format!("{}rustaxum:shard:{{{tag}}}", self.prefix)
    }

    /// Every sharded channel a node subscribes to on a Redis Cluster (empty otherwise).
    pub fn shard_channels(&self) -> Vec<String> {
        self.shards.iter().map(|t| self.shard_channel(t)).collect()
    }

    /// The circuit breaker of shard `index` of [`shard_channels`](Self::shard_channels).
    pub fn shard_breaker(&self, index: usize) -> Option<&CircuitBreaker> {
        self.shard_breakers.get(index)
    }

    /// The command that publishes a channel's messages: `PUBLISH`, or `SPUBLISH` on a
    /// Redis Cluster.
    pub fn publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// A client for a connection of its own to one Redis (the pub/sub subscription): the
    /// configured one, or the master Sentinel names now. `None` on a Redis Cluster.
    pub async fn pubsub_client(&self) -> RedisResult<Option<redis::Client>> {
        match &self.backend {
            Backend::Single(client) => Ok(Some(client.clone())),
            Backend::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await.map(Some),
            Backend::Cluster { .. } => Ok(None),
        }
    }

    /// On a Redis Cluster: a client for seed node `attempt % seeds` (of
    /// `REDIS_CLUSTER_NODES`), for a plain connection of its own. A cluster forwards every
    /// `PUBLISH` to all its nodes, so the pattern subscription may live on any of them;
    /// trying the seeds in turn moves it off a node that died. `None` unless on a cluster.
    pub fn cluster_seed_client(&self, attempt: usize) -> Option<RedisResult<redis::Client>> {
        let Backend::Cluster { nodes, .. } = &self.backend else {
            return None;
        };
        let node = nodes.get(attempt.checked_rem(nodes.len())?)?;
        Some(redis::Client::open(node.as_str()))
    }

    /// On a Redis Cluster: a client for the node at `address` (`host:port`, as the slot
    /// map names it), with the seeds' credentials. `None` unless on a cluster.
    pub fn cluster_node_client(&self, address: &str) -> Option<RedisResult<redis::Client>> {
        let Backend::Cluster { nodes, .. } = &self.backend else {
            return None;
        };
        let seed = nodes.first()?;
        Some((|| {
            let (host, port) = address
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "not host:port")))?;
            let info = redis::IntoConnectionInfo::into_connection_info(seed.as_str())?
                .set_addr(redis::ConnectionAddr::Tcp(host, port));
            redis::Client::open(info)
        })())
    }

    /// A cluster connection of its own whose pushes (pub/sub messages) go to `pushes`
    /// (RESP3). `None` unless on a Redis Cluster.
    pub async fn cluster_pubsub(
        &self,
        pushes: impl redis::aio::AsyncPushSender,
    ) -> RedisResult<Option<ClusterConnection>> {
        let Backend::Cluster { nodes, .. } = &self.backend else {
            return Ok(None);
        };
        let client = Self::cluster_builder(nodes)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes)
            .build()?;
        client.get_async_connection().await.map(Some)
    }

    /// The circuit breaker guarding the node-coordination commands (on one Redis or
    /// Sentinel: every command).
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The breaker guarding commands on `channel`'s own keys and shard: its shard's on a
    /// Redis Cluster, the one breaker otherwise.
    fn breaker_for(&self, channel: &Channel) -> &CircuitBreaker {
        self.shard_index(channel)
            .and_then(|i| self.shard_breakers.get(i))
            .unwrap_or(&self.breaker)
    }

    async fn connect(&self) -> RedisResult<RedisConn> {
        match &self.backend {
            Backend::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(COMMAND_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT))
                    .set_number_of_retries(1);
                client
                    .get_connection_manager_with_config(config)
                    .await
                    .map(RedisConn::Single)
            }
            Backend::Sentinel(sentinel) => {
                let client = sentinel.lock().await.async_get_client().await?;
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(COMMAND_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(RedisConn::Sentinel)
            }
            Backend::Cluster { client, .. } => client.get_async_connection().await.map(RedisConn::Cluster),
        }
    }

    async fn connection(&self) -> Result<RedisConn, BackendError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let conn = tokio::time::timeout(COMMAND_TIMEOUT * 2, self.connect())
            .await
            .map_err(|_| {
                BackendError::Unavailable(format!(
                    "{} did not answer within {:?}",
                    self.address,
                    COMMAND_TIMEOUT * 2
                ))
            })?
            .map_err(|e| BackendError::Unavailable(format!("cannot reach {}: {e}", self.address)))?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Runs one Redis operation on the node-coordination keys (those of [`key`](Self::key))
    /// behind the circuit breaker and a time limit.
    pub async fn exec<T, F, Fut>(&self, op: F) -> Result<T, BackendError>
    where
        F: FnOnce(RedisConn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.exec_behind(&self.breaker, op).await
    }

    /// Runs one Redis operation on `channel`'s shard (its publish, or its
    /// [`channel_key`](Self::channel_key)s) behind that shard's circuit breaker: on a Redis
    /// Cluster a dead master then fails fast for its own channels only.
    pub async fn exec_for<T, F, Fut>(&self, channel: &Channel, op: F) -> Result<T, BackendError>
    where
        F: FnOnce(RedisConn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.exec_behind(self.breaker_for(channel), op).await
    }

    async fn exec_behind<T, F, Fut>(&self, breaker: &CircuitBreaker, op: F) -> Result<T, BackendError>
    where
        F: FnOnce(RedisConn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let Some(permit) = breaker.allow() else {
            return Err(BackendError::CircuitOpen);
        };
        let result = match self.connection().await {
            Ok(conn) => match tokio::time::timeout(COMMAND_TIMEOUT, op(conn)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => {
                    self.forget_after(&e).await;
                    Err(BackendError::Unavailable(e.to_string()))
                }
                Err(_) => {
                    self.forget_sentinel_master().await;
                    Err(BackendError::Timeout)
                }
            },
            Err(e) => Err(e),
        };
        match &result {
            Ok(_) => permit.success(),
            Err(_) => permit.failure(),
        }
        result
    }

    /// After a failed command on a master found through Sentinel: a connection error or a
    /// `READONLY` reply (the master was demoted by a failover) means the master must be
    /// asked for again.
    async fn forget_after(&self, e: &redis::RedisError) {
        if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.code() == Some("READONLY") {
            self.forget_sentinel_master().await;
        }
    }

    async fn forget_sentinel_master(&self) {
        if matches!(self.backend, Backend::Sentinel(_)) {
            *self.conn.lock().await = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster_link(shards: u16) -> RedisLink {
        let config = RedisConfig {
            cluster_nodes: vec!["127.0.0.1:7000".into()],
            cluster_shards: shards,
            channels_prefix: "app_".into(),
            ..RedisConfig::default()
        };
        RedisLink::new(&config).unwrap()
    }

    #[test]
    fn slots_follow_redis_cluster_hash_tags() {
        // Values from the Redis Cluster specification's examples and `CLUSTER KEYSLOT`.
        assert_eq!(slot_of("123456789"), 0x31c3 % SLOTS);
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));
        assert_eq!(slot_of("foo{}{bar}"), slot_of("foo{}{bar}"), "empty tag: whole key");
        assert_ne!(slot_of("foo{}{bar}"), slot_of("bar"));
        assert_eq!(slot_of("foo{{bar}}zap"), slot_of("{bar"));
    }

    #[test]
    fn shard_tags_spread_evenly_over_the_slots() {
        for count in [1u16, 3, 16, 64, 1024] {
            let tags = shard_tags(count);
            assert_eq!(tags.len(), usize::from(count));
            for (i, tag) in tags.iter().enumerate() {
                let slot = usize::from(slot_of(&format!("{{{tag}}}")));
                assert_eq!(
                    slot * usize::from(count) / usize::from(SLOTS),
                    i,
                    "shard {i} of {count}"
                );
            }
        }
    }

    #[test]
    fn on_a_cluster_a_channel_keys_and_messages_share_its_shard_slot() {
        let link = cluster_link(16);
        let general = Channel::parse("general").unwrap();
        let history = link.channel_key("history", &general);
        assert!(history.starts_with("app_rustaxum:history:{"), "{history}");
        assert!(history.ends_with("}:general"), "{history}");
        assert_eq!(slot_of(&history), slot_of(&link.pubsub_channel(&general)));
        assert!(link.shard_channels().contains(&link.pubsub_channel(&general)));
        assert_eq!(link.key("nodes"), "app_{rustaxum}:nodes");
        assert_eq!(slot_of(&link.key("nodes")), slot_of(&link.key("presence:x:members")));
        assert_eq!(link.publish_command(), "SPUBLISH");
        // Channels spread over the shards.
        let used: std::collections::BTreeSet<String> = (0..200)
            .map(|i| link.pubsub_channel(&Channel::parse(&format!("room.{i}")).unwrap()))
            .collect();
        assert_eq!(used.len(), 16);
    }

    #[test]
    fn one_redis_keeps_the_key_names_it_always_had() {
        let config = RedisConfig {
            channels_prefix: "app_".into(),
            ..RedisConfig::default()
        };
        let link = RedisLink::new(&config).unwrap();
        let general = Channel::parse("general").unwrap();
        assert_eq!(link.key("nodes"), "app_rustaxum:nodes");
        assert_eq!(link.channel_key("history", &general), "app_rustaxum:history:general");
        assert_eq!(link.pubsub_channel(&general), "app_general");
        assert_eq!(link.publish_command(), "PUBLISH");
        assert!(link.shard_channels().is_empty());
    }
}
