//! Rate limits at every level the real-time service names: per connection, per user
//! (across connections and, in a cluster, across nodes), per topic and global. A
//! connection's own limit lives in its session; the shared levels count in memory on one
//! node and in Redis (one-second windows) in a cluster. Counting never waits on another
//! connection; if Redis cannot be reached the shared levels let messages through (logged)
//! rather than stopping every connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use redis::Script;

use crate::backend::BackendError;
use crate::backend::RedisLink;

/// The limits, in messages per second (0 = no limit at that level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// `BROADCAST_RATE_LIMIT_ENABLED` (also `RATE_LIMIT_ENABLED`): false turns every level off.
    pub enabled: bool,
    /// `BROADCAST_RATE_LIMIT_CONNECTION`: frames per second one connection may send.
    pub per_connection: u32,
    /// `BROADCAST_RATE_LIMIT_USER`: messages per second of one user, all connections.
    pub per_user: u32,
    /// `BROADCAST_RATE_LIMIT_TOPIC`: messages per second into one topic.
    pub per_topic: u32,
    /// `BROADCAST_RATE_LIMIT_GLOBAL`: messages per second from all clients together.
    pub global: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            per_connection: 20,
            per_user: 50,
            per_topic: 100,
            global: 10_000,
        }
    }
}

/// Which limit refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The connection's.
    Connection,
    /// The user's.
    User,
    /// The topic's.
    Topic,
    /// The whole service's.
    Global,
}

impl Level {
    /// The `Error` frame's code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Connection => "rate_limited_connection",
            Self::User => "rate_limited_user",
            Self::Topic => "rate_limited_topic",
            Self::Global => "rate_limited_global",
        }
    }
}

/// Counts hits per key in one-second windows.
#[async_trait]
pub trait Counter: Send + Sync {
    /// Records a hit on `key`; whether it is within `per_second`.
    async fn hit(&self, key: &str, per_second: u32) -> Result<bool, BackendError>;
}

fn quota(per_second: u32) -> Quota {
    crate::rate::per_second(per_second)
}

/// Counting on one node (token buckets per key).
pub struct MemoryCounter {
    keyed: DefaultKeyedRateLimiter<String>,
    per_second: u32,
}

impl MemoryCounter {
    /// Buckets refilling `per_second`.
    pub fn new(per_second: u32) -> Self {
        Self {
            keyed: RateLimiter::keyed(quota(per_second)),
            per_second,
        }
    }

    /// Forgets keys that are full again (bounded memory).
    pub fn sweep(&self) {
        self.keyed.retain_recent();
        self.keyed.shrink_to_fit();
    }
}

#[async_trait]
impl Counter for MemoryCounter {
    async fn hit(&self, key: &str, per_second: u32) -> Result<bool, BackendError> {
        debug_assert_eq!(per_second, self.per_second);
        Ok(self.keyed.check_key(&key.to_string()).is_ok())
    }
}

/// `INCR` of this second's counter, expiring it after two seconds.
const WINDOW_LUA: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], 2) end
return n
";

/// Counting across nodes in Redis.
pub struct RedisCounter {
    link: Arc<RedisLink>,
    script: Script,
}

impl RedisCounter {
    /// Counters over a node's Redis link.
    pub fn new(link: Arc<RedisLink>) -> Self {
        Self {
            link,
            script: Script::new(WINDOW_LUA),
        }
    }
}

#[async_trait]
impl Counter for RedisCounter {
    async fn hit(&self, key: &str, per_second: u32) -> Result<bool, BackendError> {
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let invocation = self.script.key(self.link.key(&format!("rl:{key}:{second}")));
        let n: u64 = self
            .link
            .exec(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(n <= u64::from(per_second))
    }
}

/// The shared levels of one node.
pub struct Limiter {
    limits: RateLimits,
    users: Box<dyn Counter>,
    topics: Box<dyn Counter>,
    global: Box<dyn Counter>,
    memory: Vec<Arc<MemoryCounter>>,
    warned: AtomicBool,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

struct Shared(Arc<MemoryCounter>);

#[async_trait]
impl Counter for Shared {
    async fn hit(&self, key: &str, per_second: u32) -> Result<bool, BackendError> {
        self.0.hit(key, per_second).await
    }
}

impl Limiter {
    /// Counting in memory (one node).
    pub fn local(limits: RateLimits) -> Self {
        let users = Arc::new(MemoryCounter::new(limits.per_user));
        let topics = Arc::new(MemoryCounter::new(limits.per_topic));
        let global = Arc::new(MemoryCounter::new(limits.global));
        Self {
            limits,
            users: Box::new(Shared(users.clone())),
            topics: Box::new(Shared(topics.clone())),
            global: Box::new(Shared(global.clone())),
            memory: vec![users, topics, global],
            warned: AtomicBool::new(false),
        }
    }

    /// Counting in Redis (a cluster): the user and global levels hold across nodes; so
    /// does the topic level.
    pub fn clustered(limits: RateLimits, link: Arc<RedisLink>) -> Self {
        Self {
            limits,
            users: Box::new(RedisCounter::new(link.clone())),
            topics: Box::new(RedisCounter::new(link.clone())),
            global: Box::new(RedisCounter::new(link)),
            memory: Vec::new(),
            warned: AtomicBool::new(false),
        }
    }

    /// The configured limits.
    pub fn limits(&self) -> RateLimits {
        self.limits
    }

    /// A connection's own limiter (`None` when that level is off).
    pub fn connection_limiter(&self) -> Option<DefaultDirectRateLimiter> {
        (self.limits.enabled && self.limits.per_connection > 0)
            .then(|| RateLimiter::direct(quota(self.limits.per_connection)))
    }

    /// Checks one message of `user` into `topic` (`None` for direct messages) against the
    /// user, topic and global levels, in that order.
    pub async fn check(&self, user: Option<&str>, topic: Option<&str>) -> Result<(), Level> {
        if !self.limits.enabled {
            return Ok(());
        }
        if let (Some(user), true) = (user, self.limits.per_user > 0) {
            self.level(&*self.users, &format!("user:{user}"), self.limits.per_user, Level::User)
                .await?;
        }
        if let (Some(topic), true) = (topic, self.limits.per_topic > 0) {
            self.level(
                &*self.topics,
                &format!("topic:{topic}"),
                self.limits.per_topic,
                Level::Topic,
            )
            .await?;
        }
        if self.limits.global > 0 {
            self.level(&*self.global, "global", self.limits.global, Level::Global)
                .await?;
        }
        Ok(())
    }

    async fn level(&self, counter: &dyn Counter, key: &str, per_second: u32, level: Level) -> Result<(), Level> {
        match counter.hit(key, per_second).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(level),
            Err(e) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "rate-limit counters unavailable; letting messages through until they answer");
                }
                Ok(())
            }
        }
    }

    /// Forgets idle in-memory buckets (call now and then).
    pub fn sweep(&self) {
        for counter in &self.memory {
            counter.sweep();
        }
    }
}
