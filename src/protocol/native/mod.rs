//! The native protocol (the RustAxum broadcasting system): WebSocket on `/ws` and
//! `/ws/{channel}`, HTTP API under `/api/broadcast`.
//!
//! - [`codec`]: server and client frames, the refusal-code table.
//! - `ws`: the upgrade and the session handler.
//! - `api`: publish, stats, channels, users.

mod api;
pub mod codec;
mod ws;

use axum::routing::{get, post};
use axum::Router;

pub use api::{ChannelEntry, ChannelList, NodeStats, Published, QueueStats, Users, MAX_CHANNELS_PER_PUBLISH};

use super::AppState;
use crate::config::Config;

/// The native protocol's routes (WebSocket ones only when enabled).
pub(crate) fn routes(config: &Config) -> Router<AppState> {
    let mut router = Router::new()
        .route("/api/broadcast", post(api::publish))
        .route("/api/broadcast/stats", get(api::stats))
        .route("/api/broadcast/channels", get(api::channels))
        .route("/api/broadcast/channels/{name}/users", get(api::channel_users));
    if config.websocket.enabled {
        router = router
            .route("/ws", get(ws::upgrade_query))
            .route("/ws/{channel}", get(ws::upgrade_path));
    }
    router
}
