//! Bad input: corrupt or foreign data dirs, nodes of other clusters, wrong
//! tokens. Each is a clear error, never a panic or silent data loss.

mod common;

use std::time::Duration;

use common::*;
use socketplane_store::{Store, StoreError};
use socketplane_store_raft::EmbeddedStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_db_file_is_corrupt() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    std::fs::create_dir_all(&data).unwrap();
    let garbage: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(data.join("raft.redb"), &garbage).unwrap();
    let cfg = config(1, "c", data.clone(), "127.0.0.1:1".parse().unwrap());
    match EmbeddedStore::open(cfg).await {
        Err(StoreError::Corrupt(msg)) => eprintln!("garbage: {msg}"),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("garbage data dir opened"),
    }
    // Never wiped.
    assert_eq!(std::fs::read(data.join("raft.redb")).unwrap(), garbage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_db_file_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(1, "c", dir.path().join("n1"), None, |_| {}).await;
    node.store.bootstrap().await.unwrap();
    node.store.put("/a", b"1".to_vec()).await.unwrap();
    node.stop().await;
    let path = dir.path().join("n1").join("raft.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    // Overwrite the middle of the file with garbage.
    let mid = bytes.len() / 2;
    for b in &mut bytes[..mid] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let cfg = node.cfg.clone();
    match EmbeddedStore::open(cfg).await {
        Err(StoreError::Corrupt(msg)) => eprintln!("damaged: {msg}"),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(s) => {
            s.shutdown().await;
            panic!("damaged data dir opened")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_of_another_cluster_or_node_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(1, "alpha", dir.path().join("n1"), None, |_| {}).await;
    node.store.bootstrap().await.unwrap();
    node.store.put("/a", b"1".to_vec()).await.unwrap();
    node.stop().await;
    let mut cfg = node.cfg.clone();
    cfg.cluster = "beta".into();
    match EmbeddedStore::open(cfg).await {
        Err(StoreError::Corrupt(msg)) => {
            assert!(msg.contains("alpha") && msg.contains("beta"), "{msg}")
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("foreign data dir opened"),
    }
    let mut cfg = node.cfg.clone();
    cfg.node_id = 7;
    assert!(matches!(
        EmbeddedStore::open(cfg).await,
        Err(StoreError::Corrupt(_))
    ));
    // A database file of something else entirely.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    redb_foreign(&other.join("raft.redb"));
    let cfg = config(1, "alpha", other, "127.0.0.1:1".parse().unwrap());
    assert!(matches!(
        EmbeddedStore::open(cfg).await,
        Err(StoreError::Corrupt(_))
    ));
    // The original still opens fine.
    node.restart().await;
    assert_eq!(node.store.get("/a").await.unwrap().unwrap().value, b"1");
}

/// Creates a valid redb database that is not ours (another table layout).
fn redb_foreign(path: &std::path::Path) {
    const T: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("something_else");
    let db = redb::Database::create(path).unwrap();
    let w = db.begin_write().unwrap();
    w.open_table(T).unwrap().insert("a", "b").unwrap();
    w.commit().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_from_another_cluster_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(1, "alpha", dir.path().join("a"), None, |_| {}).await;
    a.store.bootstrap().await.unwrap();
    let b = Node::start(2, "beta", dir.path().join("b"), None, |_| {}).await;
    let err = tokio::time::timeout(Duration::from_secs(20), b.store.join(a.addr))
        .await
        .expect("join answered in time")
        .expect_err("join across clusters must fail");
    let msg = err.to_string();
    eprintln!("cross-cluster join: {msg}");
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err}");
    assert!(msg.contains("alpha") && msg.contains("beta"), "{msg}");
    assert!(!b.store.is_member());
    assert_eq!(a.store.status().await.unwrap().members.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_enforced() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(1, "c", dir.path().join("a"), None, |c| {
        c.token = Some("s3cret".into());
    })
    .await;
    a.store.bootstrap().await.unwrap();
    // Raw request without the token: 401.
    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://{}/raft/v1/read_index", a.addr))
        .body("null")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // A node with the wrong token cannot join.
    let b = Node::start(2, "c", dir.path().join("b"), None, |c| {
        c.token = Some("wrong".into());
    })
    .await;
    let err = tokio::time::timeout(Duration::from_secs(20), b.store.join(a.addr))
        .await
        .unwrap()
        .expect_err("wrong token must fail");
    assert!(err.to_string().contains("token"), "{err}");
    // With the right token it joins.
    let c = Node::start(3, "c", dir.path().join("c"), None, |c| {
        c.token = Some("s3cret".into());
    })
    .await;
    c.store.join(a.addr).await.unwrap();
    c.store.put("/k", b"v".to_vec()).await.unwrap();
    assert_eq!(a.store.get("/k").await.unwrap().unwrap().value, b"v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_rpc_bodies_are_rejected() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(1, "c", dir.path().join("a"), None, |_| {}).await;
    a.store.bootstrap().await.unwrap();
    let client = reqwest::Client::new();
    for path in [
        "append",
        "vote",
        "snapshot",
        "join",
        "leave",
        "forward",
        "read_index",
    ] {
        let r = client
            .post(format!("http://{}/raft/v1/{path}", a.addr))
            .body(vec![0xffu8, 0, 1, 2, 3])
            .send()
            .await
            .unwrap();
        if path != "read_index" {
            assert_eq!(r.status().as_u16(), 400, "{path}");
        }
    }
    // Still works.
    a.store.put("/ok", b"1".to_vec()).await.unwrap();
    assert!(a.store.status().await.unwrap().healthy);
}

#[tokio::test]
async fn bad_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        1,
        "c",
        dir.path().join("a"),
        "0.0.0.0:6675".parse().unwrap(),
    );
    assert!(matches!(
        EmbeddedStore::open(cfg).await,
        Err(StoreError::InvalidArgument(_))
    ));
    let cfg = config(
        1,
        "",
        dir.path().join("b"),
        "127.0.0.1:6675".parse().unwrap(),
    );
    assert!(matches!(
        EmbeddedStore::open(cfg).await,
        Err(StoreError::InvalidArgument(_))
    ));
}
