//! `GET /metrics`: Prometheus text from a recorder owned by this server (the library
//! never installs a process-wide recorder that would fight the application's own).
//!
//! Gauges and totals of the hub are read at scrape time from the same snapshot as
//! `/api/broadcast/stats`; lifecycle counters (connections opened and closed per
//! protocol, channels occupied and vacated, presence members, client events) are counted
//! by an observer of the node's lifecycle events.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use metrics::{counter, describe_counter, describe_gauge, gauge, with_local_recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::credentials::bearer;
use super::{ApiError, AppState};
use crate::cluster::Broker;
use crate::hub::Protocol;
use crate::lifecycle::{Lifecycle, LifecycleEvent};

/// Lifecycle events queued for the metrics observer before it misses some.
const OBSERVER_QUEUE: usize = 4096;

/// The server's Prometheus recorder, and the `app` label of the default app's channels
/// (its id, as on every `app`-labelled family; `default` when no app is configured).
pub(crate) struct Metrics(PrometheusRecorder, String);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// A family's kind, for its `# TYPE` (and `# HELP`) lines.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// Every family the recorder renders, with its help text.
const FAMILIES: &[(&str, Kind, &str)] = &[
    ("rustaxum_build_info", Kind::Gauge, "1, labelled with the server's version"),
    ("rustaxum_tls_certificate_expiry_timestamp_seconds", Kind::Gauge, "when the served TLS certificate expires (Unix seconds; only with BROADCAST_TLS_CERT)"),
    ("rustaxum_connections", Kind::Gauge, "open WebSocket connections on this node"),
    ("rustaxum_protocol_connections", Kind::Gauge, "open WebSocket connections on this node by protocol (native, pusher, emithub, rtc)"),
    ("rustaxum_channels", Kind::Gauge, "channels with at least one subscriber on this node"),
    ("rustaxum_connections_total", Kind::Counter, "WebSocket connections accepted since start"),
    ("rustaxum_connections_opened_total", Kind::Counter, "sessions opened, by protocol"),
    ("rustaxum_connections_closed_total", Kind::Counter, "sessions closed, by protocol"),
    ("rustaxum_messages_published_total", Kind::Counter, "messages published into this node's hub"),
    ("rustaxum_messages_delivered_total", Kind::Counter, "messages queued to sockets (one per socket per message)"),
    ("rustaxum_messages_received_total", Kind::Counter, "frames received from clients"),
    ("rustaxum_frames_encoded_total", Kind::Counter, "frames serialised (once per message and wire protocol)"),
    ("rustaxum_frames_compressed_total", Kind::Counter, "frames compressed for permessage-deflate sockets (once per message, wire protocol and window size)"),
    ("rustaxum_compression_bytes_total", Kind::Counter, "bytes of the compressed frames, before and after compression (stage=before|after)"),
    ("rustaxum_slow_consumer_disconnects_total", Kind::Counter, "sockets closed with 4100 because their outbound queue was full"),
    ("rustaxum_lifecycle_events_dropped_total", Kind::Counter, "lifecycle events an observer (metrics, webhooks) was too slow to see"),
    ("rustaxum_broadcast_queue_pending", Kind::Gauge, "queued broadcasts (ShouldQueue) not yet sent"),
    ("rustaxum_broadcast_queue_failed", Kind::Gauge, "queued broadcasts that failed every retry"),
    ("rustaxum_uptime_seconds", Kind::Gauge, "seconds since the hub started"),
    ("rustaxum_channels_occupied_total", Kind::Counter, "channels that got their first subscriber on this node, by app"),
    ("rustaxum_channels_vacated_total", Kind::Counter, "channels that lost their last subscriber on this node, by app"),
    ("rustaxum_presence_members_added_total", Kind::Counter, "presence members added, by app"),
    ("rustaxum_presence_members_removed_total", Kind::Counter, "presence members removed, by app"),
    ("rustaxum_client_events_total", Kind::Counter, "client events (whispers) sent, by app"),
    ("rustaxum_app_connections", Kind::Gauge, "open connections of each app on this node"),
    ("rustaxum_app_channels", Kind::Gauge, "occupied channels of each app on this node"),
    ("rustaxum_app_subscriptions", Kind::Gauge, "subscriptions of each app on this node"),
    ("rustaxum_app_messages_published_total", Kind::Counter, "messages published on each app's channels"),
    ("rustaxum_app_messages_delivered_total", Kind::Counter, "messages queued to each app's sockets"),
    ("rustaxum_redis_healthy", Kind::Gauge, "1 while the Redis backend answers and the subscription is up"),
    ("rustaxum_redis_events_total", Kind::Counter, "Redis broker events by kind (published, publish_failures, received, delivered_locally: received and delivered to at least one local socket, invalid, subscriptions, subscription_losses)"),
    ("rustaxum_redis_listening", Kind::Gauge, "Redis channels this node listens to (those of its channels with local subscribers)"),
    ("rustaxum_redis_circuit_opened_total", Kind::Counter, "times the Redis circuit breaker opened"),
    ("rustaxum_webhook_events_total", Kind::Counter, "webhook events by outcome (delivered, failed, dropped)"),
    ("rustaxum_webhook_requests_total", Kind::Counter, "webhook HTTP requests sent"),
    ("rustaxum_webhook_retries_total", Kind::Counter, "webhook requests retried"),
    ("rustaxum_history_channels", Kind::Gauge, "channels with kept history"),
    ("rustaxum_history_messages", Kind::Gauge, "messages kept in history"),
    ("rustaxum_history_bytes", Kind::Gauge, "bytes of kept history (memory store)"),
    ("rustaxum_history_memory_limit_bytes", Kind::Gauge, "BROADCAST_HISTORY_MEMORY_LIMIT"),
    ("rustaxum_history_appended_total", Kind::Counter, "messages appended to history"),
    ("rustaxum_history_failures_total", Kind::Counter, "history appends or reads that failed"),
    ("rustaxum_history_too_large_total", Kind::Counter, "messages too large to keep in the memory store"),
    ("rustaxum_history_recoveries_total", Kind::Counter, "recoveries by outcome (recovered, not_recovered, capped)"),
    ("process_resident_memory_bytes", Kind::Gauge, "resident memory of the process"),
    ("process_open_fds", Kind::Gauge, "open file descriptors (each socket is one)"),
    ("process_max_fds", Kind::Gauge, "the open files limit"),
    ("process_start_time_seconds", Kind::Gauge, "start time of the process since the Unix epoch"),
];

