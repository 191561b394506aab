//! Configuration: environment variables (optionally from `.env`) and an optional
//! configuration file (`emit_hub.toml`), grouped in sections, with every default
//! documented here, in [`vars::VARIABLES`] and in `.env.example`.
//!
//! Invalid values stop start-up with the variable's name (or the file's key) and the
//! offending value; nothing silently falls back to a default.
//!
//! - [`ServerConfig`]: listener, HTTP API token, CORS, HTTP timeouts, shutdown.
//! - [`WebSocketConfig`]: socket limits, queues, keep-alive, client events.
//! - [`AuthConfig`]: JWT verification and channel rules.
//! - [`RedisConfig`]: the Redis cluster backend.
//! - [`PusherConfig`]: Pusher apps and their HTTP API limits.

mod env;
pub mod file;
pub mod vars;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;

pub use crate::auth::JwtConfig;
pub use crate::backend::{RedisConfig, RedisTopology};
pub use crate::emithub::{EmitHubConfig, DEFAULT_EMIT_HUB_DB_PATH, DEFAULT_EMIT_HUB_MAX_CHANNELS};
pub use crate::pusher::{Apps, PusherApp};
pub use crate::rtc::{RtcConfig, DEFAULT_MAX_ROOMS_PER_USER};
pub use env::parse_duration;
pub use file::{ConfigFile, Sources};

use env::Env;

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable holds a value of the wrong form.
    #[error("invalid value for {var}: {value:?} ({reason})")]
    Invalid {
        /// The environment variable's name.
        var: &'static str,
        /// The value found.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// The combination of values is unsafe or inconsistent.
    #[error("{0}")]
    Unsafe(String),
    /// The configuration file is unreadable, or a key in it is unknown or invalid.
    #[error("configuration file {}{}: {reason}", path.display(), if key.is_empty() { String::new() } else { format!(", key {key}") })]
    File {
        /// The file.
        path: PathBuf,
        /// The key (empty for the whole file).
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl From<crate::setting::InvalidSetting> for ConfigError {
    fn from(e: crate::setting::InvalidSetting) -> Self {
        Self::Invalid {
            var: e.var,
            value: e.value,
            reason: e.reason,
        }
    }
}

/// Shortest `BROADCAST_API_TOKEN` accepted on a non-loopback address: a short token can
/// be guessed by anyone who can reach the port.
pub const MIN_PUBLIC_API_TOKEN_LEN: usize = 16;

/// `BROADCAST_DRIVER`: the default broadcast connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Driver {
    /// `websocket` (alias `local`): the in-process hub.
    #[default]
    Websocket,
    /// `redis`: this node is part of a cluster sharing one Redis.
    Redis,
    /// `log`: broadcasts are logged, not delivered.
    Log,
    /// `null`: broadcasts are dropped.
    Null,
}

impl Driver {
    /// The connection name the manager knows this driver by.
    pub fn name(self) -> &'static str {
        match self {
            Self::Websocket => "websocket",
            Self::Redis => "redis",
            Self::Log => "log",
            Self::Null => "null",
        }
    }
}

impl std::str::FromStr for Driver {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "websocket" | "local" => Ok(Self::Websocket),
            "redis" => Ok(Self::Redis),
            "log" => Ok(Self::Log),
            "null" => Ok(Self::Null),
            _ => Err(()),
        }
    }
}

/// The listener and the HTTP side.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `BROADCAST_HOST`, default `127.0.0.1`.
    pub host: IpAddr,
    /// `BROADCAST_WEBSOCKET_PORT`: the WebSocket server's port, default `8080`. Every
    /// route (WebSocket and HTTP) answers on it.
    pub port: u16,
    /// `BROADCAST_APP_PORT`: the application port, default `3000`; `off` for none. The
    /// same routes answer on it as on the WebSocket port.
    pub app_port: Option<u16>,
    /// Which ports the operator chose: one of these that cannot be bound stops start-up,
    /// while a default port that is taken is skipped with a warning.
    pub explicit_ports: ExplicitPorts,
    /// `BROADCAST_API_TOKEN`: when set, publishing and the read endpoints need
    /// `Authorization: Bearer`.
    pub api_token: Option<String>,
    /// `BROADCAST_DASHBOARD_TOKEN`: what `/dashboard` asks for (default: the API token).
    pub dashboard_token: Option<String>,
    /// `CORS_ALLOWED_ORIGINS`: comma-separated origins (or `*`) whose browser pages may call
    /// the HTTP API; default none (same origin only). Writes from other origins get 403.
    pub cors_allowed_origins: Vec<String>,
    /// `CORS_ALLOWED_METHODS`: methods allowed to those origins, default
    /// `GET,POST,PUT,PATCH,DELETE,OPTIONS`.
    pub cors_allowed_methods: Vec<String>,
    /// `CORS_ALLOWED_HEADERS`: request headers allowed to those origins, default `*` (any).
    pub cors_allowed_headers: Vec<String>,
    /// `CORS_MAX_AGE`: how long browsers may cache a preflight answer, default 1 hour.
    pub cors_max_age: Duration,
    /// `BROADCAST_MAX_PAYLOAD_SIZE`: largest HTTP request body in bytes, default 1048576.
    pub max_payload_size: usize,
    /// `BROADCAST_HTTP_HEADER_TIMEOUT`: time a connection has to send a request's headers
    /// (also the longest an idle keep-alive connection is kept), default 10s.
    pub http_header_timeout: Duration,
    /// `BROADCAST_HTTP_REQUEST_TIMEOUT`: time an HTTP request has to send its body and be
    /// answered (not WebSocket sessions), default 30s.
    pub http_request_timeout: Duration,
    /// `BROADCAST_SHUTDOWN_TIMEOUT`: how long shutdown waits for sockets to close, default 10s.
    pub shutdown_timeout: Duration,
}

/// Which listener ports were set explicitly (environment or command line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExplicitPorts {
    /// `BROADCAST_WEBSOCKET_PORT` (or `--port`) was given.
    pub websocket: bool,
    /// `BROADCAST_APP_PORT` (or `--app-port`) was given.
    pub app: bool,
}

/// WebSocket sessions: limits, queues and keep-alive.
#[derive(Debug, Clone)]
pub struct WebSocketConfig {
    /// `BROADCAST_WEBSOCKET_ENABLED`: serve WebSocket endpoints, default `true`.
    pub enabled: bool,
    /// `BROADCAST_MAX_MESSAGE_SIZE`: largest inbound WebSocket message in bytes, default 65536.
    pub max_message_size: usize,
    /// `BROADCAST_SEND_QUEUE_SIZE`: per-connection outbound queue, in messages, default 256.
    pub send_queue_size: usize,
    /// `BROADCAST_MAX_CONNECTIONS`: concurrent sockets, `0` for no limit, default 0.
    pub max_connections: usize,
    /// `BROADCAST_MAX_CONNECTIONS_PER_USER`: sockets one user may have open on this node,
    /// `0` for no limit, default 0.
    pub max_connections_per_user: usize,
    /// `BROADCAST_MAX_CHANNELS_PER_CONNECTION`: default 100.
    pub max_channels_per_connection: usize,
    /// `BROADCAST_PING_INTERVAL`: idle time before the server pings a socket, default 30s.
    pub ping_interval: Duration,
    /// `BROADCAST_PING_TIMEOUT`: how long a pinged socket has to answer, default 10s.
    pub ping_timeout: Duration,
    /// `BROADCAST_CONNECTION_TIMEOUT`: the longest a socket may stay silent (no frame, no
    /// pong) before it is closed; `None` (the default) for `ping_interval + ping_timeout`.
    pub connection_timeout: Option<Duration>,
    /// `BROADCAST_CLIENT_EVENTS_PER_SECOND`: whispers allowed per connection, default 10.
    pub client_events_per_second: u32,
}

