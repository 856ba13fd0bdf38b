//! The control loop: watch the store, keep a [`ClusterView`], and converge
//! this host's datapath to the view's desired state. A full sync at start
//! (so a restarted agent removes what went stale while it was down), then
//! incremental on every change, plus a periodic full refresh for
//! self-healing. Errors are retried with backoff and surface as health.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use socketplane_api::keys;
use socketplane_datapath::{Datapath, DatapathError};
use socketplane_store::{Revision, Store, StoreError};
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::convergence::ReconcilerHandle;
use crate::view::ClusterView;

/// How often the datapath is re-applied even without changes.
const RESYNC_EVERY: Duration = Duration::from_secs(30);
/// How often dead nodes are checked against the reclaim grace, so a node
/// is reclaimed soon after its grace ends even when nothing changes.
const RECLAIM_EVERY: Duration = Duration::from_secs(2);

pub struct Reconciler {
    store: Arc<dyn Store>,
    datapath: Arc<dyn Datapath>,
    cluster: Arc<Cluster>,
    node_id: String,
    view_tx: watch::Sender<Arc<ClusterView>>,
    applied_tx: watch::Sender<Revision>,
    error_tx: watch::Sender<Option<String>>,
    /// Set while a garbage collection pass runs, so bursts of events do not
    /// start several at once.
    collecting: Arc<AtomicBool>,
}

impl Reconciler {
    pub fn new(cluster: Arc<Cluster>, datapath: Arc<dyn Datapath>) -> (Self, ReconcilerHandle) {
        let store = cluster.store().clone();
        let node_id = cluster.node_id().to_string();
        let (view_tx, view) = watch::channel(Arc::new(ClusterView::default()));
        let (applied_tx, applied) = watch::channel(0);
        let (error_tx, last_error) = watch::channel(None);
        (
            Reconciler {
                store,
                datapath,
                cluster,
                node_id,
                view_tx,
                applied_tx,
                error_tx,
                collecting: Arc::new(AtomicBool::new(false)),
            },
            ReconcilerHandle {
                view,
                applied,
                last_error,
            },
        )
    }

    /// Runs until the task is dropped.
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.sync_and_follow().await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, "Lost the store watch; listing again.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One list + watch session; returns on a watch error.
    async fn sync_and_follow(&self) -> Result<(), StoreError> {
        let listing = self.store.list(keys::PREFIX).await?;
        let mut view = ClusterView::from_kvs(&listing.kvs, listing.revision);
        let mut stream = self.store.watch(keys::PREFIX, listing.revision + 1).await?;
        self.converge(&view).await;
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        resync.tick().await;
        let mut reclaim = tokio::time::interval(RECLAIM_EVERY);
        reclaim.tick().await;
        loop {
            tokio::select! {
                next = stream.next() => {
                    let Some(event) = next else {
                        return Err(StoreError::Unavailable("watch ended".into()));
                    };
                    view.apply(&event?);
                    // Take every event already queued before converging, so
                    // a burst of changes costs one datapath pass.
                    while let Some(Some(more)) = stream.next().now_or_never() {
                        view.apply(&more?);
                    }
                    self.converge(&view).await;
                }
                _ = resync.tick() => self.converge(&view).await,
                _ = reclaim.tick() => self.collect_garbage(&view),
            }
        }
    }

    async fn converge(&self, view: &ClusterView) {
        let shared = Arc::new(view.clone());
        self.view_tx.send_replace(shared.clone());
        let mut desired = view.desired_for(&self.node_id);
        // A workload whose namespace is gone has died without detaching:
        // plumbing it would fail on every pass and hold up everyone else.
        // It is left out here and detached by the garbage collection.
        desired
            .local
            .retain(|e| e.netns.as_ref().is_none_or(|p| p.exists()));
        let mut delay = Duration::from_millis(50);
        // Retry the same state a few times; a newer event interrupts by
        // simply arriving after we return.
        for attempt in 0..5 {
            match self.datapath.apply(&desired).await {
                Ok(report) => {
                    if report.changes > 0 {
                        tracing::debug!(
                            changes = report.changes,
                            revision = view.revision,
                            "Converged the datapath."
                        );
                    }
                    self.error_tx.send_replace(None);
                    self.applied_tx.send_replace(view.revision);
                    break;
                }
                Err(error) if only_rejections(&error) => {
                    // The datapath refused some records (forged or invalid)
                    // and converged everything else: retrying cannot help,
                    // and holding the applied revision back would stall
                    // every attach on this host.
                    tracing::warn!(%error, rejected = ?error.rejected_endpoints(),
                        revision = view.revision, "The datapath refused endpoint records; the rest converged.");
                    self.error_tx.send_replace(Some(error.to_string()));
                    self.applied_tx.send_replace(view.revision);
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, attempt, "Datapath apply failed; retrying.");
                    self.error_tx.send_replace(Some(error.to_string()));
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        self.collect_garbage(view);
    }

    /// Reclaims what dead nodes held and endpoints whose network is gone.
    /// Runs in the background: it writes to the store, and the resulting
    /// events come back through the watch.
    fn collect_garbage(&self, view: &ClusterView) {
        let dead = view.dead_nodes_with_endpoints();
        let orphans: Vec<String> = view
            .endpoints
            .values()
            .filter(|e| !view.networks.contains_key(&e.network))
            .map(|e| e.id.clone())
            .collect();
        let vanished: Vec<String> = view
            .endpoints
            .values()
            .filter(|e| e.node == self.node_id)
            .filter(|e| e.netns.as_ref().is_some_and(|p| !Path::new(p).exists()))
            .map(|e| e.id.clone())
            .collect();
        if (dead.is_empty() && orphans.is_empty() && vanished.is_empty())
            || self.collecting.swap(true, Ordering::SeqCst)
        {
            return;
        }
        let ops = self.cluster.clone();
        let collecting = self.collecting.clone();
        tokio::spawn(async move {
            for node in dead {
                if let Err(error) = ops.reclaim_if_due(&node).await {
                    tracing::warn!(%node, %error, "Could not reclaim a dead node's endpoints.");
                }
            }
            for id in orphans {
                if let Err(error) = ops.remove_orphan(&id).await {
                    tracing::warn!(endpoint = %id, %error, "Could not remove an endpoint without network.");
                }
            }
            for id in vanished {
                tracing::info!(endpoint = %id, "The workload's network namespace is gone; detaching it.");
                if let Err(error) = ops.detach(&id).await {
                    tracing::warn!(endpoint = %id, %error, "Could not detach an endpoint whose namespace is gone.");
                }
            }
            collecting.store(false, Ordering::SeqCst);
        });
    }
}

/// True when every failure of an apply is a refused endpoint record.
fn only_rejections(error: &DatapathError) -> bool {
    match error {
        DatapathError::EndpointRejected { .. } => true,
        DatapathError::Many(errors) => errors.iter().all(only_rejections),
        _ => false,
    }
}
