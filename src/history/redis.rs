//! History in Redis, shared by every node of a cluster.
//!
//! | what | where |
//! |---|---|
//! | a channel's epoch and last offset | hash `{p}rustaxum:history:{channel}:meta` (`epoch`, `offset`), kept for max(TTL, 24 h) after the last message |
//! | its messages | stream `{p}rustaxum:history:{channel}`, entry id `{offset}-0`, fields `ms` and `m` (the pub/sub message), `MAXLEN` = size, expires TTL after the last message |
//!
//! On a Redis Cluster both keys carry the hash tag of the channel's pub/sub shard
//! (`{p}rustaxum:history:{tag}:{channel}`), so the script below runs in one slot.
//!
//! One script assigns the offset (`HINCRBY`), keeps the message (`XADD ... MAXLEN`) and
//! publishes it (`PUBLISH`, `SPUBLISH` on a cluster), so the order on pub/sub is the order of offsets and every
//! node (the publisher included) delivers in that order. Reads drop messages older than
//! the TTL first (`XTRIM MINID`). A meta hash that is gone (Redis restarted or flushed)
//! gets a new epoch, so clients of the old one learn that their history is lost.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::{new_epoch, now_ms, End, HistoryError, HistoryStore, Retention, Slice};
use crate::channel::Channel;
use crate::cluster::redis::{decode_wire, RedisBroker};
use crate::hub::{Message, Position};

const APPEND_LUA: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('DEL', KEYS[2])
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local msg = ARGV[6] .. ',"pos":{"epoch":"' .. epoch .. '","offset":' .. offset .. '},"all":true}'
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], offset .. '-0', 'ms', ARGV[7], 'm', msg)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call(ARGV[8], ARGV[5], msg)
return {epoch, offset}
"#;

const READ_LUA: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[2])
end
local top = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
local min = tonumber(ARGV[6])
local first = top + 1
local cursor = '-'
while true do
  local batch = redis.call('XRANGE', KEYS[2], cursor, '+', 'COUNT', 100)
  if #batch == 0 then break end
  local found = false
  for _, e in ipairs(batch) do
    if tonumber(e[2][2]) >= min then
      first = tonumber(string.match(e[1], '^(%d+)'))
      found = true
      break
    end
  end
  if found then break end
  cursor = '(' .. batch[#batch][1]
end
redis.call('XTRIM', KEYS[2], 'MINID', first .. '-0')
local from = math.max(tonumber(ARGV[3]), first)
local entries = {}
if from > top then
  entries = {}
elseif ARGV[5] == 'newest' then
  entries = redis.call('XREVRANGE', KEYS[2], '+', from .. '-0', 'COUNT', ARGV[4])
else
  entries = redis.call('XRANGE', KEYS[2], from .. '-0', '+', 'COUNT', ARGV[4])
end
local out = {}
for _, e in ipairs(entries) do
  table.insert(out, e[2][4])
end
return {epoch, top, first, out}
"#;

/// Moves messages kept in an earlier layout into a channel's history, unless the channel
/// has one already: a new epoch, the offset at ARGV[2], each message at its own offset
/// (ARGV from 5 in threes: offset, published ms, the message without its closing brace).
#[cfg(feature = "server")]
const IMPORT_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local epoch = ARGV[1]
redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', ARGV[2])
redis.call('DEL', KEYS[2])
for i = 5, #ARGV, 3 do
  local msg = ARGV[i + 2] .. ',"pos":{"epoch":"' .. epoch .. '","offset":' .. ARGV[i] .. '},"all":true}'
  redis.call('XADD', KEYS[2], ARGV[i] .. '-0', 'ms', ARGV[i + 1], 'm', msg)
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"#;

/// How long a channel's epoch and offset outlive its last message.
const META_TTL: Duration = Duration::from_secs(24 * 3600);

/// History in Redis.
pub struct RedisHistory {
    broker: Arc<RedisBroker>,
    append: Script,
    read: Script,
}

impl std::fmt::Debug for RedisHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHistory").finish_non_exhaustive()
    }
}

impl RedisHistory {
    /// History in the Redis of `broker`.
    pub fn new(broker: Arc<RedisBroker>) -> Self {
        Self {
            broker,
            append: Script::new(APPEND_LUA),
            read: Script::new(READ_LUA),
        }
    }