/// Who may join which channel.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// JWT verification, present when `JWT_SECRET` or `JWT_PUBLIC_KEY_FILE` is set.
    pub jwt: Option<JwtConfig>,
    /// `BROADCAST_PUBLIC_CHANNELS`: extra public channel patterns, comma-separated (`*` wildcard).
    pub public_channels: Vec<String>,
    /// `BROADCAST_RULES_FILE`: a TOML file of channel rules.
    pub rules_file: Option<PathBuf>,
    /// `BROADCAST_TOKEN_GRACE`: how long a socket stays open after its token expires, default 5s.
    pub token_grace: Duration,
}

/// The Pusher protocol's apps and HTTP API limits.
#[derive(Debug, Clone)]
pub struct PusherConfig {
    /// Pusher apps: `PUSHER_APP_ID`/`PUSHER_APP_KEY`/`PUSHER_APP_SECRET`, then `PUSHER_APPS_FILE`.
    pub apps: Apps,
    /// `PUSHER_MAX_EVENT_SIZE`: largest event `data` in bytes over the Pusher APIs, default 10240.
    pub max_event_size: usize,
    /// `PUSHER_MAX_CHANNELS_PER_EVENT`: default 100.
    pub max_channels_per_event: usize,
    /// `PUSHER_MAX_BATCH_SIZE`: events per `batch_events` call, default 10.
    pub max_batch_size: usize,
}

/// Everything the server and the library read from their environment.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `BROADCAST_DRIVER`: the default broadcast connection, default `websocket`.
    pub driver: Driver,
    /// The listener and the HTTP side.
    pub server: ServerConfig,
    /// WebSocket sessions.
    pub websocket: WebSocketConfig,
    /// Authentication and channel rules.
    pub auth: AuthConfig,
    /// Redis (for `BROADCAST_DRIVER=redis`).
    pub redis: RedisConfig,
    /// The Pusher protocol.
    pub pusher: PusherConfig,
    /// `BROADCAST_LOG_FILE`: where the `log` driver also writes broadcasts, as JSON lines.
    pub log_file: Option<PathBuf>,
    /// EmitHub managed channels.
    pub emithub: EmitHubConfig,
    /// The typed-frame service.
    pub rtc: RtcConfig,
    /// Channel history and recovery (`BROADCAST_HISTORY_*`).
    pub history: crate::history::HistoryConfig,
    /// Webhooks (`BROADCAST_WEBHOOK_*`; per app in the apps file).
    pub webhooks: crate::webhooks::WebhookConfig,
    /// `BROADCAST_ROUTES_FILE`: routing rules (TOML), applied to every message at publish.
    pub routes_file: Option<PathBuf>,
    /// Logging.
    pub log: LogConfig,
    /// Where each setting came from (for reloading and `--generate-config`).
    pub sources: Sources,
}

/// `LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `RUST_LOG` (or `EMIT_HUB_LOG_LEVEL`): a level (`debug`) or a filter
    /// (`rustaxum=debug,info`), default `info`.
    pub filter: String,
    /// `LOG_FORMAT`: `text` (default) or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8080,
            app_port: Some(3000),
            explicit_ports: ExplicitPorts::default(),
            api_token: None,
            dashboard_token: None,
            cors_allowed_origins: Vec::new(),
            cors_allowed_methods: ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
                .map(String::from)
                .to_vec(),
            cors_allowed_headers: vec!["*".into()],
            cors_max_age: Duration::from_secs(3600),
            max_payload_size: 1024 * 1024,
            http_header_timeout: Duration::from_secs(10),
            http_request_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_message_size: 64 * 1024,
            send_queue_size: 256,
            max_connections: 0,
            max_connections_per_user: 0,
            max_channels_per_connection: 100,
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(10),
            connection_timeout: None,
            client_events_per_second: 10,
        }
    }
}

impl Default for PusherConfig {
    fn default() -> Self {
        Self {
            apps: Apps::default(),
            max_event_size: 10 * 1024,
            max_channels_per_event: 100,
            max_batch_size: 10,
        }
    }
}

