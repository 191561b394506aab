//! Who may join which channel.
//!
//! - [`jwt`]: token verification ([`JwtVerifier`]) turning a JWT into an [`Identity`].
//! - [`rules`]: Laravel-style channel rules ([`ChannelRules`]), the default authorizer.
//!
//! Every join, on every protocol, goes through a [`ChannelAuthorizer`].

pub mod jwt;
pub mod rules;

pub use jwt::{JwtConfig, JwtVerifier, TokenError};
pub use rules::{ChannelRules, Params, Pattern, Shadowed};

use crate::channel::{Channel, ChannelKind};

/// The authenticated user behind a connection (from the JWT claims).
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The user id (`sub`).
    pub user_id: String,
    /// Public information shown to other presence members (`user_info`, or `{"name"}`).
    pub user_info: serde_json::Value,
    /// `roles`, e.g. `admin`.
    pub roles: Vec<String>,
    /// `permissions`.
    pub permissions: Vec<String>,
    /// `teams` the user belongs to.
    pub teams: Vec<String>,
    /// `orgs` the user belongs to.
    pub orgs: Vec<String>,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: Option<u64>,
}

impl Identity {
    /// Whether the user has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether the user has `permission`.
    pub fn has_permission(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission)
    }
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The channel needs an authenticated user and none was given.
    #[error("channel {0} requires authentication")]
    Unauthenticated(String),
    /// No rule allows this user on this channel.
    #[error("not allowed to join channel {0}")]
    Forbidden(String),
}

impl AuthError {
    /// The HTTP status an upgrade refused for this reason gets (401 or 403).
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Unauthenticated(_) => 401,
            Self::Forbidden(_) => 403,
        }
    }
}

/// Decides joins. Implementations must be cheap: this runs on every subscribe.
pub trait ChannelAuthorizer: Send + Sync {
    /// Allows or refuses `identity` (if any) joining `channel`. On success returns the
    /// channel with its effective kind (rules decide that `user.42` is private).
    fn authorize(&self, identity: Option<&Identity>, channel: &Channel) -> Result<Channel, AuthError>;

    /// The kind the rules give `channel`, whoever asks; `None` when no rule names it.
    ///
    /// Protocols whose clients choose a kind by spelling (Pusher's `private-`) use this to
    /// refuse a spelling that contradicts the rules, so nobody can join a public channel
    /// as a private one (and whisper on it). The default says nothing is known.
    fn kind_of(&self, _channel: &Channel) -> Option<ChannelKind> {
        None
    }

    /// Whether `channel` is this authorizer's to decide. A typed-frame topic that no
    /// authorizer reserves is open to authenticated connections (see
    /// the session core's `JoinAs::Topic`). The default reserves every
    /// channel, so an authorizer of your own keeps deciding them all.
    fn reserves(&self, _channel: &Channel) -> bool {
        true
    }
}

/// The channel a publisher means by `channel`: a name without a prefix is the kind the
/// rules give it (`user.42` is the private `private-user.42` its subscribers joined),
/// public where no rule names it; a prefixed name is that kind. Publishing is trusted
/// (the HTTP APIs, the app's driver, Redis): this only finds where the subscribers are.
pub fn addressed(authorizer: &dyn ChannelAuthorizer, channel: &Channel) -> Channel {
    if channel.kind() != ChannelKind::Public || channel.is_internal() {
        return channel.clone();
    }
    match authorizer.kind_of(channel) {
        Some(kind) if kind != ChannelKind::Public => channel.with_kind(kind),
        _ => channel.clone(),
    }
}

/// Lets everybody join everything, as public channels. For tests and trusted networks
/// only; the server uses [`ChannelRules`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl ChannelAuthorizer for AllowAll {
    fn authorize(&self, _identity: Option<&Identity>, channel: &Channel) -> Result<Channel, AuthError> {
        Ok(channel.clone())
    }

    fn kind_of(&self, channel: &Channel) -> Option<ChannelKind> {
        Some(channel.kind())
    }
}
