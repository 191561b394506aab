//! Pusher protocol v7 pieces that do not touch sockets: apps (credentials), channel and
//! user authentication signatures, REST request signing, the shared secrets of encrypted
//! channels, and the app features built on the session core: [`cache`] channels,
//! subscription [`counts`] and [`watchlist`]s.
//!
//! References: pusher.com/docs/channels/library_auth_reference/ (auth-signatures,
//! rest-api, pusher-websockets-protocol).

/// Lua (for `concat!`): `total`, the sum of the hash `KEYS[1]`'s node → count fields over
/// the live nodes (this node, `ARGV[1]`, and those whose liveness key `ARGV[3]..id`
/// exists); a dead node's field is dropped on the way. Used by the cluster-wide
/// subscription counts and connection quota.
macro_rules! live_nodes_total_lua {
    () => {
        r"
local total = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if fields[i] == ARGV[1] or redis.call('EXISTS', ARGV[3] .. fields[i]) == 1 then
    total = total + tonumber(fields[i + 1])
  else
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
"
    };
}

pub mod cache;
pub mod counts;
pub mod quota;
pub mod watchlist;

use std::collections::BTreeMap;

use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

mod apps;

pub use apps::{Apps, PusherApp};

/// The channel pusher-js joins after `pusher:signin`; `sendToUser` publishes to it.
pub const SERVER_TO_USER: &str = "#server-to-user-";

/// The namespace of those channels (`#server-to-user.{app}` for a non-default app): `#`
/// keeps any client spelling out of it.
const SERVER_TO_USER_NAMESPACE: &str = "#server-to-user";

/// The hub channel behind `#server-to-user-{user}` in app namespace `app` (`None`: the
/// default app). `None` for a user id that cannot name one (characters outside
/// `A-Z a-z 0-9 _ - = @ , . ;`, as Pusher's SDKs validate, or a `presence-` prefix).
pub fn server_to_user(app: Option<&str>, user: &str) -> Option<crate::channel::Channel> {
    let namespace = match app {
        Some(app) => format!("{SERVER_TO_USER_NAMESPACE}.{app}"),
        None => SERVER_TO_USER_NAMESPACE.to_string(),
    };
    let channel = crate::channel::Channel::parse_in(Some(&namespace), user).ok()?;
    (channel.kind() != crate::channel::ChannelKind::Presence).then_some(channel)
}

/// `#server-to-user-{user}` for a channel [`server_to_user`] made.
pub fn server_to_user_name(channel: &crate::channel::Channel) -> Option<String> {
    let rest = channel.app()?.strip_prefix(SERVER_TO_USER_NAMESPACE)?;
    if !(rest.is_empty() || rest.starts_with('.')) {
        return None;
    }
    let (_, user) = crate::channel::split_key(channel.name());
    Some(format!("{SERVER_TO_USER}{user}"))
}

/// The `user_info` of a presence member rustaxum signs for Pusher clients: Laravel's
/// shape, with the user's `id` in it (a number when the id is one, as Laravel's ids are),
/// so Echo's `here()`, `joining()` and `leaving()` give users with an `id`.
pub fn laravel_user_info(user_id: &str, info: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let id = match user_id.parse::<u64>() {
        Ok(n) if n.to_string() == user_id => Value::from(n),
        _ => Value::from(user_id),
    };
    match info {
        Value::Null => serde_json::json!({ "id": id }),
        Value::Object(map) if !map.contains_key("id") => {
            let mut map = map.clone();
            map.insert("id".into(), id);
            Value::Object(map)
        }
        other => other.clone(),
    }
}

fn hmac_hex(secret: &str, message: &str) -> String {
    crate::sign::hmac_sha256_hex(secret, message.as_bytes())
}

fn ct_eq(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The `auth` string for subscribing `socket_id` to a private or presence `channel`
/// (Pusher spelling): `key:hex(hmac_sha256(secret, "socket_id:channel[:channel_data]"))`.
pub fn channel_auth(app: &PusherApp, socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    let message = match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    };
    format!("{}:{}", app.key, hmac_hex(&app.secret, &message))
}

