//! Pusher protocol v7 frames: `{"event","channel"?,"data"}` with `data` a JSON-encoded
//! string (errors carry an object), and the tables from the core's refusal codes to
//! Pusher's statuses and error codes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::channel::ChannelKind;
use crate::hub::{payload_text, Envelope, EnvelopeKind, Position};
use crate::session::Code;

/// Pusher close and error codes used here.
pub(crate) mod codes {
    /// Unknown app key.
    pub(crate) const UNKNOWN_APP: u16 = 4001;
    /// The app is disabled.
    pub(crate) const APP_DISABLED: u16 = 4003;
    /// The app is over its connection quota.
    pub(crate) const OVER_QUOTA: u16 = 4004;
    /// The protocol version is not a number.
    pub(crate) const INVALID_VERSION: u16 = 4006;
    /// The protocol version is not supported (5 to 7 are).
    pub(crate) const UNSUPPORTED_PROTOCOL: u16 = 4007;
    /// No protocol version was given.
    pub(crate) const NO_PROTOCOL: u16 = 4008;
    /// Unauthorized (failed `pusher:signin`, terminated, expired).
    pub(crate) const UNAUTHORIZED: u16 = 4009;
    /// The server is over capacity.
    pub(crate) const OVER_CAPACITY: u16 = 4100;
    /// Generic "reconnect immediately" (the server is shutting down).
    pub(crate) const RECONNECT: u16 = 4200;
    /// A client event was refused by the rate limit.
    pub(crate) const CLIENT_EVENT_RATE_LIMIT: u16 = 4301;
}

/// The close code of a refused connection, by the core's refusal code (no fallback arm:
/// a new code must be given its meaning here).
pub(crate) fn connect_code(code: Code) -> u16 {
    match code {
        Code::OverQuota | Code::UserOverQuota => codes::OVER_QUOTA,
        Code::ShuttingDown | Code::Closing => codes::RECONNECT,
        Code::OverCapacity | Code::Unavailable | Code::PresenceUnavailable => codes::OVER_CAPACITY,
        Code::Unauthorized | Code::Forbidden => codes::UNAUTHORIZED,
        Code::WrongKind
        | Code::NotPublic
        | Code::InvalidMember
        | Code::TooManyChannels
        | Code::ChannelFull
        | Code::PresenceFull
        | Code::MemberTooLarge
        | Code::NotFound
        | Code::NotActive
        | Code::NotSubscribed
        | Code::ClientEventsForbidden
        | Code::EncryptedChannel
        | Code::ClientEventsDisabled
        | Code::InvalidEvent
        | Code::RateLimited => codes::OVER_CAPACITY,
    }
}

/// The `status` of a `pusher:subscription_error`, by the core's refusal code.
pub(crate) fn subscription_status(code: Code) -> u16 {
    match code {
        Code::Unauthorized => 401,
        Code::Forbidden | Code::WrongKind | Code::NotPublic => 403,
        Code::TooManyChannels | Code::ChannelFull | Code::RateLimited => 429,
        Code::NotFound => 404,
        Code::NotActive => 409,
        Code::PresenceUnavailable | Code::Unavailable | Code::OverCapacity | Code::ShuttingDown | Code::Closing => 503,
        Code::OverQuota | Code::UserOverQuota => 429,
        // Pusher-compatible servers answer these limits with WebSocket-style codes.
        Code::PresenceFull => codes::OVER_CAPACITY,
        Code::MemberTooLarge => codes::CLIENT_EVENT_RATE_LIMIT,
        Code::InvalidMember
        | Code::InvalidEvent
        | Code::NotSubscribed
        | Code::ClientEventsForbidden
        | Code::EncryptedChannel
        | Code::ClientEventsDisabled => 400,
    }
}