impl Config {
    /// Reads the process environment (after loading `.env` if present) and the
    /// configuration file named by `BROADCAST_CONFIG_FILE` (or `./emit_hub.toml` when it
    /// exists).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::load(None)
    }

    /// Like [`from_env`](Self::from_env), with the configuration file `file` when given
    /// (the command line's `--config`).
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(file, &BTreeMap::new())
    }

    /// Like [`load`](Self::load), with settings given on the command line (variable →
    /// value) winning over the environment and the file.
    pub fn load_with(file: Option<&Path>, overrides: &BTreeMap<&'static str, String>) -> Result<Self, ConfigError> {
        // A missing .env is normal; a malformed one is reported by the variables it breaks.
        let _ = dotenvy::dotenv();
        let lookup = |key: &str| overrides.get(key).cloned().or_else(|| std::env::var(key).ok());
        let file = match Self::config_file(file, &lookup) {
            Some(path) => Some(ConfigFile::read(&path)?),
            None => None,
        };
        let mut config = Self::from_parts(&lookup, file)?;
        config.sources.overrides = overrides.clone();
        Ok(config)
    }

    /// The configuration file to read: `explicit`, else `BROADCAST_CONFIG_FILE` (or
    /// `EMIT_HUB_CONFIG`), else `./emit_hub.toml` if it exists.
    pub fn config_file(explicit: Option<&Path>, lookup: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
        explicit
            .map(Path::to_path_buf)
            .or_else(|| {
                [vars::CONFIG_FILE_VAR, vars::CONFIG_FILE_ALIAS]
                    .iter()
                    .find_map(|v| lookup(v).filter(|p| !p.trim().is_empty()).map(PathBuf::from))
            })
            .or_else(|| Some(PathBuf::from(vars::DEFAULT_CONFIG_FILE)).filter(|p| p.is_file()))
    }

    /// Reads configuration through `lookup` (tests pass a map instead of the environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::from_parts(&lookup, None)
    }

    /// Reads configuration through `lookup`, then `file` for what `lookup` leaves unset.
    pub fn from_parts(lookup: &dyn Fn(&str) -> Option<String>, file: Option<ConfigFile>) -> Result<Self, ConfigError> {
        check_aliases(lookup)?;
        let seen: RefCell<BTreeMap<&'static str, String>> = RefCell::default();
        let resolve = |key: &str| -> Option<String> {
            let var = vars::find(key);
            let name = var.map_or(key, |v| v.name);
            let set = |n: &str| lookup(n).filter(|v| !v.trim().is_empty());
            let env = set(name)
                .or_else(|| var.and_then(|v| v.aliases.iter().find_map(|a| set(a))))
                .or_else(|| var.and_then(|v| v.weak.iter().find_map(|w| set(w))));
            let value = match env {
                Some(v) => Some(v),
                None => file.as_ref().and_then(|f| f.get(name)).map(str::to_string),
            };
            if let (Some(var), Some(v)) = (var, &value) {
                seen.borrow_mut().insert(var.name, v.clone());
            }
            value
        };
        let built = Self::build(&resolve);
        let values = seen.into_inner();
        let mut config = match built {
            Ok(config) => config,
            // A bad value from the file: name its key.
            Err(ConfigError::Invalid { var, value, reason }) => {
                return Err(match file.as_ref().and_then(|f| f.key_of(var).map(|k| (f, k))) {
                    Some((f, key)) if lookup(var).is_none() => ConfigError::File {
                        path: f.path.clone(),
                        key: key.to_string(),
                        reason: format!("invalid value {value:?} ({reason})"),
                    },
                    _ => ConfigError::Invalid { var, value, reason },
                })
            }
            Err(e) => return Err(e),
        };
        config.sources = Sources {
            file,
            values,
            overrides: BTreeMap::new(),
        };
        Ok(config)
    }

    fn build(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(lookup);
        let driver = driver(&env)?;
        let history = history(&env)?;
        match (driver, history.store) {
            (Driver::Redis, Some(kind @ (crate::history::StoreKind::Memory | crate::history::StoreKind::Redb))) => {
                return Err(ConfigError::Invalid {
                    var: "BROADCAST_HISTORY_STORE",
                    value: format!("{kind:?}").to_ascii_lowercase(),
                    reason: "a cluster (BROADCAST_DRIVER=redis) keeps history in Redis, so that positions agree on every node; remove it or set redis".into(),
                })
            }
            (d, Some(crate::history::StoreKind::Redis)) if d != Driver::Redis => {
                return Err(ConfigError::Invalid {
                    var: "BROADCAST_HISTORY_STORE",
                    value: "redis".into(),
                    reason: "keeping history in Redis needs BROADCAST_DRIVER=redis".into(),
                })
            }
            _ => {}
        }
        Ok(Self {
            driver,
            server: server(&env)?,
            websocket: websocket(&env)?,
            auth: auth(&env)?,
            redis: redis(&env)?,
            pusher: pusher(&env)?,
            log_file: env.string("BROADCAST_LOG_FILE").map(PathBuf::from),
            emithub: emithub(&env)?,
            routes_file: env.string("BROADCAST_ROUTES_FILE").map(PathBuf::from),
            rtc: rtc(&env)?,
            history,
            webhooks: webhooks(&env)?,
            log: log(&env)?,
            sources: Sources::default(),
        })
    }

    /// This configuration re-read with `fresh`'s values for the settings that can change
    /// while serving, and this one's for the others; and the settings that changed, split
    /// into (applied, needing a restart).
    pub fn reloaded(
        &self,
        fresh: &Config,
    ) -> Result<(Config, Vec<&'static vars::Variable>, Vec<&'static vars::Variable>), ConfigError> {
        let changed = self.sources.changed(&fresh.sources);
        let (live, restart): (Vec<_>, Vec<_>) = changed.into_iter().partition(|v| v.reload);
        let pick = |key: &str| -> Option<String> {
            let var = vars::find(key)?;
            let from = if var.reload { &fresh.sources } else { &self.sources };
            from.values.get(var.name).cloned()
        };
        let mut merged = Self::from_lookup(pick)?;
        merged.sources.file = fresh.sources.file.clone();
        merged.sources.overrides = self.sources.overrides.clone();
        Ok((merged, live, restart))
    }

    /// Checks combinations that are unsafe to serve on a non-loopback address: an open
    /// publishing API is refused, and so is any secret that guards data and is short
    /// enough to guess ([`MIN_PUBLIC_API_TOKEN_LEN`] characters at least): the API token,
    /// the dashboard token, the JWT HMAC key and every Pusher app's secret. Start-up and
    /// every reload check it.
    pub fn validate_for_serving(&self) -> Result<(), ConfigError> {
        let host = self.server.host;
        if host.is_loopback() {
            return Ok(());
        }
        if self.server.api_token.is_none() {
            return Err(ConfigError::Unsafe(format!(
                "refusing to listen on {host} without BROADCAST_API_TOKEN: anyone could publish; \
                 set BROADCAST_API_TOKEN or bind to 127.0.0.1"
            )));
        }
        for (var, secret) in self.guarding_secrets() {
            let len = secret.chars().count();
            if len < MIN_PUBLIC_API_TOKEN_LEN {
                return Err(ConfigError::Unsafe(format!(
                    "refusing to listen on {host} with a {var} of {len} characters: it guards data and \
                     a short one can be guessed; use at least {MIN_PUBLIC_API_TOKEN_LEN} (e.g. openssl rand -hex 32)"
                )));
            }
        }
        Ok(())
    }

    /// A fingerprint of the settings that decide who gets in: the JWT algorithm, audience
    /// and key (the public key file's contents), the API and dashboard tokens, every
    /// Pusher app's id, key, secret and encryption key. Nodes sharing one Redis compare
    /// theirs (a node with another key refuses tokens the others accept). It is a SHA-256
    /// prefix: it names no secret, and tells only whether two nodes' settings agree.
    pub fn security_fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut field = |label: &str, value: &[u8]| {
            h.update((label.len() as u64).to_le_bytes());
            h.update(label.as_bytes());
            h.update((value.len() as u64).to_le_bytes());
            h.update(value);
        };
        if let Some(jwt) = &self.auth.jwt {
            field("jwt.algorithm", format!("{:?}", jwt.algorithm).as_bytes());
            field("jwt.audience", jwt.audience.as_bytes());
            field("jwt.secret", jwt.secret.as_deref().unwrap_or_default().as_bytes());
            if let Some(path) = &jwt.public_key_file {
                field("jwt.public_key", &std::fs::read(path).unwrap_or_default());
            }
        }
        field(
            "api_token",
            self.server.api_token.as_deref().unwrap_or_default().as_bytes(),
        );
        field(
            "dashboard_token",
            self.server.dashboard_token.as_deref().unwrap_or_default().as_bytes(),
        );
        let mut apps: Vec<_> = self.pusher.apps.iter().collect();
        apps.sort_by(|a, b| a.id.cmp(&b.id));
        for app in apps {
            field("app.id", app.id.as_bytes());
            field("app.key", app.key.as_bytes());
            field("app.secret", app.secret.as_bytes());
            field(
                "app.encryption",
                app.encryption_master_key.as_deref().unwrap_or_default().as_bytes(),
            );
        }
        hex::encode(&h.finalize()[..8])
    }

    /// The secrets that guard data, each with the setting that holds it.
    fn guarding_secrets(&self) -> Vec<(String, &str)> {
        let mut secrets: Vec<(String, &str)> = Vec::new();
        if let Some(t) = &self.server.api_token {
            secrets.push(("BROADCAST_API_TOKEN".into(), t));
        }
        if let Some(t) = &self.server.dashboard_token {
            secrets.push(("BROADCAST_DASHBOARD_TOKEN".into(), t));
        }
        if let Some(t) = self.auth.jwt.as_ref().and_then(|j| j.secret.as_deref()) {
            secrets.push(("JWT_SECRET".into(), t));
        }
        for app in self.pusher.apps.iter() {
            secrets.push((format!("secret of Pusher app {}", app.id), &app.secret));
        }
        secrets
    }

    /// The base URL a local client (the CLI) uses to reach this server.
    pub fn server_url(&self) -> String {
        let host = if self.server.host.is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            self.server.host
        };
        match host {
            IpAddr::V6(v6) => format!("http://[{v6}]:{}", self.server.port),
            IpAddr::V4(v4) => format!("http://{v4}:{}", self.server.port),
        }
    }
}

