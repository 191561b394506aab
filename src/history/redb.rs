//! History in the EmitHub redb file: durable on one node.
//!
//! | table | key | value |
//! |---|---|---|
//! | `history_epoch` | `""` | the file's epoch (made when the table is created) |
//! | `history_top` | channel | last offset |
//! | `history` | (channel, offset) | `{"e","d","t","u","x","ms"}` JSON |
//!
//! The channels `BROADCAST_HISTORY_CHANNELS` names use these tables ([`Tables::CHANNELS`]);
//! EmitHub's managed channels the same layout under `emithub_history*`
//! ([`Tables::MANAGED`]), so each set keeps its own retention.
//!
//! The epoch belongs to the file: it changes only when the file is lost. Each append is
//! one transaction (committed durably) on the blocking pool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{new_epoch, now_ms, End, HistoryError, HistoryStore, Retention, Slice, Usage};
use crate::channel::Channel;
use crate::hub::{EnvelopeKind, Message, Position};

/// The names of one set of history tables in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tables {
    epoch: &'static str,
    top: &'static str,
    history: &'static str,
}

impl Tables {
    /// The tables of the channels `BROADCAST_HISTORY_CHANNELS` names.
    pub const CHANNELS: Tables = Tables {
        epoch: "history_epoch",
        top: "history_top",
        history: "history",
    };
    /// The tables of EmitHub's managed channels.
    pub const MANAGED: Tables = Tables {
        epoch: "emithub_history_epoch",
        top: "emithub_history_top",
        history: "emithub_history",
    };

    fn epoch(self) -> TableDefinition<'static, &'static str, &'static str> {
        TableDefinition::new(self.epoch)
    }

    fn top(self) -> TableDefinition<'static, &'static str, u64> {
        TableDefinition::new(self.top)
    }

    fn history(self) -> TableDefinition<'static, (&'static str, u64), &'static [u8]> {
        TableDefinition::new(self.history)
    }
}

#[derive(Serialize, Deserialize)]
struct Row<'a> {
    e: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    d: &'a RawValue,
    t: std::borrow::Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    u: Option<crate::hub::Sender>,
    /// The payload's text when `d` cannot give it back (`Message::text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<std::borrow::Cow<'a, str>>,
    ms: u64,
}

/// History in a redb database.
pub struct RedbHistory {
    db: Arc<Database>,
    tables: Tables,
    epoch: Arc<str>,
    appended: AtomicU64,
}

impl std::fmt::Debug for RedbHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbHistory")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

fn err(e: impl std::error::Error + Send + Sync + 'static) -> HistoryError {
    HistoryError::Store(crate::backend::Failure::of(e))
}

impl RedbHistory {
    /// History in `db`, creating its tables (and the file's epoch) when missing.
    pub fn open(db: Arc<Database>) -> Result<Self, HistoryError> {
        Self::open_tables(db, Tables::CHANNELS)
    }

    /// History in `db`'s `tables`, created (with their epoch) when missing.
    pub fn open_tables(db: Arc<Database>, tables: Tables) -> Result<Self, HistoryError> {
        let tx = db.begin_write().map_err(err)?;
        let epoch = {
            let mut table = tx.open_table(tables.epoch()).map_err(err)?;
            let existing = table.get("").map_err(err)?.map(|v| v.value().to_string());
            match existing {
                Some(e) => Arc::from(e.as_str()),
                None => {
                    let e = new_epoch();
                    table.insert("", e.as_ref()).map_err(err)?;
                    e
                }
            }
        };
        tx.open_table(tables.top()).map_err(err)?;
        tx.open_table(tables.history()).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Self {
            db,
            tables,
            epoch,
            appended: AtomicU64::new(0),
        })
    }

    /// Copies `tables` from `snapshot` into `tx` (a backup), when the snapshot has them.
    pub fn copy_tables(
        snapshot: &redb::ReadTransaction,
        tx: &redb::WriteTransaction,
        tables: Tables,
    ) -> Result<(), HistoryError> {
        use redb::TableHandle;
        let present: Vec<String> = snapshot
            .list_tables()
            .map_err(err)?
            .map(|t| t.name().to_string())
            .collect();
        let has = |name: &str| present.iter().any(|t| t == name);
        if has(tables.epoch) {
            copy_table(snapshot, tx, tables.epoch())?;
        }
        if has(tables.top) {
            copy_table(snapshot, tx, tables.top())?;
        }
        if has(tables.history) {
            copy_table(snapshot, tx, tables.history())?;
        }
        Ok(())
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, HistoryError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, HistoryError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| HistoryError::Store(crate::backend::Failure::caused("database task failed", e)))?
    }
}

