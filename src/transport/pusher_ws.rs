//! Pusher protocol v7 on `/app/{key}`, so pusher-js and Laravel Echo work unchanged.
//!
//! Server messages are `{"event","channel"?,"data"}` with `data` a JSON-encoded string
//! (errors carry an object). Hub messages are encoded once per message for every Pusher
//! socket: channel names in Pusher spelling (`private-user.42`), presence events as
//! `pusher_internal:member_added` / `member_removed`.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::ws::{Utf8Bytes, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::session::{self, Handler, Session, Stop};
use super::{ApiError, AppState};
use crate::channel::{Channel, ChannelKind};
use crate::hub::{CloseReason, Envelope, EnvelopeKind, Message, Protocol, SubscribeError};
use crate::presence::Member;
use crate::pusher::{self, PusherApp};
use crate::sync::lock;

/// Pusher close and error codes used here.
pub mod codes {
    /// Unknown app key.
    pub const UNKNOWN_APP: u16 = 4001;
    /// The app is disabled.
    pub const APP_DISABLED: u16 = 4003;
    /// The app is over its connection quota.
    pub const OVER_QUOTA: u16 = 4004;
    /// The protocol version is not a number.
    pub const INVALID_VERSION: u16 = 4006;
    /// The protocol version is not supported (5 to 7 are).
    pub const UNSUPPORTED_PROTOCOL: u16 = 4007;
    /// No protocol version was given.
    pub const NO_PROTOCOL: u16 = 4008;
    /// Unauthorized (failed `pusher:signin`, terminated, expired).
    pub const UNAUTHORIZED: u16 = 4009;
    /// The server is over capacity.
    pub const OVER_CAPACITY: u16 = 4100;
    /// A client event was refused by the rate limit.
    pub const CLIENT_EVENT_RATE_LIMIT: u16 = 4301;
}

/// pusher-js's per-user channel after `pusher:signin`.
const SERVER_TO_USER: &str = "#server-to-user-";

/// Connections per app, for `max_connections`.
#[derive(Debug, Default)]
pub struct AppConnections(Mutex<HashMap<String, usize>>);

impl AppConnections {
    fn acquire(&self, app: &PusherApp) -> bool {
        let mut map = lock(&self.0);
        let n = map.entry(app.id.clone()).or_default();
        if app.max_connections > 0 && *n >= app.max_connections {
            return false;
        }
        *n += 1;
        true
    }

    fn release(&self, app_id: &str) {
        if let Some(n) = lock(&self.0).get_mut(app_id) {
            *n = n.saturating_sub(1);
        }
    }
}

/// `GET /app/{key}?protocol=7`
pub async fn upgrade(
    State(st): State<AppState>,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return ApiError::new(StatusCode::UPGRADE_REQUIRED, "upgrade_required", e.body_text()).into_response()
        }
    };
    // Refusals are sent over the socket (pusher:error, then a close code), as clients
    // expect; only a server shutting down refuses at the HTTP level.
    if st.hub.is_shutting_down() {
        return ApiError::unavailable("server is shutting down").into_response();
    }
    let slot = st.hub.reserve_connection(st.config.websocket.max_connections);
    let refusal = refusal(&st, &key, query.get("protocol").map(String::as_str), slot.is_some());
    let app = st.config.pusher.apps.by_key(&key).cloned();
    let limit = st.config.websocket.max_message_size;
    let sessions = st.sessions.clone();
    ws.read_buffer_size(session::READ_BUFFER)
        .write_buffer_size(session::WRITE_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            let handler = PusherSession {
                app,
                refusal,
                counted: false,
                presence_user: BTreeMap::new(),
                limiter: None,
            };
            sessions.track_future(session::run(socket, st, slot, Protocol::Pusher, handler))
        })
}

fn refusal(st: &AppState, key: &str, protocol: Option<&str>, have_slot: bool) -> Option<(u16, &'static str)> {
    let Some(app) = st.config.pusher.apps.by_key(key) else {
        return Some((codes::UNKNOWN_APP, "App key does not exist"));
    };
    if !app.enabled {
        return Some((codes::APP_DISABLED, "App is disabled"));
    }
    match protocol.map(str::parse::<u32>) {
        None => return Some((codes::NO_PROTOCOL, "No protocol version supplied")),
        Some(Err(_)) => return Some((codes::INVALID_VERSION, "Invalid version string format")),
        Some(Ok(v)) if !(5..=7).contains(&v) => {
            return Some((codes::UNSUPPORTED_PROTOCOL, "Unsupported protocol version"))
        }
        Some(Ok(_)) => {}
    }
    if !have_slot {
        return Some((codes::OVER_CAPACITY, "Over capacity"));
    }
    None
}

