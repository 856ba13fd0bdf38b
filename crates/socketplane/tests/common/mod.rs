//! A multi-host test harness: a lab of network namespaces, each host running
//! a real `socketplane agent` process, driven through the real CLI. The lab
//! is removed when the harness drops, also when a test fails. Namespaces,
//! waits, names and the privileged-test gate come from the test kit.

#![allow(dead_code)]

pub mod docker;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use socketplane_api::rest::{ClusterStatus, EndpointInfo};
use socketplane_api::NetworkMode;
use socketplane_lab::{Discovery, Lab, LabConfig, StoreKind};
pub use socketplane_testkit::{unique_name, wait_until};

pub const BIN: &str = env!("CARGO_BIN_EXE_socketplane");

/// The agents' liveness lease in test labs: short, so reclaim tests take
/// seconds.
pub const LEASE_TTL: Duration = Duration::from_secs(3);

/// How long a fresh lab's agents may take to form one healthy cluster.
/// Measured here: about 1 s for 3 hosts (a later host joins in 0.3-0.8 s;
/// the README promises 0.14 s to connectivity). A joiner that first tries a
/// peer that is itself still joining waits out the agent's 5 s join-attempt
/// timeout (seen in about 1 of 10 lab starts), so: that path plus a margin,
/// not the 60 s that hid it.
pub const FORMATION: Duration = Duration::from_secs(10);

/// What a lab runs on: datapath, store, how agents find each other, and
/// the mode of the networks its tests create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub datapath: &'static str,
    pub store: StoreKind,
    pub discovery: Discovery,
    /// What `network create` without `--mode` creates in the lab (see
    /// [`TestLab::sp`]); the default network stays an overlay.
    pub network: NetworkMode,
}

impl Mode {
    /// Embedded store, mDNS discovery, on `datapath`.
    pub fn on(datapath: &'static str) -> Mode {
        Mode {
            datapath,
            store: StoreKind::Embedded,
            discovery: Discovery::Mdns,
            network: NetworkMode::Overlay,
        }
    }

    /// The same with every network the tests create routed
    /// (`network create … --mode routed`).
    pub fn routed(self) -> Mode {
        Mode {
            network: NetworkMode::Routed,
            ..self
        }
    }

    /// The same with all agents on the lab's etcd (`--store etcd://…`).
    pub fn etcd(self) -> Mode {
        Mode {
            store: StoreKind::Etcd,
            ..self
        }
    }

    /// The same with `--no-mdns` and `--join host1`.
    pub fn join(self) -> Mode {
        Mode {
            discovery: Discovery::Join,
            ..self
        }
    }

    /// The same with `--no-mdns` only: hosts join by `cluster join ADDR`.
    pub fn join_by_cli(self) -> Mode {
        Mode {
            discovery: Discovery::Manual,
            ..self
        }
    }

    pub fn mdns(&self) -> bool {
        self.discovery == Discovery::Mdns
    }
}

pub struct TestLab {
    pub lab: Option<Lab>,
    /// The mode of networks created through [`TestLab::sp`] without one.
    pub network_mode: NetworkMode,
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if let Some(lab) = self.lab.take() {
            if let Err(e) = lab.down() {
                eprintln!("lab teardown: {e:#}");
            }
        }
    }
}

/// Agent flags every test lab uses: a short lease (normally
/// [`LEASE_TTL`]) so reclaim tests take seconds.
pub fn test_agent_args(lease: Duration) -> Vec<String> {
    vec![
        "--lease-ttl".into(),
        lease.as_secs().to_string(),
        // Reclaim soon after the lease is gone (the default grace is 5 min).
        "--reclaim-after".into(),
        "1s".into(),
    ]
}

/// Log lines that repeat per RPC while a peer is unreachable.
const NOISE: &[&str] = &[
    "openraft::replication",
    "replication_handler",
    "A message will be ignored because vote changed",
];

impl TestLab {
    /// A lab already up, whose networks are overlays unless a test says
    /// otherwise.
    pub fn new(lab: Lab) -> TestLab {
        TestLab {
            lab: Some(lab),
            network_mode: NetworkMode::Overlay,
        }
    }

