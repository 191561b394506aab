//! Channel names, parsed once at the edge into a typed [`Channel`].
//!
//! **The kind is part of the identity**, as in Pusher: `orders`, `private-orders`,
//! `private-encrypted-orders` and `presence-orders` are four channels. A channel is keyed
//! by its name with the kind's prefix: `orders`, `private-orders`,
//! `private-encrypted-orders`, `presence.orders` (presence keeps the native spelling).
//!
//! Native clients name channels without a prefix (`user.42`); the channel rules decide
//! that `user.42` is private, which makes it the channel `private-user.42`, the same one a
//! Pusher client spells `private-user.42`. So a native client and a Pusher client meet
//! on a private channel, and a public `orders` never meets a private `orders`.
//!
//! **Apps.** Each Pusher app has its own channels. A channel of the default app (the one
//! native clients and the native API belong to) is keyed as above; a channel of another
//! app by `{app_id}:{key}`. `:` is not a channel name character, so no client spelling
//! can reach another app's key, and everything keyed by [`Channel::name`] (hub, presence,
//! history, Redis keys and pub/sub, webhooks) is kept apart per app and per kind without
//! knowing about either. Wire protocols render [`local_name`](Channel::local_name) /
//! [`pusher_name`](Channel::pusher_name).

use std::fmt;
use std::sync::Arc;

/// Longest accepted channel name in bytes, prefix included (Pusher's documented limit).
pub const MAX_CHANNEL_NAME_LEN: usize = 164;

/// What kind of channel a name denotes, which decides how joining it is authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// Anyone may join.
    Public,
    /// Joining needs an authenticated user and an allowing rule.
    Private,
    /// Private, plus a live member list with join/leave events.
    Presence,
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Public => "public",
            Self::Private => "private",
            Self::Presence => "presence",
        })
    }
}

/// Why a channel name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The name was empty (or only a prefix such as `private-`).
    #[error("channel name is empty")]
    Empty,
    /// The name is longer than [`MAX_CHANNEL_NAME_LEN`].
    #[error("channel name is longer than {MAX_CHANNEL_NAME_LEN} bytes")]
    TooLong,
    /// The name holds a character outside `A-Z a-z 0-9 _ - = @ , . ;`.
    #[error("channel name contains the invalid character {0:?}; allowed are A-Z a-z 0-9 _ - = @ , . ;")]
    InvalidCharacter(char),
    /// An app id that cannot key channels (empty, too long, or holding other characters
    /// than a channel name's).
    #[error("invalid app id {0:?}")]
    InvalidApp(String),
}

/// A validated channel: its kind and its key.
///
/// Two channels are equal when their keys are, and the key carries the kind
/// (`private-orders` is not `orders`). Cloning is cheap (the key is reference counted).
#[derive(Debug, Clone)]
pub struct Channel {
    kind: ChannelKind,
    /// The key: `{app}:{name}` for a channel of a non-default app, else the name, with
    /// the kind's prefix (`private-user.42`, `presence.chat.1`).
    name: Arc<str>,
    /// Bytes of `{app}:` at the start of `name` (0 for the default app).
    app_len: u16,
}

/// Longest app id that can key channels.
pub(crate) const MAX_APP_ID_LEN: usize = 100;

/// Separates an app id from a channel name in keys; never part of a channel name.
const APP_SEPARATOR: char = ':';

/// Splits a key (channel, user) into its app (`None`: the default app) and the name.
pub(crate) fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.rfind(APP_SEPARATOR) {
        Some(i) => (Some(&key[..i]), &key[i + 1..]),
        None => (None, key),
    }
}

/// The key of `name` in `app` (`None`: the default app): `{app}:{name}`, or `name`.
pub(crate) fn app_key(app: Option<&str>, name: &str) -> String {
    match app {
        Some(app) => format!("{app}{APP_SEPARATOR}{name}"),
        None => name.to_string(),
    }
}

