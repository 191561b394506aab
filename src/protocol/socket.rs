//! axum's WebSocket as a socket of the session loop: frames mapped both ways, read
//! errors classified, buffers sized for cheap idle connections.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Sink, Stream};

use super::AppState;
use crate::session::runner::{self, Frame, Handler, ReadError, Socket};
use crate::session::Admission;

/// tungstenite's read buffer per socket, allocated for the socket's whole life (its
/// default, 128 KiB, would dominate idle memory). Subscribers send small frames; a larger
/// one is read in several steps. 512 bytes instead of 2 KiB took 10,000 idle sockets
/// from 7.2 to 5.6 KiB each, with the same CPU per delivery.
const READ_BUFFER: usize = 512;
/// Bytes buffered before tungstenite writes to the socket (flushes write sooner).
const WRITE_BUFFER: usize = 8 * 1024;

/// What a WebSocket route takes: the upgrade, or why the request is not one (checked with
/// [`required`] after the route's own checks, so a wrong token is a 401 either way).
pub(crate) type Upgrade = Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>;

/// The upgrade, or the 426 `upgrade_required` answer every WebSocket route gives a plain
/// HTTP request.
#[allow(clippy::result_large_err)]
pub(crate) fn required(ws: Upgrade) -> Result<WebSocketUpgrade, axum::response::Response> {
    use axum::response::IntoResponse;
    ws.map_err(|e| {
        let message = format!("a WebSocket upgrade is required: {}", e.body_text());
        super::ApiError::new(axum::http::StatusCode::UPGRADE_REQUIRED, "upgrade_required", message).into_response()
    })
}

/// The upgrade with the server's buffer sizes and message limit.
pub(crate) fn configure(ws: WebSocketUpgrade, st: &AppState) -> WebSocketUpgrade {
    let limit = st.config.load().websocket.max_message_size;
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit)
}

/// Starts `handler`'s session on `socket` in a task of its own that shutdown waits for;
/// give the returned (finished) future to `on_upgrade`.
///
/// Its own task, not the upgrade's: axum's upgrade task also holds the upgrade callback,
/// its captures and the handshake's state beside the session, 2.4 KB per socket for the
/// socket's whole life; a task of its own holds only the session loop, and the upgrade
/// task ends here.
pub(crate) fn serve<H: Handler + 'static>(
    st: &AppState,
    socket: WebSocket,
    admission: Admission,
    handler: H,
) -> std::future::Ready<()> {
    let (session, rx) = admission.open(H::PROTOCOL);
    tokio::spawn(
        st.sessions
            .track_future(runner::run::<H, Utf8Bytes, _>(session, rx, adapt(socket), handler)),
    );
    std::future::ready(())
}

/// Sends `frames`, then a close frame, on a socket refused after its upgrade.
pub(crate) async fn refuse(mut socket: WebSocket, frames: Vec<String>, close: crate::hub::CloseReason) {
    for frame in frames {
        if socket.send(Message::Text(frame.into())).await.is_err() {
            return;
        }
    }
    let _ = tokio::time::timeout(runner::CLOSE_GRACE, socket.send(to_message(Frame::Close(Some(close))))).await;
}

/// axum's WebSocket speaking [`Frame`]s: each frame converted as it passes, no queue
/// or state of its own.
struct Adapted(WebSocket);

fn adapt(socket: WebSocket) -> impl Socket<Utf8Bytes> {
    Adapted(socket)
}

impl Sink<Frame<Utf8Bytes>> for Adapted {
    type Error = axum::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Pin::new(&mut self.0).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Frame<Utf8Bytes>) -> Result<(), axum::Error> {
        Pin::new(&mut self.0).start_send(to_message(frame))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

impl Stream for Adapted {
    type Item = Result<Frame<Utf8Bytes>, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0).poll_next(cx).map(|m| m.map(from_message))
    }
}

fn to_message(frame: Frame<Utf8Bytes>) -> Message {
    match frame {
        Frame::Text(t) => Message::Text(t),
        Frame::Binary(b) => Message::Binary(b),
        Frame::Ping(b) => Message::Ping(b),
        Frame::Pong(b) => Message::Pong(b),
        Frame::Close(reason) => Message::Close(reason.map(|r| CloseFrame {
            code: r.code,
            reason: Utf8Bytes::from_static(r.reason),
        })),
    }
}

fn from_message(message: Result<Message, axum::Error>) -> Result<Frame<Utf8Bytes>, ReadError> {
    match message {
        Ok(Message::Text(t)) => Ok(Frame::Text(t)),
        Ok(Message::Binary(b)) => Ok(Frame::Binary(b)),
        Ok(Message::Ping(b)) => Ok(Frame::Ping(b)),
        Ok(Message::Pong(b)) => Ok(Frame::Pong(b)),
        Ok(Message::Close(_)) => Ok(Frame::Close(None)),
        Err(e) => Err(read_error(e)),
    }
}

/// Classifies a failed read: 1009 for a frame or message over the size limit, 1002 for a
/// protocol violation, 1007 for a text frame that is not UTF-8.
fn read_error(e: axum::Error) -> ReadError {
    use tokio_tungstenite::tungstenite::Error;
    match e.into_inner().downcast::<Error>().map(|e| *e) {
        Ok(Error::Capacity(_)) => ReadError::TooBig,
        Ok(Error::Protocol(_)) => ReadError::Protocol,
        Ok(Error::Utf8(_)) => ReadError::InvalidUtf8,
        _ => ReadError::Gone,
    }
}
