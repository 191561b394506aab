//! Pusher's HTTP API under `/apps/{app_id}/` (signed requests), and the auth endpoints
//! Laravel Echo calls: `POST /broadcasting/auth` and `POST /broadcasting/user-auth`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::broadcasting::Payload;
use crate::channel::{Channel, ChannelKind};
use crate::hub::SocketId;
use crate::protocol::credentials::Credentials;
use crate::protocol::{ApiError, AppState};
use crate::services::pusher::{self, PusherApp};
use crate::session::Refusal;

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// The attributes of an `info=a,b` parameter.
fn info_list(raw: Option<&str>) -> Vec<String> {
    raw.map(|i| {
        i.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

fn lowercase_query(raw: Option<&str>) -> BTreeMap<String, String> {
    let pairs: Vec<(String, String)> = raw
        .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
        .unwrap_or_default();
    pairs.into_iter().map(|(k, v)| (k.to_lowercase(), v)).collect()
}

/// A Pusher REST request whose signature verified: the app, the query (keys
/// lowercased) and the body. Extracting it answers 404 for an unknown app, 403 for a
/// disabled one, 401 for a bad or stale signature and 413 for an oversized body.
pub(crate) struct Signed {
    /// The app named in the path.
    pub(crate) app: PusherApp,
    /// Its channel namespace (`None`: the default app).
    pub(crate) namespace: Option<String>,
    /// Query parameters with lowercased keys.
    pub(crate) query: BTreeMap<String, String>,
    /// The raw body (what `body_md5` covers).
    pub(crate) body: Bytes,
}

impl FromRequest<AppState> for Signed {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        // Routes are /apps/{app_id}/...
        let app_id = parts.uri.path().split('/').nth(2).unwrap_or_default().to_string();
        let query = lowercase_query(parts.uri.query());
        let body = axum::body::to_bytes(body, st.config.load().server.max_payload_size)
            .await
            .map_err(|_| ApiError::too_large(st.config.load().server.max_payload_size))?;
        let config = st.config.load();
        let app = config
            .pusher
            .apps
            .by_id(&app_id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("unknown app {app_id}")))?;
        let namespace = config.pusher.apps.namespace(&app).map(str::to_string);
        if !app.enabled {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "app_disabled",
                "this app is disabled",
            ));
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        pusher::verify_request(&app, parts.method.as_str(), parts.uri.path(), &query, &body, now)
            .map_err(|e| ApiError::unauthorized(e.to_string()))?;
        if !st.pusher.allow_api_request(&app) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "app {} is limited to {} HTTP API requests per second",
                    app.id, app.max_api_requests_per_second
                ),
            ));
        }
        Ok(Self {
            app,
            namespace,
            query,
            body,
        })
    }
}

impl Signed {
    /// A channel name of the request, in the app's namespace.
    fn channel(&self, name: &str) -> Result<Channel, ApiError> {
        Channel::parse_in(self.namespace.as_deref(), name)
            .map_err(|e| bad_request(format!("invalid channel {name:?}: {e}")))
    }

    /// A channel an event may be published to: a channel of the app, or
    /// `#server-to-user-{id}` (the server SDKs' `sendToUser`), the signed-in user's.
    fn event_channel(&self, name: &str) -> Result<Channel, ApiError> {
        match name.strip_prefix(crate::services::pusher::SERVER_TO_USER) {
            Some(user) => crate::services::pusher::server_to_user(self.namespace.as_deref(), user)
                .ok_or_else(|| bad_request(format!("invalid user id in {name:?}"))),
            None => self.channel(name),
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
struct EventBody {
    name: String,
    /// A string (Pusher's API), kept byte for byte; JSON is accepted too.
    #[schema(value_type = String)]
    data: Box<serde_json::value::RawValue>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    info: Option<String>,
}

/// A validated event ready to publish.
struct Prepared {
    channels: Vec<Channel>,
    event: String,
    payload: Payload,
    info: Vec<String>,
}

fn prepare(st: &AppState, signed: &Signed, e: EventBody) -> Result<Prepared, ApiError> {
    let app = &signed.app;
    let mut names = e.channels.unwrap_or_default();
    names.extend(e.channel);
    if names.is_empty() {
        return Err(bad_request("give channels (array) or channel"));
    }
    let max = app
        .max_channels_per_event
        .unwrap_or_else(|| st.config.load().pusher.max_channels_per_event);
    if names.len() > max {
        return Err(bad_request(format!("at most {max} channels per event")));
    }
    let max_name = app
        .max_event_name_length
        .min(crate::broadcasting::manager::MAX_EVENT_NAME_LEN);
    if let Some(problem) = crate::session::event_name_problem(&e.name, max_name) {
        return Err(bad_request(problem));
    }
    // Pusher's data is a string (usually JSON) that Pusher clients get byte for byte;
    // JSON clients get its JSON (see `payload_from_text`). Some clients send JSON itself.
    let (data, text) = match serde_json::from_str::<String>(e.data.get()) {
        Ok(text) => (None, Some(text)),
        Err(_) => (Some(e.data), None),
    };
    let data_len = text
        .as_ref()
        .map_or_else(|| data.as_ref().map_or(0, |d| d.get().len()), String::len);
    let max = app
        .max_event_size
        .unwrap_or_else(|| st.config.load().pusher.max_event_size);
    if data_len > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("event data is {data_len} bytes; the limit is {max}"),
        ));
    }
    let (data, text) = match (data, text) {
        (Some(raw), _) => (Arc::from(raw), None),
        (None, Some(text)) => crate::hub::payload_from_text(text),
        (None, None) => unreachable!("one of the two is set above"),
    };
    let channels = names
        .iter()
        .map(|n| signed.event_channel(n))
        .collect::<Result<Vec<_>, _>>()?;
    let socket = e
        .socket_id
        .as_deref()
        .map(str::parse::<SocketId>)
        .transpose()
        .map_err(|err| bad_request(err.to_string()))?;
    let info = info_list(e.info.as_deref());
    Ok(Prepared {
        channels,
        event: e.name,
        payload: Payload { data, text, socket },
        info,
    })
}

