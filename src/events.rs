//! The event system, at the one path the RustAxum document imports it from
//! (`use rustaxum::events::{Event, ShouldBroadcast, EventFacade}`; also in
//! the prelude): an event, what makes it broadcast ([`ShouldBroadcast`],
//! or [`Broadcastable`] for the document's explicit shape), queued ([`ShouldQueue`]),
//! [`dispatch`] and [`listen`], and [`EventFacade`]'s fakes for tests. Events go out
//! through the manager of [`crate::broadcasting`].

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use crate::broadcasting::{manager, parse_channels, BroadcastError, Payload, QueueOptions};
use crate::hub::SocketId;
use crate::sync::{lock, read, write};

/// What an event carries as JSON ([`Event::to_json`]'s default): for every type that
/// implements `serde::Serialize`, its serde form, so an event's payload is its fields
/// without a line of code. A type that cannot derive `Serialize` implements this trait
/// itself and says what it carries (`serde_json::Value::Null` for nothing, explicitly).
pub trait EventPayload {
    /// The JSON this event carries.
    fn payload(&self) -> serde_json::Value;
}

impl<T: serde::Serialize> EventPayload for T {
    fn payload(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|e| {
            // A map with non-string keys, a failing custom Serialize: say so, once per
            // dispatch, rather than broadcast `null` silently.
            tracing::warn!(event = std::any::type_name::<T>(), error = %e, "an event's payload does not serialise as JSON; it carries null");
            serde_json::Value::Null
        })
    }
}

/// Something that happened in the application. Listeners run when it is dispatched.
///
/// Plain events write `#[derive(Serialize)] struct UserLoggedIn; impl Event for
/// UserLoggedIn {}` and are dispatched with [`dispatch`]; events that also implement
/// [`ShouldBroadcast`], [`Broadcastable`] or [`ShouldQueue`] get a `dispatch()` method
/// that runs the listeners and broadcasts. The payload is the event's `Serialize` form
/// ([`EventPayload`]) unless [`to_json`](Self::to_json) says otherwise.
///
/// ```no_run
/// # async fn f() -> Result<(), rustaxum::broadcasting::BroadcastError> {
/// use rustaxum::events::{dispatch, listen, Event};
///
/// #[derive(serde::Serialize)]
/// struct UserLoggedIn {
///     user_id: u64,
/// }
///
/// impl Event for UserLoggedIn {}
///
/// listen(|e: &UserLoggedIn| println!("user {} logged in", e.user_id));
/// dispatch(UserLoggedIn { user_id: 42 }).await?;
/// # Ok(()) }
/// ```
pub trait Event: EventPayload + Send + Sync + 'static {
    /// The event's name, as fakes record it and (unless `broadcast_as` says otherwise)
    /// as clients see it; default: the type's name without its module path.
    fn event_name(&self) -> &'static str {
        short_type_name(std::any::type_name::<Self>())
    }

    /// The event as JSON; the default payload of a broadcast. Default: its
    /// [`EventPayload`] (the `Serialize` form).
    fn to_json(&self) -> serde_json::Value {
        self.payload()
    }
}

/// An event that is broadcast when dispatched (Laravel's `ShouldBroadcast`). Only
/// [`broadcast_on`](Self::broadcast_on) is required.
///
/// ```
/// use rustaxum::events::{Event, ShouldBroadcast};
///
/// // The payload is the event's fields: {"order_id":1,"user_id":42}.
/// #[derive(serde::Serialize)]
/// struct OrderShipped { order_id: u64, user_id: u64 }
///
/// impl Event for OrderShipped {}
///
/// impl ShouldBroadcast for OrderShipped {
///     fn broadcast_on(&self) -> Vec<String> {
///         vec![format!("user.{}", self.user_id)]
///     }
/// }
/// # async fn f() -> rustaxum::broadcasting::Result<()> {
/// OrderShipped { order_id: 1, user_id: 42 }.dispatch().await?;
/// # Ok(()) }
/// ```
pub trait ShouldBroadcast: Event {
    /// The channels to broadcast on (native or Pusher spelling).
    fn broadcast_on(&self) -> Vec<String>;

    /// The event name clients see; default: [`Event::event_name`].
    fn broadcast_as(&self) -> Option<String> {
        None
    }

    /// The payload; default: [`Event::to_json`].
    fn broadcast_with(&self) -> serde_json::Value {
        self.to_json()
    }

    /// The broadcast connection to use; default: the manager's default.
    fn broadcast_connection(&self) -> Option<String> {
        None
    }

    /// Whether to broadcast this instance at all; default `true`.
    fn broadcast_when(&self) -> bool {
        true
    }

    /// `Some` to broadcast from the background queue with retries; default `None`
    /// (see also [`ShouldQueue`]).
    fn broadcast_queue(&self) -> Option<QueueOptions> {
        None
    }

    /// A socket that must not receive the event (Laravel's `toOthers()`).
    fn broadcast_except(&self) -> Option<SocketId> {
        None
    }

    /// Runs the listeners, then broadcasts on [`broadcast_on`](Self::broadcast_on).
    fn dispatch(&self) -> impl Future<Output = Result<(), BroadcastError>> + Send + '_
    where
        Self: Sized,
    {
        let plan = (self.broadcast_when()).then(|| Plan {
            channels: self.broadcast_on(),
            event: self.broadcast_as().unwrap_or_else(|| self.event_name().to_string()),
            data: self.broadcast_with(),
            connection: self.broadcast_connection(),
            except: self.broadcast_except(),
            queue: self.broadcast_queue(),
        });
        run(self, plan)
    }
}

