//! The typed-frame protocol of the real-time communication service: the WebSocket
//! (`/rtc/ws` here, `/ws` on the service's own port) and `GET /info`. The service's
//! shared state (rooms, rate limits, who is online) is [`crate::services::rtc`].
//!
//! - [`codec`]: the frames.
//! - `ws`: the upgrade and the session handler.

pub(crate) mod codec;
mod ws;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::config::Config;

/// The typed-frame routes on the main ports: `/rtc/ws` (when WebSockets are enabled) and
/// `/info`.
pub(crate) fn routes(config: &Config) -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::new().routes(routes!(info));
    if config.websocket.enabled {
        router = router.routes(routes!(ws::upgrade));
    }
    router
}

/// The service's own port's protocol routes: `/ws` speaks typed frames, beside `/info`
/// (the router adds `/health`, `/ready` and `/metrics`).
pub(crate) fn service_routes() -> Router<AppState> {
    Router::new().route("/ws", get(ws::upgrade)).route("/info", get(info))
}

/// One protocol and where it answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ProtocolInfo {
    /// Its name.
    pub name: &'static str,
    /// Its endpoints (paths on the main ports, or `:port/path`).
    pub endpoints: Vec<String>,
}

/// `GET /info`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Info {
    /// `rustaxum`.
    pub name: &'static str,
    /// The server's version.
    pub version: &'static str,
    /// This node's id (`local` when not clustered).
    pub node_id: String,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// The default broadcast driver.
    pub driver: String,
    /// Whether this node is part of a cluster.
    pub clustered: bool,
    /// The protocols this server speaks.
    pub protocols: Vec<ProtocolInfo>,
    /// The ports it listens on (as configured).
    #[schema(value_type = Object)]
    pub ports: serde_json::Value,
    /// Limits clients are held to.
    #[schema(value_type = Object)]
    pub limits: serde_json::Value,
}

/// Version, protocols and their endpoints, ports, limits, driver, node id and uptime (no
/// secrets).
#[utoipa::path(get, path = "/info", tag = "operations", responses((status = 200, body = Info)))]
pub(crate) async fn info(State(st): State<AppState>) -> Json<Info> {
    let config = st.config.load();
    let rtc = st.rtc.config();
    let ws = config.websocket.enabled;
    let mut protocols = vec![
        ProtocolInfo {
            name: "native",
            endpoints: [
                ws.then_some("/ws"),
                ws.then_some("/ws/{channel}"),
                Some("/api/broadcast"),
            ]
            .into_iter()
            .flatten()
            .map(String::from)
            .collect(),
        },
        ProtocolInfo {
            name: "pusher",
            endpoints: [
                ws.then_some("/app/{key}"),
                Some("/apps/{app_id}/events"),
                Some("/broadcasting/auth"),
            ]
            .into_iter()
            .flatten()
            .map(String::from)
            .collect(),
        },
        ProtocolInfo {
            name: "emithub",
            endpoints: [Some("/api/v1/channels"), ws.then_some("/api/v1/channels/{id}/ws")]
                .into_iter()
                .flatten()
                .map(String::from)
                .collect(),
        },
    ];
    let mut typed = Vec::new();
    if ws {
        typed.push("/rtc/ws".to_string());
        if let Some(port) = rtc.port {
            typed.push(format!(":{port}/ws"));
        }
    }
    protocols.push(ProtocolInfo {
        name: "typed-frames",
        endpoints: typed,
    });
    let limits = &rtc.limits;
    Json(Info {
        name: "rustaxum",
        version: env!("CARGO_PKG_VERSION"),
        node_id: st
            .cluster
            .as_ref()
            .map_or_else(|| "local".to_string(), |b| b.link().node_id().to_string()),
        uptime_seconds: st.node.hub().uptime().as_secs(),
        driver: st.manager.default_driver_name(),
        clustered: st.cluster.is_some(),
        protocols,
        ports: serde_json::json!({
            "websocket": config.server.port,
            "app": config.server.app_port,
            "rtc": rtc.port,
        }),
        limits: serde_json::json!({
            "max_connections": config.websocket.max_connections,
            "max_connections_per_user": config.websocket.max_connections_per_user,
            "max_channels_per_connection": config.websocket.max_channels_per_connection,
            "max_message_size": config.websocket.max_message_size,
            "max_payload_size": config.server.max_payload_size,
            "client_events_per_second": config.websocket.client_events_per_second,
            "heartbeat_interval_seconds": config.websocket.ping_interval.as_secs(),
            "rate_limits": {
                "enabled": limits.enabled,
                "per_connection": limits.per_connection,
                "per_user": limits.per_user,
                "per_topic": limits.per_topic,
                "global": limits.global,
            },
            "room_grace_seconds": rtc.room_grace.as_secs(),
        }),
    })
}
