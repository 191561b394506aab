//! A WebSocket as a socket of the session loop: the handshake (with permessage-deflate
//! negotiated in it), frames mapped both ways, outgoing text compressed once per message
//! for the sockets that agreed to it, read errors classified, buffers sized for cheap
//! idle connections.

mod upgrade;

use std::ops::Deref;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

pub(crate) use upgrade::{NotAnUpgrade, WsUpgrade};

use super::AppState;
use crate::session::runner::{self, Frame, Handler, ReadError};
use crate::session::Admission;
use crate::websocket::deflate::{self, MAX_WINDOW_BITS, MIN_WINDOW_BITS};
use crate::websocket::{DeflateReadError, DeflateStats, Holding, Inflating, Stalled};

/// tungstenite's read buffer per socket, allocated for the socket's whole life (its
/// default, 128 KiB, would dominate idle memory). Subscribers send small frames; a larger
/// one is read in several steps. 512 bytes instead of 2 KiB took 10,000 idle sockets
/// from 7.2 to 5.6 KiB each, with the same CPU per delivery.
const READ_BUFFER: usize = 512;
/// Bytes buffered before tungstenite writes to the socket (flushes write sooner).
const WRITE_BUFFER: usize = 8 * 1024;

/// What a WebSocket route takes: the upgrade, or why the request is not one (checked with
/// [`required`] after the route's own checks, so a wrong token is a 401 either way).
pub(crate) type Upgrade = Result<WsUpgrade, NotAnUpgrade>;

/// The upgrade, or the 426 `upgrade_required` answer every WebSocket route gives a plain
/// HTTP request.
#[allow(clippy::result_large_err)]
pub(crate) fn required(ws: Upgrade) -> Result<WsUpgrade, axum::response::Response> {
    use axum::response::IntoResponse;
    ws.map_err(IntoResponse::into_response)
}

/// The upgrade with the server's buffer sizes, message limit and compression setting.
pub(crate) fn configure(ws: WsUpgrade, st: &AppState) -> WsUpgrade {
    let config = st.config.load();
    ws.limits(
        READ_BUFFER,
        WRITE_BUFFER,
        config.websocket.max_message_size,
        config.websocket.frame_timeout,
    )
    .compression(config.websocket.compression, &st.compression)
}

/// One upgraded connection: the WebSocket, and what it agreed to compress.
pub(crate) struct WebSocket {
    stream: WebSocketStream<Inflating<Holding<TokioIo<hyper::upgrade::Upgraded>>>>,
    deflate: Option<Deflate>,
}

/// permessage-deflate as one socket agreed to it.
#[derive(Debug, Clone)]
pub(crate) struct Deflate {
    /// The client's `server_max_window_bits` (15 when it named none).
    window_bits: u8,
    /// Texts of at least this many bytes are sent compressed.
    threshold: usize,
    /// The server's compression counters.
    stats: Arc<DeflateStats>,
}

/// An outgoing text as every socket of a protocol shares it: the text, and its
/// compressed payload per window size, made the first time a socket that agreed to
/// compression sends it. Incoming texts have no compressed slots.
#[derive(Clone)]
pub(crate) struct WireText {
    text: Utf8Bytes,
    deflated: Option<Arc<Deflated>>,
}

/// A text's compressed payloads by window size (9 to 15 bits); `None` inside when
/// compressing did not make it smaller.
#[derive(Default)]
struct Deflated([OnceLock<Option<Bytes>>; (MAX_WINDOW_BITS - MIN_WINDOW_BITS + 1) as usize]);

impl From<String> for WireText {
    fn from(text: String) -> Self {
        Self {
            text: text.into(),
            deflated: Some(Arc::default()),
        }
    }
}

impl Deref for WireText {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl WireText {
    /// What to send to a socket that agreed to `deflate`: the compressed frame when the
    /// text is long enough and compresses, else the text.
    fn into_message(self, deflate: Option<&Deflate>) -> Message {
        let (Some(deflate), Some(deflated)) = (deflate, &self.deflated) else {
            return Message::Text(self.text);
        };
        if self.text.len() < deflate.threshold {
            return Message::Text(self.text);
        }
        let bits = deflate::window_for(self.text.len(), deflate.window_bits);
        let slot = &deflated.0[usize::from(bits - MIN_WINDOW_BITS)];
        let compress = || {
            let compressed = deflate::compress(self.text.as_bytes(), bits);
            if let Some(payload) = &compressed {
                deflate.stats.record(self.text.len(), payload.len());
            }
            compressed
        };
        match slot.get_or_init(compress) {
            Some(payload) => Message::Frame(crate::websocket::compressed_text(payload.clone())),
            None => Message::Text(self.text),
        }
    }
}

/// Starts `handler`'s session on `socket` in a task of its own that shutdown waits for;
/// give the returned (finished) future to `on_upgrade`.
///
/// Its own task, not the upgrade's: the upgrade task also holds the upgrade callback,
/// its captures and the handshake's state beside the session (2.4 KB per socket for the
/// socket's whole life, measured with axum's upgrade); a task of its own holds only the
/// session loop, and the upgrade task ends here.
pub(crate) fn serve<H: Handler + 'static>(
    st: &AppState,
    socket: WebSocket,
    admission: Admission,
    handler: H,
) -> std::future::Ready<()> {
    use futures_util::FutureExt;
    let (session, rx) = admission.open(H::PROTOCOL);
    // `then`, not an async block: a block would keep its captures (the socket, the
    // session, the handler) beside the session future for the socket's whole life,
    // about a KiB per idle socket; the lingering is boxed for the same reason (its read
    // buffer would otherwise be part of every socket's task).
    let served = runner::run::<H, WireText, _>(session, rx, socket, handler).then(|socket| Box::pin(socket.linger()));
    tokio::spawn(st.sessions.track_future(served));
    std::future::ready(())
}

