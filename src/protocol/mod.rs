//! The wire protocols: the only modules that know axum. Each protocol folder has its
//! WebSocket handler, its HTTP endpoints and its codec, and exposes `routes()`; a handler
//! parses frames, calls the session core ([`crate::session`]), encodes the answer.
//!
//! - [`native`]: `/ws`, `/ws/{channel}` and the HTTP API under `/api/broadcast`.
//! - [`pusher`]: Pusher protocol v7 on `/app/{key}`, its HTTP API under `/apps/{id}/`,
//!   and `/broadcasting/auth`.
//! - [`emithub`]: EmitHub managed channels: REST under `/api/v1`, WebSocket on
//!   `/api/v1/channels/{id}/ws`.
//! - [`rtc`]: typed frames (the real-time communication service) on `/rtc/ws` and on
//!   its own port's `/ws`, and `/info`.
//! - [`ops`]: `/`, `/health`, `/ready`, `/metrics`.
//! - `docs`: `/docs`, the OpenAPI description of every endpoint above, generated from
//!   the handlers' `#[utoipa::path]` annotations.
//! - shared: [`ApiError`] (JSON errors), request guards (timeouts, body limits, foreign
//!   origins), credentials (where a token is found), the WebSocket adapter.
//!
//! # Adding a protocol
//!
//! 1. Create `src/protocol/<name>/` with `codec.rs` (the protocol's frames: typed structs
//!    for what the server sends, a parser for what clients send, and one table from the
//!    core's refusal codes, [`Refusal::code`](crate::session::Refusal::code), to the
//!    protocol's wire codes), `ws.rs` and `mod.rs`.
//! 2. Give it a frame-cache slot in [`Protocol`](crate::hub::Protocol).
//! 3. In `ws.rs`, write the upgrade handler: find the credentials, call
//!    [`Node::admit`](crate::session::Node::admit) (it reserves the connection's place),
//!    then serve the upgraded socket (`socket::serve`) with a
//!    [`Handler`](crate::session::runner::Handler): `encode` turns a hub message into the
//!    protocol's frame (once per message), `on_open`/`on_text`/`on_binary` call the
//!    [`Session`](crate::session::Session) (`join`, `leave`, `client_event`, `refresh`) and
//!    return a [`Reply`](crate::session::runner::Reply).
//! 4. Put any HTTP endpoints in `api.rs`; publish through the node's
//!    [`Fanout`](crate::publish::Fanout) (or the broadcast manager), never the hub.
//! 5. Expose `routes()` and merge it in `protocol::router`.
//! 6. Test the codec and handler with [`session::testing`](crate::session::testing) (no
//!    network) and the whole protocol through real sockets in `tests/`.

pub(crate) mod body;
pub(crate) mod cluster_view;
pub(crate) mod credentials;
pub(crate) mod dashboard;
mod docs;
mod echo;
pub(crate) mod emithub;
mod error;
mod guard;
pub(crate) mod metrics;
pub(crate) mod native;
pub(crate) mod ops;
pub(crate) mod pusher;
pub(crate) mod rtc;
pub(crate) mod socket;
pub(crate) mod stats;

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::Router;
use tokio_util::task::TaskTracker;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

pub(crate) use error::{ApiError, ErrorBody};

