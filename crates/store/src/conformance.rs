//! The conformance suite every [`Store`] backend must pass, unchanged.
//!
//! Each behaviour is a `pub async fn name(store: Arc<dyn Store>)` that
//! panics (with a message) when the backend misbehaves. Every behaviour
//! works under its own unique key prefix and tolerates other writers on the
//! same store, so all of them can run at once against one shared server.
//!
//! Two ways to run the suite:
//!
//! - [`conformance_tests!`](crate::conformance_tests) expands to one
//!   `#[tokio::test]` per behaviour, each building its store with the given
//!   expression (which may `.await`):
//!
//!   ```ignore
//!   socketplane_store::conformance_tests!(std::sync::Arc::new(socketplane_store::MemStore::new()));
//!   ```
//!
//! - [`run_all`] runs every behaviour concurrently, each on a store from the
//!   factory, and panics listing every behaviour that failed; for backends
//!   whose setup is expensive (one etcd server for the whole suite).
//!
//! [`watch_compacted`] is not part of either: it needs a backend-specific
//! way to compact (e.g. `MemStore::compact`, `EtcdStore::compact`).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::{Compare, Event, EventKind, Op, Revision, Store, StoreError, Txn, WatchStream};

#[cfg(feature = "etcd")]
pub mod etcd_server;

/// How long a watch may take to deliver an event before a behaviour fails.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A key prefix no other test (or earlier run on the same server) uses.
pub fn unique_prefix(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "/conformance/{test}/{}-{nanos}-{}/",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The next event of a watch, failing the test after [`EVENT_TIMEOUT`].
pub async fn next_event(w: &mut WatchStream) -> Event {
    match tokio::time::timeout(EVENT_TIMEOUT, w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended unexpectedly"),
        Err(_) => panic!("no watch event within {EVENT_TIMEOUT:?}"),
    }
}

/// The next `n` events of a watch.
pub async fn next_events(w: &mut WatchStream, n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next_event(w).await);
    }
    out
}

/// Asserts no event arrives within `wait`.
async fn assert_quiet(w: &mut WatchStream, wait: Duration) {
    if let Ok(item) = tokio::time::timeout(wait, w.next()).await {
        panic!("expected no watch event, got {item:?}");
    }
}

async fn put(store: &Arc<dyn Store>, key: &str, value: &str) -> Revision {
    store
        .put(key, value.as_bytes().to_vec())
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"))
}

/// Put/get: revisions grow, `create_revision` survives updates,
/// `mod_revision` follows them, missing keys read as `None`.
pub async fn put_get_revisions(store: Arc<dyn Store>) {
    let p = unique_prefix("put_get_revisions");
    let a = format!("{p}a");
    assert!(store.get(&a).await.unwrap().is_none(), "fresh key exists");
    let r1 = put(&store, &a, "one").await;
    assert!(r1 > 0, "first write got revision {r1}");
    let kv = store.get(&a).await.unwrap().expect("key just written");
    assert_eq!(kv.key, a);
    assert_eq!(kv.value, b"one");
    assert_eq!(kv.create_revision, r1);
    assert_eq!(kv.mod_revision, r1);
    assert_eq!(kv.lease, None);

    let r2 = put(&store, &a, "two").await;
    assert!(r2 > r1, "revision did not grow: {r1} then {r2}");
    let kv = store.get(&a).await.unwrap().expect("key just written");
    assert_eq!(kv.value, b"two");
    assert_eq!(kv.create_revision, r1, "create_revision changed on update");
    assert_eq!(kv.mod_revision, r2);

    let r3 = put(&store, &format!("{p}b"), "").await;
    assert!(r3 > r2);
    let kv = store
        .get(&format!("{p}b"))
        .await
        .unwrap()
        .expect("empty value");
    assert!(kv.value.is_empty());
    assert!(store.get(&format!("{p}c")).await.unwrap().is_none());
}

