//! Pusher protocol v7 on `/app/{key}`, so pusher-js and Laravel Echo work unchanged.
//! Refusals are sent over the socket (`pusher:error`, then a close code), as clients
//! expect.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::codec::{self, codes, id_string, Incoming, SubscribeData};
use crate::channel::{Channel, ChannelKind};
use crate::hub::{CloseReason, Envelope, Protocol};
use crate::presence::Member;
use crate::protocol::{socket, ApiError, AppState};
use crate::services::pusher::{self, PusherApp};
use crate::session::runner::{replay, Handler, Reply};
use crate::session::{AppQuota, Grant, JoinAs, JoinError, Joined, Refusal, Session, Tenant};

use crate::services::pusher::SERVER_TO_USER;

/// Opens a Pusher protocol connection for an app.
#[utoipa::path(get, path = "/app/{key}", tag = "pusher", params(("key" = String, Path, description = "the app key"), ("protocol" = Option<u32>, Query, description = "5 to 7")), responses((status = 101, description = "WebSocket of the Pusher protocol (errors are pusher:error frames and close codes 4000-4299)")))]
pub(crate) async fn upgrade(
    State(st): State<AppState>,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    ws: socket::Upgrade,
) -> Response {
    let ws = match socket::required(ws) {
        Ok(ws) => socket::configure(ws, &st),
        Err(refused) => return refused,
    };
    // Only a server draining or shutting down refuses at the HTTP level.
    if st.node.hub().is_draining() {
        return ApiError::unavailable("server is shutting down: connect to another node").into_response();
    }
    let app = match check(&st, &key, query.get("protocol").map(String::as_str)) {
        Ok(app) => app,
        Err((code, message)) => return ws.on_upgrade(move |s| refuse(s, code, message.to_string())),
    };
    let quota = AppQuota {
        id: &app.id,
        max_connections: app.max_connections,
    };
    match st.node.admit(None, Some(quota)) {
        Ok(admission) => {
            // The app's quota holds over the whole cluster (as Pusher counts it).
            let place = match (&st.pusher.quota, app.max_connections) {
                (Some(cluster), max) if max > 0 => match cluster.reserve(&app.id, max).await {
                    Ok(place) => place.map(Box::new),
                    Err(e) => {
                        drop(admission);
                        let message = format!("Application is over connection quota: {e}");
                        return ws.on_upgrade(move |s| refuse(s, codes::OVER_QUOTA, message));
                    }
                },
                _ => None,
            };
            let handler = PusherSession {
                cx: st.pusher_contexts.get(&st, &app),
                _place: place,
            };
            ws.on_upgrade(move |s| socket::serve(&st, s, admission, handler))
        }
        Err(e) => {
            let code = codec::connect_code(e.code());
            let message = match code {
                codes::OVER_QUOTA => "Application is over connection quota".to_string(),
                _ => format!("Over capacity: {e}"),
            };
            ws.on_upgrade(move |s| refuse(s, code, message))
        }
    }
}

async fn refuse(upgraded: socket::WebSocket, code: u16, message: String) {
    let reason: &'static str = match code {
        codes::UNKNOWN_APP => "unknown app",
        codes::APP_DISABLED => "app disabled",
        codes::OVER_QUOTA => "over connection quota",
        codes::OVER_CAPACITY => "over capacity",
        _ => "unsupported protocol",
    };
    let frames = vec![codec::error(Some(code), &message)];
    socket::refuse(upgraded, frames, CloseReason { code, reason }).await;
}

/// Whether a Pusher client refused for want of any app was logged (once per process).
static NO_APP_LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The app for `key`, if it may connect with this protocol version.
fn check(st: &AppState, key: &str, protocol: Option<&str>) -> Result<PusherApp, (u16, &'static str)> {
    let config = st.config.load();
    let Some(app) = config.pusher.apps.by_key(key) else {
        if config.pusher.apps.is_empty() && !NO_APP_LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
                key = %key.chars().take(64).collect::<String>(),
                "a Pusher client was refused (4001): no Pusher app is configured; set PUSHER_APP_ID, PUSHER_APP_KEY \
                 and PUSHER_APP_SECRET (or Laravel Reverb's REVERB_APP_*) to the values the app uses"
            );
        }
        return Err((codes::UNKNOWN_APP, "App key does not exist"));
    };
    if !app.enabled {
        return Err((codes::APP_DISABLED, "App is disabled"));
    }
    match protocol.map(str::parse::<u32>) {
        None => Err((codes::NO_PROTOCOL, "No protocol version supplied")),
        Some(Err(_)) => Err((codes::INVALID_VERSION, "Invalid version string format")),
        Some(Ok(v)) if !(5..=7).contains(&v) => Err((codes::UNSUPPORTED_PROTOCOL, "Unsupported protocol version")),
        Some(Ok(_)) => Ok(app.clone()),
    }
}

