//! Reading each section from the environment (and the file, through the same lookup):
//! one function per section, each naming the variable of any value it refuses.

use std::path::PathBuf;
use std::time::Duration;

use super::*;

/// `BROADCAST_DRIVER` (Laravel's values too: see [`super::laravel`]), with the document's
/// `BROADCAST_REDIS_ENABLED`: `true` alone means the redis driver; a value that
/// contradicts `BROADCAST_DRIVER` is refused.
pub(super) fn driver(env: &Env<'_>, notes: &mut Vec<Note>) -> Result<Driver, ConfigError> {
    let driver = super::laravel::driver(env, notes)?;
    let driver = super::laravel::scaling(env, driver, notes)?;
    let driver = super::laravel::redis_broadcaster(env, driver);
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

pub(super) fn server(env: &Env<'_>, notes: &mut Vec<Note>) -> Result<ServerConfig, ConfigError> {
    let d = ServerConfig::default();
    // BROADCAST_WEBSOCKET_PORT (or REVERB_SERVER_PORT), else the PUSHER_PORT of a Laravel
    // .env whose PUSHER_HOST is this machine: where Laravel and Echo look for the server.
    let websocket_port = match env.parse("BROADCAST_WEBSOCKET_PORT", "a port number 0-65535")? {
        Some(port) => Some(port),
        None => super::laravel::pusher_port(env, notes)?,
    };
    Ok(ServerConfig {
        host: env
            .parse("BROADCAST_HOST", "an IP address such as 127.0.0.1")?
            .unwrap_or(d.host),
        port: websocket_port.unwrap_or(d.port),
        app_port: match env.string("BROADCAST_APP_PORT") {
            Some(v) if v.eq_ignore_ascii_case("off") => None,
            _ => Some(
                env.parse("BROADCAST_APP_PORT", "a port number 0-65535, or off")?
                    .unwrap_or(3000),
            ),
        },
        explicit_ports: ExplicitPorts {
            websocket: websocket_port.is_some(),
            app: env.string("BROADCAST_APP_PORT").is_some(),
        },
        api_token: env.string("BROADCAST_API_TOKEN"),
        dashboard_token: env.string("BROADCAST_DASHBOARD_TOKEN"),
        metrics_token: env.string("BROADCAST_METRICS_TOKEN"),
        cors_allowed_origins: env.list("CORS_ALLOWED_ORIGINS"),
        cors_allowed_methods: match env.list("CORS_ALLOWED_METHODS") {
            list if list.is_empty() => d.cors_allowed_methods,
            list => {
                for m in &list {
                    if http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).is_err() {
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
                    if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
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
        tls: tls(env)?,
        trusted_proxies: crate::net::TrustedProxies::parse(&env.list("BROADCAST_TRUSTED_PROXIES")).map_err(|bad| {
            ConfigError::Invalid {
                var: "BROADCAST_TRUSTED_PROXIES",
                value: bad,
                reason: "expected addresses or networks such as 127.0.0.1,10.0.0.0/8".into(),
            }
        })?,
        http_request_timeout: env
            .duration("BROADCAST_HTTP_REQUEST_TIMEOUT")?
            .unwrap_or(d.http_request_timeout),
        shutdown_timeout: env
            .duration("BROADCAST_SHUTDOWN_TIMEOUT")?
            .unwrap_or(d.shutdown_timeout),
        drain: env.duration_or_zero("BROADCAST_DRAIN_SECONDS")?.unwrap_or(d.drain),
    })
}

/// `BROADCAST_TLS_CERT` and `BROADCAST_TLS_KEY`, both or neither.
fn tls(env: &Env<'_>) -> Result<Option<TlsFiles>, ConfigError> {
    match (env.string("BROADCAST_TLS_CERT"), env.string("BROADCAST_TLS_KEY")) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
        })),
        (None, None) => Ok(None),
        (Some(cert), None) => Err(ConfigError::Invalid {
            var: "BROADCAST_TLS_KEY",
            value: String::new(),
            reason: format!("BROADCAST_TLS_CERT={cert} needs its private key: set BROADCAST_TLS_KEY"),
        }),
        (None, Some(key)) => Err(ConfigError::Invalid {
            var: "BROADCAST_TLS_CERT",
            value: String::new(),
            reason: format!("BROADCAST_TLS_KEY={key} needs its certificate chain: set BROADCAST_TLS_CERT"),
        }),
    }
}

