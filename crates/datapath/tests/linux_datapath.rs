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
