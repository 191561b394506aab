//! A Laravel project's `.env`, read as Laravel means it: `BROADCAST_DRIVER` (Laravel ≤ 10)
//! and `BROADCAST_CONNECTION` (11+) name Laravel's broadcaster, `PUSHER_APP_*` and
//! `REVERB_APP_*` the app Laravel publishes to. None of Laravel's values stops the server;
//! each one that is Laravel's rather than rustaxum's is explained once at start (the
//! notes), with what rustaxum does with it.

use super::env::Env;
use super::{ConfigError, Driver, Note};
use crate::services::pusher::PusherApp;

/// Laravel's broadcasters that mean "publish to a Pusher-protocol server" (this one).
const PUSHER_LIKE: [&str; 2] = ["pusher", "reverb"];

/// `BROADCAST_DRIVER`: rustaxum's own values, or Laravel's (`pusher`, `reverb`, `ably`),
/// which leave rustaxum's default driver and add a note.
pub(super) fn driver(env: &Env<'_>, notes: &mut Vec<Note>) -> Result<Option<Driver>, ConfigError> {
    let Some(raw) = env.string("BROADCAST_DRIVER") else {
        return Ok(None);
    };
    let value = raw.to_ascii_lowercase();
    if let Ok(driver) = value.parse::<Driver>() {
        if matches!(driver, Driver::Log | Driver::Null) {
            notes.push(Note::info(format!(
                "BROADCAST_DRIVER={value}: events this process dispatches through its own Rust code are {}; \
                 the HTTP APIs and sockets deliver as always (in a Laravel 10 .env this is Laravel's setting: \
                 Laravel then sends nothing here until BROADCAST_DRIVER=pusher)",
                if driver == Driver::Log { "logged" } else { "dropped" }
            )));
        }
        return Ok(Some(driver));
    }
    if PUSHER_LIKE.contains(&value.as_str()) || value == "ably" {
        notes.push(laravel_broadcaster(env, "BROADCAST_DRIVER", &value));
        return Ok(Some(Driver::default()));
    }
    Err(ConfigError::Invalid {
        var: "BROADCAST_DRIVER",
        value: raw,
        reason: "expected websocket, local, redis, log or null (or Laravel's pusher, reverb, ably)".into(),
    })
}

/// What Laravel does with broadcaster `value`, and so what this server does.
fn laravel_broadcaster(env: &Env<'_>, var: &str, value: &str) -> Note {
    let scaling = env.bool("REVERB_SCALING_ENABLED").ok().flatten() == Some(true);
    match value {
        "pusher" | "reverb" => Note::info(format!(
            "{var}={value} is Laravel's setting: Laravel publishes to this server over the Pusher HTTP API, \
             which it serves (rustaxum's own driver {})",
            if scaling {
                "is redis: REVERB_SCALING_ENABLED=true"
            } else {
                "stays websocket"
            }
        )),
        "ably" => Note::warn(format!(
            "{var}=ably is Laravel's setting: Laravel publishes to Ably, not to this server"
        )),
        "redis" => Note::warn(format!(
            "{var}=redis is Laravel's setting: Laravel publishes into Redis, which this server does not listen to \
             while BROADCAST_DRIVER={} (unset it, or set it to redis)",
            env.string("BROADCAST_DRIVER").unwrap_or_default()
        )),
        "log" | "null" => Note::warn(format!(
            "{var}={value} is Laravel's setting: Laravel sends its broadcasts {} and nothing reaches this server \
             from Laravel until {var}=pusher (or reverb)",
            if value == "log" { "to its log" } else { "nowhere" }
        )),
        other => Note::info(format!(
            "{var}={other} is Laravel's setting; this server does not use it"
        )),
    }
}

/// `BROADCAST_CONNECTION` (Laravel 11+): only explained, never used.
pub(super) fn connection(env: &Env<'_>, driver: Driver, notes: &mut Vec<Note>) {
    let Some(value) = env.string("BROADCAST_CONNECTION").map(|v| v.to_ascii_lowercase()) else {
        return;
    };
    if value == "redis" && driver == Driver::Redis {
        notes.push(Note::info(
            "BROADCAST_CONNECTION=redis: Laravel publishes into Redis, and this server listens there \
             (rustaxum's redis driver); private and presence channels need an authorization that signs for the \
             Pusher protocol: BROADCAST_AUTH_FORWARD_URL, or JWT (see docs/laravel.md)"
                .into(),
        ));
        return;
    }
    notes.push(laravel_broadcaster(env, "BROADCAST_CONNECTION", &value));
}

