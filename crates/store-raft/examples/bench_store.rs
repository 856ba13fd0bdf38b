//! Store benchmark, side by side in one run: compare-and-set throughput and
//! latency on a 3-node embedded (Raft) cluster over real TCP on loopback,
//! on a 3-member etcd cluster on loopback (like for like) and on a single
//! etcd server, all on the same machine.
//!
//! usage: bench_store [OPS]   (needs /usr/bin/etcd; see bench/store.sh)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socketplane_store::bench::{cas_benchmark, BenchResult};
use socketplane_store::conformance::etcd_server::{EtcdTestCluster, EtcdTestServer};
use socketplane_store::etcd::EtcdStore;
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

struct Row {
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
    consistent: bool,
}

impl From<&BenchResult> for Row {
    fn from(r: &BenchResult) -> Self {
        Self {
            ops_per_sec: r.ops_per_sec,
            p50: r.p50,
            p99: r.p99,
            errors: r.errors,
            consistent: r.consistent,
        }
    }
}

fn row(name: &str, r: &Row) {
    println!(
        "  {name:<40} {:>9.0} ops/s   p50 {:>7.2} ms   p99 {:>7.2} ms   errors {}{}",
        r.ops_per_sec,
        r.p50.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3,
        r.errors,
        if r.consistent { "" } else { "   INCONSISTENT" }
    );
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(((sorted.len() - 1) as f64) * q).round() as usize]
}

/// Independent counters, one per worker: throughput without CAS conflicts.
async fn independent(stores: &[Arc<dyn Store>], prefix: &str, ops: usize, workers: usize) -> Row {
    let start = Instant::now();
    let per = ops / workers;
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let s = stores[w % stores.len()].clone();
            let key = format!("{prefix}/{w}");
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::with_capacity(per), 0usize);
                for _ in 0..per {
                    let t = Instant::now();
                    match socketplane_store::conformance::cas_increment(s.as_ref(), &key).await {
                        Ok(_) => lat.push(t.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let (mut lat, mut errors) = (Vec::with_capacity(ops), 0);
    for t in tasks {
        if let Ok((l, e)) = t.await {
            lat.extend(l);
            errors += e;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    Row {
        ops_per_sec: lat.len() as f64 / elapsed,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        errors,
        consistent: true,
    }
}

fn arcs(stores: Vec<EtcdStore>) -> Vec<Arc<dyn Store>> {
    stores
        .into_iter()
        .map(|s| Arc::new(s) as Arc<dyn Store>)
        .collect()
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
    let etcd_cluster = EtcdTestCluster::start(3)
        .await
        .expect("etcd cluster (install etcd-server)");
    let etcd3 = arcs(etcd_cluster.stores().await.expect("etcd cluster stores"));
    let etcd_server = EtcdTestServer::start()
        .await
        .expect("etcd (install etcd-server)");
    let etcd1 = arcs(vec![etcd_server.store().await.expect("etcd store")]);

    println!(
        "Store benchmark: compare-and-set increments (get, then CAS), {ops} per row, \
         same machine, one run; clients spread over the members"
    );
    let mut results = Vec::new();
    for (label, stores) in [
        ("embedded (3 nodes)", embedded),
        ("etcd (3 nodes)", etcd3),
        ("etcd (1 server)", etcd1),
    ] {
        let seq: Row = (&cas_benchmark(stores.clone(), &format!("/bench/{label}/seq"), ops / 4, 1)
            .await)
            .into();
        row(&format!("{label}: one key, 1 client"), &seq);
        let conc: Row =
            (&cas_benchmark(stores.clone(), &format!("/bench/{label}/conc"), ops, 16).await).into();
        row(&format!("{label}: one key, 16 clients"), &conc);
        let ind = independent(&stores, &format!("/bench/{label}/ind"), ops, 32).await;
        row(&format!("{label}: 32 keys, 32 clients"), &ind);
        results.push([seq, conc, ind]);
    }
    let (e, d) = (&results[0], &results[1]);
    println!("Embedded (3 nodes) / etcd (3 nodes)   goal: throughput >= 1x, p99 <= 2x");
    for (i, name) in [
        "one key, 1 client",
        "one key, 16 clients",
        "32 keys, 32 clients",
    ]
    .iter()
    .enumerate()
    {
        println!(
            "  {name:<40} throughput {:>5.2}x   p99 {:>5.2}x",
            e[i].ops_per_sec / d[i].ops_per_sec,
            e[i].p99.as_secs_f64() / d[i].p99.as_secs_f64()
        );
    }
    for n in nodes {
        n.shutdown().await;
    }
}