/// How long a closed connection keeps reading what the client still sends.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

impl WebSocket {
    /// Ends the connection after the Close frames (RFC 6455 §7.1.1): the server's side is
    /// shut (FIN), and what the client still sends (the rest of a frame the server refused,
    /// its own Close) is read and dropped for up to [`LINGER`] or until the client closes,
    /// so the kernel does not answer unread data with a reset, which can make the client
    /// lose the Close frame before it read it.
    pub(crate) async fn linger(mut self) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let io = self.stream.get_mut().get_mut().get_mut();
        let _ = tokio::time::timeout(LINGER, io.shutdown()).await;
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut sink = [0u8; 2048];
        let mut drained = 0usize;
        while drained < 1 << 20 {
            match tokio::time::timeout_at(deadline, io.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
    }
}

/// Sends `frames`, then a close frame, on a socket refused after its upgrade.
pub(crate) async fn refuse(mut socket: WebSocket, frames: Vec<String>, close: crate::hub::CloseReason) {
    for frame in frames {
        if socket.send(Frame::Text(WireText::from(frame))).await.is_err() {
            return;
        }
    }
    let _ = tokio::time::timeout(runner::CLOSE_GRACE, socket.send(Frame::Close(Some(close)))).await;
    socket.linger().await;
}

impl Sink<Frame<WireText>> for WebSocket {
    type Error = tokio_tungstenite::tungstenite::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.stream).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Frame<WireText>) -> Result<(), Self::Error> {
        let message = to_message(frame, self.deflate.as_ref());
        Pin::new(&mut self.stream).start_send(message)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}

impl Stream for WebSocket {
    type Item = Result<Frame<WireText>, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.stream).poll_next(cx).map(|m| m.map(from_message))
    }
}

fn to_message(frame: Frame<WireText>, deflate: Option<&Deflate>) -> Message {
    match frame {
        Frame::Text(t) => t.into_message(deflate),
        Frame::Binary(b) => Message::Binary(b),
        Frame::Ping(b) => Message::Ping(b),
        Frame::Pong(b) => Message::Pong(b),
        Frame::Close(reason) => Message::Close(reason.map(|r| CloseFrame {
            code: r.code.into(),
            reason: Utf8Bytes::from_static(r.reason),
        })),
    }
}

fn from_message(message: Result<Message, tokio_tungstenite::tungstenite::Error>) -> Result<Frame<WireText>, ReadError> {
    match message {
        Ok(Message::Text(text)) => Ok(Frame::Text(WireText { text, deflated: None })),
        Ok(Message::Binary(b)) => Ok(Frame::Binary(b)),
        Ok(Message::Ping(b)) => Ok(Frame::Ping(b)),
        Ok(Message::Pong(b)) => Ok(Frame::Pong(b)),
        Ok(Message::Close(_)) => Ok(Frame::Close(None)),
        // Raw frames are never handed to a reader.
        Ok(Message::Frame(_)) => Err(ReadError::Protocol),
        Err(e) => Err(read_error(e)),
    }
}

/// Classifies a failed read: 1009 for a frame or message over the size limit (also once
/// inflated), 1002 for a protocol violation (also bad compressed data), 1007 for a text
/// frame that is not UTF-8.
fn read_error(e: tokio_tungstenite::tungstenite::Error) -> ReadError {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Capacity(_) => ReadError::TooBig,
        Error::Protocol(_) => ReadError::Protocol,
        Error::Utf8(_) => ReadError::InvalidUtf8,
        Error::Io(e) if Stalled::is(&e) => ReadError::Stalled,
        Error::Io(e) => match DeflateReadError::find(&e) {
            Some(DeflateReadError::TooBig) => ReadError::TooBig,
            Some(DeflateReadError::Protocol(_)) => ReadError::Protocol,
            None => ReadError::Gone,
        },
        _ => ReadError::Gone,
    }
}
