//! The per-connection loop shared by every WebSocket protocol, generic over the socket.
//!
//! One task per socket `select!`s over five things: the close signal, the token's expiry,
//! the outbound queue, inbound frames and the keep-alive deadline. A protocol supplies a
//! [`Handler`]: how to encode hub messages (once per message, shared by every socket of
//! the protocol) and what to answer to client frames (by calling the [`Session`]). The
//! socket is any `Sink<Frame<T>> + Stream<Item = Result<Frame<T>, ReadError>>`: axum's
//! WebSocket behind a small adapter in the server, an in-memory pair in tests.
//!
//! Every write races the close signal, so a socket whose peer stopped reading cannot hold
//! its task forever: the hub closes it when its queue fills, and the write is abandoned.
//! The session's clean-up runs even if the handler panics.

use std::future::Future;
use std::ops::Deref;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio::time::Instant;

use super::Session;
use crate::hub::{CloseReason, Envelope, Protocol};

/// How long a close frame may take to send before the socket is just dropped. It waits
/// behind whatever the socket still has buffered, so a client that reads slowly (the
/// usual reason for a slow-consumer close) still gets to learn its close code.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Queued messages written per flush.
const WRITE_BATCH: usize = 64;

/// A WebSocket frame, whatever the socket library. `T` is the socket's text type (a
/// cheaply cloned, shared buffer), so an encoded message is shared by every socket.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Frame<T> {
    /// A text frame.
    Text(T),
    /// A binary frame.
    Binary(Bytes),
    /// A ping (the socket library answers pings itself).
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame with its code and reason.
    Close(Option<CloseReason>),
}

/// Why reading from a socket failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// A frame or message was over the size limit (closed with 1009).
    TooBig,
    /// The client broke the WebSocket protocol (closed with 1002).
    Protocol,
    /// A text frame was not UTF-8 (closed with 1007).
    InvalidUtf8,
    /// A frame or fragmented message was not completed within the frame timeout (closed
    /// with 1008).
    Stalled,
    /// The connection is gone.
    Gone,
}

impl ReadError {
    /// The close code the failure deserves, if the connection can still take one.
    pub(crate) fn close_reason(self) -> Option<CloseReason> {
        match self {
            Self::TooBig => Some(CloseReason::MESSAGE_TOO_BIG),
            Self::Protocol => Some(CloseReason::PROTOCOL_ERROR),
            Self::InvalidUtf8 => Some(CloseReason::INVALID_PAYLOAD),
            Self::Stalled => Some(CloseReason::STALLED),
            Self::Gone => None,
        }
    }
}

/// What a handler answers to a client frame: frames to send, then maybe a close.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Reply {
    /// Text frames, in order.
    pub frames: Vec<String>,
    /// Close the connection with this reason after sending the frames.
    pub close: Option<CloseReason>,
}

impl Reply {
    /// Nothing to send.
    pub(crate) fn none() -> Self {
        Self::default()
    }

    /// One text frame.
    pub(crate) fn text(frame: impl Into<String>) -> Self {
        Self {
            frames: vec![frame.into()],
            close: None,
        }
    }

    /// Sends the frames, then closes with `reason`.
    pub(crate) fn and_close(mut self, reason: CloseReason) -> Self {
        self.close = Some(reason);
        self
    }
}

/// What one wire protocol adds to the shared loop: a codec for hub messages and the
/// answers to client frames. It parses, calls the [`Session`], encodes; nothing else.
#[async_trait]
pub(crate) trait Handler: Send {
    /// The protocol's frame-cache slot.
    const PROTOCOL: Protocol;

    /// Encodes a hub message for this protocol; `None` skips it for this protocol.
    /// Called at most once per message per protocol (the result is shared).
    fn encode(envelope: &Envelope) -> Option<String>;

    /// Runs once after the upgrade, before anything else.
    async fn on_open(&mut self, s: &mut Session) -> Reply;

    /// A text frame from the client.
    async fn on_text(&mut self, s: &mut Session, text: &str) -> Reply;

    /// A binary frame from the client.
    async fn on_binary(&mut self, s: &mut Session, data: &[u8]) -> Reply;

    /// Runs once when the connection ends (after the last frame, before the session's
    /// own clean-up), for state the protocol keeps beyond the session.
    async fn on_close(&mut self, _s: &mut Session) {}

    /// The close code this protocol uses for `reason` (Pusher says 4200 where the
    /// native protocol says 1001).
    fn close_reason(&self, reason: CloseReason) -> CloseReason {
        reason
    }

