//! The datapath conformance suite: one set of cases, run against every
//! implementation, as the store's suite is. `conformance!` at the bottom
//! instantiates each case once per datapath (`linux::…` and `ovs::…`).
//! What a case may know about an implementation is in [`Backend`]: how to
//! start one (and a fresh instance over what is there, as after a restart),
//! its device and veth names, and how to read the state it owns (where it
//! tunnels each MAC to, which addresses it answers ARP for).
//!
//! Needs root, network namespaces and the binaries of `common` (ip, bridge,
//! ping, nft, iptables, tcpdump), and for `ovs` openvswitch-switch and ethtool.

#![cfg(target_os = "linux")]

mod common;

use std::cell::{Ref, RefCell};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::ovs::Ovs;
use common::scenario::{check_connectivity, Topo, H0, H1};
use common::*;
use socketplane_datapath::ovs::DEFAULT_BRIDGE;
use socketplane_datapath::{DesiredState, LocalEndpoint, MacAddr, NetworkSpec};
use socketplane_testkit::wait_until;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Linux,
    /// The Linux datapath with network A routed between the hosts (they
    /// share the underlay subnet): routes instead of the tunnel.
    LinuxRouted,
    Ovs,
}

/// One datapath implementation under test, with the daemons it needs
/// (declare it before the lab so the daemons outlive the datapaths).
struct Backend {
    kind: Kind,
    ovs: RefCell<Vec<Ovs>>,
}

impl Backend {
    fn new(kind: Kind) -> Backend {
        Backend {
            kind,
            ovs: RefCell::new(Vec::new()),
        }
    }

    /// Starts the datapath in host namespace `ns` (with its own Open vSwitch).
    fn start(&self, ns: &str) -> DpHost {
        match self.kind {
            Kind::Linux | Kind::LinuxRouted => DpHost::start(ns),
            Kind::Ovs => {
                let o = Ovs::start(ns);
                let dp = o.datapath();
                self.ovs.borrow_mut().push(o);
                dp
            }
        }
    }

    /// A fresh instance over what is already on host `ns` (a restarted agent).
    fn restart(&self, ns: &str) -> DpHost {
        match self.kind {
            Kind::Linux | Kind::LinuxRouted => DpHost::start(ns),
            Kind::Ovs => self.daemon(ns).datapath(),
        }
    }

