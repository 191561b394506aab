//! Every setting once: its variable, the EmitHub names it also answers to, its key in the
//! configuration file, its default, what it does, and whether a running server applies a
//! new value on reload. `--show-env-vars`, `--generate-config`, the configuration file and
//! hot reload all read this table; a test checks that the configuration reads no variable
//! that is missing here, and that docs/configuration.md and .env.example list each.

/// How a setting is written in the TOML file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Text,
    /// A whole number.
    Integer,
    /// A number, fractions allowed.
    Number,
    /// `true` or `false`.
    Bool,
    /// A list of strings (comma-separated in the environment).
    List,
    /// Seconds as a whole number, or a string with a unit (`"500ms"`).
    Duration,
    /// A port number, or the string `"off"`.
    PortOrOff,
    /// `on`, `off` (or `true`, `false`), or a size in bytes.
    SwitchOrSize,
}

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    /// The environment variable.
    pub name: &'static str,
    /// Other variables that set it (the EmitHub documents' names); two of them set to
    /// different values stop start-up.
    pub aliases: &'static [&'static str],
    /// Generic names from other documents (`PORT`, `HOST`, ...), read only when neither
    /// the variable nor an alias is set: a `BROADCAST_*` setting always wins over them.
    pub weak: &'static [&'static str],
    /// Its key in the configuration file (`section.key` or `key`).
    pub key: &'static str,
    /// The default, as the variable would be written (empty: unset).
    pub default: &'static str,
    /// What it does.
    pub about: &'static str,
    /// How the file writes it.
    pub kind: Kind,
    /// Whether a running server applies a new value on reload (otherwise a restart is needed).
    pub reload: bool,
    /// A secret: never printed by `--generate-config`.
    pub secret: bool,
}

const fn var(
    name: &'static str,
    key: &'static str,
    kind: Kind,
    default: &'static str,
    about: &'static str,
) -> Variable {
    Variable {
        name,
        aliases: &[],
        weak: &[],
        key,
        default,
        about,
        kind,
        reload: false,
        secret: false,
    }
}

impl Variable {
    const fn alias(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }

    const fn weak(mut self, names: &'static [&'static str]) -> Self {
        self.weak = names;
        self
    }

    const fn live(mut self) -> Self {
        self.reload = true;
        self
    }

    const fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    /// The section of the file it is in (`""` for the top level).
    pub fn section(&self) -> &'static str {
        self.key.split_once('.').map_or("", |(section, _)| section)
    }

    /// Its name within its section.
    pub fn field(&self) -> &'static str {
        self.key.split_once('.').map_or(self.key, |(_, field)| field)
    }
}

use Kind::*;

