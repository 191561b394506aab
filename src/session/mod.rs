//! The session core: what a connection may do, whatever its wire protocol. No axum here.
//!
//! - [`Node`]: one server's core (hub, fan-out, presence, authorization, limits,
//!   lifecycle). [`Node::admit`] reserves a connection's place before the upgrade
//!   (global limit and per-app quota, atomically).
//! - [`Session`]: one admitted connection: [`join`](Session::join) (authorize → grant →
//!   subscribe → presence, all or nothing), [`leave`](Session::leave),
//!   [`client_event`](Session::client_event), [`refresh`](Session::refresh),
//!   [`close`](Session::close). A session that is dropped without `close` (a panic, a
//!   cancelled task) still leaves the hub and its presence channels.
//! - [`grant`]: [`Grant`]s and [`GrantSource`]s (what a connection may do on a channel).
//! - [`error`]: typed refusals with stable codes; protocols map them to wire codes.
//! - [`runner`]: the per-socket loop, generic over a frame `Sink`/`Stream`, that drives a
//!   protocol's [`Handler`](runner::Handler).
//! - [`testing`]: an in-memory socket for tests without a network.

pub mod error;
pub mod grant;
pub mod quota;
pub mod runner;
pub mod testing;

use std::num::NonZeroU32;
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::value::RawValue;
use tokio::time::Instant;

pub use error::{ClientEventError, ConnectError, JoinError, LeaveError, Reconnect, RefreshError, Refusal};
pub use grant::{Grant, GrantSource, JoinAs};
pub use quota::{QuotaSlot, Quotas};

use crate::auth::{AuthError, ChannelAuthorizer, Identity, JwtVerifier, TokenError};
use crate::channel::{Channel, ChannelKind};
use crate::hub::{
    ConnectionHandle, ConnectionSlot, Envelope, Hub, Message, Position, Protocol, SocketId, SubscribeError,
};
use crate::lifecycle::{Lifecycle, LifecycleEvent};
use crate::presence::{Member, Presence};
use crate::publish::Fanout;

/// Longest event name accepted, in bytes.
pub const MAX_EVENT_NAME_LEN: usize = 200;
/// Prefix of client event names.
pub const CLIENT_EVENT_PREFIX: &str = "client-";

/// The limits a node applies to every session. A reload replaces them
/// ([`Node::set_limits`]): new values apply to new sockets (and the connection count at
/// once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most sockets open or opening at once; 0 = no limit.
    pub max_connections: usize,
    /// Client events per connection per second.
    pub client_events_per_second: u32,
    /// How long a socket stays open after its token's `exp`.
    pub token_grace: Duration,
    /// Idle time before the server pings a socket.
    pub ping_interval: Duration,
    /// Time a pinged socket has to answer.
    pub ping_timeout: Duration,
    /// Most sockets one user may have open on this node; 0 = no limit.
    pub max_connections_per_user: usize,
    /// The longest a socket may stay silent before it is closed (`None`: ping interval
    /// plus ping timeout).
    pub connection_timeout: Option<Duration>,
}

impl Limits {
    /// When to ping a silent socket, and how long it then has to answer: the configured
    /// values, shortened so that the whole silence stays within `connection_timeout`.
    pub fn keepalive(&self) -> (Duration, Duration) {
        match self.connection_timeout {
            None => (self.ping_interval, self.ping_timeout),
            Some(total) => {
                let interval = if self.ping_interval < total {
                    self.ping_interval
                } else {
                    total / 2
                };
                (interval, self.ping_timeout.min(total.saturating_sub(interval)))
            }
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 0,
            client_events_per_second: 10,
            token_grace: Duration::from_secs(5),
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(10),
            max_connections_per_user: 0,
            connection_timeout: None,
        }
    }
}

/// One server's core, shared by every session and protocol.
#[derive(Clone)]
pub struct Node {
    hub: Arc<Hub>,
    fanout: Fanout,
    presence: Presence,
    authorizer: Arc<dyn ChannelAuthorizer>,
    grants: Vec<Arc<dyn GrantSource>>,
    verifier: Option<Arc<JwtVerifier>>,
    lifecycle: Lifecycle,
    quotas: Arc<Quotas>,
    limits: Arc<ArcSwap<Limits>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("limits", &**self.limits.load())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node over `fanout`'s hub, with `presence`, authorizing joins with `authorizer`
    /// and verifying tokens with `verifier` (none: only public channels).
    pub fn new(
        fanout: Fanout,
        presence: Presence,
        authorizer: Arc<dyn ChannelAuthorizer>,
        verifier: Option<Arc<JwtVerifier>>,
        limits: Limits,
    ) -> Self {
        Self {
            hub: fanout.hub().clone(),
            fanout,
            presence,
            authorizer,
            grants: Vec::new(),
            verifier,
            lifecycle: Lifecycle::default(),
            quotas: Arc::default(),
            limits: Arc::new(ArcSwap::from_pointee(limits)),
        }
    }

    /// The same node with another channel authorizer.
    pub fn with_authorizer(mut self, authorizer: Arc<dyn ChannelAuthorizer>) -> Self {
        self.authorizer = authorizer;
        self
    }

    /// The same node with another presence.
    pub fn with_presence(mut self, presence: Presence) -> Self {
        self.presence = presence;
        self
    }

    /// The same node with a grant source consulted before the channel rules.
    pub fn with_grant_source(mut self, source: Arc<dyn GrantSource>) -> Self {
        self.grants.push(source);
        self
    }

    /// The hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The one publish path.
    pub fn fanout(&self) -> &Fanout {
        &self.fanout
    }