    fn daemon(&self, ns: &str) -> Ref<'_, Ovs> {
        Ref::map(self.ovs.borrow(), |v| {
            v.iter()
                .find(|o| o.ns == ns)
                .expect("OVS runs on that host")
        })
    }

    /// The two-host scenario with this datapath on both hosts.
    fn topo(&self) -> Topo {
        let mut t = Topo::new_with(false, |ns| self.start(ns));
        if self.kind == Kind::LinuxRouted {
            for (i, d) in t.desired.iter_mut().enumerate() {
                common::route_network(d, "a", &[H0, H1]);
                assert!(t.dp[i].apply(d).changes > 0);
                assert_eq!(t.dp[i].apply(d).changes, 0, "host {i}: re-apply");
            }
        }
        if self.kind == Kind::Ovs {
            // Real NICs put complete checksums on the wire; the outside's
            // veth must too, since br-phy's userspace datapath reads it.
            t.lab
                .exec(&t.lab.outside, &["ethtool", "-K", "eth0", "tx", "off"]);
        }
        t
    }

    fn veth_host(&self, id: &str) -> String {
        match self.kind {
            Kind::Linux | Kind::LinuxRouted => socketplane_datapath::linux::names::VETHS.host(id),
            Kind::Ovs => socketplane_datapath::ovs::VETHS.host(id),
        }
    }

    fn veth_peer(&self, id: &str) -> String {
        match self.kind {
            Kind::Linux | Kind::LinuxRouted => socketplane_datapath::linux::names::VETHS.peer(id),
            Kind::Ovs => socketplane_datapath::ovs::VETHS.peer(id),
        }
    }

    /// The kernel devices of network `vni`.
    fn net_devices(&self, vni: u32) -> Vec<String> {
        match self.kind {
            Kind::Linux | Kind::LinuxRouted => vec![format!("spbr{vni}"), format!("spvx{vni}")],
            Kind::Ovs => vec![format!("spbr{vni}")],
        }
    }

    /// Fewest writes removing one remote endpoint takes: its VXLAN FDB,
    /// bridge FDB and neighbour entries (Linux), one flow table (OVS).
    fn remote_removal_writes(&self) -> usize {
        match self.kind {
            Kind::Linux | Kind::LinuxRouted => 3,
            Kind::Ovs => 1,
        }
    }

    /// `(MAC, underlay address)` pairs host `ns` tunnels network `vni` to:
    /// remote MACs, and `00:00:00:00:00:00` once per host on the flood list.
    fn tunnel_entries(&self, ns: &str, vni: u32) -> Vec<(String, String)> {
        match self.kind {
            Kind::Linux | Kind::LinuxRouted => vxlan_fdb(ns, &format!("spvx{vni}")),
            Kind::Ovs => {
                let mut v = BTreeSet::new();
                for f in self.daemon(ns).flows() {
                    if !on_network(&f, vni) || !f.contains("->tun_dst") {
                        continue;
                    }
                    let mac = match field(&f, "dl_dst=") {
                        Some(m) if m.starts_with("01:00:00:00:00:00") => {
                            "00:00:00:00:00:00".to_string()
                        }
                        Some(m) => m,
                        None => continue,
                    };
                    for dst in set_fields(&f, "tun_dst") {
                        v.insert((mac.clone(), dst));
                    }
                }
                v.into_iter().collect()
            }
        }
    }

    /// `(IP, MAC)` of the remote endpoints host `ns` answers ARP for itself
    /// on network `vni` (not its own endpoints, not the gateway).
    fn arp_entries(&self, ns: &str, vni: u32) -> Vec<(String, String)> {
        match self.kind {
            Kind::Linux | Kind::LinuxRouted => perm_neigh(ns, &format!("spbr{vni}")),
            Kind::Ovs => {
                let flows = self.daemon(ns).flows();
                // Local MACs are the ones forwarded to a port, not the tunnel.
                let local: BTreeSet<String> = flows
                    .iter()
                    .filter(|f| on_network(f, vni) && f.contains("actions=output:"))
                    .filter_map(|f| field(f, "dl_dst="))
                    .collect();
                let mut v: Vec<(String, String)> = flows
                    .iter()
                    .filter(|f| on_network(f, vni))
                    .filter_map(|f| {
                        let ip = field(f, "arp_tpa=")?;
                        let mac = set_fields(f, "eth_src").into_iter().next()?;
                        Some((ip, mac))
                    })
                    .filter(|(_, mac)| *mac != MacAddr::GATEWAY.to_string() && !local.contains(mac))
                    .collect();
                v.sort();
                v
            }
        }
    }

    /// Everything the datapath forwards by on host `ns`, as text.
    fn forwarding_state(&self, ns: &str) -> String {
        match self.kind {
            Kind::Linux | Kind::LinuxRouted => {
                let fdb = sh(&["bridge", "-n", ns, "fdb", "show"]);
                let neigh = sh(&["ip", "-n", ns, "neigh", "show", "nud", "permanent"]);
                let routes = sh(&["ip", "-n", ns, "route", "show", "proto", "83"]);
                format!("{fdb}{neigh}{routes}")
            }
            Kind::Ovs => self.daemon(ns).flows().join("\n"),
        }
    }

    /// What the datapath made on host `ns`, in a form that changes only
    /// when the datapath writes (for "no churn" comparisons).
    fn snapshot(&self, ns: &str) -> String {
        let links: Vec<String> = sh(&["ip", "-n", ns, "-o", "link", "show"])
            .lines()
            .filter(|l| l.split(": ").nth(1).is_some_and(|n| n.starts_with("sp")))
            .map(str::to_string)
            .collect();
        let addrs: Vec<String> = sh(&["ip", "-n", ns, "-o", "-4", "addr", "show"])
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|n| n.starts_with("sp"))
            })
            .map(str::to_string)
            .collect();
        let fw = sh(&[
            "ip",
            "netns",
            "exec",
            ns,
            "nft",
            "list",
            "table",
            "inet",
            "socketplane",
        ]);
        let mut s = format!(
            "{}\n{}\n{fw}\n{}",
            links.join("\n"),
            addrs.join("\n"),
            self.forwarding_state(ns)
        );
        if self.kind == Kind::Ovs {
            let o = self.daemon(ns);
            s.push_str(&o.vsctl(&["list-ports", DEFAULT_BRIDGE]));
            s.push_str(&o.vsctl(&[
                "--columns=name,ofport,type,options,external_ids,mac,mtu_request",
                "list",
                "interface",
            ]));
        }
        s
    }

    /// Leaves stale forwarding state behind on host `ns` (of network 100):
    /// an entry towards 198.18.0.9 and one for MAC 02:00:00:00:00:99.
    fn damage_forwarding(&self, lab: &Lab, ns: &str) {
        match self.kind {
            Kind::Linux | Kind::LinuxRouted => {
                lab.exec(
                    ns,
                    &[
                        "bridge",
                        "fdb",
                        "append",
                        "00:00:00:00:00:00",
                        "dev",
                        "spvx100",
                        "dst",
                        "198.18.0.9",
                    ],
                );
                lab.exec(
                    ns,
                    &[
                        "ip",
                        "neigh",
                        "replace",
                        "10.10.0.99",
                        "lladdr",
                        "02:00:00:00:00:99",
                        "dev",
                        "spbr100",
                        "nud",
                        "permanent",
                    ],
                );
            }
            Kind::Ovs => {
                let o = self.daemon(ns);
                o.ofctl(&[
                    "add-flow",
                    &o.target(),
                    "table=20,priority=100,reg0=100,dl_dst=02:00:00:00:00:99,\
                     actions=set_field:198.18.0.9->tun_dst,output:1",
                ]);
            }
        }
    }

    /// Links named `sp*` on host `ns`, once they settled: ovs-vswitchd adds
    /// and removes the gateway ports' devices on its own time; the Linux
    /// datapath's writes are done when apply returns, so it is read at once.
    fn links_settled(&self, ns: &str, want: &[String]) -> Vec<String> {
        let mut want = want.to_vec();
        want.sort();
        if self.kind == Kind::Ovs {
            wait_until(Duration::from_secs(10), || our_links(ns) == want);
        }
        our_links(ns)
    }

    /// Implementation-specific facts about the two-host topology.
    fn check_topology(&self, t: &Topo) {
        if self.kind != Kind::Ovs {
            return;
        }
        // A secure bridge, one flow-based tunnel port, tagged ports.
        let o = self.daemon(&t.lab.hosts[0]);
        assert_eq!(
            o.vsctl(&["get", "bridge", DEFAULT_BRIDGE, "fail_mode"])
                .trim(),
            "secure"
        );
        assert_eq!(
            o.vsctl(&["get", "bridge", DEFAULT_BRIDGE, "datapath_type"])
                .trim(),
            "netdev"
        );
        let opts = o.vsctl(&["get", "interface", "spovxlan", "options"]);
        assert!(
            opts.contains("key=flow") && opts.contains("remote_ip=flow"),
            "{opts}"
        );
        let ports = o.vsctl(&["list-ports", DEFAULT_BRIDGE]);
        assert_eq!(ports.lines().count(), 1 + 2 + 3, "{ports}");
        let ext = o.vsctl(&[
            "--columns=external_ids",
            "find",
            "interface",
            "external_ids:socketplane-endpoint=wa1",
        ]);
        assert!(ext.contains("socketplane-network=a"), "{ext}");
    }

    /// Implementation-specific facts about an endpoint left in the host
    /// namespace for Docker (`present`) or removed (`!present`).
    fn check_docker_endpoint(&self, lab: &Lab, ns: &str, id: &str, present: bool) {
        let host = self.veth_host(id);
        match self.kind {
            Kind::Linux | Kind::LinuxRouted => {
                if present {
                    let show = lab.exec(ns, &["ip", "-o", "link", "show", &host]);
                    assert!(show.contains("master spbr100"), "{show}");
                }
            }
            Kind::Ovs => {
                let o = self.daemon(ns);
                let ports = o.vsctl(&["list-ports", DEFAULT_BRIDGE]);
                assert_eq!(ports.contains(&host), present, "{ports}");
                if present {
                    // The userspace datapath needs TX checksum offload off
                    // on the workload end.
                    let k = lab.exec(ns, &["ethtool", "-k", &self.veth_peer(id)]);
                    assert!(k.contains("tx-checksumming: off"), "{k}");
                }
            }
        }
    }
}

/// Whether an OpenFlow flow belongs to network `vni` (`reg0` holds it).
fn on_network(flow: &str, vni: u32) -> bool {
    flow.contains(&format!("reg0={vni},")) || flow.contains(&format!("reg0={vni:#x},"))
}

/// The value after `key` in a flow, up to the next `,` or space.
fn field(flow: &str, key: &str) -> Option<String> {
    let i = flow.find(key)?;
    Some(flow[i + key.len()..].split([',', ' ']).next()?.to_string())
}

/// Every value `X` of `set_field:X->name` in a flow.
fn set_fields(flow: &str, name: &str) -> Vec<String> {
    let suffix = format!("->{name}");
    flow.split([',', ' '])
        .filter_map(|a| a.strip_prefix("set_field:")?.strip_suffix(&suffix))
        .map(str::to_string)
        .collect()
}

/// One host with networks a (vni 100) and b (vni 200) and endpoint e1 on
/// a; [`OneHost::remote`] makes remote endpoints of a.
struct OneHost {
    lab: Lab,
    h: String,
    a: NetworkSpec,
    b: NetworkSpec,
    e1: LocalEndpoint,
}

impl OneHost {
    fn new() -> OneHost {
        let mut lab = Lab::new(1);
        let h = lab.hosts[0].clone();
        let a = net("a", 100, 10);
        let e1 = ep(&mut lab, "e1", &a, 11);
        OneHost {
            lab,
            h,
            a,
            b: net("b", 200, 20),
            e1,
        }
    }

    /// Remote endpoint `r<octet − 20>` at 10.10.0.`octet` on host 198.18.0.`host`.
    fn remote(&self, octet: u8, host: u8) -> socketplane_datapath::RemoteEndpoint {
        let e = local(&format!("r{}", octet - 20), &self.a, octet, "x");
        remote_of(&e, Ipv4Addr::new(198, 18, 0, host))
    }
}

fn ep(lab: &mut Lab, id: &str, n: &NetworkSpec, octet: u8) -> LocalEndpoint {
    let ns = lab.workload(id);
    local(id, n, octet, &ns)
}

