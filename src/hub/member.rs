//! Who is on a presence channel: a member's id (with the JSON type the app gave it) and
//! public information. Presence keeps them; lifecycle events and frames carry them.

use serde::Serialize;

/// One member of a presence channel: `{"user_id","user_info"}` in JSON, the id a number
/// when the app's authorization gave a number (Laravel's `$user->id`), else a string.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Member {
    /// The user id.
    pub user_id: String,
    /// Public information about the user.
    pub user_info: serde_json::Value,
    /// Whether the app gave the id as a JSON number: it is sent back as one (member lists,
    /// `member_added`/`member_removed`, client events' `user_id`, the users API, webhooks).
    #[cfg_attr(feature = "server", schema(ignore))]
    pub numeric_id: bool,
}

impl Member {
    /// A member whose id is text.
    pub fn new(user_id: impl Into<String>, user_info: serde_json::Value) -> Self {
        Self {
            user_id: user_id.into(),
            user_info,
            numeric_id: false,
        }
    }

    /// A member from an app's `{"user_id","user_info"}` (Pusher's `channel_data`): the id
    /// a non-empty string or a number, whose type is kept. `None` without a usable id.
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        let (user_id, numeric_id) = match value.get("user_id")? {
            serde_json::Value::String(s) if !s.is_empty() => (s.clone(), false),
            serde_json::Value::Number(n) => (n.to_string(), true),
            _ => return None,
        };
        Some(Self {
            user_id,
            user_info: value.get("user_info").cloned().unwrap_or(serde_json::Value::Null),
            numeric_id,
        })
    }

    /// The id with its JSON type.
    pub fn id(&self) -> UserId<'_> {
        UserId {
            id: &self.user_id,
            numeric: self.numeric_id,
        }
    }
}

/// A user id as JSON: a number when the app gave one, else a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserId<'a> {
    /// The id's text.
    pub id: &'a str,
    /// Whether it is written as a number.
    pub numeric: bool,
}

impl Serialize for UserId<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        crate::hub::serialize_user_id(self.id, self.numeric, serializer)
    }
}

impl UserId<'_> {
    /// The id as a message's sender.
    pub fn sender(&self) -> crate::hub::Sender {
        crate::hub::Sender {
            id: self.id.into(),
            numeric: self.numeric,
        }
    }
}

impl Serialize for Member {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Member", 2)?;
        s.serialize_field("user_id", &self.id())?;
        s.serialize_field("user_info", &self.user_info)?;
        s.end()
    }
}
