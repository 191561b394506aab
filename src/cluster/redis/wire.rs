//! The wire format between nodes, which is also what Laravel's Redis broadcaster
//! publishes (`{"event","data","socket"}`; the other fields are rustaxum's), and Redis
//! glob escaping.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::channel::Channel;
use crate::hub::{now_rfc3339, EnvelopeKind, Message, Position, SocketId};

/// A message between nodes, and the format Laravel's Redis broadcaster publishes
/// (`{"event","data","socket"}`; `node` and `kind` are rustaxum's additions).
#[derive(Serialize, Deserialize)]
pub(super) struct Wire<'a> {
    pub(super) event: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub(super) data: Option<&'a RawValue>,
    #[serde(default)]
    pub(super) socket: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) node: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) kind: Option<std::borrow::Cow<'a, str>>,
    /// The payload as its publisher wrote it, when `data` cannot give it back
    /// ([`Message::text`](crate::hub::Message#structfield.text)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) txt: Option<std::borrow::Cow<'a, str>>,
    /// The user who sent a client event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) user: Option<crate::hub::Sender>,
    /// When it was published (kept across nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) ts: Option<std::borrow::Cow<'a, str>>,
    /// The channel's key, on a Redis Cluster's shard channels (which carry many channels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) ch: Option<std::borrow::Cow<'a, str>>,
    /// Its place in the channel's history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) pos: Option<Position>,
    /// Delivered by every node, the publisher included (set by the history script, which
    /// publishes in offset order).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) all: bool,
}

/// A message published on `channel` (by a node or by another program), and the node that
/// published it; `None` when it is not `{"event","data"}` JSON.
pub(crate) fn decode_wire(channel: Channel, payload: &[u8]) -> Option<(Message, Option<String>)> {
    wire_message(channel, serde_json::from_slice::<Wire<'_>>(payload).ok()?)
}

pub(super) fn wire_message(channel: Channel, wire: Wire<'_>) -> Option<(Message, Option<String>)> {
    let except = match &wire.socket {
        Some(Value::String(s)) => s.parse::<SocketId>().ok(),
        _ => None,
    };
    let kind = match wire.kind.as_deref() {
        Some("member_added") => EnvelopeKind::MemberAdded,
        Some("member_removed") => EnvelopeKind::MemberRemoved,
        Some("subscription_count") => EnvelopeKind::SubscriptionCount,
        Some("watchlist") => EnvelopeKind::Watchlist,
        _ => EnvelopeKind::Event,
    };
    let data: Arc<RawValue> = match wire.data {
        Some(d) => Arc::from(d.to_owned()),
        None => Arc::from(serde_json::value::to_raw_value(&json!({})).ok()?),
    };
    let message = Message {
        channel,
        event: wire.event.as_ref().into(),
        data,
        text: wire.txt.as_deref().map(Arc::from),
        except,
        kind,
        timestamp: wire.ts.as_deref().map_or_else(now_rfc3339, Arc::from),
        position: wire.pos,
        sender: wire.user,
    };
    Some((message, wire.node.map(|n| n.into_owned())))
}

/// `s` with Redis glob characters escaped, to match it literally in `SCAN MATCH` or `PSUBSCRIBE`.
pub(crate) fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
