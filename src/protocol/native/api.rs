//! The native HTTP API: publish, stats, channels, a presence channel's users.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::broadcasting::parse_channels;
use crate::broadcasting::Payload;
use crate::channel::{Channel, ChannelKind};
use crate::hub::{ChannelStats, SocketId};
use crate::presence::Member;
use crate::protocol::credentials::ApiToken;
use crate::protocol::stats::{name_apps, node_stats, snapshot_with_members};
use crate::protocol::{ApiError, AppState};

/// Most channels one publish may name.
pub(crate) const MAX_CHANNELS_PER_PUBLISH: usize = 100;

/// The body of `POST /api/broadcast`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    event: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    socket_id: Option<String>,
}

/// The answer of `POST /api/broadcast`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Published {
    /// Always `true`.
    pub ok: bool,
    /// The event name.
    pub event: String,
    /// The channels, canonical names, sorted.
    pub channels: Vec<String>,
    /// Sockets reached on this server.
    pub recipients: usize,
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// Publishes an event to one or more channels.
#[utoipa::path(post, path = "/api/broadcast", tag = "native", security(("api_token" = [])), request_body = PublishRequest, responses((status = 200, body = Published), (status = 400, description = "the body is not JSON", body = crate::protocol::ErrorBody), (status = 401, description = "missing or wrong `Authorization: Bearer <BROADCAST_API_TOKEN>` (when one is set)", body = crate::protocol::ErrorBody), (status = 413, description = "the body is larger than BROADCAST_MAX_PAYLOAD_SIZE", body = crate::protocol::ErrorBody), (status = 415, description = "the Content-Type is not application/json", body = crate::protocol::ErrorBody), (status = 422, description = "invalid request", body = crate::protocol::ErrorBody), (status = 503, description = "the store or the cluster is unavailable", body = crate::protocol::ErrorBody)))]
pub(crate) async fn publish(
    State(st): State<AppState>,
    _token: ApiToken,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Published>, ApiError> {
    // Browsers send text/plain or form bodies cross-site without a CORS preflight; JSON
    // only keeps the API out of reach of such requests.
    if !is_json(&headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body with Content-Type: application/json",
        ));
    }
    let req: PublishRequest = crate::protocol::body::json(&st, body)?;

    let mut names = req.channels.unwrap_or_default();
    names.extend(req.channel);
    if names.is_empty() {
        return Err(ApiError::unprocessable("give `channels` (array) or `channel` (string)"));
    }
    if names.len() > MAX_CHANNELS_PER_PUBLISH {
        return Err(ApiError::unprocessable(format!(
            "at most {MAX_CHANNELS_PER_PUBLISH} channels per publish"
        )));
    }
    let channels = parse_channels(&names)?;
    let socket = req
        .socket_id
        .as_deref()
        .map(str::parse::<SocketId>)
        .transpose()
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let data = req.data.unwrap_or_else(|| Value::Object(Default::default()));
    let payload = Payload {
        data: Arc::from(serde_json::value::to_raw_value(&data).map_err(|e| ApiError::unprocessable(e.to_string()))?),
        text: None,
        socket,
    };
    let recipients = crate::protocol::publish_inbound(&st, &channels, &req.event, &payload).await?;
    let names: BTreeSet<String> = channels.iter().map(|c| c.name().to_string()).collect();
    Ok(Json(Published {
        ok: true,
        event: req.event,
        channels: names.into_iter().collect(),
        recipients,
    }))
}

/// Query of the stats endpoint.
#[derive(Debug, Deserialize)]
pub(crate) struct StatsQuery {
    #[serde(default)]
    scope: Option<String>,
}

