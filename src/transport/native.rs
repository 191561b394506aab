//! The native protocol on `/ws?channel=..` and `/ws/{channel}`.
//!
//! Server frames: `{"channel","event","data","timestamp"}`. Client frames carry an
//! `action`: `ping`, `subscribe`, `unsubscribe`, `whisper`, `refresh`. Errors are events
//! named `error` (or `subscription_error`) with `{"code","error","message"}` and never
//! close the socket.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::extract::ws::{Utf8Bytes, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::credentials::Credentials;
use super::session::{self, Handler, Session, Stop};
use super::{ApiError, AppState};
use crate::auth::{AuthError, Identity, TokenError};
use crate::broadcasting::manager::MAX_EVENT_NAME_LEN;
use crate::channel::{Channel, ChannelKind};
use crate::hub::{now_rfc3339, Envelope, Message, Protocol, SubscribeError};
use crate::presence::Member;

/// Error codes in `error` / `subscription_error` events (the `code` field), mirroring
/// HTTP statuses.
pub mod codes {
    /// The frame is not JSON.
    pub const INVALID_JSON: u16 = 400;
    /// Authentication is required, or the token is invalid or expired.
    pub const UNAUTHENTICATED: u16 = 401;
    /// Refused by the channel rules, or a client event on a public channel.
    pub const FORBIDDEN: u16 = 403;
    /// Unsubscribing from, or whispering to, a channel the socket has not joined.
    pub const NOT_SUBSCRIBED: u16 = 404;
    /// Binary frames are not part of the protocol.
    pub const BINARY_NOT_SUPPORTED: u16 = 415;
    /// Unknown action, missing field or invalid channel or event name.
    pub const INVALID_FRAME: u16 = 422;
    /// Too many channels on this connection, or client events over the rate limit.
    pub const LIMIT_EXCEEDED: u16 = 429;
}

/// Prefix of client event names (whispers).
pub const CLIENT_EVENT_PREFIX: &str = "client-";

type Upgrade = Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>;

/// `GET /ws?channel=..`
pub async fn upgrade_query(
    State(st): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Upgrade,
) -> Response {
    let channel = query.get("channel").cloned();
    upgrade(st, ws, channel, &headers, &query)
}

/// `GET /ws/{channel}`
pub async fn upgrade_path(
    State(st): State<AppState>,
    Path(channel): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Upgrade,
) -> Response {
    upgrade(st, ws, Some(channel), &headers, &query)
}

fn auth_error(e: &AuthError) -> ApiError {
    match e {
        AuthError::Unauthenticated(_) => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()),
        AuthError::Forbidden(_) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string()),
    }
}

