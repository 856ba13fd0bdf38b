//! The multi-host acceptance suite: several hosts as network namespaces,
//! each running its own agent process, driven through the real CLI and API.
//! Every scenario takes the [`Mode`] to run in (datapath, store, discovery),
//! so `multihost.rs` (linux), `multihost_ovs.rs` (Open vSwitch),
//! `multihost_etcd.rs` (`--store etcd://`) and `multihost_join.rs`
//! (`--no-mdns` with `--join` or `cluster join`) run the same scenarios.

#![allow(dead_code)] // Not every test file runs every scenario.

/// The scenarios every run of the suite has, as one `#[test]` each on
/// `$mode`; `$guard` (optional) is taken first in each and held for the test.
macro_rules! shared_scenarios {
    ($mode:expr) => {
        shared_scenarios!($mode, std::marker::PhantomData::<()>);
    };
    ($mode:expr, $guard:expr) => {
        shared_scenarios!(@each ($mode) ($guard)
            three_hosts_discover_each_other_over_mdns_and_share_networks,
            late_host_joins_by_itself_and_dead_host_is_reclaimed,
            concurrent_attaches_across_hosts_get_distinct_addresses,
            killed_agent_restarts_and_converges_while_traffic_keeps_flowing,
            bad_input_gets_clear_errors_and_changes_nothing,
            addresses_stay_unique_when_hosts_contend_for_one_block);
    };
    (@each ($mode:expr) ($guard:expr) $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                let _guard = $guard;
                suite::$name($mode);
            }
        )*
    };
}

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::common::{self, http, wait_until, Mode, TestLab, FORMATION, LEASE_TTL};
use socketplane_api::rest::{EndpointInfo, NetworkInfo};
use socketplane_api::NetworkMode;
use socketplane_lab::StoreKind;
use socketplane_testkit::{netns, require_privileged, zeroconf};

pub mod stream;
use stream::{PingStream, Timeline};

/// How long other hosts may take to apply a change (a new or removed
/// endpoint or network) they learn through the watch. Measured here: well
/// under a second.
const PROPAGATION: Duration = Duration::from_secs(5);

/// How long a dead host's endpoints may stay: its lease must expire
/// (LEASE_TTL after its last keepalive), then a survivor reclaims them.
fn reclaim_deadline() -> Duration {
    LEASE_TTL * 3
}

pub fn three_hosts_discover_each_other_over_mdns_and_share_networks(m: Mode) {
    require_privileged!();
    let mut t = TestLab::start_mode('a', 3, m);
    let status = t.wait_for_nodes(0, 3, FORMATION);
    let roles: Vec<&str> = status.nodes.iter().map(|n| n.role.as_str()).collect();
    eprintln!("store roles: {roles:?}");
    if m.store == StoreKind::Embedded {
        assert_eq!(
            roles.iter().filter(|r| **r == "leader").count(),
            1,
            "{roles:?}"
        );
    }

    let hosts = t.lab().hosts().to_vec();
    if !m.mdns() {
        // With --no-mdns nothing of this cluster is advertised: the
        // cluster formed through --join alone.
        let services = zeroconf::browse(&hosts[0].netns, Duration::from_secs(2), 1)
            .expect("python-zeroconf browse");
        assert!(
            !services
                .iter()
                .any(|s| s["properties"]["cluster"] == status.cluster.as_str()),
            "--no-mdns agents advertised themselves: {services:?}"
        );
    }
    // An independent mDNS implementation sees all three, with correct TXT.
    let services = if m.mdns() {
        zeroconf::browse(&hosts[0].netns, Duration::from_secs(5), 3)
            .expect("python-zeroconf browse")
    } else {
        Vec::new()
    };
    for node in status.nodes.iter().filter(|_| m.mdns()) {
        let svc = services
            .iter()
            .find(|s| s["properties"]["id"] == node.id.as_str())
            .unwrap_or_else(|| panic!("node {} not seen over mDNS: {services:?}", node.name));
        assert_eq!(svc["properties"]["v"], "1");
        assert_eq!(svc["properties"]["cluster"], status.cluster.as_str());
        assert_eq!(svc["port"], 6675);
        assert!(
            svc["addresses"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == &node.addr.to_string()),
            "{svc}"
        );
    }

    t.sp(0, &["network", "create", "web", "10.2.0.0/16"])
        .expect("create web");
    let w1 = t.workload(0, "w1", "web");
    let w2 = t.workload(1, "w2", "web");
    let w3 = t.workload(2, "w3", "web");
    let d1 = t.workload(1, "d1", "default");
    let d2 = t.workload(2, "d2", "default");
    let ips: HashSet<Ipv4Addr> = [&w1, &w2, &w3].iter().map(|e| e.endpoint.ip).collect();
    assert_eq!(ips.len(), 3, "addresses must be distinct");
    for (from, to) in [("w1", &w2), ("w2", &w3), ("w3", &w1), ("w1", &w3)] {
        assert!(
            t.ping(from, &to.endpoint.ip.to_string()),
            "{from} -> {} must reach\n{}",
            to.endpoint.ip,
            t.agent_logs()
        );
    }
    // The isolated workload works (positive control: it reaches its own
    // network, across hosts, both ways), so "cannot reach" below is
    // isolation, not a dead interface.
    assert!(
        t.ping("d1", &d2.endpoint.ip.to_string()),
        "d1 -> d2 on default must reach\n{}",
        t.agent_logs()
    );
    assert!(
        t.ping("d2", &d1.endpoint.ip.to_string()),
        "d2 -> d1 on default must reach"
    );
    // Networks are isolated from each other, both ways, same host or not.
    assert!(
        !t.ping_once("d1", &w2.endpoint.ip.to_string()),
        "default must not reach web"
    );
    assert!(
        !t.ping_once("d1", &w1.endpoint.ip.to_string()),
        "default must not reach web"
    );
    assert!(
        !t.ping_once("w2", &d1.endpoint.ip.to_string()),
        "web must not reach default"
    );

    // The whole cluster's endpoints are visible from any host.
    let all: Vec<EndpointInfo> = t.sp_json(2, &["endpoint", "list"]);
    assert_eq!(all.len(), 5);
    let local: Vec<EndpointInfo> = t.sp_json(1, &["endpoint", "list", "--local"]);
    assert_eq!(local.len(), 2);

    // Deleting a network with endpoints is refused; with --force it goes,
    // and every host removes its devices.
    let web: NetworkInfo = t.sp_json(0, &["network", "info", "web"]);
    for (h, w) in [(0, &w2), (0, &w3), (1, &w1)] {
        assert!(
            t.knows_endpoint(h, w),
            "host index {h} does not forward to {}:\n{}",
            w.endpoint.ip,
            t.forwarding_state(h)
        );
    }
    let err = t.sp(0, &["network", "delete", "web"]).expect_err("refused");
    assert!(err.contains("endpoint(s) attached"), "{err}");
    t.sp(0, &["network", "delete", "web", "--force"])
        .expect("force delete");
    let bridge = format!("spbr{}", web.network.vni);
    // `ip link show` must say "does not exist"; any other failure of it
    // is an error, not "gone".
    let gone = wait_until(PROPAGATION, || {
        t.lab().hosts().iter().all(|h| {
            !netns::link_exists(&h.netns, &bridge)
                .unwrap_or_else(|e| panic!("check {bridge} on {}: {e}", h.name))
        })
    });
    assert!(gone, "{bridge} must be removed on every host");
    // And every route of ours into it (a routed network's; an overlay
    // has none).
    let routes_gone = wait_until(PROPAGATION, || {
        t.lab().hosts().iter().all(|h| {
            let r = common::our_routes(&h.netns);
            [&w1, &w2, &w3]
                .iter()
                .all(|w| common::route_to(&r, w.endpoint.ip).is_none())
        })
    });
    assert!(
        routes_gone,
        "routes into the deleted network must be removed on every host"
    );
    let eps: Vec<EndpointInfo> = t.sp_json(2, &["endpoint", "list"]);
    let left: HashSet<String> = eps.iter().map(|e| e.endpoint.id.clone()).collect();
    assert_eq!(
        left,
        HashSet::from([d1.endpoint.id.clone(), d2.endpoint.id.clone()]),
        "only d1 and d2 on default remain"
    );
}

