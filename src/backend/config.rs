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
    /// `BROADCAST_REDIS_USERNAME` (Laravel's `REDIS_USERNAME`), default none: Redis 6
    /// ACL users.
    pub username: Option<String>,
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

    /// `address` (`host:port` or a URL) as a URL carrying the credentials when it has none.
    pub fn node_url(&self, address: &str) -> String {
        if address.contains("://") {
            return address.to_string();
        }
        format!("redis://{}{address}", self.credentials())
    }

    /// `user:password@`, `:password@`, `user@` or nothing, percent-encoded for a URL.
    fn credentials(&self) -> String {
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => format!("{}:{}@", enc(u), enc(p)),
            (None, Some(p)) => format!(":{}@", enc(p)),
            (Some(u), None) => format!("{}@", enc(u)),
            (None, None) => String::new(),
        }
    }

    /// The connection URL built from the settings (password included, never log it).
    pub fn connection_url(&self) -> String {
        if let Some(url) = &self.url {
            return url.clone();
        }
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("redis://{}{host}:{}/{}", self.credentials(), self.port, self.database)
    }

    /// Where the settings point, for logs and errors: never a password.
    pub fn address(&self) -> String {
        match self.topology() {
            RedisTopology::Cluster => format!("the Redis Cluster of {}", redact_all(&self.cluster_nodes)),
            RedisTopology::Sentinel => format!(
                "master {:?} of Sentinel {} (database {})",
                self.sentinel_master,
                redact_all(&self.sentinels),
                self.database
            ),
            RedisTopology::Single => match &self.url {
                Some(url) => redact(url),
                None => {
                    let user = self.username.as_deref().map(|u| format!("{u}@")).unwrap_or_default();
                    format!("redis://{user}{}:{}/{}", self.host, self.port, self.database)
                }
            },
        }
    }
}

/// A Redis URL or address without its password (`redis://user:***@host`).
fn redact(address: &str) -> String {
    let Some((scheme, rest)) = address.split_once("://") else {
        return address.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}")
        }
        None => address.to_string(),
    }
}

fn redact_all(addresses: &[String]) -> String {
    addresses.iter().map(|a| redact(a)).collect::<Vec<_>>().join(",")
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
            username: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_never_show_a_password() {
        let c = RedisConfig {
            host: "10.0.0.5".into(),
            port: 6380,
            username: Some("app".into()),
            password: Some("p@ss:word/1".into()),
            database: 2,
            ..RedisConfig::default()
        };
        assert_eq!(c.address(), "redis://app@10.0.0.5:6380/2");
        assert_eq!(c.connection_url(), "redis://app:p%40ss%3Aword%2F1@10.0.0.5:6380/2");
        let url = redis::IntoConnectionInfo::into_connection_info(c.connection_url().as_str()).unwrap();
        assert_eq!(url.redis_settings().password(), Some("p@ss:word/1"));
        assert_eq!(url.redis_settings().username(), Some("app"));
        let c = RedisConfig {
            url: Some("redis://:secret@redis.internal:6379/0".into()),
            ..RedisConfig::default()
        };
        assert_eq!(c.address(), "redis://:***@redis.internal:6379/0");
        assert!(!c.address().contains("secret"));
    }
}
