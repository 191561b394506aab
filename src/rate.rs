//! The one place rate limiters are built (governor token buckets): quotas per second or
//! per minute (a rate of 0 is read as 1, never as "divide by zero"), and a map of
//! limiters by key whose rate may change at run time (a channel's or an app's setting).

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Mutex;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::sync::lock;

/// `n` per second, burst `n` (at least 1).
pub(crate) fn per_second(n: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

/// `n` per minute, burst `n` (at least 1).
pub(crate) fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

/// One token bucket of `quota`.
pub(crate) fn direct(quota: Quota) -> DefaultDirectRateLimiter {
    RateLimiter::direct(quota)
}

/// Limiters by key, each for the rate its key had when last checked: a new rate starts a
/// fresh bucket.
#[derive(Debug)]
pub(crate) struct Limiters<K> {
    quota: fn(u32) -> Quota,
    by_key: Mutex<HashMap<K, (u32, DefaultDirectRateLimiter)>>,
}

impl<K: Eq + Hash> Limiters<K> {
    /// Limiters whose rate is turned into a quota by `quota` ([`per_second`], [`per_minute`]).
    pub(crate) fn new(quota: fn(u32) -> Quota) -> Self {
        Self {
            quota,
            by_key: Mutex::default(),
        }
    }

    /// Takes one token from `key`'s bucket at `rate`; false when it is empty.
    pub(crate) fn check(&self, key: K, rate: u32) -> bool {
        let mut map = lock(&self.by_key);
        let entry = map.entry(key).or_insert_with(|| (rate, direct((self.quota)(rate))));
        if entry.0 != rate {
            *entry = (rate, direct((self.quota)(rate)));
        }
        entry.1.check().is_ok()
    }

    /// Forgets `key`'s bucket.
    pub(crate) fn remove(&self, key: &K) {
        lock(&self.by_key).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_rate_starts_a_fresh_bucket_and_zero_is_one() {
        let limiters = Limiters::new(per_minute);
        assert!(limiters.check("a", 2));
        assert!(limiters.check("a", 2));
        assert!(!limiters.check("a", 2), "two a minute");
        assert!(limiters.check("b", 2), "keys have buckets of their own");
        assert!(limiters.check("a", 3), "a new rate, a new bucket");
        let zero = Limiters::new(per_second);
        assert!(zero.check(1, 0));
        assert!(!zero.check(1, 0));
    }
}
