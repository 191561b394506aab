//! Channel history and recovery: a client that drops for a moment misses nothing.
//!
//! Every message published on a channel that keeps history gets a [`Position`]: an epoch
//! (one unbroken history of the channel; it changes when the history is lost) and an
//! offset that grows by one per message, the same on every node. A client that comes
//! back with the last position it saw gets what it missed ([`History::recover`]), in
//! order, then live messages, with neither gaps nor duplicates.
//!
//! Stores, behind [`HistoryStore`]:
//! - [`MemoryHistory`]: one node, bounded per channel (size and age) and in total (bytes).
//! - [`RedbHistory`]: one node, durable, in the EmitHub database file.
//! - [`RedisHistory`]: a cluster; the offset is assigned, the message kept (a stream) and
//!   published to every node in one atomic script, so every node delivers in offset order.
//!
//! Order on one node: the fan-out appends and delivers a channel's messages under that
//! channel's lock (the fan-out's `publish_kept`, under `History::lock`), so sockets see offsets in order. A recovering
//! socket subscribes first, then reads; whatever it then receives live at or below the
//! last offset it was sent from history is skipped (the session's floor).

mod memory;
#[cfg(feature = "redb")]
mod redb;
#[cfg(feature = "redis")]
mod redis;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::auth::Pattern;
use crate::backend::BackendError;
use crate::channel::Channel;
use crate::hub::{EnvelopeKind, Message, Position};

pub use self::memory::MemoryHistory;
// EmitHub's migration and backups.
#[cfg(all(feature = "redb", feature = "server"))]
pub(crate) use self::redb::{copy_table, import, Imported};
#[cfg(feature = "redb")]
pub use self::redb::{RedbHistory, Tables as RedbTables};
#[cfg(feature = "redis")]
pub use self::redis::RedisHistory;

/// How much of a channel's history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Most messages per channel.
    pub size: usize,
    /// Oldest message kept.
    pub ttl: Duration,
}

impl Retention {
    /// Whether a message published at `published_ms` (Unix milliseconds) has expired at `now_ms`.
    pub fn expired(&self, published_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(published_ms) > u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// The store could not be read or written (the underlying error is the source).
    #[error("history store: {0}")]
    Store(#[source] crate::backend::Failure),
    /// The cluster backend failed.
    #[error(transparent)]
    Cluster(#[from] BackendError),
}

impl From<HistoryError> for BackendError {
    fn from(e: HistoryError) -> Self {
        match e {
            HistoryError::Cluster(c) => c,
            HistoryError::Store(s) => BackendError::Unavailable(s.to_string()),
        }
    }
}

/// Part of a channel's history, as a store reads it.
#[derive(Debug, Clone)]
pub struct Slice {
    /// The channel's current epoch.
    pub epoch: Arc<str>,
    /// The offset of the channel's last message (0 before the first).
    pub top: u64,
    /// The offset of the oldest message still kept (`top + 1` when none is).
    pub first: u64,
    /// The messages asked for, oldest first, with their positions.
    pub messages: Vec<Message>,
}

impl Slice {
    /// The channel's current position.
    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch.clone(),
            offset: self.top,
        }
    }
}

/// Which end of the range a read keeps when more than `limit` messages match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The oldest (paging forward).
    Oldest,
    /// The newest (the tail of a channel).
    Newest,
}

/// What a store holds, for stats and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Channels with a history.
    pub channels: u64,
    /// Messages kept.
    pub messages: u64,
    /// Bytes kept (payloads and names; the memory store's bound).
    pub bytes: u64,
    /// Messages given a position but not kept because one alone would take more than
    /// its share of the memory store's bound (a quarter of `BROADCAST_HISTORY_MEMORY_LIMIT`).
    pub too_large: u64,
}