impl Metrics {
    /// A recorder with every family described; `default_app` labels the default app's
    /// channels.
    pub(crate) fn new(default_app: Option<&str>) -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let app = default_app.unwrap_or(DEFAULT_APP_LABEL).to_string();
        with_local_recorder(&recorder, || {
            for (name, kind, help) in FAMILIES {
                match kind {
                    Kind::Counter => describe_counter!(*name, *help),
                    Kind::Gauge => describe_gauge!(*name, *help),
                }
            }
            register_at_zero(&app);
        });
        Self(recorder, app)
    }
}

/// Every counter at zero (with the label values known at start), so each family exists
/// from the first scrape: `rate()` has no gap before the first event and `absent()` no
/// false alarm. Gauges are set by every scrape.
fn register_at_zero(app: &str) {
    let plain = [
        "rustaxum_connections_total",
        "rustaxum_messages_published_total",
        "rustaxum_messages_delivered_total",
        "rustaxum_messages_received_total",
        "rustaxum_frames_encoded_total",
        "rustaxum_frames_compressed_total",
        "rustaxum_slow_consumer_disconnects_total",
        "rustaxum_lifecycle_events_dropped_total",
        "rustaxum_redis_circuit_opened_total",
        "rustaxum_webhook_requests_total",
        "rustaxum_webhook_retries_total",
        "rustaxum_history_appended_total",
        "rustaxum_history_failures_total",
        "rustaxum_history_too_large_total",
    ];
    for name in plain {
        counter!(name).absolute(0);
    }
    for p in [Protocol::Native, Protocol::Pusher, Protocol::EmitHub, Protocol::Rtc] {
        counter!("rustaxum_connections_opened_total", "protocol" => protocol_label(p)).absolute(0);
        counter!("rustaxum_connections_closed_total", "protocol" => protocol_label(p)).absolute(0);
    }
    for name in [
        "rustaxum_channels_occupied_total",
        "rustaxum_channels_vacated_total",
        "rustaxum_presence_members_added_total",
        "rustaxum_presence_members_removed_total",
        "rustaxum_client_events_total",
        "rustaxum_app_messages_published_total",
        "rustaxum_app_messages_delivered_total",
    ] {
        counter!(name, "app" => app.to_string()).absolute(0);
    }
    for stage in ["before", "after"] {
        counter!("rustaxum_compression_bytes_total", "stage" => stage).absolute(0);
    }
    for kind in REDIS_EVENTS {
        counter!("rustaxum_redis_events_total", "kind" => kind).absolute(0);
    }
    for outcome in ["delivered", "failed", "dropped"] {
        counter!("rustaxum_webhook_events_total", "outcome" => outcome).absolute(0);
    }
    for outcome in ["recovered", "not_recovered", "capped"] {
        counter!("rustaxum_history_recoveries_total", "outcome" => outcome).absolute(0);
    }
}

