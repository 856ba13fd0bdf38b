//! Which certificate the cluster issued to which node id: the allowlist
//! the cluster port admits node certificates by. Every member holds the CA
//! key, so a certificate of the CA alone proves only that someone who once
//! held the key signed it; the cluster records the key of every
//! certificate it issues (`trust/issued/<id>`, written before the
//! certificate is handed out), and the port admits a certificate only if
//! its node id and key match a record.
//!
//! This node's view comes from its own copy of the state (refreshed by the
//! agent, at once when a check misses). Where that copy has no record for
//! an id (a fresh joiner still catching up), the records the member this
//! node enrolled through sent along (the seed) stand in; while neither
//! holds any record (a founder before its first write, a joiner enrolled by
//! an older member, a cluster made before records existed), any
//! certificate of the CA is admitted: such a node holds nothing of value
//! yet. Nodes registered
//! (`nodes/<id>`) without a record were members before records existed:
//! they are admitted on the CA alone until they record themselves (each
//! member records its own certificate when it starts).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{watch, Notify};

/// How long a check that missed waits for a fresh view.
const MISS_WAIT: Duration = Duration::from_secs(2);

/// What the allowlist says about a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Neither a record nor a registration for this node id.
    Unknown,
    /// The node id has a record, for another key.
    WrongKey,
}

/// A view of the records: key fingerprints by node id, and the node ids
/// registered without a record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IssuedView {
    pub records: HashMap<String, [u8; 32]>,
    pub registered: HashSet<String>,
}

#[derive(Default)]
struct Views {
    /// From this node's state.
    state: IssuedView,
    /// From the member this node enrolled through.
    seed: IssuedView,
    /// Records this node wrote itself (an enrollment it served) and
    /// confirmed by members, until its state shows them.
    extra: HashMap<String, [u8; 32]>,
}

struct Inner {
    views: RwLock<Views>,
    /// Bumped on every refresh.
    refreshed: watch::Sender<u64>,
    /// A check missed: the agent refreshes now rather than in a second.
    wanted: Notify,
    /// The certificates that missed, for the agent to confirm with members.
    missed: std::sync::Mutex<HashMap<String, [u8; 32]>>,
}

/// The allowlist as this node sees it (cheap to clone; shared).
#[derive(Clone)]
pub struct Issued(Arc<Inner>);

