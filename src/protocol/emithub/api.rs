//! EmitHub's REST API under `/api/v1`.
//!
//! Bodies are read as JSON whatever their `Content-Type`: the documents' curl commands
//! without `-H` send JSON as `application/x-www-form-urlencoded`. (Browser writes from
//! foreign origins are still refused, by the server's origin guard, before reaching here.)

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::protocol::credentials::ApiToken;
use crate::protocol::{ApiError, AppState};
use crate::services::emithub::model::{ManagedChannel, MessagePage, Transition};
use crate::services::emithub::{Broadcasted, CreateChannel, EmitHubError, UpdateChannel};

impl From<EmitHubError> for ApiError {
    fn from(e: EmitHubError) -> Self {
        use EmitHubError as E;
        let (status, code) = match &e {
            E::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            E::InvalidTransition { .. } => (StatusCode::CONFLICT, "invalid_transition"),
            E::NotActive { .. } => (StatusCode::CONFLICT, "channel_not_active"),
            E::Paused(_) => (StatusCode::CONFLICT, "channel_paused"),
            E::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            E::TooManyChannels(_) => (StatusCode::CONFLICT, "too_many_channels"),
            E::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            E::Store(_) | E::Cluster(_) => {
                tracing::warn!(error = %e, "EmitHub store unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

fn id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(format!("channel {raw} not found")))
}

/// Creates a channel (status `Created`); settings left out take the server's defaults.
#[utoipa::path(post, path = "/api/v1/channels", tag = "emithub", security(("api_token" = [])), request_body(content = CreateChannel, description = "JSON, whatever the Content-Type"), responses((status = 201, body = ManagedChannel), (status = 400, description = "the body is not JSON", body = crate::protocol::ErrorBody), (status = 401, description = "missing or wrong `Authorization: Bearer <BROADCAST_API_TOKEN>` (when one is set)", body = crate::protocol::ErrorBody), (status = 409, description = "`too_many_channels`: EMIT_HUB_MAX_CHANNELS channels exist", body = crate::protocol::ErrorBody), (status = 422, description = "invalid request", body = crate::protocol::ErrorBody), (status = 503, description = "the store or the cluster is unavailable", body = crate::protocol::ErrorBody)))]
pub(crate) async fn create(
    State(st): State<AppState>,
    _token: ApiToken,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: CreateChannel = crate::protocol::body::json(&st, body)?;
    let channel = st.emithub.create(request).await?;
    Ok((StatusCode::CREATED, Json(channel)).into_response())
}

/// `GET /api/v1/channels`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = EmitHubChannelList)]
pub(super) struct ChannelList {
    /// Every channel, oldest first.
    pub channels: Vec<ManagedChannel>,
    /// How many.
    pub count: usize,
}

/// Lists every channel, oldest first.
#[utoipa::path(get, path = "/api/v1/channels", tag = "emithub", security(("api_token" = [])), responses((status = 200, body = ChannelList), (status = 401, description = "missing or wrong `Authorization: Bearer <BROADCAST_API_TOKEN>` (when one is set)", body = crate::protocol::ErrorBody)))]
pub(crate) async fn list(State(st): State<AppState>, _token: ApiToken) -> Json<ChannelList> {
    let channels = st.emithub.list();
    Json(ChannelList {
        count: channels.len(),
        channels,
    })
}

/// `GET /api/v1/channels/{id}`: the channel and its sockets on this node.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ChannelView {
    /// The channel.
    #[serde(flatten)]
    pub channel: ManagedChannel,
    /// Sockets connected to it on this node.
    pub connections: usize,
}

/// One channel, with the number of sockets connected to it on this node.
#[utoipa::path(get, path = "/api/v1/channels/{id}", tag = "emithub", security(("api_token" = [])), params(("id" = String, Path, description = "the channel id (a UUID)")), responses((status = 200, body = ChannelView), (status = 401, description = "missing or wrong `Authorization: Bearer <BROADCAST_API_TOKEN>` (when one is set)", body = crate::protocol::ErrorBody), (status = 404, description = "no such channel", body = crate::protocol::ErrorBody)))]
pub(crate) async fn get(
    State(st): State<AppState>,
    _token: ApiToken,
    Path(raw): Path<String>,
) -> Result<Json<ChannelView>, ApiError> {
    let channel = st.emithub.fetch(id(&raw)?).await?;
    let connections = crate::channel::Channel::parse(&channel.hub_channel_name())
        .map(|c| st.node.hub().subscriber_count(&c))
        .unwrap_or(0);
    Ok(Json(ChannelView { channel, connections }))
}

async fn transition(st: &AppState, raw: &str, t: Transition) -> Result<Json<ManagedChannel>, ApiError> {
    Ok(Json(st.emithub.transition(id(raw)?, t).await?))
}

/// Starts a channel (from any state): sockets may join and broadcasts are delivered.
#[utoipa::path(put, path = "/api/v1/channels/{id}/start", tag = "emithub", security(("api_token" = [])), params(("id" = String, Path, description = "the channel id (a UUID)")), responses((status = 200, body = ManagedChannel, description = "now Active"), (status = 401, description = "missing or wrong `Authorization: Bearer <BROADCAST_API_TOKEN>` (when one is set)", body = crate::protocol::ErrorBody), (status = 404, description = "no such channel", body = crate::protocol::ErrorBody)))]
pub(crate) async fn start(
    State(st): State<AppState>,
    _token: ApiToken,
    Path(raw): Path<String>,
) -> Result<Json<ManagedChannel>, ApiError> {
    transition(&st, &raw, Transition::Start).await
}

/// Pauses an Active channel: its sockets stay open, broadcasts are refused with 409 (not held).
#[utoipa::path(put, path = "/api/v1/channels/{id}/pause", tag = "emithub", security(("api_token" = [])), params(("id" = String, Path, description = "the channel id (a UUID)")), responses((status = 200, body = ManagedChannel, description = "now Paused"), (status = 401, description = "missing or wrong `Authorization: Bearer <BROADCAST_API_TOKEN>` (when one is set)", body = crate::protocol::ErrorBody), (status = 404, description = "no such channel", body = crate::protocol::ErrorBody), (status = 409, description = "only an Active channel can be paused", body = crate::protocol::ErrorBody)))]
pub(crate) async fn pause(
    State(st): State<AppState>,
    _token: ApiToken,
    Path(raw): Path<String>,
) -> Result<Json<ManagedChannel>, ApiError> {
    transition(&st, &raw, Transition::Pause).await
}

/// Stops a channel: its sockets are closed with 4010 and new ones are denied.
#[utoipa::path(put, path = "/api/v1/channels/{id}/stop", tag = "emithub", security(("api_token" = [])), params(("id" = String, Path, description = "the channel id (a UUID)")), responses((status = 200, body = ManagedChannel, description = "now Stopped; its sockets are closed with 4010"), (status = 401, description = "missing or wrong `Authorization: Bearer <BROADCAST_API_TOKEN>` (when one is set)", body = crate::protocol::ErrorBody), (status = 404, description = "no such channel", body = crate::protocol::ErrorBody)))]
pub(crate) async fn stop(
    State(st): State<AppState>,
    _token: ApiToken,
    Path(raw): Path<String>,
) -> Result<Json<ManagedChannel>, ApiError> {
    transition(&st, &raw, Transition::Stop).await
}

/// Changes a channel's name, description or settings (what is left out stays).
#[utoipa::path(patch, path = "/api/v1/channels/{id}", tag = "emithub", security(("api_token" = [])), params(("id" = String, Path, description = "the channel id (a UUID)")), request_body = UpdateChannel, responses((status = 200, body = ManagedChannel), (status = 400, description = "the body is not JSON", body = crate::protocol::ErrorBody), (status = 401, description = "missing or wrong `Authorization: Bearer <BROADCAST_API_TOKEN>` (when one is set)", body = crate::protocol::ErrorBody), (status = 404, description = "no such channel", body = crate::protocol::ErrorBody), (status = 422, description = "invalid request", body = crate::protocol::ErrorBody)))]
pub(crate) async fn update(
    State(st): State<AppState>,
    _token: ApiToken,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ManagedChannel>, ApiError> {
    let request: UpdateChannel = crate::protocol::body::json(&st, body)?;
    Ok(Json(st.emithub.update(id(&raw)?, request).await?))
}

/// Deletes a channel and its history; its sockets are closed with 4011.
#[utoipa::path(delete, path = "/api/v1/channels/{id}", tag = "emithub", security(("api_token" = [])), params(("id" = String, Path, description = "the channel id (a UUID)")), responses((status = 204, description = "deleted with its history; its sockets are closed with 4011"), (status = 401, description = "missing or wrong `Authorization: Bearer <BROADCAST_API_TOKEN>` (when one is set)", body = crate::protocol::ErrorBody), (status = 404, description = "no such channel", body = crate::protocol::ErrorBody)))]
pub(crate) async fn delete(
    State(st): State<AppState>,
    _token: ApiToken,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    st.emithub.delete(id(&raw)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `POST /api/v1/channels/{id}/broadcast`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BroadcastRequest {
    content: String,
    #[serde(default)]
    message_type: Option<String>,
}

/// Sends `content` to every socket of an Active channel (kept when `persist_messages`).
#[utoipa::path(post, path = "/api/v1/channels/{id}/broadcast", tag = "emithub", security(("api_token" = [])), params(("id" = String, Path, description = "the channel id (a UUID)")), request_body(content = BroadcastRequest, description = "JSON, whatever the Content-Type"), responses((status = 200, body = Broadcasted), (status = 400, description = "the body is not JSON", body = crate::protocol::ErrorBody), (status = 401, description = "missing or wrong `Authorization: Bearer <BROADCAST_API_TOKEN>` (when one is set)", body = crate::protocol::ErrorBody), (status = 404, description = "no such channel", body = crate::protocol::ErrorBody), (status = 409, description = "the channel is Created, Paused or Stopped (refused, not held)", body = crate::protocol::ErrorBody), (status = 429, description = "over the channel's rate_limit_per_minute", body = crate::protocol::ErrorBody), (status = 503, description = "the store or the cluster is unavailable", body = crate::protocol::ErrorBody)))]
pub(crate) async fn broadcast(
    State(st): State<AppState>,
    _token: ApiToken,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Broadcasted>, ApiError> {
    let request: BroadcastRequest = crate::protocol::body::json(&st, body)?;
    let message_type = request.message_type.unwrap_or_else(|| "Broadcast".into());
    if message_type.is_empty() || message_type.len() > 64 {
        return Err(ApiError::unprocessable("message_type must be 1 to 64 characters"));
    }
    Ok(Json(
        st.emithub.broadcast(id(&raw)?, request.content, message_type).await?,
    ))
}

/// Paging of `GET /api/v1/channels/{id}/messages`.
#[derive(Debug, Deserialize)]
pub(crate) struct Paging {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    before: Option<u64>,
}

/// A page of the channel's persisted messages, oldest first; `next_before` pages back.
#[utoipa::path(get, path = "/api/v1/channels/{id}/messages", tag = "emithub", security(("api_token" = [])), params(("id" = String, Path, description = "the channel id (a UUID)"), ("limit" = Option<usize>, Query, description = "1 to 500, default 50"), ("before" = Option<u64>, Query, description = "a sequence: the page before it (`next_before` of the previous page)")), responses((status = 200, body = MessagePage), (status = 401, description = "missing or wrong `Authorization: Bearer <BROADCAST_API_TOKEN>` (when one is set)", body = crate::protocol::ErrorBody), (status = 404, description = "no such channel", body = crate::protocol::ErrorBody)))]
pub(crate) async fn messages(
    State(st): State<AppState>,
    _token: ApiToken,
    Path(raw): Path<String>,
    Query(paging): Query<Paging>,
) -> Result<Json<MessagePage>, ApiError> {
    let limit = paging.limit.unwrap_or(50);
    Ok(Json(st.emithub.messages(id(&raw)?, paging.before, limit).await?))
}

/// `POST /api/v1/backup`: a backup now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct BackupDone {
    /// The backup file.
    pub path: String,
}

/// Writes a consistent copy of the database to `backups/` beside it, while serving.
#[utoipa::path(post, path = "/api/v1/backup", tag = "emithub", security(("api_token" = [])), responses((status = 200, body = BackupDone), (status = 401, description = "missing or wrong `Authorization: Bearer <BROADCAST_API_TOKEN>` (when one is set)", body = crate::protocol::ErrorBody), (status = 422, description = "the database is in memory", body = crate::protocol::ErrorBody), (status = 503, description = "the store or the cluster is unavailable", body = crate::protocol::ErrorBody)))]
pub(crate) async fn backup(State(st): State<AppState>, _token: ApiToken) -> Result<Json<BackupDone>, ApiError> {
    let path = st.emithub.backup().await?;
    Ok(Json(BackupDone {
        path: path.display().to_string(),
    }))
}

/// `GET /api/v1/health`
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Health {
    /// `healthy`.
    pub status: &'static str,
    /// `emit-hub`, as the EmitHub documents show it.
    pub service: &'static str,
    /// The server's version.
    pub version: &'static str,
    /// Now.
    pub timestamp: String,
}

/// The EmitHub health check: the process is up.
#[utoipa::path(get, path = "/api/v1/health", tag = "emithub", responses((status = 200, body = Health)))]
pub(crate) async fn health() -> Json<Health> {
    Json(Health {
        status: "healthy",
        service: "emit-hub",
        version: env!("CARGO_PKG_VERSION"),
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

/// `GET /api/v1/ready`
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Ready {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// What was checked.
    pub checks: Checks,
}

/// The checks of `/api/v1/ready`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Checks {
    /// `ok`, or what failed.
    pub database: String,
    /// `ok` (the process can allocate).
    pub memory: &'static str,
}

/// The EmitHub readiness check: 200 when the database answers, 503 otherwise.
#[utoipa::path(get, path = "/api/v1/ready", tag = "emithub", responses((status = 200, body = Ready), (status = 503, body = Ready, description = "the database does not answer, or the server is shutting down")))]
pub(crate) async fn ready(State(st): State<AppState>) -> (StatusCode, Json<Ready>) {
    let (code, status, database) = match st.emithub.check().await {
        Ok(()) if !st.node.hub().is_draining() => (StatusCode::OK, "ready", "ok".to_string()),
        Ok(()) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready", "ok".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready", e.to_string()),
    };
    let checks = Checks { database, memory: "ok" };
    (code, Json(Ready { status, checks }))
}