pub fn late_host_joins_by_itself_and_dead_host_is_reclaimed(m: Mode) {
    require_privileged!();
    let mut t = TestLab::start_mode('b', 3, m);
    t.sp(0, &["network", "create", "web", "10.2.0.0/24"])
        .expect("create web");
    let w1 = t.workload(0, "w1", "web");
    let gone = t.workload(2, "gone", "web");

    // A 4th host started later finds the cluster over mDNS and gets tunnels.
    let started = Instant::now();
    let h4 = t.add_host();
    t.wait_for_nodes(0, 4, FORMATION);
    eprintln!("4th host joined in {:?}", started.elapsed());
    let _w4 = t.workload(h4, "w4", "web");
    assert!(
        t.ping("w4", &w1.endpoint.ip.to_string()),
        "late host must reach the others\n{}",
        t.agent_logs()
    );

    // Host 3's agent dies for good: after its lease expires it is shown
    // dead and its endpoint and address are reclaimed.
    t.lab_mut()
        .stop_agent(2, socketplane_lab::Signal::SIGKILL)
        .expect("kill agent");
    let killed = Instant::now();
    let reclaimed = wait_until(reclaim_deadline(), || {
        let eps: Vec<EndpointInfo> = t.sp_json(0, &["endpoint", "list"]);
        !eps.iter().any(|e| e.endpoint.id == gone.endpoint.id)
    });
    eprintln!("reclaimed after {:?}", killed.elapsed());
    assert!(
        reclaimed,
        "the dead host's endpoint was not reclaimed\n{}",
        t.agent_logs()
    );
    let status = t.status(0).expect("status");
    let dead: Vec<_> = status.nodes.iter().filter(|n| !n.alive).collect();
    assert_eq!(dead.len(), 1, "{status:?}");
    // Its address is free again.
    let netns = t.lab_mut().add_workload(1, "again").expect("workload");
    let ip = gone.endpoint.ip.to_string();
    let again: EndpointInfo = t.sp_json(
        1,
        &[
            "endpoint", "attach", "--netns", &netns, "-n", "web", "--ip", &ip,
        ],
    );
    assert_eq!(again.endpoint.ip, gone.endpoint.ip);
}

