//! A multi-host lab in network namespaces for the datapath tests, on the
//! test kit's underlay ([`socketplane_testkit::Underlay`]): a switch
//! namespace with the underlay bridge (never the root namespace, so nothing
//! touches the host), N host namespaces with `eth0` = 198.18.0.<i+1>/24, an
//! "outside" namespace with 198.18.0.254, and workload namespaces. Each host
//! runs a datapath on a dedicated thread that entered the host namespace
//! ([`DpHost`]). Everything is removed on drop, also when a test panics:
//! deleting the namespaces removes every link, rule and address the test
//! made inside them (and kills what runs there).

#![allow(dead_code)]

pub mod ovs;
pub mod scenario;

use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::thread::JoinHandle;

use socketplane_datapath::linux::{LinuxConfig, LinuxDatapath};
use socketplane_datapath::{
    ApplyReport, Datapath, DesiredState, LocalEndpoint, MacAddr, NetworkSpec, RemoteEndpoint,
};
pub use socketplane_testkit::cmd::{sh, try_sh};
pub use socketplane_testkit::netns::{in_ns, spawn_in_ns};
use socketplane_testkit::{require, Underlay};

pub fn ns_path(name: &str) -> String {
    socketplane_testkit::netns::path(name).display().to_string()
}

enum Cmd {
    Apply(DesiredState, mpsc::Sender<Result<ApplyReport, String>>),
    Teardown(mpsc::Sender<Result<(), String>>),
    Resync(mpsc::Sender<()>),
}

/// A LinuxDatapath running inside a host namespace on its own thread.
pub struct DpHost {
    tx: Option<mpsc::Sender<Cmd>>,
    join: Option<JoinHandle<()>>,
    pub underlay_ip: Ipv4Addr,
    pub mtu: u32,
}

/// What a datapath factory returns: the datapath, its underlay address and
/// its default overlay MTU.
pub type Started = (Box<dyn Datapath>, Ipv4Addr, u32);

impl DpHost {
    /// Starts a `LinuxDatapath` bound to `eth0` inside host namespace `ns`.
    pub fn start(ns: &str) -> DpHost {
        Self::start_with(ns, || async {
            let dp = LinuxDatapath::new(LinuxConfig {
                underlay_iface: "eth0".into(),
                underlay_ip: None,
                mtu: None,
            })
            .await
            .map_err(|e| e.to_string())?;
            let (ip, mtu) = (dp.underlay().ip, dp.underlay().default_mtu);
            Ok((Box::new(dp) as Box<dyn Datapath>, ip, mtu))
        })
    }

