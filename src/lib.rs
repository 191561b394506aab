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
//! # Features
//!
//! All on by default. `server`: the server and what it serves ([`Rustaxum`], [`Config`],
//! [`services`], webhooks, TLS, `/metrics`, `/docs`); it implies `redis`. `redis`: the
//! Redis broadcast driver and the Redis presence and history stores. `redb`: the embedded
//! database file (EmitHub channels, history). `cli`: the binaries and [`cli`].
//! `bench-report`: the benchmark chart.
//!
//! With `default-features = false` this is the library alone: events, the manager and
//! its helpers, the hub and the `local`, `log` and `null` drivers, with presence and
//! history in memory: no redis, reqwest, utoipa, rustls, axum or Prometheus exporter
//! (`examples/library.rs`). `features = ["redis"]` adds the Redis driver, for an app
//! that publishes to rustaxum servers elsewhere.
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
//! session, webhooks → services (emithub, rtc, pusher side by side) → config → protocols
//! → server → cli.

// Library code never unwraps: input from outside gets a typed error instead.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
// The documentation is written for the default build (what docs.rs shows); built
// without some features, links to the items those features bring have no target.
#![cfg_attr(
    not(all(feature = "server", feature = "cli", feature = "redb")),
    allow(rustdoc::broken_intra_doc_links, rustdoc::private_intra_doc_links)
)]

pub mod auth;
pub(crate) mod backend;
pub mod broadcasting;
pub(crate) mod channel;
#[cfg(feature = "cli")]
pub mod cli;
pub(crate) mod cluster;
#[cfg(feature = "server")]
pub mod config;
pub mod events;
pub mod history;
pub mod hub;
#[cfg(feature = "server")]
pub(crate) mod lifecycle;
#[cfg(feature = "server")]
pub(crate) mod net;
pub mod prelude;
pub mod presence;
#[cfg(feature = "server")]
pub(crate) mod protocol;
pub(crate) mod publish;
#[cfg(feature = "server")]
pub(crate) mod rate;
pub(crate) mod routing;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod services;
#[cfg(feature = "server")]
pub(crate) mod session;
pub(crate) mod setting;
#[cfg(feature = "server")]
pub(crate) mod sign;
mod sync;
#[cfg(feature = "server")]
pub(crate) mod webhooks;
#[cfg(feature = "server")]
pub(crate) mod websocket;

pub use channel::{Channel, ChannelError, ChannelKind, MAX_CHANNEL_NAME_LEN};
#[cfg(feature = "server")]
pub use config::Config;
#[cfg(feature = "server")]
pub use server::{Builder, Rustaxum, StartError};
