//! A circuit breaker: after `threshold` consecutive failures calls fail fast for
//! `cooldown`; then one probe is let through (half-open); its success closes the circuit.
//!
//! Permission to call is a [`Permit`] that reports the outcome. A permit dropped without
//! an outcome (the caller's future was cancelled, e.g. an HTTP client gave up) gives the
//! half-open probe back, so a cancelled probe can never leave the circuit open for good.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// The breaker's state, for health reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
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
    /// What it guards, for its log lines (`Redis at redis://10.0.0.5:6379/0`).
    label: String,
    threshold: u32,
    cooldown: Duration,
    failures: AtomicU32,
    opened_at: Mutex<Option<Instant>>,
    probing: AtomicBool,
    opened_total: AtomicU64,
    /// Calls refused while open since the last summary, and when that was.
    refused: AtomicU64,
    summarised: Mutex<Option<Instant>>,
}

/// How often, at most, an open circuit says how many calls it refused.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Permission for one call. Report its outcome with [`success`](Self::success) or
/// [`failure`](Self::failure); dropping it unreported releases a half-open probe.
#[derive(Debug)]
#[must_use = "report the call's outcome, or drop the permit to give the probe back"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    reported: bool,
}

impl Permit<'_> {
    /// The call succeeded: the circuit closes.
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.record_success();
    }

    /// The call failed; the circuit opens (or re-opens) at the threshold.
    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.record_failure();
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            // Cancelled mid-call: nothing was learnt; the next caller may probe.
            self.breaker.probing.store(false, Ordering::Release);
        }
    }
}

impl CircuitBreaker {
    /// Opens after `threshold` consecutive failures, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self::labelled("Redis", threshold, cooldown)
    }

    /// A breaker whose log lines name what it guards: one WARN when it opens, at most one
    /// summary a minute of the calls it refused while open, one INFO when it closes.
    pub fn labelled(label: impl Into<String>, threshold: u32, cooldown: Duration) -> Self {
        Self {
            label: label.into(),
            refused: AtomicU64::new(0),
            summarised: Mutex::new(None),
            threshold: threshold.max(1),
            cooldown,
            failures: AtomicU32::new(0),
            opened_at: Mutex::new(None),
            probing: AtomicBool::new(false),
            opened_total: AtomicU64::new(0),
        }
    }

    /// A permit if a call may go ahead now. In half-open state only one caller at a time
    /// gets one (the probe), until it reports or is dropped.
    pub fn allow(&self) -> Option<Permit<'_>> {
        let opened = *lock(&self.opened_at);
        let probe = match opened {
            None => false,
            Some(at) if at.elapsed() < self.cooldown => return self.refuse(),
            Some(_) if self.probing.swap(true, Ordering::AcqRel) => return self.refuse(),
            Some(_) => true,
        };
        Some(Permit {
            breaker: self,
            probe,
            reported: false,
        })
    }

    /// A refused call: counted, and summed up at most once a minute.
    fn refuse(&self) -> Option<Permit<'_>> {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = lock(&self.summarised);
        if last.is_none_or(|at| at.elapsed() >= SUMMARY_EVERY) {
            *last = Some(Instant::now());
            self.refused.store(0, Ordering::Relaxed);
            drop(last);
            tracing::warn!(
                refused,
                "{} is still unavailable: {refused} call(s) failed fast in the last minute",
                self.label
            );
        }
        None
    }

    fn record_success(&self) {
        self.failures.store(0, Ordering::Release);
        let was_open = lock(&self.opened_at).take();
        self.probing.store(false, Ordering::Release);
        if let Some(at) = was_open {
            let refused = self.refused.swap(0, Ordering::Relaxed);
            *lock(&self.summarised) = None;
            tracing::info!(
                "{} answers again after {:.1} s (circuit closed; {refused} more call(s) failed fast meanwhile)",
                self.label,
                at.elapsed().as_secs_f64()
            );
        }
    }

    fn record_failure(&self) {
        let n = self.failures.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        let mut opened = lock(&self.opened_at);
        if n >= self.threshold || opened.is_some() {
            let opening = opened.is_none();
            if opening {
                self.opened_total.fetch_add(1, Ordering::Relaxed);
            }
            *opened = Some(Instant::now());
            self.probing.store(false, Ordering::Release);
            drop(opened);
            if opening {
                *lock(&self.summarised) = Some(Instant::now());
                tracing::warn!(
                    failures = n,
                    "{} is unavailable: circuit open after {n} failed calls; calls fail fast and it is tried again every {:?}",
                    self.label,
                    self.cooldown
                );
            }
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
            b.allow().unwrap().failure();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.allow().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.allow().is_none(), "fails fast while open");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let probe = b.allow().expect("one probe");
        assert!(b.allow().is_none(), "only one probe");
        probe.failure();
        assert_eq!(b.state(), BreakerState::Open, "a failed probe re-opens");
        std::thread::sleep(Duration::from_millis(60));
        b.allow().unwrap().success();
        assert_eq!(b.state(), BreakerState::Closed);
        let (x, y) = (b.allow(), b.allow());
        assert!(x.is_some() && y.is_some(), "closed: everyone goes through");
        assert_eq!(b.opened_total(), 1);
    }

    #[test]
    fn a_cancelled_probe_gives_the_probe_back() {
        let b = CircuitBreaker::new(1, Duration::from_millis(20));
        b.allow().unwrap().failure();
        std::thread::sleep(Duration::from_millis(30));
        let probe = b.allow().expect("probe");
        assert!(b.allow().is_none());
        drop(probe); // the caller's future was dropped mid-call
        b.allow().expect("the next caller probes").success();
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
