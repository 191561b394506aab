//! `artisan`: operator commands for a running rustaxum server.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = rustaxum::cli::Cli::parse();
    rustaxum::cli::run(cli).await
}
