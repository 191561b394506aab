//! EmitHub managed channels (no axum here): channels an operator creates, starts, pauses
//! and stops, that clients join over WebSocket, with optional message persistence.
//!
//! A managed channel `{id}` is the hub channel `emithub.{id}`, so it shares the hub,
//! limits, metrics and clustering with every other channel, and native or Pusher clients
//! may join it too. [`EmitHub`] is the registry: it keeps every channel in memory (the
//! source of grants, consulted on every join), writes through to a [`ChannelStore`]
//! (redb on one node, Redis in a cluster, where changes are announced to every node), and
//! publishes broadcasts through the node's one publish path.
//!
//! - [`model`]: channels, settings, states, messages.
//! - [`store`]: where they are kept.

mod config;
mod gate;
mod history;
mod maintenance;
pub mod model;
pub mod store;

pub use config::{EmitHubConfig, DEFAULT_EMIT_HUB_DB_PATH, DEFAULT_EMIT_HUB_MAX_CHANNELS};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Identity;
use crate::backend::BackendError;
use crate::channel::{Channel, ChannelKind};
use crate::cluster::redis::RedisBroker;
use crate::history::HistoryStore;
use crate::hub::{CloseReason, Message};
use crate::publish::Fanout;
use crate::session::{Grant, GrantSource, JoinError};
use crate::sync::{read, write};
use model::{
    hub_channel_name, BroadcastPayload, ChannelSettings, ChannelStatus, ManagedChannel, SettingsPatch, Transition,
    HUB_PREFIX,
};
#[cfg(feature = "redb")]
use store::RedbStore;
use store::{ChannelStore, RedisStore, StoreError};

/// The event name of a REST broadcast on the hub channel.
pub const BROADCAST_EVENT: &str = "broadcast";
/// The event name of a client's relayed text on the hub channel.
pub const CLIENT_MESSAGE_EVENT: &str = "client-message";
/// Backups kept in the backup directory.
const BACKUPS_KEPT: usize = 5;

/// Close codes of EmitHub sockets.
pub mod close {
    use crate::hub::CloseReason;

    /// The channel was stopped while the socket was open.
    pub const STOPPED: CloseReason = CloseReason {
        code: 4010,
        reason: "channel stopped",
    };
    /// The channel was deleted while the socket was open.
    pub const DELETED: CloseReason = CloseReason {
        code: 4011,
        reason: "channel deleted",
    };
    /// The channel does not exist (sent after a `denied` message).
    pub const NOT_FOUND: CloseReason = CloseReason {
        code: 4000,
        reason: "channel not found",
    };
    /// The channel is not active (sent after a `denied` message).
    pub const NOT_ACTIVE: CloseReason = CloseReason {
        code: 4003,
        reason: "channel not active",
    };
    /// The channel is full (sent after a `denied` message; retry later).
    pub const FULL: CloseReason = CloseReason {
        code: 4100,
        reason: "channel full",
    };
}

/// What went wrong with a managed channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitHubError {
    /// No channel has this id.
    #[error("channel {0} not found")]
    NotFound(Uuid),
    /// The state change is not allowed from the current state.
    #[error("cannot {action} channel {name}: it is {from:?}")]
    InvalidTransition {
        /// The channel.
        name: String,
        /// `start`, `pause` or `stop`.
        action: &'static str,
        /// Its state.
        from: ChannelStatus,
    },
    /// The channel emits nothing in its state (Created or Stopped).
    #[error("channel {name} is not active ({status:?})")]
    NotActive {
        /// The channel.
        name: String,
        /// Its state.
        status: ChannelStatus,
    },
    /// The channel is paused: broadcasts are refused, not held.
    #[error("channel {0} is paused: start it to broadcast")]
    Paused(String),
    /// Over the channel's `rate_limit_per_minute`.
    #[error("rate limit exceeded: {0} messages per minute")]
    RateLimited(u32),
    /// `EMIT_HUB_MAX_CHANNELS` channels exist already.
    #[error("{0} channels exist, the most EMIT_HUB_MAX_CHANNELS allows: delete one first")]
    TooManyChannels(usize),
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error("channel store unavailable: {0}")]
    Store(#[from] StoreError),
    /// The cluster could not carry the message.
    #[error("{0}")]
    Cluster(#[from] BackendError),
}

/// `POST /channels`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChannel {
    /// The name.
    pub name: String,
    /// An optional description.
    #[serde(default)]
    pub description: Option<String>,
    /// Settings; what is missing takes the defaults.
    #[serde(default)]
    pub settings: SettingsPatch,
}

