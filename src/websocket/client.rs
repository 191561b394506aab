//! A client connection that offers permessage-deflate: artisan's benchmark subscribers
//! and the tests use it to receive what the server compresses.

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, SEC_WEBSOCKET_EXTENSIONS};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::WebSocketStream;

use super::{Inflating, Role};

/// A client socket whose compressed incoming messages arrive inflated.
pub type DeflateClient = WebSocketStream<Inflating<TcpStream>>;

/// What the client offers: no context takeover either way (what the server answers).
pub const OFFER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Connects to `url` (`ws://` only), offering permessage-deflate when `offer` is true;
/// incoming messages are inflated up to `limit` bytes, and the bytes read are counted
/// either way. Returns the socket and the server's `Sec-WebSocket-Extensions` answer
/// (`None`: not offered or declined, nothing is compressed).
pub async fn connect(url: &str, limit: usize, offer: bool) -> Result<(DeflateClient, Option<String>), Error> {
    let mut request = url.into_client_request()?;
    if offer {
        request
            .headers_mut()
            .insert(SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_static(OFFER));
    }
    let uri = request.uri();
    if uri.scheme_str() != Some("ws") {
        return Err(Error::Url(
            tokio_tungstenite::tungstenite::error::UrlError::UnsupportedUrlScheme,
        ));
    }
    let host = uri.host().unwrap_or("localhost").trim_matches(['[', ']']).to_string();
    let port = uri.port_u16().unwrap_or(80);
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let io = Inflating::new(tcp, Role::Client, limit);
    let (socket, response) = tokio_tungstenite::client_async_with_config(request, io, Some(config)).await?;
    let agreed = response
        .headers()
        .get(SEC_WEBSOCKET_EXTENSIONS)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((socket, agreed))
}
