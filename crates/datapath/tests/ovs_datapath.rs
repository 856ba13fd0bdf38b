//! Acceptance tests of the Open vSwitch datapath (issue 7) on real OVS:
//! every test host namespace runs its own `ovsdb-server` and `ovs-vswitchd`
//! (own db, sockets, pid files and logs in a temp dir; `OVS_RUNDIR`), with
//! the userspace `netdev` datapath and the underlay address on `br-phy`
//! (eth0 a port of it), as the userspace tunnelling setup requires. The
//! implementation-neutral two-host scenario from `common::scenario` runs
//! unchanged. Needs root and the Debian packages openvswitch-switch,
//! iproute2, iputils-ping, nftables, iptables, ethtool. Daemons are killed
//! and temp dirs removed on drop, also when a test fails.

#![cfg(target_os = "linux")]

mod common;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::scenario::{check_connectivity, Topo};
use common::*;
use socketplane_datapath::ovs::{OvsConfig, OvsDatapath, DEFAULT_BRIDGE};
use socketplane_datapath::{Datapath, DesiredState};

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// One host's Open vSwitch: ovsdb-server + ovs-vswitchd inside namespace `ns`.
struct Ovs {
    ns: String,
    dir: tempfile::TempDir,
}

fn kill_pidfile(path: &Path) {
    if let Ok(pid) = std::fs::read_to_string(path) {
        let pid = pid.trim().to_string();
        let _ = Command::new("kill").arg(&pid).output();
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(path);
    }
}

impl Ovs {
    /// Starts OVS in `ns` and moves the underlay address of eth0 to br-phy.
    fn start(ns: &str) -> Ovs {
        require(&[
            "ovsdb-tool",
            "ovsdb-server",
            "ovs-vswitchd",
            "ovs-vsctl",
            "ovs-ofctl",
            "ethtool",
        ]);
        assert!(
            Path::new(SCHEMA).exists(),
            "{SCHEMA} missing: install the Debian package openvswitch-switch"
        );
        let o = Ovs {
            ns: ns.to_string(),
            dir: tempfile::Builder::new().prefix("spovs").tempdir().unwrap(),
        };
        sh(&["ovsdb-tool", "create", &o.p("conf.db"), SCHEMA]);
        o.start_db();
        o.vsctl(&["--no-wait", "init"]);
        o.start_vswitchd();
        // The userspace tunnelling setup (what the operator does).
        let addr = sh(&["ip", "-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"]);
        let cidr = addr
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .expect("eth0 has an address")
            .to_string();
        o.vsctl(&[
            "add-br",
            "br-phy",
            "--",
            "set",
            "bridge",
            "br-phy",
            "datapath_type=netdev",
            "--",
            "add-port",
            "br-phy",
            "eth0",
        ]);
        sh(&["ip", "-n", ns, "addr", "flush", "dev", "eth0"]);
        sh(&["ip", "-n", ns, "addr", "add", &cidr, "dev", "br-phy"]);
        sh(&["ip", "-n", ns, "link", "set", "br-phy", "up"]);
        o
    }

    fn p(&self, f: &str) -> String {
        self.dir.path().join(f).display().to_string()
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("db.sock")
    }

    fn in_ns(&self, args: &[&str]) -> String {
        let rundir = format!("OVS_RUNDIR={}", self.dir.path().display());
        let dbdir = format!("OVS_DBDIR={}", self.dir.path().display());
        let logdir = format!("OVS_LOGDIR={}", self.dir.path().display());
        let mut v = vec![
            "ip", "netns", "exec", &self.ns, "env", &rundir, &dbdir, &logdir,
        ];
        v.extend_from_slice(args);
        sh(&v)
    }

    fn start_db(&self) {
        self.in_ns(&[
            "ovsdb-server",
            &self.p("conf.db"),
            &format!("--remote=punix:{}", self.p("db.sock")),
            &format!("--pidfile={}", self.p("ovsdb-server.pid")),
            &format!("--unixctl={}", self.p("ovsdb-server.ctl")),
            &format!("--log-file={}", self.p("ovsdb-server.log")),
            "--detach",
        ]);
    }