    pub fn start(tag: char, hosts: usize) -> TestLab {
        Self::start_with(tag, hosts, "linux")
    }

    pub fn start_with(tag: char, hosts: usize, datapath: &'static str) -> TestLab {
        Self::start_mode(tag, hosts, Mode::on(datapath))
    }

    pub fn start_mode(tag: char, hosts: usize, mode: Mode) -> TestLab {
        Self::start_mode_with_lease(tag, hosts, mode, LEASE_TTL)
    }

    /// [`TestLab::start_mode`] with another `--lease-ttl`.
    pub fn start_mode_with_lease(tag: char, hosts: usize, mode: Mode, lease: Duration) -> TestLab {
        Self::start_mode_with_args(tag, hosts, mode, test_agent_args(lease))
    }

    /// [`TestLab::start_mode`] with these agent flags instead of
    /// [`test_agent_args`].
    pub fn start_mode_with_args(
        tag: char,
        hosts: usize,
        mode: Mode,
        agent_args: Vec<String>,
    ) -> TestLab {
        Self::start_configured(tag, hosts, mode, agent_args, |_| {})
    }

    /// [`TestLab::start_mode_with_args`], with `configure` changing the
    /// lab's configuration last (e.g. a second underlay subnet).
    pub fn start_configured(
        tag: char,
        hosts: usize,
        mode: Mode,
        agent_args: Vec<String>,
        configure: impl FnOnce(&mut LabConfig),
    ) -> TestLab {
        let name = unique_name(tag);
        let mut config = LabConfig::new(&name, hosts, BIN);
        config.datapath = mode.datapath.into();
        config.store = mode.store;
        config.discovery = mode.discovery;
        config.agent_args = agent_args;
        config.state_dir = std::env::temp_dir().join(format!("sp-lab-{name}"));
        configure(&mut config);
        let lab = Lab::up(config).expect("lab up");
        let t = TestLab {
            lab: Some(lab),
            network_mode: mode.network,
        };
        let started = Instant::now();
        for host in 1..hosts {
            t.join_by_cli_if_manual(host);
        }
        t.wait_for_nodes(0, hosts, FORMATION);
        eprintln!(
            "{hosts} host(s) formed a cluster in {:?}",
            started.elapsed()
        );
        if mode.store == StoreKind::Etcd {
            // The cluster lives in the lab's etcd, not in an embedded store.
            let keys = t.lab().etcd_dump().expect("read etcd");
            let nodes = keys.keys().filter(|k| k.contains("/nodes/")).count();
            assert!(
                nodes >= hosts,
                "the agents' nodes are not in etcd: {:?}",
                keys.keys().collect::<Vec<_>>()
            );
        }
        t
    }

    /// With `Discovery::Manual`, tells host `host` `cluster join` host1.
    fn join_by_cli_if_manual(&self, host: usize) {
        if self.lab().config().discovery == Discovery::Manual {
            let first = self.lab().hosts()[0].underlay_ip.to_string();
            self.sp(host, &["cluster", "join", &first])
                .unwrap_or_else(|e| panic!("cluster join {first} on host index {host}: {e}"));
        }
    }

    /// Adds a host (its agent started) and, with `Discovery::Manual`,
    /// joins it by `cluster join`: the host's index.
    pub fn add_host(&mut self) -> usize {
        let index = self.lab_mut().add_host().expect("add host").index;
        self.join_by_cli_if_manual(index);
        index
    }

    pub fn lab(&self) -> &Lab {
        self.lab.as_ref().expect("lab")
    }

    pub fn lab_mut(&mut self) -> &mut Lab {
        self.lab.as_mut().expect("lab")
    }