/// Laravel 11's `BROADCAST_CONNECTION=redis` with no `BROADCAST_DRIVER`: Laravel publishes
/// into Redis, so the server must listen there (the redis driver).
pub(super) fn redis_broadcaster(env: &Env<'_>, driver: Option<Driver>) -> Option<Driver> {
    let laravel_redis = env
        .string("BROADCAST_CONNECTION")
        .is_some_and(|v| v.eq_ignore_ascii_case("redis"));
    match driver {
        None if laravel_redis => Some(Driver::Redis),
        other => other,
    }
}

/// The Laravel broadcaster named by `BROADCAST_CONNECTION`, else `BROADCAST_DRIVER`.
fn broadcaster(env: &Env<'_>) -> Option<String> {
    env.string("BROADCAST_CONNECTION")
        .or_else(|| env.string("BROADCAST_DRIVER"))
        .map(|v| v.to_ascii_lowercase())
}

/// One app from three variables set together, `None` when none is set.
fn app_from(env: &Env<'_>, names: [&'static str; 3]) -> Result<Option<PusherApp>, ConfigError> {
    match names.map(|n| env.string(n)) {
        [Some(id), Some(key), Some(secret)] => Ok(Some(PusherApp::new(id, key, secret))),
        [None, None, None] => Ok(None),
        _ => Err(ConfigError::Invalid {
            var: names[0],
            value: env.string(names[0]).unwrap_or_default(),
            reason: format!("set {}, {} and {} together", names[0], names[1], names[2]),
        }),
    }
}

/// The apps of the environment: `PUSHER_APP_*` and `REVERB_APP_*`. When both are set, the
/// one Laravel's broadcaster names (`reverb`: Reverb's) is the default app, and the other
/// is served too unless it has the same id or key (then only the first is).
pub(super) fn env_apps(env: &Env<'_>, notes: &mut Vec<Note>) -> Result<Vec<PusherApp>, ConfigError> {
    let pusher = app_from(env, ["PUSHER_APP_ID", "PUSHER_APP_KEY", "PUSHER_APP_SECRET"])?;
    let reverb = app_from(env, ["REVERB_APP_ID", "REVERB_APP_KEY", "REVERB_APP_SECRET"])?;
    let reverb_first = broadcaster(env).as_deref() == Some("reverb");
    let (first, second, names) = if reverb_first {
        (reverb, pusher, ("REVERB_APP_*", "PUSHER_APP_*"))
    } else {
        (pusher, reverb, ("PUSHER_APP_*", "REVERB_APP_*"))
    };
    let mut apps: Vec<PusherApp> = first.into_iter().collect();
    if let Some(second) = second {
        match apps.first() {
            Some(a) if a.id == second.id || a.key == second.key => notes.push(Note::info(format!(
                "{} and {} name the same app (id or key); {} is used",
                names.0, names.1, names.0
            ))),
            _ => apps.push(second),
        }
    }
    Ok(apps)
}

/// `REVERB_SCALING_ENABLED=true` (Reverb's switch for several servers on one Redis): the
/// server runs on Redis, while Laravel's own broadcaster stays `pusher` or `reverb`. It
/// wins over a rustaxum value of `BROADCAST_DRIVER` other than `redis`, and says so.
pub(super) fn scaling(
    env: &Env<'_>,
    driver: Option<Driver>,
    notes: &mut Vec<Note>,
) -> Result<Option<Driver>, ConfigError> {
    if env.bool("REVERB_SCALING_ENABLED")? != Some(true) {
        return Ok(driver);
    }
    let own = env.string("BROADCAST_DRIVER").filter(|raw| {
        raw.to_ascii_lowercase()
            .parse::<Driver>()
            .is_ok_and(|d| d != Driver::Redis)
    });
    if let Some(raw) = own {
        notes.push(Note::warn(format!(
            "REVERB_SCALING_ENABLED=true wins over BROADCAST_DRIVER={raw}: this server shares Redis with the other \
             servers (rustaxum's redis driver); remove one of the two to silence this"
        )));
    }
    let laravel = broadcaster(env).unwrap_or_else(|| "pusher".into());
    notes.push(Note::info(format!(
        "REVERB_SCALING_ENABLED=true: this server shares Redis with the other servers, as Reverb's scaling does; \
         Laravel keeps broadcasting through the Pusher HTTP API (its broadcaster: {laravel})"
    )));
    Ok(Some(Driver::Redis))
}