    /// A last frame before the close frame of `reason` (Pusher sends `pusher:error` with
    /// the close code, which pusher-js reports to the app). None by default.
    fn farewell(&self, _reason: CloseReason) -> Option<String> {
        None
    }
}

/// Messages recovered from history, encoded for protocol `H` (oldest first).
pub(crate) fn replay<H: Handler>(messages: Vec<crate::hub::Message>) -> Vec<String> {
    messages
        .into_iter()
        .filter_map(|m| H::encode(&Envelope::detached(m)))
        .collect()
}

/// A socket the loop can drive.
pub(crate) trait Socket<T>: Sink<Frame<T>> + Stream<Item = Result<Frame<T>, ReadError>> + Unpin + Send {}

impl<T, S> Socket<T> for S where S: Sink<Frame<T>> + Stream<Item = Result<Frame<T>, ReadError>> + Unpin + Send {}

/// A socket's text type: built from the encoded `String` once per message, then cloned
/// cheaply for every socket.
pub(crate) trait Text: From<String> + Deref<Target = str> + Clone + Send + Sync + 'static {}

impl<T> Text for T where T: From<String> + Deref<Target = str> + Clone + Send + Sync + 'static {}

/// Runs a session to its end, then cleans it up (also after a panic); gives the socket
/// back, for the transport to close its connection as it should.
pub(crate) async fn run<H, T, S>(
    mut session: Session,
    rx: crate::hub::OutboxReceiver,
    mut socket: S,
    mut handler: H,
) -> S
where
    H: Handler,
    T: Text,
    S: Socket<T>,
{
    tracing::debug!(socket_id = %session.id(), protocol = ?H::PROTOCOL, "socket opened");
    let served = AssertUnwindSafe(serve(&mut session, &mut socket, rx, &mut handler))
        .catch_unwind()
        .await;
    if served.is_err() {
        tracing::error!(socket_id = %session.id(), "a session panicked; cleaning up its connection");
        session.conn().close(CloseReason::INTERNAL_ERROR);
        close(&mut socket, CloseReason::INTERNAL_ERROR).await;
    }
    if AssertUnwindSafe(handler.on_close(&mut session))
        .catch_unwind()
        .await
        .is_err()
    {
        tracing::error!(socket_id = %session.id(), "a protocol's clean-up panicked");
    }
    let id = session.id();
    // Boxed, as the replies below: they run once per socket or per client frame, and
    // their states would otherwise be part of every idle socket's task (192 bytes).
    Box::pin(session.close()).await;
    tracing::debug!(socket_id = %id, "socket closed");
    socket
}

/// Sends a close frame (bounded by [`CLOSE_GRACE`]).
async fn close<T, S: Socket<T>>(socket: &mut S, reason: CloseReason) {
    let _ = tokio::time::timeout(CLOSE_GRACE, socket.send(Frame::Close(Some(reason)))).await;
}

/// How protocol `H` closes for `reason`: its code, and its farewell frame.
fn closing<H: Handler>(handler: &H, reason: CloseReason) -> (CloseReason, Option<String>) {
    let reason = handler.close_reason(reason);
    (reason, handler.farewell(reason))
}

/// Sends the farewell frame, then the close frame (each bounded by [`CLOSE_GRACE`]).
/// Callers box it: it runs once per socket, and unboxed its state (a frame being sent)
/// would be part of every idle socket's task.
async fn close_as<T: Text, S: Socket<T>>(socket: &mut S, (reason, farewell): (CloseReason, Option<String>)) {
    if let Some(text) = farewell {
        let _ = tokio::time::timeout(CLOSE_GRACE, socket.send(Frame::Text(T::from(text)))).await;
    }
    close(socket, reason).await;
}

/// Sends a handler's reply; `false` when the session must end. `closed` is the
/// session's one "asked to close" future (made once: making it takes the token's locks).
async fn answer<T: Text, S: Socket<T>, C: Future<Output = ()>>(
    s: &Session,
    socket: &mut S,
    reply: Reply,
    closed: Pin<&mut C>,
) -> bool {
    let conn = s.conn();
    let write = async {
        for frame in reply.frames {
            if socket.feed(Frame::Text(T::from(frame))).await.is_err() {
                return false;
            }
        }
        socket.flush().await.is_ok()
    };
    let sent = tokio::select! {
        sent = write => sent,
        _ = closed => false,
    };
    match reply.close {
        Some(reason) => {
            conn.close(reason);
            close(socket, reason).await;
            false
        }
        None => sent,
    }
}

