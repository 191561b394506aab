//! The WebSocket handshake of every protocol route (RFC 6455 §4.2), with
//! permessage-deflate negotiated in it (RFC 7692).
//!
//! axum's `WebSocketUpgrade` hides the connection under a WebSocket that can neither send
//! a compressed frame nor read one; this extractor does the same checks and the same
//! `101` answer, then builds the socket on a stream that inflates what clients compress.

use std::future::Future;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Version};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role as WsRole, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::{Deflate, WebSocket};
use crate::websocket::{deflate, Compression, DeflateStats, Holding, Inflating, Role};

/// A request that asked to become a WebSocket, checked; [`on_upgrade`](Self::on_upgrade)
/// answers it.
pub(crate) struct WsUpgrade {
    key: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
    offer: Option<deflate::Agreed>,
    /// The subprotocols the client asked for (`Sec-WebSocket-Protocol`).
    requested: Vec<String>,
    /// The one the server answers with.
    protocol: Option<HeaderValue>,
    config: WebSocketConfig,
    deflate: Option<Deflate>,
    /// How long an incomplete frame or message may stall (`BROADCAST_FRAME_TIMEOUT`).
    frame_timeout: std::time::Duration,
}

/// Why a request is not a WebSocket upgrade (answered 426 `upgrade_required`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotAnUpgrade {
    #[error("the request method must be GET (HTTP/1.1)")]
    MethodNotGet,
    #[error("the Connection header does not include 'upgrade'")]
    Connection,
    #[error("the Upgrade header is not 'websocket'")]
    Upgrade,
    #[error("the Sec-WebSocket-Version header is not 13")]
    Version,
    #[error("the Sec-WebSocket-Key header must be given once, the base64 of 16 bytes")]
    Key,
    #[error("the connection cannot be upgraded (no upgrade state)")]
    NotUpgradable,
}

impl axum::response::IntoResponse for NotAnUpgrade {
    fn into_response(self) -> Response {
        // A handshake that is one but is malformed is a 400 (RFC 6455 §4.2.2); a request
        // that is no handshake at all is told to upgrade (426).
        if let Self::Key = self {
            let message = format!("invalid WebSocket handshake: {self}");
            return crate::protocol::ApiError::new(StatusCode::BAD_REQUEST, "bad_handshake", message).into_response();
        }
        let message = format!("a WebSocket upgrade is required: {self}");
        crate::protocol::ApiError::new(StatusCode::UPGRADE_REQUIRED, "upgrade_required", message).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = NotAnUpgrade;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, NotAnUpgrade> {
        if parts.version > Version::HTTP_11 || parts.method != Method::GET {
            return Err(NotAnUpgrade::MethodNotGet);
        }
        if !has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(NotAnUpgrade::Connection);
        }
        if !has_token(&parts.headers, header::UPGRADE, "websocket") {
            return Err(NotAnUpgrade::Upgrade);
        }
        if parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes)
            != Some(b"13")
        {
            return Err(NotAnUpgrade::Version);
        }
        let key = valid_key(&parts.headers).ok_or(NotAnUpgrade::Key)?;
        let on_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or(NotAnUpgrade::NotUpgradable)?;
        let offer = deflate::negotiate(
            parts
                .headers
                .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        let requested = parts
            .headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        Ok(Self {
            key,
            on_upgrade,
            offer,
            requested,
            protocol: None,
            config: WebSocketConfig::default(),
            deflate: None,
            frame_timeout: std::time::Duration::from_secs(10),
        })
    }
}

/// Whether header `name` lists `token` (comma-separated, any case).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl WsUpgrade {
    /// The socket's buffers, message limit and frame timeout.
    pub(crate) fn limits(
        mut self,
        read_buffer: usize,
        write_buffer: usize,
        max_message: usize,
        frame_timeout: std::time::Duration,
    ) -> Self {
        self.frame_timeout = frame_timeout;
        self.config = self
            .config
            .read_buffer_size(read_buffer)
            .write_buffer_size(write_buffer)
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        self
    }

    /// Accepts the client's permessage-deflate offer, if it made one the server can take,
    /// unless `compression` is off.
    pub(crate) fn compression(mut self, compression: Compression, stats: &Arc<DeflateStats>) -> Self {
        self.deflate = match (compression, self.offer) {
            (Compression::Above(threshold), Some(agreed)) => Some(Deflate {
                window_bits: agreed.window_bits,
                threshold,
                stats: stats.clone(),
            }),
            _ => None,
        };
        self
    }

    /// Answers with the first of `protocols` the client asked for, if any.
    pub(crate) fn protocols<I: IntoIterator<Item = P>, P: AsRef<str>>(mut self, protocols: I) -> Self {
        self.protocol = protocols
            .into_iter()
            .find(|p| self.requested.iter().any(|r| r == p.as_ref()))
            .and_then(|p| HeaderValue::from_str(p.as_ref()).ok());
        self
    }

    /// Answers `101 Switching Protocols` and, once the connection is switched, gives the
    /// socket to `callback` (in a task of its own).
    pub(crate) fn on_upgrade<C, F>(self, callback: C) -> Response
    where
        C: FnOnce(WebSocket) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let Self {
            key,
            on_upgrade,
            offer,
            protocol,
            config,
            deflate,
            frame_timeout,
            ..
        } = self;
        let limit = config.max_message_size.unwrap_or(usize::MAX);
        let agreed = offer.filter(|_| deflate.is_some());
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => TokioIo::new(upgraded),
                Err(e) => {
                    tracing::debug!(error = %e, "a WebSocket upgrade failed");
                    return;
                }
            };
            // Frames reach tungstenite whole (it reserves what a header announces).
            let held = Holding::new(upgraded, limit, frame_timeout);
            let io = match deflate {
                Some(_) => Inflating::new(held, Role::Server, limit),
                None => Inflating::plain(held),
            };
            let stream = WebSocketStream::from_raw_socket(io, WsRole::Server, Some(config)).await;
            callback(WebSocket { stream, deflate }).await;
        });
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(protocol) = protocol {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        if let Some(agreed) = agreed {
            if let Ok(answer) = HeaderValue::from_str(&agreed.response()) {
                headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, answer);
            }
        }
        response
    }
}

/// The `Sec-WebSocket-Key`: exactly one, the base64 of 16 bytes (RFC 6455 §4.1, §4.2.1).
fn valid_key(headers: &HeaderMap) -> Option<HeaderValue> {
    use base64::Engine;
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = keys.next()?;
    if keys.next().is_some() || key.len() != 24 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(key.as_bytes()).ok()?;
    (decoded.len() == 16).then(|| key.clone())
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn a_key_is_one_header_of_sixteen_bytes_in_base64() {
        let with = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::SEC_WEBSOCKET_KEY, HeaderValue::from_str(v).unwrap());
            }
            valid_key(&h).is_some()
        };
        assert!(with(&["dGhlIHNhbXBsZSBub25jZQ=="]));
        for bad in [
            &[][..],
            &[""],
            &["abc"],
            &["dGhlIHNhbXBsZSBub25jZQ"],
            &["dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ=="],
            &["!!!!!!!!!!!!!!!!!!!!!!=="],
            &["dGhlIHNhbXBsZSBub25jZSE="],
        ] {
            assert!(!with(bad), "{bad:?}");
        }
        assert!(!with(&[&"A".repeat(4096)]));
    }
}
