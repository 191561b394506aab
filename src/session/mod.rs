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

pub(crate) mod error;
pub(crate) use crate::hub::{event_name_problem, MAX_EVENT_NAME_LEN};
pub(crate) mod grant;
mod node;
pub(crate) mod quota;
pub(crate) mod runner;
#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::DefaultDirectRateLimiter;
use serde_json::value::RawValue;
use tokio::time::Instant;

pub(crate) use error::{ClientEventError, Code, ConnectError, LeaveError, RefreshError, Refusal};
pub(crate) use grant::JoinAs;
pub(crate) use node::{member_of, AppQuota, Tenant};
// Public: re-exported by the server module.
#[allow(unreachable_pub)]
pub use error::JoinError;
#[allow(unreachable_pub)]
pub use grant::{Grant, GrantSource};
#[allow(unreachable_pub)]
pub use node::{Limits, Node};
pub(crate) use quota::{QuotaSlot, Quotas};

use crate::auth::Identity;
use crate::channel::Channel;
use crate::hub::{ConnectionHandle, ConnectionSlot, Envelope, Message, Position, Protocol, SocketId, SubscribeError};
use crate::lifecycle::LifecycleEvent;
use crate::presence::Member;

/// Prefix of client event names.
pub(crate) const CLIENT_EVENT_PREFIX: &str = "client-";

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
    /// The presence member's user id, with its JSON type (presence channels).
    user_id: Option<crate::hub::Sender>,
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
    Box::new(crate::rate::direct(crate::rate::per_second(per_second)))
}

fn limiter_per_minute(per_minute: u32) -> Box<DefaultDirectRateLimiter> {
    Box::new(crate::rate::direct(crate::rate::per_minute(per_minute)))
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
        self.joined_index(name).map(|i| &self.joined[i].channel)
    }

    /// Where the channel a client names is among the joined ones: the channel of that
    /// key, else (an unprefixed name of a native or typed-frame client) the one of that
    /// local name the rules made private. A Pusher client's name is exact: its prefix is
    /// the kind.
    fn joined_index(&self, name: &str) -> Option<usize> {
        let wanted = self.parse(name).ok()?;
        let exact = self.joined.iter().position(|j| j.channel == wanted);
        if exact.is_some() || self.conn.protocol() == Protocol::Pusher {
            return exact;
        }
        self.joined.iter().position(|j| j.channel.answers_to(&wanted))
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
        let joined = self.join_as(channel, how).await;
        if let Err(e) = &joined {
            if !matches!(e, JoinError::Closing) {
                // The reason and the channel, never the token.
                tracing::debug!(
                    socket_id = %self.conn.id(),
                    protocol = ?self.conn.protocol(),
                    channel = %channel.local_name(),
                    app = channel.app().unwrap_or(""),
                    code = e.code().as_str(),
                    reason = %e,
                    "subscription refused"
                );
            }
        }
        joined
    }

    async fn join_as(&mut self, channel: &Channel, how: JoinAs) -> Result<Joined, JoinError> {
        let grant = self.node.grant(self.identity.as_deref(), channel, &how)?;
        let channel = grant.channel.clone();
        if let Some(i) = self.joined.iter().position(|j| j.channel == channel) {
            // Already joined: answer as a join would, without a second subscription.
            let presence = match &self.joined[i].user_id {
                Some(user) => Some(self.presence_state(&channel, &user.id).await?),
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
        // Before the join is answered: from then on, what other nodes publish reaches it.
        self.node.fanout.listen(&channel).await;
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
        // Most sockets join one channel: room for one, not the four a first push reserves.
        if self.joined.is_empty() {
            self.joined.reserve_exact(1);
        }
        self.joined.push(JoinedChannel {
            channel: channel.clone(),
            client_events: grant.client_events,
            limiter: grant.client_events_per_minute.map(|n| (n, limiter_per_minute(n))),
            user_id: grant.member.map(|m| m.id().sender()),
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
        let i = self.joined_index(name).ok_or(LeaveError::NotSubscribed)?;
        let joined = self.joined.swap_remove(i);
        self.floors.retain(|(c, _)| *c != joined.channel);
        self.leave_presence(&joined).await;
        self.unsubscribe(&joined.channel);
        Ok(joined.channel)
    }

    async fn leave_presence(&self, joined: &JoinedChannel) {
        let Some(user) = &joined.user_id else { return };
        let left = self
            .node
            .presence
            .leave(self.conn.id(), &joined.channel, &user.id)
            .await;
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
        let i = self.joined_index(name).ok_or(ClientEventError::NotSubscribed)?;
        let per_second = self
            .tenant
            .as_ref()
            .and_then(|t| t.client_events_per_second)
            .unwrap_or_else(|| self.node.limits().client_events_per_second);
        let joined = &self.joined[i];
        // The grant decides (the rules never allow client events on public channels).
        if !joined.client_events {
            return Err(ClientEventError::Forbidden);
        }
        if self.tenant.as_ref().is_some_and(|t| t.client_events_disabled) {
            return Err(ClientEventError::Disabled);
        }
        // Pusher refuses them on end-to-end encrypted channels: the server could not
        // have checked what they carry, and clients could not tell them from real events.
        if joined.channel.is_encrypted() {
            return Err(ClientEventError::Encrypted);
        }
        let name_ok = event.starts_with(CLIENT_EVENT_PREFIX)
            && event.len() > CLIENT_EVENT_PREFIX.len()
            && event_name_problem(event, MAX_EVENT_NAME_LEN).is_none();
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
        // On a presence channel the sender is the member (Pusher adds its `user_id`).
        let member = self
            .joined
            .iter()
            .find(|j| j.channel == channel)
            .and_then(|j| j.user_id.clone());
        let sender = member.or_else(|| self.conn.user().map(crate::hub::Sender::text));
        let message = Message::event(channel.clone(), event, data.clone())
            .except(Some(self.conn.id()))
            .sender(sender.clone());
        self.node
            .fanout
            .publish_client_event(message)
            .await
            .map_err(ClientEventError::Unavailable)?;
        self.emit(LifecycleEvent::ClientEvent {
            channel: channel.clone(),
            event: event.into(),
            socket: self.conn.id(),
            user: sender,
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
            .filter_map(|j| j.user_id.as_ref().map(|u| (j.channel.clone(), u.id.clone())))
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
mod tests;
