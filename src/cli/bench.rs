//! Fan-out benchmark behind `artisan broadcast bench`.
//!
//! Connects `--connections` WebSockets to one channel of a running server, measures the
//! server's resident memory before and after (when `--server-pid` is given, Linux),
//! then publishes `--messages` events through the HTTP API. Every event carries its
//! send time; every socket records when it arrived. Reports deliveries per second and
//! p50/p99/max latency from publish to receipt.
//!
//! `--compress` makes the subscribers offer permessage-deflate (ws:// only) and reports
//! the bytes they read per delivery. Events carry realistic JSON (an order with items) of
//! about `--payload` bytes, so compression sees what an application sends.
//!
//! The clients run in this process, on the same machine as the server, so the figures
//! are a lower bound of what the server alone can do.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use clap::Args;

use super::client::{ApiClient, CliError};

/// Options of `artisan broadcast bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Sockets to connect.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Messages to publish.
    #[arg(long, default_value_t = 100)]
    pub messages: usize,
    /// Messages per second to publish (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Channel to use.
    #[arg(long, default_value = "bench")]
    pub channel: String,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// PID of the server, to report its memory per idle connection (Linux).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// More servers (cluster nodes) to spread the sockets over; events are still
    /// published through --server, so the others receive them through the cluster.
    #[arg(long)]
    pub also: Vec<String>,
    /// The subscribers' wire protocol.
    #[arg(long, value_enum, default_value_t = BenchProtocol::Native)]
    pub protocol: BenchProtocol,
    /// Subscribers offer permessage-deflate (RFC 7692; ws:// only); the report then
    /// includes the bytes they read per delivery.
    #[arg(long)]
    pub compress: bool,
    /// The Pusher app key subscribers use with `--protocol pusher`.
    #[arg(long, env = "PUSHER_APP_KEY", default_value = "bench-key")]
    pub pusher_key: String,
    /// The server.
    #[command(flatten)]
    pub target: super::Target,
}

/// The protocol benchmark subscribers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchProtocol {
    /// `/ws/{channel}`.
    Native,
    /// `/app/{key}?protocol=7` and `pusher:subscribe`.
    Pusher,
}

/// Connections opened at the same time while connecting.
const CONNECT_CONCURRENCY: usize = 256;

/// What one benchmark run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Sockets connected.
    pub connections: usize,
    /// Server memory per idle connection in bytes, when the server's PID was given.
    pub bytes_per_idle_connection: Option<f64>,
    /// Messages published.
    pub messages: usize,
    /// Copies received by all sockets.
    pub deliveries: usize,
    /// Deliveries per second, from the first publish to the last receipt.
    pub deliveries_per_second: f64,
    /// Median publish-to-receipt latency in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: f64,
    /// Worst latency in milliseconds.
    pub max_ms: f64,
    /// Server CPU time (user + system) per delivery it made, in microseconds, from the
    /// first publish to the last receipt, when the server's PID was given (Linux).
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Bytes the subscribers read per delivery while the events arrived (WebSocket
    /// framing included; ws:// only).
    pub wire_bytes_per_delivery: Option<f64>,
    /// Deliveries that arrived compressed.
    pub compressed_deliveries: Option<u64>,
}

/// A subscriber: over ws://, through the inflating client (counting the bytes it reads,
/// and offering compression with `--compress`); over wss://, tungstenite's client.
#[allow(clippy::large_enum_variant)] // one per socket, both variants large
enum Subscriber {
    Counted(crate::websocket::client::DeflateClient),
    Tls(tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>),
}

impl Subscriber {
    async fn connect(url: &str, tls: Option<tokio_tungstenite::Connector>, compress: bool) -> Result<Self, String> {
        if url.starts_with("ws://") {
            let (ws, _) = crate::websocket::client::connect(url, 1 << 20, compress)
                .await
                .map_err(|e| refused_hint(&e))?;
            return Ok(Self::Counted(ws));
        }
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(url, None, false, tls)
            .await
            .map_err(|e| refused_hint(&e))?;
        Ok(Self::Tls(ws))
    }

    async fn next(&mut self) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
        match self {
            Self::Counted(ws) => ws.next().await,
            Self::Tls(ws) => ws.next().await,
        }
    }

    async fn send(&mut self, message: Message) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        match self {
            Self::Counted(ws) => ws.send(message).await,
            Self::Tls(ws) => ws.send(message).await,
        }
    }

    /// Bytes read so far and messages that came compressed (ws:// only).
    fn counted(&self) -> Option<(u64, u64)> {
        match self {
            Self::Counted(ws) => Some((ws.get_ref().bytes_read(), ws.get_ref().inflated())),
            Self::Tls(_) => None,
        }
    }
}

