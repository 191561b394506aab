//! A Laravel-style event dispatched from an axum handler: `POST /orders/{id}/ship` marks
//! an order shipped and dispatches `OrderShipped`, which `ShouldBroadcast`s on `orders`
//! and on the customer's private channel. The example plays both sides: it serves the app
//! on a free port, connects a WebSocket client to `orders`, calls the handler, and prints
//! what the client received.
//!
//! ```sh
//! cargo run --example dispatch_from_handler
//! ```

use std::time::Duration;

use axum::extract::Path;
use axum::routing::post;
use axum::Router;
use futures_util::StreamExt;
use rustaxum::events::{Event, ShouldBroadcast};
use serde::Serialize;

#[derive(Serialize)]
struct OrderShipped {
    order_id: u64,
    customer_id: u64,
}

// The payload is the event's fields (its `Serialize` form).
impl Event for OrderShipped {}

impl ShouldBroadcast for OrderShipped {
    fn broadcast_on(&self) -> Vec<String> {
        vec!["orders".into(), format!("user.{}", self.customer_id)]
    }
}

async fn ship(Path(order_id): Path<u64>) -> Result<&'static str, String> {
    // ... mark the order shipped in your database, then tell everyone listening:
    OrderShipped {
        order_id,
        customer_id: 42,
    }
    .dispatch()
    .await
    .map_err(|e| e.to_string())?;
    Ok("shipped\n")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = rustaxum::Config::default();
    config.auth.public_channels.push("orders".into());
    // Stop at once when done (a server behind a load balancer drains first).
    config.server.drain = Duration::ZERO;
    // `facade()`: the handler's `dispatch()` goes through this app.
    let app = rustaxum::Rustaxum::builder(config).facade().build()?;
    let router = Router::new()
        .route("/orders/{id}/ship", post(ship))
        .merge(app.router()?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve([(listener, router)], async {
        let _ = stopped.await;
    }));

    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/orders")).await?;
    let joined = socket.next().await.ok_or("closed")??;
    println!("client: {joined}");
    let answer = reqwest::Client::new()
        .post(format!("http://{addr}/orders/1001/ship"))
        .send()
        .await?
        .text()
        .await?;
    print!("handler: {answer}");
    let event = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await?
        .ok_or("closed")??;
    println!("client: {event}");

    // The client leaves, then the server stops (and drains: nothing is left open).
    socket.close(None).await?;
    let _ = stop.send(());
    server.await??;
    Ok(())
}
