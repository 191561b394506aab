//! The one publish path of a node ([`Fanout`]): route → hooks → history (order and
//! position) → broker → hub. Drivers, the HTTP APIs, client events, presence and every
//! service publish here, so history, webhooks and metrics see each message once.
//! Messages from other nodes come back through the broker, which hands them to the
//! fan-out as its [`Receiver`](crate::cluster::Receiver).

use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use serde_json::value::RawValue;

use crate::auth::ChannelAuthorizer;
use crate::backend::BackendError;
use crate::channel::Channel;
use crate::cluster::{Broker, LocalBroker};
use crate::history::History;
use crate::hub::{Hub, Message, PublishReport, SocketId};
use crate::routing::Routing;
use crate::sync::{read, write};

/// Where a message came from, as publish hooks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Published on this node (an API, a driver, a client event, presence).
    Local,
    /// Published on another node and received through the broker.
    Remote,
}

/// Sees every message that passes through a node's fan-out, before it is delivered.
///
/// Runs on the publish path: it must not block (hand work to a task of its own).
pub trait PublishHook: Send + Sync {
    /// `message` is about to be delivered.
    fn published(&self, message: &Message, origin: Origin);
}

/// The owner of a family of channels (EmitHub's `emithub.*`): every publish on them,
/// whoever makes it (the HTTP APIs, a library driver, a routing rule's copy), goes
/// through it, so its rules (a channel's state, its rate limit, keeping its messages,
/// its message format) hold for every publisher. It delivers with
/// [`Fanout::publish_owned`].
#[async_trait::async_trait]
pub trait ChannelOwner: Send + Sync {
    /// Publishes `message`, whose channel is one of this owner's, its own way; a refusal
    /// is [`BackendError::Refused`].
    async fn publish(&self, message: Message) -> Result<PublishReport, BackendError>;
}

/// The owner of the channels whose names start with a prefix (see [`Fanout::set_owner`]).
type Owner = (String, std::sync::Weak<dyn ChannelOwner>);

/// The one publish path of a node: every publish (drivers, HTTP APIs, client events,
/// presence events) enters here, runs the publish hooks, goes to the other nodes through
/// the broker (when clustered), then to this node's sockets. Messages from other nodes
/// enter through [`deliver_remote`](Self::deliver_remote).
#[derive(Clone)]
pub struct Fanout {
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    hooks: Arc<RwLock<Vec<Arc<dyn PublishHook>>>>,
    routing: Arc<ArcSwap<Routing>>,
    history: Arc<arc_swap::ArcSwapOption<History>>,
    /// The rules that address a published unprefixed name (see [`crate::auth::addressed`]).
    authorizer: Arc<arc_swap::ArcSwapOption<Arc<dyn ChannelAuthorizer>>>,
    /// The owner of a family of channels, set once (held weakly: the owner holds the
    /// fan-out).
    owner: Arc<std::sync::OnceLock<Owner>>,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("clustered", &!self.broker.is_local())
            .finish_non_exhaustive()
    }
}

impl Fanout {
    /// Fan-out over `hub` through `broker`.
    pub fn new(hub: Arc<Hub>, broker: Arc<dyn Broker>) -> Self {
        Self {
            hub,
            broker,
            hooks: Arc::default(),
            routing: Arc::new(ArcSwap::from_pointee(Routing::none())),
            history: Arc::default(),
            authorizer: Arc::default(),
            owner: Arc::default(),
        }
    }

    /// Addresses what is published with `authorizer`'s rules (for every clone of this
    /// fan-out): `user.42` reaches the subscribers of `private-user.42` when the rules
    /// make it private. Without one, a name is the kind its prefix says.
    pub fn set_authorizer(&self, authorizer: Arc<dyn ChannelAuthorizer>) {
        self.authorizer.store(Some(Arc::new(authorizer)));
    }

    /// `message` on the channel its publisher means.
    fn addressed(&self, mut message: Message) -> Message {
        if message.channel.kind() == crate::channel::ChannelKind::Public {
            if let Some(authorizer) = &*self.authorizer.load() {
                message.channel = crate::auth::addressed(&***authorizer, &message.channel);
            }
        }
        message
    }

    /// Keeps history for the channels `history` names (for every clone of this fan-out).
    pub fn set_history(&self, history: Arc<History>) {
        self.history.store(Some(history));
    }

    /// The channel history, when configured.
    pub fn history(&self) -> Option<Arc<History>> {
        self.history.load_full()
    }

    /// Replaces the routing rules (for every clone of this fan-out).
    pub fn set_routing(&self, routing: Routing) {
        self.routing.store(Arc::new(routing));
    }