/// What `info=` asked about a channel (and `occupied` for a single channel).
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub(super) struct ChannelInfo {
    /// Sockets subscribed on this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription_count: Option<usize>,
    /// Presence members.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_count: Option<usize>,
    /// Whether anyone is subscribed (single-channel queries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub occupied: Option<bool>,
}

/// The answer of `events`: `{}`, or the channels' info when `info` was given.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub(super) struct EventsResponse {
    /// Info by channel (Pusher spelling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<BTreeMap<String, ChannelInfo>>,
}

/// The answer of `batch_events`: `{}`, or each event's channels' info.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub(super) struct BatchResponse {
    /// Per event, info by channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<Vec<BTreeMap<String, ChannelInfo>>>,
}

/// The answer of `GET channels`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ChannelsResponse {
    /// Occupied channels (Pusher spelling) with the info asked for.
    pub channels: BTreeMap<String, ChannelInfo>,
}

/// One user of a presence channel.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct UserId {
    /// The user id: a number when the app's authorization gave a number, else a string.
    #[schema(value_type = String)]
    pub id: Value,
}

/// The answer of `GET channels/{name}/users`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct UsersResponse {
    /// The members.
    pub users: Vec<UserId>,
}

/// An empty JSON object, Pusher's answer when there is nothing to say.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub(super) struct Empty {}

async fn publish(st: &AppState, p: &Prepared) -> Result<Option<BTreeMap<String, ChannelInfo>>, ApiError> {
    crate::protocol::publish_inbound(st, &p.channels, &p.event, &p.payload).await?;
    if p.info.is_empty() {
        return Ok(None);
    }
    let mut channels = BTreeMap::new();
    for c in &p.channels {
        channels.insert(c.pusher_name(), channel_info(st, c, &p.info).await?);
    }
    Ok(Some(channels))
}

async fn channel_info(st: &AppState, channel: &Channel, info: &[String]) -> Result<ChannelInfo, ApiError> {
    let mut out = ChannelInfo::default();
    for attr in info {
        match attr.as_str() {
            "subscription_count" => out.subscription_count = Some(st.node.hub().subscriber_count(channel)),
            "user_count" if channel.kind() == ChannelKind::Presence => {
                out.user_count = Some(st.node.presence().members(channel.name()).await?.len());
            }
            "user_count" => return Err(bad_request("user_count is only available for presence channels")),
            other => return Err(bad_request(format!("unknown info attribute {other:?}"))),
        }
    }
    Ok(out)
}