struct PusherSession {
    app: Option<PusherApp>,
    refusal: Option<(u16, &'static str)>,
    counted: bool,
    /// Presence channels joined, with the user id given in their channel_data.
    presence_user: BTreeMap<String, String>,
    limiter: Option<DefaultDirectRateLimiter>,
}

#[derive(Deserialize)]
struct Incoming {
    event: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct SubscribeData {
    channel: String,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    channel_data: Option<String>,
}

fn text(v: &Value) -> Utf8Bytes {
    Utf8Bytes::from(v.to_string())
}

/// The Pusher `data` string of a payload: a JSON string payload is sent as its text
/// (what a Pusher SDK published as a plain string), anything else as its JSON.
fn data_string(raw: &RawValue) -> String {
    match serde_json::from_str::<String>(raw.get()) {
        Ok(s) => s,
        Err(_) => raw.get().to_string(),
    }
}

impl PusherSession {
    async fn error(&self, s: &mut Session, code: Option<u16>, message: &str) -> Result<(), Stop> {
        s.send_text(text(
            &json!({"event": "pusher:error", "data": {"code": code, "message": message}}),
        ))
        .await
    }

    async fn subscription_error(&self, s: &mut Session, channel: &str, status: u16, message: &str) -> Result<(), Stop> {
        let kind = if status == 401 || status == 403 {
            "AuthError"
        } else {
            "InvalidChannel"
        };
        let msg = json!({
            "event": "pusher:subscription_error",
            "channel": channel,
            "data": {"type": kind, "error": message, "status": status},
        });
        s.send_text(text(&msg)).await
    }

    async fn subscribe(&mut self, s: &mut Session, data: SubscribeData) -> Result<(), Stop> {
        let Some(app) = self.app.clone() else { return Err(Stop) };
        let name = data.channel;
        if let Some(user) = name.strip_prefix(SERVER_TO_USER) {
            // pusher-js joins this after pusher:signin; only the signed-in user may.
            if s.conn.user().as_deref() == Some(user) {
                let msg = json!({"event": "pusher_internal:subscription_succeeded", "channel": name, "data": "{}"});
                return s.send_text(text(&msg)).await;
            }
            return self
                .subscription_error(s, &name, 403, "sign in as this user first")
                .await;
        }
        let channel = match Channel::parse(&name) {
            Ok(c) => c,
            Err(e) => return self.subscription_error(s, &name, 400, &e.to_string()).await,
        };
        let socket_id = s.conn.id().to_string();
        let mut member = None;
        match channel.kind() {
            ChannelKind::Public => {
                // A name without prefix must be public under the server's rules too, or a
                // Pusher client could read `user.42` without authenticating.
                match s.st.authorizer.authorize(None, &channel) {
                    Ok(c) if c.kind() == ChannelKind::Public => {}
                    _ => {
                        let message = format!("{name} is not a public channel; subscribe as private-{name}");
                        return self.subscription_error(s, &name, 403, &message).await;
                    }
                }
            }
            ChannelKind::Private | ChannelKind::Presence => {
                // The spelling chose the kind; the rules must agree, or `private-general`
                // would make the public `general` private (and open it to whispers).
                if let Some(kind) = s.st.authorizer.kind_of(&channel) {
                    if kind != channel.kind() {
                        let message = format!("{} is a {kind} channel, not {}", channel.name(), channel.kind());
                        return self.subscription_error(s, &name, 403, &message).await;
                    }
                }
                let channel_data = data
                    .channel_data
                    .as_deref()
                    .filter(|_| channel.kind() == ChannelKind::Presence);
                let auth = data.auth.as_deref().unwrap_or("");
                if !pusher::verify_channel_auth(&app, &socket_id, &name, channel_data, auth) {
                    let message = format!(
                        "Invalid signature: expected HMAC SHA256 of '{socket_id}:{name}{}'",
                        if channel_data.is_some() { ":<channel_data>" } else { "" }
                    );
                    return self.subscription_error(s, &name, 401, &message).await;
                }
                if channel.kind() == ChannelKind::Presence {
                    match channel_data.and_then(parse_member) {
                        Some(m) => member = Some(m),
                        None => {
                            let message = "channel_data must be JSON with a user_id";
                            return self.subscription_error(s, &name, 400, message).await;
                        }
                    }
                }
            }
        }
        match s.st.hub.subscribe(&s.conn, &channel) {
            Ok(_) => {}
            Err(SubscribeError::TooManyChannels(limit)) => {
                return self
                    .subscription_error(s, &name, 429, &format!("at most {limit} channels per connection"))
                    .await
            }
            Err(SubscribeError::Closing) => return Err(Stop),
        }
        let data = match member {
            None => "{}".to_string(),
            Some(member) => match s.st.presence.join(&s.conn, &channel, &member).await {
                Ok(members) => {
                    self.presence_user
                        .insert(channel.name().to_string(), member.user_id.clone());
                    let ids: Vec<&str> = members.iter().map(|m| m.user_id.as_str()).collect();
                    let hash: serde_json::Map<String, Value> = members
                        .iter()
                        .map(|m| (m.user_id.clone(), m.user_info.clone()))
                        .collect();
                    json!({"presence": {"ids": ids, "hash": hash, "count": members.len()}}).to_string()
                }
                Err(e) => {
                    s.st.hub.unsubscribe(&s.conn, &channel);
                    return self.subscription_error(s, &name, 503, &e.to_string()).await;
                }
            },
        };
        let msg = json!({"event": "pusher_internal:subscription_succeeded", "channel": name, "data": data});
        s.send_text(text(&msg)).await
    }

