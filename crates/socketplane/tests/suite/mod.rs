//! The multi-host acceptance suite: several hosts as network namespaces,
//! each running its own agent process, driven through the real CLI and API.
//! Every scenario takes the datapath to run on, so `multihost.rs` (linux)
//! and `multihost_ovs.rs` (Open vSwitch) run the same suite unchanged.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::common::{self, http, wait_until, Mode, TestLab, FORMATION, LEASE_TTL};
use socketplane_lab::StoreKind;
use socketplane_api::rest::{EndpointInfo, NetworkInfo};
use socketplane_testkit::{netns, require_privileged, zeroconf};

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
    let h4 = t.lab_mut().add_host().expect("add host").index;
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
        wait_until(PROPAGATION, || t
            .forwarding_state(1)
            .contains(&wc.endpoint.mac.to_string())),
        "host2 never learned wc's MAC"
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
        let f = t.forwarding_state(1);
        !f.contains(&wc.endpoint.mac.to_string()) && f.contains(&wa.endpoint.mac.to_string())
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

    let after = t.world_snapshot();
    let (before, after): (BTreeMap<_, _>, BTreeMap<_, _>) =
        (before.into_iter().collect(), after.into_iter().collect());
    let changed: Vec<String> = before
        .keys()
        .chain(after.keys().filter(|k| !before.contains_key(*k)))
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| format!("{k}:\n  before {:?}\n  after  {:?}", before.get(k), after.get(k)))
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