/// What a Pusher connection needs of its app, shared by the connection's handler.
pub(crate) struct AppContext {
    app: PusherApp,
    tenant: Arc<Tenant>,
    features: Arc<crate::services::pusher::Features>,
    webhooks: Option<Arc<crate::webhooks::Webhooks>>,
}

/// Each app's [`AppContext`], built once and shared by all its connections (so a Pusher
/// connection costs one pointer for it, not a copy of its app's settings).
#[derive(Default)]
pub(crate) struct AppContexts {
    built: std::sync::Mutex<HashMap<String, Arc<AppContext>>>,
}

impl AppContexts {
    /// The context of `app` (rebuilt if its settings are not those it was built with).
    fn get(&self, st: &AppState, app: &PusherApp) -> Arc<AppContext> {
        let mut built = crate::sync::lock(&self.built);
        if let Some(cx) = built.get(&app.id).filter(|cx| cx.app == *app) {
            return cx.clone();
        }
        let cx = Arc::new(AppContext::new(st, app.clone()));
        built.insert(app.id.clone(), cx.clone());
        cx
    }
}

impl AppContext {
    fn new(st: &AppState, app: PusherApp) -> Self {
        let config = st.config.load();
        let tenant = Tenant {
            namespace: config.pusher.apps.namespace(&app).map(Arc::from),
            client_events_per_second: app.max_client_events_per_second,
            max_presence_members: app.max_presence_members_per_channel,
            max_member_size: app.max_presence_member_size,
            client_events_disabled: !app.enable_client_events,
        };
        Self {
            app,
            tenant: Arc::new(tenant),
            features: st.pusher.clone(),
            webhooks: st.webhooks.clone(),
        }
    }
}

/// A Pusher connection of one app.
pub(crate) struct PusherSession {
    cx: Arc<AppContext>,
    /// Its place in the app's cluster-wide connection quota (given back on close).
    _place: Option<Box<crate::services::pusher::quota::Place>>,
}

#[derive(Serialize)]
struct Established {
    socket_id: String,
    activity_timeout: u64,
}

#[derive(Serialize)]
struct PresenceData<'a> {
    presence: PresenceList<'a>,
}

#[derive(Serialize)]
struct PresenceList<'a> {
    ids: Vec<crate::presence::UserId<'a>>,
    hash: Map<String, Value>,
    count: usize,
}

#[derive(Serialize)]
struct SigninSuccess<'a> {
    user_data: &'a str,
}

fn empty_object() -> Box<RawValue> {
    serde_json::value::to_raw_value(&Map::new()).expect("an empty map is JSON")
}

fn error(code: Option<u16>, message: &str) -> Reply {
    Reply::text(codec::error(code, message))
}

fn parse_member(channel_data: &str) -> Option<Member> {
    Member::from_json(&serde_json::from_str(channel_data).ok()?)
}

fn succeeded(name: &str, joined: &Joined) -> Reply {
    let data = match &joined.presence {
        None => "{}".to_string(),
        Some(p) => serde_json::to_string(&PresenceData {
            presence: PresenceList {
                ids: p.members.iter().map(Member::id).collect(),
                hash: p
                    .members
                    .iter()
                    .map(|m| (m.user_id.clone(), m.user_info.clone()))
                    .collect(),
                count: p.members.len(),
            },
        })
        .unwrap_or_default(),
    };
    Reply::text(codec::message(
        "pusher_internal:subscription_succeeded",
        Some(name),
        data,
    ))
}

/// A socket of an app with `user_authentication_timeout` that did not sign in in time.
const NOT_SIGNED_IN: CloseReason = CloseReason {
    code: codes::UNAUTHORIZED,
    reason: "Connection not authorized within timeout",
};

/// The event after the missed messages of a subscription that asked for them with `since`.
const RECOVERED_EVENT: &str = "rustaxum:recovered";