    async fn unsubscribe(&mut self, s: &mut Session, name: &str) {
        let Some(channel) = s.conn.subscription(name) else {
            return;
        };
        if let Some(user) = self.presence_user.remove(channel.name()) {
            s.st.presence.leave(&s.conn, &channel, &user).await;
        }
        s.st.hub.unsubscribe(&s.conn, &channel);
    }

    async fn client_event(
        &mut self,
        s: &mut Session,
        event: &str,
        name: Option<&str>,
        data: Option<Value>,
    ) -> Result<(), Stop> {
        let Some(channel) = name.and_then(|n| s.conn.subscription(n)) else {
            return self
                .error(s, None, "Client event rejected: not subscribed to the channel")
                .await;
        };
        if channel.kind() == ChannelKind::Public {
            return self
                .error(
                    s,
                    None,
                    "Client event rejected: only private and presence channels accept client events",
                )
                .await;
        }
        if event.len() > crate::broadcasting::manager::MAX_EVENT_NAME_LEN {
            return self.error(s, None, "Client event rejected: event name too long").await;
        }
        let per_second = s.st.config.websocket.client_events_per_second;
        let limiter = self.limiter.get_or_insert_with(|| {
            RateLimiter::direct(Quota::per_second(
                NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN),
            ))
        });
        if limiter.check().is_err() {
            let message = format!("Client event rejected: more than {per_second} per second");
            return self.error(s, Some(codes::CLIENT_EVENT_RATE_LIMIT), &message).await;
        }
        let payload = match data.unwrap_or(Value::Null) {
            // pusher-js sends the data as an object; a string is kept as the client sent it.
            Value::Null => json!({}),
            other => other,
        };
        let Ok(raw) = serde_json::value::to_raw_value(&payload) else {
            return Ok(());
        };
        let id = Some(s.conn.id());
        if let Err(e) =
            s.st.fanout
                .publish(Message::event(channel.clone(), event, Arc::from(raw)).except(id))
                .await
        {
            return self.error(s, None, &format!("Client event rejected: {e}")).await;
        }
        Ok(())
    }

    async fn signin(&mut self, s: &mut Session, data: Option<Value>) -> Result<(), Stop> {
        let Some(app) = self.app.clone() else { return Err(Stop) };
        let auth = data.as_ref().and_then(|d| d["auth"].as_str()).unwrap_or("");
        let user_data = data.as_ref().and_then(|d| d["user_data"].as_str()).unwrap_or("");
        let expected = pusher::user_auth(&app, &s.conn.id().to_string(), user_data);
        let user_id = serde_json::from_str::<Value>(user_data)
            .ok()
            .and_then(|u| id_string(&u["id"]));
        match user_id {
            Some(id) if subtle_eq(&expected, auth) => {
                s.conn.set_user(&id);
                let msg =
                    json!({"event": "pusher:signin_success", "data": json!({"user_data": user_data}).to_string()});
                s.send_text(text(&msg)).await
            }
            _ => {
                let _ = self
                    .error(
                        s,
                        Some(codes::UNAUTHORIZED),
                        "Invalid signin: bad auth signature or user_data without id",
                    )
                    .await;
                s.close(CloseReason {
                    code: codes::UNAUTHORIZED,
                    reason: "unauthorized",
                })
                .await;
                Err(Stop)
            }
        }
    }
}

fn subtle_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn parse_member(channel_data: &str) -> Option<Member> {
    let v: Value = serde_json::from_str(channel_data).ok()?;
    Some(Member {
        user_id: id_string(&v["user_id"])?,
        user_info: v.get("user_info").cloned().unwrap_or(Value::Null),
    })
}

#[async_trait]
impl Handler for PusherSession {
    const PROTOCOL: Protocol = Protocol::Pusher;

