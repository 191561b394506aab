//! Building an app: [`Builder`] takes every replaceable part (rules, authorizer, presence
//! store, history store, grant sources, drivers) before anything is derived from it;
//! [`Builder::build`] validates and returns an app that has started nothing (no task, no
//! connection, no process-wide state); [`Rustaxum::serve`] (or [`Rustaxum::start`], for
//! an app that serves its router itself) starts the background work.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{default_rules, limits, tls, webhook_targets, Rustaxum, StartError};
use crate::auth::{ChannelAuthorizer, ChannelRules, JwtVerifier};
use crate::broadcasting::{manager, BroadcastManager, DriverFactory};
use crate::cluster::redis::RedisBroker;
use crate::config::{Config, ConfigError, Driver};
use crate::history::HistoryStore;
use crate::hub::{Hub, HubConfig};
use crate::presence::{MemoryPresence, Presence, PresenceStore, RedisPresence};
use crate::protocol::{self, AppState};
use crate::publish::Fanout;
use crate::services::emithub::EmitHub;
use crate::session::{GrantSource, Node};

/// Background work an app starts when it is served.
pub(super) type Start = Box<dyn FnOnce(&CancellationToken, &TaskTracker) + Send>;

/// The parts of an app, set before it is built (see [`Rustaxum::builder`]).
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use rustaxum::prelude::*;
///
/// let rules = ChannelRules::public_only(&["news.*".to_string()]);
/// let app = Rustaxum::builder(Config::from_env()?)
///     .rules(rules)
///     .facade()
///     .build()?; // validated; nothing started yet
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// app.serve([listener], rustaxum::server::shutdown_signal()).await?;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until build() is called"]
pub struct Builder {
    config: Config,
    rules: Option<ChannelRules>,
    authorizer: Option<Arc<dyn ChannelAuthorizer>>,
    presence_store: Option<Arc<dyn PresenceStore>>,
    history_store: Option<Arc<dyn HistoryStore>>,
    grant_sources: Vec<Arc<dyn GrantSource>>,
    drivers: Vec<(String, DriverFactory)>,
    facade: bool,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("drivers", &self.drivers.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .field("facade", &self.facade)
            .finish_non_exhaustive()
    }
}

impl Builder {
    pub(super) fn new(config: Config) -> Self {
        Self {
            config,
            rules: None,
            authorizer: None,
            presence_store: None,
            history_store: None,
            grant_sources: Vec::new(),
            drivers: Vec::new(),
            facade: false,
        }
    }

    /// The channel rules, instead of the ones the configuration describes (public
    /// channels, `BROADCAST_RULES_FILE`, the default private and presence rules). Their
    /// `history = true` rules keep history. Private or presence rules need a JWT key
    /// ([`StartError::NoJwtKey`] from [`build`](Self::build) without one).
    pub fn rules(mut self, rules: ChannelRules) -> Self {
        self.rules = Some(rules);
        self
    }

    /// Any channel authorizer, instead of rules (it decides every join).
    pub fn authorizer(mut self, authorizer: Arc<dyn ChannelAuthorizer>) -> Self {
        self.authorizer = Some(authorizer);
        self
    }

    /// Where presence members are kept (default: this process's memory on one node,
    /// Redis in a cluster). Everything that reads members (webhooks, the typed-frame
    /// service, the APIs) uses this one.
    pub fn presence_store(mut self, store: Arc<dyn PresenceStore>) -> Self {
        self.presence_store = Some(store);
        self
    }

    /// Where the history of the channels `BROADCAST_HISTORY_CHANNELS` and the rules name
    /// is kept (default: as `BROADCAST_HISTORY_STORE` says).
    pub fn history_store(mut self, store: Arc<dyn HistoryStore>) -> Self {
        self.history_store = Some(store);
        self
    }

    /// A source of grants consulted before the rules (e.g. a registry of managed
    /// channels), after EmitHub's.
    pub fn grant_source(mut self, source: Arc<dyn GrantSource>) -> Self {
        self.grant_sources.push(source);
        self
    }

