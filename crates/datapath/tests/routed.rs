//! Routed networks on the Linux datapath across two underlay subnets
//! joined by a router namespace: hosts h0 and h1 share 198.18.0.0/24, h2
//! sits on 198.18.1.0/24. On a routed network, h0↔h1 traffic goes as
//! plain IP (routes via the peer's underlay address), h0↔h2 and h1↔h2
//! through VXLAN; which path each pair took is read from the VXLAN
//! device's counters. An overlay network beside it stays isolated, and the
//! fencing, anti-spoofing and masquerade hold for the routed one.
//!
//! Needs root, network namespaces, ip, ping, nft and iptables.

#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use common::*;
use socketplane_datapath::linux::RTPROT_SOCKETPLANE;
use socketplane_datapath::{DesiredState, HostBlock, LocalEndpoint, RemoteEndpoint};
use socketplane_testkit::Underlay;

const H0: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const H1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const H2: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 3);
const ROUTER0: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
const ROUTER1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 254);

/// Two LANs on one switch and a router namespace between them.
struct TwoSubnets {
    // Datapaths stop before the namespaces go.
    dp: Vec<DpHost>,
    hosts: Vec<String>,
    router: String,
    desired: Vec<DesiredState>,
    underlay: Underlay,
}

fn sh_in(ns: &str, args: &[&str]) -> String {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    sh(&v)
}

/// Whether `count` pings at 10 ms from `ns` to `dst` are all answered;
/// up to three tries (the first may wait for ARP on a loaded machine).
fn ping(ns: &str, dst: Ipv4Addr, count: u32) -> bool {
    let (c, d) = (count.to_string(), dst.to_string());
    (0..3).any(|_| {
        try_sh(&[
            "ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", &c, "-i", "0.01", "-W", "2", &d,
        ])
    })
}

fn ping_fails(ns: &str, dst: Ipv4Addr) -> bool {
    let d = dst.to_string();
    !try_sh(&[
        "ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", "1", "-W", "1", &d,
    ])
}

/// Packets sent so far by device `dev` in `ns`.
fn tx_packets(ns: &str, dev: &str) -> u64 {
    let path = format!("/sys/class/net/{dev}/statistics/tx_packets");
    sh_in(ns, &["cat", &path]).trim().parse().unwrap()
}

/// Our routes in `ns`, one line each.
fn our_routes(ns: &str) -> String {
    let proto = RTPROT_SOCKETPLANE.to_string();
    sh(&["ip", "-n", ns, "route", "show", "proto", &proto])
}

impl TwoSubnets {
    fn new() -> TwoSubnets {
        for (program, package) in [
            ("ip", "iproute2"),
            ("ping", "iputils-ping"),
            ("nft", "nftables"),
            ("iptables", "iptables"),
        ] {
            socketplane_testkit::require(program, package);
        }
        let mut u = Underlay::new('r').unwrap();
        u.add_bridge("lan1").unwrap();
        let router = u.netns("rt").unwrap();
        u.plug(&router, "eth0", "lan0", ROUTER0).unwrap();
        u.plug(&router, "eth1", "lan1", ROUTER1).unwrap();
        sh_in(&router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let mut hosts = Vec::new();
        for (i, (ip, lan, gw)) in [
            (H0, "lan0", ROUTER0),
            (H1, "lan0", ROUTER0),
            (H2, "lan1", ROUTER1),
        ]
        .into_iter()
        .enumerate()
        {
            let ns = u.netns(&format!("h{i}")).unwrap();
            u.plug(&ns, "eth0", lan, ip).unwrap();
            u.default_route(&ns, gw).unwrap();
            hosts.push(ns);
        }
        TwoSubnets {
            dp: Vec::new(),
            hosts,
            router,
            desired: Vec::new(),
            underlay: u,
        }
    }

    fn workload(&mut self, tag: &str) -> String {
        self.underlay.netns(tag).unwrap()
    }
}

/// Prints what the namespaces hold, for a failed reach.
fn diagnose(namespaces: &[&str]) {
    for ns in namespaces {
        for args in [
            &["ip", "neigh"][..],
            &["ip", "route"][..],
            &["bridge", "fdb", "show"][..],
            &["nft", "list", "ruleset"][..],
        ] {
            let mut v = vec!["ip", "netns", "exec", ns];
            v.extend_from_slice(args);
            let out = std::process::Command::new(v[0]).args(&v[1..]).output();
            eprintln!("{ns} {args:?}: {out:?}");
        }
    }
}

fn udp_socket(ns: &str, ip: Ipv4Addr, port: u16) -> UdpSocket {
    let s = in_ns(ns, move || UdpSocket::bind((ip, port)).unwrap());
    s.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    s
}

fn udp_send(ns: &str, src: Ipv4Addr, dst: (Ipv4Addr, u16), tag: &'static str) {
    in_ns(ns, move || {
        let s = UdpSocket::bind((src, 0)).unwrap();
        for _ in 0..3 {
            s.send_to(tag.as_bytes(), dst).unwrap();
        }
    });
}

fn udp_got(sock: &UdpSocket, tag: &str) -> bool {
    let mut buf = [0u8; 64];
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        if &buf[..n] == tag.as_bytes() {
            return true;
        }
    }
    false
}

