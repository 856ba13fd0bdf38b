//! The agent's side of `socketplane-observe`: the cluster as the HTTP
//! server and `cluster status` show it ([`Observer`]), this host's health
//! report in the store (written when it changes), the other hosts' reports
//! (followed by a watch), and the store's progress as metrics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use socketplane_api::rest::ClusterStatus;
use socketplane_api::{keys, Fault, HealthRecord};
use socketplane_cluster::nodes::{member_node_id, store_role};
use socketplane_cluster::Cluster;
use socketplane_observe::decorate::ObservedDatapath;
use socketplane_observe::events::{emit, StoreLeaderChanged, StoreProgress};
use socketplane_observe::topology::{self, Endpoint, Host, Network, StoreSummary, Topology};
use socketplane_observe::Source;
use socketplane_store_raft::EmbeddedStore;
use tokio::sync::watch;

/// How often this host's health and the store's progress are checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Behind its view this long, a host's datapath counts as stalled.
const STALLED_AFTER: Duration = Duration::from_secs(5);

/// What the HTTP server and `cluster status` see of this agent.
pub struct Observer {
    cluster: Arc<Cluster>,
    datapath: Arc<ObservedDatapath>,
    embedded: Option<Arc<EmbeddedStore>>,
    open: bool,
    /// Every host's last health report, by node id.
    reports: Mutex<BTreeMap<String, HealthRecord>>,
    changes: watch::Sender<u64>,
}

/// This host's health now: its applied lag, since when it lags, its fault.
struct Local {
    lag: i64,
    applied: i64,
    stalled: bool,
    fault: Option<Fault>,
}

impl Observer {
    /// Starts following the cluster (once this node is a member).
    pub fn start(
        cluster: Arc<Cluster>,
        datapath: Arc<ObservedDatapath>,
        embedded: Option<Arc<EmbeddedStore>>,
        open: bool,
    ) -> Arc<Observer> {
        let observer = Arc::new(Observer {
            cluster,
            datapath,
            embedded,
            open,
            reports: Mutex::new(BTreeMap::new()),
            changes: watch::channel(0).0,
        });
        tokio::spawn(observer.clone().follow_view());
        tokio::spawn(observer.clone().follow_reports());
        tokio::spawn(observer.clone().check_loop());
        observer
    }

