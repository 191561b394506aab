//! The rustaxum server: WebSocket and HTTP on one listener.

use std::net::IpAddr;
use std::process::ExitCode;

use clap::Parser;

/// Real-time broadcasting server (WebSocket + HTTP API).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on (overrides BROADCAST_HOST).
    #[arg(long)]
    host: Option<IpAddr>,
    /// Port to listen on, 0 for any free port (overrides BROADCAST_WEBSOCKET_PORT).
    #[arg(long)]
    port: Option<u16>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    rustaxum::server::init_tracing();
    let mut config = match rustaxum::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rustaxum: {e}");
            return ExitCode::from(2);
        }
    };
    config.server.host = args.host.unwrap_or(config.server.host);
    config.server.port = args.port.unwrap_or(config.server.port);
    match rustaxum::server::serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rustaxum: {e}");
            ExitCode::from(1)
        }
    }
}