/// The kinds of `rustaxum_redis_events_total`.
const REDIS_EVENTS: [&str; 7] = [
    "published",
    "publish_failures",
    "received",
    "delivered_locally",
    "invalid",
    "subscriptions",
    "subscription_losses",
];

/// The process's own figures, from `/proc` (Linux; nothing elsewhere).
fn process_metrics() {
    let p = super::stats::ProcessFigures::read();
    if let Some(start) = p.start_time_seconds {
        gauge!("process_start_time_seconds").set(start);
    }
    if let Some(bytes) = p.resident_bytes {
        gauge!("process_resident_memory_bytes").set(bytes as f64);
    }
    if let Some(fds) = p.open_fds {
        gauge!("process_open_fds").set(fds as f64);
    }
    if let Some(max) = p.max_fds {
        gauge!("process_max_fds").set(max as f64);
    }
}

fn protocol_label(p: Protocol) -> &'static str {
    match p {
        Protocol::Native => "native",
        Protocol::Pusher => "pusher",
        Protocol::EmitHub => "emithub",
        Protocol::Rtc => "rtc",
    }
}

impl Metrics {
    /// Counts `lifecycle`'s events until `stop` is cancelled.
    pub(crate) fn observe(self: &Arc<Self>, lifecycle: &Lifecycle, stop: CancellationToken, tasks: &TaskTracker) {
        let this = self.clone();
        lifecycle.observe(OBSERVER_QUEUE, LifecycleEvent::notable, stop, tasks, move |event| {
            with_local_recorder(&this.0, || count(&event, &this.1));
            std::future::ready(())
        });
    }
}

/// The `app` label of a channel's events: its app's id (the default app's for a channel
/// of the default namespace), as `rustaxum_app_*` label it.
fn app_label(channel: &crate::channel::Channel, default_app: &str) -> String {
    channel.app().unwrap_or(default_app).to_string()
}

use crate::protocol::stats::DEFAULT_APP_LABEL;

