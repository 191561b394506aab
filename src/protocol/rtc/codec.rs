//! Typed frames: `{"type": ..., "data": {...}}` both ways.
//!
//! Client: `Subscribe {topics}`, `Unsubscribe {topics}`, `Broadcast {topic, payload,
//! event?}`, `DirectMessage {target_user, payload}`, `Ping`, `RefreshToken {token}`,
//! `CreateRoom {room, max_members?, private?, invite?}`, `JoinRoom {room}`,
//! `LeaveRoom {room}`, `Presence {topic}`.
//!
//! Server: `Status {status, ...}`, `Broadcast {topic, event, payload, from, timestamp}`,
//! `DirectMessage {from, payload, timestamp}`, `Error {code, message}`, `Pong {timestamp}`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::hub::{now_rfc3339, Envelope, EnvelopeKind, Position};
use crate::services::rtc::rooms::ROOM_CHANNEL_PREFIX;

/// The event of a direct message on a user's channel.
pub(crate) use crate::services::rtc::DIRECT_MESSAGE_EVENT;
/// The event of a client's `Broadcast` without an `event` of its own (client events
/// carry the `client-` prefix on the hub).
pub(crate) const DEFAULT_CLIENT_EVENT: &str = "client-broadcast";

/// A client frame, parsed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ClientFrame {
    /// Join topics (recovering those with a last position seen).
    Subscribe(Vec<String>, std::collections::HashMap<String, Position>),
    /// Leave topics.
    Unsubscribe(Vec<String>),
    /// Publish into a topic.
    Broadcast {
        /// The topic.
        topic: String,
        /// The payload.
        payload: Value,
        /// An event name (`client-` is added when missing).
        event: Option<String>,
    },
    /// A message to every connection of a user.
    DirectMessage {
        /// The user.
        target_user: String,
        /// The payload.
        payload: Value,
    },
    /// Keep-alive.
    Ping,
    /// A fresh token for the same user.
    RefreshToken(String),
    /// Create a room (and join it).
    CreateRoom {
        /// Its name.
        room: String,
        /// Options.
        options: crate::services::rtc::NewRoom,
    },
    /// Join a room.
    JoinRoom(String),
    /// Leave a room.
    LeaveRoom(String),
    /// The members of a presence topic or room the connection is in.
    Presence {
        /// A topic (`presence.…`), or
        topic: Option<String>,
        /// a room.
        room: Option<String>,
    },
}

