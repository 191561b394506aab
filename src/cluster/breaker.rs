//! A circuit breaker: after `threshold` consecutive failures calls fail fast for
//! `cooldown`; then one probe is let through (half-open); its success closes the circuit.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// The breaker's state, for health reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail fast.
    Open,
    /// One probe call is allowed through.
    HalfOpen,
}

/// A thread-safe circuit breaker.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    failures: AtomicU32,
    opened_at: Mutex<Option<Instant>>,
    probing: AtomicBool,
    opened_total: AtomicU64,
}

impl CircuitBreaker {
    /// Opens after `threshold` consecutive failures, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            failures: AtomicU32::new(0),
            opened_at: Mutex::new(None),
            probing: AtomicBool::new(false),
            opened_total: AtomicU64::new(0),
        }
    }

    /// Whether a call may go ahead now. In half-open state only one caller gets `true`
    /// until it reports its outcome.
    pub fn allow(&self) -> bool {
        let opened = *lock(&self.opened_at);
        match opened {
            None => true,
            Some(at) if at.elapsed() < self.cooldown => false,
            Some(_) => !self.probing.swap(true, Ordering::AcqRel),
        }
    }

    /// Reports a successful call: the circuit closes.
    pub fn success(&self) {
        self.failures.store(0, Ordering::Release);
        *lock(&self.opened_at) = None;
        self.probing.store(false, Ordering::Release);
    }

    /// Reports a failed call; opens (or re-opens) the circuit at the threshold.
    pub fn failure(&self) {
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        let mut opened = lock(&self.opened_at);
        if n >= self.threshold || opened.is_some() {
            if opened.is_none() {
                self.opened_total.fetch_add(1, Ordering::Relaxed);
            }
            *opened = Some(Instant::now());
            self.probing.store(false, Ordering::Release);
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        match *lock(&self.opened_at) {
            None => BreakerState::Closed,
            Some(at) if at.elapsed() < self.cooldown => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// How many times the circuit has opened.
    pub fn opened_total(&self) -> u64 {
        self.opened_total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_at_threshold_probes_once_and_closes_on_success() {
        let b = CircuitBreaker::new(3, Duration::from_millis(50));
        for _ in 0..2 {
            assert!(b.allow());
            b.failure();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow(), "fails fast while open");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.allow(), "one probe");
        assert!(!b.allow(), "only one probe");
        b.failure();
        assert_eq!(b.state(), BreakerState::Open, "a failed probe re-opens");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow());
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow() && b.allow());
        assert_eq!(b.opened_total(), 1);
    }
}
