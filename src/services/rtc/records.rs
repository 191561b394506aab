//! Small shared records with compare-and-set: in memory on one node, in Redis in a
//! cluster. Services keep their logic in Rust (read, change, write back if nobody else
//! wrote meanwhile, else retry) and need no scripts of their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use crate::backend::BackendError;
use crate::backend::RedisLink;
use crate::sync::lock;

/// Sets `KEYS[1]` to `ARGV[2]` (or deletes it when `ARGV[3]` is `del`) only if it still
/// holds `ARGV[1]` (`ARGV[4]` = `absent` when it must not exist).
const CAS_LUA: &str = r"
local now = redis.call('GET', KEYS[1])
if ARGV[4] == 'absent' then
  if now then return 0 end
elseif now ~= ARGV[1] then
  return 0
end
if ARGV[3] == 'del' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
";

/// Records by key.
#[async_trait]
pub trait RecordStore: Send + Sync {
    /// The record at `key`.
    async fn get(&self, key: &str) -> Result<Option<String>, BackendError>;

    /// Replaces `key` with `new` (`None` deletes it) if it still holds `expected` (`None`:
    /// must not exist); whether it did.
    async fn compare_and_set(&self, key: &str, expected: Option<&str>, new: Option<&str>)
        -> Result<bool, BackendError>;

    /// Every key starting with `prefix`.
    async fn keys(&self, prefix: &str) -> Result<Vec<String>, BackendError>;
}

/// Records of one node.
#[derive(Debug, Default)]
pub struct MemoryRecords {
    records: Mutex<HashMap<String, String>>,
}

#[async_trait]
impl RecordStore for MemoryRecords {
    async fn get(&self, key: &str) -> Result<Option<String>, BackendError> {
        Ok(lock(&self.records).get(key).cloned())
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, BackendError> {
        let mut records = lock(&self.records);
        if records.get(key).map(String::as_str) != expected {
            return Ok(false);
        }
        match new {
            Some(v) => records.insert(key.to_string(), v.to_string()),
            None => records.remove(key),
        };
        Ok(true)
    }

    async fn keys(&self, prefix: &str) -> Result<Vec<String>, BackendError> {
        Ok(lock(&self.records)
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }
}

/// Records in Redis, under the node's key prefix.
pub struct RedisRecords {
    link: Arc<RedisLink>,
    cas: Script,
}

impl std::fmt::Debug for RedisRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRecords").finish_non_exhaustive()
    }
}

impl RedisRecords {
    /// Records over a node's Redis link.
    pub fn new(link: Arc<RedisLink>) -> Self {
        Self {
            link,
            cas: Script::new(CAS_LUA),
        }
    }

    fn full(&self, key: &str) -> String {
        self.link.key(key)
    }
}

#[async_trait]
impl RecordStore for RedisRecords {
    async fn get(&self, key: &str) -> Result<Option<String>, BackendError> {
        let key = self.full(key);
        self.link
            .exec(|mut c| async move { redis::AsyncCommands::get(&mut c, key).await })
            .await
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, BackendError> {
        let key = self.full(key);
        let mut invocation = self.cas.key(key);
        invocation
            .arg(expected.unwrap_or(""))
            .arg(new.unwrap_or(""))
            .arg(if new.is_some() { "set" } else { "del" })
            .arg(if expected.is_some() { "present" } else { "absent" });
        let done: i64 = self
            .link
            .exec(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(done == 1)
    }

    async fn keys(&self, prefix: &str) -> Result<Vec<String>, BackendError> {
        let pattern = format!("{}*", crate::cluster::redis::escape_glob(&self.full(prefix)));
        let strip = self.link.key("");
        let slot_key = strip.clone();
        let found: Vec<String> = self
            .link
            .exec(|mut c| async move { c.scan_keys(&pattern, &slot_key).await })
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|k| k.strip_prefix(&strip).map(str::to_string))
            .collect())
    }
}

/// Reads `key`, applies `change` and writes the result back if nobody wrote meanwhile,
/// retrying a few times. `change` returns the new record (`None` deletes it) and a value
/// for the caller, or an error that stops without writing.
pub async fn update<T, E>(
    store: &dyn RecordStore,
    key: &str,
    mut change: impl FnMut(Option<&str>) -> Result<(Option<String>, T), E>,
) -> Result<T, E>
where
    E: From<BackendError>,
{
    let mut backoff = Duration::from_millis(1);
    for _ in 0..16 {
        let now = store.get(key).await?;
        let (new, out) = change(now.as_deref())?;
        if new == now || store.compare_and_set(key, now.as_deref(), new.as_deref()).await? {
            return Ok(out);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(50));
    }
    Err(BackendError::Unavailable(format!("{key} is being changed too often; try again")).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn compare_and_set_refuses_stale_writes() {
        let store = MemoryRecords::default();
        assert!(store.compare_and_set("a", None, Some("1")).await.unwrap());
        assert!(!store.compare_and_set("a", None, Some("2")).await.unwrap());
        assert!(!store.compare_and_set("a", Some("0"), Some("2")).await.unwrap());
        assert!(store.compare_and_set("a", Some("1"), Some("2")).await.unwrap());
        assert_eq!(store.get("a").await.unwrap().as_deref(), Some("2"));
        assert!(store.compare_and_set("a", Some("2"), None).await.unwrap());
        assert_eq!(store.get("a").await.unwrap(), None);
        let n: Result<u32, BackendError> = update(&store, "n", |now| {
            let n = now.map_or(0, |v| v.parse().unwrap_or(0)) + 1;
            Ok((Some(n.to_string()), n))
        })
        .await;
        assert_eq!(n.unwrap(), 1);
        assert_eq!(store.keys("").await.unwrap(), ["n"]);
    }
}