fn netns_name(e: &LocalEndpoint) -> String {
    e.netns
        .as_ref()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .expect("endpoint in a named namespace")
        .to_string()
}

fn sorted(v: Vec<(&str, &str)>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = v
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------- cases

/// The two-host scenario: connectivity on one host and across, isolation,
/// the outside through masquerade, multicast, and a no-op re-apply.
fn two_hosts(kind: Kind) {
    let b = Backend::new(kind);
    let t = b.topo();
    check_connectivity(&t);
    b.check_topology(&t);
}

/// Networks are isolated from each other both ways, on one host and
/// across, gateways included; every isolated workload is shown to reach its
/// own network first, so a dead interface cannot pass for isolation.
fn isolation(kind: Kind) {
    let b = Backend::new(kind);
    let t = b.topo();
    let lab = &t.lab;
    let a_all = ["10.10.0.11", "10.10.0.12", "10.10.0.13", "10.10.0.1"];
    let b_all = ["10.20.0.11", "10.20.0.12", "10.20.0.1"];
    let cases = [
        (&t.wa1, "10.10.0.11", &a_all[..], &b_all[..]),
        (&t.wa2, "10.10.0.12", &a_all[..], &b_all[..]),
        (&t.wa3, "10.10.0.13", &a_all[..], &b_all[..]),
        (&t.wb1, "10.20.0.11", &b_all[..], &a_all[..]),
        (&t.wb2, "10.20.0.12", &b_all[..], &a_all[..]),
    ];
    for (ns, own, same, other) in cases {
        for dst in same.iter().filter(|d| **d != own) {
            assert!(
                lab.ping(ns, dst),
                "{ns} ({own}) cannot reach {dst} in its own network"
            );
        }
        for dst in other {
            assert!(
                lab.ping_fails(ns, dst),
                "{ns} ({own}) reached {dst} in another network"
            );
        }
    }
    // TCP is isolated too: a listener in B is not reachable from A.
    let (tx, rx) = std::sync::mpsc::channel();
    let server = spawn_in_ns(&t.wb1, move || {
        let l = TcpListener::bind((Ipv4Addr::new(10, 20, 0, 11), 5002)).unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if l.accept().is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    });
    rx.recv().unwrap();
    let connected = in_ns(&t.wa1, || {
        TcpStream::connect_timeout(
            &(Ipv4Addr::new(10, 20, 0, 11), 5002).into(),
            Duration::from_secs(2),
        )
        .is_ok()
    });
    assert!(!connected, "wa1 opened a TCP connection into network B");
    assert!(!server.join().unwrap(), "wb1 accepted a connection from A");
}

/// Full-MTU packets cross hosts without fragmentation and bulk TCP works.
fn large_packets_and_bulk_tcp(kind: Kind) {
    let b = Backend::new(kind);
    let t = b.topo();
    let lab = &t.lab;
    assert_eq!(t.dp[0].mtu, 1450);
    // 1400 bytes, and the largest packet the overlay MTU allows (1422 + 28
    // = 1450): the 50 bytes of VXLAN fit the underlay's 1500, no black hole.
    for size in ["1400", "1422"] {
        assert!(
            lab.try_exec(
                &t.wa1,
                &[
                    "ping",
                    "-n",
                    "-q",
                    "-M",
                    "do",
                    "-s",
                    size,
                    "-c",
                    "2",
                    "-W",
                    "2",
                    "10.10.0.12"
                ]
            ),
            "{size}-byte DF ping across hosts"
        );
    }
    // 50 MB over one TCP connection across the tunnel.
    const TOTAL: usize = 50 * 1024 * 1024;
    let (tx, rx) = std::sync::mpsc::channel();
    let server = spawn_in_ns(&t.wa2, move || {
        let l = TcpListener::bind((Ipv4Addr::new(10, 10, 0, 12), 5001)).unwrap();
        tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0usize;
        loop {
            let k = s.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            n += k;
        }
        n
    });
    rx.recv().unwrap();
    in_ns(&t.wa1, move || {
        let mut s = TcpStream::connect_timeout(
            &(Ipv4Addr::new(10, 10, 0, 12), 5001).into(),
            Duration::from_secs(3),
        )
        .unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let chunk = vec![0x5au8; 256 * 1024];
        let mut sent = 0;
        while sent < TOTAL {
            s.write_all(&chunk).unwrap();
            sent += chunk.len();
        }
    });
    assert_eq!(server.join().unwrap(), TOTAL);
}

/// Re-applying the same state makes no writes; removing remote endpoints,
/// a network, and finally everything removes exactly their state.
fn idempotent_reapply_and_prune(kind: Kind) {
    let b = Backend::new(kind);
    let one = OneHost::new();
    let (lab, h, a, bn, e1) = (&one.lab, &one.h, &one.a, &one.b, &one.e1);
    let (r1, r2, r3) = (one.remote(21, 2), one.remote(22, 3), one.remote(23, 3));
    let mut d = DesiredState {
        networks: vec![a.clone(), bn.clone()],
        local: vec![e1.clone()],
        remote: vec![r1.clone(), r2.clone(), r3.clone()],
        ..Default::default()
    };
    let dp = b.start(h);
    assert!(dp.apply(&d).changes > 0);
    let first = Instant::now();
    assert_eq!(dp.apply(&d).changes, 0, "re-apply must make no writes");
    eprintln!("no-op apply took {:?}", first.elapsed());

    let zero = "00:00:00:00:00:00".to_string();
    let mac = |r: &socketplane_datapath::RemoteEndpoint| r.mac.to_string();
    let mut want = vec![
        (mac(&r1), "198.18.0.2".to_string()),
        (mac(&r2), "198.18.0.3".to_string()),
        (mac(&r3), "198.18.0.3".to_string()),
        (zero.clone(), "198.18.0.2".to_string()),
        (zero.clone(), "198.18.0.3".to_string()),
    ];
    want.sort();
    assert_eq!(b.tunnel_entries(h, 100), want);
    assert_eq!(b.arp_entries(h, 100).len(), 3);

    // Remove r2: its entries go; the flood entry to .3 stays (r3).
    d.remote.retain(|r| r.id != "r2");
    let rep = dp.apply(&d);
    assert!(rep.changes >= b.remote_removal_writes(), "{rep:?}");
    want.retain(|(m, _)| *m != mac(&r2));
    assert_eq!(b.tunnel_entries(h, 100), want);
    let arp = b.arp_entries(h, 100);
    assert!(!arp.iter().any(|(ip, _)| ip == "10.10.0.22"), "{arp:?}");
    assert_eq!(arp.len(), 2);
    // Remove r3 too: no endpoint left on .3, so its flood entry goes.
    d.remote.retain(|r| r.id != "r3");
    dp.apply(&d);
    assert_eq!(
        b.tunnel_entries(h, 100),
        sorted(vec![
            ("00:00:00:00:00:00", "198.18.0.2"),
            (&mac(&r1), "198.18.0.2")
        ])
    );
    assert_eq!(dp.apply(&d).changes, 0);

    // Removing a network removes its devices and its rules.
    assert!(nft_table_exists(lab, h, "inet", "socketplane"));
    let rules = lab.exec(h, &["nft", "list", "table", "inet", "socketplane"]);
    assert!(rules.contains("spbr200"), "{rules}");
    d.networks.retain(|n| n.name != "b");
    assert!(dp.apply(&d).changes > 0);
    let mut want_links = b.net_devices(100);
    want_links.push(b.veth_host("e1"));
    let links = b.links_settled(h, &want_links);
    assert!(!links.iter().any(|l| l.ends_with("200")), "{links:?}");
    let rules = lab.exec(h, &["nft", "list", "table", "inet", "socketplane"]);
    assert!(
        !rules.contains("spbr200") && !rules.contains("10.20.0.0"),
        "{rules}"
    );
    assert_eq!(dp.apply(&d).changes, 0);

    // Removing everything leaves nothing of ours.
    dp.apply(&DesiredState::default());
    let left = b.links_settled(h, &[]);
    assert!(left.is_empty(), "{left:?}");
    assert!(!nft_table_exists(lab, h, "inet", "socketplane"));
    assert!(!nft_table_exists(lab, h, "bridge", "socketplane"));
    assert_eq!(dp.apply(&DesiredState::default()).changes, 0);
}

/// A fresh instance over a converged host (an agent restart) writes
/// nothing and changes nothing; through it, a detached endpoint's veth,
/// ports and forwarding state go while the rest keeps working.
fn restart_without_churn(kind: Kind) {
    let b = Backend::new(kind);
    let t = b.topo();
    let lab = &t.lab;
    for (i, h) in lab.hosts.iter().enumerate() {
        let before = b.snapshot(h);
        let fresh = b.restart(h);
        assert_eq!(fresh.apply(&t.desired[i]).changes, 0, "host {i}");
        assert_eq!(b.snapshot(h), before, "churn on restart of host {i}");
    }
    assert!(lab.ping(&t.wa1, "10.10.0.12"));
    assert!(lab.ping(&t.wa2, "10.10.0.11"));

    // Detach wa3 through a fresh instance: its veth and every trace of its
    // MAC are gone; the rest still works.
    let h0 = &lab.hosts[0];
    let fresh = b.restart(h0);
    let mut d0 = t.desired[0].clone();
    let wa3 = d0.local.iter().find(|e| e.id == "wa3").unwrap().clone();
    d0.local.retain(|e| e.id != "wa3");
    assert!(fresh.apply(&d0).changes > 0);
    assert_eq!(fresh.apply(&d0).changes, 0);
    let host = b.veth_host("wa3");
    assert!(!our_links(h0).contains(&host), "{:?}", our_links(h0));
    if kind == Kind::Ovs {
        let ports = b.daemon(h0).vsctl(&["list-ports", DEFAULT_BRIDGE]);
        assert!(!ports.contains(&host), "{ports}");
    }
    let mac = wa3.mac.to_string();
    let state = b.forwarding_state(h0);
    assert!(
        !state.contains(&mac),
        "forwarding state of a detached endpoint remains:\n{state}"
    );
    assert!(lab.ping(&t.wa1, "10.10.0.12"));
}

/// After a crash (no teardown) and damage to what was left, a fresh
/// instance with a new desired state removes what is stale, repairs what
/// was changed and leaves what is not its own.
fn restart_after_crash_prunes_leftovers(kind: Kind) {
    let b = Backend::new(kind);
    let mut one = OneHost::new();
    let e2 = ep(&mut one.lab, "e2", &one.b, 11);
    let (lab, h, a, bn, e1) = (&one.lab, &one.h, &one.a, &one.b, &one.e1);
    let (r1, r2) = (one.remote(21, 2), one.remote(22, 3));
    let old = DesiredState {
        networks: vec![a.clone(), bn.clone()],
        local: vec![e1.clone(), e2.clone()],
        remote: vec![r1.clone(), r2.clone()],
        ..Default::default()
    };
    {
        let dp = b.start(h);
        dp.apply(&old);
        // "Crash": the datapath goes away without teardown.
    }
    // Extra damage: stale forwarding entries, a wrong MTU, an address
    // removed inside a workload, and a foreign link that is not ours.
    b.damage_forwarding(lab, h);
    lab.exec(h, &["ip", "link", "set", "spbr100", "mtu", "1400"]);
    let e1ns = netns_name(e1);
    lab.exec(&e1ns, &["ip", "addr", "flush", "dev", "eth0"]);
    lab.exec(h, &["ip", "link", "add", "spbrfoo", "type", "bridge"]);

    // New desired state: network b gone (with e2), r2 gone.
    let new = DesiredState {
        networks: vec![a.clone()],
        local: vec![e1.clone()],
        remote: vec![r1.clone()],
        ..Default::default()
    };
    let dp = b.restart(h);
    assert!(dp.apply(&new).changes > 0);
    assert_eq!(dp.apply(&new).changes, 0);

    let mut want_links = b.net_devices(100);
    want_links.push("spbrfoo".to_string());
    want_links.push(b.veth_host("e1"));
    want_links.sort();
    assert_eq!(b.links_settled(h, &want_links), want_links);
    assert!(
        lab.try_exec(h, &["ip", "link", "show", "spbrfoo"]),
        "foreign link removed"
    );
    assert_eq!(
        b.tunnel_entries(h, 100),
        sorted(vec![
            ("00:00:00:00:00:00", "198.18.0.2"),
            (&r1.mac.to_string(), "198.18.0.2")
        ])
    );
    assert_eq!(
        b.arp_entries(h, 100),
        vec![("10.10.0.21".to_string(), r1.mac.to_string())]
    );
    let state = b.forwarding_state(h);
    assert!(
        !state.contains("198.18.0.9") && !state.contains("02:00:00:00:00:99"),
        "stale forwarding state remains:\n{state}"
    );
    let mtu = lab.exec(h, &["cat", "/sys/class/net/spbr100/mtu"]);
    assert_eq!(mtu.trim(), "1450");
    let addr = lab.exec(&e1ns, &["ip", "-4", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("10.10.0.11/24"), "{addr}");
    let rules = lab.exec(h, &["nft", "list", "table", "inet", "socketplane"]);
    assert!(!rules.contains("spbr200"), "{rules}");
    // And the endpoint works: it reaches its gateway.
    assert!(lab.ping(&e1ns, "10.10.0.1"));

    dp.teardown();
    assert_eq!(
        b.links_settled(h, &["spbrfoo".to_string()]),
        vec!["spbrfoo".to_string()]
    );
}

/// An endpoint without a namespace stays in the host namespace, with its
/// MAC and MTU, for a runtime (Docker) to move.
fn endpoint_left_in_host_namespace_for_docker(kind: Kind) {
    let b = Backend::new(kind);
    let lab = Lab::new(1);
    let h = lab.hosts[0].clone();
    let a = net("a", 100, 10);
    let mut e = local("dock", &a, 30, "unused");
    e.netns = None;
    let d = DesiredState {
        networks: vec![a.clone()],
        local: vec![e.clone()],
        remote: vec![],
        ..Default::default()
    };
    let dp = b.start(&h);
    assert!(dp.apply(&d).changes > 0);
    let peer = b.veth_peer("dock");
    let show = lab.exec(&h, &["ip", "-o", "link", "show", &peer]);
    assert!(show.contains(&e.mac.to_string()), "{show}");
    assert!(show.contains("mtu 1450"), "{show}");
    b.check_docker_endpoint(&lab, &h, "dock", true);
    assert_eq!(dp.apply(&d).changes, 0);
    dp.apply(&DesiredState::default());
    let left = b.links_settled(&h, &[]);
    assert!(left.is_empty(), "{left:?}");
    b.check_docker_endpoint(&lab, &h, "dock", false);
}

/// A workload on two networks gets one default route (via its first
/// network) and reaches both gateways; a fresh instance verifies both ends
/// inside the namespace without writing.
fn workload_on_two_networks_keeps_one_default_route(kind: Kind) {
    let b = Backend::new(kind);
    let mut lab = Lab::new(1);
    let h = lab.hosts[0].clone();
    let a = net("a", 100, 10);
    let bn = net("b", 200, 20);
    let w = lab.workload("multi");
    let ea = local("multi-a", &a, 11, &w);
    let mut eb = local("multi-b", &bn, 11, &w);
    eb.ifname = "eth1".into();
    let d = DesiredState {
        networks: vec![a.clone(), bn.clone()],
        local: vec![ea, eb],
        remote: vec![],
        ..Default::default()
    };
    let dp = b.start(&h);
    assert!(dp.apply(&d).changes > 0);
    assert_eq!(dp.apply(&d).changes, 0);
    drop(dp);
    let dp = b.restart(&h);
    assert_eq!(dp.apply(&d).changes, 0);
    let routes = lab.exec(&w, &["ip", "-4", "route", "show", "default"]);
    assert_eq!(routes.lines().count(), 1, "{routes}");
    assert!(routes.contains("via 10.10.0.1 dev eth0"), "{routes}");
    assert!(lab.ping(&w, "10.20.0.1"));
    assert!(lab.ping(&w, "10.10.0.1"));
}

/// Inner frames of the VXLAN packets captured on a host's NIC, by
/// direction: `(from host, to host, inner frame as tcpdump prints it)`.
struct Tunnelled(Vec<(Ipv4Addr, Ipv4Addr, String)>);

impl Tunnelled {
    fn parse(text: &str) -> Tunnelled {
        let mut v = Vec::new();
        let mut lines = text.lines();
        while let Some(l) = lines.next() {
            let Some(i) = l.find(": VXLAN") else {
                continue;
            };
            // "... 198.18.0.1.40001 > 198.18.0.2.4789: VXLAN, flags [I] (0x08), vni 100"
            let mut ends = l[..i].rsplit(' ');
            let dst = ends.next().and_then(host_of);
            let _ = ends.next();
            let src = ends.next().and_then(host_of);
            let inner = lines.next().unwrap_or_default().to_string();
            if let (Some(src), Some(dst)) = (src, dst) {
                v.push((src, dst, inner));
            }
        }
        Tunnelled(v)
    }

    fn from(&self, src: Ipv4Addr) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(s, _, _)| *s == src)
            .map(|(_, _, f)| f.as_str())
            .collect()
    }
}

