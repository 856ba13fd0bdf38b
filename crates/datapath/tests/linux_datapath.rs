//! Tests of what only the Linux datapath does (issue 4): iptables next to
//! Docker's `FORWARD DROP`, attach latency. What every datapath must do is in
//! the conformance suite (`conformance.rs`), run against this one too. They
//! need root, network namespaces and the binaries `ip`, `bridge`, `ping`,
//! `nft`, `iptables` (Debian: iproute2, iputils-ping, nftables, iptables).
//! Each test builds its own lab of namespaces (see `common`) and removes it
//! on drop.

#![cfg(target_os = "linux")]

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::scenario::{check_connectivity, Topo};
use common::*;
use socketplane_datapath::{DesiredState, LocalEndpoint, NetworkSpec};

fn topo(docker: bool) -> Topo {
    Topo::new_with(docker, DpHost::start)
}

#[test]
fn works_with_docker_forward_drop_policy() {
    socketplane_testkit::require_privileged!();
    let t = topo(true);
    check_connectivity(&t);
    // Our accepts live in iptables too: in FORWARD on host 0, DOCKER-USER on host 1.
    let f0 = t
        .lab
        .exec(&t.lab.hosts[0], &["iptables", "-w", "-S", "FORWARD"]);
    assert!(f0.contains("-j SOCKETPLANE"), "{f0}");
    let f1 = t
        .lab
        .exec(&t.lab.hosts[1], &["iptables", "-w", "-S", "DOCKER-USER"]);
    assert!(f1.contains("-j SOCKETPLANE"), "{f1}");
    // The policy really bites: without our jump, bridged traffic is dropped
    // (same host and across); a fresh datapath instance repairs the rules.
    t.lab.exec(
        &t.lab.hosts[0],
        &["iptables", "-w", "-D", "FORWARD", "-j", "SOCKETPLANE"],
    );
    assert!(
        t.lab.ping_fails(&t.wa1, "10.10.0.13"),
        "bridged traffic passed FORWARD DROP"
    );
    assert!(
        t.lab.ping_fails(&t.wa1, "10.10.0.12"),
        "tunnelled traffic passed FORWARD DROP"
    );
    let fresh = DpHost::start(&t.lab.hosts[0]);
    assert_eq!(
        fresh.apply(&t.desired[0]).changes,
        1,
        "only the firewall needed repair"
    );
    drop(fresh);
    assert!(t.lab.ping(&t.wa1, "10.10.0.13"));
    assert!(t.lab.ping(&t.wa1, "10.10.0.12"));
    // Teardown removes them again.
    for (i, dp) in t.dp.iter().enumerate() {
        dp.teardown();
        let h = &t.lab.hosts[i];
        assert!(!t.lab.try_exec(h, &["iptables", "-w", "-S", "SOCKETPLANE"]));
        let fwd = t.lab.exec(h, &["iptables", "-w", "-S"]);
        assert!(!fwd.contains("SOCKETPLANE"), "{fwd}");
        assert!(!nft_table_exists(&t.lab, h, "inet", "socketplane"));
        assert!(our_links(h).is_empty(), "{:?}", our_links(h));
    }
}

fn ep(lab: &mut Lab, id: &str, n: &NetworkSpec, octet: u8) -> LocalEndpoint {
    let ns = lab.workload(id);
    local(id, n, octet, &ns)
}

