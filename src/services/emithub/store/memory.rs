//! Channels in this process only: the store of a library built without the
//! `redb` feature (`EMIT_HUB_DB_PATH=:memory:`). Nothing survives a restart.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use uuid::Uuid;

use super::{ChannelStore, StoreError};
use crate::services::emithub::model::ManagedChannel;

#[derive(Default)]
struct Kept {
    channels: HashMap<Uuid, ManagedChannel>,
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
        Ok(self.with(|k| k.channels.remove(&id).is_some()))
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
