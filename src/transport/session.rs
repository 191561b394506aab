//! The per-connection loop shared by every WebSocket protocol.
//!
//! One task per socket `select!`s over four things: the close signal, the outbound
//! queue, inbound frames and the keep-alive deadline. A protocol only supplies a
//! [`Handler`] (how to encode hub messages and what to do with client frames). Keeping
//! it to one task, with a small read buffer, is what keeps an idle connection cheap.
//!
//! Every write races the close signal, so a socket whose peer stopped reading cannot
//! hold its task forever: the hub closes it when its queue fills, and the write is
//! abandoned.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{FutureExt, SinkExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::AppState;
use crate::hub::{CloseReason, ConnectionHandle, ConnectionSlot, Envelope, Protocol};

/// How long a close frame may take to send before the socket is just dropped. It waits
/// behind whatever the socket still has buffered, so a client that reads slowly (the
/// usual reason for a slow-consumer close) still gets to learn its close code.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Queued messages written per flush.
const WRITE_BATCH: usize = 64;
/// tungstenite's read buffer per socket (its default, 128 KiB, dominates idle memory).
pub(crate) const READ_BUFFER: usize = 2 * 1024;
/// Bytes buffered before tungstenite writes to the socket (flushes write sooner).
pub(crate) const WRITE_BUFFER: usize = 8 * 1024;

/// The session ended; the loop stops.
#[derive(Debug)]
pub(crate) struct Stop;

/// What one wire protocol adds to the shared loop.
#[async_trait]
pub(crate) trait Handler: Send {
    /// The protocol's frame-cache slot.
    const PROTOCOL: Protocol;

    /// Encodes a hub message for this protocol; `None` skips it for this protocol.
    /// Called at most once per message per protocol (the result is shared).
    fn encode(envelope: &Envelope) -> Option<Utf8Bytes>;

    /// Whether this connection should receive `envelope` (e.g. not its own whisper).
    fn wants(&self, _envelope: &Envelope) -> bool {
        true
    }

    /// Runs once after the upgrade, before anything else.
    async fn on_open(&mut self, s: &mut Session) -> Result<(), Stop>;

    /// A text frame from the client.
    async fn on_text(&mut self, s: &mut Session, text: &str) -> Result<(), Stop>;

    /// A binary frame from the client.
    async fn on_binary(&mut self, s: &mut Session, data: &[u8]) -> Result<(), Stop>;

    /// The close code this protocol uses for `reason` (Pusher says 4200 where the
    /// native protocol says 1001).
    fn close_reason(&self, reason: CloseReason) -> CloseReason {
        reason
    }

    /// When the connection's credentials expire (it is then closed with
    /// [`CloseReason::TOKEN_EXPIRED`]); checked after every client frame.
    fn expires_at(&self) -> Option<Instant> {
        None
    }

    /// Runs once when the session ends, before the hub forgets the connection.
    async fn on_close(&mut self, _s: &mut Session) {}
}

/// A live socket and its hub handle.
pub(crate) struct Session {
    socket: WebSocket,
    pub(crate) conn: Arc<ConnectionHandle>,
    pub(crate) st: AppState,
}

impl Session {
    /// Sends a text frame, giving up if the connection is asked to close meanwhile.
    pub(crate) async fn send_text(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), Stop> {
        let conn = self.conn.clone();
        tokio::select! {
            r = self.socket.send(Message::Text(text.into())) => r.map_err(|_| Stop),
            _ = conn.closed() => Err(Stop),
        }
    }

    /// Sends a close frame (bounded by a short grace period).
    pub(crate) async fn close(&mut self, reason: CloseReason) {
        let frame = CloseFrame {
            code: reason.code,
            reason: Utf8Bytes::from_static(reason.reason),
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, self.socket.send(Message::Close(Some(frame)))).await;
    }

    async fn write_batch<H: Handler>(
        &mut self,
        handler: &H,
        first: Arc<Envelope>,
        rx: &mut mpsc::Receiver<Arc<Envelope>>,
    ) -> Result<(), Stop> {
        let conn = self.conn.clone();
        let mut next = Some(first);
        let mut written = 0;
        let write = async {
            while let Some(envelope) = next.take() {
                if handler.wants(&envelope) {
                    if let Some(frame) = envelope.frame(H::PROTOCOL, H::encode) {
                        self.socket.feed(Message::Text(frame)).await.map_err(|_| Stop)?;
                    }
                }
                written += 1;
                if written < WRITE_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            self.socket.flush().await.map_err(|_| Stop)
        };
        tokio::select! {
            r = write => r,
            _ = conn.closed() => Err(Stop),
        }
    }
}

/// Removes the connection from the hub when dropped, so a session that panics or is
/// cancelled never leaves a ghost connection behind. Releases its connection slot too.
struct Registration {
    st: AppState,
    conn: Arc<ConnectionHandle>,
    _slot: Option<ConnectionSlot>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.st.hub.disconnect(&self.conn);
    }
}