/// Whether `id` can name an app: 1 to [`MAX_APP_ID_LEN`] channel-name characters
/// (`A-Z a-z 0-9 _ - = @ , . ;`).
pub(crate) fn valid_app_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_APP_ID_LEN && id.chars().all(is_channel_char)
}

/// Namespaces of the server's own channels start with `#`, which no app id holds, so no
/// client of any app can name them.
pub(crate) const INTERNAL_NAMESPACE_PREFIX: char = '#';

fn valid_namespace(ns: &str) -> bool {
    match ns.strip_prefix(INTERNAL_NAMESPACE_PREFIX) {
        Some(rest) => valid_app_id(rest),
        None => valid_app_id(ns),
    }
}

const PUSHER_PRIVATE: &str = "private-";
const PUSHER_PRESENCE: &str = "presence-";
const NATIVE_PRESENCE: &str = "presence.";
const PUSHER_ENCRYPTED: &str = "private-encrypted-";
const CACHE: &str = "cache-";

impl Channel {
    /// Parses a channel name in native or Pusher spelling.
    ///
    /// | input             | kind     | key               | local name        |
    /// |-------------------|----------|-------------------|-------------------|
    /// | `general`         | public   | `general`         | `general`         |
    /// | `private-user.42` | private  | `private-user.42` | `user.42`         |
    /// | `presence-chat.1` | presence | `presence.chat.1` | `presence.chat.1` |
    /// | `presence.chat.1` | presence | `presence.chat.1` | `presence.chat.1` |
    ///
    /// Whether a native name without a prefix (such as `user.42`) is private is decided
    /// by the channel rules ([`with_kind`](Self::with_kind)), not by the parser.
    ///
    /// `private-encrypted-orders` is a private channel of its own (it never meets
    /// `private-orders`); `cache-x`, `private-cache-x` and `presence-cache-x` are cache
    /// channels (see [`is_cache`](Self::is_cache)).
    pub fn parse(raw: &str) -> Result<Self, ChannelError> {
        Self::parse_in(None, raw)
    }

    /// Parses a client's channel name as a channel of `app` (`None`: the default app).
    pub fn parse_in(app: Option<&str>, raw: &str) -> Result<Self, ChannelError> {
        let (kind, canonical) = Self::canonical(raw)?;
        let Some(app) = app else {
            return Ok(Self {
                kind,
                name: canonical,
                app_len: 0,
            });
        };
        if !valid_namespace(app) {
            return Err(ChannelError::InvalidApp(app.to_string()));
        }
        let app_len = u16::try_from(app.len() + 1).map_err(|_| ChannelError::InvalidApp(app.to_string()))?;
        Ok(Self {
            kind,
            name: app_key(Some(app), &canonical).into(),
            app_len,
        })
    }

    /// The channel a key names (as [`name`](Self::name) returns it): for keys read back
    /// from Redis, stores and other nodes. Never for client input (it would let a client
    /// name another app's channel).
    pub fn from_key(key: &str) -> Result<Self, ChannelError> {
        let (app, name) = split_key(key);
        Self::parse_in(app, name)
    }

    fn canonical(raw: &str) -> Result<(ChannelKind, Arc<str>), ChannelError> {
        if raw.is_empty() {
            return Err(ChannelError::Empty);
        }
        if raw.len() > MAX_CHANNEL_NAME_LEN {
            return Err(ChannelError::TooLong);
        }
        if let Some(bad) = raw.chars().find(|c| !is_channel_char(*c)) {
            return Err(ChannelError::InvalidCharacter(bad));
        }
        let (kind, name): (ChannelKind, Arc<str>) = if let Some(rest) = raw.strip_prefix(PUSHER_ENCRYPTED) {
            if rest.is_empty() {
                return Err(ChannelError::Empty);
            }
            (ChannelKind::Private, raw.into())
        } else if let Some(rest) = raw.strip_prefix(PUSHER_PRIVATE) {
            if rest.is_empty() {
                return Err(ChannelError::Empty);
            }
            (ChannelKind::Private, raw.into())
        } else if let Some(rest) = raw.strip_prefix(PUSHER_PRESENCE) {
            if rest.is_empty() {
                return Err(ChannelError::Empty);
            }
            (ChannelKind::Presence, format!("{NATIVE_PRESENCE}{rest}").into())
        } else if let Some(rest) = raw.strip_prefix(NATIVE_PRESENCE) {
            if rest.is_empty() {
                return Err(ChannelError::Empty);
            }
            (ChannelKind::Presence, raw.into())
        } else {
            (ChannelKind::Public, raw.into())
        };
        if name.is_empty() {
            return Err(ChannelError::Empty);
        }
        Ok((kind, name))
    }