    /// Fan-out of a single node (a [`LocalBroker`]).
    pub fn local(hub: Arc<Hub>) -> Self {
        Self::new(hub, Arc::new(LocalBroker))
    }

    /// The local hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// Makes sure this node receives `channel`'s messages from the other nodes; returns
    /// once it does (see [`Broker::listen`]).
    pub async fn listen(&self, channel: &crate::channel::Channel) {
        self.broker.listen(channel).await;
    }

    /// Whether messages also go to other nodes.
    pub fn is_clustered(&self) -> bool {
        !self.broker.is_local()
    }

    /// Adds a hook that sees every message from now on.
    pub fn add_hook(&self, hook: Arc<dyn PublishHook>) {
        write(&self.hooks).push(hook);
    }

    fn run_hooks(&self, message: &Message, origin: Origin) {
        for hook in read(&self.hooks).iter() {
            hook.published(message, origin);
        }
    }

    /// Publishes one message everywhere. When the broker fails the message is not
    /// delivered anywhere (so a retry cannot duplicate it locally) and the error is returned.
    ///
    /// The routing rules run first, once: the message may be changed, dropped or copied
    /// to other channels (each copy is published the same way, not routed again).
    pub async fn publish(&self, message: Message) -> Result<PublishReport, BackendError> {
        let message = self.addressed(message);
        if let Some(owner) = self.owner_of(&message.channel) {
            return owner.publish(message).await;
        }
        if !self.routing.load().is_empty() {
            return Box::pin(self.publish_routed(message)).await;
        }
        self.publish_owned(message).await
    }

    /// Makes `owner` decide every publish on the channels whose names start with
    /// `prefix` (once; a second owner is refused: `false`).
    pub fn set_owner(&self, prefix: &str, owner: std::sync::Weak<dyn ChannelOwner>) -> bool {
        self.owner.set((prefix.to_string(), owner)).is_ok()
    }

    /// The owner of `channel`, if another part owns it and is still there.
    fn owner_of(&self, channel: &Channel) -> Option<Arc<dyn ChannelOwner>> {
        let (prefix, owner) = self.owner.get()?;
        if channel.name().starts_with(prefix.as_str()) {
            owner.upgrade()
        } else {
            None
        }
    }

    /// Publishes a client event the session allowed: past the channel's owner, whose own
    /// sockets checked (and kept) it before (EmitHub's `client_message`); elsewhere as
    /// [`publish`](Self::publish).
    pub async fn publish_client_event(&self, message: Message) -> Result<PublishReport, BackendError> {
        let message = self.addressed(message);
        if self.owner_of(&message.channel).is_some() {
            return self.publish_owned(message).await;
        }
        self.publish(message).await
    }

    /// Publishes a message of an owned channel, after its owner's checks: the rest of
    /// [`publish`](Self::publish) (hooks, history, the other nodes, this node's sockets).
    pub async fn publish_owned(&self, message: Message) -> Result<PublishReport, BackendError> {
        self.run_hooks(&message, Origin::Local);
        if let Some(history) = self.history_of(&message) {
            // Boxed: this future is inlined wherever anything publishes (presence joins
            // and leaves in every connection's task among them); unboxed, its lock and
            // store states would grow each connection by most of a KiB.
            return Box::pin(publish_kept(&history, message, &*self.broker, &self.hub)).await;
        }
        self.broker.publish(&message).await?;
        Ok(self.hub.deliver(message))
    }

    /// The history that keeps `message`, if its channel keeps one.
    fn history_of(&self, message: &Message) -> Option<Arc<History>> {
        let history = self.history.load_full()?;
        (crate::history::is_kept(message) && history.keeps(&message.channel)).then_some(history)
    }

    async fn publish_routed(&self, message: Message) -> Result<PublishReport, BackendError> {
        let routing = self.routing.load_full();
        let mut total = PublishReport::default();
        for message in routing.route(message) {
            let message = self.addressed(message);
            if let Some(owner) = self.owner_of(&message.channel) {
                let report = owner.publish(message).await?;
                total.delivered += report.delivered;
                total.dropped += report.dropped;
                continue;
            }
            self.run_hooks(&message, Origin::Local);
            let report = match self.history_of(&message) {
                Some(history) => Box::pin(publish_kept(&history, message, &*self.broker, &self.hub)).await?,
                None => {
                    self.broker.publish(&message).await?;
                    self.hub.deliver(message)
                }
            };
            total.delivered += report.delivered;
            total.dropped += report.dropped;
        }
        Ok(total)
    }

    /// Delivers a message another node published (the broker calls this).
    pub fn deliver_remote(&self, message: Message) -> PublishReport {
        self.run_hooks(&message, Origin::Remote);
        self.hub.deliver(message)
    }

