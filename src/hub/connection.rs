//! The hub's view of one connection: an id, a bounded outbound queue and a close signal.
//!
//! The hub never touches a socket. It pushes [`Envelope`]s into the queue with
//! `try_send`; when the queue is full the connection is too slow, and the hub asks it
//! to close with [`CloseReason::SLOW_CONSUMER`] instead of waiting for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use futures_util::task::AtomicWaker;
use tokio::sync::mpsc;

use super::message::{Envelope, Protocol};
use super::socket::SocketId;
use crate::channel::Channel;

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
    /// A text frame was not valid UTF-8 (1007 invalid frame payload data).
    pub const INVALID_PAYLOAD: Self = Self {
        code: 1007,
        reason: "invalid UTF-8 in a text frame",
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
    tx: mpsc::Sender<Arc<Envelope>>,
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
    pub(super) fn new(protocol: Protocol, queue: usize) -> (Arc<Self>, mpsc::Receiver<Arc<Envelope>>) {
        let (tx, rx) = mpsc::channel(queue);
        let handle = Arc::new(Self {
            id: SocketId::next(),
            protocol,
            tx,
            closing: AtomicBool::new(false),
            closing_waker: AtomicWaker::new(),
            close_reason: OnceLock::new(),
            channels: Mutex::new(Vec::new()),
            user: Mutex::new(None),
        });
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
        self.channels.lock().ok()?.iter().find(|c| **c == wanted).cloned()
    }

    /// The channels this connection is subscribed to.
    pub fn channels(&self) -> Vec<Channel> {
        self.channels.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Offers a message without waiting; `false` when the queue is full.
    pub(super) fn try_deliver(&self, envelope: &Arc<Envelope>) -> Delivery {
        match self.tx.try_send(envelope.clone()) {
            Ok(()) => Delivery::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Delivery::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Gone,
        }
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