fn count(event: &LifecycleEvent, default_app: &str) {
    match event {
        LifecycleEvent::ConnectionOpened { protocol, .. } => {
            counter!("rustaxum_connections_opened_total", "protocol" => protocol_label(*protocol)).increment(1);
        }
        LifecycleEvent::ConnectionClosed { protocol, .. } => {
            counter!("rustaxum_connections_closed_total", "protocol" => protocol_label(*protocol)).increment(1);
        }
        LifecycleEvent::ChannelOccupied { channel } => {
            counter!("rustaxum_channels_occupied_total", "app" => app_label(channel, default_app)).increment(1);
        }
        LifecycleEvent::ChannelVacated { channel } => {
            counter!("rustaxum_channels_vacated_total", "app" => app_label(channel, default_app)).increment(1);
        }
        LifecycleEvent::MemberAdded { channel, .. } => {
            counter!("rustaxum_presence_members_added_total", "app" => app_label(channel, default_app)).increment(1);
        }
        LifecycleEvent::MemberRemoved { channel, .. } => {
            counter!("rustaxum_presence_members_removed_total", "app" => app_label(channel, default_app)).increment(1);
        }
        LifecycleEvent::ClientEvent { channel, .. } => {
            counter!("rustaxum_client_events_total", "app" => app_label(channel, default_app)).increment(1);
        }
        LifecycleEvent::SubscriptionCount { .. } => {}
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(("api_token" = [])), responses((status = 200, content_type = "text/plain", body = String, description = "Prometheus text format"), (status = 401, description = "missing or wrong `Authorization: Bearer <token>`: BROADCAST_METRICS_TOKEN (read-only) or BROADCAST_API_TOKEN, when either is set", body = crate::protocol::ErrorBody)))]
pub(crate) async fn metrics(State(st): State<AppState>, _token: MetricsToken) -> impl IntoResponse {
    let hub = st.node.hub();
    let snapshot = hub.snapshot();
    let recorder: &Arc<Metrics> = &st.metrics;
    with_local_recorder(&recorder.0, || {
        gauge!("rustaxum_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        let expiry = st.tls_expiry.load(std::sync::atomic::Ordering::Relaxed);
        if expiry != 0 {
            gauge!("rustaxum_tls_certificate_expiry_timestamp_seconds").set(expiry as f64);
        }
        gauge!("rustaxum_connections").set(snapshot.connections as f64);
        for p in [Protocol::Native, Protocol::Pusher, Protocol::EmitHub, Protocol::Rtc] {
            gauge!("rustaxum_protocol_connections", "protocol" => protocol_label(p))
                .set(hub.protocol_connection_count(p) as f64);
        }
        process_metrics();
        gauge!("rustaxum_channels").set(snapshot.channels.len() as f64);
        counter!("rustaxum_connections_total").absolute(snapshot.connections_total);
        counter!("rustaxum_messages_published_total").absolute(snapshot.messages.published);
        counter!("rustaxum_messages_delivered_total").absolute(snapshot.messages.delivered);
        counter!("rustaxum_messages_received_total").absolute(snapshot.messages.received);
        counter!("rustaxum_frames_encoded_total").absolute(snapshot.messages.encoded);
        let (compressed, before, after) = st.compression.snapshot();
        counter!("rustaxum_frames_compressed_total").absolute(compressed);
        counter!("rustaxum_compression_bytes_total", "stage" => "before").absolute(before);
        counter!("rustaxum_compression_bytes_total", "stage" => "after").absolute(after);
        counter!("rustaxum_slow_consumer_disconnects_total").absolute(snapshot.slow_disconnects);
        counter!("rustaxum_lifecycle_events_dropped_total").absolute(st.node.lifecycle().dropped());
        gauge!("rustaxum_broadcast_queue_pending").set(st.manager.pending_broadcasts() as f64);
        gauge!("rustaxum_broadcast_queue_failed").set(st.manager.failed_broadcasts().len() as f64);
        gauge!("rustaxum_uptime_seconds").set(snapshot.uptime_seconds as f64);
        for (app, a) in crate::protocol::stats::app_stats(&st) {
            gauge!("rustaxum_app_connections", "app" => app.clone()).set(a.connections as f64);
            gauge!("rustaxum_app_channels", "app" => app.clone()).set(a.hub.channels as f64);
            gauge!("rustaxum_app_subscriptions", "app" => app.clone()).set(a.hub.subscriptions as f64);
            counter!("rustaxum_app_messages_published_total", "app" => app.clone()).absolute(a.hub.published);
            counter!("rustaxum_app_messages_delivered_total", "app" => app).absolute(a.hub.delivered);
        }
        if let Some(broker) = &st.cluster {
            let status = broker.status();
            gauge!("rustaxum_redis_healthy").set(if broker.healthy() { 1.0 } else { 0.0 });
            let values = [
                status.published,
                status.publish_failures,
                status.received,
                status.delivered_locally,
                status.invalid,
                status.subscriptions,
                status.subscription_losses,
            ];
            for (kind, value) in REDIS_EVENTS.into_iter().zip(values) {
                counter!("rustaxum_redis_events_total", "kind" => kind).absolute(value);
            }
            counter!("rustaxum_redis_circuit_opened_total").absolute(status.circuit_opened_total);
            if let Some(listening) = status.listening {
                gauge!("rustaxum_redis_listening").set(listening as f64);
            }
        }
        if let Some(w) = &st.webhooks {
            let w = w.stats();
            for (outcome, value) in [("delivered", w.delivered), ("failed", w.failed), ("dropped", w.dropped)] {
                counter!("rustaxum_webhook_events_total", "outcome" => outcome).absolute(value);
            }
            counter!("rustaxum_webhook_requests_total").absolute(w.requests);
            counter!("rustaxum_webhook_retries_total").absolute(w.retries);
        }
        if let Some(history) = st.node.fanout().history() {
            let h = history.stats();
            gauge!("rustaxum_history_channels").set(h.usage.channels as f64);
            gauge!("rustaxum_history_messages").set(h.usage.messages as f64);
            gauge!("rustaxum_history_bytes").set(h.usage.bytes as f64);
            gauge!("rustaxum_history_memory_limit_bytes").set(h.memory_limit as f64);
            counter!("rustaxum_history_appended_total").absolute(h.appended);
            counter!("rustaxum_history_failures_total").absolute(h.failures);
            counter!("rustaxum_history_too_large_total").absolute(h.usage.too_large);
            for (outcome, value) in [
                ("recovered", h.recovered),
                ("not_recovered", h.not_recovered),
                ("capped", h.capped),
            ] {
                counter!("rustaxum_history_recoveries_total", "outcome" => outcome).absolute(value);
            }
        }
    });
    let mut text = recorder.0.handle().render();
    text.push_str(&hub.write_latency().prometheus(
        "rustaxum_write_latency_seconds",
        "time from the hub queueing a message for a socket to the socket writing it (one observation per written batch)",
    ));
    // The two names the RustAxum document's monitoring section promises, beside ours.
    text.push_str(&hub.broadcast_duration().prometheus(
        "broadcast_duration_seconds",
        "per message, the time from its publish reaching this node's hub to the last write to one of its sockets",
    ));
    text.push_str(&format!(
        "# HELP websocket_connections_total WebSocket connections accepted since start (every protocol)\n\
         # TYPE websocket_connections_total counter\nwebsocket_connections_total {}\n",
        snapshot.connections_total
    ));
    // Refused and failed HTTP answers (WebSocket upgrades included; probes left out).
    let (unauthorized, forbidden, throttled, server_errors) = st.cluster_view.answers.totals();
    text.push_str(&format!(
        "# HELP rustaxum_http_refusals_total HTTP requests refused: 401 (wrong or missing token or signature), 403 (not allowed), 429 (over a limit)\n\
         # TYPE rustaxum_http_refusals_total counter\n\
         rustaxum_http_refusals_total{{status=\"401\"}} {unauthorized}\n\
         rustaxum_http_refusals_total{{status=\"403\"}} {forbidden}\n\
         rustaxum_http_refusals_total{{status=\"429\"}} {throttled}\n\
         # HELP rustaxum_http_server_errors_total HTTP requests answered with a server error (5xx; probes left out)\n\
         # TYPE rustaxum_http_server_errors_total counter\n\
         rustaxum_http_server_errors_total {server_errors}\n"
    ));
    // A float (the recorder's counters are whole numbers: CPU time in whole seconds made
    // rate() read 0 or jump).
    if let Some(cpu) = super::stats::ProcessFigures::read().cpu_seconds {
        text.push_str(&format!(
            "# HELP process_cpu_seconds_total user and system CPU time of the process\n\
             # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}\n"
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Proof that a scrape may read `/metrics`: `Authorization: Bearer` with
/// `BROADCAST_METRICS_TOKEN` (read-only: it publishes nothing) or the API token; open
/// when neither is configured.
pub(crate) struct MetricsToken;

impl axum::extract::FromRequestParts<AppState> for MetricsToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, st: &AppState) -> Result<Self, ApiError> {
        let config = st.config.load();
        let accepted: Vec<&str> = [
            config.server.metrics_token.as_deref(),
            config.server.api_token.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let what = "metrics token (Authorization: Bearer <BROADCAST_METRICS_TOKEN or BROADCAST_API_TOKEN>)";
        let peer = super::credentials::peer_of(parts);
        super::credentials::check_secret(st, peer, &parts.headers, bearer(&parts.headers), &accepted, what)?;
        Ok(Self)
    }
}