/// The `code` of a `pusher:error` for a refused client event (only the rate limit has one).
pub(crate) fn client_event_code(code: Code) -> Option<u16> {
    match code {
        Code::RateLimited => Some(codes::CLIENT_EVENT_RATE_LIMIT),
        Code::ShuttingDown
        | Code::OverCapacity
        | Code::OverQuota
        | Code::UserOverQuota
        | Code::Unauthorized
        | Code::Forbidden
        | Code::WrongKind
        | Code::NotPublic
        | Code::InvalidMember
        | Code::TooManyChannels
        | Code::ChannelFull
        | Code::PresenceUnavailable
        | Code::PresenceFull
        | Code::MemberTooLarge
        | Code::NotFound
        | Code::NotActive
        | Code::Closing
        | Code::NotSubscribed
        | Code::ClientEventsForbidden
        | Code::EncryptedChannel
        | Code::ClientEventsDisabled
        | Code::InvalidEvent
        | Code::Unavailable => None,
    }
}

#[derive(Serialize)]
struct Out<'a, D: Serialize> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    data: D,
    /// The sending member of a client event on a presence channel (pusher-js: `metadata.user_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a crate::hub::Sender>,
    /// rustaxum's addition on channels with history (Pusher clients ignore it).
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<&'a Position>,
}

/// A server message.
pub(crate) fn message<D: Serialize>(event: &str, channel: Option<&str>, data: D) -> String {
    serde_json::to_string(&Out {
        event,
        channel,
        data,
        user_id: None,
        position: None,
    })
    .unwrap_or_default()
}

#[derive(Serialize)]
struct CacheMiss<'a> {
    event: &'static str,
    channel: &'a str,
}

/// `pusher:cache_miss`: Pusher sends it without `data`.
pub(crate) fn cache_miss(channel: &str) -> String {
    serde_json::to_string(&CacheMiss {
        event: "pusher:cache_miss",
        channel,
    })
    .unwrap_or_default()
}

/// A server message whose data is JSON encoded as a string, as Pusher sends it.
pub(crate) fn message_encoded<D: Serialize>(event: &str, channel: Option<&str>, data: &D) -> String {
    message(event, channel, serde_json::to_string(data).unwrap_or_default())
}

#[derive(Serialize)]
struct ErrorData<'a> {
    code: Option<u16>,
    message: &'a str,
}

/// `pusher:error`.
pub(crate) fn error(code: Option<u16>, text: &str) -> String {
    message("pusher:error", None, ErrorData { code, message: text })
}

#[derive(Serialize)]
struct SubscriptionErrorData<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    error: &'a str,
    status: u16,
}

/// `pusher:subscription_error` with an HTTP-like `status`.
pub(crate) fn subscription_error(channel: &str, status: u16, text: &str) -> String {
    let kind = match status {
        401 | 403 => "AuthError",
        codes::OVER_CAPACITY | codes::CLIENT_EVENT_RATE_LIMIT => "LimitReached",
        _ => "InvalidChannel",
    };
    message(
        "pusher:subscription_error",
        Some(channel),
        SubscriptionErrorData {
            kind,
            error: text,
            status,
        },
    )
}

#[derive(Deserialize)]
struct Removed {
    user_id: Value,
}

#[derive(Serialize)]
struct RemovedData<'a> {
    user_id: &'a Value,
}

/// A hub message as a Pusher frame (once per message, shared by every Pusher socket):
/// channel names in Pusher spelling, presence events as `pusher_internal:member_*`.
pub(crate) fn encode(envelope: &Envelope) -> Option<String> {
    let channel = crate::services::pusher::server_to_user_name(&envelope.channel)
        .unwrap_or_else(|| envelope.channel.pusher_name());
    let (event, data) = match envelope.kind {
        EnvelopeKind::SubscriptionCount => ("pusher_internal:subscription_count", envelope.data.get().into()),
        EnvelopeKind::Watchlist => {
            return serde_json::to_string(&Out {
                event: "pusher_internal:watchlist_events",
                channel: None,
                data: envelope.data.get(),
                user_id: None,
                position: None,
            })
            .ok()
        }
        // Byte for byte what the publisher gave (a Pusher SDK's string, Laravel's JSON).
        EnvelopeKind::Event => (
            envelope.event.as_ref(),
            payload_text(&envelope.data, envelope.text.as_deref()),
        ),
        EnvelopeKind::MemberAdded => ("pusher_internal:member_added", envelope.data.get().into()),
        EnvelopeKind::MemberRemoved => {
            let removed: Removed = serde_json::from_str(envelope.data.get()).ok()?;
            let data = serde_json::to_string(&RemovedData {
                user_id: &removed.user_id,
            })
            .ok()?;
            ("pusher_internal:member_removed", data.into())
        }
    };
    let user_id = match envelope.kind {
        EnvelopeKind::Event
            if envelope.channel.kind() == ChannelKind::Presence
                && envelope.event.starts_with(crate::session::CLIENT_EVENT_PREFIX) =>
        {
            envelope.sender.as_ref()
        }
        _ => None,
    };
    serde_json::to_string(&Out {
        event,
        channel: Some(&channel),
        data,
        user_id,
        position: envelope.position.as_ref(),
    })
    .ok()
}

