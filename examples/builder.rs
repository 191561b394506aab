//! Putting an app together with `Rustaxum::builder`: channel rules, a driver of your own
//! registered before the default driver is resolved, the facade for `broadcast()`, then
//! `build()` (which checks everything and starts nothing) and `serve` (which starts the
//! background work and serves until the shutdown future resolves, then drains).
//!
//! The example plays both sides: it serves on a free port, connects a WebSocket client to
//! `news.sport`, broadcasts through the facade (delivered by the `websocket` driver) and
//! through the `audit` driver (printed), prints what the client received, and stops.
//!
//! ```sh
//! cargo run --example builder
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use rustaxum::broadcasting::{BroadcastDriver, Result};
use rustaxum::prelude::*;
use serde_json::json;

/// A driver that prints what it is given (Laravel's `Broadcast::extend`).
struct Audit;

#[async_trait]
impl BroadcastDriver for Audit {
    async fn broadcast(&self, channel: &str, data: serde_json::Value) -> Result<()> {
        println!("audit: {channel} {data}");
        Ok(())
    }

    fn driver_name(&self) -> &'static str {
        "audit"
    }
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    // A library default: nothing on disk; stop at once (no drain for a load balancer).
    let config = Config::from_lookup(|var| match var {
        "EMIT_HUB_DB_PATH" => Some(":memory:".into()),
        "BROADCAST_DRAIN_SECONDS" => Some("0".into()),
        _ => None,
    })?;
    // Public news channels; everything else needs a signed-in user (none here).
    let rules = ChannelRules::public_only(&["news.*".to_string()]);
    let app = Rustaxum::builder(config)
        .rules(rules)
        .driver("audit", |_connection, _context| Ok(Arc::new(Audit)))
        .facade()
        .build()?; // validated; no task, no connection yet

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve([listener], async {
        let _ = stopped.await;
    }));

    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/news.sport")).await?;
    let joined = socket.next().await.ok_or("closed")??;
    println!("client: {joined}");
    // Through the facade: the app's manager, its default (`websocket`) driver.
    broadcast()
        .channel("news.sport")
        .event("goal")
        .with(json!({"minute": 87}))
        .send()
        .await?;
    let event = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await?
        .ok_or("closed")??;
    println!("client: {event}");
    // Through the driver registered with the builder.
    broadcast()
        .channel("news.sport")
        .event("goal")
        .with(json!({"minute": 88}))
        .via("audit")
        .send()
        .await?;

    // The client leaves, then the server stops (and drains: nothing is left open).
    socket.close(None).await?;
    let _ = stop.send(());
    server.await??;
    Ok(())
}
