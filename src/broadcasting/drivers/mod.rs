//! The driver contract and the built-in drivers, one file each.

mod local;
mod log;
mod null;
mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::value::RawValue;

pub use local::LocalDriver;
pub use log::LogDriver;
pub use null::NullDriver;
pub use redis::RedisDriver;

use super::BroadcastError;
use crate::channel::Channel;
use crate::hub::{Hub, SocketId};

/// What a broadcast carries besides its channels and event name.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The event data, already serialised once as JSON.
    pub data: Arc<RawValue>,
    /// A socket that must not receive the event (Laravel's `toOthers()`).
    pub socket: Option<SocketId>,
}

/// A broadcasting backend (Laravel's `Broadcaster` contract).
///
/// Drivers take `&self` so the manager can share one instance across tasks as an
/// `Arc<dyn BroadcastDriver>` without a lock on the publish path.
#[async_trait]
pub trait BroadcastDriver: Send + Sync {
    /// The driver's name, e.g. `websocket` or `log`.
    fn name(&self) -> &str;

    /// Delivers `event` with `payload` to `channels`. Returns how many sockets of this
    /// process it reached (0 for drivers that do not deliver locally).
    async fn broadcast(&self, channels: &[Channel], event: &str, payload: &Payload) -> Result<usize, BroadcastError>;

    /// Releases the driver's resources. The default does nothing.
    async fn close(&self) -> Result<(), BroadcastError> {
        Ok(())
    }
}

/// Publishes through `fanout` (the node's one publish path): what the `websocket` and
/// `redis` drivers both do; they differ in the fan-out they are given.
async fn publish(
    fanout: &crate::cluster::Fanout,
    channels: &[Channel],
    event: &str,
    payload: &Payload,
) -> Result<usize, BroadcastError> {
    let report = fanout
        .publish_many(channels, event, payload.data.clone(), payload.socket)
        .await?;
    Ok(report.delivered)
}

/// What a driver factory may use to build a driver.
#[derive(Debug, Clone)]
pub struct DriverContext {
    /// The in-process hub (for drivers that deliver locally).
    pub hub: Arc<Hub>,
    /// Cluster-wide fan-out (has a broker when this node is part of a cluster).
    pub fanout: crate::cluster::Fanout,
    /// The full configuration.
    pub config: Arc<crate::config::Config>,
}