pub fn concurrent_attaches_across_hosts_get_distinct_addresses(m: Mode) {
    require_privileged!();
    let t = TestLab::start_mode('c', 3, m);
    t.sp(0, &["network", "create", "web", "10.2.0.0/16"])
        .expect("create web");
    let sockets: Vec<_> = t.lab().hosts().iter().map(|h| h.socket.clone()).collect();
    let results: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..300)
            .map(|i| {
                let socket = sockets[i % 3].clone();
                s.spawn(move || http(&socket, "POST", "/v1/endpoints", br#"{"network":"web"}"#))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut ips = HashSet::new();
    for (status, body) in &results {
        assert_eq!(*status, 201, "attach failed: {body}");
        let ep: EndpointInfo = serde_json::from_str(body).expect("endpoint json");
        assert!(
            ips.insert(ep.endpoint.ip),
            "duplicate address {}",
            ep.endpoint.ip
        );
    }
    assert_eq!(ips.len(), 300);
    for reserved in ["10.2.0.0", "10.2.0.1", "10.2.255.255"] {
        assert!(
            !ips.contains(&reserved.parse::<Ipv4Addr>().unwrap()),
            "{reserved} handed out"
        );
    }
}

pub fn killed_agent_restarts_and_converges_while_traffic_keeps_flowing(m: Mode) {
    require_privileged!();
    let mut t = TestLab::start_mode('d', 3, m);
    t.sp(0, &["network", "create", "web", "10.2.0.0/24"])
        .expect("create web");
    let wa = t.workload(0, "wa", "web");
    let _wb = t.workload(1, "wb", "web");
    let wc = t.workload(0, "wc", "web");
    // Other hosts learn of an endpoint asynchronously, through the watch.
    assert!(
        wait_until(PROPAGATION, || t.knows_endpoint(1, &wc)),
        "host2 never learned wc's forwarding state:\n{}",
        t.forwarding_state(1)
    );

    t.lab_mut()
        .stop_agent(1, socketplane_lab::Signal::SIGKILL)
        .expect("kill -9");
    // The datapath keeps forwarding while the agent is down.
    assert!(
        t.ping("wb", &wa.endpoint.ip.to_string()),
        "traffic must flow during the outage"
    );
    // Meanwhile wc is detached on another host.
    t.sp(
        0,
        &[
            "endpoint",
            "detach",
            "--netns",
            &wc.endpoint.netns.clone().unwrap(),
            "-n",
            "web",
        ],
    )
    .expect("detach wc");

    t.lab_mut().start_agent(1, false).expect("restart agent");
    let restarted = Instant::now();
    t.wait_for_nodes(0, 3, FORMATION);
    let converged = wait_until(PROPAGATION, || {
        !t.knows_endpoint(1, &wc) && t.knows_endpoint(1, &wa)
    });
    eprintln!(
        "host2 converged {:?} after its restart",
        restarted.elapsed()
    );
    assert!(
        converged,
        "host2's forwarding state did not converge:\n{}\n{}",
        t.forwarding_state(1),
        t.agent_logs()
    );
    assert!(
        t.ping("wb", &wa.endpoint.ip.to_string()),
        "traffic must flow after the restart"
    );
}

pub fn bad_input_gets_clear_errors_and_changes_nothing(m: Mode) {
    require_privileged!();
    let mut t = TestLab::start_mode('e', 2, m);
    t.sp(0, &["network", "create", "web", "10.2.0.0/16"])
        .expect("create web");
    t.sp(0, &["network", "create", "tiny", "10.9.0.0/30"])
        .expect("create tiny");
    let only = t.workload(0, "only", "tiny");
    assert_eq!(only.endpoint.ip.to_string(), "10.9.0.2");
    let _peer = t.workload(1, "peer", "web");
    let spare = t.lab_mut().add_workload(0, "spare").expect("workload");
    // Both hosts have applied everything before the first snapshot.
    assert!(
        wait_until(PROPAGATION, || {
            let eps: Vec<EndpointInfo> = t.sp_json(1, &["endpoint", "list"]);
            eps.len() == 2
        }),
        "host2 never saw both endpoints"
    );

    let before = t.world_snapshot();

    // Namespace paths that are not a workload's network namespace: the
    // agent's own (its host's), init's, another kind, not a namespace.
    let own = netns::path(&t.lab().hosts()[0].netns).display().to_string();
    let plain = tempfile::NamedTempFile::new().expect("a regular file");
    let plain = plain.path().display().to_string();
    let attach_at = |path: &str| -> Vec<String> {
        ["endpoint", "attach", "--netns", path, "-n", "web"]
            .map(String::from)
            .to_vec()
    };
    let netns_cases: Vec<(Vec<String>, &str)> = vec![
        (attach_at("/proc/self/ns/mnt"), "not a network namespace"),
        (
            attach_at("/proc/self/ns/net"),
            "host's own network namespace",
        ),
        // init's: "the host's own", or unreadable in a sandbox.
        (attach_at("/proc/1/ns/net"), "is not usable"),
        (attach_at(&own), "host's own network namespace"),
        (attach_at("/proc/kmsg"), "not a network namespace"),
        (attach_at(&plain), "not a network namespace"),
        (attach_at("/nonexistent/netns"), "No such file"),
    ];
    for (args, expect) in &netns_cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = t
            .sp(0, &args)
            .expect_err(&format!("`{}` must fail", args.join(" ")));
        assert!(
            err.contains(expect),
            "`{}`: error {err:?} should mention {expect:?}",
            args.join(" ")
        );
    }

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["network", "create", "bad", "10.0.0.1/33"],
            "invalid CIDR",
        ),
        (vec!["network", "create", "bad", "banana"], "invalid CIDR"),
        (vec!["network", "create", "bad", "10.5.0.1/16"], "host bits"),
        (
            vec!["network", "create", "web2", "10.2.128.0/17"],
            "overlaps",
        ),
        (
            vec!["network", "create", "web", "10.3.0.0/16"],
            "already exists",
        ),
        (vec!["network", "create", "host", "10.4.0.0/16"], "reserved"),
        (
            vec!["network", "create", "bad name", "10.4.0.0/16"],
            "invalid network name",
        ),
        (vec!["network", "info", "nope"], "no network named"),
        (vec!["network", "delete", "nope"], "no network named"),
        (vec!["network", "delete", "tiny"], "endpoint(s) attached"),
        (
            vec!["endpoint", "attach", "--netns", &spare, "-n", "nope"],
            "no network named",
        ),
        (
            vec!["endpoint", "attach", "--netns", &spare, "-n", "tiny"],
            "no free address",
        ),
        (
            vec![
                "endpoint", "attach", "--netns", &spare, "-n", "web", "--ip", "10.2.0.1",
            ],
            "not an assignable",
        ),
        (
            vec![
                "endpoint",
                "attach",
                "--netns",
                "/etc/hostname",
                "-n",
                "web",
            ],
            "not a network namespace",
        ),
        (
            vec![
                "endpoint",
                "attach",
                "--netns",
                &spare,
                "-n",
                "web",
                "--ifname",
                "much-too-long-name",
            ],
            "invalid interface name",
        ),
    ];
    for (args, expect) in &cases {
        let err = t
            .sp(0, args)
            .expect_err(&format!("`{}` must fail", args.join(" ")));
        assert!(
            err.contains(expect),
            "`{}`: error {err:?} should mention {expect:?}",
            args.join(" ")
        );
    }
    // A taken static address.
    let err = t
        .sp(
            0,
            &[
                "endpoint", "attach", "--netns", &spare, "-n", "tiny", "--ip", "10.9.0.2",
            ],
        )
        .expect_err("taken address");
    // A static request names one address: that it is taken is the error,
    // not that the pool is empty (which a dynamic request would get).
    assert!(err.contains("already in use"), "{err}");
    assert!(!err.contains("no free address"), "{err}");

    // The API itself: malformed JSON, oversized bodies, unknown paths.
    let socket = t.lab().hosts()[0].socket.clone();
    let (status, body) = http(&socket, "POST", "/v1/networks", b"{not json");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let (status, _) = http(&socket, "POST", "/v1/networks", &vec![b' '; 200 * 1024]);
    assert_eq!(status, 413);
    let (status, body) = http(&socket, "GET", "/v1/nothing", b"");
    assert_eq!(status, 404, "{body}");
    let (status, body) = http(&socket, "POST", "/v1/endpoints", br#"{"network": 5}"#);
    assert_eq!(status, 400, "{body}");
    for (path, expect) in [
        ("/proc/kmsg", "not a network namespace"),
        ("/proc/1/ns/net", "is not usable"),
        ("/proc/self/ns/net", "host's own"),
        ("/proc/self/ns/mnt", "not a network namespace"),
        ("/nonexistent/netns", "No such file"),
        ("relative/netns", "must be absolute"),
    ] {
        let req = serde_json::json!({"network": "web", "netns": path}).to_string();
        let (status, body) = http(&socket, "POST", "/v1/endpoints", req.as_bytes());
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(expect), "{path}: {body}");
    }

    let after = t.world_snapshot();
    let (before, after): (BTreeMap<_, _>, BTreeMap<_, _>) =
        (before.into_iter().collect(), after.into_iter().collect());
    let changed: Vec<String> = before
        .keys()
        .chain(after.keys().filter(|k| !before.contains_key(*k)))
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| {
            format!(
                "{k}:\n  before {:?}\n  after  {:?}",
                before.get(k),
                after.get(k)
            )
        })
        .collect();
    assert!(
        changed.is_empty(),
        "bad input must change nothing:\n{}",
        changed.join("\n")
    );

    // A workload that dies without detaching (its namespace is deleted)
    // blocks nothing: the next attach works at once and the dead one's
    // endpoint and address are reclaimed.
    t.lab_mut()
        .remove_workload("only")
        .expect("remove workload");
    let started = Instant::now();
    let _w = t.workload(0, "next", "web");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "attach was held up"
    );
    let freed = wait_until(PROPAGATION, || {
        let eps: Vec<EndpointInfo> = t.sp_json(0, &["endpoint", "list"]);
        !eps.iter().any(|e| e.endpoint.id == only.endpoint.id)
    });
    assert!(freed, "the dead workload's endpoint must be detached");
    let again: EndpointInfo =
        t.sp_json(0, &["endpoint", "attach", "--netns", &spare, "-n", "tiny"]);
    assert_eq!(
        again.endpoint.ip, only.endpoint.ip,
        "its address is free again"
    );

    // The CLI against no agent: a clear message and a failing exit code.
    let out = std::process::Command::new(common::BIN)
        .args([
            "--socket",
            "/nonexistent/socketplane.sock",
            "network",
            "list",
        ])
        .output()
        .expect("run cli");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the SocketPlane agent"));
}

