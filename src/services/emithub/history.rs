//! A managed channel's persisted messages are its channel history: while
//! `persist_messages` is on, the fan-out gives each message its position and keeps it in
//! the history store EmitHub hands the node's [`History`] (the redb file on one node,
//! Redis in a cluster), as many as `EMIT_HUB_MAX_MESSAGES_PER_CHANNEL` for
//! `EMIT_HUB_MESSAGE_RETENTION_DAYS`. The REST history (`GET /channels/{id}/messages`),
//! a returning socket's catch-up and the history API read it there; recoveries count in
//! the history's stats and `/metrics` like any other.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::model::{hub_channel_name, MessagePage, StoredMessage, HUB_PREFIX};
use super::{EmitHub, EmitHubError};
use crate::channel::Channel;
use crate::history::{History, HistoryError, HistoryStore, KeepPolicy, Recovery, Retention};
use crate::hub::{Message, Position};

impl KeepPolicy for EmitHub {
    fn keeps(&self, channel: &Channel) -> bool {
        matches!(self.for_hub_channel(channel), Some(Ok(c)) if c.settings.persist_messages)
    }

    fn retention(&self) -> Retention {
        let config = self.config.load();
        let days = config.message_retention_days;
        Retention {
            size: config.max_messages_per_channel.max(1),
            ttl: if days == 0 {
                Duration::MAX
            } else {
                Duration::from_secs(u64::from(days) * 24 * 3600)
            },
        }
    }
}

impl EmitHub {
    /// Makes `history` keep the managed channels' persisted messages (in this registry's
    /// history store, as its settings say). Call once, before serving.
    pub fn keep_history_in(self: &Arc<Self>, history: &History) -> bool {
        let policy: Arc<dyn KeepPolicy> = self.clone();
        history.set_family(HUB_PREFIX, Arc::downgrade(&policy), self.history_store.clone())
    }

    /// Where this registry's persisted messages are kept.
    pub fn history_store(&self) -> &Arc<dyn HistoryStore> {
        &self.history_store
    }

    fn history(&self) -> Result<Arc<History>, EmitHubError> {
        self.fanout
            .history()
            .ok_or_else(|| EmitHubError::Invalid("this node keeps no history".into()))
    }

    /// A page of the channel's persisted history.
    pub async fn messages(&self, id: Uuid, before: Option<u64>, limit: usize) -> Result<MessagePage, EmitHubError> {
        self.get(id)?;
        let channel = hub_channel(id)?;
        let (messages, next_before) = self
            .history()?
            .page_back(&channel, before, limit.clamp(1, 500))
            .await
            .map_err(history_error)?;
        let messages: Vec<StoredMessage> = messages.iter().filter_map(StoredMessage::from_history).collect();
        Ok(MessagePage {
            count: messages.len(),
            messages,
            next_before,
        })
    }

    /// What a socket that last saw `since` on a `persist_messages` channel missed (see
    /// [`History::recover`]); `None` when the channel keeps no messages.
    pub async fn recover(&self, id: Uuid, since: &Position) -> Result<Option<Recovery>, EmitHubError> {
        let managed = self.get(id)?;
        if !managed.settings.persist_messages {
            return Ok(None);
        }
        let channel = hub_channel(id)?;
        Ok(Some(
            self.history()?.recover(&channel, since).await.map_err(history_error)?,
        ))
    }

    /// Removes messages past the retention period now (the history also does so every
    /// few seconds); how many.
    pub async fn purge(&self) -> Result<usize, EmitHubError> {
        let retention = KeepPolicy::retention(self);
        self.history_store.sweep(retention).await.map_err(history_error)
    }
}

impl EmitHub {
    /// Moves what a cluster kept before persisted messages became channel history (a
    /// stream `rustaxum:emithub:messages:{id}` and a counter `rustaxum:emithub:seq:{id}`
    /// per channel) into each channel's history, sequences, ids and times unchanged, then
    /// removes the old keys. Each channel moves once, whichever node gets there first.
    /// How many messages this node moved.
    pub(super) async fn migrate_redis_streams(&self) -> Result<usize, EmitHubError> {
        use redis::AsyncCommands;
        let Some(broker) = &self.cluster else {
            return Ok(0);
        };
        let link = broker.link();
        let history = crate::history::RedisHistory::new(broker.clone());
        let retention = KeepPolicy::retention(self);
        let mut moved = 0;
        for managed in self.list() {
            let stream = link.key(&format!("emithub:messages:{}", managed.id));
            let seq = link.key(&format!("emithub:seq:{}", managed.id));
            let (s, q) = (stream.clone(), seq.clone());
            let (entries, top): (redis::streams::StreamRangeReply, Option<u64>) = link
                .exec(|mut c| async move {
                    let entries = c.xrange_all(&s).await?;
                    let top = c.get(&q).await?;
                    Ok((entries, top))
                })
                .await?;
            if entries.ids.is_empty() && top.is_none() {
                continue;
            }
            let channel = hub_channel(managed.id)?;
            let mut messages = Vec::with_capacity(entries.ids.len());
            for entry in &entries.ids {
                let Some(json) = entry.get::<String>("m") else { continue };
                let Ok(old) = serde_json::from_str::<StoredMessage>(&json) else {
                    tracing::warn!(channel = %managed.id, entry = %entry.id, "an old persisted message is unreadable; not moved");
                    continue;
                };
                messages.push(old_message(&channel, &managed.name, &old)?);
            }
            let last = messages.last().map_or(0, |(offset, _, _)| *offset);
            if history
                .import(&channel, top.unwrap_or(last).max(last), &messages, retention)
                .await
                .map_err(history_error)?
            {
                moved += messages.len();
            }
            let (s, q) = (stream, seq);
            link.exec(|mut c| async move { c.del::<_, ()>(&[s, q]).await }).await?;
        }
        if moved > 0 {
            tracing::info!(
                messages = moved,
                "moved the persisted EmitHub messages of an earlier layout into the channel history"
            );
        }
        Ok(moved)
    }
}

