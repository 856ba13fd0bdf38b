//! Store benchmark, side by side in one run: compare-and-set throughput and
//! latency on a 3-node embedded (Raft) cluster over real TCP on loopback,
//! and on a real etcd server on the same machine.
//!
//! usage: bench_store [OPS]   (needs /usr/bin/etcd; see bench/store.sh)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socketplane_store::bench::{cas_benchmark, BenchResult};
use socketplane_store::conformance::etcd_server::EtcdTestServer;
use socketplane_store::Store;
use socketplane_store_raft::{EmbeddedConfig, EmbeddedStore};

async fn embedded_cluster(dir: &std::path::Path) -> Vec<Arc<EmbeddedStore>> {
    let mut nodes = Vec::new();
    for i in 1..=3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let cfg = EmbeddedConfig::new(i, "bench", dir.join(format!("n{i}")), addr);
        let node = EmbeddedStore::open(cfg).await.expect("open");
        let app = node.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        nodes.push((node, addr));
    }
    nodes[0].0.bootstrap().await.expect("bootstrap");
    let seed = nodes[0].1;
    for (node, _) in &nodes[1..] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Err(e) = node.join(seed).await {
            assert!(Instant::now() < deadline, "join: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    nodes.into_iter().map(|(n, _)| n).collect()
}

fn row(name: &str, r: &BenchResult) {
    println!(
        "  {name:<44} {:>9.0} ops/s   p50 {:>7.2} ms   p99 {:>7.2} ms   errors {}{}",
        r.ops_per_sec,
        r.p50.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3,
        r.errors,
        if r.consistent { "" } else { "   INCONSISTENT" }
    );
}

/// Independent counters, one per worker: throughput without CAS conflicts.
async fn independent(stores: &[Arc<dyn Store>], prefix: &str, ops: usize, workers: usize) -> f64 {
    let start = Instant::now();
    let per = ops / workers;
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let s = stores[w % stores.len()].clone();
            let key = format!("{prefix}/{w}");
            tokio::spawn(async move {
                for _ in 0..per {
                    let _ = socketplane_store::conformance::cas_increment(s.as_ref(), &key).await;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    (per * workers) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let ops: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = embedded_cluster(dir.path()).await;
    let embedded: Vec<Arc<dyn Store>> = nodes.iter().map(|n| n.clone() as Arc<dyn Store>).collect();
    let etcd_server = EtcdTestServer::start()
        .await
        .expect("etcd (install etcd-server)");
    let etcd: Arc<dyn Store> = Arc::new(etcd_server.store().await.expect("etcd store"));

    println!("Store benchmark: compare-and-set increments, {ops} per row, same machine, one run");
    let mut results = Vec::new();
    for (label, stores) in [
        ("embedded (3 nodes)", embedded.clone()),
        ("etcd (1 server)", vec![etcd.clone()]),
    ] {
        let seq = cas_benchmark(stores.clone(), &format!("/bench/{label}/seq"), ops / 4, 1).await;
        row(&format!("{label}: one key, 1 client"), &seq);
        let conc = cas_benchmark(stores.clone(), &format!("/bench/{label}/conc"), ops, 16).await;
        row(&format!("{label}: one key, 16 clients"), &conc);
        let ind = independent(&stores, &format!("/bench/{label}/ind"), ops, 32).await;
        println!(
            "  {:<44} {ind:>9.0} ops/s",
            format!("{label}: 32 keys, 32 clients")
        );
        results.push((seq, conc, ind));
    }
    let (e, d) = (&results[0], &results[1]);
    println!("Ratios (embedded / etcd):");
    println!(
        "  p50 latency, 1 client: {:.2}x   (goal: within 2x)",
        e.0.p50.as_secs_f64() / d.0.p50.as_secs_f64()
    );
    println!(
        "  throughput, one key 16 clients: {:.2}x",
        e.1.ops_per_sec / d.1.ops_per_sec
    );
    println!(
        "  throughput, 32 keys: {:.2}x   (goal: >= 2000 ops/s embedded)",
        e.2 / d.2
    );
    for n in nodes {
        n.shutdown().await;
    }
}
