//! The Redis backend every shared store uses: the connection ([`RedisLink`]: one Redis,
//! a Redis Cluster or Sentinel, with key naming, a command timeout and a circuit
//! breaker), its settings ([`RedisConfig`]) and its error ([`BackendError`]).
//!
//! Presence, history, rooms, rate limits, webhooks, EmitHub and the Pusher features keep
//! their shared state through it; the broker (`cluster`) publishes through it.

#[cfg(feature = "redis")]
pub(crate) mod breaker;
#[cfg(feature = "redis")]
mod config;
mod error;
#[cfg(feature = "redis")]
mod link;

#[cfg(feature = "redis")]
use std::time::Duration;

#[cfg(feature = "redis")]
pub use config::{RedisConfig, RedisTopology};
pub(crate) use error::Failure;
// Public: re-exported by the broadcasting and cluster modules.
#[allow(unreachable_pub)]
pub use error::BackendError;
#[cfg(feature = "redis")]
pub(crate) use link::slot_of;
#[cfg(feature = "redis")]
#[cfg_attr(not(feature = "server"), allow(unreachable_pub))]
pub use link::RedisLink;

#[cfg(feature = "redis")]
/// How long a Redis command may take before it counts as a failure.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
#[cfg(feature = "redis")]
/// Consecutive failures that open the circuit breaker.
pub(crate) const BREAKER_THRESHOLD: u32 = 3;
#[cfg(feature = "redis")]
/// How long an open circuit fails fast before a probe is let through.
pub(crate) const BREAKER_COOLDOWN: Duration = Duration::from_secs(2);
