//! The conformance suite and etcd-specific behaviour against a real etcd
//! server (`/usr/bin/etcd` from the Debian package `etcd-server`), started
//! on 127.0.0.1 with free ports and a temporary data directory, and killed
//! when the test ends.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use socketplane_store::conformance::{self, etcd_server::EtcdTestServer, next_event};
use socketplane_store::{EtcdStore, EventKind, MemberRole, Store, StoreError};

async fn server() -> EtcdTestServer {
    EtcdTestServer::start()
        .await
        .unwrap_or_else(|e| panic!("cannot start etcd: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_conformance_suite() {
    let srv = server().await;
    let endpoint = srv.endpoint();
    conformance::run_all(|| {
        let endpoint = endpoint.clone();
        async move {
            let store = EtcdStore::connect(&[endpoint])
                .await
                .unwrap_or_else(|e| panic!("connect: {e}"));
            Arc::new(store) as Arc<dyn Store>
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_compacted_revision_fails() {
    let srv = server().await;
    let etcd = srv.store().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(etcd.clone());
    conformance::watch_compacted(store, |rev| async move {
        etcd.compact(rev).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn unreachable_etcd_is_unavailable_quickly() {
    // Nothing listens on this port.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("127.0.0.1:{port}");
    let start = Instant::now();
    match EtcdStore::connect(std::slice::from_ref(&endpoint)).await {
        Err(StoreError::Unavailable(msg)) => {
            assert!(
                msg.contains(&endpoint),
                "message does not name the endpoint: {msg}"
            )
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );

    // A listener that never answers (a hung server) is bounded too.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("etcd://{}", hung.local_addr().unwrap());
    let start = Instant::now();
    match EtcdStore::from_url(&url).await {
        Err(StoreError::Unavailable(msg)) => {
            assert!(msg.contains(&url["etcd://".len()..]), "{msg}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );

    assert!(matches!(
        EtcdStore::from_url("etcd://").await,
        Err(StoreError::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_cleanly_while_etcd_is_down_and_recover() {
    let mut srv = server().await;
    let store = srv.store().await.unwrap();
    store.put("/down/a", b"1".to_vec()).await.unwrap();
    srv.kill();
    let start = Instant::now();
    match store.get("/down/a").await {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains(&srv.endpoint()), "{msg}"),
        other => panic!("expected Unavailable while etcd is down, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(12));
    let st = store.status().await.unwrap();
    assert!(!st.healthy);
    srv.restart().await.unwrap();
    // The same handle works again once etcd is back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.get("/down/a").await {
            Ok(Some(kv)) => {
                assert_eq!(kv.value, b"1");
                break;
            }
            other => {
                assert!(
                    Instant::now() < deadline,
                    "store did not recover: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_etcd_restart() {
    let mut srv = server().await;
    let store = srv.store().await.unwrap();
    let p = conformance::unique_prefix("restart");
    let mut w = store.watch(&p, 0).await.unwrap();
    let r1 = store.put(&format!("{p}k1"), b"1".to_vec()).await.unwrap();
    let ev = next_event(&mut w).await;
    assert_eq!(
        (ev.kv.key.as_str(), ev.kv.mod_revision),
        (format!("{p}k1").as_str(), r1)
    );

    srv.kill();
    // Let the watch notice the broken connection.
    tokio::time::sleep(Duration::from_millis(500)).await;
    srv.restart().await.unwrap();

    // Writes made right after the restart, possibly before the watch is
    // re-established, must all arrive exactly once, in order.
    let writer = srv.store().await.unwrap();
    let mut want = Vec::new();
    for i in 2..=6 {
        let key = format!("{p}k{i}");
        let r = writer.put(&key, i.to_string().into_bytes()).await.unwrap();
        want.push((key, EventKind::Put, r));
    }
    let r = writer.delete(&format!("{p}k1")).await.unwrap();
    want.push((format!("{p}k1"), EventKind::Delete, r));

    let mut got = Vec::new();
    for _ in 0..want.len() {
        let ev = next_event(&mut w).await;
        got.push((ev.kv.key, ev.kind, ev.kv.mod_revision));
    }
    assert_eq!(got, want);
    // And nothing is delivered twice.
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(500), w.next()).await {
        panic!("unexpected extra watch item: {item:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_member_and_leader() {
    let srv = server().await;
    let store = srv.store().await.unwrap();
    let st = store.status().await.unwrap();
    assert_eq!(st.backend, "etcd");
    assert!(st.healthy, "{st:?}");
    assert_eq!(st.members.len(), 1, "{st:?}");
    let m = &st.members[0];
    assert_eq!(m.role, MemberRole::Leader);
    assert_eq!(st.leader.as_deref(), Some(m.id.as_str()));
    assert_eq!(m.addr, format!("http://{}", srv.endpoint()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_benchmark_on_etcd() {
    let srv = server().await;
    let a: Arc<dyn Store> = Arc::new(srv.store().await.unwrap());
    let b: Arc<dyn Store> = Arc::new(srv.store().await.unwrap());
    let r = socketplane_store::bench::cas_benchmark(vec![a, b], "/bench/etcd", 200, 4).await;
    assert_eq!((r.ops, r.errors), (200, 0), "{r}");
    assert!(r.consistent, "{r}");
    eprintln!("etcd CAS benchmark: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_unavailable_when_etcd_stays_down() {
    let mut srv = server().await;
    let opts = socketplane_store::etcd::EtcdOptions {
        watch_retry: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let store = EtcdStore::connect_with(&[srv.endpoint()], opts)
        .await
        .unwrap();
    let mut w = store.watch("/gone/", 0).await.unwrap();
    srv.kill();
    let start = Instant::now();
    match tokio::time::timeout(Duration::from_secs(15), w.next()).await {
        Ok(Some(Err(StoreError::Unavailable(msg)))) => {
            assert!(msg.contains("/gone/"), "{msg}")
        }
        other => panic!("expected the watch to end with Unavailable, got {other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert!(w.next().await.is_none(), "stream continued after its error");
}
