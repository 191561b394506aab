//! The node: one server's core shared by every session and protocol (hub, publish path,
//! presence, authorization, grant sources, token verification, lifecycle, quotas and
//! limits), and the app a session belongs to.

use crate::auth::{AuthError, ChannelAuthorizer, Identity, JwtVerifier, TokenError};
use crate::channel::{Channel, ChannelKind};
use crate::hub::Hub;
use crate::lifecycle::Lifecycle;
use crate::presence::{Member, Presence};
use crate::publish::Fanout;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;

use super::*;

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
    pub(super) hub: Arc<Hub>,
    pub(super) fanout: Fanout,
    pub(super) presence: Presence,
    pub(super) authorizer: Arc<dyn ChannelAuthorizer>,
    pub(super) grants: Vec<Arc<dyn GrantSource>>,
    pub(super) verifier: Option<Arc<JwtVerifier>>,
    pub(super) lifecycle: Lifecycle,
    pub(super) quotas: Arc<Quotas>,
    pub(super) limits: Arc<ArcSwap<Limits>>,
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
        fanout.set_authorizer(authorizer.clone());
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

    /// The same node with another channel authorizer (which also addresses what is
    /// published: see [`crate::auth::addressed`]).
    pub fn with_authorizer(mut self, authorizer: Arc<dyn ChannelAuthorizer>) -> Self {
        self.fanout.set_authorizer(authorizer.clone());
        self.authorizer = authorizer;
        self
    }

    /// The channel a publisher means by `channel` (see [`crate::auth::addressed`]).
    pub fn addressed(&self, channel: &Channel) -> Channel {
        crate::auth::addressed(&*self.authorizer, channel)
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
        if self.hub.is_draining() {
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
        let requested = channel;
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
                // A prefix asks for a kind, which only a rule that agrees can give: where
                // `general` is public, `private-general` is not made (nor made public).
                if asks_other_kind(how, channel.kind(), requested) {
                    return Err(JoinError::WrongKind {
                        channel: requested.local_name().into(),
                        actual: channel.kind(),
                        spelled: requested.kind(),
                    });
                }
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
            // Pusher: a name without a prefix is public, unless a rule names it (then the
            // rule decides, and a private or presence rule refuses it as public).
            JoinAs::Public if !self.authorizer.reserves(channel) => {
                Ok(Grant::for_channel(channel.with_kind(ChannelKind::Public), None))
            }
            JoinAs::Public => match self.authorizer.authorize(None, channel) {
                Ok(c) if c.kind() == ChannelKind::Public => Ok(Grant::for_channel(c, None)),
                _ => Err(JoinError::NotPublic(channel.local_name().into())),
            },
            JoinAs::Granted(grant) => Ok((**grant).clone()),
            JoinAs::Signed { member } => {
                // The app signed this very channel; its prefix is its kind, and it is its
                // own channel (`private-general` never reaches the public `general`).
                let member = match channel.kind() {
                    ChannelKind::Presence => Some(member.clone().ok_or(JoinError::MissingMember)?),
                    _ => None,
                };
                Ok(Grant::for_channel(channel.clone(), member))
            }
        }
    }
}

/// Whether a join `how` of `requested`, granted as `granted`, asked for another kind by
/// its prefix (typed-frame topics and native names without one take the rules' kind).
fn asks_other_kind(how: &JoinAs, granted: ChannelKind, requested: &Channel) -> bool {
    matches!(how, JoinAs::User | JoinAs::Topic)
        && requested.kind() != ChannelKind::Public
        && requested.kind() != granted
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

pub(super) fn join_error(e: AuthError) -> JoinError {
    match e {
        AuthError::Unauthenticated(c) => JoinError::Unauthenticated(c),
        AuthError::Forbidden(c) => JoinError::Forbidden(c),
    }
}

/// The presence member a user is: their id and public `user_info`.
pub(crate) fn member_of(user: &Identity) -> Member {
    Member::new(user.user_id.clone(), user.user_info.clone())
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
    /// The app switched client events off (Pusher's `enable_client_events = false`).
    pub client_events_disabled: bool,
}