#[test]
fn routed_network_routes_on_the_segment_and_tunnels_across_subnets() {
    socketplane_testkit::require_privileged!();
    let mut lab = TwoSubnets::new();
    let mut a = net("a", 100, 10);
    a.mode = socketplane_datapath::NetworkMode::Routed;
    let b = net("b", 200, 20);
    let w: Vec<String> = (0..3).map(|i| lab.workload(&format!("w{i}"))).collect();
    let v0 = lab.workload("v0");
    let v2 = lab.workload("v2");
    let wa: Vec<_> = (0..3)
        .map(|i| local(&format!("w{i}"), &a, 11 + i as u8, &w[i]))
        .collect();
    let vb = [local("v0", &b, 11, &v0), local("v2", &b, 13, &v2)];
    let hosts = [H0, H1, H2];
    let placed: Vec<(usize, &socketplane_datapath::LocalEndpoint)> = vec![
        (0, &wa[0]),
        (1, &wa[1]),
        (2, &wa[2]),
        (0, &vb[0]),
        (2, &vb[1]),
    ];
    for h in 0..3 {
        lab.desired.push(DesiredState {
            networks: vec![a.clone(), b.clone()],
            local: placed
                .iter()
                .filter(|(on, _)| *on == h)
                .map(|(_, e)| (*e).clone())
                .collect(),
            remote: placed
                .iter()
                .filter(|(on, _)| *on != h)
                .map(|(on, e)| remote_of(e, hosts[*on]))
                .collect(),
            peers: hosts.to_vec(),
            routers: hosts.to_vec(),
            blocks: Vec::new(),
        });
    }
    for (h, ns) in lab.hosts.iter().enumerate() {
        let dp = DpHost::start(ns);
        assert!(dp.apply(&lab.desired[h]).changes > 0);
        assert_eq!(dp.apply(&lab.desired[h]).changes, 0, "h{h}: re-apply");
        lab.dp.push(dp);
    }
    let ip = |e: &socketplane_datapath::LocalEndpoint| e.ip;

    // Routes only between the hosts of one segment.
    let r0 = our_routes(&lab.hosts[0]);
    assert!(r0.contains("10.10.0.12 via 198.18.0.2 dev eth0"), "{r0}");
    assert!(!r0.contains("10.10.0.13"), "h2 is on another subnet: {r0}");
    assert!(!r0.contains("10.20.0."), "b is an overlay: {r0}");
    assert!(our_routes(&lab.hosts[2]).trim().is_empty());

    // Reach, every pair, both ways (also the first ARP; on a loaded
    // machine the first answer may take a few seconds).
    let reach = |from: &str, to: Ipv4Addr| {
        socketplane_testkit::wait_until(Duration::from_secs(15), || ping(from, to, 2))
    };
    for (x, y) in [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)] {
        if !reach(&w[x], ip(&wa[y])) {
            diagnose(&[&w[x], &lab.hosts[x], &lab.hosts[y]]);
            panic!("w{x} -> w{y} on the routed network");
        }
    }
    if !reach(&v0, ip(&vb[1])) {
        diagnose(&[&v0, &lab.hosts[0], &lab.hosts[2]]);
        panic!("v0 -> v2 on the overlay");
    }

    // Which path: the same-subnet pair never touches the VXLAN device,
    // the cross-subnet pairs go through it.
    let vx = "spvx100";
    // (The flood list towards h2 carries a few stray frames meanwhile,
    // e.g. IPv6 multicast: far fewer than the pings.)
    let before = tx_packets(&lab.hosts[0], vx);
    assert!(ping(&w[0], ip(&wa[1]), 100), "w0 -> w1");
    let routed = tx_packets(&lab.hosts[0], vx) - before;
    assert!(
        routed < 20,
        "w0 -> w1 (same subnet) went through the tunnel: {routed} packets for 100 pings"
    );
    let before = (tx_packets(&lab.hosts[0], vx), tx_packets(&lab.hosts[2], vx));
    assert!(ping(&w[0], ip(&wa[2]), 100), "w0 -> w2");
    let tunnelled = (
        tx_packets(&lab.hosts[0], vx) - before.0,
        tx_packets(&lab.hosts[2], vx) - before.1,
    );
    assert!(
        tunnelled.0 >= 100 && tunnelled.1 >= 100,
        "w0 <-> w2 (across subnets) must use VXLAN both ways: {tunnelled:?}"
    );
    eprintln!("VXLAN tx on h0: same subnet {routed}, across subnets {tunnelled:?}");

    // Isolation both ways, same host and across, routed and tunnelled.
    let mut negatives: Vec<(String, Ipv4Addr, &str)> = Vec::new();
    for (ns, dst, what) in [
        (&v0, ip(&wa[0]), "v0 -> w0 (same host)"),
        (&v0, ip(&wa[1]), "v0 -> w1 (routed peer)"),
        (&v0, ip(&wa[2]), "v0 -> w2 (tunnelled peer)"),
        (&w[1], ip(&vb[0]), "w1 -> v0"),
        (&w[0], ip(&vb[0]), "w0 -> v0 (same host)"),
        (&w[2], ip(&vb[0]), "w2 -> v0"),
    ]
    .into_iter()
    .chain(
        // Fenced from every host.
        [(&w[0], H0), (&w[0], H1), (&w[0], H2), (&w[1], H0)]
            .map(|(ns, dst)| (ns, dst, "a workload -> a host")),
    ) {
        negatives.push((ns.clone(), dst, what));
    }
    // Each negative waits a second for nothing: all at once.
    std::thread::scope(|s| {
        let checks: Vec<_> = negatives
            .iter()
            .map(|(ns, dst, what)| (s.spawn(move || ping_fails(ns, *dst)), *what, *dst))
            .collect();
        for (check, what, dst) in checks {
            assert!(check.join().unwrap(), "{what} ({dst}) must fail");
        }
    });

    // The outside through masquerade.
    assert!(ping(&w[1], ROUTER0, 2), "w1 -> outside");
    let peer = tcp_roundtrip_at(&lab.router, ROUTER0, &w[1]);
    assert_eq!(peer, H1, "the outside must see h1's address");

    // Anti-spoofing: a forged source address does not reach the routed
    // peer (the control with its own address does).
    let at_w1 = udp_socket(&w[1], ip(&wa[1]), 7000);
    udp_send(&w[0], ip(&wa[0]), (ip(&wa[1]), 7000), "own");
    assert!(udp_got(&at_w1, "own"), "w0's own datagram did not arrive");
    sh_in(
        &w[0],
        &["ip", "addr", "add", "10.10.0.50/24", "dev", "eth0"],
    );
    udp_send(
        &w[0],
        Ipv4Addr::new(10, 10, 0, 50),
        (ip(&wa[1]), 7000),
        "forged",
    );
    assert!(!udp_got(&at_w1, "forged"), "a forged source arrived");
    sh_in(
        &w[0],
        &["ip", "addr", "del", "10.10.0.50/24", "dev", "eth0"],
    );
    // Nor does a packet from the underlay with a source that is no
    // remote endpoint of the network: the router forges one.
    sh_in(
        &lab.router,
        &["ip", "addr", "add", "10.10.0.99/32", "dev", "lo"],
    );
    sh_in(
        &lab.router,
        &["ip", "route", "add", "10.10.0.12/32", "via", "198.18.0.2"],
    );
    udp_send(
        &lab.router,
        Ipv4Addr::new(10, 10, 0, 99),
        (ip(&wa[1]), 7000),
        "underlay",
    );
    assert!(
        !udp_got(&at_w1, "underlay"),
        "a packet from the underlay with a foreign source reached w1"
    );

    // A restarted datapath changes nothing; a detach elsewhere removes
    // exactly that route; teardown removes ours.
    let routes = our_routes(&lab.hosts[0]);
    let fresh = DpHost::start(&lab.hosts[0]);
    assert_eq!(fresh.apply(&lab.desired[0]).changes, 0, "churn on restart");
    assert_eq!(our_routes(&lab.hosts[0]), routes);
    // A route deleted behind the datapath's back comes back with a resync
    // (between resyncs an apply trusts what it wrote).
    let dst = routes.split_whitespace().next().expect("a route");
    sh(&[
        "ip",
        "-n",
        &lab.hosts[0],
        "route",
        "del",
        dst,
        "proto",
        "83",
    ]);
    fresh.resync();
    assert_eq!(fresh.apply(&lab.desired[0]).changes, 1, "route repaired");
    assert_eq!(our_routes(&lab.hosts[0]), routes);
    let mut d0 = lab.desired[0].clone();
    d0.remote.retain(|r| r.id != "w1");
    assert!(fresh.apply(&d0).changes > 0);
    assert_eq!(fresh.apply(&d0).changes, 0);
    let after = our_routes(&lab.hosts[0]);
    assert!(!after.contains("10.10.0.12"), "{after}");
    assert!(ping(&w[0], ip(&wa[2]), 2), "w0 -> w2 after the detach");
    fresh.teardown();
    assert!(our_routes(&lab.hosts[0]).trim().is_empty());
    assert!(sh(&["ip", "-n", &lab.hosts[0], "route", "show"]).contains("default via"));
}

