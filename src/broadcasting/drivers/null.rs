use async_trait::async_trait;

use super::{Broadcaster, Payload};
use crate::broadcasting::BroadcastError;
use crate::channel::Channel;

/// The `null` driver: accepts every broadcast and does nothing (for tests and to turn
/// broadcasting off).
#[derive(Debug, Clone, Default)]
pub struct NullDriver;

#[async_trait]
impl Broadcaster for NullDriver {
    fn name(&self) -> &str {
        "null"
    }

    async fn broadcast(
        &self,
        _channels: &[Channel],
        _event: &str,
        _payload: &Payload,
    ) -> Result<usize, BroadcastError> {
        Ok(0)
    }
}
