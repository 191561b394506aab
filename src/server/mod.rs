//! Putting it together: [`Rustaxum`] owns the session core ([`Node`]), the manager and
//! the sessions; [`Builder`] puts it together without starting anything, and
//! [`Rustaxum::serve`] starts it and serves it on listeners until a shutdown future
//! resolves.

mod builder;
mod listen;
mod process;
pub mod tls;

/// Many nodes as one over Redis (`BROADCAST_DRIVER=redis`): the [`RedisBroker`]
/// carries messages between nodes (a message published on one node reaches every
/// subscriber once), keeps node heartbeats and cluster-wide stats, and is what the
/// clustered stores (presence, history, EmitHub, Pusher counts) share. The builder makes
/// one ([`RedisBroker::new`]) when the configuration runs clustered.
pub mod cluster {
    pub use crate::backend::RedisLink;
    pub use crate::cluster::redis::{
        BrokerStatus, LaneHealth, LaneKind, RedisBroker, HEARTBEAT, INTEREST_LINGER, NODE_TTL,
    };
    pub use crate::cluster::{Broker, LocalBroker, Receiver};
}

pub use builder::Builder;
// The session core an app runs on ([`Rustaxum::node`]), where grants come from, and the
// node's one publish path with its extension points.
pub use crate::lifecycle::{Lifecycle, LifecycleEvent};
pub use crate::publish::{ChannelOwner, Origin as PublishOrigin, PublishHook};
pub use crate::session::{Grant, GrantSource, JoinError, Limits, Node};
pub use process::{init_tracing, json_line, run_process, say, set_log_filter, shutdown_signal};

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::ChannelRules;
use crate::broadcasting::{BroadcastError, BroadcastManager};
use crate::cluster::redis::RedisBroker;
use crate::config::vars::Variable;
use crate::config::{Config, ConfigError};
use crate::hub::Hub;
use crate::protocol::{self, AppState};
use crate::services::emithub::EmitHub;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Configuration is invalid or unsafe.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The default broadcast driver could not be created.
    #[error("broadcast driver: {0}")]
    Driver(#[from] BroadcastError),
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// A port set explicitly could not be bound.
    #[error("cannot listen on {addr} ({var}): {source}")]
    Bind {
        /// The variable that set the port.
        var: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Neither the WebSocket port nor the application port could be bound.
    #[error("no port to listen on: {0}")]
    NoListener(String),
    /// `BROADCAST_DRIVER=redis` needs a running tokio runtime to start its tasks.
    #[error("the redis driver must be started inside a tokio runtime")]
    NoRuntime,
    /// The EmitHub database could not be opened (corrupt, unwritable, or open in another
    /// process).
    #[error("EmitHub database (EMIT_HUB_DB_PATH): {0}")]
    Store(#[from] crate::services::emithub::store::StoreError),
    /// The TLS certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// Private or presence rules exist but no JWT key is configured to verify users.
    #[error("channel rules need authenticated users but no JWT key is configured: set JWT_SECRET (HS*) or JWT_PUBLIC_KEY_FILE (RS*/ES*)")]
    NoJwtKey,
}

/// A broadcasting runtime: hub, manager, authorizer and the sessions it serves. Built by
/// [`Rustaxum::builder`] (or [`Rustaxum::new`]) without starting anything; started and
/// served by [`serve`](Rustaxum::serve).
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let app = rustaxum::Rustaxum::new(rustaxum::Config::from_env()?)?;
/// // Mount under your own axum app, and serve it with the app's drain:
/// let router: axum::Router = axum::Router::new().merge(app.router()?);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// app.serve([(listener, router)], rustaxum::server::shutdown_signal()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Rustaxum {
    state: AppState,
    background: TaskTracker,
    stop: CancellationToken,
    tls: Option<Arc<tls::Tls>>,
    /// What [`start`](Rustaxum::start) starts (empty once started).
    pending: Arc<std::sync::Mutex<Vec<builder::Start>>>,
}

/// A listener to serve, with the router it serves (the app's [`router`](Rustaxum::router)
/// when none is given): a `TcpListener`, or a `(TcpListener, Router)`.
#[derive(Debug)]
pub struct Listener {
    listener: tokio::net::TcpListener,
    router: Option<Router>,
}

impl From<tokio::net::TcpListener> for Listener {
    fn from(listener: tokio::net::TcpListener) -> Self {
        Self { listener, router: None }
    }
}

impl From<(tokio::net::TcpListener, Router)> for Listener {
    fn from((listener, router): (tokio::net::TcpListener, Router)) -> Self {
        Self {
            listener,
            router: Some(router),
        }
    }
}

impl std::fmt::Debug for Rustaxum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rustaxum").finish_non_exhaustive()
    }
}

