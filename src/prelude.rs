//! What an application needs, in one import:
//!
//! ```
//! use rustaxum::prelude::*;
//!
//! #[derive(serde::Serialize)]
//! struct OrderShipped { order_id: u64, user_id: u64 }
//!
//! impl Event for OrderShipped {}
//!
//! impl ShouldBroadcast for OrderShipped {
//!     fn broadcast_on(&self) -> Vec<String> {
//!         vec![format!("user.{}", self.user_id)]
//!     }
//! }
//!
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! // The server and its manager, from the environment (as the `rustaxum` binary reads it);
//! // `facade()`: the helpers and `dispatch()` go through it once it starts.
//! let app = Rustaxum::builder(Config::from_env()?).facade().build()?;
//! app.start()?;
//! // Dispatch: listeners run, then it is broadcast with its fields as the payload.
//! OrderShipped { order_id: 1, user_id: 42 }.dispatch().await?;
//! // Or publish directly.
//! broadcast().channel("orders").event("order.shipped").with(serde_json::json!({"id": 1})).send().await?;
//! # Ok(()) }
//! ```
//!
//! Events ([`Event`], [`ShouldBroadcast`], [`Broadcastable`], [`ShouldQueue`],
//! [`dispatch`], [`listen`]), the manager and its helpers ([`BroadcastManager`],
//! [`broadcast`], [`broadcast_to_user`], [`BroadcastError`]), channels ([`Channel`],
//! [`ChannelKind`], [`ChannelRules`]) and the app ([`Rustaxum`], its [`Builder`], [`Config`]).

pub use crate::auth::ChannelRules;
pub use crate::broadcasting::{broadcast, broadcast_to_channel, broadcast_to_user, BroadcastError, BroadcastManager};
pub use crate::channel::{Channel, ChannelKind};
#[cfg(feature = "server")]
pub use crate::config::Config;
pub use crate::events::{dispatch, listen, Broadcastable, Event, EventPayload, ShouldBroadcast, ShouldQueue};
#[cfg(feature = "server")]
pub use crate::server::{Builder, Rustaxum};