/// `BROADCAST_DRIVER`, with the document's `BROADCAST_REDIS_ENABLED`: `true` alone means
/// the redis driver; a value that contradicts `BROADCAST_DRIVER` is refused.
fn driver(env: &Env<'_>) -> Result<Driver, ConfigError> {
    let driver: Option<Driver> = env.parse("BROADCAST_DRIVER", "websocket, local, redis, log or null")?;
    let contradiction = |value: &str, reason: String| ConfigError::Invalid {
        var: "BROADCAST_REDIS_ENABLED",
        value: value.into(),
        reason,
    };
    match (driver, env.bool("BROADCAST_REDIS_ENABLED")?) {
        (d, None) => Ok(d.unwrap_or_default()),
        (None | Some(Driver::Redis), Some(true)) => Ok(Driver::Redis),
        (Some(d), Some(true)) => Err(contradiction(
            "true",
            format!(
                "contradicts BROADCAST_DRIVER={}: Redis is what the redis driver uses; set BROADCAST_DRIVER=redis, \
                 or BROADCAST_REDIS_ENABLED=false",
                d.name()
            ),
        )),
        (Some(Driver::Redis), Some(false)) => Err(contradiction(
            "false",
            "contradicts BROADCAST_DRIVER=redis, which needs Redis; remove one of them".into(),
        )),
        (d, Some(false)) => Ok(d.unwrap_or_default()),
    }
}

fn server(env: &Env<'_>) -> Result<ServerConfig, ConfigError> {
    let d = ServerConfig::default();
    Ok(ServerConfig {
        host: env
            .parse("BROADCAST_HOST", "an IP address such as 127.0.0.1")?
            .unwrap_or(d.host),
        port: env
            .parse("BROADCAST_WEBSOCKET_PORT", "a port number 0-65535")?
            .unwrap_or(d.port),
        app_port: match env.string("BROADCAST_APP_PORT") {
            Some(v) if v.eq_ignore_ascii_case("off") => None,
            _ => Some(
                env.parse("BROADCAST_APP_PORT", "a port number 0-65535, or off")?
                    .unwrap_or(3000),
            ),
        },
        explicit_ports: ExplicitPorts {
            websocket: env.string("BROADCAST_WEBSOCKET_PORT").is_some(),
            app: env.string("BROADCAST_APP_PORT").is_some(),
        },
        api_token: env.string("BROADCAST_API_TOKEN"),
        dashboard_token: env.string("BROADCAST_DASHBOARD_TOKEN"),
        cors_allowed_origins: env.list("CORS_ALLOWED_ORIGINS"),
        cors_allowed_methods: match env.list("CORS_ALLOWED_METHODS") {
            list if list.is_empty() => d.cors_allowed_methods,
            list => {
                for m in &list {
                    if axum::http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).is_err() {
                        return Err(ConfigError::Invalid {
                            var: "CORS_ALLOWED_METHODS",
                            value: m.clone(),
                            reason: "expected HTTP methods such as GET,POST".into(),
                        });
                    }
                }
                list.into_iter().map(|m| m.to_ascii_uppercase()).collect()
            }
        },
        cors_allowed_headers: match env.list("CORS_ALLOWED_HEADERS") {
            list if list.is_empty() => d.cors_allowed_headers,
            list => {
                for h in list.iter().filter(|h| *h != "*") {
                    if axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                        return Err(ConfigError::Invalid {
                            var: "CORS_ALLOWED_HEADERS",
                            value: h.clone(),
                            reason: "expected header names such as Content-Type,Authorization, or *".into(),
                        });
                    }
                }
                list
            }
        },
        cors_max_age: env.duration_or_zero("CORS_MAX_AGE")?.unwrap_or(d.cors_max_age),
        max_payload_size: env
            .positive("BROADCAST_MAX_PAYLOAD_SIZE")?
            .unwrap_or(d.max_payload_size),
        http_header_timeout: env
            .duration("BROADCAST_HTTP_HEADER_TIMEOUT")?
            .unwrap_or(d.http_header_timeout),
        http_request_timeout: env
            .duration("BROADCAST_HTTP_REQUEST_TIMEOUT")?
            .unwrap_or(d.http_request_timeout),
        shutdown_timeout: env
            .duration("BROADCAST_SHUTDOWN_TIMEOUT")?
            .unwrap_or(d.shutdown_timeout),
    })
}

fn websocket(env: &Env<'_>) -> Result<WebSocketConfig, ConfigError> {
    let d = WebSocketConfig::default();
    Ok(WebSocketConfig {
        enabled: env.bool("BROADCAST_WEBSOCKET_ENABLED")?.unwrap_or(d.enabled),
        max_message_size: env
            .positive("BROADCAST_MAX_MESSAGE_SIZE")?
            .unwrap_or(d.max_message_size),
        send_queue_size: env.positive("BROADCAST_SEND_QUEUE_SIZE")?.unwrap_or(d.send_queue_size),
        max_connections: env
            .parse("BROADCAST_MAX_CONNECTIONS", "a whole number (0 = no limit)")?
            .unwrap_or(d.max_connections),
        max_connections_per_user: env
            .parse("BROADCAST_MAX_CONNECTIONS_PER_USER", "a whole number (0 = no limit)")?
            .unwrap_or(d.max_connections_per_user),
        max_channels_per_connection: env
            .positive("BROADCAST_MAX_CHANNELS_PER_CONNECTION")?
            .unwrap_or(d.max_channels_per_connection),
        ping_interval: env.duration("BROADCAST_PING_INTERVAL")?.unwrap_or(d.ping_interval),
        ping_timeout: env.duration("BROADCAST_PING_TIMEOUT")?.unwrap_or(d.ping_timeout),
        connection_timeout: env.duration("BROADCAST_CONNECTION_TIMEOUT")?,
        client_events_per_second: env
            .positive("BROADCAST_CLIENT_EVENTS_PER_SECOND")?
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            .unwrap_or(d.client_events_per_second),
    })
}

fn auth(env: &Env<'_>) -> Result<AuthConfig, ConfigError> {
    Ok(AuthConfig {
        jwt: jwt(env)?,
        public_channels: env.list("BROADCAST_PUBLIC_CHANNELS"),
        rules_file: env.string("BROADCAST_RULES_FILE").map(PathBuf::from),
        token_grace: env
            .duration_or_zero("BROADCAST_TOKEN_GRACE")?
            .unwrap_or(Duration::from_secs(5)),
    })
}