/// `198.18.0.1.40001` -> 198.18.0.1.
fn host_of(addr_port: &str) -> Option<Ipv4Addr> {
    addr_port.rsplit_once('.')?.0.parse().ok()
}

/// Captures on `dev` in namespace `ns` (tcpdump, link-level headers) while
/// `during` runs; returns what it printed.
fn capture(ns: &str, dev: &str, filter: &str, during: impl FnOnce()) -> String {
    socketplane_testkit::require("tcpdump", "tcpdump");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("capture.txt");
    let out = std::fs::File::create(&file).unwrap();
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "tcpdump", "-i", dev, "-nn", "-e", "-l"])
        .arg("--immediate-mode")
        .arg(filter)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let listening = || {
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .contains("listening on")
    };
    assert!(
        wait_until(Duration::from_secs(5), listening),
        "tcpdump on {dev} did not start"
    );
    during();
    std::thread::sleep(Duration::from_millis(500));
    // SIGTERM (not SIGKILL) so tcpdump flushes what it captured.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    std::fs::read_to_string(&file).unwrap()
}

/// The anycast gateway never crosses the tunnel, checked on the wire (the
/// hosts' NICs, decoded as VXLAN) in both directions: no frame from the
/// gateway MAC, none to it, no ARP for or from the gateway address, no ARP
/// reply, and no ARP for remote endpoints (answered locally). Positive
/// controls in both directions: workload traffic and ARP for an unknown
/// address do cross, and the capture shows their inner MACs.
fn gateway_never_crosses_the_tunnel(kind: Kind) {
    let b = Backend::new(kind);
    let t = b.topo();
    let lab = &t.lab;
    let (h0, h1) = (lab.hosts[0].clone(), lab.hosts[1].clone());
    let gw = MacAddr::GATEWAY.to_string();
    let filter = "udp dst port 4789";
    let mut wire1 = String::new();
    let wire0 = capture(&h0, "eth0", filter, || {
        wire1 = capture(&h1, "eth0", filter, || {
            for w in [&t.wa1, &t.wa2] {
                // ARP for the gateway, frames to it and its replies.
                lab.exec(w, &["ip", "neigh", "flush", "all"]);
                assert!(lab.ping(w, "10.10.0.1"), "{w} -> gateway");
                // Routed through the gateway to the outside.
                assert!(lab.ping(w, "198.18.0.254"), "{w} -> outside");
            }
            // The hosts themselves send from the gateway: ARP for an
            // address nobody has, and traffic to remote endpoints.
            assert!(lab.ping_fails(&h0, "10.10.0.98"));
            assert!(lab.ping_fails(&h1, "10.10.0.97"));
            lab.try_exec(
                &h0,
                &["ping", "-n", "-q", "-c", "1", "-W", "1", "10.10.0.12"],
            );
            lab.try_exec(
                &h1,
                &["ping", "-n", "-q", "-c", "1", "-W", "1", "10.10.0.11"],
            );
            // ARP for remote endpoints is answered locally.
            lab.exec(&t.wa1, &["ip", "neigh", "flush", "all"]);
            lab.exec(&t.wa2, &["ip", "neigh", "flush", "all"]);
            assert!(lab.ping(&t.wa1, "10.10.0.12"));
            assert!(lab.ping(&t.wa2, "10.10.0.11"));
            // Positive control: ARP for an unknown address is flooded,
            // from each side.
            assert!(lab.ping_fails(&t.wa1, "10.10.0.99"));
            assert!(lab.ping_fails(&t.wa2, "10.10.0.100"));
        });
    });
    for (side, wire) in [("h0", &wire0), ("h1", &wire1)] {
        let frames = Tunnelled::parse(wire);
        for (src, dst, unknown, from_mac, to_mac) in [
            (
                H0,
                H1,
                "10.10.0.99",
                "02:53:0a:0a:00:0b",
                "02:53:0a:0a:00:0c",
            ),
            (
                H1,
                H0,
                "10.10.0.100",
                "02:53:0a:0a:00:0c",
                "02:53:0a:0a:00:0b",
            ),
        ] {
            let inner = frames.from(src).join("\n");
            let dir = format!("{src} -> {dst} seen at {side}");
            assert!(
                inner.contains(&format!("who-has {unknown} ")),
                "no ARP flood {dir}:\n{wire}"
            );
            assert!(
                inner.contains(&format!("{from_mac} > {to_mac}")),
                "no workload frame {dir}:\n{wire}"
            );
            assert!(
                !inner.contains(&format!("{gw} >")),
                "a frame from the gateway MAC crossed {dir}:\n{inner}"
            );
            assert!(
                !inner.contains(&format!("> {gw}")),
                "a frame to the gateway MAC crossed {dir}:\n{inner}"
            );
            assert!(
                !inner.contains("who-has 10.10.0.1 "),
                "ARP for the gateway crossed {dir}:\n{inner}"
            );
            assert!(
                !inner.contains("tell 10.10.0.1,"),
                "ARP from the gateway crossed {dir}:\n{inner}"
            );
            assert!(
                !inner.contains("is-at"),
                "an ARP reply crossed {dir}:\n{inner}"
            );
            for remote in ["10.10.0.11", "10.10.0.12"] {
                assert!(
                    !inner.contains(&format!("who-has {remote} ")),
                    "ARP for a remote endpoint was not answered locally ({dir}):\n{inner}"
                );
            }
        }
    }
    assert!(lab.ping(&t.wa1, "10.10.0.1"));
    let neigh = lab.exec(&t.wa1, &["ip", "neigh", "show", "10.10.0.1"]);
    assert!(
        neigh.contains(&gw),
        "{neigh}\n{}\n{}",
        sh(&["ip", "-n", &h0, "link"]),
        if kind == Kind::Ovs {
            b.daemon(&h0).flows().join("\n")
        } else {
            String::new()
        }
    );
    let neigh = lab.exec(&t.wa1, &["ip", "neigh", "show", "10.10.0.12"]);
    assert!(neigh.contains("02:53:0a:0a:00:0c"), "{neigh}");
}