    /// Presence channels' members.
    pub fn presence(&self) -> &Presence {
        &self.presence
    }

    /// The channel authorizer.
    pub fn authorizer(&self) -> &Arc<dyn ChannelAuthorizer> {
        &self.authorizer
    }

    /// The token verifier, when a JWT key is configured.
    pub fn verifier(&self) -> Option<&Arc<JwtVerifier>> {
        self.verifier.as_ref()
    }

    /// Lifecycle events, for observers.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// The session limits now.
    pub fn limits(&self) -> Limits {
        **self.limits.load()
    }

    /// Replaces the session limits (a configuration reload), for every clone of this node.
    pub fn set_limits(&self, limits: Limits) {
        self.limits.store(Arc::new(limits));
    }

    /// Verifies a token (`None`: no key configured, so no token can be accepted).
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        match &self.verifier {
            None => Err(TokenError::Malformed("this server has no JWT key configured".into())),
            Some(v) => v.verify(token),
        }
    }

    /// Reserves a place for a new connection (the global limit, and `app`'s quota)
    /// before its upgrade is accepted; the place is held until the session ends.
    pub fn admit(
        self: &Arc<Self>,
        identity: Option<Identity>,
        app: Option<AppQuota<'_>>,
    ) -> Result<Admission, ConnectError> {
        if self.hub.is_shutting_down() {
            return Err(ConnectError::ShuttingDown);
        }
        let max = self.limits.load().max_connections;
        let slot = self
            .hub
            .reserve_connection(max)
            .ok_or(ConnectError::OverCapacity(max))?;
        // Exactly as many as taken (a boxed slice, no spare capacity): every connection
        // of the default app holds one for its whole life.
        let per_user = self.limits.load().max_connections_per_user;
        let user_quota = identity.as_ref().filter(|_| per_user > 0);
        let mut quotas = Vec::with_capacity(usize::from(app.is_some()) + usize::from(user_quota.is_some()));
        if let Some(app) = app {
            quotas.push(
                self.quotas
                    .acquire(&format!("app:{}", app.id), app.max_connections)
                    .ok_or_else(|| ConnectError::AppOverQuota {
                        app: app.id.to_string(),
                        max: app.max_connections,
                    })?,
            );
        }
        if let Some(user) = user_quota {
            quotas.push(
                self.quotas
                    .acquire(&format!("user:{}", user.user_id), per_user)
                    .ok_or(ConnectError::UserOverQuota(per_user))?,
            );
        }
        let quotas = quotas.into_boxed_slice();
        Ok(Admission {
            node: self.clone(),
            slot,
            quotas,
            identity,
        })
    }

    /// Connections of app `id` open or opening on this node.
    pub fn app_connections(&self, id: &str) -> usize {
        self.quotas.used(&format!("app:{id}"))
    }

    /// What `identity` may do on `channel`, joining as `how`.
    pub fn grant(&self, identity: Option<&Identity>, channel: &Channel, how: &JoinAs) -> Result<Grant, JoinError> {
        // A service's own grant is final; otherwise grant sources come before the rules.
        if !matches!(how, JoinAs::Granted(_)) {
            for source in &self.grants {
                if let Some(grant) = source.grant(identity, channel) {
                    return grant;
                }
            }
        }
        match how {
            // Only an unprefixed name: `private-x` asks for a kind, which only rules give.
            JoinAs::Topic if channel.kind() == ChannelKind::Public && !self.authorizer.reserves(channel) => {
                if identity.is_none() {
                    return Err(JoinError::Unauthenticated(channel.local_name().into()));
                }
                let mut grant = Grant::for_channel(channel.with_kind(ChannelKind::Public), None);
                grant.client_events = true;
                Ok(grant)
            }
            JoinAs::User | JoinAs::Topic => {
                let channel = self.authorizer.authorize(identity, channel).map_err(join_error)?;
                let member = match (channel.kind(), identity) {
                    (ChannelKind::Presence, Some(user)) => Some(member_of(user)),
                    // The rules only grant presence channels to authenticated users.
                    (ChannelKind::Presence, None) => {
                        return Err(JoinError::Unauthenticated(channel.local_name().into()))
                    }
                    _ => None,
                };
                Ok(Grant::for_channel(channel, member))
            }
            JoinAs::Public => match self.authorizer.authorize(None, channel) {
                Ok(c) if c.kind() == ChannelKind::Public => Ok(Grant::for_channel(c, None)),
                _ => Err(JoinError::NotPublic(channel.local_name().into())),
            },
            JoinAs::Granted(grant) => Ok((**grant).clone()),
            JoinAs::Signed { member } => {
                // The spelling chose the kind; the rules must agree, or `private-general`
                // would make the public `general` private (and open it to client events).
                if let Some(actual) = self.authorizer.kind_of(channel) {
                    if actual != channel.kind() {
                        return Err(JoinError::WrongKind {
                            channel: channel.local_name().into(),
                            actual,
                            spelled: channel.kind(),
                        });
                    }
                }
                let member = match channel.kind() {
                    ChannelKind::Presence => Some(member.clone().ok_or(JoinError::MissingMember)?),
                    _ => None,
                };
                Ok(Grant::for_channel(channel.clone(), member))
            }
        }
    }
}

impl Node {
    /// What `identity` may do on `channel` under the rules, refusing a spelling whose kind
    /// the rules contradict (`private-general` when `general` is public). For protocols
    /// that sign authorizations for their clients (Pusher's `/broadcasting/auth`).
    pub fn grant_spelled(&self, identity: Option<&Identity>, channel: &Channel) -> Result<Grant, JoinError> {
        let grant = self.grant(identity, channel, &JoinAs::User)?;
        if grant.channel.kind() != channel.kind() {
            return Err(JoinError::WrongKind {
                channel: channel.local_name().into(),
                actual: grant.channel.kind(),
                spelled: channel.kind(),
            });
        }
        Ok(grant)
    }
}

