//! The cluster through whichever node answers (a load balancer's pick): `stats`,
//! `channels` and `monitor` show the cluster's totals when the server is clustered, and
//! one node's figures with `--node ID`. The figures come from `GET /api/broadcast/nodes`
//! (every node's card, with rates computed per node, so they stay right whichever node
//! answers) and `GET /api/broadcast/stats?scope=cluster` (channels summed over nodes).

use serde_json::Value;

use super::client::{count, escaped, ApiClient, CliError, Json, Shape};

/// What the commands read of `GET /api/broadcast/nodes`.
const NODES: &[Shape<'static>] = &[
    ("clustered", Json::Bool),
    ("node", Json::Text),
    ("nodes", Json::Array),
    ("nodes.*.id", Json::Text),
    ("nodes.*.address", Json::Text),
    ("nodes.*.version", Json::Text),
    ("nodes.*.connections", Json::Count),
    ("nodes.*.channels", Json::Count),
    ("nodes.*.uptime_seconds", Json::Count),
    ("nodes.*.draining", Json::Bool),
    ("nodes.*.redis", Json::Text),
    ("nodes.*.published", Json::Count),
    ("nodes.*.delivered", Json::Count),
    ("totals.nodes", Json::Count),
    ("totals.degraded", Json::Count),
    ("totals.connections", Json::Count),
    ("totals.channels", Json::Count),
    ("totals.published", Json::Count),
    ("totals.delivered", Json::Count),
    ("totals.rates.published", Json::Number),
    ("totals.rates.delivered", Json::Number),
];

