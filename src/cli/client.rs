//! A small client for the server's HTTP API, used by the CLI and the benchmark.

use std::time::Duration;

use serde_json::Value;

/// What can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server could not be reached at all.
    #[error("cannot reach rustaxum at {url}: {reason} (is the server running? use --server URL)")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// The network error.
        reason: String,
    },
    /// The server answered with an error.
    #[error("server answered {status}: {error}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The error code.
        error: String,
        /// The server's message.
        message: String,
    },
    /// A command-line value was unusable.
    #[error("{0}")]
    Usage(String),
    /// The benchmark failed.
    #[error("benchmark: {0}")]
    Bench(String),
    /// A local file or the chart could not be read or written.
    #[error("{0}")]
    Other(String),
}

/// A client bound to one server.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`), sending `token` as Bearer if given.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, CliError> {
        let base = server_url(base)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot build HTTP client: {e}")))?;
        Ok(Self { base, token, http })
    }

    /// The same client trusting the CA certificates of the PEM file `ca` too (a private or
    /// test CA of a server with `BROADCAST_TLS_CERT`).
    pub fn with_ca(&self, ca: &std::path::Path) -> Result<Self, CliError> {
        let pem = std::fs::read(ca).map_err(|e| CliError::Usage(format!("--ca {}: {e}", ca.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| CliError::Usage(format!("--ca {}: not a PEM certificate: {e}", ca.display())))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .add_root_certificate(cert)
            .build()
            .map_err(|e| CliError::Usage(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            base: self.base.clone(),
            token: self.token.clone(),
            http,
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The WebSocket base URL (`ws://` for `http://`).
    pub fn ws_base(&self) -> String {
        self.base.replacen("http", "ws", 1)
    }

    /// `GET path`, returning the JSON body.
    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.http.get(self.url(path))).await
    }

    /// Fails with [`CliError::Unreachable`] unless the server answers `/health`; commands
    /// call it before printing anything.
    pub async fn check(&self) -> Result<(), CliError> {
        self.get("/health").await.map(|_| ())
    }

    /// `POST path` with a JSON body, returning the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    /// Publishes through `POST /api/broadcast`; returns the local recipients.
    pub async fn publish(&self, channel: &str, event: &str, data: Value) -> Result<u64, CliError> {
        let body = serde_json::json!({"channel": channel, "event": event, "data": data});
        let answer = self.post("/api/broadcast", &body).await?;
        Ok(answer["recipients"].as_u64().unwrap_or(0))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, mut req: reqwest::RequestBuilder) -> Result<Value, CliError> {
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| CliError::Unreachable {
            url: self.base.clone(),
            reason: root_cause(&e),
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            Err(CliError::Server {
                status: status.as_u16(),
                error: body["error"].as_str().unwrap_or("error").to_string(),
                message: body["message"].as_str().unwrap_or("").to_string(),
            })
        }
    }
}

/// `--server` as a base URL: `http(s)://host:port`, `ws(s)://` (taken as http(s)), or a
/// bare `host:port` (http).
pub fn server_url(given: &str) -> Result<String, CliError> {
    let trimmed = given.trim().trim_end_matches('/');
    let url = if let Some(rest) = trimmed.strip_prefix("ws://") {
        format!("http://{rest}")
    } else if let Some(rest) = trimmed.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
        trimmed.to_string()
    } else if !trimmed.is_empty() && !trimmed.contains("://") {
        format!("http://{trimmed}")
    } else {
        return Err(CliError::Usage(format!(
            "--server must be host:port or an http(s) URL, got {given:?}"
        )));
    };
    Ok(url)
}

/// `n` and the noun, singular for one: `1 connection`, `2 connections`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_from_what_operators_type() {
        for (given, url) in [
            ("127.0.0.1:3000", "http://127.0.0.1:3000"),
            ("localhost:8080/", "http://localhost:8080"),
            ("http://h:1", "http://h:1"),
            ("https://h", "https://h"),
            ("ws://h:8080", "http://h:8080"),
            ("wss://h", "https://h"),
        ] {
            assert_eq!(server_url(given).unwrap(), url, "{given}");
        }
        assert!(server_url("ftp://h").is_err());
        assert!(server_url("").is_err());
        assert_eq!(count(1, "connection", "connections"), "1 connection");
        assert_eq!(count(2, "connection", "connections"), "2 connections");
    }
}
