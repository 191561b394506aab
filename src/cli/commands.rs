//! The commands' bodies. Output follows the RustAxum broadcasting document.

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::client::{ApiClient, CliError};
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
    crate::server::init_tracing();
    if let Err(e) = super::apply_listen_args(&mut config, host, port, app_port.as_deref()) {
        eprintln!("❌ {e}");
        return ExitCode::from(2);
    }
    println!("🌐 Starting WebSocket server on port {}", config.server.port);
    match crate::server::serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("❌ {e}");
            ExitCode::from(1)
        }
    }
}

pub(super) async fn test(client: &ApiClient, channel: &str, message: &str) -> Result<(), CliError> {
    println!("🚀 Testing broadcast to channel: {channel}");
    let data = json!({"message": message, "source": "artisan", "timestamp": now_rfc3339()});
    let reached = client.publish(channel, "test", data).await?;
    println!("✅ Broadcast test completed successfully");
    println!("   delivered to {reached} socket(s) on this server");
    Ok(())
}

pub(super) async fn stats(client: &ApiClient) -> Result<(), CliError> {
    let s = client.get("/api/broadcast/stats").await?;
    println!("📊 Broadcasting System Statistics");
    println!("================================");
    println!("📡 WebSocket Channels:");
    let channels = s["channels"].as_object().cloned().unwrap_or_default();
    if channels.is_empty() {
        println!("  (no active channels)");
    }
    for (name, c) in &channels {
        let kind = c["kind"].as_str().unwrap_or("public");
        match c["members"].as_u64() {
            Some(m) => println!("  • {name}: {} connections ({kind}, {m} members)", c["subscribers"]),
            None => println!("  • {name}: {} connections ({kind})", c["subscribers"]),
        }
    }
    println!();
    println!("🔧 Broadcast Configuration:");
    println!("  • Default Driver: {}", s["driver"].as_str().unwrap_or("unknown"));
    println!("  • Total Active Channels: {}", channels.len());
    println!("  • Connections: {}", s["connections"]);
    let m = &s["messages"];
    println!(
        "  • Messages: {} published, {} delivered, {} received",
        m["published"], m["delivered"], m["received"]
    );
    println!("  • Slow consumers disconnected: {}", s["slow_disconnects"]);
    println!("  • Uptime: {}s", s["uptime_seconds"]);
    Ok(())
}

pub(super) async fn channels(client: &ApiClient) -> Result<(), CliError> {
    let body = client.get("/api/broadcast/channels").await?;
    let list = body["channels"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("No active channels");
        return Ok(());
    }
    let width = list
        .iter()
        .filter_map(|c| c["name"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(7)
        .max(7);
    println!("{:<width$}  {:<8}  {:>11}  MEMBERS", "CHANNEL", "KIND", "SUBSCRIBERS");
    for c in &list {
        let members = c["members"].as_u64().map_or_else(|| "-".to_string(), |m| m.to_string());
        println!(
            "{:<width$}  {:<8}  {:>11}  {members}",
            c["name"].as_str().unwrap_or(""),
            c["kind"].as_str().unwrap_or(""),
            c["subscribers"]
        );
    }
    println!("{} channel(s)", list.len());
    Ok(())
}

pub(super) async fn ping(client: &ApiClient, channel: &str, interval: f64, count: Option<u64>) -> Result<(), CliError> {
    let interval = seconds(interval, "--interval")?;
    println!("📡 Pinging channel {channel} every {:?}", interval);
    let mut sequence = 0u64;
    loop {
        sequence += 1;
        let data = json!({"sequence": sequence, "timestamp": now_rfc3339()});
        let reached = client.publish(channel, "ping", data).await?;
        println!("  ping #{sequence} → {channel} ({reached} socket(s))");
        if count.is_some_and(|c| sequence >= c) {
            break;
        }
        tokio::time::sleep(interval).await;
    }
    println!("✅ Sent {sequence} ping(s)");
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
    println!("🔔 Notification sent to user {user_id} on {channel} ({reached} socket(s))");
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
    println!("🚨 System alert ({level}) sent on {SYSTEM_ALERT_CHANNEL} ({reached} socket(s))");
    Ok(())
}

pub(super) async fn monitor(client: &ApiClient, duration: u64, interval: f64) -> Result<(), CliError> {
    let interval = seconds(interval, "--interval")?;
    let tty = std::io::stdout().is_terminal();
    let start = Instant::now();
    let end = start + Duration::from_secs(duration);
    println!("👀 Monitoring {} for {duration}s (Ctrl-C to stop)", client.base());
    let mut previous: Option<(Instant, Value)> = None;
    let mut peak_connections = 0u64;
    loop {
        let now = Instant::now();
        let s = client.get("/api/broadcast/stats").await?;
        let connections = s["connections"].as_u64().unwrap_or(0);
        peak_connections = peak_connections.max(connections);
        let (published_rate, delivered_rate) = match &previous {
            Some((t, p)) => {
                let dt = now.duration_since(*t).as_secs_f64().max(1e-3);
                (rate(&s, p, "published", dt), rate(&s, p, "delivered", dt))
            }
            None => (0.0, 0.0),
        };
        let line = format!(
            "⏱  {:>4}s | connections: {connections} | channels: {} | published/s: {published_rate:.1} | delivered/s: {delivered_rate:.1}",
            start.elapsed().as_secs(),
            s["channels"].as_object().map_or(0, |c| c.len()),
        );
        if tty {
            print!("\r\x1b[2K{line}");
            let _ = std::io::stdout().flush();
        } else {
            println!("{line}");
        }
        previous = Some((now, s));
        if Instant::now() + interval > end {
            break;
        }
        tokio::time::sleep(interval).await;
    }
    if tty {
        println!();
    }
    println!("✅ Monitoring finished: peak {peak_connections} connection(s)");
    Ok(())
}

fn rate(now: &Value, before: &Value, key: &str, dt: f64) -> f64 {
    let a = now["messages"][key].as_u64().unwrap_or(0);
    let b = before["messages"][key].as_u64().unwrap_or(0);
    a.saturating_sub(b) as f64 / dt
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
