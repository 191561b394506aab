//! The fluent [`broadcast()`] builder, `broadcast_to_*` helpers and [`BroadcastFacade`].
//!
//! Helpers without an explicit manager use the installed one (see
//! [`install`](super::install)); [`BroadcastManager::broadcast`] builds against a
//! specific manager instead.

use std::fmt::Display;
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use super::parse_channels;
use super::{manager, BroadcastError, BroadcastManager, Payload, QueueOptions};
use crate::hub::SocketId;

/// Channel that [`BroadcastFacade::system_alert`] publishes on (admin-only once
/// channel rules are configured).
pub const SYSTEM_ALERT_CHANNEL: &str = "admin.alerts";
/// Event name of [`BroadcastFacade::system_alert`] messages.
pub const SYSTEM_ALERT_EVENT: &str = "system.alert";
/// Event name of [`BroadcastFacade::notify_user`] messages.
pub const NOTIFICATION_EVENT: &str = "notification";

pub use crate::channel::user_channel;

/// The channel of an organisation: `org.{id}`.
pub fn organization_channel(org_id: impl Display) -> String {
    format!("org.{org_id}")
}

/// A broadcast being put together: `broadcast().channel("general").event("x").with(..).send().await`.
#[derive(Debug, Default)]
#[must_use = "a broadcast does nothing until .send().await"]
pub struct PendingBroadcast {
    channels: Vec<String>,
    event: Option<String>,
    data: Option<Result<serde_json::Value, String>>,
    connection: Option<String>,
    except: Option<SocketId>,
    queue: Option<QueueOptions>,
    manager: Option<Arc<BroadcastManager>>,
}

/// Starts a fluent broadcast through the installed manager (see
/// [`install`](super::install); none installed: one built from the environment).
///
/// ```no_run
/// # async fn f() -> Result<(), rustaxum::broadcasting::BroadcastError> {
/// use rustaxum::broadcasting::broadcast;
///
/// let reached = broadcast()
///     .channel("orders")
///     .event("order.shipped")
///     .with(serde_json::json!({"order": 1001}))
///     .send()
///     .await?; // sockets of this process it reached
/// # let _ = reached; Ok(()) }
/// ```
pub fn broadcast() -> PendingBroadcast {
    PendingBroadcast::default()
}

impl PendingBroadcast {
    pub(crate) fn via_manager(mut self, manager: Arc<BroadcastManager>) -> Self {
        self.manager = Some(manager);
        self
    }

    /// Adds a channel.
    pub fn channel(mut self, name: impl Into<String>) -> Self {
        self.channels.push(name.into());
        self
    }

    /// Adds several channels.
    pub fn channels<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.channels.extend(names.into_iter().map(Into::into));
        self
    }

    /// Adds the user's private channel `user.{id}`.
    pub fn to_user(self, user_id: impl Display) -> Self {
        self.channel(user_channel(user_id))
    }

    /// Adds the organisation channel `org.{id}`.
    pub fn to_organization(self, org_id: impl Display) -> Self {
        self.channel(organization_channel(org_id))
    }

    /// Sets the event name.
    pub fn event(mut self, name: impl Into<String>) -> Self {
        self.event = Some(name.into());
        self
    }

    /// Sets the payload (anything `Serialize`; usually `json!({..})`).
    pub fn with(mut self, data: impl Serialize) -> Self {
        self.data = Some(serde_json::to_value(data).map_err(|e| e.to_string()));
        self
    }

    /// Sends through a named connection instead of the default.
    pub fn via(mut self, connection: impl Into<String>) -> Self {
        self.connection = Some(connection.into());
        self
    }

    /// Skips the given socket (Laravel's `toOthers()`).
    pub fn to_others(mut self, socket_id: SocketId) -> Self {
        self.except = Some(socket_id);
        self
    }

    /// Sends from the background queue with these retry options.
    pub fn queued(mut self, options: QueueOptions) -> Self {
        self.queue = Some(options);
        self
    }

    /// Sends it. Returns the sockets of this process reached (0 when queued).
    pub async fn send(self) -> Result<usize, BroadcastError> {
        let manager = match self.manager {
            Some(m) => m,
            None => manager::global()?,
        };
        let channels = parse_channels(&self.channels)?;
        let event = self.event.unwrap_or_default();
        let data = match self.data {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                return Err(BroadcastError::InvalidEvent(format!(
                    "payload could not be serialised: {e}"
                )))
            }
            None => json!({}),
        };
        let payload = Payload {
            data: Arc::from(serde_json::value::to_raw_value(&data)?),
            text: None,
            socket: self.except,
        };
        match self.queue {
            Some(options) => manager
                .enqueue(self.connection.as_deref(), channels, event, payload, options)
                .map(|()| 0),
            None => {
                manager
                    .send(self.connection.as_deref(), &channels, &event, &payload)
                    .await
            }
        }
    }
}

