//! Presence: who is on a presence channel, per user rather than per connection.
//!
//! A user with two tabs is one member: [`PresenceStore::join`] says whether a socket is
//! the user's first on the channel (then `member_added` is published) and
//! [`PresenceStore::leave`] whether it was the last (then `member_removed`).
//! [`MemoryPresence`] keeps this in the process; [`RedisPresence`] shares it between the
//! nodes of a cluster.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::sync::Arc;

use async_trait::async_trait;

pub use memory::MemoryPresence;
#[cfg(feature = "redis")]
pub use redis::RedisPresence;

use crate::channel::Channel;
use crate::hub::{EnvelopeKind, Message, SocketId};
use crate::publish::Fanout;

/// Native event name when a user joins a presence channel.
pub const MEMBER_ADDED: &str = "member_added";
/// Native event name when a user's last connection leaves a presence channel.
pub const MEMBER_REMOVED: &str = "member_removed";

pub use crate::hub::{Member, UserId};

/// The outcome of a presence join.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceJoin {
    /// The channel's members, the joiner included, ordered by user id.
    pub members: Vec<Member>,
    /// Whether this was the user's first socket there (`member_added` was sent).
    pub added: bool,
}

/// The presence backend could not answer (the underlying error is the source).
#[derive(Debug, Clone, thiserror::Error)]
#[error("presence store unavailable: {0}")]
pub struct PresenceError(#[source] pub crate::backend::Failure);

impl PresenceError {
    /// A failure with no underlying error.
    pub fn new(context: impl Into<String>) -> Self {
        Self(crate::backend::Failure::new(context))
    }
}

/// Where presence state lives.
#[async_trait]
pub trait PresenceStore: Send + Sync {
    /// Records that `socket` of `member` joined `channel`; `true` when it is the user's
    /// first socket there.
    async fn join(&self, channel: &str, member: &Member, socket: SocketId) -> Result<bool, PresenceError>;

    /// Records that `socket` of `user_id` left `channel`; the member when it was the
    /// user's last socket there.
    async fn leave(&self, channel: &str, user_id: &str, socket: SocketId) -> Result<Option<Member>, PresenceError>;

    /// The channel's members, one per user, ordered by user id.
    async fn members(&self, channel: &str) -> Result<Vec<Member>, PresenceError>;
}

/// Joins and leaves presence channels and tells the other members (on every node).
#[derive(Clone)]
pub struct Presence {
    store: Arc<dyn PresenceStore>,
    fanout: Fanout,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence").finish_non_exhaustive()
    }
}

impl Presence {
    /// Presence over `store`, announcing through `fanout` (to the whole cluster).
    pub fn new(store: Arc<dyn PresenceStore>, fanout: Fanout) -> Self {
        Self { store, fanout }
    }

    /// Adds `socket`'s user and returns the member list (the joiner included). The other
    /// members get `member_added` if this is the user's first socket on the channel.
    pub async fn join(
        &self,
        socket: SocketId,
        channel: &Channel,
        member: &Member,
    ) -> Result<PresenceJoin, PresenceError> {
        let added = self.store.join(channel.name(), member, socket).await?;
        if added {
            let kind = EnvelopeKind::MemberAdded;
            self.announce(channel, MEMBER_ADDED, member, Some(socket), kind).await;
        }
        let members = self.store.members(channel.name()).await?;
        Ok(PresenceJoin { members, added })
    }

    /// Removes `socket` from `channel`; the others get `member_removed` if it was the
    /// user's last socket. Returns the member who left, if the user did.
    pub async fn leave(&self, socket: SocketId, channel: &Channel, user_id: &str) -> Option<Member> {
        match self.store.leave(channel.name(), user_id, socket).await {
            Ok(Some(member)) => {
                let kind = EnvelopeKind::MemberRemoved;
                self.announce(channel, MEMBER_REMOVED, &member, Some(socket), kind)
                    .await;
                Some(member)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(channel = %channel, error = %e, "presence leave failed");
                None
            }
        }
    }

    /// The members of a channel.
    pub async fn members(&self, channel: &str) -> Result<Vec<Member>, PresenceError> {
        self.store.members(channel).await
    }

    /// The store behind it (for services that track membership of their own, such as
    /// who is online).
    pub fn store(&self) -> &Arc<dyn PresenceStore> {
        &self.store
    }

    async fn announce(
        &self,
        channel: &Channel,
        event: &str,
        member: &Member,
        except: Option<SocketId>,
        kind: EnvelopeKind,
    ) {
        let raw = match serde_json::value::to_raw_value(member) {
            Ok(raw) => raw,
            Err(e) => return tracing::error!(error = %e, "encoding a presence event failed"),
        };
        let message = Message::event(channel.clone(), event, Arc::from(raw))
            .except(except)
            .kind(kind);
        if let Err(e) = self.fanout.publish(message).await {
            tracing::warn!(channel = %channel, error = %e, "announcing a presence change failed");
        }
    }
}
