//! Acceptance tests of the Linux datapath (issue 4). They need root, network
//! namespaces and the binaries `ip`, `bridge`, `ping`, `nft`, `iptables`
//! (Debian: iproute2, iputils-ping, nftables, iptables). Each test builds its
//! own lab of namespaces (see `common`) and removes it on drop.

#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::Duration;

use common::scenario::{check_connectivity, Topo};
use common::*;
use socketplane_datapath::{DesiredState, LocalEndpoint, NetworkSpec};

fn topo(docker: bool) -> Topo {
    Topo::new_with(docker, DpHost::start)
}

#[test]
fn two_hosts_connectivity_isolation_outside_multicast() {
    let t = topo(false);
    check_connectivity(&t);
}

#[test]
fn works_with_docker_forward_drop_policy() {
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

#[test]
fn large_packets_and_bulk_tcp_cross_hosts() {
    let t = topo(false);
    let lab = &t.lab;
    assert_eq!(t.dp[0].mtu, 1450);
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
                "1400",
                "-c",
                "2",
                "-W",
                "2",
                "10.10.0.12"
            ]
        ),
        "1400-byte DF ping across hosts"
    );
    // The largest packet the overlay MTU allows (1422 + 28 = 1450) crosses
    // too: the 50 bytes of VXLAN fit the underlay's 1500, no black hole.
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
                "1422",
                "-c",
                "2",
                "-W",
                "2",
                "10.10.0.12"
            ]
        ),
        "full-MTU DF ping across hosts"
    );
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

fn a_net() -> NetworkSpec {
    net("a", 100, 10)
}

fn ep(lab: &mut Lab, id: &str, n: &NetworkSpec, octet: u8) -> LocalEndpoint {
    let ns = lab.workload(id);
    local(id, n, octet, &ns)
}

