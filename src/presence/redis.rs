//! Presence shared by every node through Redis: members in a hash per channel, each
//! user's sockets (`node|socket`) in a set, written and removed by Lua scripts so a
//! user's first join and last leave are decided atomically across nodes.
//!
//! | what | Redis (under `BROADCAST_CHANNELS_PREFIX`) |
//! |---|---|
//! | members of `c` | hash `rustaxum:presence:c:members` (user id → member JSON) |
//! | a user's sockets on `c` | set `rustaxum:presence:c:sockets:{user}` of `node|socket` |
//! | channels with presence | set `rustaxum:presence:channels` |
//!
//! A janitor on every node removes the entries of nodes whose liveness key expired (a
//! node that died without saying goodbye) and announces `member_removed`. Each node also
//! remembers its own live members and the leaves it could not write, and rewrites them
//! when the broker asks (after Redis restarted or was unreachable), so a Redis restart
//! loses no member and forgets no departure.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{AsyncCommands, Script};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Member, PresenceError, PresenceStore, MEMBER_ADDED, MEMBER_REMOVED};
use crate::backend::BackendError;
use crate::backend::RedisLink;
use crate::channel::Channel;
use crate::cluster::redis::{RedisBroker, BREAKER_COOLDOWN};
use crate::hub::{EnvelopeKind, Message, SocketId};
use crate::publish::Fanout;
use crate::sync::lock;

/// How often each node looks for dead nodes' presence entries.
const JANITOR: Duration = Duration::from_secs(2);

const JOIN_LUA: &str = r"
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[4])
return redis.call('SCARD', KEYS[2])
";

const LEAVE_LUA: &str = r"
if redis.call('SREM', KEYS[2], ARGV[2]) == 0 then return false end
if redis.call('SCARD', KEYS[2]) > 0 then return false end
local m = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[3]) end
return m
";

const CLEANUP_LUA: &str = r"
local removed = {}
for _, user in ipairs(redis.call('HKEYS', KEYS[1])) do
  local skey = ARGV[2] .. user
  for _, e in ipairs(redis.call('SMEMBERS', skey)) do
    local node = string.match(e, '^([^|]+)|')
    if node and node ~= ARGV[4] and redis.call('EXISTS', ARGV[3] .. node) == 0 then
      redis.call('SREM', skey, e)
    end
  end
  if redis.call('SCARD', skey) == 0 then
    local m = redis.call('HGET', KEYS[1], user)
    redis.call('HDEL', KEYS[1], user)
    if m then table.insert(removed, m) end
  end
end
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[1]) end
return removed
";

