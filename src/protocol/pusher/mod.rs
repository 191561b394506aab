//! Pusher protocol v7 (Laravel Echo, pusher-js and the Pusher server SDKs work
//! unchanged): the WebSocket on `/app/{key}`, the signed HTTP API under `/apps/{id}/`,
//! and the auth endpoints Echo calls.
//!
//! - [`codec`]: frames and the refusal tables.
//! - `ws`: the upgrade and the session handler.
//! - `api`: the REST API and `/broadcasting/auth`, `/broadcasting/user-auth`.
//! - `forward`: `/broadcasting/auth` asking the app's own endpoint (`BROADCAST_AUTH_FORWARD_URL`).
//!
//! Signatures (channel auth, user auth, REST requests) live in [`crate::services::pusher`], which
//! needs no web framework.

mod api;
pub(crate) mod codec;
pub(crate) mod forward;
mod ws;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) use ws::AppContexts;

use super::AppState;
use crate::config::Config;

/// The Pusher protocol's routes (the WebSocket only when enabled).
pub(crate) fn routes(config: &Config) -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::new()
        .routes(routes!(api::events))
        .routes(routes!(api::batch_events))
        .routes(routes!(api::channels))
        .routes(routes!(api::channel))
        .routes(routes!(api::channel_users))
        .routes(routes!(api::terminate_connections))
        .routes(routes!(api::broadcasting_auth))
        .routes(routes!(api::user_auth))
        .routes(routes!(api::pusher_user_auth));
    if config.websocket.enabled {
        router = router.routes(routes!(ws::upgrade));
    }
    router
}
