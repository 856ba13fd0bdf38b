//! The Prometheus families, in one process-wide registry (prefix
//! `socketplane_`). Counters and histograms are fed by [`crate::events`];
//! the state gauges (nodes, networks, endpoints, pools, store role) are set
//! from a [`Topology`] when `/metrics` is scraped, so they are never stale.

use std::sync::{LazyLock, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::topology::Topology;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabel {
    pub scope: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NetworkLabel {
    pub network: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub node: String,
    pub addr: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabel {
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
    pub origin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// Every family the agent exports.
pub struct Metrics {
    registry: Registry,
    // State, set from the topology at scrape time.
    pub nodes: Family<StateLabel, Gauge>,
    pub node_up: Family<NodeLabel, Gauge>,
    pub networks: Gauge,
    pub endpoints: Family<ScopeLabel, Gauge>,
    pub pool_used: Family<NetworkLabel, Gauge>,
    pub pool_size: Family<NetworkLabel, Gauge>,
    pub problems: Gauge,
    pub store_role: Family<RoleLabel, Gauge>,
    pub applied_lag: Gauge,
    // Events.
    pub attach_seconds: Histogram,
    pub reconcile_seconds: Histogram,
    pub datapath_writes: Counter,
    pub datapath_errors: Counter,
    pub reconcile_failures: Family<ReasonLabel, Counter>,
    pub store_term: Gauge,
    pub store_leader_changes: Counter,
    pub store_commit_seconds: Histogram,
    pub store_apply_lag: Gauge,
    pub docker_requests: Family<MethodLabel, Counter>,
    pub docker_errors: Family<MethodLabel, Counter>,
    pub api_requests: Family<RouteLabel, Counter>,
    pub api_errors: Family<RouteLabel, Counter>,
    pub dns_queries: Family<ResultLabel, Counter>,
    pub cluster_port_refused: Family<ReasonLabel, Counter>,
    pub http_requests: Family<RouteLabel, Counter>,
}

/// 1 ms … ~16 s: attaches and reconciles take milliseconds to seconds.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::with_prefix("socketplane");
        let m = Metrics {
            nodes: Family::default(),
            node_up: Family::default(),
            networks: Gauge::default(),
            endpoints: Family::default(),
            pool_used: Family::default(),
            pool_size: Family::default(),
            problems: Gauge::default(),
            store_role: Family::default(),
            applied_lag: Gauge::default(),
            attach_seconds: latency_buckets(),
            reconcile_seconds: latency_buckets(),
            datapath_writes: Counter::default(),
            datapath_errors: Counter::default(),
            reconcile_failures: Family::default(),
            store_term: Gauge::default(),
            store_leader_changes: Counter::default(),
            store_commit_seconds: latency_buckets(),
            store_apply_lag: Gauge::default(),
            docker_requests: Family::default(),
            docker_errors: Family::default(),
            api_requests: Family::default(),
            api_errors: Family::default(),
            dns_queries: Family::default(),
            cluster_port_refused: Family::default(),
            http_requests: Family::default(),
            registry: Registry::default(),
        };
        r.register(
            "nodes",
            "Cluster members by state (alive, dead)",
            m.nodes.clone(),
        );
        r.register(
            "node_up",
            "1 for a member whose agent is alive, 0 for a dead one",
            m.node_up.clone(),
        );
        r.register("networks", "Networks in the cluster", m.networks.clone());
        r.register(
            "endpoints",
            "Endpoints on this host (scope=local) and in the whole cluster (scope=cluster)",
            m.endpoints.clone(),
        );
        r.register_with_unit(
            "pool_used",
            "Addresses of a network's pool in use (endpoints and reservations)",
            Unit::Other("addresses".into()),
            m.pool_used.clone(),
        );
        r.register_with_unit(
            "pool_size",
            "Addresses a network's pool can hand out (without network, gateway and broadcast)",
            Unit::Other("addresses".into()),
            m.pool_size.clone(),
        );
        r.register(
            "problems",
            "Unhealthy things this agent sees in the cluster (0: healthy)",
            m.problems.clone(),
        );
        r.register(
            "store_role",
            "This node's store role (1 for the role it has)",
            m.store_role.clone(),
        );
        r.register(
            "reconcile_revision_lag",
            "Store revisions this host's datapath is behind its view",
            m.applied_lag.clone(),
        );
        r.register_with_unit(
            "attach_duration",
            "Local API attach, from the request to the datapath applying it",
            Unit::Seconds,
            m.attach_seconds.clone(),
        );
        r.register_with_unit(
            "reconcile_duration",
            "One datapath apply by the reconciler",
            Unit::Seconds,
            m.reconcile_seconds.clone(),
        );
        r.register(
            "datapath_writes",
            "Kernel or OVS writes made by the datapath",
            m.datapath_writes.clone(),
        );
        r.register(
            "datapath_errors",
            "Datapath applies that failed",
            m.datapath_errors.clone(),
        );
        r.register(
            "reconcile_failures",
            "Failed datapath applies by reason",
            m.reconcile_failures.clone(),
        );
        r.register(
            "store_term",
            "The embedded store's Raft term",
            m.store_term.clone(),
        );
        r.register(
            "store_leader_changes",
            "Times this node saw the store leader change",
            m.store_leader_changes.clone(),
        );
        r.register_with_unit(
            "store_commit_duration",
            "Store transactions, from the request to the commit",
            Unit::Seconds,
            m.store_commit_seconds.clone(),
        );
        r.register_with_unit(
            "store_apply_lag",
            "Raft log entries this node holds but has not applied yet",
            Unit::Other("entries".into()),
            m.store_apply_lag.clone(),
        );
        r.register(
            "docker_requests",
            "Docker plugin requests by method",
            m.docker_requests.clone(),
        );
        r.register(
            "docker_errors",
            "Docker plugin requests that failed, by method",
            m.docker_errors.clone(),
        );
        r.register(
            "api_requests",
            "Local API requests by route and origin (cli, cni, other)",
            m.api_requests.clone(),
        );
        r.register(
            "api_errors",
            "Local API requests that failed, by route and origin",
            m.api_errors.clone(),
        );
        r.register(
            "dns_queries",
            "DNS queries answered by the agent, by result",
            m.dns_queries.clone(),
        );
        r.register(
            "cluster_port_refused",
            "Connections to the cluster port refused, by reason",
            m.cluster_port_refused.clone(),
        );
        r.register(
            "http_requests",
            "Requests to this HTTP server (metrics, page, events), by route",
            m.http_requests.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// Sets the state gauges from `topology`.
    pub fn observe_topology(&self, topology: &Topology) {
        let alive = topology.hosts.iter().filter(|h| h.alive).count();
        let dead = topology.hosts.len() - alive;
        for (state, n) in [("alive", alive), ("dead", dead)] {
            self.nodes
                .get_or_create(&StateLabel {
                    state: state.into(),
                })
                .set(n as i64);
        }
        self.node_up.clear();
        for h in &topology.hosts {
            self.node_up
                .get_or_create(&NodeLabel {
                    node: h.name.clone(),
                    addr: h.addr.to_string(),
                })
                .set(i64::from(h.alive));
        }
        self.networks.set(topology.networks.len() as i64);
        let local = topology
            .endpoints
            .iter()
            .filter(|e| e.host == topology.this_node)
            .count();
        for (scope, n) in [("local", local), ("cluster", topology.endpoints.len())] {
            self.endpoints
                .get_or_create(&ScopeLabel {
                    scope: scope.into(),
                })
                .set(n as i64);
        }
        self.pool_used.clear();
        self.pool_size.clear();
        for n in &topology.networks {
            let label = NetworkLabel {
                network: n.name.clone(),
            };
            self.pool_used.get_or_create(&label).set(n.used as i64);
            self.pool_size.get_or_create(&label).set(n.size as i64);
        }
        self.problems.set(topology.problem_count() as i64);
        self.store_role.clear();
        if let Some(me) = topology.hosts.iter().find(|h| h.id == topology.this_node) {
            self.store_role
                .get_or_create(&RoleLabel {
                    role: me.role.clone(),
                })
                .set(1);
            self.applied_lag.set(me.applied_lag.unwrap_or(0));
        }
    }

    /// The registry as Prometheus (OpenMetrics) text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
/// Serialises scrapes: the state gauges are cleared and set per scrape.
static SCRAPE: Mutex<()> = Mutex::new(());

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Sets the state gauges from `topology` (if any) and renders everything.
pub fn scrape(topology: Option<&Topology>) -> String {
    let _guard = SCRAPE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = topology {
        metrics().observe_topology(t);
    }
    metrics().render()
}
