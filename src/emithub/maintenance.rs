//! Keeping a single node's EmitHub in shape: retention purges, backups (on demand and
//! automatic, the newest kept) and the background tasks that run them.

use crate::cluster::redis::Control;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;

impl EmitHub {
    /// Removes messages older than the retention period; how many.
    pub async fn purge(&self) -> Result<usize, EmitHubError> {
        let days = self.config.load().message_retention_days;
        if days == 0 {
            return Ok(0);
        }
        let cutoff = Utc::now() - chrono::Duration::days(i64::from(days));
        let purged = self.store.purge_older_than(cutoff).await?;
        if purged > 0 {
            tracing::info!(purged, days, "purged messages past their retention");
        }
        Ok(purged)
    }

    /// Writes a backup now; returns its path. The newest backups are kept.
    pub async fn backup(&self) -> Result<PathBuf, EmitHubError> {
        let dir = self
            .backup_dir
            .clone()
            .ok_or_else(|| EmitHubError::Invalid("the database is in memory: there is nothing to back up".into()))?;
        let name = format!("emit_hub-{}.redb", Utc::now().format("%Y%m%dT%H%M%S%.3fZ"));
        let path = dir.join(name);
        self.store.backup(&path).await?;
        tracing::info!(path = %path.display(), "database backed up");
        prune_backups(&dir);
        Ok(path)
    }

    /// Starts the background work: retention purges, automatic backups and, in a
    /// cluster, following the other nodes' changes.
    pub fn start(self: &Arc<Self>, stop: CancellationToken, tasks: &TaskTracker) {
        let this = self.clone();
        let s = stop.clone();
        tasks.spawn(async move {
            loop {
                if let Err(e) = this.purge().await {
                    tracing::warn!(error = %e, "purging old messages failed");
                }
                tokio::select! {
                    _ = s.cancelled() => return,
                    _ = tokio::time::sleep(RETENTION_SWEEP) => {}
                }
            }
        });
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