/// The cluster as the answering node sees it, narrowed to `node` when given (an unknown
/// id is an error naming the live ones).
pub(super) async fn nodes(client: &ApiClient, node: Option<&str>) -> Result<Value, CliError> {
    let view = client.get_shaped("/api/broadcast/nodes", NODES).await?;
    if let Some(id) = node {
        let found = view["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|c| c["id"] == id))
            .cloned();
        return found.ok_or_else(|| {
            let live: Vec<String> = view["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["id"].as_str().map(escaped))
                .collect();
            CliError::Usage(format!(
                "no live node {:?}; live nodes: {}",
                escaped(id),
                live.join(", ")
            ))
        });
    }
    Ok(view)
}

/// `artisan broadcast stats [--node ID]`: the cluster's totals when the server is
/// clustered, else the node's own figures; one node's card with `--node`.
pub(super) async fn stats_command(client: &ApiClient, node: Option<&str>) -> Result<(), CliError> {
    if let Some(id) = node {
        node_stats(&nodes(client, Some(id)).await?);
        return Ok(());
    }
    let local = client
        .get_shaped("/api/broadcast/stats", super::commands::STATS)
        .await?;
    if local["redis"].is_object() {
        let view = nodes(client, None).await?;
        if view["clustered"] == true {
            return stats(client, &view).await;
        }
    }
    super::commands::print_stats(&local)
}

/// `artisan broadcast channels [--node ID]`: each channel's subscribers summed over the
/// cluster's nodes (or this node's list on a single node); `--node` lists a node's own
/// channels when it is the one that answers, else says where to ask.
pub(super) async fn channels_command(client: &ApiClient, node: Option<&str>) -> Result<(), CliError> {
    if let Some(id) = node {
        let view = nodes(client, None).await?;
        if view["node"] == id {
            return super::commands::channels(client).await;
        }
        let card = nodes(client, Some(id)).await?;
        return Err(CliError::Usage(format!(
            "{} answered, not {}: ask that node for its own channels (--server {})",
            escaped(view["node"].as_str().unwrap_or("")),
            escaped(id),
            escaped(card["address"].as_str().unwrap_or(""))
        )));
    }
    channels(client).await
}

/// `stats` of a cluster: every node on a line, then the cluster's channels and totals.
async fn stats(client: &ApiClient, view: &Value) -> Result<(), CliError> {
    let shape = [
        ("channels", Json::Object),
        ("channels.*.kind", Json::Text),
        ("channels.*.subscribers", Json::Count),
        ("messages.published", Json::Count),
        ("messages.delivered", Json::Count),
        ("messages.received", Json::Count),
    ];
    let cluster = client.get_shaped("/api/broadcast/stats?scope=cluster", &shape).await?;
    let t = &view["totals"];
    say!(
        "📊 Broadcasting System Statistics (cluster of {})",
        count(t["nodes"].as_u64().unwrap_or(0), "node", "nodes")
    );
    say!("================================");
    say!("🖧 Nodes:");
    for n in view["nodes"].as_array().into_iter().flatten() {
        node_line(n, n["id"] == view["node"]);
    }
    say!();
    say!("📡 WebSocket Channels (subscribers on every node):");
    let channels = cluster["channels"].as_object().cloned().unwrap_or_default();
    if channels.is_empty() {
        say!("  (no active channels)");
    }
    for (name, c) in &channels {
        say!(
            "  • {}: {} ({})",
            escaped(name),
            count(c["subscribers"].as_u64().unwrap_or(0), "connection", "connections"),
            escaped(c["kind"].as_str().unwrap_or("public"))
        );
    }
    say!();
    say!("🔧 Cluster totals:");
    say!("  • Total Active Channels: {}", channels.len());
    say!("  • Connections: {}", t["connections"]);
    let m = &cluster["messages"];
    say!(
        "  • Messages: {} published, {} delivered, {} received",
        m["published"],
        m["delivered"],
        m["received"]
    );
    say!(
        "  • Now: {:.1} published/s, {:.1} delivered/s",
        t["rates"]["published"].as_f64().unwrap_or(0.0),
        t["rates"]["delivered"].as_f64().unwrap_or(0.0)
    );
    match t["degraded"].as_u64().unwrap_or(0) {
        0 => say!("  • Every node serving"),
        n => say!("  • ⚠️  {} degraded or draining", count(n, "node", "nodes")),
    }
    Ok(())
}

/// `stats --node ID`: that node's card.
fn node_stats(card: &Value) {
    say!("📊 Node {}", escaped(card["id"].as_str().unwrap_or("")));
    say!("================================");
    node_line(card, false);
    let p = &card["protocols"];
    say!(
        "  • Connections by protocol: native {}, pusher {}, emithub {}, typed frames {}",
        p["native"].as_u64().unwrap_or(0),
        p["pusher"].as_u64().unwrap_or(0),
        p["emithub"].as_u64().unwrap_or(0),
        p["rtc"].as_u64().unwrap_or(0)
    );
    say!(
        "  • Messages: {} published, {} delivered, {} received",
        card["published"],
        card["delivered"],
        card["received"].as_u64().unwrap_or(0)
    );
    let r = &card["refused"];
    say!(
        "  • Refused: {} unauthorized, {} forbidden, {} throttled; failures: {} server errors, {} Redis publishes, {} slow clients, {} webhooks",
        r["unauthorized"].as_u64().unwrap_or(0),
        r["forbidden"].as_u64().unwrap_or(0),
        r["throttled"].as_u64().unwrap_or(0),
        card["server_errors"].as_u64().unwrap_or(0),
        card["publish_failures"].as_u64().unwrap_or(0),
        card["slow_disconnects"].as_u64().unwrap_or(0),
        card["webhook_failures"].as_u64().unwrap_or(0)
    );
    say!(
        "  • Memory {} MiB, {} open files",
        card["memory_bytes"].as_u64().unwrap_or(0) / (1 << 20),
        card["open_files"].as_u64().unwrap_or(0)
    );
}

fn node_line(n: &Value, this: bool) {
    let rates = &n["rates"];
    let state = if n["draining"] == true {
        "draining".to_string()
    } else {
        format!("Redis {}", escaped(n["redis"].as_str().unwrap_or("")))
    };
    say!(
        "  • {}{} at {} (v{}, up {}s): {}, {} channels, {:.1} in/s, {:.1} out/s, {}",
        escaped(n["id"].as_str().unwrap_or("")),
        if this { " (answered)" } else { "" },
        escaped(n["address"].as_str().unwrap_or("")),
        escaped(n["version"].as_str().unwrap_or("")),
        n["uptime_seconds"],
        count(n["connections"].as_u64().unwrap_or(0), "connection", "connections"),
        n["channels"],
        rates["published"].as_f64().unwrap_or(0.0),
        rates["delivered"].as_f64().unwrap_or(0.0),
        state
    );
}

/// `channels` of a cluster: each channel with its subscribers summed over the nodes (a
/// single node, which calls itself `local` there, lists its own with members).
async fn channels(client: &ApiClient) -> Result<(), CliError> {
    let shape = [
        ("channels", Json::Object),
        ("channels.*.kind", Json::Text),
        ("channels.*.subscribers", Json::Count),
        ("nodes", Json::Array),
    ];
    let cluster = client.get_shaped("/api/broadcast/stats?scope=cluster", &shape).await?;
    if cluster["nodes"] == serde_json::json!(["local"]) {
        return super::commands::channels(client).await;
    }
    let list = cluster["channels"].as_object().cloned().unwrap_or_default();
    let nodes = cluster["nodes"].as_array().map_or(0, Vec::len) as u64;
    if list.is_empty() {
        say!("No active channels on {}", count(nodes, "node", "nodes"));
        return Ok(());
    }
    let width = list.keys().map(|k| escaped(k).len()).max().unwrap_or(7).max(7);
    say!("{:<width$}  {:<8}  {:>11}", "CHANNEL", "KIND", "SUBSCRIBERS");
    for (name, c) in &list {
        say!(
            "{:<width$}  {:<8}  {:>11}",
            escaped(name),
            escaped(c["kind"].as_str().unwrap_or("")),
            c["subscribers"].as_u64().unwrap_or(0)
        );
    }
    say!("{} channel(s) on {}", list.len(), count(nodes, "node", "nodes"));
    Ok(())
}

/// One `monitor` sample: connections, channels and rates of the cluster (or of `node`),
/// as the server computed them per node from its cards.
pub(super) async fn sample(client: &ApiClient, node: Option<&str>) -> Result<(u64, u64, f64, f64), CliError> {
    let v = nodes(client, node).await?;
    let figures = if node.is_some() { &v } else { &v["totals"] };
    Ok((
        figures["connections"].as_u64().unwrap_or(0),
        figures["channels"].as_u64().unwrap_or(0),
        figures["rates"]["published"].as_f64().unwrap_or(0.0),
        figures["rates"]["delivered"].as_f64().unwrap_or(0.0),
    ))
}
