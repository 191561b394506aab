//! Fakes for application tests (Laravel's `Broadcast::fake()`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{BroadcastDriver, BroadcastError, Payload};
use crate::channel::Channel;
use crate::sync::lock;

/// One broadcast seen by a [`RecordingDriver`].
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// Canonical channel names.
    pub channels: Vec<String>,
    /// The event name.
    pub event: String,
    /// The payload.
    pub data: serde_json::Value,
}

/// A driver that records every broadcast, optionally failing the first `n` calls.
///
/// Register it with `manager.extend("recording", ..)` and assert on
/// [`records`](Self::records).
#[derive(Debug, Default)]
pub struct RecordingDriver {
    records: Mutex<Vec<Recorded>>,
    fail_first: AtomicUsize,
    calls: AtomicUsize,
}

impl RecordingDriver {
    /// A driver that records and never fails.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A driver whose first `n` calls fail with [`BroadcastError::Failed`].
    pub fn failing_first(n: usize) -> Arc<Self> {
        let d = Self::default();
        d.fail_first.store(n, Ordering::SeqCst);
        Arc::new(d)
    }

    /// Broadcasts recorded so far (failed calls are not recorded).
    pub fn records(&self) -> Vec<Recorded> {
        lock(&self.records).clone()
    }

    /// Calls made, failed ones included.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Whether `event` was broadcast on `channel`.
    pub fn was_broadcast(&self, channel: &str, event: &str) -> bool {
        lock(&self.records)
            .iter()
            .any(|r| r.event == event && r.channels.iter().any(|c| c == channel))
    }
}

#[async_trait]
impl BroadcastDriver for RecordingDriver {
    async fn broadcast(&self, channel: &str, data: serde_json::Value) -> crate::broadcasting::Result<()> {
        super::drivers::deliver_one(self, channel, false, data).await
    }

    fn driver_name(&self) -> &'static str {
        "recording"
    }

    async fn deliver(&self, channels: &[Channel], event: &str, payload: &Payload) -> Result<usize, BroadcastError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call < self.fail_first.load(Ordering::SeqCst) {
            return Err(BroadcastError::Failed {
                driver: "recording".into(),
                message: format!("simulated failure {}", call + 1),
            });
        }
        lock(&self.records).push(Recorded {
            channels: channels.iter().map(|c| c.name().to_string()).collect(),
            event: event.to_string(),
            data: serde_json::from_str(payload.data.get())?,
        });
        Ok(0)
    }
}
