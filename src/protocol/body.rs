//! Request bodies read the same way by every protocol: over the body limit is 413, a
//! body that could not be read is 400, JSON that does not parse is 400 `invalid_json`,
//! JSON of the wrong shape is 422 `validation_failed`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;

use super::{ApiError, AppState};

/// The body's bytes.
pub(crate) fn bytes(st: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(st.config.load().server.max_payload_size)
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text())
        }
    })
}

/// The body as JSON of type `T` (whatever the request's `Content-Type`).
pub(crate) fn json<T: serde::de::DeserializeOwned>(
    st: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = bytes(st, body)?;
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_json(format!("body is not valid JSON: {e}")))?;
    serde_json::from_value(value).map_err(|e| ApiError::unprocessable(e.to_string()))
}