#[test]
fn attach_latency_is_low() {
    socketplane_testkit::require_privileged!();
    let mut lab = Lab::new(1);
    let h = lab.hosts[0].clone();
    let a = net("a", 100, 10);
    let mut d = DesiredState {
        networks: vec![a.clone()],
        local: vec![],
        remote: (0..20)
            .map(|i| {
                remote_of(
                    &local(&format!("r{i}"), &a, 100 + i, "x"),
                    Ipv4Addr::new(198, 18, 0, 2 + i % 3),
                )
            })
            .collect(),
        ..Default::default()
    };
    let dp = DpHost::start(&h);
    dp.apply(&d);
    let mut times = Vec::new();
    for i in 0..25u8 {
        let e = ep(&mut lab, &format!("att{i}"), &a, 10 + i);
        d.local.push(e);
        let start = std::time::Instant::now();
        let r = dp.apply(&d);
        times.push(start.elapsed());
        assert!(r.changes > 0);
    }
    let start = std::time::Instant::now();
    assert_eq!(dp.apply(&d).changes, 0);
    let noop = start.elapsed();
    times.sort();
    let p50 = times[times.len() / 2];
    let p99 = times[times.len() - 1];
    eprintln!(
        "attach apply latency: p50 {p50:?}, max {p99:?}; no-op apply with 25 endpoints {noop:?}"
    );
    // Loose bound for noisy CI machines; the goal (p99 < 50 ms) is reported above.
    assert!(p99 < Duration::from_millis(500), "attach took {p99:?}");
    // The last workload works.
    let last = format!("{}-att24", lab.prefix);
    assert!(lab.ping(&last, "10.10.0.1"));
}

/// What the Linux datapath must hold for the remote endpoints of `d` on
/// network `vni`: the VXLAN FDB (MAC, host) with one all-zero flood entry
/// per host, the permanent neighbours (IP, MAC) and the static bridge FDB
/// MACs, each sorted as the helpers read them.
struct Entries {
    vx: Vec<(String, String)>,
    neigh: Vec<(String, String)>,
    br: Vec<String>,
}

impl Entries {
    fn wanted(d: &DesiredState) -> Entries {
        let mut vx = std::collections::BTreeSet::new();
        let mut neigh = std::collections::BTreeSet::new();
        let mut br = std::collections::BTreeSet::new();
        for r in &d.remote {
            vx.insert((r.mac.to_string(), r.host.to_string()));
            vx.insert(("00:00:00:00:00:00".to_string(), r.host.to_string()));
            neigh.insert((r.ip.to_string(), r.mac.to_string()));
            br.insert(r.mac.to_string());
        }
        Entries {
            vx: vx.into_iter().collect(),
            neigh: neigh.into_iter().collect(),
            br: br.into_iter().collect(),
        }
    }

    fn found(ns: &str, vni: u32) -> Entries {
        let (vx, br) = (format!("spvx{vni}"), format!("spbr{vni}"));
        let mut statics: Vec<String> = fdb(ns, &vx)
            .into_iter()
            .filter(|e| {
                e.get("dst").is_none()
                    && e.get("master").and_then(|m| m.as_str()) == Some(br.as_str())
                    && e.get("state").and_then(|s| s.as_str()) == Some("static")
            })
            .filter_map(|e| Some(e.get("mac")?.as_str()?.to_string()))
            .collect();
        statics.sort();
        Entries {
            vx: vxlan_fdb(ns, &vx),
            neigh: perm_neigh(ns, &br),
            br: statics,
        }
    }

    /// Writes turning `self` into `next`: every entry that goes or comes
    /// (a neighbour whose MAC changes is one write).
    fn writes_to(&self, next: &Entries) -> usize {
        fn diff<T: Ord + Clone>(a: &[T], b: &[T]) -> usize {
            let a: std::collections::BTreeSet<_> = a.iter().cloned().collect();
            let b: std::collections::BTreeSet<_> = b.iter().cloned().collect();
            a.symmetric_difference(&b).count()
        }
        let ips = |v: &[(String, String)]| -> std::collections::BTreeMap<String, String> {
            v.iter().cloned().collect()
        };
        let (a, b) = (ips(&self.neigh), ips(&next.neigh));
        let neigh = a.keys().filter(|ip| !b.contains_key(*ip)).count()
            + b.iter()
                .filter(|(ip, mac)| a.get(*ip) != Some(*mac))
                .count();
        diff(&self.vx, &next.vx) + diff(&self.br, &next.br) + neigh
    }

    fn assert_same(&self, other: &Entries, when: &str) {
        assert_eq!(self.vx, other.vx, "VXLAN FDB {when}");
        assert_eq!(self.neigh, other.neigh, "neighbours {when}");
        assert_eq!(self.br, other.br, "bridge FDB {when}");
    }
}

