//! Multi-node embedded store clusters over loopback TCP.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use socketplane_store::{conformance, MemberRole, Op, Store, StoreError, Txn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_conformance() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(3, "c3", dir.path(), |_| {}).await;
    let stores: Vec<Arc<dyn Store>> = nodes.iter().map(|n| n.dyn_store()).collect();
    let next = AtomicUsize::new(0);
    conformance::run_all(|| {
        let s = stores[next.fetch_add(1, Ordering::Relaxed) % stores.len()].clone();
        async move { s }
    })
    .await;
    for n in &nodes {
        let s = n.store.status().await.unwrap();
        assert!(s.healthy, "{s:?}");
        assert_eq!(s.members.len(), 3);
        assert_eq!(
            s.members
                .iter()
                .filter(|m| m.role == MemberRole::Leader)
                .count(),
            1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_join_and_replace_dead_voter() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(5, "rep", dir.path(), |c| {
        c.replace_after = Duration::from_millis(1500);
    })
    .await;
    // Voters are promoted as nodes join: all there by the time the last
    // joined.
    wait_for("3 voters", Duration::from_secs(2), || {
        let n = &nodes[0];
        async move { voters(n).await == vec![1, 2, 3] }
    })
    .await;
    let st = nodes[0].store.status().await.unwrap();
    assert_eq!(st.members.len(), 5);
    for m in &st.members {
        if m.id == "4" || m.id == "5" {
            assert_eq!(m.role, MemberRole::Replica, "{st:?}");
        }
    }
    // Replicas serve (linearizable) reads.
    nodes[0].store.put("/r", b"1".to_vec()).await.unwrap();
    assert_eq!(nodes[4].store.get("/r").await.unwrap().unwrap().value, b"1");

    // Keep writing through a surviving voter while a follower voter dies.
    let leader = leader_of(&nodes[0]).await.unwrap();
    let victim = [1u64, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let writer_node = [1u64, 2, 3]
        .into_iter()
        .find(|id| *id != leader && *id != victim)
        .unwrap();
    let writer = nodes[writer_node as usize - 1].dyn_store();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let wtask = tokio::spawn(async move {
        let mut n = 0u64;
        let mut errors = Vec::new();
        while !stop2.load(Ordering::SeqCst) {
            if let Err(e) = writer.put(&format!("/w/{n}"), b"v".to_vec()).await {
                errors.push(e.to_string());
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (n, errors)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes[victim as usize - 1].stop().await;
    let t0 = Instant::now();
    let probe = &nodes[writer_node as usize - 1];
    // Promotion follows `replace_after` (1.5 s) of silence plus one
    // membership round (a few heartbeats): fail at about three times that.
    wait_for(
        "a replica promoted",
        Duration::from_secs(5),
        || async move {
            let v = voters(probe).await;
            v.len() == 3 && !v.contains(&victim) && (v.contains(&4) || v.contains(&5))
        },
    )
    .await;
    eprintln!("voter {victim} replaced after {:?}", t0.elapsed());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (n, errors) = wtask.await.unwrap();
    assert!(
        errors.is_empty(),
        "writes failed during replacement: {errors:?}"
    );
    assert!(n > 20);
    let st = probe.store.status().await.unwrap();
    assert!(st.healthy);
    // The dead voter is kept as a replica.
    assert!(st
        .members
        .iter()
        .any(|m| m.id == victim.to_string() && m.role == MemberRole::Replica));

    // The stopped node comes back and catches up as a replica.
    nodes[victim as usize - 1].restart().await;
    let back = nodes[victim as usize - 1].dyn_store();
    let l = back.list("/w/").await.unwrap();
    assert_eq!(l.kvs.len() as u64, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_removes_member() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(4, "leave", dir.path(), |_| {}).await;
    wait_for("4 members", Duration::from_secs(2), || {
        let n = &nodes[0];
        async move { n.store.status().await.unwrap().members.len() == 4 }
    })
    .await;
    nodes[1].store.leave().await.unwrap();
    // One membership round after the leave (200 ms period).
    wait_for(
        "replica promoted after leave",
        Duration::from_secs(2),
        || {
            let n = &nodes[0];
            async move { voters(n).await == vec![1, 3, 4] }
        },
    )
    .await;
    nodes[0].store.put("/x", b"1".to_vec()).await.unwrap();
    assert_eq!(nodes[3].store.get("/x").await.unwrap().unwrap().value, b"1");
    let err = match nodes[0].store.lease_keep_alive(424242).await {
        Err(e) => e,
        Ok(()) => panic!("keep-alive of an unknown lease succeeded"),
    };
    assert!(matches!(err, StoreError::LeaseNotFound(424242)), "{err}");

    // The leader itself leaves: the others elect a new one and go on.
    let leader = leader_of(&nodes[0]).await.unwrap();
    let li = nodes.iter().position(|n| n.id == leader).unwrap();
    nodes[li].store.leave().await.unwrap();
    let other = nodes
        .iter()
        .position(|n| n.id != leader && n.id != 2)
        .unwrap();
    let probe = &nodes[other];
    // An election (at most 300 ms) after the leader removed itself.
    wait_for(
        "leader gone from membership",
        Duration::from_secs(3),
        || async move {
            let s = probe.store.status().await.unwrap();
            s.members.len() == 2 && s.leader.is_some() && s.leader != Some(leader.to_string())
        },
    )
    .await;
    probe
        .store
        .put("/after-leader-left", b"1".to_vec())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_gets_snapshot_and_log_is_purged() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let cfg = |c: &mut socketplane_store_raft::EmbeddedConfig| {
        c.timing.snapshot_every = 100;
    };
    let mut nodes = cluster(1, "snap", dir.path(), cfg).await;
    let first = nodes[0].store.put("/s/first", b"0".to_vec()).await.unwrap();
    for i in 0..600 {
        nodes[0]
            .store
            .put(&format!("/s/{i:04}"), i.to_string().into_bytes())
            .await
            .unwrap();
    }
    let n2 = Node::start(2, "snap", dir.path().join("n2"), None, cfg).await;
    n2.store.join(nodes[0].addr).await.unwrap();
    assert!(n2.store.is_member());
    let l = n2.store.list("/s/").await.unwrap();
    assert_eq!(l.kvs.len(), 601);
    // Its watch history starts at the snapshot it installed.
    match n2.store.watch("/s/", first).await {
        Err(StoreError::Compacted { requested, .. }) => assert_eq!(requested, first),
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(_) => panic!("expected Compacted from a node that installed a snapshot"),
    }
    nodes.push(n2);
    // Restart the joiner: it reloads its persisted snapshot and log.
    nodes[1].stop().await;
    // Two voters, one down: no quorum, so writes fail, within the request
    // timeout (10 s) and a little.
    let t0 = Instant::now();
    assert!(nodes[0]
        .store
        .put("/s/no-quorum", b"x".to_vec())
        .await
        .is_err());
    assert!(t0.elapsed() < Duration::from_secs(12));
    nodes[1].restart().await;
    assert!(nodes[1].store.is_member());
    let n = nodes[1].store.list("/s/").await.unwrap().kvs.len();
    // The write without quorum may still commit once the quorum is back.
    assert!(n == 601 || n == 602, "{n}");
    // The log was purged behind the snapshots: the database keeps at most
    // the entries since the last snapshot (100), the ones openraft keeps
    // before it (25) and one purge batch (64), not the 600 written.
    nodes[0].stop().await;
    let kept = persisted_log_entries(&nodes[0].dir.join("raft.redb"));
    assert!(
        kept <= 2 * 100,
        "the database kept {kept} log entries after 600 writes with a snapshot every 100"
    );
}

/// Entries are batches of any size, so a snapshot is also due once the
/// log written since the last one outgrows half of it: with tens of entries of
/// 4 KiB values, far below the entry count of the policy, snapshots are
/// built, each a file of its own, and the node restarts from the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_larger_than_its_snapshot_gets_one() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let cfg = |c: &mut socketplane_store_raft::EmbeddedConfig| {
        c.timing.snapshot_every = 10_000;
        c.timing.snapshot_min_log_bytes = 64 << 10;
    };
    let mut nodes = cluster(1, "snapbytes", dir.path(), cfg).await;
    let value = "v".repeat(4096);
    let put = |key: String| {
        let store = nodes[0].store.clone();
        let value = value.clone().into_bytes();
        async move { store.put(&key, value).await.unwrap() }
    };
    // Below the least log worth a snapshot (10 x 4 KiB < 64 KiB), and far
    // below the count, nothing is built, however long the log waits.
    for i in 0..10 {
        put(format!("/big/0/{i:03}")).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        nodes[0].store.snapshot_index(),
        None,
        "a snapshot of 40 KiB"
    );
    // Each round then writes more than half as much again as the state
    // holds (each node waits for up to 1.5 times its last snapshot), so the
    // log outgrows the snapshot of the round before.
    let mut last = None;
    let mut written = 10;
    for (round, n) in [(0, 30), (1, 70), (2, 180)] {
        for i in 0..n {
            put(format!("/big/{round}/{:03}", i + 10)).await;
        }
        written += n;
        wait_for("a snapshot by size", Duration::from_secs(10), || {
            let s = nodes[0].store.snapshot_index();
            async move { s > last }
        })
        .await;
        last = nodes[0].store.snapshot_index();
    }
    // The log is kept in memory, so it is not left to grow to the whole
    // state: a log of 0.85 times the last snapshot (past half of it, with
    // each node's share of up to half as much again) gets a snapshot too.
    let n = written * 85 / 100;
    for i in 0..n {
        put(format!("/big/3/{i:03}")).await;
    }
    written += n;
    wait_for(
        "a snapshot past half the last",
        Duration::from_secs(10),
        || {
            let s = nodes[0].store.snapshot_index();
            async move { s > last }
        },
    )
    .await;
    last = nodes[0].store.snapshot_index();
    // The snapshot is a file of its own, the one named by the database;
    // those it replaced are gone.
    let files: Vec<_> = std::fs::read_dir(&nodes[0].dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("snapshot-"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    nodes[0].stop().await;
    nodes[0].restart().await;
    assert_eq!(nodes[0].store.snapshot_index(), last);
    let l = nodes[0].store.list("/big/").await.unwrap();
    assert_eq!(l.kvs.len(), written);
    assert!(l.kvs.iter().all(|kv| kv.value == value.as_bytes()));
}

/// How many Raft log entries a (closed) node database holds.
fn persisted_log_entries(path: &std::path::Path) -> u64 {
    use redb::ReadableTableMetadata;
    const LOG: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("raft_log");
    let db = redb::Database::open(path).unwrap();
    let tx = db.begin_read().unwrap();
    let table = tx.open_table(LOG).unwrap();
    table.len().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_leader_failover_with_keep_alive() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(3, "lease", dir.path(), |_| {}).await;
    let leader = leader_of(&nodes[0]).await.unwrap();
    let follower = nodes.iter().position(|n| n.id != leader).unwrap();
    let store = nodes[follower].dyn_store();
    let lease = store.lease_grant(Duration::from_secs(2)).await.unwrap();
    store
        .txn(Txn::new().then(Op::put_with_lease("/live/me", "here", lease)))
        .await
        .unwrap();
    let ka_store = store.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let ka = tokio::spawn(async move {
        while !stop2.load(Ordering::SeqCst) {
            ka_store.lease_keep_alive(lease).await.expect("keep-alive");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let li = nodes.iter().position(|n| n.id == leader).unwrap();
    nodes[li].stop().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        store.get("/live/me").await.unwrap().is_some(),
        "leased key expired across a leader change despite keep-alives"
    );
    stop.store(true, Ordering::SeqCst);
    ka.await.unwrap();
    let t0 = Instant::now();
    // The lease's TTL is 2 s and expiry follows within a tick (100 ms):
    // fail at three times the TTL.
    wait_for("lease expiry", Duration::from_secs(6), || {
        let s = store.clone();
        async move { s.get("/live/me").await.unwrap().is_none() }
    })
    .await;
    eprintln!("lease expired {:?} after keep-alives stopped", t0.elapsed());
    match store.lease_keep_alive(lease).await {
        Err(StoreError::LeaseNotFound(id)) => assert_eq!(id, lease),
        other => panic!("keep-alive after expiry: {other:?}"),
    }
}

/// After all nodes restart at once, each follower already holds the log:
/// the new leader must find where it ends without sending it again
/// (openraft starts its search in the middle and sends up to a full batch
/// per step, which at 100 hosts saturated the machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_restart_does_not_resend_the_log() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(3, "restart", dir.path(), |_| {}).await;
    let writes = 400;
    for i in 0..writes {
        nodes[i % 3]
            .store
            .put(&format!("/k/{i:04}"), b"v".to_vec())
            .await
            .unwrap();
    }
    let last = nodes[0].store.last_log_index();
    wait_for("every node holds the log", Duration::from_secs(10), || {
        let all = nodes.iter().all(|n| n.store.last_log_index() >= last);
        async move { all }
    })
    .await;
    for n in &mut nodes {
        n.stop().await;
    }
    for n in &mut nodes {
        n.restart().await;
    }
    // One write through the new leader, then every node reads it.
    let mut leader = None;
    wait_for(
        "a leader after the restart",
        Duration::from_secs(10),
        || {
            let l = nodes[0].store.progress().leader;
            leader = l;
            async move { l.is_some() }
        },
    )
    .await;
    nodes[0].store.put("/after", b"1".to_vec()).await.unwrap();
    for n in &nodes {
        assert_eq!(n.store.get("/after").await.unwrap().unwrap().value, b"1");
        assert_eq!(n.store.list("/k/").await.unwrap().kvs.len(), writes);
    }
    let leader = leader.expect("a leader");
    let stats = nodes
        .iter()
        .find(|n| n.id == leader)
        .map(|n| n.store.replication_stats())
        .expect("the leader is one of the nodes");
    eprintln!("after the restart the leader sent {stats:?} (log of {last} entries)");
    // The followers lack only what was written after the restart (the
    // leader's blank entry, membership and the one put): far below the
    // half of the log per follower a middle-out search would send.
    assert!(
        stats.entries_sent < 40,
        "the new leader re-sent {} entries of a {last}-entry log the followers held",
        stats.entries_sent
    );
}