    /// Runs the CLI on a host; Ok(stdout) or Err(stderr). In a lab whose
    /// networks are routed ([`Mode::routed`]), `network create` without a
    /// `--mode` gets `--mode routed`: the same scenarios run on either.
    pub fn sp(&self, host: usize, args: &[&str]) -> Result<String, String> {
        let mut cmd = vec![BIN.to_string()];
        cmd.extend(args.iter().map(|s| s.to_string()));
        let creates = args.len() >= 2 && args[..2] == ["network", "create"];
        if creates && self.network_mode != NetworkMode::Overlay && !args.contains(&"--mode") {
            cmd.extend(["--mode".into(), self.network_mode.as_str().into()]);
        }
        let out = self.lab().exec(host, &cmd).expect("lab exec");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs the CLI with `-o json` and parses the answer.
    pub fn sp_json<T: DeserializeOwned>(&self, host: usize, args: &[&str]) -> T {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self
            .sp(host, &a)
            .unwrap_or_else(|e| panic!("socketplane {}: {e}", args.join(" ")));
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("socketplane {}: {e}: {out}", args.join(" ")))
    }

    /// The cluster as host `host` sees it; `None` (with the reason printed)
    /// while its agent cannot answer.
    pub fn status(&self, host: usize) -> Option<ClusterStatus> {
        match self.sp(host, &["cluster", "status", "-o", "json"]) {
            Ok(out) => match serde_json::from_str(&out) {
                Ok(s) => Some(s),
                Err(e) => panic!("cluster status on host index {host} is not JSON: {e}: {out}"),
            },
            Err(e) => {
                eprintln!("cluster status on host index {host}: {}", e.trim());
                None
            }
        }
    }

    pub fn wait_for_nodes(&self, host: usize, alive: usize, timeout: Duration) -> ClusterStatus {
        let mut last = None;
        let formed = wait_until(timeout, || {
            last = self.status(host);
            last.as_ref().is_some_and(|s| {
                s.store.healthy && s.nodes.iter().filter(|n| n.alive).count() == alive
            })
        });
        match last {
            Some(s) if formed => s,
            _ => panic!(
                "cluster did not reach {alive} alive nodes in {timeout:?}; last status: {last:?}\n{}",
                self.agent_logs()
            ),
        }
    }

