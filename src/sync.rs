//! Lock helpers shared by the core.
//!
//! Locks here guard maps that are consistent after every statement (no lock is held
//! across `.await`), so a panic in another thread never leaves them half-updated;
//! recovering the guard from a poisoned lock keeps serving everyone else.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn lock<T>(l: &Mutex<T>) -> MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits until `ready()` holds, looking again each time `changes` moves, for at most
/// `limit`; whether it holds. (Subscribe `changes` before the first look, so a change
/// between the look and the wait is not missed.)
#[cfg(feature = "redis")]
pub(crate) async fn wait_until<T>(
    mut changes: tokio::sync::watch::Receiver<T>,
    limit: std::time::Duration,
    ready: impl Fn() -> bool,
) -> bool {
    let waited = tokio::time::timeout(limit, async {
        while !ready() {
            if changes.changed().await.is_err() {
                return false;
            }
        }
        true
    })
    .await;
    matches!(waited, Ok(true))
}
