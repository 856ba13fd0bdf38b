//! A network delete racing attaches, Docker reservations and block claims
//! (issue 18, "delete/attach races leave nothing behind"): the racing
//! writes land at the worst moments, made deterministic by a store that
//! runs them from inside the deleter's (or attacher's) own store calls.
//! Afterwards no key of the deleted network is left, and a network of the
//! same name works.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use socketplane_api::keys;
use socketplane_cluster::testing::{attach_web, register, web};
use socketplane_cluster::Cluster;
use socketplane_store::mem::MemStore;
use socketplane_store::{Layer, Layered, Listing, Op, Result, Store, Txn, TxnResult};
use tokio::sync::Mutex;

type Racing = Pin<Box<dyn Future<Output = ()> + Send>>;

/// When the racing writes run.
enum Moment {
    /// After a listing of this prefix is read, before it is returned.
    AfterList(String),
    /// Before a transaction that claims an address block.
    BeforeBlockClaim,
}

/// A store (as [`Layered`]) that runs `racing` once, at `moment`, inside
/// a call made through it.
struct Racy {
    inner: Arc<dyn Store>,
    hook: Mutex<Option<(Moment, Racing)>>,
}

impl Racy {
    /// A racy store over `inner`, with no racing writes yet.
    fn over(inner: &Arc<dyn Store>) -> Arc<Layered<Racy>> {
        Arc::new(Layered(Racy {
            inner: inner.clone(),
            hook: Mutex::new(None),
        }))
    }

    async fn fire_if(&self, now: impl Fn(&Moment) -> bool) {
        let racing = {
            let mut hook = self.hook.lock().await;
            match hook.as_ref() {
                Some((m, _)) if now(m) => hook.take().map(|(_, f)| f),
                _ => None,
            }
        };
        if let Some(f) = racing {
            f.await;
        }
    }
}

#[async_trait::async_trait]
impl Layer for Racy {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
    async fn list(&self, prefix: &str) -> Result<Listing> {
        let listing = self.inner.list(prefix).await?;
        self.fire_if(|m| matches!(m, Moment::AfterList(p) if p == prefix))
            .await;
        Ok(listing)
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        let claims_block = txn
            .ops
            .iter()
            .any(|op| matches!(op, Op::Put { key, .. } if key.contains("/blocks/")));
        if claims_block {
            self.fire_if(|m| matches!(m, Moment::BeforeBlockClaim))
                .await;
        }
        self.inner.txn(txn).await
    }
}

async fn node(store: Arc<dyn Store>, id: &str) -> Arc<Cluster> {
    let c = Cluster::new(store, id.into(), "c".into());
    register(&c, id).await;
    Arc::new(c)
}

/// Every key whose name or value mentions network `id` (the networks
/// lock, which names the last network changed, aside).
async fn left_of(store: &Arc<dyn Store>, id: &str) -> Vec<String> {
    store
        .list("")
        .await
        .unwrap()
        .kvs
        .into_iter()
        .filter(|kv| kv.key != keys::networks_lock())
        .filter(|kv| kv.key.contains(id) || String::from_utf8_lossy(&kv.value).contains(id))
        .map(|kv| kv.key)
        .collect()
}

/// Writes landing between the delete's listing and its transaction: an
/// attach (address, endpoint and a block claim) and a Docker reservation.
#[tokio::test]
async fn writes_between_a_deletes_listing_and_its_commit_are_swept() {
    let inner: Arc<dyn Store> = Arc::new(MemStore::new());
    let racy = Racy::over(&inner);
    let deleter = node(racy.clone(), "a").await;
    let attacher = node(inner.clone(), "b").await;
    let net = deleter.create_network(&web()).await.unwrap();
    let before = attacher.clone();
    *racy.hook.lock().await = Some((
        Moment::AfterList(keys::ipam(&net.id)),
        Box::pin(async move {
            before.attach(&attach_web(), None).await.unwrap();
            before.reserve_address("web", None).await.unwrap();
        }),
    ));
    deleter.delete_network("web", true).await.unwrap();
    assert!(racy.hook.lock().await.is_none(), "the racing writes ran");
    assert_eq!(left_of(&inner, &net.id).await, Vec::<String>::new());
    // The same name again: a new network that works.
    let again = attacher.create_network(&web()).await.unwrap();
    assert_ne!(again.id, net.id);
    attacher.attach(&attach_web(), None).await.unwrap();
    assert_eq!(left_of(&inner, &net.id).await, Vec::<String>::new());
}

/// The delete lands while an attach is between reading the network and
/// claiming a block: the claim must not outlive the network.
#[tokio::test]
async fn a_block_claim_racing_the_delete_leaves_nothing() {
    let inner: Arc<dyn Store> = Arc::new(MemStore::new());
    let racy = Racy::over(&inner);
    let attacher = node(racy.clone(), "b").await;
    let deleter = node(inner.clone(), "a").await;
    let net = deleter.create_network(&web()).await.unwrap();
    let d = deleter.clone();
    *racy.hook.lock().await = Some((
        Moment::BeforeBlockClaim,
        Box::pin(async move {
            d.delete_network("web", true).await.unwrap();
        }),
    ));
    let raced = attacher.attach(&attach_web(), None).await;
    assert!(raced.is_err(), "an attach on a deleted network: {raced:?}");
    assert!(racy.hook.lock().await.is_none(), "the delete ran");
    assert_eq!(left_of(&inner, &net.id).await, Vec::<String>::new());
    deleter.create_network(&web()).await.unwrap();
    attacher.attach(&attach_web(), None).await.unwrap();
    assert_eq!(left_of(&inner, &net.id).await, Vec::<String>::new());
}
