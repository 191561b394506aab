//! [`BroadcastManager`]: builds drivers from configuration once and caches them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

#[cfg(feature = "redis")]
use super::drivers::RedisDriver;
use super::drivers::{BroadcastDriver, DriverContext, LocalDriver, LogDriver, NullDriver, Payload};
use super::queue::{BroadcastQueue, FailedBroadcast, QueueOptions};
use super::BroadcastError;
use crate::channel::Channel;
use crate::hub::Hub;
use crate::sync::{read, write};

/// Builds a driver for a connection (Laravel's `extend` closure).
pub type DriverFactory =
    Arc<dyn Fn(&ConnectionConfig, &DriverContext) -> Result<Arc<dyn BroadcastDriver>, BroadcastError> + Send + Sync>;

/// One named connection: which driver it uses and that driver's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// The driver name (`websocket`, `log`, `null`, `redis`, or one added with `extend`).
    pub driver: String,
    /// Free-form options for the driver.
    pub options: BTreeMap<String, String>,
}

impl ConnectionConfig {
    /// A connection using `driver` with no options.
    pub fn driver(driver: impl Into<String>) -> Self {
        Self {
            driver: driver.into(),
            options: BTreeMap::new(),
        }
    }
}

/// Laravel's `config/broadcasting.php`: a default connection and named connections.
#[derive(Debug, Clone)]
pub struct BroadcastConfig {
    /// The connection used when none is named.
    pub default: String,
    /// Connections by name.
    pub connections: BTreeMap<String, ConnectionConfig>,
}

impl BroadcastConfig {
    /// The built-in connections (`websocket`/`local`, `redis`, `log`, `null`) with
    /// `default` (a driver name) as the default.
    pub fn builtin(default: &str) -> Self {
        let connections = [
            ("websocket", "websocket"),
            ("local", "websocket"),
            ("redis", "redis"),
            ("log", "log"),
            ("null", "null"),
        ]
        .into_iter()
        .map(|(name, driver)| (name.to_string(), ConnectionConfig::driver(driver)))
        .collect();
        Self {
            default: default.to_string(),
            connections,
        }
    }
}

/// Resolves connections to drivers and sends broadcasts through them.
///
/// Drivers are created on first use and cached as `Arc<dyn BroadcastDriver>`;
/// resolving is a read lock and a clone afterwards.
///
/// ```
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use rustaxum::broadcasting::{BroadcastManager, NullDriver};
///
/// // A manager of a configuration, delivering to this process's sockets.
/// let config = Arc::new(rustaxum::Config::default());
/// let manager = Arc::new(BroadcastManager::from_config(config, Arc::new(rustaxum::hub::Hub::default())));
/// manager.extend("quiet", |_connection, _context| Ok(Arc::new(NullDriver)));
/// manager
///     .broadcast()
///     .channels(["orders", "private-user.42"])
///     .event("order.shipped")
///     .with(serde_json::json!({"order": 1001}))
///     .via("quiet")
///     .send()
///     .await?;
/// # Ok(()) }
/// ```
pub struct BroadcastManager {
    config: RwLock<BroadcastConfig>,
    context: DriverContext,
    factories: RwLock<HashMap<String, DriverFactory>>,
    resolved: RwLock<HashMap<String, Arc<dyn BroadcastDriver>>>,
    queue: BroadcastQueue,
}

impl std::fmt::Debug for BroadcastManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BroadcastManager").finish_non_exhaustive()
    }
}

impl BroadcastManager {
    /// A manager with the built-in drivers registered.
    pub fn new(config: BroadcastConfig, context: DriverContext) -> Self {
        let manager = Self {
            config: RwLock::new(config),
            context,
            factories: RwLock::new(HashMap::new()),
            resolved: RwLock::new(HashMap::new()),
            queue: BroadcastQueue::default(),
        };
        manager.extend("websocket", |_, ctx| Ok(Arc::new(LocalDriver::new(ctx.fanout.clone()))));
        manager.extend("log", |_, ctx| {
            Ok(Arc::new(match &ctx.settings.log_file {
                Some(path) => LogDriver::with_file(path)?,
                None => LogDriver::new(),
            }))
        });
        manager.extend("null", |_, _| Ok(Arc::new(NullDriver)));
        #[cfg(feature = "redis")]
        manager.extend("redis", |_, ctx| Ok(Arc::new(RedisDriver::from_context(ctx)?)));
        manager
    }

