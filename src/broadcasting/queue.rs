//! Queued broadcasts (Laravel's `ShouldQueue`): run in the background with a number of
//! tries, a timeout per try and exponential back-off between tries.
//!
//! Each job is a tracked tokio task on the lane of its queue connection and queue; at most
//! [`MAX_CONCURRENT`] jobs of one lane run a driver at once, so a backlog on one queue never
//! delays another, and at most [`MAX_PENDING`] jobs wait in all. A full queue refuses new jobs with
//! [`BroadcastError::QueueFull`] rather than growing without bound. A job that fails
//! every try is logged at ERROR and kept in `BroadcastManager::failed_broadcasts`, never
//! dropped silently.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::drivers::{BroadcastDriver, Payload};
use super::BroadcastError;
use crate::channel::Channel;
use crate::sync::lock;

/// Jobs waiting or running before the queue refuses new ones.
pub const MAX_PENDING: usize = 10_000;
/// Jobs of one queue calling a driver at the same time.
pub const MAX_CONCURRENT: usize = 64;
const FAILED_KEPT: usize = 1_000;

/// How a queued broadcast is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOptions {
    /// Attempts in all, at least 1. Default 3.
    pub tries: u32,
    /// Time limit for one attempt. Default 30 s.
    pub timeout: Duration,
    /// Wait before the second attempt; doubled before each further one. Default 1 s.
    pub backoff: Duration,
    /// Upper bound of the wait between attempts. Default 60 s.
    pub max_backoff: Duration,
    /// The queue connection (a group of queues). Default `default`.
    pub connection: String,
    /// The queue within the connection: each queue has its own lane, so a backlog on
    /// one never delays another. Default `default`.
    pub queue: String,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            tries: 3,
            timeout: Duration::from_secs(30),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            connection: "default".into(),
            queue: "default".into(),
        }
    }
}

impl QueueOptions {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn backoff_after(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// A queued broadcast that failed every try.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedBroadcast {
    /// The event name.
    pub event: String,
    /// The channels it was meant for.
    pub channels: Vec<String>,
    /// The driver that failed.
    pub driver: String,
    /// The queue connection it was queued on.
    pub queue_connection: String,
    /// The queue it was queued on.
    pub queue: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub error: String,
    /// When the last attempt failed.
    pub failed_at: DateTime<Utc>,
}

/// Lanes by (queue connection, queue).
type Lanes = HashMap<(String, String), Arc<Semaphore>>;

pub(crate) struct BroadcastQueue {
    tracker: TaskTracker,
    pending: Arc<AtomicUsize>,
    lanes: Mutex<Lanes>,
    failed: Arc<Mutex<VecDeque<FailedBroadcast>>>,
}

impl Default for BroadcastQueue {
    fn default() -> Self {
        Self {
            tracker: TaskTracker::new(),
            pending: Arc::new(AtomicUsize::new(0)),
            lanes: Mutex::new(HashMap::new()),
            failed: Arc::new(Mutex::new(VecDeque::new())),
        }
    }
}

impl BroadcastQueue {
    pub(crate) fn push(
        &self,
        driver: Arc<dyn BroadcastDriver>,
        channels: Vec<Channel>,
        event: String,
        payload: Payload,
        options: QueueOptions,
    ) -> Result<(), BroadcastError> {
        if self.tracker.is_closed() {
            return Err(BroadcastError::QueueClosed);
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BroadcastError::QueueClosed)?;
        let pending = self.pending.fetch_add(1, Ordering::AcqRel);
        if pending >= MAX_PENDING {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(BroadcastError::QueueFull(pending));
        }
        let lane = (options.connection.clone(), options.queue.clone());
        let permits = lock(&self.lanes)
            .entry(lane)
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_CONCURRENT)))
            .clone();
        let job = Job {
            driver,
            channels,
            event,
            payload,
            options,
            permits,
            failed: self.failed.clone(),
            pending: self.pending.clone(),
        };
        self.tracker.spawn_on(job.run(), &runtime);
        Ok(())
    }

    pub(crate) fn failed(&self) -> Vec<FailedBroadcast> {
        lock(&self.failed).iter().cloned().collect()
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    pub(crate) async fn close(&self, drain: Duration) {
        self.tracker.close();
        if tokio::time::timeout(drain, self.tracker.wait()).await.is_err() {
            tracing::error!(
                pending = self.pending(),
                "broadcast queue did not drain in {drain:?}; pending jobs abandoned"
            );
        }
    }
}

struct Job {
    driver: Arc<dyn BroadcastDriver>,
    channels: Vec<Channel>,
    event: String,
    payload: Payload,
    options: QueueOptions,
    permits: Arc<Semaphore>,
    failed: Arc<Mutex<VecDeque<FailedBroadcast>>>,
    pending: Arc<AtomicUsize>,
}

impl Job {
    async fn run(self) {
        let tries = self.options.tries.max(1);
        let mut last_error = String::new();
        for attempt in 1..=tries {
            match self.attempt().await {
                Ok(reached) => {
                    tracing::debug!(event = %self.event, attempt, reached, "queued broadcast sent");
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
                Err(e) => {
                    tracing::warn!(event = %self.event, driver = self.driver.driver_name(), attempt, tries, error = %e, "queued broadcast attempt failed");
                    last_error = e.to_string();
                }
            }
            if attempt < tries {
                tokio::time::sleep(self.options.backoff_after(attempt)).await;
            }
        }
        tracing::error!(event = %self.event, driver = self.driver.driver_name(), tries, error = %last_error, "queued broadcast failed after every try");
        let record = FailedBroadcast {
            event: self.event.clone(),
            channels: self.channels.iter().map(|c| c.name().to_string()).collect(),
            driver: self.driver.driver_name().to_string(),
            queue_connection: self.options.connection.clone(),
            queue: self.options.queue.clone(),
            attempts: tries,
            error: last_error,
            failed_at: Utc::now(),
        };
        {
            let mut failed = lock(&self.failed);
            if failed.len() == FAILED_KEPT {
                failed.pop_front();
            }
            failed.push_back(record);
        }
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }

    async fn attempt(&self) -> Result<usize, BroadcastError> {
        let _permit = self.permits.acquire().await.map_err(|_| BroadcastError::QueueClosed)?;
        let send = self.driver.deliver(&self.channels, &self.event, &self.payload);
        match tokio::time::timeout(self.options.timeout, send).await {
            Ok(result) => result,
            Err(_) => Err(BroadcastError::Timeout {
                driver: self.driver.driver_name().to_string(),
                after: self.options.timeout,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let o = QueueOptions {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            ..QueueOptions::default()
        };
        assert_eq!(o.backoff_after(1), Duration::from_millis(100));
        assert_eq!(o.backoff_after(2), Duration::from_millis(200));
        assert_eq!(o.backoff_after(3), Duration::from_millis(350));
        assert_eq!(o.backoff_after(40), Duration::from_millis(350));
    }
}
