//! Store benchmark, side by side in one run: compare-and-set throughput and
//! latency on a 3-node embedded (Raft) cluster over real TCP on loopback,
//! on a 3-member etcd cluster on loopback (like for like) and on a single
//! etcd server, all on the same machine.
//!
//! Every operation is a CAS increment (a linearizable get, then a
//! compare-and-set on the revision read, retried until it wins). Rows run
//! interleaved (each round runs every workload on every backend, starting
//! with a different backend), and each figure is the median over the
//! rounds: on a noisy machine that compares better than one long run each.
//!
//! usage: bench_store [OPS_PER_ROW] [ROUNDS]   (needs /usr/bin/etcd; see bench/store.sh)

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socketplane_store::conformance::cas_increment;
use socketplane_store::conformance::etcd_server::{EtcdTestCluster, EtcdTestServer};
use socketplane_store::etcd::EtcdStore;
use socketplane_store::Store;
use socketplane_store_raft::{EmbeddedConfig, EmbeddedStore, LogWriteStats};

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
    let nodes: Vec<_> = nodes.into_iter().map(|(n, _)| n).collect();
    // Measure with all three voting.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let voters = match nodes[0].status().await {
            Ok(s) => s
                .members
                .iter()
                .filter(|m| m.role != socketplane_store::MemberRole::Replica)
                .count(),
            Err(_) => 0,
        };
        if voters == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "3 voters");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nodes
}

/// One row of one round.
#[derive(Clone, Default)]
struct Row {
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
    ops: usize,
    errors: usize,
    first_error: Option<String>,
    /// Lost CAS races (each retried).
    conflicts: u64,
    consistent: bool,
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(((sorted.len() - 1) as f64) * q).round() as usize]
}

fn counter(kv: Option<socketplane_store::KeyValue>) -> Option<u64> {
    match kv {
        None => Some(0),
        Some(kv) => std::str::from_utf8(&kv.value).ok()?.parse().ok(),
    }
}

