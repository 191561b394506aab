//! The library alone, as an application that only broadcasts uses it — with
//! `rustaxum = { version = "0.1", default-features = false }` there is no server, no
//! Redis, no HTTP client and no TLS in the build. A manager whose `local` driver
//! publishes into a hub of this process, an in-process subscriber on that hub, and an
//! event dispatched to it:
//!
//! ```text
//! cargo run --no-default-features --example library
//! ```

use std::sync::Arc;

use rustaxum::broadcasting::{install, BroadcastManager, DriverSettings, Fanout};
use rustaxum::hub::{Hub, Protocol};
use rustaxum::prelude::*;

#[derive(serde::Serialize)]
struct OrderShipped {
    order_id: u64,
}

impl Event for OrderShipped {}

impl ShouldBroadcast for OrderShipped {
    fn broadcast_on(&self) -> Vec<String> {
        vec!["orders".to_string()]
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The built-in connections (local, log, null; redis with the `redis` feature), `local`
    // the default, publishing into `hub`.
    let hub = Arc::new(Hub::default());
    let manager = BroadcastManager::over("local", Fanout::local(hub.clone()), DriverSettings::default());
    install(Arc::new(manager)); // what `dispatch()` and the helpers go through

    // An in-process subscriber: what a socket is to the server.
    let (me, mut inbox) = hub.connect(Protocol::Native);
    hub.subscribe(&me, &Channel::parse("orders")?)?;

    OrderShipped { order_id: 1001 }.dispatch().await?;
    let message = inbox.recv().await.ok_or("the hub shut down")?;
    println!("{} {} {}", message.channel.name(), message.event, message.data);
    Ok(())
}
