//! Pusher apps: the credentials Pusher clients and SDKs use (`PUSHER_APP_*` and the
//! `[[apps]]` of `PUSHER_APPS_FILE`).

use std::path::Path;

use serde::Deserialize;

use crate::setting::InvalidSetting;

/// One Pusher app: the credentials clients and SDKs use.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct PusherApp {
    /// `app_id`, used in REST paths `/apps/{id}/...`.
    pub id: String,
    /// `key`, used by clients in `/app/{key}` and in auth strings.
    pub key: String,
    /// `secret`, signs channel auth and REST requests. Never logged.
    pub secret: String,
    /// Disabled apps refuse connections (4003) and REST calls (403).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Most concurrent connections for this app, 0 for no limit (over it: 4004).
    #[serde(default)]
    pub max_connections: usize,
    /// Where to send this app's webhooks (`[[apps.webhooks]]`: `url`, `events`, `channels`).
    #[serde(default)]
    pub webhooks: Vec<crate::webhooks::WebhookTarget>,
    /// Base64 of 32 random bytes: lets `/broadcasting/auth` hand out the `shared_secret`
    /// of `private-encrypted-*` channels (and the app's server SDK encrypt for them).
    /// Never logged.
    #[serde(default)]
    pub encryption_master_key: Option<String>,
    /// Send `pusher_internal:subscription_count` to the subscribers of non-presence
    /// channels when their subscriber count changes.
    #[serde(default)]
    pub enable_subscription_count: bool,
    /// Client events one connection may send per second (default: `BROADCAST_CLIENT_EVENTS_PER_SECOND`).
    #[serde(default)]
    pub max_client_events_per_second: Option<u32>,
    /// Most members of one presence channel (Pusher: 100); over it: subscription error 4100.
    #[serde(default = "hundred")]
    pub max_presence_members_per_channel: usize,
    /// Largest presence member (`user_info` JSON) in bytes (Pusher: 1 KB); over it: 4301.
    #[serde(default = "one_kb")]
    pub max_presence_member_size: usize,
    /// Channels per triggered event (default: `PUSHER_MAX_CHANNELS_PER_EVENT`).
    #[serde(default)]
    pub max_channels_per_event: Option<usize>,
    /// Longest event name in bytes (Pusher: 200).
    #[serde(default = "two_hundred")]
    pub max_event_name_length: usize,
    /// Largest event `data` in bytes (default: `PUSHER_MAX_EVENT_SIZE`).
    #[serde(default)]
    pub max_event_size: Option<usize>,
    /// HTTP API requests per second for this app, 0 for no limit (over it: 429).
    #[serde(default)]
    pub max_api_requests_per_second: u32,
    /// Whether clients may send `client-*` events on private and presence channels.
    /// On by default here (Pusher's own dashboard starts with it off).
    #[serde(default = "yes")]
    pub enable_client_events: bool,
    /// Pusher's "authorized connections": seconds a socket has to `pusher:signin` before
    /// it is sent `pusher:error` 4009 and closed; 0 (the default) lets sockets stay
    /// anonymous.
    #[serde(default)]
    pub user_authentication_timeout: u64,
}

fn yes() -> bool {
    true
}

fn hundred() -> usize {
    100
}

fn one_kb() -> usize {
    1024
}

fn two_hundred() -> usize {
    200
}

impl PusherApp {
    /// An app with these credentials and every setting at its default.
    pub fn new(id: impl Into<String>, key: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            key: key.into(),
            secret: secret.into(),
            enabled: true,
            max_connections: 0,
            webhooks: Vec::new(),
            encryption_master_key: None,
            enable_subscription_count: false,
            max_client_events_per_second: None,
            max_presence_members_per_channel: hundred(),
            max_presence_member_size: one_kb(),
            max_channels_per_event: None,
            max_event_name_length: two_hundred(),
            max_event_size: None,
            max_api_requests_per_second: 0,
            enable_client_events: true,
            user_authentication_timeout: 0,
        }
    }

    /// The 32-byte encryption master key, when configured.
    pub fn master_key(&self) -> Option<[u8; 32]> {
        use base64::Engine as _;
        let raw = self.encryption_master_key.as_deref()?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(raw.trim()).ok()?;
        bytes.try_into().ok()
    }
}

impl std::fmt::Debug for PusherApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PusherApp")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// The configured apps. Each app is a tenant with its own channels, presence, limits and
/// stats; the default app (the first, or `PUSHER_DEFAULT_APP`) also owns the native
/// protocol's channels, so its Pusher and native clients share them.
#[derive(Debug, Clone, Default)]
pub struct Apps {
    apps: Vec<PusherApp>,
    default: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppsFile {
    apps: Vec<PusherApp>,
}

impl Apps {
    /// Apps from `PUSHER_APP_ID`/`PUSHER_APP_KEY`/`PUSHER_APP_SECRET` (if set) followed by
    /// the `[[apps]]` of `PUSHER_APPS_FILE` (if set).
    pub fn from_parts(single: Option<PusherApp>, file: Option<&Path>) -> Result<Self, InvalidSetting> {
        Self::from_parts_with_default(single.into_iter().collect(), file, None)
    }