impl PusherSession {
    async fn subscribe(&self, s: &mut Session, data: SubscribeData) -> Reply {
        let name = data.channel;
        if let Some(user) = name.strip_prefix(SERVER_TO_USER) {
            // pusher-js joins this after pusher:signin; only the signed-in user may. What
            // the HTTP API sends there (`sendToUser`) reaches each of the user's sockets.
            if s.app_user().as_deref() != Some(user) {
                return Reply::text(codec::subscription_error(&name, 403, "sign in as this user first"));
            }
            let Some(channel) = pusher::server_to_user(s.namespace(), user) else {
                return Reply::text(codec::subscription_error(&name, 400, "invalid user id"));
            };
            let grant = Grant::for_channel(channel.clone(), None);
            return match s.join(&channel, JoinAs::Granted(Box::new(grant))).await {
                Ok(_) => Reply::text(codec::message(
                    "pusher_internal:subscription_succeeded",
                    Some(&name),
                    "{}",
                )),
                Err(JoinError::Closing) => Reply::none(),
                Err(e) => Reply::text(codec::subscription_error(
                    &name,
                    codec::subscription_status(e.code()),
                    &e.to_string(),
                )),
            };
        }
        let channel = match s.parse(&name) {
            Ok(c) => c,
            Err(e) => return Reply::text(codec::subscription_error(&name, 400, &e.to_string())),
        };
        let how = match channel.kind() {
            // A name without prefix must be public under the server's rules too, or a
            // Pusher client could read `user.42` without authenticating.
            ChannelKind::Public => JoinAs::Public,
            ChannelKind::Private | ChannelKind::Presence => {
                let socket_id = s.id().to_string();
                let channel_data = data
                    .channel_data
                    .as_deref()
                    .filter(|_| channel.kind() == ChannelKind::Presence);
                let auth = data.auth.as_deref().unwrap_or("");
                if !pusher::verify_channel_auth(&self.cx.app, &socket_id, &name, channel_data, auth) {
                    let message = format!(
                        "Invalid signature: expected HMAC SHA256 of '{socket_id}:{name}{}'",
                        if channel_data.is_some() { ":<channel_data>" } else { "" }
                    );
                    return Reply::text(codec::subscription_error(&name, 401, &message));
                }
                let member = channel_data.and_then(parse_member);
                if channel.kind() == ChannelKind::Presence && member.is_none() {
                    let message = "channel_data must be JSON with a user_id";
                    return Reply::text(codec::subscription_error(&name, 400, message));
                }
                JoinAs::Signed { member }
            }
        };
        match s.join(&channel, how).await {
            Ok(joined) => {
                let mut reply = succeeded(&name, &joined);
                if joined.channel.is_cache() {
                    reply.frames.push(self.cached(&joined.channel, &name).await);
                }
                if data.since.is_some() {
                    let up = s.catch_up(&joined.channel, data.since.as_ref()).await;
                    reply.frames.extend(replay::<Self>(up.messages));
                    let marker = json!({"recovered": up.recovered, "capped": up.capped, "position": up.position});
                    reply
                        .frames
                        .push(codec::message_encoded(RECOVERED_EVENT, Some(&name), &marker));
                }
                reply
            }
            Err(JoinError::Closing) => Reply::none(),
            Err(e @ JoinError::NotPublic(_)) => {
                let message = format!("{e}; subscribe as private-{name}");
                Reply::text(codec::subscription_error(&name, 403, &message))
            }
            Err(e) => Reply::text(codec::subscription_error(
                &name,
                codec::subscription_status(e.code()),
                &e.to_string(),
            )),
        }
    }

    /// A cache channel's last event for a new subscriber, or `pusher:cache_miss`.
    async fn cached(&self, channel: &Channel, name: &str) -> String {
        if let Some(message) = self.cx.features.cache.last(channel).await {
            let envelope = Envelope::detached(message);
            if let Some(frame) = codec::encode(&envelope) {
                return frame;
            }
        }
        if let Some(w) = &self.cx.webhooks {
            w.cache_miss(channel);
        }
        codec::cache_miss(name)
    }

    async fn client_event(&self, s: &mut Session, event: &str, channel: Option<&str>, data: Arc<RawValue>) -> Reply {
        let Some(name) = channel else {
            return error(None, "Client event rejected: no channel given");
        };
        // pusher-js sends the data as an object; a string is kept as the client sent it.
        let data = if data.get() == "null" {
            Arc::from(empty_object())
        } else {
            data
        };
        match s.client_event(name, event, data).await {
            Ok(_) => Reply::none(),
            Err(e) => error(
                codec::client_event_code(e.code()),
                &format!("Client event rejected: {e}"),
            ),
        }
    }