/// Broadcasts `data` as `event` on one channel.
pub async fn broadcast_to_channel(channel: &str, event: &str, data: impl Serialize) -> Result<usize, BroadcastError> {
    broadcast().channel(channel).event(event).with(data).send().await
}

/// Broadcasts on the user's private channel `user.{id}`.
pub async fn broadcast_to_user(
    user_id: impl Display,
    event: &str,
    data: impl Serialize,
) -> Result<usize, BroadcastError> {
    broadcast().to_user(user_id).event(event).with(data).send().await
}

/// Broadcasts on the organisation channel `org.{id}`.
pub async fn broadcast_to_organization(
    org_id: impl Display,
    event: &str,
    data: impl Serialize,
) -> Result<usize, BroadcastError> {
    broadcast().to_organization(org_id).event(event).with(data).send().await
}

/// Laravel-style facade over the installed manager.
///
/// ```no_run
/// # async fn f() -> Result<(), rustaxum::broadcasting::BroadcastError> {
/// use rustaxum::broadcasting::BroadcastFacade;
///
/// BroadcastFacade::notify_user("42", "Order shipped", "On its way", Some("/orders/1001")).await?;
/// BroadcastFacade::system_alert("warning", "Disk at 90 %", false).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct BroadcastFacade;

impl BroadcastFacade {
    /// A broadcast to `user.{id}`; add `.event(..).with(..).send()`.
    pub fn to_user(user_id: impl Display) -> PendingBroadcast {
        broadcast().to_user(user_id)
    }

    /// A broadcast to one channel.
    pub fn channel(name: impl Into<String>) -> PendingBroadcast {
        broadcast().channel(name)
    }

    /// Sends a `notification` event to `user.{id}` with
    /// `{"title","message","action_url","timestamp"}`.
    pub async fn notify_user(
        user_id: impl Display,
        title: &str,
        message: &str,
        action_url: Option<&str>,
    ) -> Result<usize, BroadcastError> {
        Self::to_user(user_id)
            .event(NOTIFICATION_EVENT)
            .with(notification_payload(title, message, action_url))
            .send()
            .await
    }

    /// Sends a `system.alert` event on `admin.alerts` with
    /// `{"level","message","action_required","timestamp"}`.
    pub async fn system_alert(level: &str, message: &str, action_required: bool) -> Result<usize, BroadcastError> {
        broadcast()
            .channel(SYSTEM_ALERT_CHANNEL)
            .event(SYSTEM_ALERT_EVENT)
            .with(system_alert_payload(level, message, action_required))
            .send()
            .await
    }
}

/// The payload of a user notification (shared by the facade and the CLI).
pub fn notification_payload(title: &str, message: &str, action_url: Option<&str>) -> serde_json::Value {
    json!({
        "title": title,
        "message": message,
        "action_url": action_url,
        "timestamp": crate::hub::now_rfc3339(),
    })
}

/// The payload of a system alert (shared by the facade and the CLI).
pub fn system_alert_payload(level: &str, message: &str, action_required: bool) -> serde_json::Value {
    json!({
        "level": level,
        "message": message,
        "action_required": action_required,
        "timestamp": crate::hub::now_rfc3339(),
    })
}

/// `broadcast_to_user!(user_id, event, data)`: a future broadcasting on `user.{id}`.
#[macro_export]
macro_rules! broadcast_to_user {
    ($user:expr, $event:expr, $data:expr $(,)?) => {
        $crate::broadcasting::broadcast_to_user($user, $event, $data)
    };
}

/// `notify_user!(user_id, title, message [, action_url])`: a future sending a notification.
#[macro_export]
macro_rules! notify_user {
    ($user:expr, $title:expr, $message:expr $(,)?) => {
        $crate::broadcasting::BroadcastFacade::notify_user($user, $title, $message, None)
    };
    ($user:expr, $title:expr, $message:expr, $url:expr $(,)?) => {
        $crate::broadcasting::BroadcastFacade::notify_user($user, $title, $message, Some($url))
    };
}