/// A client message.
#[derive(Debug, Deserialize)]
pub(crate) struct Incoming {
    /// The event, e.g. `pusher:subscribe` or `client-typing`.
    pub event: String,
    /// The channel (client events).
    #[serde(default)]
    pub channel: Option<String>,
    /// The data (an object, or for some clients the same JSON-encoded as a string), as
    /// the client wrote it: a client event passes it on byte for byte.
    #[serde(default)]
    pub data: Option<Box<serde_json::value::RawValue>>,
}

/// The data of `pusher:subscribe`.
#[derive(Debug, Deserialize)]
pub(crate) struct SubscribeData {
    /// The channel, Pusher spelling.
    pub channel: String,
    /// `key:signature` for private and presence channels.
    #[serde(default)]
    pub auth: Option<String>,
    /// Presence: the member, JSON-encoded.
    #[serde(default)]
    pub channel_data: Option<String>,
    /// rustaxum's opt-in: the last position seen, to recover what was missed.
    #[serde(default)]
    pub since: Option<Position>,
}

/// An id that may be a string or a number.
pub(crate) fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Channel;
    use crate::hub::{Hub, Message, Protocol};
    use serde_json::json;
    use serde_json::value::RawValue;
    use std::sync::Arc;

    fn envelope(channel: &str, kind: EnvelopeKind, data: Value) -> Arc<Envelope> {
        let hub = Hub::default();
        let channel = Channel::parse(channel).unwrap();
        let (conn, mut rx) = hub.connect(Protocol::Pusher);
        hub.subscribe(&conn, &channel).unwrap();
        let raw: Arc<RawValue> = Arc::from(serde_json::value::to_raw_value(&data).unwrap());
        hub.deliver(Message::event(channel, "evt", raw).kind(kind));
        rx.try_recv().unwrap()
    }

    #[test]
    fn hub_messages_become_pusher_frames() {
        let f: Value =
            serde_json::from_str(&encode(&envelope("private-user.1", EnvelopeKind::Event, json!({"a": 1}))).unwrap())
                .unwrap();
        assert_eq!(
            f,
            json!({"event": "evt", "channel": "private-user.1", "data": "{\"a\":1}"})
        );
        let f: Value =
            serde_json::from_str(&encode(&envelope("general", EnvelopeKind::Event, json!("plain"))).unwrap()).unwrap();
        assert_eq!(f["data"], "plain", "a string payload is sent as its text");
        let member = json!({"user_id": "7", "user_info": {"name": "Ann"}});
        let f: Value =
            serde_json::from_str(&encode(&envelope("presence-chat", EnvelopeKind::MemberRemoved, member)).unwrap())
                .unwrap();
        assert_eq!(f["event"], "pusher_internal:member_removed");
        assert_eq!(f["channel"], "presence-chat");
        assert_eq!(f["data"], "{\"user_id\":\"7\"}");
    }

    #[test]
    fn refusal_tables() {
        assert_eq!(subscription_status(Code::WrongKind), 403);
        assert_eq!(subscription_status(Code::Unauthorized), 401);
        assert_eq!(subscription_status(Code::InvalidMember), 400);
        assert_eq!(client_event_code(Code::RateLimited), Some(4301));
        assert_eq!(client_event_code(Code::NotSubscribed), None);
        assert_eq!(connect_code(Code::OverQuota), 4004);
        assert_eq!(connect_code(Code::OverCapacity), 4100);
        let e: Value = serde_json::from_str(&subscription_error("private-x", 401, "bad")).unwrap();
        assert_eq!(e["data"], json!({"type": "AuthError", "error": "bad", "status": 401}));
    }
}
