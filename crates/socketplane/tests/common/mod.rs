//! A multi-host test harness: a lab of network namespaces, each host running
//! a real `socketplane agent` process, driven through the real CLI. The lab
//! is removed when the harness drops, also when a test fails.

#![allow(dead_code)]

pub mod docker;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use socketplane_api::rest::{ClusterStatus, EndpointInfo};
use socketplane_lab::{Lab, LabConfig};

pub const BIN: &str = env!("CARGO_BIN_EXE_socketplane");

/// A short unique lab name: device names derive from it and must stay
/// within 15 characters; parallel tests must not collide.
pub fn unique_name(tag: char) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!(
        "{tag}{:04x}",
        (std::process::id() as usize * 7 + n) % 0xffff
    )
}

pub struct TestLab {
    pub lab: Option<Lab>,
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if let Some(lab) = self.lab.take() {
            if let Err(e) = lab.down() {
                eprintln!("lab teardown: {e:#}");
            }
        }
    }
}

/// Agent flags every test lab uses: fast liveness so reclaim tests take
/// seconds.
pub fn test_agent_args() -> Vec<String> {
    vec!["--lease-ttl".into(), "3".into()]
}

impl TestLab {
    pub fn start(tag: char, hosts: usize) -> TestLab {
        Self::start_with(tag, hosts, "linux")
    }

    pub fn start_with(tag: char, hosts: usize, datapath: &str) -> TestLab {
        let name = unique_name(tag);
        let mut config = LabConfig::new(&name, hosts, BIN);
        config.datapath = datapath.into();
        config.agent_args = test_agent_args();
        config.state_dir = std::env::temp_dir().join(format!("sp-lab-{name}"));
        let lab = Lab::up(config).expect("lab up");
        let t = TestLab { lab: Some(lab) };
        t.wait_for_nodes(0, hosts, Duration::from_secs(60));
        t
    }

    pub fn lab(&self) -> &Lab {
        self.lab.as_ref().expect("lab")
    }

    pub fn lab_mut(&mut self) -> &mut Lab {
        self.lab.as_mut().expect("lab")
    }

    /// Runs the CLI on a host; Ok(stdout) or Err(stderr).
    pub fn sp(&self, host: usize, args: &[&str]) -> Result<String, String> {
        let mut cmd = vec![BIN.to_string()];
        cmd.extend(args.iter().map(|s| s.to_string()));
        let out = self.lab().exec(host, &cmd).expect("lab exec");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs the CLI with `-o json` and parses the answer.
    pub fn sp_json<T: DeserializeOwned>(&self, host: usize, args: &[&str]) -> T {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self
            .sp(host, &a)
            .unwrap_or_else(|e| panic!("socketplane {}: {e}", args.join(" ")));
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("socketplane {}: {e}: {out}", args.join(" ")))
    }

    pub fn status(&self, host: usize) -> Option<ClusterStatus> {
        let mut cmd = vec![BIN.to_string()];
        cmd.extend(["cluster", "status", "-o", "json"].map(String::from));
        let out = match self.lab().exec(host, &cmd) {
            Ok(out) => out,
            Err(e) => {
                eprintln!("cluster status on host index {host}: {e}");
                return None;
            }
        };
        match serde_json::from_slice(&out.stdout) {
            Ok(s) => Some(s),
            Err(_) => {
                eprintln!(
                    "cluster status on host index {host}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
        }
    }

    pub fn wait_for_nodes(&self, host: usize, alive: usize, timeout: Duration) -> ClusterStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.status(host) {
                if s.store.healthy && s.nodes.iter().filter(|n| n.alive).count() == alive {
                    return s;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "cluster did not reach {alive} alive nodes in {timeout:?}; last status: {:?}\n{}",
                    self.status(host),
                    self.agent_logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A host's L2 forwarding state as text, whatever the datapath: the
    /// bridge FDB (linux) or the OpenFlow table (ovs). MACs appear in it as
    /// `aa:bb:cc:dd:ee:ff`.
    pub fn forwarding_state(&self, host: usize) -> String {
        let lab = self.lab();
        let h = &lab.hosts()[host];
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &h.netns]);
        if lab.config().datapath == "ovs" {
            let mgmt = socketplane_lab::ovs::dir(h.dir()).join("docker0-ovs.mgmt");
            cmd.args(["ovs-ofctl", "-O", "OpenFlow14", "dump-flows"])
                .arg(format!("unix:{}", mgmt.display()));
        } else {
            cmd.args(["bridge", "fdb", "show"]);
        }
        let out = cmd.output().expect("dump forwarding state");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn agent_logs(&self) -> String {
        let mut s = String::new();
        for h in self.lab().hosts() {
            let log = std::fs::read_to_string(&h.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            s.push_str(&format!("--- {} agent log (last lines) ---\n", h.name));
            for l in tail.into_iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    /// Creates a workload namespace on `host` and attaches it to `network`.
    pub fn workload(&mut self, host: usize, name: &str, network: &str) -> EndpointInfo {
        let netns = self
            .lab_mut()
            .add_workload(host, name)
            .expect("add workload");
        self.sp_json(
            host,
            &[
                "endpoint", "attach", "--netns", &netns, "-n", network, "--name", name,
            ],
        )
    }

    pub fn ping(&self, workload: &str, ip: &str) -> bool {
        let cmd: Vec<String> = ["ping", "-c", "1", "-W", "1", "-q", ip]
            .map(String::from)
            .to_vec();
        (0..3).any(|_| {
            self.lab()
                .workload_exec(workload, &cmd)
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
    }

    pub fn ping_once(&self, workload: &str, ip: &str) -> bool {
        let cmd: Vec<String> = ["ping", "-c", "1", "-W", "1", "-q", ip]
            .map(String::from)
            .to_vec();
        self.lab()
            .workload_exec(workload, &cmd)
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    f()
}

/// One raw HTTP/1.1 request over a unix socket: (status, body).
pub fn http(socket: &Path, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = UnixStream::connect(socket).expect("connect to the socket");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write");
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
