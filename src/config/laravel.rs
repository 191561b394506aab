//! A Laravel project's `.env`, read as Laravel means it: `BROADCAST_DRIVER` (Laravel ≤ 10)
//! and `BROADCAST_CONNECTION` (11+) name Laravel's broadcaster, `PUSHER_APP_*` and
//! `REVERB_APP_*` the app Laravel publishes to. None of Laravel's values stops the server;
//! each one that is Laravel's rather than rustaxum's is explained once at start (the
//! notes), with what rustaxum does with it.

use super::env::Env;
use super::{ConfigError, Driver, Note};
use crate::pusher::PusherApp;

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
        notes.push(laravel_broadcaster("BROADCAST_DRIVER", &value));
        return Ok(Some(Driver::default()));
    }
    Err(ConfigError::Invalid {
        var: "BROADCAST_DRIVER",
        value: raw,
        reason: "expected websocket, local, redis, log or null (or Laravel's pusher, reverb, ably)".into(),
    })
}

/// What Laravel does with broadcaster `value`, and so what this server does.
fn laravel_broadcaster(var: &str, value: &str) -> Note {
    match value {
        "pusher" | "reverb" => Note::info(format!(
            "{var}={value} is Laravel's setting: Laravel publishes to this server over the Pusher HTTP API, \
             which it serves (rustaxum's own driver stays websocket)"
        )),
        "ably" => Note::warn(format!(
            "{var}=ably is Laravel's setting: Laravel publishes to Ably, not to this server"
        )),
        "redis" => Note::warn(format!(
            "{var}=redis is Laravel's setting: Laravel publishes into Redis; this server delivers those events \
             with BROADCAST_DRIVER=redis and BROADCAST_CHANNELS_PREFIX set to Laravel's Redis prefix"
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
        return;
    }
    notes.push(laravel_broadcaster("BROADCAST_CONNECTION", &value));
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
