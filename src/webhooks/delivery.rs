//! Delivery of one URL's events: batches in order, retries with back-off, no redirects;
//! and the start-up check of where the URLs point.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;

/// Warns once per URL whose host is (or resolves to) a loopback, private or link-local
/// address: often a mistake, and the way to a cloud's metadata service
/// (`BROADCAST_WEBHOOK_ALLOW_PRIVATE=true` when it is meant).
pub(super) async fn warn_internal(urls: Vec<String>) {
    for url in urls {
        let Ok(parsed) = reqwest::Url::parse(&url) else {
            continue;
        };
        let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
            continue;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let addresses: Vec<std::net::IpAddr> = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => {
                match tokio::time::timeout(Duration::from_secs(3), tokio::net::lookup_host((host.as_str(), port))).await
                {
                    Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
                    _ => continue,
                }
            }
        };
        if let Some(ip) = addresses.into_iter().find(|ip| crate::net::is_internal(*ip)) {
            tracing::warn!(
                url = %crate::net::shown_url(&url),
                address = %ip,
                "a webhook URL points at a loopback, private or link-local address; set \
                 BROADCAST_WEBHOOK_ALLOW_PRIVATE=true if that is meant"
            );
        }
    }
}

/// Sends one target's events in batches, in order, retrying each batch for `retry_for`.
pub(super) async fn send_loop(
    target: Arc<Target>,
    mut rx: mpsc::Receiver<WebhookEvent>,
    http: reqwest::Client,
    counters: Arc<Counters>,
    retry_for: Duration,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            e = rx.recv() => match e {
                Some(e) => e,
                None => return,
            },
        };
        // A moment for the events that come together (a page of presence joins) to batch.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let body = match serde_json::to_vec(&Body {
            time_ms: chrono::Utc::now().timestamp_millis(),
            events: &batch,
        }) {
            Ok(b) => b,
            Err(_) => continue,
        };
        let signature = crate::sign::hmac_sha256_hex(&target.secret, &body);
        let deadline = tokio::time::Instant::now() + retry_for;
        let mut backoff = Duration::from_millis(250);
        loop {
            let sent = http
                .post(&target.url)
                .header("content-type", "application/json")
                .header("x-pusher-key", &target.key)
                .header("x-pusher-signature", &signature)
                .body(body.clone())
                .send()
                .await;
            let retry = match &sent {
                Ok(r) if r.status().is_success() => {
                    counters.requests.fetch_add(1, Ordering::Relaxed);
                    counters.delivered.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    break;
                }
                Ok(r) if r.status().is_redirection() => {
                    let to = r
                        .headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|l| l.to_str().ok())
                        .map(crate::net::shown_url)
                        .unwrap_or_default();
                    tracing::warn!(url = %crate::net::shown_url(&target.url), status = %r.status(), location = %to, events = batch.len(), "webhook receiver answered a redirect, which is not followed: events failed (point the URL at the final address)");
                    counters.failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    break;
                }
                Ok(r) => {
                    let s = r.status();
                    s.is_server_error() || s.as_u16() == 408 || s.as_u16() == 429
                }
                Err(_) => true,
            };
            let why = match &sent {
                Ok(r) => r.status().to_string(),
                Err(e) => e.to_string(),
            };
            if !retry || tokio::time::Instant::now() + backoff > deadline {
                counters.failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::warn!(url = %crate::net::shown_url(&target.url), events = batch.len(), error = %why, "webhook given up");
                break;
            }
            counters.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(url = %crate::net::shown_url(&target.url), error = %why, "webhook failed; retrying");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