/// Runs the benchmark and prints its report.
pub async fn run(client: &ApiClient, args: &BenchArgs) -> Result<(), CliError> {
    let report = measure(client, args).await?;
    say!("connections:          {}", report.connections);
    if let Some(b) = report.bytes_per_idle_connection {
        say!(
            "memory per idle conn: {:.1} KiB (server RSS growth / connections)",
            b / 1024.0
        );
    }
    say!(
        "messages:             {} × {} subscribers = {} deliveries",
        report.messages,
        report.connections,
        report.deliveries
    );
    say!("throughput:           {:.0} deliveries/s", report.deliveries_per_second);
    if let Some(bytes) = report.wire_bytes_per_delivery {
        say!(
            "on the wire:          {bytes:.0} bytes per delivery ({} of {} deliveries compressed)",
            report.compressed_deliveries.unwrap_or(0),
            report.deliveries
        );
    }
    if let Some(cpu) = report.server_cpu_us_per_delivery {
        say!("server CPU:           {cpu:.2} µs per delivery (user + system)");
    }
    say!(
        "latency:              p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        report.p50_ms,
        report.p99_ms,
        report.max_ms
    );
    say!("json: {}", serde_json::to_string(&report).unwrap_or_default());
    Ok(())
}

/// Runs the benchmark and returns the figures.
pub async fn measure(client: &ApiClient, args: &BenchArgs) -> Result<BenchReport, CliError> {
    let n = args.connections.max(1);
    let tls = client.connector();
    let mut bases = vec![client.ws_base()];
    for other in &args.also {
        bases.push(client.for_server(other)?.ws_base());
    }
    let urls: Vec<String> = bases
        .iter()
        .map(|b| match args.protocol {
            BenchProtocol::Native => format!("{b}/ws/{}", args.channel),
            BenchProtocol::Pusher => format!("{b}/app/{}?protocol=7", args.pusher_key),
        })
        .collect();
    let subscribe = match args.protocol {
        BenchProtocol::Native => None,
        BenchProtocol::Pusher => {
            Some(json!({"event": "pusher:subscribe", "data": {"channel": args.channel}}).to_string())
        }
    };
    let rss_before = args.server_pid.and_then(rss_bytes);

    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut connecting = Vec::with_capacity(n);
    for i in 0..n {
        let permits = permits.clone();
        let url = urls[i % urls.len()].clone();
        let subscribe = subscribe.clone();
        let tls = tls.clone();
        let compress = args.compress;
        connecting.push(tokio::spawn(async move {
            let _p = permits.acquire().await.map_err(|e| e.to_string())?;
            let mut ws = Subscriber::connect(&url, tls, compress).await?;
            if let Some(frame) = subscribe {
                // Pusher: connection_established first, then subscribe.
                ws.next().await;
                ws.send(Message::Text(frame.into())).await.map_err(|e| e.to_string())?;
            }
            // Wait for subscription_succeeded so the socket is counted as joined.
            match ws.next().await {
                Some(Ok(Message::Text(_))) => Ok(ws),
                other => Err(format!("unexpected greeting: {other:?}")),
            }
        }));
    }
    let mut sockets = Vec::with_capacity(n);
    let bar = progress(n as u64, "connecting");
    let channel = args.channel.clone();
    for c in connecting {
        let ws = c
            .await
            .map_err(|e| CliError::Bench(e.to_string()))?
            .map_err(|e| CliError::Bench(e.replace("{channel}", &channel)))?;
        sockets.push(ws);
        bar.inc(1);
    }
    bar.finish_and_clear();
    eprintln!("connected {n} sockets in {:.2?}", started.elapsed());

    tokio::time::sleep(Duration::from_secs(1)).await;
    let bytes_per_idle_connection = match (rss_before, args.server_pid.and_then(rss_bytes)) {
        // The measured server holds every len-th socket, starting with the first.
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / n.div_ceil(urls.len()) as f64),
        _ => None,
    };

    let messages = args.messages.max(1);
    let mut readers = Vec::with_capacity(n);
    for mut ws in sockets {
        readers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(messages);
            let mut last = Instant::now();
            let counted_before = ws.counted();
            while latencies.len() < messages {
                match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) => {
                        if let Some(sent) = sent_ns(t.as_str()) {
                            latencies.push(now_ns().saturating_sub(sent));
                            last = Instant::now();
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => break,
                }
            }
            let counted = match (counted_before, ws.counted()) {
                (Some((b0, c0)), Some((b1, c1))) => Some((b1 - b0, c1 - c0)),
                _ => None,
            };
            (latencies, last, counted)
        }));
    }

    let body = realistic_body(args.payload);
    let cpu_before = args.server_pid.and_then(cpu_seconds);
    let publish_start = Instant::now();
    let gap = (args.rate > 0).then(|| Duration::from_secs_f64(1.0 / args.rate as f64));
    let bar = progress(messages as u64, "publishing");
    for seq in 0..messages {
        let mut data = body.clone();
        data["seq"] = json!(seq);
        data["sent_ns"] = json!(now_ns());
        client.publish(&args.channel, "bench", data).await?;
        bar.inc(1);
        if let Some(gap) = gap {
            tokio::time::sleep(gap).await;
        }
    }
    bar.finish_and_clear();

    let mut all = Vec::with_capacity(n * messages);
    let mut last_receipt = publish_start;
    let mut wire: Option<(u64, u64)> = Some((0, 0));
    for r in readers {
        let (lat, last, counted) = r.await.map_err(|e| CliError::Bench(e.to_string()))?;
        all.extend(lat);
        last_receipt = last_receipt.max(last);
        wire = wire.zip(counted).map(|((b, c), (b1, c1))| (b + b1, c + c1));
    }
    if all.is_empty() {
        return Err(CliError::Bench("no message was received".into()));
    }
    let cpu = match (cpu_before, args.server_pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    // The measured server holds every len-th socket, starting with the first.
    let its_deliveries = all.len() as f64 * n.div_ceil(urls.len()) as f64 / n as f64;
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() - 1) as f64 * p) as usize] as f64 / 1e6;
    let elapsed = last_receipt.duration_since(publish_start).as_secs_f64().max(1e-9);
    Ok(BenchReport {
        connections: n,
        bytes_per_idle_connection,
        messages,
        deliveries: all.len(),
        deliveries_per_second: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        server_cpu_us_per_delivery: cpu.map(|c| c * 1e6 / its_deliveries.max(1.0)),
        wire_bytes_per_delivery: wire.map(|(bytes, _)| bytes as f64 / all.len() as f64),
        compressed_deliveries: wire.map(|(_, compressed)| compressed),
    })
}

