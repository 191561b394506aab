//! The three systems the server runs beside the native protocol, each on the one hub and
//! standing side by side (none uses another):
//!
//! - [`pusher`]: Pusher protocol v7 apps (tenants), request and channel signatures
//!   ([`sign_request`](pusher::sign_request), [`channel_auth`](pusher::channel_auth),
//!   [`user_auth`](pusher::user_auth)) for a backend that publishes or authorizes in
//!   Pusher's format.
//! - [`emithub`]: EmitHub managed channels: the registry (start, pause, stop, settings),
//!   its stores (memory, redb, Redis) and the publish gate that applies a channel's state
//!   and rate limits to every publisher.
//! - [`rtc`]: the typed-frame service: rooms, direct messages, online users and rate
//!   limits.
//!
//! Their wire protocols (WebSocket and HTTP routes) are served by [`Rustaxum`](crate::Rustaxum).

pub mod emithub;
pub mod pusher;
pub mod rtc;