use crate::broadcasting::BroadcastManager;
use crate::cluster::redis::RedisBroker;
use crate::config::{Config, ConfigError, ServerConfig};
use crate::services::emithub::EmitHub;
use crate::session::Node;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The session core.
    pub(crate) node: Arc<Node>,
    /// Publishes through the configured driver.
    pub(crate) manager: Arc<BroadcastManager>,
    /// Configuration, swapped whole on reload (handlers read it per request).
    pub(crate) config: Arc<ArcSwap<Config>>,
    /// EmitHub managed channels.
    pub(crate) emithub: Arc<EmitHub>,
    /// Pusher apps' cache channels, subscription counts and watchlists.
    pub(crate) pusher: Arc<crate::services::pusher::Features>,
    /// What each Pusher app's connections share.
    pub(crate) pusher_contexts: Arc<pusher::AppContexts>,
    /// The typed-frame service (rooms, rate limits, who is online).
    pub(crate) rtc: Arc<crate::services::rtc::Rtc>,
    /// This node's Redis broker when clustered.
    pub(crate) cluster: Option<Arc<RedisBroker>>,
    /// The dashboard's tail of recent events.
    pub(crate) dashboard: Arc<dashboard::Feed>,
    /// Wrong secrets (API, metrics, dashboard tokens) per client address: guessing any of
    /// them is slowed down by one shared limit.
    pub(crate) wrong_tokens: Arc<credentials::WrongTokens>,
    /// Webhook delivery, when any URL is configured.
    pub(crate) webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    /// The Prometheus recorder behind `/metrics`.
    pub(crate) metrics: Arc<metrics::Metrics>,
    /// Tracks every WebSocket session so shutdown can wait for them.
    pub(crate) sessions: TaskTracker,
    /// What permessage-deflate compressed (for `/metrics`).
    pub(crate) compression: Arc<crate::websocket::DeflateStats>,
    /// Outgoing requests of `/broadcasting/auth` in forwarding mode (no redirects).
    pub(crate) http: reqwest::Client,
    /// When the served TLS certificate expires (Unix seconds; 0 without TLS), kept current
    /// by the TLS side across rotations.
    pub(crate) tls_expiry: Arc<std::sync::atomic::AtomicI64>,
    /// Every node's card and the cluster's last 15 minutes (dashboard, artisan).
    pub(crate) cluster_view: Arc<cluster_view::ClusterView>,
}

/// Admits a connection of the default app (native, EmitHub and typed-frame sockets):
/// the node's limit, and the default Pusher app's `max_connections` when apps are
/// configured (its Pusher and native clients share its channels, and its quota).
pub(crate) fn admit_default(
    st: &AppState,
    identity: Option<crate::auth::Identity>,
) -> Result<crate::session::Admission, crate::session::ConnectError> {
    let config = st.config.load();
    let quota = config.pusher.apps.default_app().map(|a| crate::session::AppQuota {
        id: &a.id,
        max_connections: a.max_connections,
    });
    st.node.admit(identity, quota)
}

/// Publishes an event that arrived through one of the server's inbound HTTP APIs (native,
/// Pusher) on `channels`; how many local sockets it reached.
///
/// It goes through the node's publish pipeline, never through the application-side
/// driver `BROADCAST_DRIVER` chooses: with `log` or `null` there (Laravel's values), the
/// server still delivers what its APIs accept.
///
/// A managed channel (`emithub.{id}`) keeps its state, rate limit and persistence
/// whichever API publishes into it: the event goes through EmitHub's own broadcast
/// (`content` is the data, as text unless it is a JSON string; `message_type` is the
/// event name), so a Paused or Stopped channel answers 409 here too.
pub(crate) async fn publish_inbound(
    st: &AppState,
    channels: &[crate::channel::Channel],
    event: &str,
    payload: &crate::broadcasting::Payload,
) -> Result<usize, ApiError> {
    // End-to-end encrypted channels carry only what the SDKs encrypt; plaintext would be
    // relayed to clients that expect ciphertext (and shown decrypted by nobody).
    if channels.iter().any(crate::channel::Channel::is_encrypted) && !is_ciphertext(&payload.data) {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "not_encrypted",
            "data for private-encrypted-* channels must be {\"nonce\",\"ciphertext\"} as the Pusher SDKs encrypt it \
             (set the SDK's encryptionMasterKeyBase64)",
        ));
    }
    let mut plain = Vec::new();
    let mut managed = Vec::new();
    for channel in channels {
        match st.emithub.for_hub_channel(channel) {
            Some(found) => managed.push(found?.id),
            None => plain.push(channel.clone()),
        }
    }
    let mut recipients = 0;
    if !managed.is_empty() {
        let content = crate::hub::payload_text(&payload.data, payload.text.as_deref()).into_owned();
        for id in managed {
            let sent = st.emithub.broadcast(id, content.clone(), event.to_string()).await?;
            recipients += sent.recipients;
        }
    }
    if !plain.is_empty() {
        crate::broadcasting::manager::validate(&plain, event)?;
        let report = st
            .node
            .fanout()
            .publish_many(
                &plain,
                event,
                payload.data.clone(),
                payload.text.clone(),
                payload.socket,
            )
            .await
            .map_err(crate::broadcasting::BroadcastError::from)?;
        recipients += report.delivered;
    }
    Ok(recipients)
}

