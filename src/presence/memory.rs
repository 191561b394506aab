use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Member, PresenceError, PresenceStore};
use crate::hub::SocketId;
use crate::sync::lock;

/// One channel's members: user id → (member, that user's sockets on the channel).
type Members = BTreeMap<String, (Member, HashSet<SocketId>)>;

/// Presence kept in this process: channel → user → (member, sockets).
#[derive(Debug, Default)]
pub struct MemoryPresence {
    channels: Mutex<HashMap<String, Members>>,
}

impl MemoryPresence {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn join(&self, channel: &str, member: &Member, socket: SocketId) -> Result<bool, PresenceError> {
        let mut channels = lock(&self.channels);
        let users = channels.entry(channel.to_string()).or_default();
        let entry = users
            .entry(member.user_id.clone())
            .or_insert_with(|| (member.clone(), HashSet::new()));
        let first = entry.1.is_empty();
        // The newest connection's info wins (a refreshed profile shows up).
        entry.0 = member.clone();
        entry.1.insert(socket);
        Ok(first)
    }

    async fn leave(&self, channel: &str, user_id: &str, socket: SocketId) -> Result<Option<Member>, PresenceError> {
        let mut channels = lock(&self.channels);
        let Some(users) = channels.get_mut(channel) else {
            return Ok(None);
        };
        let Some((member, sockets)) = users.get_mut(user_id) else {
            return Ok(None);
        };
        if !sockets.remove(&socket) || !sockets.is_empty() {
            return Ok(None);
        }
        let member = member.clone();
        users.remove(user_id);
        if users.is_empty() {
            channels.remove(channel);
        }
        Ok(Some(member))
    }

    async fn members(&self, channel: &str) -> Result<Vec<Member>, PresenceError> {
        Ok(lock(&self.channels)
            .get(channel)
            .map(|users| users.values().map(|(m, _)| m.clone()).collect())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn two_tabs_are_one_member() {
        let store = MemoryPresence::new();
        let alice = Member::new("a", json!({"name": "Alice"}));
        let (t1, t2) = (SocketId::next(), SocketId::next());
        assert!(store.join("presence.x", &alice, t1).await.unwrap());
        assert!(!store.join("presence.x", &alice, t2).await.unwrap());
        assert_eq!(store.members("presence.x").await.unwrap().len(), 1);
        assert_eq!(store.leave("presence.x", "a", t1).await.unwrap(), None);
        assert_eq!(store.leave("presence.x", "a", t1).await.unwrap(), None, "idempotent");
        assert_eq!(store.leave("presence.x", "a", t2).await.unwrap(), Some(alice));
        assert!(store.members("presence.x").await.unwrap().is_empty());
    }
}