    async fn signin(&self, s: &mut Session, data: Option<Value>) -> Reply {
        let auth = data.as_ref().and_then(|d| d["auth"].as_str()).unwrap_or("");
        let user_data = data.as_ref().and_then(|d| d["user_data"].as_str()).unwrap_or("");
        let user = serde_json::from_str::<Value>(user_data).ok();
        let user_id = user.as_ref().and_then(|u| id_string(&u["id"]));
        match user_id {
            Some(id) if pusher::verify_user_auth(&self.cx.app, &s.id().to_string(), user_data, auth) => {
                s.sign_in(&id);
                let mut reply = Reply::text(codec::message_encoded(
                    "pusher:signin_success",
                    None,
                    &SigninSuccess { user_data },
                ));
                let watchlist: Vec<String> = user
                    .as_ref()
                    .and_then(|u| u["watchlist"].as_array())
                    .map(|ids| ids.iter().filter_map(id_string).collect())
                    .unwrap_or_default();
                let online = self
                    .cx
                    .features
                    .watchlist
                    .signed_in(s.id(), s.namespace(), &id, &watchlist)
                    .await;
                if let Some(events) = online {
                    reply
                        .frames
                        .push(codec::message("pusher_internal:watchlist_events", None, events.get()));
                }
                reply
            }
            _ => error(
                Some(codes::UNAUTHORIZED),
                "Invalid signin: bad auth signature or user_data without id",
            )
            .and_close(CloseReason {
                code: codes::UNAUTHORIZED,
                reason: "unauthorized",
            }),
        }
    }
}

#[async_trait]
impl Handler for PusherSession {
    const PROTOCOL: Protocol = Protocol::Pusher;

    fn encode(envelope: &Envelope) -> Option<String> {
        codec::encode(envelope)
    }

    fn close_reason(&self, reason: CloseReason) -> CloseReason {
        if reason == CloseReason::SHUTDOWN || reason == CloseReason::RESTART {
            // 4200: "generic reconnect immediately": another node (or this one restarted)
            // will take the client.
            CloseReason {
                code: codes::RECONNECT,
                reason: "server shutting down, reconnect",
            }
        } else {
            reason
        }
    }

    /// Pusher sends `pusher:error` with the close code before closing (pusher-js reports
    /// it to the app), for the codes that mean "do not just reconnect" (4000-4099).
    fn farewell(&self, reason: CloseReason) -> Option<String> {
        (4000..4100)
            .contains(&reason.code)
            .then(|| codec::error(Some(reason.code), reason.reason))
    }

