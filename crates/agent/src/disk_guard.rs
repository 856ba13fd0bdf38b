//! Refuses this host's store writes while the embedded store's disk is
//! (nearly) full, with a message that says so and names the path. Without
//! it a full disk shows only when Raft fails to append and stops for good;
//! with it a write fails clearly first, and writes resume by themselves
//! once space is freed. Reads, watches and lease renewals pass through.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use socketplane_store::{
    KeyValue, Layer, Layered, LeaseId, Listing, Result, Store, StoreError, Txn, TxnResult,
};

/// Writes are refused below this much free space: room for the log
/// entries and file growth of writes already in flight.
pub const MIN_FREE_BYTES: u64 = 16 << 20;

/// A store whose writes first check the free space under `dir`.
pub struct DiskGuard {
    inner: Arc<dyn Store>,
    dir: PathBuf,
    min_free: u64,
}

impl DiskGuard {
    pub fn wrap(inner: Arc<dyn Store>, dir: &Path) -> Arc<dyn Store> {
        Arc::new(Layered(DiskGuard {
            inner,
            dir: dir.to_path_buf(),
            min_free: MIN_FREE_BYTES,
        }))
    }

    /// Free bytes for an unprivileged writer under `dir`.
    fn free_bytes(dir: &Path) -> Option<u64> {
        let st = nix::sys::statvfs::statvfs(dir).ok()?;
        Some(st.blocks_available().saturating_mul(st.fragment_size()))
    }

    fn check(&self) -> Result<()> {
        // A failed statvfs is left to the store itself to report.
        match Self::free_bytes(&self.dir) {
            Some(free) if free < self.min_free => Err(full(&self.dir, free, self.min_free)),
            _ => Ok(()),
        }
    }
}

fn full(dir: &Path, free: u64, min_free: u64) -> StoreError {
    StoreError::Unavailable(format!(
        "the store's disk is full: {} has {} KiB free, writes need at least {} MiB; free space there and writes resume by themselves",
        dir.display(),
        free >> 10,
        min_free >> 20
    ))
}

#[async_trait]
impl Layer for DiskGuard {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
    // Reads go on whatever the disk: straight to the inner store.
    async fn get_local(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.get_local(key).await
    }
    async fn list_local(&self, prefix: &str) -> Result<Listing> {
        self.inner.list_local(prefix).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        self.check()?;
        self.inner.txn(txn).await
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        self.check()?;
        self.inner.lease_grant(ttl).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socketplane_store::{MemStore, Op};

    #[tokio::test]
    async fn writes_fail_clearly_below_the_free_space_and_reads_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> = Arc::new(MemStore::new());
        let roomy = DiskGuard {
            inner: inner.clone(),
            dir: dir.path().to_path_buf(),
            min_free: 0,
        };
        roomy
            .txn(Txn::new().then(Op::put("k", b"v".to_vec())))
            .await
            .unwrap();
        let full = DiskGuard {
            inner,
            dir: dir.path().to_path_buf(),
            min_free: u64::MAX,
        };
        let err = full
            .txn(Txn::new().then(Op::put("k", b"w".to_vec())))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("disk is full") && text.contains(&dir.path().display().to_string()),
            "{text}"
        );
        assert!(full.lease_grant(Duration::from_secs(5)).await.is_err());
        assert_eq!(full.get("k").await.unwrap().unwrap().value, b"v");
    }
}