    /// Starts any datapath implementation inside host namespace `ns`: the
    /// factory runs on a dedicated thread that entered the namespace, on a
    /// current-thread tokio runtime (so other implementations, e.g. Open
    /// vSwitch, can reuse this harness).
    pub fn start_with<F, Fut>(ns: &str, factory: F) -> DpHost
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Started, String>>,
    {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let ns = ns.to_string();
        let (tx, rx) = mpsc::channel::<Cmd>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let join = std::thread::spawn(move || {
            socketplane_testkit::netns::enter(&ns).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let dp = match rt.block_on(factory()) {
                Ok((dp, ip, mtu)) => {
                    let _ = ready_tx.send(Ok((ip, mtu)));
                    dp
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            while let Ok(cmd) = rx.recv() {
                match cmd {
                    Cmd::Apply(d, reply) => {
                        let r = rt.block_on(dp.apply(&d)).map_err(|e| e.to_string());
                        let _ = reply.send(r);
                    }
                    Cmd::Teardown(reply) => {
                        let r = rt.block_on(dp.teardown()).map_err(|e| e.to_string());
                        let _ = reply.send(r);
                    }
                    Cmd::Resync(reply) => {
                        dp.resync();
                        let _ = reply.send(());
                    }
                }
            }
            drop(dp);
        });
        let (underlay_ip, mtu) = ready_rx
            .recv()
            .unwrap()
            .unwrap_or_else(|e| panic!("datapath did not start: {e}"));
        DpHost {
            tx: Some(tx),
            join: Some(join),
            underlay_ip,
            mtu,
        }
    }

    pub fn try_apply(&self, d: &DesiredState) -> Result<ApplyReport, String> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .as_ref()
            .unwrap()
            .send(Cmd::Apply(d.clone(), tx))
            .unwrap();
        rx.recv().unwrap()
    }

    pub fn apply(&self, d: &DesiredState) -> ApplyReport {
        self.try_apply(d)
            .unwrap_or_else(|e| panic!("apply failed: {e}"))
    }

    /// [`Datapath::resync`]: the next apply reads the host back in full.
    pub fn resync(&self) {
        let (tx, rx) = mpsc::channel();
        self.tx.as_ref().unwrap().send(Cmd::Resync(tx)).unwrap();
        rx.recv().unwrap();
    }

    pub fn teardown(&self) {
        let (tx, rx) = mpsc::channel();
        self.tx.as_ref().unwrap().send(Cmd::Teardown(tx)).unwrap();
        rx.recv().unwrap().unwrap();
    }
}

impl Drop for DpHost {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// The lab: namespaces named `<prefix>-...`, all deleted on drop.
pub struct Lab {
    pub prefix: String,
    pub switch: String,
    pub hosts: Vec<String>,
    pub outside: String,
    underlay: Underlay,
}

impl Lab {
    /// Builds the switch, `n` hosts and the outside namespace.
    pub fn new(n: usize) -> Lab {
        for (program, package) in [
            ("ip", "iproute2"),
            ("bridge", "iproute2"),
            ("ping", "iputils-ping"),
            ("nft", "nftables"),
            ("iptables", "iptables"),
        ] {
            require(program, package);
        }
        let mut underlay = Underlay::new('d').unwrap();
        let hosts = (0..n)
            .map(|i| {
                let ip = Ipv4Addr::new(198, 18, 0, u8::try_from(i + 1).unwrap());
                underlay.host(&format!("h{i}"), ip).unwrap()
            })
            .collect();
        let outside = underlay
            .host("out", Ipv4Addr::new(198, 18, 0, 254))
            .unwrap();
        Lab {
            prefix: underlay.prefix().to_string(),
            switch: underlay.switch(),
            hosts,
            outside,
            underlay,
        }
    }

    /// A fresh empty workload namespace; returns its name.
    pub fn workload(&mut self, tag: &str) -> String {
        self.underlay.netns(tag).unwrap()
    }

    /// Runs a command inside namespace `ns` (ip netns exec).
    pub fn exec(&self, ns: &str, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", ns];
        v.extend_from_slice(args);
        sh(&v)
    }

    pub fn try_exec(&self, ns: &str, args: &[&str]) -> bool {
        let mut v = vec!["ip", "netns", "exec", ns];
        v.extend_from_slice(args);
        try_sh(&v)
    }

    /// Applies Docker's policy in a host namespace: FORWARD DROP and
    /// bridge-nf-call-iptables=1 (optionally with a DOCKER-USER chain).
    pub fn docker_policy(&self, ns: &str, docker_user: bool) {
        in_ns(ns, || {
            std::fs::write("/proc/sys/net/bridge/bridge-nf-call-iptables", "1")
                .expect("br_netfilter (net.bridge.bridge-nf-call-iptables) is needed")
        });
        self.exec(ns, &["iptables", "-w", "-P", "FORWARD", "DROP"]);
        if docker_user {
            self.exec(ns, &["iptables", "-w", "-N", "DOCKER-USER"]);
            self.exec(ns, &["iptables", "-w", "-A", "DOCKER-USER", "-j", "RETURN"]);
            self.exec(
                ns,
                &["iptables", "-w", "-I", "FORWARD", "1", "-j", "DOCKER-USER"],
            );
        }
    }

