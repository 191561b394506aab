//! One broadcast message on one channel, shared by every subscriber.
//!
//! A message is built once per channel and handed to every subscriber as an
//! `Arc<Envelope>`. Each wire protocol encodes it at most once: the first connection
//! of a protocol to write it fills that protocol's slot in the frame cache, and every
//! other connection of the protocol reuses the same bytes.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde_json::value::RawValue;

use super::socket::SocketId;
use crate::channel::Channel;

/// The wire protocols a connection can speak. Each has one slot in the frame cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `/ws`: `{"channel","event","data","timestamp"}` frames.
    Native = 0,
    /// `/app/{key}`: Pusher protocol v7.
    Pusher = 1,
    /// `/api/v1/channels/{id}/ws`: EmitHub managed channels.
    EmitHub = 2,
    /// `/ws?token=`: typed frames.
    Rtc = 3,
}

const PROTOCOLS: usize = 4;

/// What a message means to the channel, so each protocol can name it its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeKind {
    /// An application event (from an API, a driver or a client whisper).
    Event,
    /// A presence member joined.
    MemberAdded,
    /// A presence member left.
    MemberRemoved,
    /// A channel's subscriber count (`{"subscription_count": n}`), for Pusher clients.
    SubscriptionCount,
    /// Users a Pusher client watches came online or went offline
    /// (`{"events":[{"name","user_ids"}]}`); sent to chosen sockets, not a channel's.
    Watchlist,
}

/// Where a message stands in its channel's history: the same on every node. The epoch
/// changes when the history is lost (a memory store restarted); the offset grows by one
/// per message on the channel. `None` on channels that keep no history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Identifies one unbroken history of the channel.
    pub epoch: Arc<str>,
    /// The message's place in that history, from 1.
    pub offset: u64,
}

/// One message to deliver on one channel: what every publish path builds and the
/// fan-out entry (the publish pipeline's `Fanout`) hands to hooks, the broker and the hub.
#[derive(Debug, Clone)]
pub struct Message {
    /// The channel it is published on.
    pub channel: Channel,
    /// The event name, e.g. `announcement`.
    pub event: Arc<str>,
    /// The payload, already JSON (shared between the channels of one broadcast).
    pub data: Arc<RawValue>,
    /// The payload exactly as its publisher wrote it, when it came as text (the Pusher
    /// HTTP API's `data` string) and `data` cannot give those bytes back: a JSON string
    /// value (`"\"shipped\""`) or JSON with whitespace around it. Protocols whose payload
    /// is a string (Pusher, webhooks) send this; JSON protocols send `data`. `None` in
    /// every other case: the text is then a JSON string's contents, else the JSON.
    pub text: Option<Arc<str>>,
    /// A socket that must not receive it (the sender).
    pub except: Option<SocketId>,
    /// What the message means.
    pub kind: EnvelopeKind,
    /// When it was published, RFC 3339 with milliseconds.
    pub timestamp: Arc<str>,
    /// Its place in the channel's history, when the channel keeps one.
    pub position: Option<Position>,
    /// The user who sent it (a client event of an authenticated connection); `None` when
    /// the server or an API published it.
    pub sender: Option<Sender>,
}

/// The user who sent a message: the id, and whether the app's authorization gave it as a
/// JSON number (Laravel's `$user->id`), so it is written back as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// The user id.
    pub id: Arc<str>,
    /// Whether the id is written as a JSON number.
    pub numeric: bool,
}

impl Sender {
    /// A sender whose id is text.
    pub fn text(id: impl Into<Arc<str>>) -> Self {
        Self {
            id: id.into(),
            numeric: false,
        }
    }
}

impl serde::Serialize for Sender {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_user_id(&self.id, self.numeric, serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Sender {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(id) => Ok(Self::text(id)),
            serde_json::Value::Number(n) => Ok(Self {
                id: n.to_string().into(),
                numeric: true,
            }),
            _ => Err(serde::de::Error::custom("a user id is a string or a number")),
        }
    }
}

impl std::fmt::Display for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id)
    }
}

/// Writes a user id as JSON: a number when `numeric` (and it is one), else a string.
pub(crate) fn serialize_user_id<S: serde::Serializer>(
    id: &str,
    numeric: bool,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    match numeric.then(|| id.parse::<serde_json::Number>().ok()).flatten() {
        Some(n) => n.serialize(serializer),
        None => serializer.serialize_str(id),
    }
}

impl Message {
    /// An application event published now, with no sender to skip and no position.
    pub fn event(channel: Channel, event: impl Into<Arc<str>>, data: Arc<RawValue>) -> Self {
        Self {
            channel,
            event: event.into(),
            data,
            text: None,
            except: None,
            kind: EnvelopeKind::Event,
            timestamp: now_rfc3339(),
            position: None,
            sender: None,
        }
    }

    /// The same payload given as text: `text` is kept when `data` cannot reproduce it.
    pub fn with_text(mut self, text: Option<Arc<str>>) -> Self {
        self.text = text;
        self
    }

    /// The same message, sent by `user`.
    pub fn sender(mut self, user: Option<Sender>) -> Self {
        self.sender = user;
        self
    }

    /// The same message without delivery to `socket`.
    pub fn except(mut self, socket: Option<SocketId>) -> Self {
        self.except = socket;
        self
    }

    /// The same message with another meaning (presence events).
    pub fn kind(mut self, kind: EnvelopeKind) -> Self {
        self.kind = kind;
        self
    }
}