/// An event's data of about `size` bytes of JSON as an application sends it (an order
/// with line items, ids, prices, names), without `seq` and `sent_ns` (set per message).
fn realistic_body(size: usize) -> serde_json::Value {
    const NAMES: [&str; 6] = [
        "Espresso beans 1kg",
        "Milk frother",
        "Ceramic mug",
        "Grinder burr set",
        "Pour-over kettle",
        "Paper filters x100",
    ];
    const WAREHOUSES: [&str; 3] = ["AMS-2", "FRA-1", "WAW-3"];
    let mut body = json!({"order": "ord_8f2c4a19e3", "status": "shipped", "items": []});
    let mut i: usize = 0;
    while body.to_string().len() + 40 < size {
        let item = json!({
            "sku": format!("SKU-{:05}", 1000 + i * 37 % 9000),
            "name": NAMES[i % NAMES.len()],
            "qty": 1 + i % 3,
            "price": 1299 + (i * 7919) % 5000,
            "wh": WAREHOUSES[i % WAREHOUSES.len()],
        });
        if let Some(items) = body["items"].as_array_mut() {
            items.push(item);
        }
        i += 1;
    }
    body
}

/// A progress bar on stderr (drawn only when stderr is a terminal).
fn progress(len: u64, what: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {per_sec}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Finds `sent_ns` and the digits after it without parsing the whole frame (Pusher
/// frames carry it inside a JSON-encoded string: `\"sent_ns\":123`).
fn sent_ns(frame: &str) -> Option<u64> {
    let i = frame.find("sent_ns")? + "sent_ns".len();
    let rest = frame[i..].trim_start_matches(['"', '\\', ':']);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Resident set size of a process in bytes (Linux `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time (user + system) a process has used, in seconds (Linux `/proc/PID/stat`).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; the fields after it do not.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Linux reports these in USER_HZ, 100 per second on every mainstream architecture.
    Some((utime + stime) as f64 / 100.0)
}

/// A refused WebSocket upgrade, with what to do about it: the benchmark's channel must
/// be public on the server.
fn refused_hint(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Http(resp) if matches!(resp.status().as_u16(), 401 | 403) => format!(
            "the server refused the channel {{channel}} ({}): it is not public there; start the server with \
             BROADCAST_PUBLIC_CHANNELS={{channel}} (or pass --channel with a public channel)",
            resp.status()
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_send_time() {
        assert_eq!(
            sent_ns(r#"{"data":{"seq":1,"sent_ns":123456789},"x":1}"#),
            Some(123456789)
        );
        assert_eq!(sent_ns(r#"{"data":{}}"#), None);
        assert_eq!(sent_ns(r#"{"event":"bench","data":"{\"sent_ns\":42}"}"#), Some(42));
    }

    #[test]
    fn reads_its_own_cpu_time() {
        let burn = (0..20_000_000u64).fold(0u64, |a, b| a.wrapping_add(b * b));
        assert!(burn > 0);
        let cpu = cpu_seconds(std::process::id()).expect("Linux /proc");
        assert!(cpu > 0.0, "{cpu}");
    }
}
