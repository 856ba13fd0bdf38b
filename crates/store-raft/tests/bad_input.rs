//! Bad input: corrupt or foreign data dirs, nodes of other clusters, wrong
//! certificates. Each is a clear error, never a panic or silent data loss.

mod common;

use std::time::Duration;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use socketplane_store::{Store, StoreError};
use socketplane_store_raft::EmbeddedStore;
use socketplane_trust::{NodeKey, PortLimits, PortMode, PortServer, Revoked, Trust};

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

/// Serves `store`'s routes behind the guarded cluster port with `trust`'s
/// certificate: only nodes with a certificate of its CA get through.
async fn serve_tls(store: &Arc<EmbeddedStore>, l: tokio::net::TcpListener, trust: &Trust) {
    let (_tx, mode) = tokio::sync::watch::channel(PortMode::Tls(trust.server_config().unwrap()));
    let port = PortServer {
        listener: l,
        router: store.router(),
        mode,
        limits: PortLimits::default(),
        revoked: Revoked::default(),
        issued: Default::default(),
        anonymous_paths: &[],
    };
    tokio::spawn(socketplane_trust::serve(port));
}

/// A node started with TLS: `trust` gives it its CA; its own certificate
/// is issued by `issuer` (another CA makes a node the cluster refuses).
async fn tls_node(
    id: u64,
    dir: PathBuf,
    trust: &Trust,
    issuer: &Trust,
) -> (Arc<EmbeddedStore>, SocketAddr) {
    let l = listener(None).await;
    let addr = l.local_addr().unwrap();
    let node_id = format!("{id:016x}");
    let key = NodeKey::generate().unwrap();
    let cert = issuer
        .ca
        .issue(&node_id, &key.request(&node_id).unwrap())
        .unwrap();
    let mine = Trust {
        ca: trust.ca.clone(),
        secret: trust.secret.clone(),
        node_key: key,
        node_cert_pem: cert,
    };
    let mut cfg = config(id, "c", dir, addr);
    cfg.tls = Some(mine.client_config().unwrap());
    let store = EmbeddedStore::open(cfg).await.unwrap();
    serve_tls(&store, l, &mine).await;
    (store, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_nodes_with_a_cluster_certificate_get_in() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let trust = Trust::found("c", &format!("{:016x}", 1), "s3cret-s3cret".into()).unwrap();
    let (a, a_addr) = tls_node(1, dir.path().join("a"), &trust, &trust).await;
    a.bootstrap().await.unwrap();
    // Plain HTTP gets nothing from a TLS port.
    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://{a_addr}/raft/v1/read_index"))
        .body("null")
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        r.as_ref().map(|r| !r.status().is_success()).unwrap_or(true),
        "{r:?}"
    );
    // A node whose certificate comes from another CA cannot join.
    let rogue = Trust::found("c", &format!("{:016x}", 2), "s3cret-s3cret".into()).unwrap();
    let (b, _) = tls_node(2, dir.path().join("b"), &trust, &rogue).await;
    // (It keeps retrying a peer it cannot reach, as for any network error.)
    let res = tokio::time::timeout(Duration::from_secs(3), b.join(a_addr)).await;
    assert!(
        !matches!(res, Ok(Ok(()))),
        "a certificate of another CA joined"
    );
    assert!(!b.is_member());
    assert_eq!(a.status().await.unwrap().members.len(), 1);
    // With a certificate of the cluster CA it joins and replicates.
    let (c, _) = tls_node(3, dir.path().join("c"), &trust, &trust).await;
    c.join(a_addr).await.unwrap();
    c.put("/k", b"v".to_vec()).await.unwrap();
    assert_eq!(a.get("/k").await.unwrap().unwrap().value, b"v");
    for s in [a, b, c] {
        s.shutdown().await;
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_in_use_is_named_as_such_not_as_corrupt() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(1, "c", dir.path().join("n1"), None, |_| {}).await;
    node.store.bootstrap().await.unwrap();
    node.store.put("/a", b"1".to_vec()).await.unwrap();
    // A second store on the same directory while the first runs.
    match EmbeddedStore::open(node.cfg.clone()).await {
        Err(StoreError::Unavailable(msg)) => {
            assert!(msg.contains("in use by another process"), "{msg}")
        }
        Err(e) => panic!("expected in use, got {e}"),
        Ok(s) => {
            s.shutdown().await;
            panic!("a data dir in use opened twice")
        }
    }
    // The first is untouched.
    assert_eq!(node.store.get("/a").await.unwrap().unwrap().value, b"1");
    node.stop().await;
}
