use async_trait::async_trait;

use super::{BroadcastDriver, Payload};
use crate::broadcasting::BroadcastError;
use crate::channel::Channel;
use crate::publish::Fanout;

/// The `websocket` driver: delivers to this process's sockets through the node's
/// fan-out (so publish hooks see it; in a clustered server the other nodes too).
#[derive(Debug, Clone)]
pub struct LocalDriver {
    fanout: Fanout,
}

impl LocalDriver {
    /// A driver publishing through `fanout`.
    pub fn new(fanout: Fanout) -> Self {
        Self { fanout }
    }
}

#[async_trait]
impl BroadcastDriver for LocalDriver {
    async fn broadcast(&self, channel: &str, data: serde_json::Value) -> crate::broadcasting::Result<()> {
        super::deliver_one(self, channel, false, data).await
    }

    async fn broadcast_private(&self, channel: &str, data: serde_json::Value) -> crate::broadcasting::Result<()> {
        super::deliver_one(self, channel, true, data).await
    }

    fn driver_name(&self) -> &'static str {
        "websocket"
    }

    async fn deliver(&self, channels: &[Channel], event: &str, payload: &Payload) -> Result<usize, BroadcastError> {
        super::publish(&self.fanout, channels, event, payload).await
    }
}