/// A persisted message of the earlier layout as a history message: its sequence, the hub
/// message (event, payload and time as a broadcast or relayed text has them), its time in
/// Unix milliseconds.
pub(super) fn old_message(
    channel: &Channel,
    channel_name: &str,
    old: &StoredMessage,
) -> Result<(u64, Message, u64), EmitHubError> {
    use super::model::{BroadcastPayload, RelayedPayload, CLIENT_MESSAGE_TYPE};
    let invalid = |e: serde_json::Error| EmitHubError::Invalid(e.to_string());
    let (event, data) = if old.message_type == CLIENT_MESSAGE_TYPE {
        let data = serde_json::value::to_raw_value(&RelayedPayload {
            text: old.content.clone(),
            channel_name: channel_name.to_string(),
            id: Some(old.id),
        })
        .map_err(invalid)?;
        (super::CLIENT_MESSAGE_EVENT, data)
    } else {
        let data = serde_json::value::to_raw_value(&BroadcastPayload {
            content: old.content.clone(),
            message_type: old.message_type.clone(),
            id: old.id,
        })
        .map_err(invalid)?;
        (super::BROADCAST_EVENT, data)
    };
    let message = Message {
        timestamp: Arc::from(old.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        ..Message::event(channel.clone(), event, Arc::from(data))
    };
    let ms = u64::try_from(old.timestamp.timestamp_millis()).unwrap_or(0);
    Ok((old.sequence, message, ms))
}

/// The hub channel `emithub.{id}` of managed channel `id`.
pub(super) fn hub_channel(id: Uuid) -> Result<Channel, EmitHubError> {
    Channel::parse(&hub_channel_name(id)).map_err(|e| EmitHubError::Invalid(e.to_string()))
}

pub(super) fn history_error(e: HistoryError) -> EmitHubError {
    match e {
        HistoryError::Cluster(e) => EmitHubError::Cluster(e),
        HistoryError::Store(f) => EmitHubError::Store(super::store::StoreError(f)),
    }
}

/// History in the EmitHub redb file, opened when the file exists: an application that
/// never keeps a message gets no file (reading or sweeping before then finds nothing).
#[cfg(feature = "redb")]
pub(super) struct FileHistory {
    file: super::store::RedbStore,
    tables: crate::history::RedbTables,
    opened: std::sync::Mutex<Option<Arc<crate::history::RedbHistory>>>,
}

#[cfg(feature = "redb")]
use crate::history::{End, Slice};

#[cfg(feature = "redb")]
impl FileHistory {
    pub(super) fn new(file: super::store::RedbStore, tables: crate::history::RedbTables) -> Self {
        Self {
            file,
            tables,
            opened: std::sync::Mutex::default(),
        }
    }

    /// The history, opening the file's tables if the file exists (or `create`).
    fn history(&self, create: bool) -> Result<Option<Arc<crate::history::RedbHistory>>, HistoryError> {
        let mut opened = crate::sync::lock(&self.opened);
        if let Some(h) = opened.as_ref() {
            return Ok(Some(h.clone()));
        }
        let db = match self.file.existing_database() {
            Some(db) => db,
            None if create => self.file.database().map_err(|e| HistoryError::Store(e.0))?,
            None => return Ok(None),
        };
        let history = Arc::new(crate::history::RedbHistory::open_tables(db, self.tables)?);
        *opened = Some(history.clone());
        Ok(Some(history))
    }
}

#[cfg(feature = "redb")]
#[async_trait::async_trait]
impl HistoryStore for FileHistory {
    fn name(&self) -> &'static str {
        "redb"
    }

    async fn append(&self, message: &Message, retention: Retention) -> Result<Position, HistoryError> {
        match self.history(true)? {
            Some(h) => h.append(message, retention).await,
            None => Err(HistoryError::Store(crate::backend::Failure::new(
                "the database is not open",
            ))),
        }
    }

    async fn read(
        &self,
        channel: &Channel,
        after: u64,
        limit: usize,
        end: End,
        retention: Retention,
    ) -> Result<Slice, HistoryError> {
        match self.history(false)? {
            Some(h) => h.read(channel, after, limit, end, retention).await,
            None => Ok(Slice {
                epoch: Arc::from("none"),
                top: 0,
                first: 1,
                messages: Vec::new(),
            }),
        }
    }

    async fn sweep(&self, retention: Retention) -> Result<usize, HistoryError> {
        match self.history(false)? {
            Some(h) => h.sweep(retention).await,
            None => Ok(0),
        }
    }

    async fn clear(&self, channel: &Channel) -> Result<(), HistoryError> {
        match self.history(false)? {
            Some(h) => h.clear(channel).await,
            None => Ok(()),
        }
    }
}