    fn start_vswitchd(&self) {
        self.in_ns(&[
            "ovs-vswitchd",
            &format!("unix:{}", self.p("db.sock")),
            &format!("--pidfile={}", self.p("ovs-vswitchd.pid")),
            &format!("--unixctl={}", self.p("ovs-vswitchd.ctl")),
            &format!("--log-file={}", self.p("ovs-vswitchd.log")),
            "--detach",
        ]);
    }

    fn stop_vswitchd(&self) {
        kill_pidfile(&self.dir.path().join("ovs-vswitchd.pid"));
    }

    fn stop_db(&self) {
        kill_pidfile(&self.dir.path().join("ovsdb-server.pid"));
    }

    fn vsctl(&self, args: &[&str]) -> String {
        let db = format!("--db=unix:{}", self.p("db.sock"));
        let mut v = vec!["ovs-vsctl", db.as_str(), "--timeout=10"];
        v.extend_from_slice(args);
        self.in_ns(&v)
    }

    fn ofctl(&self, args: &[&str]) -> String {
        let mut v = vec!["ovs-ofctl", "-O", "OpenFlow14"];
        v.extend_from_slice(args);
        self.in_ns(&v)
    }

    fn target(&self) -> String {
        format!("unix:{}/{DEFAULT_BRIDGE}.mgmt", self.dir.path().display())
    }

    /// `dump-flows` without counters, sorted.
    fn flows(&self) -> Vec<String> {
        let out = self.ofctl(&["--no-stats", "dump-flows", &self.target()]);
        let mut v: Vec<String> = out
            .lines()
            .filter(|l| l.contains("actions="))
            .map(|l| l.trim().to_string())
            .collect();
        v.sort();
        v
    }

    fn config(&self) -> OvsConfig {
        OvsConfig {
            ovsdb: self.sock(),
            bridge: DEFAULT_BRIDGE.into(),
            underlay_iface: "br-phy".into(),
            underlay_ip: None,
            mtu: None,
        }
    }

