//! Running several nodes as one: a [`Broker`] carries messages between nodes; what a
//! broker receives it hands to the [`Receiver`] it is given (the node's publish
//! pipeline, which lives above this module), as centrifuge's `BrokerEventHandler`.
//!
//! - [`redis`]: the Redis broker (pub/sub, node heartbeats, cluster stats) over the
//!   backend's connection ([`RedisLink`](crate::backend::RedisLink)).
//!
//! Exactly once: every message a node publishes carries its node id; a node delivers its
//! own messages locally and skips their echo from the broker. Messages from elsewhere
//! (other nodes, or a Laravel app publishing straight into Redis) are delivered by every
//! node once.

#[cfg(feature = "redis")]
pub(crate) mod redis;

use async_trait::async_trait;

pub(crate) use crate::backend::BackendError;
use crate::channel::Channel;
use crate::hub::Message;
#[cfg(feature = "redis")]
use crate::hub::{Hub, PublishReport};

/// Carries messages to the other nodes.
#[async_trait]
pub trait Broker: Send + Sync {
    /// Publishes one message to every other node.
    async fn publish(&self, message: &Message) -> Result<(), BackendError>;

    /// Makes sure this node receives `channel`'s messages from the other nodes (a local
    /// subscriber just joined it); returns once that holds, so a message published
    /// anywhere after the join was acknowledged reaches the new subscriber. Nothing to do
    /// for a broker that receives everything.
    async fn listen(&self, _channel: &Channel) {}

    /// Asks every other node to close `user_id`'s connections.
    async fn terminate_user(&self, user_id: &str) -> Result<(), BackendError>;

    /// Whether the broker can currently carry messages both ways.
    fn healthy(&self) -> bool;

    /// Whether this broker reaches no other node (a single, unclustered node).
    fn is_local(&self) -> bool {
        false
    }
}

/// The broker of a node that is not part of a cluster: there is nobody else to tell.
#[derive(Debug, Clone, Copy, Default)]
// Public for `server::cluster`, which the library without the server does not have.
#[cfg_attr(not(feature = "server"), allow(unreachable_pub))]
pub struct LocalBroker;

#[async_trait]
impl Broker for LocalBroker {
    async fn publish(&self, _message: &Message) -> Result<(), BackendError> {
        Ok(())
    }

    async fn terminate_user(&self, _user_id: &str) -> Result<(), BackendError> {
        Ok(())
    }

    fn healthy(&self) -> bool {
        true
    }

    fn is_local(&self) -> bool {
        true
    }
}

/// What a broker hands its messages to: the node that runs it.
#[cfg(feature = "redis")]
#[cfg_attr(not(feature = "server"), allow(unreachable_pub))]
pub trait Receiver: Send + Sync {
    /// This node's hub (control messages act on it directly).
    fn hub(&self) -> &std::sync::Arc<Hub>;

    /// Delivers a message another node published.
    fn deliver_remote(&self, message: Message) -> PublishReport;

    /// Delivers a message that entered the cluster from outside (another program
    /// publishing straight into Redis, e.g. Laravel).
    fn deliver_foreign(&self, message: Message) -> PublishReport;
}
