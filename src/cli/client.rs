//! A small client for the server's HTTP API, used by the CLI and the benchmark.

use std::time::Duration;

use serde_json::Value;

/// What can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server could not be reached at all.
    #[error("cannot reach rustaxum at {url}: {reason} ({hint})")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// The network error.
        reason: String,
        /// What to do about it (a TLS failure says which option helps).
        hint: &'static str,
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
    /// The server answered, but not with what rustaxum answers there: another program on
    /// that port, a proxy's error page, a broken or hostile server.
    #[error("{url}{path} did not answer as rustaxum does: {what} (is --server a rustaxum server?)")]
    BadAnswer {
        /// The server.
        url: String,
        /// The request's path.
        path: String,
        /// What came back instead (control characters escaped, cut short).
        what: String,
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
    trust: super::tls::Trust,
}

impl ApiClient {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`), sending `token` as Bearer if
    /// given, trusting `trust`'s certificates over https.
    pub fn new(base: &str, token: Option<String>, trust: &super::tls::Trust) -> Result<Self, CliError> {
        let base = server_url(base)?;
        let http = trust
            .http()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            base,
            token,
            http,
            trust: trust.clone(),
        })
    }

    /// The same trust for another server (a cluster's other nodes).
    pub fn for_server(&self, base: &str) -> Result<Self, CliError> {
        Self::new(base, self.token.clone(), &self.trust)
    }

    /// The connector for this server's `wss://` URLs (`None` over plain `ws://`).
    pub fn connector(&self) -> Option<tokio_tungstenite::Connector> {
        self.base.starts_with("https://").then(|| self.trust.connector())
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
        self.send(path, self.http.get(self.url(path))).await
    }

    /// `GET path`, whose answer must have `shape` (see [`Shape`]): what a command reads
    /// from it is there, with the type it reads it as.
    pub async fn get_shaped(&self, path: &str, shape: &[Shape<'_>]) -> Result<Value, CliError> {
        let body = self.get(path).await?;
        for (at, kind) in shape {
            if let Some(problem) = check(&body, at, *kind) {
                return Err(self.bad_answer(path, problem));
            }
        }
        Ok(body)
    }

    fn bad_answer(&self, path: &str, what: String) -> CliError {
        CliError::BadAnswer {
            url: self.base.clone(),
            path: path.split('?').next().unwrap_or(path).to_string(),
            what,
        }
    }

    /// Fails with [`CliError::Unreachable`] unless the server answers `/health`; commands
    /// call it before printing anything.
    pub async fn check(&self) -> Result<(), CliError> {
        self.get("/health").await.map(|_| ())
    }

    /// `POST path` with a JSON body, returning the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.send(path, self.http.post(self.url(path)).json(body)).await
    }

    /// Publishes through `POST /api/broadcast`; returns the local recipients.
    pub async fn publish(&self, channel: &str, event: &str, data: Value) -> Result<u64, CliError> {
        let body = serde_json::json!({"channel": channel, "event": event, "data": data});
        let path = "/api/broadcast";
        let answer = self.post(path, &body).await?;
        match answer["recipients"].as_u64() {
            Some(n) => Ok(n),
            None => Err(self.bad_answer(
                path,
                format!("no recipients count in {}", escaped(&truncate(&answer.to_string()))),
            )),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, path: &str, mut req: reqwest::RequestBuilder) -> Result<Value, CliError> {
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let unreachable = |e: reqwest::Error| {
            let reason = root_cause(&e);
            CliError::Unreachable {
                url: self.base.clone(),
                hint: super::tls::hint(&reason),
                reason,
            }
        };
        let mut resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        // Read at most MAX_ANSWER bytes: an endless answer is cut off, not held in memory.
        let mut raw = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if raw.len() + chunk.len() > MAX_ANSWER {
                return Err(self.bad_answer(
                    path,
                    format!("an answer larger than {} MiB (cut off)", MAX_ANSWER >> 20),
                ));
            }
            raw.extend_from_slice(&chunk);
        }
        let body = match serde_json::from_slice::<Value>(&raw) {
            Ok(body) => printable(body),
            Err(_) if status.is_success() => {
                let text = String::from_utf8_lossy(&raw);
                let what = match text.trim() {
                    "" => "an empty answer".to_string(),
                    t => format!("not JSON: {}", escaped(&t.chars().take(120).collect::<String>())),
                };
                return Err(self.bad_answer(path, format!("{what} (HTTP {status})")));
            }
            Err(_) => Value::Null,
        };
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

/// The largest answer read from a server.
const MAX_ANSWER: usize = 16 << 20;

/// What a field of an answer must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Json {
    /// A number (a whole one: every figure the commands read is).
    Count,
    /// A string.
    Text,
    /// An object.
    Object,
    /// An array.
    Array,
    /// A count, or absent/null.
    OptionalCount,
    /// Any number (rates, percentages).
    Number,
    /// `true` or `false`.
    Bool,
}

/// A field of an answer and its type: `"connections"`, `"messages.published"`, and `*` for
/// every value of an object or array (`"channels.*.subscribers"`).
pub type Shape<'a> = (&'a str, Json);

/// Why `value` at `path` is not `kind`, if it is not.
fn check(value: &Value, path: &str, kind: Json) -> Option<String> {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let mut children: Vec<&Value> = Vec::new();
    match head {
        "*" => match value {
            Value::Object(m) => children.extend(m.values()),
            Value::Array(a) => children.extend(a.iter()),
            _ => return Some(format!("{path}: expected an object or array")),
        },
        key => children.push(value.get(key).unwrap_or(&Value::Null)),
    }
    for child in children {
        let problem = match rest {
            Some(rest) => check(child, rest, kind),
            None => {
                let ok = match kind {
                    Json::Count => child.is_u64(),
                    Json::OptionalCount => child.is_u64() || child.is_null(),
                    Json::Text => child.is_string(),
                    Json::Object => child.is_object(),
                    Json::Array => child.is_array(),
                    Json::Number => child.is_number(),
                    Json::Bool => child.is_boolean(),
                };
                (!ok).then(|| {
                    format!(
                        "{path} is {} where {kind:?} was expected",
                        escaped(&truncate(&child.to_string()))
                    )
                })
            }
        };
        if problem.is_some() {
            return problem;
        }
    }
    None
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s.to_string()
    }
}

/// `s` with control characters (ESC, OSC's BEL, CR, …) written as `\u{..}`, so text from a
/// server cannot act on the terminal it is printed to.
pub fn escaped(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Every string of a server's answer (keys included) made printable with [`escaped`].
fn printable(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(escaped(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(printable).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (escaped(&k), printable(v))).collect()),
        other => other,
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

pub(super) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
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

    #[test]
    fn answers_are_checked_and_made_printable() {
        let stats =
            serde_json::json!({"connections": 3, "channels": {"a": {"subscribers": 1}, "b": {"subscribers": "x"}}});
        assert_eq!(check(&stats, "connections", Json::Count), None);
        assert!(check(&stats, "channels.*.subscribers", Json::Count)
            .unwrap()
            .contains("\"x\""));
        assert!(check(&stats, "driver", Json::Text).is_some(), "missing");
        assert_eq!(check(&serde_json::json!({"m": null}), "m", Json::OptionalCount), None);
        let evil = printable(serde_json::json!({"e\u{1b}]0;x\u{7}": ["ok", "\u{1b}[2J"]}));
        let text = evil.to_string();
        assert!(!text.contains('\u{1b}') && text.contains("\\u{1b}"), "{text}");
    }
}
