//! The cluster store: managed channels in a Redis hash, each channel's messages in a
//! Redis stream whose entry ids are the message sequences (`<sequence>-0`), trimmed to
//! the kept count by `XADD ... MAXLEN`, so every node sees the same channels and history.
//!
//! | what | Redis (under `BROADCAST_CHANNELS_PREFIX`) |
//! |---|---|
//! | channels | hash `rustaxum:emithub:channels` (id → channel JSON) |
//! | a channel's messages | stream `rustaxum:emithub:messages:{id}` (field `m`: message JSON) |
//! | its last sequence | string `rustaxum:emithub:seq:{id}` |
//! | the data's generation | string `rustaxum:emithub:generation` (a random id, set once; gone = the data was lost) |

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::streams::StreamRangeReply;
use redis::{AsyncCommands, Script};
use uuid::Uuid;

use super::{page, ChannelStore, NewMessage, StoreError};
use crate::cluster::redis::RedisLink;
use crate::emithub::model::{ManagedChannel, MessagePage, StoredMessage};

/// Appends a message: the next sequence, the message JSON with it, trimmed to ARGV[2].
const APPEND_LUA: &str = r"
local seq = redis.call('INCR', KEYS[2])
local m = cjson.decode(ARGV[1])
m['sequence'] = seq
local json = cjson.encode(m)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], seq .. '-0', 'm', json)
return json
";

/// The store's generation: KEYS[1] if set, else set to ARGV[1].
const GENERATION_LUA: &str = r"
local g = redis.call('GET', KEYS[1])
if g then return g end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
";

/// Channels and messages in Redis.
pub struct RedisStore {
    link: Arc<RedisLink>,
    append: Script,
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
            append: Script::new(APPEND_LUA),
            generation: Script::new(GENERATION_LUA),
        }
    }

    fn channels_key(&self) -> String {
        self.link.key("emithub:channels")
    }

    fn stream_key(&self, id: Uuid) -> String {
        self.link.key(&format!("emithub:messages:{id}"))
    }

    fn seq_key(&self, id: Uuid) -> String {
        self.link.key(&format!("emithub:seq:{id}"))
    }

    /// Removes a stream's messages below sequence `keep_from`; how many.
    async fn trim_below(&self, stream: &str, keep_from: u64) -> Result<usize, StoreError> {
        let stream = stream.to_string();
        let min = format!("{keep_from}-0");
        self.link
            .exec(|mut c| async move {
                redis::cmd("XTRIM")
                    .arg(&stream)
                    .arg("MINID")
                    .arg(min)
                    .query_async(&mut c)
                    .await
            })
            .await
            .map_err(err)
    }
}

fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::caused("a stored record is unreadable", e))
}

fn messages_of(reply: StreamRangeReply) -> Result<Vec<StoredMessage>, StoreError> {
    reply
        .ids
        .iter()
        .filter_map(|entry| entry.get::<String>("m"))
        .map(|json| decode(&json))
        .collect()
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
        let (channels, stream, seq) = (self.channels_key(), self.stream_key(id), self.seq_key(id));
        self.link
            .exec(|mut c| async move {
                let (removed, (), ()): (u64, (), ()) = redis::pipe()
                    .atomic()
                    .hdel(&channels, id.to_string())
                    .del(&stream)
                    .del(&seq)
                    .query_async(&mut c)
                    .await?;
                Ok(removed > 0)
            })
            .await
            .map_err(err)
    }

    async fn append(&self, channel: Uuid, message: NewMessage, keep: usize) -> Result<StoredMessage, StoreError> {
        let (stream, seq) = (self.stream_key(channel), self.seq_key(channel));
        let draft = StoredMessage {
            id: message.id,
            sequence: 0,
            content: message.content,
            message_type: message.message_type,
            timestamp: message.timestamp,
        };
        let json = serde_json::to_string(&draft).map_err(err)?;
        let script = &self.append;
        let stored: String = self
            .link
            .exec(|mut c| async move {
                script
                    .key(stream)
                    .key(seq)
                    .arg(json)
                    .arg(keep.max(1))
                    .invoke_async(&mut c)
                    .await
            })
            .await
            .map_err(err)?;
        decode(&stored)
    }

    async fn messages(&self, channel: Uuid, before: Option<u64>, limit: usize) -> Result<MessagePage, StoreError> {
        let stream = self.stream_key(channel);
        let end = match before {
            Some(0) | Some(1) => return Ok(page(Vec::new(), limit)),
            Some(b) => format!("{}-0", b - 1),
            None => "+".to_string(),
        };
        let reply: StreamRangeReply = self
            .link
            .exec(|mut c| async move { c.xrevrange_count(&stream, end, "-", limit + 1).await })
            .await
            .map_err(err)?;
        Ok(page(messages_of(reply)?, limit))
    }

    async fn purge_older_than(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut purged = 0;
        for channel in self.channels().await? {
            let stream = self.stream_key(channel.id);
            loop {
                let s = stream.clone();
                let oldest: StreamRangeReply = self
                    .link
                    .exec(|mut c| async move { c.xrange_count(&s, "-", "+", 100).await })
                    .await
                    .map_err(err)?;
                let batch = messages_of(oldest)?;
                let expired = batch.iter().take_while(|m| m.timestamp < cutoff).count();
                let Some(keep_from) = batch.get(expired).map(|m| m.sequence) else {
                    // Everything read has expired: trim it all and look again.
                    let Some(last) = batch.last() else { break };
                    purged += self.trim_below(&stream, last.sequence.saturating_add(1)).await?;
                    continue;
                };
                if expired > 0 {
                    purged += self.trim_below(&stream, keep_from).await?;
                }
                break;
            }
        }
        Ok(purged)
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
        // An export into a redb file, channel by channel (Redis' own persistence is the
        // cluster's consistent backup).
        let partial = path.with_extension("partial");
        let _ = std::fs::remove_file(&partial);
        let copy = RedbStore::create(&partial)?;
        for channel in self.channels().await? {
            copy.put(&channel).await?;
            let mut before = None;
            let mut pages = Vec::new();
            loop {
                let page = self.messages(channel.id, before, 1000).await?;
                before = page.next_before;
                pages.push(page.messages);
                if before.is_none() {
                    break;
                }
            }
            for message in pages.into_iter().rev().flatten() {
                let new = NewMessage {
                    id: message.id,
                    content: message.content,
                    message_type: message.message_type,
                    timestamp: message.timestamp,
                };
                copy.append(channel.id, new, usize::MAX).await?;
            }
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