/// Triggers an event on up to `PUSHER_MAX_CHANNELS_PER_EVENT` channels (signed request).
#[utoipa::path(post, path = "/apps/{app_id}/events", tag = "pusher", params(("app_id" = String, Path)), request_body = EventBody, responses((status = 200, body = EventsResponse), (status = 401, description = "missing or invalid request signature", body = crate::protocol::ErrorBody), (status = 403, description = "the app is disabled", body = crate::protocol::ErrorBody), (status = 413, description = "the data is larger than PUSHER_MAX_EVENT_SIZE", body = crate::protocol::ErrorBody)))]
pub(crate) async fn events(State(st): State<AppState>, signed: Signed) -> Result<Json<EventsResponse>, ApiError> {
    let e: EventBody =
        serde_json::from_slice(&signed.body).map_err(|e| bad_request(format!("invalid event body: {e}")))?;
    let prepared = prepare(&st, &signed, e)?;
    let channels = publish(&st, &prepared).await?;
    Ok(Json(EventsResponse { channels }))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct Batch {
    batch: Vec<EventBody>,
}

/// Triggers up to `PUSHER_MAX_BATCH_SIZE` events at once (signed request).
#[utoipa::path(post, path = "/apps/{app_id}/batch_events", tag = "pusher", params(("app_id" = String, Path)), request_body = Batch, responses((status = 200, body = BatchResponse), (status = 401, description = "missing or invalid request signature", body = crate::protocol::ErrorBody), (status = 400, description = "more events than PUSHER_MAX_BATCH_SIZE", body = crate::protocol::ErrorBody)))]
pub(crate) async fn batch_events(State(st): State<AppState>, signed: Signed) -> Result<Json<BatchResponse>, ApiError> {
    let batch: Batch =
        serde_json::from_slice(&signed.body).map_err(|e| bad_request(format!("invalid batch body: {e}")))?;
    let max = st.config.load().pusher.max_batch_size;
    if batch.batch.len() > max {
        return Err(bad_request(format!("at most {max} events per batch")));
    }
    // Validate everything before publishing anything.
    let prepared = batch
        .batch
        .into_iter()
        .map(|e| prepare(&st, &signed, e))
        .collect::<Result<Vec<_>, _>>()?;
    let mut results = Vec::with_capacity(prepared.len());
    for p in &prepared {
        results.push(publish(&st, p).await?.unwrap_or_default());
    }
    let any_info = prepared.iter().any(|p| !p.info.is_empty());
    Ok(Json(BatchResponse {
        batch: any_info.then_some(results),
    }))
}

/// Occupied channels, optionally filtered by prefix (signed request).
#[utoipa::path(get, path = "/apps/{app_id}/channels", tag = "pusher", params(("app_id" = String, Path), ("filter_by_prefix" = Option<String>, Query), ("info" = Option<String>, Query, description = "`user_count` (presence- prefix only)")), responses((status = 200, body = ChannelsResponse), (status = 401, description = "missing or invalid request signature", body = crate::protocol::ErrorBody)))]
pub(crate) async fn channels(State(st): State<AppState>, signed: Signed) -> Result<Json<ChannelsResponse>, ApiError> {
    let query = &signed.query;
    let prefix = query.get("filter_by_prefix").cloned().unwrap_or_default();
    let info = info_list(query.get("info").map(String::as_str));
    if info.iter().any(|i| i == "user_count") && !prefix.starts_with("presence-") {
        return Err(bad_request("info=user_count requires filter_by_prefix=presence-"));
    }
    let snapshot = st.node.hub().snapshot();
    let mut channels = BTreeMap::new();
    for (name, c) in &snapshot.channels {
        let Ok(parsed) = Channel::from_key(name) else { continue };
        if parsed.app() != signed.namespace.as_deref() {
            continue;
        }
        let channel = parsed.with_kind(c.kind);
        let pusher_name = channel.pusher_name();
        if pusher_name.starts_with(&prefix) {
            channels.insert(pusher_name, channel_info(&st, &channel, &info).await?);
        }
    }
    Ok(Json(ChannelsResponse { channels }))
}

/// One channel's state: occupied, subscription and user counts (signed request).
#[utoipa::path(get, path = "/apps/{app_id}/channels/{name}", tag = "pusher", params(("app_id" = String, Path), ("name" = String, Path), ("info" = Option<String>, Query, description = "`subscription_count`, `user_count`")), responses((status = 200, body = ChannelInfo), (status = 401, description = "missing or invalid request signature", body = crate::protocol::ErrorBody)))]
pub(crate) async fn channel(
    State(st): State<AppState>,
    Path((_app_id, name)): Path<(String, String)>,
    signed: Signed,
) -> Result<Json<ChannelInfo>, ApiError> {
    let channel = signed.channel(&name)?;
    let query = signed.query;
    let info = info_list(query.get("info").map(String::as_str));
    let mut body = channel_info(&st, &channel, &info).await?;
    body.occupied = Some(st.node.hub().subscriber_count(&channel) > 0);
    Ok(Json(body))
}

/// A presence channel's users (signed request).
#[utoipa::path(get, path = "/apps/{app_id}/channels/{name}/users", tag = "pusher", params(("app_id" = String, Path), ("name" = String, Path, description = "a presence channel")), responses((status = 200, body = UsersResponse), (status = 401, description = "missing or invalid request signature", body = crate::protocol::ErrorBody)))]
pub(crate) async fn channel_users(
    State(st): State<AppState>,
    Path((_app_id, name)): Path<(String, String)>,
    signed: Signed,
) -> Result<Json<UsersResponse>, ApiError> {
    let channel = signed.channel(&name)?;
    if channel.kind() != ChannelKind::Presence {
        return Err(bad_request("users are only available for presence channels"));
    }
    let members = st.node.presence().members(channel.name()).await?;
    let users = members
        .iter()
        .map(|m| UserId {
            id: serde_json::to_value(m.id()).unwrap_or(Value::Null),
        })
        .collect();
    Ok(Json(UsersResponse { users }))
}

/// Closes every connection of a user, on every node (signed request).
#[utoipa::path(post, path = "/apps/{app_id}/users/{user_id}/terminate_connections", tag = "pusher", params(("app_id" = String, Path), ("user_id" = String, Path)), responses((status = 200, body = Empty), (status = 401, description = "missing or invalid request signature", body = crate::protocol::ErrorBody)))]
pub(crate) async fn terminate_connections(
    State(st): State<AppState>,
    Path((_app_id, user_id)): Path<(String, String)>,
    signed: Signed,
) -> Result<Json<Empty>, ApiError> {
    // Users are per app: the sockets signed in as this app's user.
    let key = crate::channel::app_key(signed.namespace.as_deref(), &user_id);
    let closed = st.node.fanout().terminate_user(&key).await?;
    tracing::info!(app = %signed.app.id, user = %user_id, closed, "terminated user connections");
    Ok(Json(Empty {}))
}

fn form_or_json(headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        serde_json::from_slice::<HashMap<String, Value>>(body)
            .map(|m| {
                m.into_iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        serde_urlencoded::from_bytes(body).unwrap_or_default()
    }
}

fn default_app(st: &AppState) -> Result<PusherApp, ApiError> {
    st.config
        .load()
        .pusher
        .apps
        .default_app()
        .cloned()
        .ok_or_else(|| ApiError::not_found("no Pusher app is configured (PUSHER_APP_ID/KEY/SECRET)"))
}

fn socket_id(fields: &HashMap<String, String>) -> Result<String, ApiError> {
    let raw = fields
        .get("socket_id")
        .ok_or_else(|| bad_request("socket_id is required"))?;
    raw.parse::<SocketId>().map_err(|e| bad_request(e.to_string()))?;
    Ok(raw.clone())
}

/// The answer of `/broadcasting/auth`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct AuthResponse {
    /// `key:signature`.
    pub auth: String,
    /// Presence channels: the member the signature covers, JSON-encoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_data: Option<String>,
    /// Encrypted channels (`private-encrypted-*`): the key that decrypts their events,
    /// base64 of SHA-256 of the channel name and the app's encryption master key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_secret: Option<String>,
}

/// The answer of `/broadcasting/user-auth`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct UserAuthResponse {
    /// `key:signature`.
    pub auth: String,
    /// The user, JSON-encoded.
    pub user_data: String,
}