/// List: only keys under the prefix, sorted by key, read at a revision at
/// least as new as the last write.
pub async fn list_prefix_sorted(store: Arc<dyn Store>) {
    let p = unique_prefix("list_prefix_sorted");
    let base = format!("{p}dir/");
    let mut last = 0;
    for k in ["m", "a", "z", "b/c", "b"] {
        last = put(&store, &format!("{base}{k}"), k).await;
    }
    // Keys sharing the textual prefix but outside it must not show.
    put(&store, &format!("{p}dir"), "x").await;
    last = last.max(put(&store, &format!("{p}dirx/a"), "x").await);

    let l = store.list(&base).await.unwrap();
    let keys: Vec<String> = l.kvs.iter().map(|kv| kv.key.clone()).collect();
    let want: Vec<String> = ["a", "b", "b/c", "m", "z"]
        .iter()
        .map(|k| format!("{base}{k}"))
        .collect();
    assert_eq!(keys, want);
    assert!(
        l.revision >= last,
        "listing revision {} older than last write {last}",
        l.revision
    );
    for kv in &l.kvs {
        assert_eq!(kv.value, &kv.key.as_bytes()[base.len()..]);
        assert!(kv.mod_revision <= l.revision);
    }
    let empty = store.list(&format!("{p}nothing/")).await.unwrap();
    assert!(empty.kvs.is_empty());
    assert!(empty.revision >= last);
}

/// A transaction applies when its compares hold and writes nothing when
/// they do not.
pub async fn txn_success_and_failure(store: Arc<dyn Store>) {
    let p = unique_prefix("txn_success_and_failure");
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    let r1 = put(&store, &a, "1").await;

    let ok = store
        .txn(
            Txn::new()
                .when(Compare::mod_revision(&a, r1))
                .then(Op::put(&a, "2"))
                .then(Op::put(&b, "2")),
        )
        .await
        .unwrap();
    assert!(ok.succeeded, "compare on the current mod_revision failed");
    assert!(ok.revision > r1);
    for k in [&a, &b] {
        let kv = store.get(k).await.unwrap().expect("written by txn");
        assert_eq!(kv.value, b"2");
        assert_eq!(kv.mod_revision, ok.revision);
    }

    // Stale compare: nothing at all is written.
    let failed = store
        .txn(
            Txn::new()
                .when(Compare::mod_revision(&a, r1))
                .then(Op::put(&a, "3"))
                .then(Op::delete(&b))
                .then(Op::put(format!("{p}c"), "3")),
        )
        .await
        .unwrap();
    assert!(!failed.succeeded, "compare on a stale mod_revision held");
    assert!(failed.revision >= ok.revision);
    let kv = store.get(&a).await.unwrap().expect("a still there");
    assert_eq!(
        (kv.value.as_slice(), kv.mod_revision),
        (&b"2"[..], ok.revision)
    );
    assert!(
        store.get(&b).await.unwrap().is_some(),
        "failed txn deleted b"
    );
    assert!(
        store.get(&format!("{p}c")).await.unwrap().is_none(),
        "failed txn wrote c"
    );

    // One failing compare among several fails the whole transaction.
    let mixed = store
        .txn(
            Txn::new()
                .when(Compare::mod_revision(&a, ok.revision))
                .when(Compare::absent(&b))
                .then(Op::put(&a, "4")),
        )
        .await
        .unwrap();
    assert!(!mixed.succeeded);
    assert_eq!(store.get(&a).await.unwrap().unwrap().value, b"2");
}

/// `Compare::absent` holds exactly when the key does not exist.
pub async fn txn_absent_compare(store: Arc<dyn Store>) {
    let p = unique_prefix("txn_absent_compare");
    let k = format!("{p}k");
    let create = |v: &'static str| Txn::new().when(Compare::absent(&k)).then(Op::put(&k, v));
    let first = store.txn(create("first")).await.unwrap();
    assert!(first.succeeded, "absent compare failed on a missing key");
    let second = store.txn(create("second")).await.unwrap();
    assert!(!second.succeeded, "absent compare held on an existing key");
    assert_eq!(store.get(&k).await.unwrap().unwrap().value, b"first");

    store.delete(&k).await.unwrap();
    let again = store.txn(create("again")).await.unwrap();
    assert!(again.succeeded, "absent compare failed after delete");
    let kv = store.get(&k).await.unwrap().unwrap();
    assert_eq!(
        kv.create_revision, again.revision,
        "re-created key kept old create_revision"
    );
}

