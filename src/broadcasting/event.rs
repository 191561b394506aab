//! Events, listeners and automatic broadcasting (Laravel's `Event::dispatch` and
//! `ShouldBroadcast`), plus [`EventFacade::fake`] for application tests.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use serde::Serialize;

use super::{manager, queue::QueueOptions, BroadcastError, Payload};
use crate::channel::Channel;
use crate::hub::SocketId;
use crate::sync::{lock, read, write};

/// Something that happened in the application. Listeners run when it is dispatched.
///
/// Every [`ShouldBroadcast`] type is an `Event` automatically; plain events write
/// `impl Event for UserLoggedIn {}`.
pub trait Event: Send + Sync + 'static {
    /// The name used by fakes and logs: the type's name without its module path.
    fn event_name(&self) -> &'static str {
        short_type_name(std::any::type_name::<Self>())
    }

    /// What to broadcast when the event is dispatched; `None` for plain events.
    #[doc(hidden)]
    fn prepare_broadcast(&self) -> Option<Result<Prepared, BroadcastError>> {
        None
    }
}

/// An event that is broadcast when dispatched. Only [`broadcast_on`](Self::broadcast_on)
/// is required.
///
/// ```
/// use rustaxum::broadcasting::ShouldBroadcast;
///
/// #[derive(serde::Serialize)]
/// struct OrderShipped { order_id: u64, user_id: u64 }
///
/// impl ShouldBroadcast for OrderShipped {
///     fn broadcast_on(&self) -> Vec<String> {
///         vec![format!("user.{}", self.user_id)]
///     }
/// }
/// ```
pub trait ShouldBroadcast: Serialize + Send + Sync + 'static {
    /// The channels to broadcast on (native or Pusher spelling).
    fn broadcast_on(&self) -> Vec<String>;

    /// The event name clients see; default: the type's name, e.g. `OrderShipped`.
    fn broadcast_as(&self) -> Option<String> {
        None
    }

    /// The payload; default: the event serialised with its own `Serialize`.
    fn broadcast_with(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self)
    }

    /// The broadcast connection to use; default: the manager's default.
    fn broadcast_connection(&self) -> Option<String> {
        None
    }

    /// Whether to broadcast this instance at all; default `true`.
    fn broadcast_when(&self) -> bool {
        true
    }

    /// `Some` to broadcast from the background queue with retries (Laravel's
    /// `ShouldQueue`); default `None`: broadcast during `dispatch`.
    fn broadcast_queue(&self) -> Option<QueueOptions> {
        None
    }

    /// A socket that must not receive the event (Laravel's `toOthers()`).
    fn broadcast_except(&self) -> Option<SocketId> {
        None
    }
}

/// A broadcast an event asked for, ready to send.
#[doc(hidden)]
#[derive(Debug)]
pub struct Prepared {
    channels: Vec<Channel>,
    event: String,
    payload: Payload,
    connection: Option<String>,
    queue: Option<QueueOptions>,
}

impl<T: ShouldBroadcast> Event for T {
    fn prepare_broadcast(&self) -> Option<Result<Prepared, BroadcastError>> {
        if !self.broadcast_when() {
            return None;
        }
        Some((|| {
            let channels = parse_channels(self.broadcast_on())?;
            let data = self.broadcast_with()?;
            Ok(Prepared {
                channels,
                event: self
                    .broadcast_as()
                    .unwrap_or_else(|| short_type_name(std::any::type_name::<T>()).to_string()),
                payload: Payload {
                    data: Arc::from(serde_json::value::to_raw_value(&data)?),
                    socket: self.broadcast_except(),
                },
                connection: self.broadcast_connection(),
                queue: self.broadcast_queue(),
            })
        })())
    }
}

/// Parses channel names, failing on the first invalid one.
pub(crate) fn parse_channels<I, S>(names: I) -> Result<Vec<Channel>, BroadcastError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    names
        .into_iter()
        .map(|n| {
            Channel::parse(n.as_ref()).map_err(|source| BroadcastError::InvalidChannel {
                channel: n.as_ref().chars().take(200).collect(),
                source,
            })
        })
        .collect()
}

