//! The real-time communication service (no axum here): typed frames over WebSocket,
//! topics (hub channels, shared with every protocol), direct messages between users,
//! rooms, and rate limits at every level. The wire protocol is in
//! `protocol::rtc`; this module holds what it shares between connections and nodes.
//!
//! - [`connection`]: one connection's part: online, its rooms, entering and leaving.
//! - [`direct`]: direct messages between users (on every node).
//! - [`rooms`]: rooms and their members.
//! - [`limits`]: per connection, per user, per topic and global rate limits.
//! - [`records`]: compare-and-set records in memory or Redis, which rooms live in.

mod config;
pub mod connection;
pub mod direct;
pub mod limits;
pub mod records;
pub mod rooms;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{RtcConfig, DEFAULT_MAX_ROOMS_PER_USER};
pub use connection::{Authenticated, Connection, EnterError, Entered};
pub use direct::{DirectMessageError, DIRECT_MESSAGE_EVENT};
pub use limits::{Level, Limiter, RateLimits};
pub use rooms::{NewRoom, Room, RoomError, Rooms};

use crate::cluster::redis::RedisBroker;
use crate::hub::SocketId;
use crate::presence::{Member, Presence, PresenceError, PresenceStore};
use crate::session::Node;
use records::{MemoryRecords, RedisRecords};

/// Where online typed-frame users are counted (a presence-store key per user).
const ONLINE_PREFIX: &str = "rtc.online.";

/// The typed-frame service of one node.
pub struct Rtc {
    rooms: Rooms,
    limiter: Limiter,
    config: RtcConfig,
}

impl std::fmt::Debug for Rtc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rtc")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Rtc {
    /// The service of a node: rooms and shared rate limits in memory, or in Redis when
    /// the node is part of a cluster.
    pub fn new(config: RtcConfig, cluster: Option<&Arc<RedisBroker>>) -> Arc<Self> {
        let (rooms, limiter) = match cluster {
            Some(broker) => (
                Rooms::new(
                    Arc::new(RedisRecords::new(broker.link().clone())),
                    config.max_rooms_per_user,
                ),
                Limiter::clustered(config.limits, broker.link().clone()),
            ),
            None => (
                Rooms::new(Arc::new(MemoryRecords::default()), config.max_rooms_per_user),
                Limiter::local(config.limits),
            ),
        };
        Arc::new(Self { rooms, limiter, config })
    }

    /// The configuration.
    pub fn config(&self) -> &RtcConfig {
        &self.config
    }

    /// The rooms.
    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    /// The shared rate limits.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// Records that `user` has typed-frame socket `socket` open (on any node, for
    /// [`is_online`](Self::is_online)).
    pub async fn online(&self, node: &Node, user: &Member, socket: SocketId) -> Result<(), PresenceError> {
        let store = node.presence().store();
        store
            .join(&format!("{ONLINE_PREFIX}{}", user.user_id), user, socket)
            .await
            .map(|_| ())
    }

    /// Records that the socket closed.
    pub async fn offline(&self, node: &Node, user: &str, socket: SocketId) {
        let store: &Arc<dyn PresenceStore> = node.presence().store();
        if let Err(e) = store.leave(&format!("{ONLINE_PREFIX}{user}"), user, socket).await {
            tracing::debug!(user, error = %e, "forgetting an online socket failed (its node's liveness will)");
        }
    }

    /// Whether `user` has a typed-frame socket open on any node.
    pub async fn is_online(&self, node: &Node, user: &str) -> Result<bool, PresenceError> {
        let members = node
            .presence()
            .store()
            .members(&format!("{ONLINE_PREFIX}{user}"))
            .await?;
        Ok(!members.is_empty())
    }

    /// Starts the background work: the rooms' grace period and the limiter's clean-up.
    pub fn start(self: &Arc<Self>, presence: Presence, stop: CancellationToken, tasks: &TaskTracker) {
        let this = self.clone();
        let every = (self.config.room_grace / 4).clamp(Duration::from_millis(250), Duration::from_secs(15));
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                this.limiter.sweep();
                if let Err(e) = this.sweep_rooms(&presence).await {
                    tracing::warn!(error = %e, "sweeping rooms failed; trying again later");
                }
            }
        });
    }

    /// Applies the grace period to every room now.
    pub async fn sweep_rooms(&self, presence: &Presence) -> Result<(usize, usize), RoomError> {
        // Who has a socket in each room, on any node (the room's presence channel).
        let mut present: HashMap<String, Option<Vec<String>>> = HashMap::new();
        for name in self.rooms.names().await? {
            let here = match rooms::room_channel(&name) {
                Some(channel) => match presence.members(channel.name()).await {
                    Ok(members) => Some(members.into_iter().map(|m| m.user_id).collect()),
                    // Unknown: mark nobody away on a guess.
                    Err(_) => None,
                },
                None => None,
            };
            present.insert(name, here);
        }
        let grace = chrono::Duration::from_std(self.config.room_grace).unwrap_or(chrono::Duration::MAX);
        let lookup = move |room: &Room| present.get(&room.name).cloned().flatten();
        self.rooms.sweep(grace, &lookup).await
    }
}
