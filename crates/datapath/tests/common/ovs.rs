//! One Open vSwitch per test host: `ovsdb-server` and `ovs-vswitchd` inside
//! the host's namespace, with their own db, sockets, pid files and logs in a
//! temp dir (`OVS_RUNDIR`), the userspace `netdev` datapath and the underlay
//! address on `br-phy` (eth0 a port of it), as userspace tunnelling
//! requires. Daemons are killed and the temp dir removed on drop, also when
//! a test fails. Needs the Debian package openvswitch-switch and ethtool.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use socketplane_datapath::ovs::{OvsConfig, OvsDatapath, DEFAULT_BRIDGE};
use socketplane_datapath::Datapath;

use super::{require, sh, DpHost};

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// One host's Open vSwitch: ovsdb-server + ovs-vswitchd inside namespace `ns`.
pub struct Ovs {
    pub ns: String,
    pub dir: tempfile::TempDir,
}

pub fn kill_pidfile(path: &Path) {
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
    pub fn start(ns: &str) -> Ovs {
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

    pub fn p(&self, f: &str) -> String {
        self.dir.path().join(f).display().to_string()
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("db.sock")
    }

    pub fn in_ns(&self, args: &[&str]) -> String {
        let rundir = format!("OVS_RUNDIR={}", self.dir.path().display());
        let dbdir = format!("OVS_DBDIR={}", self.dir.path().display());
        let logdir = format!("OVS_LOGDIR={}", self.dir.path().display());
        let mut v = vec![
            "ip", "netns", "exec", &self.ns, "env", &rundir, &dbdir, &logdir,
        ];
        v.extend_from_slice(args);
        sh(&v)
    }

    pub fn start_db(&self) {
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

    pub fn start_vswitchd(&self) {
        self.in_ns(&[
            "ovs-vswitchd",
            &format!("unix:{}", self.p("db.sock")),
            &format!("--pidfile={}", self.p("ovs-vswitchd.pid")),
            &format!("--unixctl={}", self.p("ovs-vswitchd.ctl")),
            &format!("--log-file={}", self.p("ovs-vswitchd.log")),
            "--detach",
        ]);
    }

    pub fn stop_vswitchd(&self) {
        kill_pidfile(&self.dir.path().join("ovs-vswitchd.pid"));
    }

    pub fn stop_db(&self) {
        kill_pidfile(&self.dir.path().join("ovsdb-server.pid"));
    }

    pub fn vsctl(&self, args: &[&str]) -> String {
        let db = format!("--db=unix:{}", self.p("db.sock"));
        let mut v = vec!["ovs-vsctl", db.as_str(), "--timeout=10"];
        v.extend_from_slice(args);
        self.in_ns(&v)
    }

    pub fn ofctl(&self, args: &[&str]) -> String {
        let mut v = vec!["ovs-ofctl", "-O", "OpenFlow14"];
        v.extend_from_slice(args);
        self.in_ns(&v)
    }

    pub fn target(&self) -> String {
        format!("unix:{}/{DEFAULT_BRIDGE}.mgmt", self.dir.path().display())
    }

    /// `dump-flows` without counters, sorted.
    pub fn flows(&self) -> Vec<String> {
        let out = self.ofctl(&["--no-stats", "dump-flows", &self.target()]);
        let mut v: Vec<String> = out
            .lines()
            .filter(|l| l.contains("actions="))
            .map(|l| l.trim().to_string())
            .collect();
        v.sort();
        v
    }

    pub fn config(&self) -> OvsConfig {
        OvsConfig {
            ovsdb: self.sock(),
            bridge: DEFAULT_BRIDGE.into(),
            underlay_iface: "br-phy".into(),
            underlay_ip: None,
            mtu: None,
        }
    }

    /// Starts an OvsDatapath for this OVS inside its namespace.
    pub fn datapath(&self) -> DpHost {
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