/// Connections, channels, message counters, the driver, the queue and Redis: this node or the whole cluster.
#[utoipa::path(get, path = "/api/broadcast/stats", tag = "native", security(("api_token" = [])), params(("scope" = Option<String>, Query, description = "`local` (default) or `cluster` (every live node summed)")), responses((status = 200, body = Object, description = "connections, channels, message counters, uptime, driver, queue, Redis"), (status = 401, description = "missing or wrong `Authorization: Bearer <BROADCAST_API_TOKEN>` (when one is set)", body = crate::protocol::ErrorBody), (status = 422, description = "invalid request", body = crate::protocol::ErrorBody)))]
pub(crate) async fn stats(
    State(st): State<AppState>,
    _token: ApiToken,
    Query(q): Query<StatsQuery>,
) -> Result<Json<Value>, ApiError> {
    let body = match (q.scope.as_deref(), &st.cluster) {
        (None | Some("local"), _) => serde_json::to_value(node_stats(&st, "local").await),
        (Some("cluster"), Some(broker)) => Ok(name_apps(&st, broker.cluster_stats().await?)),
        (Some("cluster"), None) => serde_json::to_value(node_stats(&st, "cluster").await),
        (Some(other), _) => {
            return Err(ApiError::unprocessable(format!(
                "scope must be local or cluster, not {other:?}"
            )))
        }
    };
    body.map(Json)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// Query of the nodes endpoint.
#[derive(Debug, Deserialize)]
pub(crate) struct NodesQuery {
    #[serde(default)]
    node: Option<String>,
}

/// Every live node of the cluster (this node alone without Redis): its card (address,
/// version, uptime, draining, connections by protocol, channels, counters, CPU, memory,
/// open files, Redis state, refusals and failures) with per-second rates, and the
/// cluster's totals; refreshed every second, cards of other nodes at most 2 s old.
#[utoipa::path(get, path = "/api/broadcast/nodes", tag = "native", security(("api_token" = [])), params(("node" = Option<String>, Query, description = "only this node (its id)")), responses((status = 200, body = crate::protocol::cluster_view::NodesView), (status = 401, description = "missing or wrong `Authorization: Bearer <BROADCAST_API_TOKEN>` (when one is set)", body = crate::protocol::ErrorBody), (status = 404, description = "no live node has that id", body = crate::protocol::ErrorBody)))]
pub(crate) async fn nodes(
    State(st): State<AppState>,
    _token: ApiToken,
    Query(q): Query<NodesQuery>,
) -> Result<Json<crate::protocol::cluster_view::NodesView>, ApiError> {
    if st.cluster_view.view().nodes.is_empty() {
        // The first second after start: compute it now rather than answer nothing.
        st.cluster_view.refresh(&st, &mut Default::default()).await;
    }
    let mut view = st.cluster_view.view_now(&st);
    if let Some(id) = q.node {
        view.nodes.retain(|n| n.id == id);
        if view.nodes.is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no live node has the id {id:?}"),
            ));
        }
    }
    Ok(Json(view))
}

/// One entry of `GET /api/broadcast/channels`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ChannelEntry {
    /// The canonical name.
    pub name: String,
    /// Its figures.
    #[serde(flatten)]
    pub stats: ChannelStats,
}

/// `GET /api/broadcast/channels`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ChannelList {
    /// Occupied channels, by name.
    pub channels: Vec<ChannelEntry>,
    /// How many.
    pub count: usize,
}

/// Occupied channels with their kind and subscribers.
#[utoipa::path(get, path = "/api/broadcast/channels", tag = "native", security(("api_token" = [])), responses((status = 200, body = ChannelList), (status = 401, description = "missing or wrong `Authorization: Bearer <BROADCAST_API_TOKEN>` (when one is set)", body = crate::protocol::ErrorBody)))]
pub(crate) async fn channels(State(st): State<AppState>, _token: ApiToken) -> Json<ChannelList> {
    let snapshot = snapshot_with_members(&st).await;
    let channels: Vec<ChannelEntry> = snapshot
        .channels
        .into_iter()
        .map(|(name, stats)| ChannelEntry { name, stats })
        .collect();
    Json(ChannelList {
        count: channels.len(),
        channels,
    })
}

/// `GET /api/broadcast/channels/{name}/users`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Users {
    /// The presence channel.
    pub channel: String,
    /// Its members.
    pub users: Vec<Member>,
    /// How many.
    pub count: usize,
}

/// A presence channel's members.
#[utoipa::path(get, path = "/api/broadcast/channels/{name}/users", tag = "native", security(("api_token" = [])), params(("name" = String, Path, description = "a presence channel")), responses((status = 200, body = Users), (status = 401, description = "missing or wrong `Authorization: Bearer <BROADCAST_API_TOKEN>` (when one is set)", body = crate::protocol::ErrorBody), (status = 422, description = "invalid request", body = crate::protocol::ErrorBody), (status = 503, description = "the store or the cluster is unavailable", body = crate::protocol::ErrorBody)))]
pub(crate) async fn channel_users(
    State(st): State<AppState>,
    _token: ApiToken,
    Path(name): Path<String>,
) -> Result<Json<Users>, ApiError> {
    let channel = Channel::parse(&name).map_err(|e| ApiError::unprocessable(format!("invalid channel: {e}")))?;
    if channel.kind() != ChannelKind::Presence {
        return Err(ApiError::unprocessable(format!(
            "{} is not a presence channel (presence channels are named presence.*)",
            channel.name()
        )));
    }
    let users = st.node.presence().members(channel.name()).await?;
    Ok(Json(Users {
        channel: channel.name().to_string(),
        count: users.len(),
        users,
    }))
}

