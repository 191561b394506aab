//! The control bus between nodes: typed notices on `{p}rustaxum:control`.

use serde::{Deserialize, Serialize};

/// A notice on the control bus between nodes (`{p}rustaxum:control`), published with
/// [`RedisBroker::publish_control`](super::RedisBroker::publish_control). One variant per operation: a new one is handled
/// wherever notices are, or it does not compile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum Control {
    /// Close a user's connections on every node (`{"op":"terminate_user","user_id"}`).
    #[serde(rename = "terminate_user")]
    TerminateUser {
        /// The user (app-scoped key).
        user_id: String,
    },
    /// An EmitHub channel changed or was deleted: nodes read it again from the store
    /// (`{"op":"emithub.channel","payload":{"id"}}`).
    #[serde(rename = "emithub.channel")]
    ManagedChannelChanged {
        /// Which channel.
        payload: ChannelRef,
    },
}

/// A managed channel named in a [`Control`] notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRef {
    /// The channel's id.
    pub id: uuid::Uuid,
}

/// A control notice as it travels: the operation and the node that sent it.
#[derive(Serialize, Deserialize)]
pub(super) struct ControlWire<'a> {
    #[serde(flatten)]
    pub(super) control: Control,
    #[serde(borrow)]
    pub(super) node: std::borrow::Cow<'a, str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_keep_their_wire_shape() {
        let wire = ControlWire {
            control: Control::TerminateUser { user_id: "42".into() },
            node: "n1".into(),
        };
        assert_eq!(
            serde_json::to_string(&wire).unwrap(),
            r#"{"op":"terminate_user","user_id":"42","node":"n1"}"#
        );
        let id = uuid::Uuid::nil();
        let text = format!(r#"{{"op":"emithub.channel","payload":{{"id":"{id}"}},"node":"n2"}}"#);
        let read: ControlWire<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(
            read.control,
            Control::ManagedChannelChanged {
                payload: ChannelRef { id }
            }
        );
        assert!(serde_json::from_str::<ControlWire<'_>>(r#"{"op":"unknown","node":"n"}"#).is_err());
    }
}
