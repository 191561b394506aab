//! What the configuration says about itself: whether it is safe to serve beyond
//! loopback, the fingerprint nodes compare, and what start-up tells about Redis.

use super::*;

impl Config {
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
        if let Some(t) = &self.server.metrics_token {
            secrets.push(("BROADCAST_METRICS_TOKEN".into(), t));
        }
        if let Some(t) = self.auth.jwt.as_ref().and_then(|j| j.secret.as_deref()) {
            secrets.push(("JWT_SECRET".into(), t));
        }
        for app in self.pusher.apps.iter() {
            secrets.push((format!("secret of Pusher app {}", app.id), &app.secret));
        }
        secrets
    }

    /// What the server says at start about Redis when it uses it (`None` otherwise): where
    /// it connects (never a password), which parts of that the operator did not set with a
    /// `BROADCAST_*` variable and where they came from (Laravel's `REDIS_*`, a default), and
    /// the Redis channels it listens to (what Laravel's Redis broadcaster publishes on).
    pub fn redis_summary(&self) -> Option<String> {
        if self.driver != Driver::Redis {
            return None;
        }
        let redis = &self.redis;
        let mut implicit: Vec<String> = Vec::new();
        let mut part = |var: &str, what: &str, value: Option<String>| match self.sources.origin(var) {
            Origin::Variable(name) if name.starts_with("BROADCAST_") => {}
            Origin::Default => {
                if let Some(v) = value {
                    implicit.push(format!("{what} {v} by default"));
                }
            }
            origin => implicit.push(match value {
                Some(v) => format!("{what} {v} from {origin}"),
                None => format!("{what} from {origin}"),
            }),
        };
        if redis.topology() == crate::backend::RedisTopology::Single {
            if redis.url.is_some() {
                part("REDIS_URL", "the address", None);
            } else {
                part("BROADCAST_REDIS_HOST", "host", Some(redis.host.clone()));
                part("BROADCAST_REDIS_PORT", "port", Some(redis.port.to_string()));
                part("BROADCAST_REDIS_DATABASE", "database", Some(redis.database.to_string()));
                if redis.username.is_some() {
                    part("BROADCAST_REDIS_USERNAME", "user", redis.username.clone());
                }
                if redis.password.is_some() {
                    part("BROADCAST_REDIS_PASSWORD", "the password", None);
                }
            }
        }
        let prefix = &redis.channels_prefix;
        let prefix_from = match self.sources.origin("BROADCAST_CHANNELS_PREFIX") {
            Origin::Default => match (
                self.sources.values.get("REVERB_SCALING_CHANNEL"),
                self.sources.values.get("REDIS_PREFIX"),
                self.sources.values.get("APP_NAME"),
            ) {
                _ if prefix.is_empty() => String::new(),
                (Some(c), _, _) if prefix == &format!("{c}:") => " (from REVERB_SCALING_CHANNEL)".to_string(),
                (_, Some(_), _) => " (Laravel's REDIS_PREFIX)".to_string(),
                (_, _, Some(name)) => format!(" (Laravel's prefix: APP_NAME={name:?} as a slug + _database_)"),
                _ => String::new(),
            },
            origin => format!(" ({origin})"),
        };
        let set = match implicit.is_empty() {
            true => String::new(),
            false => format!("; not set by a BROADCAST_REDIS_* variable: {}", implicit.join(", ")),
        };
        Some(format!(
            "Redis at {}{set}; listening on the Redis channels {prefix}<channel> of the channels with subscribers here{prefix_from}",
            redis.address()
        ))
    }
}
