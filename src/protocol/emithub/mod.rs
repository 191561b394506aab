//! EmitHub managed channels over HTTP: the REST API under `/api/v1` and the WebSocket
//! `/api/v1/channels/{id}/ws`. The registry itself is [`crate::services::emithub`].
//!
//! - [`codec`]: the socket messages (`connected`, `denied`, `broadcast`,
//!   `client_message`, `error`).
//! - `ws`: the upgrade and the session handler.
//! - `api`: channels, states, broadcasts, history, backup, health.

mod api;
pub(crate) mod codec;
mod ws;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::config::Config;

/// EmitHub's routes (the WebSocket only when enabled).
pub(crate) fn routes(config: &Config) -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::new()
        .routes(routes!(api::health))
        .routes(routes!(api::ready))
        .routes(routes!(api::backup))
        .routes(routes!(api::create, api::list))
        .routes(routes!(api::get, api::update, api::delete))
        .routes(routes!(api::start))
        .routes(routes!(api::pause))
        .routes(routes!(api::stop))
        .routes(routes!(api::broadcast))
        .routes(routes!(api::messages));
    if config.websocket.enabled {
        router = router.routes(routes!(ws::upgrade));
    }
    router
}
