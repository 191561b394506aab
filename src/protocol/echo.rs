//! `GET /echo`: a WebSocket that sends every message back, on exactly the server's own
//! stack (its upgrade with permessage-deflate negotiation, the inflating layer beneath
//! tungstenite, the socket sink that compresses a text once per window size, the close
//! handshake). For conformance suites (`scripts/autobahn` runs the Autobahn TestSuite
//! against it); the server never routes it: [`crate::Rustaxum::echo_router`] does.

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};

use super::socket::{self, WebSocket, WireText};
use super::AppState;
use crate::session::runner::{Frame, CLOSE_GRACE};

/// The echo endpoint's router.
pub(crate) fn router(state: AppState) -> Router {
    Router::new().route("/echo", get(upgrade)).with_state(state)
}

async fn upgrade(State(st): State<AppState>, ws: socket::Upgrade) -> Response {
    match socket::required(ws) {
        Ok(ws) => socket::configure(ws, &st).on_upgrade(|s| async move { echo(s).await.linger().await }),
        Err(refused) => refused,
    }
}

async fn echo(mut socket: WebSocket) -> WebSocket {
    while let Some(frame) = socket.next().await {
        let sent = match frame {
            // A new outgoing text: compressed (when agreed) as every broadcast is.
            Ok(Frame::Text(text)) => socket.send(Frame::Text(WireText::from(text.to_string()))).await,
            Ok(Frame::Binary(data)) => socket.send(Frame::Binary(data)).await,
            // The library queued the pong: send it now.
            Ok(Frame::Ping(_)) | Ok(Frame::Pong(_)) => socket.flush().await,
            Ok(Frame::Close(_)) => {
                let _ = tokio::time::timeout(CLOSE_GRACE, socket.flush()).await;
                return socket;
            }
            Err(e) => {
                if let Some(reason) = e.close_reason() {
                    let _ = tokio::time::timeout(CLOSE_GRACE, socket.send(Frame::Close(Some(reason)))).await;
                }
                return socket;
            }
        };
        if sent.is_err() {
            return socket;
        }
    }
    socket
}