/// Runs a session to its end, then removes the connection from the hub. The clean-up
/// (the protocol's `on_close`: presence leaves, quotas) runs even if the session panics.
pub(crate) async fn run<H: Handler>(
    socket: WebSocket,
    st: AppState,
    slot: Option<ConnectionSlot>,
    protocol: Protocol,
    handler: H,
) {
    let (conn, rx) = st.hub.connect(protocol);
    let registration = Registration {
        st: st.clone(),
        conn: conn.clone(),
        _slot: slot,
    };
    let mut s = Session { socket, conn, st };
    let mut handler = handler;
    let served = AssertUnwindSafe(serve(&mut s, &mut handler, rx)).catch_unwind().await;
    if served.is_err() {
        tracing::error!(socket_id = %s.conn.id(), "a session panicked; cleaning up its connection");
        s.conn.close(CloseReason::INTERNAL_ERROR);
        s.close(CloseReason::INTERNAL_ERROR).await;
    }
    if AssertUnwindSafe(handler.on_close(&mut s)).catch_unwind().await.is_err() {
        tracing::error!(socket_id = %s.conn.id(), "a session's clean-up panicked");
    }
    drop(registration);
}

async fn serve<H: Handler>(s: &mut Session, handler: &mut H, mut rx: mpsc::Receiver<Arc<Envelope>>) {
    let conn = s.conn.clone();
    let interval = s.st.config.websocket.ping_interval;
    let timeout = s.st.config.websocket.ping_timeout;
    if handler.on_open(s).await.is_err() {
        return;
    }
    let deadline = tokio::time::sleep(interval);
    tokio::pin!(deadline);
    let mut awaiting_pong = false;
    let mut expiry = handler.expires_at();
    let expiry_timer = tokio::time::sleep_until(expiry.unwrap_or_else(far_future));
    tokio::pin!(expiry_timer);
    loop {
        tokio::select! {
            biased;
            _ = conn.closed() => {
                s.close(handler.close_reason(conn.close_reason())).await;
                break;
            }
            _ = &mut expiry_timer, if expiry.is_some() => {
                conn.close(CloseReason::TOKEN_EXPIRED);
                s.close(CloseReason::TOKEN_EXPIRED).await;
                break;
            }
            Some(envelope) = rx.recv() => {
                if s.write_batch(handler, envelope, &mut rx).await.is_err() {
                    if conn.is_closing() {
                        s.close(handler.close_reason(conn.close_reason())).await;
                    }
                    break;
                }
            }
            frame = s.socket.recv() => {
                let Some(frame) = frame else { break };
                let frame = match frame {
                    Ok(f) => f,
                    Err(e) => {
                        if let Some(reason) = read_error_reason(e) {
                            conn.close(reason);
                            s.close(reason).await;
                        }
                        break;
                    }
                };
                awaiting_pong = false;
                deadline.as_mut().reset(Instant::now() + interval);
                let flow = match frame {
                    Message::Text(text) => {
                        s.st.hub.record_received();
                        handler.on_text(s, text.as_str()).await
                    }
                    Message::Binary(data) => {
                        s.st.hub.record_received();
                        handler.on_binary(s, &data).await
                    }
                    Message::Ping(_) | Message::Pong(_) => Ok(()),
                    Message::Close(_) => Err(Stop),
                };
                if flow.is_err() {
                    break;
                }
                let now = handler.expires_at();
                if now != expiry {
                    expiry = now;
                    expiry_timer.as_mut().reset(expiry.unwrap_or_else(far_future));
                }
            }
            _ = &mut deadline => {
                if awaiting_pong {
                    conn.close(CloseReason::PONG_TIMEOUT);
                    s.close(CloseReason::PONG_TIMEOUT).await;
                    break;
                }
                awaiting_pong = true;
                deadline.as_mut().reset(Instant::now() + timeout);
                if s.socket.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

/// The close code a failed read deserves: 1009 for a frame or message over the size
/// limit, 1002 for a protocol violation, 1007 for a text frame that is not UTF-8. `None`
/// when the connection just went away.
fn read_error_reason(e: axum::Error) -> Option<CloseReason> {
    use tokio_tungstenite::tungstenite::Error;
    match *e.into_inner().downcast::<Error>().ok()? {
        Error::Capacity(_) => Some(CloseReason::MESSAGE_TOO_BIG),
        Error::Protocol(_) => Some(CloseReason::PROTOCOL_ERROR),
        Error::Utf8(_) => Some(CloseReason::INVALID_PAYLOAD),
        _ => None,
    }
}
