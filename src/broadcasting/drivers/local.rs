use std::sync::Arc;

use async_trait::async_trait;

use super::{BroadcastDriver, Payload};
use crate::broadcasting::BroadcastError;
use crate::channel::Channel;
use crate::hub::Hub;

/// The `websocket` driver: delivers straight into this process's hub.
#[derive(Debug, Clone)]
pub struct LocalDriver {
    hub: Arc<Hub>,
}

impl LocalDriver {
    /// A driver publishing into `hub`.
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }
}

#[async_trait]
impl BroadcastDriver for LocalDriver {
    fn name(&self) -> &str {
        "websocket"
    }

    async fn broadcast(&self, channels: &[Channel], event: &str, payload: &Payload) -> Result<usize, BroadcastError> {
        let report = self
            .hub
            .publish_many(channels, event, payload.data.clone(), payload.socket);
        Ok(report.delivered)
    }
}