/// A `/proc/PID/ns/net` path outlives its process; once the PID is reused
/// it names another namespace. Same here with a named namespace deleted
/// and made anew under its old path: the endpoint, pinned at attach to the
/// first namespace, is never plumbed into the second and is detached.
pub fn reused_netns_path_is_never_plumbed(m: Mode) {
    require_privileged!();
    let t = TestLab::start_mode('u', 1, m);
    t.sp(0, &["network", "create", "pin", "10.7.0.0/24"])
        .expect("create pin");
    let name = format!("sp{}", common::unique_name('u'));
    let first = netns::Netns::create(&name).expect("namespace");
    let path = first.path().display().to_string();
    let ep: EndpointInfo = t.sp_json(0, &["endpoint", "attach", "--netns", &path, "-n", "pin"]);
    assert!(netns::link_exists(&name, "eth0").expect("links"));
    // The workload dies and another namespace takes its path at once,
    // before the agent notices.
    netns::delete(&name).expect("delete");
    netns::add(&name).expect("add again");
    // Any change makes the agent converge (and collect garbage).
    t.sp(0, &["network", "create", "nudge", "10.8.0.0/24"])
        .expect("create nudge");
    assert!(
        wait_until(PROPAGATION, || {
            let eps: Vec<EndpointInfo> = t.sp_json(0, &["endpoint", "list"]);
            eps.iter().all(|e| e.endpoint.id != ep.endpoint.id)
        }),
        "the endpoint of the dead namespace was never detached"
    );
    assert!(
        !netns::link_exists(&name, "eth0").expect("links"),
        "the endpoint was plumbed into the namespace that took its path"
    );
    drop(first);
}

/// Waits until every host lists network `name`.
fn wait_network_everywhere(t: &TestLab, name: &str) {
    let n = t.lab().hosts().len();
    assert!(
        wait_until(PROPAGATION, || (0..n).all(|h| {
            let nets: Vec<NetworkInfo> = t.sp_json(h, &["network", "list"]);
            nets.iter().any(|x| x.network.name == name)
        })),
        "not every host learned network {name}"
    );
}