/// Keeps channels' histories.
#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// `memory`, `redb` or `redis`.
    fn name(&self) -> &'static str;

    /// Gives `message` the next position on its channel and keeps it within `retention`.
    async fn append(&self, message: &Message, retention: Retention) -> Result<Position, HistoryError>;

    /// Messages of `channel` after offset `after` (every kept one when 0), at most `limit`
    /// of them from `end`, and where the channel stands. Expired messages are not returned.
    async fn read(
        &self,
        channel: &Channel,
        after: u64,
        limit: usize,
        end: End,
        retention: Retention,
    ) -> Result<Slice, HistoryError>;

    /// What the store holds (the memory store's exact figures; others report what they can).
    fn usage(&self) -> Usage {
        Usage::default()
    }

    /// Whether [`append`](Self::append) also publishes the message to every node,
    /// itself included (the Redis store): the fan-out then neither publishes nor
    /// delivers it; it comes back through the broker, in position order.
    fn publishes(&self) -> bool {
        false
    }

    /// Drops expired messages now (stores that do not expire by themselves).
    async fn sweep(&self, _retention: Retention) -> Result<usize, HistoryError> {
        Ok(0)
    }

    /// Forgets `channel`'s history (its messages and position): the next message starts
    /// a new one. For a channel that is deleted (an EmitHub channel).
    async fn clear(&self, channel: &Channel) -> Result<(), HistoryError>;
}

/// Which channels of a family (the channels whose names start with a prefix) keep history,
/// and how much: a family's owner decides for its channels, instead of the patterns
/// (EmitHub: a managed channel keeps its messages while `persist_messages` is on, as many
/// as `EMIT_HUB_MAX_MESSAGES_PER_CHANNEL` for `EMIT_HUB_MESSAGE_RETENTION_DAYS`).
pub trait KeepPolicy: Send + Sync {
    /// Whether `channel` (one of the family) keeps its messages now.
    fn keeps(&self, channel: &Channel) -> bool;

    /// How much of each of the family's channels is kept.
    fn retention(&self) -> Retention;
}

/// A family of channels whose owner decides what is kept, in a store of its own.
struct Family {
    prefix: String,
    policy: std::sync::Weak<dyn KeepPolicy>,
    store: Arc<dyn HistoryStore>,
}

/// The history settings (from `BROADCAST_HISTORY_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// `BROADCAST_HISTORY_CHANNELS`: patterns of the channels that keep history (none by
    /// default), e.g. `orders.*,chat.{room}`.
    pub channels: Vec<String>,
    /// `BROADCAST_HISTORY_SIZE`: messages kept per channel, default 1000.
    pub size: usize,
    /// `BROADCAST_HISTORY_TTL`: how long a message is kept, default 10 minutes.
    pub ttl: Duration,
    /// `BROADCAST_HISTORY_STORE`: `memory` (default on one node), `redb` (the EmitHub
    /// database file) or `redis` (always in a cluster).
    pub store: Option<StoreKind>,
    /// `BROADCAST_HISTORY_RECOVERY_LIMIT`: most messages one recovery sends, default 1000.
    pub recovery_limit: usize,
    /// `BROADCAST_HISTORY_MEMORY_LIMIT`: bytes the memory store keeps over all channels,
    /// default 64 MiB (the oldest messages go first).
    pub memory_limit: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            channels: Vec::new(),
            size: 1000,
            ttl: Duration::from_secs(600),
            store: None,
            recovery_limit: 1000,
            memory_limit: 64 * 1024 * 1024,
        }
    }
}

/// Where history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// In this process.
    Memory,
    /// In the EmitHub redb file.
    Redb,
    /// In Redis (cluster).
    Redis,
}

impl std::str::FromStr for StoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "memory" => Ok(Self::Memory),
            "redb" => Ok(Self::Redb),
            "redis" => Ok(Self::Redis),
            other => Err(format!("unknown history store {other:?}")),
        }
    }
}

