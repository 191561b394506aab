//! The hub's view of one connection: an id, a bounded outbound queue and a close signal.
//!
//! The hub never touches a socket. It pushes [`Envelope`]s into the queue without
//! waiting; when the queue is full the connection is too slow, and the hub asks it to
//! close with [`CloseReason::SLOW_CONSUMER`] instead of waiting for it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use super::message::{Envelope, Protocol};
use super::socket::SocketId;
use crate::channel::Channel;
use crate::sync::lock;

/// Why the server closes a socket: a WebSocket close code and a short reason.
///
/// Codes follow Pusher's families so one reconnect policy fits every protocol:
/// 4000-4099 do not reconnect, 4100-4199 reconnect after a back-off, 4200-4299
/// reconnect at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    /// The WebSocket close code.
    pub code: u16,
    /// A short human-readable reason sent in the close frame.
    pub reason: &'static str,
}

impl CloseReason {
    /// The server is shutting down (1001 going away).
    pub const SHUTDOWN: Self = Self {
        code: 1001,
        reason: "server shutting down",
    };
    /// An inbound message exceeded the size limit (1009 message too big).
    pub const MESSAGE_TOO_BIG: Self = Self {
        code: 1009,
        reason: "message too big",
    };
    /// The client broke the WebSocket protocol (1002 protocol error).
    pub const PROTOCOL_ERROR: Self = Self {
        code: 1002,
        reason: "protocol error",
    };
    /// The node drained and is restarting or stopping: reconnect (to another node) at once
    /// (1012 service restart).
    pub const RESTART: Self = Self {
        code: 1012,
        reason: "service restart: reconnect",
    };
    /// A text frame was not valid UTF-8 (1007 invalid frame payload data).
    pub const INVALID_PAYLOAD: Self = Self {
        code: 1007,
        reason: "invalid UTF-8 in a text frame",
    };
    /// A frame or fragmented message stayed incomplete past the frame timeout (1008 policy
    /// violation): a client that announces and does not send holds nothing for long.
    pub const STALLED: Self = Self {
        code: 1008,
        reason: "frame not completed in time",
    };
    /// The server failed while serving this connection (1011 internal error).
    pub const INTERNAL_ERROR: Self = Self {
        code: 1011,
        reason: "internal error",
    };
    /// The outbound queue was full: the client reads too slowly (reconnect after back-off).
    pub const SLOW_CONSUMER: Self = Self {
        code: 4100,
        reason: "slow consumer: outbound queue full",
    };
    /// The client did not answer a ping in time (reconnect at once).
    pub const PONG_TIMEOUT: Self = Self {
        code: 4201,
        reason: "pong not received",
    };
    /// The connection was closed by an operator or the application.
    pub const TERMINATED: Self = Self {
        code: 4009,
        reason: "connection terminated",
    };
    /// The connection's token expired and was not refreshed (get a new token, then reconnect).
    pub const TOKEN_EXPIRED: Self = Self {
        code: 4009,
        reason: "token expired",
    };
}

/// Why a subscription was refused by the hub itself (rules are checked before).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The connection already holds the maximum number of channels.
    #[error("subscribed to too many channels (limit {0})")]
    TooManyChannels(usize),
    /// The connection is closing.
    #[error("connection is closing")]
    Closing,
}

/// The hub-side handle of a connection. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct ConnectionHandle {
    id: SocketId,
    protocol: Protocol,
    outbox: Outbox,
    /// Set when the connection is asked to close; checked per delivery and per wake-up
    /// of the socket's task, so a plain atomic (a cancellation token locks on each check).
    closing: AtomicBool,
    /// The socket task waiting in [`closed`](Self::closed).
    closing_waker: AtomicWaker,
    close_reason: OnceLock<CloseReason>,
    pub(super) channels: Mutex<Vec<Channel>>,
    user: Mutex<Option<Arc<str>>>,
}