    fn tick(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    async fn member(&self) {
        let mut ready = self.cluster.subscribe_ready();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Ticks on every new cluster view.
    async fn follow_view(self: Arc<Self>) {
        self.member().await;
        let Some(handle) = self.cluster.reconciler() else {
            return;
        };
        let mut view = handle.view.clone();
        while view.changed().await.is_ok() {
            self.tick();
        }
    }

    /// Keeps [`Observer::reports`] current from a listing and a watch.
    async fn follow_reports(self: Arc<Self>) {
        self.member().await;
        let store = self.cluster.store().clone();
        let mut backoff = Duration::from_millis(200);
        loop {
            let result: Result<(), socketplane_store::StoreError> = async {
                let listing = store.list(keys::HEALTH_PREFIX).await?;
                {
                    let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
                    reports.clear();
                    for kv in &listing.kvs {
                        if let Ok(r) = serde_json::from_slice::<HealthRecord>(&kv.value) {
                            reports.insert(r.node.clone(), r);
                        }
                    }
                }
                self.tick();
                let mut watch = store
                    .watch(keys::HEALTH_PREFIX, listing.revision + 1)
                    .await?;
                while let Some(event) = watch.next().await {
                    let event = event?;
                    let node = event.kv.key.trim_start_matches(keys::HEALTH_PREFIX);
                    let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
                    match event.kind {
                        socketplane_store::EventKind::Put => {
                            if let Ok(r) = serde_json::from_slice::<HealthRecord>(&event.kv.value) {
                                reports.insert(r.node.clone(), r);
                            }
                        }
                        socketplane_store::EventKind::Delete => {
                            reports.remove(node);
                        }
                    }
                    drop(reports);
                    self.tick();
                }
                Ok(())
            }
            .await;
            if let Err(error) = result {
                tracing::debug!(%error, "Lost the watch on the hosts' health reports; listing again.");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// This host's health now.
    fn local(&self, behind_since: Option<Instant>) -> Local {
        let (applied, lag) = match self.cluster.reconciler() {
            Some(h) => {
                let applied = *h.applied.borrow();
                let seen = h.view.borrow().revision;
                (applied, (seen - applied).max(0))
            }
            None => (0, 0),
        };
        Local {
            lag,
            applied,
            stalled: lag > 0 && behind_since.is_some_and(|t| t.elapsed() >= STALLED_AFTER),
            fault: self.datapath.last_fault().map(|f| Fault {
                reason: f.reason.to_string(),
                message: f.message,
            }),
        }
    }

    /// Once a second: this host's report (written when its gist changes)
    /// and the store's progress.
    async fn check_loop(self: Arc<Self>) {
        self.member().await;
        let me = self.cluster.node_id().to_string();
        let mut written: Option<(Option<String>, bool)> = None;
        let mut behind_since: Option<Instant> = None;
        let mut leader: Option<Option<u64>> = None;
        let mut tick = tokio::time::interval(CHECK_EVERY);
        loop {
            tick.tick().await;
            if let Some(embedded) = &self.embedded {
                let p = embedded.progress();
                emit(StoreProgress {
                    term: p.term,
                    apply_lag: p.apply_lag,
                });
                if leader.is_some_and(|l| l != p.leader) {
                    let id = p.leader.map(|l| format!("{l:016x}"));
                    emit(StoreLeaderChanged {
                        leader: id.as_deref(),
                        term: p.term,
                    });
                }
                leader = Some(p.leader);
            }
            let now = self.local(behind_since);
            behind_since = match (now.lag > 0, behind_since) {
                (true, None) => Some(Instant::now()),
                (true, since) => since,
                (false, _) => None,
            };
            let gist = (now.fault.as_ref().map(|f| f.reason.clone()), now.stalled);
            if written.as_ref() == Some(&gist) {
                continue;
            }
            let record = HealthRecord {
                node: me.clone(),
                applied: now.applied,
                lag: now.lag,
                stalled: now.stalled,
                fault: now.fault,
            };
            let Ok(value) = serde_json::to_vec(&record) else {
                continue;
            };
            match self.cluster.store().put(&keys::health(&me), value).await {
                Ok(_) => {
                    if let Some(f) = &record.fault {
                        tracing::warn!(reason = %f.reason, error = %f.message, "This host's datapath is failing; reported it to the cluster.");
                    } else if written.is_some() {
                        tracing::info!("This host's datapath is healthy again.");
                    }
                    written = Some(gist);
                }
                Err(error) => {
                    tracing::debug!(%error, "Could not write this host's health report; will retry.")
                }
            }
        }
    }

    /// Why host `id` is unhealthy, from its liveness and its report (this
    /// host's own: live).
    fn host_problems(&self, id: &str, alive: bool, me: &Local) -> (Option<i64>, Vec<String>) {
        let mut problems = Vec::new();
        if !alive {
            problems.push(
                "agent not responding: its liveness lease expired (agent stopped, host down or cut off)"
                    .to_string(),
            );
        }
        let (lag, stalled, fault) = if id == self.cluster.node_id() {
            (Some(me.lag), me.stalled, me.fault.clone())
        } else {
            let reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
            match reports.get(id) {
                Some(r) => (Some(r.lag), r.stalled, r.fault.clone()),
                None => (None, false, None),
            }
        };
        if alive {
            if let Some(f) = fault {
                problems.push(format!("datapath failing ({}): {}", f.reason, f.message));
            }
            if stalled {
                problems.push(format!(
                    "datapath not converging: {} revision(s) behind",
                    lag.unwrap_or(0)
                ));
            }
        }
        (lag, problems)
    }

    fn store_problems(healthy: Option<bool>) -> Vec<String> {
        match healthy {
            Some(true) => Vec::new(),
            Some(false) => {
                vec!["store unhealthy: no leader with a quorum seen from this node".into()]
            }
            None => vec!["store unreachable from this node".into()],
        }
    }

    /// `cluster status` with each node's health and the cluster's.
    pub fn enrich_status(&self, mut status: ClusterStatus) -> ClusterStatus {
        let me = self.local(None);
        status.open = self.open;
        status.problems = Self::store_problems(Some(status.store.healthy));
        for node in &mut status.nodes {
            let (lag, problems) = self.host_problems(&node.id, node.alive, &me);
            node.applied_lag = lag;
            node.problems = problems;
        }
        status.healthy = status.is_healthy();
        status
    }

    async fn build(&self) -> Option<Topology> {
        let view = self.cluster.view()?;
        let store = self.cluster.store().status().await.ok();
        let external = self.embedded.is_none();
        let me = self.local(None);
        let mut hosts: Vec<Host> = view
            .nodes
            .values()
            .map(|n| {
                let alive = view.alive.contains(&n.id);
                let (applied_lag, problems) = self.host_problems(&n.id, alive, &me);
                Host {
                    id: n.id.clone(),
                    name: n.name.clone(),
                    addr: n.addr,
                    alive,
                    role: store
                        .as_ref()
                        .map_or_else(|| "unknown".into(), |s| store_role(s, &n.id, external)),
                    datapath: n.datapath.clone(),
                    applied_lag,
                    problems,
                }
            })
            .collect();
        hosts.sort_by(|a, b| a.name.cmp(&b.name));
        let reserved = |net: &str| {
            let prefix = keys::reservations(net);
            view.holdings
                .keys()
                .filter(|k| k.starts_with(&prefix))
                .count() as u64
        };
        let networks = view
            .networks
            .values()
            .map(|n| Network {
                id: n.id.clone(),
                name: n.name.clone(),
                subnet: n.subnet,
                gateway: n.gateway,
                vni: n.vni,
                mtu: n.mtu,
                used: view
                    .endpoints
                    .values()
                    .filter(|e| e.network == n.id)
                    .count() as u64
                    + reserved(&n.id),
                size: topology::pool_size(n.subnet),
            })
            .collect();
        let endpoints = view
            .endpoints
            .values()
            .filter(|e| view.networks.contains_key(&e.network))
            .map(|e| Endpoint {
                id: e.id.clone(),
                name: e.name.clone(),
                network: e.network.clone(),
                host: e.node.clone(),
                ip: e.ip,
                mac: e.mac.to_string(),
            })
            .collect();
        let mut t = Topology {
            cluster: self.cluster.name().to_string(),
            this_node: self.cluster.node_id().to_string(),
            revision: view.revision,
            open: self.open,
            store: StoreSummary {
                backend: store
                    .as_ref()
                    .map(|s| s.backend.clone())
                    .unwrap_or_default(),
                healthy: store.as_ref().is_some_and(|s| s.healthy),
                leader: store
                    .as_ref()
                    .and_then(|s| s.leader.as_deref())
                    .map(member_node_id),
            },
            hosts,
            networks,
            endpoints,
            tunnels: Vec::new(),
            problems: Self::store_problems(store.as_ref().map(|s| s.healthy)),
        };
        t.derive_tunnels();
        Some(t)
    }
}

#[async_trait]
impl Source for Observer {
    async fn topology(&self) -> Option<Topology> {
        self.build().await
    }

    async fn not_ready(&self) -> Option<String> {
        if !self.cluster.is_ready() {
            return Some("not a cluster member yet".into());
        }
        match self.cluster.store().status().await {
            Ok(s) if s.healthy => {}
            Ok(_) => return Some("the store has no leader with a quorum".into()),
            Err(e) => return Some(format!("the store is unreachable: {e}")),
        }
        self.datapath
            .last_fault()
            .map(|f| format!("the datapath is failing ({}): {}", f.reason, f.message))
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