fn join_error(e: AuthError) -> JoinError {
    match e {
        AuthError::Unauthenticated(c) => JoinError::Unauthenticated(c),
        AuthError::Forbidden(c) => JoinError::Forbidden(c),
    }
}

/// The presence member a user is: their id and public `user_info`.
pub fn member_of(user: &Identity) -> Member {
    Member {
        user_id: user.user_id.clone(),
        user_info: user.user_info.clone(),
    }
}

/// An app's connection quota, checked at admission.
#[derive(Debug, Clone, Copy)]
pub struct AppQuota<'a> {
    /// The app id.
    pub id: &'a str,
    /// Its `max_connections` (0 = no limit).
    pub max_connections: usize,
}

/// The app a session belongs to: its channel namespace and its own limits. Sessions
/// without one belong to the default app under the node's limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenant {
    /// The app's channel namespace (`None`: the default app, whose channels native
    /// clients share).
    pub namespace: Option<Arc<str>>,
    /// Client events per connection per second (`None`: the node's limit).
    pub client_events_per_second: Option<u32>,
    /// Most members of one presence channel (0: no limit).
    pub max_presence_members: usize,
    /// Largest presence member's `user_info`, JSON bytes (0: no limit).
    pub max_member_size: usize,
}

/// A connection's reserved place; [`open`](Self::open) it once the socket is upgraded.
/// Dropping it gives the place back.
#[derive(Debug)]
pub struct Admission {
    node: Arc<Node>,
    slot: ConnectionSlot,
    quotas: Box<[QuotaSlot]>,
    identity: Option<Identity>,
}

impl Admission {
    /// The identity the connection authenticated with, if any.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Registers the connection with the hub: the session and its outbound queue.
    pub fn open(self, protocol: Protocol) -> (Session, crate::hub::OutboxReceiver) {
        let (conn, rx) = self.node.hub.connect(protocol);
        if let Some(user) = &self.identity {
            conn.set_user(&user.user_id);
        }
        self.node.lifecycle.emit(LifecycleEvent::ConnectionOpened {
            socket: conn.id(),
            protocol,
            user: conn.user(),
        });
        let session = Session {
            node: self.node,
            conn,
            identity: self.identity.map(Arc::new),
            joined: Vec::new(),
            limiter: None,
            expiry: None,
            _slot: self.slot,
            _quotas: self.quotas,
            closed: false,
            floors: Vec::new(),
            tenant: None,
        };
        let mut session = session;
        session.expiry = session.compute_expiry();
        (session, rx)
    }
}

/// A channel this session joined, with what it may do there.
#[derive(Debug)]
struct JoinedChannel {
    channel: Channel,
    client_events: bool,
    /// The channel's own client-event limit (per minute) and its limiter.
    limiter: Option<(u32, Box<DefaultDirectRateLimiter>)>,
    /// The presence member's user id (presence channels).
    user_id: Option<Arc<str>>,
    _quota: Option<QuotaSlot>,
}

/// A join that succeeded.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    /// The channel, with its kind.
    pub channel: Channel,
    /// Subscribers on this node, this connection included.
    pub subscribers: usize,
    /// Presence channels: this connection's member and everyone present.
    pub presence: Option<PresenceState>,
}

/// Where a joined channel stands in its history, and what a returning client missed.
#[derive(Debug, Clone, Default)]
pub struct CatchUp {
    /// The channel's current position (`None` when it keeps no history or the history
    /// could not be read).
    pub position: Option<Position>,
    /// Asked with a position: whether `messages` are everything missed since then.
    pub recovered: Option<bool>,
    /// More were missed than one recovery sends; `messages` are the newest of them.
    pub capped: bool,
    /// The missed messages, oldest first, to send before anything live.
    pub messages: Vec<Message>,
}

/// Who is on a presence channel, as seen by a connection that just joined.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceState {
    /// This connection's member.
    pub me: Member,
    /// All members, `me` included, ordered by user id.
    pub members: Vec<Member>,
}

/// One admitted connection, whatever its protocol.
pub struct Session {
    node: Arc<Node>,
    conn: Arc<ConnectionHandle>,
    identity: Option<Arc<Identity>>,
    joined: Vec<JoinedChannel>,
    limiter: Option<Box<DefaultDirectRateLimiter>>,
    expiry: Option<Instant>,
    _slot: ConnectionSlot,
    _quotas: Box<[QuotaSlot]>,
    closed: bool,
    /// Channels recovered from history: live messages of that epoch at or below the
    /// offset were sent from history already and are skipped.
    floors: Vec<(Channel, Position)>,
    /// The app it belongs to (`None`: the default app, the node's limits).
    tenant: Option<Arc<Tenant>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("socket_id", &self.conn.id())
            .field("joined", &self.joined.len())
            .finish_non_exhaustive()
    }
}

fn limiter(per_second: u32) -> Box<DefaultDirectRateLimiter> {
    Box::new(RateLimiter::direct(Quota::per_second(
        NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN),
    )))
}

fn limiter_per_minute(per_minute: u32) -> Box<DefaultDirectRateLimiter> {
    Box::new(RateLimiter::direct(Quota::per_minute(
        NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN),
    )))
}

impl Session {
    /// The socket id.
    pub fn id(&self) -> SocketId {
        self.conn.id()
    }

    /// The hub's handle of this connection.
    pub fn conn(&self) -> &Arc<ConnectionHandle> {
        &self.conn
    }

