//! The `artisan` operator CLI: clap definitions and command dispatch.
//!
//! Every command except `broadcast websocket` and `broadcast bench-report` talks to a
//! running server through its HTTP API ([`client::ApiClient`]); the server is found from
//! the same configuration as the server itself, or `--server`. Only those commands take
//! `--server` and `--token` (before `broadcast` too, as the scripts of earlier versions
//! write them; given to a command that does not use them, they are refused by name).

/// `println!` for command output: a closed stdout (`artisan broadcast stats | head`)
/// ends the command quietly instead of panicking.
macro_rules! say {
    () => {
        $crate::cli::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub mod bench;
pub mod client;
mod cluster;
mod commands;
pub mod health;
#[cfg(feature = "bench-report")]
pub mod report;
pub mod tls;

/// The WebSocket client `artisan broadcast bench` subscribes with: it offers
/// permessage-deflate (RFC 7692) and hands compressed messages on inflated.
pub mod websocket {
    pub use crate::websocket::client::{connect, DeflateClient, OFFER};
}

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Operator commands for rustaxum.
#[derive(Debug, Parser)]
#[command(name = "artisan", version, about)]
pub struct Cli {
    /// The server, token and configuration file for the commands that use them, given
    /// before `broadcast` (the command's own options win).
    #[command(flatten)]
    pub target: Target,
    /// The command group.
    #[command(subcommand)]
    pub command: Group,
}

/// Which server a command talks to, and with which token: the options of every command
/// that uses the HTTP API (and only of those).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Target {
    /// The server: a URL (`https://rt.example.com`) or `host:port` (default: from
    /// BROADCAST_HOST and BROADCAST_WEBSOCKET_PORT).
    #[arg(long)]
    pub server: Option<String>,
    /// API token (default: BROADCAST_API_TOKEN).
    #[arg(long, hide_env_values = true)]
    pub token: Option<String>,
    /// Configuration file the defaults come from (default: BROADCAST_CONFIG_FILE, else
    /// ./emit_hub.toml if present).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// A PEM file of CA certificates to trust for https:// and wss:// too (a server whose
    /// BROADCAST_TLS_CERT a private CA signed); SSL_CERT_FILE is read as well.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// Accept any certificate (its name and issuer unchecked): for a test server only.
    #[arg(long)]
    pub insecure: bool,
}

/// Command groups.
#[derive(Debug, Subcommand)]
pub enum Group {
    /// Broadcasting commands.
    #[command(subcommand)]
    Broadcast(Broadcast),
}

/// `artisan broadcast ...`
#[derive(Debug, Subcommand)]
pub enum Broadcast {
    /// Send a test event to a channel.
    Test {
        /// The channel.
        #[arg(long, default_value = "general")]
        channel: String,
        /// The message carried in the event's data.
        #[arg(long, default_value = "Test broadcast from artisan")]
        message: String,
        /// The server.
        #[command(flatten)]
        target: Target,
    },
    /// Run the WebSocket server in this process.
    Websocket {
        /// WebSocket port (overrides BROADCAST_WEBSOCKET_PORT).
        #[arg(long)]
        port: Option<u16>,
        /// Application port, or `off` (overrides BROADCAST_APP_PORT).
        #[arg(long)]
        app_port: Option<String>,
        /// Address (overrides BROADCAST_HOST).
        #[arg(long)]
        host: Option<std::net::IpAddr>,
        /// Configuration file (default: BROADCAST_CONFIG_FILE, else ./emit_hub.toml if
        /// present).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
    /// Show live statistics.
    Stats {
        /// One node of the cluster (its id, as `stats` lists them) instead of the totals.
        #[arg(long, value_name = "ID")]
        node: Option<String>,
        /// The server.
        #[command(flatten)]
        target: Target,
    },
    /// List channels with subscribers.
    Channels {
        /// One node of the cluster (its id, as `stats` lists them) instead of the totals.
        #[arg(long, value_name = "ID")]
        node: Option<String>,
        /// The server.
        #[command(flatten)]
        target: Target,
    },
    /// Show a channel's kept messages (channels with history): the newest, or those after
    /// a position.
    History {
        /// The channel.
        channel: String,
        /// `EPOCH:OFFSET`: the messages after this position, oldest first.
        #[arg(long)]
        since: Option<String>,
        /// How many (at most 1000).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// The server.
        #[command(flatten)]
        target: Target,
    },
    /// Send `ping` events to a channel at an interval.
    Ping {
        /// The channel.
        #[arg(long, default_value = "general")]
        channel: String,
        /// Seconds between pings (fractions allowed).
        #[arg(long, default_value_t = 5.0)]
        interval: f64,
        /// Stop after this many pings (default: until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
        /// The server.
        #[command(flatten)]
        target: Target,
    },
    /// Send a notification to one user (`user.{ID}`).
    #[command(name = "notify:user")]
    NotifyUser {
        /// The user id.
        user_id: String,
        /// The notification title.
        title: String,
        /// The notification text.
        message: String,
        /// A link the client may open.
        #[arg(long)]
        action_url: Option<String>,
        /// The server.
        #[command(flatten)]
        target: Target,
    },
    /// Send a system alert (channel `admin.alerts`, event `system.alert`).
    #[command(name = "system:alert")]
    SystemAlert {
        /// Severity.
        level: AlertLevel,
        /// The alert text.
        message: String,
        /// Mark the alert as needing action.
        #[arg(long)]
        action_required: bool,
        /// The server.
        #[command(flatten)]
        target: Target,
    },
    /// Watch connections and message rates, refreshing in place.
    Monitor {
        /// Seconds to run.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// Seconds between samples.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// One node of the cluster (its id, as `stats` lists them) instead of the totals.
        #[arg(long, value_name = "ID")]
        node: Option<String>,
        /// The server.
        #[command(flatten)]
        target: Target,
    },
    /// Measure fan-out: connect many sockets, publish, report deliveries/s and latency.
    Bench(bench::BenchArgs),
    /// Turn the benchmark matrix's runs (scripts/bench-report) into a table and a chart.
    #[cfg(feature = "bench-report")]
    BenchReport(report::ReportArgs),
}

impl Broadcast {
    /// The server options of a command that talks to a server; `None` for those that do
    /// not (`websocket`, `bench-report`).
    fn target(&self) -> Option<&Target> {
        match self {
            Self::Test { target, .. }
            | Self::Stats { target, .. }
            | Self::Channels { target, .. }
            | Self::History { target, .. }
            | Self::Ping { target, .. }
            | Self::NotifyUser { target, .. }
            | Self::SystemAlert { target, .. }
            | Self::Monitor { target, .. } => Some(target),
            Self::Bench(args) => Some(&args.target),
            Self::Websocket { .. } => None,
            #[cfg(feature = "bench-report")]
            Self::BenchReport(_) => None,
        }
    }

    /// The command's name, for messages.
    fn name(&self) -> &'static str {
        match self {
            Self::Test { .. } => "test",
            Self::Websocket { .. } => "websocket",
            Self::Stats { .. } => "stats",
            Self::Channels { .. } => "channels",
            Self::History { .. } => "history",
            Self::Ping { .. } => "ping",
            Self::NotifyUser { .. } => "notify:user",
            Self::SystemAlert { .. } => "system:alert",
            Self::Monitor { .. } => "monitor",
            Self::Bench(_) => "bench",
            #[cfg(feature = "bench-report")]
            Self::BenchReport(_) => "bench-report",
        }
    }
}

/// Alert severities.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AlertLevel {
    /// Informational.
    Info,
    /// Something needs watching.
    Warning,
    /// Something failed.
    Error,
    /// Service is impaired.
    Critical,
}

