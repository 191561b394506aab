//! EmitHub's settings: where channels are kept, the defaults of new channels, limits.

use std::path::PathBuf;

/// `EMIT_HUB_MAX_CHANNELS` when not set.
pub const DEFAULT_EMIT_HUB_MAX_CHANNELS: usize = 1000;

/// The EmitHub database file when `EMIT_HUB_DB_PATH` is not set.
pub const DEFAULT_EMIT_HUB_DB_PATH: &str = "./data/emit_hub.redb";

/// EmitHub managed channels: where they are kept, and the defaults of new channels.
#[derive(Debug, Clone, PartialEq)]
pub struct EmitHubConfig {
    /// `EMIT_HUB_DB_PATH`: the redb database file, default `./data/emit_hub.redb`; `None`
    /// (`:memory:`) keeps it in memory. Unused in a cluster (channels live in Redis).
    pub db_path: Option<PathBuf>,
    /// `EMIT_HUB_MAX_CONNECTIONS`: default `max_connections` of a new channel, 1000.
    pub max_connections: usize,
    /// `EMIT_HUB_MAX_CHANNELS`: channels that may exist at once, 1000.
    pub max_channels: usize,
    /// `EMIT_HUB_ALLOW_CLIENT_MESSAGES`: default `allow_client_messages`, `true`.
    pub allow_client_messages: bool,
    /// `EMIT_HUB_PERSIST_MESSAGES`: default `persist_messages`, `false`.
    pub persist_messages: bool,
    /// `EMIT_HUB_RATE_LIMIT_PER_MINUTE`: default `rate_limit_per_minute`, 60.
    pub rate_limit_per_minute: u32,
    /// `EMIT_HUB_MAX_MESSAGES_PER_CHANNEL`: messages kept per channel, 10000.
    pub max_messages_per_channel: usize,
    /// `EMIT_HUB_MESSAGE_RETENTION_DAYS`: days messages are kept, 30 (0 = forever).
    pub message_retention_days: u32,
    /// `EMIT_HUB_AUTO_BACKUP`: copy the database periodically, `false`.
    pub auto_backup: bool,
    /// `EMIT_HUB_BACKUP_INTERVAL_HOURS`: hours between backups (fractions allowed), 24.
    pub backup_interval_hours: f64,
}

impl Default for EmitHubConfig {
    /// The environment's defaults, except the database, which is in memory (so a library
    /// default has no side effect on the disk).
    fn default() -> Self {
        Self {
            db_path: None,
            max_connections: 1000,
            max_channels: DEFAULT_EMIT_HUB_MAX_CHANNELS,
            allow_client_messages: true,
            persist_messages: false,
            rate_limit_per_minute: 60,
            max_messages_per_channel: 10_000,
            message_retention_days: 30,
            auto_backup: false,
            backup_interval_hours: 24.0,
        }
    }
}
