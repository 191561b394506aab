//! The embedded store: one redb file (or memory).
//!
//! | table | key | value |
//! |---|---|---|
//! | `channels` | channel id | channel JSON |
//! | `messages` | (channel id, sequence) | message JSON |
//! | `bounds` | channel id | (first kept sequence, last sequence) |
//!
//! Every call is one transaction, run on the blocking pool. A channel's messages are
//! kept in sequence order, so trimming to a count and purging by age both remove from
//! the oldest end.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use uuid::Uuid;

use super::{page, ChannelStore, NewMessage, StoreError};
use crate::emithub::model::{ManagedChannel, MessagePage, StoredMessage};

const CHANNELS: TableDefinition<&str, &str> = TableDefinition::new("channels");
const MESSAGES: TableDefinition<(&str, u64), &str> = TableDefinition::new("messages");
const BOUNDS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("bounds");

/// Channels and messages in a redb database.
#[derive(Clone)]
pub struct RedbStore {
    /// `None` until the file exists: an embedding application that never uses EmitHub
    /// gets no file (the first write creates it).
    db: Arc<std::sync::Mutex<Option<Arc<Database>>>>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").field("path", &self.path).finish()
    }
}

fn err(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::of(e)
}

impl RedbStore {
    /// Opens the database file at `path` when it exists (a file that is not a redb
    /// database, is damaged, or cannot be written is an error naming it); otherwise the
    /// file and its directory are created by the first write, so nothing appears on disk
    /// until a channel is created.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let store = Self {
            db: Arc::default(),
            path: Some(path.to_path_buf()),
        };
        if path.exists() {
            store.created()?;
        } else {
            writable(path)?;
        }
        Ok(store)
    }

    /// Opens (or creates) the file now.
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        let store = Self::open(path)?;
        store.created()?;
        Ok(store)
    }

    /// The database, opened (created, with its directory) on first use.
    fn created(&self) -> Result<Arc<Database>, StoreError> {
        let mut slot = crate::sync::lock(&self.db);
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        let path = self
            .path
            .as_deref()
            .ok_or_else(|| StoreError::new("an in-memory database is always open"))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::caused(format!("cannot create the directory {}", dir.display()), e))?;
        }
        let db = Database::create(path)
            .map_err(|e| StoreError::caused(format!("cannot open the database {}", path.display()), e))?;
        init(&db).map_err(|e| StoreError::caused(format!("the database {} is not usable", path.display()), e))?;
        let db = Arc::new(db);
        *slot = Some(db.clone());
        Ok(db)
    }

    /// The database if it exists yet.
    fn existing(&self) -> Option<Arc<Database>> {
        crate::sync::lock(&self.db).clone()
    }

    /// A database in memory (nothing survives the process).
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(err)?;
        init(&db)?;
        Ok(Self {
            db: Arc::new(std::sync::Mutex::new(Some(Arc::new(db)))),
            path: None,
        })
    }

    /// Every channel, read now on this thread (for start-up, before serving).
    pub fn channels_now(&self) -> Result<Vec<ManagedChannel>, StoreError> {
        match self.existing() {
            Some(db) => read_channels(&db),
            None => Ok(Vec::new()),
        }
    }

    /// The database, to keep other tables in the same file (channel history); created now
    /// if it does not exist yet.
    pub fn database(&self) -> Result<Arc<Database>, StoreError> {
        self.created()
    }

    /// The file, when the database has one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Runs `f` on the database on a blocking thread, creating the file first if needed.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&*this.created()?))
            .await
            .map_err(|e| StoreError::caused("database task failed", e))?
    }

    /// Runs `f` on the database if it exists; `absent` otherwise (nothing was ever kept).
    async fn reading<T, F>(&self, absent: T, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let Some(db) = self.existing() else {
            return Ok(absent);
        };
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::caused("database task failed", e))?
    }
}

