//! A datapath and a store wrapped so each apply and each commit is an
//! event, without a line of metrics code in the reconciler or the store.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use socketplane_datapath::{
    ApplyReport, Datapath, DatapathError, DesiredState, EndpointChanges, EndpointIfnames, Underlay,
};
use socketplane_store::{
    LeaseId, Listing, Revision, Store, StoreStatus, Txn, TxnResult, WatchStream,
};

use crate::events::{emit, DatapathApplied, DatapathFailed, StoreCommitted};

/// A short, stable reason for a failed apply, for the metrics label and
/// for `cluster status`.
pub fn failure_reason(error: &DatapathError) -> &'static str {
    match error {
        DatapathError::Invalid(_) => "invalid_state",
        DatapathError::EndpointRejected { .. } => "endpoint_rejected",
        DatapathError::EndpointFailed { source, .. } => failure_reason(source),
        DatapathError::Kernel { .. }
        | DatapathError::Netlink { .. }
        | DatapathError::NetlinkSocket(_) => "netlink",
        DatapathError::DeviceMissing { .. } => "device_missing",
        DatapathError::Netns { .. } | DatapathError::Setns { .. } => "netns",
        DatapathError::Interface { .. } => "interface",
        DatapathError::Sysctl { .. } => "sysctl",
        DatapathError::Spawn { .. } | DatapathError::Command { .. } => "command",
        DatapathError::Ovsdb { .. } => "ovsdb",
        DatapathError::Unavailable { .. } => "unavailable",
        DatapathError::RecordLog { .. } => "record_log",
        DatapathError::Many(errors) => errors.first().map_or("many", failure_reason),
    }
}

/// The outcome of the last apply: `None` when it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyFault {
    pub reason: &'static str,
    pub message: String,
}

/// A datapath whose applies are timed, counted and remembered.
pub struct ObservedDatapath {
    inner: Arc<dyn Datapath>,
    last: Mutex<Option<ApplyFault>>,
}

impl ObservedDatapath {
    pub fn new(inner: Arc<dyn Datapath>) -> Arc<ObservedDatapath> {
        Arc::new(ObservedDatapath {
            inner,
            last: Mutex::new(None),
        })
    }

    /// Why the last apply failed, if it did.
    pub fn last_fault(&self) -> Option<ApplyFault> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, fault: Option<ApplyFault>) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// Counts and remembers one apply; `Ok(None)` (a change the datapath
    /// declined to apply alone) did nothing and is not counted.
    fn observe(&self, result: Result<Option<&ApplyReport>, &DatapathError>, elapsed: Duration) {
        match result {
            Ok(None) => {}
            Ok(Some(report)) => {
                emit(DatapathApplied {
                    changes: report.changes,
                    elapsed,
                });
                self.record(None);
            }
            Err(error) => {
                let reason = failure_reason(error);
                emit(DatapathFailed {
                    reason,
                    error,
                    elapsed,
                });
                self.record(Some(ApplyFault {
                    reason,
                    message: error.to_string(),
                }));
            }
        }
    }
}

#[async_trait]
impl Datapath for ObservedDatapath {
    async fn apply(&self, desired: &DesiredState) -> socketplane_datapath::Result<ApplyReport> {
        let started = Instant::now();
        let result = self.inner.apply(desired).await;
        self.observe(result.as_ref().map(Some), started.elapsed());
        result
    }

    async fn apply_changes(
        &self,
        changes: &EndpointChanges,
    ) -> socketplane_datapath::Result<Option<ApplyReport>> {
        let started = Instant::now();
        let result = self.inner.apply_changes(changes).await;
        self.observe(result.as_ref().map(Option::as_ref), started.elapsed());
        result
    }

    // Every method forwards, also those with a default: a wrapper that
    // swallowed one (e.g. fencing) would silently change behaviour.
    fn set_fenced(&self, fenced: bool) {
        self.inner.set_fenced(fenced)
    }

    fn resync(&self) {
        self.inner.resync()
    }

    fn endpoint_ifnames(&self, endpoint_id: &str) -> EndpointIfnames {
        self.inner.endpoint_ifnames(endpoint_id)
    }

    async fn teardown(&self) -> socketplane_datapath::Result<()> {
        self.inner.teardown().await
    }

    fn underlay(&self) -> Underlay {
        self.inner.underlay()
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}

/// A store whose transactions are timed (commit latency).
pub struct ObservedStore {
    inner: Arc<dyn Store>,
}

impl ObservedStore {
    pub fn new(inner: Arc<dyn Store>) -> Arc<ObservedStore> {
        Arc::new(ObservedStore { inner })
    }
}

#[async_trait]
impl Store for ObservedStore {
    async fn get(
        &self,
        key: &str,
    ) -> socketplane_store::Result<Option<socketplane_store::KeyValue>> {
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> socketplane_store::Result<Listing> {
        self.inner.list(prefix).await
    }

    async fn get_local(
        &self,
        key: &str,
    ) -> socketplane_store::Result<Option<socketplane_store::KeyValue>> {
        self.inner.get_local(key).await
    }

    async fn list_local(&self, prefix: &str) -> socketplane_store::Result<Listing> {
        self.inner.list_local(prefix).await
    }

    async fn txn(&self, txn: Txn) -> socketplane_store::Result<TxnResult> {
        let started = Instant::now();
        let result = self.inner.txn(txn).await;
        emit(StoreCommitted {
            elapsed: started.elapsed(),
            ok: result.is_ok(),
        });
        result
    }

    async fn watch(&self, prefix: &str, from: Revision) -> socketplane_store::Result<WatchStream> {
        self.inner.watch(prefix, from).await
    }

    async fn lease_grant(&self, ttl: Duration) -> socketplane_store::Result<LeaseId> {
        self.inner.lease_grant(ttl).await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> socketplane_store::Result<()> {
        self.inner.lease_keep_alive(lease).await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> socketplane_store::Result<()> {
        self.inner.lease_revoke(lease).await
    }

    async fn status(&self) -> socketplane_store::Result<StoreStatus> {
        self.inner.status().await
    }

    // Forwarded rather than left to the defaults: a backend may do these
    // its own way.
    async fn put(&self, key: &str, value: Vec<u8>) -> socketplane_store::Result<Revision> {
        let started = Instant::now();
        let result = self.inner.put(key, value).await;
        emit(StoreCommitted {
            elapsed: started.elapsed(),
            ok: result.is_ok(),
        });
        result
    }

    async fn delete(&self, key: &str) -> socketplane_store::Result<Revision> {
        let started = Instant::now();
        let result = self.inner.delete(key).await;
        emit(StoreCommitted {
            elapsed: started.elapsed(),
            ok: result.is_ok(),
        });
        result
    }
}