fn decode(channel: &Channel, offset: u64, epoch: &Arc<str>, bytes: &[u8]) -> Result<(u64, Message), HistoryError> {
    let row: Row<'_> = serde_json::from_slice(bytes).map_err(err)?;
    let data: Arc<RawValue> = Arc::from(row.d.to_owned());
    Ok((
        row.ms,
        Message {
            channel: channel.clone(),
            event: Arc::from(row.e.as_ref()),
            data,
            text: row.x.as_deref().map(Arc::from),
            except: None,
            kind: EnvelopeKind::Event,
            timestamp: Arc::from(row.t.as_ref()),
            position: Some(Position {
                epoch: epoch.clone(),
                offset,
            }),
            sender: row.u,
        },
    ))
}

#[async_trait]
impl HistoryStore for RedbHistory {
    fn name(&self) -> &'static str {
        "redb"
    }

    async fn append(&self, message: &Message, retention: Retention) -> Result<Position, HistoryError> {
        let row = serde_json::to_vec(&Row {
            e: message.event.as_ref().into(),
            d: &message.data,
            t: message.timestamp.as_ref().into(),
            u: message.sender.clone(),
            x: message.text.as_deref().map(Into::into),
            ms: now_ms(),
        })
        .map_err(err)?;
        let channel = message.channel.name().to_string();
        let keep = retention.size.max(1) as u64;
        let tables = self.tables;
        let offset = self
            .blocking(move |db| {
                let tx = db.begin_write().map_err(err)?;
                let offset = {
                    let mut top = tx.open_table(tables.top()).map_err(err)?;
                    let offset = top.get(channel.as_str()).map_err(err)?.map_or(0, |v| v.value()) + 1;
                    top.insert(channel.as_str(), offset).map_err(err)?;
                    offset
                };
                {
                    let mut history = tx.open_table(tables.history()).map_err(err)?;
                    history
                        .insert((channel.as_str(), offset), row.as_slice())
                        .map_err(err)?;
                    if offset > keep {
                        // Usually one message to drop; more when the size was lowered.
                        let stale: Vec<u64> = history
                            .range((channel.as_str(), 0)..=(channel.as_str(), offset - keep))
                            .map_err(err)?
                            .take(10_000)
                            .map(|r| r.map(|(k, _)| k.value().1))
                            .collect::<Result<_, _>>()
                            .map_err(err)?;
                        for o in stale {
                            history.remove((channel.as_str(), o)).map_err(err)?;
                        }
                    }
                }
                tx.commit().map_err(err)?;
                Ok(offset)
            })
            .await?;
        self.appended.fetch_add(1, Ordering::Relaxed);
        Ok(Position {
            epoch: self.epoch.clone(),
            offset,
        })
    }

    async fn read(
        &self,
        channel: &Channel,
        after: u64,
        limit: usize,
        end: End,
        retention: Retention,
    ) -> Result<Slice, HistoryError> {
        let channel = channel.clone();
        let epoch = self.epoch.clone();
        let tables = self.tables;
        self.blocking(move |db| {
            let now = now_ms();
            let tx = db.begin_read().map_err(err)?;
            let name = channel.name();
            let top = tx
                .open_table(tables.top())
                .map_err(err)?
                .get(name)
                .map_err(err)?
                .map_or(0, |v| v.value());
            let history = tx.open_table(tables.history()).map_err(err)?;
            let mut first = top + 1;
            for row in history.range((name, 0)..=(name, u64::MAX)).map_err(err)? {
                let (k, v) = row.map_err(err)?;
                let (ms, _) = decode(&channel, k.value().1, &epoch, v.value())?;
                if !retention.expired(ms, now) {
                    first = k.value().1;
                    break;
                }
            }
            let from = after.saturating_add(1).max(first);
            let range = history.range((name, from)..=(name, u64::MAX)).map_err(err)?;
            let mut messages = Vec::new();
            match end {
                End::Oldest => {
                    for row in range.take(limit) {
                        let (k, v) = row.map_err(err)?;
                        messages.push(decode(&channel, k.value().1, &epoch, v.value())?.1);
                    }
                }
                End::Newest => {
                    for row in range.rev().take(limit) {
                        let (k, v) = row.map_err(err)?;
                        messages.push(decode(&channel, k.value().1, &epoch, v.value())?.1);
                    }
                    messages.reverse();
                }
            }
            Ok(Slice {
                epoch,
                top,
                first,
                messages,
            })
        })
        .await
    }

    fn usage(&self) -> Usage {
        Usage::default()
    }

    async fn sweep(&self, retention: Retention) -> Result<usize, HistoryError> {
        let tables = self.tables;
        self.blocking(move |db| {
            let now = now_ms();
            let tx = db.begin_write().map_err(err)?;
            let mut removed = 0;
            {
                let channels: Vec<String> = tx
                    .open_table(tables.top())
                    .map_err(err)?
                    .iter()
                    .map_err(err)?
                    .map(|r| r.map(|(k, _)| k.value().to_string()))
                    .collect::<Result<_, _>>()
                    .map_err(err)?;
                let mut history = tx.open_table(tables.history()).map_err(err)?;
                for name in &channels {
                    let mut stale = Vec::new();
                    for row in history
                        .range((name.as_str(), 0)..=(name.as_str(), u64::MAX))
                        .map_err(err)?
                    {
                        let (k, v) = row.map_err(err)?;
                        let row: Row<'_> = serde_json::from_slice(v.value()).map_err(err)?;
                        if !retention.expired(row.ms, now) {
                            break;
                        }
                        stale.push(k.value().1);
                    }
                    for o in stale {
                        history.remove((name.as_str(), o)).map_err(err)?;
                        removed += 1;
                    }
                }
            }
            if removed > 0 {
                tx.commit().map_err(err)?;
            } else {
                tx.abort().map_err(err)?;
            }
            Ok(removed)
        })
        .await
    }

    async fn clear(&self, channel: &Channel) -> Result<(), HistoryError> {
        let name = channel.name().to_string();
        let tables = self.tables;
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(err)?;
            tx.open_table(tables.top())
                .map_err(err)?
                .remove(name.as_str())
                .map_err(err)?;
            tx.open_table(tables.history())
                .map_err(err)?
                .retain_in((name.as_str(), 0)..=(name.as_str(), u64::MAX), |_, _| false)
                .map_err(err)?;
            tx.commit().map_err(err)
        })
        .await
    }
}