/// `PATCH /channels/{id}`: what changes.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateChannel {
    /// A new name.
    #[serde(default)]
    pub name: Option<String>,
    /// A new description (`null` keeps it; `""` clears it).
    #[serde(default)]
    pub description: Option<String>,
    /// Settings to change.
    #[serde(default)]
    pub settings: SettingsPatch,
}

/// What a broadcast did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Broadcasted {
    /// The message id.
    pub id: Uuid,
    /// The channel.
    pub channel_id: Uuid,
    /// The text.
    pub content: String,
    /// Its type.
    pub message_type: String,
    /// When.
    #[serde(with = "model::rfc3339")]
    pub timestamp: chrono::DateTime<Utc>,
    /// Sockets on this node it reached.
    pub recipients: usize,
    /// Its place in the persisted history (`persist_messages` channels).
    pub sequence: Option<u64>,
}

/// The managed-channel registry of one node.
pub struct EmitHub {
    store: Arc<dyn ChannelStore>,
    channels: RwLock<HashMap<Uuid, ManagedChannel>>,
    fanout: Fanout,
    config: ArcSwap<EmitHubConfig>,
    cluster: Option<Arc<RedisBroker>>,
    limiters: crate::rate::Limiters<Uuid>,
    backup_dir: Option<PathBuf>,
    #[cfg(feature = "redb")]
    redb: Option<RedbStore>,
    /// Where the persisted messages are kept (see [`EmitHub::keep_history_in`]).
    history_store: Arc<dyn HistoryStore>,
    changes: tokio::sync::broadcast::Sender<ChannelChange>,
    /// The store's generation when this node last loaded from it (see `write_back_if_lost`).
    generation: std::sync::Mutex<Option<String>>,
}

pub use crate::lifecycle::ChannelChange;

impl std::fmt::Debug for EmitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmitHub")
            .field("channels", &read(&self.channels).len())
            .finish_non_exhaustive()
    }
}

impl EmitHub {
    /// The registry of a single node: channels in the redb file of `config.db_path` (or
    /// in memory). The file is not touched here: [`load`](Self::load) opens it (the app
    /// does when it starts).
    #[cfg(feature = "redb")]
    pub fn single_node(config: EmitHubConfig, fanout: Fanout) -> Result<Arc<Self>, StoreError> {
        let store = match &config.db_path {
            Some(path) => RedbStore::deferred(path),
            None => RedbStore::in_memory()?,
        };
        let backup_dir = store.path().map(|p| {
            p.parent()
                .map(|d| d.join("backups"))
                .unwrap_or_else(|| PathBuf::from("backups"))
        });
        let history = Arc::new(history::FileHistory::new(
            store.clone(),
            crate::history::RedbTables::MANAGED,
        ));
        let mut hub = Self::with_store(Arc::new(store.clone()), history, config, fanout, None, backup_dir);
        hub.redb = Some(store);
        Ok(Self::owning(Arc::new(hub)))
    }

    /// Opens a single node's database file when it exists (a file that is not a redb
    /// database, is damaged or cannot be written is an error naming it; a file of an
    /// earlier layout is migrated) or checks that it could be created, and loads its
    /// channels. Once, before serving: [`Rustaxum::start`](crate::Rustaxum::start) calls
    /// it. Nothing to do for a clustered registry (it loads from Redis in the background).
    pub fn load(&self) -> Result<(), StoreError> {
        #[cfg(feature = "redb")]
        if let Some(store) = &self.redb {
            store.check()?;
            self.replace_all(store.channels_now()?);
        }
        Ok(())
    }

    /// History in this single node's database file, in its `tables`, opened when the file
    /// is (an application that keeps nothing gets no file); `None` for a clustered
    /// registry.
    #[cfg(feature = "redb")]
    pub fn file_history(&self, tables: crate::history::RedbTables) -> Option<Arc<dyn HistoryStore>> {
        let store = self.redb.as_ref()?;
        Some(Arc::new(history::FileHistory::new(store.clone(), tables)))
    }

    /// The registry of a single node in a build without the `redb` feature: channels in
    /// memory. A `config.db_path` is refused (nothing could be kept there).
    #[cfg(not(feature = "redb"))]
    pub fn single_node(config: EmitHubConfig, fanout: Fanout) -> Result<Arc<Self>, StoreError> {
        if let Some(path) = &config.db_path {
            return Err(StoreError::new(format!(
                "EMIT_HUB_DB_PATH={} needs rustaxum's `redb` feature (this build has none): set EMIT_HUB_DB_PATH=:memory: to keep channels in memory",
                path.display()
            )));
        }
        Ok(Self::owning(Arc::new(Self::with_store(
            Arc::new(store::MemoryStore::default()),
            Arc::new(crate::history::MemoryHistory::new(usize::MAX)),
            config,
            fanout,
            None,
            None,
        ))))
    }