    /// The node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The authenticated user, if any.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_deref()
    }

    /// The user this connection belongs to (its token's, or after a protocol sign-in).
    pub fn user(&self) -> Option<Arc<str>> {
        self.conn.user()
    }

    /// The joined channel named `name` (either spelling), with the kind it was joined as.
    pub fn subscription(&self, name: &str) -> Option<&Channel> {
        let wanted = self.parse(name).ok()?;
        self.joined.iter().map(|j| &j.channel).find(|c| **c == wanted)
    }

    /// Makes the session one of an app's: its channels are looked up in the app's
    /// namespace and its limits apply. Call before joining anything.
    pub fn set_tenant(&mut self, tenant: Arc<Tenant>) {
        self.tenant = Some(tenant);
    }

    /// The session's app namespace (`None`: the default app).
    pub fn namespace(&self) -> Option<&str> {
        self.tenant.as_ref()?.namespace.as_deref()
    }

    /// A client's channel name, in this session's app.
    pub fn parse(&self, name: &str) -> Result<Channel, crate::channel::ChannelError> {
        Channel::parse_in(self.namespace(), name)
    }

    /// Records that the connection belongs to `user_id` (e.g. after Pusher's signin), so
    /// user-targeted features (terminate_connections) find it. Users are per app: the
    /// connection is recorded under the app's key of the user.
    pub fn sign_in(&mut self, user_id: &str) {
        self.conn.set_user(&crate::channel::app_key(self.namespace(), user_id));
    }

    /// The signed-in user as the app knows it (without the app's namespace).
    pub fn app_user(&self) -> Option<String> {
        let user = self.conn.user()?;
        Some(crate::channel::split_key(&user).1.to_string())
    }

    /// When the connection's token expires (plus the grace period); `None` without a
    /// token, or when `exp` is absurdly far away. The session is then closed with 4009.
    pub fn expires_at(&self) -> Option<Instant> {
        self.expiry
    }

    fn compute_expiry(&self) -> Option<Instant> {
        let exp = self.identity.as_ref()?.expires_at?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        // `exp` comes from the client's token: an absurd one means "never", not a panic.
        let left = Duration::from_secs(exp.saturating_sub(now)).checked_add(self.node.limits().token_grace)?;
        Instant::now().checked_add(left)
    }

    /// Joins `channel`: authorize → grant → subscribe → presence, all or nothing.
    pub async fn join(&mut self, channel: &Channel, how: JoinAs) -> Result<Joined, JoinError> {
        let grant = self.node.grant(self.identity.as_deref(), channel, &how)?;
        let channel = grant.channel.clone();
        if let Some(i) = self.joined.iter().position(|j| j.channel == channel) {
            // Already joined: answer as a join would, without a second subscription.
            let presence = match &self.joined[i].user_id {
                Some(user) => Some(self.presence_state(&channel, user).await?),
                None => None,
            };
            let subscribers = self.node.hub.subscriber_count(&channel);
            return Ok(Joined {
                channel,
                subscribers,
                presence,
            });
        }
        let quota = match grant.max_connections {
            None => None,
            Some(max) => Some(
                self.node
                    .quotas
                    .acquire(&format!("channel:{}", channel.name()), max)
                    .ok_or_else(|| JoinError::ChannelFull {
                        channel: channel.local_name().into(),
                        max,
                    })?,
            ),
        };
        if let (Some(member), Some(tenant)) = (&grant.member, &self.tenant) {
            self.check_member_limits(tenant, &channel, member).await?;
        }
        let subscribed = self.node.hub.subscribe(&self.conn, &channel).map_err(|e| match e {
            SubscribeError::TooManyChannels(limit) => JoinError::TooManyChannels(limit),
            SubscribeError::Closing => JoinError::Closing,
        })?;
        if subscribed.occupied {
            self.emit(LifecycleEvent::ChannelOccupied {
                channel: channel.clone(),
            });
        }
        self.emit(LifecycleEvent::SubscriptionCount {
            channel: channel.clone(),
            subscribers: subscribed.subscribers,
        });
        let presence = match &grant.member {
            None => None,
            Some(member) => match self.node.presence.join(self.conn.id(), &channel, member).await {
                Ok(joined) => {
                    if joined.added {
                        self.emit(LifecycleEvent::MemberAdded {
                            channel: channel.clone(),
                            member: member.clone(),
                        });
                    }
                    Some(PresenceState {
                        me: member.clone(),
                        members: joined.members,
                    })
                }
                Err(e) => {
                    self.unsubscribe(&channel);
                    return Err(JoinError::PresenceUnavailable(e.to_string()));
                }
            },
        };
        self.joined.push(JoinedChannel {
            channel: channel.clone(),
            client_events: grant.client_events,
            limiter: grant.client_events_per_minute.map(|n| (n, limiter_per_minute(n))),
            user_id: grant.member.map(|m| Arc::from(m.user_id)),
            _quota: quota,
        });
        Ok(Joined {
            channel,
            subscribers: subscribed.subscribers,
            presence,
        })
    }

    /// An app's presence limits: the member's size, and the channel's member count (a
    /// user already present may open more sockets).
    async fn check_member_limits(&self, tenant: &Tenant, channel: &Channel, member: &Member) -> Result<(), JoinError> {
        if tenant.max_member_size > 0 {
            let size = serde_json::to_string(&member.user_info).map_or(0, |s| s.len());
            if size > tenant.max_member_size {
                return Err(JoinError::MemberTooLarge {
                    size,
                    max: tenant.max_member_size,
                });
            }
        }
        if tenant.max_presence_members > 0 {
            let members = self.members(channel).await?;
            if members.len() >= tenant.max_presence_members && !members.iter().any(|m| m.user_id == member.user_id) {
                return Err(JoinError::PresenceFull {
                    channel: channel.local_name().into(),
                    max: tenant.max_presence_members,
                });
            }
        }
        Ok(())
    }

    async fn members(&self, channel: &Channel) -> Result<Vec<Member>, JoinError> {
        self.node
            .presence
            .members(channel.name())
            .await
            .map_err(|e| JoinError::PresenceUnavailable(e.to_string()))
    }

    async fn presence_state(&self, channel: &Channel, user: &str) -> Result<PresenceState, JoinError> {
        let members = self.members(channel).await?;
        let me = members
            .iter()
            .find(|m| m.user_id == user)
            .cloned()
            .ok_or(JoinError::MissingMember)?;
        Ok(PresenceState { me, members })
    }

    fn unsubscribe(&self, channel: &Channel) {
        let Some(subscribers) = self.node.hub.unsubscribe(&self.conn, channel) else {
            return;
        };
        self.emit(LifecycleEvent::SubscriptionCount {
            channel: channel.clone(),
            subscribers,
        });
        if subscribers == 0 {
            self.emit(LifecycleEvent::ChannelVacated {
                channel: channel.clone(),
            });
        }
    }

    /// For a joined `channel` that keeps history: where it stands and, given the last
    /// position the client saw, what it missed (call right after [`join`](Self::join):
    /// the subscription is in place, so nothing published meanwhile is lost; whatever
    /// arrives live and was sent from history is skipped).
    pub async fn catch_up(&mut self, channel: &Channel, since: Option<&Position>) -> CatchUp {
        let keeps = self.node.fanout.history().is_some_and(|h| h.keeps(channel));
        if !keeps {
            return CatchUp {
                recovered: since.map(|_| false),
                ..CatchUp::default()
            };
        }
        // Boxed: every join awaits this, and most channels keep no history; the reads
        // would otherwise enlarge every protocol's join future (and so each connection's
        // transient allocations) for nothing.
        Box::pin(self.catch_up_from_history(channel, since)).await
    }

    async fn catch_up_from_history(&mut self, channel: &Channel, since: Option<&Position>) -> CatchUp {
        let not_recovered = CatchUp {
            recovered: since.map(|_| false),
            ..CatchUp::default()
        };
        let Some(history) = self.node.fanout.history().filter(|h| h.keeps(channel)) else {
            return not_recovered;
        };
        let Some(since) = since else {
            return match history.position(channel).await {
                Ok(position) => CatchUp {
                    position: Some(position),
                    ..CatchUp::default()
                },
                Err(e) => {
                    tracing::warn!(channel = %channel, error = %e, "could not read the channel's position");
                    not_recovered
                }
            };
        };
        match history.recover(channel, since).await {
            Ok(r) => {
                // Everything up to the channel's position was sent from history (or seen
                // before): what still arrives live up to there is skipped.
                if r.recovered || r.capped {
                    self.mark_sent(channel, r.position.clone());
                }
                CatchUp {
                    position: Some(r.position),
                    recovered: Some(r.recovered),
                    capped: r.capped,
                    messages: r.messages,
                }
            }
            Err(e) => {
                tracing::warn!(channel = %channel, error = %e, "could not recover the channel's history");
                not_recovered
            }
        }
    }

    /// Live messages of `channel` up to `position` were sent already (from a history the
    /// protocol keeps itself): skip them.
    pub fn mark_sent(&mut self, channel: &Channel, position: Position) {
        self.floors.retain(|(c, _)| c != channel);
        self.floors.push((channel.clone(), position));
    }

    /// Whether a live message was already sent from history (see [`catch_up`](Self::catch_up)).
    pub fn already_sent(&self, envelope: &Envelope) -> bool {
        if self.floors.is_empty() {
            return false;
        }
        let Some(p) = &envelope.position else { return false };
        self.floors
            .iter()
            .any(|(c, floor)| *c == envelope.channel && floor.epoch == p.epoch && p.offset <= floor.offset)
    }

    /// Leaves the channel named `name` (either spelling); returns it.
    pub async fn leave(&mut self, name: &str) -> Result<Channel, LeaveError> {
        let wanted = self.parse(name).map_err(|_| LeaveError::NotSubscribed)?;
        let i = self
            .joined
            .iter()
            .position(|j| j.channel == wanted)
            .ok_or(LeaveError::NotSubscribed)?;
        let joined = self.joined.swap_remove(i);
        self.floors.retain(|(c, _)| *c != joined.channel);
        self.leave_presence(&joined).await;
        self.unsubscribe(&joined.channel);
        Ok(joined.channel)
    }

    async fn leave_presence(&self, joined: &JoinedChannel) {
        let Some(user) = &joined.user_id else { return };
        let left = self.node.presence.leave(self.conn.id(), &joined.channel, user).await;
        if let Some(member) = left {
            self.emit(LifecycleEvent::MemberRemoved {
                channel: joined.channel.clone(),
                member,
            });
        }
    }

    /// Sends client event `event` (which must start with `client-`) with `data` to the
    /// other subscribers of the joined channel `name`, on every node.
    pub async fn client_event(
        &mut self,
        name: &str,
        event: &str,
        data: Arc<RawValue>,
    ) -> Result<Channel, ClientEventError> {
        let channel = self.allow_client_event(name, event)?;
        self.send_client_event(channel, event, data).await
    }

    /// The checks of [`client_event`](Self::client_event) alone (they count against the
    /// limits): the channel to send on with
    /// [`send_client_event`](Self::send_client_event), for a protocol that has work to do
    /// in between (keeping the message first, for instance).
    pub fn allow_client_event(&mut self, name: &str, event: &str) -> Result<Channel, ClientEventError> {
        let wanted = self.parse(name).map_err(|_| ClientEventError::NotSubscribed)?;
        let per_second = self
            .tenant
            .as_ref()
            .and_then(|t| t.client_events_per_second)
            .unwrap_or_else(|| self.node.limits().client_events_per_second);
        let joined = self
            .joined
            .iter()
            .find(|j| j.channel == wanted)
            .ok_or(ClientEventError::NotSubscribed)?;
        // The grant decides (the rules never allow client events on public channels).
        if !joined.client_events {
            return Err(ClientEventError::Forbidden);
        }
        // Pusher refuses them on end-to-end encrypted channels: the server could not
        // have checked what they carry, and clients could not tell them from real events.
        if joined.channel.is_encrypted() {
            return Err(ClientEventError::Encrypted);
        }
        let name_ok = event.starts_with(CLIENT_EVENT_PREFIX)
            && event.len() > CLIENT_EVENT_PREFIX.len()
            && event.len() <= MAX_EVENT_NAME_LEN;
        if !name_ok {
            return Err(ClientEventError::InvalidEvent);
        }
        let connection = self.limiter.get_or_insert_with(|| limiter(per_second));
        if connection.check().is_err() {
            return Err(ClientEventError::RateLimited(format!("{per_second} per second")));
        }
        if let Some((per_minute, channel_limit)) = &joined.limiter {
            if channel_limit.check().is_err() {
                return Err(ClientEventError::RateLimited(format!("{per_minute} per minute")));
            }
        }
        Ok(joined.channel.clone())
    }

    /// Sends a client event that [`allow_client_event`](Self::allow_client_event) allowed.
    pub async fn send_client_event(
        &mut self,
        channel: Channel,
        event: &str,
        data: Arc<RawValue>,
    ) -> Result<Channel, ClientEventError> {
        let message = Message::event(channel.clone(), event, data.clone())
            .except(Some(self.conn.id()))
            .sender(self.conn.user());
        self.node
            .fanout
            .publish(message)
            .await
            .map_err(ClientEventError::Unavailable)?;
        self.emit(LifecycleEvent::ClientEvent {
            channel: channel.clone(),
            event: event.into(),
            socket: self.conn.id(),
            user: self.conn.user(),
            data,
        });
        Ok(channel)
    }

    /// Replaces the connection's token with a fresh one for the same user (an anonymous
    /// connection may authenticate this way). Returns the new `exp`.
    pub fn refresh(&mut self, token: &str) -> Result<Option<u64>, RefreshError> {
        let fresh = self.node.verify(token).map_err(RefreshError::Invalid)?;
        if let Some(current) = &self.identity {
            if current.user_id != fresh.user_id {
                return Err(RefreshError::DifferentUser);
            }
        }
        // terminate_connections and user-targeted features find the socket by its user.
        self.conn.set_user(&fresh.user_id);
        let expires_at = fresh.expires_at;
        self.identity = Some(Arc::new(fresh));
        self.expiry = self.compute_expiry();
        Ok(expires_at)
    }

    fn emit(&self, event: LifecycleEvent) {
        self.node.lifecycle.emit(event);
    }

    /// Ends the session: leaves its presence channels (telling the other members), leaves
    /// the hub, gives its places back.
    pub async fn close(mut self) {
        let joined = std::mem::take(&mut self.joined);
        for j in &joined {
            self.leave_presence(j).await;
        }
        self.finish();
    }

    /// The synchronous part of the clean-up: leave the hub, report the closure.
    fn finish(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        for (channel, subscribers) in self.node.hub.disconnect(&self.conn) {
            self.emit(LifecycleEvent::SubscriptionCount {
                channel: channel.clone(),
                subscribers,
            });
            if subscribers == 0 {
                self.emit(LifecycleEvent::ChannelVacated { channel });
            }
        }
        self.emit(LifecycleEvent::ConnectionClosed {
            socket: self.conn.id(),
            protocol: self.conn.protocol(),
            user: self.conn.user(),
        });
    }
}