/// All ops of one transaction land at one revision, atomically.
pub async fn txn_multi_op_atomic(store: Arc<dyn Store>) {
    let p = unique_prefix("txn_multi_op_atomic");
    let (a, b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
    put(&store, &c, "old").await;
    let r = store
        .txn(
            Txn::new()
                .then(Op::put(&a, "A"))
                .then(Op::put(&b, "B"))
                .then(Op::delete(&c)),
        )
        .await
        .unwrap();
    assert!(r.succeeded);
    let l = store.list(&p).await.unwrap();
    let got: Vec<(String, Revision)> = l
        .kvs
        .iter()
        .map(|kv| (kv.key.clone(), kv.mod_revision))
        .collect();
    assert_eq!(got, vec![(a, r.revision), (b, r.revision)]);
}

/// Delete removes a key at a new revision; deleting a missing key is not an
/// error and writes nothing (no event).
pub async fn delete_semantics(store: Arc<dyn Store>) {
    let p = unique_prefix("delete_semantics");
    let k = format!("{p}k");
    let r1 = put(&store, &k, "v").await;
    let mut w = store.watch(&p, 0).await.unwrap();
    let rd = store.delete(&k).await.unwrap();
    assert!(rd > r1, "delete did not bump the revision");
    assert!(store.get(&k).await.unwrap().is_none());
    let ev = next_event(&mut w).await;
    assert_eq!(ev.kind, EventKind::Delete);
    assert_eq!(ev.kv.key, k);
    assert_eq!(ev.kv.mod_revision, rd);
    assert!(ev.kv.value.is_empty());

    // Deleting missing keys: no error, no event.
    store.delete(&k).await.unwrap();
    store
        .txn(
            Txn::new()
                .then(Op::delete(format!("{p}x")))
                .then(Op::delete(format!("{p}y"))),
        )
        .await
        .unwrap();
    let marker = put(&store, &format!("{p}marker"), "m").await;
    let ev = next_event(&mut w).await;
    assert_eq!(
        (ev.kind, ev.kv.key.as_str(), ev.kv.mod_revision),
        (EventKind::Put, format!("{p}marker").as_str(), marker),
        "a delete of a missing key produced an event"
    );
}

/// A watch from now sees every later write under its prefix, in revision
/// order, without gaps, and nothing outside the prefix.
pub async fn watch_ordering_no_gaps(store: Arc<dyn Store>) {
    let p = unique_prefix("watch_ordering_no_gaps");
    let mut w = store.watch(&format!("{p}in/"), 0).await.unwrap();
    let mut want = Vec::new();
    for i in 0..30 {
        let key = format!("{p}in/{}", i % 7);
        if i % 5 == 4 {
            let r = store.delete(&key).await.unwrap();
            // Deleting a key not written yet writes nothing.
            if want
                .iter()
                .rev()
                .find(|(k, _, _)| *k == key)
                .is_some_and(|(_, kind, _)| *kind == EventKind::Put)
            {
                want.push((key, EventKind::Delete, r));
            }
        } else {
            let r = put(&store, &key, &i.to_string()).await;
            want.push((key, EventKind::Put, r));
        }
        put(&store, &format!("{p}out/{i}"), "x").await;
    }
    let got = next_events(&mut w, want.len()).await;
    let got: Vec<(String, EventKind, Revision)> = got
        .into_iter()
        .map(|e| (e.kv.key, e.kind, e.kv.mod_revision))
        .collect();
    assert_eq!(got, want);
    assert_quiet(&mut w, Duration::from_millis(300)).await;
}

/// A watch from a past revision replays history from exactly that revision.
pub async fn watch_from_revision_replay(store: Arc<dyn Store>) {
    let p = unique_prefix("watch_from_revision_replay");
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(put(&store, &format!("{p}k{i}"), &i.to_string()).await);
    }
    let mut w = store.watch(&p, revs[2]).await.unwrap();
    let got = next_events(&mut w, 3).await;
    let got: Vec<(String, Revision)> = got
        .into_iter()
        .map(|e| (e.kv.key, e.kv.mod_revision))
        .collect();
    let want: Vec<(String, Revision)> = (2..5).map(|i| (format!("{p}k{i}"), revs[i])).collect();
    assert_eq!(got, want, "replay from revision {}", revs[2]);
    // Then live events continue seamlessly.
    let r = put(&store, &format!("{p}live"), "x").await;
    let ev = next_event(&mut w).await;
    assert_eq!((ev.kv.key, ev.kv.mod_revision), (format!("{p}live"), r));

    // A listing's revision + 1 is a valid starting point.
    let l = store.list(&p).await.unwrap();
    let mut w2 = store.watch(&p, l.revision + 1).await.unwrap();
    let r2 = put(&store, &format!("{p}after"), "y").await;
    let ev = next_event(&mut w2).await;
    assert_eq!((ev.kv.key, ev.kv.mod_revision), (format!("{p}after"), r2));
}

