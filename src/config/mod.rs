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
mod laravel;
mod library;
mod read;
pub mod vars;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;

pub use crate::auth::JwtConfig;
pub use crate::backend::{RedisConfig, RedisTopology};
pub use crate::net::TrustedProxies;
pub use crate::services::emithub::{EmitHubConfig, DEFAULT_EMIT_HUB_DB_PATH, DEFAULT_EMIT_HUB_MAX_CHANNELS};
pub use crate::services::pusher::{Apps, PusherApp};
pub use crate::services::rtc::{RtcConfig, DEFAULT_MAX_ROOMS_PER_USER};
pub use crate::setting::InvalidSetting;
pub use crate::webhooks::{WebhookConfig, WebhookTarget};
pub use env::parse_duration;
pub use file::{ConfigFile, Origin, Sources};

use env::Env;
use read::*;

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

/// The certificate chain and private key files of TLS (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `BROADCAST_TLS_CERT`: the certificate chain, leaf first.
    pub cert: PathBuf,
    /// `BROADCAST_TLS_KEY`: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
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
    /// `BROADCAST_METRICS_TOKEN`: a read-only token for `/metrics` (the API token works too).
    pub metrics_token: Option<String>,
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
    /// `BROADCAST_TLS_CERT` and `BROADCAST_TLS_KEY`: PEM files; every listener then
    /// serves TLS (HTTPS and `wss://`).
    pub tls: Option<TlsFiles>,
    /// `BROADCAST_TRUSTED_PROXIES`: the peers whose `X-Forwarded-For` / `X-Real-IP` name
    /// the client (for the wrong-token limit and logs); none by default.
    pub trusted_proxies: crate::net::TrustedProxies,
    /// `BROADCAST_HTTP_REQUEST_TIMEOUT`: time an HTTP request has to send its body and be
    /// answered (not WebSocket sessions), default 30s.
    pub http_request_timeout: Duration,
    /// `BROADCAST_SHUTDOWN_TIMEOUT`: how long shutdown waits for sockets to close, default 10s.
    pub shutdown_timeout: Duration,
    /// `BROADCAST_DRAIN_SECONDS`: on SIGTERM, how long the node keeps serving with `/ready`
    /// at 503 (and HTTP keep-alive off) before it stops accepting and asks its clients to
    /// reconnect elsewhere (1012, Pusher 4200); default 5s, 0 closes at once (1001).
    pub drain: Duration,
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
    /// `BROADCAST_FRAME_TIMEOUT`: how long an incomplete frame or fragmented message may
    /// stall before the socket is closed (1008), default 10s.
    pub frame_timeout: Duration,
    /// `BROADCAST_CLIENT_EVENTS_PER_SECOND`: whispers allowed per connection, default 10.
    pub client_events_per_second: u32,
    /// `BROADCAST_COMPRESSION`: permessage-deflate with clients that offer it, `on`
    /// (messages of 1024 bytes or more compressed), `off`, or the threshold in bytes;
    /// default `on`.
    pub compression: crate::websocket::Compression,
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
    /// `BROADCAST_AUTH_FORWARD_URL`: the app's own authorization endpoint, which
    /// `/broadcasting/auth` asks before signing (Laravel's Redis-broadcaster path).
    pub forward_url: Option<String>,
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
///
/// ```
/// # fn main() -> Result<(), rustaxum::config::ConfigError> {
/// // As the server reads it: the environment, `.env`, then the configuration file.
/// fn as_the_server_reads_it() -> Result<rustaxum::Config, rustaxum::config::ConfigError> {
///     rustaxum::Config::from_env()
/// }
/// // Or from any lookup (tests, an application's own settings).
/// let config = rustaxum::Config::from_lookup(|var| match var {
///     "BROADCAST_PUBLIC_CHANNELS" => Some("news.*".into()),
///     "EMIT_HUB_DB_PATH" => Some(":memory:".into()),
///     _ => None,
/// })?;
/// assert_eq!(config.auth.public_channels, ["news.*"]);
/// # let _ = as_the_server_reads_it; Ok(()) }
/// ```
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
    /// What the server explains once at start: settings that are a Laravel project's
    /// rather than rustaxum's, and what rustaxum does with them.
    pub notes: Vec<Note>,
}