    /// Starts an OvsDatapath for this OVS inside its namespace.
    fn datapath(&self) -> DpHost {
        let cfg = self.config();
        DpHost::start_with(&self.ns, move || async move {
            let dp = OvsDatapath::new(cfg).await.map_err(|e| e.to_string())?;
            let (ip, mtu) = (dp.underlay_ip(), dp.default_mtu());
            Ok((Box::new(dp) as Box<dyn Datapath>, ip, mtu))
        })
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        kill_pidfile(&self.dir.path().join("ovs-vswitchd.pid"));
        self.stop_db();
    }
}

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
fn two_ovs_hosts_connectivity_isolation_outside_multicast() {
    let daemons = RefCell::new(Vec::new());
    let t = Topo::new_with(false, starter(&daemons, &[0, 1]));
    outside_offload_off(&t.lab);
    check_connectivity(&t);
    // The topology: secure bridge, one flow-based tunnel port, tagged ports.
    let d = daemons.borrow();
    let o = &d[0];
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

#[test]
fn large_packets_cross_ovs_hosts() {
    let daemons = RefCell::new(Vec::new());
    let t = Topo::new_with(false, starter(&daemons, &[0, 1]));
    assert_eq!(t.dp[0].mtu, 1450);
    for size in ["1400", "1422"] {
        assert!(
            t.lab.try_exec(
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
            "{size}-byte DF ping across OVS hosts"
        );
    }
}

#[test]
fn mixed_linux_and_ovs_hosts_interoperate() {
    let daemons = RefCell::new(Vec::new());
    // Host 0 runs the Linux datapath, host 1 Open vSwitch.
    let t = Topo::new_with(false, starter(&daemons, &[1]));
    outside_offload_off(&t.lab);
    check_connectivity(&t);
}

#[test]
fn restart_no_churn_stale_removed_and_ovsdb_restart() {
    let daemons = RefCell::new(Vec::new());
    let t = Topo::new_with(false, starter(&daemons, &[0, 1]));
    let d = daemons.borrow();
    let o = &d[0];
    let before = o.flows();
    assert!(!before.is_empty());
    let ports_before = o.vsctl(&["list-ports", DEFAULT_BRIDGE]);

    // A fresh datapath instance over the existing state changes nothing.
    let fresh = o.datapath();
    assert_eq!(fresh.apply(&t.desired[0]).changes, 0);
    assert_eq!(o.flows(), before, "flow churn on restart");
    assert_eq!(o.vsctl(&["list-ports", DEFAULT_BRIDGE]), ports_before);
    assert!(t.lab.ping(&t.wa1, "10.10.0.12"));

    // Detach wa3: its port, veth and flows are gone; the rest still works.
    let mut d0: DesiredState = t.desired[0].clone();
    let wa3 = d0.local.iter().find(|e| e.id == "wa3").unwrap().clone();
    d0.local.retain(|e| e.id != "wa3");
    assert!(fresh.apply(&d0).changes > 0);
    assert_eq!(fresh.apply(&d0).changes, 0);
    let host = socketplane_datapath::ovs::veth_host("wa3");
    assert!(!o.vsctl(&["list-ports", DEFAULT_BRIDGE]).contains(&host));
    assert!(!our_links(&t.lab.hosts[0]).contains(&host));
    let mac = wa3.mac.to_string();
    assert!(
        !o.flows().iter().any(|f| f.contains(&mac)),
        "flows of a detached endpoint remain"
    );
    assert!(t.lab.ping(&t.wa1, "10.10.0.12"));

    // ovsdb-server restarts under the running datapath: it reconnects and
    // re-converges (here: re-attach wa3).
    o.stop_db();
    assert!(
        fresh.try_apply(&t.desired[0]).is_err(),
        "apply without ovsdb-server"
    );
    o.start_db();
    let mut ok = false;
    for _ in 0..50 {
        if fresh.try_apply(&t.desired[0]).is_ok() {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
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

#[test]
fn clear_errors_when_ovs_is_missing_or_misconfigured() {
    let mut lab = Lab::new(1);
    let h = lab.hosts[0].clone();
    let _ = lab.workload("unused");
    let dir = tempfile::tempdir().unwrap();
    // No ovsdb-server.
    let cfg = OvsConfig {
        ovsdb: dir.path().join("db.sock"),
        ..OvsConfig::new("eth0")
    };
    let err = in_ns(&h, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(OvsDatapath::new(cfg))
            .err()
            .unwrap()
            .to_string()
    });
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
    let err = in_ns(&h, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(OvsDatapath::new(cfg))
            .err()
            .unwrap()
            .to_string()
    });
    assert!(err.contains("br-phy"), "{err}");

    // ovs-vswitchd not running.
    kill_pidfile(&o.dir.path().join("ovs-vswitchd.pid"));
    let cfg = o.config();
    let err = in_ns(&h, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(OvsDatapath::new(cfg))
            .err()
            .unwrap()
            .to_string()
    });
    assert!(err.contains("ovs-vswitchd"), "{err}");
    drop(o);
    drop(lab);
}

#[test]
fn three_ovs_hosts_head_end_replication() {
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

#[test]
fn endpoint_left_in_host_namespace_for_docker() {
    let lab = Lab::new(1);
    let h = lab.hosts[0].clone();
    let a = net("a", 100, 10);
    let mut e = local("dock", &a, 30, "unused");
    e.netns = None;
    let d = DesiredState {
        networks: vec![a.clone()],
        local: vec![e.clone()],
        remote: vec![],
    };
    let o = Ovs::start(&h);
    let dp = o.datapath();
    assert!(dp.apply(&d).changes > 0);
    let peer = socketplane_datapath::ovs::veth_peer("dock");
    let show = lab.exec(&h, &["ip", "-o", "link", "show", &peer]);
    assert!(show.contains(&e.mac.to_string()), "{show}");
    assert!(show.contains("mtu 1450"), "{show}");
    // The userspace datapath needs TX checksum offload off on the workload end.
    let k = lab.exec(&h, &["ethtool", "-k", &peer]);
    assert!(k.contains("tx-checksumming: off"), "{k}");
    let host = socketplane_datapath::ovs::veth_host("dock");
    assert!(o.vsctl(&["list-ports", DEFAULT_BRIDGE]).contains(&host));
    assert_eq!(dp.apply(&d).changes, 0);
    dp.apply(&DesiredState::default());
    assert!(
        our_links(&h)
            .iter()
            .all(|l| !l.starts_with("spo") && !l.starts_with("spq")),
        "{:?}",
        our_links(&h)
    );
    assert!(!o.vsctl(&["list-ports", DEFAULT_BRIDGE]).contains(&host));
    drop(dp);
}
