//! Serving: the accept loops over every listener, each connection's HTTP (header and
//! request timeouts, no keep-alive while draining), and the shutdown sequence (drain,
//! close every socket, wait for them and for queued broadcasts).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Rustaxum, StartError};
use crate::hub::Hub;

/// Serves each listener with its router, all on `app`, until `shutdown` resolves, then
/// stops accepting, closes every socket with 1001 and returns once drained (bounded by the
/// shutdown timeout).
///
/// Each TCP connection gets `BROADCAST_HTTP_HEADER_TIMEOUT` to send a request's headers
/// (an idle keep-alive connection is closed after the same time) and each request
/// `BROADCAST_HTTP_REQUEST_TIMEOUT` to send its body and be answered, so connections
/// that never finish a request cannot pile up. WebSocket sessions, once upgraded, are
/// not HTTP requests and have their own keep-alive.
pub(super) async fn serve(
    listeners: Vec<(TcpListener, Router)>,
    app: Rustaxum,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let hub = app.hub().clone();
    let drain = app.config().server.shutdown_timeout;
    let header_timeout = app.config().server.http_header_timeout;
    let connections = TaskTracker::new();
    let stop_http = CancellationToken::new();
    let stop_accepting = CancellationToken::new();
    let acceptors = TaskTracker::new();
    for (listener, router) in listeners {
        let (router, connections, stop_http, stop) =
            (router, connections.clone(), stop_http.clone(), stop_accepting.clone());
        let tls = app.tls().cloned();
        let hub = hub.clone();
        acceptors.spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // Out of file descriptors (or a connection reset before accept):
                            // back off instead of spinning; established connections keep
                            // being served.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let (router, stop_http) = (router.clone(), stop_http.clone());
                match &tls {
                    None => {
                        connections.spawn(serve_connection(
                            stream,
                            peer,
                            router,
                            header_timeout,
                            stop_http,
                            hub.clone(),
                        ));
                    }
                    Some(tls) => {
                        // The handshake gets the time a request has for its headers.
                        let acceptor = tls.acceptor().clone();
                        let hub = hub.clone();
                        connections.spawn(async move {
                            match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => {
                                    serve_connection(stream, peer, router, header_timeout, stop_http, hub).await
                                }
                                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
        });
    }
    acceptors.close();
    shutdown.await;
    // Draining: keep serving while the load balancer moves on (/ready is 503, HTTP
    // responses close their connections), then stop accepting and ask the sockets to
    // reconnect, which they do on another node.
    let drain_for = app.config().server.drain;
    let drained_first = !drain_for.is_zero();
    if drained_first {
        hub.begin_draining();
        crate::server::process::notify_systemd("STOPPING=1");
        tracing::info!(
            sockets = hub.connection_count(),
            "draining for {drain_for:?} (BROADCAST_DRAIN_SECONDS): /ready answers 503, sockets are asked to reconnect after"
        );
        // A second SIGINT/SIGTERM (an impatient operator, Ctrl-C twice) ends the drain.
        tokio::select! {
            _ = tokio::time::sleep(drain_for) => {}
            _ = crate::server::shutdown_signal() => tracing::info!("a second signal: the drain ends now"),
        }
    }
    let started = std::time::Instant::now();
    let (sockets, open) = (hub.connection_count(), connections.len());
    tracing::info!(
        sockets,
        connections = open,
        "shutting down: closing sockets, finishing requests in flight"
    );
    stop_accepting.cancel();
    acceptors.wait().await;
    // Sockets are not HTTP requests: tell them to close now; HTTP connections finish
    // their request in flight.
    if drained_first {
        hub.shutdown_with(crate::hub::CloseReason::RESTART);
    } else {
        hub.shutdown();
    }
    stop_http.cancel();
    connections.close();
    let drained = tokio::time::timeout(drain, connections.wait()).await.is_ok();
    if !drained {
        tracing::warn!(
            left = connections.len(),
            "HTTP connections still open after {drain:?} (BROADCAST_SHUTDOWN_TIMEOUT); closing them"
        );
    }
    let pending = app.manager().pending_broadcasts();
    app.shutdown().await;
    tracing::info!(
        sockets_closed = sockets,
        connections_drained = open,
        queued_broadcasts = pending,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "shut down"
    );
    Ok(())
}

/// One HTTP/1.1 connection (plain or TLS), with upgrades (WebSocket) and a header read
/// timeout.
async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    router: Router,
    header_timeout: std::time::Duration,
    stop: CancellationToken,
    hub: Arc<Hub>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let service = router
        .map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            req.map(axum::body::Body::new)
        })
        .map_response(move |mut response: axum::response::Response| {
            // Draining: no keep-alive, so a proxy's pooled connections move elsewhere
            // before this node stops accepting (an upgrade keeps its own Connection).
            if hub.is_draining() && response.status() != axum::http::StatusCode::SWITCHING_PROTOCOLS {
                response.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            response
        });
    let service = hyper_util::service::TowerToHyperService::new(service);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
