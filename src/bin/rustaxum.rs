//! The rustaxum server: WebSocket and HTTP on the WebSocket port and the application port.

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
    /// WebSocket port, 0 for any free port (overrides BROADCAST_WEBSOCKET_PORT).
    #[arg(long)]
    port: Option<u16>,
    /// Application port, 0 for any free port, or `off` (overrides BROADCAST_APP_PORT).
    #[arg(long)]
    app_port: Option<String>,
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
    if let Err(e) = rustaxum::cli::apply_listen_args(&mut config, args.host, args.port, args.app_port.as_deref()) {
        eprintln!("rustaxum: {e}");
        return ExitCode::from(2);
    }
    match rustaxum::server::serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rustaxum: {e}");
            ExitCode::from(1)
        }
    }
}
