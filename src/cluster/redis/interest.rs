//! Which Redis channels a node listens to: only those of channels it has subscribers
//! for, so that its intake follows the traffic of the channels it serves, not the whole
//! cluster's.
//!
//! - A join ([`Interest::listen`]) adds the channel's Redis names (what the nodes and
//!   Laravel publish on: `{prefix}{key}`, and `{prefix}presence-{name}` for a presence
//!   channel, Laravel's spelling) and waits until the subscriber has `SUBSCRIBE`d them,
//!   so a message published anywhere after the join was acknowledged reaches the socket.
//!   Joins arriving together share one `SUBSCRIBE` (a reconnect storm of 10,000 sockets
//!   costs a handful of commands, not 10,000).
//! - A channel without local subscribers for [`LINGER`] is `UNSUBSCRIBE`d (again in
//!   batches), so a channel that empties and fills again does not churn.
//! - A few names are pinned (the control channel, the Pusher watchlist channel): always
//!   listened to.
//! - After a reconnection the subscriber subscribes exactly the live set again.
//!
//! With routing rules that copy messages (`copy_to`), a message Laravel publishes on any
//! channel may be copied to one served here: the node then `PSUBSCRIBE`s the whole prefix
//! as before ([`RedisBroker::receive_everything`](super::RedisBroker::receive_everything)).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::backend::COMMAND_TIMEOUT;
use crate::channel::{Channel, ChannelKind};
use crate::hub::Hub;
use crate::sync::{lock, wait_until};

/// How long a channel stays subscribed in Redis after its last local subscriber left.
#[cfg_attr(not(feature = "server"), allow(unreachable_pub))]
pub const LINGER: Duration = Duration::from_secs(3);
/// Names per `SUBSCRIBE` / `UNSUBSCRIBE` command.
pub(super) const BATCH: usize = 1000;

/// A Redis channel listened to.
#[derive(Debug)]
struct Listened {
    channel: Channel,
    /// Since when the hub channel has had no local subscriber (`None`: it has some, or
    /// the name is pinned).
    empty_since: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    /// Subscribed on the current connection.
    live: HashMap<String, Listened>,
    /// Wanted, not subscribed yet.
    pending: HashMap<String, Channel>,
    /// Never let go.
    pinned: HashMap<String, Channel>,
}

/// The set of Redis channels a node listens to (see the module documentation).
#[derive(Debug)]
pub(super) struct Interest {
    state: Mutex<State>,
    /// Wakes the subscriber: something is pending.
    pub wake: tokio::sync::Notify,
    /// Bumped after each subscription batch; joins waiting for theirs look again.
    done: tokio::sync::watch::Sender<u64>,
    /// Whether a subscriber connection is up (joins do not wait for a Redis that is down).
    connected: AtomicBool,
}

impl Default for Interest {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            done: tokio::sync::watch::Sender::new(0),
            connected: AtomicBool::new(false),
        }
    }
}

/// The Redis channels `channel`'s messages arrive on, under `prefix`: its key (what the
/// nodes publish on), and the other spellings a program publishing into Redis may use
/// for it: Laravel's `presence-{name}` for `presence.{name}`, and the unprefixed name of
/// a channel the rules make private (routed to it on arrival, as `auth::addressed` does).
pub(super) fn redis_names(prefix: &str, channel: &Channel) -> Vec<String> {
    let mut names = vec![format!("{prefix}{}", channel.name())];
    let app = channel.app().map(|a| format!("{a}:")).unwrap_or_default();
    let local = channel.local_name();
    match channel.kind() {
        ChannelKind::Presence => {
            if let Some(rest) = local.strip_prefix("presence.") {
                names.push(format!("{prefix}{app}presence-{rest}"));
            }
        }
        ChannelKind::Private if !channel.is_internal() && local != &channel.name()[app.len()..] => {
            names.push(format!("{prefix}{app}{local}"));
        }
        _ => {}
    }
    names
}

impl Interest {
    /// Makes sure `names` (of `channel`) are listened to; returns once they are
    /// subscribed, at once when they already are or when Redis is down (they are then
    /// subscribed when it is back), and after at most two command timeouts.
    pub(super) async fn listen(&self, channel: &Channel, names: Vec<String>) {
        let done = self.done.subscribe();
        {
            let mut state = lock(&self.state);
            let mut missing = false;
            for name in names.iter() {
                match state.live.get_mut(name) {
                    Some(listened) => listened.empty_since = None,
                    None => {
                        state.pending.insert(name.clone(), channel.clone());
                        missing = true;
                    }
                }
            }
            if !missing {
                return;
            }
        }
        self.wake.notify_one();
        if !self.connected.load(Ordering::Acquire) {
            return;
        }
        wait_until(done, COMMAND_TIMEOUT * 2, || {
            let state = lock(&self.state);
            names.iter().all(|n| state.live.contains_key(n))
        })
        .await;
    }

