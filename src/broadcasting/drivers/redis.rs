use async_trait::async_trait;

use super::{BroadcastDriver, DriverContext, Payload};
use crate::broadcasting::BroadcastError;
use crate::channel::Channel;
use crate::cluster::redis::RedisBroker;
use crate::publish::Fanout;

/// The `redis` driver: publishes through Redis to every node (Laravel's payload format
/// plus rustaxum's node id), then delivers to this node's sockets.
///
/// In the server the driver shares the node's broker. A Rust application without a
/// server in its process gets a publish-only broker of its own.
#[derive(Debug, Clone)]
pub struct RedisDriver {
    fanout: Fanout,
}

impl RedisDriver {
    /// A driver over a fan-out that has a broker.
    pub fn new(fanout: Fanout) -> Self {
        Self { fanout }
    }

    /// The driver for a manager's context: the node's broker, or a new publish-only one.
    pub fn from_context(ctx: &DriverContext) -> Result<Self, BroadcastError> {
        if ctx.fanout.is_clustered() {
            return Ok(Self::new(ctx.fanout.clone()));
        }
        // A publish-only broker: it never joins the nodes' heartbeat, so it has no
        // security fingerprint to compare.
        let broker = RedisBroker::new(&ctx.settings.redis, String::new()).map_err(|e| BroadcastError::Unavailable {
            driver: "redis".into(),
            reason: e.to_string(),
        })?;
        Ok(Self::new(Fanout::new(ctx.hub.clone(), broker)))
    }
}

#[async_trait]
impl BroadcastDriver for RedisDriver {
    async fn broadcast(&self, channel: &str, data: serde_json::Value) -> crate::broadcasting::Result<()> {
        super::deliver_one(self, channel, false, data).await
    }

    async fn broadcast_private(&self, channel: &str, data: serde_json::Value) -> crate::broadcasting::Result<()> {
        super::deliver_one(self, channel, true, data).await
    }

    fn driver_name(&self) -> &'static str {
        "redis"
    }

    async fn deliver(&self, channels: &[Channel], event: &str, payload: &Payload) -> Result<usize, BroadcastError> {
        super::publish(&self.fanout, channels, event, payload).await
    }
}
