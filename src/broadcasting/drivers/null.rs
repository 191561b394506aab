use async_trait::async_trait;

use super::{BroadcastDriver, Payload};
use crate::broadcasting::BroadcastError;
use crate::channel::Channel;

/// The `null` driver: accepts every broadcast and does nothing (for tests and to turn
/// broadcasting off).
#[derive(Debug, Clone, Default)]
pub struct NullDriver;

#[async_trait]
impl BroadcastDriver for NullDriver {
    async fn broadcast(&self, channel: &str, data: serde_json::Value) -> crate::broadcasting::Result<()> {
        super::deliver_one(self, channel, false, data).await
    }

    async fn broadcast_private(&self, channel: &str, data: serde_json::Value) -> crate::broadcasting::Result<()> {
        super::deliver_one(self, channel, true, data).await
    }

    fn driver_name(&self) -> &'static str {
        "null"
    }

    async fn deliver(&self, _channels: &[Channel], _event: &str, _payload: &Payload) -> Result<usize, BroadcastError> {
        Ok(0)
    }
}
