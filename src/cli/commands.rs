//! The commands' bodies. Output follows the RustAxum broadcasting document.

use std::io::IsTerminal;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::client::{ApiClient, CliError, Json, Shape};
use crate::broadcasting::helpers::{
    notification_payload, system_alert_payload, user_channel, NOTIFICATION_EVENT, SYSTEM_ALERT_CHANNEL,
    SYSTEM_ALERT_EVENT,
};
use crate::hub::now_rfc3339;

pub(super) async fn websocket(
    mut config: crate::Config,
    host: Option<IpAddr>,
    port: Option<u16>,
    app_port: Option<String>,
) -> ExitCode {
    crate::server::init_tracing(&config.log);
    if let Err(e) = super::apply_listen_args(&mut config, host, port, app_port.as_deref()) {
        eprintln!("❌ {e}");
        return ExitCode::from(2);
    }
    say!("🌐 Starting WebSocket server on port {}", config.server.port);
    match crate::server::run_process(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("❌ {e}");
            ExitCode::from(1)
        }
    }
}

pub(super) async fn test(client: &ApiClient, channel: &str, message: &str) -> Result<(), CliError> {
    client.check().await?;
    say!("🚀 Testing broadcast to channel: {channel}");
    let data = json!({"message": message, "source": "artisan", "timestamp": now_rfc3339()});
    let reached = client.publish(channel, "test", data).await?;
    say!("✅ Broadcast test completed successfully");
    say!("   delivered to {reached} socket(s) on this server");
    Ok(())
}

/// What `stats` and `monitor` read of `/api/broadcast/stats`.
pub(super) const STATS: &[Shape<'static>] = &[
    ("connections", Json::Count),
    ("channels", Json::Object),
    ("channels.*.kind", Json::Text),
    ("channels.*.subscribers", Json::Count),
    ("channels.*.members", Json::OptionalCount),
    ("driver", Json::Text),
    ("messages.published", Json::Count),
    ("messages.delivered", Json::Count),
    ("messages.received", Json::Count),
    ("slow_disconnects", Json::Count),
    ("uptime_seconds", Json::Count),
];

/// `stats` of one node: its answer to `GET /api/broadcast/stats` (shaped by [`STATS`]).
pub(super) fn print_stats(s: &Value) -> Result<(), CliError> {
    say!("📊 Broadcasting System Statistics");
    say!("================================");
    say!("📡 WebSocket Channels:");
    let channels = s["channels"].as_object().cloned().unwrap_or_default();
    if channels.is_empty() {
        say!("  (no active channels)");
    }
    for (name, c) in &channels {
        let kind = c["kind"].as_str().unwrap_or("public");
        match c["members"].as_u64() {
            Some(m) => say!(
                "  • {name}: {} ({kind}, {})",
                super::client::count(c["subscribers"].as_u64().unwrap_or(0), "connection", "connections"),
                super::client::count(m, "member", "members")
            ),
            None => say!(
                "  • {name}: {} ({kind})",
                super::client::count(c["subscribers"].as_u64().unwrap_or(0), "connection", "connections")
            ),
        }
    }
    say!();
    say!("🔧 Broadcast Configuration:");
    say!("  • Default Driver: {}", s["driver"].as_str().unwrap_or("unknown"));
    say!("  • Total Active Channels: {}", channels.len());
    say!("  • Connections: {}", s["connections"]);
    let m = &s["messages"];
    say!(
        "  • Messages: {} published, {} delivered, {} received",
        m["published"],
        m["delivered"],
        m["received"]
    );
    say!("  • Slow consumers disconnected: {}", s["slow_disconnects"]);
    say!("  • Uptime: {}s", s["uptime_seconds"]);
    let apps = s["apps"].as_object().cloned().unwrap_or_default();
    if !apps.is_empty() {
        say!();
        say!("🏢 Apps:");
        for (id, a) in &apps {
            say!(
                "  • {id}: {} connections, {} channels, {} subscriptions, {} published, {} delivered",
                a["connections"],
                a["channels"],
                a["subscriptions"],
                a["published"],
                a["delivered"]
            );
        }
    }
    Ok(())
}

