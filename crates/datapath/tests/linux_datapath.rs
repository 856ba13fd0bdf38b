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