fn many_remote(i: u32, host: u32) -> socketplane_datapath::RemoteEndpoint {
    let ip = Ipv4Addr::new(10, 90, (i / 250 + 1) as u8, (i % 250 + 2) as u8);
    socketplane_datapath::RemoteEndpoint {
        id: format!("m{i}"),
        network: "many".into(),
        ip,
        mac: socketplane_datapath::MacAddr::from_ipv4(ip),
        host: Ipv4Addr::new(198, 18, 1, (host + 2) as u8),
    }
}

/// One change among many remote endpoints writes exactly its own entries
/// (issue 16 point 5: applies are incremental, from what the last one
/// left), and the kernel then holds exactly what is wanted; drift behind
/// the datapath's back is repaired by a resync, and a VXLAN device
/// recreated under it gets every entry again.
#[test]
fn incremental_remote_apply_among_many_entries() {
    socketplane_testkit::require_privileged!();
    let lab = Lab::new(1);
    let h = lab.hosts[0].clone();
    let many = NetworkSpec {
        name: "many".into(),
        vni: 100,
        subnet: "10.90.0.0/16".parse().unwrap(),
        gateway: Ipv4Addr::new(10, 90, 0, 1),
        mtu: None,
        mode: Default::default(),
    };
    let mut d = DesiredState {
        networks: vec![many],
        remote: (0..600).map(|i| many_remote(i, i % 20)).collect(),
        ..Default::default()
    };
    let dp = DpHost::start(&h);
    let first = dp.apply(&d);
    let want = Entries::wanted(&d);
    assert_eq!(want.vx.len(), 620);
    Entries::found(&h, 100).assert_same(&want, "after the first apply");
    // The remote entries and the network's own devices, address, rules.
    assert!(first.changes > 600 * 3 + 20, "{first:?}");
    assert_eq!(dp.apply(&d).changes, 0, "re-apply must make no writes");

    // Many changes at once: every 7th goes, 40 come, every endpoint of
    // host 19 goes (and with them its flood entry), one moves to another
    // host, one changes its MAC.
    let mut i = 0;
    d.remote.retain(|r| {
        i += 1;
        i % 7 != 0 && r.host != Ipv4Addr::new(198, 18, 1, 21)
    });
    d.remote.extend((600..640).map(|i| many_remote(i, i % 19)));
    d.remote[3].host = Ipv4Addr::new(198, 18, 1, 30);
    d.remote[5].mac = socketplane_datapath::MacAddr([0x02, 0, 0, 0, 0x77, 0x77]);
    let before = want;
    let want = Entries::wanted(&d);
    let r = dp.apply(&d);
    Entries::found(&h, 100).assert_same(&want, "after many changes");
    // Plus one firewall write: the members changed (host 19 went, host
    // 198.18.1.30 came).
    let writes = before.writes_to(&want) + 1;
    assert_eq!(r.changes, writes, "only the changes are written");
    assert_eq!(dp.apply(&d).changes, 0);

    // One at a time, as a cluster's churn comes: three writes each.
    for k in 0..5 {
        d.remote.push(many_remote(700 + k, k));
        assert_eq!(dp.apply(&d).changes, 3, "one added");
        d.remote.remove(10 * k as usize);
        assert_eq!(dp.apply(&d).changes, 3, "one removed");
    }
    let want = Entries::wanted(&d);
    Entries::found(&h, 100).assert_same(&want, "after adds and removes");

    // Drift: entries deleted and stray ones added behind our back. A
    // resync reads the kernel back and repairs exactly those.
    let (gone, stray) = (&d.remote[0], "02:00:00:00:99:99");
    let gone_mac = gone.mac.to_string();
    let gone_host = gone.host.to_string();
    let gone_ip = gone.ip.to_string();
    for cmd in [
        vec!["ip", "neigh", "del", &gone_ip, "dev", "spbr100"],
        vec![
            "bridge", "fdb", "del", &gone_mac, "dev", "spvx100", "dst", &gone_host,
        ],
        vec![
            "bridge", "fdb", "del", &gone_mac, "dev", "spvx100", "master",
        ],
        vec![
            "ip",
            "neigh",
            "replace",
            "10.90.200.200",
            "lladdr",
            stray,
            "dev",
            "spbr100",
            "nud",
            "permanent",
        ],
        vec![
            "bridge",
            "fdb",
            "append",
            stray,
            "dev",
            "spvx100",
            "dst",
            "198.18.1.99",
        ],
    ] {
        lab.exec(&h, &cmd);
    }
    dp.resync();
    assert_eq!(dp.apply(&d).changes, 5, "the resync repairs the drift");
    Entries::found(&h, 100).assert_same(&want, "after the resync");
    assert_eq!(dp.apply(&d).changes, 0);

    // The VXLAN device recreated under us (new index): all its entries
    // come back without a resync.
    lab.exec(&h, &["ip", "link", "del", "spvx100"]);
    assert!(dp.apply(&d).changes > want.vx.len());
    Entries::found(&h, 100).assert_same(&want, "after the device came back");
    assert_eq!(dp.apply(&d).changes, 0);

    dp.teardown();
    assert!(our_links(&h).is_empty(), "{:?}", our_links(&h));
}

