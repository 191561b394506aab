//! EmitHub's socket messages: `{"status","message","channel_id","timestamp","data"}` with
//! `status` one of `connected`, `denied`, `broadcast`, `client_message`, `error`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hub::{now_rfc3339, Envelope, EnvelopeKind, Position};
use crate::services::emithub::model::{RelayedPayload, HUB_PREFIX};
use crate::services::emithub::{BROADCAST_EVENT, CLIENT_MESSAGE_EVENT};

/// One EmitHub message.
#[derive(Debug, Serialize)]
pub(crate) struct Out<'a> {
    /// What it is.
    pub status: &'a str,
    /// For humans (or the broadcast's content).
    pub message: &'a str,
    /// The managed channel.
    pub channel_id: &'a str,
    /// When.
    pub timestamp: &'a str,
    /// Details, or `null`.
    pub data: Value,
}

/// A message the server sends now.
pub(crate) fn now(status: &str, message: &str, channel_id: &str, data: Value) -> String {
    let timestamp = now_rfc3339();
    serde_json::to_string(&Out {
        status,
        message,
        channel_id,
        timestamp: &timestamp,
        data,
    })
    .unwrap_or_default()
}

/// The payload of a REST broadcast on the hub channel.
#[derive(Debug, Deserialize)]
struct Broadcast {
    content: String,
    #[serde(default)]
    message_type: Option<String>,
}

/// `data` of a `broadcast` message.
fn broadcast_data(message_type: Option<&str>, position: Option<&Position>) -> Value {
    let mut data = serde_json::Map::new();
    if let Some(t) = message_type.filter(|t| *t != "Broadcast") {
        data.insert("message_type".into(), Value::String(t.to_string()));
    }
    if let Some(p) = position {
        data.insert("position".into(), serde_json::json!(p));
    }
    if data.is_empty() {
        Value::Null
    } else {
        Value::Object(data)
    }
}

/// `message` and `data` of a `client_message` message.
fn client_message(channel_name: &str, text: &str, position: Option<&Position>) -> (String, Value) {
    let mut data = serde_json::json!({"original_message": text, "sender": "client"});
    if let Some(p) = position {
        data["position"] = serde_json::json!(p);
    }
    (format!("Client message in {channel_name}: {text}"), data)
}

/// A hub message as an EmitHub message (once per message, shared by every EmitHub socket).
pub(crate) fn encode(envelope: &Envelope) -> Option<String> {
    if envelope.kind != EnvelopeKind::Event {
        return None;
    }
    let channel_id = envelope.channel.name().strip_prefix(HUB_PREFIX)?;
    let (status, message, data) = match envelope.event.as_ref() {
        BROADCAST_EVENT => {
            let b: Broadcast = serde_json::from_str(envelope.data.get()).ok()?;
            let data = broadcast_data(b.message_type.as_deref(), envelope.position.as_ref());
            ("broadcast", b.content, data)
        }
        CLIENT_MESSAGE_EVENT => {
            let r: RelayedPayload = serde_json::from_str(envelope.data.get()).ok()?;
            let (message, data) = client_message(&r.channel_name, &r.text, envelope.position.as_ref());
            ("client_message", message, data)
        }
        // Anything else published on the channel (the native API, a driver).
        other => {
            let data: Value = serde_json::from_str(envelope.data.get()).ok()?;
            let message = match &data {
                Value::String(s) => s.clone(),
                _ => String::new(),
            };
            (other, message, data)
        }
    };
    serde_json::to_string(&Out {
        status,
        message: &message,
        channel_id,
        timestamp: &envelope.timestamp,
        data,
    })
    .ok()
}