/// What a recovery found.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// The missed messages to send, oldest first.
    pub messages: Vec<Message>,
    /// Whether they are everything the client missed (`false`: the epoch changed, the
    /// position is older than what is kept, or more were missed than one recovery sends).
    pub recovered: bool,
    /// More were missed than one recovery sends: `messages` holds the newest of them.
    pub capped: bool,
    /// Where the channel stands (the last message's position).
    pub position: Position,
}

/// Counters of the history's life.
#[derive(Debug, Default)]
struct Counters {
    appended: AtomicU64,
    recoveries: AtomicU64,
    recovered: AtomicU64,
    not_recovered: AtomicU64,
    capped: AtomicU64,
    failures: AtomicU64,
}

/// What `/api/broadcast/stats` and `/metrics` show of the history.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryStats {
    /// The store.
    pub store: &'static str,
    /// What it holds.
    #[serde(flatten)]
    pub usage: Usage,
    /// Memory store bound (bytes), 0 for other stores.
    pub memory_limit: u64,
    /// Messages given a position.
    pub appended: u64,
    /// Recoveries asked for.
    pub recoveries: u64,
    /// Recoveries that sent everything missed.
    pub recovered: u64,
    /// Recoveries that could not (epoch changed, too old, capped).
    pub not_recovered: u64,
    /// Recoveries cut to the recovery limit.
    pub capped: u64,
    /// Store failures.
    pub failures: u64,
}

const LOCKS: usize = 256;