fn upgrade(
    st: AppState,
    ws: Upgrade,
    channel: Option<String>,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
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
    let max = st.config.websocket.max_connections;
    let Some(slot) = st.hub.reserve_connection(max) else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "over_capacity",
            format!("connection limit of {max} reached"),
        )
        .into_response();
    };
    let credentials = Credentials::from_request(headers, query);
    let identity = match credentials.authenticate(&st) {
        Ok(identity) => identity,
        Err(e) => return e.into_response(),
    };
    let initial = match channel.filter(|c| !c.is_empty()).map(|c| Channel::parse(&c)) {
        None => None,
        Some(Ok(ch)) => match st.authorizer.authorize(identity.as_ref(), &ch) {
            Ok(ch) => Some(ch),
            Err(e) => return auth_error(&e).into_response(),
        },
        Some(Err(e)) => return ApiError::unprocessable(format!("invalid channel: {e}")).into_response(),
    };
    let limit = st.config.websocket.max_message_size;
    let sessions = st.sessions.clone();
    let mut ws = ws
        .read_buffer_size(session::READ_BUFFER)
        .write_buffer_size(session::WRITE_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit);
    if let Some(p) = credentials.subprotocol {
        ws = ws.protocols([p]);
    }
    ws.on_upgrade(move |socket| {
        let handler = Native {
            initial,
            identity,
            limiter: None,
            grace: st.config.auth.token_grace,
        };
        sessions.track_future(session::run(socket, st, Some(slot), Protocol::Native, handler))
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
fn encode_frame<D: Serialize + ?Sized>(channel: &str, event: &str, data: &D, timestamp: &str) -> Option<Utf8Bytes> {
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
    Whisper {
        channel: String,
        event: String,
        #[serde(default)]
        data: Option<Value>,
    },
    Refresh {
        token: String,
    },
}

struct Native {
    initial: Option<Channel>,
    identity: Option<Identity>,
    limiter: Option<DefaultDirectRateLimiter>,
    grace: Duration,
}

fn error_data(code: u16, error: &str, message: &str) -> Value {
    json!({"code": code, "error": error, "message": message})
}

impl Native {
    async fn send(&self, s: &mut Session, channel: &str, event: &str, data: &Value) -> Result<(), Stop> {
        match encode_frame(channel, event, data, &now_rfc3339()) {
            Some(text) => s.send_text(text).await,
            None => Ok(()),
        }
    }

    async fn error(&self, s: &mut Session, channel: &str, code: u16, error: &str, message: &str) -> Result<(), Stop> {
        self.send(s, channel, "error", &error_data(code, error, message)).await
    }

    async fn subscription_error(
        &self,
        s: &mut Session,
        channel: &str,
        code: u16,
        error: &str,
        message: &str,
    ) -> Result<(), Stop> {
        self.send(s, channel, "subscription_error", &error_data(code, error, message))
            .await
    }

    async fn subscribe(&self, s: &mut Session, name: &str) -> Result<(), Stop> {
        let channel = match Channel::parse(name) {
            Ok(c) => c,
            Err(e) => {
                return self
                    .subscription_error(s, name, codes::INVALID_FRAME, "invalid_channel", &e.to_string())
                    .await
            }
        };
        match s.st.authorizer.authorize(self.identity.as_ref(), &channel) {
            Ok(channel) => self.join(s, &channel).await,
            Err(e @ AuthError::Unauthenticated(_)) => {
                self.subscription_error(
                    s,
                    channel.name(),
                    codes::UNAUTHENTICATED,
                    "unauthorized",
                    &e.to_string(),
                )
                .await
            }
            Err(e @ AuthError::Forbidden(_)) => {
                self.subscription_error(s, channel.name(), codes::FORBIDDEN, "forbidden", &e.to_string())
                    .await
            }
        }
    }

    fn member(&self) -> Option<Member> {
        self.identity.as_ref().map(|u| Member {
            user_id: u.user_id.clone(),
            user_info: u.user_info.clone(),
        })
    }

    async fn join(&self, s: &mut Session, channel: &Channel) -> Result<(), Stop> {
        let subscribers = match s.st.hub.subscribe(&s.conn, channel) {
            Ok(n) => n,
            Err(SubscribeError::TooManyChannels(limit)) => {
                let message = format!("a connection may join at most {limit} channels");
                return self
                    .subscription_error(s, channel.name(), codes::LIMIT_EXCEEDED, "too_many_channels", &message)
                    .await;
            }
            Err(SubscribeError::Closing) => return Err(Stop),
        };
        let mut data = json!({
            "channel": channel.name(),
            "kind": channel.kind(),
            "socket_id": s.conn.id().to_string(),
            "subscribers": subscribers,
        });
        if channel.kind() == ChannelKind::Presence {
            // The authorizer only grants presence channels to authenticated users.
            let Some(member) = self.member() else {
                return Err(Stop);
            };
            match s.st.presence.join(&s.conn, channel, &member).await {
                Ok(members) => {
                    data["count"] = json!(members.len());
                    data["members"] = json!(members);
                    data["me"] = json!(member);
                }
                Err(e) => {
                    s.st.hub.unsubscribe(&s.conn, channel);
                    return self
                        .subscription_error(s, channel.name(), 503, "presence_unavailable", &e.to_string())
                        .await;
                }
            }
        }
        self.send(s, channel.name(), "subscription_succeeded", &data).await
    }

    async fn unsubscribe(&self, s: &mut Session, name: &str) -> Result<(), Stop> {
        let Some(channel) = s.conn.subscription(name) else {
            return self
                .error(
                    s,
                    name,
                    codes::NOT_SUBSCRIBED,
                    "not_subscribed",
                    "not subscribed to this channel",
                )
                .await;
        };
        if channel.kind() == ChannelKind::Presence {
            if let Some(user) = &self.identity {
                s.st.presence.leave(&s.conn, &channel, &user.user_id).await;
            }
        }
        s.st.hub.unsubscribe(&s.conn, &channel);
        self.send(s, channel.name(), "unsubscribed", &json!({"channel": channel.name()}))
            .await
    }

    async fn whisper(&mut self, s: &mut Session, name: &str, event: &str, data: Option<Value>) -> Result<(), Stop> {
        let Some(channel) = s.conn.subscription(name) else {
            return self
                .error(
                    s,
                    name,
                    codes::NOT_SUBSCRIBED,
                    "not_subscribed",
                    "join the channel before sending client events",
                )
                .await;
        };
        if channel.kind() == ChannelKind::Public {
            return self
                .error(
                    s,
                    channel.name(),
                    codes::FORBIDDEN,
                    "client_events_forbidden",
                    "client events are only allowed on private and presence channels",
                )
                .await;
        }
        let event = if event.starts_with(CLIENT_EVENT_PREFIX) {
            event.to_string()
        } else {
            format!("{CLIENT_EVENT_PREFIX}{event}")
        };
        if event.len() == CLIENT_EVENT_PREFIX.len() || event.len() > MAX_EVENT_NAME_LEN {
            return self
                .error(
                    s,
                    channel.name(),
                    codes::INVALID_FRAME,
                    "invalid_event",
                    "event name is empty or too long",
                )
                .await;
        }
        let per_second = s.st.config.websocket.client_events_per_second;
        let limiter = self.limiter.get_or_insert_with(|| {
            RateLimiter::direct(Quota::per_second(
                NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN),
            ))
        });
        if limiter.check().is_err() {
            let message = format!("client events are limited to {per_second} per second; this one was not delivered");
            return self
                .error(s, channel.name(), codes::LIMIT_EXCEEDED, "rate_limited", &message)
                .await;
        }
        let data = data.unwrap_or_else(|| json!({}));
        match serde_json::value::to_raw_value(&data) {
            Ok(raw) => {
                let id = Some(s.conn.id());
                let sent =
                    s.st.fanout
                        .publish(Message::event(channel.clone(), event.as_str(), Arc::from(raw)).except(id))
                        .await;
                match sent {
                    Ok(_) => Ok(()),
                    Err(e) => self.error(s, channel.name(), 503, "unavailable", &e.to_string()).await,
                }
            }
            Err(e) => {
                self.error(s, channel.name(), codes::INVALID_FRAME, "invalid_frame", &e.to_string())
                    .await
            }
        }
    }

    async fn refresh(&mut self, s: &mut Session, token: &str) -> Result<(), Stop> {
        let result = match &s.st.verifier {
            None => Err(TokenError::Malformed("this server has no JWT key configured".into())),
            Some(v) => v.verify(token),
        };
        let fresh = match result {
            Ok(identity) => identity,
            Err(e) => {
                return self
                    .error(s, "", codes::UNAUTHENTICATED, "unauthorized", &e.to_string())
                    .await
            }
        };
        if let Some(current) = &self.identity {
            if current.user_id != fresh.user_id {
                return self
                    .error(
                        s,
                        "",
                        codes::FORBIDDEN,
                        "forbidden",
                        &TokenError::DifferentUser.to_string(),
                    )
                    .await;
            }
        }
        let expires_at = fresh.expires_at;
        // terminate_connections and user-targeted features find the socket by its user.
        s.conn.set_user(&fresh.user_id);
        self.identity = Some(fresh);
        self.send(s, "", "token_refreshed", &json!({"expires_at": expires_at}))
            .await
    }
}

#[async_trait]
impl Handler for Native {
    const PROTOCOL: Protocol = Protocol::Native;

    fn encode(envelope: &Envelope) -> Option<Utf8Bytes> {
        let data: &RawValue = &envelope.data;
        encode_frame(envelope.channel.name(), &envelope.event, data, &envelope.timestamp)
    }

    fn expires_at(&self) -> Option<Instant> {
        let exp = self.identity.as_ref()?.expires_at?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        // `exp` comes from the client's token: an absurd one means "never", not a panic.
        let left = Duration::from_secs(exp.saturating_sub(now)).checked_add(self.grace)?;
        Instant::now().checked_add(left)
    }

    async fn on_open(&mut self, s: &mut Session) -> Result<(), Stop> {
        if let Some(user) = &self.identity {
            s.conn.set_user(&user.user_id);
        }
        match self.initial.take() {
            Some(channel) => self.join(s, &channel).await,
            None => {
                let data = json!({
                    "socket_id": s.conn.id().to_string(),
                    "activity_timeout": s.st.config.websocket.ping_interval.as_secs(),
                    "user_id": self.identity.as_ref().map(|u| u.user_id.clone()),
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
                self.send(s, channel.as_deref().unwrap_or(""), "pong", &data).await
            }
            ClientFrame::Subscribe { channel } => self.subscribe(s, &channel).await,
            ClientFrame::Unsubscribe { channel } => self.unsubscribe(s, &channel).await,
            ClientFrame::Whisper { channel, event, data } => self.whisper(s, &channel, &event, data).await,
            ClientFrame::Refresh { token } => self.refresh(s, &token).await,
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

    async fn on_close(&mut self, s: &mut Session) {
        if let Some(user) = &self.identity {
            s.st.presence.leave_all(&s.conn, &user.user_id).await;
        }
    }
}
