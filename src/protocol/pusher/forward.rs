//! The authorization-forwarding mode (`BROADCAST_AUTH_FORWARD_URL`): the app's own
//! endpoint (Laravel's `/broadcasting/auth`) decides, rustaxum signs.
//!
//! Laravel's Redis broadcaster authorizes (its channel callbacks run) but answers without
//! a signature: `true` for a private channel, `{"channel_data": {"user_id", "user_info"}}`
//! for a presence one. Forwarded the client's request (its cookies, `Authorization`, CSRF
//! headers and form body), that answer becomes a Pusher signature here, so Echo works
//! unchanged but for its `authEndpoint`. An app that signs itself (Laravel's Pusher
//! broadcaster: `{"auth": ...}`) is passed through. Anything but a 2xx is refused with the
//! app's status; redirects are not followed (a login page is a refusal).

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::protocol::ApiError;

/// How long the app has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from the app.
const MAX_ANSWER: usize = 64 * 1024;

/// The request headers that carry who the user is to the app (session cookie, token,
/// CSRF token) and what the request is (its body's type, where it comes from).
const FORWARDED: [&str; 10] = [
    "cookie",
    "authorization",
    "x-csrf-token",
    "x-xsrf-token",
    "x-requested-with",
    "x-socket-id",
    "content-type",
    "accept",
    "origin",
    "referer",
];

/// The HTTP client of the forwarding mode: no redirects, a time limit.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .build()
        .unwrap_or_default()
}

/// What the app allowed.
#[derive(Debug, PartialEq)]
pub(crate) enum Allowed {
    /// A private channel (`true`).
    Channel,
    /// A presence channel, as this member (the `channel_data` text to sign).
    Member(String),
    /// The app signed it itself (`{"auth": ...}`): its answer, passed on.
    Signed(Bytes),
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow, default)]
    channel_data: Option<&'a RawValue>,
    #[serde(default)]
    auth: Option<serde_json::Value>,
}

/// Forwards the client's request (`headers`, `body`) to `url` and reads the answer.
pub(crate) async fn ask(
    http: &reqwest::Client,
    url: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Allowed, ApiError> {
    let mut request = http.post(url).body(body);
    for name in FORWARDED {
        for value in headers.get_all(name) {
            request = request.header(name, value.as_bytes());
        }
    }
    let unreachable = |e: reqwest::Error| {
        tracing::warn!(url = %shown(url), error = %e, "the authorization endpoint could not be reached");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "auth_unreachable",
            "the app's authorization endpoint could not be reached",
        )
    };
    let mut response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    if status.is_redirection() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the app answered {status} (a redirect, e.g. to its login page): not authorized"),
        ));
    }
    if !status.is_success() {
        let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::FORBIDDEN);
        return Err(ApiError::new(status, "forbidden", format!("the app refused: {status}")));
    }
    let mut answer = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        if answer.len() + chunk.len() > MAX_ANSWER {
            return Err(bad_answer("larger than 64 KiB"));
        }
        answer.extend_from_slice(&chunk);
    }
    read_answer(Bytes::from(answer))
}

/// The app's 2xx answer: `true`, `{"channel_data": ...}` (an object or its JSON text), or
/// its own `{"auth": ...}`.
pub(crate) fn read_answer(answer: Bytes) -> Result<Allowed, ApiError> {
    let text = std::str::from_utf8(&answer)
        .map_err(|_| bad_answer("not UTF-8"))?
        .trim();
    if text == "true" {
        return Ok(Allowed::Channel);
    }
    if text == "false" || text.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the app did not allow this channel",
        ));
    }
    let parsed: Answer<'_> = serde_json::from_str(text).map_err(|_| bad_answer("not true or a JSON object"))?;
    if parsed.auth.is_some() {
        return Ok(Allowed::Signed(answer));
    }
    let Some(data) = parsed.channel_data else {
        return Err(bad_answer("neither true, channel_data nor auth"));
    };
    // Laravel's Redis broadcaster sends the member as an object; kept as it wrote it.
    let member = match serde_json::from_str::<String>(data.get()) {
        Ok(encoded) => encoded,
        Err(_) => data.get().to_string(),
    };
    if crate::presence::Member::from_json(
        &serde_json::from_str(&member).map_err(|_| bad_answer("channel_data is not JSON"))?,
    )
    .is_none()
    {
        return Err(bad_answer("channel_data has no user_id"));
    }
    Ok(Allowed::Member(member))
}

fn bad_answer(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "auth_bad_answer",
        format!("the app's authorization endpoint answered 2xx with something unusable: {what}"),
    )
}

/// `url` for logs: scheme, host and path (no credentials, no query).
pub(crate) fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!("{}://{}{}", u.scheme(), u.host_str().unwrap_or_default(), u.path()),
        Err(_) => "(not a URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laravel_s_answers() {
        assert_eq!(read_answer(Bytes::from_static(b"true")).unwrap(), Allowed::Channel);
        let presence = br#"{"channel_data":{"user_id":1,"user_info":{"name":"Ann","id":1}}}"#;
        assert_eq!(
            read_answer(Bytes::from_static(presence)).unwrap(),
            Allowed::Member(r#"{"user_id":1,"user_info":{"name":"Ann","id":1}}"#.into()),
            "the member as Laravel wrote it (key order kept)"
        );
        let encoded = br#"{"channel_data":"{\"user_id\":\"7\"}"}"#;
        assert_eq!(
            read_answer(Bytes::from_static(encoded)).unwrap(),
            Allowed::Member(r#"{"user_id":"7"}"#.into())
        );
        let signed = br#"{"auth":"key:abc"}"#;
        assert!(matches!(
            read_answer(Bytes::from_static(signed)).unwrap(),
            Allowed::Signed(_)
        ));
        for refused in [
            &b"false"[..],
            b"",
            b"<html>",
            br#"{"channel_data":{"name":"x"}}"#,
            b"[1]",
        ] {
            assert!(read_answer(Bytes::copy_from_slice(refused)).is_err(), "{refused:?}");
        }
        assert_eq!(
            shown("https://u:p@app.test/broadcasting/auth?k=secret"),
            "https://app.test/broadcasting/auth"
        );
    }
}
