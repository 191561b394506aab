//! Connection quotas other than the global one (per app, per channel, per user): a
//! counter per key whose slots are taken atomically and given back when dropped. A key
//! whose last slot is given back is forgotten, so the table holds only keys in use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::sync::lock;

type Table = Mutex<HashMap<Arc<str>, Arc<AtomicUsize>>>;

/// Counters by key (an app id, a channel name, a user id).
#[derive(Debug, Default)]
pub(crate) struct Quotas {
    counters: Arc<Table>,
}

/// One taken place under a quota; released when dropped.
#[derive(Debug)]
pub(crate) struct QuotaSlot {
    counter: Arc<AtomicUsize>,
    key: Arc<str>,
    table: Weak<Table>,
}

impl Drop for QuotaSlot {
    fn drop(&mut self) {
        if self.counter.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        // The last slot of this key: forget the key, unless someone took a new slot
        // meanwhile (they hold the counter, so it is no longer zero).
        if let Some(table) = self.table.upgrade() {
            let mut table = lock(&table);
            if self.counter.load(Ordering::Acquire) == 0 {
                if let Some(current) = table.get(&self.key) {
                    if Arc::ptr_eq(current, &self.counter) {
                        table.remove(&self.key);
                    }
                }
            }
        }
    }
}

impl Quotas {
    /// Takes a place under `key` if fewer than `max` are taken (`max == 0`: no limit).
    pub(crate) fn acquire(&self, key: &str, max: usize) -> Option<QuotaSlot> {
        let mut table = lock(&self.counters);
        let (key, counter) = match table.get_key_value(key) {
            Some((k, c)) => (k.clone(), c.clone()),
            None => {
                let key: Arc<str> = Arc::from(key);
                let counter = Arc::new(AtomicUsize::new(0));
                table.insert(key.clone(), counter.clone());
                (key, counter)
            }
        };
        // Taken under the table's lock, so a key cannot be forgotten between being found
        // and being counted.
        let taken = counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then(|| n.saturating_add(1))
            })
            .is_ok();
        if !taken {
            if counter.load(Ordering::Acquire) == 0 {
                table.remove(&key);
            }
            return None;
        }
        Some(QuotaSlot {
            counter,
            key,
            table: Arc::downgrade(&self.counters),
        })
    }

    /// Places taken under `key`.
    pub(crate) fn used(&self, key: &str) -> usize {
        lock(&self.counters).get(key).map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Keys with places taken.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> usize {
        lock(&self.counters).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_key_and_given_back() {
        let q = Quotas::default();
        let a = q.acquire("a", 2).unwrap();
        let b = q.acquire("a", 2).unwrap();
        assert!(q.acquire("a", 2).is_none());
        let other = q.acquire("other", 2);
        assert!(other.is_some());
        drop(a);
        assert_eq!(q.used("a"), 1);
        let c = q.acquire("a", 2);
        assert!(c.is_some());
        assert!(q.acquire("a", 0).is_some(), "0 = no limit");
        drop((b, c, other));
        assert_eq!(q.keys(), 0, "keys without places are forgotten");
    }
}