fn jwt(env: &Env<'_>) -> Result<Option<JwtConfig>, ConfigError> {
    let secret = env.0("JWT_SECRET").filter(|s| !s.is_empty());
    let public_key_file = env.string("JWT_PUBLIC_KEY_FILE").map(PathBuf::from);
    if secret.is_none() && public_key_file.is_none() {
        return Ok(None);
    }
    let algorithm = match env.string("JWT_ALGORITHM") {
        None => Algorithm::HS256,
        Some(value) => value.parse::<Algorithm>().map_err(|_| ConfigError::Invalid {
            var: "JWT_ALGORITHM",
            value,
            reason: "expected HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"
                .into(),
        })?,
    };
    Ok(Some(JwtConfig {
        algorithm,
        secret,
        public_key_file,
        audience: env.string("JWT_AUDIENCE").unwrap_or_else(|| "websocket".into()),
        leeway: env.duration_or_zero("JWT_LEEWAY")?.unwrap_or(Duration::from_secs(5)),
    }))
}

/// An EmitHub name (`EMIT_HUB_PORT`) and the variable it stands for
/// (`BROADCAST_WEBSOCKET_PORT`) set to different values is a mistake worth stopping for.
fn check_aliases(lookup: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    for var in vars::VARIABLES {
        let names = std::iter::once(var.name).chain(var.aliases.iter().copied());
        let set: Vec<(&str, String)> = names
            .filter_map(|n| lookup(n).map(|v| (n, v.trim().to_string())))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        if let [(first, a), rest @ ..] = set.as_slice() {
            if let Some((other, b)) = rest.iter().find(|(_, b)| b != a) {
                return Err(ConfigError::Invalid {
                    var: var.name,
                    value: b.clone(),
                    reason: format!("{other}={b} contradicts {first}={a}; they are the same setting, set one"),
                });
            }
        }
    }
    Ok(())
}

fn rtc(env: &Env<'_>) -> Result<RtcConfig, ConfigError> {
    let d = crate::rtc::RateLimits::default();
    let per_second = |var: &'static str, default: u32| -> Result<u32, ConfigError> {
        Ok(env
            .parse::<u32>(var, "a whole number of messages per second (0 = no limit)")?
            .unwrap_or(default))
    };
    Ok(RtcConfig {
        port: match env.string("BROADCAST_RTC_PORT") {
            Some(v) if v.eq_ignore_ascii_case("off") => None,
            _ => Some(
                env.parse("BROADCAST_RTC_PORT", "a port number 0-65535, or off")?
                    .unwrap_or(8081),
            ),
        },
        explicit_port: env.string("BROADCAST_RTC_PORT").is_some(),
        room_grace: env
            .duration_or_zero("BROADCAST_ROOM_GRACE")?
            .unwrap_or(Duration::from_secs(60)),
        max_rooms_per_user: env
            .positive("BROADCAST_RTC_MAX_ROOMS_PER_USER")?
            .unwrap_or(DEFAULT_MAX_ROOMS_PER_USER),
        allow_anonymous: env.bool("BROADCAST_RTC_ALLOW_ANONYMOUS")?.unwrap_or(false),
        limits: crate::rtc::RateLimits {
            enabled: env.bool("BROADCAST_RATE_LIMIT_ENABLED")?.unwrap_or(d.enabled),
            per_connection: per_second("BROADCAST_RATE_LIMIT_CONNECTION", d.per_connection)?,
            per_user: per_second("BROADCAST_RATE_LIMIT_USER", d.per_user)?,
            per_topic: per_second("BROADCAST_RATE_LIMIT_TOPIC", d.per_topic)?,
            global: per_second("BROADCAST_RATE_LIMIT_GLOBAL", d.global)?,
        },
    })
}

fn webhooks(env: &Env<'_>) -> Result<crate::webhooks::WebhookConfig, ConfigError> {
    let d = crate::webhooks::WebhookConfig::default();
    let urls = env.list("BROADCAST_WEBHOOK_URLS");
    if let Some(bad) = urls
        .iter()
        .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
    {
        return Err(ConfigError::Invalid {
            var: "BROADCAST_WEBHOOK_URLS",
            value: bad.clone(),
            reason: "expected http:// or https:// URLs, comma-separated".into(),
        });
    }
    if !urls.is_empty() && (env.string("PUSHER_APP_KEY").is_none() || env.string("PUSHER_APP_SECRET").is_none()) {
        return Err(ConfigError::Invalid {
            var: "BROADCAST_WEBHOOK_URLS",
            value: urls.join(","),
            reason: "webhooks are signed with PUSHER_APP_KEY and PUSHER_APP_SECRET; set the app (PUSHER_APP_ID too)"
                .into(),
        });
    }
    let events = env.list("BROADCAST_WEBHOOK_EVENTS");
    if let Some(bad) = events.iter().find(|e| !crate::webhooks::EVENTS.contains(&e.as_str())) {
        return Err(ConfigError::Invalid {
            var: "BROADCAST_WEBHOOK_EVENTS",
            value: bad.clone(),
            reason: format!("expected some of {}", crate::webhooks::EVENTS.join(", ")),
        });
    }
    Ok(crate::webhooks::WebhookConfig {
        urls,
        events,
        retry_for: env.duration("BROADCAST_WEBHOOK_RETRY_FOR")?.unwrap_or(d.retry_for),
        member_delay: env
            .duration_or_zero("BROADCAST_WEBHOOK_MEMBER_DELAY")?
            .unwrap_or(d.member_delay),
    })
}

fn history(env: &Env<'_>) -> Result<crate::history::HistoryConfig, ConfigError> {
    let d = crate::history::HistoryConfig::default();
    let channels = env.list("BROADCAST_HISTORY_CHANNELS");
    for pattern in &channels {
        crate::auth::Pattern::parse(pattern).map_err(|reason| ConfigError::Invalid {
            var: "BROADCAST_HISTORY_CHANNELS",
            value: pattern.clone(),
            reason,
        })?;
    }
    let size = env.positive("BROADCAST_HISTORY_SIZE")?.unwrap_or(d.size);
    if size > 1_000_000 {
        return Err(ConfigError::Invalid {
            var: "BROADCAST_HISTORY_SIZE",
            value: size.to_string(),
            reason: "expected at most 1000000 messages per channel".into(),
        });
    }
    let store = env.parse::<crate::history::StoreKind>("BROADCAST_HISTORY_STORE", "memory, redb or redis")?;
    Ok(crate::history::HistoryConfig {
        channels,
        size,
        ttl: env.duration("BROADCAST_HISTORY_TTL")?.unwrap_or(d.ttl),
        store,
        recovery_limit: env
            .positive("BROADCAST_HISTORY_RECOVERY_LIMIT")?
            .unwrap_or(d.recovery_limit),
        memory_limit: env
            .positive("BROADCAST_HISTORY_MEMORY_LIMIT")?
            .unwrap_or(d.memory_limit),
    })
}

fn log(env: &Env<'_>) -> Result<LogConfig, ConfigError> {
    let filter = env.string("RUST_LOG").unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&filter).is_err() {
        return Err(ConfigError::Invalid {
            var: "RUST_LOG",
            value: filter,
            reason: "expected a level (error, warn, info, debug, trace) or a filter such as rustaxum=debug,info".into(),
        });
    }
    let format = match env.string("LOG_FORMAT").map(|f| f.to_ascii_lowercase()) {
        None => LogFormat::Text,
        Some(f) if f == "text" => LogFormat::Text,
        Some(f) if f == "json" => LogFormat::Json,
        Some(f) => {
            return Err(ConfigError::Invalid {
                var: "LOG_FORMAT",
                value: f,
                reason: "expected text or json".into(),
            })
        }
    };
    Ok(LogConfig { filter, format })
}

