//! Lifecycle events of a node: connections opened and closed, channels occupied and
//! vacated, presence members added and removed, client events. The session core and
//! presence emit them; metrics (and later webhooks) observe them.
//!
//! Observers get a bounded queue each. Emitting never waits: an observer whose queue is
//! full misses the event, which is counted ([`Lifecycle::dropped`]), so a slow observer
//! can never slow the sessions or the fan-out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

use crate::channel::Channel;
use crate::hub::Member;
use crate::hub::{Protocol, SocketId};
use crate::sync::{read, write};

/// A managed channel (EmitHub) was created, changed state or was deleted through this
/// node: what the registry tells its observers (webhooks) besides the lifecycle events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelChange {
    /// Its hub channel (`emithub.{id}`).
    pub channel: String,
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `Created`, `Active`, `Paused`, `Stopped` or `Deleted`.
    pub status: String,
}

/// Something that happened to a connection, a channel or a presence member on this node.
#[derive(Debug, Clone)]
pub enum LifecycleEvent {
    /// A socket was accepted.
    ConnectionOpened {
        /// Its socket id.
        socket: SocketId,
        /// Its wire protocol.
        protocol: Protocol,
        /// Its user, when it authenticated on connect.
        user: Option<Arc<str>>,
    },
    /// A socket ended (its clean-up is done).
    ConnectionClosed {
        /// Its socket id.
        socket: SocketId,
        /// Its wire protocol.
        protocol: Protocol,
        /// Its user, if known.
        user: Option<Arc<str>>,
    },
    /// The first subscriber of a channel on this node joined.
    ChannelOccupied {
        /// The channel.
        channel: Channel,
    },
    /// The last subscriber of a channel on this node left.
    ChannelVacated {
        /// The channel.
        channel: Channel,
    },
    /// A channel's subscribers on this node changed (a socket joined or left it).
    SubscriptionCount {
        /// The channel.
        channel: Channel,
        /// Its subscribers on this node now.
        subscribers: usize,
    },
    /// A user's first socket joined a presence channel (across the cluster).
    MemberAdded {
        /// The presence channel.
        channel: Channel,
        /// The member.
        member: Member,
    },
    /// A user's last socket left a presence channel (across the cluster).
    MemberRemoved {
        /// The presence channel.
        channel: Channel,
        /// The member.
        member: Member,
    },
    /// A client sent an event to the other subscribers of a channel.
    ClientEvent {
        /// The channel.
        channel: Channel,
        /// The event name (`client-...`).
        event: Arc<str>,
        /// The sender.
        socket: SocketId,
        /// The sender's user, if known: the member on a presence channel (with the JSON
        /// type of its id), else the connection's user.
        user: Option<crate::hub::Sender>,
        /// What it sent.
        data: Arc<serde_json::value::RawValue>,
    },
}

/// The observers of one node. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

/// Which events an observer wants.
pub(crate) type Wants = fn(&LifecycleEvent) -> bool;

struct Observer {
    wants: Wants,
    tx: mpsc::Sender<LifecycleEvent>,
}

#[derive(Default)]
struct Inner {
    observers: RwLock<Vec<Observer>>,
    dropped: AtomicU64,
}

impl LifecycleEvent {
    /// Every event (for [`Lifecycle::observe`]).
    pub fn any(_: &Self) -> bool {
        true
    }

    /// Every event but the (frequent) subscription counts: what logs, metrics and
    /// webhooks look at.
    pub fn notable(event: &Self) -> bool {
        !matches!(event, Self::SubscriptionCount { .. })
    }
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("observers", &read(&self.inner.observers).len())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Lifecycle {
    /// A new observer: every event from now on, through a queue of `capacity` events.
    pub fn subscribe(&self, capacity: usize) -> mpsc::Receiver<LifecycleEvent> {
        self.subscribe_to(capacity, LifecycleEvent::any)
    }

    /// A new observer of the events `wants` accepts, from now on (others are not even
    /// queued for it).
    pub fn subscribe_to(&self, capacity: usize, wants: Wants) -> mpsc::Receiver<LifecycleEvent> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        write(&self.inner.observers).push(Observer { wants, tx });
        rx
    }

    /// Runs `handle` on every event `wants` accepts from now on (through a queue of
    /// `capacity`), one at a time, in a task of `tasks`, until `stop`.
    pub fn observe<F, Fut>(
        &self,
        capacity: usize,
        wants: Wants,
        stop: tokio_util::sync::CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
        mut handle: F,
    ) where
        F: FnMut(LifecycleEvent) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let mut events = self.subscribe_to(capacity, wants);
        tasks.spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return,
                    event = events.recv() => match event {
                        Some(event) => event,
                        None => return,
                    },
                };
                handle(event).await;
            }
        });
    }

    /// Offers `event` to every observer without waiting; observers that went away are
    /// forgotten.
    pub fn emit(&self, event: LifecycleEvent) {
        let mut gone = false;
        for observer in read(&self.inner.observers).iter() {
            if !(observer.wants)(&event) {
                continue;
            }
            match observer.tx.try_send(event.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => gone = true,
            }
        }
        if gone {
            write(&self.inner.observers).retain(|o| !o.tx.is_closed());
        }
    }

    /// Events observers missed because their queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_observer_misses_events_and_never_blocks() {
        let lifecycle = Lifecycle::default();
        let mut slow = lifecycle.subscribe(1);
        let mut fast = lifecycle.subscribe(10);
        let channel = Channel::parse("general").unwrap();
        for _ in 0..3 {
            lifecycle.emit(LifecycleEvent::ChannelOccupied {
                channel: channel.clone(),
            });
        }
        assert_eq!(lifecycle.dropped(), 2);
        assert!(slow.try_recv().is_ok());
        assert!(slow.try_recv().is_err());
        for _ in 0..3 {
            assert!(fast.try_recv().is_ok());
        }
        drop(slow);
        lifecycle.emit(LifecycleEvent::ChannelVacated { channel });
        assert_eq!(
            read(&lifecycle.inner.observers).len(),
            1,
            "the closed observer is forgotten"
        );
    }
}
