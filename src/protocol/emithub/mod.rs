//! EmitHub managed channels over HTTP: the REST API under `/api/v1` and the WebSocket
//! `/api/v1/channels/{id}/ws`. The registry itself is [`crate::emithub`].
//!
//! - [`codec`]: the socket messages (`connected`, `denied`, `broadcast`,
//!   `client_message`, `error`).
//! - `ws`: the upgrade and the session handler.
//! - `api`: channels, states, broadcasts, history, backup, health.

mod api;
pub mod codec;
mod ws;

use axum::routing::{get, post, put};
use axum::Router;

pub use api::{BackupDone, ChannelList, ChannelView, Checks, Health, Ready};

use super::AppState;
use crate::config::Config;

/// EmitHub's routes (the WebSocket only when enabled).
pub(crate) fn routes(config: &Config) -> Router<AppState> {
    let mut router = Router::new()
        .route("/api/v1/health", get(api::health))
        .route("/api/v1/ready", get(api::ready))
        .route("/api/v1/backup", post(api::backup))
        .route("/api/v1/channels", post(api::create).get(api::list))
        .route(
            "/api/v1/channels/{id}",
            get(api::get).patch(api::update).delete(api::delete),
        )
        .route("/api/v1/channels/{id}/start", put(api::start))
        .route("/api/v1/channels/{id}/pause", put(api::pause))
        .route("/api/v1/channels/{id}/stop", put(api::stop))
        .route("/api/v1/channels/{id}/broadcast", post(api::broadcast))
        .route("/api/v1/channels/{id}/messages", get(api::messages));
    if config.websocket.enabled {
        router = router.route("/api/v1/channels/{id}/ws", get(ws::upgrade));
    }
    router
}