impl Rustaxum {
    /// An app of `config` with every part as the configuration describes it:
    /// `Rustaxum::builder(config).build()`. Nothing is started until it is served.
    pub fn new(config: Config) -> Result<Self, StartError> {
        Self::builder(config).build()
    }

    /// A builder: set the replaceable parts (rules, presence and history stores, drivers,
    /// grant sources, the facade), then [`build`](Builder::build).
    pub fn builder(config: Config) -> Builder {
        Builder::new(config)
    }

    /// Opens the EmitHub database file on a single node (an error naming
    /// `EMIT_HUB_DB_PATH` when it is not a usable redb file), then starts the background
    /// work (the cluster's subscriptions and heartbeat, presence sweeps, EmitHub's
    /// backups, history sweeps, webhooks, metrics and dashboard feeds) and installs the
    /// facade when the builder asked for it. [`serve`](Self::serve) does this; call it
    /// yourself when you serve [`router`](Self::router) with your own server. Once it has
    /// succeeded, later calls do nothing. Needs a tokio runtime.
    pub fn start(&self) -> Result<(), StartError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StartError::NoRuntime);
        }
        let mut pending = crate::sync::lock(&self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        // The EmitHub database file first (opened, checked, its channels loaded), before
        // anything could serve them; when it fails nothing has started and `start` can be
        // called again.
        self.state.emithub.load()?;
        for start in std::mem::take(&mut *pending) {
            start(&self.stop, &self.background);
        }
        Ok(())
    }

    /// Starts the app and serves it on `listeners` until `shutdown` resolves, then stops
    /// accepting, closes every socket with 1001 and returns once drained (bounded by
    /// `BROADCAST_SHUTDOWN_TIMEOUT`). Each listener serves [`router`](Self::router), or
    /// the router given with it. Each TCP connection gets `BROADCAST_HTTP_HEADER_TIMEOUT`
    /// to send a request's headers and each request `BROADCAST_HTTP_REQUEST_TIMEOUT` to
    /// be answered; upgraded WebSockets have their own keep-alive.
    ///
    /// ```no_run
    /// # async fn f(app: rustaxum::Rustaxum) -> Result<(), rustaxum::StartError> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    /// app.serve([listener], rustaxum::server::shutdown_signal()).await
    /// # }
    /// ```
    pub async fn serve<L: Into<Listener>>(
        self,
        listeners: impl IntoIterator<Item = L>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        self.start()?;
        let mut routed = Vec::new();
        for listener in listeners {
            let Listener { listener, router } = listener.into();
            let router = match router {
                Some(router) => router,
                None => self.router()?,
            };
            routed.push((listener, router));
        }
        listen::serve(routed, self, shutdown).await
    }

    /// TLS of the listeners, when `BROADCAST_TLS_CERT` and `BROADCAST_TLS_KEY` are set.
    pub fn tls(&self) -> Option<&Arc<tls::Tls>> {
        self.tls.as_ref()
    }

    /// The router with every endpoint, ready to serve or to merge into another app.
    pub fn router(&self) -> Result<Router, ConfigError> {
        protocol::router(self.state.clone())
    }

    /// `GET /echo`: a WebSocket that sends every message back on exactly this server's
    /// WebSocket stack (upgrade, permessage-deflate, limits, close handshake), for
    /// conformance suites such as the Autobahn TestSuite (`scripts/autobahn`,
    /// `examples/autobahn_echo.rs`). Not part of [`router`](Self::router).
    pub fn echo_router(&self) -> Router {
        protocol::echo_router(self.state.clone())
    }

    /// The router of the typed-frame service's own port: `/ws` speaks typed frames, beside
    /// `/info`, `/health`, `/ready` and `/metrics`.
    pub fn rtc_router(&self) -> Result<Router, ConfigError> {
        protocol::rtc_router(self.state.clone())
    }

    /// The typed-frame service (rooms, rate limits).
    pub fn rtc(&self) -> &Arc<crate::services::rtc::Rtc> {
        &self.state.rtc
    }

    /// The hub.
    pub fn hub(&self) -> &Arc<Hub> {
        self.state.node.hub()
    }

    /// The session core.
    pub fn node(&self) -> &Arc<Node> {
        &self.state.node
    }

    /// The broadcast manager.
    pub fn manager(&self) -> &Arc<BroadcastManager> {
        &self.state.manager
    }

    /// The EmitHub managed-channel registry.
    pub fn emithub(&self) -> &Arc<EmitHub> {
        &self.state.emithub
    }

    /// The configuration now (a reload replaces it).
    pub fn config(&self) -> Arc<Config> {
        self.state.config.load_full()
    }

    /// Applies a freshly read configuration (environment and file, as
    /// [`Config::load`] reads them) to the running server: the settings marked live in
    /// [`VARIABLES`](crate::config::vars::VARIABLES) (CORS origins, limits, EmitHub
    /// defaults and retention, the API token, the log filter) take effect for new sockets
    /// and requests; open sockets are not touched. The others keep their running values
    /// and are reported as needing a restart. An invalid or unsafe configuration changes
    /// nothing.
    pub fn reload(&self, fresh: &Config) -> Result<Reloaded, ConfigError> {
        let current = self.state.config.load_full();
        let (merged, applied, need_restart) = current.reloaded(fresh)?;
        for origin in merged.server.cors_allowed_origins.iter().filter(|o| *o != "*") {
            protocol::check_origin(origin)?;
        }
        if current.validate_for_serving().is_ok() {
            merged.validate_for_serving()?;
        }
        if merged.log.filter != current.log.filter && !set_log_filter(&merged.log.filter) {
            tracing::warn!(filter = %merged.log.filter, "the log filter could not be replaced (no reloadable subscriber)");
        }
        self.state.node.set_limits(limits(&merged));
        self.state.emithub.set_config(merged.emithub.clone());
        self.state.config.store(Arc::new(merged));
        Ok(Reloaded { applied, need_restart })
    }

    /// Closes every socket with 1001, waits for sessions and queued broadcasts up to
    /// `BROADCAST_SHUTDOWN_TIMEOUT`, then closes the drivers.
    pub async fn shutdown(&self) {
        let drain = self.state.config.load().server.shutdown_timeout;
        self.state.node.hub().shutdown();
        self.state.sessions.close();
        if tokio::time::timeout(drain, self.state.sessions.wait()).await.is_err() {
            tracing::warn!(
                open = self.state.node.hub().connection_count(),
                "sockets still open after {drain:?}; dropping them"
            );
        }
        self.state.manager.close(drain).await;
        self.stop.cancel();
        self.background.close();
        if tokio::time::timeout(drain, self.background.wait()).await.is_err() {
            tracing::warn!("cluster tasks did not stop in {drain:?}");
        }
    }
}

