//! Pusher protocol v7 (Laravel Echo, pusher-js and the Pusher server SDKs work
//! unchanged): the WebSocket on `/app/{key}`, the signed HTTP API under `/apps/{id}/`,
//! and the auth endpoints Echo calls.
//!
//! - [`codec`]: frames and the refusal tables.
//! - `ws`: the upgrade and the session handler.
//! - `api`: the REST API and `/broadcasting/auth`, `/broadcasting/user-auth`.
//!
//! Signatures (channel auth, user auth, REST requests) live in [`crate::pusher`], which
//! needs no web framework.

mod api;
pub mod codec;
mod ws;

use axum::routing::{get, post};
use axum::Router;

pub use api::{
    AuthResponse, BatchResponse, ChannelInfo, ChannelsResponse, Empty, EventsResponse, UserAuthResponse, UserId,
    UsersResponse,
};

use super::AppState;
use crate::config::Config;

/// The Pusher protocol's routes (the WebSocket only when enabled).
pub(crate) fn routes(config: &Config) -> Router<AppState> {
    let mut router = Router::new()
        .route("/apps/{app_id}/events", post(api::events))
        .route("/apps/{app_id}/batch_events", post(api::batch_events))
        .route("/apps/{app_id}/channels", get(api::channels))
        .route("/apps/{app_id}/channels/{name}", get(api::channel))
        .route("/apps/{app_id}/channels/{name}/users", get(api::channel_users))
        .route(
            "/apps/{app_id}/users/{user_id}/terminate_connections",
            post(api::terminate_connections),
        )
        .route("/broadcasting/auth", post(api::broadcasting_auth))
        .route("/broadcasting/user-auth", post(api::user_auth))
        .route("/pusher/user-auth", post(api::user_auth));
    if config.websocket.enabled {
        router = router.route("/app/{key}", get(ws::upgrade));
    }
    router
}
