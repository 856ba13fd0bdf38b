//! `MemStore`: an in-memory [`Store`] with full etcd semantics.
//!
//! A thin async shell around the pure state machine [`KvState`]: one mutex,
//! a revision notifier for watchers and a timer task that expires leases.
//! Nothing is persisted; it is meant for tests, single-node development and
//! as the reference behaviour of the conformance suite.
//!
//! Lease expiry happens both lazily (every call first expires the leases
//! whose deadline passed) and from a background tokio task started with the
//! first lease, so keys vanish and delete events are emitted on time even
//! when nobody calls the store. The task ends when the last handle is
//! dropped.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::kv::{history_watch, KvState, DEFAULT_HISTORY};
use crate::{
    KeyValue, LeaseId, Listing, MemberRole, Result, Revision, Store, StoreError, StoreMember,
    StoreStatus, Txn, TxnResult, WatchStream,
};

/// An in-memory store. Cloning gives another handle to the same data.
#[derive(Clone)]
pub struct MemStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<KvState>,
    rev_tx: watch::Sender<Revision>,
    epoch: Instant,
    /// Wakes the expiry task when a lease with an earlier deadline appears.
    wake: Arc<Notify>,
    expiry_task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.expiry_task).take() {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave KvState half-updated (its
    // methods validate before mutating), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `f` on the state after expiring due leases, then notifies
    /// watchers if the revision moved.
    fn with_state<R>(&self, f: impl FnOnce(&mut KvState, u64) -> R) -> R {
        let now = self.now_ms();
        let mut st = lock(&self.state);
        let before = st.revision();
        st.expire_leases(now);
        let out = f(&mut st, now);
        let after = st.revision();
        drop(st);
        if after != before {
            self.rev_tx.send_replace(after);
        }
        out
    }
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// An empty store keeping [`DEFAULT_HISTORY`] revisions of watch history.
    pub fn new() -> Self {
        Self::with_history(DEFAULT_HISTORY)
    }

    /// An empty store keeping the events of the last `revisions` revisions;
    /// watches from older revisions fail with [`StoreError::Compacted`].
    pub fn with_history(revisions: usize) -> Self {
        Self::from_state(KvState::new(revisions))
    }

    /// A store starting from an existing state (e.g. a snapshot).
    pub fn from_state(state: KvState) -> Self {
        let (rev_tx, _) = watch::channel(state.revision());
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                rev_tx,
                epoch: Instant::now(),
                wake: Arc::new(Notify::new()),
                expiry_task: Mutex::new(None),
            }),
        }
    }

    /// The current revision.
    pub fn revision(&self) -> Revision {
        self.inner.with_state(|s, _| s.revision())
    }

    /// Drops watch history older than `revision` (etcd's compact).
    pub fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.with_state(|s, _| s.compact(revision))
    }

    /// A copy of the whole state (keys, leases, history).
    pub fn snapshot(&self) -> KvState {
        self.inner.with_state(|s, _| s.clone())
    }

    /// Starts the lease expiry task if it is not running (needs a tokio
    /// runtime; without one, expiry stays lazy).
    fn ensure_expiry_task(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut task = lock(&self.inner.expiry_task);
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let wake = self.inner.wake.clone();
        *task = Some(handle.spawn(async move {
            loop {
                let wait = {
                    let Some(inner) = weak.upgrade() else { return };
                    let deadline = inner.with_state(|s, _| s.next_lease_deadline());
                    let now = inner.now_ms();
                    match deadline {
                        Some(d) => Duration::from_millis(d.saturating_sub(now) + 1),
                        None => Duration::from_secs(3600),
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = wake.notified() => {}
                }
            }
        }));
    }
}

#[async_trait]
impl Store for MemStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.inner.with_state(|s, _| s.get(key)))
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        Ok(self.inner.with_state(|s, _| s.list(prefix)))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        self.inner.with_state(|s, _| s.txn(&txn))
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        if from < 0 {
            return Err(StoreError::InvalidArgument(format!(
                "negative watch revision {from}"
            )));
        }
        let (from, notify) = self.inner.with_state(|s, _| {
            let from = if from == 0 { s.revision() + 1 } else { from };
            // Subscribe under the lock so no bump between here and the first
            // fetch is missed.
            (from, self.inner.rev_tx.subscribe())
        });
        // Fail at once (not only in the stream) if `from` is compacted.
        self.inner
            .with_state(|s, _| s.events_since(prefix, from).map(|_| ()))?;
        let weak = Arc::downgrade(&self.inner);
        Ok(history_watch(
            prefix.to_string(),
            from,
            notify,
            move |p, next| {
                let inner = weak
                    .upgrade()
                    .ok_or_else(|| StoreError::Unavailable("store closed".into()))?;
                inner.with_state(|s, _| Ok((s.events_since(p, next)?, s.revision())))
            },
        ))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        let id = self
            .inner
            .with_state(|s, now| s.lease_grant(None, ttl, now))?;
        self.ensure_expiry_task();
        self.inner.wake.notify_one();
        Ok(id)
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.inner
            .with_state(|s, now| s.lease_keep_alive(lease, now))
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.inner.with_state(|s, _| s.lease_revoke(lease));
        Ok(())
    }

    async fn status(&self) -> Result<StoreStatus> {
        Ok(StoreStatus {
            backend: "memory".into(),
            healthy: true,
            leader: Some("memory".into()),
            members: vec![StoreMember {
                id: "memory".into(),
                addr: "local".into(),
                role: MemberRole::Leader,
            }],
            revision: self.revision(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventKind, Op};
    use futures::StreamExt;

    #[tokio::test]
    async fn lease_expiry_emits_deletes_without_calls() {
        let s = MemStore::new();
        let l = s.lease_grant(Duration::from_millis(100)).await.unwrap();
        s.txn(Txn::new().then(Op::put_with_lease("/a", "1", l)))
            .await
            .unwrap();
        let mut w = s.watch("/", 0).await.unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(2), w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(ev.kind, EventKind::Delete);
        assert_eq!(ev.kv.key, "/a");
        assert_eq!(ev.kv.mod_revision, 2);
    }

    #[tokio::test]
    async fn watch_from_compacted_revision_fails() {
        let s = MemStore::with_history(2);
        for i in 0..5 {
            s.put(&format!("/k{i}"), b"v".to_vec()).await.unwrap();
        }
        assert!(matches!(
            s.watch("/", 1).await,
            Err(StoreError::Compacted {
                requested: 1,
                compacted: 4
            })
        ));
        let mut w = s.watch("/", 4).await.unwrap();
        assert_eq!(w.next().await.unwrap().unwrap().kv.mod_revision, 4);
    }

    #[tokio::test]
    async fn slow_watcher_falls_behind_history() {
        let s = MemStore::with_history(4);
        let mut w = s.watch("/", 0).await.unwrap();
        for i in 0..10 {
            s.put(&format!("/k{i}"), b"v".to_vec()).await.unwrap();
        }
        assert!(matches!(
            w.next().await,
            Some(Err(StoreError::Compacted {
                requested: 1,
                compacted: 7
            }))
        ));
        assert!(w.next().await.is_none());
    }

    #[tokio::test]
    async fn dropping_store_ends_watch() {
        let s = MemStore::new();
        let mut w = s.watch("/", 0).await.unwrap();
        drop(s);
        let end = tokio::time::timeout(Duration::from_secs(1), w.next())
            .await
            .unwrap();
        assert!(matches!(end, Some(Err(StoreError::Unavailable(_)))));
    }
}