    fn encode(envelope: &Envelope) -> Option<Utf8Bytes> {
        let (event, data) = match envelope.kind {
            EnvelopeKind::Event => (envelope.event.as_ref(), data_string(&envelope.data)),
            EnvelopeKind::MemberAdded => ("pusher_internal:member_added", envelope.data.get().to_string()),
            EnvelopeKind::MemberRemoved => {
                let user: Value = serde_json::from_str(envelope.data.get()).unwrap_or(Value::Null);
                (
                    "pusher_internal:member_removed",
                    json!({"user_id": user["user_id"]}).to_string(),
                )
            }
        };
        let msg = json!({"event": event, "channel": envelope.channel.pusher_name(), "data": data});
        Some(text(&msg))
    }

    fn close_reason(&self, reason: CloseReason) -> CloseReason {
        if reason == CloseReason::SHUTDOWN {
            // 4200: "generic reconnect immediately": another node (or this one restarted)
            // will take the client.
            CloseReason {
                code: 4200,
                reason: "server shutting down, reconnect",
            }
        } else {
            reason
        }
    }

    async fn on_open(&mut self, s: &mut Session) -> Result<(), Stop> {
        if let Some((code, message)) = self.refusal {
            let _ = self.error(s, Some(code), message).await;
            s.close(CloseReason { code, reason: message }).await;
            return Err(Stop);
        }
        let Some(app) = &self.app else { return Err(Stop) };
        if !s.st.pusher_connections.acquire(app) {
            let _ = self
                .error(s, Some(codes::OVER_QUOTA), "Application is over connection quota")
                .await;
            s.close(CloseReason {
                code: codes::OVER_QUOTA,
                reason: "over connection quota",
            })
            .await;
            return Err(Stop);
        }
        self.counted = true;
        let data = json!({"socket_id": s.conn.id().to_string(), "activity_timeout": s.st.config.websocket.ping_interval.as_secs()});
        s.send_text(text(
            &json!({"event": "pusher:connection_established", "data": data.to_string()}),
        ))
        .await
    }

    async fn on_text(&mut self, s: &mut Session, frame: &str) -> Result<(), Stop> {
        let msg: Incoming = match serde_json::from_str(frame) {
            Ok(m) => m,
            Err(e) => return self.error(s, None, &format!("Invalid message: {e}")).await,
        };
        // pusher-js sends `data` as an object; some clients send it JSON-encoded.
        let data = match msg.data {
            Some(Value::String(t)) if msg.event.starts_with("pusher:") => serde_json::from_str(&t).ok(),
            other => other,
        };
        match msg.event.as_str() {
            "pusher:ping" => s.send_text(text(&json!({"event": "pusher:pong", "data": {}}))).await,
            "pusher:pong" => Ok(()),
            "pusher:subscribe" => match data.map(serde_json::from_value::<SubscribeData>) {
                Some(Ok(d)) => self.subscribe(s, d).await,
                _ => self.error(s, None, "pusher:subscribe needs data.channel").await,
            },
            "pusher:unsubscribe" => {
                if let Some(name) = data.as_ref().and_then(|d| d["channel"].as_str()) {
                    self.unsubscribe(s, name).await;
                }
                Ok(())
            }
            "pusher:signin" => self.signin(s, data).await,
            e if e.starts_with("client-") => {
                let event = e.to_string();
                self.client_event(s, &event, msg.channel.as_deref(), data).await
            }
            other => self.error(s, None, &format!("Unknown event {other:?}")).await,
        }
    }

    async fn on_binary(&mut self, s: &mut Session, _data: &[u8]) -> Result<(), Stop> {
        self.error(s, None, "Binary frames are not supported").await
    }

    async fn on_close(&mut self, s: &mut Session) {
        for (name, user) in std::mem::take(&mut self.presence_user) {
            if let Some(channel) = s.conn.subscription(&name) {
                s.st.presence.leave(&s.conn, &channel, &user).await;
            }
        }
        if self.counted {
            if let Some(app) = &self.app {
                s.st.pusher_connections.release(&app.id);
            }
        }
    }
}