pub(super) fn websocket(env: &Env<'_>) -> Result<WebSocketConfig, ConfigError> {
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
        frame_timeout: env.duration("BROADCAST_FRAME_TIMEOUT")?.unwrap_or(d.frame_timeout),
        client_events_per_second: env
            .positive("BROADCAST_CLIENT_EVENTS_PER_SECOND")?
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            .unwrap_or(d.client_events_per_second),
        compression: env
            .parse("BROADCAST_COMPRESSION", crate::websocket::Compression::EXPECTED)?
            .unwrap_or(d.compression),
    })
}

pub(super) fn auth(env: &Env<'_>) -> Result<AuthConfig, ConfigError> {
    Ok(AuthConfig {
        jwt: jwt(env)?,
        public_channels: env.list("BROADCAST_PUBLIC_CHANNELS"),
        rules_file: env.string("BROADCAST_RULES_FILE").map(PathBuf::from),
        token_grace: env
            .duration_or_zero("BROADCAST_TOKEN_GRACE")?
            .unwrap_or(Duration::from_secs(5)),
        forward_url: match env.string("BROADCAST_AUTH_FORWARD_URL") {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => Some(url),
            Some(url) => {
                return Err(ConfigError::Invalid {
                    var: "BROADCAST_AUTH_FORWARD_URL",
                    value: url,
                    reason: "expected an http:// or https:// URL, e.g. https://app.test/broadcasting/auth".into(),
                })
            }
            None => None,
        },
    })
}

pub(super) fn jwt(env: &Env<'_>) -> Result<Option<JwtConfig>, ConfigError> {
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
pub(super) fn check_aliases(lookup: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
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

pub(super) fn rtc(env: &Env<'_>) -> Result<RtcConfig, ConfigError> {
    let d = crate::services::rtc::RateLimits::default();
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
        limits: crate::services::rtc::RateLimits {
            enabled: env.bool("BROADCAST_RATE_LIMIT_ENABLED")?.unwrap_or(d.enabled),
            per_connection: per_second("BROADCAST_RATE_LIMIT_CONNECTION", d.per_connection)?,
            per_user: per_second("BROADCAST_RATE_LIMIT_USER", d.per_user)?,
            per_topic: per_second("BROADCAST_RATE_LIMIT_TOPIC", d.per_topic)?,
            global: per_second("BROADCAST_RATE_LIMIT_GLOBAL", d.global)?,
        },
    })
}

pub(super) fn webhooks(env: &Env<'_>) -> Result<crate::webhooks::WebhookConfig, ConfigError> {
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
        allow_private: env.bool("BROADCAST_WEBHOOK_ALLOW_PRIVATE")?.unwrap_or(d.allow_private),
    })
}

pub(super) fn history(env: &Env<'_>) -> Result<crate::history::HistoryConfig, ConfigError> {
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

/// A bare word in a log filter that is no level: tracing takes it as a target to log at
/// every level, so `RUST_LOG=verbose` would silently log nothing of the server. Targets
/// are accepted as `target=level`, or bare when they name this crate or a module path.
fn suspicious_log_directive(filter: &str) -> Option<&str> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    filter.split(',').map(str::trim).filter(|d| !d.is_empty()).find(|d| {
        !d.contains('=')
            && !d.contains("::")
            && !d.contains('[')
            && !d.starts_with("rustaxum")
            && !LEVELS.contains(&d.to_ascii_lowercase().as_str())
    })
}

