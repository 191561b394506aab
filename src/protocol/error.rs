//! HTTP errors: every failure is JSON `{"error": code, "message": text}` with a fitting status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::broadcasting::BroadcastError;

/// The body of every HTTP error (for the API description; [`ApiError`] writes it).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// A stable machine code, e.g. `not_found`, `validation_failed`, `rate_limited`.
    pub error: String,
    /// What went wrong, for humans.
    pub message: String,
}

/// An HTTP API failure.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, a stable machine code and a message for humans.
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same error, telling the client to retry after `seconds` (`Retry-After`).
    pub(crate) fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 400 `invalid_json`.
    pub(crate) fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    /// 422 `validation_failed`.
    pub(crate) fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", message)
    }

    /// 401 `unauthorized`.
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404 `not_found`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 413 `payload_too_large`.
    pub(crate) fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        )
    }

    /// 503 `unavailable`.
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_client_error() {
            tracing::debug!(status = self.status.as_u16(), code = %self.code, reason = %self.message, "request refused");
        }
        let mut response = (self.status, Json(json!({"error": self.code, "message": self.message}))).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(seconds));
        }
        response
    }
}

impl From<crate::presence::PresenceError> for ApiError {
    fn from(e: crate::presence::PresenceError) -> Self {
        tracing::warn!(error = %e, "presence store unavailable");
        Self::unavailable(e.to_string())
    }
}

impl From<crate::backend::BackendError> for ApiError {
    fn from(e: crate::backend::BackendError) -> Self {
        // An open circuit was announced once when it opened and is summed up once a
        // minute: one line per refused request would drown the log in an outage.
        match e {
            crate::backend::BackendError::Refused(_) => {
                return Self::new(StatusCode::CONFLICT, "refused", e.to_string())
            }
            crate::backend::BackendError::CircuitOpen => tracing::debug!(error = %e, "cluster backend unavailable"),
            _ => tracing::warn!(error = %e, "cluster backend unavailable"),
        }
        Self::unavailable(e.to_string())
    }
}

impl From<BroadcastError> for ApiError {
    fn from(e: BroadcastError) -> Self {
        use BroadcastError as E;
        match &e {
            E::InvalidChannel { .. } | E::NoChannels | E::InvalidEvent(_) | E::Serialize(_) => {
                Self::unprocessable(e.to_string())
            }
            E::Backend(crate::backend::BackendError::Refused(_)) => {
                Self::new(StatusCode::CONFLICT, "refused", e.to_string())
            }
            E::Backend(crate::backend::BackendError::CircuitOpen) => {
                // Announced when the circuit opened, summed up once a minute.
                tracing::debug!(error = %e, "broadcast unavailable");
                Self::unavailable(e.to_string())
            }
            E::Unavailable { .. } | E::Backend(_) | E::Timeout { .. } | E::QueueFull(_) | E::QueueClosed => {
                tracing::warn!(error = %e, "broadcast unavailable");
                Self::unavailable(e.to_string())
            }
            E::ConnectionNotDefined(_)
            | E::DriverNotSupported(_)
            | E::NotInstalled
            | E::Config(_)
            | E::Failed { .. } => {
                // Internal detail: log it, tell the client only that it failed.
                tracing::error!(error = %e, "broadcast failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "broadcast_failed",
                    "the broadcast could not be delivered",
                )
            }
        }
    }
}
