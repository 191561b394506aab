//! Grants: what a connection may do on a channel it joins.
//!
//! Authorizing a channel yields a [`Grant`], not just a kind: the kind (from the rules),
//! the presence identity, whether client events are allowed and how many, the most
//! connections the channel takes, whether messages are kept in history. The channel rules
//! fill it for ordinary channels; a [`GrantSource`] (e.g. a registry of managed channels)
//! can fill it from its own settings and state for the channels it owns.

use crate::auth::Identity;
use crate::channel::{Channel, ChannelKind};
use crate::presence::Member;

use super::JoinError;

/// What a connection may do on one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The channel, with the kind it is known by.
    pub channel: Channel,
    /// The member this connection is on a presence channel.
    pub member: Option<Member>,
    /// Whether the connection may send client events (never on public channels).
    pub client_events: bool,
    /// Client events per minute per connection on this channel, when the channel has a
    /// limit of its own (beside the connection's per-second limit).
    pub client_events_per_minute: Option<u32>,
    /// Most connections the channel takes, `None` for no limit of its own.
    pub max_connections: Option<usize>,
    /// Whether messages on the channel are kept in history.
    pub history: bool,
}

impl Grant {
    /// The default grant for `channel` of its kind: client events on private and presence
    /// channels, no limits of its own, no history.
    pub fn for_channel(channel: Channel, member: Option<Member>) -> Self {
        Self {
            client_events: channel.kind() != ChannelKind::Public,
            channel,
            member,
            client_events_per_minute: None,
            max_connections: None,
            history: false,
        }
    }
}

/// How the client proves it may join.
#[derive(Debug, Clone)]
pub enum JoinAs {
    /// With the connection's own identity (its token), checked against the rules.
    User,
    /// Without credentials: only public channels.
    Public,
    /// The protocol verified an app-signed authorization (Pusher's HMAC `auth`); the kind is
    /// the one the client spelled, as long as the rules do not say otherwise. For presence
    /// channels the signature covers `member`.
    Signed {
        /// The member the signature vouches for (presence channels).
        member: Option<Member>,
    },
    /// A service of the server decided itself (a room it checked membership of): this
    /// grant, with neither grant sources nor rules consulted.
    Granted(Box<Grant>),
    /// A typed-frame client's topic: where a grant source or a rule names the channel, it
    /// decides (as [`User`](Self::User)); a topic nothing names is open to authenticated
    /// connections, who may also publish to it once subscribed (the real-time service's
    /// document: clients subscribe to topics and broadcast to them). Anonymous
    /// connections get no such topic.
    Topic,
}

/// Fills grants for the channels it owns (managed channels, for instance). Consulted
/// before the channel rules.
///
/// ```
/// use std::sync::Arc;
/// use rustaxum::auth::Identity;
/// use rustaxum::server::{Grant, GrantSource, JoinError};
/// use rustaxum::Channel;
///
/// /// `rooms.{n}`: open to signed-in users, ten sockets each, no client events.
/// struct Rooms;
///
/// impl GrantSource for Rooms {
///     fn grant(&self, identity: Option<&Identity>, channel: &Channel) -> Option<Result<Grant, JoinError>> {
///         channel.name().strip_prefix("rooms.")?;
///         if identity.is_none() {
///             return Some(Err(JoinError::Forbidden(channel.name().to_string())));
///         }
///         let mut grant = Grant::for_channel(channel.clone(), None);
///         grant.client_events = false;
///         grant.max_connections = Some(10);
///         Some(Ok(grant))
///     }
/// }
/// // Rustaxum::builder(config).grant_source(Arc::new(Rooms)).build()
/// # let _: Arc<dyn GrantSource> = Arc::new(Rooms);
/// ```
pub trait GrantSource: Send + Sync {
    /// `None` when this source does not own `channel`; otherwise the grant or the refusal.
    fn grant(&self, identity: Option<&Identity>, channel: &Channel) -> Option<Result<Grant, JoinError>>;
}
