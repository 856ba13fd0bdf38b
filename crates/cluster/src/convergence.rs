//! What the control loop publishes: the latest view, the store revision
//! this host's datapath has converged to, the last datapath error, the
//! endpoints that failed to converge, and whether this host is fenced.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use socketplane_api::rest::EndpointProblem;
use socketplane_store::Revision;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::view::ClusterView;

/// Local endpoints the datapath could not converge, by endpoint id.
pub type EndpointFailures = BTreeMap<String, EndpointProblem>;

/// How many failed applies in a row an attach waits for before it reports
/// its endpoint's failure (the reconciler retries with backoff meanwhile).
const ATTACH_ATTEMPTS: u32 = 3;

/// Published state of the control loop.
#[derive(Clone)]
pub struct ReconcilerHandle {
    /// The latest view of the cluster.
    pub view: watch::Receiver<Arc<ClusterView>>,
    /// The store revision the datapath has been converged to.
    pub applied: watch::Receiver<Revision>,
    /// The last datapath error, if the last apply failed.
    pub last_error: watch::Receiver<Option<String>>,
    /// This host's endpoints that failed to converge (the rest did).
    pub failures: watch::Receiver<Arc<EndpointFailures>>,
    /// True while this host is fenced (cut off from the majority, its
    /// workloads off the wire).
    pub fenced: watch::Receiver<bool>,
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

    /// [`wait_applied`](Self::wait_applied), then waits until endpoint `id`
    /// is plumbed: an error naming the reason when it kept failing.
    pub async fn wait_endpoint(
        &self,
        id: &str,
        revision: Revision,
        timeout: Duration,
    ) -> Result<()> {
        let started = tokio::time::Instant::now();
        self.wait_applied(revision, timeout).await?;
        let mut failures = self.failures.clone();
        let settled =
            failures.wait_for(|f| f.get(id).is_none_or(|p| p.attempts >= ATTACH_ATTEMPTS));
        let left = timeout.saturating_sub(started.elapsed());
        let _ = tokio::time::timeout(left, settled).await;
        match self.failures.borrow().get(id) {
            None => Ok(()),
            Some(p) => Err(Error::Internal(format!(
                "the datapath could not plumb endpoint {id}: {}",
                p.reason
            ))),
        }
    }

    /// The status `endpoint list` shows for a local endpoint: "ok",
    /// "failed" or "fenced", with the reason.
    pub fn endpoint_status(&self, id: &str) -> (String, Option<String>) {
        if let Some(p) = self.failures.borrow().get(id) {
            return ("failed".into(), Some(p.reason.clone()));
        }
        if *self.fenced.borrow() {
            return (
                "fenced".into(),
                Some("this host is cut off from the cluster's majority; its workloads are off the wire until it is back".into()),
            );
        }
        ("ok".into(), None)
    }
}
