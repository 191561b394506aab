//! EmitHub's data: managed channels, their settings and states, persisted messages.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A managed channel's state.
///
/// | state | new sockets | open sockets | REST broadcast |
/// |---|---|---|---|
/// | `Created` | refused (`denied`) | – | 409 |
/// | `Active` | accepted | receive | delivered |
/// | `Paused` | accepted | stay open, receive nothing | 409 (not held) |
/// | `Stopped` | refused (`denied`) | closed with 4010 | 409 |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ChannelStatus {
    /// Created, never started.
    Created,
    /// Emitting.
    Active,
    /// Sockets stay; nothing is emitted.
    Paused,
    /// Sockets closed; nothing is emitted.
    Stopped,
}

impl ChannelStatus {
    /// Whether new sockets may join.
    pub fn accepts_sockets(self) -> bool {
        matches!(self, Self::Active | Self::Paused)
    }
}

/// What can be done to a channel's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// `PUT /start`: from any state to Active.
    Start,
    /// `PUT /pause`: from Active (or Paused) to Paused.
    Pause,
    /// `PUT /stop`: from any state to Stopped.
    Stop,
}

impl Transition {
    /// The state after this transition from `from`, or `None` when it is not allowed.
    pub fn apply(self, from: ChannelStatus) -> Option<ChannelStatus> {
        use ChannelStatus::*;
        match (self, from) {
            (Self::Start, _) => Some(Active),
            (Self::Pause, Active | Paused) => Some(Paused),
            (Self::Pause, Created | Stopped) => None,
            (Self::Stop, _) => Some(Stopped),
        }
    }

    /// The verb, as in the URL.
    pub fn name(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Pause => "pause",
            Self::Stop => "stop",
        }
    }
}

/// A channel's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChannelSettings {
    /// Most sockets on the channel at once (on each node).
    pub max_connections: usize,
    /// Whether a client's text is relayed to the others as a `client_message`.
    pub allow_client_messages: bool,
    /// Whether messages are kept (history at `GET /channels/{id}/messages`).
    pub persist_messages: bool,
    /// Broadcasts per minute (through the REST API), and client messages per minute per
    /// socket.
    pub rate_limit_per_minute: u32,
}

/// Settings a request may leave out; what is missing takes the server's defaults (on
/// create) or stays as it is (on update).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    /// See [`ChannelSettings::max_connections`].
    pub max_connections: Option<usize>,
    /// See [`ChannelSettings::allow_client_messages`].
    pub allow_client_messages: Option<bool>,
    /// See [`ChannelSettings::persist_messages`].
    pub persist_messages: Option<bool>,
    /// See [`ChannelSettings::rate_limit_per_minute`].
    pub rate_limit_per_minute: Option<u32>,
}

impl ChannelSettings {
    /// These settings with `patch` applied.
    pub fn patched(&self, patch: &SettingsPatch) -> Self {
        Self {
            max_connections: patch.max_connections.unwrap_or(self.max_connections),
            allow_client_messages: patch.allow_client_messages.unwrap_or(self.allow_client_messages),
            persist_messages: patch.persist_messages.unwrap_or(self.persist_messages),
            rate_limit_per_minute: patch.rate_limit_per_minute.unwrap_or(self.rate_limit_per_minute),
        }
    }

    /// Checks the values a client chose.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("settings.max_connections must be at least 1".into());
        }
        if self.rate_limit_per_minute == 0 {
            return Err("settings.rate_limit_per_minute must be at least 1".into());
        }
        Ok(())
    }
}

/// Now, to the millisecond: the precision timestamps are shown and kept with, so a
/// channel reads back from the store exactly as it was (and sorts the same).
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(3)
}

/// RFC 3339 in UTC to the millisecond (`2024-06-01T10:35:00.000Z`), like every timestamp
/// the server sends.
pub mod rfc3339 {
    use super::*;
    use serde::Serializer;

    /// Serialises a time as `2024-06-01T10:35:00.123Z`.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    /// Reads any RFC 3339 time.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// A managed channel, as the REST API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ManagedChannel {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its description, if any.
    pub description: Option<String>,
    /// Its state.
    pub status: ChannelStatus,
    /// When it was created.
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
    /// Its settings.
    pub settings: ChannelSettings,
}

impl ManagedChannel {
    /// The hub channel its sockets join: `emithub.{id}`.
    pub fn hub_channel_name(&self) -> String {
        hub_channel_name(self.id)
    }
}

