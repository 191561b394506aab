//! The typed-frame WebSocket: `/ws` on the service's own port (`BROADCAST_RTC_PORT`) and
//! `/rtc/ws` on the main ports. The token comes as `?token=`, `Authorization: Bearer` or
//! the `access_token.<token>` subprotocol.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::DefaultDirectRateLimiter;
use serde_json::{json, Value};

use super::codec::{self, ClientFrame, DEFAULT_CLIENT_EVENT};
use crate::channel::{Channel, ChannelKind};
use crate::hub::{Envelope, Position, Protocol};
use crate::protocol::credentials::Credentials;
use crate::protocol::{socket, ApiError, AppState};
use crate::services::rtc::rooms::room_channel;
use crate::services::rtc::{Connection, DirectMessageError, EnterError, Entered, RoomError, Rtc};
use crate::session::runner::{replay, Handler, Reply};
use crate::session::ConnectError;
use crate::session::{JoinAs, JoinError, Refusal, Session, CLIENT_EVENT_PREFIX};

use crate::protocol::socket::Upgrade;

/// Most topics one `Subscribe` or `Unsubscribe` may name.
const MAX_TOPICS_PER_FRAME: usize = 100;

/// Opens a typed-frame connection (the real-time communication service's protocol).
#[utoipa::path(
    get,
    path = "/rtc/ws",
    tag = "rtc",
    params(("token" = Option<String>, Query, description = "a JWT (or `Authorization: Bearer`, or the `access_token.<JWT>` subprotocol)")),
    responses(
        (status = 101, description = "WebSocket of typed frames (also at `/ws` on BROADCAST_RTC_PORT)"),
        (status = 401, description = "the token is invalid, or missing while a JWT key is configured (unless BROADCAST_RTC_ALLOW_ANONYMOUS=true)"),
        (status = 429, description = "BROADCAST_MAX_CONNECTIONS_PER_USER reached"),
        (status = 503, description = "BROADCAST_MAX_CONNECTIONS reached")
    )
)]
pub(crate) async fn upgrade(
    State(st): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Upgrade,
) -> Response {
    let ws = match crate::protocol::socket::required(ws) {
        Ok(ws) => ws,
        Err(refused) => return refused,
    };
    let credentials = Credentials::from_request(&headers, &query);
    let identity = match credentials.authenticate(&st) {
        Ok(identity) => identity,
        Err(e) => return e.into_response(),
    };
    // The service authenticates every connection (its document); anonymous typed-frame
    // connections are the operator's choice once a JWT key exists.
    if identity.is_none() && st.node.verifier().is_some() && !st.rtc.config().allow_anonymous {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a token is required (?token=, Authorization: Bearer or the access_token.<jwt> subprotocol); \
             BROADCAST_RTC_ALLOW_ANONYMOUS=true admits connections without one",
        )
        .into_response();
    }
    let admission = match crate::protocol::admit_default(&st, identity) {
        Ok(admission) => admission,
        Err(e) => {
            let status = match e {
                ConnectError::UserOverQuota(_) => StatusCode::TOO_MANY_REQUESTS,
                ConnectError::ShuttingDown | ConnectError::OverCapacity(_) | ConnectError::AppOverQuota { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            return ApiError::new(status, e.code().as_str(), e.to_string()).into_response();
        }
    };
    let mut ws = socket::configure(ws, &st);
    if let Some(p) = credentials.subprotocol {
        ws = ws.protocols([p]);
    }
    let handler = RtcSession::new(st.rtc.clone());
    ws.on_upgrade(move |upgraded| socket::serve(&st, upgraded, admission, handler))
}

/// One typed-frame connection.
pub(crate) struct RtcSession {
    conn: Connection,
    limiter: Option<DefaultDirectRateLimiter>,
}

fn error(code: &str, message: &str) -> String {
    codec::error(code, message, None)
}

fn refusal_about<R: Refusal>(r: &R, key: &str, value: &str) -> String {
    codec::error(r.code().as_str(), &r.to_string(), Some((key, value)))
}

fn room_error(e: &RoomError, room: &str) -> String {
    codec::error(e.code(), &e.to_string(), Some(("room", room)))
}

fn enter_error(e: &EnterError, room: &str) -> String {
    codec::error(e.code(), &e.to_string(), Some(("room", room)))
}

/// The `room_joined` status.
fn room_joined(entered: &Entered) -> String {
    let room = &entered.room;
    let members: Vec<&String> = room.members.keys().collect();
    codec::status(
        "room_joined",
        json!({
            "room": room.name,
            "topic": entered.channel.local_name(),
            "owner": room.owner,
            "private": room.private,
            "max_members": room.max_members,
            "members": members,
            "rejoined": entered.rejoined,
        }),
    )
}

impl RtcSession {
    pub(crate) fn new(rtc: Arc<Rtc>) -> Self {
        let limiter = rtc.limiter().connection_limiter();
        Self {
            conn: Connection::new(rtc),
            limiter,
        }
    }

    fn rtc(&self) -> &Arc<Rtc> {
        self.conn.rtc()
    }

    /// Once authenticated: the rooms brought back, and their frames.
    async fn authenticated(&mut self, s: &mut Session) -> (Vec<String>, Vec<String>) {
        let done = self.conn.authenticated(s).await;
        let mut rooms = Vec::new();
        let mut frames = Vec::new();
        for entered in done.rooms {
            match entered {
                Ok(entered) => {
                    frames.push(room_joined(&entered));
                    rooms.push(entered.room.name);
                }
                Err((name, e)) => frames.push(enter_error(&e, &name)),
            }
        }
        if let Some(e) = done.unlisted {
            frames.push(room_error(&e, ""));
        }
        (rooms, frames)
    }

    async fn subscribe(
        &self,
        s: &mut Session,
        topics: Vec<String>,
        join: bool,
        since: &std::collections::HashMap<String, Position>,
    ) -> Reply {
        if topics.len() > MAX_TOPICS_PER_FRAME {
            return Reply::text(error(
                "too_many_topics",
                &format!("at most {MAX_TOPICS_PER_FRAME} topics per frame"),
            ));
        }
        let mut done = Vec::new();
        let mut frames = Vec::new();
        let mut positions = serde_json::Map::new();
        let mut recoveries = Vec::new();
        for topic in topics {
            if join {
                match Channel::parse(&topic) {
                    Ok(channel) => match s.join(&channel, JoinAs::Topic).await {
                        Ok(joined) => {
                            let name = joined.channel.local_name().to_string();
                            let catch_up = s.catch_up(&joined.channel, since.get(&topic)).await;
                            if let Some(p) = &catch_up.position {
                                positions.insert(name.clone(), json!(p));
                            }
                            if let Some(recovered) = catch_up.recovered {
                                let mut replayed = replay::<Self>(catch_up.messages);
                                replayed.push(codec::status(
                                    "recovered",
                                    json!({
                                        "topic": name,
                                        "recovered": recovered,
                                        "capped": catch_up.capped,
                                        "position": catch_up.position,
                                    }),
                                ));
                                recoveries.push(replayed);
                            }
                            done.push(name);
                        }
                        Err(JoinError::Closing) => return Reply::none(),
                        Err(e) => frames.push(refusal_about(&e, "topic", &topic)),
                    },
                    Err(e) => frames.push(codec::error("invalid_topic", &e.to_string(), Some(("topic", &topic)))),
                }
            } else {
                match s.leave(&topic).await {
                    Ok(channel) => done.push(channel.local_name().to_string()),
                    Err(e) => frames.push(refusal_about(&e, "topic", &topic)),
                }
            }
        }
        if !done.is_empty() {
            let status = if join { "subscribed" } else { "unsubscribed" };
            let fields = if positions.is_empty() {
                json!({ "topics": done })
            } else {
                json!({ "topics": done, "positions": positions })
            };
            frames.insert(0, codec::status(status, fields));
        }
        frames.extend(recoveries.into_iter().flatten());
        Reply { frames, close: None }
    }

    async fn broadcast(&self, s: &mut Session, topic: &str, payload: Value, event: Option<String>) -> Reply {
        if let Err(level) = self.rtc().limiter().check(s.user().as_deref(), Some(topic)).await {
            return Reply::text(codec::error(
                level.code(),
                "rate limit exceeded; this message was not sent",
                Some(("topic", topic)),
            ));
        }
        let event = match event {
            None => DEFAULT_CLIENT_EVENT.to_string(),
            Some(e) if e.starts_with(CLIENT_EVENT_PREFIX) => e,
            Some(e) => format!("{CLIENT_EVENT_PREFIX}{e}"),
        };
        let raw = match serde_json::value::to_raw_value(&payload) {
            Ok(raw) => Arc::from(raw),
            Err(e) => return Reply::text(error("invalid_frame", &e.to_string())),
        };
        match s.client_event(topic, &event, raw).await {
            Ok(_) => Reply::none(),
            Err(e) => Reply::text(refusal_about(&e, "topic", topic)),
        }
    }

    async fn direct_message(&self, s: &mut Session, target: &str, payload: Value) -> Reply {
        let Some(me) = s.user() else {
            return Reply::text(error(
                "unauthorized",
                "direct messages need an authenticated connection (a token)",
            ));
        };
        match self.rtc().direct_message(s.node(), me, s.id(), target, payload).await {
            Ok(()) => Reply::text(codec::status("sent", json!({"target_user": target}))),
            Err(e @ DirectMessageError::Offline(_)) => {
                Reply::text(codec::error(e.code(), &e.to_string(), Some(("target_user", target))))
            }
            Err(e) => Reply::text(error(e.code(), &e.to_string())),
        }
    }

    async fn refresh(&mut self, s: &mut Session, token: &str) -> Reply {
        let was_anonymous = s.user().is_none();
        match s.refresh(token) {
            Ok(expires_at) => {
                let mut frames = vec![codec::status(
                    "refreshed",
                    json!({"user_id": s.user().as_deref(), "expires_at": expires_at}),
                )];
                if was_anonymous {
                    let (_, more) = self.authenticated(s).await;
                    frames.extend(more);
                }
                Reply { frames, close: None }
            }
            Err(e) => Reply::text(error(e.code().as_str(), &e.to_string())),
        }
    }

    async fn create_room(&mut self, s: &mut Session, name: &str, options: crate::services::rtc::NewRoom) -> Reply {
        match self.conn.create(s, name, options).await {
            Ok((room, entered)) => Reply {
                frames: vec![
                    codec::status(
                        "room_created",
                        json!({"room": room.name, "owner": room.owner, "private": room.private, "max_members": room.max_members}),
                    ),
                    room_joined(&entered),
                ],
                close: None,
            },
            Err(e) => Reply::text(enter_error(&e, name)),
        }
    }

    async fn leave_room(&mut self, s: &mut Session, name: &str) -> Reply {
        match self.conn.leave(s, name).await {
            Ok(()) => Reply::text(codec::status("room_left", json!({"room": name}))),
            Err(e) => Reply::text(room_error(&e, name)),
        }
    }

    async fn presence(&self, s: &mut Session, topic: Option<String>, room: Option<String>) -> Reply {
        let (name, about) = match (topic, room) {
            (Some(t), _) => (t.clone(), ("topic", t)),
            (None, Some(r)) => match room_channel(&r) {
                Some(c) => (c.name().to_string(), ("room", r)),
                None => return Reply::text(room_error(&RoomError::InvalidName(r.clone()), &r)),
            },
            (None, None) => return Reply::text(error("invalid_frame", "Presence needs either topic or room")),
        };
        let Some(channel) = s.subscription(&name).cloned() else {
            return Reply::text(codec::error(
                "not_subscribed",
                "join the topic or room first",
                Some((about.0, &about.1)),
            ));
        };
        if channel.kind() != ChannelKind::Presence {
            return Reply::text(codec::error(
                "not_presence",
                "only presence topics (presence.*) and rooms have members",
                Some((about.0, &about.1)),
            ));
        }
        match s.node().presence().members(channel.name()).await {
            Ok(members) => {
                let mut data = json!({"users": members, "count": members.len()});
                if let Value::Object(map) = &mut data {
                    map.insert(about.0.into(), Value::String(about.1));
                }
                Reply::text(codec::status("presence", data))
            }
            Err(e) => Reply::text(error("unavailable", &e.to_string())),
        }
    }
}

#[async_trait]
impl Handler for RtcSession {
    const PROTOCOL: Protocol = Protocol::Rtc;

    fn encode(envelope: &Envelope) -> Option<String> {
        codec::encode(envelope)
    }

    async fn on_open(&mut self, s: &mut Session) -> Reply {
        let (rooms, more) = self.authenticated(s).await;
        let (interval, _) = s.node().limits().keepalive();
        let mut frames = vec![codec::status(
            "connected",
            json!({
                "user_id": s.user().as_deref(),
                "connection_id": s.id().to_string(),
                "heartbeat_interval": interval.as_secs(),
                "rooms": rooms,
            }),
        )];
        frames.extend(more);
        Reply { frames, close: None }
    }

    async fn on_text(&mut self, s: &mut Session, text: &str) -> Reply {
        if let Some(limiter) = &self.limiter {
            if limiter.check().is_err() {
                let per_second = self.rtc().limiter().limits().per_connection;
                return Reply::text(error(
                    "rate_limited_connection",
                    &format!("more than {per_second} frames per second; this one was not handled"),
                ));
            }
        }
        let frame = match codec::parse(text) {
            Ok(frame) => frame,
            Err((code, message)) => return Reply::text(error(code, &message)),
        };
        match frame {
            ClientFrame::Ping => Reply::text(codec::pong()),
            ClientFrame::Subscribe(topics, since) => self.subscribe(s, topics, true, &since).await,
            ClientFrame::Unsubscribe(topics) => self.subscribe(s, topics, false, &Default::default()).await,
            ClientFrame::Broadcast { topic, payload, event } => self.broadcast(s, &topic, payload, event).await,
            ClientFrame::DirectMessage { target_user, payload } => self.direct_message(s, &target_user, payload).await,
            ClientFrame::RefreshToken(token) => self.refresh(s, &token).await,
            ClientFrame::CreateRoom { room, options } => self.create_room(s, &room, options).await,
            ClientFrame::JoinRoom(room) => match self.conn.enter(s, &room, false).await {
                Ok(entered) => Reply::text(room_joined(&entered)),
                Err(e) => Reply::text(enter_error(&e, &room)),
            },
            ClientFrame::LeaveRoom(room) => self.leave_room(s, &room).await,
            ClientFrame::Presence { topic, room } => self.presence(s, topic, room).await,
        }
    }

    async fn on_binary(&mut self, _s: &mut Session, _data: &[u8]) -> Reply {
        Reply::text(error("binary_not_supported", "send JSON text frames"))
    }

    async fn on_close(&mut self, s: &mut Session) {
        self.conn.closed(s).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::runner::run;
    use crate::session::testing::fixtures::{node, token};
    use crate::session::testing::{pair, TestClient};
    use crate::session::Node;

    fn rtc() -> Arc<Rtc> {
        Rtc::new(crate::config::RtcConfig::default(), None)
    }

    fn connect(node: &Arc<Node>, rtc: &Arc<Rtc>, sub: Option<&str>) -> TestClient {
        let identity = sub.map(|u| node.verify(&token(u)).unwrap());
        let admission = node.admit(identity, None).unwrap();
        let (session, rx) = admission.open(Protocol::Rtc);
        let (socket, client) = pair();
        tokio::spawn(run::<_, String, _>(session, rx, socket, RtcSession::new(rtc.clone())));
        client
    }

    #[tokio::test]
    async fn typed_frames_without_a_network() {
        let node = node();
        let rtc = rtc();
        let mut alice = connect(&node, &rtc, Some("1"));
        let hello = alice.recv_json().await;
        assert_eq!(
            (hello["type"].as_str(), hello["data"]["status"].as_str()),
            (Some("Status"), Some("connected"))
        );
        assert_eq!(hello["data"]["user_id"], "1");
        let mut bob = connect(&node, &rtc, Some("2"));
        bob.recv_json().await;

        alice.send_text(r#"{"type":"Subscribe","data":{"topics":["notifications","user.2"]}}"#);
        let subscribed = alice.recv_json().await;
        assert_eq!(
            subscribed["data"],
            json!({"status": "subscribed", "topics": ["notifications"]})
        );
        let refused = alice.recv_json().await;
        assert_eq!(
            (refused["type"].as_str(), refused["data"]["topic"].as_str()),
            (Some("Error"), Some("user.2"))
        );

        bob.send_text(r#"{"type":"DirectMessage","data":{"target_user":"1","payload":{"hi":true}}}"#);
        assert_eq!(bob.recv_json().await["data"]["status"], "sent");
        let dm = alice.recv_json().await;
        assert_eq!(dm["type"], "DirectMessage");
        assert_eq!(
            (dm["data"]["from"].as_str(), &dm["data"]["payload"]),
            (Some("2"), &json!({"hi": true}))
        );
        bob.send_text(r#"{"type":"DirectMessage","data":{"target_user":"9","payload":1}}"#);
        assert_eq!(bob.recv_json().await["data"]["code"], "user_offline");
        bob.send_text(r#"{"type":"DirectMessage","data":{"target_user":"","payload":1}}"#);
        assert_eq!(bob.recv_json().await["data"]["code"], "invalid_user");

        alice.send_text(r#"{"type":"Ping"}"#);
        assert_eq!(alice.recv_json().await["type"], "Pong");
        alice.send_text(r#"{"type":"Wave","data":{}}"#);
        assert_eq!(alice.recv_json().await["data"]["code"], "unknown_type");
    }
}