#[derive(Serialize)]
struct MemberData<'a> {
    user_id: &'a str,
    user_info: &'a Value,
}

#[derive(Serialize)]
struct UserData<'a> {
    id: &'a str,
    user_info: &'a Value,
}

/// A refused authorization, with the protocol's HTTP status.
fn refusal<R: Refusal>(r: &R) -> ApiError {
    let status = StatusCode::from_u16(super::codec::subscription_status(r.code())).unwrap_or(StatusCode::FORBIDDEN);
    ApiError::new(status, r.code().as_str(), r.to_string())
}

/// Signs a private or presence channel subscription for Laravel Echo / pusher-js, checking the same channel rules as the native protocol; with `BROADCAST_AUTH_FORWARD_URL`, the app's own endpoint decides (the request is forwarded there) and this server signs what it allows.
#[utoipa::path(post, path = "/broadcasting/auth", tag = "pusher", request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`socket_id`, `channel_name` (JSON also accepted); the user's JWT in `Authorization: Bearer`"), responses((status = 200, body = AuthResponse), (status = 400, description = "missing socket_id or channel_name", body = crate::protocol::ErrorBody), (status = 401, description = "the token is missing or invalid", body = crate::protocol::ErrorBody), (status = 403, description = "the channel is not allowed", body = crate::protocol::ErrorBody), (status = 502, description = "forwarding mode: the app's endpoint could not be reached or answered something unusable", body = crate::protocol::ErrorBody)))]
pub(crate) async fn broadcasting_auth(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let body = crate::protocol::body::bytes(&st, body)?;
    let fields = form_or_json(&headers, &body);
    let app = default_app(&st)?;
    let socket_id = socket_id(&fields)?;
    let name = fields
        .get("channel_name")
        .ok_or_else(|| bad_request("channel_name is required"))?;
    let channel = Channel::parse(name).map_err(|e| bad_request(format!("invalid channel: {e}")))?;
    if channel.kind() == ChannelKind::Public {
        return Err(bad_request("public channels need no authorization"));
    }
    let shared_secret = match channel.is_encrypted() {
        false => None,
        true => Some(pusher::shared_secret(&app, name).ok_or_else(|| {
            bad_request("encrypted channels need the app's encryption master key (PUSHER_APP_ENCRYPTION_MASTER_KEY)")
        })?),
    };
    let forward_url = st.config.load().auth.forward_url.clone();
    if let Some(url) = forward_url {
        // The app decides (Laravel's channel callbacks); this server signs.
        let allowed = super::forward::ask(&st.http, &url, &headers, body.clone()).await?;
        let channel_data = match allowed {
            super::forward::Allowed::Signed(answer) => {
                return Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], answer).into_response())
            }
            super::forward::Allowed::Member(member) if channel.kind() == ChannelKind::Presence => Some(member),
            super::forward::Allowed::Channel if channel.kind() == ChannelKind::Presence => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "the app allowed this presence channel without saying who the member is (channel_data)",
                ))
            }
            _ => None,
        };
        return Ok(Json(AuthResponse {
            auth: pusher::channel_auth(&app, &socket_id, name, channel_data.as_deref()),
            channel_data,
            shared_secret,
        })
        .into_response());
    }
    let identity = Credentials::from_request(&headers, &HashMap::new()).authenticate(&st)?;
    // Never sign a spelling whose kind the rules contradict (`private-general` for the
    // public `general`): the signature would let the socket whisper on a public channel.
    let grant = st
        .node
        .grant_spelled(identity.as_ref(), &channel)
        .map_err(|e| refusal(&e))?;
    let response = match &grant.member {
        Some(member) => {
            // Laravel's shape: Echo's here()/joining()/leaving() give user_info, which
            // Laravel apps fill with the user's id.
            let user_info = pusher::laravel_user_info(&member.user_id, &member.user_info);
            let channel_data = serde_json::to_string(&MemberData {
                user_id: &member.user_id,
                user_info: &user_info,
            })
            .map_err(|e| bad_request(e.to_string()))?;
            AuthResponse {
                auth: pusher::channel_auth(&app, &socket_id, name, Some(&channel_data)),
                channel_data: Some(channel_data),
                shared_secret,
            }
        }
        None => AuthResponse {
            auth: pusher::channel_auth(&app, &socket_id, name, None),
            channel_data: None,
            shared_secret,
        },
    };
    Ok(Json(response).into_response())
}

