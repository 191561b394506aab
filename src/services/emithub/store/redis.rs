//! The cluster store: managed channels in a Redis hash, so every node sees the same
//! channels (their persisted messages are channel history, in Redis streams: see
//! [`crate::history::RedisHistory`]).
//!
//! | what | Redis (under `BROADCAST_CHANNELS_PREFIX`) |
//! |---|---|
//! | channels | hash `rustaxum:emithub:channels` (id → channel JSON) |
//! | the data's generation | string `rustaxum:emithub:generation` (a random id, set once; gone = the data was lost) |

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redis::{AsyncCommands, Script};
use uuid::Uuid;

use super::{ChannelStore, StoreError};
use crate::backend::RedisLink;
use crate::services::emithub::model::ManagedChannel;

/// The store's generation: KEYS[1] if set, else set to ARGV[1].
const GENERATION_LUA: &str = r"
local g = redis.call('GET', KEYS[1])
if g then return g end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
";

/// Channels in Redis.
pub struct RedisStore {
    link: Arc<RedisLink>,
    generation: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

fn err(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::of(e)
}

impl RedisStore {
    /// A store over a node's Redis link.
    pub fn new(link: Arc<RedisLink>) -> Self {
        Self {
            link,
            generation: Script::new(GENERATION_LUA),
        }
    }

    fn channels_key(&self) -> String {
        self.link.key("emithub:channels")
    }
}

fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::caused("a stored record is unreadable", e))
}

#[async_trait]
impl ChannelStore for RedisStore {
    async fn channels(&self) -> Result<Vec<ManagedChannel>, StoreError> {
        let key = self.channels_key();
        let values: Vec<String> = self
            .link
            .exec(|mut c| async move { c.hvals(&key).await })
            .await
            .map_err(err)?;
        let mut out = values
            .iter()
            .map(|v| decode::<ManagedChannel>(v))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn channel(&self, id: Uuid) -> Result<Option<ManagedChannel>, StoreError> {
        let key = self.channels_key();
        let value: Option<String> = self
            .link
            .exec(|mut c| async move { c.hget(&key, id.to_string()).await })
            .await
            .map_err(err)?;
        value.map(|v| decode(&v)).transpose()
    }

    async fn put(&self, channel: &ManagedChannel) -> Result<(), StoreError> {
        let key = self.channels_key();
        let json = serde_json::to_string(channel).map_err(err)?;
        let id = channel.id.to_string();
        self.link
            .exec(|mut c| async move { c.hset::<_, _, _, ()>(&key, id, json).await })
            .await
            .map_err(err)
    }

    async fn generation(&self, fresh: &str) -> Result<Option<String>, StoreError> {
        let key = self.link.key("emithub:generation");
        let (script, fresh) = (self.generation.clone(), fresh.to_string());
        self.link
            .exec(|mut c| async move { script.key(&key).arg(&fresh).invoke_async(&mut c).await })
            .await
            .map(Some)
            .map_err(err)
    }

    async fn restore(&self, channel: &ManagedChannel) -> Result<bool, StoreError> {
        let key = self.channels_key();
        let json = serde_json::to_string(channel).map_err(err)?;
        let id = channel.id.to_string();
        self.link
            .exec(|mut c| async move { c.hset_nx(&key, id, json).await })
            .await
            .map_err(err)
    }

    async fn delete(&self, id: Uuid) -> Result<bool, StoreError> {
        let channels = self.channels_key();
        self.link
            .exec(|mut c| async move {
                let removed: u64 = c.hdel(&channels, id.to_string()).await?;
                Ok(removed > 0)
            })
            .await
            .map_err(err)
    }

    #[cfg(not(feature = "redb"))]
    async fn backup(&self, _path: &Path) -> Result<(), StoreError> {
        Err(StoreError::new(
            "backups are redb files: this build of rustaxum has no `redb` feature",
        ))
    }

    #[cfg(feature = "redb")]
    async fn backup(&self, path: &Path) -> Result<(), StoreError> {
        use super::RedbStore;
        // An export of the channels into a redb file (their messages are added by the
        // caller, from the history; Redis' own persistence is the cluster's consistent
        // backup).
        let partial = path.with_extension("partial");
        let _ = std::fs::remove_file(&partial);
        let copy = RedbStore::create(&partial)?;
        for channel in self.channels().await? {
            copy.put(&channel).await?;
        }
        drop(copy);
        std::fs::rename(&partial, path).map_err(err)
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.link
            .exec(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map(|_| ())
            .map_err(err)
    }
}
