//! Channels and messages in this process only: the store of a library built without the
//! `redb` feature (`EMIT_HUB_DB_PATH=:memory:`). Nothing survives a restart.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{page, ChannelStore, NewMessage, StoreError};
use crate::emithub::model::{ManagedChannel, MessagePage, StoredMessage};

#[derive(Default)]
struct Kept {
    channels: HashMap<Uuid, ManagedChannel>,
    /// Each channel's messages by sequence, and the last sequence it gave.
    messages: HashMap<Uuid, (BTreeMap<u64, StoredMessage>, u64)>,
}

/// A store in memory.
#[derive(Default)]
pub struct MemoryStore {
    kept: Mutex<Kept>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut Kept) -> T) -> T {
        let mut kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut kept)
    }
}

#[async_trait]
impl ChannelStore for MemoryStore {
    async fn channels(&self) -> Result<Vec<ManagedChannel>, StoreError> {
        let mut all: Vec<ManagedChannel> = self.with(|k| k.channels.values().cloned().collect());
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(all)
    }

    async fn channel(&self, id: Uuid) -> Result<Option<ManagedChannel>, StoreError> {
        Ok(self.with(|k| k.channels.get(&id).cloned()))
    }

    async fn put(&self, channel: &ManagedChannel) -> Result<(), StoreError> {
        self.with(|k| k.channels.insert(channel.id, channel.clone()));
        Ok(())
    }

    async fn delete(&self, id: Uuid) -> Result<bool, StoreError> {
        Ok(self.with(|k| {
            k.messages.remove(&id);
            k.channels.remove(&id).is_some()
        }))
    }

    async fn append(&self, channel: Uuid, message: NewMessage, keep: usize) -> Result<StoredMessage, StoreError> {
        self.with(|k| {
            let (messages, last) = k.messages.entry(channel).or_default();
            let sequence = last
                .checked_add(1)
                .ok_or_else(|| StoreError::new("sequence overflow"))?;
            *last = sequence;
            let stored = StoredMessage {
                id: message.id,
                sequence,
                content: message.content,
                message_type: message.message_type,
                timestamp: message.timestamp,
            };
            messages.insert(sequence, stored.clone());
            while messages.len() > keep.max(1) {
                messages.pop_first();
            }
            Ok(stored)
        })
    }

    async fn messages(&self, channel: Uuid, before: Option<u64>, limit: usize) -> Result<MessagePage, StoreError> {
        let newest_first = self.with(|k| match k.messages.get(&channel) {
            Some((messages, _)) => messages
                .range(..before.unwrap_or(u64::MAX))
                .rev()
                .take(limit.saturating_add(1))
                .map(|(_, m)| m.clone())
                .collect(),
            None => Vec::new(),
        });
        Ok(page(newest_first, limit))
    }

    async fn purge_older_than(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
        Ok(self.with(|k| {
            let mut purged = 0;
            for (messages, _) in k.messages.values_mut() {
                // Oldest first, like the other stores: stop at the first one to keep.
                while messages.first_key_value().is_some_and(|(_, m)| m.timestamp < cutoff) {
                    messages.pop_first();
                    purged += 1;
                }
            }
            purged
        }))
    }

    async fn backup(&self, _path: &Path) -> Result<(), StoreError> {
        Err(StoreError::new(
            "backups are redb files: this build of rustaxum has no `redb` feature",
        ))
    }

    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_store_contract_in_memory() {
        super::super::contract::check(&MemoryStore::default()).await;
    }
}
