//! The control loop: watch the store, keep a [`ClusterView`], and converge
//! this host's datapath to the view's desired state. A full sync at start
//! (so a restarted agent removes what went stale while it was down), then
//! incremental on every change, plus a periodic full refresh for
//! self-healing. Errors are retried with backoff and surface as health.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use socketplane_api::keys;
use socketplane_api::rest::EndpointProblem;
use socketplane_api::EndpointRecord;
use socketplane_datapath::{Datapath, LocalEndpoint};
use socketplane_store::{Revision, Store, StoreError};
use tokio::sync::{watch, Notify};

use crate::cluster::Cluster;
use crate::convergence::{EndpointFailures, ReconcilerHandle};
use crate::endpoints::workload_ns_gone;
use crate::fence::{fence_margin, FenceClock};
use crate::view::ClusterView;

/// How often the datapath is re-applied even without changes.
const RESYNC_EVERY: Duration = Duration::from_secs(30);
/// How often dead nodes are checked against the reclaim grace, so a node
/// is reclaimed soon after its grace ends even when nothing changes.
const RECLAIM_EVERY: Duration = Duration::from_secs(2);
/// First and longest wait before a failed apply is retried on its own.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// Shortest time between two datapath passes while events keep coming.
const CONVERGE_GAP: Duration = Duration::from_millis(50);
/// How often the fence watcher looks at the lease clock.
const FENCE_CHECK: Duration = Duration::from_millis(250);

pub struct Reconciler {
    store: Arc<dyn Store>,
    datapath: Arc<dyn Datapath>,
    cluster: Arc<Cluster>,
    node_id: String,
    view_tx: watch::Sender<Arc<ClusterView>>,
    applied_tx: watch::Sender<Revision>,
    error_tx: watch::Sender<Option<String>>,
    failures_tx: watch::Sender<Arc<EndpointFailures>>,
    fenced_tx: Arc<watch::Sender<bool>>,
    /// Signalled by the fence watcher once a fenced node is in touch again.
    unfence: Arc<Notify>,
    /// Set by the fence watcher after its own apply: the next pass is a
    /// full one, since the datapath no longer holds the last pass's state.
    full_next: Arc<AtomicBool>,
    /// Set while a garbage collection pass runs, so bursts of events do not
    /// start several at once.
    collecting: Arc<AtomicBool>,
    /// What the last garbage scan of the whole view found (see
    /// [`GcScan`]).
    gc_scan: Mutex<Option<GcScan>>,
    /// [`RESYNC_EVERY`] (shorter in tests).
    resync_every: Duration,
}

/// How a list + watch session ended.
enum SessionEnd {
    /// The store watch failed: list again after a backoff.
    Lost(StoreError),
    /// A fenced node is in touch again: list afresh at once, so nothing
    /// goes back on the wire from a view older than the reconnection.
    Unfence,
}

impl From<StoreError> for SessionEnd {
    fn from(e: StoreError) -> Self {
        SessionEnd::Lost(e)
    }
}

impl Reconciler {
    pub fn new(cluster: Arc<Cluster>, datapath: Arc<dyn Datapath>) -> (Self, ReconcilerHandle) {
        let store = cluster.store().clone();
        let node_id = cluster.node_id().to_string();
        let (view_tx, view) = watch::channel(Arc::new(ClusterView::default()));
        let (applied_tx, applied) = watch::channel(0);
        let (error_tx, last_error) = watch::channel(None);
        let (failures_tx, failures) = watch::channel(Arc::new(EndpointFailures::new()));
        let (fenced_tx, fenced) = watch::channel(false);
        (
            Reconciler {
                store,
                datapath,
                cluster,
                node_id,
                view_tx,
                applied_tx,
                error_tx,
                failures_tx,
                fenced_tx: Arc::new(fenced_tx),
                unfence: Arc::new(Notify::new()),
                full_next: Arc::new(AtomicBool::new(false)),
                collecting: Arc::new(AtomicBool::new(false)),
                gc_scan: Mutex::new(None),
                resync_every: RESYNC_EVERY,
            },
            ReconcilerHandle {
                view,
                applied,
                last_error,
                failures,
                fenced,
            },
        )
    }

