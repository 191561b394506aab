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

/// The client's address of a request: the TCP peer, or, when the peer is one of
/// `BROADCAST_TRUSTED_PROXIES`, who it says the client is (`X-Forwarded-For`, `X-Real-IP`).
/// What throttles and logs use. A router mounted without connection info sees `0.0.0.0`.
pub(crate) fn client_address(
    peer: Option<std::net::SocketAddr>,
    headers: &HeaderMap,
    st: &AppState,
) -> std::net::IpAddr {
    let peer = peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |p| p.ip());
    let proxies = &st.config.load().server.trusted_proxies;
    if proxies.is_empty() {
        return peer;
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded = (!forwarded.is_empty()).then(|| forwarded.join(","));
    let real_ip = headers.get("x-real-ip").and_then(|v| v.to_str().ok());
    proxies.client(peer, forwarded.as_deref(), real_ip)
}

/// The TCP peer of a request (`None` in a router mounted without connection info).
pub(crate) fn peer_of(parts: &Parts) -> Option<std::net::SocketAddr> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0)
}

/// Checks a secret a request presents (`given`) against the ones that open this door
/// (`accepted`, none: open), under the one wrong-token limit every secret shares (the API
/// token, the metrics token, the dashboard token): an address that spent its budget is
/// refused with 429 before its secret is even looked at, so the answer says nothing about
/// whether it was right. `what` names the secret for the 401.
pub(crate) fn check_secret(
    st: &AppState,
    peer: Option<std::net::SocketAddr>,
    headers: &HeaderMap,
    given: Option<&str>,
    accepted: &[&str],
    what: &str,
) -> Result<(), ApiError> {
    if accepted.is_empty() {
        return Ok(());
    }
    let address = client_address(peer, headers, st);
    if let Some(wait) = st.wrong_tokens.blocked(address) {
        return Err(too_many_wrong_tokens(wait));
    }
    let Some(given) = given else {
        return Err(ApiError::unauthorized(format!("missing {what}")));
    };
    if accepted.iter().any(|a| same_secret(given, a)) {
        return Ok(());
    }
    st.wrong_tokens.strike(address);
    tracing::debug!(%address, "wrong {what}");
    Err(ApiError::unauthorized(format!("invalid {what}")))
}

/// Proof that the request carries `Authorization: Bearer <BROADCAST_API_TOKEN>` (or that
/// no token is configured). Every endpoint that publishes or tells who is online takes it.
pub(crate) struct ApiToken;

impl FromRequestParts<AppState> for ApiToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let config = st.config.load();
        let accepted: Vec<&str> = config.server.api_token.as_deref().into_iter().collect();
        let what = "API token (Authorization: Bearer <BROADCAST_API_TOKEN>)";
        check_secret(
            st,
            peer_of(parts),
            &parts.headers,
            bearer(&parts.headers),
            &accepted,
            what,
        )?;
        Ok(Self)
    }
}

/// Wrong secrets tried per client address (per IPv6 /64), to slow down guessing: after
/// [`WRONG_TOKENS_ALLOWED`] wrong ones within [`WRONG_TOKENS_WINDOW`], every attempt from
/// that address (a right secret included, so answers leak nothing) is refused with 429
/// until the window since the first of them has passed. The address is the client's as
/// [`client_address`] finds it (behind a trusted proxy: the proxy's client). When the
/// table is full, addresses still within their budget make room first; blocked ones are
/// never forgotten early (a flood of new addresses then goes uncounted, not unblocked).
#[derive(Debug, Default)]
pub(crate) struct WrongTokens {
    by_address: std::sync::Mutex<HashMap<std::net::IpAddr, (u32, std::time::Instant)>>,
}

/// Wrong tokens an address may send per [`WRONG_TOKENS_WINDOW`].
pub(crate) const WRONG_TOKENS_ALLOWED: u32 = 10;
/// The window of [`WRONG_TOKENS_ALLOWED`].
pub(crate) const WRONG_TOKENS_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// Addresses remembered at most.
const WRONG_TOKENS_ADDRESSES: usize = 10_000;

impl WrongTokens {
    /// How long `address` must still wait, if it spent its budget.
    pub(crate) fn blocked(&self, address: std::net::IpAddr) -> Option<std::time::Duration> {
        let map = crate::sync::lock(&self.by_address);
        let (count, since) = map.get(&crate::net::limit_key(address))?;
        let left = WRONG_TOKENS_WINDOW.checked_sub(since.elapsed())?;
        (*count >= WRONG_TOKENS_ALLOWED && !left.is_zero()).then_some(left)
    }

    /// Counts a wrong token from `address`.
    pub(crate) fn strike(&self, address: std::net::IpAddr) {
        let key = crate::net::limit_key(address);
        let mut map = crate::sync::lock(&self.by_address);
        if map.len() >= WRONG_TOKENS_ADDRESSES && !map.contains_key(&key) {
            map.retain(|_, (_, since)| since.elapsed() < WRONG_TOKENS_WINDOW);
            if map.len() >= WRONG_TOKENS_ADDRESSES {
                let within_budget = map
                    .iter()
                    .filter(|(_, (count, _))| *count < WRONG_TOKENS_ALLOWED)
                    .min_by_key(|(_, (_, since))| *since)
                    .map(|(a, _)| *a);
                match within_budget {
                    Some(a) => {
                        map.remove(&a);
                    }
                    // Every remembered address is blocked: keep them all.
                    None => return,
                }
            }
        }
        let entry = map.entry(key).or_insert((0, std::time::Instant::now()));
        if entry.1.elapsed() >= WRONG_TOKENS_WINDOW {
            *entry = (0, std::time::Instant::now());
        }
        entry.0 = entry.0.saturating_add(1);
    }
}

/// The answer to an address that spent its budget of wrong tokens.
pub(crate) fn too_many_wrong_tokens(wait: std::time::Duration) -> ApiError {
    let secs = wait.as_secs().max(1);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
        format!("too many wrong tokens from this address; try again in {secs} s"),
    )
    .retry_after(secs)
}

#[cfg(test)]
mod wrong_token_tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_its_budget_and_others_are_not() {
        let strikes = WrongTokens::default();
        let a: std::net::IpAddr = [10, 0, 0, 1].into();
        let b: std::net::IpAddr = [10, 0, 0, 2].into();
        for _ in 0..WRONG_TOKENS_ALLOWED - 1 {
            strikes.strike(a);
        }
        assert_eq!(strikes.blocked(a), None);
        strikes.strike(a);
        assert!(strikes.blocked(a).is_some_and(|w| w <= WRONG_TOKENS_WINDOW));
        assert_eq!(strikes.blocked(b), None);
    }

    // Issue 34: 12,000 source addresses unblocked a blocked one early.
    #[test]
    fn a_full_table_never_forgets_a_blocked_address() {
        let strikes = WrongTokens::default();
        let blocked: std::net::IpAddr = [192, 0, 2, 1].into();
        for _ in 0..WRONG_TOKENS_ALLOWED {
            strikes.strike(blocked);
        }
        for i in 0..12_000u32 {
            strikes.strike(std::net::IpAddr::from((0x0a00_0000 + i).to_be_bytes()));
        }
        assert!(strikes.blocked(blocked).is_some(), "still blocked");
        // The same /64 is one address.
        let v6 = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        for i in 0..WRONG_TOKENS_ALLOWED {
            strikes.strike(v6(&format!("2001:db8:0:1::{i:x}")));
        }
        assert!(strikes.blocked(v6("2001:db8:0:1:ffff::1")).is_some());
    }
}
