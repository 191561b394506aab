//! Socket ids: unique across a cluster, in Pusher's `socket_id` form (`123.456`).

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// A connection's id, unique across a cluster: `<node>.<counter>` (Pusher's `socket_id` form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(u64);

static NODE_PART: OnceLock<u32> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(1);

impl SocketId {
    /// A fresh id: a random per-process part and a per-process counter.
    pub fn next() -> Self {
        let node = *NODE_PART.get_or_init(|| rand::random::<u32>() % 1_000_000_000 + 1);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self((u64::from(node) << 32) | u64::from(n))
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

/// The string was not a socket id of the form `123.456`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid socket_id {0:?}: expected two numbers joined by a dot, e.g. 1234.5678")]
pub struct InvalidSocketId(pub String);

impl std::str::FromStr for SocketId {
    type Err = InvalidSocketId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidSocketId(s.chars().take(64).collect());
        let (a, b) = s.split_once('.').ok_or_else(bad)?;
        let a: u32 = a.parse().map_err(|_| bad())?;
        let b: u32 = b.parse().map_err(|_| bad())?;
        Ok(Self((u64::from(a) << 32) | u64::from(b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_ids_round_trip_and_differ() {
        let a = SocketId::next();
        let b = SocketId::next();
        assert_ne!(a, b);
        assert_eq!(a.to_string().parse::<SocketId>().unwrap(), a);
        for bad in ["", "12", "a.b", "1.2.3", "99999999999.1", "-1.2"] {
            assert!(bad.parse::<SocketId>().is_err(), "{bad}");
        }
    }
}