/// Checks a subscription's `auth` in constant time.
pub fn verify_channel_auth(
    app: &PusherApp,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
    auth: &str,
) -> bool {
    ct_eq(&channel_auth(app, socket_id, channel, channel_data), auth)
}

/// The `auth` string of `pusher:signin`: `key:hex(hmac(secret, "socket_id::user::user_data"))`.
pub fn user_auth(app: &PusherApp, socket_id: &str, user_data: &str) -> String {
    format!(
        "{}:{}",
        app.key,
        hmac_hex(&app.secret, &format!("{socket_id}::user::{user_data}"))
    )
}

/// Checks a `pusher:signin`'s `auth` in constant time.
pub fn verify_user_auth(app: &PusherApp, socket_id: &str, user_data: &str, auth: &str) -> bool {
    ct_eq(&user_auth(app, socket_id, user_data), auth)
}

/// The Pusher features of one node that keep state: cache channels, subscription counts
/// and watchlists.
#[derive(Debug)]
pub struct Features {
    /// The last event of every cache channel.
    pub cache: std::sync::Arc<cache::CacheChannels>,
    /// Subscription counts for the apps that enable them.
    pub counts: std::sync::Arc<counts::SubscriptionCounts>,
    /// Who watches whom.
    pub watchlist: std::sync::Arc<watchlist::Watchlist>,
    /// Each app's `max_connections` over the cluster (cluster nodes only).
    pub quota: Option<quota::ClusterQuota>,
    /// Each app's HTTP API rate limiter (`max_api_requests_per_second`), with its rate.
    api_limits: crate::rate::Limiters<String>,
}

impl Features {
    /// The features of a node publishing through `fanout` (in a cluster when `cluster` is
    /// given), for `apps` (they do not change on reload). The cache and the watchlist hook
    /// into `fanout`.
    pub fn new(
        fanout: &crate::publish::Fanout,
        cluster: Option<&std::sync::Arc<crate::cluster::redis::RedisBroker>>,
        apps: Apps,
    ) -> std::sync::Arc<Self> {
        let cache = cache::CacheChannels::new(cluster.cloned());
        fanout.add_hook(cache.clone());
        std::sync::Arc::new(Self {
            cache,
            counts: counts::SubscriptionCounts::new(fanout.clone(), cluster.cloned(), apps),
            watchlist: watchlist::Watchlist::new(fanout.clone(), cluster.cloned()),
            quota: cluster.map(|broker| quota::ClusterQuota::new(broker.clone())),
            api_limits: crate::rate::Limiters::new(crate::rate::per_second),
        })
    }

    /// Whether `app` may make one more HTTP API request now (its
    /// `max_api_requests_per_second`; 0 = no limit). Per node.
    pub fn allow_api_request(&self, app: &PusherApp) -> bool {
        app.max_api_requests_per_second == 0 || self.api_limits.check(app.id.clone(), app.max_api_requests_per_second)
    }

    /// Starts the observers (until `stop`).
    pub fn start(
        &self,
        lifecycle: &crate::lifecycle::Lifecycle,
        stop: tokio_util::sync::CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) {
        self.counts.start(lifecycle, stop.clone(), tasks);
        self.watchlist.start(lifecycle, stop, tasks);
    }
}

/// The `shared_secret` of an encrypted channel (`private-encrypted-*`, as the client
/// spells it): base64 of SHA-256 of the channel name followed by the app's 32-byte
/// master key, as Pusher's SDKs compute it. `None` without a master key.
pub fn shared_secret(app: &PusherApp, channel: &str) -> Option<String> {
    use base64::Engine as _;
    let key = app.master_key()?;
    let mut hash = Sha256::new();
    hash.update(channel.as_bytes());
    hash.update(key);
    Some(base64::engine::general_purpose::STANDARD.encode(hash.finalize()))
}

