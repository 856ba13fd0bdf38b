//! The conformance suite on the in-memory backend, one test per behaviour.

use std::sync::Arc;

use socketplane_store::conformance;
use socketplane_store::{MemStore, Store};

socketplane_store::conformance_tests!(Arc::new(MemStore::new()));

#[tokio::test]
async fn watch_compacted() {
    let mem = MemStore::new();
    let store: Arc<dyn Store> = Arc::new(mem.clone());
    conformance::watch_compacted(store, |rev| async move { mem.compact(rev).unwrap() }).await;
}

#[tokio::test]
async fn bounded_history_compacts_slow_watchers() {
    let mem = MemStore::with_history(8);
    let store: Arc<dyn Store> = Arc::new(mem.clone());
    // History of 8 revisions: a watch 20 revisions back is compacted.
    let first = store.put("/h/0", b"0".to_vec()).await.unwrap();
    for i in 1..20 {
        store.put(&format!("/h/{i}"), b"x".to_vec()).await.unwrap();
    }
    assert!(matches!(
        store.watch("/h/", first).await,
        Err(socketplane_store::StoreError::Compacted { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_memstore() {
    conformance::run_all(|| async { Arc::new(MemStore::new()) as Arc<dyn Store> }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_benchmark_counts_exactly() {
    let mem: Arc<dyn Store> = Arc::new(MemStore::new());
    let r =
        socketplane_store::bench::cas_benchmark(vec![mem.clone(), mem.clone()], "/bench/c", 500, 8)
            .await;
    assert_eq!(r.ops, 500);
    assert_eq!(r.errors, 0);
    assert!(r.consistent, "{r}");
    assert_eq!(mem.get("/bench/c").await.unwrap().unwrap().value, b"500");
}