/// With the hosts' address blocks known, h0 routes h1's block as one
/// route and only h1's endpoint outside it (a fixed address) by a /32; no
/// route for its own block; a block released turns into /32s, with only
/// those writes; the isolation of the underlay holds for the whole block.
#[test]
fn routed_network_routes_blocks_and_32s_only_outside_them() {
    socketplane_testkit::require_privileged!();
    let mut lab = TwoSubnets::new();
    let mut a = net("a", 100, 10);
    a.mode = socketplane_datapath::NetworkMode::Routed;
    let (w0, w1, w2) = (lab.workload("w0"), lab.workload("w1"), lab.workload("w2"));
    // w0 in h0's block, w1 in h1's, w2 on h1 at a fixed address outside.
    let e0 = local("w0", &a, 11, &w0);
    let e1 = local("w1", &a, 70, &w1);
    let e2 = local("w2", &a, 200, &w2);
    let block = |b: &str, host: Ipv4Addr| HostBlock {
        network: "a".into(),
        block: b.parse().unwrap(),
        host,
    };
    let blocks = vec![block("10.10.0.0/26", H0), block("10.10.0.64/26", H1)];
    let state = |local: Vec<LocalEndpoint>, remote: Vec<RemoteEndpoint>| DesiredState {
        networks: vec![a.clone()],
        local,
        remote,
        peers: vec![H0, H1],
        routers: vec![H0, H1],
        blocks: blocks.clone(),
    };
    lab.desired = vec![
        state(
            vec![e0.clone()],
            vec![remote_of(&e1, H1), remote_of(&e2, H1)],
        ),
        state(vec![e1.clone(), e2.clone()], vec![remote_of(&e0, H0)]),
    ];
    for h in 0..2 {
        let dp = DpHost::start(&lab.hosts[h]);
        assert!(dp.apply(&lab.desired[h]).changes > 0);
        assert_eq!(dp.apply(&lab.desired[h]).changes, 0, "h{h}: re-apply");
        lab.dp.push(dp);
    }
    let r0 = our_routes(&lab.hosts[0]);
    assert!(r0.contains("10.10.0.64/26 via 198.18.0.2 dev eth0"), "{r0}");
    assert!(r0.contains("10.10.0.200 via 198.18.0.2 dev eth0"), "{r0}");
    assert!(!r0.contains("10.10.0.70"), "w1 is in h1's block: {r0}");
    assert!(!r0.contains("10.10.0.0/26"), "h0's own block: {r0}");
    assert_eq!(r0.lines().count(), 2, "{r0}");
    let r1 = our_routes(&lab.hosts[1]);
    assert!(r1.contains("10.10.0.0/26 via 198.18.0.1 dev eth0"), "{r1}");
    assert_eq!(r1.lines().count(), 1, "{r1}");
    let reach = |from: &str, to: Ipv4Addr| {
        socketplane_testkit::wait_until(Duration::from_secs(15), || ping(from, to, 2))
    };
    for (from, to, what) in [
        (&w0, e1.ip, "w0 -> w1 (block route)"),
        (&w0, e2.ip, "w0 -> w2 (/32)"),
        (&w1, e0.ip, "w1 -> w0"),
        (&w2, e0.ip, "w2 -> w0"),
    ] {
        if !reach(from, to) {
            diagnose(&[from, &lab.hosts[0], &lab.hosts[1]]);
            panic!("{what}");
        }
    }
    // Masquerade and fencing as before.
    assert!(ping(&w2, ROUTER0, 2), "w2 -> outside");
    assert!(ping_fails(&w0, H1), "w0 must not reach h1");
    // A block route does not widen what h1 accepts from the underlay: a
    // source inside h0's block that is no endpoint of it is dropped.
    let at_w1 = udp_socket(&w1, e1.ip, 7001);
    udp_send(&w0, e0.ip, (e1.ip, 7001), "own");
    assert!(udp_got(&at_w1, "own"), "w0's own datagram did not arrive");
    sh_in(
        &lab.router,
        &["ip", "addr", "add", "10.10.0.33/32", "dev", "lo"],
    );
    sh_in(
        &lab.router,
        &["ip", "route", "add", "10.10.0.64/26", "via", "198.18.0.2"],
    );
    udp_send(
        &lab.router,
        Ipv4Addr::new(10, 10, 0, 33),
        (e1.ip, 7001),
        "forged",
    );
    assert!(
        !udp_got(&at_w1, "forged"),
        "a foreign source in h0's block arrived"
    );

    // h1's block released (its endpoints stay): the block route goes, w1
    // gets a /32, and nothing else is written.
    let mut d0 = lab.desired[0].clone();
    d0.blocks.retain(|b| b.host != H1);
    assert_eq!(lab.dp[0].apply(&d0).changes, 2, "one route off, one on");
    let r0 = our_routes(&lab.hosts[0]);
    assert!(!r0.contains("10.10.0.64/26"), "stale block route: {r0}");
    assert!(r0.contains("10.10.0.70 via 198.18.0.2 dev eth0"), "{r0}");
    assert!(r0.contains("10.10.0.200 via 198.18.0.2 dev eth0"), "{r0}");
    assert!(reach(&w0, e1.ip), "w0 -> w1 by its /32");
    // And back, after a restart: a fresh datapath finds them in place.
    assert_eq!(lab.dp[0].apply(&lab.desired[0]).changes, 2);
    let fresh = DpHost::start(&lab.hosts[0]);
    assert_eq!(fresh.apply(&lab.desired[0]).changes, 0, "churn on restart");
    fresh.teardown();
    assert!(our_routes(&lab.hosts[0]).trim().is_empty());
}