    /// A broadcast driver (Laravel's `Broadcast::extend`), registered before the default
    /// driver is resolved, so `BROADCAST_DRIVER` may name it.
    pub fn driver<F>(mut self, name: &str, factory: F) -> Self
    where
        F: Fn(
                &crate::broadcasting::ConnectionConfig,
                &crate::broadcasting::DriverContext,
            )
                -> Result<Arc<dyn crate::broadcasting::BroadcastDriver>, crate::broadcasting::BroadcastError>
            + Send
            + Sync
            + 'static,
    {
        self.drivers.push((name.to_string(), Arc::new(factory)));
        self
    }

    /// Makes this app's manager the one the helpers and facades (`broadcast()`,
    /// `Event::dispatch`, `EventFacade`) use in this process, when it starts. Without it an
    /// app leaves the process's facade alone, so a second app (a test's, say) inherits
    /// nothing from the first.
    pub fn facade(mut self) -> Self {
        self.facade = true;
        self
    }

    /// Checks the configuration and the parts and puts the app together. Nothing is
    /// started and nothing written: no task, no connection to Redis, no file opened or
    /// created (the EmitHub database is opened by [`Rustaxum::start`]), no process-wide
    /// state. It reads what the configuration names to check it (TLS certificate and key,
    /// routing rules).
    pub fn build(self) -> Result<Rustaxum, StartError> {
        let Builder {
            config,
            rules,
            authorizer,
            presence_store,
            history_store,
            grant_sources,
            drivers,
            facade,
        } = self;
        let tls_expiry: Arc<std::sync::atomic::AtomicI64> = Arc::default();
        let tls = config
            .server
            .tls
            .clone()
            .map(|files| tls::Tls::new(files, tls_expiry.clone()))
            .transpose()?;
        let config = Arc::new(config);
        let hub = Arc::new(Hub::new(HubConfig {
            send_queue_size: config.websocket.send_queue_size,
            max_channels_per_connection: config.websocket.max_channels_per_connection,
        }));
        let mut starts: Vec<Start> = Vec::new();
        // BROADCAST_DRIVER=redis makes this node part of a cluster: publishes, whispers
        // and presence go through Redis (connected when the app starts).
        let cluster = if config.driver == Driver::Redis {
            Some(RedisBroker::new(&config.redis, config.security_fingerprint())?)
        } else {
            None
        };
        let fanout = match &cluster {
            Some(broker) => Fanout::new(hub.clone(), broker.clone()),
            None => Fanout::local(hub.clone()),
        };
        if let Some(path) = &config.routes_file {
            let routing = crate::routing::Routing::load(path)?;
            tracing::info!(rules = routing.len(), path = %path.display(), "routing rules loaded");
            if let Some(broker) = &cluster {
                broker.receive_everything(routing.copies());
            }
            fanout.set_routing(routing);
        }
        let manager = Arc::new(BroadcastManager::with_fanout(config.clone(), fanout.clone()));
        for (name, factory) in drivers {
            manager.extend(&name, move |c, ctx| factory(c, ctx));
        }
        manager.default_driver()?;
        let verifier = config
            .auth
            .jwt
            .as_ref()
            .map(JwtVerifier::new)
            .transpose()?
            .map(Arc::new);
        let rules = match rules {
            Some(rules) if rules.has_private() && verifier.is_none() => return Err(StartError::NoJwtKey),
            Some(rules) => rules,
            None => default_rules(&config, verifier.is_some())?,
        };
        let presence_store: Arc<dyn PresenceStore> = match (presence_store, &cluster) {
            (Some(store), _) => store,
            (None, Some(broker)) => {
                let store = RedisPresence::new(broker);
                let (s, f) = (store.clone(), fanout.clone());
                starts.push(Box::new(move |stop, tasks| s.start(f, stop.clone(), tasks)));
                store
            }
            (None, None) => Arc::new(MemoryPresence::new()),
        };
        if let Some(broker) = &cluster {
            let (b, f) = (broker.clone(), fanout.clone());
            starts.push(Box::new(move |stop, tasks| b.start(Arc::new(f), stop.clone(), tasks)));
        }
        let presence = Presence::new(presence_store, fanout.clone());
        // EmitHub managed channels: in Redis when clustered, else in the redb file.
        let emithub = match &cluster {
            Some(broker) => EmitHub::clustered(config.emithub.clone(), fanout.clone(), broker.clone()),
            None => EmitHub::single_node(config.emithub.clone(), fanout.clone())?,
        };
        {
            let e = emithub.clone();
            starts.push(Box::new(move |stop, tasks| e.start(stop.clone(), tasks)));
        }
        // History of the channels the settings and rules name, and of EmitHub's channels
        // that persist their messages (in EmitHub's own store: the redb file, or Redis).
        let mut history_config = config.history.clone();
        history_config.channels.extend(rules.history_patterns().iter().cloned());
        let history = Arc::new(super::build_history(
            &config,
            &history_config,
            cluster.as_ref(),
            &emithub,
            history_store,
        )?);
        emithub.keep_history_in(&history);
        if !history_config.channels.is_empty() {
            tracing::info!(store = history.store().name(), channels = ?history_config.channels, "channel history on");
        }
        {
            let h = history.clone();
            starts.push(Box::new(move |stop, tasks| h.start(stop.clone(), tasks)));
        }
        fanout.set_history(history);
        let authorizer: Arc<dyn ChannelAuthorizer> = authorizer.unwrap_or_else(|| Arc::new(rules));
        let mut node = Node::new(fanout, presence, authorizer, verifier, limits(&config))
            .with_grant_source(emithub.clone())
            .with_grant_source(Arc::new(crate::services::rtc::rooms::RoomChannels));
        for source in grant_sources {
            node = node.with_grant_source(source);
        }
        let rtc = crate::services::rtc::Rtc::new(config.rtc.clone(), cluster.as_ref());
        {
            let (r, p) = (rtc.clone(), node.presence().clone());
            starts.push(Box::new(move |stop, tasks| r.start(p, stop.clone(), tasks)));
        }
        let metrics = Arc::new(protocol::metrics::Metrics::new(
            config.pusher.apps.default_app().map(|a| a.id.as_str()),
        ));
        {
            let (m, l) = (metrics.clone(), node.lifecycle().clone());
            starts.push(Box::new(move |stop, tasks| m.observe(&l, stop.clone(), tasks)));
        }
        let dashboard: Arc<protocol::dashboard::Feed> = Arc::default();
        {
            let (d, l) = (dashboard.clone(), node.lifecycle().clone());
            starts.push(Box::new(move |stop, tasks| d.observe(&l, stop.clone(), tasks)));
        }
        let webhooks = crate::webhooks::Webhooks::new(
            webhook_targets(&config),
            &config.webhooks,
            node.hub().clone(),
            node.presence().clone(),
            cluster.clone(),
        )
        .map_err(|reason| {
            StartError::Config(ConfigError::Invalid {
                var: "PUSHER_APPS_FILE",
                value: "webhooks".into(),
                reason,
            })
        })?;
        if let Some(w) = &webhooks {
            let (w, l, changes) = (w.clone(), node.lifecycle().clone(), emithub.changes());
            starts.push(Box::new(move |stop, tasks| w.start(&l, changes, stop.clone(), tasks)));
            tracing::info!(targets = ?webhooks, "webhooks on");
        }
        let shared_config = Arc::new(ArcSwap::new(config));
        let pusher = crate::services::pusher::Features::new(
            node.fanout(),
            cluster.as_ref(),
            shared_config.load().pusher.apps.clone(),
        );
        {
            let (p, l) = (pusher.clone(), node.lifecycle().clone());
            starts.push(Box::new(move |stop, tasks| p.start(&l, stop.clone(), tasks)));
        }
        let state = AppState {
            node: Arc::new(node),
            manager,
            config: shared_config,
            pusher,
            pusher_contexts: Arc::default(),
            emithub,
            rtc,
            cluster,
            webhooks,
            dashboard,
            wrong_tokens: Arc::default(),
            metrics,
            sessions: TaskTracker::new(),
            compression: Arc::default(),
            http: crate::protocol::pusher::forward::client(),
            tls_expiry,
            cluster_view: Arc::default(),
        };
        {
            let st = state.clone();
            starts.push(Box::new(move |stop, tasks| {
                protocol::cluster_view::ClusterView::start(st, stop.clone(), tasks)
            }));
        }
        if facade {
            let m = state.manager.clone();
            starts.push(Box::new(move |_, _| manager::install(m)));
        }
        Ok(Rustaxum {
            state,
            background: TaskTracker::new(),
            stop: CancellationToken::new(),
            tls,
            pending: Arc::new(Mutex::new(starts)),
        })
    }
}
