//! EmitHub owns its channels on the fan-out (`emithub.{id}`): a publish on one of them
//! from anywhere (a library driver's `broadcast().channel("emithub.<id>")`, a routing
//! rule's copy, the native HTTP API) is an EmitHub broadcast, refused while the channel
//! is not Active or over its rate limit, kept when it persists messages, and delivered
//! in EmitHub's message format. One gate, whoever publishes.

use std::sync::Arc;

use uuid::Uuid;

use super::model::HUB_PREFIX;
use super::{EmitHub, EmitHubError};
use crate::backend::BackendError;
use crate::hub::{Message, PublishReport};
use crate::publish::ChannelOwner;

impl EmitHub {
    /// Registers `hub` as the owner of the `emithub.*` channels of its fan-out; `hub`.
    pub(super) fn owning(hub: Arc<Self>) -> Arc<Self> {
        let owner: Arc<dyn ChannelOwner> = hub.clone();
        hub.fanout.set_owner(HUB_PREFIX, Arc::downgrade(&owner));
        hub
    }
}

#[async_trait::async_trait]
impl ChannelOwner for EmitHub {
    async fn publish(&self, message: Message) -> Result<PublishReport, BackendError> {
        let refused = |e: EmitHubError| match e {
            EmitHubError::Cluster(e) => e,
            other => BackendError::Refused(other.to_string()),
        };
        let id = message
            .channel
            .name()
            .strip_prefix(HUB_PREFIX)
            .and_then(|id| Uuid::parse_str(id).ok())
            .ok_or_else(|| {
                refused(EmitHubError::Invalid(format!(
                    "{} is not an EmitHub channel",
                    message.channel.name()
                )))
            })?;
        let content = crate::hub::payload_text(&message.data, message.text.as_deref()).into_owned();
        let sent = self
            .broadcast(id, content, message.event.to_string())
            .await
            .map_err(refused)?;
        Ok(PublishReport {
            delivered: sent.recipients,
            dropped: 0,
            offset: sent.sequence,
        })
    }
}