/// Whether a TCP connection from namespace `ns` to `ip:port` opens.
fn tcp_opens(ns: &str, ip: Ipv4Addr, port: u16) -> bool {
    in_ns(ns, move || {
        TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(1)).is_ok()
    })
}

/// A TCP listener inside namespace `ns` (the kernel completes handshakes
/// into its backlog; nobody needs to accept).
fn tcp_listener(ns: &str, ip: Ipv4Addr, port: u16) -> TcpListener {
    in_ns(ns, move || TcpListener::bind((ip, port)).unwrap())
}

/// A UDP socket inside namespace `ns`, reading with a short timeout.
fn udp_socket(ns: &str, ip: Ipv4Addr, port: u16) -> UdpSocket {
    in_ns(ns, move || {
        let s = UdpSocket::bind((ip, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        s
    })
}

/// Sends `tag` from namespace `ns` (source `src`) to `dst` a few times.
fn udp_send(ns: &str, src: Ipv4Addr, dst: (Ipv4Addr, u16), tag: &'static str) {
    in_ns(ns, move || {
        let s = UdpSocket::bind((src, 0)).unwrap();
        for _ in 0..3 {
            let _ = s.send_to(tag.as_bytes(), dst);
            std::thread::sleep(Duration::from_millis(30));
        }
    })
}

/// Whether datagram `tag` reached `sock` (reads until it is quiet).
fn udp_got(sock: &UdpSocket, tag: &str) -> bool {
    let mut buf = [0u8; 2048];
    let mut got = false;
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        got |= &buf[..n] == tag.as_bytes();
    }
    got
}

/// Workloads reach no host of the cluster: not their gateway, not the other
/// network's gateway, not their host's underlay or other local addresses,
/// not the other host's underlay (so remote workloads do not reach a host
/// either); the only exception is DNS (TCP and UDP 53) on their own
/// network's gateway. Positive controls: the listeners answer the outside
/// and the host itself, and the workloads' own traffic (same network,
/// across hosts, their gateway, masquerade to the outside) flows.
fn workloads_fenced_from_hosts(kind: Kind) {
    let b = Backend::new(kind);
    let mut t = b.topo();
    for (i, d) in t.desired.iter_mut().enumerate() {
        d.peers = vec![H0, H1];
        t.dp[i].apply(d);
    }
    let lab = &t.lab;
    let (h0, h1) = (lab.hosts[0].clone(), lab.hosts[1].clone());
    let extra = Ipv4Addr::new(198, 19, 0, 1);
    lab.exec(&h0, &["ip", "addr", "add", "198.19.0.1/32", "dev", "lo"]);
    let _l0 = tcp_listener(&h0, Ipv4Addr::UNSPECIFIED, 6675);
    let _l1 = tcp_listener(&h1, Ipv4Addr::UNSPECIFIED, 6675);
    // Positive controls: the listeners are up and the workloads' own
    // traffic flows.
    assert!(tcp_opens(&lab.outside, H0, 6675), "outside -> h0:6675");
    assert!(tcp_opens(&lab.outside, H1, 6675), "outside -> h1:6675");
    assert!(tcp_opens(&h0, extra, 6675), "h0 -> its own {extra}");
    assert!(lab.ping(&t.wa1, "10.10.0.12"), "wa1 -> wa2");
    assert!(lab.ping(&t.wa1, "10.10.0.13"), "wa1 -> wa3");
    assert!(lab.ping(&t.wa1, "10.10.0.1"), "wa1 -> its gateway");
    assert!(lab.ping(&t.wa2, "198.18.0.254"), "wa2 -> outside");
    common::scenario::tcp_roundtrip(lab, &lab.outside, Ipv4Addr::new(198, 18, 0, 254), &t.wa1);

    let gw_a = Ipv4Addr::new(10, 10, 0, 1);
    let gw_b = Ipv4Addr::new(10, 20, 0, 1);
    for (ns, who, targets) in [
        (&t.wa1, "wa1 (h0, a)", vec![gw_a, gw_b, H0, H1, extra]),
        (&t.wb1, "wb1 (h0, b)", vec![gw_a, gw_b, H0, H1, extra]),
        (&t.wa2, "wa2 (h1, a)", vec![gw_a, gw_b, H0, H1, extra]),
    ] {
        for dst in targets {
            assert!(!tcp_opens(ns, dst, 6675), "{who} reached {dst}:6675");
        }
    }
    // Not even ping to another network's gateway or to a host.
    assert!(lab.ping_fails(&t.wa1, "198.18.0.1"), "wa1 pinged h0");
    assert!(lab.ping_fails(&t.wa1, "198.18.0.2"), "wa1 pinged h1");
    assert!(lab.ping_fails(&t.wa2, "198.18.0.1"), "wa2 pinged h0");

    // DNS on the gateway: reachable from its own network only.
    let _dns_tcp = tcp_listener(&h0, gw_a, 53);
    let dns_udp = udp_socket(&h0, gw_a, 53);
    assert!(tcp_opens(&h0, gw_a, 53), "h0 -> its own DNS listener");
    assert!(
        !tcp_opens(&t.wb1, gw_a, 53),
        "wb1 reached a's gateway:53/tcp"
    );
    udp_send(
        &t.wb1,
        Ipv4Addr::new(10, 20, 0, 11),
        (gw_a, 53),
        "dns-from-b",
    );
    assert!(
        !udp_got(&dns_udp, "dns-from-b"),
        "wb1 reached a's gateway:53/udp"
    );
    assert!(
        tcp_opens(&t.wa1, gw_a, 53),
        "wa1 cannot reach its gateway:53/tcp"
    );
    udp_send(
        &t.wa1,
        Ipv4Addr::new(10, 10, 0, 11),
        (gw_a, 53),
        "dns-from-a",
    );
    assert!(
        udp_got(&dns_udp, "dns-from-a"),
        "wa1 cannot reach its gateway:53/udp"
    );
    // Still nothing else on the gateway.
    assert!(!tcp_opens(&t.wa1, gw_a, 6675));
    assert!(lab.ping(&t.wa1, "10.10.0.12"), "wa1 -> wa2 afterwards");
}

/// Sends a hand-made VXLAN packet from namespace `ns` to `dst`:4789 with
/// `vni`, carrying an Ethernet/IPv4/UDP frame to `inner` (MAC and IP) port
/// 7777 with payload `tag`.
fn send_vxlan(ns: &str, dst: Ipv4Addr, vni: u32, inner: (MacAddr, Ipv4Addr), tag: &str) {
    socketplane_testkit::require("python3", "python3");
    const SCRIPT: &str = r#"
import socket, struct, sys, time
dst, vni, mac, ip, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5].encode()
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff
src = ip.rsplit('.', 1)[0] + '.99'
udp = struct.pack('!HHHH', 40000, 7777, 8 + len(tag), 0) + tag
iph = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                  socket.inet_aton(src), socket.inet_aton(ip))
iph = iph[:10] + struct.pack('!H', csum(iph)) + iph[12:]
eth = bytes.fromhex(mac.replace(':', '')) + bytes.fromhex('020000000063') + b'\x08\x00'
vxlan = struct.pack('!II', 0x08000000, vni << 8)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 11, 1)  # SO_NO_CHECK: outer UDP checksum 0, as VXLAN allows
for _ in range(3):
    s.sendto(vxlan + eth + iph + udp, (dst, 4789))
    time.sleep(0.05)