    async fn on_open(&mut self, s: &mut Session) -> Reply {
        s.set_tenant(self.cx.tenant.clone());
        let timeout = self.cx.app.user_authentication_timeout;
        if timeout > 0 {
            // Pusher's authorized connections: sign in within the timeout or be closed.
            let conn = Arc::downgrade(s.conn());
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(timeout)).await;
                if let Some(conn) = conn.upgrade() {
                    if conn.user().is_none() {
                        conn.close(NOT_SIGNED_IN);
                    }
                }
            });
        }
        let data = Established {
            socket_id: s.id().to_string(),
            activity_timeout: s.node().limits().keepalive().0.as_secs(),
        };
        Reply::text(codec::message_encoded("pusher:connection_established", None, &data))
    }

    async fn on_text(&mut self, s: &mut Session, frame: &str) -> Reply {
        let msg: Incoming = match serde_json::from_str(frame) {
            Ok(m) => m,
            Err(e) => return error(None, &format!("Invalid message: {e}")),
        };
        if msg.event.starts_with(crate::session::CLIENT_EVENT_PREFIX) {
            // Passed on as the client wrote it (key order, escapes, spelling of numbers).
            let data = msg.data.map_or_else(|| Arc::from(empty_object()), Arc::from);
            return self.client_event(s, &msg.event, msg.channel.as_deref(), data).await;
        }
        // pusher-js sends `data` as an object; some clients send it JSON-encoded.
        let data = match msg.data.map(|raw| serde_json::from_str::<Value>(raw.get())) {
            Some(Ok(Value::String(t))) => serde_json::from_str(&t).ok(),
            Some(Ok(Value::Null)) | Some(Err(_)) | None => None,
            Some(Ok(other)) => Some(other),
        };
        match msg.event.as_str() {
            "pusher:ping" => Reply::text(codec::message("pusher:pong", None, Map::new())),
            "pusher:pong" => Reply::none(),
            "pusher:subscribe" => match data.map(serde_json::from_value::<SubscribeData>) {
                Some(Ok(d)) => self.subscribe(s, d).await,
                _ => error(None, "pusher:subscribe needs data.channel"),
            },
            "pusher:unsubscribe" => {
                if let Some(name) = data.as_ref().and_then(|d| d["channel"].as_str()) {
                    let _ = s.leave(name).await;
                }
                Reply::none()
            }
            "pusher:signin" => self.signin(s, data).await,
            other => error(None, &format!("Unknown event {other:?}")),
        }
    }

    async fn on_binary(&mut self, _s: &mut Session, _data: &[u8]) -> Reply {
        error(None, "Binary frames are not supported")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::runner::run;
    use crate::session::testing::fixtures::node;
    use crate::session::testing::{pair, TestClient};
    use crate::session::Node;
    use serde_json::json;

    fn app() -> PusherApp {
        PusherApp::new("app", "key", "secret")
    }

    /// A Pusher session over an in-memory socket; returns the client and its socket id.
    async fn connect(node: &Arc<Node>) -> (TestClient, String) {
        let (session, rx) = node.admit(None, None).unwrap().open(Protocol::Pusher);
        let (socket, mut client) = pair();
        let config = crate::Config {
            pusher: crate::config::PusherConfig {
                apps: pusher::Apps::new(vec![app()]),
                ..Default::default()
            },
            ..Default::default()
        };
        let features = crate::services::pusher::Features::new(node.fanout(), None, config.pusher.apps.clone());
        let handler = PusherSession {
            cx: Arc::new(AppContext {
                app: app(),
                tenant: Arc::default(),
                features,
                webhooks: None,
            }),
            _place: None,
        };
        tokio::spawn(run::<_, String, _>(session, rx, socket, handler));
        let established = client.recv_json().await;
        assert_eq!(established["event"], "pusher:connection_established");
        let data: Value = serde_json::from_str(established["data"].as_str().unwrap()).unwrap();
        (client, data["socket_id"].as_str().unwrap().to_string())
    }

    fn subscribe(client: &TestClient, channel: &str, auth: Option<String>, channel_data: Option<&str>) {
        let msg = json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth, "channel_data": channel_data}});
        client.send_text(msg.to_string());
    }

    #[tokio::test]
    async fn subscriptions_by_spelling_and_signature() {
        let node = node();
        let (mut c, socket_id) = connect(&node).await;
        let cases: [(&str, Option<String>, u64); 3] = [
            ("user.42", None, 403),
            ("private-user.42", Some("key:forged".into()), 401),
            ("bad name", None, 400),
        ];
        for (channel, auth, status) in cases {
            subscribe(&c, channel, auth, None);
            let e = c.recv_json().await;
            assert_eq!(
                (e["event"].as_str(), e["data"]["status"].as_u64()),
                (Some("pusher:subscription_error"), Some(status)),
                "{channel}"
            );
        }
        subscribe(&c, "general", None, None);
        assert_eq!(c.recv_json().await["event"], "pusher_internal:subscription_succeeded");
        let data = r#"{"user_id":"7","user_info":{"name":"Ann"}}"#;
        let auth = pusher::channel_auth(&app(), &socket_id, "presence-room", Some(data));
        subscribe(&c, "presence-room", Some(auth), Some(data));
        let ok = c.recv_json().await;
        assert_eq!(ok["channel"], "presence-room");
        let presence: Value = serde_json::from_str(ok["data"].as_str().unwrap()).unwrap();
        assert_eq!(
            presence,
            json!({"presence": {"ids": ["7"], "hash": {"7": {"name": "Ann"}}, "count": 1}})
        );
    }

    #[tokio::test]
    async fn client_events_and_signin() {
        let node = node();
        let (mut a, a_id) = connect(&node).await;
        let (mut b, b_id) = connect(&node).await;
        for (c, id) in [(&a, &a_id), (&b, &b_id)] {
            subscribe(
                c,
                "private-orders.1",
                Some(pusher::channel_auth(&app(), id, "private-orders.1", None)),
                None,
            );
        }
        a.recv_json().await;
        b.recv_json().await;
        a.send_text(json!({"event": "client-typing", "channel": "private-orders.1", "data": {"x": 1}}).to_string());
        let got = b.recv_json().await;
        assert_eq!(
            (got["event"].as_str(), got["channel"].as_str()),
            (Some("client-typing"), Some("private-orders.1"))
        );
        assert_eq!(got["data"], "{\"x\":1}");
        a.send_text(json!({"event": "client-typing", "channel": "general", "data": {}}).to_string());
        assert_eq!(a.recv_json().await["event"], "pusher:error");

        let user_data = r#"{"id":"9"}"#;
        let auth = pusher::user_auth(&app(), &b_id, user_data);
        b.send_text(json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}).to_string());
        assert_eq!(b.recv_json().await["event"], "pusher:signin_success");
        assert_eq!(node.hub().terminate_user("9"), 1, "the socket is the signed-in user's");
        a.send_text(json!({"event": "pusher:signin", "data": {"auth": "key:bad", "user_data": user_data}}).to_string());
        assert_eq!(a.recv_json().await["data"]["code"], 4009);
    }
}