/// Why a frame could not be read: `(code, message)`.
pub(crate) type BadFrame = (&'static str, String);

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Topics {
    topics: Vec<String>,
    /// `Subscribe`: the last position seen per topic, to recover what was missed.
    #[serde(default)]
    since: std::collections::HashMap<String, Position>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastData {
    topic: String,
    payload: Value,
    #[serde(default)]
    event: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectData {
    target_user: String,
    payload: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenData {
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomData {
    room: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRoomData {
    room: String,
    #[serde(default)]
    max_members: Option<usize>,
    #[serde(default)]
    private: bool,
    #[serde(default)]
    invite: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceData {
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    room: Option<String>,
}

fn data<T: serde::de::DeserializeOwned>(kind: &str, data: Option<Value>) -> Result<T, BadFrame> {
    let data = data.ok_or_else(|| ("invalid_frame", format!("{kind} needs a data object")))?;
    serde_json::from_value(data).map_err(|e| ("invalid_frame", format!("{kind}: {e}")))
}

/// Reads a client frame.
pub(crate) fn parse(text: &str) -> Result<ClientFrame, BadFrame> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| ("invalid_json", format!("frame is not valid JSON: {e}")))?;
    let raw: Raw = serde_json::from_value(value).map_err(|e| {
        (
            "invalid_frame",
            format!("a frame is {{\"type\": ..., \"data\": {{...}}}}: {e}"),
        )
    })?;
    let kind = raw.kind.as_str();
    Ok(match kind {
        "Subscribe" => {
            let t = data::<Topics>(kind, raw.data)?;
            ClientFrame::Subscribe(t.topics, t.since)
        }
        "Unsubscribe" => ClientFrame::Unsubscribe(data::<Topics>(kind, raw.data)?.topics),
        "Broadcast" => {
            let d: BroadcastData = data(kind, raw.data)?;
            ClientFrame::Broadcast {
                topic: d.topic,
                payload: d.payload,
                event: d.event,
            }
        }
        "DirectMessage" => {
            let d: DirectData = data(kind, raw.data)?;
            ClientFrame::DirectMessage {
                target_user: d.target_user,
                payload: d.payload,
            }
        }
        "Ping" => ClientFrame::Ping,
        "RefreshToken" => ClientFrame::RefreshToken(data::<TokenData>(kind, raw.data)?.token),
        "CreateRoom" => {
            let d: CreateRoomData = data(kind, raw.data)?;
            ClientFrame::CreateRoom {
                room: d.room,
                options: crate::services::rtc::NewRoom {
                    max_members: d.max_members,
                    private: d.private,
                    invite: d.invite,
                },
            }
        }
        "JoinRoom" => ClientFrame::JoinRoom(data::<RoomData>(kind, raw.data)?.room),
        "LeaveRoom" => ClientFrame::LeaveRoom(data::<RoomData>(kind, raw.data)?.room),
        "Presence" => {
            let d: PresenceData = data(kind, raw.data)?;
            if d.topic.is_none() == d.room.is_none() {
                return Err(("invalid_frame", "Presence needs either topic or room".into()));
            }
            ClientFrame::Presence {
                topic: d.topic,
                room: d.room,
            }
        }
        other => {
            return Err((
                "unknown_type",
                format!(
                    "unknown frame type {other:?}: Subscribe, Unsubscribe, Broadcast, DirectMessage, Ping, \
                     RefreshToken, CreateRoom, JoinRoom, LeaveRoom or Presence"
                ),
            ))
        }
    })
}

fn frame(kind: &str, data: Value) -> String {
    json!({"type": kind, "data": data}).to_string()
}

/// `Status` with `status` and more fields.
pub(crate) fn status(status: &str, mut fields: Value) -> String {
    if let Value::Object(map) = &mut fields {
        map.insert("status".into(), Value::String(status.into()));
    }
    frame("Status", fields)
}

/// `Error {code, message}`, with the topic or room it is about when there is one.
pub(crate) fn error(code: &str, message: &str, about: Option<(&str, &str)>) -> String {
    let mut data = json!({"code": code, "message": message});
    if let (Some((key, value)), Value::Object(map)) = (about, &mut data) {
        map.insert(key.into(), Value::String(value.into()));
    }
    frame("Error", data)
}

/// `Pong {timestamp}`.
pub(crate) fn pong() -> String {
    frame("Pong", json!({"timestamp": now_rfc3339().as_ref()}))
}

#[derive(Serialize)]
struct Typed<'a, D: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: D,
}

#[derive(Serialize)]
struct BroadcastOut<'a> {
    topic: &'a str,
    event: &'a str,
    payload: &'a RawValue,
    from: Option<&'a str>,
    timestamp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<&'a Position>,
}

#[derive(Deserialize)]
struct DirectIn<'a> {
    from: Option<&'a str>,
    #[serde(borrow)]
    payload: &'a RawValue,
}

#[derive(Serialize)]
struct DirectOut<'a> {
    from: Option<&'a str>,
    payload: &'a RawValue,
    timestamp: &'a str,
}

/// A hub message as a typed frame (once per message, shared by every typed-frame socket).
pub(crate) fn encode(envelope: &Envelope) -> Option<String> {
    let channel = envelope.channel.local_name();
    match envelope.kind {
        // Pusher clients' business.
        EnvelopeKind::SubscriptionCount | EnvelopeKind::Watchlist => None,
        EnvelopeKind::MemberAdded | EnvelopeKind::MemberRemoved => {
            let member: Value = serde_json::from_str(envelope.data.get()).ok()?;
            let joined = envelope.kind == EnvelopeKind::MemberAdded;
            let mut data = json!({
                "user_id": member.get("user_id").cloned().unwrap_or(Value::Null),
                "user_info": member.get("user_info").cloned().unwrap_or(Value::Null),
            });
            if let Value::Object(map) = &mut data {
                match channel.strip_prefix(ROOM_CHANNEL_PREFIX) {
                    Some(room) => map.insert("room".into(), Value::String(room.into())),
                    None => map.insert("topic".into(), Value::String(channel.into())),
                };
            }
            Some(status(if joined { "member_joined" } else { "member_left" }, data))
        }
        EnvelopeKind::Event if envelope.event.as_ref() == DIRECT_MESSAGE_EVENT && channel.starts_with("user.") => {
            let dm: DirectIn<'_> = serde_json::from_str(envelope.data.get()).ok()?;
            serde_json::to_string(&Typed {
                kind: "DirectMessage",
                data: DirectOut {
                    from: dm.from.or(envelope.sender.as_ref().map(|s| &*s.id)),
                    payload: dm.payload,
                    timestamp: &envelope.timestamp,
                },
            })
            .ok()
        }
        EnvelopeKind::Event => serde_json::to_string(&Typed {
            kind: "Broadcast",
            data: BroadcastOut {
                topic: channel,
                event: &envelope.event,
                payload: &envelope.data,
                from: envelope.sender.as_ref().map(|s| &*s.id),
                timestamp: &envelope.timestamp,
                position: envelope.position.as_ref(),
            },
        })
        .ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse(r#"{"type":"Subscribe","data":{"topics":["a","b"]}}"#),
            Ok(ClientFrame::Subscribe(vec!["a".into(), "b".into()], Default::default()))
        );
        assert_eq!(parse(r#"{"type":"Ping"}"#), Ok(ClientFrame::Ping));
        assert_eq!(
            parse(r#"{"type":"DirectMessage","data":{"target_user":"7","payload":{"x":1}}}"#),
            Ok(ClientFrame::DirectMessage {
                target_user: "7".into(),
                payload: json!({"x": 1})
            })
        );
        for (text, code) in [
            ("nope", "invalid_json"),
            (r#"{"data":{}}"#, "invalid_frame"),
            (r#"{"type":"Dance","data":{}}"#, "unknown_type"),
            (r#"{"type":"Subscribe"}"#, "invalid_frame"),
            (r#"{"type":"Subscribe","data":{"topics":"a"}}"#, "invalid_frame"),
            (r#"{"type":"Broadcast","data":{"topic":"a"}}"#, "invalid_frame"),
            (
                r#"{"type":"DirectMessage","data":{"target_user":7,"payload":1}}"#,
                "invalid_frame",
            ),
            (r#"{"type":"JoinRoom","data":{"room":"a","extra":1}}"#, "invalid_frame"),
            (r#"{"type":"Presence","data":{}}"#, "invalid_frame"),
        ] {
            assert_eq!(parse(text).unwrap_err().0, code, "{text}");
        }
    }
}