/// Most messages one history page holds.
pub(crate) const MAX_HISTORY_PAGE: usize = 1000;

/// `GET /api/broadcast/channels/{name}/history`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct HistoryQuery {
    /// `EPOCH:OFFSET`: messages after this position, oldest first (without it, the newest).
    since: Option<String>,
    /// How many, 1 to 1000, default 100.
    limit: Option<usize>,
}

/// One message of a channel's history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct HistoryMessage {
    /// The event.
    pub event: String,
    /// Its data.
    #[schema(value_type = Object)]
    pub data: Box<serde_json::value::RawValue>,
    /// When it was published.
    pub timestamp: String,
    /// Its position.
    #[schema(value_type = Object)]
    pub position: Option<crate::hub::Position>,
    /// The user who sent it (client events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// A page of a channel's history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct HistoryPage {
    /// The channel.
    pub channel: String,
    /// Where it stands: its last message's position.
    #[schema(value_type = Object)]
    pub position: crate::hub::Position,
    /// The oldest offset still kept.
    pub first: u64,
    /// Oldest first.
    pub messages: Vec<HistoryMessage>,
    /// How many.
    pub count: usize,
    /// The page size used (at most 1000).
    pub limit: usize,
    /// With `since`: whether the messages follow it without a gap (`false`: the epoch
    /// changed, or some messages after it are no longer kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continuous: Option<bool>,
    /// More messages follow the last one (ask again with its position as `since`).
    pub more: bool,
}

/// A channel's kept messages: after `since`, or the newest.
#[utoipa::path(get, path = "/api/broadcast/channels/{name}/history", tag = "native", security(("api_token" = [])), params(("name" = String, Path, description = "a channel that keeps history"), HistoryQuery), responses((status = 200, body = HistoryPage), (status = 401, description = "missing or wrong `Authorization: Bearer <BROADCAST_API_TOKEN>` (when one is set)", body = crate::protocol::ErrorBody), (status = 404, description = "the channel keeps no history", body = crate::protocol::ErrorBody), (status = 422, description = "invalid channel, since or limit", body = crate::protocol::ErrorBody), (status = 503, description = "the store or the cluster is unavailable", body = crate::protocol::ErrorBody)))]
pub(crate) async fn channel_history(
    State(st): State<AppState>,
    _token: ApiToken,
    Path(name): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    let channel = Channel::parse(&name).map_err(|e| ApiError::unprocessable(format!("invalid channel: {e}")))?;
    let channel = st.node.addressed(&channel);
    let history = st
        .node
        .fanout()
        .history()
        .filter(|h| h.keeps(&channel))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "history_off",
                format!("{} keeps no history (see BROADCAST_HISTORY_CHANNELS)", channel.name()),
            )
        })?;
    let since = match q.since.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(
            crate::history::parse_position(raw)
                .ok_or_else(|| ApiError::unprocessable(format!("invalid since {raw:?}: expected EPOCH:OFFSET")))?,
        ),
    };
    let limit = match q.limit {
        None => 100,
        Some(0) => return Err(ApiError::unprocessable("limit must be 1 to 1000")),
        Some(n) => n.min(MAX_HISTORY_PAGE),
    };
    let same_epoch = |epoch: &str| since.as_ref().is_none_or(|p| p.epoch.as_ref() == epoch);
    let slice = history
        .read(&channel, since.as_ref(), limit)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    // Positions of another epoch mean nothing here: answer from the start of this one.
    let slice = if same_epoch(&slice.epoch) {
        slice
    } else {
        history
            .read(
                &channel,
                Some(&crate::hub::Position {
                    epoch: slice.epoch.clone(),
                    offset: 0,
                }),
                limit,
            )
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?
    };
    let continuous = since
        .as_ref()
        .map(|p| p.epoch == slice.epoch && p.offset <= slice.top && p.offset.saturating_add(1) >= slice.first);
    let last = slice
        .messages
        .last()
        .and_then(|m| m.position.as_ref())
        .map_or(0, |p| p.offset);
    let more = since.is_some() && !slice.messages.is_empty() && last < slice.top;
    let position = slice.position();
    let messages: Vec<HistoryMessage> = slice
        .messages
        .into_iter()
        .map(|m| HistoryMessage {
            event: m.event.to_string(),
            data: m.data.as_ref().to_owned(),
            timestamp: m.timestamp.to_string(),
            position: m.position,
            from: m.sender.map(|s| s.to_string()),
        })
        .collect();
    Ok(Json(HistoryPage {
        channel: channel.name().to_string(),
        position,
        first: slice.first,
        count: messages.len(),
        messages,
        limit,
        continuous,
        more,
    }))
}
