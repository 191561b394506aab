//! Watchlists: a Pusher client that signs in with `watchlist` in its `user_data` gets
//! `pusher_internal:watchlist_events` — `{"events":[{"name":"online","user_ids":[..]}]}`
//! at once for the watched users who are online, then `online` / `offline` as they come
//! and go (a user is online from their first signed-in connection to their last, on any
//! node; users are per app).
//!
//! A change is published on the internal channel `#watch:users` (no client of any app
//! can name it) through the fan-out, so every node sees it; each node's hook hands it to
//! its own watchers. In a cluster, who is online is kept in Redis: the hash
//! `{p}rustaxum:online:{user}` holds the nodes where the user is signed in; nodes whose
//! liveness key expired do not count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redis::Script;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channel::{app_key, split_key, Channel};
use crate::cluster::redis::RedisBroker;
use crate::hub::{EnvelopeKind, Message, SocketId};
use crate::lifecycle::{Lifecycle, LifecycleEvent};
use crate::publish::{Fanout, Origin, PublishHook};
use crate::sync::lock;

/// Most users one watchlist holds (the rest are ignored), as Pusher limits it.
pub const MAX_WATCHED: usize = 100;

const STATUS_EVENT: &str = "rustaxum:watch";

/// Marks this node as one where KEYS[1]'s user is (ARGV[2] = 1) or is no longer (0)
/// signed in; returns on how many live nodes the user is now.
const MARK_LUA: &str = r"
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], ARGV[1], 1)
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local n = 0
for _, node in ipairs(redis.call('HKEYS', KEYS[1])) do
  if node == ARGV[1] or redis.call('EXISTS', ARGV[3] .. node) == 1 then
    n = n + 1
  else
    redis.call('HDEL', KEYS[1], node)
  end
end
return n
";

/// For each KEYS[i], 1 when that user is signed in on a live node.
const ANY_LUA: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = 0
  for _, node in ipairs(redis.call('HKEYS', key)) do
    if redis.call('EXISTS', ARGV[1] .. node) == 1 then
      out[i] = 1
      break
    end
  end
end
return out
";

#[derive(Serialize, Deserialize)]
struct Status {
    /// The user's key (`{app}:{id}` or the id for the default app).
    user: String,
    online: bool,
}

#[derive(Serialize)]
struct Events<'a> {
    events: [WatchEvent<'a>; 1],
}

#[derive(Serialize)]
struct WatchEvent<'a> {
    name: &'a str,
    user_ids: Vec<&'a str>,
}

struct SignedIn {
    user: Arc<str>,
    watching: Vec<Arc<str>>,
}

#[derive(Default)]
struct State {
    sockets: HashMap<SocketId, SignedIn>,
    /// Signed-in sockets per user key on this node.
    online: HashMap<Arc<str>, usize>,
    /// Watching sockets per watched user key on this node.
    watchers: HashMap<Arc<str>, Vec<SocketId>>,
}

/// The watchlists of one node.
pub struct Watchlist {
    fanout: Fanout,
    cluster: Option<Arc<RedisBroker>>,
    state: Mutex<State>,
    channel: Channel,
    scripts: [Script; 2],
}

impl std::fmt::Debug for Watchlist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchlist")
            .field("signed_in", &lock(&self.state).sockets.len())
            .finish_non_exhaustive()
    }
}

/// `pusher_internal:watchlist_events` data for one change.
fn events_data(name: &str, user_ids: Vec<&str>) -> Option<Arc<RawValue>> {
    let raw = serde_json::value::to_raw_value(&Events {
        events: [WatchEvent { name, user_ids }],
    })
    .ok()?;
    Some(Arc::from(raw))
}

fn closed(event: &LifecycleEvent) -> bool {
    matches!(event, LifecycleEvent::ConnectionClosed { .. })
}

impl Watchlist {
    /// Watchlists over `fanout` (registered as its hook), in a cluster when `cluster` is given.
    pub fn new(fanout: Fanout, cluster: Option<Arc<RedisBroker>>) -> Arc<Self> {
        let channel = Channel::parse_in(Some("#watch"), "users").unwrap_or_else(|_| unreachable!("a valid name"));
        // Its messages go to watchers, not to subscribers: listened to for good.
        if let Some(broker) = &cluster {
            broker.pin(&channel);
        }
        let this = Arc::new(Self {
            fanout: fanout.clone(),
            cluster,
            state: Mutex::default(),
            channel,
            scripts: [Script::new(MARK_LUA), Script::new(ANY_LUA)],
        });
        fanout.add_hook(this.clone());
        this
    }

    /// Forgets sockets as they close (until `stop`).
    pub fn start(self: &Arc<Self>, lifecycle: &Lifecycle, stop: CancellationToken, tasks: &TaskTracker) {
        let this = self.clone();
        lifecycle.observe(65_536, closed, stop, tasks, move |event| {
            let this = this.clone();
            async move {
                if let LifecycleEvent::ConnectionClosed { socket, .. } = event {
                    this.signed_out(socket).await;
                }
            }
        });
    }

