//! Where managed channels and their persisted messages live.
//!
//! - [`RedbStore`]: an embedded redb database file (single node; also in memory for
//!   tests and the library's defaults). Feature `redb` (on by default).
//! - [`MemoryStore`]: this process only, for a library built without `redb`.
//! - [`RedisStore`]: Redis hashes and streams, so every node of a cluster sees the same
//!   channels and history.

mod memory;
#[cfg(feature = "redb")]
mod redb;
mod redis;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use self::memory::MemoryStore;
#[cfg(feature = "redb")]
pub use self::redb::RedbStore;
pub use self::redis::RedisStore;

use super::model::{ManagedChannel, MessagePage, StoredMessage};

/// A store failed: what it was doing, and the underlying error as its source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(transparent)]
pub struct StoreError(#[from] pub crate::backend::Failure);

impl StoreError {
    /// A failure with no underlying error.
    pub fn new(context: impl Into<String>) -> Self {
        Self(crate::backend::Failure::new(context))
    }

    /// `context` failed because of `source`.
    pub fn caused(context: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(crate::backend::Failure::caused(context, source))
    }

    /// The underlying error, with no more to say.
    pub fn of(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(crate::backend::Failure::of(source))
    }
}

/// A message to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Its id.
    pub id: Uuid,
    /// The text.
    pub content: String,
    /// Its type.
    pub message_type: String,
    /// When it was sent.
    pub timestamp: DateTime<Utc>,
}

/// Channels and messages. Every method is a complete, atomic change.
#[async_trait]
pub trait ChannelStore: Send + Sync {
    /// Every channel.
    async fn channels(&self) -> Result<Vec<ManagedChannel>, StoreError>;

    /// One channel.
    async fn channel(&self, id: Uuid) -> Result<Option<ManagedChannel>, StoreError>;

    /// Creates or replaces a channel.
    async fn put(&self, channel: &ManagedChannel) -> Result<(), StoreError>;

    /// Deletes a channel and its messages; whether it existed.
    async fn delete(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Appends a message to a channel's history, keeping at most `keep` messages (the
    /// oldest go first); returns it with its sequence number.
    async fn append(&self, channel: Uuid, message: NewMessage, keep: usize) -> Result<StoredMessage, StoreError>;

    /// Up to `limit` messages older than sequence `before` (the newest when `None`),
    /// returned oldest first.
    async fn messages(&self, channel: Uuid, before: Option<u64>, limit: usize) -> Result<MessagePage, StoreError>;

    /// Removes messages older than `cutoff`, in every channel; how many.
    async fn purge_older_than(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError>;

    /// Writes a consistent copy of everything to `path` (a redb file), taken while serving.
    async fn backup(&self, path: &std::path::Path) -> Result<(), StoreError>;

    /// Whether the store answers (for `/api/v1/ready`).
    async fn check(&self) -> Result<(), StoreError>;

    /// The store's generation: an id the store takes from `fresh` when it has none and
    /// keeps as long as its data. A different answer than the last one means the data
    /// went behind this node's back (a Redis restarted without persistence, a failover
    /// to a replica that had not received the writes). `None`: a store that cannot lose
    /// its data so (a file, this process's memory).
    async fn generation(&self, fresh: &str) -> Result<Option<String>, StoreError> {
        let _ = fresh;
        Ok(None)
    }

    /// Writes `channel` back unless the store has a channel with its id (another node
    /// wrote it back first, or changed it since); whether it wrote.
    async fn restore(&self, channel: &ManagedChannel) -> Result<bool, StoreError> {
        if self.channel(channel.id).await?.is_some() {
            return Ok(false);
        }
        self.put(channel).await?;
        Ok(true)
    }
}

/// The page of `all` (oldest first, by sequence) that [`ChannelStore::messages`] returns.
pub(crate) fn page(mut older: Vec<StoredMessage>, limit: usize) -> MessagePage {
    // `older` holds up to limit + 1 messages, newest first.
    let more = older.len() > limit;
    older.truncate(limit);
    older.reverse();
    let next_before = if more { older.first().map(|m| m.sequence) } else { None };
    MessagePage {
        count: older.len(),
        messages: older,
        next_before,
    }
}

#[cfg(test)]
pub(crate) mod contract {
    //! What every store must do, run against each implementation.
    use super::*;
    use crate::emithub::model::{ChannelSettings, ChannelStatus};

    pub(crate) fn channel(name: &str) -> ManagedChannel {
        let now = Utc::now();
        ManagedChannel {
            id: Uuid::new_v4(),
            name: name.into(),
            description: Some("d".into()),
            status: ChannelStatus::Created,
            created_at: now,
            updated_at: now,
            settings: ChannelSettings {
                max_connections: 10,
                allow_client_messages: true,
                persist_messages: true,
                rate_limit_per_minute: 60,
            },
        }
    }

    fn message(text: &str, at: DateTime<Utc>) -> NewMessage {
        NewMessage {
            id: Uuid::new_v4(),
            content: text.into(),
            message_type: "Broadcast".into(),
            timestamp: at,
        }
    }

    pub(crate) async fn check(store: &dyn ChannelStore) {
        let mut a = channel("A");
        let b = channel("B");
        store.put(&a).await.unwrap();
        store.put(&b).await.unwrap();
        a.status = ChannelStatus::Active;
        store.put(&a).await.unwrap();
        assert_eq!(
            store.channel(a.id).await.unwrap().unwrap().status,
            ChannelStatus::Active
        );
        assert_eq!(store.channels().await.unwrap().len(), 2);

        let old = Utc::now() - chrono::Duration::days(40);
        for i in 1..=5 {
            let at = if i <= 2 { old } else { Utc::now() };
            let m = store.append(a.id, message(&format!("m{i}"), at), 4).await.unwrap();
            assert_eq!(m.sequence, i);
        }
        let all = store.messages(a.id, None, 10).await.unwrap();
        let texts: Vec<&str> = all.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(texts, ["m2", "m3", "m4", "m5"], "at most 4 kept, oldest out first");
        let page = store.messages(a.id, None, 2).await.unwrap();
        assert_eq!(page.messages.iter().map(|m| m.sequence).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(page.next_before, Some(4));
        let older = store.messages(a.id, Some(4), 2).await.unwrap();
        assert_eq!(older.messages.iter().map(|m| m.sequence).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(older.next_before, None);

        let purged = store
            .purge_older_than(Utc::now() - chrono::Duration::days(30))
            .await
            .unwrap();
        assert_eq!(purged, 1, "m2 was 40 days old");
        assert_eq!(store.messages(a.id, None, 10).await.unwrap().count, 3);

        assert!(store.delete(a.id).await.unwrap());
        assert!(!store.delete(a.id).await.unwrap());
        assert!(store.channel(a.id).await.unwrap().is_none());
        assert_eq!(store.messages(a.id, None, 10).await.unwrap().count, 0);
        store.check().await.unwrap();

        // Writing back: only what the store lacks; what it has (maybe newer) stays.
        let mut stale = b.clone();
        stale.status = ChannelStatus::Stopped;
        assert!(!store.restore(&stale).await.unwrap());
        assert_eq!(store.channel(b.id).await.unwrap().unwrap().status, b.status);
        assert!(store.restore(&a).await.unwrap());
        assert_eq!(
            store.channel(a.id).await.unwrap().unwrap().status,
            ChannelStatus::Active
        );
        // A generation, once taken, stays (stores that cannot lose data have none).
        if let Some(first) = store.generation("one").await.unwrap() {
            assert_eq!(store.generation("two").await.unwrap(), Some(first));
        }
    }
}