fn emithub(env: &Env<'_>) -> Result<EmitHubConfig, ConfigError> {
    let d = EmitHubConfig::default();
    let db_path = match env.string("EMIT_HUB_DB_PATH") {
        Some(p) if p == ":memory:" => None,
        Some(p) => Some(PathBuf::from(p)),
        None => Some(PathBuf::from(DEFAULT_EMIT_HUB_DB_PATH)),
    };
    let hours = match env.string("EMIT_HUB_BACKUP_INTERVAL_HOURS") {
        None => d.backup_interval_hours,
        Some(v) => match v.parse::<f64>() {
            Ok(h) if h.is_finite() && h > 0.0 && h <= 24.0 * 365.0 => h,
            _ => {
                return Err(ConfigError::Invalid {
                    var: "EMIT_HUB_BACKUP_INTERVAL_HOURS",
                    value: v,
                    reason: "expected a number of hours greater than 0, e.g. 12 or 0.5".into(),
                })
            }
        },
    };
    Ok(EmitHubConfig {
        db_path,
        max_connections: env.positive("EMIT_HUB_MAX_CONNECTIONS")?.unwrap_or(d.max_connections),
        max_channels: env.positive("EMIT_HUB_MAX_CHANNELS")?.unwrap_or(d.max_channels),
        allow_client_messages: env
            .bool("EMIT_HUB_ALLOW_CLIENT_MESSAGES")?
            .unwrap_or(d.allow_client_messages),
        persist_messages: env.bool("EMIT_HUB_PERSIST_MESSAGES")?.unwrap_or(d.persist_messages),
        rate_limit_per_minute: env
            .positive("EMIT_HUB_RATE_LIMIT_PER_MINUTE")?
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            .unwrap_or(d.rate_limit_per_minute),
        max_messages_per_channel: env
            .positive("EMIT_HUB_MAX_MESSAGES_PER_CHANNEL")?
            .unwrap_or(d.max_messages_per_channel),
        message_retention_days: env
            .parse(
                "EMIT_HUB_MESSAGE_RETENTION_DAYS",
                "a whole number of days (0 = keep forever)",
            )?
            .unwrap_or(d.message_retention_days),
        auto_backup: env.bool("EMIT_HUB_AUTO_BACKUP")?.unwrap_or(d.auto_backup),
        backup_interval_hours: hours,
    })
}

fn redis(env: &Env<'_>) -> Result<RedisConfig, ConfigError> {
    let d = RedisConfig::default();
    Ok(RedisConfig {
        url: env.string("REDIS_URL"),
        host: env.string("BROADCAST_REDIS_HOST").unwrap_or(d.host),
        port: env.parse("BROADCAST_REDIS_PORT", "a port number")?.unwrap_or(d.port),
        password: env.string("BROADCAST_REDIS_PASSWORD"),
        database: env
            .parse("BROADCAST_REDIS_DATABASE", "a database number")?
            .unwrap_or(d.database),
        channels_prefix: env
            .string_allow_empty("BROADCAST_CHANNELS_PREFIX")
            .unwrap_or(d.channels_prefix),
        cluster_nodes: env.list("REDIS_CLUSTER_NODES"),
        cluster_shards: env
            .parse("REDIS_CLUSTER_SHARDS", "a number of shards from 1 to 1024")?
            .unwrap_or(d.cluster_shards),
        sentinels: env.list("REDIS_SENTINELS"),
        sentinel_master: env.string("REDIS_SENTINEL_MASTER").unwrap_or(d.sentinel_master),
    }
    .validated()?)
}