pub(super) async fn channels(client: &ApiClient) -> Result<(), CliError> {
    let shape = [
        ("channels", Json::Array),
        ("channels.*.name", Json::Text),
        ("channels.*.kind", Json::Text),
        ("channels.*.subscribers", Json::Count),
        ("channels.*.members", Json::OptionalCount),
    ];
    let body = client.get_shaped("/api/broadcast/channels", &shape).await?;
    let list = body["channels"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        say!("No active channels");
        return Ok(());
    }
    let width = list
        .iter()
        .filter_map(|c| c["name"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(7)
        .max(7);
    say!(
        "{:<width$}  {:<8}  {:>11}  {:>7}",
        "CHANNEL",
        "KIND",
        "SUBSCRIBERS",
        "MEMBERS"
    );
    for c in &list {
        // Numbers as numbers: a JSON value ignores the column width.
        let members = c["members"].as_u64().map_or_else(|| "-".to_string(), |m| m.to_string());
        say!(
            "{:<width$}  {:<8}  {:>11}  {members:>7}",
            c["name"].as_str().unwrap_or(""),
            c["kind"].as_str().unwrap_or(""),
            c["subscribers"].as_u64().unwrap_or(0)
        );
    }
    say!("{} channel(s)", list.len());
    Ok(())
}

pub(super) async fn history(
    client: &ApiClient,
    channel: &str,
    since: Option<&str>,
    limit: usize,
) -> Result<(), CliError> {
    let mut path = format!("/api/broadcast/channels/{channel}/history?limit={limit}");
    if let Some(since) = since {
        path.push_str(&format!("&since={since}"));
    }
    let shape = [
        ("position.epoch", Json::Text),
        ("position.offset", Json::Count),
        ("first", Json::Count),
        ("messages", Json::Array),
        ("messages.*.event", Json::Text),
        ("messages.*.timestamp", Json::Text),
        ("messages.*.position.offset", Json::Count),
    ];
    let page = client.get_shaped(&path, &shape).await?;
    let position = &page["position"];
    say!(
        "{} at {}:{} (oldest kept: {})",
        page["channel"].as_str().unwrap_or(channel),
        position["epoch"].as_str().unwrap_or("?"),
        position["offset"].as_u64().unwrap_or(0),
        page["first"].as_u64().unwrap_or(0)
    );
    if page["continuous"] == false {
        say!(
            "⚠️  the history does not reach back to {} (lost, or older than what is kept)",
            since.unwrap_or("")
        );
    }
    let messages = page["messages"].as_array().cloned().unwrap_or_default();
    if messages.is_empty() {
        say!("No messages");
    }
    for m in &messages {
        say!(
            "{:>8}  {}  {:<24}  {}",
            m["position"]["offset"].as_u64().unwrap_or(0),
            m["timestamp"].as_str().unwrap_or(""),
            m["event"].as_str().unwrap_or(""),
            m["data"]
        );
    }
    if page["more"] == true {
        if let Some(last) = messages.last() {
            say!(
                "more: --since {}:{}",
                last["position"]["epoch"].as_str().unwrap_or(""),
                last["position"]["offset"].as_u64().unwrap_or(0)
            );
        }
    }
    Ok(())
}

pub(super) async fn ping(client: &ApiClient, channel: &str, interval: f64, count: Option<u64>) -> Result<(), CliError> {
    let interval = seconds(interval, "--interval")?;
    client.check().await?;
    match count {
        Some(n) => say!("📡 Pinging channel {channel} every {interval:?}, {n} time(s)"),
        None => say!("📡 Pinging channel {channel} every {interval:?} until stopped (Ctrl-C, or --count N)"),
    }
    let mut sequence = 0u64;
    loop {
        sequence += 1;
        let data = json!({"sequence": sequence, "timestamp": now_rfc3339()});
        let reached = client.publish(channel, "ping", data).await?;
        say!("  ping #{sequence} → {channel} ({reached} socket(s))");
        if count.is_some_and(|c| sequence >= c) {
            break;
        }
        tokio::time::sleep(interval).await;
    }
    say!("✅ Sent {sequence} ping(s)");
    Ok(())
}

pub(super) async fn notify_user(
    client: &ApiClient,
    user_id: &str,
    title: &str,
    message: &str,
    action_url: Option<&str>,
) -> Result<(), CliError> {
    let channel = user_channel(user_id);
    let reached = client
        .publish(
            &channel,
            NOTIFICATION_EVENT,
            notification_payload(title, message, action_url),
        )
        .await?;
    say!("🔔 Notification sent to user {user_id} on {channel} ({reached} socket(s))");
    Ok(())
}

pub(super) async fn system_alert(
    client: &ApiClient,
    level: &str,
    message: &str,
    action_required: bool,
) -> Result<(), CliError> {
    let reached = client
        .publish(
            SYSTEM_ALERT_CHANNEL,
            SYSTEM_ALERT_EVENT,
            system_alert_payload(level, message, action_required),
        )
        .await?;
    say!("🚨 System alert ({level}) sent on {SYSTEM_ALERT_CHANNEL} ({reached} socket(s))");
    Ok(())
}

/// Samples the cluster (or `node`) every `interval`: the rates are the server's, computed
/// per node from two of its cards, so they stay right through a load balancer.
pub(super) async fn monitor(
    client: &ApiClient,
    duration: u64,
    interval: f64,
    node: Option<&str>,
) -> Result<(), CliError> {
    let interval = seconds(interval, "--interval")?;
    let tty = std::io::stdout().is_terminal();
    client.check().await?;
    let start = Instant::now();
    let end = start + Duration::from_secs(duration);
    match node {
        Some(id) => say!(
            "👀 Monitoring node {} through {} for {duration}s (Ctrl-C to stop)",
            super::client::escaped(id),
            client.base()
        ),
        None => say!("👀 Monitoring {} for {duration}s (Ctrl-C to stop)", client.base()),
    }
    let mut peak_connections = 0u64;
    // On a terminal: one line refreshed in place, with the time left as a bar.
    let bar = tty.then(|| {
        let bar = indicatif::ProgressBar::new(duration.max(1));
        if let Ok(style) = indicatif::ProgressStyle::with_template("[{bar:20}] {pos:>4}/{len}s {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    loop {
        let (connections, channels, published_rate, delivered_rate) = super::cluster::sample(client, node).await?;
        peak_connections = peak_connections.max(connections);
        let figures = format!(
            "connections: {connections} | channels: {channels} | published/s: {published_rate:.1} | delivered/s: {delivered_rate:.1}"
        );
        match &bar {
            Some(bar) => {
                bar.set_position(start.elapsed().as_secs().min(duration));
                bar.set_message(figures);
            }
            None => say!("⏱  {:>4}s | {figures}", start.elapsed().as_secs()),
        }
        if Instant::now() + interval > end {
            break;
        }
        tokio::time::sleep(interval).await;
    }
    if let Some(bar) = bar {
        bar.finish();
    }
    say!(
        "✅ Monitoring finished: peak {}",
        super::client::count(peak_connections, "connection", "connections")
    );
    Ok(())
}

fn seconds(value: f64, flag: &str) -> Result<Duration, CliError> {
    if value.is_finite() && value > 0.0 && value < 86_400.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(CliError::Usage(format!(
            "{flag} must be a number of seconds greater than 0, got {value}"
        )))
    }
}
