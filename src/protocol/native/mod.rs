//! The native protocol (the RustAxum broadcasting system): WebSocket on `/ws` and
//! `/ws/{channel}`, HTTP API under `/api/broadcast`.
//!
//! - [`codec`]: server and client frames, the refusal-code table.
//! - `ws`: the upgrade and the session handler.
//! - `api`: publish, stats, channels, users.

pub(crate) mod api;
pub(crate) mod codec;
mod ws;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::config::Config;

/// The native protocol's routes (WebSocket ones only when enabled).
pub(crate) fn routes(config: &Config) -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::new()
        .routes(routes!(api::publish))
        .routes(routes!(api::stats))
        .routes(routes!(api::nodes))
        .routes(routes!(api::channels))
        .routes(routes!(api::channel_users))
        .routes(routes!(api::channel_history));
    if config.websocket.enabled {
        router = router
            .routes(routes!(ws::upgrade_query))
            .routes(routes!(ws::upgrade_path));
    }
    router
}
