//! Request guards that run before any handler: a `Content-Length` over the body limit is
//! answered 413 at once (before the body is read), and every request gets
//! `BROADCAST_HTTP_REQUEST_TIMEOUT` to send its body and be answered (408 otherwise), so a
//! client trickling its body cannot hold a connection and a task forever.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// The limits every HTTP request is held to.
pub(crate) async fn http_limits(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = st.config.max_payload_size;
    if declared.is_some_and(|n| n > limit as u64) {
        return closing(ApiError::too_large(limit).into_response());
    }
    let timeout = st.config.http_request_timeout;
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => closing(
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the request was not completed within {timeout:?}"),
            )
            .into_response(),
        ),
    }
}

/// Asks the client to close: the rest of its request was never read.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