    /// The kind implied by the name's spelling.
    pub fn kind(&self) -> ChannelKind {
        self.kind
    }

    /// The key everything is stored and routed by: the name with its kind's prefix, e.g.
    /// `orders`, `private-user.42` or `presence.chat.1`, prefixed with `{app}:` for a
    /// channel of a non-default app.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shared key, for use as a map key without copying.
    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// The name within its app as native clients spell it: without `private-` (the rules
    /// make `user.42` private), with `presence.` and `private-encrypted-` kept.
    pub fn local_name(&self) -> &str {
        let key = self.key_in_app();
        match self.kind {
            ChannelKind::Private if !key.starts_with(PUSHER_ENCRYPTED) => {
                key.strip_prefix(PUSHER_PRIVATE).unwrap_or(key)
            }
            _ => key,
        }
    }

    /// The key without its app: `private-user.42`, `orders`.
    fn key_in_app(&self) -> &str {
        &self.name[usize::from(self.app_len)..]
    }

    /// Whether a client naming `wanted` means this channel: the same key, or (for a name
    /// without a prefix, which is how native clients name every channel) the same local
    /// name, whatever kind the rules gave this one.
    pub fn answers_to(&self, wanted: &Channel) -> bool {
        *self == *wanted
            || (wanted.kind == ChannelKind::Public
                && self.app_len == wanted.app_len
                && self.name[..usize::from(self.app_len)] == wanted.name[..usize::from(wanted.app_len)]
                && self.local_name() == wanted.local_name())
    }

    /// The app the channel belongs to (`None`: the default app).
    pub fn app(&self) -> Option<&str> {
        match self.app_len {
            0 => None,
            n => Some(&self.name[..usize::from(n) - 1]),
        }
    }

    /// A channel of the server's own (its namespace starts with `#`, which no client
    /// spelling reaches): the rules do not apply to it.
    pub fn is_internal(&self) -> bool {
        self.app().is_some_and(|a| a.starts_with(INTERNAL_NAMESPACE_PREFIX))
    }

    /// The name channel rules and patterns match: the local name, without
    /// `private-encrypted-` (as Laravel matches `private-encrypted-orders.1` with the
    /// rule of `orders.{id}`).
    pub fn rule_name(&self) -> &str {
        let local = self.local_name();
        local.strip_prefix(PUSHER_ENCRYPTED).unwrap_or(local)
    }

    /// An end-to-end encrypted channel (`private-encrypted-*`): the server relays payloads
    /// it cannot read and refuses client events.
    pub fn is_encrypted(&self) -> bool {
        self.local_name().starts_with(PUSHER_ENCRYPTED)
    }

    /// A cache channel (`cache-*`, `private-cache-*`, `private-encrypted-cache-*`,
    /// `presence-cache-*`): a new subscriber gets the last event at once, or
    /// `pusher:cache_miss`.
    pub fn is_cache(&self) -> bool {
        let local = self.local_name();
        local
            .strip_prefix(NATIVE_PRESENCE)
            .or_else(|| local.strip_prefix(PUSHER_ENCRYPTED))
            .unwrap_or(local)
            .starts_with(CACHE)
    }

