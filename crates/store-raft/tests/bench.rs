//! CAS throughput on a 3-node cluster (ignored by default; run with
//! `cargo test --release -p socketplane-store-raft --test bench -- --ignored --nocapture`).

mod common;

use std::sync::Arc;

use common::*;
use socketplane_store::bench::cas_benchmark;
use socketplane_store::Store;
use socketplane_store_raft::RaftTiming;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn cas_throughput_3_nodes() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(3, "bench", dir.path(), |c| {
        c.timing = RaftTiming::default();
    })
    .await;
    let stores: Vec<Arc<dyn Store>> = nodes.iter().map(|n| n.dyn_store()).collect();
    let leader = leader_of(&nodes[0]).await.unwrap();
    let on_leader = vec![nodes[leader as usize - 1].dyn_store()];
    let own_only = std::env::var("BENCH_OWN_KEYS_ONLY").is_ok();
    for conc in [1usize, 8, 32] {
        if own_only {
            break;
        }
        let r = cas_benchmark(stores.clone(), &format!("/bench/all{conc}"), 1000, conc).await;
        eprintln!("all nodes, concurrency {conc}: {r}");
        let r = cas_benchmark(
            on_leader.clone(),
            &format!("/bench/leader{conc}"),
            1000,
            conc,
        )
        .await;
        eprintln!("leader only, concurrency {conc}: {r}");
    }
    // Independent keys: per-worker counters (no CAS conflicts).
    let t = std::time::Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let s = stores[i % 3].clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    socketplane_store::conformance::cas_increment(
                        s.as_ref(),
                        &format!("/bench/k{i}"),
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!(
        "64 workers x 50 CAS on own keys: {:.0} ops/s",
        3200.0 / t.elapsed().as_secs_f64()
    );
}
