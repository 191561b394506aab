//! Channel names, parsed once at the edge into a typed [`Channel`].
//!
//! Native clients name channels `general`, `user.42`, `presence.chat.1`; Pusher
//! clients name the same channels `general`, `private-user.42`, `presence-chat.1`.
//! Both spellings parse to the same canonical [`Channel`], so the hub keys every
//! channel once and each wire protocol renders the name its clients expect.

use std::fmt;
use std::sync::Arc;

/// Longest accepted channel name in bytes, prefix included (Pusher's documented limit).
pub const MAX_CHANNEL_NAME_LEN: usize = 164;

/// What kind of channel a name denotes, which decides how joining it is authorized.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
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
    /// `private-encrypted-` channels need end-to-end encryption keys this server does not manage.
    #[error("encrypted channels (private-encrypted-*) are not supported")]
    EncryptedNotSupported,
}

/// A validated channel: its kind and its canonical (native) name.
///
/// Two channels are equal when their canonical names are: the kind is an attribute
/// (the rules decide that `user.42` is private), not part of the identity. Cloning is
/// cheap (the name is reference counted).
#[derive(Debug, Clone)]
pub struct Channel {
    kind: ChannelKind,
    name: Arc<str>,
}

const PUSHER_PRIVATE: &str = "private-";
const PUSHER_PRESENCE: &str = "presence-";
const NATIVE_PRESENCE: &str = "presence.";
const PUSHER_ENCRYPTED: &str = "private-encrypted-";

impl Channel {
    /// Parses a channel name in native or Pusher spelling.
    ///
    /// | input             | kind     | canonical name    |
    /// |-------------------|----------|-------------------|
    /// | `general`         | public   | `general`         |
    /// | `private-user.42` | private  | `user.42`         |
    /// | `presence-chat.1` | presence | `presence.chat.1` |
    /// | `presence.chat.1` | presence | `presence.chat.1` |
    ///
    /// Whether a native name without a prefix (such as `user.42`) is private is decided
    /// by the channel rules at join time, not by the parser.
    pub fn parse(raw: &str) -> Result<Self, ChannelError> {
        if raw.is_empty() {
            return Err(ChannelError::Empty);
        }
        if raw.len() > MAX_CHANNEL_NAME_LEN {
            return Err(ChannelError::TooLong);
        }
        if let Some(bad) = raw.chars().find(|c| !is_channel_char(*c)) {
            return Err(ChannelError::InvalidCharacter(bad));
        }
        if raw.starts_with(PUSHER_ENCRYPTED) {
            return Err(ChannelError::EncryptedNotSupported);
        }
        let (kind, name): (ChannelKind, Arc<str>) = if let Some(rest) = raw.strip_prefix(PUSHER_PRIVATE) {
            (ChannelKind::Private, rest.into())
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
        Ok(Self { kind, name })
    }

    /// The kind implied by the name's spelling.
    pub fn kind(&self) -> ChannelKind {
        self.kind
    }

    /// The canonical (native protocol) name, e.g. `user.42` or `presence.chat.1`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shared canonical name, for use as a map key without copying.
    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// Returns the same channel with another kind (used when rules decide a native
    /// name such as `user.42` is private).
    pub fn with_kind(&self, kind: ChannelKind) -> Self {
        Self {
            kind,
            name: self.name.clone(),
        }
    }

    /// The name as a Pusher client spells it: `private-user.42`, `presence-chat.1`.
    pub fn pusher_name(&self) -> String {
        match self.kind {
            ChannelKind::Public => self.name.to_string(),
            ChannelKind::Private => format!("{PUSHER_PRIVATE}{}", self.name),
            ChannelKind::Presence => {
                let rest = self.name.strip_prefix(NATIVE_PRESENCE).unwrap_or(&self.name);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_native_and_pusher_spellings() {
        let table: &[(&str, ChannelKind, &str, &str)] = &[
            ("general", ChannelKind::Public, "general", "general"),
            ("user.42", ChannelKind::Public, "user.42", "user.42"),
            ("private-user.42", ChannelKind::Private, "user.42", "private-user.42"),
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
        assert_eq!(
            Channel::parse("private-user.42").unwrap().name(),
            Channel::parse("user.42").unwrap().name()
        );
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
            ("private-encrypted-x", ChannelError::EncryptedNotSupported),
        ];
        for (raw, err) in table {
            assert_eq!(Channel::parse(raw).unwrap_err(), *err, "{raw:?}");
        }
        assert!(Channel::parse(&"a".repeat(MAX_CHANNEL_NAME_LEN)).is_ok());
    }
}