/// The session limits `config` sets.
fn limits(config: &Config) -> Limits {
    Limits {
        max_connections: config.websocket.max_connections,
        client_events_per_second: config.websocket.client_events_per_second,
        token_grace: config.auth.token_grace,
        ping_interval: config.websocket.ping_interval,
        ping_timeout: config.websocket.ping_timeout,
        max_connections_per_user: config.websocket.max_connections_per_user,
        connection_timeout: config.websocket.connection_timeout,
    }
}

/// What a configuration reload did.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Settings that changed and now apply (to new sockets and requests).
    pub applied: Vec<&'static Variable>,
    /// Settings that changed but keep their running value until a restart.
    pub need_restart: Vec<&'static Variable>,
}

/// The server's rules: the public channels, then `BROADCAST_RULES_FILE`, then the
/// default private and presence rules. Without a JWT key the defaults can never pass
/// (no user can authenticate), so joins get a clear 401; explicitly configured private
/// rules without a key are a start-up error.
fn default_rules(config: &Config, have_key: bool) -> Result<ChannelRules, StartError> {
    let mut rules = ChannelRules::public_only(&config.auth.public_channels);
    if let Some(path) = &config.auth.rules_file {
        rules.load_file(path)?;
        if rules.has_private() && !have_key {
            return Err(StartError::NoJwtKey);
        }
    }
    // A Pusher app sharing the native channels (the default app) guards its private and
    // presence channels by its own signature (Laravel's callbacks): the built-in "any valid
    // token" rules must not open them to every JWT holder.
    let signed_by_app = config.pusher.apps.default_app().is_some();
    rules.add_default_private_rules_guarded(signed_by_app);
    if signed_by_app && have_key {
        tracing::info!(
            "the built-in rules that let any valid token join (presence.*, notifications) are off: the Pusher \
             app's signature guards those channels; write rules (BROADCAST_RULES_FILE) naming the ones JWT \
             clients may join"
        );
    }
    for shadow in rules.shadowed() {
        tracing::warn!(
            public = %shadow.public,
            covers = %shadow.covered,
            kind = %shadow.kind,
            "the public pattern {} (BROADCAST_PUBLIC_CHANNELS) comes first and covers the {} rule {}: \
             channels such as {} are public to anyone; narrow the pattern if that is not meant",
            shadow.public,
            shadow.kind,
            shadow.covered,
            shadow.example
        );
    }
    Ok(rules)
}