#[test]
fn reconcile_reapply_and_remote_removal() {
    let mut lab = Lab::new(1);
    let h = lab.hosts[0].clone();
    let a = a_net();
    let b = net("b", 200, 20);
    let e1 = ep(&mut lab, "e1", &a, 11);
    let r1 = remote_of(&local("r1", &a, 21, "x"), Ipv4Addr::new(198, 18, 0, 2));
    let r2 = remote_of(&local("r2", &a, 22, "x"), Ipv4Addr::new(198, 18, 0, 3));
    let r3 = remote_of(&local("r3", &a, 23, "x"), Ipv4Addr::new(198, 18, 0, 3));
    let mut d = DesiredState {
        networks: vec![a.clone(), b.clone()],
        local: vec![e1.clone()],
        remote: vec![r1.clone(), r2.clone(), r3.clone()],
    };
    let dp = DpHost::start(&h);
    assert!(dp.apply(&d).changes > 0);
    let first = std::time::Instant::now();
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
    assert_eq!(vxlan_fdb(&h, "spvx100"), want);
    assert_eq!(perm_neigh(&h, "spbr100").len(), 3);

    // Remove r2: its FDB and neighbour entries go; the flood entry to .3 stays (r3).
    d.remote.retain(|r| r.id != "r2");
    let rep = dp.apply(&d);
    assert!(rep.changes >= 3, "{rep:?}");
    want.retain(|(m, _)| *m != mac(&r2));
    assert_eq!(vxlan_fdb(&h, "spvx100"), want);
    let neigh = perm_neigh(&h, "spbr100");
    assert!(!neigh.iter().any(|(ip, _)| ip == "10.10.0.22"), "{neigh:?}");
    assert_eq!(neigh.len(), 2);
    // Remove r3 too: no endpoint left on .3, so its flood entry goes.
    d.remote.retain(|r| r.id != "r3");
    dp.apply(&d);
    assert_eq!(
        vxlan_fdb(&h, "spvx100"),
        vec![
            (zero.clone(), "198.18.0.2".to_string()),
            (mac(&r1), "198.18.0.2".to_string())
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    assert_eq!(dp.apply(&d).changes, 0);

    // Removing a network removes its devices and its rules.
    assert!(nft_table_exists(&lab, &h, "inet", "socketplane"));
    let rules = lab.exec(&h, &["nft", "list", "table", "inet", "socketplane"]);
    assert!(rules.contains("spbr200"), "{rules}");
    d.networks.retain(|n| n.name != "b");
    assert!(dp.apply(&d).changes > 0);
    let links = our_links(&h);
    assert!(!links.iter().any(|l| l.ends_with("200")), "{links:?}");
    let rules = lab.exec(&h, &["nft", "list", "table", "inet", "socketplane"]);
    assert!(
        !rules.contains("spbr200") && !rules.contains("10.20.0.0"),
        "{rules}"
    );
    assert_eq!(dp.apply(&d).changes, 0);

    // Removing everything leaves nothing of ours.
    dp.apply(&DesiredState::default());
    assert!(our_links(&h).is_empty(), "{:?}", our_links(&h));
    assert!(!nft_table_exists(&lab, &h, "inet", "socketplane"));
    assert!(!nft_table_exists(&lab, &h, "bridge", "socketplane"));
    assert_eq!(dp.apply(&DesiredState::default()).changes, 0);
}

#[test]
fn converges_over_leftovers_of_a_crashed_run() {
    let mut lab = Lab::new(1);
    let h = lab.hosts[0].clone();
    let a = a_net();
    let b = net("b", 200, 20);
    let e1 = ep(&mut lab, "e1", &a, 11);
    let e2 = ep(&mut lab, "e2", &b, 11);
    let r1 = remote_of(&local("r1", &a, 21, "x"), Ipv4Addr::new(198, 18, 0, 2));
    let r2 = remote_of(&local("r2", &a, 22, "x"), Ipv4Addr::new(198, 18, 0, 3));
    let old = DesiredState {
        networks: vec![a.clone(), b.clone()],
        local: vec![e1.clone(), e2.clone()],
        remote: vec![r1.clone(), r2.clone()],
    };
    {
        let dp = DpHost::start(&h);
        dp.apply(&old);
        // "Crash": the datapath goes away without teardown.
    }
    // Extra damage: a stale FDB entry, a stale neighbour, a wrong MTU, an
    // address removed inside a workload, and a foreign link that is not ours.
    lab.exec(
        &h,
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
        &h,
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
    lab.exec(&h, &["ip", "link", "set", "spbr100", "mtu", "1400"]);
    let e1ns = e1.netns.clone().unwrap();
    let e1ns = e1ns.file_name().unwrap().to_str().unwrap().to_string();
    lab.exec(&e1ns, &["ip", "addr", "flush", "dev", "eth0"]);
    lab.exec(&h, &["ip", "link", "add", "spbrfoo", "type", "bridge"]);

    // New desired state: network b gone (with e2), r2 gone.
    let new = DesiredState {
        networks: vec![a.clone()],
        local: vec![e1.clone()],
        remote: vec![r1.clone()],
    };
    let dp = DpHost::start(&h);
    assert!(dp.apply(&new).changes > 0);
    assert_eq!(dp.apply(&new).changes, 0);

    let host_veth = names_host("e1");
    let mut want_links = vec![
        "spbr100".to_string(),
        "spbrfoo".to_string(),
        "spvx100".to_string(),
        host_veth,
    ];
    want_links.sort();
    assert_eq!(our_links(&h), want_links);
    assert!(
        lab.try_exec(&h, &["ip", "link", "show", "spbrfoo"]),
        "foreign link removed"
    );
    let mut want_fdb = vec![
        ("00:00:00:00:00:00".to_string(), "198.18.0.2".to_string()),
        (r1.mac.to_string(), "198.18.0.2".to_string()),
    ];
    want_fdb.sort();
    assert_eq!(vxlan_fdb(&h, "spvx100"), want_fdb);
    assert_eq!(
        perm_neigh(&h, "spbr100"),
        vec![("10.10.0.21".to_string(), r1.mac.to_string())]
    );
    let mtu = lab.exec(&h, &["cat", "/sys/class/net/spbr100/mtu"]);
    assert_eq!(mtu.trim(), "1450");
    let addr = lab.exec(&e1ns, &["ip", "-4", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("10.10.0.11/24"), "{addr}");
    let rules = lab.exec(&h, &["nft", "list", "table", "inet", "socketplane"]);
    assert!(!rules.contains("spbr200"), "{rules}");
    // And the endpoint works: it reaches its gateway.
    assert!(lab.ping(&e1ns, "10.10.0.1"));

    dp.teardown();
    let left = our_links(&h);
    assert_eq!(left, vec!["spbrfoo".to_string()]);
}

fn names_host(id: &str) -> String {
    socketplane_datapath::linux::names::veth_host(id)
}

#[test]
fn endpoint_left_in_host_namespace_for_docker() {
    let lab = Lab::new(1);
    let h = lab.hosts[0].clone();
    let a = a_net();
    let mut e = local("dock", &a, 30, "unused");
    e.netns = None;
    let d = DesiredState {
        networks: vec![a.clone()],
        local: vec![e.clone()],
        remote: vec![],
    };
    let dp = DpHost::start(&h);
    dp.apply(&d);
    let names = socketplane_datapath::linux::names::veth_peer("dock");
    let show = lab.exec(&h, &["ip", "-o", "link", "show", &names]);
    assert!(show.contains(&e.mac.to_string()), "{show}");
    assert!(show.contains("mtu 1450"), "{show}");
    assert_eq!(dp.apply(&d).changes, 0);
    dp.apply(&DesiredState::default());
    assert!(our_links(&h).is_empty());
}

/// Captures frames on `dev` in `ns` (tcpdump) while `during` runs.
fn capture(lab: &Lab, ns: &str, dev: &str, filter: &str, during: impl FnOnce()) -> String {
    require(&["tcpdump"]);
    let file = std::env::temp_dir().join(format!("{}-{ns}-{dev}.txt", lab.prefix));
    let out = std::fs::File::create(&file).unwrap();
    let mut child = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "tcpdump",
            "-i",
            dev,
            "-nn",
            "-e",
            "-l",
            "--immediate-mode",
        ])
        .arg(filter)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    during();
    std::thread::sleep(Duration::from_millis(500));
    // SIGTERM (not SIGKILL) so tcpdump flushes what it captured.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    text
}

#[test]
fn anycast_gateway_never_crosses_the_tunnel() {
    let t = topo(false);
    let lab = &t.lab;
    let (h0, h1) = (lab.hosts[0].clone(), lab.hosts[1].clone());
    let gw = "02:53:50:00:00:01";
    let filter = "arp or ether src 02:53:50:00:00:01";
    let mut cap1 = String::new();
    let cap0 = capture(lab, &h0, "spvx100", filter, || {
        cap1 = capture(lab, &h1, "spvx100", filter, || {
            for w in [&t.wa1, &t.wa2] {
                lab.exec(w, &["ip", "neigh", "flush", "all"]);
                assert!(lab.ping(w, "10.10.0.1"), "{w} -> gateway");
            }
            // ARP for remote endpoints is answered locally too.
            lab.exec(&t.wa1, &["ip", "neigh", "flush", "all"]);
            assert!(lab.ping(&t.wa1, "10.10.0.12"));
            // Positive control: ARP for an unknown address is flooded.
            assert!(lab.ping_fails(&t.wa1, "10.10.0.99"));
        });
    });
    assert!(
        cap1.contains("who-has 10.10.0.99"),
        "capture on h1 saw no flood:\n{cap1}"
    );
    for (name, cap) in [("h0", &cap0), ("h1", &cap1)] {
        assert!(
            !cap.contains(&format!("{gw} >")),
            "gateway MAC crossed the tunnel at {name}:\n{cap}"
        );
        assert!(
            !cap.contains("is-at"),
            "an ARP reply crossed the tunnel at {name}:\n{cap}"
        );
        assert!(
            !cap.contains("who-has 10.10.0.1 "),
            "ARP for the gateway crossed at {name}:\n{cap}"
        );
        assert!(
            !cap.contains("who-has 10.10.0.12"),
            "ARP for a remote endpoint was not suppressed at {name}:\n{cap}"
        );
    }
    assert!(lab.ping(&t.wa1, "10.10.0.1"));
    let neigh = lab.exec(&t.wa1, &["ip", "neigh", "show", "10.10.0.1"]);
    assert!(neigh.contains(gw), "{neigh}");
    let neigh = lab.exec(&t.wa1, &["ip", "neigh", "show", "10.10.0.12"]);
    assert!(neigh.contains("02:53:0a:0a:00:0c"), "{neigh}");
}

#[test]
fn attach_latency_is_low() {
    let mut lab = Lab::new(1);
    let h = lab.hosts[0].clone();
    let a = a_net();
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

#[test]
fn workload_on_two_networks_keeps_one_default_route() {
    let mut lab = Lab::new(1);
    let h = lab.hosts[0].clone();
    let a = a_net();
    let b = net("b", 200, 20);
    let w = lab.workload("multi");
    let ea = local("multi-a", &a, 11, &w);
    let mut eb = local("multi-b", &b, 11, &w);
    eb.ifname = "eth1".into();
    let d = DesiredState {
        networks: vec![a.clone(), b.clone()],
        local: vec![ea, eb],
        remote: vec![],
    };
    let dp = DpHost::start(&h);
    assert!(dp.apply(&d).changes > 0);
    assert_eq!(dp.apply(&d).changes, 0);
    // A fresh instance re-verifies both ends inside the namespace: still no writes.
    drop(dp);
    let dp = DpHost::start(&h);
    assert_eq!(dp.apply(&d).changes, 0);
    let routes = lab.exec(&w, &["ip", "-4", "route", "show", "default"]);
    assert_eq!(routes.lines().count(), 1, "{routes}");
    assert!(routes.contains("via 10.10.0.1 dev eth0"), "{routes}");
    assert!(lab.ping(&w, "10.20.0.1"));
    assert!(lab.ping(&w, "10.10.0.1"));
}