    /// The channel of the same local name with another kind (used when rules decide a
    /// native name such as `user.42` is private: it becomes `private-user.42`). An
    /// encrypted channel stays private; presence keeps the name it has.
    pub fn with_kind(&self, kind: ChannelKind) -> Self {
        if kind == self.kind {
            return self.clone();
        }
        let local = self.local_name();
        let key: std::borrow::Cow<'_, str> = match kind {
            ChannelKind::Private if !local.starts_with(PUSHER_ENCRYPTED) => format!("{PUSHER_PRIVATE}{local}").into(),
            _ => local.into(),
        };
        let kind = if local.starts_with(PUSHER_ENCRYPTED) {
            ChannelKind::Private
        } else {
            kind
        };
        Self {
            kind,
            name: app_key(self.app(), &key).into(),
            app_len: self.app_len,
        }
    }

    /// The name as a Pusher client of its app spells it: `private-user.42`,
    /// `presence-chat.1`, `private-encrypted-orders`.
    pub fn pusher_name(&self) -> String {
        let local = self.local_name();
        match self.kind {
            ChannelKind::Public => local.to_string(),
            ChannelKind::Private if self.is_encrypted() => local.to_string(),
            ChannelKind::Private => format!("{PUSHER_PRIVATE}{local}"),
            ChannelKind::Presence => {
                let rest = local.strip_prefix(NATIVE_PRESENCE).unwrap_or(local);
                format!("{PUSHER_PRESENCE}{rest}")
            }
        }
    }
}

