//! Everything a connection can be refused for, as typed errors. Each carries a stable
//! machine code ([`Refusal::code`]) and a message for humans (`Display`). Protocols map
//! the codes to their own wire codes (which tell their clients whether to reconnect), each
//! in one table.

use crate::auth::TokenError;
use crate::backend::BackendError;
use crate::channel::ChannelKind;

/// The stable machine code of a refusal. Each protocol maps it to its own wire code in one
/// `match` without a fallback arm, so a new code fails to compile until every protocol
/// says what it means there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Code {
    /// The server is shutting down.
    ShuttingDown,
    /// The node's connection limit.
    OverCapacity,
    /// The app's connection quota.
    OverQuota,
    /// The user's connection limit.
    UserOverQuota,
    /// Authentication is needed, or the token does not verify.
    Unauthorized,
    /// Not allowed.
    Forbidden,
    /// The client's spelling names another kind than the rules give the channel.
    WrongKind,
    /// Joined without credentials, but the channel is not public.
    NotPublic,
    /// A presence join without (or with an unusable) member.
    InvalidMember,
    /// The connection holds the most channels it may.
    TooManyChannels,
    /// The channel holds the most connections it may.
    ChannelFull,
    /// The presence store could not be reached.
    PresenceUnavailable,
    /// The presence channel has its app's most members.
    PresenceFull,
    /// The presence member's `user_info` is too large.
    MemberTooLarge,
    /// The channel does not exist.
    NotFound,
    /// The channel takes no sockets now.
    NotActive,
    /// The connection is closing.
    Closing,
    /// Not subscribed to the channel.
    NotSubscribed,
    /// The channel does not accept client events.
    ClientEventsForbidden,
    /// Client events on an end-to-end encrypted channel.
    EncryptedChannel,
    /// The app does not enable client events.
    ClientEventsDisabled,
    /// The event name is empty, lacks `client-`, is too long or holds control characters.
    InvalidEvent,
    /// Over a rate limit.
    RateLimited,
    /// The cluster could not carry it.
    Unavailable,
}

impl Code {
    /// The code as it is written on the wire and in logs, e.g. `forbidden`.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::ShuttingDown => "shutting_down",
            Self::OverCapacity => "over_capacity",
            Self::OverQuota => "over_quota",
            Self::UserOverQuota => "user_over_quota",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::WrongKind => "wrong_kind",
            Self::NotPublic => "not_public",
            Self::InvalidMember => "invalid_member",
            Self::TooManyChannels => "too_many_channels",
            Self::ChannelFull => "channel_full",
            Self::PresenceUnavailable => "presence_unavailable",
            Self::PresenceFull => "presence_full",
            Self::MemberTooLarge => "member_too_large",
            Self::NotFound => "not_found",
            Self::NotActive => "not_active",
            Self::Closing => "closing",
            Self::NotSubscribed => "not_subscribed",
            Self::ClientEventsForbidden => "client_events_forbidden",
            Self::EncryptedChannel => "encrypted_channel",
            Self::ClientEventsDisabled => "client_events_disabled",
            Self::InvalidEvent => "invalid_event",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The common face of every refusal.
pub(crate) trait Refusal: std::fmt::Display {
    /// Its stable machine code.
    fn code(&self) -> Code;
}

/// A connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The server is draining or shutting down: connect to another node.
    #[error("server is shutting down: connect to another node")]
    ShuttingDown,
    /// `BROADCAST_MAX_CONNECTIONS` sockets are open or opening.
    #[error("connection limit of {0} reached")]
    OverCapacity(usize),
    /// The app's `max_connections` sockets are open or opening.
    #[error("app {app} is over its connection quota of {max}")]
    AppOverQuota {
        /// The app id.
        app: String,
        /// Its quota.
        max: usize,
    },
    /// The user already has `BROADCAST_MAX_CONNECTIONS_PER_USER` sockets open on this node.
    #[error("this user already has {0} connections open (BROADCAST_MAX_CONNECTIONS_PER_USER)")]
    UserOverQuota(usize),
}

impl Refusal for ConnectError {
    fn code(&self) -> Code {
        match self {
            Self::ShuttingDown => Code::ShuttingDown,
            Self::OverCapacity(_) => Code::OverCapacity,
            Self::AppOverQuota { .. } => Code::OverQuota,
            Self::UserOverQuota(_) => Code::UserOverQuota,
        }
    }
}

