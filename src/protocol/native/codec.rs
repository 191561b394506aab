//! The native protocol's frames.
//!
//! Server frames: `{"channel","event","data","timestamp"}` (plus `position` on channels
//! with history). Client frames carry an `action`: `ping`, `subscribe`, `unsubscribe`,
//! `whisper`, `refresh`. Refusals are events named `error` (or `subscription_error`) with
//! `{"code","error","message"}`, where `error` is the core's refusal code and `code` its
//! HTTP-like number from [`status`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::channel::ChannelKind;
use crate::hub::{now_rfc3339, Envelope, EnvelopeKind, Position};
use crate::presence::Member;
use crate::session::Code;

/// What a native client can be told went wrong: a refusal of the core, or a frame this
/// protocol could not read. Each has its code (`error`) and HTTP-like number (`code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The core refused (join, leave, whisper, refresh, admission).
    Refused(Code),
    /// The frame is not JSON.
    InvalidJson,
    /// The frame is JSON but not a known action.
    InvalidFrame,
    /// The channel name is not a channel name.
    InvalidChannel,
    /// A binary frame.
    BinaryNotSupported,
}

impl Failure {
    /// The code in `error` data.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Refused(code) => code.as_str(),
            Self::InvalidJson => "invalid_json",
            Self::InvalidFrame => "invalid_frame",
            Self::InvalidChannel => "invalid_channel",
            Self::BinaryNotSupported => "binary_not_supported",
        }
    }

    /// The number in `error` data (and the HTTP status of a refused upgrade).
    pub(crate) fn status(self) -> u16 {
        match self {
            Self::Refused(code) => status(code),
            Self::InvalidJson => 400,
            Self::BinaryNotSupported => 415,
            Self::InvalidFrame | Self::InvalidChannel => 422,
        }
    }
}

impl From<Code> for Failure {
    fn from(code: Code) -> Self {
        Self::Refused(code)
    }
}

/// The number a core refusal gets (the one table from the core's codes to this protocol's;
/// no fallback arm, so a new code must be given its number here).
pub(crate) fn status(code: Code) -> u16 {
    match code {
        Code::Unauthorized => 401,
        Code::Forbidden | Code::WrongKind | Code::NotPublic | Code::ClientEventsForbidden => 403,
        Code::ClientEventsDisabled | Code::EncryptedChannel => 403,
        Code::NotSubscribed | Code::NotFound => 404,
        Code::NotActive => 409,
        Code::TooManyChannels | Code::RateLimited | Code::ChannelFull | Code::PresenceFull => 429,
        Code::UserOverQuota => 429,
        Code::PresenceUnavailable | Code::Unavailable | Code::OverCapacity | Code::OverQuota => 503,
        Code::ShuttingDown | Code::Closing => 503,
        Code::InvalidMember | Code::InvalidEvent | Code::MemberTooLarge => 422,
    }
}

/// A server frame of the native protocol.
#[derive(Serialize)]
struct ServerFrame<'a, D: Serialize + ?Sized> {
    channel: &'a str,
    event: &'a str,
    data: &'a D,
    timestamp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<&'a Position>,
}

fn serialise<D: Serialize + ?Sized>(frame: &ServerFrame<'_, D>) -> Option<String> {
    serde_json::to_string(frame)
        .map_err(|e| tracing::error!(error = %e, "encoding a native frame failed"))
        .ok()
}

/// A frame the server sends now (replies, refusals).
pub(crate) fn frame<D: Serialize + ?Sized>(channel: &str, event: &str, data: &D) -> String {
    let timestamp = now_rfc3339();
    serialise(&ServerFrame {
        channel,
        event,
        data,
        timestamp: &timestamp,
        position: None,
    })
    .unwrap_or_default()
}

/// A hub message as a native frame (once per message, shared by every native socket).
pub(crate) fn encode(envelope: &Envelope) -> Option<String> {
    if matches!(envelope.kind, EnvelopeKind::SubscriptionCount | EnvelopeKind::Watchlist) {
        // Pusher clients' business.
        return None;
    }
    serialise(&ServerFrame {
        channel: envelope.channel.local_name(),
        event: &envelope.event,
        data: &*envelope.data,
        timestamp: &envelope.timestamp,
        position: envelope.position.as_ref(),
    })
}

/// `{"code","error","message"}` of `error` and `subscription_error` events.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorData<'a> {
    /// The HTTP-like number.
    pub code: u16,
    /// The refusal code.
    pub error: &'a str,
    /// For humans.
    pub message: &'a str,
}

