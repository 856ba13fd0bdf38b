//! Stores that wrap another and change a few of its calls (refuse writes,
//! time them, run a test's hook): a [`Layer`] overrides only those; every
//! other call goes through to the inner store. [`Layered`] makes a layer a
//! [`Store`].

use std::time::Duration;

use async_trait::async_trait;

use crate::{
    KeyValue, LeaseId, Listing, Result, Revision, Store, StoreStatus, Txn, TxnResult, WatchStream,
};

/// A store's calls, each passed to [`Layer::inner`] unless overridden.
/// `put` and `delete` are left to [`Store`]'s defaults, so they go
/// through the layer's `txn`.
#[async_trait]
pub trait Layer: Send + Sync + 'static {
    fn inner(&self) -> &dyn Store;

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner().get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing> {
        self.inner().list(prefix).await
    }
    /// The layer's own `get` unless overridden: a layer that changes reads
    /// changes these too.
    async fn get_local(&self, key: &str) -> Result<Option<KeyValue>> {
        self.get(key).await
    }
    async fn list_local(&self, prefix: &str) -> Result<Listing> {
        self.list(prefix).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        self.inner().txn(txn).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        self.inner().watch(prefix, from).await
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        self.inner().lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.inner().lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.inner().lease_revoke(lease).await
    }
    async fn status(&self) -> Result<StoreStatus> {
        self.inner().status().await
    }
}

/// A [`Layer`] as a [`Store`]; derefs to the layer.
pub struct Layered<L>(pub L);

impl<L> std::ops::Deref for Layered<L> {
    type Target = L;
    fn deref(&self) -> &L {
        &self.0
    }
}

#[async_trait]
impl<L: Layer> Store for Layered<L> {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.0.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing> {
        self.0.list(prefix).await
    }
    async fn get_local(&self, key: &str) -> Result<Option<KeyValue>> {
        self.0.get_local(key).await
    }
    async fn list_local(&self, prefix: &str) -> Result<Listing> {
        self.0.list_local(prefix).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        self.0.txn(txn).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        self.0.watch(prefix, from).await
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        self.0.lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.0.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.0.lease_revoke(lease).await
    }
    async fn status(&self) -> Result<StoreStatus> {
        self.0.status().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::MemStore;

    /// Counts transactions; everything else passes through.
    struct Counting {
        inner: Arc<dyn Store>,
        txns: AtomicUsize,
    }

    #[async_trait]
    impl Layer for Counting {
        fn inner(&self) -> &dyn Store {
            &*self.inner
        }
        async fn txn(&self, txn: Txn) -> Result<TxnResult> {
            self.txns.fetch_add(1, Ordering::SeqCst);
            self.inner.txn(txn).await
        }
    }

    #[tokio::test]
    async fn a_layer_changes_its_calls_and_passes_the_rest_through() {
        let inner: Arc<dyn Store> = Arc::new(MemStore::new());
        let layered = Arc::new(Layered(Counting {
            inner: inner.clone(),
            txns: AtomicUsize::new(0),
        }));
        let store: Arc<dyn Store> = layered.clone();
        store.put("k", b"v".to_vec()).await.unwrap();
        store.delete("gone").await.unwrap();
        // Writes by default helpers go through the layer's txn.
        assert_eq!(layered.txns.load(Ordering::SeqCst), 2);
        assert_eq!(store.get("k").await.unwrap().unwrap().value, b"v");
        assert_eq!(store.list("").await.unwrap().kvs.len(), 1);
        assert_eq!(layered.txns.load(Ordering::SeqCst), 2);
    }
}