/// Signs `pusher:signin` for the token's user.
#[utoipa::path(post, path = "/broadcasting/user-auth", tag = "pusher", request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`socket_id`; the user's JWT in `Authorization: Bearer`"), responses((status = 200, body = UserAuthResponse), (status = 401, description = "a token is required", body = crate::protocol::ErrorBody)))]
pub(crate) async fn user_auth(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UserAuthResponse>, ApiError> {
    let body = crate::protocol::body::bytes(&st, body)?;
    let fields = form_or_json(&headers, &body);
    let app = default_app(&st)?;
    let socket_id = socket_id(&fields)?;
    let user = Credentials::from_request(&headers, &HashMap::new())
        .authenticate(&st)?
        .ok_or_else(|| ApiError::unauthorized("a token is required"))?;
    let user_data = serde_json::to_string(&UserData {
        id: &user.user_id,
        user_info: &user.user_info,
    })
    .map_err(|e| bad_request(e.to_string()))?;
    Ok(Json(UserAuthResponse {
        auth: pusher::user_auth(&app, &socket_id, &user_data),
        user_data,
    }))
}

/// Signs `pusher:signin` for the token's user (pusher-js's default path).
#[utoipa::path(post, path = "/pusher/user-auth", tag = "pusher", request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "as `/broadcasting/user-auth`"), responses((status = 200, body = UserAuthResponse), (status = 401, description = "a token is required", body = crate::protocol::ErrorBody)))]
pub(crate) async fn pusher_user_auth(
    state: State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UserAuthResponse>, ApiError> {
    user_auth(state, headers, body).await
}
