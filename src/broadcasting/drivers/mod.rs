//! The one driver contract, [`BroadcastDriver`], and the built-in drivers, one file each.
//!
//! A driver has the RustAxum document's shape (`broadcast` one message on one channel,
//! `broadcast_private`, `driver_name`); the manager calls [`BroadcastDriver::deliver`]
//! (one event on several channels with a shared payload), which by default hands each
//! channel to those methods. The built-in drivers implement `deliver` directly.

mod local;
mod log;
mod null;
#[cfg(feature = "redis")]
mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::value::RawValue;

pub use local::LocalDriver;
pub use log::LogDriver;
pub use null::NullDriver;
#[cfg(feature = "redis")]
pub use redis::RedisDriver;

use super::BroadcastError;
use crate::channel::Channel;
use crate::hub::{Hub, SocketId};

/// What a broadcast carries besides its channels and event name.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The event data, already serialised once as JSON.
    pub data: Arc<RawValue>,
    /// The data as its publisher wrote it, when it came as text that `data` cannot give
    /// back byte for byte (see [`Message::text`](crate::hub::Message#structfield.text));
    /// `None` for events built in Rust.
    pub text: Option<Arc<str>>,
    /// A socket that must not receive the event (Laravel's `toOthers()`).
    pub socket: Option<SocketId>,
}

/// A broadcasting backend (Laravel's `Broadcaster` contract), in the RustAxum document's
/// shape.
///
/// ```
/// use async_trait::async_trait;
/// use rustaxum::broadcasting::{BroadcastDriver, Result};
///
/// pub struct CustomDriver;
///
/// #[async_trait]
/// impl BroadcastDriver for CustomDriver {
///     async fn broadcast(&self, channel: &str, data: serde_json::Value) -> Result<()> {
///         println!("{channel}: {data}");
///         Ok(())
///     }
///     fn driver_name(&self) -> &'static str {
///         "custom"
///     }
/// }
///
/// # fn register(manager: &rustaxum::broadcasting::BroadcastManager) {
/// manager.extend("custom", |_connection, _context| Ok(std::sync::Arc::new(CustomDriver)));
/// # }
/// ```
///
/// `data` is the message as Laravel's Redis broadcaster writes it:
/// `{"event": name, "data": payload, "socket": excluded socket id or null}`.
///
/// Drivers take `&self` so the manager shares one instance across tasks as an
/// `Arc<dyn BroadcastDriver>`, without a lock on the publish path.
#[async_trait]
pub trait BroadcastDriver: Send + Sync + 'static {
    /// Delivers a message on a public channel.
    async fn broadcast(&self, channel: &str, data: serde_json::Value) -> super::Result<()>;

    /// Delivers a message on a private or presence channel (`channel` is the name the
    /// application gave, e.g. `orders.1`); by default like [`broadcast`](Self::broadcast).
    async fn broadcast_private(&self, channel: &str, data: serde_json::Value) -> super::Result<()> {
        self.broadcast(channel, data).await
    }

    /// The driver's name, e.g. `websocket` or `log`.
    fn driver_name(&self) -> &'static str;

    /// What the manager calls: `event` with `payload` on `channels`; how many sockets of
    /// this process it reached (0 for drivers that do not deliver locally). By default
    /// each channel is handed to [`broadcast`](Self::broadcast) (private and presence
    /// channels to [`broadcast_private`](Self::broadcast_private)) as Laravel's message.
    async fn deliver(&self, channels: &[Channel], event: &str, payload: &Payload) -> Result<usize, BroadcastError> {
        let message = serde_json::to_value(DriverMessage {
            event,
            data: &payload.data,
            socket: payload.socket.map(|s| s.to_string()),
        })?;
        for channel in channels {
            match channel.kind() {
                crate::channel::ChannelKind::Public => self.broadcast(channel.name(), message.clone()).await?,
                // The method says private; the name is the one the app gave (`orders.1`).
                _ => self.broadcast_private(channel.local_name(), message.clone()).await?,
            }
        }
        Ok(0)
    }

    /// Releases the driver's resources. The default does nothing.
    async fn close(&self) -> Result<(), BroadcastError> {
        Ok(())
    }
}

/// Laravel's message on one channel: what [`BroadcastDriver::broadcast`] receives.
#[derive(serde::Serialize, serde::Deserialize)]
struct DriverMessage<'a> {
    event: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
    socket: Option<String>,
}

/// A message in the document's shape on one channel, delivered with the driver's own
/// [`BroadcastDriver::deliver`] (how the built-in drivers answer `broadcast`).
pub(crate) async fn deliver_one<D: BroadcastDriver + ?Sized>(
    driver: &D,
    channel: &str,
    private: bool,
    message: serde_json::Value,
) -> Result<(), BroadcastError> {
    let text = serde_json::to_string(&message)?;
    let m: DriverMessage<'_> = serde_json::from_str(&text)?;
    let name = if private && !channel.starts_with("private-") && !channel.starts_with("presence-") {
        format!("private-{channel}")
    } else {
        channel.to_string()
    };
    let channel = Channel::parse(&name).map_err(|source| BroadcastError::InvalidChannel {
        channel: name.clone(),
        source,
    })?;
    let socket = m.socket.as_deref().map(str::parse).transpose().ok().flatten();
    let payload = Payload {
        data: Arc::from(m.data.to_owned()),
        text: None,
        socket,
    };
    driver.deliver(&[channel], m.event, &payload).await.map(|_| ())
}

/// Publishes through `fanout` (the node's one publish path): what the `websocket` and
/// `redis` drivers both do; they differ in the fan-out they are given.
async fn publish(
    fanout: &crate::publish::Fanout,
    channels: &[Channel],
    event: &str,
    payload: &Payload,
) -> Result<usize, BroadcastError> {
    let report = fanout
        .publish_many(
            channels,
            event,
            payload.data.clone(),
            payload.text.clone(),
            payload.socket,
        )
        .await?;
    Ok(report.delivered)
}

/// What a driver factory may use to build a driver.
#[derive(Debug, Clone)]
pub struct DriverContext {
    /// The in-process hub (for drivers that deliver locally).
    pub hub: Arc<Hub>,
    /// Cluster-wide fan-out (has a broker when this node is part of a cluster).
    pub fanout: crate::publish::Fanout,
    /// What the built-in drivers read from the configuration.
    pub settings: DriverSettings,
}

/// What the built-in drivers read from the configuration (`Config::driver_settings`
/// gives the environment's).
#[derive(Debug, Clone, Default)]
pub struct DriverSettings {
    /// `BROADCAST_LOG_FILE`: where the `log` driver appends (standard output when `None`).
    pub log_file: Option<std::path::PathBuf>,
    /// The Redis the `redis` driver publishes to when this process is not a cluster node
    /// (a node's driver uses the node's broker).
    #[cfg(feature = "redis")]
    pub redis: crate::backend::RedisConfig,
}