/// The prefix of Redis channels and keys when `BROADCAST_CHANNELS_PREFIX` is unset:
/// `REVERB_SCALING_CHANNEL:` when Reverb's scaling names a channel; else, in a Laravel
/// `.env` (`REDIS_PREFIX` or `APP_NAME` set), the prefix Laravel's Redis broadcaster puts
/// before every channel name: `REDIS_PREFIX`, or the slug of `APP_NAME` + `_database_`.
pub(super) fn redis_prefix(env: &Env<'_>) -> Option<String> {
    if env.bool("REVERB_SCALING_ENABLED").ok().flatten() == Some(true) {
        if let Some(channel) = env.string("REVERB_SCALING_CHANNEL") {
            return Some(format!("{channel}:"));
        }
    }
    match (env.string_allow_empty("REDIS_PREFIX"), env.string("APP_NAME")) {
        (Some(prefix), _) => Some(prefix),
        (None, Some(name)) => Some(format!("{}_database_", slug(&name))),
        (None, None) => None,
    }
}

/// Laravel's `Str::slug($name, '_')`: transliterated to ASCII, lower case, `@` as `_at_`,
/// anything but letters, digits, spaces and `_` dropped, runs of spaces and separators one
/// `_`, none at the ends (`My Café!` → `my_cafe`).
pub(super) fn slug(name: &str) -> String {
    let ascii = deunicode::deunicode(name);
    let lowered = ascii.replace('-', "_").replace('@', "_at_").to_lowercase();
    let kept: String = lowered
        .chars()
        .filter(|c| *c == '_' || c.is_alphanumeric() || c.is_whitespace())
        .collect();
    let mut out = String::with_capacity(kept.len());
    for c in kept.chars() {
        if c == '_' || c.is_whitespace() {
            if !out.ends_with('_') {
                out.push('_');
            }
        } else {
            out.push(c);
        }
    }
    out.trim_matches('_').to_string()
}

/// The port to listen on from a Laravel `.env`: `PUSHER_PORT` when `PUSHER_HOST` is this
/// machine (called only when `BROADCAST_WEBSOCKET_PORT` and `REVERB_SERVER_PORT` are unset).
pub(super) fn pusher_port(env: &Env<'_>, notes: &mut Vec<Note>) -> Result<Option<u16>, ConfigError> {
    let (Some(host), Some(_)) = (env.string("PUSHER_HOST"), env.string("PUSHER_PORT")) else {
        return Ok(None);
    };
    if !is_this_machine(&host) {
        return Ok(None);
    }
    let port: Option<u16> = env.parse("PUSHER_PORT", "a port number 1-65535")?;
    if let Some(port) = port {
        notes.push(Note::info(format!(
            "listening on PUSHER_PORT={port}: PUSHER_HOST={host} is this machine, where Laravel and Echo look for \
             the server (BROADCAST_WEBSOCKET_PORT chooses another port)"
        )));
    }
    Ok(port)
}

/// Whether `host` names this machine: `localhost`, a loopback or unspecified address, an
/// address of one of its interfaces (one a socket can be bound to), or its host name.
fn is_this_machine(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip.is_loopback() || ip.is_unspecified() || std::net::UdpSocket::bind((ip, 0)).is_ok();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname").is_ok_and(|name| name.trim().eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_as_laravel_makes_them() {
        for (name, slug_) in [
            ("Laravel", "laravel"),
            ("My App", "my_app"),
            ("my-shop 2", "my_shop_2"),
            ("  Acme  Corp!! ", "acme_corp"),
            ("mail@home", "mail_at_home"),
            ("a__b", "a_b"),
        ] {
            assert_eq!(slug(name), slug_, "{name}");
        }
    }

    #[test]
    fn this_machine() {
        for host in ["127.0.0.1", "localhost", "[::1]", "0.0.0.0", "app.localhost"] {
            assert!(is_this_machine(host), "{host}");
        }
        for host in ["203.0.113.9", "ws.example.com", "ws-mt1.pusher.com"] {
            assert!(!is_this_machine(host), "{host}");
        }
    }
}
