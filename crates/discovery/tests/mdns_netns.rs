//! mDNS discovery between network namespaces (needs root).
//!
//! Every test builds its own "switch" namespace holding a bridge, and one
//! namespace per node with `eth0` on that bridge (198.18.0.0/24). Nothing is
//! created in the root namespace; everything is removed on drop, also when a
//! test fails.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socketplane_discovery::{Advertisement, Discovery, Peer, PROTOCOL_VERSION};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn run(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (install iproute2): {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A switch namespace with bridges, and node namespaces plugged into them.
struct Net {
    prefix: String,
    namespaces: Vec<String>,
}

impl Net {
    fn new() -> Net {
        let prefix = format!(
            "spdisc{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut net = Net {
            prefix,
            namespaces: Vec::new(),
        };
        let sw = net.add_ns("sw");
        run(&["-n", &sw, "link", "add", "lan0", "type", "bridge"]);
        run(&["-n", &sw, "link", "set", "lan0", "up"]);
        run(&["-n", &sw, "link", "add", "lan1", "type", "bridge"]);
        run(&["-n", &sw, "link", "set", "lan1", "up"]);
        net
    }

    fn sw(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    fn add_ns(&mut self, suffix: &str) -> String {
        let name = format!("{}-{}", self.prefix, suffix);
        run(&["netns", "add", &name]);
        self.namespaces.push(name.clone());
        run(&["-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// Plug `ifname` of namespace `ns` into bridge `lan` with address `ip`/24.
    fn plug(&self, ns: &str, ifname: &str, lan: &str, port: &str, ip: Ipv4Addr) {
        let sw = self.sw();
        run(&[
            "-n", &sw, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns,
        ]);
        run(&["-n", &sw, "link", "set", port, "master", lan, "up"]);
        run(&["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", ifname]);
        run(&["-n", ns, "link", "set", ifname, "up"]);
    }

    /// A node namespace with eth0 on lan0 at 198.18.0.(10+i) and a multicast route.
    fn node(&mut self, i: u8) -> (String, Ipv4Addr) {
        let ns = self.add_ns(&format!("n{i}"));
        let ip = Ipv4Addr::new(198, 18, 0, 10 + i);
        self.plug(&ns, "eth0", "lan0", &format!("p{i}"), ip);
        run(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"]);
        (ns, ip)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A Discovery running in a namespace on its own thread.
struct Node {
    peers: std_mpsc::Receiver<Peer>,
    stop: Option<std_mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Node {
    fn start(ns: &str, ad: Advertisement) -> Node {
        let (peer_tx, peers) = std_mpsc::channel();
        let (stop, stop_rx) = std_mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let path = format!("/run/netns/{ns}");
        let handle = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let started = Discovery::start(ad);
            let (disc, mut rx) = match started {
                Ok(x) => {
                    ready_tx.send(Ok(())).unwrap();
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
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("discovery thread did not report")
            .expect("Discovery::start failed");
        Node {
            peers,
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
    }
}

fn expected_peer(name: &str, cluster: &str, addr: Ipv4Addr, port: u16) -> Peer {
    Peer {
        node_name: name.into(),
        node_id: format!("id-{name}"),
        cluster: cluster.into(),
        version: PROTOCOL_VERSION.into(),
        addr: SocketAddr::new(addr.into(), port),
    }
}

#[test]
fn three_nodes_find_each_other_and_ignore_another_cluster() {
    let mut net = Net::new();
    let cluster = format!("c{}", std::process::id());
    let mut nodes = Vec::new();
    let mut expected = Vec::new();
    for i in 1..=3u8 {
        let (ns, ip) = net.node(i);
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
    let (ns4, ip4) = net.node(4);
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
    let mut net = Net::new();
    let cluster = format!("r{}", std::process::id());
    let (ns1, ip1) = net.node(1);
    let (ns2, ip2) = net.node(2);
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

const BROWSE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/zeroconf_browse.py");
const SNIFF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mdns_sniff.py");

fn python() -> String {
    std::env::var("SOCKETPLANE_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn zeroconf_browse(ns: &str, seconds: u32, expected: usize) -> Vec<serde_json::Value> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, &python(), BROWSE])
        .arg(seconds.to_string())
        .arg(expected.to_string())
        .output()
        .expect("cannot run python3 via `ip netns exec`");
    assert!(
        out.status.success(),
        "python-zeroconf browse failed (needs python3 and `pip install zeroconf`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad output from zeroconf_browse.py: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    v.as_array().cloned().unwrap_or_default()
}

#[test]
fn python_zeroconf_sees_our_services_only_on_the_underlay() {
    let mut net = Net::new();
    let cluster = format!("z{}", std::process::id());
    // A passive listener on the second LAN, started before any node.
    let probe2 = net.add_ns("probe2");
    net.plug(&probe2, "eth0", "lan1", "q9", Ipv4Addr::new(198, 19, 0, 99));
    run(&["-n", &probe2, "route", "add", "224.0.0.0/4", "dev", "eth0"]);
    let sniff = std::process::Command::new("ip")
        .args(["netns", "exec", &probe2, &python(), SNIFF, "8"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run python3 via `ip netns exec`");
    std::thread::sleep(Duration::from_millis(300));

    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for i in 1..=3u8 {
        let (ns, ip) = net.node(i);
        if i == 1 {
            // host1 also has a "docker0" on a second LAN: we must not be seen there.
            net.plug(&ns, "docker0", "lan1", "q1", Ipv4Addr::new(198, 19, 0, 1));
        }
        nodes.push(Node::start(
            &ns,
            ad(&format!("zhost{i}"), &cluster, ip, 6675),
        ));
        addrs.push(ip);
    }
    let probe = net.add_ns("probe");
    net.plug(&probe, "eth0", "lan0", "p9", Ipv4Addr::new(198, 18, 0, 99));
    run(&["-n", &probe, "route", "add", "224.0.0.0/4", "dev", "eth0"]);

    let services = zeroconf_browse(&probe, 20, 3);
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

    let out = sniff.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mdns_sniff.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = String::from_utf8_lossy(&out.stdout);
    let ours: u32 = counts.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(
        ours, 0,
        "mDNS packets of ours on docker0's LAN (ours, all): {counts}"
    );
    drop(nodes);
}