impl Drop for Session {
    /// A session that was not closed (its task panicked or was cancelled) still leaves
    /// the hub now, and its presence channels in a task of their own.
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let present: Vec<(Channel, Arc<str>)> = self
            .joined
            .iter()
            .filter_map(|j| j.user_id.clone().map(|u| (j.channel.clone(), u)))
            .collect();
        if !present.is_empty() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let (presence, socket) = (self.node.presence.clone(), self.conn.id());
                rt.spawn(async move {
                    for (channel, user) in present {
                        presence.leave(socket, &channel, &user).await;
                    }
                });
            }
        }
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::testing::fixtures::{in_an_hour, node, node_with, token, token_until};
    use super::*;
    use crate::presence::{MemoryPresence, PresenceError, PresenceStore};
    use async_trait::async_trait;
    use serde_json::json;

    struct Down;

    #[async_trait]
    impl PresenceStore for Down {
        async fn join(&self, _: &str, _: &Member, _: SocketId) -> Result<bool, PresenceError> {
            Err(PresenceError("down for the test".into()))
        }
        async fn leave(&self, _: &str, _: &str, _: SocketId) -> Result<Option<Member>, PresenceError> {
            Err(PresenceError("down for the test".into()))
        }
        async fn members(&self, _: &str) -> Result<Vec<Member>, PresenceError> {
            Err(PresenceError("down for the test".into()))
        }
    }

    fn open(node: &Arc<Node>, sub: Option<&str>) -> (Session, crate::hub::OutboxReceiver) {
        let identity = sub.map(|u| node.verify(&token(u)).unwrap());
        node.admit(identity, None).unwrap().open(Protocol::Native)
    }

    fn ch(name: &str) -> Channel {
        Channel::parse(name).unwrap()
    }

    fn raw(v: serde_json::Value) -> Arc<RawValue> {
        Arc::from(serde_json::value::to_raw_value(&v).unwrap())
    }

    #[tokio::test]
    async fn a_join_is_all_or_nothing() {
        let node = node_with(Arc::new(Down), Limits::default());
        let mut lifecycle = node.lifecycle().subscribe(16);
        let (mut s, _rx) = open(&node, Some("1"));
        let err = s.join(&ch("presence.room"), JoinAs::User).await.unwrap_err();
        assert!(matches!(err, JoinError::PresenceUnavailable(_)), "{err:?}");
        assert_eq!(err.code(), "presence_unavailable");
        assert_eq!(err.reconnect(), Reconnect::Backoff);
        assert!(s.subscription("presence.room").is_none());
        assert_eq!(node.hub().subscriber_count(&ch("presence.room")), 0, "rolled back");
        let events: Vec<_> = std::iter::from_fn(|| lifecycle.try_recv().ok()).collect();
        assert!(matches!(events[0], LifecycleEvent::ConnectionOpened { .. }));
        assert!(matches!(events[1], LifecycleEvent::ChannelOccupied { .. }));
        assert!(matches!(
            events[2],
            LifecycleEvent::SubscriptionCount { subscribers: 1, .. }
        ));
        assert!(matches!(
            events[3],
            LifecycleEvent::SubscriptionCount { subscribers: 0, .. }
        ));
        assert!(matches!(events[4], LifecycleEvent::ChannelVacated { .. }));
    }

    #[tokio::test]
    async fn what_a_recovery_sent_is_not_sent_again_live() {
        let node = node();
        let config = crate::history::HistoryConfig {
            channels: vec!["general".into()],
            ..Default::default()
        };
        let store = Arc::new(crate::history::MemoryHistory::new(1 << 20));
        node.fanout()
            .set_history(Arc::new(crate::history::History::new(&config, store).unwrap()));
        let publish = |n: u32| {
            node.fanout()
                .publish(Message::event(ch("general"), "tick", raw(json!({ "n": n }))))
        };
        publish(1).await.unwrap();
        let (mut s, mut rx) = open(&node, None);
        s.join(&ch("general"), JoinAs::User).await.unwrap();
        let start = s.catch_up(&ch("general"), None).await.position.unwrap();
        assert_eq!(start.offset, 1);
        // Published after the subscription, before the recovery read: in the socket's
        // queue and in the history both.
        publish(2).await.unwrap();
        publish(3).await.unwrap();
        let up = s.catch_up(&ch("general"), Some(&start)).await;
        assert_eq!(up.recovered, Some(true));
        assert_eq!(up.messages.len(), 2);
        let queued: Vec<bool> = (0..2).map(|_| s.already_sent(&rx.try_recv().unwrap())).collect();
        assert_eq!(queued, [true, true], "sent from history: skipped live");
        publish(4).await.unwrap();
        assert!(!s.already_sent(&rx.try_recv().unwrap()), "newer ones are sent");
        s.leave("general").await.unwrap();
        assert!(s.floors.is_empty());
    }

    #[tokio::test]
    async fn refusals_carry_codes() {
        let node = node();
        let (mut anon, _rx) = open(&node, None);
        let cases = [
            ("user.42", JoinAs::User, "unauthorized"),
            ("random", JoinAs::User, "forbidden"),
            ("user.42", JoinAs::Public, "not_public"),
            ("private-general", JoinAs::Signed { member: None }, "wrong_kind"),
            ("private-presence.x", JoinAs::Signed { member: None }, "wrong_kind"),
            ("presence-x", JoinAs::Signed { member: None }, "invalid_member"),
        ];
        for (name, how, code) in cases {
            let err = anon.join(&ch(name), how).await.unwrap_err();
            assert_eq!(err.code(), code, "{name}: {err}");
        }
        // An app-signed channel no rule names keeps its spelled kind.
        let joined = anon
            .join(&ch("private-orders.1"), JoinAs::Signed { member: None })
            .await
            .unwrap();
        assert_eq!(joined.channel.kind(), ChannelKind::Private);
        assert_eq!(anon.leave("nope").await.unwrap_err().code(), "not_subscribed");
    }

    #[tokio::test]
    async fn client_events_reach_the_others_within_limits() {
        let node = node_with(
            Arc::new(MemoryPresence::new()),
            Limits {
                client_events_per_second: 2,
                ..Limits::default()
            },
        );
        let (mut a, mut ra) = open(&node, Some("1"));
        let (mut b, mut rb) = open(&node, Some("2"));
        for s in [&mut a, &mut b] {
            s.join(&ch("presence.room"), JoinAs::User).await.unwrap();
            s.join(&ch("lobby"), JoinAs::User).await.unwrap();
        }
        while ra.try_recv().is_ok() {}
        let e = |r: Result<Channel, ClientEventError>| r.map(|_| ()).map_err(|e| e.code());
        assert_eq!(
            e(a.client_event("lobby", "client-x", raw(json!({}))).await),
            Err("client_events_forbidden")
        );
        assert_eq!(
            e(a.client_event("elsewhere", "client-x", raw(json!({}))).await),
            Err("not_subscribed")
        );
        assert_eq!(
            e(a.client_event("presence.room", "typing", raw(json!({}))).await),
            Err("invalid_event")
        );
        assert_eq!(
            e(a.client_event("presence.room", "client-", raw(json!({}))).await),
            Err("invalid_event")
        );
        assert_eq!(
            e(b.client_event("presence.room", "client-t", raw(json!({"n": 1}))).await),
            Ok(())
        );
        assert_eq!(
            e(b.client_event("presence.room", "client-t", raw(json!({"n": 2}))).await),
            Ok(())
        );
        assert_eq!(
            e(b.client_event("presence.room", "client-t", raw(json!({"n": 3}))).await),
            Err("rate_limited")
        );
        for n in [1, 2] {
            let got = ra.try_recv().unwrap();
            assert_eq!(
                (got.event.as_ref(), got.data.get()),
                ("client-t", format!("{{\"n\":{n}}}").as_str())
            );
        }
        assert!(ra.try_recv().is_err(), "the refused one went nowhere");
        while let Ok(env) = rb.try_recv() {
            assert_ne!(env.event.as_ref(), "client-t", "never to the sender");
        }
    }

    #[tokio::test]
    async fn refresh_keeps_the_user_and_registers_an_anonymous_socket() {
        let node = node();
        let (mut anon, _r1) = open(&node, None);
        assert_eq!(anon.refresh("garbage").unwrap_err().code(), "unauthorized");
        // One exp for the token and the expectation (two clock reads could straddle a second).
        let exp = in_an_hour();
        assert_eq!(anon.refresh(&token_until("5", exp)).unwrap(), Some(exp));
        assert_eq!(anon.user().as_deref(), Some("5"));
        assert!(anon.expires_at().is_some());
        assert_eq!(anon.refresh(&token("6")).unwrap_err(), RefreshError::DifferentUser);
        assert_eq!(anon.user().as_deref(), Some("5"), "a refused refresh changes nothing");
        // An absurd exp means "never": no overflow, no panic.
        anon.refresh(&token_until("5", u64::MAX)).unwrap();
        assert_eq!(anon.expires_at(), None);
    }

    #[tokio::test]
    async fn connection_limits_and_app_quotas_are_reserved_at_admission() {
        let node = node_with(
            Arc::new(MemoryPresence::new()),
            Limits {
                max_connections: 2,
                ..Limits::default()
            },
        );
        let app = AppQuota {
            id: "a",
            max_connections: 1,
        };
        let first = node.admit(None, Some(app)).unwrap();
        assert_eq!(node.admit(None, Some(app)).unwrap_err().code(), "over_quota");
        let second = node.admit(None, None).unwrap();
        assert_eq!(node.admit(None, None).unwrap_err(), ConnectError::OverCapacity(2));
        drop(first);
        let (session, _rx) = second.open(Protocol::Pusher);
        assert!(node.admit(None, Some(app)).is_ok(), "the app's place came back");
        drop(session);
    }

    struct Managed;

    impl GrantSource for Managed {
        fn grant(&self, _: Option<&Identity>, channel: &Channel) -> Option<Result<Grant, JoinError>> {
            let name = channel.name().strip_prefix("managed.")?;
            if name == "stopped" {
                return Some(Err(JoinError::Forbidden(channel.name().into())));
            }
            let mut grant = Grant::for_channel(channel.with_kind(ChannelKind::Private), None);
            grant.max_connections = Some(1);
            Some(Ok(grant))
        }
    }

    #[tokio::test]
    async fn grant_sources_decide_their_channels_and_limit_them() {
        let node = Arc::new((*node()).clone().with_grant_source(Arc::new(Managed)));
        let (mut a, _ra) = open(&node, None);
        let (mut b, _rb) = open(&node, None);
        let joined = a.join(&ch("managed.one"), JoinAs::User).await.unwrap();
        assert_eq!(
            joined.channel.kind(),
            ChannelKind::Private,
            "the source's kind, without a rule"
        );
        let full = b.join(&ch("managed.one"), JoinAs::User).await.unwrap_err();
        assert_eq!(full.code(), "channel_full");
        assert_eq!(
            b.join(&ch("managed.stopped"), JoinAs::User).await.unwrap_err().code(),
            "forbidden"
        );
        a.leave("managed.one").await.unwrap();
        b.join(&ch("managed.one"), JoinAs::User)
            .await
            .expect("the place came back");
    }

    #[tokio::test]
    async fn a_dropped_session_still_leaves_the_hub_and_presence() {
        let node = node();
        let mut lifecycle = node.lifecycle().subscribe(32);
        let (mut watcher, mut rw) = open(&node, Some("1"));
        watcher.join(&ch("presence.room"), JoinAs::User).await.unwrap();
        let (mut s, _rx) = open(&node, Some("2"));
        s.join(&ch("presence.room"), JoinAs::User).await.unwrap();
        drop(s); // as if its task panicked or was cancelled
        assert_eq!(node.hub().connection_count(), 1);
        let removed = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match rw.recv().await {
                    Some(env) if env.event.as_ref() == crate::presence::MEMBER_REMOVED => return env,
                    Some(_) => continue,
                    None => panic!("queue closed"),
                }
            }
        })
        .await
        .expect("member_removed");
        assert!(removed.data.get().contains("\"2\""));
        watcher.close().await;
        let events: Vec<_> = std::iter::from_fn(|| lifecycle.try_recv().ok()).collect();
        let closed = events
            .iter()
            .filter(|e| matches!(e, LifecycleEvent::ConnectionClosed { .. }))
            .count();
        assert_eq!(closed, 2);
        assert!(matches!(events.last(), Some(LifecycleEvent::ConnectionClosed { .. })));
        assert!(node.presence().members("presence.room").await.unwrap().is_empty());
    }
}
