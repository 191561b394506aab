//! EmitHub's WebSocket: `/api/v1/channels/{id}/ws`. A socket is `connected` while the
//! channel is Active or Paused; otherwise it gets `denied` and is closed. Its text is
//! relayed to the others as a `client_message` when the channel allows it.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use uuid::Uuid;

use super::codec;
use crate::channel::Channel;
use crate::hub::{CloseReason, Envelope, Position, Protocol};
use crate::protocol::{socket, ApiError, AppState};
use crate::services::emithub::model::{hub_channel_name, ChannelStatus, RelayedPayload};
use crate::services::emithub::{close, EmitHub, CLIENT_MESSAGE_EVENT};
use crate::session::runner::replay;
use crate::session::runner::{Handler, Reply};
use crate::session::{ClientEventError, JoinAs, JoinError, Refusal, Session};

use crate::protocol::socket::Upgrade;

/// Joins a channel over WebSocket (while it is Active or Paused).
#[utoipa::path(get, path = "/api/v1/channels/{id}/ws", tag = "emithub", params(("id" = String, Path, description = "the channel id"), ("since" = Option<String>, Query, description = "`EPOCH:OFFSET`: the last position seen (`persist_messages` channels), to receive what was missed")), responses((status = 101, description = "WebSocket of the channel: `connected`, then `broadcast` and `client_message` messages; `denied` and a close (4000 not found, 4003 not active, 4100 full) when it cannot join")))]
pub(crate) async fn upgrade(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    ws: Upgrade,
) -> Response {
    let since = match crate::protocol::since_param(&query) {
        Ok(since) => since,
        Err(e) => return e.into_response(),
    };
    let ws = match crate::protocol::socket::required(ws) {
        Ok(ws) => socket::configure(ws, &st),
        Err(refused) => return refused,
    };
    let admission = match crate::protocol::admit_default(&st, None) {
        Ok(admission) => admission,
        Err(e) => return ApiError::unavailable(e.to_string()).into_response(),
    };
    let handler = EmitHubSession {
        emithub: st.emithub.clone(),
        raw_id: id,
        channel: None,
        since,
    };
    ws.on_upgrade(move |upgraded| socket::serve(&st, upgraded, admission, handler))
}

/// One EmitHub socket.
pub(crate) struct EmitHubSession {
    emithub: Arc<EmitHub>,
    raw_id: String,
    /// The managed channel and its hub channel, once joined.
    channel: Option<(Uuid, Channel)>,
    /// The last position the client saw, to recover from.
    since: Option<Position>,
}

impl EmitHubSession {
    fn denied(&self, message: &str, reason: CloseReason) -> Reply {
        Reply::text(codec::now("denied", message, &self.raw_id, serde_json::Value::Null)).and_close(reason)
    }

    fn error(&self, message: &str) -> Reply {
        Reply::text(codec::now("error", message, &self.raw_id, serde_json::Value::Null))
    }
}

#[async_trait]
impl Handler for EmitHubSession {
    const PROTOCOL: Protocol = Protocol::EmitHub;

    fn encode(envelope: &Envelope) -> Option<String> {
        codec::encode(envelope)
    }

    async fn on_open(&mut self, s: &mut Session) -> Reply {
        let not_found = format!("Channel {} not found", self.raw_id);
        let Ok(id) = Uuid::parse_str(&self.raw_id) else {
            return self.denied(&not_found, close::NOT_FOUND);
        };
        let Ok(hub_channel) = Channel::parse(&hub_channel_name(id)) else {
            return self.denied(&not_found, close::NOT_FOUND);
        };
        match s.join(&hub_channel, JoinAs::User).await {
            Ok(_) => {}
            Err(JoinError::NotFound(_)) => return self.denied(&not_found, close::NOT_FOUND),
            Err(JoinError::NotActive(name)) => {
                return self.denied(&format!("Channel {name} is not active"), close::NOT_ACTIVE)
            }
            Err(JoinError::ChannelFull { max, .. }) => {
                let name = self.emithub.get(id).map(|c| c.name).unwrap_or_default();
                return self.denied(&format!("Channel {name} is full ({max} connections)"), close::FULL);
            }
            Err(JoinError::Closing) => return Reply::none(),
            Err(e) => return self.denied(&e.to_string(), close::NOT_ACTIVE),
        }
        let Ok(channel) = self.emithub.get(id) else {
            return self.denied(&not_found, close::NOT_FOUND);
        };
        self.channel = Some((id, hub_channel.clone()));
        let connection_id = Uuid::new_v4();
        tracing::debug!(channel = %id, socket_id = %s.id(), %connection_id, "EmitHub socket connected");
        let mut data = json!({"channel": channel, "connection_id": connection_id});
        let message = format!("Connected to channel: {}", channel.name);
        let mut frames = Vec::new();
        if let Some(since) = self.since.take() {
            match self.emithub.recover(id, &since).await {
                Ok(Some(r)) => {
                    frames.extend(replay::<Self>(r.messages));
                    if r.recovered || r.capped {
                        s.mark_sent(&hub_channel, r.position.clone());
                    }
                    data["recovered"] = json!(r.recovered);
                    data["capped"] = json!(r.capped);
                    data["position"] = json!(r.position);
                }
                Ok(None) => data["recovered"] = json!(false),
                Err(e) => {
                    tracing::warn!(channel = %id, error = %e, "recovering an EmitHub socket failed");
                    data["recovered"] = json!(false);
                }
            }
        }
        // Missed messages first, then `connected` (with `recovered`), then live ones.
        frames.push(codec::now("connected", &message, &self.raw_id, data));
        Reply { frames, close: None }
    }

    async fn on_text(&mut self, s: &mut Session, text: &str) -> Reply {
        let Some((id, hub_channel)) = self.channel.clone() else {
            return Reply::none();
        };
        let Ok(channel) = self.emithub.get(id) else {
            return self.denied(&format!("Channel {id} not found"), close::NOT_FOUND);
        };
        if channel.status != ChannelStatus::Active {
            return self.error(&format!(
                "Channel {} is {:?}: client messages are not relayed",
                channel.name, channel.status
            ));
        }
        let allowed = match s.allow_client_event(hub_channel.name(), CLIENT_MESSAGE_EVENT) {
            Ok(channel) => channel,
            Err(e) => {
                return match e {
                    ClientEventError::Forbidden => {
                        self.error(&format!("Client messages are not allowed in channel {}", channel.name))
                    }
                    ClientEventError::RateLimited(limit) => self.error(&format!("Rate limit exceeded: {limit}")),
                    e => self.error(&format!("{} ({})", e, e.code())),
                }
            }
        };
        // Kept (persist_messages) and given its place in the history by the fan-out.
        let relayed = RelayedPayload {
            text: text.to_string(),
            channel_name: channel.name.clone(),
            id: Some(Uuid::new_v4()),
        };
        let Ok(raw) = serde_json::value::to_raw_value(&relayed) else {
            return Reply::none();
        };
        match s.send_client_event(allowed, CLIENT_MESSAGE_EVENT, Arc::from(raw)).await {
            Ok(_) => Reply::none(),
            Err(ClientEventError::Forbidden) => {
                self.error(&format!("Client messages are not allowed in channel {}", channel.name))
            }
            Err(ClientEventError::RateLimited(limit)) => self.error(&format!("Rate limit exceeded: {limit}")),
            Err(e) => self.error(&format!("{} ({})", e, e.code())),
        }
    }

    async fn on_binary(&mut self, _s: &mut Session, _data: &[u8]) -> Reply {
        self.error("Binary messages are not supported: send text")
    }
}
