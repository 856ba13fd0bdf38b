//! What TLS costs on the cluster port, side by side in one run: CAS
//! throughput and p50/p99 on two 3-node embedded (Raft) clusters over
//! loopback TCP, each behind the agent's guarded cluster-port server: one
//! with node certificates (mutual TLS 1.3), one `--open` (plain HTTP).
//! Rounds alternate between the two so drift hits both alike.
//!
//! usage: bench_cluster_tls [OPS]   (see bench/tls.sh)

use std::sync::Arc;
use std::time::{Duration, Instant};

use socketplane_store::bench::{cas_benchmark, BenchResult};
use socketplane_store::Store;
use socketplane_store_raft::{EmbeddedConfig, EmbeddedStore};
use socketplane_trust::{NodeKey, PortLimits, PortMode, PortServer, Revoked, Trust};

async fn cluster(dir: &std::path::Path, tls: bool) -> Vec<Arc<EmbeddedStore>> {
    let founder = Trust::found("bench", &format!("{:016x}", 1), Trust::found_secret()).expect("CA");
    let mut nodes = Vec::new();
    for i in 1..=3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let id = format!("{i:016x}");
        let key = NodeKey::generate().expect("key");
        let cert = founder
            .ca
            .issue(&id, &key.request(&id).expect("csr"))
            .expect("cert");
        let mine = Trust {
            ca: founder.ca.clone(),
            secret: founder.secret.clone(),
            node_key: key,
            node_cert_pem: cert,
        };
        let mut cfg = EmbeddedConfig::new(i, "bench", dir.join(format!("n{i}")), addr);
        let mode = if tls {
            cfg.tls = Some(mine.client_config().expect("client tls"));
            PortMode::Tls(mine.server_config().expect("server tls"))
        } else {
            PortMode::Open
        };
        let node = EmbeddedStore::open(cfg).await.expect("open");
        let (tx, rx) = tokio::sync::watch::channel(mode);
        std::mem::forget(tx);
        tokio::spawn(socketplane_trust::serve(PortServer {
            listener,
            router: node.router(),
            mode: rx,
            limits: PortLimits::default(),
            revoked: Revoked::default(),
            issued: Default::default(),
            anonymous_paths: &[],
        }));
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

/// Per run: throughput, p50 (ms), p99 (ms); and errors over all runs.
type Runs = (Vec<f64>, Vec<f64>, Vec<f64>, usize);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let ops: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = cluster(&dir.path().join("tls"), true).await;
    let open = cluster(&dir.path().join("open"), false).await;
    let stores = |n: &[Arc<EmbeddedStore>]| -> Vec<Arc<dyn Store>> {
        n.iter().map(|s| s.clone() as Arc<dyn Store>).collect()
    };
    let (tls_s, open_s) = (stores(&tls), stores(&open));
    println!(
        "Cluster port: mutual TLS vs --open; CAS increments on one key, clients spread over \
         3 members (followers forward to the leader over the port); {ops} per run, 3 rounds \
         alternating, medians"
    );
    for clients in [1usize, 16] {
        let mut rows: [Runs; 2] = Default::default();
        for round in 0..3 {
            for (k, s) in [&tls_s, &open_s].into_iter().enumerate() {
                let n = if clients == 1 { ops / 4 } else { ops };
                let r: BenchResult =
                    cas_benchmark(s.clone(), &format!("/bench/{clients}/{round}"), n, clients)
                        .await;
                rows[k].0.push(r.ops_per_sec);
                rows[k].1.push(ms(r.p50));
                rows[k].2.push(ms(r.p99));
                rows[k].3 += r.errors;
            }
        }
        let mut med = Vec::new();
        for (k, name) in ["TLS", "open"].iter().enumerate() {
            let (t, p50, p99) = (
                median(rows[k].0.clone()),
                median(rows[k].1.clone()),
                median(rows[k].2.clone()),
            );
            println!(
                "  {clients:>2} client(s), {name:<5} {t:>8.0} ops/s   p50 {p50:>6.2} ms   p99 {p99:>6.2} ms   errors {}",
                rows[k].3
            );
            med.push(t);
        }
        println!(
            "  {clients:>2} client(s): TLS throughput cost {:+.1}% (goal: under 10%)",
            (1.0 - med[0] / med[1]) * 100.0
        );
    }
    for n in tls.into_iter().chain(open) {
        n.shutdown().await;
    }
}