/// Copies every row of `table` from `snapshot` into `tx` (a consistent copy taken while
/// serving: backups).
pub(crate) fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    snapshot: &redb::ReadTransaction,
    tx: &redb::WriteTransaction,
    table: TableDefinition<'_, K, V>,
) -> Result<(), HistoryError> {
    let mut to = tx.open_table(table).map_err(err)?;
    for row in snapshot.open_table(table).map_err(err)?.iter().map_err(err)? {
        let (k, v) = row.map_err(err)?;
        to.insert(k.value(), v.value()).map_err(err)?;
    }
    Ok(())
}

/// A message of an earlier layout to move into a set of history tables (see [`import`]).
#[cfg(feature = "server")]
pub(crate) struct Imported<'a> {
    /// Its offset.
    pub offset: u64,
    /// The event name.
    pub event: &'a str,
    /// The payload.
    pub data: &'a RawValue,
    /// When it was published, RFC 3339.
    pub timestamp: &'a str,
    /// The same, Unix milliseconds (what retention goes by).
    pub ms: u64,
}

/// Writes `messages` of `channel` (oldest first) into `tables` within `tx`, with the
/// offsets they have, and makes `top` the channel's last offset: for a migration of data
/// kept in an earlier layout, in the transaction that removes the old tables.
#[cfg(feature = "server")]
pub(crate) fn import(
    tx: &redb::WriteTransaction,
    tables: Tables,
    channel: &str,
    top: u64,
    messages: &[Imported<'_>],
) -> Result<(), HistoryError> {
    {
        let mut epoch = tx.open_table(tables.epoch()).map_err(err)?;
        if epoch.get("").map_err(err)?.is_none() {
            epoch.insert("", new_epoch().as_ref()).map_err(err)?;
        }
    }
    let mut history = tx.open_table(tables.history()).map_err(err)?;
    for m in messages {
        let row = serde_json::to_vec(&Row {
            e: m.event.into(),
            d: m.data,
            t: m.timestamp.into(),
            u: None,
            x: None,
            ms: m.ms,
        })
        .map_err(err)?;
        history.insert((channel, m.offset), row.as_slice()).map_err(err)?;
    }
    let top = messages.iter().map(|m| m.offset).max().unwrap_or(0).max(top);
    tx.open_table(tables.top())
        .map_err(err)?
        .insert(channel, top)
        .map_err(err)?;
    Ok(())
}
