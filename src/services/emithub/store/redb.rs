//! The embedded store: one redb file (or memory).
//!
//! | table | key | value |
//! |---|---|---|
//! | `channels` | channel id | channel JSON |
//! | `emithub_history*` | | the channels' persisted messages: channel history ([`crate::history::RedbHistory`], [`Tables::MANAGED`](crate::history::RedbTables::MANAGED)) |
//!
//! Every call is one transaction, run on the blocking pool.
//!
//! Files written before the messages became channel history kept them in `messages`
//! ((channel id, sequence) → message JSON) and `bounds`; opening such a file moves them
//! into the history tables, sequences, times and ids unchanged, in one transaction that
//! also drops the old tables (see [`migrate`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use uuid::Uuid;

use super::{ChannelStore, StoreError};
use crate::history::{Imported, RedbTables};
use crate::services::emithub::model::{hub_channel_name, ManagedChannel, StoredMessage};

const CHANNELS: TableDefinition<&str, &str> = TableDefinition::new("channels");
/// The earlier layout's messages (migrated on open).
const OLD_MESSAGES: TableDefinition<(&str, u64), &str> = TableDefinition::new("messages");
/// The earlier layout's (first kept, last) sequences (migrated on open).
const OLD_BOUNDS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("bounds");

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
        let store = Self::deferred(path);
        store.check()?;
        Ok(store)
    }

    /// The database file at `path`, not touched yet: [`check`](Self::check) opens it.
    pub fn deferred(path: &Path) -> Self {
        Self {
            db: Arc::default(),
            path: Some(path.to_path_buf()),
        }
    }

    /// Opens the file when it exists (an error naming it when it is not a redb database,
    /// is damaged or cannot be written), else checks that it could be created (nothing is
    /// left on disk). Nothing to do for a database in memory or one already open.
    pub fn check(&self) -> Result<(), StoreError> {
        match &self.path {
            Some(_) if self.existing().is_some() => Ok(()),
            Some(path) if path.exists() => self.created().map(|_| ()),
            Some(path) => writable(path),
            None => Ok(()),
        }
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

    /// The database if it exists yet (never creates the file).
    pub fn existing_database(&self) -> Option<Arc<Database>> {
        self.existing()
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
    let moved = migrate(&tx)?;
    tx.commit().map_err(err)?;
    if moved > 0 {
        tracing::info!(
            messages = moved,
            "moved the persisted EmitHub messages of an earlier layout into the channel history"
        );
    }
    Ok(())
}

/// Moves the messages of a file written before they became channel history (tables
/// `messages` and `bounds`) into the history tables, with their sequences as offsets,
/// and drops the old tables; how many messages it moved (0 for a file of today's
/// layout). Runs within `tx`: the move happens entirely or not at all.
pub(crate) fn migrate(tx: &redb::WriteTransaction) -> Result<usize, StoreError> {
    let old = tx.list_tables().map_err(err)?.any(|t| t.name() == OLD_MESSAGES.name());
    if !old {
        return Ok(0);
    }
    let names: std::collections::HashMap<String, String> = {
        let channels = tx.open_table(CHANNELS).map_err(err)?;
        let mut names = std::collections::HashMap::new();
        for row in channels.iter().map_err(err)? {
            let (k, v) = row.map_err(err)?;
            let channel: ManagedChannel = decode(v.value())?;
            names.insert(k.value().to_string(), channel.name);
        }
        names
    };
    let mut by_channel: std::collections::BTreeMap<String, Vec<StoredMessage>> = Default::default();
    {
        let messages = tx.open_table(OLD_MESSAGES).map_err(err)?;
        for row in messages.iter().map_err(err)? {
            let (k, v) = row.map_err(err)?;
            let (channel, _) = k.value();
            by_channel
                .entry(channel.to_string())
                .or_default()
                .push(decode(v.value())?);
        }
    }
    let tops: std::collections::HashMap<String, u64> = {
        let bounds = tx.open_table(OLD_BOUNDS).map_err(err)?;
        let mut tops = std::collections::HashMap::new();
        for row in bounds.iter().map_err(err)? {
            let (k, v) = row.map_err(err)?;
            tops.insert(k.value().to_string(), v.value().1);
        }
        tops
    };
    let mut moved = 0;
    for (id, messages) in &by_channel {
        let Ok(uuid) = Uuid::parse_str(id) else { continue };
        let channel_name = names.get(id).cloned().unwrap_or_default();
        let channel = crate::channel::Channel::parse(&hub_channel_name(uuid))
            .map_err(|e| StoreError::caused("a channel id of the old layout", e))?;
        let converted = messages
            .iter()
            .map(|m| crate::services::emithub::history::old_message(&channel, &channel_name, m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::caused("moving the persisted messages into the history", e))?;
        let imported: Vec<Imported<'_>> = converted
            .iter()
            .map(|(offset, m, ms)| Imported {
                offset: *offset,
                event: &m.event,
                data: &m.data,
                timestamp: &m.timestamp,
                ms: *ms,
            })
            .collect();
        let top = tops.get(id).copied().unwrap_or(0);
        crate::history::import(tx, RedbTables::MANAGED, &hub_channel_name(uuid), top, &imported)
            .map_err(|e| StoreError::caused("moving the persisted messages into the history", e))?;
        moved += imported.len();
    }
    // Channels whose messages were all gone keep their last sequence.
    for (id, top) in &tops {
        if by_channel.contains_key(id) {
            continue;
        }
        if let Ok(uuid) = Uuid::parse_str(id) {
            crate::history::import(tx, RedbTables::MANAGED, &hub_channel_name(uuid), *top, &[])
                .map_err(|e| StoreError::caused("moving the persisted messages into the history", e))?;
        }
    }
    tx.delete_table(OLD_MESSAGES).map_err(err)?;
    if tx.list_tables().map_err(err)?.any(|t| t.name() == OLD_BOUNDS.name()) {
        tx.delete_table(OLD_BOUNDS).map_err(err)?;
    }
    Ok(moved)
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
            tx.commit().map_err(err)?;
            Ok(existed)
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
            crate::history::copy_table(&snapshot, &tx, CHANNELS)
                .map_err(|e| StoreError::caused("copying the channels", e))?;
            crate::history::RedbHistory::copy_tables(&snapshot, &tx, RedbTables::MANAGED)
                .map_err(|e| StoreError::caused("copying the persisted messages", e))?;
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
    use crate::history::{End, HistoryStore, RedbHistory, Retention};
    use crate::services::emithub::model::{BroadcastPayload, CLIENT_MESSAGE_TYPE};

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
        let history = RedbHistory::open_tables(store.database().unwrap(), RedbTables::MANAGED).unwrap();
        let hub_channel = crate::channel::Channel::parse(&hub_channel_name(channel.id)).unwrap();
        let data = serde_json::value::to_raw_value(&BroadcastPayload {
            content: "hello".into(),
            message_type: "Broadcast".into(),
            id: Uuid::new_v4(),
        })
        .unwrap();
        let message = crate::hub::Message::event(
            hub_channel.clone(),
            crate::services::emithub::BROADCAST_EVENT,
            data.into(),
        );
        history.append(&message, RETENTION).await.unwrap();
        let backup = dir.join("backups").join("copy.redb");
        store.backup(&backup).await.unwrap();
        let copy = RedbStore::open(&backup).unwrap();
        assert_eq!(copy.channel(channel.id).await.unwrap().unwrap().name, "kept");
        let copied = RedbHistory::open_tables(copy.database().unwrap(), RedbTables::MANAGED).unwrap();
        let slice = copied.read(&hub_channel, 0, 10, End::Oldest, RETENTION).await.unwrap();
        let kept = StoredMessage::from_history(&slice.messages[0]).unwrap();
        assert_eq!((kept.content.as_str(), kept.sequence), ("hello", 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const RETENTION: Retention = Retention {
        size: 100,
        ttl: std::time::Duration::from_secs(365 * 24 * 3600),
    };

    /// A file of the layout before the messages became channel history.
    #[tokio::test]
    async fn a_file_of_the_earlier_layout_is_migrated_on_open() {
        let dir = std::env::temp_dir().join(format!("rustaxum-redb-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.redb");
        let channel = super::super::contract::channel("Old");
        let key = channel.id.to_string();
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let old = [
            (4u64, "four", "Broadcast"),
            (5, "five", "Alert"),
            (6, "hi all", CLIENT_MESSAGE_TYPE),
        ];
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(CHANNELS)
                .unwrap()
                .insert(key.as_str(), encode(&channel).unwrap().as_str())
                .unwrap();
            {
                let mut messages = tx.open_table(OLD_MESSAGES).unwrap();
                for (sequence, content, message_type) in old {
                    let m = StoredMessage {
                        id: Uuid::new_v4(),
                        sequence,
                        content: content.into(),
                        message_type: message_type.into(),
                        timestamp: at,
                    };
                    messages
                        .insert((key.as_str(), sequence), encode(&m).unwrap().as_str())
                        .unwrap();
                }
            }
            tx.open_table(OLD_BOUNDS).unwrap().insert(key.as_str(), (4, 6)).unwrap();
            tx.commit().unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.channel(channel.id).await.unwrap().unwrap().name, "Old");
        let db = store.database().unwrap();
        let tables: Vec<String> = db
            .begin_read()
            .unwrap()
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .collect();
        assert!(!tables.iter().any(|t| t == "messages" || t == "bounds"), "{tables:?}");
        let history = RedbHistory::open_tables(db, RedbTables::MANAGED).unwrap();
        let hub_channel = crate::channel::Channel::parse(&hub_channel_name(channel.id)).unwrap();
        let slice = history.read(&hub_channel, 0, 10, End::Oldest, RETENTION).await.unwrap();
        let kept: Vec<StoredMessage> = slice
            .messages
            .iter()
            .map(|m| StoredMessage::from_history(m).unwrap())
            .collect();
        let seen: Vec<(u64, &str, &str)> = kept
            .iter()
            .map(|m| (m.sequence, m.content.as_str(), m.message_type.as_str()))
            .collect();
        assert_eq!(seen, old);
        assert!(kept.iter().all(|m| m.timestamp == at));
        assert_eq!((slice.top, slice.first), (6, 4));
        // The next message follows the last sequence.
        let data = serde_json::value::to_raw_value(&1).unwrap();
        let next = history
            .append(
                &crate::hub::Message::event(hub_channel, "broadcast", data.into()),
                RETENTION,
            )
            .await
            .unwrap();
        assert_eq!(next.offset, 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