    /// `socket` signed in as `user_id` of the app `namespace`, watching `watchlist`.
    /// Returns the `pusher_internal:watchlist_events` data to send it now (the watched
    /// users online), if any is.
    pub async fn signed_in(
        &self,
        socket: SocketId,
        namespace: Option<&str>,
        user_id: &str,
        watchlist: &[String],
    ) -> Option<Arc<RawValue>> {
        // Signing in again replaces the earlier sign-in.
        self.signed_out(socket).await;
        let user: Arc<str> = app_key(namespace, user_id).into();
        let watching: Vec<Arc<str>> = watchlist
            .iter()
            .take(MAX_WATCHED)
            .map(|w| Arc::from(app_key(namespace, w)))
            .collect();
        let first_here = {
            let mut state = lock(&self.state);
            for w in &watching {
                state.watchers.entry(w.clone()).or_default().push(socket);
            }
            state.sockets.insert(
                socket,
                SignedIn {
                    user: user.clone(),
                    watching: watching.clone(),
                },
            );
            let n = state.online.entry(user.clone()).or_insert(0);
            *n += 1;
            *n == 1
        };
        if first_here && self.mark(&user, true).await == 1 {
            self.announce(&user, true).await;
        }
        let online = self.online_among(&watching).await;
        if online.is_empty() {
            return None;
        }
        events_data("online", online.iter().map(|k| split_key(k).1).collect())
    }

    async fn signed_out(&self, socket: SocketId) {
        let last_here = {
            let mut state = lock(&self.state);
            let Some(gone) = state.sockets.remove(&socket) else {
                return;
            };
            for w in &gone.watching {
                if let Some(list) = state.watchers.get_mut(w) {
                    list.retain(|s| *s != socket);
                    if list.is_empty() {
                        state.watchers.remove(w);
                    }
                }
            }
            let left = match state.online.get_mut(&gone.user) {
                Some(n) => {
                    *n = n.saturating_sub(1);
                    *n
                }
                None => 0,
            };
            if left == 0 {
                state.online.remove(&gone.user);
                Some(gone.user)
            } else {
                None
            }
        };
        if let Some(user) = last_here {
            if self.mark(&user, false).await == 0 {
                self.announce(&user, false).await;
            }
        }
    }

    /// Records this node's part of `user`'s status; returns on how many nodes they are
    /// signed in now (this one alone without a cluster).
    async fn mark(&self, user: &str, here: bool) -> usize {
        let Some(broker) = &self.cluster else {
            return usize::from(here);
        };
        let link = broker.link();
        let mut invocation = self.scripts[0].key(link.key(&format!("online:{user}")));
        invocation
            .arg(link.node_id())
            .arg(if here { "1" } else { "0" })
            .arg(link.key("node:"));
        match link
            .exec(|mut c| async move { invocation.invoke_async::<usize>(&mut c).await })
            .await
        {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "watchlist: Redis failed; announcing from this node's view");
                usize::from(here)
            }
        }
    }

    /// The watched users (keys) who are online.
    async fn online_among(&self, watching: &[Arc<str>]) -> Vec<Arc<str>> {
        if watching.is_empty() {
            return Vec::new();
        }
        let local: Vec<Arc<str>> = {
            let state = lock(&self.state);
            watching
                .iter()
                .filter(|w| state.online.contains_key(*w))
                .cloned()
                .collect()
        };
        let Some(broker) = &self.cluster else { return local };
        let link = broker.link();
        let mut invocation = self.scripts[1].prepare_invoke();
        for w in watching {
            invocation.key(link.key(&format!("online:{w}")));
        }
        invocation.arg(link.key("node:"));
        match link
            .exec(|mut c| async move { invocation.invoke_async::<Vec<u8>>(&mut c).await })
            .await
        {
            Ok(flags) => watching
                .iter()
                .zip(flags)
                .filter(|(_, on)| *on == 1)
                .map(|(w, _)| w.clone())
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "watchlist: Redis failed; answering from this node's view");
                local
            }
        }
    }

    async fn announce(&self, user: &str, online: bool) {
        let Ok(data) = serde_json::value::to_raw_value(&Status {
            user: user.to_string(),
            online,
        }) else {
            return;
        };
        let message = Message::event(self.channel.clone(), STATUS_EVENT, Arc::from(data)).kind(EnvelopeKind::Watchlist);
        if let Err(e) = self.fanout.publish(message).await {
            tracing::warn!(error = %e, "watchlist change not published");
        }
    }
}

impl PublishHook for Watchlist {
    fn published(&self, message: &Message, _origin: Origin) {
        if message.kind != EnvelopeKind::Watchlist || message.channel != self.channel {
            return;
        }
        let Ok(status) = serde_json::from_str::<Status>(message.data.get()) else {
            return;
        };
        let sockets: Vec<SocketId> = match lock(&self.state).watchers.get(status.user.as_str()) {
            Some(s) => s.clone(),
            None => return,
        };
        let name = if status.online { "online" } else { "offline" };
        let Some(data) = events_data(name, vec![split_key(&status.user).1]) else {
            return;
        };
        let out = Message::event(self.channel.clone(), "pusher_internal:watchlist_events", data)
            .kind(EnvelopeKind::Watchlist);
        self.fanout.hub().deliver_to(&sockets, out);
    }
}
