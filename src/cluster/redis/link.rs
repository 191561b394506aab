//! The command connection every Redis user of a node shares: one lazily connected
//! `ConnectionManager` behind a circuit breaker and a time limit, the node's id and the
//! key prefix. The broker and the Redis presence store both run their commands here.

use std::future::Future;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;

use super::{BREAKER_COOLDOWN, BREAKER_THRESHOLD, COMMAND_TIMEOUT};
use crate::cluster::breaker::CircuitBreaker;
use crate::cluster::ClusterError;
use crate::config::{ConfigError, RedisConfig};

/// One node's connection to Redis.
pub struct RedisLink {
    node_id: String,
    prefix: String,
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    breaker: CircuitBreaker,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("node_id", &self.node_id)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLink {
    /// A link to the configured Redis with a fresh node id; connects on first use, so a
    /// Redis that is down at start-up only makes the node degraded.
    pub fn new(config: &RedisConfig) -> Result<Self, ConfigError> {
        let url = config.connection_url();
        let client = redis::Client::open(url.as_str()).map_err(|e| ConfigError::Invalid {
            var: if config.url.is_some() {
                "REDIS_URL"
            } else {
                "BROADCAST_REDIS_HOST"
            },
            value: config.url.clone().unwrap_or_else(|| config.host.clone()),
            reason: format!("not a usable Redis address: {e}"),
        })?;
        Ok(Self {
            node_id: format!("{:016x}", rand::random::<u64>()),
            prefix: config.channels_prefix.clone(),
            client,
            conn: tokio::sync::Mutex::new(None),
            breaker: CircuitBreaker::new(BREAKER_THRESHOLD, BREAKER_COOLDOWN),
        })
    }

    /// This node's id in the cluster.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The prefix of every Redis channel and key (`BROADCAST_CHANNELS_PREFIX`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A rustaxum key: `{prefix}rustaxum:{rest}`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}rustaxum:{rest}", self.prefix)
    }

    /// The client, for connections of their own (the pub/sub subscription).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The circuit breaker guarding commands.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    async fn connection(&self) -> Result<ConnectionManager, ClusterError> {
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
        .map_err(|_| ClusterError::Timeout)?
        .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Runs one Redis operation behind the circuit breaker and a time limit.
    pub async fn exec<T, F, Fut>(&self, op: F) -> Result<T, ClusterError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let Some(permit) = self.breaker.allow() else {
            return Err(ClusterError::CircuitOpen);
        };
        let result = match self.connection().await {
            Ok(conn) => match tokio::time::timeout(COMMAND_TIMEOUT, op(conn)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(ClusterError::Unavailable(e.to_string())),
                Err(_) => Err(ClusterError::Timeout),
            },
            Err(e) => Err(e),
        };
        match &result {
            Ok(_) => permit.success(),
            Err(_) => permit.failure(),
        }
        result
    }
}