/// An `error` (or `subscription_error`) event for refusal `code`.
pub(crate) fn refusal(channel: &str, event: &str, failure: impl Into<Failure>, message: &str) -> String {
    let failure = failure.into();
    let data = ErrorData {
        code: failure.status(),
        error: failure.as_str(),
        message,
    };
    frame(channel, event, &data)
}

/// Data of `connection_established`.
#[derive(Debug, Serialize)]
pub(crate) struct ConnectionEstablished<'a> {
    /// The socket id (for `socket_id` exclusion when publishing).
    pub socket_id: String,
    /// Seconds of silence before the server pings.
    pub activity_timeout: u64,
    /// The authenticated user.
    pub user_id: Option<&'a str>,
}

/// Data of `subscription_succeeded`.
#[derive(Debug, Serialize)]
pub(crate) struct SubscriptionSucceeded<'a> {
    /// The channel's canonical name.
    pub channel: &'a str,
    /// Its kind.
    pub kind: ChannelKind,
    /// The socket id.
    pub socket_id: String,
    /// Subscribers on this node.
    pub subscribers: usize,
    /// Presence: the members.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<&'a [Member]>,
    /// Presence: how many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// Presence: this connection's member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub me: Option<&'a Member>,
    /// Channels with history: where the channel stands (its last message's position).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<&'a Position>,
    /// Subscribed with `since`: whether every missed message was sent (just before this).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// More were missed than one recovery sends (the newest were sent).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub capped: bool,
}

/// Data of `unsubscribed`.
#[derive(Debug, Serialize)]
pub(crate) struct Unsubscribed<'a> {
    /// The channel left.
    pub channel: &'a str,
}

/// Data of `token_refreshed`.
#[derive(Debug, Serialize)]
pub(crate) struct TokenRefreshed {
    /// The new token's `exp`.
    pub expires_at: Option<u64>,
}

/// A client frame.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "action", rename_all = "snake_case")]
pub(crate) enum ClientFrame {
    /// `{"action":"ping","data":..}`: answered with `pong` echoing `data`.
    Ping {
        /// Echoed back.
        #[serde(default)]
        data: Option<Value>,
        /// Echoed as the pong's channel.
        #[serde(default)]
        channel: Option<String>,
    },
    /// Join a channel.
    Subscribe {
        /// Its name.
        channel: String,
        /// The last position seen on it, to recover what was missed.
        #[serde(default)]
        since: Option<Position>,
    },
    /// Leave a channel.
    Unsubscribe {
        /// Its name.
        channel: String,
    },
    /// A client event to the channel's other subscribers.
    Whisper {
        /// The channel.
        channel: String,
        /// The event (`client-` is added when missing).
        event: String,
        /// Its data (default `{}`).
        #[serde(default)]
        data: Option<Value>,
    },
    /// A fresh token for the same user.
    Refresh {
        /// The JWT.
        token: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn client_frames_parse() {
        let cases = [
            (
                json!({"action": "ping"}),
                ClientFrame::Ping {
                    data: None,
                    channel: None,
                },
            ),
            (
                json!({"action": "subscribe", "channel": "news"}),
                ClientFrame::Subscribe {
                    channel: "news".into(),
                    since: None,
                },
            ),
            (
                json!({"action": "whisper", "channel": "c", "event": "typing", "data": {"x": 1}}),
                ClientFrame::Whisper {
                    channel: "c".into(),
                    event: "typing".into(),
                    data: Some(json!({"x": 1})),
                },
            ),
            (
                json!({"action": "refresh", "token": "t"}),
                ClientFrame::Refresh { token: "t".into() },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(serde_json::from_value::<ClientFrame>(input).unwrap(), expected);
        }
        for bad in [json!({"action": "dance"}), json!({"action": "subscribe"}), json!({})] {
            assert!(serde_json::from_value::<ClientFrame>(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn refusals_carry_code_error_and_message() {
        let f: Value = serde_json::from_str(&refusal("c", "error", Code::RateLimited, "slow down")).unwrap();
        assert_eq!(f["event"], "error");
        assert_eq!(
            f["data"],
            json!({"code": 429, "error": "rate_limited", "message": "slow down"})
        );
        assert!(f["timestamp"].as_str().unwrap().ends_with('Z'));
        for (failure, n) in [
            (Failure::from(Code::Unauthorized), 401),
            (Code::WrongKind.into(), 403),
            (Code::NotSubscribed.into(), 404),
            (Failure::InvalidChannel, 422),
        ] {
            assert_eq!(failure.status(), n, "{failure:?}");
        }
    }
}
