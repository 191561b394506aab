//! An app's `max_connections` over the whole cluster, as Pusher counts it.
//!
//! Each node admits against its own count first (no Redis round trip when the node alone
//! is over). In a cluster it then reserves a place in the hash
//! `{p}rustaxum:app_connections:{app}` (node id → that node's sockets of the app): one
//! script sums the live nodes' fields (a dead node's field is dropped when seen, so its
//! sockets stop counting once its liveness key expires) and adds the socket only under
//! the limit. The place is given back when the socket closes.
//!
//! When Redis cannot be reached the node admits on its own count (the cluster is degraded
//! and says so on `/ready`); refusing every connection then would turn a Redis outage into
//! a full outage.

use std::sync::Arc;

use redis::Script;

use crate::cluster::redis::RedisBroker;

// ARGV: node id, max, liveness key prefix.
const RESERVE_LUA: &str = concat!(
    live_nodes_total_lua!(),
    r"
if total >= tonumber(ARGV[2]) then
  return -1
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return total + 1
"
);

const RELEASE_LUA: &str = r"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return n
";

/// The cluster-wide connection quota of Pusher apps.
pub struct ClusterQuota {
    broker: Arc<RedisBroker>,
    reserve: Script,
    release: Arc<Script>,
}

impl std::fmt::Debug for ClusterQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterQuota").finish_non_exhaustive()
    }
}

/// The app is at `max_connections` over the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the app has {0} connections over the cluster, its max_connections")]
pub struct OverQuota(pub usize);

/// A reserved place; given back when dropped.
pub struct Place {
    broker: Arc<RedisBroker>,
    key: String,
    release: Arc<Script>,
}

impl std::fmt::Debug for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Place").field("key", &self.key).finish()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let broker = self.broker.clone();
        let key = std::mem::take(&mut self.key);
        let release = self.release.clone();
        runtime.spawn(async move {
            let link = broker.link();
            let mut invocation = release.key(key);
            invocation.arg(link.node_id());
            let released = link
                .exec(|mut c| async move { invocation.invoke_async::<i64>(&mut c).await })
                .await;
            if let Err(e) = released {
                tracing::debug!(error = %e, "giving back an app connection place failed (the node's liveness will)");
            }
        });
    }
}

impl ClusterQuota {
    /// The quota over `broker`'s cluster.
    pub fn new(broker: Arc<RedisBroker>) -> Self {
        Self {
            broker,
            reserve: Script::new(RESERVE_LUA),
            release: Arc::new(Script::new(RELEASE_LUA)),
        }
    }

    /// Reserves a place for one more socket of app `id` (at most `max`). `Ok(None)` when
    /// Redis could not be asked (the node's own count applies).
    pub async fn reserve(&self, id: &str, max: usize) -> Result<Option<Place>, OverQuota> {
        let link = self.broker.link();
        let key = link.key(&format!("app_connections:{id}"));
        let mut invocation = self.reserve.key(&key);
        invocation.arg(link.node_id()).arg(max).arg(link.key("node:"));
        match link
            .exec(|mut c| async move { invocation.invoke_async::<i64>(&mut c).await })
            .await
        {
            Ok(n) if n < 0 => Err(OverQuota(max)),
            Ok(_) => Ok(Some(Place {
                broker: self.broker.clone(),
                key,
                release: self.release.clone(),
            })),
            Err(e) => {
                tracing::warn!(app = id, error = %e, "the cluster-wide connection count is unavailable; admitting on this node's count");
                Ok(None)
            }
        }
    }
}