/// `ops` CAS increments by `workers` concurrent clients, worker `w` on
/// `stores[w % len]` incrementing the counter `key(w)`.
async fn run(
    stores: &[Arc<dyn Store>],
    workers: usize,
    ops: usize,
    key: impl Fn(usize) -> String,
) -> Row {
    let keys: Vec<String> = (0..workers).map(&key).collect();
    let mut distinct = keys.clone();
    distinct.sort();
    distinct.dedup();
    let mut start_total = 0u64;
    for k in &distinct {
        start_total += stores[0].get(k).await.ok().and_then(counter).unwrap_or(0);
    }
    let claimed = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let started = Instant::now();
    let tasks: Vec<_> = keys
        .into_iter()
        .enumerate()
        .map(|(w, key)| {
            let s = stores[w % stores.len()].clone();
            let (claimed, first_error) = (claimed.clone(), first_error.clone());
            tokio::spawn(async move {
                let (mut lat, mut errors, mut conflicts) = (Vec::new(), 0usize, 0u64);
                while claimed.fetch_add(1, Ordering::Relaxed) < ops {
                    let t = Instant::now();
                    match cas_increment(s.as_ref(), &key).await {
                        Ok((_, retries)) => {
                            lat.push(t.elapsed());
                            conflicts += u64::from(retries);
                        }
                        Err(e) => {
                            errors += 1;
                            let mut f = first_error.lock().unwrap_or_else(|e| e.into_inner());
                            f.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                (lat, errors, conflicts)
            })
        })
        .collect();
    let mut row = Row::default();
    let mut lat = Vec::with_capacity(ops);
    for t in tasks {
        if let Ok((l, e, c)) = t.await {
            lat.extend(l);
            row.errors += e;
            row.conflicts += c;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let mut end_total = 0u64;
    for k in &distinct {
        end_total += stores[0].get(k).await.ok().and_then(counter).unwrap_or(0);
    }
    row.ops = lat.len();
    row.ops_per_sec = lat.len() as f64 / elapsed.max(1e-9);
    row.p50 = percentile(&lat, 0.5);
    row.p99 = percentile(&lat, 0.99);
    row.consistent = end_total.checked_sub(start_total) == Some(lat.len() as u64);
    row.first_error = first_error.lock().unwrap_or_else(|e| e.into_inner()).take();
    row
}

fn arcs(stores: Vec<EtcdStore>) -> Vec<Arc<dyn Store>> {
    stores
        .into_iter()
        .map(|s| Arc::new(s) as Arc<dyn Store>)
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

/// The medians of one backend's rounds of one workload.
struct Summary {
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
    conflicts_per_op: f64,
    consistent: bool,
    first_error: Option<String>,
}

fn summarize(rows: &[Row]) -> Summary {
    let ops: usize = rows.iter().map(|r| r.ops).sum();
    Summary {
        ops_per_sec: median(rows.iter().map(|r| r.ops_per_sec).collect()),
        p50_ms: median(rows.iter().map(|r| r.p50.as_secs_f64() * 1e3).collect()),
        p99_ms: median(rows.iter().map(|r| r.p99.as_secs_f64() * 1e3).collect()),
        errors: rows.iter().map(|r| r.errors).sum(),
        conflicts_per_op: rows.iter().map(|r| r.conflicts).sum::<u64>() as f64 / ops.max(1) as f64,
        consistent: rows.iter().all(|r| r.consistent),
        first_error: rows.iter().find_map(|r| r.first_error.clone()),
    }
}

fn leader_stats(nodes: &[Arc<EmbeddedStore>]) -> LogWriteStats {
    let leader = nodes
        .iter()
        .find(|n| n.progress().leader == Some(n.node_id()));
    leader.map(|n| n.log_write_stats()).unwrap_or_default()
}

struct Workload {
    name: &'static str,
    workers: usize,
    /// Share of OPS_PER_ROW this workload runs.
    ops_div: usize,
    key: fn(usize) -> String,
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        name: "one key, 1 client",
        workers: 1,
        ops_div: 4,
        key: |_| "seq".to_string(),
    },
    Workload {
        name: "one key, 16 clients",
        workers: 16,
        ops_div: 1,
        key: |_| "conc".to_string(),
    },
    Workload {
        name: "32 keys, 32 clients",
        workers: 32,
        ops_div: 1,
        key: |w| format!("ind/{w}"),
    },
];

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let ops: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
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
    let backends: [(&str, Vec<Arc<dyn Store>>); 3] = [
        ("ours (3 nodes)", embedded),
        ("etcd (3 nodes)", etcd3),
        ("etcd (1 server)", etcd1),
    ];

    println!(
        "Store benchmark: CAS increments (linearizable get, then compare-and-set), \
         {ops} per row ({} for 1 client), {rounds} interleaved rounds, medians; \
         same machine, one run; clients spread over the members",
        ops / 4
    );
    // rows[workload][backend] = one Row per round.
    let mut rows: Vec<Vec<Vec<Row>>> = vec![vec![Vec::new(); backends.len()]; WORKLOADS.len()];
    // The leader's log entries and fsyncs for our rows, per workload.
    let mut log = vec![LogWriteStats::default(); WORKLOADS.len()];
    for round in 0..rounds {
        for (wi, w) in WORKLOADS.iter().enumerate() {
            for k in 0..backends.len() {
                let bi = (k + round) % backends.len();
                let (label, stores) = &backends[bi];
                let before = (bi == 0).then(|| leader_stats(&nodes));
                let r = run(stores, w.workers, ops / w.ops_div, |i| {
                    format!("/bench/{label}/{}", (w.key)(i))
                })
                .await;
                if let Some(b) = before {
                    let a = leader_stats(&nodes);
                    log[wi].entries += a.entries.saturating_sub(b.entries);
                    log[wi].durable_commits += a.durable_commits.saturating_sub(b.durable_commits);
                }
                eprintln!(
                    "round {round}: {label:<16} {:<20} {:>6.0} ops/s p99 {:>8.2} ms{}",
                    w.name,
                    r.ops_per_sec,
                    r.p99.as_secs_f64() * 1e3,
                    if r.errors > 0 {
                        format!(" errors {}", r.errors)
                    } else {
                        String::new()
                    }
                );
                rows[wi][bi].push(r);
            }
        }
    }
    let sums: Vec<Vec<Summary>> = rows
        .iter()
        .map(|per_backend| per_backend.iter().map(|r| summarize(r)).collect())
        .collect();
    println!(
        "| workload | backend | ops/s | p50 ms | p99 ms | lost races per op | errors |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: |"
    );
    for (wi, w) in WORKLOADS.iter().enumerate() {
        for (bi, (label, _)) in backends.iter().enumerate() {
            let s = &sums[wi][bi];
            println!(
                "| {} | {label} | {:.0} | {:.2} | {:.1} | {:.2} | {}{} |",
                w.name,
                s.ops_per_sec,
                s.p50_ms,
                s.p99_ms,
                s.conflicts_per_op,
                s.errors,
                if s.consistent {
                    ""
                } else {
                    " COUNTER INCONSISTENT"
                }
            );
        }
    }
    println!("Ours / etcd (3 nodes)   goal: throughput >= 1x, p99 <= 2x");
    for (wi, w) in WORKLOADS.iter().enumerate() {
        let (e, d) = (&sums[wi][0], &sums[wi][1]);
        let ops_done: usize = rows[wi][0].iter().map(|r| r.ops).sum();
        println!(
            "  {:<22} throughput {:>5.2}x   p99 {:>5.2}x   ours: {:.2} log entries and {:.2} fsyncs per op on the leader",
            w.name,
            e.ops_per_sec / d.ops_per_sec.max(1e-9),
            e.p99_ms / d.p99_ms.max(1e-9),
            log[wi].entries as f64 / ops_done.max(1) as f64,
            log[wi].durable_commits as f64 / ops_done.max(1) as f64,
        );
    }
    for (wi, w) in WORKLOADS.iter().enumerate() {
        for (bi, (label, _)) in backends.iter().enumerate() {
            if let Some(e) = &sums[wi][bi].first_error {
                println!("  first error, {label}, {}: {e}", w.name);
            }
        }
    }
    for n in nodes {
        n.shutdown().await;
    }
}