/// A channel join was refused; nothing of it remains (all or nothing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The channel needs an authenticated user and the connection has none.
    #[error("channel {0} requires authentication")]
    Unauthenticated(String),
    /// No rule allows this user on this channel.
    #[error("not allowed to join channel {0}")]
    Forbidden(String),
    /// The client's spelling names another kind than the rules give the channel
    /// (`private-general` for the public `general`).
    #[error("{channel} is a {actual} channel, not {spelled}")]
    WrongKind {
        /// The channel.
        channel: String,
        /// The kind the rules give it.
        actual: ChannelKind,
        /// The kind the client's spelling asked for.
        spelled: ChannelKind,
    },
    /// Joined without credentials, but the channel is not public.
    #[error("{0} is not a public channel")]
    NotPublic(String),
    /// A presence join without the member's identity.
    #[error("a presence channel needs the member's user_id")]
    MissingMember,
    /// The connection already holds the most channels it may.
    #[error("a connection may join at most {0} channels")]
    TooManyChannels(usize),
    /// The channel holds the most connections it may.
    #[error("channel {channel} is full ({max} connections)")]
    ChannelFull {
        /// The channel.
        channel: String,
        /// Its limit.
        max: usize,
    },
    /// The presence store could not be reached.
    #[error("{0}")]
    PresenceUnavailable(String),
    /// The presence channel has its app's most members.
    #[error("presence channel {channel} has the most members it may ({max})")]
    PresenceFull {
        /// The channel.
        channel: String,
        /// The app's limit.
        max: usize,
    },
    /// The member's `user_info` is larger than its app allows.
    #[error("the presence member's user_info is {size} bytes; the limit is {max}")]
    MemberTooLarge {
        /// Its size in bytes (JSON).
        size: usize,
        /// The app's limit.
        max: usize,
    },
    /// The channel does not exist (a managed channel's id that is unknown).
    #[error("channel {0} not found")]
    NotFound(String),
    /// The channel exists but takes no sockets now (a managed channel not started, or
    /// stopped).
    #[error("channel {0} is not active")]
    NotActive(String),
    /// The connection is closing.
    #[error("connection is closing")]
    Closing,
}

impl Refusal for JoinError {
    fn code(&self) -> Code {
        match self {
            Self::Unauthenticated(_) => Code::Unauthorized,
            Self::Forbidden(_) => Code::Forbidden,
            Self::WrongKind { .. } => Code::WrongKind,
            Self::NotPublic(_) => Code::NotPublic,
            Self::MissingMember => Code::InvalidMember,
            Self::TooManyChannels(_) => Code::TooManyChannels,
            Self::ChannelFull { .. } => Code::ChannelFull,
            Self::PresenceUnavailable(_) => Code::PresenceUnavailable,
            Self::PresenceFull { .. } => Code::PresenceFull,
            Self::MemberTooLarge { .. } => Code::MemberTooLarge,
            Self::NotFound(_) => Code::NotFound,
            Self::NotActive(_) => Code::NotActive,
            Self::Closing => Code::Closing,
        }
    }
}

/// Leaving a channel failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaveError {
    /// The connection has not joined that channel.
    #[error("not subscribed to this channel")]
    NotSubscribed,
}

impl Refusal for LeaveError {
    fn code(&self) -> Code {
        Code::NotSubscribed
    }
}

/// A client event was refused and delivered to nobody.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientEventError {
    /// The connection has not joined the channel.
    #[error("join the channel before sending client events")]
    NotSubscribed,
    /// The channel does not accept client events (public channels never do).
    #[error("client events are only allowed on private and presence channels")]
    Forbidden,
    /// The channel is end-to-end encrypted (`private-encrypted-*`).
    #[error("client events are not allowed on encrypted channels")]
    Encrypted,
    /// The app does not enable client events (Pusher's `enable_client_events`).
    #[error("client events are not enabled for this app")]
    Disabled,
    /// The event name is empty, lacks `client-`, or is too long.
    #[error("event name is empty or too long")]
    InvalidEvent,
    /// More client events than the connection may send (the limit, e.g. `10 per second`).
    #[error("client events are limited to {0}; this one was not delivered")]
    RateLimited(String),
    /// The cluster could not carry it.
    #[error("{0}")]
    Unavailable(BackendError),
}

impl Refusal for ClientEventError {
    fn code(&self) -> Code {
        match self {
            Self::NotSubscribed => Code::NotSubscribed,
            Self::Forbidden => Code::ClientEventsForbidden,
            Self::Encrypted => Code::EncryptedChannel,
            Self::Disabled => Code::ClientEventsDisabled,
            Self::InvalidEvent => Code::InvalidEvent,
            Self::RateLimited(_) => Code::RateLimited,
            Self::Unavailable(_) => Code::Unavailable,
        }
    }
}

/// A token refresh was refused; the connection keeps its current identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// The token does not verify (or no key is configured).
    #[error("{0}")]
    Invalid(TokenError),
    /// The new token names another user than the connection's.
    #[error("{}", TokenError::DifferentUser)]
    DifferentUser,
}

impl Refusal for RefreshError {
    fn code(&self) -> Code {
        match self {
            Self::Invalid(_) => Code::Unauthorized,
            Self::DifferentUser => Code::Forbidden,
        }
    }
}