/// The hub channel of managed channel `id`.
pub fn hub_channel_name(id: Uuid) -> String {
    format!("{HUB_PREFIX}{id}")
}

/// Prefix of the hub channels EmitHub owns.
pub const HUB_PREFIX: &str = "emithub.";

/// A kept message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredMessage {
    /// Its id.
    pub id: Uuid,
    /// Its place in the channel's history, from 1.
    pub sequence: u64,
    /// The text.
    pub content: String,
    /// `Broadcast` for the REST API, `ClientMessage` for a client's text, or what the
    /// publisher said.
    pub message_type: String,
    /// When it was sent.
    #[serde(with = "rfc3339")]
    pub timestamp: DateTime<Utc>,
}

/// The payload of a broadcast on the hub channel `emithub.{id}` (event `broadcast`), as
/// kept in history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastPayload {
    /// The text.
    pub content: String,
    /// Its type.
    pub message_type: String,
    /// The message id.
    pub id: Uuid,
}

/// The payload of a client's relayed text on the hub channel (event `client-message`), as
/// kept in history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedPayload {
    /// What the client sent.
    pub text: String,
    /// The channel's name (shown in the relayed message).
    pub channel_name: String,
    /// The message id (kept messages list it).
    #[serde(default)]
    pub id: Option<Uuid>,
}

/// `message_type` of a client's relayed text in the history.
pub const CLIENT_MESSAGE_TYPE: &str = "ClientMessage";

impl StoredMessage {
    /// A message of a managed channel's history as the REST API lists it; `None` for
    /// one that is not a broadcast or a relayed client message.
    pub fn from_history(message: &crate::hub::Message) -> Option<Self> {
        let sequence = message.position.as_ref()?.offset;
        let timestamp = DateTime::parse_from_rfc3339(&message.timestamp)
            .ok()?
            .with_timezone(&Utc);
        let (id, content, message_type) = match message.event.as_ref() {
            crate::services::emithub::BROADCAST_EVENT => {
                let b: BroadcastPayload = serde_json::from_str(message.data.get()).ok()?;
                (b.id, b.content, b.message_type)
            }
            crate::services::emithub::CLIENT_MESSAGE_EVENT => {
                let r: RelayedPayload = serde_json::from_str(message.data.get()).ok()?;
                (r.id.unwrap_or_default(), r.text, CLIENT_MESSAGE_TYPE.to_string())
            }
            _ => return None,
        };
        Some(Self {
            id,
            sequence,
            content,
            message_type,
            timestamp,
        })
    }
}

/// A page of history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MessagePage {
    /// The messages.
    pub messages: Vec<StoredMessage>,
    /// How many.
    pub count: usize,
    /// Pass as `before` for the page of older messages; `None` when there are none.
    pub next_before: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        use ChannelStatus::*;
        use Transition::*;
        let table = [
            (Start, Created, Some(Active)),
            (Start, Paused, Some(Active)),
            (Start, Stopped, Some(Active)),
            (Pause, Active, Some(Paused)),
            (Pause, Created, None),
            (Pause, Stopped, None),
            (Stop, Created, Some(Stopped)),
            (Stop, Paused, Some(Stopped)),
        ];
        for (t, from, to) in table {
            assert_eq!(t.apply(from), to, "{t:?} from {from:?}");
        }
    }

    #[test]
    fn channels_serialise_as_documented() {
        let c = ManagedChannel {
            id: Uuid::parse_str("550e8400-e29b-41d4-a716-446655440000").unwrap(),
            name: "Sistema de Turnos".into(),
            description: None,
            status: ChannelStatus::Created,
            created_at: DateTime::parse_from_rfc3339("2024-06-01T10:35:00Z").unwrap().into(),
            updated_at: DateTime::parse_from_rfc3339("2024-06-01T10:35:00.5Z").unwrap().into(),
            settings: ChannelSettings {
                max_connections: 100,
                allow_client_messages: true,
                persist_messages: false,
                rate_limit_per_minute: 30,
            },
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["status"], "Created");
        assert_eq!(v["created_at"], "2024-06-01T10:35:00.000Z");
        assert_eq!(v["id"], "550e8400-e29b-41d4-a716-446655440000");
        assert_eq!(serde_json::from_value::<ManagedChannel>(v).unwrap().name, c.name);
    }
}
