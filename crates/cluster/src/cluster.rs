//! [`Cluster`]: this node's handle on the cluster state. Its operations are
//! split by concern over the crate's modules (networks, endpoints,
//! reservations, reclaim, nodes); every write is one compare-and-set
//! transaction, with every check done before it, so bad input and races
//! change nothing.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ipnet::Ipv4Net;
use socketplane_store::{Revision, Store};
use tokio::sync::{watch, Mutex};

use crate::convergence::ReconcilerHandle;
use crate::error::{Error, Result};
use crate::fence::LeaseClock;
use crate::view::ClusterView;

/// How often a transaction that lost a race is retried before giving up.
pub(crate) const CAS_ATTEMPTS: usize = 64;

pub struct Cluster {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) node_id: String,
    /// The cluster's name, for messages.
    name: String,
    /// Serialises this agent's allocations per network so concurrent local
    /// attaches do not race each other for the same candidate address; it
    /// guards the block this node last allocated from there (a hint).
    pub(crate) alloc_locks: Mutex<HashMap<String, Arc<Mutex<Option<Ipv4Net>>>>>,
    /// How long a node must have been dead before what it holds is
    /// reclaimed; `None`: only by `cluster remove`.
    pub(crate) reclaim_after: Option<Duration>,
    ready: watch::Sender<bool>,
    reconciler: OnceLock<ReconcilerHandle>,
    /// When this node's liveness lease was last renewed: the fencing clock.
    pub(crate) lease_clock: LeaseClock,
}

impl Cluster {
    pub fn new(store: Arc<dyn Store>, node_id: String, name: String) -> Self {
        Cluster {
            store,
            node_id,
            name,
            alloc_locks: Mutex::new(HashMap::new()),
            reclaim_after: Some(Duration::from_secs(
                socketplane_api::defaults::RECLAIM_AFTER_SECS,
            )),
            ready: watch::channel(false).0,
            reconciler: OnceLock::new(),
            lease_clock: LeaseClock::default(),
        }
    }

    /// Sets the reclaim grace (`--reclaim-after`); `None` or zero: a dead
    /// node's endpoints go only by `cluster remove`.
    pub fn with_reclaim_after(mut self, after: Option<Duration>) -> Self {
        self.reclaim_after = after.filter(|d| !d.is_zero());
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this node is a member with its services running.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub fn subscribe_ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// `Unavailable` until this node is a cluster member: front ends call
    /// it before serving a request.
    pub fn member(&self) -> Result<&Self> {
        if self.is_ready() {
            Ok(self)
        } else {
            Err(Error::Unavailable(format!(
                "this agent has not joined cluster {:?} yet (waiting for a peer over mDNS, --join, or `socketplane cluster join ADDR`)",
                self.name
            )))
        }
    }

    /// Records the running reconciler and marks this node ready.
    pub fn set_ready(&self, reconciler: ReconcilerHandle) {
        let _ = self.reconciler.set(reconciler);
        self.ready.send_replace(true);
    }

    /// The latest cluster view, once the reconciler runs.
    pub fn view(&self) -> Option<Arc<ClusterView>> {
        self.reconciler.get().map(|h| h.view.borrow().clone())
    }

    /// Every new cluster view as the reconciler publishes it (e.g. for the
    /// DNS front end), once the reconciler runs.
    pub fn watch_view(&self) -> Option<watch::Receiver<Arc<ClusterView>>> {
        self.reconciler.get().map(|h| h.view.clone())
    }

    /// Waits until this host's datapath reflects `revision` (e.g. an attach
    /// just written).
    pub async fn wait_applied(&self, revision: Revision, timeout: Duration) -> Result<()> {
        let handle = self
            .reconciler
            .get()
            .ok_or_else(|| Error::Unavailable("the reconciler is not running yet".into()))?;
        handle.wait_applied(revision, timeout).await
    }

    /// [`Cluster::wait_applied`], then until local endpoint `id` is plumbed:
    /// an error with the datapath's reason when it keeps failing.
    pub async fn wait_endpoint(
        &self,
        id: &str,
        revision: Revision,
        timeout: Duration,
    ) -> Result<()> {
        let handle = self
            .reconciler
            .get()
            .ok_or_else(|| Error::Unavailable("the reconciler is not running yet".into()))?;
        handle.wait_endpoint(id, revision, timeout).await
    }

    /// What the control loop publishes, once it runs.
    pub fn reconciler(&self) -> Option<&ReconcilerHandle> {
        self.reconciler.get()
    }
}
