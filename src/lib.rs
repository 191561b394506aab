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
//! - [`session`]: the protocol-neutral session core: admission (connection limits),
//!   join (authorize → grant → subscribe → presence), leave, client events, refresh,
//!   clean-up; typed refusals; the per-socket loop, generic over the socket.
//! - [`lifecycle`]: connection, channel, member and client-event events for observers.
//! - [`auth`]: JWT verification and channel rules; every join goes through a
//!   [`ChannelAuthorizer`](auth::ChannelAuthorizer).
//! - [`presence`]: presence members per user behind the
//!   [`PresenceStore`](presence::PresenceStore) trait (in memory, or Redis).
//! - [`net`]: client addresses behind trusted proxies, and the key a per-address limit
//!   counts under.
//! - [`setting`]: [`InvalidSetting`](setting::InvalidSetting), the error a domain gives
//!   for a setting it cannot use (the configuration wraps it).
//! - [`backend`]: the Redis connection every shared store uses (one Redis, a Cluster or
//!   Sentinel), its circuit breaker, settings and [`BackendError`](backend::BackendError).
//! - [`cluster`]: the [`Broker`](cluster::Broker) trait (local, or Redis pub/sub with node
//!   heartbeats); a broker hands what it receives to a [`Receiver`](cluster::Receiver).
//! - [`publish`]: the one publish path ([`Fanout`](publish::Fanout)): route → hooks →
//!   history → broker → hub.
//! - [`routing`]: routing rules (copy, drop, reshape messages once at publish).
//! - [`emithub`]: EmitHub managed channels: the registry (a grant source), states,
//!   settings, persisted messages in redb (one node) or Redis (cluster).
//! - [`pusher`]: Pusher signatures (channel auth, user auth, REST request signing).
//! - [`broadcasting`]: events and `ShouldBroadcast`, the `BroadcastManager`, drivers,
//!   helpers, facades, macros, the broadcast queue.
//! - [`events`]: the event system where the RustAxum document imports it from.
//! - [`websocket`]: the WebSocket wire beneath the protocols: permessage-deflate
//!   (RFC 7692) negotiation, compression once per message, and an adapter that inflates
//!   compressed incoming messages beneath tungstenite; a client that offers it.
//! - [`config`]: reads the environment and the file and assembles each domain's own
//!   settings (`JwtConfig` from [`auth`], `RedisConfig` from [`backend`], `EmitHubConfig`,
//!   `RtcConfig`, the Pusher `Apps`), with documented defaults.
//!
//! Each module uses only those below it (`scripts/check-layers` checks it): channel,
//! sync, setting, websocket → hub, auth, backend → cluster, routing, lifecycle → history →
//! publish → broadcasting (the library, which knows nothing of the server), presence →
//! session, webhooks → emithub, rtc, pusher (side by side) → config → protocols → server
//! → cli.
//!
//! Edges:
//! - [`protocol`]: axum: one folder per wire protocol (native, Pusher, EmitHub, typed
//!   frames), each with its WebSocket handler, HTTP endpoints and codec; a node's stats,
//!   health, metrics, the dashboard and `/docs`.
//! - [`server`]: [`Rustaxum`] (node + manager + router), built by [`Builder`] and served by
//!   [`Rustaxum::serve`].
//! - [`cli`]: the `artisan` commands, talking to a running server over HTTP, and the
//!   fan-out benchmark behind `artisan broadcast bench`.

// Library code never unwraps: input from outside gets a typed error instead.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod auth;
pub mod backend;
pub mod broadcasting;
pub mod channel;
#[cfg(feature = "cli")]
pub mod cli;
pub mod cluster;
pub mod config;
pub mod emithub;
pub mod events;
pub mod history;
pub mod hub;
pub mod lifecycle;
pub mod net;
pub mod prelude;
pub mod presence;
pub mod protocol;
pub mod publish;
pub mod pusher;
pub mod rate;
pub mod routing;
pub mod rtc;
pub mod server;
pub mod session;
pub mod setting;
pub mod sign;
mod sync;
pub mod webhooks;
pub mod websocket;

pub use channel::{Channel, ChannelKind};
pub use config::Config;
pub use server::{Builder, Rustaxum, StartError};