"#;
    let (mac, ip) = (inner.0.to_string(), inner.1.to_string());
    let (dst, vni) = (dst.to_string(), vni.to_string());
    // Fresh ARP: moving a lab host's underlay address to br-phy (OVS)
    // changes its MAC, and a stale entry would miss the tunnel endpoint.
    sh(&["ip", "-n", ns, "neigh", "flush", "all"]);
    sh(&[
        "ip", "netns", "exec", ns, "python3", "-c", SCRIPT, &dst, &vni, &mac, &ip, tag,
    ]);
}

/// VXLAN is accepted only from the cluster's members (hosts of remote
/// endpoints and `peers`), and a workload cannot inject into another
/// network through any host's VXLAN port. Positive controls: the same
/// crafted packet sent by a member is delivered, and so is the outsider's
/// once it is listed as a peer.
fn vxlan_only_from_members(kind: Kind) {
    let b = Backend::new(kind);
    let mut t = b.topo();
    let lab = &t.lab;
    let (h0, h1) = (lab.hosts[0].clone(), lab.hosts[1].clone());
    if kind == Kind::Ovs {
        // Lab artefact: the kernel of an OVS host still answers ARP for its
        // underlay address on eth0 (an OVS port now), with eth0's MAC,
        // racing br-phy's answer; only OVS may handle eth0's frames.
        for h in [&h0, &h1] {
            lab.exec(h, &["ip", "link", "set", "eth0", "arp", "off"]);
        }
    }
    let wb1 = (
        MacAddr::from_ipv4(Ipv4Addr::new(10, 20, 0, 11)),
        Ipv4Addr::new(10, 20, 0, 11),
    );
    let wb2 = (
        MacAddr::from_ipv4(Ipv4Addr::new(10, 20, 0, 12)),
        Ipv4Addr::new(10, 20, 0, 12),
    );
    // The workloads of b talk, so both bridges know their MACs.
    assert!(lab.ping(&t.wb1, "10.20.0.12"));
    let at_wb1 = udp_socket(&t.wb1, wb1.1, 7777);
    let at_wb2 = udp_socket(&t.wb2, wb2.1, 7777);

    // Positive controls: a member's packet is delivered, both ways.
    // (Retried: Open vSwitch installs a new datapath flow on the first.)
    let delivered = |from: &str, to: Ipv4Addr, inner, sock: &UdpSocket, tag| {
        wait_until(Duration::from_secs(5), || {
            send_vxlan(from, to, 200, inner, tag);
            udp_got(sock, tag)
        })
    };
    assert!(
        delivered(&h0, H1, wb2, &at_wb2, "from-h0"),
        "crafted VXLAN from member h0 not delivered"
    );
    assert!(
        delivered(&h1, H0, wb1, &at_wb1, "from-h1"),
        "crafted VXLAN from member h1 not delivered"
    );

    // A host that is no member is refused.
    let outside = lab.outside.clone();
    send_vxlan(&outside, H1, 200, wb2, "from-outside");
    assert!(
        !udp_got(&at_wb2, "from-outside"),
        "VXLAN from a non-member delivered"
    );
    // ... until it is listed as a peer (a member without endpoints).
    let out_ip = Ipv4Addr::new(198, 18, 0, 254);
    // (Open vSwitch applies new flows to its datapath cache on its own
    // time: a short settling time, and retries for the positive case.)
    t.desired[1].peers = vec![H0, out_ip];
    t.dp[1].apply(&t.desired[1]);
    assert!(
        delivered(&outside, H1, wb2, &at_wb2, "from-peer"),
        "VXLAN from a listed peer not delivered"
    );
    t.desired[1].peers = vec![H0];
    t.dp[1].apply(&t.desired[1]);
    std::thread::sleep(Duration::from_secs(1));
    send_vxlan(&outside, H1, 200, wb2, "from-ex-peer");
    assert!(
        !udp_got(&at_wb2, "from-ex-peer"),
        "VXLAN from a removed peer delivered"
    );

    // A workload of network a injects into b: at the other host, its own
    // host and its gateway. Nothing arrives.
    let gw_a = Ipv4Addr::new(10, 10, 0, 1);
    for (dst, inner, sock, tag) in [
        (H1, wb2, &at_wb2, "wa1-to-h1"),
        (H0, wb1, &at_wb1, "wa1-to-h0"),
        (gw_a, wb1, &at_wb1, "wa1-to-gw"),
    ] {
        send_vxlan(&t.wa1, dst, 200, inner, tag);
        assert!(
            !udp_got(sock, tag),
            "workload's crafted VXLAN to {dst} delivered"
        );
    }
    send_vxlan(&t.wa2, H0, 200, wb1, "wa2-to-h0");
    assert!(
        !udp_got(&at_wb1, "wa2-to-h0"),
        "remote workload's crafted VXLAN delivered"
    );
    // The workloads' own traffic still flows.
    assert!(lab.ping(&t.wa1, "10.10.0.12"));
    assert!(lab.ping(&t.wb2, "10.20.0.11"));
    assert!(lab.ping(&t.wa1, "198.18.0.254"));
}