    /// Runs until the task is dropped.
    pub async fn run(self) {
        let watcher = tokio::spawn(self.watch_fence());
        let _stop_watcher = AbortOnDrop(watcher);
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.sync_and_follow().await {
                SessionEnd::Unfence => {
                    tracing::info!(
                        "In touch with the cluster again; listing afresh before unfencing."
                    );
                    backoff = Duration::from_millis(100);
                }
                SessionEnd::Lost(error) => {
                    tracing::warn!(%error, "Lost the store watch; listing again.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One list + watch session.
    async fn sync_and_follow(&self) -> SessionEnd {
        let listing = match self.store.list(keys::PREFIX).await {
            Ok(l) => l,
            Err(e) => return e.into(),
        };
        // A fresh listing: what a fenced node still owns may go back on the
        // wire once it is in touch again.
        if *self.fenced_tx.borrow() && self.renewed_recently() {
            tracing::info!("Unfencing: this node's workloads are back on the wire.");
            self.datapath.set_fenced(false);
            self.fenced_tx.send_replace(false);
        }
        let mut view = ClusterView::from_kvs(&listing.kvs, listing.revision);
        // The view holds what the session needs: the listing (a copy of
        // every key, about 5 MB at 10,000 endpoints) would otherwise live
        // as long as the session does.
        let revision = listing.revision;
        drop(listing);
        let mut stream = match self.store.watch(keys::PREFIX, revision + 1).await {
            Ok(s) => s,
            Err(e) => return e.into(),
        };
        // The view the datapath converged to without an error, if any: a
        // pass then applies only the endpoints changed since (see
        // `converge`).
        let mut base: Option<Arc<ClusterView>> = None;
        let mut pending = self.converge(&view, &mut base).await;
        let mut resync = tokio::time::interval(self.resync_every);
        resync.tick().await;
        let mut reclaim = tokio::time::interval(RECLAIM_EVERY);
        reclaim.tick().await;
        let mut retry_backoff = RETRY_FIRST;
        let mut last_pass = Instant::now();
        // Whether events arrived during the last pass (see below).
        let mut burst = false;
        let retry = tokio::time::sleep(retry_backoff);
        tokio::pin!(retry);
        loop {
            tokio::select! {
                next = stream.next() => {
                    let Some(event) = next else {
                        return StoreError::Unavailable("watch ended".into()).into();
                    };
                    let mut shapes = match event {
                        Ok(e) => apply_event(&mut view, &e),
                        Err(e) => return e.into(),
                    };
                    // Take every event already queued before converging, so
                    // a burst of changes costs one datapath pass.
                    while let Some(Some(more)) = stream.next().now_or_never() {
                        match more {
                            Ok(e) => shapes |= apply_event(&mut view, &e),
                            Err(e) => return e.into(),
                        }
                    }
                    // A lone event goes through at once. Events that
                    // arrived while the last pass ran mean a burst is on:
                    // then at most one pass per CONVERGE_GAP, so that
                    // passes per second stay bounded whatever the event
                    // rate. (An event after the pass, such as the next
                    // request of a client that waited for the last one, is
                    // lone again.)
                    loop {
                        if burst {
                            let gap = tokio::time::sleep_until((last_pass + CONVERGE_GAP).into());
                            tokio::pin!(gap);
                            while !gap.is_elapsed() {
                                tokio::select! {
                                    biased;
                                    _ = &mut gap => break,
                                    more = stream.next() => match more {
                                        Some(Ok(e)) => shapes |= apply_event(&mut view, &e),
                                        Some(Err(e)) => return e.into(),
                                        None => return StoreError::Unavailable("watch ended".into()).into(),
                                    },
                                }
                            }
                        }
                        last_pass = Instant::now();
                        if shapes || pending {
                            pending = self.converge(&view, &mut base).await;
                        } else {
                            // Nothing a datapath sees changed: the last pass
                            // stands for this revision too.
                            self.view_tx.send_replace(Arc::new(view.clone()));
                            self.applied_tx.send_replace(view.revision);
                        }
                        (shapes, burst) = (false, false);
                        while let Some(Some(more)) = stream.next().now_or_never() {
                            match more {
                                Ok(e) => shapes |= apply_event(&mut view, &e),
                                Err(e) => return e.into(),
                            }
                            burst = true;
                        }
                        if !burst {
                            break;
                        }
                    }
                }
                // The periodic resync reads the host back in full, so
                // drift (an entry deleted behind our back) is repaired.
                _ = resync.tick() => {
                    self.datapath.resync();
                    base = None;
                    pending = self.converge(&view, &mut base).await;
                }
                _ = reclaim.tick() => self.collect_garbage(&view),
                // Endpoints (or the whole host) that failed are retried
                // with backoff even when nothing changes.
                _ = &mut retry, if pending => {
                    retry_backoff = (retry_backoff * 2).min(RETRY_MAX);
                    pending = self.converge(&view, &mut base).await;
                }
                _ = self.unfence.notified() => return SessionEnd::Unfence,
            }
            if !pending {
                retry_backoff = RETRY_FIRST;
            }
            if pending {
                retry
                    .as_mut()
                    .reset(tokio::time::Instant::now() + retry_backoff);
            }
        }
    }

    /// Converges the datapath to `view`; true when something failed and
    /// should be retried. With a `base` (the last view converged without
    /// an error) only the endpoints changed since are applied, when only
    /// endpoints changed and the datapath can: a pass then costs the
    /// change, not the cluster, which is what keeps 100 hosts with 10,000
    /// endpoints from spending their CPU recomputing what they have.
    /// Otherwise the whole desired state is applied. `base` is what the
    /// datapath holds afterwards (`None` after an error).
    async fn converge(&self, view: &ClusterView, base: &mut Option<Arc<ClusterView>>) -> bool {
        let shared = Arc::new(view.clone());
        self.view_tx.send_replace(shared.clone());
        let last = base
            .take()
            .filter(|_| !self.full_next.swap(false, Ordering::SeqCst));
        if let Some(last) = last {
            match self.apply_changes(&last, view).await {
                Ok(true) => {
                    self.applied_tx.send_replace(view.revision);
                    *base = Some(shared);
                    return false;
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, revision = view.revision,
                        "Applying the changed endpoints failed; applying the whole state.");
                }
            }
        }
        let mut desired = view.desired_for(&self.node_id);
        // A workload whose namespace is gone has died without detaching:
        // plumbing it would fail on every pass and hold up everyone else.
        // So has one whose path now names another namespace (a reused
        // PID). Both are left out here and detached by the garbage
        // collection.
        desired.local.retain(|e| !local_gone(e));
        let mut delay = Duration::from_millis(50);
        let mut pending = true;
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
                    self.record_failures(&[]);
                    self.applied_tx.send_replace(view.revision);
                    *base = Some(shared.clone());
                    pending = false;
                    break;
                }
                Err(error) if error.only_endpoint_failures() => {
                    // Some endpoints were refused (forged or invalid records)
                    // or could not be plumbed (a foreign interface in the
                    // workload's namespace, say), and everything else
                    // converged: holding the applied revision back would
                    // stall every attach on this host. They are retried
                    // with backoff and shown with their reason.
                    let failures = error.endpoint_failures();
                    tracing::warn!(%error, revision = view.revision,
                        "Some endpoints did not converge; the rest did.");
                    self.error_tx.send_replace(Some(error.to_string()));
                    self.record_failures(&failures);
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
        pending
    }

    /// Applies what changed for this host from `last` to `view`: true when
    /// done, false when a full pass is needed instead (more than endpoints
    /// changed, or the datapath declined).
    async fn apply_changes(
        &self,
        last: &ClusterView,
        view: &ClusterView,
    ) -> socketplane_datapath::Result<bool> {
        let Some(mut changes) = view.changes_since(last, &self.node_id) else {
            return Ok(false);
        };
        // As in a full pass: a workload whose namespace is gone is not
        // plumbed (and the garbage collection detaches it).
        let (gone, kept): (Vec<_>, Vec<_>) = changes.local.into_iter().partition(local_gone);
        changes.local = kept;
        changes.removed.extend(gone.into_iter().map(|e| e.id));
        if changes.is_empty() {
            return Ok(true);
        }
        let Some(report) = self.datapath.apply_changes(&changes).await? else {
            return Ok(false);
        };
        if report.changes > 0 {
            tracing::debug!(
                changes = report.changes,
                endpoints = changes.len(),
                revision = view.revision,
                "Applied the changed endpoints."
            );
        }
        Ok(true)
    }

    /// Publishes this apply's endpoint failures, counting failures in a row.
    fn record_failures(&self, now: &[(&str, String)]) {
        let before = self.failures_tx.borrow().clone();
        if now.is_empty() && before.is_empty() {
            return;
        }
        let mut next = EndpointFailures::new();
        for (id, reason) in now {
            let attempts = before.get(*id).map_or(0, |p| p.attempts) + 1;
            next.insert(
                id.to_string(),
                EndpointProblem {
                    id: id.to_string(),
                    reason: reason.clone(),
                    attempts,
                },
            );
        }
        for id in before.keys().filter(|id| !next.contains_key(*id)) {
            tracing::info!(endpoint = %id, "Endpoint converged after failing.");
        }
        self.failures_tx.send_replace(Arc::new(next));
    }

    /// Whether this node's lease was renewed within its TTL.
    fn renewed_recently(&self) -> bool {
        self.cluster
            .lease_clock
            .get()
            .is_some_and(|(sent, ttl)| sent.elapsed() < ttl)
    }

    /// Watches the lease clock: fences this host when it is cut off from
    /// the majority for a lease TTL, and has the main loop list afresh and
    /// unfence once a renewal succeeds again.
    fn watch_fence(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let cluster = self.cluster.clone();
        let datapath = self.datapath.clone();
        let fenced_tx = self.fenced_tx.clone();
        let unfence = self.unfence.clone();
        let full_next = self.full_next.clone();
        let view = self.view_tx.subscribe();
        let node_id = self.node_id.clone();
        async move {
            let mut clock = FenceClock::new(Instant::now());
            let margin = fence_margin(cluster.reclaim_after);
            let mut tick = tokio::time::interval(FENCE_CHECK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let cut = clock.cut_off(Instant::now(), cluster.lease_clock.get(), margin);
                let fenced = *fenced_tx.borrow();
                if cut && !fenced {
                    tracing::warn!("Cut off from the cluster's majority past the lease TTL: fencing this host's workloads (taking their addresses off the wire) before anyone may reclaim them.");
                    datapath.set_fenced(true);
                    fenced_tx.send_replace(true);
                    // Applied at once, also while the main loop cannot list.
                    let current = view.borrow().clone();
                    let mut desired = current.desired_for(&node_id);
                    desired.local.retain(|e| !local_gone(e));
                    let started = Instant::now();
                    let applied = datapath.apply(&desired).await;
                    full_next.store(true, Ordering::SeqCst);
                    match applied {
                        Ok(_) => tracing::info!(
                            took_ms = started.elapsed().as_millis() as u64,
                            "Fenced: this host's workloads are off the wire."
                        ),
                        Err(error) => {
                            tracing::warn!(%error, "Fencing: the datapath apply reported errors.")
                        }
                    }
                } else if !cut && fenced {
                    unfence.notify_one();
                }
            }
        }
    }
    /// Reclaims what dead nodes held and endpoints whose network is gone.
    /// Runs in the background: it writes to the store, and the resulting
    /// events come back through the watch.
    fn collect_garbage(&self, view: &ClusterView) {
        let mut scan = self.gc_scan.lock().unwrap_or_else(|e| e.into_inner());
        // Dead nodes and orphans change only with the view; a view that
        // had none at this revision still has none. Only the namespaces
        // of this host's endpoints can go without the view changing.
        let (dead, orphans) = match &*scan {
            Some(last) if last.revision == view.revision && last.quiet => {
                (Default::default(), Vec::new())
            }
            _ => {
                let dead = view.dead_nodes_with_endpoints();
                let orphans: Vec<String> = view
                    .endpoints
                    .values()
                    .filter(|e| !view.networks.contains_key(&e.network))
                    .map(|e| e.id.clone())
                    .collect();
                let local = view
                    .endpoints
                    .values()
                    .filter(|e| e.node == self.node_id && e.netns.is_some())
                    .cloned()
                    .collect();
                *scan = Some(GcScan {
                    revision: view.revision,
                    quiet: dead.is_empty() && orphans.is_empty(),
                    local,
                });
                (dead, orphans)
            }
        };
        let vanished: Vec<String> = scan
            .iter()
            .flat_map(|s| &s.local)
            .filter(|e| {
                e.netns
                    .as_ref()
                    .is_some_and(|p| workload_ns_gone(Path::new(p), e.netns_id))
            })
            .map(|e| e.id.clone())
            .collect();
        drop(scan);
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

/// What a garbage scan of the whole view found at one revision. Scanning
/// 10,000 endpoints every [`RECLAIM_EVERY`] was most of an idle agent's
/// CPU; a view that has not changed is not scanned again.
struct GcScan {
    revision: Revision,
    /// No dead node held anything and no endpoint lacked its network.
    quiet: bool,
    /// This host's endpoints with a workload namespace.
    local: Vec<Arc<EndpointRecord>>,
}

/// Whether a local endpoint's workload has died without detaching (its
/// namespace is gone, or its path names another one now).
fn local_gone(e: &LocalEndpoint) -> bool {
    e.netns
        .as_ref()
        .is_some_and(|p| workload_ns_gone(p, e.netns_id))
}

/// Applies a watch event to the view; whether it can change a datapath.
fn apply_event(view: &mut ClusterView, event: &socketplane_store::Event) -> bool {
    view.apply(event);
    ClusterView::shapes_datapath(event)
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use socketplane_api::rest::AttachEndpoint;
    use socketplane_api::NodeRecord;
    use socketplane_datapath::{
        ApplyReport, DatapathError, DesiredState, EndpointIfnames, Underlay,
    };
    use socketplane_store::mem::MemStore;

    use super::*;
    use crate::testing::{node_record, web};

    /// A datapath that cannot plumb the endpoints in `broken`.
    #[derive(Default)]
    struct Picky {
        broken: Mutex<HashSet<String>>,
        fenced: AtomicBool,
        /// "resync" and "apply", in the order they came.
        calls: Mutex<Vec<&'static str>>,
    }

    #[async_trait]
    impl Datapath for Picky {
        async fn apply(&self, desired: &DesiredState) -> socketplane_datapath::Result<ApplyReport> {
            self.calls.lock().unwrap().push("apply");
            let broken = self.broken.lock().unwrap().clone();
            let errors: Vec<DatapathError> = desired
                .local
                .iter()
                .filter(|e| broken.contains(&e.id))
                .map(|e| DatapathError::EndpointFailed {
                    id: e.id.clone(),
                    source: Box::new(DatapathError::Invalid("eth0 is not ours".into())),
                })
                .collect();
            match errors.len() {
                0 => Ok(ApplyReport::default()),
                _ => Err(DatapathError::Many(errors)),
            }
        }
        fn set_fenced(&self, fenced: bool) {
            self.fenced.store(fenced, Ordering::SeqCst);
        }
        fn resync(&self) {
            self.calls.lock().unwrap().push("resync");
        }
        fn endpoint_ifnames(&self, id: &str) -> EndpointIfnames {
            EndpointIfnames {
                host: format!("h{id}"),
                peer: format!("p{id}"),
            }
        }
        async fn teardown(&self) -> socketplane_datapath::Result<()> {
            Ok(())
        }
        fn underlay(&self) -> Underlay {
            Underlay {
                ip: "198.18.0.9".parse().unwrap(),
                default_mtu: 1450,
            }
        }
        fn name(&self) -> &'static str {
            "picky"
        }
    }

    fn attach_req() -> AttachEndpoint {
        AttachEndpoint {
            network: "web".into(),
            netns: None,
            name: None,
            ifname: None,
            ip: None,
            container_id: None,
            ..Default::default()
        }
    }

    /// A cluster on a memory store with node "a" registered, its datapath
    /// the test's `Picky`.
    async fn picky_node() -> Arc<Cluster> {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let cluster = Arc::new(Cluster::new(store, "a".into(), "c".into()));
        let record = NodeRecord {
            datapath: "picky".into(),
            ..node_record("a")
        };
        cluster
            .register(&record, Duration::from_secs(60))
            .await
            .unwrap();
        cluster
    }

    #[tokio::test]
    async fn one_failing_endpoint_holds_nobody_back_and_is_shown() {
        let cluster = picky_node().await;
        cluster.create_network(&web()).await.unwrap();
        let datapath = Arc::new(Picky::default());
        let (reconciler, handle) = Reconciler::new(cluster.clone(), datapath.clone());
        cluster.set_ready(handle.clone());
        let task = tokio::spawn(reconciler.run());

        let (bad, rev) = cluster.attach(&attach_req(), None).await.unwrap();
        datapath.broken.lock().unwrap().insert(bad.id.clone());
        let err = cluster
            .wait_endpoint(&bad.id, rev, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("eth0 is not ours"), "{err}");

        // The next attach on this host goes through at once.
        let started = std::time::Instant::now();
        let (good, rev) = cluster.attach(&attach_req(), None).await.unwrap();
        cluster
            .wait_endpoint(&good.id, rev, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(*handle.applied.borrow() >= rev);

        let info = cluster.endpoint_info(bad.clone()).await.unwrap();
        assert_eq!(info.status.as_deref(), Some("failed"));
        assert!(info.reason.unwrap().contains("eth0 is not ours"));
        let info = cluster.endpoint_info(good).await.unwrap();
        assert_eq!(info.status.as_deref(), Some("ok"));

        // Retried with backoff while nothing changes; fixed, it clears.
        let attempts = handle.failures.borrow().get(&bad.id).unwrap().attempts;
        datapath.broken.lock().unwrap().clear();
        let mut failures = handle.failures.clone();
        tokio::time::timeout(Duration::from_secs(5), failures.wait_for(|f| f.is_empty()))
            .await
            .expect("the fixed endpoint was retried")
            .unwrap();
        assert!(attempts >= 1);
        task.abort();
    }

    /// A datapath may apply changes incrementally, trusting what it wrote;
    /// the periodic resync has it read the host back in full first.
    #[tokio::test]
    async fn the_periodic_resync_asks_for_a_full_check() {
        let cluster = picky_node().await;
        let datapath = Arc::new(Picky::default());
        let (mut reconciler, handle) = Reconciler::new(cluster.clone(), datapath.clone());
        reconciler.resync_every = Duration::from_millis(300);
        let task = tokio::spawn(reconciler.run());
        let mut applied = handle.applied.clone();
        applied.wait_for(|r| *r > 0).await.unwrap();
        let calls = || datapath.calls.lock().unwrap().clone();
        assert_eq!(calls()[0], "apply", "the first sync is full anyway");

        tokio::time::sleep(Duration::from_secs(1)).await;
        let log = calls();
        let at = log.iter().position(|c| *c == "resync");
        assert!(
            at.is_some_and(|i| log[i + 1..].contains(&"apply")),
            "a resync, then an apply: {log:?}"
        );
        task.abort();
    }

    /// The recording datapath, counting full applies and change applies;
    /// it declines changes while `decline` is set.
    struct Counting {
        inner: socketplane_datapath::record::RecordDatapath,
        full: std::sync::atomic::AtomicUsize,
        changes: std::sync::atomic::AtomicUsize,
        decline: AtomicBool,
    }

    #[async_trait]
    impl Datapath for Counting {
        async fn apply(&self, desired: &DesiredState) -> socketplane_datapath::Result<ApplyReport> {
            self.full.fetch_add(1, Ordering::SeqCst);
            self.inner.apply(desired).await
        }
        async fn apply_changes(
            &self,
            changes: &socketplane_datapath::EndpointChanges,
        ) -> socketplane_datapath::Result<Option<ApplyReport>> {
            if self.decline.load(Ordering::SeqCst) {
                return Ok(None);
            }
            self.changes.fetch_add(1, Ordering::SeqCst);
            self.inner.apply_changes(changes).await
        }
        fn endpoint_ifnames(&self, id: &str) -> EndpointIfnames {
            self.inner.endpoint_ifnames(id)
        }
        async fn teardown(&self) -> socketplane_datapath::Result<()> {
            self.inner.teardown().await
        }
        fn underlay(&self) -> Underlay {
            self.inner.underlay()
        }
        fn name(&self) -> &'static str {
            "record"
        }
    }

    /// After the first full pass, endpoint changes (local and remote) are
    /// applied as changes, not by handing over the whole state; anything
    /// else, or a datapath that declines, gets a full pass, and either way
    /// the datapath ends where the view says.
    #[tokio::test]
    async fn endpoint_changes_are_applied_alone_and_the_rest_in_full() {
        let cluster = picky_node().await;
        cluster.create_network(&web()).await.unwrap();
        let other = Arc::new(Cluster::new(
            cluster.store().clone(),
            "b".into(),
            "c".into(),
        ));
        crate::testing::register(&other, "b").await;
        let ip = "198.18.0.9".parse().unwrap();
        let datapath = Arc::new(Counting {
            inner: socketplane_datapath::record::RecordDatapath::new(ip, None).unwrap(),
            full: Default::default(),
            changes: Default::default(),
            decline: AtomicBool::new(false),
        });
        let (reconciler, handle) = Reconciler::new(cluster.clone(), datapath.clone());
        cluster.set_ready(handle.clone());
        let task = tokio::spawn(reconciler.run());
        let applied = handle.applied.clone();
        let reach = |rev: Revision| {
            let mut applied = applied.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(5), applied.wait_for(|r| *r >= rev))
                    .await
                    .expect("applied in time")
                    .unwrap();
            }
        };
        reach(1).await;
        let full = || datapath.full.load(Ordering::SeqCst);
        let changes = || datapath.changes.load(Ordering::SeqCst);
        assert_eq!(full(), 1, "the first pass is a full one");

        let mut ids = Vec::new();
        for on in [&cluster, &other, &cluster, &other, &other] {
            let (ep, rev) = on.attach(&attach_req(), None).await.unwrap();
            reach(rev).await;
            ids.push(ep.id);
        }
        let rev = other.detach(&ids[1]).await.unwrap();
        reach(rev).await;
        assert_eq!(full(), 1, "endpoint changes need no full pass");
        assert!(changes() >= 1);
        assert_eq!(datapath.inner.applied_endpoints(), 4);

        // A node is more than an endpoint: a full pass.
        let third = Cluster::new(cluster.store().clone(), "d".into(), "c".into());
        crate::testing::register(&third, "d").await;
        let (_, rev) = other.attach(&attach_req(), None).await.unwrap();
        reach(rev).await;
        assert_eq!(full(), 2, "a new node: one full pass");

        // A datapath that declines gets the whole state.
        datapath.decline.store(true, Ordering::SeqCst);
        let (_, rev) = other.attach(&attach_req(), None).await.unwrap();
        reach(rev).await;
        assert_eq!(full(), 3);
        assert_eq!(datapath.inner.applied_endpoints(), 6);
        task.abort();
    }
}