    /// Delivers a message that entered the cluster from outside (published straight into
    /// Redis by another program): each node delivers it to its own sockets.
    /// It is routed here (every node routes it alike, so each delivers the copies to its
    /// own sockets).
    pub fn deliver_foreign(&self, message: Message) -> PublishReport {
        let mut total = PublishReport::default();
        for message in self.routing.load().route(self.addressed(message)) {
            let message = self.addressed(message);
            let report = self.deliver_remote(message);
            total.delivered += report.delivered;
            total.dropped += report.dropped;
        }
        total
    }

    /// Closes `user_id`'s connections on every node; returns how many were on this one.
    pub async fn terminate_user(&self, user_id: &str) -> Result<usize, BackendError> {
        self.broker.terminate_user(user_id).await?;
        Ok(self.hub.terminate_user(user_id))
    }

    /// Publishes one event on several channels, sharing payload and timestamp; stops at
    /// the first broker failure.
    pub async fn publish_many(
        &self,
        channels: &[Channel],
        event: &str,
        data: Arc<RawValue>,
        text: Option<Arc<str>>,
        except: Option<SocketId>,
    ) -> Result<PublishReport, BackendError> {
        let Some(first) = channels.first() else {
            return Ok(PublishReport::default());
        };
        let template = Message::event(first.clone(), event, data)
            .with_text(text)
            .except(except);
        let mut total = PublishReport::default();
        for channel in channels {
            let message = Message {
                channel: channel.clone(),
                ..template.clone()
            };
            let r = self.publish(message).await?;
            total.delivered += r.delivered;
            total.dropped += r.dropped;
        }
        Ok(total)
    }
}

#[cfg(feature = "redis")]
impl crate::cluster::Receiver for Fanout {
    fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    fn deliver_remote(&self, message: Message) -> PublishReport {
        Fanout::deliver_remote(self, message)
    }

    fn deliver_foreign(&self, message: Message) -> PublishReport {
        Fanout::deliver_foreign(self, message)
    }
}

/// Publishes a message of a channel that keeps history: gives it its position, keeps it,
/// sends it to the other nodes and delivers it here, in position order.
async fn publish_kept(
    history: &History,
    mut message: Message,
    broker: &dyn Broker,
    hub: &Hub,
) -> Result<PublishReport, BackendError> {
    if history.publishes(&message.channel) {
        // Published to every node (this one included) by the store's own script.
        let local = hub.subscriber_count(&message.channel);
        let position = history.append(&message).await?;
        return Ok(PublishReport {
            delivered: local,
            dropped: 0,
            offset: Some(position.offset),
        });
    }
    let _order = history.lock(&message.channel).lock().await;
    let position = history.append(&message).await?;
    let offset = position.offset;
    message.position = Some(position);
    broker.publish(&message).await?;
    Ok(PublishReport {
        offset: Some(offset),
        ..hub.deliver(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{EnvelopeKind, Protocol};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, String, Origin)>>);

    impl PublishHook for Recorder {
        fn published(&self, message: &Message, origin: Origin) {
            let mut seen = self.0.lock().unwrap();
            seen.push((message.channel.name().to_string(), message.event.to_string(), origin));
        }
    }

    #[tokio::test]
    async fn hooks_see_every_message_once_before_delivery() {
        let hub = Arc::new(Hub::default());
        let fanout = Fanout::local(hub.clone());
        let recorder = Arc::new(Recorder::default());
        fanout.add_hook(recorder.clone());
        let general = Channel::parse("general").unwrap();
        let news = Channel::parse("news").unwrap();
        let (conn, mut rx) = hub.connect(Protocol::Native);
        hub.subscribe(&conn, &general).unwrap();
        let data: Arc<RawValue> = Arc::from(serde_json::value::to_raw_value(&1).unwrap());
        let report = fanout
            .publish_many(&[general.clone(), news.clone()], "e", data.clone(), None, None)
            .await
            .unwrap();
        assert_eq!(report.delivered, 1);
        fanout.deliver_remote(Message::event(general.clone(), "from.b", data).kind(EnvelopeKind::MemberAdded));
        assert_eq!(rx.try_recv().unwrap().event.as_ref(), "e");
        assert_eq!(rx.try_recv().unwrap().kind, EnvelopeKind::MemberAdded);
        let seen = recorder.0.lock().unwrap().clone();
        let expected = [
            ("general", "e", Origin::Local),
            ("news", "e", Origin::Local),
            ("general", "from.b", Origin::Remote),
        ];
        let seen: Vec<(&str, &str, Origin)> = seen.iter().map(|(c, e, o)| (c.as_str(), e.as_str(), *o)).collect();
        assert_eq!(seen, expected);
    }
}