/// Why a REST request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestAuthError {
    /// A required `auth_*` parameter is missing.
    #[error("missing query parameter {0}")]
    Missing(&'static str),
    /// `auth_key` is not this app's key.
    #[error("unknown auth_key")]
    UnknownKey,
    /// `auth_timestamp` is more than the allowed skew from now.
    #[error("auth_timestamp expired: the request must be signed within 600 s of now (check the clock)")]
    Stale,
    /// `auth_version` is not `1.0`.
    #[error("auth_version must be 1.0")]
    Version,
    /// `body_md5` does not match the body.
    #[error("body_md5 does not match the request body")]
    BodyMd5,
    /// `auth_signature` does not verify.
    #[error("invalid signature: expected HMAC-SHA256 of METHOD\\nPATH\\nSORTED_QUERY with the app secret")]
    Signature,
}

/// Longest allowed distance between `auth_timestamp` and now.
pub const MAX_CLOCK_SKEW_SECS: u64 = 600;

/// The string a REST request signs: `METHOD\nPATH\nk=v&...` (keys lowercased and sorted,
/// `auth_signature` left out).
pub fn string_to_sign(method: &str, path: &str, params: &BTreeMap<String, String>) -> String {
    let query: Vec<String> = params
        .iter()
        .filter(|(k, _)| k.as_str() != "auth_signature")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("{}\n{}\n{}", method.to_uppercase(), path, query.join("&"))
}

/// `auth_signature` of a request.
pub fn sign_request(secret: &str, method: &str, path: &str, params: &BTreeMap<String, String>) -> String {
    hmac_hex(secret, &string_to_sign(method, path, params))
}