    pub fn ping(&self, ns: &str, dst: &str) -> bool {
        self.try_exec(
            ns,
            &["ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "2", dst],
        )
    }

    pub fn ping_fails(&self, ns: &str, dst: &str) -> bool {
        !self.try_exec(ns, &["ping", "-n", "-q", "-c", "1", "-W", "1", dst])
    }
}

pub fn net(name: &str, vni: u32, third: u8) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        vni,
        subnet: format!("10.{third}.0.0/24").parse().unwrap(),
        gateway: Ipv4Addr::new(10, third, 0, 1),
        mtu: None,
        mode: Default::default(),
    }
}

/// Makes network `name` of `d` routed, with `routers` as the hosts that
/// route.
pub fn route_network(d: &mut DesiredState, name: &str, routers: &[Ipv4Addr]) {
    for n in d.networks.iter_mut().filter(|n| n.name == name) {
        n.mode = socketplane_datapath::NetworkMode::Routed;
    }
    d.routers = routers.to_vec();
}

pub fn local(id: &str, net: &NetworkSpec, host_octet: u8, ns: &str) -> LocalEndpoint {
    let o = net.gateway.octets();
    let ip = Ipv4Addr::new(o[0], o[1], o[2], host_octet);
    LocalEndpoint {
        id: id.into(),
        network: net.name.clone(),
        ip,
        mac: MacAddr::from_ipv4(ip),
        netns: Some(ns_path(ns).into()),
        netns_id: None,
        ifname: "eth0".into(),
    }
}

pub fn remote_of(e: &LocalEndpoint, host: Ipv4Addr) -> RemoteEndpoint {
    RemoteEndpoint {
        id: e.id.clone(),
        network: e.network.clone(),
        ip: e.ip,
        mac: e.mac,
        host,
    }
}

/// JSON of `bridge fdb show dev DEV` in namespace `ns`.
pub fn fdb(ns: &str, dev: &str) -> Vec<serde_json::Value> {
    let out = sh(&["bridge", "-n", ns, "-j", "fdb", "show", "dev", dev]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bridge fdb show: {e}: {out}"))
}

/// (mac, dst) of the VXLAN device's own entries.
pub fn vxlan_fdb(ns: &str, dev: &str) -> Vec<(String, String)> {
    let mut v: Vec<_> = fdb(ns, dev)
        .into_iter()
        .filter_map(|e| {
            Some((
                e.get("mac")?.as_str()?.to_string(),
                e.get("dst")?.as_str()?.to_string(),
            ))
        })
        .collect();
    v.sort();
    v
}

/// (ip, mac) of permanent neighbours on `dev`.
pub fn perm_neigh(ns: &str, dev: &str) -> Vec<(String, String)> {
    let out = sh(&[
        "ip",
        "-n",
        ns,
        "-j",
        "neigh",
        "show",
        "dev",
        dev,
        "nud",
        "permanent",
    ]);
    let v: Vec<serde_json::Value> =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip neigh show: {e}: {out}"));
    let mut r: Vec<_> = v
        .into_iter()
        .filter_map(|e| {
            Some((
                e.get("dst")?.as_str()?.to_string(),
                e.get("lladdr")?.as_str()?.to_string(),
            ))
        })
        .collect();
    r.sort();
    r
}

/// Names of links in `ns` that start with `sp` (an unreadable dump fails).
pub fn our_links(ns: &str) -> Vec<String> {
    let mut r: Vec<String> = socketplane_testkit::netns::links(ns)
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("sp"))
        .collect();
    r.sort();
    r
}

/// Whether the nft table `family name` exists in `ns`.
pub fn nft_table_exists(lab: &Lab, ns: &str, family: &str, name: &str) -> bool {
    lab.try_exec(ns, &["nft", "list", "table", family, name])
}