/// `n` raw attach requests with these bodies, sent to the hosts' sockets
/// round-robin, all released at once by a barrier so they race in the
/// store: (host index, status, body) each.
fn attach_all_at_once(t: &TestLab, bodies: &[(usize, String)]) -> Vec<(usize, u16, String)> {
    let sockets: Vec<_> = t.lab().hosts().iter().map(|h| h.socket.clone()).collect();
    let barrier = std::sync::Barrier::new(bodies.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = bodies
            .iter()
            .map(|(host, body)| {
                let socket = sockets[*host].clone();
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let (status, resp) = http(&socket, "POST", "/v1/endpoints", body.as_bytes());
                    (*host, status, resp)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    })
}

/// Addresses are unique because the store's compare-and-set says so, not
/// because one agent serialises its own attaches: every host attaches at
/// once into one tiny subnet (a single IPAM block, smaller than a /26), and
/// hosts race static requests for the same address. Then the datapath is
/// checked against the store: each workload namespace holds exactly the
/// address and MAC `endpoint list` gives it.
pub fn addresses_stay_unique_when_hosts_contend_for_one_block(m: Mode) {
    require_privileged!();
    let mut t = TestLab::start_mode('u', 3, m);
    let hosts = t.lab().hosts().len();

    // 1. Dynamic attaches from every host into one block: 10.7.0.0/27 has
    // 29 assignable addresses (.2-.30); 45 requests, 15 per host.
    t.sp(0, &["network", "create", "tiny", "10.7.0.0/27"])
        .expect("create tiny");
    wait_network_everywhere(&t, "tiny");
    let bodies: Vec<(usize, String)> = (0..45)
        .map(|i| (i % hosts, r#"{"network":"tiny"}"#.to_string()))
        .collect();
    let results = attach_all_at_once(&t, &bodies);
    let mut got = HashSet::new();
    let mut winners_per_host = vec![0; hosts];
    for (host, status, body) in &results {
        if *status == 201 {
            let ep: EndpointInfo = serde_json::from_str(body).expect("endpoint json");
            assert!(
                got.insert(ep.endpoint.ip),
                "duplicate address {} (host index {host})",
                ep.endpoint.ip
            );
            winners_per_host[*host] += 1;
        } else {
            assert!(
                body.contains("no free address"),
                "a losing attach must fail with exhaustion, not {status}: {body}"
            );
        }
    }
    let expected: HashSet<Ipv4Addr> = (2..=30).map(|i| Ipv4Addr::new(10, 7, 0, i)).collect();
    assert_eq!(
        got, expected,
        "every assignable address handed out exactly once"
    );
    eprintln!("winners per host: {winners_per_host:?}");
    // Every host's view is the same set.
    for h in 0..hosts {
        let ok = wait_until(PROPAGATION, || {
            let eps: Vec<EndpointInfo> = t.sp_json(h, &["endpoint", "list"]);
            let seen: HashSet<Ipv4Addr> = eps
                .iter()
                .filter(|e| e.endpoint.network == "tiny")
                .map(|e| e.endpoint.ip)
                .collect();
            seen == expected && eps.iter().filter(|e| e.endpoint.network == "tiny").count() == 29
        });
        assert!(ok, "host index {h} does not list the 29 endpoints of tiny");
    }

    // 2. Static requests for the same address from all hosts at once:
    // exactly one wins each address.
    t.sp(0, &["network", "create", "race", "10.8.0.0/24"])
        .expect("create race");
    wait_network_everywhere(&t, "race");
    let bodies: Vec<(usize, String)> = (10..20)
        .flat_map(|last| {
            (0..hosts).map(move |h| (h, format!(r#"{{"network":"race","ip":"10.8.0.{last}"}}"#)))
        })
        .collect();
    let results = attach_all_at_once(&t, &bodies);
    for last in 10..20 {
        let ip = format!("\"10.8.0.{last}\"");
        let mine: Vec<_> = results
            .iter()
            .zip(&bodies)
            .filter(|(_, (_, b))| b.contains(&ip))
            .map(|(r, _)| r)
            .collect();
        let winners = mine.iter().filter(|r| r.1 == 201).count();
        assert_eq!(winners, 1, "10.8.0.{last}: {mine:?}");
        for (host, status, body) in mine.iter().filter(|r| r.1 != 201) {
            assert!(
                body.contains("already in use"),
                "host index {host}: {status}: {body}"
            );
        }
    }

    // 3. The datapath agrees with the store: 12 workloads (4 per host)
    // attached at once into a /28 (13 assignable).
    t.sp(0, &["network", "create", "dp", "10.6.0.0/28"])
        .expect("create dp");
    wait_network_everywhere(&t, "dp");
    let mut workloads = Vec::new();
    for i in 0..12 {
        let name = format!("p{i}");
        let path = t
            .lab_mut()
            .add_workload(i % hosts, &name)
            .expect("workload");
        workloads.push((i % hosts, name, path));
    }
    let attached: Vec<EndpointInfo> = std::thread::scope(|s| {
        let t = &t;
        let handles: Vec<_> = workloads
            .iter()
            .map(|(host, name, path)| {
                s.spawn(move || {
                    t.sp_json::<EndpointInfo>(
                        *host,
                        &[
                            "endpoint", "attach", "--netns", path, "-n", "dp", "--name", name,
                        ],
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("attach"))
            .collect()
    });
    let listed: Vec<EndpointInfo> = t.sp_json(0, &["endpoint", "list"]);
    let listed: BTreeMap<String, (Ipv4Addr, String)> = listed
        .iter()
        .filter(|e| e.endpoint.network == "dp")
        .map(|e| {
            (
                e.endpoint.name.clone().unwrap_or_default(),
                (e.endpoint.ip, e.endpoint.mac.to_string()),
            )
        })
        .collect();
    assert_eq!(listed.len(), 12, "{listed:?}");
    let mut configured = BTreeMap::new();
    for ((_, name, _), ep) in workloads.iter().zip(&attached) {
        let w = t.lab().workload(name).expect("workload").netns.clone();
        let dev = common::ip_json(&w, &["-j", "addr", "show", "dev", &ep.endpoint.ifname]);
        let dev = &dev[0];
        let v4: Vec<String> = dev["addr_info"]
            .as_array()
            .expect("addr_info")
            .iter()
            .filter(|a| a["family"] == "inet")
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
            .collect();
        assert_eq!(
            v4.len(),
            1,
            "{name}: one IPv4 address on its interface: {v4:?}"
        );
        let (ip, plen) = v4[0].split_once('/').unwrap();
        assert_eq!(plen, "28", "{name}: {v4:?}");
        configured.insert(
            name.clone(),
            (
                ip.parse::<Ipv4Addr>().unwrap(),
                dev["address"].as_str().unwrap().to_string(),
            ),
        );
    }
    assert_eq!(
        configured, listed,
        "the addresses and MACs configured in the workloads must be what `endpoint list` says"
    );
    let distinct: HashSet<_> = configured.values().map(|(ip, _)| *ip).collect();
    assert_eq!(distinct.len(), 12, "{configured:?}");
}

/// A packet capture on a lab host's underlay interface (a tcpdump filter,
/// e.g. VXLAN only), stopped and read back as text (`tcpdump -e`: the
/// frames' MACs, inner ones too).
struct Capture {
    child: std::process::Child,
    file: std::path::PathBuf,
}

impl Capture {
    fn start(ns: &str, file: std::path::PathBuf, filter: &str) -> Capture {
        let log = file.with_extension("log");
        let mut child = netns::command(
            ns,
            &[
                "tcpdump",
                "-i",
                "eth0",
                "-nn",
                // Every packet to the file at once, so stopping loses none.
                "-U",
                "--immediate-mode",
                "-w",
                file.to_str().unwrap(),
                filter,
            ],
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("tcpdump log"))
        .spawn()
        .expect("start tcpdump");
        // tcpdump says "listening on" once its filter is in place.
        let listening = wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("listening on"))
        });
        if !listening {
            let _ = child.kill();
            panic!("tcpdump did not start: {:?}", std::fs::read_to_string(&log));
        }
        Capture { child, file }
    }

    fn stop(mut self) -> String {
        let status = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill -INT tcpdump");
        assert!(status.success());
        self.child.wait().expect("wait for tcpdump");
        let out = std::process::Command::new("tcpdump")
            .args(["-r", self.file.to_str().unwrap(), "-nn", "-e"])
            .output()
            .expect("tcpdump -r");
        assert!(
            out.status.success(),
            "tcpdump -r: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_file(self.file.with_extension("log"));
    }
}

/// The gateway is local on every host: frames from and to the gateway MAC,
/// and ARP for the gateway IP, never cross the tunnel. Checked on the
/// wire (the underlay of both hosts), with real agents; the positive
/// control is a cross-host ping between the workloads, which the same
/// captures must show in both directions. On a routed network the
/// workloads' packets cross as plain IP, so the captures take plain ICMP
/// and ARP on the underlay too, and broadcasts between the hosts are
/// what must not cross.
pub fn gateway_traffic_never_crosses_the_tunnel(m: Mode) {
    require_privileged!();
    let routed = m.network == NetworkMode::Routed && m.datapath == "linux";
    let filter = if routed {
        "udp port 4789 or icmp or arp"
    } else {
        "udp port 4789"
    };
    let mut t = TestLab::start_mode('g', 2, m);
    t.sp(0, &["network", "create", "web", "10.2.0.0/24"])
        .expect("create web");
    let wa = t.workload(0, "wa", "web");
    let wb = t.workload(1, "wb", "web");
    let gw = wa.gateway.to_string();
    assert_eq!(wb.gateway, wa.gateway);
    let dir = t.lab().state_dir().to_path_buf();
    let caps: Vec<Capture> = t
        .lab()
        .hosts()
        .iter()
        .map(|h| Capture::start(&h.netns, dir.join(format!("{}.pcap", h.name)), filter))
        .collect();

    let mut gw_macs = HashSet::new();
    for w in ["wa", "wb"] {
        let ns = t.lab().workload(w).unwrap().netns.clone();
        netns::exec(&ns, &["ip", "neigh", "flush", "all"]).expect("flush neighbours");
        // Frames to the gateway: pings to it and through it (the outside
        // address is routed via the gateway; whether it answers is not
        // the point here).
        assert!(t.ping(w, &gw), "{w} must reach its gateway {gw}");
        let _ = t.ping_once(w, &socketplane_lab::OUTSIDE_REMOTE_IP.to_string());
        let neigh = common::ip_json(&ns, &["-j", "neigh", "show", &gw]);
        let mac = neigh[0]["lladdr"]
            .as_str()
            .unwrap_or_else(|| panic!("{w} has no neighbour entry for {gw}: {neigh}"))
            .to_string();
        gw_macs.insert(mac);
    }
    // Frames from the gateway: each host (its gateway address as source)
    // pings its local workload after forgetting every neighbour, so the
    // gateway itself broadcasts an ARP request on the network.
    for (h, ep) in [(0, &wa), (1, &wb)] {
        let ns = t.lab().hosts()[h].netns.clone();
        netns::exec(&ns, &["ip", "neigh", "flush", "all"]).expect("flush neighbours");
        let ip = ep.endpoint.ip.to_string();
        let out = netns::command(&ns, &["ping", "-c", "1", "-W", "1", "-I", &gw, &ip])
            .output()
            .expect("ping from the host");
        assert!(
            out.status.success(),
            "host index {h}: the gateway must reach its local workload {ip}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // An address nobody has: the gateway's ARP for it is a broadcast
    // that must stay local too; a workload's ARP for it is the control
    // that ARP broadcasts do show on the wire when they cross.
    let nobody = "10.2.0.250";
    for h in [0, 1] {
        let ns = t.lab().hosts()[h].netns.clone();
        let _ = netns::command(&ns, &["ping", "-c", "1", "-W", "1", "-I", &gw, nobody]).output();
    }
    assert!(!t.ping_once("wa", nobody), "nobody has {nobody}");
    // Positive control: cross-host traffic, after ARP, both ways.
    assert!(t.ping("wa", &wb.endpoint.ip.to_string()), "wa -> wb");
    assert!(t.ping("wb", &wa.endpoint.ip.to_string()), "wb -> wa");

    let texts: Vec<String> = caps.into_iter().map(Capture::stop).collect();
    let wa_mac = wa.endpoint.mac.to_string();
    let wb_mac = wb.endpoint.mac.to_string();
    for (h, text) in texts.iter().enumerate() {
        let host = &t.lab().hosts()[h].name;
        let frames: Vec<&str> = text.lines().collect();
        if routed {
            // Between hosts of one subnet the network is routed: the
            // control ping crosses as plain IP (the frames' MACs are the
            // hosts'), and no broadcast crosses at all.
            let (a_ip, b_ip) = (wa.endpoint.ip, wb.endpoint.ip);
            for (a, b) in [(a_ip, b_ip), (b_ip, a_ip)] {
                assert!(
                    frames.iter().any(|l| l.contains(&format!("{a} > {b}: ICMP echo"))
                        && !l.contains("VXLAN")),
                    "{host}: the control ping {a} > {b} must be seen routed on the underlay:\n{text}"
                );
            }
            let broadcast: Vec<&&str> = frames
                .iter()
                .filter(|l| l.contains(&format!("who-has {nobody}")))
                .collect();
            assert!(
                broadcast.is_empty(),
                "{host}: an ARP broadcast for {nobody} crossed between routed hosts:\n{broadcast:#?}"
            );
        } else {
            for (a, b) in [(&wa_mac, &wb_mac), (&wb_mac, &wa_mac)] {
                assert!(
                    frames
                        .iter()
                        .any(|l| l.contains(&format!("{a} > {b}")) && l.contains("ICMP echo")),
                    "{host}: the control ping {a} > {b} must be seen in the tunnel:\n{text}"
                );
            }
            assert!(
                frames
                    .iter()
                    .any(|l| l.contains(&format!("{wa_mac} > ff:ff:ff:ff:ff:ff"))
                        && l.contains(&format!("who-has {nobody} tell {}", wa.endpoint.ip))),
                "{host}: wa's ARP broadcast for {nobody} must be seen in the tunnel:\n{text}"
            );
        }
        for mac in &gw_macs {
            let leaked: Vec<&&str> = frames.iter().filter(|l| l.contains(mac.as_str())).collect();
            assert!(
                leaked.is_empty(),
                "{host}: frames from or to the gateway MAC {mac} crossed the tunnel:\n{leaked:#?}"
            );
        }
        let gw_arp: Vec<&&str> = frames
            .iter()
            .filter(|l| l.contains("ARP") && l.split([' ', ',']).any(|word| word == gw))
            .collect();
        assert!(
            gw_arp.is_empty(),
            "{host}: ARP for the gateway {gw} crossed the tunnel:\n{gw_arp:#?}"
        );
    }
}

/// The reclaim grace of the kill-and-restart traffic test: far longer
/// than its outages, which outlast the lease ([`LEASE_TTL`]) on purpose.
const OUTAGE_RECLAIM_AFTER: &str = "120s";

/// Packets per stream, at 10 ms: longer than a kill-and-restart round (an
/// outage of lease + 1 s, then about 1 s to converge: 5-6 s for a
/// follower; the leader's adds a store election: 8-9 s here).
fn stream_packets(role: &str) -> u32 {
    match role {
        "leader" => 1600,
        _ => 1000,
    }
}
/// Traffic into a host survives link changes on that host: veths come and
/// go there (as when containers start and stop) and its agent attaches and
/// detaches endpoints, while a 100/s stream from another host's workload
/// runs to one of its workloads; not one packet may be lost. (With its
/// kernel routing table, userspace Open vSwitch re-reads every route on
/// each such change and drops tunnel packets that arrive meanwhile.)
pub fn traffic_into_a_host_survives_link_churn_there(m: Mode) {
    require_privileged!();
    let mut t = TestLab::start_mode('c', 2, m);
    t.sp(0, &["network", "create", "web", "10.2.0.0/24"])
        .expect("create web");
    let _w0 = t.workload(0, "w0", "web");
    let w1 = t.workload(1, "w1", "web");
    let stream = PingStream::start(&t, "w0", w1.endpoint.ip, 600);
    let ns = t.lab().hosts()[1].netns.clone();
    let mut churned = 0;
    let mut timeline = Timeline::default();
    for i in 0..120 {
        let (a, b) = (format!("spzc{i}"), format!("spzd{i}"));
        let link = |args: &[&str]| netns::exec(&ns, args).map(drop);
        link(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])
            .and_then(|_| link(&["ip", "link", "set", &a, "up"]))
            .and_then(|_| link(&["ip", "link", "del", &a]))
            .expect("veth churn on the receiving host");
        churned += 1;
        if i % 40 == 0 {
            let name = format!("c{i}");
            timeline.mark(format!("attach {name}"));
            let e = t.workload(1, &name, "web");
            let netns_path = e.endpoint.netns.clone().expect("netns");
            timeline.mark(format!("detach {name}"));
            t.sp(
                1,
                &["endpoint", "detach", "--netns", &netns_path, "-n", "web"],
            )
            .expect("detach");
            timeline.mark(format!("detached {name}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    timeline.mark("churn done");
    let r = stream.finish();
    let (sent, received) = (r.sent, r.received);
    eprintln!("{churned} veth pairs came and went: {received}/{sent} pings");
    assert_eq!(
        received,
        sent,
        "{} packets into the churning host lost\n{}",
        sent - received,
        r.report(&timeline)
    );
}

/// With the userspace Open vSwitch datapath, what is wrong with the hosts'
/// tunnel neighbours (empty: every host's ovs-vswitchd holds every other
/// host's underlay address with the MAC of its `br-phy`). A packet to a
/// host missing there is dropped while ovs-vswitchd ARPs; one sent to
/// another MAC of that host (its uplink's) is refused by its stack.
fn tunnel_neighbour_problems(t: &TestLab) -> Vec<String> {
    let hosts = t.lab().hosts();
    let bridge_mac = |ns: &str| {
        let l = common::ip_json(ns, &["-j", "link", "show", "br-phy"]);
        l[0]["address"].as_str().unwrap_or_default().to_string()
    };
    let macs: Vec<String> = hosts.iter().map(|h| bridge_mac(&h.netns)).collect();
    let mut problems = Vec::new();
    for h in hosts {
        let ovs = socketplane_lab::ovs::attach(&h.netns, h.dir());
        let table = ovs
            .appctl(&["tnl/neigh/show"])
            .unwrap_or_else(|e| panic!("tnl/neigh/show on {}: {e}", h.name));
        for (other, mac) in hosts.iter().zip(&macs) {
            if other.name == h.name {
                continue;
            }
            let ip = other.underlay_ip.to_string();
            let entry = table.lines().find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(ip.as_str())).then(|| w.next().unwrap_or_default().to_string())
            });
            match entry {
                Some(m) if &m == mac => {}
                Some(m) => problems.push(format!(
                    "{} has {} at {m}, not at its br-phy's {mac}",
                    h.name, other.name
                )),
                None => problems.push(format!("{} has no tunnel neighbour {}", h.name, other.name)),
            }
        }
    }
    problems
}

/// Continuous traffic across an agent's `kill -9` and restart, first of a
/// follower's host, then of the store leader's host: not one packet of a
/// 100/s stream from and to the killed host's workload may be lost, and
/// while the agent is down the kernel state stays (the host still holds the
/// MAC of an endpoint detached elsewhere meanwhile, until the restarted
/// agent converges). The outage outlasts the lease: the others see the
/// host dead, yet within `--reclaim-after` nobody takes its addresses, and
/// its workload keeps address, endpoint and traffic.
pub fn traffic_survives_agent_kill_of_follower_and_leader(m: Mode) {
    require_privileged!();
    let lease = LEASE_TTL;
    let mut args = common::test_agent_args(lease);
    let grace = args
        .iter()
        .position(|a| a == "--reclaim-after")
        .expect("the test agents have a reclaim grace");
    args[grace + 1] = OUTAGE_RECLAIM_AFTER.into();
    let mut t = TestLab::start_mode_with_args('f', 3, m, args);
    t.sp(0, &["network", "create", "web", "10.2.0.0/24"])
        .expect("create web");
    if t.lab().config().uses_ovs() {
        // Before any workload sends: the streams' first packets must not
        // find a tunnel neighbour missing or wrong.
        let mut problems = Vec::new();
        let ready = wait_until(PROPAGATION, || {
            problems = tunnel_neighbour_problems(&t);
            problems.is_empty()
        });
        assert!(ready, "tunnel neighbours not resolved: {problems:?}");
    }
    let ws: Vec<EndpointInfo> = (0..3)
        .map(|h| t.workload(h, &format!("w{h}"), "web"))
        .collect();
    let leader_host = |t: &TestLab| -> Option<usize> {
        let status = t.wait_for_nodes(0, 3, FORMATION);
        let leader = status.nodes.iter().find(|n| n.role == "leader")?;
        t.lab().hosts().iter().position(|h| h.name == leader.name)
    };
    let first_leader = leader_host(&t);
    let follower = (0..3).find(|h| Some(*h) != first_leader).unwrap();
    let mut victims = vec![(follower, "follower")];
    if m.store == StoreKind::Embedded {
        assert!(first_leader.is_some(), "no store leader among the agents");
    }

    let mut round = 0;
    while let Some((victim, role)) = victims.pop() {
        round += 1;
        let peer = (victim + 1) % 3;
        // An endpoint on the peer's host, detached while the victim is down.
        let gone_name = format!("gone{round}");
        let gone = t.workload(peer, &gone_name, "web");
        assert!(
            wait_until(PROPAGATION, || t.knows_endpoint(victim, &gone)),
            "host index {victim} never learned {gone_name}'s forwarding state:\n{}",
            t.forwarding_state(victim)
        );
        let packets = stream_packets(role);
        let mut timeline = Timeline::default();
        let mut outbound =
            PingStream::start(&t, &format!("w{victim}"), ws[peer].endpoint.ip, packets);
        let mut inbound =
            PingStream::start(&t, &format!("w{peer}"), ws[victim].endpoint.ip, packets);
        std::thread::sleep(Duration::from_millis(500));

        t.lab_mut()
            .stop_agent(victim, socketplane_lab::Signal::SIGKILL)
            .expect("kill -9");
        let killed = Instant::now();
        timeline.mark(format!("{role}'s agent killed"));
        // Detach elsewhere; with the leader's agent gone, the store first
        // elects a new leader, so retry for a while.
        let netns_path = gone.endpoint.netns.clone().unwrap();
        let detached = wait_until(FORMATION, || {
            t.sp(
                peer,
                &["endpoint", "detach", "--netns", &netns_path, "-n", "web"],
            )
            .is_ok()
        });
        assert!(
            detached,
            "detach during the {role}'s outage failed\n{}",
            t.agent_logs()
        );
        timeline.mark(format!("{gone_name} detached on the peer"));
        eprintln!(
            "{role}: detached elsewhere {:?} after the kill",
            killed.elapsed()
        );
        // The others see the host dead once its lease has lapsed...
        let victim_name = t.lab().hosts()[victim].name.clone();
        let seen_dead = wait_until(lease * 3, || {
            t.status(peer)
                .is_some_and(|st| st.nodes.iter().any(|n| n.name == victim_name && !n.alive))
        });
        timeline.mark(format!("{victim_name} seen dead"));
        assert!(
            seen_dead,
            "{role}: {victim_name} still alive {:?} after its agent's kill (lease {lease:?})",
            killed.elapsed()
        );
        // ...and still nobody may take its workload's address.
        let taken = t.sp(
            peer,
            &[
                "endpoint",
                "attach",
                "--netns",
                &gone.endpoint.netns.clone().unwrap(),
                "-n",
                "web",
                "--ip",
                &ws[victim].endpoint.ip.to_string(),
            ],
        );
        timeline.mark("address take refused");
        assert!(
            taken.is_err(),
            "{role}: the dead-but-not-reclaimed host's address {} was handed out again",
            ws[victim].endpoint.ip
        );
        let left = lease + Duration::from_secs(1);
        if killed.elapsed() < left {
            std::thread::sleep(left - killed.elapsed());
        }
        // The kernel state is the down agent's last: it still forwards
        // to the endpoint (its MAC; on a routed network its route and
        // accepted source).
        assert!(
            t.knows_endpoint(victim, &gone),
            "{role} host index {victim} lost {gone_name}'s forwarding state while its agent \
             was down:\n{}",
            t.forwarding_state(victim)
        );
        let outage = killed.elapsed();
        assert!(
            outage > lease,
            "outage {outage:?} shorter than the lease ({lease:?}): it proves less than it says"
        );
        timeline.mark(format!("{role}'s agent restarting"));
        t.lab_mut()
            .start_agent(victim, false)
            .expect("restart agent");
        timeline.mark(format!("{role}'s agent answers"));
        eprintln!("{role} agent down for {:?}", killed.elapsed());
        t.wait_for_nodes(peer, 3, FORMATION);
        timeline.mark("3 nodes again");
        let converged = wait_until(PROPAGATION, || {
            !t.knows_endpoint(victim, &gone) && t.knows_endpoint(victim, &ws[peer])
        });
        assert!(
            converged,
            "{role} host did not converge after its restart:\n{}\n{}",
            t.forwarding_state(victim),
            t.agent_logs()
        );
        timeline.mark(format!("{role}'s host converged"));
        eprintln!("{role} round done {:?} after the kill", killed.elapsed());
        // Its workload's endpoint survived the outage, unchanged.
        let still: Vec<EndpointInfo> = t.sp_json(peer, &["endpoint", "list"]);
        let own = &ws[victim].endpoint;
        assert!(
            still.iter().any(|e| e.endpoint.id == own.id
                && e.endpoint.ip == own.ip
                && e.endpoint.mac == own.mac
                && e.endpoint.node == own.node),
            "{role}: the killed host's endpoint was reclaimed or changed: {still:?}"
        );
        assert!(
            outbound.running() && inbound.running(),
            "the streams ended before the round did: it was not covered"
        );
        for (dir, s) in [("from", outbound), ("to", inbound)] {
            let r = s.finish();
            let (sent, received) = (r.sent, r.received);
            eprintln!("{role}: stream {dir} the killed host: {received}/{sent}");
            if dir == "from" {
                eprint!("{}", r.report(&timeline));
            }
            assert_eq!(
                received,
                sent,
                "{role}: {} packets {dir} the killed host's workload lost\n{}",
                sent - received,
                r.report(&timeline)
            );
        }
        if role == "follower" {
            if let Some(leader) = leader_host(&t) {
                victims.push((leader, "leader"));
            }
        }
    }
    assert!(
        m.store != StoreKind::Embedded || round == 2,
        "the leader's host was never killed"
    );
}