/// This node's presence, written back after Redis lost it. KEYS: members hash, channels
/// set. ARGV: channel, sockets key prefix, this node's entry prefix (`node|`), JSON array
/// of live sockets `{u: user, m: member JSON, e: entry}`, JSON array of users whose leave
/// was not written. Returns (members added, members removed, those users still present).
const RESYNC_LUA: &str = r"
local live = cjson.decode(ARGV[4])
local orphans = cjson.decode(ARGV[5])
local wanted = {}
for _, s in ipairs(live) do wanted[s.e] = true end
local users = {}
for _, u in ipairs(redis.call('HKEYS', KEYS[1])) do users[u] = true end
for _, u in ipairs(orphans) do users[u] = true end
local removed = {}
for u, _ in pairs(users) do
  local skey = ARGV[2] .. u
  for _, e in ipairs(redis.call('SMEMBERS', skey)) do
    if string.sub(e, 1, #ARGV[3]) == ARGV[3] and not wanted[e] then redis.call('SREM', skey, e) end
  end
  if redis.call('SCARD', skey) == 0 then
    local m = redis.call('HGET', KEYS[1], u)
    if m then
      redis.call('HDEL', KEYS[1], u)
      table.insert(removed, m)
    end
  end
end
local added = {}
for _, s in ipairs(live) do
  local skey = ARGV[2] .. s.u
  if redis.call('SCARD', skey) == 0 then table.insert(added, s.m) end
  redis.call('SADD', skey, s.e)
  redis.call('HSET', KEYS[1], s.u, s.m)
end
if redis.call('HLEN', KEYS[1]) > 0 then
  redis.call('SADD', KEYS[2], ARGV[1])
else
  redis.call('SREM', KEYS[2], ARGV[1])
end
local present = {}
for _, u in ipairs(orphans) do
  if redis.call('HEXISTS', KEYS[1], u) == 1 then table.insert(present, u) end
end
return {added, removed, present}
";

/// Presence shared by every node through Redis (see the module docs for the keys).
///
/// Redis is not the only copy: each node remembers its own live members, and leaves that
/// could not reach Redis. Whenever the node (re)subscribes, it writes its live members back
/// and removes its stale entries ([`resync`](Self::resync)), announcing the difference, so a
/// Redis restart or outage loses no member and forgets no departure.
#[derive(Debug)]
pub struct RedisPresence {
    link: Arc<RedisLink>,
    resync_requests: tokio::sync::watch::Receiver<u64>,
    join: Script,
    leave: Script,
    resync: Script,
    /// This node's live members: channel → socket → member.
    local: std::sync::Mutex<HashMap<String, HashMap<SocketId, Member>>>,
    /// Members whose leave could not be written to Redis: channel → user → member.
    orphans: std::sync::Mutex<HashMap<String, HashMap<String, Member>>>,
    /// Joins and leaves share it; a resync takes it alone, so none interleaves with it.
    resyncing: tokio::sync::RwLock<()>,
}

impl RedisPresence {
    /// Presence over `broker`'s Redis, rewritten whenever the broker asks.
    pub fn new(broker: &RedisBroker) -> Arc<Self> {
        Arc::new(Self {
            link: broker.link().clone(),
            resync_requests: broker.resync_requests(),
            join: Script::new(JOIN_LUA),
            leave: Script::new(LEAVE_LUA),
            resync: Script::new(RESYNC_LUA),
            local: Default::default(),
            orphans: Default::default(),
            resyncing: Default::default(),
        })
    }

    /// Re-registers this node's members whenever the broker asks (after it resubscribed to
    /// Redis, or found its liveness key gone), announcing through `fanout`; stops when
    /// `stop` is cancelled.
    pub fn start(self: &Arc<Self>, fanout: Fanout, stop: CancellationToken, tasks: &TaskTracker) {
        tasks.spawn(self.clone().janitor_loop(fanout.clone(), stop.clone()));
        let this = self.clone();
        let mut requests = self.resync_requests.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = requests.changed() => if changed.is_err() { return },
                }
                // Redis may answer subscriptions before commands (or the circuit may still
                // be open): retry until it takes, or until stopped.
                let mut backoff = Duration::from_millis(100);
                while let Err(e) = this.resync(&fanout).await {
                    tracing::warn!(error = %e, "re-registering presence members failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BREAKER_COOLDOWN);
                }
            }
        });
    }

    /// Makes Redis agree with this node about this node's members, then announces
    /// `member_added` for users Redis had lost and `member_removed` for users who left
    /// while Redis could not be told.
    pub async fn resync(&self, fanout: &Fanout) -> Result<(), PresenceError> {
        let _alone = self.resyncing.write().await;
        let mut channels: Vec<String> = lock(&self.local).keys().cloned().collect();
        channels.extend(lock(&self.orphans).keys().cloned());
        channels.sort();
        channels.dedup();
        for name in channels {
            let Ok(channel) = Channel::from_key(&name) else {
                continue;
            };
            let live: Vec<Value> = lock(&self.local)
                .get(&name)
                .map(|sockets| {
                    sockets
                        .iter()
                        .map(|(socket, m)| {
                            let member = serde_json::to_string(m).unwrap_or_default();
                            json!({"u": m.user_id, "m": member, "e": self.entry(*socket)})
                        })
                        .collect()
                })
                .unwrap_or_default();
            let orphans: Vec<Member> = lock(&self.orphans)
                .get(&name)
                .map(|users| users.values().cloned().collect())
                .unwrap_or_default();
            let orphan_ids: Vec<&str> = orphans.iter().map(|m| m.user_id.as_str()).collect();
            let (members, _, channels_key) = self.keys(&name, "");
            let args = [
                name.clone(),
                self.link.key(&format!("presence:{name}:sockets:")),
                format!("{}|", self.link.node_id()),
                Value::Array(live).to_string(),
                json!(orphan_ids).to_string(),
            ];
            let script = &self.resync;
            let (added, removed, present): (Vec<String>, Vec<String>, Vec<String>) = self
                .link
                .exec(|mut c| async move {
                    let mut call = script.key(members);
                    call.key(channels_key);
                    for arg in args {
                        call.arg(arg);
                    }
                    call.invoke_async(&mut c).await
                })
                .await
                .map_err(presence_error)?;
            lock(&self.orphans).remove(&name);
            // Only members whose leave this node owes are announced. An entry of this node
            // that is neither live nor owed comes from a join whose answer never arrived
            // (Redis ran the script after the node had given up and refused the socket):
            // nobody was told that member joined, so nobody is told they left.
            let (mut gone, unannounced): (Vec<Member>, Vec<Member>) = removed
                .iter()
                .filter_map(|m| parse_member(m))
                .partition(|m| orphan_ids.contains(&m.user_id.as_str()));
            for member in unannounced {
                tracing::info!(channel = %channel, user = %member.user_id, "removed a member whose join never completed (not announced)");
            }
            for orphan in orphans {
                let announced = gone.iter().any(|m| m.user_id == orphan.user_id);
                if !announced && !present.contains(&orphan.user_id) {
                    gone.push(orphan);
                }
            }
            for member in gone {
                announce(fanout, &channel, MEMBER_REMOVED, &member, EnvelopeKind::MemberRemoved).await;
            }
            for member in added.iter().filter_map(|m| parse_member(m)) {
                announce(fanout, &channel, MEMBER_ADDED, &member, EnvelopeKind::MemberAdded).await;
            }
        }
        Ok(())
    }

    /// Removes the members of nodes whose liveness key expired, every [`JANITOR`].
    async fn janitor_loop(self: Arc<Self>, fanout: Fanout, stop: CancellationToken) {
        let script = Script::new(CLEANUP_LUA);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(JANITOR) => {}
            }
            let channels_key = self.link.key("presence:channels");
            let ck = channels_key.clone();
            let Ok(channels) = self
                .link
                .exec(|mut c| async move { c.smembers::<_, Vec<String>>(&ck).await })
                .await
            else {
                continue;
            };
            for name in channels {
                let Ok(channel) = Channel::from_key(&name) else {
                    continue;
                };
                let members_key = self.link.key(&format!("presence:{name}:members"));
                let sockets_prefix = self.link.key(&format!("presence:{name}:sockets:"));
                let node_prefix = self.link.key("node:");
                // Never this node: it is alive, even if its key is momentarily missing.
                let node_id = self.link.node_id().to_string();
                let (s, ck, n) = (&script, channels_key.clone(), name.clone());
                let removed: Vec<String> = match self
                    .link
                    .exec(|mut c| async move {
                        s.key(members_key)
                            .key(ck)
                            .arg(n)
                            .arg(sockets_prefix)
                            .arg(node_prefix)
                            .arg(node_id)
                            .invoke_async(&mut c)
                            .await
                    })
                    .await
                {
                    Ok(r) => r,
                    Err(_) => continue,
                };
                for member in removed {
                    let Ok(raw) = RawValue::from_string(member) else {
                        continue;
                    };
                    tracing::info!(channel = %channel, member = raw.get(), "removing a member of a node that stopped");
                    let message = Message::event(channel.clone(), MEMBER_REMOVED, Arc::from(raw))
                        .kind(EnvelopeKind::MemberRemoved);
                    if let Err(e) = fanout.publish(message).await {
                        tracing::warn!(error = %e, "announcing a removed member failed");
                    }
                }
            }
        }
    }

    fn keys(&self, channel: &str, user_id: &str) -> (String, String, String) {
        (
            self.link.key(&format!("presence:{channel}:members")),
            self.link.key(&format!("presence:{channel}:sockets:{user_id}")),
            self.link.key("presence:channels"),
        )
    }

    fn entry(&self, socket: SocketId) -> String {
        format!("{}|{socket}", self.link.node_id())
    }

    /// Runs a presence script with KEYS = (members, the user's sockets, channels) and `args`.
    async fn run<T, const N: usize>(
        &self,
        script: &Script,
        channel: &str,
        user_id: &str,
        args: [String; N],
    ) -> Result<T, PresenceError>
    where
        T: redis::FromRedisValue + Send,
    {
        let (members, sockets, channels) = self.keys(channel, user_id);
        self.link
            .exec(|mut c| async move {
                let mut call = script.key(members);
                call.key(sockets).key(channels);
                for arg in args {
                    call.arg(arg);
                }
                call.invoke_async(&mut c).await
            })
            .await
            .map_err(presence_error)
    }
}

