//! A broadcast driver of your own: register it with `extend`, then send through it
//! by name (or make it the default). This one prints each broadcast as a JSON line.
//!
//! ```sh
//! cargo run --example custom_driver
//! ```

use async_trait::async_trait;
use rustaxum::broadcasting::{BroadcastDriver, Result};
use serde_json::{json, Value};

/// Writes every broadcast to standard output.
struct Stdout;

#[async_trait]
impl BroadcastDriver for Stdout {
    async fn broadcast(&self, channel: &str, data: Value) -> Result<()> {
        println!("{}", json!({"channel": channel, "message": data}));
        Ok(())
    }

    async fn broadcast_private(&self, channel: &str, data: Value) -> Result<()> {
        println!("{}", json!({"channel": channel, "private": true, "message": data}));
        Ok(())
    }

    fn driver_name(&self) -> &'static str {
        "stdout"
    }
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    // A library default: no ports, nothing on disk.
    let app = rustaxum::Rustaxum::new(rustaxum::Config::default())?;
    app.manager()
        .extend("stdout", |_connection, _context| Ok(std::sync::Arc::new(Stdout)));
    app.manager()
        .broadcast()
        .channels(["general", "private-user.42"])
        .event("invoice.paid")
        .with(json!({"invoice": 1001, "total": "49.00"}))
        .via("stdout")
        .send()
        .await?;
    // As the default connection, every `broadcast()` and `dispatch()` uses it.
    app.manager().set_default_driver("stdout");
    app.manager()
        .broadcast()
        .channel("general")
        .event("shipped")
        .with(json!({"order": 7}))
        .send()
        .await?;
    Ok(())
}
