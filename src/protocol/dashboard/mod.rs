//! The operators' dashboard: `GET /dashboard` (one page embedded in the binary: no build
//! step, no CDN) and `GET /dashboard/ws`, the server's own WebSocket that pushes a
//! snapshot every second: figures, channels, nodes, history and webhook status, a tail
//! of lifecycle events, EmitHub channels (managed from the page through `/api/v1`).
//!
//! Protected by `BROADCAST_DASHBOARD_TOKEN`, else the API token (the page asks for it, or
//! takes `?token=`). With neither, it is open: that only happens on a loopback address,
//! since any other address needs an API token to start.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};

use crate::protocol::socket::{WebSocket, WireText};
use crate::session::runner::{Frame, CLOSE_GRACE};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::lifecycle::{Lifecycle, LifecycleEvent};
use crate::protocol::credentials::{bearer, check_secret};
use crate::protocol::AppState;
use crate::sync::lock;

const PAGE: &str = include_str!("index.html");
/// Events the tail keeps.
const TAIL: usize = 50;
/// How often the page gets a snapshot.
const EVERY: Duration = Duration::from_secs(1);
/// Channels (and EmitHub channels) a snapshot lists at most, the busiest first: the rest
/// are only counted, so a snapshot stays small however many channels exist.
const LISTED: usize = 100;

/// The recent lifecycle events the page shows.
#[derive(Debug, Default)]
pub(crate) struct Feed {
    events: Mutex<VecDeque<Grouped>>,
}

/// The same event repeated within [`GROUP_WINDOW`] of the first: one line with a count.
#[derive(Debug)]
struct Grouped {
    started: std::time::Instant,
    at: String,
    last: String,
    what: String,
    count: u64,
}

/// How long repeats of one event are counted on one line.
const GROUP_WINDOW: Duration = Duration::from_secs(10);

impl Feed {
    /// Keeps the latest lifecycle events until `stop`.
    pub(crate) fn observe(self: &Arc<Self>, lifecycle: &Lifecycle, stop: CancellationToken, tasks: &TaskTracker) {
        let feed = self.clone();
        lifecycle.observe(1024, LifecycleEvent::notable, stop, tasks, move |event| {
            feed.record(&event);
            std::future::ready(())
        });
    }

    fn record(&self, event: &LifecycleEvent) {
        let what = match event {
            LifecycleEvent::ConnectionOpened { protocol, user, .. } => {
                format!("connection opened ({protocol:?}{})", who(user.as_deref()))
            }
            LifecycleEvent::ConnectionClosed { protocol, user, .. } => {
                format!("connection closed ({protocol:?}{})", who(user.as_deref()))
            }
            LifecycleEvent::ChannelOccupied { channel } => format!("{channel} occupied"),
            LifecycleEvent::ChannelVacated { channel } => format!("{channel} vacated"),
            LifecycleEvent::MemberAdded { channel, member } => format!("{} joined {channel}", member.user_id),
            LifecycleEvent::MemberRemoved { channel, member } => format!("{} left {channel}", member.user_id),
            LifecycleEvent::ClientEvent { channel, event, .. } => format!("{event} on {channel}"),
            // Every subscription: too many to be news.
            LifecycleEvent::SubscriptionCount { .. } => return,
        };
        let at = chrono::Utc::now().format("%H:%M:%S").to_string();
        let mut events = lock(&self.events);
        if let Some(last) = events.back_mut() {
            if last.what == what && last.started.elapsed() < GROUP_WINDOW {
                last.count += 1;
                last.last = at;
                return;
            }
        }
        if events.len() == TAIL {
            events.pop_front();
        }
        events.push_back(Grouped {
            started: std::time::Instant::now(),
            last: at.clone(),
            at,
            what,
            count: 1,
        });
    }

    fn tail(&self) -> Vec<Value> {
        lock(&self.events)
            .iter()
            .map(|g| json!({"at": g.at, "last": g.last, "what": g.what, "count": g.count}))
            .collect()
    }
}

fn who(user: Option<&str>) -> String {
    user.map(|u| format!(", user {u}")).unwrap_or_default()
}

/// The token the dashboard asks for, if any.
fn expected_token(st: &AppState) -> Option<String> {
    let config = st.config.load();
    config
        .server
        .dashboard_token
        .clone()
        .or_else(|| config.server.api_token.clone())
}

/// The dashboard page (the token is checked by its WebSocket).
#[utoipa::path(get, path = "/dashboard", tag = "operations", responses((status = 200, content_type = "text/html", body = String, description = "the dashboard page; it asks for the token (`BROADCAST_DASHBOARD_TOKEN`, else the API token) or takes `?token=`")))]
pub(crate) async fn page() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        ],
        Html(PAGE),
    )
        .into_response()
}

/// `?token=` of the dashboard's WebSocket.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct TokenQuery {
    /// The dashboard token.
    token: Option<String>,
}

