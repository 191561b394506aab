//! History in this process: bounded per channel (size and age) and over all channels
//! (bytes; the oldest messages of any channel go first). Lost when the process stops,
//! so its epoch is new at every start.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{new_epoch, now_ms, End, HistoryError, HistoryStore, Retention, Slice, Usage};
use crate::channel::Channel;
use crate::hub::{Message, Position};
use crate::sync::lock;

/// Bytes a kept message is counted for besides its payload, names and timestamp.
const OVERHEAD: usize = 96;
/// The largest share of the bound one message may take: a larger one is given its
/// position (recovery across it then says `recovered: false`) but not kept, so one
/// publish can neither exceed the bound nor evict every other channel's history.
const MAX_SHARE: u64 = 4;

struct Kept {
    published_ms: u64,
    bytes: u64,
    message: Message,
}

#[derive(Default)]
struct Log {
    top: u64,
    kept: VecDeque<Kept>,
}

impl Log {
    fn first(&self) -> u64 {
        self.top + 1 - self.kept.len() as u64
    }
}

/// One entry per append, in publish order over all channels: what to evict first.
struct Order {
    channel: Arc<str>,
    offset: u64,
    published_ms: u64,
}

#[derive(Default)]
struct Inner {
    logs: HashMap<Arc<str>, Log>,
    order: VecDeque<Order>,
    messages: u64,
    bytes: u64,
    too_large: u64,
}

impl Inner {
    /// Removes the oldest message of `channel` if it is `offset` (it may be gone already,
    /// trimmed by the channel's size).
    fn evict(&mut self, channel: &str, offset: u64) {
        let Some(log) = self.logs.get_mut(channel) else {
            return;
        };
        if log
            .kept
            .front()
            .and_then(|k| k.message.position.as_ref())
            .map(|p| p.offset)
            == Some(offset)
        {
            if let Some(k) = log.kept.pop_front() {
                self.messages -= 1;
                self.bytes -= k.bytes;
            }
        }
    }

    /// Drops order entries whose message is already gone, when they outnumber the kept ones.
    fn compact(&mut self) {
        if self.order.len() as u64 <= self.messages.saturating_mul(2) + 1024 {
            return;
        }
        let logs = &self.logs;
        self.order
            .retain(|o| logs.get(&o.channel).is_some_and(|l| o.offset >= l.first()));
    }
}

/// History in memory.
pub struct MemoryHistory {
    epoch: Arc<str>,
    limit_bytes: u64,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MemoryHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryHistory")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl MemoryHistory {
    /// An empty history keeping at most `limit_bytes` over all channels.
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            epoch: new_epoch(),
            limit_bytes: limit_bytes as u64,
            inner: Mutex::default(),
        }
    }

    /// The epoch of every channel of this store (new at every start).
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    fn expire(inner: &mut Inner, retention: Retention, now: u64) -> usize {
        let mut removed = 0;
        while let Some(o) = inner.order.front() {
            if !retention.expired(o.published_ms, now) {
                break;
            }
            let Some(o) = inner.order.pop_front() else { break };
            let before = inner.messages;
            inner.evict(&o.channel, o.offset);
            removed += usize::from(inner.messages < before);
        }
        removed
    }
}

fn size_of(message: &Message) -> u64 {
    (message.event.len() + message.data.get().len() + message.timestamp.len() + message.channel.name().len() + OVERHEAD)
        as u64
}

#[async_trait]
impl HistoryStore for MemoryHistory {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn append(&self, message: &Message, retention: Retention) -> Result<Position, HistoryError> {
        let now = now_ms();
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        Self::expire(inner, retention, now);
        let name: Arc<str> = match inner.logs.get_key_value(message.channel.name()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(message.channel.name()),
        };
        let log = inner.logs.entry(name.clone()).or_default();
        log.top += 1;
        let position = Position {
            epoch: self.epoch.clone(),
            offset: log.top,
        };
        let bytes = size_of(message);
        if bytes > self.limit_bytes / MAX_SHARE {
            inner.too_large += 1;
            return Ok(position);
        }
        let mut kept = message.clone();
        kept.position = Some(position.clone());
        kept.except = None;
        log.kept.push_back(Kept {
            published_ms: now,
            bytes,
            message: kept,
        });
        while log.kept.len() > retention.size.max(1) {
            if let Some(k) = log.kept.pop_front() {
                inner.bytes -= k.bytes;
                inner.messages -= 1;
            }
        }
        inner.messages += 1;
        inner.bytes += bytes;
        inner.order.push_back(Order {
            channel: name,
            offset: position.offset,
            published_ms: now,
        });
        // The message being published is at most a share of the bound, so evicting older
        // ones always brings the total under it.
        while inner.bytes > self.limit_bytes {
            let Some(o) = inner.order.pop_front() else { break };
            inner.evict(&o.channel, o.offset);
        }
        inner.compact();
        Ok(position)
    }

    async fn read(
        &self,
        channel: &Channel,
        after: u64,
        limit: usize,
        end: End,
        retention: Retention,
    ) -> Result<Slice, HistoryError> {
        let now = now_ms();
        let inner = lock(&self.inner);
        let Some(log) = inner.logs.get(channel.name()) else {
            return Ok(Slice {
                epoch: self.epoch.clone(),
                top: 0,
                first: 1,
                messages: Vec::new(),
            });
        };
        let live = log
            .kept
            .iter()
            .filter(|k| !retention.expired(k.published_ms, now))
            .filter(|k| k.message.position.as_ref().is_some_and(|p| p.offset > after));
        let first = log
            .kept
            .iter()
            .find(|k| !retention.expired(k.published_ms, now))
            .and_then(|k| k.message.position.as_ref().map(|p| p.offset))
            .unwrap_or(log.top + 1);
        let messages: Vec<Message> = match end {
            End::Oldest => live.take(limit).map(|k| k.message.clone()).collect(),
            End::Newest => {
                let all: Vec<&Kept> = live.collect();
                let skip = all.len().saturating_sub(limit);
                all[skip..].iter().map(|k| k.message.clone()).collect()
            }
        };
        Ok(Slice {
            epoch: self.epoch.clone(),
            top: log.top,
            first,
            messages,
        })
    }

    fn usage(&self) -> Usage {
        let inner = lock(&self.inner);
        Usage {
            channels: inner.logs.len() as u64,
            messages: inner.messages,
            bytes: inner.bytes,
            too_large: inner.too_large,
        }
    }

    async fn sweep(&self, retention: Retention) -> Result<usize, HistoryError> {
        let mut inner = lock(&self.inner);
        let removed = Self::expire(&mut inner, retention, now_ms());
        inner.compact();
        Ok(removed)
    }

    async fn clear(&self, channel: &Channel) -> Result<(), HistoryError> {
        let mut inner = lock(&self.inner);
        if let Some(log) = inner.logs.remove(channel.name()) {
            inner.messages -= log.kept.len() as u64;
            inner.bytes -= log.kept.iter().map(|k| k.bytes).sum::<u64>();
            inner.compact();
        }
        Ok(())
    }
}

#[cfg(test)]
impl MemoryHistory {
    pub(super) fn order_len(&self) -> usize {
        lock(&self.inner).order.len()
    }
}
