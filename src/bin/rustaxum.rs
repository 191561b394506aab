//! The rustaxum server: WebSocket and HTTP on the WebSocket port and the application port.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: smaller and less fragmented per-connection
/// allocations (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Real-time broadcasting server (WebSocket + HTTP API).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on (overrides BROADCAST_HOST).
    #[arg(long, global = true)]
    host: Option<IpAddr>,
    /// WebSocket port, 0 for any free port (overrides BROADCAST_WEBSOCKET_PORT).
    #[arg(long, global = true)]
    port: Option<u16>,
    /// Application port, 0 for any free port, or `off` (overrides BROADCAST_APP_PORT).
    #[arg(long)]
    app_port: Option<String>,
    /// Configuration file (default: BROADCAST_CONFIG_FILE, else ./emit_hub.toml if present).
    /// The environment wins over it; it is reloaded when it changes.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Print every environment variable (default, file key, whether it reloads) and exit.
    #[arg(long)]
    show_env_vars: bool,
    /// Print a complete, commented configuration file of the current settings and exit.
    #[arg(long)]
    generate_config: bool,
    /// Instead of serving: a probe of a running server.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Asks the server this configuration describes (its port, https:// with
    /// BROADCAST_TLS_CERT, loopback when it listens on every address) whether it is
    /// alive (`/health`) or, with --ready, taking traffic (`/ready`: 503 while draining
    /// or degraded). Exit 0 when it answered 200, 1 otherwise: a container health check
    /// without curl.
    Health {
        /// Ask `/ready` instead of `/health`.
        #[arg(long)]
        ready: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    // A mistyped option is a start-up error too: a JSON line with LOG_FORMAT=json.
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if e.use_stderr() && json_logs() => return fail(&e.to_string().trim_end(), 2),
        Err(e) => e.exit(),
    };
    if args.show_env_vars {
        out(&rustaxum::config::file::show_env_vars());
        return ExitCode::SUCCESS;
    }
    let mut config = match rustaxum::Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(&e, 2),
    };
    if let Err(e) = rustaxum::cli::apply_listen_args(&mut config, args.host, args.port, args.app_port.as_deref()) {
        return fail(&e, 2);
    }
    if let Some(Command::Health { ready }) = args.command {
        use rustaxum::cli::health::{probe, Probe};
        return match probe(&config, if ready { Probe::Ready } else { Probe::Alive }).await {
            Ok(said) => {
                out(&format!("{said}\n"));
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e, 1),
        };
    }
    if args.generate_config {
        out(&config.sources.to_toml());
        return ExitCode::SUCCESS;
    }
    rustaxum::server::init_tracing(&config.log);
    if let Some(file) = &config.sources.file {
        tracing::info!(path = %file.path.display(), "configuration file read (the environment wins over it)");
    }
    match rustaxum::server::run_process(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, 1),
    }
}

/// Prints to stdout; a closed stdout (`rustaxum --show-env-vars | head`) is no error.
fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
}

/// `LOG_FORMAT=json` (from the environment or the `.env` read by then).
fn json_logs() -> bool {
    std::env::var("LOG_FORMAT").is_ok_and(|f| f.trim().eq_ignore_ascii_case("json"))
}

/// Reports a start-up error on stderr (as a JSON line with `LOG_FORMAT=json`) and exits.
fn fail(e: &dyn std::fmt::Display, code: u8) -> ExitCode {
    use std::io::Write;
    let line = if json_logs() {
        rustaxum::server::json_line("ERROR", &e.to_string())
    } else {
        format!("rustaxum: {e}")
    };
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    ExitCode::from(code)
}
