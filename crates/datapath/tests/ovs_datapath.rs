//! Tests of what only the Open vSwitch datapath does (issue 7) on real OVS
//! (one per test host, see `common::ovs`): mixed Linux/OVS clusters, OVS
//! daemon restarts, clear errors when OVS is missing, head-end replication
//! over three hosts. What every datapath must do is in the conformance
//! suite (`conformance.rs`), run against this one too. Needs root and the
//! Debian packages openvswitch-switch, iproute2, iputils-ping, nftables,
//! iptables, ethtool. Daemons are killed and temp dirs removed on drop, also
//! when a test fails.

#![cfg(target_os = "linux")]

mod common;

use std::cell::RefCell;
use std::time::Duration;

use common::ovs::Ovs;
use common::scenario::{check_connectivity, Topo};
use common::*;
use socketplane_datapath::ovs::{OvsConfig, OvsDatapath, DEFAULT_BRIDGE};
use socketplane_datapath::DesiredState;

/// Real NICs put complete checksums on the wire; the lab's veth from the
/// outside namespace must too, since br-phy's userspace datapath reads it.
fn outside_offload_off(lab: &Lab) {
    lab.exec(&lab.outside, &["ethtool", "-K", "eth0", "tx", "off"]);
}

/// A starter for `Topo::new_with`: OVS on the hosts whose index is in
/// `ovs_hosts`, the Linux datapath elsewhere.
fn starter<'a>(
    daemons: &'a RefCell<Vec<Ovs>>,
    ovs_hosts: &'a [usize],
) -> impl Fn(&str) -> DpHost + 'a {
    move |ns: &str| {
        let idx: usize = ns.rsplit("-h").next().and_then(|s| s.parse().ok()).unwrap();
        if ovs_hosts.contains(&idx) {
            let o = Ovs::start(ns);
            let h = o.datapath();
            daemons.borrow_mut().push(o);
            h
        } else {
            // A real NIC puts complete checksums on the wire; a veth hands
            // the peer partial ones, which the userspace datapath on the
            // other side (reading the underlay with AF_PACKET) rejects.
            sh(&[
                "ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off",
            ]);
            DpHost::start(ns)
        }
    }
}

#[test]
fn mixed_linux_and_ovs_hosts_interoperate() {
    socketplane_testkit::require_privileged!();
    let daemons = RefCell::new(Vec::new());
    // Host 0 runs the Linux datapath, host 1 Open vSwitch.
    let t = Topo::new_with(false, starter(&daemons, &[1]));
    outside_offload_off(&t.lab);
    check_connectivity(&t);
}

