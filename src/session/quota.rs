//! Connection quotas other than the global one (per app, per channel): a counter per key
//! whose slots are taken atomically and given back when dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::sync::lock;

/// Counters by key (an app id, a channel name).
#[derive(Debug, Default)]
pub struct Quotas {
    counters: Mutex<HashMap<Arc<str>, Arc<AtomicUsize>>>,
}

/// One taken place under a quota; released when dropped.
#[derive(Debug)]
pub struct QuotaSlot {
    counter: Arc<AtomicUsize>,
}

impl Drop for QuotaSlot {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Quotas {
    /// Takes a place under `key` if fewer than `max` are taken (`max == 0`: no limit).
    pub fn acquire(&self, key: &str, max: usize) -> Option<QuotaSlot> {
        let counter = lock(&self.counters).entry(key.into()).or_default().clone();
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then(|| n.saturating_add(1))
            })
            .ok()?;
        Some(QuotaSlot { counter })
    }

    /// Places taken under `key`.
    pub fn used(&self, key: &str) -> usize {
        lock(&self.counters).get(key).map_or(0, |c| c.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_key_and_given_back() {
        let q = Quotas::default();
        let a = q.acquire("a", 2).unwrap();
        let _b = q.acquire("a", 2).unwrap();
        assert!(q.acquire("a", 2).is_none());
        assert!(q.acquire("other", 2).is_some());
        drop(a);
        assert_eq!(q.used("a"), 1);
        assert!(q.acquire("a", 2).is_some());
        assert!(q.acquire("a", 0).is_some(), "0 = no limit");
    }
}