    /// The registry of a cluster node: channels and history in Redis, loaded in the
    /// background (and again whenever the broker resubscribes).
    pub fn clustered(config: EmitHubConfig, fanout: Fanout, broker: Arc<RedisBroker>) -> Arc<Self> {
        let store = Arc::new(RedisStore::new(broker.link().clone()));
        let history = Arc::new(crate::history::RedisHistory::new(broker.clone()));
        let backup_dir = config
            .db_path
            .as_ref()
            .and_then(|p| p.parent().map(|d| d.join("backups")));
        Self::owning(Arc::new(Self::with_store(
            store,
            history,
            config,
            fanout,
            Some(broker),
            backup_dir,
        )))
    }

    fn with_store(
        store: Arc<dyn ChannelStore>,
        history_store: Arc<dyn HistoryStore>,
        config: EmitHubConfig,
        fanout: Fanout,
        cluster: Option<Arc<RedisBroker>>,
        backup_dir: Option<PathBuf>,
    ) -> Self {
        Self {
            store,
            channels: RwLock::default(),
            fanout,
            config: ArcSwap::from_pointee(config),
            cluster,
            limiters: crate::rate::Limiters::new(crate::rate::per_minute),
            backup_dir,
            #[cfg(feature = "redb")]
            redb: None,
            history_store,
            changes: tokio::sync::broadcast::channel(1024).0,
            generation: std::sync::Mutex::new(None),
        }
    }

    /// Creations, state changes and deletions made through this node (once per cluster:
    /// other nodes' changes are not repeated here).
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<ChannelChange> {
        self.changes.subscribe()
    }

    fn changed(&self, id: Uuid, name: &str, status: &str) {
        let _ = self.changes.send(ChannelChange {
            channel: hub_channel_name(id),
            id: id.to_string(),
            name: name.to_string(),
            status: status.to_string(),
        });
    }

    #[cfg(feature = "redb")]
    fn replace_all(&self, channels: Vec<ManagedChannel>) {
        *write(&self.channels) = channels.into_iter().map(|c| (c.id, c)).collect();
    }

    /// The configuration now.
    pub fn config(&self) -> Arc<EmitHubConfig> {
        self.config.load_full()
    }

    /// Replaces the configuration (a reload): new defaults apply to new channels, the
    /// retention and message limits from the next message or purge. Where the channels are
    /// kept and the backup schedule stay as they started.
    pub fn set_config(&self, config: EmitHubConfig) {
        self.config.store(Arc::new(config));
    }

    /// The defaults of a new channel.
    pub fn default_settings(&self) -> ChannelSettings {
        let config = self.config.load();
        ChannelSettings {
            max_connections: config.max_connections,
            allow_client_messages: config.allow_client_messages,
            persist_messages: config.persist_messages,
            rate_limit_per_minute: config.rate_limit_per_minute,
        }
    }

    /// Every channel, oldest first.
    pub fn list(&self) -> Vec<ManagedChannel> {
        let mut all: Vec<_> = read(&self.channels).values().cloned().collect();
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        all
    }

    /// One channel, as this node knows it.
    pub fn get(&self, id: Uuid) -> Result<ManagedChannel, EmitHubError> {
        read(&self.channels).get(&id).cloned().ok_or(EmitHubError::NotFound(id))
    }

    /// One channel; in a cluster, one this node has not heard of yet (created on another
    /// node a moment ago: a load balancer may send the next request here before the notice
    /// arrives) is read from the shared store.
    pub async fn fetch(&self, id: Uuid) -> Result<ManagedChannel, EmitHubError> {
        match self.get(id) {
            Err(EmitHubError::NotFound(_)) if self.cluster.is_some() => {
                let channel = self.store.channel(id).await?.ok_or(EmitHubError::NotFound(id))?;
                self.apply(channel.clone());
                Ok(channel)
            }
            known => known,
        }
    }

    /// The managed channel behind hub channel `emithub.{id}`.
    pub fn for_hub_channel(&self, channel: &Channel) -> Option<Result<ManagedChannel, EmitHubError>> {
        let id = channel.name().strip_prefix(HUB_PREFIX)?;
        Some(
            Uuid::parse_str(id)
                .map_err(|_| EmitHubError::Invalid(format!("{id} is not a channel id")))
                .and_then(|id| self.get(id)),
        )
    }

