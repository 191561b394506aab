//! An echo server on rustaxum's own WebSocket stack, for the Autobahn TestSuite
//! (`scripts/autobahn` starts it and runs the suite's fuzzingclient against it).
//!
//! ```sh
//! cargo run --release --example autobahn_echo -- 127.0.0.1:9001   # ws://127.0.0.1:9001/echo
//! ```
//!
//! Messages up to 64 MiB (the suite sends 16 MiB ones), compression of every size (so the
//! suite's permessage-deflate cases exercise it), everything else as the server's
//! defaults; the first line printed is the address.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9001".into());
    let config = rustaxum::Config::from_lookup(|k| match k {
        "BROADCAST_MAX_MESSAGE_SIZE" => Some((64 * 1024 * 1024).to_string()),
        "BROADCAST_MAX_PAYLOAD_SIZE" => Some((64 * 1024 * 1024).to_string()),
        "BROADCAST_COMPRESSION" => Some("1".into()),
        "EMIT_HUB_DB_PATH" => Some(":memory:".into()),
        _ => None,
    })?;
    let app = rustaxum::Rustaxum::new(config)?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("ws://{}/echo", listener.local_addr()?);
    let router = app.echo_router();
    app.serve([(listener, router)], rustaxum::server::shutdown_signal())
        .await?;
    Ok(())
}
