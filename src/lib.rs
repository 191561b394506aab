//! # rustaxum
//!
//! Laravel-style real-time broadcasting for Rust: a library to broadcast events from
//! an application, a WebSocket server (`rustaxum`) and an operator CLI (`artisan`).
//!
//! # Layout
//!
//! Core (never imports axum):
//! - [`channel`]: channel names parsed once into a typed [`Channel`].
//! - [`hub`]: channels → subscribers, bounded per-connection queues, fan-out that
//!   encodes once per wire protocol, live stats.
//! - [`auth`]: JWT verification and channel rules; every join goes through a
//!   [`ChannelAuthorizer`](auth::ChannelAuthorizer).
//! - [`presence`]: presence members per user behind the
//!   [`PresenceStore`](presence::PresenceStore) trait (in memory, or Redis).
//! - [`cluster`]: the [`Broker`](cluster::Broker) trait and [`Fanout`](cluster::Fanout) that
//!   make several nodes one (Redis pub/sub, node heartbeats, circuit breaker).
//! - [`pusher`]: Pusher apps and signatures (channel auth, REST request signing).
//! - [`broadcasting`]: events and `ShouldBroadcast`, the `BroadcastManager`, drivers,
//!   helpers, facades, macros, the broadcast queue.
//! - [`config`]: environment configuration with documented defaults.
//!
//! Edges:
//! - [`transport`]: axum handlers: the HTTP API, the Pusher HTTP API, and the WebSocket
//!   sessions of the native and Pusher protocols (one shared session loop).
//! - [`server`]: [`Rustaxum`] (hub + manager + router) and [`run`].
//! - [`cli`]: the `artisan` commands, talking to a running server over HTTP, and the
//!   fan-out benchmark behind `artisan broadcast bench`.

// Library code never unwraps: input from outside gets a typed error instead.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod auth;
pub mod broadcasting;
pub mod channel;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod hub;
pub mod presence;
pub mod pusher;
pub mod server;
mod sync;
pub mod transport;

pub use channel::{Channel, ChannelKind};
pub use config::Config;
pub use server::{run, Rustaxum, StartError};