    /// Moves `messages` (oldest first: offset, message, published Unix ms) of `channel`,
    /// kept in an earlier layout, into its history with their offsets, `top` the last
    /// offset the channel gave; nothing when the channel has a history already (another
    /// node moved them first). Whether it moved them.
    #[cfg(feature = "server")]
    pub(crate) async fn import(
        &self,
        channel: &Channel,
        top: u64,
        messages: &[(u64, Message, u64)],
        retention: Retention,
    ) -> Result<bool, HistoryError> {
        let (meta, stream) = self.keys(channel);
        let script = Script::new(IMPORT_LUA);
        let mut invocation = script.key(meta);
        invocation
            .key(stream)
            .arg(new_epoch().as_ref())
            .arg(top)
            .arg(millis(retention.ttl))
            .arg(millis(retention.ttl.max(META_TTL)));
        for (offset, message, ms) in messages {
            let wire = self.broker.encode(message)?;
            let Some(prefix) = wire.strip_suffix('}') else {
                return Err(HistoryError::Store(crate::backend::Failure::new(
                    "unexpected message encoding",
                )));
            };
            invocation.arg(*offset).arg(*ms).arg(prefix);
        }
        let moved: u64 = self
            .broker
            .link()
            .exec_for(channel, |mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(moved == 1)
    }

    fn keys(&self, channel: &Channel) -> (String, String) {
        let stream = self.broker.link().channel_key("history", channel);
        (format!("{stream}:meta"), stream)
    }
}

/// Longest expiry given to Redis (about 100 years: "kept forever"); Redis refuses
/// expiries that overflow its clock.
const MAX_MILLIS: u64 = 100 * 365 * 24 * 3600 * 1000;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).clamp(1, MAX_MILLIS)
}

#[async_trait]
impl HistoryStore for RedisHistory {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn publishes(&self) -> bool {
        true
    }

    async fn append(&self, message: &Message, retention: Retention) -> Result<Position, HistoryError> {
        let wire = self.broker.encode(message)?;
        // The script appends `,"pos":{...},"all":true}` to the message without its
        // closing brace.
        let Some(prefix) = wire.strip_suffix('}') else {
            return Err(HistoryError::Store(crate::backend::Failure::new(
                "unexpected message encoding",
            )));
        };
        let (meta, stream) = self.keys(&message.channel);
        let mut invocation = self.append.key(meta);
        invocation
            .key(stream)
            .arg(new_epoch().as_ref())
            .arg(retention.size.max(1))
            .arg(millis(retention.ttl))
            .arg(millis(retention.ttl.max(META_TTL)))
            .arg(self.broker.link().pubsub_channel(&message.channel))
            .arg(prefix)
            .arg(now_ms())
            .arg(self.broker.link().publish_command());
        let (epoch, offset): (String, u64) = self
            .broker
            .link()
            .exec_for(&message.channel, |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        Ok(Position {
            epoch: Arc::from(epoch.as_str()),
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
        let (meta, stream) = self.keys(channel);
        let mut invocation = self.read.key(meta);
        invocation
            .key(stream)
            .arg(new_epoch().as_ref())
            .arg(millis(retention.ttl.max(META_TTL)))
            .arg(after.saturating_add(1))
            .arg(limit.max(1))
            .arg(match end {
                End::Newest => "newest",
                End::Oldest => "oldest",
            })
            .arg(now_ms().saturating_sub(millis(retention.ttl)));
        let (epoch, top, first, raw): (String, u64, u64, Vec<Vec<u8>>) = self
            .broker
            .link()
            .exec_for(channel, |mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        let mut messages: Vec<Message> = raw
            .iter()
            .filter_map(|m| {
                decode_wire(channel.clone(), m).map(|(mut message, _)| {
                    message.except = None;
                    message
                })
            })
            .filter(|m| m.position.is_some())
            .collect();
        if end == End::Newest {
            messages.reverse();
        }
        Ok(Slice {
            epoch: Arc::from(epoch.as_str()),
            top,
            first,
            messages,
        })
    }

    async fn clear(&self, channel: &Channel) -> Result<(), HistoryError> {
        let (meta, stream) = self.keys(channel);
        self.broker
            .link()
            .exec_for(channel, |mut c| async move {
                redis::cmd("DEL").arg(meta).arg(stream).query_async::<()>(&mut c).await
            })
            .await?;
        Ok(())
    }
}
