//! Laravel-style broadcasting: events, the manager, drivers, helpers and the queue.
//!
//! - [`drivers`]: the one driver contract, [`BroadcastDriver`] (the RustAxum document's
//!   shape; the manager calls its `deliver`), and the built-in drivers.
//! - [`manager`]: [`BroadcastManager`], the registry that builds and caches drivers.
//! - events (`Event`, `ShouldBroadcast`, `Broadcastable`, `ShouldQueue`, `dispatch()`,
//!   the `EventFacade` fakes) are in `rustaxum::events`, where the RustAxum document
//!   imports them from, above this library: they go out through its manager.
//! - [`helpers`]: the fluent [`broadcast()`] builder, `broadcast_to_*` and [`BroadcastFacade`].
//! - [`queue`]: queued broadcasts with tries, timeout and back-off.
//! - [`testing`]: a [`RecordingDriver`](testing::RecordingDriver) for application tests.

pub mod drivers;
pub mod helpers;
pub mod manager;
pub mod queue;
pub mod testing;

use std::time::Duration;

/// Why the cluster backend failed ([`BroadcastError::Backend`]).
pub use crate::backend::BackendError;
/// Where the [`RedisDriver`] publishes (`config::RedisConfig` in the server's
/// configuration is this type).
#[cfg(feature = "redis")]
pub use crate::backend::{RedisConfig, RedisTopology};
use crate::channel::{Channel, ChannelError};
/// The one publish path the drivers publish through: this process's hub
/// ([`Fanout::local`]), or a cluster's broker and then the hub (a server's node has one).
pub use crate::publish::Fanout;
#[cfg(feature = "redis")]
pub use drivers::RedisDriver;
pub use drivers::{BroadcastDriver, DriverContext, DriverSettings, LocalDriver, LogDriver, NullDriver, Payload};
pub use helpers::{
    broadcast, broadcast_to_channel, broadcast_to_organization, broadcast_to_user, BroadcastFacade, PendingBroadcast,
};
pub use manager::{global, install, BroadcastConfig, BroadcastManager, ConnectionConfig, DriverFactory};
pub use queue::{FailedBroadcast, QueueOptions};

/// `Result` with [`BroadcastError`], as the RustAxum document's code writes it.
pub type Result<T, E = BroadcastError> = std::result::Result<T, E>;

/// Everything that can go wrong when broadcasting.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    /// `driver(name)` named a connection that is not configured.
    #[error("broadcast connection [{0}] is not defined")]
    ConnectionNotDefined(String),
    /// A connection names a driver nobody registered.
    #[error("broadcast driver [{0}] is not supported")]
    DriverNotSupported(String),
    /// A channel name failed to parse.
    #[error("invalid channel {channel:?}: {source}")]
    InvalidChannel {
        /// The name given.
        channel: String,
        /// Why it is invalid.
        source: ChannelError,
    },
    /// The broadcast named no channel.
    #[error("a broadcast needs at least one channel")]
    NoChannels,
    /// The broadcast has no event name, or an unusable one.
    #[error("invalid event name: {0}")]
    InvalidEvent(String),
    /// The payload could not be serialised as JSON.
    #[error("payload is not serialisable as JSON: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A helper or facade was used before a manager was installed.
    #[error("no broadcast manager installed: call rustaxum::broadcasting::install(manager) or build a Rustaxum first")]
    NotInstalled,
    /// The default manager could not be built from the environment.
    #[error("broadcasting configuration: {0}")]
    Config(String),
    /// A driver could not deliver (a custom driver's own message).
    #[error("driver [{driver}] failed: {message}")]
    Failed {
        /// The driver's name.
        driver: String,
        /// What went wrong.
        message: String,
    },
    /// A driver did not finish in time.
    #[error("driver [{driver}] timed out after {after:?}")]
    Timeout {
        /// The driver's name.
        driver: String,
        /// The time limit.
        after: Duration,
    },
    /// A driver's backend is unreachable right now; retry later.
    #[error("driver [{driver}] is unavailable: {reason}")]
    Unavailable {
        /// The driver's name.
        driver: String,
        /// Why.
        reason: String,
    },
    /// The cluster backend (Redis) failed; retry later.
    #[error("driver [redis] is unavailable: {0}")]
    Backend(#[source] BackendError),
    /// The background queue is full; the broadcast was not accepted.
    #[error("broadcast queue is full ({0} jobs pending)")]
    QueueFull(usize),
    /// The background queue is shut down.
    #[error("broadcast queue is closed")]
    QueueClosed,
}

impl From<BackendError> for BroadcastError {
    /// The cluster backend (Redis) failed: the `redis` driver is unavailable for now.
    fn from(e: BackendError) -> Self {
        Self::Backend(e)
    }
}

/// Parses channel names, failing on the first invalid one.
pub(crate) fn parse_channels<I, S>(names: I) -> Result<Vec<Channel>, BroadcastError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    names
        .into_iter()
        .map(|n| {
            Channel::parse(n.as_ref()).map_err(|source| BroadcastError::InvalidChannel {
                channel: n.as_ref().chars().take(200).collect(),
                source,
            })
        })
        .collect()
}