pub(super) fn log(env: &Env<'_>) -> Result<LogConfig, ConfigError> {
    let filter = env.string("RUST_LOG").unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&filter).is_err() || suspicious_log_directive(&filter).is_some() {
        let reason = match suspicious_log_directive(&filter) {
            Some(word) => format!(
                "{word:?} is neither a level (error, warn, info, debug, trace, off) nor target=level; \
                 as a bare target it would log nothing of the server"
            ),
            None => "expected a level (error, warn, info, debug, trace) or a filter such as rustaxum=debug,info".into(),
        };
        return Err(ConfigError::Invalid {
            var: "RUST_LOG",
            value: filter,
            reason,
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

pub(super) fn emithub(env: &Env<'_>) -> Result<EmitHubConfig, ConfigError> {
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

pub(super) fn redis(env: &Env<'_>) -> Result<RedisConfig, ConfigError> {
    let d = RedisConfig::default();
    // Laravel's env() reads `null` and `(null)` as no value (REDIS_PASSWORD=null).
    let laravel = |var: &str| env.string(var).filter(|v| !matches!(v.as_str(), "null" | "(null)"));
    Ok(RedisConfig {
        url: laravel("REDIS_URL"),
        host: laravel("BROADCAST_REDIS_HOST").unwrap_or(d.host),
        port: env.parse("BROADCAST_REDIS_PORT", "a port number")?.unwrap_or(d.port),
        username: laravel("BROADCAST_REDIS_USERNAME"),
        password: laravel("BROADCAST_REDIS_PASSWORD"),
        database: env
            .parse("BROADCAST_REDIS_DATABASE", "a database number")?
            .unwrap_or(d.database),
        channels_prefix: match env.string_allow_empty("BROADCAST_CHANNELS_PREFIX") {
            Some(prefix) => prefix,
            None => super::laravel::redis_prefix(env).unwrap_or(d.channels_prefix),
        },
        cluster_nodes: env.list("REDIS_CLUSTER_NODES"),
        cluster_shards: env
            .parse("REDIS_CLUSTER_SHARDS", "a number of shards from 1 to 1024")?
            .unwrap_or(d.cluster_shards),
        sentinels: env.list("REDIS_SENTINELS"),
        sentinel_master: env.string("REDIS_SENTINEL_MASTER").unwrap_or(d.sentinel_master),
    }
    .validated()?)
}

pub(super) fn pusher(env: &Env<'_>, notes: &mut Vec<Note>) -> Result<PusherConfig, ConfigError> {
    let d = PusherConfig::default();
    let mut apps = super::laravel::env_apps(env, notes)?;
    for app in &mut apps {
        *app = PusherApp {
            encryption_master_key: env.string("PUSHER_APP_ENCRYPTION_MASTER_KEY"),
            enable_subscription_count: env.bool("PUSHER_APP_ENABLE_SUBSCRIPTION_COUNT")?.unwrap_or(false),
            enable_client_events: env.bool("PUSHER_APP_ENABLE_CLIENT_EVENTS")?.unwrap_or(true),
            user_authentication_timeout: env
                .parse::<u64>("PUSHER_APP_USER_AUTHENTICATION_TIMEOUT", "whole seconds (0: off)")?
                .unwrap_or(0),
            ..PusherApp::new(app.id.clone(), app.key.clone(), app.secret.clone())
        };
    }
    let file = env.string("PUSHER_APPS_FILE").map(PathBuf::from);
    Ok(PusherConfig {
        apps: Apps::from_parts_with_default(apps, file.as_deref(), env.string("PUSHER_DEFAULT_APP").as_deref())?,
        max_event_size: env.positive("PUSHER_MAX_EVENT_SIZE")?.unwrap_or(d.max_event_size),
        max_channels_per_event: env
            .positive("PUSHER_MAX_CHANNELS_PER_EVENT")?
            .unwrap_or(d.max_channels_per_event),
        max_batch_size: env.positive("PUSHER_MAX_BATCH_SIZE")?.unwrap_or(d.max_batch_size),
    })
}
