//! Where managed channels' definitions live (their persisted messages are channel
//! history: see [`crate::history`]).
//!
//! - [`RedbStore`]: an embedded redb database file (single node; also in memory for
//!   tests and the library's defaults). Feature `redb` (on by default). The file also
//!   holds the channels' history ([`crate::history::RedbHistory`]).
//! - [`MemoryStore`]: this process only, for a library built without `redb`.
//! - [`RedisStore`]: Redis hashes, so every node of a cluster sees the same channels.

mod memory;
#[cfg(feature = "redb")]
mod redb;
mod redis;

use async_trait::async_trait;
use uuid::Uuid;

pub use self::memory::MemoryStore;
#[cfg(feature = "redb")]
pub use self::redb::RedbStore;
pub use self::redis::RedisStore;

use super::model::ManagedChannel;

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

/// Channel definitions. Every method is a complete, atomic change.
#[async_trait]
pub trait ChannelStore: Send + Sync {
    /// Every channel.
    async fn channels(&self) -> Result<Vec<ManagedChannel>, StoreError>;

    /// One channel.
    async fn channel(&self, id: Uuid) -> Result<Option<ManagedChannel>, StoreError>;

    /// Creates or replaces a channel.
    async fn put(&self, channel: &ManagedChannel) -> Result<(), StoreError>;

    /// Deletes a channel; whether it existed.
    async fn delete(&self, id: Uuid) -> Result<bool, StoreError>;

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

#[cfg(test)]
pub(crate) mod contract {
    //! What every store must do, run against each implementation.
    use super::*;
    use crate::services::emithub::model::{ChannelSettings, ChannelStatus};
    use chrono::Utc;

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

        assert!(store.delete(a.id).await.unwrap());
        assert!(!store.delete(a.id).await.unwrap());
        assert!(store.channel(a.id).await.unwrap().is_none());
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