/// Whether `data` is what the Pusher SDKs send to encrypted channels: an object (or its
/// JSON text) with string `nonce` and `ciphertext` and nothing else.
fn is_ciphertext(data: &serde_json::value::RawValue) -> bool {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sealed {
        #[allow(dead_code)]
        nonce: String,
        #[allow(dead_code)]
        ciphertext: String,
    }
    let text = match serde_json::from_str::<String>(data.get()) {
        Ok(text) => text,
        Err(_) => data.get().to_string(),
    };
    serde_json::from_str::<Sealed>(&text).is_ok()
}

/// The echo endpoint (`/echo`) for conformance suites.
pub(crate) fn echo_router(state: AppState) -> Router {
    echo::router(state)
}

/// The full router: every protocol's routes, health endpoints, guards and CORS.
pub(crate) fn router(state: AppState) -> Result<Router, ConfigError> {
    let config = state.config.load_full();
    let cors = cors_layer(&config.server, state.config.clone())?;
    let (router, api) = utoipa_axum::router::OpenApiRouter::new()
        .merge(ops::routes())
        .merge(native::routes(&config))
        .merge(pusher::routes(&config))
        .merge(emithub::routes(&config))
        .merge(rtc::routes(&config))
        .routes(utoipa_axum::routes!(dashboard::page))
        .routes(utoipa_axum::routes!(dashboard::feed))
        .routes(utoipa_axum::routes!(dashboard::favicon))
        .split_for_parts();
    let api = docs::finish(api);
    let router: Router<AppState> = router.merge(docs::routes(&api));
    Ok(guarded(router, state, &config.server, cors))
}

/// `router` with what every listener has: JSON 404/405, the body limit, the write and
/// request guards, CORS.
fn guarded(router: Router<AppState>, state: AppState, server: &ServerConfig, cors: CorsLayer) -> Router {
    router
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(server.max_payload_size))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::same_origin_writes,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::http_limits))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::count_answers,
        ))
        .layer(cors)
        .with_state(state)
}

/// The `since` query parameter (`EPOCH:OFFSET`) of a WebSocket that recovers what it
/// missed; a malformed one is a 422 before the upgrade.
pub(crate) fn since_param(
    query: &std::collections::HashMap<String, String>,
) -> Result<Option<crate::hub::Position>, ApiError> {
    match query.get("since").filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(raw) => crate::history::parse_position(raw)
            .map(Some)
            .ok_or_else(|| ApiError::unprocessable(format!("invalid since {raw:?}: expected EPOCH:OFFSET"))),
    }
}

/// The typed-frame service's own port: `/ws` speaks typed frames (with the same guards
/// and CORS as the main router).
pub(crate) fn rtc_router(state: AppState) -> Result<Router, ConfigError> {
    let config = state.config.load_full();
    let cors = cors_layer(&config.server, state.config.clone())?;
    let routes = rtc::service_routes()
        .route("/health", axum::routing::get(ops::health))
        .route("/ready", axum::routing::get(ops::ready))
        .route("/metrics", axum::routing::get(metrics::metrics));
    Ok(guarded(routes, state, &config.server, cors))
}