/// The history of a node: which channels keep one, the store, the per-channel order.
pub struct History {
    patterns: Vec<Pattern>,
    retention: Retention,
    recovery_limit: usize,
    memory_limit: u64,
    store: Arc<dyn HistoryStore>,
    locks: Vec<tokio::sync::Mutex<()>>,
    counters: Counters,
    family: std::sync::OnceLock<Family>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("store", &self.store.name())
            .field(
                "channels",
                &self.patterns.iter().map(Pattern::as_str).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl History {
    /// History for the channels `config` names, kept in `store`.
    pub fn new(config: &HistoryConfig, store: Arc<dyn HistoryStore>) -> Result<Self, String> {
        let patterns = config
            .channels
            .iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            patterns,
            retention: Retention {
                size: config.size,
                ttl: config.ttl,
            },
            recovery_limit: config.recovery_limit.max(1),
            memory_limit: if store.name() == "memory" {
                config.memory_limit as u64
            } else {
                0
            },
            store,
            locks: (0..LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
            counters: Counters::default(),
            family: std::sync::OnceLock::new(),
        })
    }

    /// Lets `policy` decide which channels whose names start with `prefix` keep history,
    /// and how much, kept in `store` (once; a second family is refused: `false`). The
    /// policy is held weakly: its owner usually holds the history.
    pub fn set_family(
        &self,
        prefix: &str,
        policy: std::sync::Weak<dyn KeepPolicy>,
        store: Arc<dyn HistoryStore>,
    ) -> bool {
        self.family
            .set(Family {
                prefix: prefix.to_string(),
                policy,
                store,
            })
            .is_ok()
    }

    /// The family `channel` belongs to, if any.
    fn family_of(&self, channel: &Channel) -> Option<&Family> {
        self.family
            .get()
            .filter(|f| channel.name().starts_with(f.prefix.as_str()))
    }

    /// Where `channel`'s history is kept, and how much of it.
    fn place(&self, channel: &Channel) -> (&Arc<dyn HistoryStore>, Retention) {
        match self.family_of(channel) {
            Some(f) => (&f.store, f.policy.upgrade().map_or(self.retention, |p| p.retention())),
            None => (&self.store, self.retention),
        }
    }

    /// Whether appending a message of `channel` also publishes it to every node (see
    /// [`HistoryStore::publishes`]).
    pub(crate) fn publishes(&self, channel: &Channel) -> bool {
        self.place(channel).0.publishes()
    }

    /// Also keeps history for channels matching `pattern` (e.g. from a rules file).
    pub fn add_channels(&mut self, pattern: Pattern) {
        self.patterns.push(pattern);
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn HistoryStore> {
        &self.store
    }

    /// How much is kept per channel.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Most messages one recovery sends.
    pub fn recovery_limit(&self) -> usize {
        self.recovery_limit
    }

    /// Whether `channel` keeps history.
    pub fn keeps(&self, channel: &Channel) -> bool {
        match self.family_of(channel) {
            Some(f) => f.policy.upgrade().is_some_and(|p| p.keeps(channel)),
            None => self.patterns.iter().any(|p| p.matches(channel.local_name()).is_some()),
        }
    }

    /// Gives `message` its position and keeps it (counted).
    pub(crate) async fn append(&self, message: &Message) -> Result<Position, HistoryError> {
        let (store, retention) = self.place(&message.channel);
        match store.append(message, retention).await {
            Ok(p) => {
                self.counters.appended.fetch_add(1, Ordering::Relaxed);
                Ok(p)
            }
            Err(e) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(channel = %message.channel, error = %e, "could not keep a message in history; not published");
                Err(e)
            }
        }
    }

    /// The lock that keeps `channel`'s appends and deliveries in position order.
    pub(crate) fn lock(&self, channel: &Channel) -> &tokio::sync::Mutex<()> {
        let mut h = DefaultHasher::new();
        channel.name().hash(&mut h);
        let i = usize::try_from(h.finish() % LOCKS as u64).unwrap_or(0);
        &self.locks[i]
    }

    /// Messages of `channel` for the history API: after `since` (oldest first, paging
    /// forward) or, without it, the newest `limit`.
    pub async fn read(&self, channel: &Channel, since: Option<&Position>, limit: usize) -> Result<Slice, HistoryError> {
        let (after, end) = match since {
            Some(p) => (p.offset, End::Oldest),
            None => (0, End::Newest),
        };
        self.read_at(channel, after, limit, end).await
    }

    async fn read_at(&self, channel: &Channel, after: u64, limit: usize, end: End) -> Result<Slice, HistoryError> {
        let (store, retention) = self.place(channel);
        store
            .read(channel, after, limit, end, retention)
            .await
            .inspect_err(|_| {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
            })
    }

    /// A page of `channel`'s history going back: the newest `limit` messages before
    /// offset `before` (the newest of all without it), oldest first, and the offset to
    /// pass as `before` for the page before this one (`None` at the oldest kept message).
    pub async fn page_back(
        &self,
        channel: &Channel,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Message>, Option<u64>), HistoryError> {
        let limit = limit.max(1);
        let slice = match before {
            None => self.read_at(channel, 0, limit, End::Newest).await?,
            Some(before) => {
                // Offsets are consecutive: the page is the offsets in [before - limit, before).
                let after = before.saturating_sub(1).saturating_sub(limit as u64);
                let mut slice = self.read_at(channel, after, limit, End::Oldest).await?;
                slice
                    .messages
                    .retain(|m| m.position.as_ref().is_some_and(|p| p.offset < before));
                slice
            }
        };
        let oldest = slice
            .messages
            .first()
            .and_then(|m| m.position.as_ref())
            .map(|p| p.offset);
        let next = oldest.filter(|o| *o > slice.first);
        Ok((slice.messages, next))
    }

    /// Forgets `channel`'s history (a deleted channel).
    pub async fn clear(&self, channel: &Channel) -> Result<(), HistoryError> {
        let (store, _) = self.place(channel);
        store.clear(channel).await.inspect_err(|_| {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// Where `channel` stands (its last message's position).
    pub async fn position(&self, channel: &Channel) -> Result<Position, HistoryError> {
        let (store, retention) = self.place(channel);
        let slice = store
            .read(channel, u64::MAX, 1, End::Oldest, retention)
            .await
            .inspect_err(|_| {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
            })?;
        Ok(slice.position())
    }

    /// What a client that last saw `since` on `channel` missed. Call it after the
    /// client's socket is subscribed, so nothing published meanwhile falls between.
    pub async fn recover(&self, channel: &Channel, since: &Position) -> Result<Recovery, HistoryError> {
        self.counters.recoveries.fetch_add(1, Ordering::Relaxed);
        let limit = self.recovery_limit;
        let (store, retention) = self.place(channel);
        let slice = match store.read(channel, since.offset, limit, End::Newest, retention).await {
            Ok(s) => s,
            Err(e) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let position = slice.position();
        let continuous = slice.epoch == since.epoch && since.offset <= slice.top;
        let reaches_back = since.offset.saturating_add(1) >= slice.first;
        let missed = slice.top.saturating_sub(since.offset);
        let capped = continuous && missed > limit as u64;
        let recovery = if !continuous {
            Recovery {
                messages: Vec::new(),
                recovered: false,
                capped: false,
                position,
            }
        } else if capped {
            Recovery {
                messages: slice.messages,
                recovered: false,
                capped: true,
                position,
            }
        } else if !reaches_back {
            Recovery {
                messages: Vec::new(),
                recovered: false,
                capped: false,
                position,
            }
        } else {
            Recovery {
                messages: slice.messages,
                recovered: true,
                capped: false,
                position,
            }
        };
        if recovery.recovered {
            self.counters.recovered.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.not_recovered.fetch_add(1, Ordering::Relaxed);
        }
        if recovery.capped {
            self.counters.capped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(recovery)
    }

    /// Stats for `/api/broadcast/stats` and `/metrics`.
    pub fn stats(&self) -> HistoryStats {
        let c = &self.counters;
        let mut usage = self.store.usage();
        if let Some(f) = self.family.get().filter(|f| !Arc::ptr_eq(&f.store, &self.store)) {
            let more = f.store.usage();
            usage.channels += more.channels;
            usage.messages += more.messages;
            usage.bytes += more.bytes;
            usage.too_large += more.too_large;
        }
        HistoryStats {
            store: self.store.name(),
            usage,
            memory_limit: self.memory_limit,
            appended: c.appended.load(Ordering::Relaxed),
            recoveries: c.recoveries.load(Ordering::Relaxed),
            recovered: c.recovered.load(Ordering::Relaxed),
            not_recovered: c.not_recovered.load(Ordering::Relaxed),
            capped: c.capped.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
        }
    }

    /// Drops expired messages every few seconds until `stop`.
    pub fn start(self: &Arc<Self>, stop: tokio_util::sync::CancellationToken, tasks: &tokio_util::task::TaskTracker) {
        let history = self.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {
                        if let Err(e) = history.store.sweep(history.retention).await {
                            tracing::warn!(error = %e, "history sweep failed");
                        }
                        if let Some(f) = history.family.get().filter(|f| !Arc::ptr_eq(&f.store, &history.store)) {
                            if let Some(policy) = f.policy.upgrade() {
                                if let Err(e) = f.store.sweep(policy.retention()).await {
                                    tracing::warn!(error = %e, family = %f.prefix, "history sweep failed");
                                }
                            }
                        }
                    }
                }
            }
        });
    }
}

/// Whether a message is one history keeps: application events, not presence notices.
pub(crate) fn is_kept(message: &Message) -> bool {
    message.kind == EnvelopeKind::Event && message.position.is_none()
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// A fresh epoch: 12 characters of `[0-9a-f]` (safe in query strings and Lua).
pub(crate) fn new_epoch() -> Arc<str> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    Arc::from(&id[..12])
}

/// Parses a position written `EPOCH:OFFSET` (query strings).
pub fn parse_position(s: &str) -> Option<Position> {
    let (epoch, offset) = s.rsplit_once(':')?;
    if epoch.is_empty() || epoch.len() > 64 || !epoch.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return None;
    }
    Some(Position {
        epoch: Arc::from(epoch),
        offset: offset.parse().ok()?,
    })
}

#[cfg(test)]
mod tests;
