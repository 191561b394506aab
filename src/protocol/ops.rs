//! Operations endpoints: `/`, `/health`, `/ready`, `/metrics`, and the JSON 404/405.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::{ApiError, AppState};
use crate::cluster::redis::BrokerStatus;
use crate::cluster::Broker;

/// The operations routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(super::metrics::metrics))
}

/// `GET /`
#[derive(Debug, Serialize)]
pub struct Index {
    /// `rustaxum`.
    pub name: &'static str,
    /// The crate version.
    pub version: &'static str,
}

/// `GET /health` and `GET /ready`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// `ok`, `ready`, `degraded` or `shutting_down`.
    pub status: &'static str,
    /// The default broadcast driver (`/ready`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The Redis broker's health (`/ready`, clustered nodes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<BrokerStatus>,
}

/// `GET /`: name and version.
pub(crate) async fn index() -> Json<Index> {
    Json(Index {
        name: "rustaxum",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// `GET /health`: the process is up.
pub(crate) async fn health() -> Json<Status> {
    Json(Status {
        status: "ok",
        driver: None,
        redis: None,
    })
}

/// `GET /ready`: 200 while serving; 503 while shutting down, or `degraded` while a
/// clustered node cannot reach Redis (it still serves its own sockets).
pub(crate) async fn ready(State(st): State<AppState>) -> (StatusCode, Json<Status>) {
    if st.node.hub().is_shutting_down() {
        let status = Status {
            status: "shutting_down",
            driver: None,
            redis: None,
        };
        return (StatusCode::SERVICE_UNAVAILABLE, Json(status));
    }
    let driver = Some(st.manager.default_driver_name());
    let (code, status) = match &st.cluster {
        Some(broker) if !broker.healthy() => (StatusCode::SERVICE_UNAVAILABLE, "degraded"),
        _ => (StatusCode::OK, "ready"),
    };
    let redis = st.cluster.as_ref().map(|b| b.status());
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