    /// The environment's apps (`PUSHER_APP_*`, `REVERB_APP_*`) followed by the `[[apps]]`
    /// of `file`, with the default app named by id (`PUSHER_DEFAULT_APP`; `None`: the first
    /// app).
    pub fn from_parts_with_default(
        env_apps: Vec<PusherApp>,
        file: Option<&Path>,
        default: Option<&str>,
    ) -> Result<Self, InvalidSetting> {
        let mut apps = env_apps;
        if let Some(path) = file {
            let bad = |reason: String| InvalidSetting {
                var: "PUSHER_APPS_FILE",
                value: path.display().to_string(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
            let parsed: AppsFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
            apps.extend(parsed.apps);
        }
        for (i, a) in apps.iter().enumerate() {
            if a.id.is_empty() || a.key.is_empty() || a.secret.is_empty() {
                return Err(InvalidSetting {
                    var: "PUSHER_APP_ID",
                    value: a.id.clone(),
                    reason: "every app needs a non-empty id, key and secret".into(),
                });
            }
            if apps[..i].iter().any(|b| b.id == a.id || b.key == a.key) {
                return Err(InvalidSetting {
                    var: "PUSHER_APP_ID",
                    value: a.id.clone(),
                    reason: "app ids and keys must be unique".into(),
                });
            }
            if !crate::channel::valid_app_id(&a.id) {
                return Err(InvalidSetting {
                    var: "PUSHER_APP_ID",
                    value: a.id.clone(),
                    reason: format!(
                        "an app id must be 1 to {} of the characters A-Z a-z 0-9 _ - = @ , . ;",
                        crate::channel::MAX_APP_ID_LEN
                    ),
                });
            }
            if a.encryption_master_key.is_some() && a.master_key().is_none() {
                return Err(InvalidSetting {
                    var: "PUSHER_APP_ENCRYPTION_MASTER_KEY",
                    value: format!("(app {})", a.id),
                    reason: "must be base64 of exactly 32 bytes (e.g. `openssl rand -base64 32`)".into(),
                });
            }
        }
        let default = match default {
            None => 0,
            Some(id) => apps.iter().position(|a| a.id == id).ok_or_else(|| InvalidSetting {
                var: "PUSHER_DEFAULT_APP",
                value: id.to_string(),
                reason: "no configured app has this id".into(),
            })?,
        };
        Ok(Self { apps, default })
    }

    /// Apps from a list (tests, library users); the first is the default app.
    pub fn new(apps: Vec<PusherApp>) -> Self {
        Self { apps, default: 0 }
    }

    /// The app with this key.
    pub fn by_key(&self, key: &str) -> Option<&PusherApp> {
        self.apps.iter().find(|a| a.key == key)
    }

    /// The app with this id.
    pub fn by_id(&self, id: &str) -> Option<&PusherApp> {
        self.apps.iter().find(|a| a.id == id)
    }

    /// The default app: the one native clients and the native API belong to, and the
    /// one `/broadcasting/auth` signs for unless the request names another.
    pub fn default_app(&self) -> Option<&PusherApp> {
        self.apps.get(self.default)
    }

    /// The channel namespace of `app`: `None` for the default app (its channels are the
    /// native protocol's), else its id.
    pub fn namespace<'a>(&self, app: &'a PusherApp) -> Option<&'a str> {
        match self.default_app() {
            Some(d) if d.id == app.id => None,
            _ => Some(&app.id),
        }
    }

    /// The app a namespace belongs to (`None`: the default app).
    pub fn by_namespace(&self, namespace: Option<&str>) -> Option<&PusherApp> {
        match namespace {
            None => self.default_app(),
            Some(id) => self.by_id(id),
        }
    }

    /// Every app.
    pub fn iter(&self) -> impl Iterator<Item = &PusherApp> {
        self.apps.iter()
    }

    /// Whether no app is configured (the Pusher endpoints then answer 404 / 4001).
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("rustaxum-apps-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn app_settings_load_validate_and_pick_the_default_app() {
        let path = write(
            "ok",
            r#"
[[apps]]
id = "a"
key = "ka"
secret = "sa"

[[apps]]
id = "b"
key = "kb"
secret = "sb"
encryption_master_key = "K0UzPUbNBEq6f2lSpYJcDhvXo4ZXO6G5yW9nVp0iHvM="
enable_subscription_count = true
max_presence_members_per_channel = 5
max_api_requests_per_second = 10
"#,
        );
        let apps = Apps::from_parts_with_default(Vec::new(), Some(&path), Some("b")).unwrap();
        let b = apps.by_id("b").unwrap();
        assert_eq!(apps.default_app().unwrap().id, "b");
        assert_eq!(
            apps.namespace(b),
            None,
            "the default app keys its channels by name alone"
        );
        assert_eq!(apps.namespace(apps.by_id("a").unwrap()), Some("a"));
        assert!(b.enable_subscription_count && b.master_key().is_some());
        assert_eq!(
            (b.max_presence_members_per_channel, b.max_api_requests_per_second),
            (5, 10)
        );
        let a = apps.by_id("a").unwrap();
        assert_eq!(
            (a.max_presence_members_per_channel, a.max_presence_member_size),
            (100, 1024)
        );
        assert_eq!(apps.by_namespace(Some("a")).unwrap().id, "a");
        assert!(Apps::from_parts_with_default(Vec::new(), Some(&path), Some("zzz")).is_err());
        let _ = std::fs::remove_file(path);

        let bad = |name: &str, app: PusherApp| {
            let err = Apps::from_parts(Some(app), None).unwrap_err().to_string();
            assert!(!err.is_empty(), "{name}");
            err
        };
        assert!(bad("colon", PusherApp::new("a:b", "k", "s")).contains("app id"));
        assert!(bad("space", PusherApp::new("a b", "k", "s")).contains("app id"));
        let short_key = PusherApp {
            encryption_master_key: Some("c2hvcnQ=".into()),
            ..PusherApp::new("a", "k", "s")
        };
        assert!(bad("key", short_key).contains("32 bytes"));
    }
}