impl PartialEq for Channel {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Channel {}

impl std::hash::Hash for Channel {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl std::str::FromStr for Channel {
    type Err = ChannelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn is_channel_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=' | '@' | ',' | '.' | ';')
}

/// The channel of one user's private messages: `user.{id}` (direct messages go there).
pub fn user_channel(user_id: impl std::fmt::Display) -> String {
    format!("user.{user_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_native_and_pusher_spellings() {
        let table: &[(&str, ChannelKind, &str, &str)] = &[
            ("general", ChannelKind::Public, "general", "general"),
            ("user.42", ChannelKind::Public, "user.42", "user.42"),
            (
                "private-user.42",
                ChannelKind::Private,
                "private-user.42",
                "private-user.42",
            ),
            (
                "presence-chat.1",
                ChannelKind::Presence,
                "presence.chat.1",
                "presence-chat.1",
            ),
            (
                "presence.chat.1",
                ChannelKind::Presence,
                "presence.chat.1",
                "presence-chat.1",
            ),
            (
                "a-b_c=d@e,f.g;h",
                ChannelKind::Public,
                "a-b_c=d@e,f.g;h",
                "a-b_c=d@e,f.g;h",
            ),
            ("presence", ChannelKind::Public, "presence", "presence"),
            ("private", ChannelKind::Public, "private", "private"),
        ];
        for (raw, kind, name, pusher) in table {
            let ch = Channel::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(ch.kind(), *kind, "{raw}");
            assert_eq!(ch.name(), *name, "{raw}");
            assert_eq!(ch.pusher_name(), *pusher, "{raw}");
        }
    }

    #[test]
    fn both_spellings_are_the_same_channel() {
        assert_eq!(
            Channel::parse("presence-chat.1").unwrap(),
            Channel::parse("presence.chat.1").unwrap()
        );
        // `user.42` made private by the rules is the channel Pusher spells private-user.42.
        let native = Channel::parse("user.42").unwrap().with_kind(ChannelKind::Private);
        assert_eq!(native, Channel::parse("private-user.42").unwrap());
        assert_eq!((native.name(), native.local_name()), ("private-user.42", "user.42"));
        assert_eq!(
            native.with_kind(ChannelKind::Public),
            Channel::parse("user.42").unwrap()
        );
    }

    // Issue 27: in Pusher the prefix is the kind, so these are four channels.
    #[test]
    fn the_kind_is_part_of_the_identity() {
        let names = [
            "orders",
            "private-orders",
            "private-encrypted-orders",
            "presence-orders",
        ];
        let channels: Vec<Channel> = names.iter().map(|n| Channel::parse(n).unwrap()).collect();
        for (i, a) in channels.iter().enumerate() {
            for b in &channels[i + 1..] {
                assert_ne!(a, b, "{} and {} are different channels", a.name(), b.name());
            }
            assert_eq!(Channel::from_key(a.name()).unwrap(), *a, "keys read back");
            assert_eq!(Channel::parse(&a.pusher_name()).unwrap(), *a, "Pusher spelling");
        }
        // A native client names every channel without a prefix; it finds the one it joined.
        let unprefixed = Channel::parse("orders").unwrap();
        assert!(channels[1].answers_to(&unprefixed));
        assert!(
            !channels[0].answers_to(&channels[1]),
            "a prefixed name means that kind only"
        );
        assert!(!Channel::parse_in(Some("a"), "private-orders")
            .unwrap()
            .answers_to(&unprefixed));
        // An encrypted channel stays what it is.
        assert_eq!(channels[2].with_kind(ChannelKind::Public), channels[2]);
    }

    #[test]
    fn apps_key_their_channels_apart() {
        let default = Channel::parse("private-orders").unwrap();
        let other = Channel::parse_in(Some("app-2"), "private-orders").unwrap();
        assert_ne!(default, other, "two apps' channels are different channels");
        assert_eq!((default.name(), default.app()), ("private-orders", None));
        assert_eq!(
            (other.name(), other.local_name(), other.app()),
            ("app-2:private-orders", "orders", Some("app-2"))
        );
        assert_eq!(other.pusher_name(), "private-orders");
        let back = Channel::from_key(other.name()).unwrap();
        assert_eq!((back.app(), back.local_name()), (Some("app-2"), "orders"));
        let presence = Channel::from_key("app-2:presence.room").unwrap();
        assert_eq!(
            (presence.kind(), presence.pusher_name()),
            (ChannelKind::Presence, "presence-room".into())
        );
        // A client cannot spell another app's key.
        assert_eq!(
            Channel::parse("app-2:orders").unwrap_err(),
            ChannelError::InvalidCharacter(':')
        );
        assert!(Channel::parse_in(Some("a:b"), "x").is_err());
        assert!(Channel::parse_in(Some(""), "x").is_err());
    }

    #[test]
    fn encrypted_and_cache_channels() {
        let enc = Channel::parse("private-encrypted-orders.1").unwrap();
        assert_eq!(enc.kind(), ChannelKind::Private);
        assert!(enc.is_encrypted() && !enc.is_cache());
        assert_eq!(enc.name(), "private-encrypted-orders.1");
        assert_eq!(enc.rule_name(), "orders.1");
        assert_eq!(enc.pusher_name(), "private-encrypted-orders.1");
        assert_ne!(enc, Channel::parse("private-orders.1").unwrap());
        for (raw, name) in [
            ("cache-news", "cache-news"),
            ("private-cache-news", "private-cache-news"),
            ("presence-cache-room", "presence.cache-room"),
            ("private-encrypted-cache-room", "private-encrypted-cache-room"),
        ] {
            let c = Channel::parse(raw).unwrap();
            assert!(c.is_cache(), "{raw}");
            assert_eq!((c.name(), c.pusher_name().as_str()), (name, raw));
        }
        assert!(!Channel::parse("news-cache").unwrap().is_cache());
    }

    #[test]
    fn rejects_bad_names() {
        let long = "a".repeat(MAX_CHANNEL_NAME_LEN + 1);
        let table: &[(&str, ChannelError)] = &[
            ("", ChannelError::Empty),
            ("private-", ChannelError::Empty),
            ("presence-", ChannelError::Empty),
            ("presence.", ChannelError::Empty),
            (&long, ChannelError::TooLong),
            ("has space", ChannelError::InvalidCharacter(' ')),
            ("a/b", ChannelError::InvalidCharacter('/')),
            ("ünï", ChannelError::InvalidCharacter('ü')),
            ("a\nb", ChannelError::InvalidCharacter('\n')),
            ("private-encrypted-", ChannelError::Empty),
        ];
        for (raw, err) in table {
            assert_eq!(Channel::parse(raw).unwrap_err(), *err, "{raw:?}");
        }
        assert!(Channel::parse(&"a".repeat(MAX_CHANNEL_NAME_LEN)).is_ok());
    }
}