impl Default for Issued {
    fn default() -> Self {
        Issued(Arc::new(Inner {
            views: RwLock::new(Views::default()),
            refreshed: watch::channel(0).0,
            wanted: Notify::new(),
            missed: std::sync::Mutex::new(HashMap::new()),
        }))
    }
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

impl Issued {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Views> {
        self.0.views.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Views> {
        self.0.views.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The view of this node's state (after a refresh from the store).
    pub fn replace(&self, state: IssuedView) {
        {
            let mut v = self.write();
            // Once the state has a record for an id, it decides.
            v.extra.retain(|id, _| !state.records.contains_key(id));
            v.state = state;
        }
        self.0.refreshed.send_modify(|n| *n += 1);
    }

    /// The records the member this node enrolled through sent along.
    pub fn seed(&self, seed: IssuedView) {
        self.write().seed = seed;
    }

    /// A record this node knows of before its state shows it: one it just
    /// wrote, or one a member confirmed.
    pub fn insert(&self, id: &str, key: [u8; 32]) {
        self.write().extra.insert(id.to_string(), key);
        self.0.refreshed.send_modify(|n| *n += 1);
    }

    /// What to give a joiner as its seed: this node's best view.
    pub fn view(&self) -> IssuedView {
        let v = self.read();
        let mut view = v.seed.clone();
        view.registered.extend(v.state.registered.iter().cloned());
        for (id, key) in v.state.records.iter().chain(&v.extra) {
            view.registered.remove(id);
            view.records.insert(id.clone(), *key);
        }
        view
    }

    /// Whether the certificate of `id` with key fingerprint `key` is one
    /// the cluster issued, as far as this node knows now: this node's
    /// state decides where it has a record for `id`, else the seed; a node
    /// id registered without a record is admitted; and while neither holds
    /// any record, every certificate of the CA is.
    pub fn check(&self, id: &str, key: &[u8; 32]) -> Admission {
        let v = self.read();
        if v.extra.get(id).is_some_and(|k| k == key) {
            return Admission::Admitted;
        }
        if v.state.records.is_empty() && v.seed.records.is_empty() && v.extra.is_empty() {
            // Nothing recorded anywhere this node can see yet.
            return Admission::Admitted;
        }
        let record = v.state.records.get(id).or_else(|| v.seed.records.get(id));
        match record {
            Some(k) if k == key => Admission::Admitted,
            Some(_) => Admission::WrongKey,
            None if v.state.registered.contains(id) || v.seed.registered.contains(id) => {
                Admission::Admitted
            }
            None => Admission::Unknown,
        }
    }

    /// Whether a record (not a fallback) says the cluster issued this
    /// certificate: what a member confirms to another.
    pub fn recorded(&self, id: &str, key: &[u8; 32]) -> bool {
        let v = self.read();
        v.extra
            .get(id)
            .or_else(|| v.state.records.get(id))
            .or_else(|| v.seed.records.get(id))
            .is_some_and(|k| k == key)
    }

    /// [`check`](Self::check), and on a miss one fresh look: the agent is
    /// asked to refresh (and to confirm the certificate with members) and
    /// the check waits for that, up to two seconds.
    pub async fn admits(&self, id: &str, key: &[u8; 32]) -> Admission {
        let first = self.check(id, key);
        if first == Admission::Admitted {
            return first;
        }
        let mut refreshed = self.0.refreshed.subscribe();
        refreshed.borrow_and_update();
        {
            let mut missed = self.0.missed.lock().unwrap_or_else(|e| e.into_inner());
            // Bounded: only CA-signed certificates get here.
            if missed.len() < 64 {
                missed.insert(id.to_string(), *key);
            }
        }
        self.0.wanted.notify_one();
        let _ = tokio::time::timeout(MISS_WAIT, refreshed.changed()).await;
        self.check(id, key)
    }

    /// Resolves when a check missed (for the agent's refresh loop).
    pub async fn wanted(&self) {
        self.0.wanted.notified().await
    }

    /// The certificates that missed since the last call.
    pub fn take_missed(&self) -> HashMap<String, [u8; 32]> {
        std::mem::take(&mut *self.0.missed.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(records: &[(&str, u8)], registered: &[&str]) -> IssuedView {
        IssuedView {
            records: records
                .iter()
                .map(|(id, k)| (id.to_string(), [*k; 32]))
                .collect(),
            registered: registered.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn records_bind_ids_to_keys_and_a_seed_stands_in_until_the_state_has_any() {
        let issued = Issued::default();
        // Nothing recorded: a fresh joiner without a seed admits the CA.
        assert_eq!(issued.check("a", &[9; 32]), Admission::Admitted);
        issued.seed(view(&[("a", 1)], &[]));
        assert_eq!(issued.check("a", &[1; 32]), Admission::Admitted);
        assert_eq!(issued.check("a", &[9; 32]), Admission::WrongKey);
        assert_eq!(issued.check("b", &[9; 32]), Admission::Unknown);
        issued.replace(view(&[("a", 1), ("b", 2)], &["old"]));
        assert_eq!(issued.check("b", &[2; 32]), Admission::Admitted);
        assert_eq!(issued.check("b", &[1; 32]), Admission::WrongKey);
        assert_eq!(issued.check("old", &[7; 32]), Admission::Admitted);
        assert_eq!(issued.check("new", &[7; 32]), Admission::Unknown);
        // A record written here counts at once, until the state shows it.
        issued.insert("c", [3; 32]);
        assert_eq!(issued.check("c", &[3; 32]), Admission::Admitted);
        assert_eq!(issued.view().records.get("c"), Some(&[3; 32]));
        issued.replace(view(&[("a", 1), ("b", 2), ("c", 3)], &[]));
        assert!(issued.read().extra.is_empty());
    }

    #[tokio::test]
    async fn a_miss_asks_for_a_refresh_and_sees_its_result() {
        let issued = Issued::default();
        issued.replace(view(&[("a", 1)], &[]));
        let refresher = issued.clone();
        let task = tokio::spawn(async move {
            refresher.wanted().await;
            let missed = refresher.take_missed();
            assert_eq!(missed.get("b"), Some(&[2; 32]));
            refresher.replace(view(&[("a", 1), ("b", 2)], &[]));
        });
        assert_eq!(issued.admits("b", &[2; 32]).await, Admission::Admitted);
        task.await.unwrap();
    }
}
