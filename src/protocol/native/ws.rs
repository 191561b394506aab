//! The native protocol's WebSocket: `/ws?channel=..` and `/ws/{channel}`. Errors never
//! close the socket; they are answered with an `error` or `subscription_error` event.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::codec::{self, ClientFrame, ConnectionEstablished, SubscriptionSucceeded, TokenRefreshed, Unsubscribed};
use crate::channel::Channel;
use crate::hub::{Envelope, Position, Protocol};
use crate::protocol::credentials::Credentials;
use crate::protocol::{socket, ApiError, AppState};
use crate::session::runner::{replay, Handler, Reply};
use crate::session::{JoinAs, JoinError, Refusal, Session, CLIENT_EVENT_PREFIX};

use crate::protocol::socket::Upgrade;

/// Opens a native protocol connection, optionally joining `channel`.
#[utoipa::path(get, path = "/ws", tag = "native", params(("channel" = Option<String>, Query, description = "a channel to join at once"), ("since" = Option<String>, Query, description = "`EPOCH:OFFSET`: the last position seen on `channel`, to recover what was missed"), ("auth_token" = Option<String>, Query, description = "a JWT (or `Authorization: Bearer`, or the `access_token.<JWT>` subprotocol)")), responses((status = 101, description = "WebSocket of the native protocol"), (status = 401, description = "the token is missing or invalid for a private channel"), (status = 403, description = "the channel is not allowed"), (status = 503, description = "BROADCAST_MAX_CONNECTIONS reached")))]
pub(crate) async fn upgrade_query(
    State(st): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Upgrade,
) -> Response {
    let channel = query.get("channel").cloned();
    upgrade(st, ws, channel, &headers, &query)
}

/// Opens a native protocol connection joined to a channel.
#[utoipa::path(get, path = "/ws/{channel}", tag = "native", params(("channel" = String, Path, description = "the channel to join"), ("since" = Option<String>, Query, description = "`EPOCH:OFFSET`: the last position seen, to recover what was missed"), ("auth_token" = Option<String>, Query, description = "a JWT")), responses((status = 101, description = "WebSocket of the native protocol, subscribed to the channel"), (status = 401, description = "the token is missing or invalid"), (status = 403, description = "the channel is not allowed")))]
pub(crate) async fn upgrade_path(
    State(st): State<AppState>,
    Path(channel): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Upgrade,
) -> Response {
    upgrade(st, ws, Some(channel), &headers, &query)
}

/// A refusal before the upgrade, as JSON with the protocol's status.
fn http_refusal<R: Refusal>(r: &R) -> ApiError {
    let status = StatusCode::from_u16(codec::status(r.code())).unwrap_or(StatusCode::FORBIDDEN);
    ApiError::new(status, r.code().as_str(), r.to_string())
}

