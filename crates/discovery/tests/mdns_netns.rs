//! mDNS discovery between network namespaces (needs root).
//!
//! Every test builds its own "switch" namespace holding a bridge, and one
//! namespace per node with `eth0` on that bridge (198.18.0.0/24). Nothing is
//! created in the root namespace; everything is removed on drop, also when a
//! test fails.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socketplane_discovery::{Advertisement, Discovery, MemberFlag, Peer, PROTOCOL_VERSION};
use socketplane_testkit::{netns, require_privileged, zeroconf, Underlay};

/// The underlay of a test: bridges `lan0` and `lan1` on one switch.
fn lans() -> Underlay {
    let net = Underlay::new('d').expect("underlay");
    net.add_bridge("lan1").expect("second LAN");
    net
}

/// A node namespace with eth0 on lan0 at 198.18.0.(10+i) and a multicast route.
fn node(net: &mut Underlay, i: u8) -> (String, Ipv4Addr) {
    let ip = Ipv4Addr::new(198, 18, 0, 10 + i);
    let ns = net.host(&format!("n{i}"), ip).expect("node namespace");
    net.multicast_route(&ns, "eth0").expect("multicast route");
    (ns, ip)
}

/// A Discovery running in a namespace on its own thread.
struct Node {
    peers: std_mpsc::Receiver<Peer>,
    member: MemberFlag,
    stop: Option<std_mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Node {
    fn start(ns: &str, ad: Advertisement) -> Node {
        let (peer_tx, peers) = std_mpsc::channel();
        let (stop, stop_rx) = std_mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let handle = netns::spawn_in_ns(ns, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let started = Discovery::start(ad);
            let (disc, mut rx) = match started {
                Ok(x) => {
                    ready_tx.send(Ok(x.0.member_flag())).unwrap();
                    x
                }
                Err(e) => {
                    ready_tx.send(Err(e.to_string())).unwrap();
                    return;
                }
            };
            loop {
                match stop_rx.try_recv() {
                    Ok(()) | Err(std_mpsc::TryRecvError::Disconnected) => break,
                    Err(std_mpsc::TryRecvError::Empty) => {}
                }
                let got = rt.block_on(async {
                    tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
                });
                match got {
                    Ok(Some(p)) => {
                        let _ = peer_tx.send(p);
                    }
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
            disc.shutdown();
        });
        let member = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("discovery thread did not report")
            .expect("Discovery::start failed");
        Node {
            peers,
            member,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// Collect peers until `done` holds for the map of node id -> peer, or timeout.
    fn collect_until(
        &self,
        seen: &mut BTreeMap<String, Peer>,
        timeout: Duration,
        done: impl Fn(&BTreeMap<String, Peer>) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(seen) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Ok(p) = self
                .peers
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                seen.insert(p.node_id.clone(), p);
            }
        }
    }

    fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn ad(name: &str, cluster: &str, addr: Ipv4Addr, port: u16) -> Advertisement {
    Advertisement {
        node_name: name.into(),
        node_id: format!("id-{name}"),
        cluster: cluster.into(),
        addr,
        port,
        iface: "eth0".into(),
        member: false,
    }
}

fn expected_peer(name: &str, cluster: &str, addr: Ipv4Addr, port: u16) -> Peer {
    Peer {
        node_name: name.into(),
        node_id: format!("id-{name}"),
        cluster: cluster.into(),
        version: PROTOCOL_VERSION.into(),
        member: false,
        addr: SocketAddr::new(addr.into(), port),
    }
}

#[test]
fn three_nodes_find_each_other_and_ignore_another_cluster() {
    require_privileged!();
    let mut net = lans();
    let cluster = format!("c{}", std::process::id());
    let mut nodes = Vec::new();
    let mut expected = Vec::new();
    for i in 1..=3u8 {
        let (ns, ip) = node(&mut net, i);
        // host3 has a dotted (FQDN-like) name: escaped in DNS-SD, intact here.
        let name = if i == 3 {
            "host3.rack-a".to_string()
        } else {
            format!("host{i}")
        };
        nodes.push(Node::start(&ns, ad(&name, &cluster, ip, 6675)));
        expected.push(expected_peer(&name, &cluster, ip, 6675));
    }
    // A node of another cluster on the same LAN.
    let (ns4, ip4) = node(&mut net, 4);
    let stranger = Node::start(&ns4, ad("stranger", "othercluster", ip4, 6675));

    for (i, node) in nodes.iter().enumerate() {
        let mut seen = BTreeMap::new();
        let want: BTreeMap<String, Peer> = expected
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| (p.node_id.clone(), p.clone()))
            .collect();
        let ok = node.collect_until(&mut seen, Duration::from_secs(15), |s| s.len() >= 2);
        assert!(ok, "host{} saw only {seen:?}", i + 1);
        // Give a stranger's announcement time to (wrongly) show up.
        node.collect_until(&mut seen, Duration::from_millis(1500), |_| false);
        assert_eq!(seen, want, "host{} peers", i + 1);
    }
    let mut seen = BTreeMap::new();
    stranger.collect_until(&mut seen, Duration::from_secs(2), |_| false);
    assert!(seen.is_empty(), "other cluster saw {seen:?}");
}

#[test]
fn restarted_peer_is_announced_again() {
    require_privileged!();
    let mut net = lans();
    let cluster = format!("r{}", std::process::id());
    let (ns1, ip1) = node(&mut net, 1);
    let (ns2, ip2) = node(&mut net, 2);
    let a = Node::start(&ns1, ad("alpha", &cluster, ip1, 6675));
    let b = Node::start(&ns2, ad("beta", &cluster, ip2, 6675));

    let mut seen = BTreeMap::new();
    assert!(
        a.collect_until(&mut seen, Duration::from_secs(15), |s| s.len() == 1),
        "alpha did not see beta"
    );
    assert_eq!(seen["id-beta"], expected_peer("beta", &cluster, ip2, 6675));

    // Beta says goodbye and comes back (on another port, as after a restart
    // with other flags); alpha must be told again.
    b.stop();
    std::thread::sleep(Duration::from_millis(1500));
    while a.peers.try_recv().is_ok() {}
    let _b2 = Node::start(&ns2, ad("beta", &cluster, ip2, 6676));
    let mut again = BTreeMap::new();
    assert!(
        a.collect_until(&mut again, Duration::from_secs(15), |s| s
            .get("id-beta")
            .is_some_and(|p| p.addr.port() == 6676)),
        "restarted beta not re-announced: {again:?}"
    );

    // And a restart with identical data is announced again too (goodbye
    // made alpha forget it).
    drop(_b2);
    std::thread::sleep(Duration::from_millis(1500));
    while a.peers.try_recv().is_ok() {}
    let _b3 = Node::start(&ns2, ad("beta", &cluster, ip2, 6676));
    let mut third = BTreeMap::new();
    assert!(
        a.collect_until(&mut third, Duration::from_secs(15), |s| s
            .contains_key("id-beta")),
        "beta restarted with the same data was not re-announced"
    );
}

#[test]
fn members_advertise_but_only_non_members_browse() {
    require_privileged!();
    let mut net = lans();
    let cluster = format!("m{}", std::process::id());
    let (ns1, ip1) = node(&mut net, 1);
    let (ns2, ip2) = node(&mut net, 2);
    let mut member_ad = ad("member", &cluster, ip1, 6675);
    member_ad.member = true;
    let member = Node::start(&ns1, member_ad);
    let joiner = Node::start(&ns2, ad("joiner", &cluster, ip2, 6675));

    // The joiner finds the member, which says so from the start.
    let mut seen = BTreeMap::new();
    assert!(
        joiner.collect_until(&mut seen, Duration::from_secs(15), |s| s.len() == 1),
        "the joiner did not see the member"
    );
    let mut want = expected_peer("member", &cluster, ip1, 6675);
    want.member = true;
    assert_eq!(seen["id-member"], want);

    // The member does not browse: it learns of no peer.
    let mut seen = BTreeMap::new();
    member.collect_until(&mut seen, Duration::from_secs(3), |_| false);
    assert!(seen.is_empty(), "a member browsed and saw {seen:?}");

    // No longer a member (it left): it browses again and finds the joiner.
    member.member.set(false);
    assert!(
        member.collect_until(&mut seen, Duration::from_secs(15), |s| s.len() == 1),
        "browsing did not resume"
    );
    assert_eq!(
        seen["id-joiner"],
        expected_peer("joiner", &cluster, ip2, 6675)
    );
}

const SNIFF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mdns_sniff.py");

/// `mdns_sniff.py ARGS` in namespace `ns`, started now.
fn sniff(ns: &str, args: &[&str]) -> std::process::Child {
    let py = zeroconf::python();
    let mut argv = vec![py.as_str(), SNIFF];
    argv.extend_from_slice(args);
    netns::command(ns, &argv)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run python3 via `ip netns exec`")
}

/// A listener's counts: (packets of ours, all packets).
fn counts(listener: std::process::Child) -> (u32, u32) {
    let out = listener.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mdns_sniff.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let n: Vec<u32> = text
        .split_whitespace()
        .map(|w| {
            w.parse()
                .unwrap_or_else(|e| panic!("mdns_sniff.py: {e}: {text}"))
        })
        .collect();
    assert_eq!(n.len(), 2, "mdns_sniff.py printed {text:?}");
    (n[0], n[1])
}

#[test]
fn python_zeroconf_sees_our_services_only_on_the_underlay() {
    require_privileged!();
    let mut net = lans();
    let cluster = format!("z{}", std::process::id());
    // Passive listeners, started before any node: one on the second LAN
    // (where nothing of ours may appear), one on the underlay (where ours
    // must: proof that a listener sees what is there).
    let probe2 = net.netns("probe2").unwrap();
    net.plug(&probe2, "eth0", "lan1", Ipv4Addr::new(198, 19, 0, 99))
        .unwrap();
    net.multicast_route(&probe2, "eth0").unwrap();
    let probe0 = net.netns("probe0").unwrap();
    net.plug(&probe0, "eth0", "lan0", Ipv4Addr::new(198, 18, 0, 98))
        .unwrap();
    net.multicast_route(&probe0, "eth0").unwrap();
    let lan1_listener = sniff(&probe2, &["listen", "8"]);
    let lan0_listener = sniff(&probe0, &["listen", "8"]);
    std::thread::sleep(Duration::from_millis(300));
    // A control sender on the second LAN: its packets (not ours) must reach
    // the listener there, so "nothing of ours" means something.
    let control = net.netns("control").unwrap();
    net.plug(&control, "eth0", "lan1", Ipv4Addr::new(198, 19, 0, 98))
        .unwrap();
    net.multicast_route(&control, "eth0").unwrap();
    let sender = sniff(&control, &["send", "5"]);

    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for i in 1..=3u8 {
        let (ns, ip) = node(&mut net, i);
        if i == 1 {
            // host1 also has a "docker0" on a second LAN: we must not be seen there.
            net.plug(&ns, "docker0", "lan1", Ipv4Addr::new(198, 19, 0, 1))
                .unwrap();
        }
        nodes.push(Node::start(
            &ns,
            ad(&format!("zhost{i}"), &cluster, ip, 6675),
        ));
        addrs.push(ip);
    }
    let probe = net.netns("probe").unwrap();
    net.plug(&probe, "eth0", "lan0", Ipv4Addr::new(198, 18, 0, 99))
        .unwrap();
    net.multicast_route(&probe, "eth0").unwrap();

    let services = zeroconf::browse(&probe, Duration::from_secs(20), 3).expect("zeroconf browse");
    assert_eq!(services.len(), 3, "zeroconf saw {services:?}");
    for (i, ip) in addrs.iter().enumerate() {
        let name = format!("zhost{}._socketplane._tcp.local.", i + 1);
        let svc = services
            .iter()
            .find(|s| s["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} missing in {services:?}"));
        assert_eq!(svc["port"], 6675);
        assert_eq!(
            svc["addresses"],
            serde_json::json!([ip.to_string()]),
            "{svc}"
        );
        assert_eq!(svc["properties"]["cluster"], cluster.as_str());
        assert_eq!(
            svc["properties"]["id"],
            format!("id-zhost{}", i + 1).as_str()
        );
        assert_eq!(svc["properties"]["v"], PROTOCOL_VERSION);
    }

    let sent = sender.wait_with_output().unwrap();
    assert!(
        sent.status.success(),
        "control sender failed: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let (ours0, all0) = counts(lan0_listener);
    assert!(
        ours0 > 0,
        "the underlay listener saw none of our mDNS packets (ours, all): {ours0} {all0}"
    );
    let (ours, all) = counts(lan1_listener);
    assert!(
        all >= 5,
        "the listener on docker0's LAN missed the control packets (ours, all): {ours} {all}"
    );
    assert_eq!(
        ours, 0,
        "mDNS packets of ours on docker0's LAN (ours, all): {ours} {all}"
    );
    drop(nodes);
}