    /// A host's L2 forwarding state as text, whatever the datapath: the
    /// bridge FDB (linux) or the OpenFlow table (ovs). MACs appear in it as
    /// `aa:bb:cc:dd:ee:ff`. A failing dump panics (never "nothing").
    pub fn forwarding_state(&self, host: usize) -> String {
        let lab = self.lab();
        let h = &lab.hosts()[host];
        let out = if lab.config().uses_ovs() {
            let ovs = socketplane_lab::ovs::attach(&h.netns, h.dir());
            ovs.ofctl(&["dump-flows", &ovs.mgmt_target("docker0-ovs")])
        } else {
            socketplane_testkit::netns::exec(&h.netns, &["bridge", "fdb", "show"])
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        let mut text = out.unwrap_or_else(|e| panic!("dump forwarding state of {}: {e}", h.name));
        if self.network_mode == NetworkMode::Routed && !lab.config().uses_ovs() {
            // What routed networks forward by: our routes, and the
            // sources the firewall accepts routed from the underlay.
            text.push_str("--- routes (proto 83) ---\n");
            text.push_str(&our_routes(&h.netns));
            text.push_str("--- routed sources ---\n");
            for (bridge, sources) in routed_sources(&h.netns) {
                text.push_str(&format!("{bridge}: {}\n", sources.join(", ")));
            }
        }
        text
    }

    /// Whether host `host`'s datapath holds what it forwards another
    /// host's endpoint `ep` by, on the path the endpoint's packets take:
    /// through VXLAN (overlays; a routed network towards a host on another
    /// underlay subnet or on OVS), its MAC in [`Self::forwarding_state`];
    /// routed (a routed network between Linux hosts of one underlay
    /// subnet), a route of ours covering its address via its host's
    /// underlay address and its address among the sources the firewall
    /// accepts routed from the underlay (the per-endpoint part: a block
    /// route stays while the block's other endpoints live).
    pub fn knows_endpoint(&self, host: usize, ep: &EndpointInfo) -> bool {
        let lab = self.lab();
        let hosts = lab.hosts();
        let peer = hosts
            .iter()
            .position(|h| Some(h.underlay_ip) == ep.host || h.name == ep.node_name)
            .unwrap_or_else(|| panic!("no lab host runs endpoint {ep:?}"));
        assert_ne!(peer, host, "endpoint {} is local", ep.endpoint.ip);
        let config = lab.config();
        let routed = !config.uses_ovs()
            && config.on_second_subnet(host) == config.on_second_subnet(peer)
            && self.network_mode_of(&ep.endpoint.network) == NetworkMode::Routed;
        if !routed {
            return self
                .forwarding_state(host)
                .contains(&ep.endpoint.mac.to_string());
        }
        let ns = &hosts[host].netns;
        let via = format!(" via {} ", hosts[peer].underlay_ip);
        let route = route_to(&our_routes(ns), ep.endpoint.ip);
        let accepted = routed_sources(ns)
            .values()
            .any(|s| s.contains(&ep.endpoint.ip.to_string()));
        route.is_some_and(|(_, line)| line.contains(&via)) && accepted
    }

    /// The mode of network `name`, from the first host whose agent
    /// answers (one of them may be down).
    fn network_mode_of(&self, name: &str) -> NetworkMode {
        for h in 0..self.lab().hosts().len() {
            if let Ok(out) = self.sp(h, &["network", "info", name, "-o", "json"]) {
                let info: socketplane_api::rest::NetworkInfo = serde_json::from_str(&out)
                    .unwrap_or_else(|e| panic!("network info {name}: {e}: {out}"));
                return info.network.mode;
            }
        }
        panic!("no agent answers `network info {name}`")
    }

    /// Everything bad input must not change, as comparable text: every
    /// host's view (`network list`, `endpoint list`), every host's and
    /// workload's devices (`ip -j link/addr/route/neigh`, the bridge FDB
    /// or the OpenFlow table without counters) and, with etcd, every store
    /// key. What comes and goes by itself is left out: neighbour entries
    /// the kernel learned from traffic (only PERMANENT and NOARP ones, which
    /// someone wrote, count) and IPv6 DAD flags. Any failing dump panics.
    pub fn world_snapshot(&self) -> Vec<(String, String)> {
        let lab = self.lab();
        let mut out = Vec::new();
        for (i, h) in lab.hosts().iter().enumerate() {
            for what in [["network", "list"], ["endpoint", "list"]] {
                let v: serde_json::Value = self.sp_json(i, &what);
                out.push((format!("{} {}", h.name, what.join(" ")), v.to_string()));
            }
        }
        let mut namespaces: Vec<(String, String)> = lab
            .hosts()
            .iter()
            .map(|h| (h.name.clone(), h.netns.clone()))
            .collect();
        namespaces.extend(
            lab.workloads()
                .iter()
                .map(|w| (format!("workload {}", w.name), w.netns.clone())),
        );
        for (label, ns) in &namespaces {
            for obj in ["link", "addr", "route", "neigh"] {
                let dump = ip_json(ns, &["-j", obj, "show"]);
                for item in dump.as_array().into_iter().flatten() {
                    if obj == "neigh" && !is_static_neighbour(item) {
                        continue;
                    }
                    let mut item = item.clone();
                    normalise(&mut item);
                    // One entry per device (by name) or per route/neighbour,
                    // so a difference names what changed.
                    match item["ifname"].as_str() {
                        Some(dev) => {
                            out.push((format!("{label}: ip {obj} {dev}"), item.to_string()))
                        }
                        None => out.push((format!("{label}: ip {obj} {item}"), String::new())),
                    }
                }
            }
        }
        for h in lab.hosts() {
            let fwd = if lab.config().uses_ovs() {
                let ovs = socketplane_lab::ovs::attach(&h.netns, h.dir());
                ovs.ofctl(&["--no-stats", "dump-flows", &ovs.mgmt_target("docker0-ovs")])
                    .unwrap_or_else(|e| panic!("dump flows of {}: {e}", h.name))
            } else {
                ip_json(&h.netns, &["bridge", "-j", "fdb", "show"]).to_string()
            };
            out.push((format!("{}: forwarding", h.name), fwd));
        }
        // Every key of the store: from etcd itself, or through each host's
        // agent for the embedded store (each must read the same state).
        if lab.config().store == StoreKind::Etcd {
            let keys = lab.etcd_dump().expect("read the store's keys from etcd");
            assert!(!keys.is_empty(), "etcd holds no keys at all");
            for (k, v) in keys {
                out.push((format!("store {k}"), v));
            }
        } else {
            let dumps: Vec<BTreeMap<String, String>> =
                lab.hosts().iter().map(|h| store_dump(&h.socket)).collect();
            for (h, dump) in lab.hosts().iter().zip(&dumps) {
                assert!(
                    dump.keys().any(|k| k.contains("/networks/")),
                    "{}: the store dump holds no networks: {dump:?}",
                    h.name
                );
                assert_eq!(
                    dump,
                    &dumps[0],
                    "{} reads another store state than {}",
                    h.name,
                    lab.hosts()[0].name
                );
            }
            for (k, v) in dumps.into_iter().next().into_iter().flatten() {
                out.push((format!("store {k}"), v));
            }
        }
        out
    }

    pub fn agent_logs(&self) -> String {
        let mut s = String::new();
        for h in self.lab().hosts() {
            let log = std::fs::read_to_string(&h.log)
                .unwrap_or_else(|e| format!("(cannot read {}: {e})", h.log.display()));
            // Without openraft's per-RPC retry noise, which would push
            // the agent's own story out of the tail.
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .filter(|l| !NOISE.iter().any(|n| l.contains(n)))
                .take(50)
                .collect();
            s.push_str(&format!("--- {} agent log (last lines) ---\n", h.name));
            for l in tail.into_iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    /// Creates a workload namespace on `host` and attaches it to `network`.
    pub fn workload(&mut self, host: usize, name: &str, network: &str) -> EndpointInfo {
        self.attach_workload(host, name, network, &[])
    }

    /// [`Self::workload`] with the fixed address `ip` (`--ip`).
    pub fn workload_at(
        &mut self,
        host: usize,
        name: &str,
        network: &str,
        ip: &str,
    ) -> EndpointInfo {
        self.attach_workload(host, name, network, &["--ip", ip])
    }

    fn attach_workload(
        &mut self,
        host: usize,
        name: &str,
        network: &str,
        extra: &[&str],
    ) -> EndpointInfo {
        let netns = self
            .lab_mut()
            .add_workload(host, name)
            .expect("add workload");
        let mut args = vec![
            "endpoint", "attach", "--netns", &netns, "-n", network, "--name", name,
        ];
        args.extend_from_slice(extra);
        self.sp_json(host, &args)
    }

    /// Whether `workload` reaches `ip` (up to three pings, 1 s each).
    pub fn ping(&self, workload: &str, ip: &str) -> bool {
        (0..3).any(|_| self.ping_once(workload, ip))
    }

    /// Whether one ping from `workload` to `ip` gets a reply within 1 s.
    /// Panics when ping cannot run at all: that is a broken test, not an
    /// unreachable address.
    pub fn ping_once(&self, workload: &str, ip: &str) -> bool {
        let cmd: Vec<String> = ["ping", "-c", "1", "-W", "1", "-q", ip]
            .map(String::from)
            .to_vec();
        let out = self
            .lab()
            .workload_exec(workload, &cmd)
            .unwrap_or_else(|e| panic!("ping from {workload}: {e}"));
        // ping exits 1 when no reply came, 2 on other errors.
        match out.status.code() {
            Some(0) => true,
            Some(1) | Some(2) => false,
            _ => panic!(
                "ping from {workload} to {ip}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

/// One raw HTTP/1.1 request over a unix socket: (status, body).
/// The value of one sample (`NAME{LABELS}` exactly as printed) on a lab
/// host's `/metrics` (the agent's default `--http`, loopback in its
/// namespace); 0 when the sample is not there yet.
pub fn metric(t: &TestLab, host: usize, sample: &str) -> f64 {
    let ns = t.lab().hosts()[host].netns.clone();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "curl", "-s", "--max-time", "5"])
        .arg("http://127.0.0.1:9675/metrics")
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "GET /metrics on host index {host} failed"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.strip_prefix(sample))
        .filter_map(|rest| rest.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Every key and value of the cluster store, read through an agent.
pub fn store_dump(socket: &Path) -> BTreeMap<String, String> {
    let (status, body) = http(socket, "GET", "/v1/debug/store", b"");
    assert_eq!(
        status,
        200,
        "store dump through {}: {body}",
        socket.display()
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("store dump: {e}: {body}"))
}

pub fn http(socket: &Path, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = UnixStream::connect(socket).expect("connect to the socket");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write");
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `ip ARGS` (or `bridge ARGS` when ARGS starts with "bridge") in `ns`,
/// parsed as JSON; a failing or unparsable dump panics.
pub fn ip_json(ns: &str, args: &[&str]) -> serde_json::Value {
    let mut argv: Vec<&str> = Vec::new();
    if args.first() != Some(&"bridge") {
        argv.push("ip");
    }
    argv.extend(args);
    let out = socketplane_testkit::netns::exec(ns, &argv)
        .unwrap_or_else(|e| panic!("{} in {ns}: {e}", argv.join(" ")));
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{} in {ns} is not JSON: {e}: {text}", argv.join(" ")))
}

/// Whether a neighbour entry was written (PERMANENT or NOARP), not learned
/// by the kernel from traffic (REACHABLE, STALE, ... come and go).
fn is_static_neighbour(item: &serde_json::Value) -> bool {
    item["state"]
        .as_array()
        .is_some_and(|s| s.iter().any(|x| x == "PERMANENT" || x == "NOARP"))
}

/// Drop what ages by itself from an `ip -j` item: neighbour states
/// (REACHABLE, STALE) and the IPv6 duplicate-address-detection flags of
/// fresh addresses.
fn normalise(item: &mut serde_json::Value) {
    if let Some(obj) = item.as_object_mut() {
        obj.remove("state");
        if let Some(addrs) = obj.get_mut("addr_info").and_then(|a| a.as_array_mut()) {
            for a in addrs.iter_mut().filter_map(|a| a.as_object_mut()) {
                a.remove("tentative");
                a.remove("optimistic");
            }
        }
    }
}

/// Our routes in `ns` (`ip route show proto 83`, the routed networks');
/// a failing dump panics.
pub fn our_routes(ns: &str) -> String {
    let out = socketplane_testkit::netns::exec(ns, &["ip", "route", "show", "proto", "83"])
        .unwrap_or_else(|e| panic!("ip route show proto 83 in {ns}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Of routes `r` (as `ip route show` prints them), the one covering `ip`
/// (longest prefix): its destination's prefix length and its line.
pub fn route_to(r: &str, ip: Ipv4Addr) -> Option<(u8, String)> {
    r.lines()
        .filter_map(|l| {
            let dst = l.split_whitespace().next()?;
            let (addr, len) = dst.split_once('/').unwrap_or((dst, "32"));
            let (addr, len): (Ipv4Addr, u8) = (addr.parse().ok()?, len.parse().ok()?);
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            (u32::from(addr) & mask == u32::from(ip) & mask).then(|| (len, l.to_string()))
        })
        .max_by_key(|(len, _)| *len)
}

/// Per routed network's bridge on the lab host `ns`, the sources the
/// firewall accepts from the underlay into it (the Linux datapath's
/// `iifname UNDERLAY oifname BRIDGE ip saddr {…} … accept` rule in the
/// `inet socketplane` table); a failing listing panics.
pub fn routed_sources(ns: &str) -> BTreeMap<String, Vec<String>> {
    let argv = ["nft", "list", "chain", "inet", "socketplane", "forward"];
    let out = socketplane_testkit::netns::exec(ns, &argv)
        .unwrap_or_else(|e| panic!("{} in {ns}: {e}", argv.join(" ")));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut found = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("iifname \"eth0\" oifname \"") else {
            continue;
        };
        let Some((bridge, rest)) = rest.split_once('"') else {
            continue;
        };
        let Some(set) = rest
            .split_once("ip saddr ")
            .and_then(|(_, r)| r.split_once(" ip daddr "))
            .map(|(set, _)| set)
        else {
            continue;
        };
        if !line.ends_with("accept") {
            continue;
        }
        let sources = set
            .trim_matches(|c: char| c == '{' || c == '}' || c.is_whitespace())
            .split(',')
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect();
        found.insert(bridge.to_string(), sources);
    }
    found
}
