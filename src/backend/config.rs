//! The Redis backend's settings: one Redis, a Redis Cluster, or a master found through
//! Sentinel.

use crate::setting::InvalidSetting;

/// Redis connection settings (used by the `redis` driver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `REDIS_URL`; when set it wins over host/port/password/database.
    pub url: Option<String>,
    /// `BROADCAST_REDIS_HOST`, default `127.0.0.1`.
    pub host: String,
    /// `BROADCAST_REDIS_PORT`, default `6379`.
    pub port: u16,
    /// `BROADCAST_REDIS_PASSWORD`, default none.
    pub password: Option<String>,
    /// `BROADCAST_REDIS_DATABASE`, default `0`.
    pub database: u32,
    /// `BROADCAST_CHANNELS_PREFIX`: prefix of Redis channels and keys, default empty
    /// (Laravel's is `laravel_database_`).
    pub channels_prefix: String,
    /// `REDIS_CLUSTER_NODES`: seed nodes of a Redis Cluster (`redis://host:port` or
    /// `host:port`); when set, the node runs on the cluster instead of one Redis.
    pub cluster_nodes: Vec<String>,
    /// `REDIS_CLUSTER_SHARDS`: sharded pub/sub channels the traffic is spread over on a
    /// Redis Cluster, default 16.
    pub cluster_shards: u16,
    /// `REDIS_SENTINELS`: Sentinel addresses; when set, the master is found through them.
    pub sentinels: Vec<String>,
    /// `REDIS_SENTINEL_MASTER`: the master's name in Sentinel, default `mymaster`.
    pub sentinel_master: String,
}

impl RedisConfig {
    /// Refuses combinations that cannot work: a cluster and Sentinel at once, a shard
    /// count out of range, a prefix with hash-tag braces on a cluster (the prefix would
    /// decide the slot of every key).
    pub fn validated(self) -> Result<Self, InvalidSetting> {
        if !self.cluster_nodes.is_empty() && !self.sentinels.is_empty() {
            return Err(InvalidSetting {
                var: "REDIS_SENTINELS",
                value: self.sentinels.join(","),
                reason: "set either REDIS_CLUSTER_NODES (Redis Cluster) or REDIS_SENTINELS (Sentinel), not both".into(),
            });
        }
        if !(1..=1024).contains(&self.cluster_shards) {
            return Err(InvalidSetting {
                var: "REDIS_CLUSTER_SHARDS",
                value: self.cluster_shards.to_string(),
                reason: "expected a number of shards from 1 to 1024".into(),
            });
        }
        if !self.cluster_nodes.is_empty() && self.channels_prefix.contains(['{', '}']) {
            return Err(InvalidSetting {
                var: "BROADCAST_CHANNELS_PREFIX",
                value: self.channels_prefix,
                reason:
                    "on a Redis Cluster the prefix cannot contain { or } (they would pick the hash slot of every key)"
                        .into(),
            });
        }
        Ok(self)
    }

    /// Which Redis deployment the settings describe.
    pub fn topology(&self) -> RedisTopology {
        if !self.cluster_nodes.is_empty() {
            RedisTopology::Cluster
        } else if !self.sentinels.is_empty() {
            RedisTopology::Sentinel
        } else {
            RedisTopology::Single
        }
    }

    /// `address` (`host:port` or a URL) as a URL carrying the password when it has none.
    pub fn node_url(&self, address: &str) -> String {
        if address.contains("://") {
            return address.to_string();
        }
        match &self.password {
            Some(p) => format!("redis://:{p}@{address}"),
            None => format!("redis://{address}"),
        }
    }

    /// The connection URL built from the settings (password included, never log it).
    pub fn connection_url(&self) -> String {
        if let Some(url) = &self.url {
            return url.clone();
        }
        match &self.password {
            Some(p) => format!("redis://:{p}@{}:{}/{}", self.host, self.port, self.database),
            None => format!("redis://{}:{}/{}", self.host, self.port, self.database),
        }
    }
}

/// The kind of Redis deployment a node runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisTopology {
    /// One Redis (`REDIS_URL` or the host/port settings).
    Single,
    /// A Redis Cluster (`REDIS_CLUSTER_NODES`).
    Cluster,
    /// A master found through Sentinel (`REDIS_SENTINELS`).
    Sentinel,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            host: "127.0.0.1".into(),
            port: 6379,
            password: None,
            database: 0,
            channels_prefix: String::new(),
            cluster_nodes: Vec::new(),
            cluster_shards: 16,
            sentinels: Vec::new(),
            sentinel_master: "mymaster".into(),
        }
    }
}