fn upgrade(
    st: AppState,
    ws: Upgrade,
    channel: Option<String>,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Response {
    let ws = match crate::protocol::socket::required(ws) {
        Ok(ws) => ws,
        Err(refused) => return refused,
    };
    let credentials = Credentials::from_request(headers, query);
    let identity = match credentials.authenticate(&st) {
        Ok(identity) => identity,
        Err(e) => return e.into_response(),
    };
    // Refuse a channel the connection could never join before upgrading (401/403/422).
    let initial = match channel.filter(|c| !c.is_empty()).map(|c| Channel::parse(&c)) {
        None => None,
        Some(Err(e)) => return ApiError::unprocessable(format!("invalid channel: {e}")).into_response(),
        Some(Ok(channel)) => match st.node.grant(identity.as_ref(), &channel, &JoinAs::User) {
            Ok(_) => Some(channel),
            Err(e) => return http_refusal(&e).into_response(),
        },
    };
    let since = match crate::protocol::since_param(query) {
        Ok(since) => since,
        Err(e) => return e.into_response(),
    };
    let admission = match crate::protocol::admit_default(&st, identity) {
        Ok(admission) => admission,
        Err(e) => return http_refusal(&e).into_response(),
    };
    let mut ws = socket::configure(ws, &st);
    if let Some(p) = credentials.subprotocol {
        ws = ws.protocols([p]);
    }
    ws.on_upgrade(move |upgraded| socket::serve(&st, upgraded, admission, NativeSession { initial, since }))
}

/// A native connection: the channel it asked for on connect, joined first.
pub(crate) struct NativeSession {
    initial: Option<Channel>,
    /// The last position seen on `initial`, to recover from.
    since: Option<Position>,
}

fn error(channel: &str, failure: impl Into<codec::Failure>, message: &str) -> Reply {
    Reply::text(codec::refusal(channel, "error", failure, message))
}

async fn join(s: &mut Session, channel: &Channel, since: Option<&Position>) -> Reply {
    match s.join(channel, JoinAs::User).await {
        Ok(joined) => {
            let catch_up = s.catch_up(&joined.channel, since).await;
            let mut frames = replay::<NativeSession>(catch_up.messages);
            let presence = joined.presence.as_ref();
            let data = SubscriptionSucceeded {
                channel: joined.channel.local_name(),
                kind: joined.channel.kind(),
                socket_id: s.id().to_string(),
                subscribers: joined.subscribers,
                members: presence.map(|p| p.members.as_slice()),
                count: presence.map(|p| p.members.len()),
                me: presence.map(|p| &p.me),
                position: catch_up.position.as_ref(),
                recovered: catch_up.recovered,
                capped: catch_up.capped,
            };
            frames.push(codec::frame(
                joined.channel.local_name(),
                "subscription_succeeded",
                &data,
            ));
            Reply { frames, close: None }
        }
        // The connection is going away; the loop closes it.
        Err(JoinError::Closing) => Reply::none(),
        Err(e) => Reply::text(codec::refusal(
            channel.local_name(),
            "subscription_error",
            e.code(),
            &e.to_string(),
        )),
    }
}

async fn subscribe(s: &mut Session, name: &str, since: Option<&Position>) -> Reply {
    match Channel::parse(name) {
        Ok(channel) => join(s, &channel, since).await,
        Err(e) => Reply::text(codec::refusal(
            name,
            "subscription_error",
            codec::Failure::InvalidChannel,
            &e.to_string(),
        )),
    }
}

async fn unsubscribe(s: &mut Session, name: &str) -> Reply {
    match s.leave(name).await {
        Ok(channel) => Reply::text(codec::frame(
            channel.local_name(),
            "unsubscribed",
            &Unsubscribed {
                channel: channel.local_name(),
            },
        )),
        Err(e) => error(name, e.code(), &e.to_string()),
    }
}

async fn whisper(s: &mut Session, name: &str, event: &str, data: Option<Value>) -> Reply {
    let event = if event.starts_with(CLIENT_EVENT_PREFIX) {
        event.to_string()
    } else {
        format!("{CLIENT_EVENT_PREFIX}{event}")
    };
    let data = data.unwrap_or_else(|| Value::Object(Default::default()));
    let raw = match serde_json::value::to_raw_value(&data) {
        Ok(raw) => Arc::from(raw),
        Err(e) => return error(name, codec::Failure::InvalidFrame, &e.to_string()),
    };
    match s.client_event(name, &event, raw).await {
        Ok(_) => Reply::none(),
        Err(e) => {
            let channel = s.subscription(name).map_or(name, |c| c.local_name()).to_string();
            error(&channel, e.code(), &e.to_string())
        }
    }
}

fn refresh(s: &mut Session, token: &str) -> Reply {
    match s.refresh(token) {
        Ok(expires_at) => Reply::text(codec::frame("", "token_refreshed", &TokenRefreshed { expires_at })),
        Err(e) => error("", e.code(), &e.to_string()),
    }
}

#[async_trait]
impl Handler for NativeSession {
    const PROTOCOL: Protocol = Protocol::Native;

    fn encode(envelope: &Envelope) -> Option<String> {
        codec::encode(envelope)
    }

    async fn on_open(&mut self, s: &mut Session) -> Reply {
        match self.initial.take() {
            Some(channel) => join(s, &channel, self.since.take().as_ref()).await,
            None => {
                let user = s.identity().map(|u| u.user_id.clone());
                let data = ConnectionEstablished {
                    socket_id: s.id().to_string(),
                    activity_timeout: s.node().limits().keepalive().0.as_secs(),
                    user_id: user.as_deref(),
                };
                Reply::text(codec::frame("", "connection_established", &data))
            }
        }
    }

    async fn on_text(&mut self, s: &mut Session, text: &str) -> Reply {
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return error(
                    "",
                    codec::Failure::InvalidJson,
                    &format!("frame is not valid JSON: {e}"),
                )
            }
        };
        let frame: ClientFrame = match serde_json::from_value(value) {
            Ok(f) => f,
            Err(e) => return error("", codec::Failure::InvalidFrame, &e.to_string()),
        };
        match frame {
            ClientFrame::Ping { data, channel } => {
                let data = data.unwrap_or_else(|| Value::Object(Default::default()));
                Reply::text(codec::frame(channel.as_deref().unwrap_or(""), "pong", &data))
            }
            ClientFrame::Subscribe { channel, since } => subscribe(s, &channel, since.as_ref()).await,
            ClientFrame::Unsubscribe { channel } => unsubscribe(s, &channel).await,
            ClientFrame::Whisper { channel, event, data } => whisper(s, &channel, &event, data).await,
            ClientFrame::Refresh { token } => refresh(s, &token),
        }
    }

    async fn on_binary(&mut self, _s: &mut Session, _data: &[u8]) -> Reply {
        error("", codec::Failure::BinaryNotSupported, "send JSON text frames")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::runner::{run, Frame};
    use crate::session::testing::fixtures::{node, token};
    use crate::session::testing::{pair, TestClient};
    use crate::session::Node;
    use serde_json::json;

    /// A native session over an in-memory socket.
    fn connect(node: &Arc<Node>, sub: Option<&str>, initial: Option<&str>) -> TestClient {
        let identity = sub.map(|u| node.verify(&token(u)).unwrap());
        let admission = node.admit(identity, None).unwrap();
        let (session, rx) = admission.open(Protocol::Native);
        let (socket, client) = pair();
        let handler = NativeSession {
            initial: initial.map(|c| Channel::parse(c).unwrap()),
            since: None,
        };
        tokio::spawn(run::<_, String, _>(session, rx, socket, handler));
        client
    }

    #[tokio::test]
    async fn join_whisper_and_leave_without_a_network() {
        let node = node();
        let mut alice = connect(&node, Some("1"), Some("presence.room"));
        let joined = alice.recv_json().await;
        assert_eq!(joined["event"], "subscription_succeeded");
        assert_eq!(joined["data"]["count"], 1);
        let mut bob = connect(&node, Some("2"), Some("presence.room"));
        assert_eq!(bob.recv_json().await["data"]["count"], 2);
        let added = alice.recv_json().await;
        assert_eq!(
            (added["event"].as_str(), added["data"]["user_id"].as_str()),
            (Some("member_added"), Some("2"))
        );

        bob.send_text(r#"{"action":"whisper","channel":"presence.room","event":"typing","data":{"t":1}}"#);
        let whisper = alice.recv_json().await;
        assert_eq!(whisper["event"], "client-typing");
        assert_eq!(whisper["data"], json!({"t": 1}));

        bob.send_text(r#"{"action":"unsubscribe","channel":"presence.room"}"#);
        assert_eq!(bob.recv_json().await["event"], "unsubscribed");
        let removed = alice.recv_json().await;
        assert_eq!(removed["event"], "member_removed");
        assert!(bob.try_recv().is_none(), "the sender never gets its own whisper");
    }

    #[tokio::test]
    async fn refusals_are_events_and_the_socket_stays_open() {
        let node = node();
        let mut anon = connect(&node, None, None);
        assert_eq!(anon.recv_json().await["event"], "connection_established");
        let cases = [
            ("{nope", "error", 400),
            (r#"{"action":"dance"}"#, "error", 422),
            (
                r#"{"action":"subscribe","channel":"user.42"}"#,
                "subscription_error",
                401,
            ),
            (
                r#"{"action":"subscribe","channel":"bad name"}"#,
                "subscription_error",
                422,
            ),
            (r#"{"action":"unsubscribe","channel":"general"}"#, "error", 404),
            (r#"{"action":"refresh","token":"garbage"}"#, "error", 401),
        ];
        for (frame, event, code) in cases {
            anon.send_text(frame);
            let answer = anon.recv_json().await;
            assert_eq!(
                (answer["event"].as_str(), answer["data"]["code"].as_u64()),
                (Some(event), Some(code)),
                "{frame}"
            );
        }
        anon.send(Ok(Frame::Binary(bytes::Bytes::from_static(b"x"))));
        assert_eq!(anon.recv_json().await["data"]["code"], 415);
        anon.send_text(r#"{"action":"subscribe","channel":"general"}"#);
        anon.send_text(r#"{"action":"whisper","channel":"general","event":"x"}"#);
        assert_eq!(anon.recv_json().await["event"], "subscription_succeeded");
        assert_eq!(anon.recv_json().await["data"]["error"], "client_events_forbidden");
        // A refresh into a user makes the socket that user's.
        anon.send_text(format!(r#"{{"action":"refresh","token":"{}"}}"#, token("7")));
        assert_eq!(anon.recv_json().await["event"], "token_refreshed");
        assert_eq!(node.hub().terminate_user("7"), 1);
    }

    #[tokio::test]
    async fn the_session_cleans_up_when_the_client_goes() {
        let node = node();
        let mut carol = connect(&node, Some("3"), Some("presence.room"));
        carol.recv_json().await;
        assert_eq!(node.hub().connection_count(), 1);
        drop(carol);
        for _ in 0..100 {
            if node.hub().connection_count() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(node.hub().connection_count(), 0);
        assert!(node.presence().members("presence.room").await.unwrap().is_empty());
    }
}