/// An endpoint sends only with its own source MAC, IP and ARP sender: a
/// workload that adds an address it was not given, or changes its MAC,
/// reaches nobody with it (same host or across), and its ARP from the
/// other address reaches nobody; its own traffic still flows.
fn spoofed_sources_do_not_arrive(kind: Kind) {
    let b = Backend::new(kind);
    let t = b.topo();
    let lab = &t.lab;
    let (own, spoof) = (Ipv4Addr::new(10, 10, 0, 11), Ipv4Addr::new(10, 10, 0, 50));
    let (wa2_ip, wa3_ip) = (Ipv4Addr::new(10, 10, 0, 12), Ipv4Addr::new(10, 10, 0, 13));
    let at_wa2 = udp_socket(&t.wa2, wa2_ip, 7000);
    let at_wa3 = udp_socket(&t.wa3, wa3_ip, 7000);
    // Neighbours pinned in wa1, so no ARP is needed to send.
    let pin = || {
        for ip in [wa2_ip, wa3_ip] {
            let (ip, mac) = (ip.to_string(), MacAddr::from_ipv4(ip).to_string());
            lab.exec(
                &t.wa1,
                &[
                    "ip",
                    "neigh",
                    "replace",
                    &ip,
                    "lladdr",
                    &mac,
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                ],
            );
        }
    };
    pin();
    let arp = capture(&t.wa3, "eth0", "arp", || {
        // Positive control: its own address.
        for (dst, sock) in [(wa2_ip, &at_wa2), (wa3_ip, &at_wa3)] {
            udp_send(&t.wa1, own, (dst, 7000), "own");
            assert!(
                udp_got(sock, "own"),
                "wa1's own datagram did not reach {dst}"
            );
        }
        lab.exec(
            &t.wa1,
            &["ip", "addr", "add", "10.10.0.50/24", "dev", "eth0"],
        );
        for (dst, sock) in [(wa2_ip, &at_wa2), (wa3_ip, &at_wa3)] {
            udp_send(&t.wa1, spoof, (dst, 7000), "spoofed-ip");
            assert!(
                !udp_got(sock, "spoofed-ip"),
                "a spoofed source IP reached {dst}"
            );
        }
        // ARP with the other address as sender, for an unknown address
        // (flooded), and with its own (the control).
        let _ = lab.try_exec(
            &t.wa1,
            &[
                "ping",
                "-n",
                "-c",
                "1",
                "-W",
                "1",
                "-I",
                "10.10.0.50",
                "10.10.0.99",
            ],
        );
        let _ = lab.try_exec(&t.wa1, &["ping", "-n", "-c", "1", "-W", "1", "10.10.0.98"]);
        lab.exec(
            &t.wa1,
            &["ip", "addr", "del", "10.10.0.50/24", "dev", "eth0"],
        );
        // A changed MAC.
        lab.exec(
            &t.wa1,
            &["ip", "link", "set", "eth0", "address", "02:00:00:00:00:77"],
        );
        pin();
        for (dst, sock) in [(wa2_ip, &at_wa2), (wa3_ip, &at_wa3)] {
            udp_send(&t.wa1, own, (dst, 7000), "spoofed-mac");
            assert!(
                !udp_got(sock, "spoofed-mac"),
                "a spoofed source MAC reached {dst}"
            );
        }
        let mac = MacAddr::from_ipv4(own).to_string();
        lab.exec(&t.wa1, &["ip", "link", "set", "eth0", "address", &mac]);
        pin();
    });
    assert!(
        arp.contains("who-has 10.10.0.98 tell 10.10.0.11"),
        "control ARP missing:\n{arp}"
    );
    assert!(
        !arp.contains("tell 10.10.0.50"),
        "ARP with a spoofed sender arrived:\n{arp}"
    );
    assert!(
        !arp.contains("02:00:00:00:00:77"),
        "a frame from a spoofed MAC arrived:\n{arp}"
    );
    // Its own traffic flows again.
    lab.exec(&t.wa1, &["ip", "neigh", "flush", "all"]);
    assert!(lab.ping(&t.wa1, "10.10.0.12"));
    assert!(lab.ping(&t.wa1, "10.10.0.13"));
    udp_send(&t.wa1, own, (wa3_ip, 7000), "own-again");
    assert!(udp_got(&at_wa3, "own-again"));
}