impl ConnectionHandle {
    pub(super) fn new(protocol: Protocol, queue: usize) -> (Arc<Self>, OutboxReceiver) {
        let handle = Arc::new(Self {
            id: SocketId::next(),
            protocol,
            outbox: Outbox {
                queue: Mutex::new(VecDeque::new()),
                capacity: queue.max(1),
                waker: AtomicWaker::new(),
                receiver_gone: AtomicBool::new(false),
            },
            closing: AtomicBool::new(false),
            closing_waker: AtomicWaker::new(),
            close_reason: OnceLock::new(),
            channels: Mutex::new(Vec::new()),
            user: Mutex::new(None),
        });
        let rx = OutboxReceiver(handle.clone());
        (handle, rx)
    }

    /// This connection's socket id.
    pub fn id(&self) -> SocketId {
        self.id
    }

    /// The wire protocol this connection speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Asks the connection to close with `reason`. The first reason given wins.
    pub fn close(&self, reason: CloseReason) {
        let _ = self.close_reason.set(reason);
        self.ask_to_close();
    }

    /// Asks the connection to close without a reason of its own (the hub shuts down:
    /// [`close_reason`](Self::close_reason) is then [`CloseReason::SHUTDOWN`]).
    pub(super) fn ask_to_close(&self) {
        self.closing.store(true, Ordering::Release);
        self.closing_waker.wake();
    }

    /// Whether the connection has been asked to close.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Resolves once the connection has been asked to close (or the hub shuts down).
    /// One task at a time may wait (the socket's own).
    pub fn closed(&self) -> Closed<'_> {
        Closed(self)
    }

    /// The reason the connection is closing: the one given to [`close`](Self::close),
    /// or [`CloseReason::SHUTDOWN`] when the whole hub is shutting down.
    pub fn close_reason(&self) -> CloseReason {
        self.close_reason.get().copied().unwrap_or(CloseReason::SHUTDOWN)
    }

    /// Records which user this connection belongs to (after a token or `pusher:signin`).
    pub fn set_user(&self, user_id: &str) {
        if let Ok(mut u) = self.user.lock() {
            *u = Some(user_id.into());
        }
    }

    /// The user this connection belongs to, if known.
    pub fn user(&self) -> Option<Arc<str>> {
        self.user.lock().ok().and_then(|u| u.clone())
    }

    /// The joined channel named `name` (either spelling), with the kind it was joined as.
    pub fn subscription(&self, name: &str) -> Option<Channel> {
        let wanted = Channel::parse(name).ok()?;
        let channels = self.channels.lock().ok()?;
        channels
            .iter()
            .find(|c| **c == wanted)
            .or_else(|| channels.iter().find(|c| c.answers_to(&wanted)))
            .cloned()
    }

    /// The channels this connection is subscribed to.
    pub fn channels(&self) -> Vec<Channel> {
        self.channels.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Offers a message without waiting.
    pub(super) fn try_deliver(&self, envelope: &Arc<Envelope>) -> Delivery {
        let outbox = &self.outbox;
        if outbox.receiver_gone.load(Ordering::Acquire) {
            return Delivery::Gone;
        }
        {
            let mut queue = lock(&outbox.queue);
            if queue.len() >= outbox.capacity {
                return Delivery::Full;
            }
            queue.push_back(envelope.clone());
        }
        outbox.waker.wake();
        Delivery::Queued
    }
}

/// A connection's outbound queue, part of its handle: a deque that holds no memory while
/// it is empty (a channel's first block is 512 bytes of every idle connection), a bound,
/// and the waker of the socket's task.
#[derive(Debug)]
struct Outbox {
    queue: Mutex<VecDeque<Arc<Envelope>>>,
    capacity: usize,
    waker: AtomicWaker,
    receiver_gone: AtomicBool,
}

/// Deques that grew past this during a burst are freed once drained, so an idle
/// connection does not keep its largest burst's memory.
const KEEP_DRAINED: usize = 16;

/// Why [`OutboxReceiver::try_recv`] returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing is queued now.
    Empty,
}