/// A transaction's ops reach watchers as events sharing one revision.
pub async fn watch_sees_txn_at_same_revision(store: Arc<dyn Store>) {
    let p = unique_prefix("watch_sees_txn_at_same_revision");
    put(&store, &format!("{p}c"), "old").await;
    let mut w = store.watch(&p, 0).await.unwrap();
    let r = store
        .txn(
            Txn::new()
                .when(Compare::absent(format!("{p}a")))
                .then(Op::put(format!("{p}a"), "A"))
                .then(Op::put(format!("{p}b"), "B"))
                .then(Op::delete(format!("{p}c"))),
        )
        .await
        .unwrap();
    assert!(r.succeeded);
    let mut got: Vec<(String, EventKind, Revision)> = next_events(&mut w, 3)
        .await
        .into_iter()
        .map(|e| (e.kv.key, e.kind, e.kv.mod_revision))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            (format!("{p}a"), EventKind::Put, r.revision),
            (format!("{p}b"), EventKind::Put, r.revision),
            (format!("{p}c"), EventKind::Delete, r.revision),
        ]
    );
    assert_quiet(&mut w, Duration::from_millis(200)).await;
}

/// A watch from a compacted revision fails with `Compacted` (either at once
/// or as the stream's first item); a watch from the compaction point works.
/// `compact(rev)` must drop the backend's history below `rev`.
pub async fn watch_compacted<F, Fut>(store: Arc<dyn Store>, compact: F)
where
    F: FnOnce(Revision) -> Fut,
    Fut: Future<Output = ()>,
{
    let p = unique_prefix("watch_compacted");
    let first = put(&store, &format!("{p}k0"), "0").await;
    let mut last = first;
    for i in 1..5 {
        last = put(&store, &format!("{p}k{i}"), &i.to_string()).await;
    }
    compact(last).await;
    match store.watch(&p, first).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!(requested, first);
            assert!(
                compacted > first,
                "compacted revision {compacted} <= requested {first}"
            );
        }
        Err(e) => panic!("expected Compacted, got error {e}"),
        Ok(mut w) => match tokio::time::timeout(EVENT_TIMEOUT, w.next()).await {
            Ok(Some(Err(StoreError::Compacted { .. }))) => {}
            other => panic!("expected a Compacted error from the watch, got {other:?}"),
        },
    }
    let mut w = store
        .watch(&p, last)
        .await
        .expect("watch from the compaction point");
    let ev = next_event(&mut w).await;
    assert_eq!((ev.kv.key, ev.kv.mod_revision), (format!("{p}k4"), last));
}