/// Writes `first` and whatever else is queued (up to a batch), then flushes.
async fn write_batch<H: Handler, T: Text, S: Socket<T>, C: Future<Output = ()>>(
    s: &Session,
    socket: &mut S,
    first: Arc<Envelope>,
    rx: &mut crate::hub::OutboxReceiver,
    closed: Pin<&mut C>,
) -> bool {
    let queued_at = first.queued_at;
    let write = async {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(envelope) = next.take() {
            let frame: Option<T> = if s.already_sent(&envelope) {
                None
            } else {
                envelope.frame(H::PROTOCOL, |e| H::encode(e).map(T::from))
            };
            if let Some(frame) = frame {
                if socket.feed(Frame::Text(frame)).await.is_err() {
                    return false;
                }
            }
            written += 1;
            if written < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        socket.flush().await.is_ok()
    };
    let ok = tokio::select! {
        ok = write => ok,
        _ = closed => false,
    };
    if ok {
        // One observation per batch: the oldest message of it, once on the wire.
        s.node().hub().record_write_latency(queued_at.elapsed());
    }
    ok
}

async fn serve<H, T, S>(s: &mut Session, socket: &mut S, mut rx: crate::hub::OutboxReceiver, handler: &mut H)
where
    H: Handler,
    T: Text,
    S: Socket<T>,
{
    let conn = s.conn().clone();
    // One future for the whole session: polled again after each wake-up, it stays
    // registered, where a fresh one per loop would lock the token twice each time.
    let closed = conn.closed();
    tokio::pin!(closed);
    let (interval, timeout) = s.node().limits().keepalive();
    let opening = handler.on_open(s).await;
    if !Box::pin(answer(s, socket, opening, closed.as_mut())).await {
        return;
    }
    let deadline = tokio::time::sleep(interval);
    tokio::pin!(deadline);
    let mut awaiting_pong = false;
    let mut expiry = s.expires_at();
    // Boxed and only for sessions whose token expires: a timer is 112 bytes of every
    // socket's task otherwise.
    let mut expiry_timer = expiry.map(|at| Box::pin(tokio::time::sleep_until(at)));
    loop {
        tokio::select! {
            biased;
            _ = closed.as_mut() => {
                Box::pin(close_as(socket, closing(handler, conn.close_reason()))).await;
                return;
            }
            _ = async { if let Some(t) = expiry_timer.as_mut() { t.as_mut().await } }, if expiry_timer.is_some() => {
                conn.close(CloseReason::TOKEN_EXPIRED);
                Box::pin(close_as(socket, closing(handler, CloseReason::TOKEN_EXPIRED))).await;
                return;
            }
            Some(envelope) = rx.recv() => {
                if !write_batch::<H, T, S, _>(s, socket, envelope, &mut rx, closed.as_mut()).await {
                    if conn.is_closing() {
                        Box::pin(close_as(socket, closing(handler, conn.close_reason()))).await;
                    }
                    return;
                }
            }
            frame = socket.next() => {
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        if let Some(reason) = e.close_reason() {
                            conn.close(reason);
                            close(socket, reason).await;
                        }
                        return;
                    }
                    None => return,
                };
                awaiting_pong = false;
                deadline.as_mut().reset(Instant::now() + interval);
                let reply = match frame {
                    Frame::Text(text) => {
                        s.node().hub().record_received();
                        handler.on_text(s, &text).await
                    }
                    Frame::Binary(data) => {
                        s.node().hub().record_received();
                        handler.on_binary(s, &data).await
                    }
                    Frame::Ping(_) | Frame::Pong(_) => Reply::none(),
                    Frame::Close(_) => {
                        // The client closed: the socket library queued the answering
                        // Close (its code, 1000 for an empty one, 1002 for an invalid
                        // one); send it before the connection ends (RFC 6455 §5.5.1), so
                        // the client's close is clean.
                        let _ = tokio::time::timeout(CLOSE_GRACE, socket.flush()).await;
                        return;
                    }
                };
                if !Box::pin(answer(s, socket, reply, closed.as_mut())).await {
                    return;
                }
                let now = s.expires_at();
                if now != expiry {
                    expiry = now;
                    match (expiry, expiry_timer.as_mut()) {
                        (Some(at), Some(timer)) => timer.as_mut().reset(at),
                        (Some(at), None) => expiry_timer = Some(Box::pin(tokio::time::sleep_until(at))),
                        (None, _) => expiry_timer = None,
                    }
                }
            }
            _ = &mut deadline => {
                if awaiting_pong {
                    conn.close(CloseReason::PONG_TIMEOUT);
                    close(socket, CloseReason::PONG_TIMEOUT).await;
                    return;
                }
                awaiting_pong = true;
                deadline.as_mut().reset(Instant::now() + timeout);
                if socket.send(Frame::Ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
        }
    }
}