/// Verifies a signed REST request. `params` are the query parameters with lowercased keys.
pub fn verify_request(
    app: &PusherApp,
    method: &str,
    path: &str,
    params: &BTreeMap<String, String>,
    body: &[u8],
    now_secs: u64,
) -> Result<(), RequestAuthError> {
    let get = |k: &'static str| params.get(k).ok_or(RequestAuthError::Missing(k));
    if !ct_eq(get("auth_key")?, &app.key) {
        return Err(RequestAuthError::UnknownKey);
    }
    if get("auth_version")? != "1.0" {
        return Err(RequestAuthError::Version);
    }
    let ts: u64 = get("auth_timestamp")?.parse().map_err(|_| RequestAuthError::Stale)?;
    if ts.abs_diff(now_secs) > MAX_CLOCK_SKEW_SECS {
        return Err(RequestAuthError::Stale);
    }
    if !body.is_empty() {
        let md5 = hex::encode(Md5::digest(body));
        if !ct_eq(get("body_md5")?, &md5) {
            return Err(RequestAuthError::BodyMd5);
        }
    }
    let expected = sign_request(&app.secret, method, path, params);
    if ct_eq(get("auth_signature")?, &expected) {
        Ok(())
    } else {
        Err(RequestAuthError::Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> PusherApp {
        PusherApp::new("3", "278d425bdf160c739803", "7ad3773142a6692b25b8")
    }

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn members_get_laravel_shaped_ids() {
        use serde_json::json;
        assert_eq!(
            laravel_user_info("42", &json!({"name": "Ann"})),
            json!({"id": 42, "name": "Ann"})
        );
        assert_eq!(laravel_user_info("u-7", &json!(null)), json!({"id": "u-7"}));
        assert_eq!(laravel_user_info("007", &json!({})), json!({"id": "007"}));
        assert_eq!(laravel_user_info("1", &json!({"id": 9})), json!({"id": 9}));
    }

    #[test]
    fn server_to_user_channels_round_trip_and_stay_apart() {
        for user in ["7", "private-x", "a@b.c"] {
            let default = server_to_user(None, user).unwrap();
            let other = server_to_user(Some("app-2"), user).unwrap();
            assert_ne!(default, other);
            for c in [&default, &other] {
                assert_eq!(server_to_user_name(c).unwrap(), format!("#server-to-user-{user}"));
            }
        }
        assert!(server_to_user(None, "a b").is_none());
        assert!(server_to_user(None, "presence-x").is_none());
        let plain = crate::channel::Channel::parse_in(Some("#server-to-userx"), "7").unwrap();
        assert!(server_to_user_name(&plain).is_none());
        assert!(server_to_user_name(&crate::channel::Channel::parse("7").unwrap()).is_none());
    }

    #[test]
    fn rest_signature_matches_the_published_example() {
        // Published alongside Pusher's REST documentation (a Pusher engineer's gist).
        let p = params(&[
            ("auth_key", "278d425bdf160c739803"),
            ("auth_timestamp", "1272044395"),
            ("auth_version", "1.0"),
            ("body_md5", "7b3d404f5cde4a0b9b8fb4789a0098cb"),
            ("name", "foo"),
        ]);
        assert_eq!(
            string_to_sign("POST", "/apps/3/channels/test_channel/events", &p),
            "POST\n/apps/3/channels/test_channel/events\nauth_key=278d425bdf160c739803&auth_timestamp=1272044395&auth_version=1.0&body_md5=7b3d404f5cde4a0b9b8fb4789a0098cb&name=foo"
        );
        assert_eq!(
            sign_request(
                "7ad3773142a6692b25b8",
                "POST",
                "/apps/3/channels/test_channel/events",
                &p
            ),
            "309fc4be20f04e53e011b00744642d3fe66c2c7c5686f35ed6cd2af6f202e445"
        );
    }

    #[test]
    fn verify_request_checks_everything() {
        let app = app();
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let md5 = hex::encode(Md5::digest(body));
        let mut p = params(&[
            ("auth_key", &app.key),
            ("auth_timestamp", "1353088179"),
            ("auth_version", "1.0"),
            ("body_md5", &md5),
        ]);
        let sig = sign_request(&app.secret, "POST", "/apps/3/events", &p);
        p.insert("auth_signature".into(), sig.clone());
        let now = 1353088179 + 10;
        assert_eq!(verify_request(&app, "POST", "/apps/3/events", &p, body, now), Ok(()));
        assert_eq!(
            verify_request(&app, "POST", "/apps/3/events", &p, body, now + 601),
            Err(RequestAuthError::Stale)
        );
        assert_eq!(
            verify_request(&app, "POST", "/apps/3/events", &p, b"{}", now),
            Err(RequestAuthError::BodyMd5)
        );
        assert_eq!(
            verify_request(&app, "POST", "/apps/4/events", &p, body, now),
            Err(RequestAuthError::Signature)
        );
        let mut q = p.clone();
        q.insert("auth_signature".into(), "0".repeat(64));
        assert_eq!(
            verify_request(&app, "POST", "/apps/3/events", &q, body, now),
            Err(RequestAuthError::Signature)
        );
        let mut q = p.clone();
        q.remove("auth_key");
        assert_eq!(
            verify_request(&app, "POST", "/apps/3/events", &q, body, now),
            Err(RequestAuthError::Missing("auth_key"))
        );
        let mut q = p;
        q.insert("auth_key".into(), "other".into());
        assert_eq!(
            verify_request(&app, "POST", "/apps/3/events", &q, body, now),
            Err(RequestAuthError::UnknownKey)
        );
    }

    #[test]
    fn channel_auth_strings() {
        let app = app();
        // The worked examples of Pusher's auth-signatures documentation.
        let auth = channel_auth(&app, "1234.1234", "private-foobar", None);
        assert_eq!(
            auth,
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        assert!(verify_channel_auth(&app, "1234.1234", "private-foobar", None, &auth));
        assert!(!verify_channel_auth(&app, "1234.1235", "private-foobar", None, &auth));
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Pusher"}}"#;
        let p = channel_auth(&app, "1234.1234", "presence-foobar", Some(data));
        assert_eq!(
            p,
            "278d425bdf160c739803:afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c"
        );
        assert!(verify_channel_auth(
            &app,
            "1234.1234",
            "presence-foobar",
            Some(data),
            &p
        ));
        assert!(!verify_channel_auth(
            &app,
            "1234.1234",
            "presence-foobar",
            Some("{}"),
            &p
        ));
        assert!(user_auth(&app, "1.2", r#"{"id":"7"}"#).starts_with("278d425bdf160c739803:"));
    }
}
