//! What the control loop publishes: the latest view, the store revision
//! this host's datapath has converged to, and the last datapath error.

use std::sync::Arc;
use std::time::Duration;

use socketplane_store::Revision;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::view::ClusterView;

/// Published state of the control loop.
#[derive(Clone)]
pub struct ReconcilerHandle {
    /// The latest view of the cluster.
    pub view: watch::Receiver<Arc<ClusterView>>,
    /// The store revision the datapath has been converged to.
    pub applied: watch::Receiver<Revision>,
    /// The last datapath error, if the last apply failed.
    pub last_error: watch::Receiver<Option<String>>,
}

impl ReconcilerHandle {
    /// Waits until the datapath reflects `revision` (e.g. an attach just
    /// written), or the timeout passes.
    pub async fn wait_applied(&self, revision: Revision, timeout: Duration) -> Result<()> {
        let mut applied = self.applied.clone();
        let wait = async move { applied.wait_for(|r| *r >= revision).await.is_ok() };
        match tokio::time::timeout(timeout, wait).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Unavailable("the agent is shutting down".into())),
            Err(_) => Err(Error::Internal(match self.last_error.borrow().clone() {
                Some(e) => format!("the datapath has not converged: {e}"),
                None => "the datapath has not converged in time".into(),
            })),
        }
    }
}