/// Whether `path` could be created, found without creating it: its nearest existing
/// ancestor must be a directory this process can write in (a file is made there and
/// removed at once). An unusable location is a start-up error, not a surprise on the
/// first channel.
fn writable(path: &Path) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(parent) => existing = parent,
            None => {
                existing = Path::new(".");
                break;
            }
        }
    }
    let refuse = |e: String| StoreError::new(format!("cannot create the directory {}: {e}", dir.display()));
    if !existing.is_dir() {
        return Err(refuse(format!("{} is not a directory", existing.display())));
    }
    let probe = existing.join(format!(".rustaxum-probe-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(|e| refuse(e.to_string()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn init(db: &Database) -> Result<(), StoreError> {
    let tx = db.begin_write().map_err(err)?;
    tx.open_table(CHANNELS).map_err(err)?;
    tx.open_table(MESSAGES).map_err(err)?;
    tx.open_table(BOUNDS).map_err(err)?;
    tx.commit().map_err(err)
}

fn read_channels(db: &Database) -> Result<Vec<ManagedChannel>, StoreError> {
    let tx = db.begin_read().map_err(err)?;
    let table = tx.open_table(CHANNELS).map_err(err)?;
    let mut out = Vec::new();
    for row in table.iter().map_err(err)? {
        let (_, v) = row.map_err(err)?;
        out.push(decode::<ManagedChannel>(v.value())?);
    }
    out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    Ok(out)
}

fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::caused("a stored record is unreadable", e))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(err)
}

#[async_trait]
impl ChannelStore for RedbStore {
    async fn channels(&self) -> Result<Vec<ManagedChannel>, StoreError> {
        self.reading(Vec::new(), read_channels).await
    }

