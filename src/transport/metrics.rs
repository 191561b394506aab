//! `GET /metrics`: the hub's counters in Prometheus text format.
//!
//! The values are read from the same snapshot as `/api/broadcast/stats` at scrape time
//! and written into a recorder owned by this server, so the library never installs a
//! process-wide metrics recorder that would fight the application's own.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use metrics::{counter, gauge, with_local_recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use super::api::ApiToken;
use super::AppState;
use crate::cluster::Broker;

/// The server's Prometheus recorder.
pub struct Metrics(PrometheusRecorder);

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

/// `GET /metrics`
pub async fn metrics(State(st): State<AppState>, _token: ApiToken) -> impl IntoResponse {
    let snapshot = st.hub.snapshot();
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
        gauge!("rustaxum_broadcast_queue_pending").set(st.manager.pending_broadcasts() as f64);
        gauge!("rustaxum_broadcast_queue_failed").set(st.manager.failed_broadcasts().len() as f64);
        gauge!("rustaxum_uptime_seconds").set(snapshot.uptime_seconds as f64);
        if let Some(broker) = &st.cluster {
            let status = broker.status();
            gauge!("rustaxum_redis_healthy").set(if broker.healthy() { 1.0 } else { 0.0 });
            for key in [
                "published",
                "publish_failures",
                "received",
                "invalid",
                "subscriptions",
                "subscription_losses",
            ] {
                let value = status[key].as_u64().unwrap_or(0);
                counter!("rustaxum_redis_events_total", "kind" => key).absolute(value);
            }
            counter!("rustaxum_redis_circuit_opened_total")
                .absolute(status["circuit_opened_total"].as_u64().unwrap_or(0));
        }
    });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        recorder.0.handle().render(),
    )
}