/// Open vSwitch's own daemons restart under a running datapath: it
/// reconnects and resynchronises. (Restart of the datapath itself, without
/// churn, and pruning are in the conformance suite.)
#[test]
fn ovsdb_and_vswitchd_restarts_resync() {
    socketplane_testkit::require_privileged!();
    let daemons = RefCell::new(Vec::new());
    let t = Topo::new_with(false, starter(&daemons, &[0, 1]));
    let d = daemons.borrow();
    let o = &d[0];
    let fresh = o.datapath();
    // Detach wa3, so that the resync below has something to restore.
    let mut d0: DesiredState = t.desired[0].clone();
    d0.local.retain(|e| e.id != "wa3");
    // An operator who left the uplink answering ARP: the datapath quiets it
    // (else peers may tunnel to the uplink's MAC, which drops).
    let arp_ignore = "net.ipv4.conf.eth0.arp_ignore";
    t.lab
        .exec(&o.ns, &["sysctl", "-qw", &format!("{arp_ignore}=0")]);
    assert!(fresh.apply(&d0).changes > 0);
    assert_eq!(t.lab.exec(&o.ns, &["sysctl", "-n", arp_ignore]).trim(), "8");
    let host = socketplane_datapath::ovs::VETHS.host("wa3");
    assert!(!o.vsctl(&["list-ports", DEFAULT_BRIDGE]).contains(&host));

    // ovsdb-server restarts under the running datapath: it reconnects and
    // re-converges (here: re-attach wa3).
    o.stop_db();
    assert!(
        fresh.try_apply(&t.desired[0]).is_err(),
        "apply without ovsdb-server"
    );
    o.start_db();
    let ok = socketplane_testkit::wait_until_every(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || fresh.try_apply(&t.desired[0]).is_ok(),
    );
    assert!(ok, "no reconnect after ovsdb-server restart");
    assert_eq!(fresh.apply(&t.desired[0]).changes, 0);
    assert!(o.vsctl(&["list-ports", DEFAULT_BRIDGE]).contains(&host));
    assert!(t.lab.ping(&t.wa1, "10.10.0.13"), "wa3 back after resync");
    assert!(
        t.lab.ping(&t.wa3, "10.10.0.12"),
        "wa3 across hosts after resync"
    );

    // ovs-vswitchd restarts (its flows and internal ports are gone): the
    // next apply notices and restores them.
    let before = o.flows();
    o.stop_vswitchd();
    o.start_vswitchd();
    assert!(fresh.apply(&t.desired[0]).changes > 0);
    // The new ovs-vswitchd knows no tunnel neighbour: the apply had it
    // resolve the other host before any packet needs it.
    let other = t.dp[1].underlay_ip.to_string();
    let resolved = socketplane_testkit::wait_until_every(
        Duration::from_secs(2),
        Duration::from_millis(20),
        || {
            o.appctl(&["tnl/neigh/show"])
                .lines()
                .any(|l| l.split_whitespace().next() == Some(other.as_str()))
        },
    );
    assert!(
        resolved,
        "{other} not resolved after an ovs-vswitchd restart"
    );
    assert_eq!(
        o.flows(),
        before,
        "flows restored after an ovs-vswitchd restart"
    );
    assert!(t.lab.ping(&t.wa1, "10.10.0.1"), "gateway back");
    assert!(t.lab.ping(&t.wa1, "10.10.0.12"), "tunnel back");
    drop(fresh);

    // Teardown removes the bridge, veths and firewall.
    t.dp[0].teardown();
    assert!(!o.vsctl(&["list-br"]).contains(DEFAULT_BRIDGE));
    assert!(
        our_links(&t.lab.hosts[0])
            .iter()
            .all(|l| !l.starts_with("spo")),
        "{:?}",
        our_links(&t.lab.hosts[0])
    );
    assert!(!nft_table_exists(
        &t.lab,
        &t.lab.hosts[0],
        "inet",
        "socketplane"
    ));
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Why an OvsDatapath with `cfg` does not start in namespace `ns`.
fn start_error(ns: &str, cfg: OvsConfig) -> String {
    in_ns(ns, move || match block_on(OvsDatapath::new(cfg)) {
        Ok(_) => panic!("the OVS datapath started"),
        Err(e) => e.to_string(),
    })
}

#[test]
fn clear_errors_when_ovs_is_missing_or_misconfigured() {
    socketplane_testkit::require_privileged!();
    let mut lab = Lab::new(1);
    let h = lab.hosts[0].clone();
    let _ = lab.workload("unused");
    let dir = tempfile::tempdir().unwrap();
    // No ovsdb-server.
    let cfg = OvsConfig {
        ovsdb: dir.path().join("db.sock"),
        ..OvsConfig::new("eth0")
    };
    let err = start_error(&h, cfg);
    assert!(err.contains("ovsdb-server"), "{err}");
    assert!(err.contains("openvswitch-switch"), "{err}");
    let missing = dir.path().join("db.sock");
    assert!(!block_on(socketplane_datapath::ovs::probe(&missing)));

    // OVS running, but the underlay (eth0) is not on an OVS bridge.
    let o = Ovs::start(&h);
    assert!(block_on(socketplane_datapath::ovs::probe(&o.sock())));
    let cfg = OvsConfig {
        ovsdb: o.sock(),
        ..OvsConfig::new("eth0")
    };
    let err = start_error(&h, cfg);
    assert!(err.contains("br-phy"), "{err}");

    // ovs-vswitchd not running.
    o.stop_vswitchd();
    let cfg = o.config();
    let err = start_error(&h, cfg);
    assert!(err.contains("ovs-vswitchd"), "{err}");
    drop(o);
    drop(lab);
}

#[test]
fn three_ovs_hosts_head_end_replication() {
    socketplane_testkit::require_privileged!();
    use socketplane_datapath::LocalEndpoint;
    let mut lab = Lab::new(3);
    let a = net("a", 100, 10);
    let mut daemons = Vec::new();
    let mut dps = Vec::new();
    let mut ws = Vec::new();
    // (host index, endpoint)
    let mut eps: Vec<(usize, LocalEndpoint)> = Vec::new();
    for i in 0..3u8 {
        let w = lab.workload(&format!("x{i}"));
        eps.push((usize::from(i), local(&format!("x{i}"), &a, 11 + i, &w)));
        ws.push(w);
    }
    for i in 0..3 {
        let o = Ovs::start(&lab.hosts[i]);
        dps.push(o.datapath());
        daemons.push(o);
    }
    let hosts: Vec<std::net::Ipv4Addr> = dps.iter().map(|d| d.underlay_ip).collect();
    let desired = |i: usize, eps: &[(usize, LocalEndpoint)]| DesiredState {
        networks: vec![a.clone()],
        local: eps
            .iter()
            .filter(|(h, _)| *h == i)
            .map(|(_, e)| e.clone())
            .collect(),
        remote: eps
            .iter()
            .filter(|(h, _)| *h != i)
            .map(|(h, e)| remote_of(e, hosts[*h]))
            .collect(),
        ..Default::default()
    };
    for (i, dp) in dps.iter().enumerate() {
        assert!(dp.apply(&desired(i, &eps)).changes > 0);
    }
    assert!(lab.ping(&ws[0], "10.10.0.12"));
    assert!(lab.ping(&ws[0], "10.10.0.13"));
    assert!(lab.ping(&ws[2], "10.10.0.12"));
    // One multicast send reaches both other hosts (one copy per host).
    let got = common::scenario::multicast(
        (&ws[0], std::net::Ipv4Addr::new(10, 10, 0, 11)),
        &[
            (&ws[1], std::net::Ipv4Addr::new(10, 10, 0, 12)),
            (&ws[2], std::net::Ipv4Addr::new(10, 10, 0, 13)),
        ],
    );
    assert_eq!(got, vec![true, true]);
    // A fourth workload joins on host 2: every host converges to reach it.
    let w3 = lab.workload("x3");
    eps.push((2, local("x3", &a, 14, &w3)));
    for (i, dp) in dps.iter().enumerate() {
        assert!(dp.apply(&desired(i, &eps)).changes > 0, "host {i}");
        assert_eq!(dp.apply(&desired(i, &eps)).changes, 0, "host {i}");
    }
    assert!(lab.ping(&w3, "10.10.0.11"));
    assert!(lab.ping(&ws[1], "10.10.0.14"));
    assert!(lab.ping(&w3, "10.10.0.13"), "same host");
    drop(dps);
    drop(daemons);
}
