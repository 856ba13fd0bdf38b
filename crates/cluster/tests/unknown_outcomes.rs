//! An attach whose write fails with an unknown outcome (the answer was
//! lost, the write is still in flight) and then lands late, after the
//! agent has looked for it and found nothing: the address must not end up
//! held by an endpoint nobody knows about.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socketplane_api::keys;
use socketplane_cluster::testing::{attach_web, register, web};
use socketplane_cluster::{Cluster, ErrorKind};
use socketplane_store::mem::MemStore;
use socketplane_store::{Layer, Layered, Op, Result, Store, StoreError, Txn, TxnResult};
use tokio::sync::Mutex;

/// How late the lost write lands: later than the agent used to look for it
/// (three times, 0.5 + 1 + 2 s).
const LANDS_AFTER: Duration = Duration::from_secs(5);

/// A store (as [`Layered`]) that answers the first endpoint write with
/// "unavailable" and applies it `LANDS_AFTER` later.
struct LosesFirstAttach {
    inner: Arc<dyn Store>,
    armed: AtomicBool,
    late: Mutex<Option<tokio::task::JoinHandle<Result<TxnResult>>>>,
}

#[async_trait::async_trait]
impl Layer for LosesFirstAttach {
    fn inner(&self) -> &dyn Store {
        self.inner.as_ref()
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        let writes_endpoint = txn
            .ops
            .iter()
            .any(|op| matches!(op, Op::Put { key, .. } if key.starts_with(&keys::endpoints())));
        if writes_endpoint && self.armed.swap(false, Ordering::SeqCst) {
            let inner = self.inner.clone();
            *self.late.lock().await = Some(tokio::spawn(async move {
                tokio::time::sleep(LANDS_AFTER).await;
                inner.txn(txn).await
            }));
            return Err(StoreError::Unavailable("the answer was lost".into()));
        }
        self.inner.txn(txn).await
    }
}

#[tokio::test]
async fn a_lost_attach_that_lands_late_holds_no_address() {
    let mem: Arc<dyn Store> = Arc::new(MemStore::new());
    let store = Arc::new(Layered(LosesFirstAttach {
        inner: mem.clone(),
        armed: AtomicBool::new(false),
        late: Mutex::new(None),
    }));
    let c = Arc::new(Cluster::new(store.clone(), "a".into(), "c".into()));
    register(&c, "a").await;
    let net = c.create_network(&web()).await.expect("network");

    store.armed.store(true, Ordering::SeqCst);
    let failed = c.attach_request(&attach_web(), None).await;
    assert!(
        matches!(&failed, Err(e) if e.kind() == ErrorKind::Unavailable),
        "{failed:?}"
    );
    let late = store.late.lock().await.take().expect("the lost write");
    let landed = late.await.expect("late write task").expect("late write");
    assert!(
        !landed.succeeded,
        "the lost write landed {LANDS_AFTER:?} late and took an address"
    );
    // Give the agent's clean-up the time it used to take, and look again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let endpoints = mem.list(&keys::endpoints()).await.expect("list");
    assert!(endpoints.kvs.is_empty(), "left: {:?}", endpoints.kvs);
    let addrs = mem.list(&keys::addresses(&net.id)).await.expect("list");
    assert!(addrs.kvs.is_empty(), "addresses held: {:?}", addrs.kvs);

    // The network works as before.
    let (ep, _) = c.attach_request(&attach_web(), None).await.expect("attach");
    assert_eq!(
        mem.list(&keys::addresses(&net.id))
            .await
            .expect("list")
            .kvs
            .len(),
        1,
        "{ep:?}"
    );
}