fn short_type_name(full: &'static str) -> &'static str {
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

type Listener = Arc<dyn Fn(&dyn Any) + Send + Sync>;

#[derive(Default)]
struct Events {
    listeners: RwLock<HashMap<TypeId, Vec<Listener>>>,
    fake: RwLock<Option<Arc<EventFake>>>,
}

static EVENTS: LazyLock<Events> = LazyLock::new(Events::default);

/// Registers `listener` to run (synchronously, in registration order) whenever an
/// event of type `E` is dispatched. Spawn a task inside it for slow work.
pub fn listen<E: Event, F>(listener: F)
where
    F: Fn(&E) + Send + Sync + 'static,
{
    let wrapped: Listener = Arc::new(move |any: &dyn Any| {
        if let Some(event) = any.downcast_ref::<E>() {
            listener(event);
        }
    });
    write(&EVENTS.listeners)
        .entry(TypeId::of::<E>())
        .or_default()
        .push(wrapped);
}

/// Dispatches `event`: runs its listeners, then broadcasts it if it is
/// [`ShouldBroadcast`] (now, or through the queue when it asks to be queued).
///
/// While [`EventFacade::fake`] is active the event is only recorded.
pub async fn dispatch<E: Event>(event: E) -> Result<(), BroadcastError> {
    if let Some(fake) = read(&EVENTS.fake).clone() {
        lock(&fake.dispatched).push(event.event_name().to_string());
        return Ok(());
    }
    let listeners = read(&EVENTS.listeners)
        .get(&TypeId::of::<E>())
        .cloned()
        .unwrap_or_default();
    for listener in listeners {
        listener(&event);
    }
    let Some(prepared) = event.prepare_broadcast() else {
        return Ok(());
    };
    let p = prepared?;
    let manager = manager::global()?;
    match p.queue {
        Some(options) => manager.enqueue(p.connection.as_deref(), p.channels, p.event, p.payload, options),
        None => manager
            .send(p.connection.as_deref(), &p.channels, &p.event, &p.payload)
            .await
            .map(|_| ()),
    }
}

/// `event.dispatch().await?`, as in the RustAxum documents.
pub trait Dispatchable: Event + Sized {
    /// See [`dispatch`].
    fn dispatch(self) -> impl Future<Output = Result<(), BroadcastError>> + Send {
        dispatch(self)
    }
}

impl<E: Event> Dispatchable for E {}

/// Records dispatched events instead of running them (Laravel's `Event::fake()`).
#[derive(Debug, Default)]
pub struct EventFake {
    dispatched: Mutex<Vec<String>>,
}

impl EventFake {
    /// Names of the events dispatched so far, in order.
    pub fn dispatched(&self) -> Vec<String> {
        lock(&self.dispatched).clone()
    }

    /// How many times an event named `name` was dispatched.
    pub fn count(&self, name: &str) -> usize {
        lock(&self.dispatched).iter().filter(|n| *n == name).count()
    }
}

/// Laravel's `Event` facade for tests: fake, then assert what was dispatched.
///
/// The fake is process-wide; run tests that use it in their own process (the
/// project's test command, `cargo nextest`, does).
#[derive(Debug)]
pub struct EventFacade;

impl EventFacade {
    /// Starts recording: from now on dispatched events are recorded, not run.
    pub async fn fake() -> Arc<EventFake> {
        let fake = Arc::new(EventFake::default());
        *write(&EVENTS.fake) = Some(fake.clone());
        fake
    }

    /// Stops faking: events run and broadcast again.
    pub async fn restore() {
        *write(&EVENTS.fake) = None;
    }

    /// Whether an event named `name` was dispatched while faking.
    pub async fn assert_dispatched(name: &str) -> bool {
        Self::dispatched_times(name) > 0
    }

    /// Whether an event named `name` was dispatched exactly `times` times.
    pub async fn assert_dispatched_times(name: &str, times: usize) -> bool {
        Self::dispatched_times(name) == times
    }

    /// Whether no event named `name` was dispatched.
    pub async fn assert_not_dispatched(name: &str) -> bool {
        Self::dispatched_times(name) == 0
    }

    fn dispatched_times(name: &str) -> usize {
        read(&EVENTS.fake).as_ref().map_or(0, |f| f.count(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(short_type_name("a::b::OrderShipped"), "OrderShipped");
        assert_eq!(short_type_name("a::Wrapper<b::C>"), "Wrapper");
        assert_eq!(short_type_name("Plain"), "Plain");
    }
}