    /// A manager with the built-in connections (`default` the default one) whose
    /// drivers publish through `fanout` (a clustered node's broker, or this process's hub).
    pub fn over(default: &str, fanout: crate::publish::Fanout, settings: super::DriverSettings) -> Self {
        let hub = fanout.hub().clone();
        Self::new(
            BroadcastConfig::builtin(default),
            DriverContext { hub, fanout, settings },
        )
    }

    /// Registers (or replaces) the factory for driver `name`. A connection that is not
    /// configured but has the same name as the driver resolves to it, so
    /// `extend("audit", ..)` then `driver("audit")` works without more setup.
    pub fn extend<F>(&self, name: &str, factory: F) -> &Self
    where
        F: Fn(&ConnectionConfig, &DriverContext) -> Result<Arc<dyn BroadcastDriver>, BroadcastError>
            + Send
            + Sync
            + 'static,
    {
        write(&self.factories).insert(name.to_string(), Arc::new(factory));
        // Connections built with an older factory must be rebuilt.
        write(&self.resolved).retain(|conn, _| {
            read(&self.config)
                .connections
                .get(conn)
                .map_or(conn != name, |c| c.driver != name)
        });
        self
    }

    /// Adds or replaces a named connection.
    pub fn add_connection(&self, name: &str, connection: ConnectionConfig) {
        write(&self.config).connections.insert(name.to_string(), connection);
        write(&self.resolved).remove(name);
    }

    /// Changes the default connection.
    pub fn set_default_driver(&self, name: &str) {
        write(&self.config).default = name.to_string();
    }

    /// The default connection's name.
    pub fn default_driver_name(&self) -> String {
        read(&self.config).default.clone()
    }

    /// The default connection's driver.
    pub fn default_driver(&self) -> Result<Arc<dyn BroadcastDriver>, BroadcastError> {
        let name = self.default_driver_name();
        self.connection(&name)
    }

    /// Laravel's `Broadcast::driver($name)`: same as [`connection`](Self::connection).
    pub fn driver(&self, name: &str) -> Result<Arc<dyn BroadcastDriver>, BroadcastError> {
        self.connection(name)
    }

    /// The driver of connection `name`, created on first use.
    pub fn connection(&self, name: &str) -> Result<Arc<dyn BroadcastDriver>, BroadcastError> {
        if let Some(driver) = read(&self.resolved).get(name) {
            return Ok(driver.clone());
        }
        let connection = match read(&self.config).connections.get(name) {
            Some(c) => c.clone(),
            None if read(&self.factories).contains_key(name) => ConnectionConfig::driver(name),
            None => return Err(BroadcastError::ConnectionNotDefined(name.to_string())),
        };
        let factory = read(&self.factories)
            .get(&connection.driver)
            .cloned()
            .ok_or_else(|| BroadcastError::DriverNotSupported(connection.driver.clone()))?;
        let driver = factory(&connection, &self.context)?;
        // Two tasks may race to build the same driver; keep the first so every caller
        // shares one instance.
        let mut resolved = write(&self.resolved);
        Ok(resolved.entry(name.to_string()).or_insert(driver).clone())
    }

    /// Starts a fluent broadcast through this manager.
    pub fn broadcast(self: &Arc<Self>) -> super::PendingBroadcast {
        super::PendingBroadcast::default().via_manager(self.clone())
    }

    /// Sends now through `connection` (or the default) and returns the local sockets reached.
    pub async fn send(
        &self,
        connection: Option<&str>,
        channels: &[Channel],
        event: &str,
        payload: &Payload,
    ) -> Result<usize, BroadcastError> {
        validate(channels, event)?;
        let driver = match connection {
            Some(name) => self.connection(name)?,
            None => self.default_driver()?,
        };
        driver.deliver(channels, event, payload).await
    }

    /// Queues a broadcast to run in the background with retries; returns once accepted.
    pub fn enqueue(
        &self,
        connection: Option<&str>,
        channels: Vec<Channel>,
        event: String,
        payload: Payload,
        options: QueueOptions,
    ) -> Result<(), BroadcastError> {
        validate(&channels, &event)?;
        let driver = match connection {
            Some(name) => self.connection(name)?,
            None => self.default_driver()?,
        };
        self.queue.push(driver, channels, event, payload, options)
    }