impl AlertLevel {
    fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
            Self::Critical => "critical",
        }
    }
}

/// Writes command output to stdout. When the reader has gone away (a pipe to `head`
/// that exited), there is nobody left to tell anything: exit quietly with success.
pub(crate) fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// Applies `--host`, `--port` and `--app-port` (a number or `off`) to `config`; ports
/// given here count as explicitly chosen.
pub fn apply_listen_args(
    config: &mut crate::Config,
    host: Option<std::net::IpAddr>,
    port: Option<u16>,
    app_port: Option<&str>,
) -> Result<(), String> {
    // Recorded as settings too, so a reload keeps them.
    if let Some(host) = host {
        config.server.host = host;
        config.sources.overrides.insert("BROADCAST_HOST", host.to_string());
        config.sources.values.insert("BROADCAST_HOST", host.to_string());
    }
    if let Some(port) = port {
        config.server.port = port;
        config.server.explicit_ports.websocket = true;
        config
            .sources
            .overrides
            .insert("BROADCAST_WEBSOCKET_PORT", port.to_string());
        config
            .sources
            .values
            .insert("BROADCAST_WEBSOCKET_PORT", port.to_string());
    }
    if let Some(app_port) = app_port {
        config.server.app_port = match app_port {
            "off" => None,
            p => Some(
                p.parse()
                    .map_err(|_| format!("--app-port takes a port number or off, not {p:?}"))?,
            ),
        };
        config
            .sources
            .overrides
            .insert("BROADCAST_APP_PORT", app_port.to_string());
        config.sources.values.insert("BROADCAST_APP_PORT", app_port.to_string());
        config.server.explicit_ports.app = true;
    }
    Ok(())
}

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let Group::Broadcast(command) = cli.command;
    let fail = |e: &dyn std::fmt::Display, code: u8| {
        eprintln!("❌ {e}");
        ExitCode::from(code)
    };
    // Options given before `broadcast` apply to the commands that use them; to the others
    // they are a mistake worth saying.
    let top = cli.target;
    let misplaced: Vec<&str> = [
        ("--server", top.server.is_some() && command.target().is_none()),
        ("--token", top.token.is_some() && command.target().is_none()),
        ("--ca", top.ca.is_some() && command.target().is_none()),
        ("--insecure", top.insecure && command.target().is_none()),
        #[cfg(feature = "bench-report")]
        (
            "--config",
            top.config.is_some() && matches!(command, Broadcast::BenchReport(_)),
        ),
    ]
    .into_iter()
    .filter_map(|(option, wrong)| wrong.then_some(option))
    .collect();
    if !misplaced.is_empty() {
        let what = misplaced.join(" and ");
        return fail(&format!("{what} does not apply to `broadcast {}`", command.name()), 2);
    }
    #[cfg(feature = "bench-report")]
    if let Broadcast::BenchReport(args) = &command {
        return match report::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e, 1),
        };
    }
    let target = command.target().cloned().unwrap_or_default();
    let file = match &command {
        Broadcast::Websocket { config, .. } => config.clone(),
        _ => target.config.clone(),
    }
    .or(top.config);
    let config = match crate::Config::load(file.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(&e, 2),
    };
    if let Broadcast::Websocket {
        port, app_port, host, ..
    } = command
    {
        return commands::websocket(config, host, port, app_port).await;
    }
    let base = target.server.or(top.server).unwrap_or_else(|| config.server_url());
    let token = target.token.or(top.token).or_else(|| config.server.api_token.clone());
    let trust = match tls::Trust::new(
        target.ca.as_deref().or(top.ca.as_deref()),
        target.insecure || top.insecure,
    ) {
        Ok(t) => t,
        Err(e) => return fail(&e, 2),
    };
    let client = match client::ApiClient::new(&base, token, &trust) {
        Ok(c) => c,
        Err(e) => return fail(&e, 2),
    };
    let result = match command {
        Broadcast::Test { channel, message, .. } => commands::test(&client, &channel, &message).await,
        Broadcast::Stats { node, .. } => cluster::stats_command(&client, node.as_deref()).await,
        Broadcast::Channels { node, .. } => cluster::channels_command(&client, node.as_deref()).await,
        Broadcast::History {
            channel, since, limit, ..
        } => commands::history(&client, &channel, since.as_deref(), limit).await,
        Broadcast::Ping {
            channel,
            interval,
            count,
            ..
        } => commands::ping(&client, &channel, interval, count).await,
        Broadcast::NotifyUser {
            user_id,
            title,
            message,
            action_url,
            ..
        } => commands::notify_user(&client, &user_id, &title, &message, action_url.as_deref()).await,
        Broadcast::SystemAlert {
            level,
            message,
            action_required,
            ..
        } => commands::system_alert(&client, level.as_str(), &message, action_required).await,
        Broadcast::Monitor {
            duration,
            interval,
            node,
            ..
        } => commands::monitor(&client, duration, interval, node.as_deref()).await,
        Broadcast::Bench(args) => bench::run(&client, &args).await,
        // Handled above.
        Broadcast::Websocket { .. } => Ok(()),
        #[cfg(feature = "bench-report")]
        Broadcast::BenchReport(_) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, 1),
    }
}