/// Something the configuration explains once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Worth a warning (something will not work as the setting's author may expect).
    pub warn: bool,
    /// What it says.
    pub text: String,
}

impl Note {
    fn info(text: String) -> Self {
        Self { warn: false, text }
    }

    fn warn(text: String) -> Self {
        Self { warn: true, text }
    }
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
            metrics_token: None,
            cors_allowed_origins: Vec::new(),
            cors_allowed_methods: ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
                .map(String::from)
                .to_vec(),
            cors_allowed_headers: vec!["*".into()],
            cors_max_age: Duration::from_secs(3600),
            max_payload_size: 1024 * 1024,
            http_header_timeout: Duration::from_secs(10),
            tls: None,
            trusted_proxies: crate::net::TrustedProxies::default(),
            http_request_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(5),
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
            frame_timeout: Duration::from_secs(10),
            client_events_per_second: 10,
            compression: crate::websocket::Compression::default(),
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
        let origins: RefCell<BTreeMap<&'static str, Origin>> = RefCell::default();
        let resolve = |key: &str| -> Option<String> {
            let var = vars::find(key);
            let name = var.map_or(key, |v| v.name);
            let set = |n: &str| lookup(n).filter(|v| !v.trim().is_empty());
            let named = |n: &'static str| set(n).map(|v| (Origin::Variable(n), v));
            let env = match var {
                Some(v) => std::iter::once(v.name)
                    .chain(v.aliases.iter().copied())
                    .chain(v.weak.iter().copied())
                    .find_map(named),
                None => set(name).map(|v| (Origin::Default, v)),
            };
            let (origin, value) = match env {
                Some((origin, v)) => (origin, Some(v)),
                None => (
                    Origin::File,
                    file.as_ref().and_then(|f| f.get(name)).map(str::to_string),
                ),
            };
            if let (Some(var), Some(v)) = (var, &value) {
                seen.borrow_mut().insert(var.name, v.clone());
                origins.borrow_mut().insert(var.name, origin);
            }
            value
        };
        let built = Self::build(&resolve);
        let values = seen.into_inner();
        let origins = origins.into_inner();
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
            origins,
            overrides: BTreeMap::new(),
        };
        Ok(config)
    }

    fn build(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(lookup);
        let mut notes: Vec<Note> = Vec::new();
        let driver = driver(&env, &mut notes)?;
        laravel::connection(&env, driver, &mut notes);
        let pusher = pusher(&env, &mut notes)?;
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
            server: server(&env, &mut notes)?,
            websocket: websocket(&env)?,
            auth: auth(&env)?,
            redis: redis(&env)?,
            pusher,
            log_file: env.string("BROADCAST_LOG_FILE").map(PathBuf::from),
            emithub: emithub(&env)?,
            routes_file: env.string("BROADCAST_ROUTES_FILE").map(PathBuf::from),
            rtc: rtc(&env)?,
            history,
            webhooks: webhooks(&env)?,
            log: log(&env)?,
            sources: Sources::default(),
            notes,
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

    /// The base URL a local client (the CLI) uses to reach this server: `https://` when
    /// it serves TLS (`BROADCAST_TLS_CERT`).
    pub fn server_url(&self) -> String {
        let host = if self.server.host.is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            self.server.host
        };
        let scheme = if self.server.tls.is_some() { "https" } else { "http" };
        match host {
            IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{}", self.server.port),
            IpAddr::V4(v4) => format!("{scheme}://{v4}:{}", self.server.port),
        }
    }
}

mod checks;

#[cfg(test)]
mod tests;
