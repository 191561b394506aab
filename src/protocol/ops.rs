//! Operations endpoints: `/`, `/health`, `/ready`, `/metrics`, and the JSON 404/405.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, AppState};
use crate::cluster::redis::BrokerStatus;
use crate::cluster::Broker;

/// The operations routes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(index))
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(super::metrics::metrics))
}

/// `GET /`
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Index {
    /// `rustaxum`.
    pub name: &'static str,
    /// The crate version.
    pub version: &'static str,
}

/// `GET /health` and `GET /ready`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Status {
    /// `ok`, `ready`, `partial` (a Redis Cluster with some shards down: their channels
    /// are not delivered between nodes; the others are), `degraded`, `draining` (stopping
    /// soon: still serving, take it out of rotation) or `shutting_down`.
    pub status: &'static str,
    /// The default broadcast driver (`/ready`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The Redis broker's health (`/ready`, clustered nodes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<BrokerStatus>,
}

/// The server's name and version.
#[utoipa::path(get, path = "/", tag = "operations", responses((status = 200, body = Index)))]
pub(crate) async fn index() -> Json<Index> {
    Json(Index {
        name: "rustaxum",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, body = Status)))]
pub(crate) async fn health() -> Json<Status> {
    Json(Status {
        status: "ok",
        driver: None,
        redis: None,
    })
}

/// Readiness: 200 while serving (`partial` while some Redis Cluster shards are down); 503
/// while draining, shutting down or while the cluster link is degraded.
#[utoipa::path(get, path = "/ready", tag = "operations", responses((status = 200, body = Status, description = "serving"), (status = 503, body = Status, description = "shutting down, or the cluster is degraded")))]
pub(crate) async fn ready(State(st): State<AppState>) -> (StatusCode, Json<Status>) {
    let hub = st.node.hub();
    if hub.is_draining() {
        let status = Status {
            status: if hub.is_shutting_down() {
                "shutting_down"
            } else {
                "draining"
            },
            driver: None,
            redis: None,
        };
        return (StatusCode::SERVICE_UNAVAILABLE, Json(status));
    }
    let driver = Some(st.manager.default_driver_name());
    let redis = st.cluster.as_ref().map(|b| b.status());
    let (code, status) = match (&st.cluster, &redis) {
        (Some(broker), _) if !broker.healthy() => (StatusCode::SERVICE_UNAVAILABLE, "degraded"),
        (_, Some(redis)) if !redis.shards_down.is_empty() => (StatusCode::OK, "partial"),
        _ => (StatusCode::OK, "ready"),
    };
    (code, Json(Status { status, driver, redis }))
}

/// Fallback: JSON 404.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

/// Fallback: JSON 405.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}