    /// Listens to `names` (of `channel`) for good.
    pub(super) fn pin(&self, channel: &Channel, names: Vec<String>) {
        {
            let mut state = lock(&self.state);
            for name in names {
                state.pinned.insert(name.clone(), channel.clone());
                if !state.live.contains_key(&name) {
                    state.pending.insert(name, channel.clone());
                }
            }
        }
        self.wake.notify_one();
    }

    /// What is wanted and not subscribed yet (taken: the caller subscribes it, then calls
    /// [`subscribed`](Self::subscribed) or [`lost`](Self::lost)).
    pub(super) fn take_pending(&self) -> Vec<(String, Channel)> {
        let mut state = lock(&self.state);
        let state = &mut *state;
        state
            .pending
            .drain()
            .filter(|(name, _)| !state.live.contains_key(name))
            .collect()
    }

    /// A new connection: everything listened to so far must be subscribed on it.
    pub(super) fn everything(&self) -> Vec<(String, Channel)> {
        let mut state = lock(&self.state);
        let state = &mut *state;
        let mut all: HashMap<String, Channel> = state.live.drain().map(|(n, l)| (n, l.channel)).collect();
        all.extend(state.pending.drain());
        all.extend(state.pinned.iter().map(|(n, c)| (n.clone(), c.clone())));
        all.into_iter().collect()
    }

    /// `batch` is subscribed on the current connection.
    pub(super) fn subscribed(&self, batch: Vec<(String, Channel)>) {
        {
            let mut state = lock(&self.state);
            for (name, channel) in batch {
                state.live.insert(
                    name,
                    Listened {
                        channel,
                        empty_since: None,
                    },
                );
            }
        }
        self.connected.store(true, Ordering::Release);
        self.done.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The connection is gone: what was live (and `unsent`) is pending again.
    pub(super) fn lost(&self, unsent: Vec<(String, Channel)>) {
        self.connected.store(false, Ordering::Release);
        {
            let mut state = lock(&self.state);
            let state = &mut *state;
            let live: Vec<(String, Channel)> = state.live.drain().map(|(n, l)| (n, l.channel)).collect();
            state.pending.extend(live);
            state.pending.extend(unsent);
        }
        self.done.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Takes out of the live set the names whose channel has had no local subscriber for
    /// `linger` (the caller `UNSUBSCRIBE`s them). A join racing with this either finds
    /// its name still live (and the channel occupied: it is kept) or not live (and
    /// subscribes it again, after the `UNSUBSCRIBE` on the same connection).
    pub(super) fn vacated(&self, hub: &Hub, linger: Duration) -> Vec<String> {
        let now = Instant::now();
        let mut state = lock(&self.state);
        let state = &mut *state;
        let mut gone = Vec::new();
        for (name, listened) in state.live.iter_mut() {
            if state.pinned.contains_key(name) || hub.subscriber_count(&listened.channel) > 0 {
                listened.empty_since = None;
                continue;
            }
            match listened.empty_since {
                None => listened.empty_since = Some(now),
                Some(since) if now.duration_since(since) >= linger => gone.push(name.clone()),
                Some(_) => {}
            }
        }
        for name in &gone {
            state.live.remove(name);
        }
        gone
    }

    /// Every hub channel listened to or about to be (live, pending, pinned).
    pub(super) fn channels(&self) -> Vec<Channel> {
        let state = lock(&self.state);
        let mut all: Vec<Channel> = state
            .live
            .values()
            .map(|l| l.channel.clone())
            .chain(state.pending.values().cloned())
            .chain(state.pinned.values().cloned())
            .collect();
        all.sort_unstable_by(|a, b| a.name().cmp(b.name()));
        all.dedup();
        all
    }

    /// How many Redis channels are listened to.
    pub(super) fn len(&self) -> usize {
        lock(&self.state).live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_is_listened_to_under_every_spelling_that_reaches_it() {
        let names = |key: &str| redis_names("p_", &Channel::from_key(key).unwrap());
        assert_eq!(names("orders.1"), ["p_orders.1"]);
        assert_eq!(names("private-user.7"), ["p_private-user.7", "p_user.7"]);
        assert_eq!(names("private-encrypted-x"), ["p_private-encrypted-x"]);
        assert_eq!(names("presence.chat.1"), ["p_presence.chat.1", "p_presence-chat.1"]);
        assert_eq!(names("app-2:private-a"), ["p_app-2:private-a", "p_app-2:a"]);
    }
}