/// Every setting, in the order `--show-env-vars` and `--generate-config` print them.
pub const VARIABLES: &[Variable] = &[
    // The top level: the server, as the EmitHub document's file shows it.
    var("BROADCAST_HOST", "host", Text, "127.0.0.1", "listen address; a non-loopback address requires BROADCAST_API_TOKEN").alias(&["EMIT_HUB_HOST"]).weak(&["REVERB_SERVER_HOST", "HOST"]),
    var("BROADCAST_WEBSOCKET_PORT", "port", Integer, "8080", "the WebSocket port (every route answers on it)").alias(&["EMIT_HUB_PORT"]).weak(&["REVERB_SERVER_PORT"]),
    var("BROADCAST_APP_PORT", "app_port", PortOrOff, "3000", "the application port, same routes; off for none"),
    var("EMIT_HUB_DB_PATH", "db_path", Text, "./data/emit_hub.redb", "EmitHub's redb database file (:memory: keeps nothing); unused with BROADCAST_DRIVER=redis"),
    var("EMIT_HUB_MAX_CONNECTIONS", "max_connections_per_channel", Integer, "1000", "default max_connections of a new EmitHub channel").live(),
    var("EMIT_HUB_MAX_CHANNELS", "max_channels", Integer, "1000", "EmitHub channels that may exist at once (deleted ones do not count); over it POST /api/v1/channels answers 409 too_many_channels").live(),
    var("EMIT_HUB_ALLOW_CLIENT_MESSAGES", "allow_client_messages_default", Bool, "true", "default allow_client_messages of a new EmitHub channel").live(),
    var("EMIT_HUB_RATE_LIMIT_PER_MINUTE", "rate_limit_per_minute_default", Integer, "60", "default rate_limit_per_minute of a new EmitHub channel").live(),
    var("BROADCAST_MAX_PAYLOAD_SIZE", "message_size_limit", Integer, "1048576", "largest HTTP body in bytes (a broadcast's size); larger gets 413").alias(&["EMIT_HUB_MESSAGE_SIZE_LIMIT"]),
    var("RUST_LOG", "log_level", Text, "info", "log level or filter, e.g. debug or rustaxum=debug,info").alias(&["EMIT_HUB_LOG_LEVEL"]).weak(&["LOG_LEVEL"]).live(),
    var("LOG_FORMAT", "log_format", Text, "text", "text, or json (one JSON object per line)"),
    var("BROADCAST_DRIVER", "driver", Text, "websocket", "default broadcast connection: websocket (alias local), redis (a cluster), log, null"),
    var("BROADCAST_CONNECTION", "laravel_broadcast_connection", Text, "", "Laravel 11+'s broadcaster (pusher, reverb, redis, log, null, ably): never stops start-up; explained once at start"),
    var("BROADCAST_REDIS_ENABLED", "redis_enabled", Bool, "", "true means BROADCAST_DRIVER=redis (the RustAxum document's name)"),
    var("BROADCAST_DASHBOARD_TOKEN", "dashboard_token", Text, "", "what /dashboard asks for; unset: the API token (with neither, the dashboard is open, which only a loopback address allows)").live().secret(),
    var("BROADCAST_TRUSTED_PROXIES", "trusted_proxies", List, "", "proxies (addresses and CIDRs, e.g. 127.0.0.1,10.0.0.0/8) whose X-Forwarded-For / X-Real-IP name the client; none by default: the peer is the client"),
    var("BROADCAST_METRICS_TOKEN", "metrics_token", Text, "", "read-only Bearer token for /metrics (Prometheus needs no publish right); the API token works too").secret().live(),
    var("BROADCAST_API_TOKEN", "api_token", Text, "", "Bearer token for publishing, the read endpoints and EmitHub's REST API; at least 16 characters on a non-loopback host").live().secret(),
    var("BROADCAST_PUBLIC_CHANNELS", "public_channels", List, "", "extra public channel patterns (* wildcard)"),
    var("BROADCAST_RULES_FILE", "rules_file", Text, "", "TOML channel rules"),
    var("BROADCAST_AUTH_FORWARD_URL", "auth_forward_url", Text, "", "the app's own authorization endpoint (e.g. Laravel's https://app.test/broadcasting/auth): /broadcasting/auth forwards each request there (cookies, Authorization, CSRF headers, body) and signs what it allows").live(),
    var("BROADCAST_WEBHOOK_URLS", "webhooks.urls", List, "", "URLs that get the environment app's webhooks (Pusher format, signed with PUSHER_APP_KEY/SECRET)"),
    var("BROADCAST_WEBHOOK_EVENTS", "webhooks.events", List, "", "which webhook events they get: channel_occupied, channel_vacated, member_added, member_removed, client_event (empty: all)"),
    var("BROADCAST_WEBHOOK_RETRY_FOR", "webhooks.retry_for", Duration, "60s", "how long a webhook batch is retried (5xx, 408, 429, network errors) before it counts as failed"),
    var("BROADCAST_WEBHOOK_ALLOW_PRIVATE", "webhooks.allow_private", Bool, "false", "no start-up warning for webhook URLs on loopback, private or link-local addresses (a receiver on this host or network)"),
    var("BROADCAST_WEBHOOK_MEMBER_DELAY", "webhooks.member_delay", Duration, "3s", "how long member_removed waits (not sent when the user is back by then)"),
    var("BROADCAST_HISTORY_CHANNELS", "history.channels", List, "", "patterns of the channels that keep history for recovery, e.g. orders.*,chat.{room}; none by default"),
    var("BROADCAST_HISTORY_SIZE", "history.size", Integer, "1000", "messages of history kept per channel"),
    var("BROADCAST_HISTORY_TTL", "history.ttl", Duration, "10m", "how long a message stays in history"),
    var("BROADCAST_HISTORY_STORE", "history.store", Text, "", "where history is kept: memory (one node's default), redb (the EmitHub database file) or redis (a cluster's only choice)"),
    var("BROADCAST_HISTORY_RECOVERY_LIMIT", "history.recovery_limit", Integer, "1000", "most messages one recovery sends (the newest; recovered is false beyond)"),
    var("BROADCAST_HISTORY_MEMORY_LIMIT", "history.memory_limit", Integer, "67108864", "bytes the memory store keeps over all channels (the oldest messages go first)"),
    var("BROADCAST_ROUTES_FILE", "routes_file", Text, "", "TOML routing rules: copy, drop or reshape messages at publish"),
    var("BROADCAST_LOG_FILE", "log_file", Text, "", "the log driver also appends broadcasts here, as JSON lines"),
    var("BROADCAST_DRAIN_SECONDS", "drain_seconds", Duration, "5", "on SIGTERM: seconds the node keeps serving with /ready at 503 (keep-alive off) before it stops accepting and asks clients to reconnect elsewhere (1012, Pusher 4200); 0 closes at once (1001)").live(),
    var("BROADCAST_SHUTDOWN_TIMEOUT", "shutdown_timeout", Duration, "10s", "how long shutdown waits for sockets and queued broadcasts").live(),
    var("BROADCAST_TLS_CERT", "tls_cert", Text, "", "PEM certificate chain (leaf first): every listener serves TLS (https, wss); reloaded on SIGHUP and when the file changes"),
    var("BROADCAST_TLS_KEY", "tls_key", Text, "", "PEM private key of BROADCAST_TLS_CERT (PKCS#8, PKCS#1 or SEC1)").secret(),
    var("BROADCAST_HTTP_HEADER_TIMEOUT", "http_header_timeout", Duration, "10s", "time a connection has to send a request's headers; also closes idle keep-alive connections"),
    var("BROADCAST_HTTP_REQUEST_TIMEOUT", "http_request_timeout", Duration, "30s", "time an HTTP request has to send its body and be answered (408 after)").live(),
    // [cors]
    var("CORS_ALLOWED_ORIGINS", "cors.allowed_origins", List, "", "origins whose browser pages may call the HTTP API, or *; empty = same origin only").alias(&["EMIT_HUB_CORS_ORIGINS"]).live(),
    var("CORS_ALLOWED_METHODS", "cors.allowed_methods", List, "GET,POST,PUT,PATCH,DELETE,OPTIONS", "methods allowed to those origins"),
    var("CORS_ALLOWED_HEADERS", "cors.allowed_headers", List, "*", "request headers allowed to those origins (* = any)"),
    var("CORS_MAX_AGE", "cors.max_age", Duration, "3600", "how long browsers may cache a preflight answer"),
    // [websocket]
    var("BROADCAST_WEBSOCKET_ENABLED", "websocket.enabled", Bool, "true", "serve the WebSocket endpoints"),
    var("BROADCAST_CONNECTION_TIMEOUT", "websocket.connection_timeout", Duration, "", "longest a socket may stay silent (no frame, no pong) before it is closed; unset = ping_interval + pong_timeout").alias(&["EMIT_HUB_WS_TIMEOUT"]).weak(&["CLIENT_TIMEOUT"]).live(),
    var("BROADCAST_FRAME_TIMEOUT", "websocket.frame_timeout", Duration, "10s", "how long an incomplete frame or fragmented message may stall before the socket is closed (1008); memory follows what arrives, not what a frame header announces").live(),
    var("BROADCAST_MAX_MESSAGE_SIZE", "websocket.max_continuation_size", Integer, "65536", "largest inbound WebSocket message in bytes, fragments included; larger closes with 1009").live(),
    var("BROADCAST_PING_INTERVAL", "websocket.ping_interval", Duration, "30s", "idle time before the server pings a socket").alias(&["EMIT_HUB_WS_PING_INTERVAL"]).weak(&["HEARTBEAT_INTERVAL"]).live(),
    var("BROADCAST_PING_TIMEOUT", "websocket.pong_timeout", Duration, "10s", "time to answer a ping before closing with 4201").live(),
    var("BROADCAST_MAX_CONNECTIONS", "websocket.max_connections", Integer, "0", "concurrent sockets on this node, 0 = no limit; over it the upgrade gets 503").weak(&["MAX_CONNECTIONS"]).live(),
    var("BROADCAST_MAX_CONNECTIONS_PER_USER", "websocket.max_connections_per_user", Integer, "0", "sockets one user may have open on this node, 0 = no limit; over it the upgrade gets 429 (Pusher: 4004)").live(),
    var("BROADCAST_MAX_CHANNELS_PER_CONNECTION", "websocket.max_channels_per_connection", Integer, "100", "channels one socket may join"),
    var("BROADCAST_SEND_QUEUE_SIZE", "websocket.send_queue_size", Integer, "256", "outbound queue per socket in messages; full closes with 4100"),
    var("BROADCAST_COMPRESSION", "websocket.compression", SwitchOrSize, "on", "permessage-deflate with clients that offer it (browsers do): on (messages of 1024 bytes or more sent compressed), off, or that threshold in bytes").live(),
    var("BROADCAST_CLIENT_EVENTS_PER_SECOND", "websocket.client_events_per_second", Integer, "10", "client events (whispers) per socket per second").live(),
    var("BROADCAST_TOKEN_GRACE", "websocket.token_grace", Duration, "5s", "how long a socket stays open after its token's exp").live(),
    // [rtc]: the typed-frame service (the real-time communication document).
    var("BROADCAST_RTC_PORT", "rtc.port", PortOrOff, "8081", "port of the typed-frame service, where /ws speaks typed frames; off for none (it is also on the main ports at /rtc/ws)").weak(&["PORT"]),
    var("BROADCAST_ROOM_GRACE", "rtc.room_grace", Duration, "60s", "how long a member whose sockets closed stays in a room, and an empty room stays"),
    var("BROADCAST_RTC_MAX_ROOMS_PER_USER", "rtc.max_rooms_per_user", Integer, "20", "rooms one user may own at once (created and not yet removed); over it CreateRoom answers too_many_rooms"),
    var("BROADCAST_RTC_ALLOW_ANONYMOUS", "rtc.allow_anonymous", Bool, "false", "with a JWT key configured, admit typed-frame connections without a token (anonymous: public topics only); otherwise they get 401"),
    var("BROADCAST_RATE_LIMIT_ENABLED", "rtc.rate_limit_enabled", Bool, "true", "the typed-frame service's rate limits, every level").weak(&["RATE_LIMIT_ENABLED"]),
    var("BROADCAST_RATE_LIMIT_CONNECTION", "rtc.rate_limit_connection", Integer, "20", "typed frames per second from one connection (0 = no limit)"),
    var("BROADCAST_RATE_LIMIT_USER", "rtc.rate_limit_user", Integer, "50", "messages per second from one user, all connections and nodes (0 = no limit)"),
    var("BROADCAST_RATE_LIMIT_TOPIC", "rtc.rate_limit_topic", Integer, "100", "messages per second into one topic (0 = no limit)"),
    var("BROADCAST_RATE_LIMIT_GLOBAL", "rtc.rate_limit_global", Integer, "10000", "messages per second from all typed-frame clients together (0 = no limit)"),
    // [persistence]
    var("EMIT_HUB_PERSIST_MESSAGES", "persistence.persist_messages_default", Bool, "false", "default persist_messages of a new EmitHub channel").live(),
    var("EMIT_HUB_MAX_MESSAGES_PER_CHANNEL", "persistence.max_messages_per_channel", Integer, "10000", "messages kept per EmitHub channel (the oldest go first)").live(),
    var("EMIT_HUB_MESSAGE_RETENTION_DAYS", "persistence.message_retention_days", Integer, "30", "days EmitHub messages are kept, 0 = forever").live(),
    var("EMIT_HUB_AUTO_BACKUP", "persistence.auto_backup", Bool, "false", "copy the database to backups/ beside it periodically"),
    var("EMIT_HUB_BACKUP_INTERVAL_HOURS", "persistence.backup_interval_hours", Number, "24", "hours between automatic backups (fractions allowed)"),
    // [jwt]
    var("JWT_SECRET", "jwt.secret", Text, "", "HMAC key for HS256/384/512 tokens").secret(),
    var("JWT_ALGORITHM", "jwt.algorithm", Text, "HS256", "the only algorithm accepted"),
    var("JWT_PUBLIC_KEY_FILE", "jwt.public_key_file", Text, "", "PEM public key for RS*, PS*, ES256/384, EdDSA"),
    var("JWT_AUDIENCE", "jwt.audience", Text, "websocket", "required value in aud"),
    var("JWT_LEEWAY", "jwt.leeway", Duration, "5s", "clock skew tolerated on exp/nbf"),
    // [redis]
    var("REDIS_URL", "redis.url", Text, "", "Redis for BROADCAST_DRIVER=redis (wins over the parts)").secret(),
    var("BROADCAST_REDIS_HOST", "redis.host", Text, "127.0.0.1", "Redis host (Laravel's REDIS_HOST when unset)").weak(&["REDIS_HOST"]),
    var("BROADCAST_REDIS_PORT", "redis.port", Integer, "6379", "Redis port (Laravel's REDIS_PORT when unset)").weak(&["REDIS_PORT"]),
    var("BROADCAST_REDIS_USERNAME", "redis.username", Text, "", "Redis ACL user (Laravel's REDIS_USERNAME when unset)").weak(&["REDIS_USERNAME"]),
    var("BROADCAST_REDIS_PASSWORD", "redis.password", Text, "", "Redis password (Laravel's REDIS_PASSWORD when unset; null means none, as in Laravel)").secret().weak(&["REDIS_PASSWORD"]),
    var("BROADCAST_REDIS_DATABASE", "redis.database", Integer, "0", "Redis database (Laravel's REDIS_DB when unset)").weak(&["REDIS_DB"]),
    var("BROADCAST_CHANNELS_PREFIX", "redis.prefix", Text, "", "prefix of Redis channels and keys; unset: REVERB_SCALING_CHANNEL's, else Laravel's Redis prefix when a Laravel .env is read (REDIS_PREFIX, or APP_NAME's slug + _database_), else none"),
    var("REDIS_PREFIX", "redis.laravel_prefix", Text, "", "Laravel's Redis prefix, which its Redis broadcaster puts before each channel name: the prefix here when BROADCAST_CHANNELS_PREFIX is unset"),
    var("APP_NAME", "redis.laravel_app_name", Text, "", "Laravel's app name: without REDIS_PREFIX, Laravel's Redis prefix is its slug + _database_ (Laravel -> laravel_database_)"),
    var("REVERB_SCALING_ENABLED", "redis.reverb_scaling_enabled", Bool, "", "Laravel Reverb's scaling switch: true makes this server share Redis with the others (as BROADCAST_DRIVER=redis) while Laravel keeps broadcasting through the Pusher API"),
    var("REVERB_SCALING_CHANNEL", "redis.reverb_scaling_channel", Text, "", "with REVERB_SCALING_ENABLED: names this deployment's Redis channels and keys (prefix NAME:) unless BROADCAST_CHANNELS_PREFIX is set"),
    var("REDIS_CLUSTER_NODES", "redis.cluster_nodes", List, "", "seed nodes of a Redis Cluster (host:port or redis:// URLs); set to run on a cluster").secret(),
    var("REDIS_CLUSTER_SHARDS", "redis.cluster_shards", Integer, "16", "sharded pub/sub channels the traffic is spread over on a Redis Cluster (1-1024)"),
    var("REDIS_SENTINELS", "redis.sentinels", List, "", "Redis Sentinel addresses (host:port); set to find the master through Sentinel"),
    var("REDIS_SENTINEL_MASTER", "redis.sentinel_master", Text, "mymaster", "the master's name in Sentinel"),
    // [pusher]
    var("PUSHER_APP_ID", "pusher.app_id", Text, "", "a Pusher app (with PUSHER_APP_KEY and PUSHER_APP_SECRET)"),
    var("PUSHER_APP_KEY", "pusher.app_key", Text, "", "the app's key"),
    var("PUSHER_APP_SECRET", "pusher.app_secret", Text, "", "the app's secret").secret(),
    var("REVERB_APP_ID", "pusher.reverb_app_id", Text, "", "a Laravel Reverb app (with REVERB_APP_KEY and REVERB_APP_SECRET), served like PUSHER_APP_*; the default app when BROADCAST_CONNECTION=reverb"),
    var("REVERB_APP_KEY", "pusher.reverb_app_key", Text, "", "the Reverb app's key"),
    var("REVERB_APP_SECRET", "pusher.reverb_app_secret", Text, "", "the Reverb app's secret").secret(),
    var("PUSHER_HOST", "pusher.laravel_host", Text, "", "where Laravel and Echo reach this server: when it is this machine, PUSHER_PORT is the listening port unless BROADCAST_WEBSOCKET_PORT (or REVERB_SERVER_PORT) is set"),
    var("PUSHER_PORT", "pusher.laravel_port", Integer, "", "the port Laravel and Echo use (see PUSHER_HOST)"),
    var("PUSHER_APPS_FILE", "pusher.apps_file", Text, "", "TOML file of more [[apps]]"),
    var("PUSHER_APP_ENCRYPTION_MASTER_KEY", "pusher.app_encryption_master_key", Text, "", "base64 of 32 bytes: shared secrets of the env app's private-encrypted-* channels").secret(),
    var("PUSHER_APP_ENABLE_SUBSCRIPTION_COUNT", "pusher.app_enable_subscription_count", Bool, "false", "send pusher_internal:subscription_count on the env app's channels"),
    var("PUSHER_APP_ENABLE_CLIENT_EVENTS", "pusher.app_enable_client_events", Bool, "true", "the env app's clients may send client-* events on private and presence channels"),
    var("PUSHER_APP_USER_AUTHENTICATION_TIMEOUT", "pusher.app_user_authentication_timeout", Integer, "0", "seconds the env app's sockets have to pusher:signin before 4009 (0: no sign-in needed)"),
    var("PUSHER_DEFAULT_APP", "pusher.default_app", Text, "", "id of the app whose channels the native protocol shares (default: the first app)"),
    var("PUSHER_MAX_EVENT_SIZE", "pusher.max_event_size", Integer, "10240", "largest event data over the Pusher HTTP API (bytes)").live(),
    var("PUSHER_MAX_CHANNELS_PER_EVENT", "pusher.max_channels_per_event", Integer, "100", "channels per Pusher event").live(),
    var("PUSHER_MAX_BATCH_SIZE", "pusher.max_batch_size", Integer, "10", "events per batch_events").live(),
];