    /// Creates a channel (status `Created`).
    pub async fn create(&self, request: CreateChannel) -> Result<ManagedChannel, EmitHubError> {
        let name = request.name.trim().to_string();
        if name.is_empty() || name.len() > 200 {
            return Err(EmitHubError::Invalid("name must be 1 to 200 characters".into()));
        }
        let max = self.config.load().max_channels;
        let existing = read(&self.channels).len();
        if existing >= max {
            return Err(EmitHubError::TooManyChannels(max));
        }
        let settings = self.default_settings().patched(&request.settings);
        settings.validate().map_err(EmitHubError::Invalid)?;
        let now = model::now();
        let channel = ManagedChannel {
            id: Uuid::new_v4(),
            name,
            description: request.description.filter(|d| !d.is_empty()),
            status: ChannelStatus::Created,
            created_at: now,
            updated_at: now,
            settings,
        };
        let channel = self.save(channel).await?;
        self.changed(channel.id, &channel.name, "Created");
        Ok(channel)
    }

    /// Starts, pauses or stops a channel. Stopping closes its open sockets with 4010.
    pub async fn transition(&self, id: Uuid, transition: Transition) -> Result<ManagedChannel, EmitHubError> {
        let mut channel = self.fetch(id).await?;
        let to = transition
            .apply(channel.status)
            .ok_or(EmitHubError::InvalidTransition {
                name: channel.name.clone(),
                action: transition.name(),
                from: channel.status,
            })?;
        if to == channel.status {
            return Ok(channel);
        }
        channel.status = to;
        channel.updated_at = model::now();
        let channel = self.save(channel).await?;
        tracing::info!(channel = %channel.id, name = %channel.name, status = ?channel.status, "channel state changed");
        self.changed(channel.id, &channel.name, &format!("{:?}", channel.status));
        Ok(channel)
    }

    /// Changes a channel's name, description or settings.
    pub async fn update(&self, id: Uuid, request: UpdateChannel) -> Result<ManagedChannel, EmitHubError> {
        let mut channel = self.fetch(id).await?;
        if let Some(name) = request.name {
            let name = name.trim().to_string();
            if name.is_empty() || name.len() > 200 {
                return Err(EmitHubError::Invalid("name must be 1 to 200 characters".into()));
            }
            channel.name = name;
        }
        if let Some(description) = request.description {
            channel.description = Some(description).filter(|d| !d.is_empty());
        }
        channel.settings = channel.settings.patched(&request.settings);
        channel.settings.validate().map_err(EmitHubError::Invalid)?;
        channel.updated_at = model::now();
        self.save(channel).await
    }

    /// Deletes a channel and its history; open sockets are closed with 4011.
    pub async fn delete(&self, id: Uuid) -> Result<(), EmitHubError> {
        let channel = self.fetch(id).await?;
        self.store.delete(id).await?;
        if let (Some(history), Ok(hub_channel)) = (self.fanout.history(), history::hub_channel(id)) {
            if let Err(e) = history.clear(&hub_channel).await {
                tracing::warn!(channel = %id, error = %e, "forgetting a deleted channel's messages failed");
            }
        }
        write(&self.channels).remove(&id);
        self.limiters.remove(&id);
        self.close_sockets(id, close::DELETED);
        self.announce(id).await;
        tracing::info!(channel = %id, name = %channel.name, "channel deleted");
        self.changed(id, &channel.name, "Deleted");
        Ok(())
    }

    /// Writes a channel through to the store and the cache, applies what its state means
    /// for open sockets, and tells the other nodes.
    async fn save(&self, channel: ManagedChannel) -> Result<ManagedChannel, EmitHubError> {
        self.store.put(&channel).await?;
        self.apply(channel.clone());
        self.announce(channel.id).await;
        Ok(channel)
    }

    fn apply(&self, channel: ManagedChannel) {
        let stopped = channel.status == ChannelStatus::Stopped;
        let id = channel.id;
        write(&self.channels).insert(id, channel);
        if stopped {
            self.close_sockets(id, close::STOPPED);
        }
    }

    fn close_sockets(&self, id: Uuid, reason: CloseReason) {
        if let Ok(channel) = history::hub_channel(id) {
            let closed = self.fanout.hub().close_channel(&channel, reason);
            if closed > 0 {
                tracing::info!(channel = %id, closed, code = reason.code, "closed the channel's sockets");
            }
        }
    }

