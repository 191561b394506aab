use async_trait::async_trait;

use super::{Broadcaster, Payload};
use crate::broadcasting::BroadcastError;
use crate::channel::Channel;

/// The `log` driver: writes each broadcast to the `tracing` log at INFO and delivers nothing.
#[derive(Debug, Clone, Default)]
pub struct LogDriver;

#[async_trait]
impl Broadcaster for LogDriver {
    fn name(&self) -> &str {
        "log"
    }

    async fn broadcast(&self, channels: &[Channel], event: &str, payload: &Payload) -> Result<usize, BroadcastError> {
        let names: Vec<&str> = channels.iter().map(Channel::name).collect();
        tracing::info!(target: "rustaxum::broadcast", channels = ?names, event, data = payload.data.get(), "broadcast");
        Ok(0)
    }
}