/// Keys put with a lease vanish when it expires, with delete events;
/// keep-alive on an expired lease is `LeaseNotFound`.
pub async fn lease_expiry(store: Arc<dyn Store>) {
    let p = unique_prefix("lease_expiry");
    let lease = store.lease_grant(Duration::from_secs(1)).await.unwrap();
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    store
        .txn(
            Txn::new()
                .then(Op::put_with_lease(&a, "A", lease))
                .then(Op::put_with_lease(&b, "B", lease)),
        )
        .await
        .unwrap();
    put(&store, &format!("{p}plain"), "stays").await;
    assert_eq!(store.get(&a).await.unwrap().unwrap().lease, Some(lease));
    let mut w = store.watch(&p, 0).await.unwrap();
    let start = Instant::now();
    let evs = next_events(&mut w, 2).await;
    let waited = start.elapsed();
    let mut keys: Vec<&str> = evs.iter().map(|e| e.kv.key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, vec![a.as_str(), b.as_str()]);
    assert!(evs.iter().all(|e| e.kind == EventKind::Delete));
    assert_eq!(
        evs[0].kv.mod_revision, evs[1].kv.mod_revision,
        "lease expiry split over revisions"
    );
    assert!(
        waited < Duration::from_secs(8),
        "lease of 1 s expired after {waited:?}"
    );
    assert!(store.get(&a).await.unwrap().is_none());
    assert!(store.get(&format!("{p}plain")).await.unwrap().is_some());
    match store.lease_keep_alive(lease).await {
        Err(StoreError::LeaseNotFound(id)) => assert_eq!(id, lease),
        other => panic!("keep-alive of an expired lease: {other:?}"),
    }
}

/// Keep-alives hold a lease (and its keys) past its TTL.
pub async fn lease_keep_alive_extends(store: Arc<dyn Store>) {
    let p = unique_prefix("lease_keep_alive_extends");
    let lease = store.lease_grant(Duration::from_secs(2)).await.unwrap();
    let k = format!("{p}k");
    store
        .txn(Txn::new().then(Op::put_with_lease(&k, "v", lease)))
        .await
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(400)).await;
        store
            .lease_keep_alive(lease)
            .await
            .expect("keep-alive of a live lease");
    }
    assert!(
        store.get(&k).await.unwrap().is_some(),
        "key expired despite keep-alives"
    );
    // Without keep-alives it expires.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.get(&k).await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "lease never expired after keep-alives stopped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Revoking a lease deletes its keys at once (one revision); revoking again
/// is fine; the lease cannot be used afterwards.
pub async fn lease_revoke(store: Arc<dyn Store>) {
    let p = unique_prefix("lease_revoke");
    let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    store
        .txn(
            Txn::new()
                .then(Op::put_with_lease(format!("{p}a"), "A", lease))
                .then(Op::put_with_lease(format!("{p}b"), "B", lease)),
        )
        .await
        .unwrap();
    // Re-putting a key without lease detaches it from the lease.
    put(&store, &format!("{p}b"), "B2").await;
    assert_eq!(
        store.get(&format!("{p}b")).await.unwrap().unwrap().lease,
        None
    );
    let mut w = store.watch(&p, 0).await.unwrap();
    store.lease_revoke(lease).await.unwrap();
    let ev = next_event(&mut w).await;
    assert_eq!(
        (ev.kind, ev.kv.key.as_str()),
        (EventKind::Delete, format!("{p}a").as_str())
    );
    assert!(store.get(&format!("{p}a")).await.unwrap().is_none());
    assert!(
        store.get(&format!("{p}b")).await.unwrap().is_some(),
        "detached key was deleted"
    );
    store
        .lease_revoke(lease)
        .await
        .expect("revoking twice is not an error");
    match store
        .txn(Txn::new().then(Op::put_with_lease(format!("{p}c"), "C", lease)))
        .await
    {
        Err(StoreError::LeaseNotFound(_)) => {}
        other => panic!("put with a revoked lease: {other:?}"),
    }
    assert!(store.get(&format!("{p}c")).await.unwrap().is_none());
    assert_quiet(&mut w, Duration::from_millis(200)).await;
}

