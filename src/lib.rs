//! # rustaxum
//!
//! Laravel-style real-time broadcasting for Rust: a library to broadcast events from
//! an application, a WebSocket server (`rustaxum`) and an operator CLI (`artisan`).
//!
//! # What an application uses
//!
//! - [`prelude`]: one import with events, the manager, `broadcast()`, channels, the app
//!   builder and its configuration.
//! - [`events`]: the event system where the RustAxum document imports it from (`Event`,
//!   `ShouldBroadcast`, `Broadcastable`, `ShouldQueue`, `dispatch`, `EventFacade`).
//! - [`broadcasting`]: the `BroadcastManager`, the one driver trait
//!   ([`BroadcastDriver`](broadcasting::BroadcastDriver)) and the built-in drivers,
//!   helpers, facades, macros, the broadcast queue, a recording driver for tests.
//! - [`server`]: [`Rustaxum`] (node + manager + router), put together by [`Builder`]
//!   without starting anything and served by [`Rustaxum::serve`]; the node and its
//!   extension points (grant sources, publish hooks, channel owners, lifecycle events);
//!   many nodes as one over Redis ([`server::cluster`]).
//! - [`config`]: the environment and the file, assembled into each domain's settings, with
//!   documented defaults.
//! - [`auth`]: JWT verification and channel rules; every join goes through a
//!   [`ChannelAuthorizer`](auth::ChannelAuthorizer).
//! - [`Channel`] and [`hub`]: typed channel names; channels → subscribers, bounded queues,
//!   fan-out encoded once per wire protocol, live stats.
//! - [`presence`] and [`history`]: where members and kept messages live, behind
//!   [`PresenceStore`](presence::PresenceStore) and
//!   [`HistoryStore`](history::HistoryStore) (replaceable through the builder).
//! - [`services`]: [`emithub`](services::emithub), [`pusher`](services::pusher) and
//!   [`rtc`](services::rtc): the managed-channel registry, Pusher signatures and apps,
//!   the typed-frame service.
//! - [`cli`]: the `artisan` commands, talking to a running server over HTTP, the fan-out
//!   benchmark behind `artisan broadcast bench` and its WebSocket client
//!   ([`cli::websocket`], offering permessage-deflate).
//!
//! Inside (crate-private): channel-name parsing (`channel`; [`Channel`], [`ChannelKind`]
//! and [`ChannelError`] are at the root), the session core (`session`: admission, join,
//! leave, client events, refusals, the per-socket loop), lifecycle events, the Redis
//! connection and its circuit breaker (`backend`), the one publish path (`publish`),
//! the cluster broker (`cluster`; public parts in [`server::cluster`]), the WebSocket
//! wire (`websocket`: permessage-deflate, RFC 7692), routing rules, webhooks, client
//! addresses behind trusted proxies (`net`;
//! [`TrustedProxies`](config::TrustedProxies) is in `config`), settings errors, rate
//! limiters, signatures and the axum protocols (`protocol`).
//!
//! Each module uses only those below it (`scripts/check-layers` checks it): channel,
//! sync, setting, websocket → hub, auth, backend → cluster, routing, lifecycle → history →
//! publish → broadcasting (the library, which knows nothing of the server), presence →
//! session, webhooks → services (emithub, rtc, pusher side by side) → config → protocols → server
//! → cli.

// Library code never unwraps: input from outside gets a typed error instead.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod auth;
pub(crate) mod backend;
pub mod broadcasting;
pub(crate) mod channel;
#[cfg(feature = "cli")]
pub mod cli;
pub(crate) mod cluster;
pub mod config;
pub mod events;
pub mod history;
pub mod hub;
pub(crate) mod lifecycle;
pub(crate) mod net;
pub mod prelude;
pub mod presence;
pub(crate) mod protocol;
pub(crate) mod publish;
pub(crate) mod rate;
pub(crate) mod routing;
pub mod server;
pub mod services;
pub(crate) mod session;
pub(crate) mod setting;
pub(crate) mod sign;
mod sync;
pub(crate) mod webhooks;
pub(crate) mod websocket;

pub use channel::{Channel, ChannelError, ChannelKind, MAX_CHANNEL_NAME_LEN};
pub use config::Config;
pub use server::{Builder, Rustaxum, StartError};