/// The file that configures the server, when not given on the command line.
pub const CONFIG_FILE_VAR: &str = "BROADCAST_CONFIG_FILE";
/// [`CONFIG_FILE_VAR`]'s EmitHub name.
pub const CONFIG_FILE_ALIAS: &str = "EMIT_HUB_CONFIG";
/// The file read when it exists and none is named.
pub const DEFAULT_CONFIG_FILE: &str = "emit_hub.toml";

/// The setting `name` (or one of its aliases) is.
pub fn find(name: &str) -> Option<&'static Variable> {
    VARIABLES
        .iter()
        .find(|v| v.name == name || v.aliases.contains(&name) || v.weak.contains(&name))
}

/// The setting at `key` in the file.
pub fn by_key(key: &str) -> Option<&'static Variable> {
    VARIABLES.iter().find(|v| v.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys_are_unique() {
        let mut names: Vec<&str> = VARIABLES
            .iter()
            .flat_map(|v| std::iter::once(v.name).chain(v.aliases.iter().copied()))
            .collect();
        let mut keys: Vec<&str> = VARIABLES.iter().map(|v| v.key).collect();
        let (n, k) = (names.len(), keys.len());
        names.sort_unstable();
        names.dedup();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!((names.len(), keys.len()), (n, k));
    }

    #[test]
    fn every_variable_is_read_and_every_read_variable_is_listed() {
        let read = std::sync::Mutex::new(std::collections::BTreeSet::new());
        super::super::Config::from_lookup(|k| {
            read.lock().unwrap().insert(k.to_string());
            None
        })
        .unwrap();
        // Variables read only when another is set.
        super::super::Config::from_lookup(|k| {
            read.lock().unwrap().insert(k.to_string());
            (k == "JWT_SECRET").then(|| "x".repeat(32))
        })
        .unwrap();
        let read = read.into_inner().unwrap();
        for name in &read {
            assert!(find(name).is_some(), "{name} is read but not in VARIABLES");
        }
        for v in VARIABLES {
            assert!(read.contains(v.name), "{} is listed but never read", v.name);
            for alias in v.aliases {
                assert!(read.contains(*alias), "{alias} is listed but never read");
            }
        }
    }

    #[test]
    fn the_configuration_reference_and_env_example_list_every_variable() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
        let example = std::fs::read_to_string(root.join(".env.example")).unwrap();
        for v in VARIABLES {
            assert!(
                readme.contains(v.name),
                "docs/configuration.md does not mention {}",
                v.name
            );
            assert!(
                example
                    .lines()
                    .any(|l| l.starts_with(&format!("{}=", v.name)) || l.starts_with(&format!("# {}=", v.name))),
                ".env.example does not list {}",
                v.name
            );
        }
    }
}