fn pusher(env: &Env<'_>) -> Result<PusherConfig, ConfigError> {
    let d = PusherConfig::default();
    let parts = [
        env.string("PUSHER_APP_ID"),
        env.string("PUSHER_APP_KEY"),
        env.string("PUSHER_APP_SECRET"),
    ];
    let single = match parts {
        [Some(id), Some(key), Some(secret)] => Some(PusherApp {
            encryption_master_key: env.string("PUSHER_APP_ENCRYPTION_MASTER_KEY"),
            enable_subscription_count: env.bool("PUSHER_APP_ENABLE_SUBSCRIPTION_COUNT")?.unwrap_or(false),
            ..PusherApp::new(id, key, secret)
        }),
        [None, None, None] => None,
        _ => {
            return Err(ConfigError::Invalid {
                var: "PUSHER_APP_ID",
                value: env.string("PUSHER_APP_ID").unwrap_or_default(),
                reason: "set PUSHER_APP_ID, PUSHER_APP_KEY and PUSHER_APP_SECRET together".into(),
            })
        }
    };
    let file = env.string("PUSHER_APPS_FILE").map(PathBuf::from);
    Ok(PusherConfig {
        apps: Apps::from_parts_with_default(single, file.as_deref(), env.string("PUSHER_DEFAULT_APP").as_deref())?,
        max_event_size: env.positive("PUSHER_MAX_EVENT_SIZE")?.unwrap_or(d.max_event_size),
        max_channels_per_event: env
            .positive("PUSHER_MAX_CHANNELS_PER_EVENT")?
            .unwrap_or(d.max_channels_per_event),
        max_batch_size: env.positive("PUSHER_MAX_BATCH_SIZE")?.unwrap_or(d.max_batch_size),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_need_nothing() {
        let c = config(&[]).unwrap();
        assert_eq!(c.server.port, 8080);
        assert_eq!(c.server.app_port, Some(3000));
        assert_eq!(c.server.explicit_ports, ExplicitPorts::default());
        let c = config(&[("BROADCAST_APP_PORT", "off"), ("BROADCAST_WEBSOCKET_PORT", "9000")]).unwrap();
        assert_eq!((c.server.app_port, c.server.port), (None, 9000));
        assert!(c.server.explicit_ports.websocket && c.server.explicit_ports.app);
        let c = config(&[]).unwrap();
        assert_eq!(c.server.host.to_string(), "127.0.0.1");
        assert_eq!(c.driver, Driver::Websocket);
        assert_eq!(c.websocket.max_message_size, 65536);
        assert!(c.server.cors_allowed_origins.is_empty(), "same origin only by default");
        assert!(c.validate_for_serving().is_ok());
        assert_eq!(c.server_url(), "http://127.0.0.1:8080");
    }

    #[test]
    fn invalid_values_name_the_variable_and_value() {
        let cases = [
            ("BROADCAST_WEBSOCKET_PORT", "80x0"),
            ("BROADCAST_HOST", "localhost:80"),
            ("BROADCAST_WEBSOCKET_ENABLED", "maybe"),
            ("BROADCAST_PING_INTERVAL", "10 parsecs"),
            ("BROADCAST_PING_TIMEOUT", "0"),
            ("BROADCAST_SEND_QUEUE_SIZE", "0"),
            ("BROADCAST_MAX_MESSAGE_SIZE", "-1"),
            ("BROADCAST_DRIVER", "rabbit"),
            ("BROADCAST_APP_PORT", "thirty"),
        ];
        for (var, value) in cases {
            let err = config(&[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(var) && err.contains(value), "{err}");
        }
    }

    #[test]
    fn durations_accept_units() {
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("5h"), None);
    }

    #[test]
    fn public_host_without_token_is_refused() {
        let c = config(&[("BROADCAST_HOST", "0.0.0.0")]).unwrap();
        assert!(c
            .validate_for_serving()
            .unwrap_err()
            .to_string()
            .contains("BROADCAST_API_TOKEN"));
        let c = config(&[("BROADCAST_HOST", "0.0.0.0"), ("BROADCAST_API_TOKEN", "s3cret")]).unwrap();
        let err = c.validate_for_serving().unwrap_err().to_string();
        assert!(err.contains("16") && err.contains("6 characters"), "{err}");
        let c = config(&[
            ("BROADCAST_HOST", "0.0.0.0"),
            ("BROADCAST_API_TOKEN", "0123456789abcdef"),
        ])
        .unwrap();
        assert!(c.validate_for_serving().is_ok());
        assert_eq!(c.server_url(), "http://127.0.0.1:8080");
    }

    #[test]
    fn the_security_fingerprint_changes_with_keys_and_names_none() {
        let a = config(&[("JWT_SECRET", "first-key-0123456789")]).unwrap();
        let b = config(&[("JWT_SECRET", "other-key-0123456789")]).unwrap();
        let a2 = config(&[
            ("JWT_SECRET", "first-key-0123456789"),
            ("BROADCAST_PING_INTERVAL", "10s"),
        ])
        .unwrap();
        assert_eq!(
            a.security_fingerprint(),
            a2.security_fingerprint(),
            "other settings do not count"
        );
        assert_ne!(a.security_fingerprint(), b.security_fingerprint());
        assert_eq!(a.security_fingerprint().len(), 16);
        assert!(!a.security_fingerprint().contains("first"));
    }

    // Hardening round two (issue 21, defect 1): every secret that guards data, not only
    // the API token, must be long enough off loopback.
    #[test]
    fn every_guarding_secret_is_long_enough_on_a_public_host() {
        let long = "0123456789abcdef";
        for (var, short) in [
            ("BROADCAST_DASHBOARD_TOKEN", "a"),
            ("JWT_SECRET", "short-key"),
            ("PUSHER_APP_SECRET", "secret"),
        ] {
            let mut vars = vec![
                ("BROADCAST_HOST", "0.0.0.0"),
                ("BROADCAST_API_TOKEN", long),
                (var, short),
            ];
            if var == "PUSHER_APP_SECRET" {
                vars.extend([("PUSHER_APP_ID", "app"), ("PUSHER_APP_KEY", "key")]);
            }
            let err = config(&vars).unwrap().validate_for_serving().unwrap_err().to_string();
            let named = if var == "PUSHER_APP_SECRET" {
                "Pusher app app"
            } else {
                var
            };
            assert!(err.contains(named) && err.contains("16"), "{var}: {err}");
            let local: Vec<_> = vars.iter().filter(|(k, _)| *k != "BROADCAST_HOST").copied().collect();
            assert!(
                config(&local).unwrap().validate_for_serving().is_ok(),
                "loopback: {var}"
            );
        }
    }

    #[test]
    fn jwt_settings() {
        assert!(config(&[]).unwrap().auth.jwt.is_none());
        let c = config(&[("JWT_SECRET", "k"), ("JWT_LEEWAY", "0")]).unwrap();
        let jwt = c.auth.jwt.unwrap();
        assert_eq!(jwt.algorithm, Algorithm::HS256);
        assert_eq!(jwt.audience, "websocket");
        assert_eq!(jwt.leeway, Duration::ZERO);
        assert!(!format!("{jwt:?}").contains("\"k\""), "secret is redacted");
        let err = config(&[("JWT_SECRET", "k"), ("JWT_ALGORITHM", "none")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("JWT_ALGORITHM") && err.contains("none"), "{err}");
        let c = config(&[("BROADCAST_PUBLIC_CHANNELS", "lobby, kiosk.*")]).unwrap();
        assert_eq!(c.auth.public_channels, vec!["lobby", "kiosk.*"]);
    }

    #[test]
    fn redis_enabled_agrees_with_the_driver_or_is_refused() {
        let driver = |vars: &[(&str, &str)]| config(vars).map(|c| c.driver).map_err(|e| e.to_string());
        assert_eq!(driver(&[("BROADCAST_REDIS_ENABLED", "true")]), Ok(Driver::Redis));
        assert_eq!(driver(&[("BROADCAST_REDIS_ENABLED", "false")]), Ok(Driver::Websocket));
        let doc_env = [("BROADCAST_DRIVER", "websocket"), ("BROADCAST_REDIS_ENABLED", "false")];
        assert_eq!(driver(&doc_env), Ok(Driver::Websocket), "the document's .env");
        assert_eq!(
            driver(&[("BROADCAST_DRIVER", "redis"), ("BROADCAST_REDIS_ENABLED", "true")]),
            Ok(Driver::Redis)
        );
        for bad in [
            [("BROADCAST_DRIVER", "websocket"), ("BROADCAST_REDIS_ENABLED", "true")],
            [("BROADCAST_DRIVER", "redis"), ("BROADCAST_REDIS_ENABLED", "false")],
        ] {
            let err = driver(&bad).unwrap_err();
            assert!(
                err.contains("BROADCAST_REDIS_ENABLED") && err.contains("BROADCAST_DRIVER"),
                "{err}"
            );
        }
    }

    #[test]
    fn driver_names() {
        for (value, driver) in [
            ("local", Driver::Websocket),
            ("REDIS", Driver::Redis),
            ("null", Driver::Null),
        ] {
            assert_eq!(config(&[("BROADCAST_DRIVER", value)]).unwrap().driver, driver);
        }
    }

    #[test]
    fn redis_url_from_parts() {
        let c = config(&[("BROADCAST_REDIS_PASSWORD", "pw"), ("BROADCAST_REDIS_DATABASE", "3")]).unwrap();
        assert_eq!(c.redis.connection_url(), "redis://:pw@127.0.0.1:6379/3");
    }

    #[test]
    fn redis_cluster_and_sentinel_settings() {
        let c = config(&[
            ("REDIS_CLUSTER_NODES", "10.0.0.1:6379, redis://10.0.0.2:6379"),
            ("BROADCAST_REDIS_PASSWORD", "pw"),
        ])
        .unwrap();
        assert_eq!(c.redis.topology(), RedisTopology::Cluster);
        assert_eq!(c.redis.cluster_shards, 16);
        let urls: Vec<String> = c.redis.cluster_nodes.iter().map(|n| c.redis.node_url(n)).collect();
        assert_eq!(urls, ["redis://:pw@10.0.0.1:6379", "redis://10.0.0.2:6379"]);
        let c = config(&[("REDIS_SENTINELS", "10.0.0.1:26379")]).unwrap();
        assert_eq!(
            (c.redis.topology(), c.redis.sentinel_master.as_str()),
            (RedisTopology::Sentinel, "mymaster")
        );
        assert_eq!(config(&[]).unwrap().redis.topology(), RedisTopology::Single);
        let refused = |vars: &[(&str, &str)]| match config(vars) {
            Err(ConfigError::Invalid { var, .. }) => var,
            other => panic!("{vars:?} accepted: {other:?}"),
        };
        assert_eq!(
            refused(&[("REDIS_CLUSTER_NODES", "a:1"), ("REDIS_SENTINELS", "b:2")]),
            "REDIS_SENTINELS"
        );
        assert_eq!(refused(&[("REDIS_CLUSTER_SHARDS", "0")]), "REDIS_CLUSTER_SHARDS");
        assert_eq!(refused(&[("REDIS_CLUSTER_SHARDS", "1025")]), "REDIS_CLUSTER_SHARDS");
        assert_eq!(
            refused(&[("REDIS_CLUSTER_NODES", "a:1"), ("BROADCAST_CHANNELS_PREFIX", "app{x}_")]),
            "BROADCAST_CHANNELS_PREFIX"
        );
        assert!(
            config(&[("BROADCAST_CHANNELS_PREFIX", "app{x}_")]).is_ok(),
            "braces are fine on one Redis"
        );
    }

    fn with_file(vars: &[(&str, &str)], text: &str) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let file = ConfigFile::parse(Path::new("emit_hub.toml"), text)?;
        Config::from_parts(&|k| map.get(k).cloned(), Some(file))
    }

    #[test]
    fn the_emithub_names_set_the_same_settings() {
        let c = config(&[
            ("EMIT_HUB_HOST", "0.0.0.0"),
            ("EMIT_HUB_PORT", "3001"),
            ("EMIT_HUB_LOG_LEVEL", "debug"),
            ("EMIT_HUB_MESSAGE_SIZE_LIMIT", "2097152"),
            ("EMIT_HUB_WS_TIMEOUT", "60"),
            ("EMIT_HUB_WS_PING_INTERVAL", "45"),
            ("EMIT_HUB_CORS_ORIGINS", "*"),
        ])
        .unwrap();
        assert_eq!(c.server.host.to_string(), "0.0.0.0");
        assert_eq!(c.server.port, 3001);
        assert!(c.server.explicit_ports.websocket);
        assert_eq!(c.log.filter, "debug");
        assert_eq!(c.server.max_payload_size, 2 * 1024 * 1024);
        assert_eq!(c.websocket.connection_timeout, Some(Duration::from_secs(60)));
        assert_eq!(c.websocket.ping_interval, Duration::from_secs(45));
        assert_eq!(c.server.cors_allowed_origins, ["*"]);
        // The same value twice is fine; two different values are a mistake.
        assert!(config(&[("EMIT_HUB_PORT", "3001"), ("BROADCAST_WEBSOCKET_PORT", "3001")]).is_ok());
        let err = config(&[("EMIT_HUB_PORT", "3001"), ("BROADCAST_WEBSOCKET_PORT", "8080")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("EMIT_HUB_PORT") && err.contains("BROADCAST_WEBSOCKET_PORT"),
            "{err}"
        );
        let err = config(&[("LOG_FORMAT", "xml")]).unwrap_err().to_string();
        assert!(err.contains("LOG_FORMAT") && err.contains("xml"), "{err}");
        assert_eq!(config(&[("LOG_FORMAT", "JSON")]).unwrap().log.format, LogFormat::Json);
    }

    #[test]
    fn the_file_sets_what_the_environment_leaves_unset() {
        let text = "port = 3000\nlog_level = \"debug\"\n[websocket]\nping_interval = 45\npong_timeout = 15\n\
                    [cors]\nallowed_origins = [\"https://a.example\", \"https://b.example\"]\nmax_age = 7200\n\
                    [persistence]\nbackup_interval_hours = 0.5\n[env]\nBROADCAST_API_TOKEN = \"from-the-file-0123456789\"\n";
        let c = with_file(&[("BROADCAST_WEBSOCKET_PORT", "9000")], text).unwrap();
        assert_eq!(c.server.port, 9000, "the environment wins");
        assert_eq!(c.log.filter, "debug");
        assert_eq!(
            (c.websocket.ping_interval, c.websocket.ping_timeout),
            (Duration::from_secs(45), Duration::from_secs(15))
        );
        assert_eq!(
            c.server.cors_allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(c.server.cors_max_age, Duration::from_secs(7200));
        assert_eq!(c.emithub.backup_interval_hours, 0.5);
        assert_eq!(c.server.api_token.as_deref(), Some("from-the-file-0123456789"));
        // A bad value in the file names the file and its key.
        let err = with_file(&[], "[websocket]\nping_interval = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("emit_hub.toml") && err.contains("websocket.ping_interval") && err.contains("soon"),
            "{err}"
        );
        let err = with_file(&[], "[cors]\nallowed_methods = [\"G E T\"]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cors.allowed_methods"), "{err}");
    }

    #[test]
    fn a_generated_file_loads_back_unchanged() {
        let c = config(&[
            ("BROADCAST_WEBSOCKET_PORT", "9001"),
            ("CORS_ALLOWED_ORIGINS", "https://a.example,https://b.example"),
            ("BROADCAST_PING_INTERVAL", "500ms"),
            ("EMIT_HUB_BACKUP_INTERVAL_HOURS", "1.5"),
            ("EMIT_HUB_AUTO_BACKUP", "yes"),
            ("BROADCAST_APP_PORT", "off"),
            ("JWT_SECRET", "a-secret-that-must-not-be-printed"),
            ("RUST_LOG", "rustaxum=debug,info"),
        ])
        .unwrap();
        let text = c.sources.to_toml();
        assert!(!text.contains("a-secret-that-must-not-be-printed"));
        let back = with_file(&[("JWT_SECRET", "a-secret-that-must-not-be-printed")], &text).unwrap();
        assert_eq!(back.sources.to_toml(), text);
        assert_eq!(format!("{:?}", back.server), format!("{:?}", c.server));
        assert_eq!(format!("{:?}", back.websocket), format!("{:?}", c.websocket));
        assert_eq!(back.emithub, c.emithub);
        assert_eq!(back.log, c.log);
        assert_eq!(format!("{:?}", back.auth), format!("{:?}", c.auth));
        // Defaults too: every documented key is there.
        let defaults = Config::from_lookup(|_| None).unwrap().sources.to_toml();
        for var in vars::VARIABLES {
            assert!(defaults.contains(&format!("{} =", var.field())), "{} missing", var.key);
        }
        let back = with_file(&[], &defaults).unwrap();
        assert_eq!(back.sources.to_toml(), defaults);
    }

    #[test]
    fn a_reload_applies_live_settings_and_keeps_the_others() {
        let before = with_file(&[], "port = 9000\n[cors]\nallowed_origins = [\"https://a.example\"]").unwrap();
        let after = with_file(
            &[],
            "port = 9100\nlog_level = \"debug\"\n[cors]\nallowed_origins = [\"https://b.example\"]",
        )
        .unwrap();
        let (merged, applied, restart) = before.reloaded(&after).unwrap();
        let names = |v: &[&vars::Variable]| v.iter().map(|v| v.name).collect::<Vec<_>>();
        assert_eq!(names(&applied), ["RUST_LOG", "CORS_ALLOWED_ORIGINS"]);
        assert_eq!(names(&restart), ["BROADCAST_WEBSOCKET_PORT"]);
        assert_eq!(merged.server.port, 9000, "kept until a restart");
        assert_eq!(merged.server.cors_allowed_origins, ["https://b.example"]);
        assert_eq!(merged.log.filter, "debug");
        let (_, applied, restart) = merged.reloaded(&after).unwrap();
        assert!(applied.is_empty());
        assert_eq!(names(&restart), ["BROADCAST_WEBSOCKET_PORT"], "still pending");
    }
}
