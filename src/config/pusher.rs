//! Pusher apps: the credentials Pusher clients and SDKs use (`PUSHER_APP_*` and the
//! `[[apps]]` of `PUSHER_APPS_FILE`).

use std::path::Path;

use serde::Deserialize;

use super::ConfigError;

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
}

fn yes() -> bool {
    true
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

/// The configured apps. All apps share the server's channels: an app is a set of
/// credentials, not a separate namespace.
#[derive(Debug, Clone, Default)]
pub struct Apps {
    apps: Vec<PusherApp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppsFile {
    apps: Vec<PusherApp>,
}

impl Apps {
    /// Apps from `PUSHER_APP_ID`/`PUSHER_APP_KEY`/`PUSHER_APP_SECRET` (if set) followed by
    /// the `[[apps]]` of `PUSHER_APPS_FILE` (if set).
    pub fn from_parts(single: Option<PusherApp>, file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut apps: Vec<PusherApp> = single.into_iter().collect();
        if let Some(path) = file {
            let bad = |reason: String| ConfigError::Invalid {
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
                return Err(ConfigError::Invalid {
                    var: "PUSHER_APP_ID",
                    value: a.id.clone(),
                    reason: "every app needs a non-empty id, key and secret".into(),
                });
            }
            if apps[..i].iter().any(|b| b.id == a.id || b.key == a.key) {
                return Err(ConfigError::Invalid {
                    var: "PUSHER_APP_ID",
                    value: a.id.clone(),
                    reason: "app ids and keys must be unique".into(),
                });
            }
        }
        Ok(Self { apps })
    }

    /// Apps from a list (tests, library users).
    pub fn new(apps: Vec<PusherApp>) -> Self {
        Self { apps }
    }

    /// The app with this key.
    pub fn by_key(&self, key: &str) -> Option<&PusherApp> {
        self.apps.iter().find(|a| a.key == key)
    }

    /// The app with this id.
    pub fn by_id(&self, id: &str) -> Option<&PusherApp> {
        self.apps.iter().find(|a| a.id == id)
    }

    /// The first app: the one `/broadcasting/auth` signs for.
    pub fn default_app(&self) -> Option<&PusherApp> {
        self.apps.first()
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
