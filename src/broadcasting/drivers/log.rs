use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{BroadcastDriver, Payload};
use crate::broadcasting::BroadcastError;
use crate::channel::Channel;
use crate::sync::lock;

/// The `log` driver: writes each broadcast to the `tracing` log at INFO and, when
/// `BROADCAST_LOG_FILE` is set, appends it to that file as one JSON line
/// (`{"timestamp","channels","event","data","socket"}`). Delivers nothing.
#[derive(Debug, Default)]
pub struct LogDriver {
    file: Option<(PathBuf, Mutex<std::fs::File>)>,
}

#[derive(Serialize)]
struct Line<'a> {
    timestamp: &'a str,
    channels: Vec<&'a str>,
    event: &'a str,
    data: &'a RawValue,
    socket: Option<String>,
}

impl LogDriver {
    /// A driver that only logs.
    pub fn new() -> Self {
        Self::default()
    }

    /// A driver that also appends JSON lines to `path` (created if missing).
    pub fn with_file(path: &Path) -> Result<Self, BroadcastError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| BroadcastError::Config(format!("BROADCAST_LOG_FILE {}: {e}", path.display())))?;
        Ok(Self {
            file: Some((path.to_path_buf(), Mutex::new(file))),
        })
    }
}

#[async_trait]
impl BroadcastDriver for LogDriver {
    async fn broadcast(&self, channel: &str, data: serde_json::Value) -> crate::broadcasting::Result<()> {
        super::deliver_one(self, channel, false, data).await
    }

    async fn broadcast_private(&self, channel: &str, data: serde_json::Value) -> crate::broadcasting::Result<()> {
        super::deliver_one(self, channel, true, data).await
    }

    fn driver_name(&self) -> &'static str {
        "log"
    }

    async fn deliver(&self, channels: &[Channel], event: &str, payload: &Payload) -> Result<usize, BroadcastError> {
        let names: Vec<&str> = channels.iter().map(Channel::name).collect();
        tracing::info!(target: "rustaxum::broadcast", channels = ?names, event, data = payload.data.get(), "broadcast");
        if let Some((path, file)) = &self.file {
            let timestamp = crate::hub::now_rfc3339();
            let mut line = serde_json::to_vec(&Line {
                timestamp: &timestamp,
                channels: names,
                event,
                data: &payload.data,
                socket: payload.socket.map(|s| s.to_string()),
            })?;
            line.push(b'\n');
            // One write per line on an append-mode file: lines from concurrent
            // broadcasts never interleave.
            lock(file).write_all(&line).map_err(|e| BroadcastError::Failed {
                driver: "log".into(),
                message: format!("writing {}: {e}", path.display()),
            })?;
        }
        Ok(0)
    }
}