/// An event broadcast on one channel when dispatched, with data of its own choosing
/// (the RustAxum document's `Broadcastable`). Its event name is [`Event::event_name`].
pub trait Broadcastable: Event {
    /// The channel.
    fn broadcast_channel(&self) -> String;

    /// The payload.
    fn broadcast_data(&self) -> serde_json::Value;

    /// Runs the listeners, then broadcasts on [`broadcast_channel`](Self::broadcast_channel).
    ///
    /// Takes `&mut self` only so that, on a type that is also [`ShouldBroadcast`] or
    /// [`ShouldQueue`], their `dispatch` is the one method calls pick; dispatch a
    /// temporary, or bind the event with `let mut`.
    fn dispatch(&mut self) -> impl Future<Output = Result<(), BroadcastError>> + Send + '_
    where
        Self: Sized,
    {
        let plan = Plan {
            channels: vec![self.broadcast_channel()],
            event: self.event_name().to_string(),
            data: self.broadcast_data(),
            connection: None,
            except: None,
            queue: None,
        };
        run(&*self, Some(plan))
    }
}

/// A broadcast that goes through the background queue (the RustAxum document's
/// `ShouldQueue`): on a named queue of a named queue connection, with a number of tries
/// and a time limit per try.
///
/// `event.dispatch()` picks the most specific of [`ShouldQueue`], [`ShouldBroadcast`] and
/// [`Broadcastable`] among the traits in scope: import `ShouldQueue` where queued events are
/// dispatched, or use `rustaxum::broadcast!(event)`, which always picks the right one.
pub trait ShouldQueue: ShouldBroadcast {
    /// The queue connection; default `default`.
    fn queue_connection(&self) -> Option<&str> {
        None
    }

    /// The queue within the connection; default `default`.
    fn queue(&self) -> Option<&str> {
        None
    }

    /// Attempts in all; default 3.
    fn tries(&self) -> Option<u32> {
        None
    }

    /// Time limit of one attempt; default 30 s.
    fn timeout(&self) -> Option<chrono::Duration> {
        None
    }

    /// Runs the listeners, then queues the broadcast.
    fn dispatch(self) -> impl Future<Output = Result<(), BroadcastError>> + Send
    where
        Self: Sized,
    {
        async move {
            let defaults = QueueOptions::default();
            let options = QueueOptions {
                tries: self.tries().unwrap_or(defaults.tries).max(1),
                timeout: self
                    .timeout()
                    .and_then(|t| t.to_std().ok())
                    .filter(|t| !t.is_zero())
                    .unwrap_or(defaults.timeout),
                connection: self.queue_connection().unwrap_or(&defaults.connection).to_string(),
                queue: self.queue().unwrap_or(&defaults.queue).to_string(),
                ..defaults
            };
            let plan = self.broadcast_when().then(|| Plan {
                channels: self.broadcast_on(),
                event: self.broadcast_as().unwrap_or_else(|| self.event_name().to_string()),
                data: self.broadcast_with(),
                connection: self.broadcast_connection(),
                except: self.broadcast_except(),
                queue: Some(options),
            });
            run(&self, plan).await
        }
    }
}

/// What a dispatched event asked to broadcast.
struct Plan {
    channels: Vec<String>,
    event: String,
    data: serde_json::Value,
    connection: Option<String>,
    except: Option<SocketId>,
    queue: Option<QueueOptions>,
}

/// Records (when faked) or runs the listeners, then sends or queues the plan.
async fn run<E: Event>(event: &E, plan: Option<Plan>) -> Result<(), BroadcastError> {
    if let Some(fake) = read(&EVENTS.fake).clone() {
        lock(&fake.dispatched).push(event.event_name().to_string());
        return Ok(());
    }
    let listeners = read(&EVENTS.listeners)
        .get(&TypeId::of::<E>())
        .cloned()
        .unwrap_or_default();
    for listener in listeners {
        listener(event);
    }
    let Some(plan) = plan else {
        return Ok(());
    };
    let channels = parse_channels(&plan.channels)?;
    let payload = Payload {
        data: Arc::from(serde_json::value::to_raw_value(&plan.data)?),
        text: None,
        socket: plan.except,
    };
    let manager = manager::global()?;
    match plan.queue {
        Some(options) => manager.enqueue(plan.connection.as_deref(), channels, plan.event, payload, options),
        None => manager
            .send(plan.connection.as_deref(), &channels, &plan.event, &payload)
            .await
            .map(|_| ()),
    }
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

/// Dispatches a plain event: runs its listeners (records it while faked). Events that
/// broadcast have a `dispatch()` method of their own.
pub async fn dispatch<E: Event>(event: E) -> Result<(), BroadcastError> {
    run(&event, None).await
}

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

/// `broadcast!(event)` dispatches an event ([`ShouldQueue`], [`ShouldBroadcast`] or
/// [`Broadcastable`], whichever is most specific, whatever is in scope);
/// `broadcast!(channel, event, data)` broadcasts on a channel. Both are futures.
///
/// [`ShouldQueue`]: crate::events::ShouldQueue
/// [`ShouldBroadcast`]: crate::events::ShouldBroadcast
/// [`Broadcastable`]: crate::events::Broadcastable
#[macro_export]
macro_rules! broadcast {
    ($event:expr $(,)?) => {{
        #[allow(unused_imports)]
        use $crate::events::{Broadcastable as _, ShouldBroadcast as _, ShouldQueue as _};
        ($event).dispatch()
    }};
    ($channel:expr, $event:expr, $data:expr $(,)?) => {
        $crate::broadcasting::broadcast_to_channel($channel, $event, $data)
    };
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
