//! EmitHub's socket messages: `{"status","message","channel_id","timestamp","data"}` with
//! `status` one of `connected`, `denied`, `broadcast`, `client_message`, `error`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::emithub::model::HUB_PREFIX;
use crate::emithub::{BROADCAST_EVENT, CLIENT_MESSAGE_EVENT};
use crate::hub::{now_rfc3339, Envelope, EnvelopeKind};

/// One EmitHub message.
#[derive(Debug, Serialize)]
pub struct Out<'a> {
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
pub fn now(status: &str, message: &str, channel_id: &str, data: Value) -> String {
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

/// The payload of a relayed client message on the hub channel.
#[derive(Debug, Serialize, Deserialize)]
pub struct Relayed {
    /// What the client sent.
    pub text: String,
    /// The channel's name (shown in the relayed message).
    pub channel_name: String,
}

/// A hub message as an EmitHub message (once per message, shared by every EmitHub socket).
pub fn encode(envelope: &Envelope) -> Option<String> {
    if envelope.kind != EnvelopeKind::Event {
        return None;
    }
    let channel_id = envelope.channel.name().strip_prefix(HUB_PREFIX)?;
    let (status, message, data) = match envelope.event.as_ref() {
        BROADCAST_EVENT => {
            let b: Broadcast = serde_json::from_str(envelope.data.get()).ok()?;
            let data = match b.message_type.as_deref() {
                None | Some("Broadcast") => Value::Null,
                Some(other) => serde_json::json!({"message_type": other}),
            };
            ("broadcast", b.content, data)
        }
        CLIENT_MESSAGE_EVENT => {
            let r: Relayed = serde_json::from_str(envelope.data.get()).ok()?;
            let message = format!("Client message in {}: {}", r.channel_name, r.text);
            (
                "client_message",
                message,
                serde_json::json!({"original_message": r.text, "sender": "client"}),
            )
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
