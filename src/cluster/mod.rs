//! Running several nodes as one: a [`Broker`] carries messages between nodes, and
//! [`Fanout`] publishes everywhere (the broker first, then this node's hub).
//!
//! - [`breaker`]: the circuit breaker guarding the broker.
//! - [`redis`]: the Redis broker (pub/sub, node heartbeats, cluster stats) and the
//!   command connection ([`RedisLink`](redis::RedisLink)) it shares with the Redis
//!   presence store.
//!
//! Exactly once: every message a node publishes carries its node id; a node delivers its
//! own messages locally and skips their echo from the broker. Messages from elsewhere
//! (other nodes, or a Laravel app publishing straight into Redis) are delivered by every
//! node once.

pub mod breaker;
mod error;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::value::RawValue;

use crate::channel::Channel;
use crate::hub::{now_rfc3339, EnvelopeKind, Hub, PublishReport, SocketId};

pub use error::ClusterError;

/// Carries messages to the other nodes.
#[async_trait]
pub trait Broker: Send + Sync {
    /// Publishes one message on one channel to every other node.
    async fn publish(
        &self,
        channel: &Channel,
        event: &str,
        data: &RawValue,
        except: Option<SocketId>,
        kind: &EnvelopeKind,
    ) -> Result<(), ClusterError>;

    /// Asks every other node to close `user_id`'s connections.
    async fn terminate_user(&self, user_id: &str) -> Result<(), ClusterError>;

    /// Whether the broker can currently carry messages both ways.
    fn healthy(&self) -> bool;
}

/// Publishes to the whole cluster: through the broker (when there is one), then to this
/// node's sockets.
#[derive(Clone)]
pub struct Fanout {
    hub: Arc<Hub>,
    broker: Option<Arc<dyn Broker>>,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("clustered", &self.broker.is_some())
            .finish()
    }
}

impl Fanout {
    /// Fan-out over `hub`, and over `broker` when given.
    pub fn new(hub: Arc<Hub>, broker: Option<Arc<dyn Broker>>) -> Self {
        Self { hub, broker }
    }

    /// The local hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The broker, if this node is part of a cluster.
    pub fn broker(&self) -> Option<&Arc<dyn Broker>> {
        self.broker.as_ref()
    }

    /// Publishes one message. When the broker fails the message is not delivered
    /// anywhere (so a retry cannot duplicate it locally) and the error is returned.
    pub async fn publish(
        &self,
        channel: &Channel,
        event: &str,
        data: Arc<RawValue>,
        except: Option<SocketId>,
        kind: EnvelopeKind,
    ) -> Result<PublishReport, ClusterError> {
        if let Some(broker) = &self.broker {
            broker.publish(channel, event, &data, except, &kind).await?;
        }
        Ok(self
            .hub
            .publish_kind(channel, event.into(), data, except, kind, now_rfc3339()))
    }

    /// Closes `user_id`'s connections on every node; returns how many were on this one.
    pub async fn terminate_user(&self, user_id: &str) -> Result<usize, ClusterError> {
        if let Some(broker) = &self.broker {
            broker.terminate_user(user_id).await?;
        }
        Ok(self.hub.terminate_user(user_id))
    }

    /// Publishes one payload on several channels; stops at the first broker failure.
    pub async fn publish_many(
        &self,
        channels: &[Channel],
        event: &str,
        data: Arc<RawValue>,
        except: Option<SocketId>,
    ) -> Result<PublishReport, ClusterError> {
        let mut total = PublishReport::default();
        for channel in channels {
            let r = self
                .publish(channel, event, data.clone(), except, EnvelopeKind::Event)
                .await?;
            total.delivered += r.delivered;
            total.dropped += r.dropped;
        }
        Ok(total)
    }
}
