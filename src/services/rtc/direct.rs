//! Direct messages between users: a message to user `u` is an event on the hub channel
//! `user.{u}` (every connection of `u` on every node has joined it), sent only while `u`
//! has a typed-frame connection somewhere, within the user and global rate limits.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{Level, Rtc};
use crate::channel::Channel;
use crate::hub::{Message, SocketId};
use crate::session::Node;

/// The hub event of a direct message (native and Pusher clients on `user.{id}` see it).
pub const DIRECT_MESSAGE_EVENT: &str = "direct-message";
/// Longest user id a direct message may name.
pub const MAX_USER_ID: usize = 200;

/// Why a direct message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectMessageError {
    /// The target is not a user id.
    #[error("target_user must be 1 to 200 characters of a channel name")]
    InvalidTarget,
    /// A rate limit refused it.
    #[error("rate limit exceeded; this message was not sent")]
    RateLimited(Level),
    /// The target has no typed-frame connection on any node.
    #[error("user {0} has no connection; the message was not delivered")]
    Offline(String),
    /// The presence store or the broker could not be reached.
    #[error("{0}")]
    Unavailable(String),
}

impl DirectMessageError {
    /// The `Error` frame's code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidTarget => "invalid_user",
            Self::RateLimited(level) => level.code(),
            Self::Offline(_) => "user_offline",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl Rtc {
    /// Sends `payload` from user `from` (on socket `sender`, which does not get it back) to
    /// every connection of user `target`, on every node; yourself included, as long as you
    /// have another connection.
    pub async fn direct_message(
        &self,
        node: &Node,
        from: Arc<str>,
        sender: SocketId,
        target: &str,
        payload: Value,
    ) -> Result<(), DirectMessageError> {
        if target.is_empty() || target.len() > MAX_USER_ID {
            return Err(DirectMessageError::InvalidTarget);
        }
        self.limiter()
            .check(Some(&from), None)
            .await
            .map_err(DirectMessageError::RateLimited)?;
        let channel =
            Channel::parse(&crate::channel::user_channel(target)).map_err(|_| DirectMessageError::InvalidTarget)?;
        match self.is_online(node, target).await {
            Ok(true) => {}
            Ok(false) => return Err(DirectMessageError::Offline(target.to_string())),
            Err(e) => return Err(DirectMessageError::Unavailable(e.to_string())),
        }
        let data = json!({"from": from.as_ref(), "payload": payload});
        let raw = serde_json::value::to_raw_value(&data).map_err(|e| DirectMessageError::Unavailable(e.to_string()))?;
        let message = Message::event(channel, DIRECT_MESSAGE_EVENT, Arc::from(raw))
            .except(Some(sender))
            .sender(Some(crate::hub::Sender::text(from)));
        node.fanout()
            .publish(message)
            .await
            .map_err(|e| DirectMessageError::Unavailable(e.to_string()))?;
        Ok(())
    }
}