/// The MTU of `dev` in namespace `ns`.
fn mtu_of(lab: &Lab, ns: &str, dev: &str) -> u64 {
    let out = lab.exec(ns, &["ip", "-j", "link", "show", "dev", dev]);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip link show {dev}: {e}: {out}"));
    v[0]["mtu"]
        .as_u64()
        .unwrap_or_else(|| panic!("no MTU for {dev} in {ns}: {out}"))
}

/// `bytes` over one TCP connection from `client` to `server_ip` (in
/// `server`): the bytes that arrived.
fn bulk_tcp(server: &str, server_ip: Ipv4Addr, client: &str, bytes: usize) -> usize {
    use std::io::{Read, Write};
    let (tx, rx) = std::sync::mpsc::channel();
    let srv = spawn_in_ns(server, move || {
        let l = std::net::TcpListener::bind((server_ip, 5002)).unwrap();
        tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0usize;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        n
    });
    rx.recv().unwrap();
    in_ns(client, move || {
        let mut s =
            std::net::TcpStream::connect_timeout(&(server_ip, 5002).into(), Duration::from_secs(3))
                .unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let chunk = vec![0x5au8; 256 * 1024];
        let mut sent = 0;
        while sent < bytes {
            s.write_all(&chunk).unwrap();
            sent += chunk.len();
        }
    });
    srv.join().unwrap()
}