/// What the page gets every second.
#[derive(Serialize)]
struct Snapshot {
    node: String,
    /// The server's version.
    version: &'static str,
    /// Publish-to-last-write latency (`broadcast_duration_seconds`): cumulative
    /// `[le_seconds, count]` buckets (the last `le` null for +Inf); the page charts the
    /// p99 of each second from their differences.
    latency: Value,
    interval_ms: u64,
    stats: crate::protocol::stats::NodeStats,
    /// Every node's card and the cluster's totals.
    cluster: crate::protocol::cluster_view::NodesView,
    /// The cluster's last 15 minutes, in the first snapshot only (the page draws its
    /// charts from it at once, then adds a point per snapshot).
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<Vec<crate::protocol::cluster_view::Sample>>,
    /// Presence channels' members (user ids; the first 20 channels, 50 members each).
    presence: serde_json::Map<String, Value>,
    events: Vec<Value>,
    emithub: Vec<Value>,
    /// Channels on this node (listed or not).
    channel_count: usize,
    /// Channels not listed in `stats.channels` (the least subscribed).
    channels_not_listed: usize,
    /// EmitHub channels (listed or not).
    emithub_count: usize,
    /// EmitHub channels not listed (the ones with the fewest sockets).
    emithub_not_listed: usize,
}

/// Keeps the `LISTED` entries with the highest `weight`, in their order; how many went.
fn keep_busiest<T>(entries: &mut Vec<T>, weight: impl Fn(&T) -> usize) -> usize {
    if entries.len() <= LISTED {
        return 0;
    }
    let mut weights: Vec<usize> = entries.iter().map(&weight).collect();
    weights.sort_unstable_by(|a, b| b.cmp(a));
    let threshold = weights[LISTED - 1];
    let above = weights.iter().filter(|w| **w > threshold).count();
    let mut ties_left = LISTED - above;
    let before = entries.len();
    entries.retain(|e| {
        let w = weight(e);
        if w > threshold {
            true
        } else if w == threshold && ties_left > 0 {
            ties_left -= 1;
            true
        } else {
            false
        }
    });
    before - entries.len()
}

async fn snapshot(st: &AppState, first: bool) -> Snapshot {
    let mut stats = crate::protocol::stats::node_stats(st, "local").await;
    let channel_count = stats.hub.channels.len();
    let mut listed: Vec<_> = std::mem::take(&mut stats.hub.channels).into_iter().collect();
    let channels_not_listed = keep_busiest(&mut listed, |(_, c)| c.subscribers);
    stats.hub.channels = listed.into_iter().collect();
    let node = match &st.cluster {
        None => "single node".to_string(),
        Some(broker) => broker.status().node_id,
    };
    let mut cluster = st.cluster_view.view();
    if cluster.nodes.is_empty() {
        st.cluster_view.refresh(st, &mut Default::default()).await;
        cluster = st.cluster_view.view();
    }
    let mut presence = serde_json::Map::new();
    let presence_channels = stats
        .hub
        .channels
        .iter()
        .filter(|(_, c)| c.kind == crate::channel::ChannelKind::Presence)
        .take(20);
    for (name, _) in presence_channels {
        if let Ok(members) = st.node.presence().members(name).await {
            let ids: Vec<&str> = members.iter().take(50).map(|m| m.user_id.as_str()).collect();
            presence.insert(name.clone(), json!(ids));
        }
    }
    let hub = st.node.hub();
    let mut emithub: Vec<(usize, Value)> = st
        .emithub
        .list()
        .into_iter()
        .map(|c| {
            let connections = crate::channel::Channel::parse(&crate::services::emithub::model::hub_channel_name(c.id))
                .map(|ch| hub.subscriber_count(&ch))
                .unwrap_or(0);
            (
                connections,
                json!({"id": c.id, "name": c.name, "status": c.status, "connections": connections}),
            )
        })
        .collect();
    let emithub_count = emithub.len();
    let emithub_not_listed = keep_busiest(&mut emithub, |(n, _)| *n);
    let emithub = emithub.into_iter().map(|(_, v)| v).collect();
    let duration = hub.broadcast_duration();
    let latency = json!(duration
        .buckets
        .iter()
        .map(|(le, n)| json!([if le.is_finite() { json!(le) } else { Value::Null }, n]))
        .collect::<Vec<_>>());
    Snapshot {
        node,
        version: env!("CARGO_PKG_VERSION"),
        latency,
        interval_ms: u64::try_from(EVERY.as_millis()).unwrap_or(1000),
        stats,
        cluster,
        history: first.then(|| st.cluster_view.history()),
        presence,
        events: st.dashboard.tail(),
        emithub,
        channel_count,
        channels_not_listed,
        emithub_count,
        emithub_not_listed,
    }
}

/// The dashboard's icon (an SVG; browsers ask for `/favicon.ico`).
#[utoipa::path(get, path = "/favicon.ico", tag = "operations", responses((status = 200, content_type = "image/svg+xml", body = String, description = "the dashboard's icon")))]
pub(crate) async fn favicon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        FAVICON,
    )
}

const FAVICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 32 32\">\
<rect width=\"32\" height=\"32\" rx=\"6\" fill=\"#0f1419\"/>\
<circle cx=\"16\" cy=\"16\" r=\"3\" fill=\"#4fb3ff\"/>\
<path d=\"M9 9a10 10 0 0 0 0 14M23 9a10 10 0 0 1 0 14\" stroke=\"#4fb3ff\" stroke-width=\"2.5\" fill=\"none\" stroke-linecap=\"round\"/></svg>";

/// The dashboard's live feed: a snapshot every second.
#[utoipa::path(get, path = "/dashboard/ws", tag = "operations", params(TokenQuery), responses((status = 101, description = "WebSocket: a JSON snapshot every second"), (status = 401, description = "missing or wrong token", body = crate::protocol::ErrorBody), (status = 429, description = "10 wrong tokens from this address within a minute: every attempt is refused until the minute has passed (`Retry-After`)", body = crate::protocol::ErrorBody)))]
pub(crate) async fn feed(
    State(st): State<AppState>,
    Query(q): Query<TokenQuery>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ws: crate::protocol::socket::Upgrade,
) -> Response {
    // The one wrong-token limit every secret shares (a router mounted without connection
    // info counts every client as one address).
    let peer = peer.map(|axum::Extension(ConnectInfo(a))| a);
    let expected = expected_token(&st);
    let what = "dashboard token (BROADCAST_DASHBOARD_TOKEN, else the API token)";
    let given = q.token.as_deref().or(bearer(&headers));
    if let Err(refused) = check_secret(&st, peer, &headers, given, expected.as_deref().as_slice(), what) {
        return refused.into_response();
    }
    let ws = match crate::protocol::socket::required(ws) {
        Ok(ws) => crate::protocol::socket::configure(ws, &st),
        Err(refused) => return refused,
    };
    let sessions = st.sessions.clone();
    ws.on_upgrade(move |socket| {
        sessions.track_future(async move {
            let socket = push(st, socket).await;
            socket.linger().await;
        })
    })
}

async fn push(st: AppState, mut socket: WebSocket) -> WebSocket {
    let mut tick = tokio::time::interval(EVERY);
    let mut first = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if st.node.hub().is_shutting_down() {
                    let going = crate::hub::CloseReason::SHUTDOWN;
                    let _ = tokio::time::timeout(CLOSE_GRACE, socket.send(Frame::Close(Some(going)))).await;
                    return socket;
                }
                let Ok(text) = serde_json::to_string(&snapshot(&st, first).await) else { return socket };
                first = false;
                if socket.send(Frame::Text(WireText::from(text))).await.is_err() {
                    return socket;
                }
            }
            incoming = socket.next() => match incoming {
                // Answered with the Close the socket queued (RFC 6455 §5.5.1).
                Some(Ok(Frame::Close(_))) => {
                    let _ = tokio::time::timeout(CLOSE_GRACE, socket.flush()).await;
                    return socket;
                }
                // A broken frame is failed with its code (1002, 1007, 1009), not a bare FIN.
                Some(Err(e)) => {
                    if let Some(reason) = e.close_reason() {
                        let _ = tokio::time::timeout(CLOSE_GRACE, socket.send(Frame::Close(Some(reason)))).await;
                    }
                    return socket;
                }
                None => return socket,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 25: 50 identical lines filled the tail; repeats are one line with a count.
    #[test]
    fn repeated_events_are_one_line_with_a_count() {
        let feed = Feed::default();
        let general = crate::channel::Channel::parse("general").unwrap();
        for _ in 0..37 {
            feed.record(&LifecycleEvent::ChannelOccupied {
                channel: general.clone(),
            });
        }
        feed.record(&LifecycleEvent::ChannelVacated {
            channel: general.clone(),
        });
        feed.record(&LifecycleEvent::ChannelOccupied { channel: general });
        let tail = feed.tail();
        let lines: Vec<(String, u64)> = tail
            .iter()
            .map(|e| (e["what"].as_str().unwrap().to_string(), e["count"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            lines,
            [
                ("general occupied".to_string(), 37),
                ("general vacated".to_string(), 1),
                ("general occupied".to_string(), 1)
            ]
        );
    }

    #[test]
    fn only_the_busiest_are_listed_in_their_order() {
        let mut few: Vec<usize> = (0..10).collect();
        assert_eq!(keep_busiest(&mut few, |n| *n), 0);
        assert_eq!(few.len(), 10);
        // 300 entries, weights 0..300 shuffled by a stride; ties at the threshold are cut.
        let mut many: Vec<usize> = (0..300).map(|i| (i * 7) % 300).collect();
        many.extend([200, 200, 200]);
        assert_eq!(keep_busiest(&mut many, |n| *n), 203);
        assert_eq!(many.len(), LISTED);
        assert!(many.iter().all(|n| *n >= 200), "{many:?}");
    }
}