/// Every webhook URL with the app credentials that sign it: `BROADCAST_WEBHOOK_URLS` for
/// the environment app, and each app's `webhooks` from the apps file.
fn webhook_targets(config: &Config) -> Vec<crate::webhooks::SignedTarget> {
    use crate::webhooks::{SignedTarget, WebhookTarget};
    let mut targets = Vec::new();
    let apps = &config.pusher.apps;
    if let Some(app) = apps.default_app() {
        for url in &config.webhooks.urls {
            targets.push(SignedTarget {
                target: WebhookTarget {
                    url: url.clone(),
                    events: config.webhooks.events.clone(),
                    channels: Vec::new(),
                },
                key: app.key.clone(),
                secret: app.secret.clone(),
                app: None,
            });
        }
    }
    for app in apps.iter() {
        for target in &app.webhooks {
            targets.push(SignedTarget {
                target: target.clone(),
                key: app.key.clone(),
                secret: app.secret.clone(),
                app: apps.namespace(app).map(str::to_string),
            });
        }
    }
    targets
}

/// The history of the channels `BROADCAST_HISTORY_CHANNELS` names, in the store it says
/// (Redis in a cluster; memory by default on one node; or the EmitHub redb file).
fn build_history(
    config: &Config,
    history: &crate::history::HistoryConfig,
    cluster: Option<&Arc<RedisBroker>>,
    emithub: &EmitHub,
    given: Option<Arc<dyn crate::history::HistoryStore>>,
) -> Result<crate::history::History, StartError> {
    use crate::history::{History, HistoryStore, MemoryHistory, RedisHistory, StoreKind};
    let bad = |reason: String| {
        StartError::Config(ConfigError::Invalid {
            var: "BROADCAST_HISTORY_STORE",
            value: format!("{:?}", config.history.store).to_ascii_lowercase(),
            reason,
        })
    };
    let store: Arc<dyn HistoryStore> = match (given, cluster, config.history.store) {
        (Some(store), _, _) => store,
        (None, Some(broker), _) => Arc::new(RedisHistory::new(broker.clone())),
        // In the EmitHub file, opened when the app starts (and created by the first kept
        // message).
        #[cfg(feature = "redb")]
        (None, None, Some(StoreKind::Redb)) => emithub
            .file_history(crate::history::RedbTables::CHANNELS)
            .ok_or_else(|| bad("no EmitHub database on this node".into()))?,
        #[cfg(not(feature = "redb"))]
        (None, None, Some(StoreKind::Redb)) => {
            let _ = emithub;
            return Err(bad("this build of rustaxum has no `redb` feature".into()));
        }
        (None, None, _) => Arc::new(MemoryHistory::new(config.history.memory_limit)),
    };
    History::new(history, store).map_err(|reason| {
        StartError::Config(ConfigError::Invalid {
            var: "BROADCAST_HISTORY_CHANNELS",
            value: history.channels.join(","),
            reason,
        })
    })
}

impl From<crate::setting::InvalidSetting> for StartError {
    fn from(e: crate::setting::InvalidSetting) -> Self {
        Self::Config(e.into())
    }
}