    async fn channel(&self, id: Uuid) -> Result<Option<ManagedChannel>, StoreError> {
        self.reading(None, move |db| {
            let tx = db.begin_read().map_err(err)?;
            let table = tx.open_table(CHANNELS).map_err(err)?;
            let key = id.to_string();
            match table.get(key.as_str()).map_err(err)? {
                Some(v) => Ok(Some(decode(v.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn put(&self, channel: &ManagedChannel) -> Result<(), StoreError> {
        let key = channel.id.to_string();
        let json = encode(channel)?;
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(err)?;
            tx.open_table(CHANNELS)
                .map_err(err)?
                .insert(key.as_str(), json.as_str())
                .map_err(err)?;
            tx.commit().map_err(err)
        })
        .await
    }

    async fn delete(&self, id: Uuid) -> Result<bool, StoreError> {
        self.reading(false, move |db| {
            let key = id.to_string();
            let tx = db.begin_write().map_err(err)?;
            let existed = tx
                .open_table(CHANNELS)
                .map_err(err)?
                .remove(key.as_str())
                .map_err(err)?
                .is_some();
            let bounds = tx
                .open_table(BOUNDS)
                .map_err(err)?
                .remove(key.as_str())
                .map_err(err)?
                .map(|b| b.value());
            if let Some((first, last)) = bounds {
                let mut messages = tx.open_table(MESSAGES).map_err(err)?;
                for seq in first..=last {
                    messages.remove((key.as_str(), seq)).map_err(err)?;
                }
            }
            tx.commit().map_err(err)?;
            Ok(existed)
        })
        .await
    }

    async fn append(&self, channel: Uuid, message: NewMessage, keep: usize) -> Result<StoredMessage, StoreError> {
        self.blocking(move |db| {
            let key = channel.to_string();
            let tx = db.begin_write().map_err(err)?;
            let stored = {
                let mut bounds = tx.open_table(BOUNDS).map_err(err)?;
                let (mut first, last) = bounds.get(key.as_str()).map_err(err)?.map_or((1, 0), |b| b.value());
                let sequence = last
                    .checked_add(1)
                    .ok_or_else(|| StoreError::new("sequence overflow"))?;
                let stored = StoredMessage {
                    id: message.id,
                    sequence,
                    content: message.content,
                    message_type: message.message_type,
                    timestamp: message.timestamp,
                };
                let mut messages = tx.open_table(MESSAGES).map_err(err)?;
                messages
                    .insert((key.as_str(), sequence), encode(&stored)?.as_str())
                    .map_err(err)?;
                let keep = keep.max(1) as u64;
                while sequence - first + 1 > keep {
                    messages.remove((key.as_str(), first)).map_err(err)?;
                    first += 1;
                }
                bounds.insert(key.as_str(), (first, sequence)).map_err(err)?;
                stored
            };
            tx.commit().map_err(err)?;
            Ok(stored)
        })
        .await
    }

    async fn messages(&self, channel: Uuid, before: Option<u64>, limit: usize) -> Result<MessagePage, StoreError> {
        self.reading(page(Vec::new(), limit), move |db| {
            let key = channel.to_string();
            let tx = db.begin_read().map_err(err)?;
            let table = tx.open_table(MESSAGES).map_err(err)?;
            let end = before.unwrap_or(u64::MAX);
            let mut newest_first = Vec::new();
            for row in table.range((key.as_str(), 0)..(key.as_str(), end)).map_err(err)?.rev() {
                let (_, v) = row.map_err(err)?;
                newest_first.push(decode::<StoredMessage>(v.value())?);
                if newest_first.len() > limit {
                    break;
                }
            }
            Ok(page(newest_first, limit))
        })
        .await
    }

    async fn purge_older_than(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
        self.reading(0, move |db| {
            let tx = db.begin_write().map_err(err)?;
            let mut purged = 0;
            {
                let mut bounds = tx.open_table(BOUNDS).map_err(err)?;
                let mut messages = tx.open_table(MESSAGES).map_err(err)?;
                let all: Vec<(String, (u64, u64))> = bounds
                    .iter()
                    .map_err(err)?
                    .map(|row| row.map(|(k, v)| (k.value().to_string(), v.value())))
                    .collect::<Result<_, _>>()
                    .map_err(err)?;
                for (key, (mut first, last)) in all {
                    while first <= last {
                        let Some(json) = messages
                            .get((key.as_str(), first))
                            .map_err(err)?
                            .map(|v| v.value().to_string())
                        else {
                            first += 1;
                            continue;
                        };
                        if decode::<StoredMessage>(&json)?.timestamp >= cutoff {
                            break;
                        }
                        messages.remove((key.as_str(), first)).map_err(err)?;
                        purged += 1;
                        first += 1;
                    }
                    bounds.insert(key.as_str(), (first, last)).map_err(err)?;
                }
            }
            tx.commit().map_err(err)?;
            Ok(purged)
        })
        .await
    }

    async fn backup(&self, path: &Path) -> Result<(), StoreError> {
        let target = path.to_path_buf();
        self.blocking(move |db| {
            if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            // A read transaction is a consistent snapshot; writers carry on meanwhile.
            let snapshot = db.begin_read().map_err(err)?;
            let partial = target.with_extension("partial");
            let _ = std::fs::remove_file(&partial);
            let copy = Database::create(&partial).map_err(err)?;
            let tx = copy.begin_write().map_err(err)?;
            {
                let mut channels = tx.open_table(CHANNELS).map_err(err)?;
                for row in snapshot.open_table(CHANNELS).map_err(err)?.iter().map_err(err)? {
                    let (k, v) = row.map_err(err)?;
                    channels.insert(k.value(), v.value()).map_err(err)?;
                }
                let mut messages = tx.open_table(MESSAGES).map_err(err)?;
                for row in snapshot.open_table(MESSAGES).map_err(err)?.iter().map_err(err)? {
                    let (k, v) = row.map_err(err)?;
                    messages.insert(k.value(), v.value()).map_err(err)?;
                }
                let mut bounds = tx.open_table(BOUNDS).map_err(err)?;
                for row in snapshot.open_table(BOUNDS).map_err(err)?.iter().map_err(err)? {
                    let (k, v) = row.map_err(err)?;
                    bounds.insert(k.value(), v.value()).map_err(err)?;
                }
            }
            tx.commit().map_err(err)?;
            drop(copy);
            // Only a complete copy takes the backup's name.
            std::fs::rename(&partial, &target).map_err(err)
        })
        .await
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(err)?;
            tx.open_table(CHANNELS).map_err(err)?.len().map_err(err)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_store_contract_in_memory_and_on_disk() {
        super::super::contract::check(&RedbStore::in_memory().unwrap()).await;
        let dir = std::env::temp_dir().join(format!("rustaxum-redb-{}", Uuid::new_v4()));
        let path = dir.join("hub.redb");
        super::super::contract::check(&RedbStore::open(&path).unwrap()).await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_database_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("rustaxum-redb-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("corrupt.redb");
        std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
        let e = RedbStore::open(&path).unwrap_err();
        assert!(e.to_string().contains("corrupt.redb"), "{e}");
        assert!(
            std::error::Error::source(&e).is_some(),
            "the redb error is kept as the source"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_backup_is_a_database_holding_the_data() {
        let dir = std::env::temp_dir().join(format!("rustaxum-redb-{}", Uuid::new_v4()));
        let store = RedbStore::open(&dir.join("hub.redb")).unwrap();
        let channel = super::super::contract::channel("kept");
        store.put(&channel).await.unwrap();
        let message = NewMessage {
            id: Uuid::new_v4(),
            content: "hello".into(),
            message_type: "Broadcast".into(),
            timestamp: Utc::now(),
        };
        store.append(channel.id, message, 10).await.unwrap();
        let backup = dir.join("backups").join("copy.redb");
        store.backup(&backup).await.unwrap();
        let copy = RedbStore::open(&backup).unwrap();
        assert_eq!(copy.channel(channel.id).await.unwrap().unwrap().name, "kept");
        assert_eq!(
            copy.messages(channel.id, None, 10).await.unwrap().messages[0].content,
            "hello"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