async fn announce(fanout: &Fanout, channel: &Channel, event: &str, member: &Member, kind: EnvelopeKind) {
    let Ok(raw) = serde_json::value::to_raw_value(member) else {
        return;
    };
    let message = Message::event(channel.clone(), event, Arc::from(raw)).kind(kind);
    if let Err(e) = fanout.publish(message).await {
        tracing::warn!(channel = %channel, error = %e, "announcing a presence change failed");
    }
}

fn presence_error(e: BackendError) -> PresenceError {
    PresenceError(crate::backend::Failure::of(e))
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn join(&self, channel: &str, member: &Member, socket: SocketId) -> Result<bool, PresenceError> {
        let _shared = self.resyncing.read().await;
        let json = serde_json::to_string(member).map_err(|e| PresenceError(crate::backend::Failure::of(e)))?;
        let args = [member.user_id.clone(), json, self.entry(socket), channel.to_string()];
        let count: u64 = self.run(&self.join, channel, &member.user_id, args).await?;
        lock(&self.local)
            .entry(channel.to_string())
            .or_default()
            .insert(socket, member.clone());
        if let Some(users) = lock(&self.orphans).get_mut(channel) {
            users.remove(&member.user_id);
        }
        Ok(count == 1)
    }

    async fn leave(&self, channel: &str, user_id: &str, socket: SocketId) -> Result<Option<Member>, PresenceError> {
        let _shared = self.resyncing.read().await;
        let mine = {
            let mut local = lock(&self.local);
            let member = local.get_mut(channel).and_then(|sockets| sockets.remove(&socket));
            if local.get(channel).is_some_and(HashMap::is_empty) {
                local.remove(channel);
            }
            member
        };
        let args = [user_id.to_string(), self.entry(socket), channel.to_string()];
        match self.run::<Option<String>, 3>(&self.leave, channel, user_id, args).await {
            Ok(removed) => Ok(removed.and_then(|m| parse_member(&m))),
            Err(e) => {
                // Redis will hear of it at the next resync; the others get member_removed then.
                if let Some(member) = mine {
                    lock(&self.orphans)
                        .entry(channel.to_string())
                        .or_default()
                        .insert(member.user_id.clone(), member);
                }
                Err(e)
            }
        }
    }

    async fn members(&self, channel: &str) -> Result<Vec<Member>, PresenceError> {
        let key = self.link.key(&format!("presence:{channel}:members"));
        let values: Vec<String> = self
            .link
            .exec(|mut c| async move { c.hvals(&key).await })
            .await
            .map_err(presence_error)?;
        let mut members: Vec<Member> = values.iter().filter_map(|v| parse_member(v)).collect();
        members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(members)
    }
}

fn parse_member(json: &str) -> Option<Member> {
    Member::from_json(&serde_json::from_str::<Value>(json).ok()?)
}