    async fn announce(&self, id: Uuid) {
        if let Some(broker) = &self.cluster {
            let notice = crate::cluster::redis::Control::ManagedChannelChanged {
                payload: crate::cluster::redis::ChannelRef { id },
            };
            if let Err(e) = broker.publish_control(notice).await {
                tracing::warn!(channel = %id, error = %e, "telling the other nodes about a channel change failed");
            }
        }
    }

    /// Reloads one channel from the store after another node changed it.
    async fn reload(&self, id: Uuid) -> Result<(), StoreError> {
        match self.store.channel(id).await? {
            Some(channel) => self.apply(channel),
            None => {
                if write(&self.channels).remove(&id).is_some() {
                    self.close_sockets(id, close::DELETED);
                }
            }
        }
        Ok(())
    }

    /// Reloads every channel from the store.
    async fn reload_all(&self) -> Result<(), StoreError> {
        let fresh = self.store.channels().await?;
        let gone: Vec<Uuid> = {
            let ids: std::collections::HashSet<Uuid> = fresh.iter().map(|c| c.id).collect();
            read(&self.channels)
                .keys()
                .filter(|id| !ids.contains(id))
                .copied()
                .collect()
        };
        for channel in fresh {
            self.apply(channel);
        }
        for id in gone {
            write(&self.channels).remove(&id);
            self.close_sockets(id, close::DELETED);
        }
        Ok(())
    }

    /// Sends `content` to the channel's sockets (and keeps it when `persist_messages`).
    /// Refused unless the channel is Active, and over its `rate_limit_per_minute`.
    pub async fn broadcast(
        &self,
        id: Uuid,
        content: String,
        message_type: String,
    ) -> Result<Broadcasted, EmitHubError> {
        if let Some(problem) = crate::session::event_name_problem(&message_type, crate::session::MAX_EVENT_NAME_LEN) {
            return Err(EmitHubError::Invalid(format!("message_type: {problem}")));
        }
        let channel = self.fetch(id).await?;
        match channel.status {
            ChannelStatus::Active => {}
            ChannelStatus::Paused => return Err(EmitHubError::Paused(channel.name)),
            status => {
                return Err(EmitHubError::NotActive {
                    name: channel.name,
                    status,
                })
            }
        }
        self.check_rate(&channel)?;
        let message_id = Uuid::new_v4();
        let timestamp = model::now();
        let payload = BroadcastPayload {
            content,
            message_type,
            id: message_id,
        };
        let hub_channel = history::hub_channel(id)?;
        let raw = serde_json::value::to_raw_value(&payload).map_err(|e| EmitHubError::Invalid(e.to_string()))?;
        let message = Message {
            timestamp: Arc::from(timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            ..Message::event(hub_channel, BROADCAST_EVENT, Arc::from(raw))
        };
        // Kept (when the channel persists messages) and delivered in position order by
        // the fan-out, under the channel's history lock.
        let report = self.fanout.publish_owned(message).await?;
        Ok(Broadcasted {
            id: message_id,
            channel_id: id,
            content: payload.content,
            message_type: payload.message_type,
            timestamp,
            recipients: report.delivered,
            sequence: report.offset,
        })
    }

    fn check_rate(&self, channel: &ManagedChannel) -> Result<(), EmitHubError> {
        let per_minute = channel.settings.rate_limit_per_minute;
        if self.limiters.check(channel.id, per_minute) {
            Ok(())
        } else {
            Err(EmitHubError::RateLimited(per_minute))
        }
    }

    /// Whether the store answers.
    pub async fn check(&self) -> Result<(), EmitHubError> {
        Ok(self.store.check().await?)
    }
}

impl GrantSource for EmitHub {
    /// Managed channels (`emithub.{id}`): joinable while Active or Paused, up to their
    /// `max_connections`, with client messages as their settings say.
    fn grant(&self, _identity: Option<&Identity>, channel: &Channel) -> Option<Result<Grant, JoinError>> {
        let managed = match self.for_hub_channel(channel)? {
            Ok(managed) => managed,
            Err(_) => return Some(Err(JoinError::NotFound(channel.name().to_string()))),
        };
        if !managed.status.accepts_sockets() {
            return Some(Err(JoinError::NotActive(managed.name)));
        }
        let mut grant = Grant::for_channel(channel.with_kind(ChannelKind::Public), None);
        grant.client_events = managed.settings.allow_client_messages;
        grant.client_events_per_minute = Some(managed.settings.rate_limit_per_minute);
        grant.max_connections = Some(managed.settings.max_connections);
        grant.history = managed.settings.persist_messages;
        Some(Ok(grant))
    }
}
