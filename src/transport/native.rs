//! The native protocol on `/ws?channel=..` and `/ws/{channel}`.
//!
//! Server frames: `{"channel","event","data","timestamp"}`. Client frames:
//! `{"action":"ping","data":{..}}`, `{"action":"subscribe","channel":".."}`,
//! `{"action":"unsubscribe","channel":".."}`. Errors are events named `error` with
//! `{"code","error","message"}` and never close the socket.

use std::collections::HashMap;

use async_trait::async_trait;
use axum::extract::ws::{Utf8Bytes, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::session::{self, Handler, Session, Stop};
use super::{ApiError, AppState};
use crate::channel::Channel;
use crate::hub::{now_rfc3339, Envelope, Protocol, SubscribeError};

/// Error codes in `error` events (the `code` field), mirroring HTTP statuses.
pub mod codes {
    /// The frame is not JSON.
    pub const INVALID_JSON: u16 = 400;
    /// Authentication is required.
    pub const UNAUTHENTICATED: u16 = 401;
    /// The join was refused by the channel rules.
    pub const FORBIDDEN: u16 = 403;
    /// Unsubscribing from a channel the socket has not joined.
    pub const NOT_SUBSCRIBED: u16 = 404;
    /// Binary frames are not part of the protocol.
    pub const BINARY_NOT_SUPPORTED: u16 = 415;
    /// Unknown action, missing field or invalid channel name.
    pub const INVALID_FRAME: u16 = 422;
    /// Too many channels on this connection, or too many messages.
    pub const LIMIT_EXCEEDED: u16 = 429;
}

/// `GET /ws?channel=..`
pub async fn upgrade_query(
    State(st): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let channel = query.get("channel").cloned();
    upgrade(st, ws, channel)
}

/// `GET /ws/{channel}`
pub async fn upgrade_path(
    State(st): State<AppState>,
    Path(channel): Path<String>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    upgrade(st, ws, Some(channel))
}

fn upgrade(
    st: AppState,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    channel: Option<String>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                "upgrade_required",
                format!("a WebSocket upgrade is required: {}", e.body_text()),
            )
            .into_response()
        }
    };
    if st.hub.is_shutting_down() {
        return ApiError::unavailable("server is shutting down").into_response();
    }
    let max = st.config.max_connections;
    if max > 0 && st.hub.connection_count() >= max {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "over_capacity",
            format!("connection limit of {max} reached"),
        )
        .into_response();
    }
    let initial = match channel
        .filter(|c| !c.is_empty())
        .map(|c| Channel::parse(&c))
    {
        None => None,
        Some(Ok(ch)) => match st.authorizer.authorize(None, &ch) {
            Ok(ch) => Some(ch),
            Err(e) => {
                let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::FORBIDDEN);
                let code = if status == StatusCode::UNAUTHORIZED {
                    "unauthorized"
                } else {
                    "forbidden"
                };
                return ApiError::new(status, code, e.to_string()).into_response();
            }
        },
        Some(Err(e)) => {
            return ApiError::unprocessable(format!("invalid channel: {e}")).into_response()
        }
    };
    let limit = st.config.max_message_size;
    let sessions = st.sessions.clone();
    ws.read_buffer_size(session::READ_BUFFER)
        .write_buffer_size(session::WRITE_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            let (conn, rx) = st.hub.connect(Protocol::Native);
            let handler = Native { initial };
            sessions.track_future(session::run(socket, st, conn, rx, handler))
        })
}

/// A server frame of the native protocol.
#[derive(Serialize)]
struct Frame<'a, D: Serialize + ?Sized> {
    channel: &'a str,
    event: &'a str,
    data: &'a D,
    timestamp: &'a str,
}

/// Encodes one native frame; `None` (logged) if serialisation fails.
fn encode_frame<D: Serialize + ?Sized>(
    channel: &str,
    event: &str,
    data: &D,
    timestamp: &str,
) -> Option<Utf8Bytes> {
    serde_json::to_string(&Frame {
        channel,
        event,
        data,
        timestamp,
    })
    .map(Utf8Bytes::from)
    .map_err(|e| tracing::error!(error = %e, "encoding a native frame failed"))
    .ok()
}

#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum ClientFrame {
    Ping {
        #[serde(default)]
        data: Option<Value>,
        #[serde(default)]
        channel: Option<String>,
    },
    Subscribe {
        channel: String,
    },
    Unsubscribe {
        channel: String,
    },
}

struct Native {
    initial: Option<Channel>,
}

impl Native {
    async fn send(
        &self,
        s: &mut Session,
        channel: &str,
        event: &str,
        data: &Value,
    ) -> Result<(), Stop> {
        match encode_frame(channel, event, data, &now_rfc3339()) {
            Some(text) => s.send_text(text).await,
            None => Ok(()),
        }
    }

