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
use metrics::{counter, gauge, with_local_recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::credentials::ApiToken;
use super::AppState;
use crate::cluster::Broker;
use crate::hub::Protocol;
use crate::lifecycle::{Lifecycle, LifecycleEvent};

/// Lifecycle events queued for the metrics observer before it misses some.
const OBSERVER_QUEUE: usize = 4096;

/// The server's Prometheus recorder.
pub(crate) struct Metrics(PrometheusRecorder);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self(PrometheusBuilder::new().build_recorder())
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
            with_local_recorder(&this.0, || count(&event));
            std::future::ready(())
        });
    }
}

/// The `app` label of a channel's events: its app id, or `default` for the default app.
fn app_label(channel: &crate::channel::Channel) -> String {
    channel.app().unwrap_or(DEFAULT_APP_LABEL).to_string()
}

use crate::protocol::stats::DEFAULT_APP_LABEL;

fn count(event: &LifecycleEvent) {
    match event {
        LifecycleEvent::ConnectionOpened { protocol, .. } => {
            counter!("rustaxum_connections_opened_total", "protocol" => protocol_label(*protocol)).increment(1);
        }
        LifecycleEvent::ConnectionClosed { protocol, .. } => {
            counter!("rustaxum_connections_closed_total", "protocol" => protocol_label(*protocol)).increment(1);
        }
        LifecycleEvent::ChannelOccupied { channel } => {
            counter!("rustaxum_channels_occupied_total", "app" => app_label(channel)).increment(1);
        }
        LifecycleEvent::ChannelVacated { channel } => {
            counter!("rustaxum_channels_vacated_total", "app" => app_label(channel)).increment(1);
        }
        LifecycleEvent::MemberAdded { channel, .. } => {
            counter!("rustaxum_presence_members_added_total", "app" => app_label(channel)).increment(1);
        }
        LifecycleEvent::MemberRemoved { channel, .. } => {
            counter!("rustaxum_presence_members_removed_total", "app" => app_label(channel)).increment(1);
        }
        LifecycleEvent::ClientEvent { channel, .. } => {
            counter!("rustaxum_client_events_total", "app" => app_label(channel)).increment(1);
        }
        LifecycleEvent::SubscriptionCount { .. } => {}
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(("api_token" = [])), responses((status = 200, content_type = "text/plain", body = String, description = "Prometheus text format"), (status = 401, description = "missing or wrong `Authorization: Bearer <BROADCAST_API_TOKEN>` (when one is set)", body = crate::protocol::ErrorBody)))]
pub(crate) async fn metrics(State(st): State<AppState>, _token: ApiToken) -> impl IntoResponse {
    let hub = st.node.hub();
    let snapshot = hub.snapshot();
    let recorder: &Arc<Metrics> = &st.metrics;
    with_local_recorder(&recorder.0, || {
        gauge!("rustaxum_connections").set(snapshot.connections as f64);
        gauge!("rustaxum_channels").set(snapshot.channels.len() as f64);
        counter!("rustaxum_connections_total").absolute(snapshot.connections_total);
        counter!("rustaxum_messages_published_total").absolute(snapshot.messages.published);
        counter!("rustaxum_messages_delivered_total").absolute(snapshot.messages.delivered);
        counter!("rustaxum_messages_received_total").absolute(snapshot.messages.received);
        counter!("rustaxum_frames_encoded_total").absolute(snapshot.messages.encoded);
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
            for (kind, value) in [
                ("published", status.published),
                ("publish_failures", status.publish_failures),
                ("received", status.received),
                ("invalid", status.invalid),
                ("subscriptions", status.subscriptions),
                ("subscription_losses", status.subscription_losses),
            ] {
                counter!("rustaxum_redis_events_total", "kind" => kind).absolute(value);
            }
            counter!("rustaxum_redis_circuit_opened_total").absolute(status.circuit_opened_total);
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
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
