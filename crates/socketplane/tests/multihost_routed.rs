//! Routed networks (`network create --mode routed`) with real agents: the
//! shared multi-host suite (`suite/`) unchanged, every network its
//! scenarios create routed ([`Mode::routed`]); on one underlay subnet
//! (reach, isolation both ways, the outside, fencing, which path the
//! packets take, restart without churn); and across two subnets joined by
//! a router namespace, where only the cross-subnet pairs use VXLAN. Needs
//! what `multihost.rs` needs, plus tcpdump.

mod common;
#[macro_use]
mod suite;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{our_routes as routes, route_to, wait_until, Mode, TestLab};
use socketplane_api::rest::{EndpointInfo, NetworkInfo};
use socketplane_api::NetworkMode;
use socketplane_testkit::{netns, require, require_privileged};

/// How long other hosts may take to apply a change.
const PROPAGATION: Duration = Duration::from_secs(5);

/// The destination of our route covering `ip`, via `via` on `eth0`: a
/// block (shorter than /32) when `block`, else the /32 of `ip` itself.
fn assert_route(r: &str, ip: Ipv4Addr, via: Ipv4Addr, block: bool) -> String {
    let (len, line) = route_to(r, ip).unwrap_or_else(|| panic!("no route to {ip}:\n{r}"));
    assert!(
        line.contains(&format!(" via {via} dev eth0")),
        "{ip}: {line}\n{r}"
    );
    if block {
        assert!(
            len < 32,
            "{ip} must be reached by its host's block route:\n{r}"
        );
        assert!(!r.contains(&format!("{ip} via")), "a /32 for {ip}:\n{r}");
    } else {
        assert!(line.starts_with(&format!("{ip} via")), "{ip}: no /32:\n{r}");
    }
    line.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Packets device `dev` of `ns` has sent.
fn tx_packets(ns: &str, dev: &str) -> u64 {
    let path = format!("/sys/class/net/{dev}/statistics/tx_packets");
    let out = netns::exec(ns, &["cat", &path]).expect("read counter");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a number")
}

/// `count` pings at 10 ms from `workload`; whether all were answered.
fn pings(t: &TestLab, workload: &str, ip: Ipv4Addr, count: u32) -> bool {
    let cmd: Vec<String> = [
        "ping",
        "-n",
        "-q",
        "-c",
        &count.to_string(),
        "-i",
        "0.01",
        "-W",
        "2",
        &ip.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let out = t.lab().workload_exec(workload, &cmd).expect("ping");
    out.status.success()
}

/// A background process in a namespace whose output goes to a file; killed
/// (and the file removed) on drop.
struct Recorder {
    child: Child,
    file: PathBuf,
}

impl Recorder {
    fn start(ns: &str, argv: &[&str], file: PathBuf) -> Recorder {
        let out = std::fs::File::create(&file).expect("output file");
        let err = out.try_clone().expect("clone");
        let child = netns::command(ns, argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start");
        Recorder { child, file }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.file).unwrap_or_default()
    }

    /// Stops it (SIGINT, so tcpdump flushes) and returns what it wrote.
    fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status();
        let _ = self.child.wait();
        self.text()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// tcpdump on `eth0` of `ns` (ICMP and VXLAN), printing as it goes; ready
/// once it says "listening on".
fn capture(ns: &str, dir: &Path) -> Recorder {
    let file = dir.join(format!("{ns}-capture.txt"));
    let r = Recorder::start(
        ns,
        &[
            "tcpdump",
            "-i",
            "eth0",
            "-nn",
            "-l",
            "--immediate-mode",
            "icmp or udp port 4789",
        ],
        file,
    );
    assert!(
        wait_until(Duration::from_secs(5), || r.text().contains("listening on")),
        "tcpdump did not start: {}",
        r.text()
    );
    r
}

fn ip(e: &EndpointInfo) -> Ipv4Addr {
    e.endpoint.ip
}

shared_scenarios!(Mode::on("linux").routed());

#[test]
fn reused_netns_path_is_never_plumbed() {
    suite::reused_netns_path_is_never_plumbed(Mode::on("linux").routed());
}

#[test]
fn gateway_traffic_never_crosses_the_tunnel() {
    suite::gateway_traffic_never_crosses_the_tunnel(Mode::on("linux").routed());
}

#[test]
fn traffic_survives_agent_kill_of_follower_and_leader() {
    suite::traffic_survives_agent_kill_of_follower_and_leader(Mode::on("linux").routed());
}

#[test]
fn routed_network_on_one_subnet_routes_without_encapsulation() {
    require_privileged!();
    require("tcpdump", "tcpdump");
    let mut t = TestLab::start_mode('r', 3, Mode::on("linux"));
    let out = t
        .sp(
            0,
            &[
                "network",
                "create",
                "web",
                "10.2.0.0/16",
                "--mode",
                "routed",
            ],
        )
        .expect("create web");
    assert!(out.contains("routed mode"), "{out}");
    assert!(out.contains("broadcast and multicast"), "{out}");

    // What users see; a change of mode is refused and changes nothing.
    let info: NetworkInfo = t.sp_json(1, &["network", "info", "web"]);
    assert_eq!(info.network.mode, NetworkMode::Routed);
    assert!(
        info.notes
            .iter()
            .any(|n| n.contains("broadcast and multicast between hosts are not carried")),
        "{:?}",
        info.notes
    );
    let text = t.sp(1, &["network", "info", "web"]).expect("info");
    assert!(
        text.contains("routed") && text.contains("Note: routed mode"),
        "{text}"
    );
    let list = t.sp(2, &["network", "list"]).expect("list");
    assert!(
        list.contains("routed") && list.contains("overlay"),
        "{list}"
    );
    assert!(list.contains("carry no broadcast or multicast"), "{list}");
    let err = t
        .sp(0, &["network", "create", "web", "10.3.0.0/16"])
        .expect_err("a change of mode");
    assert!(
        err.contains("already exists in routed mode") && err.contains("create a new network"),
        "{err}"
    );
    let still: NetworkInfo = t.sp_json(0, &["network", "info", "web"]);
    assert_eq!(still.network, info.network);
    let default: NetworkInfo = t.sp_json(0, &["network", "info", "default"]);
    assert_eq!(default.network.mode, NetworkMode::Overlay);
    assert!(default.notes.is_empty(), "{:?}", default.notes);

    let w1 = t.workload(0, "w1", "web");
    let w2 = t.workload(1, "w2", "web");
    // Fixed addresses outside every host's blocks (blocks are taken from
    // the start of the subnet): each gets a /32 route, not a block route.
    let w3 = t.workload_at(2, "w3", "web", "10.2.200.3");
    let w4 = t.workload_at(1, "w4", "web", "10.2.200.4");
    let d1 = t.workload(1, "d1", "default");
    let d2 = t.workload(2, "d2", "default");
    let hosts: Vec<_> = t.lab().hosts().to_vec();

    // Reach, every pair; isolation from the overlay beside it, both ways.
    for (from, to) in [
        ("w1", &w2),
        ("w2", &w1),
        ("w1", &w3),
        ("w3", &w2),
        ("w1", &w4),
        ("w4", &w1),
        ("w3", &w4),
        ("d1", &d2),
    ] {
        assert!(
            t.ping(from, &ip(to).to_string()),
            "{from} -> {} must reach\n{}",
            ip(to),
            t.agent_logs()
        );
    }
    for (from, to) in [
        ("d1", &w2),
        ("d1", &w1),
        ("d2", &w1),
        ("w2", &d1),
        ("w1", &d2),
    ] {
        assert!(
            !t.ping_once(from, &ip(to).to_string()),
            "{from} must not reach {}",
            ip(to)
        );
    }
    // The outside, through masquerade; no host's own address.
    assert!(t.ping("w1", &socketplane_lab::OUTSIDE_REMOTE_IP.to_string()));
    for h in &hosts {
        assert!(
            !t.ping_once("w1", &h.underlay_ip.to_string()),
            "w1 reached host {}",
            h.name
        );
    }

    // The path: routes via the peers' underlay addresses (host2's block,
    // which holds w2, as one route; /32s only for the fixed addresses
    // outside every block), no route for host1's own block, no FDB entry,
    // and on the wire plain ICMP between the workloads, while the overlay
    // beside it goes through VXLAN.
    let r = routes(&hosts[0].netns);
    assert_route(&r, ip(&w2), hosts[1].underlay_ip, true);
    assert_route(&r, ip(&w4), hosts[1].underlay_ip, false);
    assert_route(&r, ip(&w3), hosts[2].underlay_ip, false);
    assert!(
        route_to(&r, ip(&w1)).is_none(),
        "a route to its own w1:\n{r}"
    );
    assert!(
        r.lines().count() == 2 + 1,
        "one block route and two /32s:\n{r}"
    );
    assert!(!t.forwarding_state(0).contains(&w2.endpoint.mac.to_string()));
    let dir = t.lab().state_dir().to_path_buf();
    let cap = capture(&hosts[1].netns, &dir);
    assert!(pings(&t, "w1", ip(&w2), 5), "w1 -> w2");
    assert!(pings(&t, "d1", ip(&d2), 5), "d1 -> d2");
    let seen = cap.stop();
    let plain = format!("IP {} > {}: ICMP echo request", ip(&w1), ip(&w2));
    assert!(
        seen.contains(&plain),
        "no plain {plain:?} on the wire:\n{seen}"
    );
    let tunnelled: Vec<&str> = seen
        .lines()
        .filter(|l| l.contains(".4789") && l.contains("VXLAN"))
        .collect();
    assert!(
        !tunnelled.is_empty(),
        "the overlay's d1 -> d2 must be in VXLAN:\n{seen}"
    );
    let web_in_vxlan: Vec<&&str> = tunnelled
        .iter()
        .filter(|l| l.contains(&format!("{} >", ip(&w1))))
        .collect();
    assert!(
        web_in_vxlan.is_empty(),
        "web went through VXLAN: {web_in_vxlan:?}"
    );

    // Restart without churn: host2's agent is killed, w3 detached
    // meanwhile; after the restart its route goes, and w1's route is never
    // touched (not deleted, not re-added).
    let w1_route = assert_route(
        &routes(&hosts[1].netns),
        ip(&w1),
        hosts[0].underlay_ip,
        true,
    );
    let mon = Recorder::start(
        &hosts[1].netns,
        &["ip", "monitor", "route"],
        dir.join("monitor.txt"),
    );
    // The monitor is ready once it reports a probe route; a probe made
    // before it subscribed goes unseen, so probe again until one is seen.
    let probe = |op: &str| {
        netns::exec(
            &hosts[1].netns,
            &["ip", "route", op, "198.18.0.199/32", "dev", "eth0"],
        )
        .map(drop)
    };
    assert!(
        wait_until(Duration::from_secs(10), || {
            probe("add").expect("probe route");
            let seen = wait_until(Duration::from_millis(500), || {
                mon.text().contains("198.18.0.199")
            });
            probe("del").expect("remove the probe");
            seen
        }),
        "ip monitor route never reported the probe route"
    );
    t.lab_mut()
        .stop_agent(1, socketplane_lab::Signal::SIGKILL)
        .expect("kill -9");
    assert!(
        pings(&t, "w2", ip(&w1), 5),
        "traffic flows while the agent is down"
    );
    t.sp(
        2,
        &[
            "endpoint",
            "detach",
            "--netns",
            &w3.endpoint.netns.clone().unwrap(),
            "-n",
            "web",
        ],
    )
    .expect("detach w3");
    t.lab_mut().start_agent(1, false).expect("restart");
    let converged = wait_until(PROPAGATION, || {
        let r = routes(&hosts[1].netns);
        !r.contains(&format!("{} ", ip(&w3))) && r.contains(&format!("{w1_route} "))
    });
    assert!(
        converged,
        "host2 did not converge: {}\n{}",
        routes(&hosts[1].netns),
        t.agent_logs()
    );
    assert!(
        pings(&t, "w2", ip(&w1), 5),
        "traffic flows after the restart"
    );
    let changes = mon.stop();
    let touched: Vec<&str> = changes
        .lines()
        .filter(|l| l.contains(&format!("{w1_route} ")))
        .collect();
    assert!(touched.is_empty(), "w1's route churned: {touched:?}");
    assert!(
        changes
            .lines()
            .any(|l| l.starts_with("Deleted") && l.contains(&format!("{} ", ip(&w3)))),
        "w3's route was not removed:\n{changes}"
    );
}

#[test]
fn routed_network_across_two_subnets_tunnels_only_across() {
    require_privileged!();
    // host1 and host2 on 198.18.0.0/24, host3 on 198.18.1.0/24 behind the
    // outside namespace as router; mDNS stays on one subnet: --join.
    let t = TestLab::start_configured(
        's',
        3,
        Mode::on("linux").join(),
        common::test_agent_args(common::LEASE_TTL),
        |c| c.second_subnet_from = Some(2),
    );
    let hosts: Vec<_> = t.lab().hosts().to_vec();
    assert_eq!(hosts[2].underlay_ip, Ipv4Addr::new(198, 18, 1, 13));
    t.sp(
        0,
        &[
            "network",
            "create",
            "web",
            "10.2.0.0/24",
            "--mode",
            "routed",
        ],
    )
    .expect("create web");
    let info: NetworkInfo = t.sp_json(0, &["network", "info", "web"]);
    let mut t = t;
    let w1 = t.workload(0, "w1", "web");
    let w2 = t.workload(1, "w2", "web");
    let w3 = t.workload(2, "w3", "web");
    for (from, to) in [
        ("w1", &w2),
        ("w2", &w1),
        ("w1", &w3),
        ("w3", &w1),
        ("w2", &w3),
        ("w3", &w2),
    ] {
        assert!(
            t.ping(from, &ip(to).to_string()),
            "{from} -> {} must reach\n{}",
            ip(to),
            t.agent_logs()
        );
    }
    assert!(t.ping("w3", &socketplane_lab::OUTSIDE_REMOTE_IP.to_string()));

    // Routes only to the host on the same subnet.
    let r = routes(&hosts[0].netns);
    assert_route(&r, ip(&w2), hosts[1].underlay_ip, true);
    assert!(!r.contains(&format!("{} ", ip(&w3))), "{r}");
    assert!(route_to(&r, ip(&w3)).is_none(), "{r}");
    assert!(routes(&hosts[2].netns).trim().is_empty());

    // Which path each pair took, by the VXLAN device's counters.
    let vx = format!("spvx{}", info.network.vni);
    // (The flood list towards host3 carries a few stray frames meanwhile,
    // e.g. IPv6 multicast: far fewer than the pings.)
    let before = tx_packets(&hosts[0].netns, &vx);
    assert!(pings(&t, "w1", ip(&w2), 100));
    let same = tx_packets(&hosts[0].netns, &vx) - before;
    let before = (
        tx_packets(&hosts[0].netns, &vx),
        tx_packets(&hosts[2].netns, &vx),
    );
    assert!(pings(&t, "w1", ip(&w3), 100));
    let across = (
        tx_packets(&hosts[0].netns, &vx) - before.0,
        tx_packets(&hosts[2].netns, &vx) - before.1,
    );
    eprintln!("VXLAN packets sent: same subnet {same}, across {across:?}");
    assert!(
        same < 20,
        "host1 -> host2 (same subnet) used VXLAN: {same} packets for 100 pings"
    );
    assert!(
        across.0 >= 100 && across.1 >= 100,
        "host1 <-> host3 (across subnets) must use VXLAN: {across:?}"
    );
}