/// A TCP connection to `server_ip`:5000 in `server_ns` from `client_ns`;
/// the client address the server saw.
fn tcp_roundtrip_at(server_ns: &str, server_ip: Ipv4Addr, client_ns: &str) -> Ipv4Addr {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = spawn_in_ns(server_ns, move || {
        let l = TcpListener::bind((server_ip, 5000)).unwrap();
        tx.send(()).unwrap();
        let (mut s, peer) = l.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        peer
    });
    rx.recv().unwrap();
    in_ns(client_ns, move || {
        let mut s =
            TcpStream::connect_timeout(&(server_ip, 5000).into(), Duration::from_secs(3)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
    });
    match server.join().unwrap().ip() {
        std::net::IpAddr::V4(v) => v,
        other => panic!("{other}"),
    }
}

/// Open vSwitch does not route: it carries a routed network as an
/// overlay, and the agent leaves OVS hosts out of `routers`, so a Linux
/// host tunnels to them (no route) and both directions work.
#[test]
fn routed_network_falls_back_to_vxlan_towards_an_ovs_host() {
    socketplane_testkit::require_privileged!();
    let daemons = std::cell::RefCell::new(Vec::new());
    // Host 0 runs the Linux datapath, host 1 Open vSwitch.
    let mut t = common::scenario::Topo::new_with(false, |ns| {
        if ns.ends_with("-h1") {
            let o = common::ovs::Ovs::start(ns);
            let h = o.datapath();
            daemons.borrow_mut().push(o);
            h
        } else {
            // Complete checksums on the wire, as from a real NIC (the
            // userspace datapath rejects partial ones).
            sh(&[
                "ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off",
            ]);
            DpHost::start(ns)
        }
    });
    t.lab
        .exec(&t.lab.outside, &["ethtool", "-K", "eth0", "tx", "off"]);
    let h0 = common::scenario::H0;
    for (i, d) in t.desired.iter_mut().enumerate() {
        route_network(d, "a", &[h0]);
        t.dp[i].apply(d);
        assert_eq!(t.dp[i].apply(d).changes, 0, "host {i}: re-apply");
    }
    let lab = &t.lab;
    assert!(
        our_routes(&lab.hosts[0]).trim().is_empty(),
        "no route towards the OVS host: {}",
        our_routes(&lab.hosts[0])
    );
    let wait = |ns: &str, dst: &str| {
        socketplane_testkit::wait_until(Duration::from_secs(15), || lab.ping(ns, dst))
    };
    assert!(wait(&t.wa1, "10.10.0.12"), "wa1 (linux) -> wa2 (ovs)");
    assert!(wait(&t.wa2, "10.10.0.11"), "wa2 (ovs) -> wa1 (linux)");
    assert!(wait(&t.wa1, "10.10.0.13"), "wa1 -> wa3 on one host");
    let before = tx_packets(&lab.hosts[0], "spvx100");
    assert!(ping(&t.wa1, Ipv4Addr::new(10, 10, 0, 12), 20));
    let sent = tx_packets(&lab.hosts[0], "spvx100") - before;
    assert!(sent >= 20, "wa1 -> wa2 must go through VXLAN: {sent}");
    assert!(lab.ping_fails(&t.wb1, "10.10.0.12"), "b reached a");
}