    async fn error(
        &self,
        s: &mut Session,
        channel: &str,
        code: u16,
        error: &str,
        message: &str,
    ) -> Result<(), Stop> {
        self.send(
            s,
            channel,
            "error",
            &json!({"code": code, "error": error, "message": message}),
        )
        .await
    }

    async fn subscribe(&self, s: &mut Session, name: &str) -> Result<(), Stop> {
        let channel = match Channel::parse(name) {
            Ok(c) => c,
            Err(e) => {
                return self
                    .send(s, name, "subscription_error", &json!({"code": codes::INVALID_FRAME, "error": "invalid_channel", "message": e.to_string()}))
                    .await
            }
        };
        let channel = match s.st.authorizer.authorize(None, &channel) {
            Ok(c) => c,
            Err(e) => {
                let code = if e.http_status() == 401 {
                    codes::UNAUTHENTICATED
                } else {
                    codes::FORBIDDEN
                };
                return self
                    .send(
                        s,
                        channel.name(),
                        "subscription_error",
                        &json!({"code": code, "error": "forbidden", "message": e.to_string()}),
                    )
                    .await;
            }
        };
        self.join(s, &channel).await
    }

    async fn join(&self, s: &mut Session, channel: &Channel) -> Result<(), Stop> {
        match s.st.hub.subscribe(&s.conn, channel) {
            Ok(subscribers) => {
                let data = json!({
                    "channel": channel.name(),
                    "kind": channel.kind(),
                    "socket_id": s.conn.id().to_string(),
                    "subscribers": subscribers,
                });
                self.send(s, channel.name(), "subscription_succeeded", &data)
                    .await
            }
            Err(SubscribeError::TooManyChannels(limit)) => {
                let data = json!({"code": codes::LIMIT_EXCEEDED, "error": "too_many_channels", "message": format!("a connection may join at most {limit} channels")});
                self.send(s, channel.name(), "subscription_error", &data)
                    .await
            }
            Err(SubscribeError::Closing) => Err(Stop),
        }
    }
}

#[async_trait]
impl Handler for Native {
    const PROTOCOL: Protocol = Protocol::Native;

    fn encode(envelope: &Envelope) -> Option<Utf8Bytes> {
        let data: &RawValue = &envelope.data;
        encode_frame(
            envelope.channel.name(),
            &envelope.event,
            data,
            &envelope.timestamp,
        )
    }

    async fn on_open(&mut self, s: &mut Session) -> Result<(), Stop> {
        match self.initial.take() {
            Some(channel) => self.join(s, &channel).await,
            None => {
                let data = json!({
                    "socket_id": s.conn.id().to_string(),
                    "activity_timeout": s.st.config.ping_interval.as_secs(),
                });
                self.send(s, "", "connection_established", &data).await
            }
        }
    }

    async fn on_text(&mut self, s: &mut Session, text: &str) -> Result<(), Stop> {
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return self
                    .error(
                        s,
                        "",
                        codes::INVALID_JSON,
                        "invalid_json",
                        &format!("frame is not valid JSON: {e}"),
                    )
                    .await
            }
        };
        let frame: ClientFrame = match serde_json::from_value(value) {
            Ok(f) => f,
            Err(e) => {
                return self
                    .error(s, "", codes::INVALID_FRAME, "invalid_frame", &e.to_string())
                    .await
            }
        };
        match frame {
            ClientFrame::Ping { data, channel } => {
                let data = data.unwrap_or_else(|| json!({}));
                self.send(s, channel.as_deref().unwrap_or(""), "pong", &data)
                    .await
            }
            ClientFrame::Subscribe { channel } => self.subscribe(s, &channel).await,
            ClientFrame::Unsubscribe { channel: name } => {
                let Ok(channel) = Channel::parse(&name) else {
                    return self
                        .error(
                            s,
                            &name,
                            codes::NOT_SUBSCRIBED,
                            "not_subscribed",
                            "not subscribed to this channel",
                        )
                        .await;
                };
                if s.st.hub.unsubscribe(&s.conn, &channel) {
                    self.send(
                        s,
                        channel.name(),
                        "unsubscribed",
                        &json!({"channel": channel.name()}),
                    )
                    .await
                } else {
                    self.error(
                        s,
                        channel.name(),
                        codes::NOT_SUBSCRIBED,
                        "not_subscribed",
                        "not subscribed to this channel",
                    )
                    .await
                }
            }
        }
    }

    async fn on_binary(&mut self, s: &mut Session, _data: &[u8]) -> Result<(), Stop> {
        self.error(
            s,
            "",
            codes::BINARY_NOT_SUPPORTED,
            "binary_not_supported",
            "send JSON text frames",
        )
        .await
    }
}
