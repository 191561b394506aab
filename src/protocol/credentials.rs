//! Finding and checking credentials.
//!
//! A user's JWT, on a WebSocket upgrade or an auth request, is accepted, in this order,
//! from `?auth_token=`, `?token=`, `Authorization: Bearer <jwt>`, and the subprotocol
//! `access_token.<jwt>` (for browsers, which cannot set headers on a WebSocket). A
//! subprotocol token is echoed back as the selected subprotocol, as browsers require.
//!
//! The operator's `BROADCAST_API_TOKEN` guards the HTTP API through [`ApiToken`].

use std::collections::HashMap;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::auth::{Identity, TokenError};

const SUBPROTOCOL_PREFIX: &str = "access_token.";

/// A token found on a request, and the subprotocol that carried it, if any.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    pub(crate) token: Option<String>,
    pub(crate) subprotocol: Option<String>,
}

impl Credentials {
    pub(crate) fn from_request(headers: &HeaderMap, query: &HashMap<String, String>) -> Self {
        let from_query = query
            .get("auth_token")
            .or_else(|| query.get("token"))
            .filter(|t| !t.is_empty())
            .cloned();
        if let Some(token) = from_query {
            return Self {
                token: Some(token),
                subprotocol: None,
            };
        }
        let bearer = bearer(headers).map(str::trim).filter(|t| !t.is_empty());
        if let Some(token) = bearer {
            return Self {
                token: Some(token.to_string()),
                subprotocol: None,
            };
        }
        let offered = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .find(|p| p.starts_with(SUBPROTOCOL_PREFIX));
        match offered {
            Some(p) => Self {
                token: Some(p[SUBPROTOCOL_PREFIX.len()..].to_string()),
                subprotocol: Some(p.to_string()),
            },
            None => Self::default(),
        }
    }

    /// Verifies the token, if any. A token that does not verify is a 401, never a
    /// silent downgrade to an anonymous connection. On a server with no JWT key there is
    /// nothing to verify it with: the token is ignored (logged once) and the request is
    /// anonymous, so public channels work and private ones answer 401.
    pub(crate) fn authenticate(&self, st: &AppState) -> Result<Option<Identity>, ApiError> {
        let Some(token) = &self.token else {
            return Ok(None);
        };
        let Some(verifier) = st.node.verifier() else {
            static LOGGED: std::sync::Once = std::sync::Once::new();
            LOGGED.call_once(|| {
                tracing::warn!(
                    "a client sent a token but no JWT key is configured (JWT_SECRET or JWT_PUBLIC_KEY_FILE): \
                     tokens are ignored and such clients are anonymous"
                )
            });
            return Ok(None);
        };
        verifier.verify(token).map(Some).map_err(|e| token_error(&e))
    }
}

/// A token failure as an HTTP 401.
pub(crate) fn token_error(e: &TokenError) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
}

/// The token of `Authorization: Bearer <token>`, if the request has one.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Whether `given` is the secret `expected`, compared in constant time.
pub(crate) fn same_secret(given: &str, expected: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// Proof that the request carries `Authorization: Bearer <BROADCAST_API_TOKEN>` (or that
/// no token is configured). Every endpoint that publishes or tells who is online takes it.
pub(crate) struct ApiToken;

impl FromRequestParts<AppState> for ApiToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let config = st.config.load();
        let Some(expected) = config.server.api_token.as_deref() else {
            return Ok(Self);
        };
        let given = bearer(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <BROADCAST_API_TOKEN>"))?;
        if same_secret(given, expected) {
            Ok(Self)
        } else {
            Err(ApiError::unauthorized("invalid API token"))
        }
    }
}