/// Increments one counter by compare-and-set.
pub async fn cas_increment(store: &dyn Store, key: &str) -> Result<(u64, u32), StoreError> {
    let mut retries = 0;
    loop {
        let cur = store.get(key).await?;
        let (n, rev) = match &cur {
            Some(kv) => (
                std::str::from_utf8(&kv.value)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| StoreError::Corrupt(format!("counter {key} is not a number")))?,
                kv.mod_revision,
            ),
            None => (0, 0),
        };
        let r = store
            .txn(
                Txn::new()
                    .when(Compare::mod_revision(key, rev))
                    .then(Op::put(key, (n + 1).to_string())),
            )
            .await?;
        if r.succeeded {
            return Ok((n + 1, retries));
        }
        retries += 1;
    }
}

/// N tasks CAS-increment one counter concurrently; it ends exactly at N.
pub async fn concurrent_cas_counter(store: Arc<dyn Store>) {
    const N: u64 = 20;
    let p = unique_prefix("concurrent_cas_counter");
    let key = format!("{p}counter");
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let store = store.clone();
            let key = key.clone();
            tokio::spawn(async move { cas_increment(store.as_ref(), &key).await })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        let (n, _) = t.await.expect("task panicked").expect("CAS increment");
        seen.push(n);
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=N).collect::<Vec<_>>(),
        "two increments saw the same value"
    );
    let kv = store.get(&key).await.unwrap().unwrap();
    assert_eq!(kv.value, N.to_string().as_bytes());
}

/// Requests etcd rejects are rejected with `InvalidArgument` and change
/// nothing: an empty key, a negative watch revision.
pub async fn invalid_requests(store: Arc<dyn Store>) {
    let p = unique_prefix("invalid_requests");
    match store
        .txn(
            Txn::new()
                .then(Op::put(format!("{p}ok"), "x"))
                .then(Op::put("", "x")),
        )
        .await
    {
        Err(StoreError::InvalidArgument(_)) => {}
        other => panic!("put of an empty key: expected InvalidArgument, got {other:?}"),
    }
    assert!(
        store.get(&format!("{p}ok")).await.unwrap().is_none(),
        "a rejected transaction wrote its other ops"
    );
    match store.watch(&p, -1).await {
        Err(StoreError::InvalidArgument(_)) => {}
        Err(e) => panic!("watch from -1: expected InvalidArgument, got {e}"),
        Ok(_) => panic!("watch from -1: expected InvalidArgument, got a stream"),
    }
}

/// A put with a lease that does not exist fails the transaction with
/// `LeaseNotFound` only when the compares hold; when they fail the ops are
/// not looked at and the answer is `succeeded = false` (etcd checks only the
/// branch it applies).
pub async fn txn_unknown_lease_only_checked_when_compares_hold(store: Arc<dyn Store>) {
    let p = unique_prefix("txn_unknown_lease");
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    let r1 = put(&store, &a, "1").await;
    // A lease id that surely does not exist: granted, then revoked.
    let gone = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    store.lease_revoke(gone).await.unwrap();
    let with_lease = |rev| {
        Txn::new()
            .when(Compare::mod_revision(&a, rev))
            .then(Op::put_with_lease(&b, "x", gone))
    };
    let stale = store
        .txn(with_lease(r1 + 1_000_000))
        .await
        .unwrap_or_else(|e| panic!("failing compare with an unknown lease: error {e}"));
    assert!(!stale.succeeded, "a stale compare held");
    assert!(stale.revision >= r1);
    match store.txn(with_lease(r1)).await {
        Err(StoreError::LeaseNotFound(_)) => {}
        other => panic!("holding compare with an unknown lease: {other:?}"),
    }
    assert!(store.get(&b).await.unwrap().is_none(), "b was written");
    let kv = store.get(&a).await.unwrap().expect("a");
    assert_eq!(kv.mod_revision, r1, "a was rewritten");
}

