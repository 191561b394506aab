//! The HTTP API: publish, stats, channels, health.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::broadcasting::event::parse_channels;
use crate::broadcasting::Payload;
use crate::channel::{Channel, ChannelKind};
use crate::cluster::Broker;
use crate::hub::SocketId;

/// Most channels one publish may name.
pub const MAX_CHANNELS_PER_PUBLISH: usize = 100;

/// `GET /`: name and version.
pub async fn index() -> Json<Value> {
    Json(json!({"name": "rustaxum", "version": env!("CARGO_PKG_VERSION")}))
}

/// `GET /health`: the process is up.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /ready`: 200 while serving; 503 while shutting down, or `degraded` while a
/// clustered node cannot reach Redis (it still serves its own sockets).
pub async fn ready(State(st): State<AppState>) -> impl IntoResponse {
    if st.hub.is_shutting_down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting_down"})),
        );
    }
    let driver = st.manager.default_driver_name();
    match &st.cluster {
        Some(broker) if !broker.healthy() => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "degraded", "driver": driver, "redis": broker.status()})),
        ),
        Some(broker) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "driver": driver, "redis": broker.status()})),
        ),
        None => (StatusCode::OK, Json(json!({"status": "ready", "driver": driver}))),
    }
}

/// Fallback: JSON 404.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

/// Fallback: JSON 405.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

/// The hub's snapshot with presence member counts filled in.
async fn snapshot_with_members(st: &AppState) -> crate::hub::StatsSnapshot {
    let mut snapshot = st.hub.snapshot();
    for (name, c) in snapshot.channels.iter_mut() {
        if c.kind == ChannelKind::Presence {
            c.members = st.presence.members(name).await.ok().map(|m| m.len());
        }
    }
    snapshot
}

/// `GET /api/broadcast/stats[?scope=cluster]`: this node, or every live node summed.
pub async fn stats(
    State(st): State<AppState>,
    _token: ApiToken,
    Query(q): Query<StatsQuery>,
) -> Result<Json<Value>, ApiError> {
    match q.scope.as_deref() {
        None | Some("local") => Ok(local_stats(&st).await),
        Some("cluster") => match &st.cluster {
            Some(broker) => Ok(Json(broker.cluster_stats().await?)),
            None => {
                let mut body = local_stats(&st).await.0;
                body["scope"] = json!("cluster");
                body["nodes"] = json!(["local"]);
                Ok(Json(body))
            }
        },
        Some(other) => Err(ApiError::unprocessable(format!(
            "scope must be local or cluster, not {other:?}"
        ))),
    }
}

/// Query of the stats endpoint.
#[derive(Debug, Deserialize)]
pub struct StatsQuery {
    #[serde(default)]
    scope: Option<String>,
}

async fn local_stats(st: &AppState) -> Json<Value> {
    let snapshot = snapshot_with_members(st).await;
    let mut body = serde_json::to_value(&snapshot).unwrap_or_else(|_| json!({}));
    if let Some(obj) = body.as_object_mut() {
        obj.insert("scope".into(), json!("local"));
        obj.insert("driver".into(), json!(st.manager.default_driver_name()));
        if let Some(broker) = &st.cluster {
            obj.insert("redis".into(), broker.status());
        }
        obj.insert(
            "queue".into(),
            json!({
                "pending": st.manager.pending_broadcasts(),
                "failed": st.manager.failed_broadcasts().len(),
            }),
        );
    }
    Json(body)
}

/// `GET /api/broadcast/channels`: occupied channels with kind and subscribers.
pub async fn channels(State(st): State<AppState>, _token: ApiToken) -> Json<Value> {
    let snapshot = snapshot_with_members(&st).await;
    let list: Vec<Value> = snapshot
        .channels
        .iter()
        .map(|(name, c)| {
            let mut entry = json!({"name": name, "kind": c.kind, "subscribers": c.subscribers});
            if let Some(m) = c.members {
                entry["members"] = json!(m);
            }
            entry
        })
        .collect();
    Json(json!({"channels": list, "count": list.len()}))
}

/// `GET /api/broadcast/channels/{name}/users`: a presence channel's members.
pub async fn channel_users(
    State(st): State<AppState>,
    _token: ApiToken,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let channel = Channel::parse(&name).map_err(|e| ApiError::unprocessable(format!("invalid channel: {e}")))?;
    if channel.kind() != ChannelKind::Presence {
        return Err(ApiError::unprocessable(format!(
            "{} is not a presence channel (presence channels are named presence.*)",
            channel.name()
        )));
    }
    let users = st.presence.members(channel.name()).await?;
    Ok(Json(
        json!({"channel": channel.name(), "users": users, "count": users.len()}),
    ))
}

#[derive(Debug, Deserialize)]
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

/// `POST /api/broadcast`: `{"channels":[..] | "channel":"..", "event":"..", "data":{..}, "socket_id":".."}`.
pub async fn publish(
    State(st): State<AppState>,
    _token: ApiToken,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    // Browsers send text/plain or form bodies cross-site without a CORS preflight; JSON
    // only keeps the API out of reach of such requests.
    if !is_json(&headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body with Content-Type: application/json",
        ));
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(st.config.server.max_payload_size)
        } else {
            ApiError::bad_json(e.body_text())
        }
    })?;
    let raw: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_json(format!("body is not valid JSON: {e}")))?;
    let req: PublishRequest = serde_json::from_value(raw).map_err(|e| ApiError::unprocessable(e.to_string()))?;

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
    let data = req.data.unwrap_or_else(|| json!({}));
    let payload = Payload {
        data: Arc::from(serde_json::value::to_raw_value(&data).map_err(|e| ApiError::unprocessable(e.to_string()))?),
        socket,
    };
    let recipients = st.manager.send(None, &channels, &req.event, &payload).await?;
    let channel_names: BTreeMap<&str, ()> = channels.iter().map(|c| (c.name(), ())).collect();
    Ok(Json(json!({
        "ok": true,
        "event": req.event,
        "channels": channel_names.keys().collect::<Vec<_>>(),
        "recipients": recipients,
    })))
}

/// Proof that the request carries `Authorization: Bearer <BROADCAST_API_TOKEN>` (or that
/// no token is configured). Every endpoint that publishes or tells who is online takes it.
pub struct ApiToken;

impl FromRequestParts<AppState> for ApiToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        check_api_token(st, &parts.headers).map(|()| Self)
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// Requires `Authorization: Bearer <BROADCAST_API_TOKEN>` when a token is configured.
fn check_api_token(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = st.config.server.api_token.as_deref() else {
        return Ok(());
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <BROADCAST_API_TOKEN>"))?;
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("invalid API token"))
    }
}
