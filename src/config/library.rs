//! The library's pieces built from a configuration: the broadcast manager and its
//! drivers' settings. The library (`crate::broadcasting`) knows nothing of [`Config`]; this
//! is where the two meet, and where the helpers' manager of last resort (none installed:
//! built from the environment) comes from.

use std::sync::Arc;

use super::Config;
use crate::broadcasting::{BroadcastConfig, BroadcastError, BroadcastManager, DriverSettings};
use crate::hub::Hub;
use crate::publish::Fanout;

impl Config {
    /// What the built-in drivers read: the log driver's file and the Redis of the redis
    /// driver.
    pub fn driver_settings(&self) -> DriverSettings {
        DriverSettings {
            log_file: self.log_file.clone(),
            redis: self.redis.clone(),
        }
    }
}

impl BroadcastConfig {
    /// The built-in connections (`websocket`/`local`, `redis`, `log`, `null`) with
    /// `BROADCAST_DRIVER` as the default.
    pub fn from_config(config: &Config) -> Self {
        Self::builtin(config.driver.name())
    }
}

impl BroadcastManager {
    /// A manager from a configuration, publishing into `hub` (this process's sockets).
    pub fn from_config(config: Arc<Config>, hub: Arc<Hub>) -> Self {
        Self::with_fanout(config, Fanout::local(hub))
    }

    /// A manager from a configuration whose drivers publish through `fanout` (a
    /// clustered node's broker).
    pub fn with_fanout(config: Arc<Config>, fanout: Fanout) -> Self {
        Self::over(config.driver.name(), fanout, config.driver_settings())
    }
}

/// The helpers' manager when none is installed: the environment's configuration (`.env`
/// and the configuration file included), delivering to a hub of this process or through
/// Redis with `BROADCAST_DRIVER=redis`.
#[linkme::distributed_slice(crate::broadcasting::manager::ENV_MANAGER)]
static FROM_ENV: fn() -> Result<BroadcastManager, BroadcastError> = from_env;

fn from_env() -> Result<BroadcastManager, BroadcastError> {
    let config = Config::from_env().map_err(|e| BroadcastError::Config(e.to_string()))?;
    Ok(BroadcastManager::from_config(
        Arc::new(config),
        Arc::new(Hub::default()),
    ))
}
