//! An in-memory socket for tests of the session core and of protocol handlers: no
//! network, no axum. [`pair`] gives the server side (a [`Socket`](super::runner::Socket)
//! for [`run`](super::runner::run)) and a [`TestClient`] that sends and receives frames.
//!
//! ```
//! # async fn f(node: std::sync::Arc<rustaxum::session::Node>) {
//! use rustaxum::session::testing::pair;
//! let (socket, mut client) = pair();
//! // tokio::spawn(run(session, rx, socket, handler)); client.send_text("..."); client.recv().await
//! # }
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, Stream};
use tokio::sync::mpsc;

use super::runner::{Frame, ReadError};

/// The server side of an in-memory socket; its text type is `String`.
#[derive(Debug)]
pub(crate) struct MemorySocket {
    to_client: mpsc::UnboundedSender<Frame<String>>,
    from_client: mpsc::UnboundedReceiver<Result<Frame<String>, ReadError>>,
}

/// The client side of an in-memory socket.
#[derive(Debug)]
pub(crate) struct TestClient {
    to_server: mpsc::UnboundedSender<Result<Frame<String>, ReadError>>,
    from_server: mpsc::UnboundedReceiver<Frame<String>>,
}

/// A connected pair: the server's socket and its client.
pub(crate) fn pair() -> (MemorySocket, TestClient) {
    let (to_client, from_server) = mpsc::unbounded_channel();
    let (to_server, from_client) = mpsc::unbounded_channel();
    (
        MemorySocket { to_client, from_client },
        TestClient { to_server, from_server },
    )
}

/// The client went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the test client is gone")]
pub(crate) struct Gone;

impl Sink<Frame<String>> for MemorySocket {
    type Error = Gone;

    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, frame: Frame<String>) -> Result<(), Gone> {
        self.to_client.send(frame).map_err(|_| Gone)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Gone>> {
        Poll::Ready(Ok(()))
    }
}

impl Stream for MemorySocket {
    type Item = Result<Frame<String>, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.from_client.poll_recv(cx)
    }
}

impl TestClient {
    /// Sends a text frame to the server.
    pub(crate) fn send_text(&self, text: impl Into<String>) {
        let _ = self.to_server.send(Ok(Frame::Text(text.into())));
    }

    /// Sends any frame, or a read failure, to the server.
    pub(crate) fn send(&self, frame: Result<Frame<String>, ReadError>) {
        let _ = self.to_server.send(frame);
    }

    /// The next frame from the server (`None` once the server dropped its side), waiting
    /// at most five seconds.
    pub(crate) async fn recv(&mut self) -> Option<Frame<String>> {
        tokio::time::timeout(Duration::from_secs(5), self.from_server.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next text frame as JSON, skipping pings; panics on anything else.
    pub(crate) async fn recv_json(&mut self) -> serde_json::Value {
        loop {
            match self.recv().await {
                Some(Frame::Text(t)) => return serde_json::from_str(&t).expect("the server sent JSON"),
                Some(Frame::Ping(_) | Frame::Pong(_)) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// A frame if one is already waiting.
    pub(crate) fn try_recv(&mut self) -> Option<Frame<String>> {
        self.from_server.try_recv().ok()
    }
}

/// A node and tokens for the crate's own unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde_json::json;

    use crate::auth::{ChannelRules, JwtConfig, JwtVerifier};
    use crate::hub::Hub;
    use crate::presence::{MemoryPresence, Presence, PresenceStore};
    use crate::publish::Fanout;
    use crate::session::{Limits, Node};

    /// The HS256 secret of [`token`].
    pub(crate) const SECRET: &str = "unit-test-secret-unit-test-secret";

    /// A single node with the default rules (plus public `lobby`), `store` for presence.
    pub(crate) fn node_with(store: Arc<dyn PresenceStore>, limits: Limits) -> Arc<Node> {
        let fanout = Fanout::local(Arc::new(Hub::default()));
        let presence = Presence::new(store, fanout.clone());
        let verifier = JwtVerifier::new(&JwtConfig {
            algorithm: jsonwebtoken::Algorithm::HS256,
            secret: Some(SECRET.into()),
            public_key_file: None,
            audience: "websocket".into(),
            leeway: Duration::from_secs(5),
        })
        .expect("test key");
        let rules = Arc::new(ChannelRules::defaults(&["lobby".to_string()]));
        Arc::new(Node::new(fanout, presence, rules, Some(Arc::new(verifier)), limits))
    }

    /// [`node_with`] in-memory presence and default limits.
    pub(crate) fn node() -> Arc<Node> {
        node_with(Arc::new(MemoryPresence::new()), Limits::default())
    }

    /// A token for `sub` (with `user_info.name`) expiring at `exp`.
    pub(crate) fn token_until(sub: &str, exp: u64) -> String {
        let claims = json!({"sub": sub, "aud": "websocket", "exp": exp, "user_info": {"name": sub}});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("sign")
    }

    /// An hour from now, in seconds since the epoch.
    pub(crate) fn in_an_hour() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) + 3600
    }

    /// A token for `sub` valid for an hour.
    pub(crate) fn token(sub: &str) -> String {
        token_until(sub, in_an_hour())
    }
}
