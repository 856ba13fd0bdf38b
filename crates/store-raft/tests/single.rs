//! A single-node embedded store: conformance and restart.

mod common;

use std::sync::Arc;

use common::*;
use socketplane_store::{conformance, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_conformance() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(1, "test", dir.path().join("n1"), None, |_| {}).await;
    node.store.bootstrap().await.unwrap();
    let store = node.dyn_store();
    conformance::run_all(|| {
        let s = store.clone();
        async move { s }
    })
    .await;
    let s2 = node.store.clone();
    conformance::watch_compacted(store.clone(), |rev| async move { s2.compact(rev).unwrap() })
        .await;
    let st = store.status().await.unwrap();
    assert_eq!(st.backend, "embedded");
    assert!(st.healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_restart_keeps_data() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(1, "test", dir.path().join("n1"), None, |c| {
        c.timing.snapshot_every = 50;
    })
    .await;
    assert!(!node.store.is_member());
    node.store.bootstrap().await.unwrap();
    assert!(node.store.is_member());
    for i in 0..230 {
        node.store
            .put(&format!("/k/{i:04}"), vec![i as u8])
            .await
            .unwrap();
    }
    let rev = node.store.status().await.unwrap().revision;
    node.stop().await;
    node.restart().await;
    assert!(node.store.is_member());
    // bootstrap again is a no-op
    node.store.bootstrap().await.unwrap();
    let l = node.store.list("/k/").await.unwrap();
    assert_eq!(l.kvs.len(), 230);
    assert_eq!(l.revision, rev);
    let _: Arc<dyn Store> = node.store.clone();
    assert_eq!(
        node.store.get("/k/0229").await.unwrap().unwrap().value,
        vec![229u8]
    );
}
