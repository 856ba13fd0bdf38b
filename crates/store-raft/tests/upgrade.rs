//! A data dir written by the first release (whose state machine had its own
//! key-value code and snapshot format) still opens, with its keys, leases
//! and revisions.
//!
//! `fixtures/raft-format1.redb.gz` was written by that release: one node of
//! cluster "legacy" that granted leases 1 and 2, wrote 18 revisions under
//! `/legacy/` and took a snapshot in between (so both a first-format
//! snapshot and first-format log entries after it are read).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use socketplane_store::{Op, StoreError, Txn};

fn unpack_fixture(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/raft-format1.redb.gz"
    );
    let out = Command::new("gzip")
        .args(["-dc", fixture])
        .output()
        .unwrap();
    assert!(out.status.success(), "gzip -dc {fixture}: {out:?}");
    std::fs::write(dir.join("raft.redb"), out.stdout).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_format_data_dir_opens() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    unpack_fixture(&data);
    let mut node = Node::start(1, "legacy", data, None, |_| {}).await;
    assert!(
        node.store.is_member(),
        "the old data dir lost its membership"
    );
    let s = node.dyn_store();
    let l = s.list("/legacy/").await.unwrap();
    assert_eq!(l.revision, 18);
    let keys: Vec<&str> = l.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys.len(), 16, "{keys:?}");
    assert!(!keys.contains(&"/legacy/k00"), "a deleted key came back");
    let leased = s.get("/legacy/leased").await.unwrap().unwrap();
    assert_eq!(
        (leased.value.as_slice(), leased.lease),
        (&b"L"[..], Some(1))
    );
    let tail = s.get("/legacy/tail-leased").await.unwrap().unwrap();
    assert_eq!(tail.lease, Some(2));

    // Both leases live on (fresh TTL from the new leader) and work.
    s.lease_keep_alive(1).await.unwrap();
    s.lease_keep_alive(2).await.unwrap();
    let r = s
        .txn(Txn::new().then(Op::put_with_lease("/legacy/new", "N", 2)))
        .await
        .unwrap();
    assert!(r.succeeded && r.revision == 19, "{r:?}");
    let fresh = s.lease_grant(Duration::from_secs(60)).await.unwrap();
    assert_eq!(fresh, 3, "lease ids must continue after the old ones");
    s.lease_revoke(1).await.unwrap();
    assert!(s.get("/legacy/leased").await.unwrap().is_none());
    assert!(matches!(
        s.lease_keep_alive(1).await,
        Err(StoreError::LeaseNotFound(1))
    ));

    // Reopened, it reads what it wrote in the current format.
    node.stop().await;
    node.restart().await;
    let s = node.dyn_store();
    assert_eq!(s.get("/legacy/new").await.unwrap().unwrap().lease, Some(2));
    assert!(s.get("/legacy/leased").await.unwrap().is_none());
    assert_eq!(s.list("/legacy/").await.unwrap().kvs.len(), 16);
}