/// A compare on the empty key is rejected with `InvalidArgument` (etcd:
/// "key is not provided"), whether or not it would hold, and writes nothing.
pub async fn txn_empty_compare_key_rejected(store: Arc<dyn Store>) {
    let p = unique_prefix("txn_empty_compare_key");
    let k = format!("{p}k");
    for compare in [Compare::absent(""), Compare::mod_revision("", 1)] {
        match store
            .txn(Txn::new().when(compare.clone()).then(Op::put(&k, "x")))
            .await
        {
            Err(StoreError::InvalidArgument(_)) => {}
            other => panic!("compare {compare:?}: expected InvalidArgument, got {other:?}"),
        }
    }
    assert!(
        store.get(&k).await.unwrap().is_none(),
        "a rejected txn wrote"
    );
}

/// Revisions a shared store may see from the other behaviours running at the
/// same time as [`watch_replays_retained_history`] (they write a few
/// hundred).
const CONCURRENT_WRITES_SLACK: usize = 1_000;

/// A watch can replay the last [`crate::kv::DEFAULT_HISTORY`] revisions:
/// after that many writes (less what other writers may have used of the
/// window), a watch from the first still sees every one, in order.
pub async fn watch_replays_retained_history(store: Arc<dyn Store>) {
    const WRITERS: usize = 16;
    let p = unique_prefix("watch_replays_retained_history");
    let total = crate::kv::DEFAULT_HISTORY - CONCURRENT_WRITES_SLACK;
    let first = put(&store, &format!("{p}first"), "0").await;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            let p = p.clone();
            tokio::spawn(async move {
                for i in (w..total - 1).step_by(WRITERS) {
                    put(&store, &format!("{p}k{i:05}"), "v").await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer panicked");
    }
    let mut w = store
        .watch(&p, first)
        .await
        .unwrap_or_else(|e| panic!("watch {total} revisions back: {e}"));
    let evs = next_events(&mut w, total).await;
    assert_eq!(evs[0].kv.mod_revision, first);
    assert!(
        evs.windows(2)
            .all(|e| e[0].kv.mod_revision < e[1].kv.mod_revision),
        "replay out of order"
    );
    let keys: std::collections::HashSet<&str> = evs.iter().map(|e| e.kv.key.as_str()).collect();
    assert_eq!(keys.len(), total, "replay lost or repeated events");
}

/// Status: healthy, names its backend, exactly one leader, revision current.
pub async fn status_reports(store: Arc<dyn Store>) {
    let p = unique_prefix("status_reports");
    let r = put(&store, &format!("{p}k"), "v").await;
    let s = store.status().await.unwrap();
    assert!(s.healthy, "store reports unhealthy: {s:?}");
    assert!(!s.backend.is_empty());
    assert!(
        s.revision >= r,
        "status revision {} < last write {r}",
        s.revision
    );
    let leaders = s
        .members
        .iter()
        .filter(|m| m.role == crate::MemberRole::Leader)
        .count();
    // A healthy store has exactly one leader, and names it.
    assert_eq!(leaders, 1, "expected exactly one leader: {s:?}");
    let l = s.leader.as_ref().expect("a healthy store names its leader");
    assert!(
        s.members
            .iter()
            .any(|m| &m.id == l && m.role == crate::MemberRole::Leader),
        "leader {l} is not the member marked leader: {s:?}"
    );
}

/// The behaviours run by [`run_all`] and
/// [`conformance_tests!`](crate::conformance_tests), by function name.
pub const BEHAVIOURS: &[&str] = &[
    "put_get_revisions",
    "list_prefix_sorted",
    "txn_success_and_failure",
    "txn_absent_compare",
    "txn_multi_op_atomic",
    "delete_semantics",
    "watch_ordering_no_gaps",
    "watch_from_revision_replay",
    "watch_sees_txn_at_same_revision",
    "lease_expiry",
    "lease_keep_alive_extends",
    "lease_revoke",
    "concurrent_cas_counter",
    "invalid_requests",
    "txn_unknown_lease_only_checked_when_compares_hold",
    "txn_empty_compare_key_rejected",
    "watch_replays_retained_history",
    "status_reports",
];

/// Runs one behaviour by name (one of [`BEHAVIOURS`]).
pub async fn run_one(name: &str, store: Arc<dyn Store>) {
    match name {
        "put_get_revisions" => put_get_revisions(store).await,
        "list_prefix_sorted" => list_prefix_sorted(store).await,
        "txn_success_and_failure" => txn_success_and_failure(store).await,
        "txn_absent_compare" => txn_absent_compare(store).await,
        "txn_multi_op_atomic" => txn_multi_op_atomic(store).await,
        "delete_semantics" => delete_semantics(store).await,
        "watch_ordering_no_gaps" => watch_ordering_no_gaps(store).await,
        "watch_from_revision_replay" => watch_from_revision_replay(store).await,
        "watch_sees_txn_at_same_revision" => watch_sees_txn_at_same_revision(store).await,
        "lease_expiry" => lease_expiry(store).await,
        "lease_keep_alive_extends" => lease_keep_alive_extends(store).await,
        "lease_revoke" => lease_revoke(store).await,
        "concurrent_cas_counter" => concurrent_cas_counter(store).await,
        "invalid_requests" => invalid_requests(store).await,
        "txn_unknown_lease_only_checked_when_compares_hold" => {
            txn_unknown_lease_only_checked_when_compares_hold(store).await
        }
        "txn_empty_compare_key_rejected" => txn_empty_compare_key_rejected(store).await,
        "watch_replays_retained_history" => watch_replays_retained_history(store).await,
        "status_reports" => status_reports(store).await,
        other => panic!("unknown conformance behaviour {other:?}"),
    }
}

/// Runs every behaviour in [`BEHAVIOURS`] concurrently, each on a store
/// from `factory`, and panics listing every one that failed. Needs a
/// multi-threaded or current-thread tokio runtime (it spawns tasks).
pub async fn run_all<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let mut tasks = Vec::new();
    for name in BEHAVIOURS {
        let store = factory().await;
        tasks.push((*name, tokio::spawn(run_one(name, store))));
    }
    let mut failed = Vec::new();
    for (name, task) in tasks {
        match task.await {
            Ok(()) => tracing::info!(behaviour = name, "conformance behaviour passed"),
            Err(e) => {
                let msg = match e.try_into_panic() {
                    Ok(p) => p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".into()),
                    Err(e) => e.to_string(),
                };
                eprintln!("conformance behaviour {name} FAILED: {msg}");
                failed.push(format!("{name}: {msg}"));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} conformance behaviours failed:\n{}",
        failed.len(),
        BEHAVIOURS.len(),
        failed.join("\n")
    );
}

/// Expands to one `#[tokio::test]` per conformance behaviour. The argument
/// is an expression (evaluated inside each async test, so it may `.await`)
/// that yields an `Arc<dyn Store>` (or something that coerces to one).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each ($make)
            put_get_revisions
            list_prefix_sorted
            txn_success_and_failure
            txn_absent_compare
            txn_multi_op_atomic
            delete_semantics
            watch_ordering_no_gaps
            watch_from_revision_replay
            watch_sees_txn_at_same_revision
            lease_expiry
            lease_keep_alive_extends
            lease_revoke
            concurrent_cas_counter
            invalid_requests
            txn_unknown_lease_only_checked_when_compares_hold
            txn_empty_compare_key_rejected
            watch_replays_retained_history
            status_reports
        );
    };
    (@each ($make:expr) $($name:ident)*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store: ::std::sync::Arc<dyn $crate::Store> = $make;
                $crate::conformance::$name(store).await;
            }
        )*
    };
}
