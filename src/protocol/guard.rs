//! Request guards that run before any handler:
//!
//! - a `Content-Length` over the body limit is answered 413 at once (before the body is
//!   read), and every request gets `BROADCAST_HTTP_REQUEST_TIMEOUT` to send its body and be
//!   answered (408 otherwise), so a client trickling its body cannot hold a connection and
//!   a task forever;
//! - a browser write from another origin (a state-changing method whose `Origin` is
//!   neither this server nor one of `CORS_ALLOWED_ORIGINS`) is refused with 403 before it
//!   has any effect, so a web page cannot publish into a server on its visitor's machine.
//!   Clients that are not browsers send no `Origin` and are not affected.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
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
    let limit = st.config.load().server.max_payload_size;
    if declared.is_some_and(|n| n > limit as u64) {
        return closing(ApiError::too_large(limit).into_response());
    }
    let timeout = st.config.load().server.http_request_timeout;
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

/// Counts the answers that refused (401, 403, 429) or failed (5xx) for the node's card
/// and `/metrics` (WebSocket upgrades are answers too, before they upgrade).
/// Probes are left out: a `/ready` that answers 503 while the node starts or drains is
/// the probe working, not a failure.
pub(crate) async fn count_answers(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let probe = matches!(
        req.uri().path(),
        "/health" | "/ready" | "/api/v1/health" | "/api/v1/ready"
    );
    let response = next.run(req).await;
    if !probe {
        st.cluster_view.answers.count(response.status());
    }
    response
}

/// Asks the client to close: the rest of its request was never read.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Refuses state-changing requests from browser pages of foreign origins.
pub(crate) async fn same_origin_writes(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let reads = [Method::GET, Method::HEAD, Method::OPTIONS];
    if !reads.contains(req.method()) && !origin_allowed(req.headers(), &st.config.load().server.cors_allowed_origins) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "cross-origin writes are refused; add the page's origin to CORS_ALLOWED_ORIGINS",
        )
        .into_response();
    }
    next.run(req).await
}

/// Whether a request's `Origin` (if any) may write: none (not a browser), this server
/// itself (the origin's host and port are the request's `Host`), or a configured origin.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let authority = origin.split_once("://").map(|(_, rest)| rest);
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn origins_that_may_write() {
        let none: Vec<String> = vec![];
        let app = vec!["https://app.example".to_string()];
        let any = vec!["*".to_string()];
        type Case<'a> = (&'a [(&'static str, &'a str)], &'a Vec<String>, bool);
        let cases: &[Case] = &[
            (&[], &none, true),
            (&[("host", "h:1")], &none, true),
            (&[("origin", "http://h:1"), ("host", "h:1")], &none, true),
            (&[("origin", "http://evil:1"), ("host", "h:1")], &none, false),
            (&[("origin", "http://h:2"), ("host", "h:1")], &none, false),
            (&[("origin", "null"), ("host", "h:1")], &none, false),
            (&[("origin", "http://h:1")], &none, false),
            (&[("origin", "https://app.example"), ("host", "h:1")], &app, true),
            (&[("origin", "https://other.example"), ("host", "h:1")], &app, false),
            (&[("origin", "https://other.example"), ("host", "h:1")], &any, true),
        ];
        for (pairs, allowed, expected) in cases {
            assert_eq!(
                origin_allowed(&headers(pairs), allowed),
                *expected,
                "{pairs:?} {allowed:?}"
            );
        }
    }
}