/// The receiving end of a connection's outbound queue (the socket's task holds it).
/// Dropping it makes further deliveries to the connection fail as gone.
#[derive(Debug)]
pub struct OutboxReceiver(Arc<ConnectionHandle>);

impl OutboxReceiver {
    /// The next queued message, without waiting.
    pub fn try_recv(&mut self) -> Result<Arc<Envelope>, TryRecvError> {
        let mut queue = lock(&self.0.outbox.queue);
        let next = queue.pop_front().ok_or(TryRecvError::Empty);
        if queue.is_empty() && queue.capacity() > KEEP_DRAINED {
            *queue = VecDeque::new();
        }
        next
    }

    /// Waits for the next message. The connection's handle is the only sender and lives
    /// as long as this receiver, so this never returns `None`; the `Option` keeps the
    /// shape of a channel's `recv`.
    pub async fn recv(&mut self) -> Option<Arc<Envelope>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arc<Envelope>>> {
        if let Ok(next) = self.try_recv() {
            return Poll::Ready(Some(next));
        }
        self.0.outbox.waker.register(cx.waker());
        // Queued between the check and the registration: the wake went to an older waker.
        match self.try_recv() {
            Ok(next) => Poll::Ready(Some(next)),
            Err(TryRecvError::Empty) => Poll::Pending,
        }
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        self.0.outbox.receiver_gone.store(true, Ordering::Release);
        // Queued messages go with the socket.
        drop(std::mem::take(&mut *lock(&self.0.outbox.queue)));
    }
}

/// The future of [`ConnectionHandle::closed`]: lock-free to poll, so the socket task
/// can check it at every wake-up.
#[derive(Debug)]
pub struct Closed<'a>(&'a ConnectionHandle);

impl std::future::Future for Closed<'_> {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0.is_closing() {
            return std::task::Poll::Ready(());
        }
        self.0.closing_waker.register(cx.waker());
        // Asked between the check and the registration: the wake went to an older waker.
        if self.0.is_closing() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

pub(super) enum Delivery {
    Queued,
    Full,
    Gone,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Message;

    fn envelope(n: u64) -> Arc<Envelope> {
        let channel = Channel::parse("general").unwrap();
        let data = Arc::from(serde_json::value::to_raw_value(&n).unwrap());
        Arc::new(Envelope::detached(Message::event(channel, "e", data)))
    }

    #[tokio::test]
    async fn the_outbox_is_bounded_ordered_wakes_its_reader_and_lets_go() {
        let (handle, mut rx) = ConnectionHandle::new(Protocol::Native, 3);
        let reader = tokio::spawn(async move {
            let first = rx.recv().await.unwrap();
            (first, rx)
        });
        tokio::task::yield_now().await;
        assert!(matches!(handle.try_deliver(&envelope(1)), Delivery::Queued));
        let (first, mut rx) = reader.await.unwrap();
        assert_eq!(first.data.get(), "1", "the waiting reader was woken");
        for n in 2..=4 {
            assert!(matches!(handle.try_deliver(&envelope(n)), Delivery::Queued));
        }
        assert!(matches!(handle.try_deliver(&envelope(5)), Delivery::Full), "bound of 3");
        let order: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| e.data.get().to_string())
            .collect();
        assert_eq!(order, ["2", "3", "4"]);
        assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);

        // A burst's memory is not kept once drained.
        let (handle, mut rx) = ConnectionHandle::new(Protocol::Native, 1024);
        let kept = envelope(0);
        for _ in 0..500 {
            assert!(matches!(handle.try_deliver(&kept), Delivery::Queued));
        }
        assert_eq!(Arc::strong_count(&kept), 501);
        while rx.try_recv().is_ok() {}
        assert_eq!(lock(&handle.outbox.queue).capacity(), 0);

        // A dropped reader: later deliveries fail as gone, and queued ones are released.
        assert!(matches!(handle.try_deliver(&kept), Delivery::Queued));
        drop(rx);
        assert_eq!(Arc::strong_count(&kept), 1);
        assert!(matches!(handle.try_deliver(&kept), Delivery::Gone));
    }
}
