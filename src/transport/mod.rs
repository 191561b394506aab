//! The axum layer: HTTP handlers and WebSocket sessions. The only module that touches
//! sockets; everything else talks to the hub and the manager.
//!
//! - [`api`]: the HTTP API (`/api/broadcast`, stats, health).
//! - [`native`]: the native WebSocket protocol on `/ws`.
//! - [`error`]: [`ApiError`], JSON errors for every HTTP failure.

pub mod api;
mod credentials;
pub mod error;
mod guard;
pub mod metrics;
pub mod native;
pub mod pusher_api;
pub mod pusher_ws;
mod session;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method};
use axum::routing::{get, post};
use axum::Router;
use tokio_util::task::TaskTracker;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

pub use error::ApiError;

use crate::auth::{ChannelAuthorizer, JwtVerifier};
use crate::broadcasting::BroadcastManager;
use crate::cluster::redis::RedisBroker;
use crate::cluster::Fanout;
use crate::config::{Config, ConfigError};
use crate::hub::Hub;
use crate::presence::Presence;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The hub all sockets share.
    pub hub: Arc<Hub>,
    /// Publishes through the configured driver.
    pub manager: Arc<BroadcastManager>,
    /// Configuration.
    pub config: Arc<Config>,
    /// Decides channel joins.
    pub authorizer: Arc<dyn ChannelAuthorizer>,
    /// Verifies tokens; `None` when no JWT key is configured (only public channels then).
    pub verifier: Option<Arc<JwtVerifier>>,
    /// Presence channels' members.
    pub presence: Presence,
    /// Publishes to the whole cluster (whispers, presence events).
    pub fanout: Fanout,
    /// This node's Redis broker when clustered.
    pub cluster: Option<Arc<RedisBroker>>,
    /// The Prometheus recorder behind `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// Pusher connections per app (for each app's `max_connections`).
    pub pusher_connections: Arc<pusher_ws::AppConnections>,
    /// Tracks every WebSocket session so shutdown can wait for them.
    pub sessions: TaskTracker,
    /// When the server started.
    pub started: Instant,
}

/// The full router: HTTP API, health endpoints and (when enabled) WebSocket endpoints.
pub fn router(state: AppState) -> Result<Router, ConfigError> {
    let cors = cors_layer(&state.config.server.cors_allowed_origins)?;
    let mut router = Router::new()
        .route("/", get(api::index))
        .route("/health", get(api::health))
        .route("/ready", get(api::ready))
        .route("/metrics", get(metrics::metrics))
        .route("/api/broadcast", post(api::publish))
        .route("/api/broadcast/stats", get(api::stats))
        .route("/api/broadcast/channels", get(api::channels))
        .route("/api/broadcast/channels/{name}/users", get(api::channel_users))
        .route("/apps/{app_id}/events", post(pusher_api::events))
        .route("/apps/{app_id}/batch_events", post(pusher_api::batch_events))
        .route("/apps/{app_id}/channels", get(pusher_api::channels))
        .route("/apps/{app_id}/channels/{name}", get(pusher_api::channel))
        .route("/apps/{app_id}/channels/{name}/users", get(pusher_api::channel_users))
        .route(
            "/apps/{app_id}/users/{user_id}/terminate_connections",
            post(pusher_api::terminate_connections),
        )
        .route("/broadcasting/auth", post(pusher_api::broadcasting_auth))
        .route("/broadcasting/user-auth", post(pusher_api::user_auth))
        .route("/pusher/user-auth", post(pusher_api::user_auth));
    if state.config.websocket.enabled {
        router = router
            .route("/ws", get(native::upgrade_query))
            .route("/ws/{channel}", get(native::upgrade_path))
            .route("/app/{key}", get(pusher_ws::upgrade));
    }
    Ok(router
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.server.max_payload_size))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::same_origin_writes,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::http_limits))
        .layer(cors)
        .with_state(state))
}

/// CORS for the configured origins (none by default: only pages served by this server
/// itself may call the HTTP API from a browser).
fn cors_layer(origins: &[String]) -> Result<CorsLayer, ConfigError> {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers(Any);
    if origins.iter().any(|o| o == "*") {
        return Ok(layer.allow_origin(Any));
    }
    let values = origins
        .iter()
        .map(|o| {
            HeaderValue::from_str(o).map_err(|_| ConfigError::Invalid {
                var: "CORS_ALLOWED_ORIGINS",
                value: o.clone(),
                reason: "expected origins such as https://example.com, comma-separated, or *".into(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(layer.allow_origin(AllowOrigin::list(values)))
}