/// Jumbo frames: on a 9000-byte underlay the default overlay MTU is 8950
/// (the underlay minus VXLAN's 50 bytes), on every device of an overlay
/// and of a routed network and in the workloads; the largest DF packet
/// that MTU allows crosses between hosts (one byte more is refused), and
/// so does bulk TCP, in GSO frames that nothing segments on the way.
#[test]
fn jumbo_underlay_gives_workloads_its_mtu_minus_50() {
    socketplane_testkit::require_privileged!();
    socketplane_testkit::require("ethtool", "ethtool");
    let mut lab = Lab::new(2);
    // Every port of the underlay switch (the bridge follows) and each
    // host's uplink at 9000, before the datapaths start.
    let ports = socketplane_testkit::netns::links(&lab.switch).expect("switch links");
    for p in ports.iter().filter(|p| p.starts_with('p')) {
        lab.exec(&lab.switch, &["ip", "link", "set", p, "mtu", "9000"]);
    }
    for h in &lab.hosts {
        lab.exec(h, &["ip", "link", "set", "eth0", "mtu", "9000"]);
    }
    let o = net("o", 100, 10);
    let r = net("r", 200, 20);
    let mut spaces = std::collections::HashMap::new();
    let mut wl = |id: &str, n: &NetworkSpec, octet: u8| {
        let ns = lab.workload(id);
        spaces.insert(id.to_string(), ns.clone());
        local(id, n, octet, &ns)
    };
    let (o1, o2) = (wl("jo1", &o, 11), wl("jo2", &o, 12));
    let (r1, r2) = (wl("jr1", &r, 11), wl("jr2", &r, 12));
    let hosts = [common::scenario::H0, common::scenario::H1];
    let mut d0 = DesiredState {
        networks: vec![o.clone(), r.clone()],
        local: vec![o1.clone(), r1.clone()],
        remote: vec![remote_of(&o2, hosts[1]), remote_of(&r2, hosts[1])],
        ..Default::default()
    };
    let mut d1 = DesiredState {
        networks: vec![o.clone(), r.clone()],
        local: vec![o2.clone(), r2.clone()],
        remote: vec![remote_of(&o1, hosts[0]), remote_of(&r1, hosts[0])],
        ..Default::default()
    };
    route_network(&mut d0, "r", &hosts);
    route_network(&mut d1, "r", &hosts);
    let dp = [DpHost::start(&lab.hosts[0]), DpHost::start(&lab.hosts[1])];
    for (h, d) in dp.iter().zip([&d0, &d1]) {
        assert_eq!(h.mtu, 8950, "the default overlay MTU of a 9000 underlay");
        h.apply(d);
    }
    for (i, h) in lab.hosts.iter().enumerate() {
        for dev in ["spbr100", "spvx100", "spbr200", "spvx200"] {
            assert_eq!(mtu_of(&lab, h, dev), 8950, "{dev} on host {i}");
        }
    }
    let w = |e: &LocalEndpoint| spaces[&e.id].clone();
    for e in [&o1, &o2, &r1, &r2] {
        assert_eq!(mtu_of(&lab, &w(e), "eth0"), 8950, "{}'s eth0", e.id);
    }
    // Routed between these hosts (same subnet), not through VXLAN.
    let routes = lab.exec(&lab.hosts[0], &["ip", "route", "show", "proto", "83"]);
    assert!(
        routes.contains(&format!("{} via {}", r2.ip, hosts[1])),
        "{routes}"
    );
    for (from, to) in [(&o1, &o2), (&o2, &o1), (&r1, &r2), (&r2, &r1)] {
        let df = |size: &str| {
            lab.try_exec(
                &w(from),
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
                    "-i",
                    "0.2",
                    "-W",
                    "2",
                    &to.ip.to_string(),
                ],
            )
        };
        // 8922 + 8 (ICMP) + 20 (IP) = 8950.
        assert!(df("8922"), "{} -> {}: an 8950-byte DF ping", from.id, to.id);
        assert!(!df("8923"), "{} -> {}: 8951 bytes with DF", from.id, to.id);
    }
    // Segmentation offloads work through our veths and VXLAN devices:
    // the workloads' veths keep TSO and GSO on (bench/offloads.sh: without
    // TSO a stream gets 0.13-0.16x), and bulk TCP leaves the sending host
    // in frames far larger than the MTU (GSO packets, segmented nowhere on
    // the way), encapsulated or routed.
    for e in [&o1, &r1] {
        let k = lab.exec(&w(e), &["ethtool", "-k", "eth0"]);
        for feature in [
            "tcp-segmentation-offload: on",
            "generic-segmentation-offload: on",
        ] {
            assert!(k.contains(feature), "{}'s eth0: no {feature:?}:\n{k}", e.id);
        }
    }
    let tx = |what: &str| -> u64 {
        let path = format!("/sys/class/net/eth0/statistics/tx_{what}");
        let v = lab.exec(&lab.hosts[0], &["cat", &path]);
        v.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{path}: {e}: {v}"))
    };
    const TOTAL: usize = 50 * 1024 * 1024;
    for (server, client) in [(&o2, &o1), (&r2, &r1)] {
        let (bytes, packets) = (tx("bytes"), tx("packets"));
        let got = bulk_tcp(&w(server), server.ip, &w(client), TOTAL);
        assert_eq!(got, TOTAL, "bulk TCP {} -> {}", client.id, server.id);
        let per = (tx("bytes") - bytes) / (tx("packets") - packets).max(1);
        eprintln!(
            "{} -> {}: {per} bytes per frame on the underlay",
            client.id, server.id
        );
        // The largest frame the MTU allows: 8950 + VXLAN's 50 + Ethernet's 14.
        assert!(
            per > 9014,
            "{} -> {}: {per} bytes per frame on the underlay: segmented before the wire",
            client.id,
            server.id
        );
    }
}
