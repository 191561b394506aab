//! Keeping a node's EmitHub in shape: backups (on demand and automatic, the newest kept),
//! following the other nodes' changes, writing channels back to a store that lost them,
//! and the background tasks that run them. (Retention purges are the history's sweeps.)

use crate::cluster::redis::Control;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;

impl EmitHub {
    /// Writes a backup now; returns its path. The newest backups are kept.
    pub async fn backup(&self) -> Result<PathBuf, EmitHubError> {
        let dir = self
            .backup_dir
            .clone()
            .ok_or_else(|| EmitHubError::Invalid("the database is in memory: there is nothing to back up".into()))?;
        let name = format!("emit_hub-{}.redb", Utc::now().format("%Y%m%dT%H%M%S%.3fZ"));
        let path = dir.join(name);
        self.store.backup(&path).await?;
        #[cfg(feature = "redb")]
        if self.redb.is_none() {
            self.export_history(&path).await?;
        }
        tracing::info!(path = %path.display(), "database backed up");
        prune_backups(&dir);
        Ok(path)
    }

    /// Adds the channels' persisted messages to a backup file the store wrote (a cluster's
    /// store exports only the channels; a single node's file copy holds both).
    #[cfg(feature = "redb")]
    async fn export_history(&self, path: &std::path::Path) -> Result<(), EmitHubError> {
        use crate::history::{Imported, RedbTables};
        let Some(history) = self.fanout.history() else {
            return Ok(());
        };
        let db = RedbStore::open(path)?.database()?;
        for managed in self.list() {
            let Ok(channel) = history::hub_channel(managed.id) else {
                continue;
            };
            let mut all: Vec<Message> = Vec::new();
            let mut before = None;
            loop {
                let (page, next) = history
                    .page_back(&channel, before, 500)
                    .await
                    .map_err(history::history_error)?;
                all.splice(0..0, page);
                match next {
                    Some(n) if before.is_none_or(|b| n < b) => before = Some(n),
                    _ => break,
                }
            }
            if all.is_empty() {
                continue;
            }
            let name = channel.name().to_string();
            let db = db.clone();
            tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
                let imported: Vec<Imported<'_>> = all
                    .iter()
                    .filter_map(|m| {
                        let offset = m.position.as_ref()?.offset;
                        let ms = chrono::DateTime::parse_from_rfc3339(&m.timestamp)
                            .map_or(0, |t| u64::try_from(t.timestamp_millis()).unwrap_or(0));
                        Some(Imported {
                            offset,
                            event: &m.event,
                            data: &m.data,
                            timestamp: &m.timestamp,
                            ms,
                        })
                    })
                    .collect();
                let tx = db.begin_write().map_err(StoreError::of)?;
                crate::history::import(&tx, RedbTables::MANAGED, &name, 0, &imported)
                    .map_err(|e| StoreError::caused("exporting the persisted messages", e))?;
                tx.commit().map_err(StoreError::of)
            })
            .await
            .map_err(|e| StoreError::caused("database task failed", e))??;
        }
        Ok(())
    }

    /// Starts the background work: automatic backups and, in a cluster, following the
    /// other nodes' changes.
    pub fn start(self: &Arc<Self>, stop: CancellationToken, tasks: &TaskTracker) {
        let config = self.config();
        if config.auto_backup && self.backup_dir.is_some() {
            let this = self.clone();
            let s = stop.clone();
            let every = Duration::from_secs_f64(config.backup_interval_hours * 3600.0);
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = s.cancelled() => return,
                        _ = tokio::time::sleep(every) => {}
                    }
                    if let Err(e) = this.backup().await {
                        tracing::error!(error = %e, "automatic backup failed");
                    }
                }
            });
        }
        if let Some(broker) = self.cluster.clone() {
            let this = self.clone();
            tasks.spawn(async move {
                let mut notices = broker.control_events();
                let mut resyncs = broker.resync_requests();
                let mut backoff = Duration::from_millis(100);
                // Load everything first (and again after every resubscription: notices
                // sent while this node was away were missed).
                let mut reload = true;
                // The persisted messages of an earlier release's layout, moved once.
                let mut migrated = false;
                loop {
                    if reload {
                        let loaded = match this.write_back_if_lost().await {
                            Ok(()) => this.reload_all().await,
                            Err(e) => Err(e),
                        };
                        match loaded {
                            Ok(()) => {
                                reload = false;
                                backoff = Duration::from_millis(100);
                                if !migrated {
                                    match this.migrate_redis_streams().await {
                                        Ok(_) => migrated = true,
                                        Err(e) => {
                                            tracing::warn!(error = %e, "moving old persisted messages into the history failed; retrying at the next reload");
                                        }
                                    }
                                }
                            }
                            Err(e) => {
                                // The first failure is a warning; retries while the store
                                // stays away are not (its outage is logged where it is).
                                if backoff <= Duration::from_millis(100) {
                                    tracing::warn!(error = %e, "loading managed channels failed; retrying");
                                } else {
                                    tracing::debug!(error = %e, "loading managed channels failed; retrying");
                                }
                                tokio::select! {
                                    _ = stop.cancelled() => return,
                                    _ = tokio::time::sleep(backoff) => {}
                                }
                                backoff = (backoff * 2).min(Duration::from_secs(2));
                                continue;
                            }
                        }
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        changed = resyncs.changed() => match changed {
                            Ok(()) => reload = true,
                            Err(_) => return,
                        },
                        notice = notices.recv() => match notice {
                            Ok(Control::ManagedChannelChanged { payload }) => {
                                if this.reload(payload.id).await.is_err() {
                                    reload = true;
                                }
                            }
                            Ok(_) => {}
                            // Missed notices: reload everything.
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => reload = true,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        },
                    }
                }
            });
        }
    }
}

impl EmitHub {
    /// Before loading from a shared store: when its generation changed since this node
    /// last loaded (Redis came back empty, or a failover lost writes), writes back every
    /// channel this node holds (definition, state, settings) that the store no longer
    /// has, as presence writes its members back. A channel another node deleted while
    /// this one was away stays deleted: the generation is the same then.
    async fn write_back_if_lost(&self) -> Result<(), StoreError> {
        let fresh = Uuid::new_v4().to_string();
        let Some(now) = self.store.generation(&fresh).await? else {
            return Ok(());
        };
        let before = self.generation.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if before.as_ref().is_none_or(|b| *b == now) {
            *self.generation.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
            return Ok(());
        }
        let held: Vec<ManagedChannel> = read(&self.channels).values().cloned().collect();
        let mut restored = 0usize;
        for channel in &held {
            if self.store.restore(channel).await? {
                restored += 1;
            }
        }
        tracing::warn!(
            channels = held.len(),
            written_back = restored,
            "the EmitHub store lost its data (Redis restarted empty, or a failover lost writes): \
             wrote back the channels this node holds; their kept messages are gone unless Redis persists them"
        );
        *self.generation.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        Ok(())
    }
}

fn prune_backups(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut backups: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("emit_hub-") && n.ends_with(".redb"))
        })
        .collect();
    backups.sort();
    while backups.len() > BACKUPS_KEPT {
        let oldest = backups.remove(0);
        if let Err(e) = std::fs::remove_file(&oldest) {
            tracing::warn!(path = %oldest.display(), error = %e, "removing an old backup failed");
        }
    }
}
