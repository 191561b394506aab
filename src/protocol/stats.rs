//! A node's figures, in one place for the native stats API, `/metrics` and the dashboard:
//! the hub's snapshot (with presence member counts), each app's figures, the broadcast
//! queue, Redis, history and webhooks.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::channel::ChannelKind;
use crate::cluster::redis::BrokerStatus;
use crate::hub::StatsSnapshot;
use crate::protocol::AppState;

/// The `app` label of the default app's channels (native clients share them).
pub(crate) const DEFAULT_APP_LABEL: &str = "default";

/// The hub's snapshot with presence member counts filled in.
pub(crate) async fn snapshot_with_members(st: &AppState) -> StatsSnapshot {
    let mut snapshot = st.node.hub().snapshot();
    for (name, c) in snapshot.channels.iter_mut() {
        if c.kind == ChannelKind::Presence {
            c.members = st.node.presence().members(name).await.ok().map(|m| m.len());
        }
    }
    snapshot
}

/// The broadcast queue's figures.
#[derive(Debug, Serialize)]
pub(crate) struct QueueStats {
    /// Jobs waiting or running.
    pub pending: usize,
    /// Jobs that failed every try.
    pub failed: usize,
}

/// permessage-deflate on a node: its threshold and what it compressed.
#[derive(Debug, Serialize)]
pub(crate) struct CompressionStats {
    /// Messages of at least this many bytes go compressed to sockets that agreed;
    /// `None` when `BROADCAST_COMPRESSION=off`.
    pub threshold: Option<usize>,
    /// Frames compressed (once per message, protocol and window size, shared by every
    /// socket that agreed).
    pub frames: u64,
    /// Their bytes before compression.
    pub bytes_before: u64,
    /// Their bytes after.
    pub bytes_after: u64,
}

/// `GET /api/broadcast/stats` for this node.
#[derive(Debug, Serialize)]
pub(crate) struct NodeStats {
    /// The hub's figures.
    #[serde(flatten)]
    pub hub: StatsSnapshot,
    /// `local`, or `cluster` on a node without a cluster.
    pub scope: &'static str,
    /// `["local"]` when a cluster scope was asked of a single node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<&'static str>>,
    /// The default driver.
    pub driver: String,
    /// The Redis broker, when clustered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<BrokerStatus>,
    /// The broadcast queue.
    pub queue: QueueStats,
    /// Channel history, when some channels keep one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<crate::history::HistoryStats>,
    /// Webhook delivery, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<crate::webhooks::WebhookStats>,
    /// permessage-deflate on this node.
    pub compression: CompressionStats,
    /// Each app's figures on this node, by app id (`default` when no Pusher app is
    /// configured: the native protocol's channels).
    pub apps: BTreeMap<String, AppStats>,
}

/// One app's figures on this node.
#[derive(Debug, Serialize)]
pub(crate) struct AppStats {
    /// Connections open or opening (its Pusher sockets; for the default app also the
    /// native, EmitHub and typed-frame sockets).
    pub connections: usize,
    /// Channels, subscriptions and messages.
    #[serde(flatten)]
    pub hub: crate::hub::AppSnapshot,
}

/// Every app's figures on this node, by app id.
pub(crate) fn app_stats(st: &AppState) -> BTreeMap<String, AppStats> {
    let config = st.config.load();
    let apps = &config.pusher.apps;
    let mut by_namespace = st.node.hub().app_snapshots();
    let mut out = BTreeMap::new();
    for app in apps.iter() {
        let ns = apps.namespace(app).unwrap_or("");
        out.insert(
            app.id.clone(),
            AppStats {
                connections: st.node.app_connections(&app.id),
                hub: by_namespace.remove(ns).unwrap_or_default(),
            },
        );
    }
    if apps.is_empty() {
        let hub = by_namespace.remove("").unwrap_or_default();
        let connections = st.node.hub().connection_count();
        out.insert(DEFAULT_APP_LABEL.to_string(), AppStats { connections, hub });
    }
    out
}

/// The cluster's per-app sums keyed by app id, as the node stats are (nodes report them
/// by channel namespace, the default app's being `""`).
pub(crate) fn name_apps(st: &AppState, mut stats: Value) -> Value {
    let Some(by_namespace) = stats.get_mut("apps").and_then(Value::as_object_mut).map(std::mem::take) else {
        return stats;
    };
    let config = st.config.load();
    let default = config
        .pusher
        .apps
        .default_app()
        .map_or(DEFAULT_APP_LABEL, |a| a.id.as_str());
    let named: serde_json::Map<String, Value> = by_namespace
        .into_iter()
        .map(|(ns, figures)| (if ns.is_empty() { default.to_string() } else { ns }, figures))
        .collect();
    stats["apps"] = Value::Object(named);
    stats
}

pub(crate) async fn node_stats(st: &AppState, scope: &'static str) -> NodeStats {
    NodeStats {
        apps: app_stats(st),
        hub: snapshot_with_members(st).await,
        scope,
        nodes: (scope == "cluster").then(|| vec!["local"]),
        driver: st.manager.default_driver_name(),
        redis: st.cluster.as_ref().map(|b| b.status()),
        queue: QueueStats {
            pending: st.manager.pending_broadcasts(),
            failed: st.manager.failed_broadcasts().len(),
        },
        history: st.node.fanout().history().map(|h| h.stats()),
        webhooks: st.webhooks.as_ref().map(|w| w.stats()),
        compression: {
            let (frames, bytes_before, bytes_after) = st.compression.snapshot();
            CompressionStats {
                threshold: st.config.load().websocket.compression.threshold(),
                frames,
                bytes_before,
                bytes_after,
            }
        },
    }
}

/// The process's own figures, from `/proc` (Linux; `None` elsewhere), for `/metrics` and
/// the node's card.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcessFigures {
    /// User and system CPU time, seconds (a fraction).
    pub(crate) cpu_seconds: Option<f64>,
    /// Resident memory, bytes.
    pub(crate) resident_bytes: Option<u64>,
    /// Open file descriptors.
    pub(crate) open_fds: Option<u64>,
    /// The open files limit (soft).
    pub(crate) max_fds: Option<u64>,
    /// When the process started, Unix seconds.
    pub(crate) start_time_seconds: Option<f64>,
}

impl ProcessFigures {
    /// Reads them now.
    pub(crate) fn read() -> Self {
        let mut out = Self::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // After the command name (in parentheses, which may hold spaces): fields 3 on.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            // /proc counts in USER_HZ, 100 on Linux.
            let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
            if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
                out.cpu_seconds = Some(user.saturating_add(system) as f64 / 100.0);
            }
            let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<u64>().ok()))
            });
            if let (Some(boot), Some(start)) = (boot, ticks(19)) {
                out.start_time_seconds = Some(boot as f64 + start as f64 / 100.0);
            }
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            out.resident_bytes = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb.saturating_mul(1024));
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            out.open_fds = Some(fds.count() as u64);
        }
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            out.max_fds = limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<u64>().ok());
        }
        out
    }
}