/// The host's own devices (not ours), addresses on them and routes not
/// through our devices, as text.
fn host_network_state(ns: &str) -> String {
    // The device a line is about: `N: dev[@peer]: ...`, `N: dev inet ...`
    // or `... dev DEV ...`.
    let dev = |l: &str| -> String {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.iter().position(|x| *x == "dev") {
            Some(i) => w.get(i + 1).copied().unwrap_or_default().to_string(),
            None => w
                .get(1)
                .map_or("", |d| d.split(['@', ':']).next().unwrap_or(""))
                .to_string(),
        }
    };
    let ours = |d: &str| d.starts_with("sp") || d == "docker0-ovs";
    let keep = |cmd: &[&str]| -> String {
        sh(cmd)
            .lines()
            .filter(|l| !ours(&dev(l)))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    keep(&["ip", "-n", ns, "-o", "link", "show"])
        + &keep(&["ip", "-n", ns, "-o", "-4", "addr", "show"])
        + &keep(&["ip", "-n", ns, "-4", "route", "show", "table", "all"])
}

/// A forged endpoint record is refused alone: the record of a working
/// endpoint rewritten to the host's own namespace with ifname eth0 (and a
/// new one "in" /proc/kmsg) leaves the host's NIC, addresses and routes
/// untouched, says which records were refused and why, and the other
/// endpoint keeps working.
fn forged_endpoint_record_is_rejected_alone(kind: Kind) {
    let b = Backend::new(kind);
    let mut one = OneHost::new();
    let victim = ep(&mut one.lab, "victim", &one.a, 66);
    let (lab, h, a, e1) = (&one.lab, &one.h, &one.a, &one.e1);
    let dp = b.start(h);
    let mut d = DesiredState {
        networks: vec![a.clone()],
        local: vec![e1.clone(), victim.clone()],
        ..Default::default()
    };
    dp.apply(&d);
    let e1ns = netns_name(e1);
    assert!(lab.ping(&e1ns, "10.10.0.1"));
    assert!(lab.ping(&e1ns, "10.10.0.66"));
    let before = host_network_state(h);

    let mut forged = victim.clone();
    forged.netns = Some(ns_path(h).into());
    forged.ifname = "eth0".into();
    let mut kmsg = local("kmsg", a, 67, "unused");
    kmsg.netns = Some("/proc/kmsg".into());
    d.local = vec![e1.clone(), forged, kmsg];
    for round in 0..2 {
        let err = dp.try_apply(&d).expect_err("forged records accepted");
        assert!(
            err.contains("endpoint victim rejected")
                && err.contains("host's own network namespace"),
            "round {round}: {err}"
        );
        assert!(
            err.contains("endpoint kmsg rejected") && err.contains("not a network namespace"),
            "round {round}: {err}"
        );
        assert!(!err.contains("e1"), "round {round}: {err}");
        assert_eq!(
            host_network_state(h),
            before,
            "round {round}: the host's network changed"
        );
        assert!(lab.ping(&e1ns, "10.10.0.1"), "round {round}: e1 -> gateway");
    }
}

/// One `#[test]` per case in module `$module`, run against datapath `$kind`.
macro_rules! instantiate {
    ($module:ident, $kind:expr, $($case:ident),*) => {
        mod $module {
            $(
                #[test]
                fn $case() {
                    socketplane_testkit::require_privileged!();
                    super::$case($kind)
                }
            )*
        }
    };
}

/// Every case, once per datapath (`linux::…`, `ovs::…`).
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        instantiate!(linux, super::Kind::Linux, $($case),*);
        instantiate!(ovs, super::Kind::Ovs, $($case),*);
    };
}

// The cases that hold for a routed network as they are (the others look
// at tunnel state, or at multicast, which a routed network does not
// carry between hosts; `routed.rs` covers those for it).
instantiate!(
    linux_routed,
    super::Kind::LinuxRouted,
    isolation,
    large_packets_and_bulk_tcp,
    restart_without_churn,
    workloads_fenced_from_hosts
);

conformance!(
    two_hosts,
    isolation,
    large_packets_and_bulk_tcp,
    idempotent_reapply_and_prune,
    restart_without_churn,
    restart_after_crash_prunes_leftovers,
    endpoint_left_in_host_namespace_for_docker,
    workload_on_two_networks_keeps_one_default_route,
    gateway_never_crosses_the_tunnel,
    workloads_fenced_from_hosts,
    vxlan_only_from_members,
    spoofed_sources_do_not_arrive,
    forged_endpoint_record_is_rejected_alone,
);
