//! The cluster's nodes as Redis knows them: each node's heartbeat value, the sums
//! `?scope=cluster` stats show, and the comparison of security fingerprints.

use redis::AsyncCommands;
use serde_json::{json, Value};

use super::{BackendError, RedisBroker};

impl RedisBroker {
    /// Sets what this node's heartbeats carry about it (see [`node_cards`](Self::node_cards)).
    pub fn set_card(&self, card: Value) {
        *crate::sync::lock(&self.card) = card;
    }

    /// What this node's heartbeats carry about it.
    pub(super) fn card(&self) -> Value {
        crate::sync::lock(&self.card).clone()
    }

    /// Each live node's card (as its last heartbeat carried it, at most 2 s old), with its
    /// id; nodes that have not set one yet are left out.
    pub async fn node_cards(&self) -> Result<Vec<(String, Value)>, BackendError> {
        let (ids, values) = self.node_values().await?;
        Ok(ids
            .into_iter()
            .zip(values)
            .filter_map(|(id, v)| {
                let mut v: Value = serde_json::from_str(&v?).ok()?;
                let card = v.get_mut("card").map(Value::take).filter(|c| !c.is_null())?;
                Some((id, card))
            })
            .collect())
    }

    /// Logs a warning, once per node and fingerprint, for each live node whose security
    /// settings (JWT key, app secrets, tokens) differ from this node's: tokens one node
    /// accepts the other refuses, and clients fail depending on where they land.
    pub(super) async fn compare_security(&self) -> Result<(), BackendError> {
        for (node, fingerprint) in self.fingerprints().await? {
            if node == self.link.node_id() || fingerprint == self.fingerprint {
                continue;
            }
            if crate::sync::lock(&self.warned).insert((node.clone(), fingerprint.clone())) {
                tracing::warn!(
                    node = %node,
                    theirs = %fingerprint,
                    ours = %self.fingerprint,
                    "node {node} shares this Redis with other security settings (JWT key, Pusher app secrets or \
                     API/dashboard tokens differ): tokens one node accepts, the other refuses"
                );
            }
        }
        Ok(())
    }

    /// Each live node's security fingerprint.
    async fn fingerprints(&self) -> Result<Vec<(String, String)>, BackendError> {
        let (ids, values) = self.node_values().await?;
        Ok(ids
            .into_iter()
            .zip(values)
            .filter_map(|(id, v)| {
                let v: Value = serde_json::from_str(&v?).ok()?;
                Some((id, v["security"].as_str()?.to_string()))
            })
            .collect())
    }

    /// The live nodes' ids and heartbeat values (dead ones are removed from the set).
    async fn node_values(&self) -> Result<(Vec<String>, Vec<Option<String>>), BackendError> {
        let nodes_key = self.key("nodes");
        let prefix = self.key("node:");
        self.link
            .exec(|mut c| async move {
                let ids: Vec<String> = c.smembers(&nodes_key).await?;
                let keys: Vec<String> = ids.iter().map(|id| format!("{prefix}{id}")).collect();
                let values: Vec<Option<String>> = if keys.is_empty() {
                    Vec::new()
                } else {
                    c.mget(&keys).await?
                };
                let dead: Vec<&String> = ids
                    .iter()
                    .zip(&values)
                    .filter(|(_, v)| v.is_none())
                    .map(|(id, _)| id)
                    .collect();
                if !dead.is_empty() {
                    c.srem::<_, _, ()>(&nodes_key, dead).await?;
                }
                Ok((ids, values))
            })
            .await
    }

    /// Stats summed over live nodes: `{"scope":"cluster","nodes","connections","channels"}`.
    pub async fn cluster_stats(&self) -> Result<Value, BackendError> {
        let (ids, values) = self.node_values().await?;
        let mut security = serde_json::Map::new();
        let mut connections = 0u64;
        let mut channels = serde_json::Map::new();
        let mut live = Vec::new();
        let mut messages = json!({"published": 0, "delivered": 0, "received": 0});
        let mut apps = serde_json::Map::new();
        for (id, value) in ids.iter().zip(values) {
            let Some(stats) = value.and_then(|v| serde_json::from_str::<Value>(&v).ok()) else {
                continue;
            };
            live.push(id.clone());
            security.insert(id.clone(), stats["security"].clone());
            for (app, figures) in stats["apps"].as_object().into_iter().flatten() {
                let entry = apps
                    .entry(app.clone())
                    .or_insert_with(|| json!({"channels": 0, "subscriptions": 0, "published": 0, "delivered": 0}));
                for key in ["channels", "subscriptions", "published", "delivered"] {
                    entry[key] = json!(entry[key].as_u64().unwrap_or(0) + figures[key].as_u64().unwrap_or(0));
                }
            }
            let s = &stats["stats"];
            connections += s["connections"].as_u64().unwrap_or(0);
            for key in ["published", "delivered", "received"] {
                messages[key] = json!(messages[key].as_u64().unwrap_or(0) + s["messages"][key].as_u64().unwrap_or(0));
            }
            if let Some(map) = s["channels"].as_object() {
                for (name, c) in map {
                    let entry = channels
                        .entry(name.clone())
                        .or_insert_with(|| json!({"kind": c["kind"], "subscribers": 0}));
                    entry["subscribers"] =
                        json!(entry["subscribers"].as_u64().unwrap_or(0) + c["subscribers"].as_u64().unwrap_or(0));
                }
            }
        }
        live.sort();
        Ok(json!({
            "scope": "cluster",
            "nodes": live,
            "connections": connections,
            "channels": channels,
            "messages": messages,
            "apps": apps,
            "security": {
                "consistent": security.values().all(|f| *f == json!(self.fingerprint)),
                "fingerprints": security,
            },
        }))
    }
}