    /// Broadcasts that failed every try (most recent last, at most 1,000 kept).
    pub fn failed_broadcasts(&self) -> Vec<FailedBroadcast> {
        self.queue.failed()
    }

    /// Queued broadcasts not yet finished.
    pub fn pending_broadcasts(&self) -> usize {
        self.queue.pending()
    }

    /// The hub drivers deliver into.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.context.hub
    }

    /// Waits (up to `drain`) for queued broadcasts, then closes every driver.
    pub async fn close(&self, drain: std::time::Duration) {
        self.queue.close(drain).await;
        let drivers: Vec<_> = write(&self.resolved).drain().collect();
        for (name, driver) in drivers {
            if let Err(e) = driver.close().await {
                tracing::warn!(connection = %name, error = %e, "closing broadcast driver failed");
            }
        }
    }
}

/// Longest accepted event name in bytes (Pusher's limit).
pub use crate::hub::MAX_EVENT_NAME_LEN;

/// Refuses a broadcast without channels or with an empty or overlong event name.
pub fn validate(channels: &[Channel], event: &str) -> Result<(), BroadcastError> {
    if channels.is_empty() {
        return Err(BroadcastError::NoChannels);
    }
    match crate::hub::event_name_problem(event, MAX_EVENT_NAME_LEN) {
        Some(problem) => Err(BroadcastError::InvalidEvent(problem)),
        None => Ok(()),
    }
}

static GLOBAL: RwLock<Option<Arc<BroadcastManager>>> = RwLock::new(None);

/// Installs `manager` as the one the helpers, facades and `dispatch()` use.
pub fn install(manager: Arc<BroadcastManager>) {
    *write(&GLOBAL) = Some(manager);
}

/// Builds the manager the helpers use when none is installed: from the environment, as
/// the server reads it. Provided by the configuration layer (the `config` module), which this
/// library does not depend on; registered at link time.
#[linkme::distributed_slice]
pub static ENV_MANAGER: [fn() -> Result<BroadcastManager, BroadcastError>];

/// The installed manager. When none is installed, the first use installs one built
/// from the environment (as Laravel's facades resolve from the container): it
/// delivers to this process's hub, or through Redis with `BROADCAST_DRIVER=redis`.
/// Without the `server` feature nothing reads the environment: until one is installed
/// it is [`BroadcastError::NotInstalled`].
pub fn global() -> Result<Arc<BroadcastManager>, BroadcastError> {
    if let Some(manager) = read(&GLOBAL).clone() {
        return Ok(manager);
    }
    // None registered: the library without the server, which reads no environment.
    let build = ENV_MANAGER.first().ok_or(BroadcastError::NotInstalled)?;
    let manager = Arc::new(build()?);
    let mut slot = write(&GLOBAL);
    Ok(slot.get_or_insert(manager).clone())
}

// The library alone has no manager from the environment: the helpers say to install one,
// then use it. (With the server, `tests/it/library.rs` covers the environment's manager.)
#[cfg(all(test, not(feature = "server")))]
mod tests {
    use super::*;
    use crate::publish::Fanout;

    #[tokio::test]
    async fn without_the_server_the_helpers_use_the_manager_that_was_installed() {
        let err = global().expect_err("nothing installed, nothing from the environment");
        assert!(matches!(err, BroadcastError::NotInstalled), "{err}");
        assert!(err.to_string().contains("install"), "{err}");

        let hub = Arc::new(Hub::default());
        install(Arc::new(BroadcastManager::over(
            "local",
            Fanout::local(hub.clone()),
            super::super::DriverSettings::default(),
        )));
        let (me, mut inbox) = hub.connect(crate::hub::Protocol::Native);
        let orders = Channel::parse("orders").expect("a channel name");
        hub.subscribe(&me, &orders).expect("subscribed");
        super::super::broadcast()
            .channel("orders")
            .event("shipped")
            .with(serde_json::json!({"id": 1}))
            .send()
            .await
            .expect("sent");
        let got = inbox.try_recv().expect("delivered before send returned");
        assert_eq!((got.event.as_ref(), got.data.get()), ("shipped", r#"{"id":1}"#));
    }
}
