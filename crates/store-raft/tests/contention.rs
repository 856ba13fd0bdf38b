//! The store under contention: refuted compares cost no log entry (also
//! the losers of a race, whose winner is still in flight), concurrent
//! proposals share fsyncs, reads write no log entry yet see every
//! acknowledged write, and never come from a deposed leader.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use socketplane_store::{Compare, Op, Store, Txn};
use socketplane_store_raft::RaftTiming;

fn leader_index(nodes: &[Node], leader: u64) -> usize {
    nodes.iter().position(|n| n.id == leader).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuted_cas_writes_no_log_entry() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(3, "refute", dir.path(), |_| {}).await;
    let s0 = nodes[0].dyn_store();
    let first = s0
        .txn(
            Txn::new()
                .when(Compare::absent("k"))
                .then(Op::put("k", "1")),
        )
        .await
        .unwrap();
    assert!(first.succeeded);
    let old = s0.get("k").await.unwrap().unwrap().mod_revision;
    s0.txn(
        Txn::new()
            .when(Compare::mod_revision("k", old))
            .then(Op::put("k", "2")),
    )
    .await
    .unwrap();
    let leader = leader_of(&nodes[0]).await.unwrap();
    let li = leader_index(&nodes, leader);
    // Every node applied the second write (linearizable reads).
    for n in &nodes {
        assert_eq!(n.store.get("k").await.unwrap().unwrap().value, b"2");
    }
    let before: Vec<u64> = nodes.iter().map(|n| n.store.last_log_index()).collect();
    for n in &nodes {
        for _ in 0..10 {
            let r = n
                .store
                .txn(
                    Txn::new()
                        .when(Compare::mod_revision("k", old))
                        .then(Op::put("k", "lost")),
                )
                .await
                .unwrap();
            assert!(!r.succeeded, "a compare on an overwritten revision held");
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after: Vec<u64> = nodes.iter().map(|n| n.store.last_log_index()).collect();
    assert_eq!(
        after[li],
        before[li],
        "refuted compares appended to the leader's log:\n{}",
        nodes[li].store.describe_log_from(before[li] + 1).join("\n")
    );
    assert_eq!(s0.get("k").await.unwrap().unwrap().value, b"2");
    // A compare that holds still goes through.
    let cur = s0.get("k").await.unwrap().unwrap().mod_revision;
    let r = nodes[(li + 1) % 3]
        .store
        .txn(
            Txn::new()
                .when(Compare::mod_revision("k", cur))
                .then(Op::put("k", "3")),
        )
        .await
        .unwrap();
    assert!(r.succeeded);
    assert!(nodes[li].store.last_log_index() > before[li]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_proposals_share_fsyncs() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(3, "group", dir.path(), |_| {}).await;
    let leader = leader_of(&nodes[0]).await.unwrap();
    let li = leader_index(&nodes, leader);
    let store: Arc<dyn Store> = nodes[li].dyn_store();
    let before = nodes[li].store.log_write_stats();
    const N: u64 = 200;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                s.txn(Txn::new().then(Op::put(format!("g/{i}"), "x")))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().succeeded);
    }
    let after = nodes[li].store.log_write_stats();
    let entries = after.entries - before.entries;
    let fsyncs = after.durable_commits - before.durable_commits;
    println!("{N} concurrent proposals: {entries} entries, {fsyncs} fsyncs on the leader");
    assert!(entries >= 1, "no log entry for {N} proposals");
    assert!(
        entries < N,
        "{entries} log entries for {N} concurrent proposals: not batched"
    );
    assert!(
        fsyncs < N,
        "{fsyncs} fsyncs for {N} concurrent proposals: no group commit"
    );
    assert_eq!(store.list("g/").await.unwrap().kvs.len(), N as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposed_leader_does_not_serve_stale_reads() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(3, "deposed", dir.path(), |c| {
        c.timing.request_timeout = Duration::from_secs(2);
    })
    .await;
    let s0 = nodes[0].dyn_store();
    s0.txn(Txn::new().then(Op::put("k", "old"))).await.unwrap();
    let leader = leader_of(&nodes[0]).await.unwrap();
    let li = leader_index(&nodes, leader);
    for n in &nodes {
        assert_eq!(n.store.get("k").await.unwrap().unwrap().value, b"old");
    }
    // Partition the leader: it sends nothing and hears nothing.
    nodes[li].store.set_isolated(true);
    nodes[li].stop_listener().await;
    let other = (li + 1) % 3;
    wait_for("a new leader", Duration::from_secs(10), || {
        let n = &nodes[other];
        async move { leader_of(n).await.is_some_and(|l| l != leader) }
    })
    .await;
    nodes[other]
        .store
        .txn(Txn::new().then(Op::put("k", "new")))
        .await
        .unwrap();
    assert_eq!(
        nodes[other].store.get("k").await.unwrap().unwrap().value,
        b"new"
    );
    // The old leader may still think it leads; it must not answer from
    // its stale state.
    match nodes[li].store.get("k").await {
        Err(_) => {}
        Ok(v) => panic!("deposed leader served a read: {v:?}"),
    }
    nodes[li].store.set_isolated(false);
    for n in &mut nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_do_not_write_the_log_per_renewal() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(3, "renew", dir.path(), |_| {}).await;
    let leader = leader_of(&nodes[0]).await.unwrap();
    let li = leader_index(&nodes, leader);
    let follower = nodes[(li + 1) % 3].dyn_store();
    let ttl = Duration::from_secs(1);
    let kept = follower.lease_grant(ttl).await.unwrap();
    let dropped = follower.lease_grant(ttl).await.unwrap();
    follower
        .txn(
            Txn::new()
                .then(Op::put_with_lease("r/kept", "x", kept))
                .then(Op::put_with_lease("r/dropped", "x", dropped)),
        )
        .await
        .unwrap();
    let before = nodes[li].store.last_log_index();
    // 60 keep-alives over 3 TTLs, from a follower and from the leader.
    let leader_store = nodes[li].dyn_store();
    for i in 0..60 {
        let s = if i % 2 == 0 { &follower } else { &leader_store };
        s.lease_keep_alive(kept).await.expect("keep-alive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let entries = nodes[li].store.last_log_index() - before;
    // At most one entry per TTL (renewal replicated at the deadline, with
    // the other lease's expiry), not one per keep-alive.
    assert!(
        entries <= 6,
        "{entries} log entries for 60 keep-alives over 3 TTLs"
    );
    assert!(
        follower.get("r/kept").await.unwrap().is_some(),
        "renewed lease expired"
    );
    assert!(
        follower.get("r/dropped").await.unwrap().is_none(),
        "unrenewed lease did not expire"
    );
    // Without keep-alives the lease expires within a TTL and a tick or so.
    wait_for("kept lease expiry", Duration::from_secs(5), || {
        let s = follower.clone();
        async move { s.get("r/kept").await.unwrap().is_none() }
    })
    .await;
    match follower.lease_keep_alive(kept).await {
        Err(socketplane_store::StoreError::LeaseNotFound(id)) => assert_eq!(id, kept),
        other => panic!("keep-alive of an expired lease: {other:?}"),
    }
}

/// A 3-voter cluster with production timing (no leader changes while a
/// loaded machine runs the test), settled: every node a voter, the
/// leader's term started.
async fn settled_cluster(name: &str, dir: &std::path::Path) -> (Vec<Node>, usize) {
    let nodes = cluster(3, name, dir, |c| c.timing = RaftTiming::default()).await;
    wait_for("3 voters", Duration::from_secs(30), || {
        let n = &nodes[0];
        async move { voters(n).await.len() == 3 }
    })
    .await;
    let leader = leader_of(&nodes[0]).await.unwrap();
    let li = leader_index(&nodes, leader);
    (nodes, li)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_race_wins_once_and_losers_write_no_log_entry() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (nodes, li) = settled_cluster("race", dir.path()).await;
    let stores: Vec<Arc<dyn Store>> = nodes.iter().map(|n| n.dyn_store()).collect();
    for round in 0..5 {
        let rev = stores[0].put("race", b"start".to_vec()).await.unwrap();
        for s in &stores {
            assert_eq!(s.get("race").await.unwrap().unwrap().mod_revision, rev);
        }
        let before = nodes[li].store.last_log_index();
        // 16 clients, spread over the nodes, race on the same revision.
        let start = Arc::new(tokio::sync::Barrier::new(16));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (s, start) = (stores[i % 3].clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    let r = s
                        .txn(
                            Txn::new()
                                .when(Compare::mod_revision("race", rev))
                                .then(Op::put("race", format!("w{i}"))),
                        )
                        .await
                        .unwrap();
                    (i, r)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            let (i, r) = t.await.unwrap();
            if r.succeeded {
                winners.push((i, r.revision));
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let (w, wrev) = winners[0];
        let kv = stores[(w + 1) % 3].get("race").await.unwrap().unwrap();
        assert_eq!(kv.value, format!("w{w}").into_bytes());
        assert_eq!(kv.mod_revision, wrev);
        // The losers changed nothing: the store is at the winner's revision.
        assert_eq!(
            stores[0].list("").await.unwrap().revision,
            wrev,
            "round {round}: a losing compare wrote"
        );
        let entries = nodes[li].store.last_log_index() - before;
        assert_eq!(
            entries,
            1,
            "round {round}: {entries} log entries for one winner and 15 losers:\n{}",
            nodes[li].store.describe_log_from(before + 1).join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_see_writes_acknowledged_elsewhere_without_log_writes() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (nodes, li) = settled_cluster("readidx", dir.path()).await;
    for i in 0..30usize {
        let value = format!("v{i}").into_bytes();
        let rev = nodes[i % 3].store.put("r", value.clone()).await.unwrap();
        // Acknowledged on one node: the next read anywhere else sees it.
        for n in [&nodes[(i + 1) % 3], &nodes[(i + 2) % 3]] {
            let kv = n.store.get("r").await.unwrap().unwrap();
            assert_eq!((kv.value, kv.mod_revision), (value.clone(), rev));
            assert!(n.store.list("").await.unwrap().revision >= rev);
        }
    }
    let before = nodes[li].store.last_log_index();
    let reads: Vec<_> = (0..60)
        .map(|i| {
            let s = nodes[i % 3].dyn_store();
            tokio::spawn(async move { s.get("r").await.unwrap().unwrap().value })
        })
        .collect();
    for r in reads {
        assert_eq!(r.await.unwrap(), b"v29");
    }
    assert_eq!(
        nodes[li].store.last_log_index(),
        before,
        "linearizable reads wrote the log"
    );
}