/// CORS for the configured origins (none by default: only pages served by this server
/// itself may call the HTTP API from a browser). The origins are read from the live
/// configuration on every request, so a reload applies them; methods, headers and max
/// age are fixed at start.
fn cors_layer(server: &ServerConfig, live: Arc<ArcSwap<Config>>) -> Result<CorsLayer, ConfigError> {
    for origin in server.cors_allowed_origins.iter().filter(|o| *o != "*") {
        check_origin(origin)?;
    }
    let methods = server
        .cors_allowed_methods
        .iter()
        .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
        .collect::<Vec<_>>();
    let layer = CorsLayer::new()
        .allow_methods(methods)
        .max_age(server.cors_max_age)
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            let config = live.load();
            let allowed = &config.server.cors_allowed_origins;
            allowed
                .iter()
                .any(|a| a == "*" || a.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
        }));
    if server.cors_allowed_headers.iter().any(|h| h == "*") {
        return Ok(layer.allow_headers(Any));
    }
    let headers = server
        .cors_allowed_headers
        .iter()
        .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
        .collect::<Vec<_>>();
    Ok(layer.allow_headers(headers))
}

/// An origin must be a valid header value (`https://example.com`).
pub(crate) fn check_origin(origin: &str) -> Result<(), ConfigError> {
    HeaderValue::from_str(origin)
        .map(|_| ())
        .map_err(|_| ConfigError::Invalid {
            var: "CORS_ALLOWED_ORIGINS",
            value: origin.to_string(),
            reason: "expected origins such as https://example.com, comma-separated, or *".into(),
        })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use serde_json::Value;
    use tower::ServiceExt;

    use crate::{Config, Rustaxum};

    async fn call(router: &axum::Router, req: Request<Body>) -> (StatusCode, Value) {
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    fn post(path: &str, content_type: &str, body: &str, token: Option<&str>) -> Request<Body> {
        let mut req = Request::post(path).header("content-type", content_type);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.body(Body::from(body.to_string())).unwrap()
    }

    #[tokio::test]
    async fn operations_and_native_api_without_a_socket() {
        let mut config = Config::default();
        config.server.api_token = Some("oneshot-token-0123456789".into());
        let app = Rustaxum::new(config).unwrap();
        let router = app.router().unwrap();
        assert_eq!(
            call(&router, get("/health")).await,
            (StatusCode::OK, serde_json::json!({"status": "ok"}))
        );
        let (status, ready) = call(&router, get("/ready")).await;
        assert_eq!((status, ready["status"].as_str()), (StatusCode::OK, Some("ready")));
        assert_eq!(call(&router, get("/nope")).await.1["error"], "not_found");
        assert_eq!(
            call(&router, get("/api/broadcast/stats")).await.0,
            StatusCode::UNAUTHORIZED
        );
        let body = r#"{"channel":"general","event":"e"}"#;
        let token = Some("oneshot-token-0123456789");
        let (status, answer) = call(&router, post("/api/broadcast", "text/plain", body, token)).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("unsupported_media_type"))
        );
        let (status, answer) = call(&router, post("/api/broadcast", "application/json", body, token)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            answer,
            serde_json::json!({"ok": true, "event": "e", "channels": ["general"], "recipients": 0})
        );
        let (status, answer) = call(&router, post("/api/broadcast", "application/json", "{", token)).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_json"))
        );
        let req = Request::get("/api/broadcast/stats")
            .header("authorization", "Bearer oneshot-token-0123456789")
            .body(Body::empty())
            .unwrap();
        let (status, stats) = call(&router, req).await;
        assert_eq!(
            (status, stats["scope"].as_str(), stats["messages"]["published"].as_u64()),
            (StatusCode::OK, Some("local"), Some(1))
        );
        let (status, _) = call(&router, post("/apps/x/events", "application/json", "{}", None)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "unknown Pusher app");
    }
}
