//! `rustaxum health`: the container and load-balancer probe, from the binary itself (no
//! curl in the image). It reads the same configuration as the server, so it asks the
//! port and scheme the server listens on (`https://` when `BROADCAST_TLS_CERT` is set),
//! on loopback when the server listens on every address. The certificate is not checked:
//! the probe runs beside the server, where the certificate's names do not apply.

use std::time::Duration;

/// What the probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/health`: the process answers HTTP (liveness).
    Alive,
    /// `/ready`: it takes traffic (503 while draining or while the cluster is degraded).
    Ready,
}

/// Asks the server that `config` describes; `Ok` with what it answered when that was 200,
/// `Err` with what went wrong otherwise.
pub async fn probe(config: &crate::Config, probe: Probe) -> Result<String, String> {
    let path = match probe {
        Probe::Alive => "/health",
        Probe::Ready => "/ready",
    };
    let url = format!("{}{path}", config.server_url());
    let trust = super::tls::Trust::new(None, true).map_err(|e| e.to_string())?;
    let http = trust
        .http()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let answer = http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", super::client::root_cause(&e)))?;
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    let body = body.trim();
    let body: String = body.chars().take(300).filter(|c| !c.is_control()).collect();
    if status.is_success() {
        Ok(format!("{url}: {} {body}", status.as_u16()))
    } else {
        Err(format!("{url}: {} {body}", status.as_u16()))
    }
}