/// A message on one channel as the hub hands it to every subscriber: the message and
/// each wire protocol's encoded frame, computed once.
pub struct Envelope {
    /// The channel it is published on (with the kind the hub knows it by).
    pub channel: Channel,
    /// The event name, e.g. `announcement`.
    pub event: Arc<str>,
    /// The payload, already JSON (shared between the channels of one broadcast).
    pub data: Arc<RawValue>,
    /// The payload as its publisher wrote it, when `data` cannot give it back (see
    /// [`Message::text`](Message#structfield.text)).
    pub text: Option<Arc<str>>,
    /// When it was published, RFC 3339 with milliseconds.
    pub timestamp: Arc<str>,
    /// A socket that must not receive it (the sender).
    pub except: Option<SocketId>,
    /// What the message means.
    pub kind: EnvelopeKind,
    /// Its place in the channel's history, when the channel keeps one.
    pub position: Option<Position>,
    /// The user who sent it, for client events of authenticated connections.
    pub sender: Option<Sender>,
    frames: [OnceLock<Box<dyn Any + Send + Sync>>; PROTOCOLS],
    encoded: Arc<AtomicU64>,
    /// When the hub queued it (for the publish-to-write latency).
    pub queued_at: std::time::Instant,
    /// Where the time from queueing to the last write goes, once some socket was given
    /// it: recorded when the last socket is done with it (the envelope is dropped).
    duration: Option<Arc<super::latency::LatencyHistogram>>,
    reached: std::sync::atomic::AtomicBool,
}

impl Drop for Envelope {
    fn drop(&mut self) {
        if let Some(histogram) = &self.duration {
            if self.reached.load(Ordering::Relaxed) {
                histogram.record(self.queued_at.elapsed());
            }
        }
    }
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("channel", &self.channel)
            .field("event", &self.event)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Envelope {
    /// `message` on `channel` (the hub's record of it), counting encodings in `encoded`;
    /// once [`reached`](Self::reached) is called, the time until the last socket is done
    /// with it goes to `duration`.
    pub(super) fn new(
        channel: Channel,
        message: Message,
        encoded: Arc<AtomicU64>,
        duration: Option<Arc<super::latency::LatencyHistogram>>,
    ) -> Self {
        Self {
            channel,
            event: message.event,
            data: message.data,
            text: message.text,
            timestamp: message.timestamp,
            except: message.except,
            kind: message.kind,
            position: message.position,
            sender: message.sender,
            frames: Default::default(),
            encoded,
            queued_at: std::time::Instant::now(),
            duration,
            reached: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Some socket was given it: its broadcast duration is recorded when it is dropped.
    pub(super) fn reached(&self) {
        self.reached.store(true, Ordering::Relaxed);
    }

    /// A message outside the hub (replayed from history), to encode for one socket.
    pub fn detached(message: Message) -> Self {
        let channel = message.channel.clone();
        Self::new(channel, message, Arc::default(), None)
    }

    /// The frame for `protocol`, encoding it with `encode` only the first time.
    ///
    /// `T` is the protocol's frame type (for example a WebSocket text payload); it must
    /// be cheap to clone, because every connection of the protocol gets a clone.
    pub fn frame<T>(&self, protocol: Protocol, encode: impl FnOnce(&Envelope) -> T) -> T
    where
        T: Clone + Send + Sync + 'static,
    {
        let slot = &self.frames[protocol as usize];
        let mut encode = Some(encode);
        let cached = slot.get_or_init(|| {
            self.encoded.fetch_add(1, Ordering::Relaxed);
            let encode = encode.take().expect("get_or_init runs its closure at most once");
            Box::new(encode(self))
        });
        match cached.downcast_ref::<T>() {
            Some(frame) => frame.clone(),
            // Two codecs asked for the same protocol with different frame types: a bug,
            // but encoding again is still correct.
            None => match encode.take() {
                Some(encode) => encode(self),
                None => unreachable!("a slot initialised by this call has type T"),
            },
        }
    }
}

/// A payload given as text (a Pusher publisher's `data` string) as JSON and text: JSON
/// text is kept byte for byte as the JSON payload (key order, escapes, number spelling);
/// other text becomes a JSON string. The text is returned too when the JSON cannot give
/// it back ([`payload_text`] of the JSON differs: a JSON string value, or whitespace
/// around the JSON).
#[cfg(feature = "server")]
pub(crate) fn payload_from_text(text: String) -> (Arc<RawValue>, Option<Arc<str>>) {
    match RawValue::from_string(text.clone()) {
        Ok(raw) => {
            let kept = (raw.get().len() != text.len() || raw.get().starts_with('"')).then(|| Arc::from(text));
            (Arc::from(raw), kept)
        }
        Err(_) => {
            let raw = serde_json::value::to_raw_value(&text).expect("a string is JSON");
            (Arc::from(raw), None)
        }
    }
}

/// The payload as text (what Pusher clients and webhooks carry): `text` when the publisher
/// gave one that `data` cannot reproduce, else a JSON string's contents, else the JSON.
#[cfg(feature = "server")]
pub(crate) fn payload_text<'a>(data: &'a RawValue, text: Option<&'a str>) -> std::borrow::Cow<'a, str> {
    if let Some(text) = text {
        return text.into();
    }
    match serde_json::from_str::<std::borrow::Cow<'_, str>>(data.get()) {
        Ok(s) => s,
        Err(_) => data.get().into(),
    }
}

/// Current time as RFC 3339 with milliseconds, the timestamp format of every frame.
pub(crate) fn now_rfc3339() -> Arc<str> {
    chrono::Utc::now()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        .into()
}
