//! Who may join which channel.
//!
//! Every join (native, and later Pusher and the other protocols) goes through a
//! [`ChannelAuthorizer`]. The default, [`AllowAll`], treats every channel as public;
//! JWT identities and Laravel-style rules plug in here.

use crate::channel::Channel;

/// The authenticated user behind a connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The user id (JWT `sub`).
    pub user_id: String,
    /// Public information shown to other presence members.
    pub user_info: serde_json::Value,
    /// Roles, e.g. `admin`.
    pub roles: Vec<String>,
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The channel needs an authenticated user and none was given.
    #[error("channel {0} requires authentication")]
    Unauthenticated(String),
    /// The user is authenticated but no rule allows this channel.
    #[error("not allowed to join channel {0}")]
    Forbidden(String),
}

impl AuthError {
    /// The HTTP status an upgrade refused for this reason gets.
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
    /// channel with its effective kind (rules may decide a native name is private).
    fn authorize(
        &self,
        identity: Option<&Identity>,
        channel: &Channel,
    ) -> Result<Channel, AuthError>;
}

/// Lets everybody join everything. The server's default until channel rules are
/// configured; do not use it where channels carry private data.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl ChannelAuthorizer for AllowAll {
    fn authorize(
        &self,
        _identity: Option<&Identity>,
        channel: &Channel,
    ) -> Result<Channel, AuthError> {
        Ok(channel.clone())
    }
}
