//! A multi-host lab in network namespaces: hosts on a shared bridge, each
//! running its own agent.
//!
//! Layout of a lab named `NAME` (nothing is created in the root namespace):
//!
//! - `sp-NAME-sw`: the "switch", a namespace holding bridge `lan0`; one veth
//!   per host (`h1`, `h2`, ...) and one to the outside (`out`) are its ports.
//! - `sp-NAME-h1`, `sp-NAME-h2`, ...: hosts; `eth0` has 198.18.0.(10+i)/24,
//!   `lo` is up, the default route goes via 198.18.0.254.
//! - `sp-NAME-out`: the outside world at 198.18.0.254 (and
//!   [`OUTSIDE_REMOTE_IP`] on its `lo`, an address beyond the gateway), the
//!   destination for masquerade tests; it does not forward.
//! - `sp-NAME-WL`: workload namespaces (`lo` up), attached to networks by
//!   the agent (`socketplane endpoint attach --netns PATH`).
//!
//! Hosts are addressed by their 0-based index into [`Lab::hosts`]:
//! index 0 is `host1` (198.18.0.11, namespace `sp-NAME-h1`), index 1 is
//! `host2`, and so on.
//!
//! Each host runs `AGENT agent [--bootstrap] --iface eth0 --data-dir DIR/data
//! --socket DIR/socketplane.sock --docker-plugin off --cluster NAME --node-name hostN
//! [--datapath D] [EXTRA...]` via `ip netns exec`, detached in its own
//! session, logging to `DIR/agent.log`. The lab's state is saved in
//! `STATE_DIR/lab.json` after every change, so `up`, `exec` and `down` can
//! be separate processes.

mod cmd;
mod error;
pub mod ovs;
pub mod ping;
mod process;

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::Ipv4Addr;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use error::{LabError, Result};
pub use nix::sys::signal::Signal;

/// The outside world's address on the underlay; the hosts' default gateway.
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
/// An address on the outside namespace's loopback, reached via the gateway:
/// a stand-in for "the internet" in masquerade tests.
pub const OUTSIDE_REMOTE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);
/// Prefix length of the underlay subnet 198.18.0.0/24.
pub const UNDERLAY_PREFIX_LEN: u8 = 24;
/// Name of the underlay interface in every host.
pub const UNDERLAY_IFACE: &str = "eth0";
/// Most hosts a lab can have (addresses .11 to .210).
pub const MAX_HOSTS: usize = 200;
/// Longest lab name (it is part of every namespace name).
pub const MAX_NAME_LEN: usize = 6;

const STATE_FILE: &str = "lab.json";
const BRIDGE: &str = "lan0";
const LOG_TAIL_LINES: usize = 30;

/// The underlay address of the host at `index` (0-based): `host1` (index
/// 0) has 198.18.0.11, `hostN` has 198.18.0.(10+N).
pub fn underlay_ip(index: usize) -> Option<Ipv4Addr> {
    let last = u8::try_from(index.checked_add(11)?).ok()?;
    (index < MAX_HOSTS).then_some(Ipv4Addr::new(198, 18, 0, last))
}

/// The default state directory of a lab: `/run/socketplane-lab/<name>`.
pub fn default_state_dir(name: &str) -> PathBuf {
    PathBuf::from("/run/socketplane-lab").join(name)
}

/// Call `f` every `interval` until it returns true or `timeout` passes;
/// returns whether it succeeded (it is always called at least once).
pub fn wait_until(timeout: Duration, interval: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(interval);
    }
}

/// How to build a lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabConfig {
    /// Unique lab name: 1 to 6 of `a-z0-9`; the cluster name of its agents.
    pub name: String,
    /// Number of hosts (1..=200).
    pub hosts: usize,
    /// `--datapath` for the agents (`linux`, `ovs`, `auto`); empty: not passed.
    pub datapath: String,
    /// The `socketplane` binary.
    pub agent_bin: PathBuf,
    /// Extra flags appended to every agent's command line.
    pub agent_args: Vec<String>,
    /// Where state, logs, data dirs and sockets live.
    pub state_dir: PathBuf,
}

impl LabConfig {
    /// A configuration with defaults: datapath not passed, no extra flags,
    /// state in [`default_state_dir`].
    pub fn new(name: &str, hosts: usize, agent_bin: impl Into<PathBuf>) -> LabConfig {
        LabConfig {
            name: name.to_string(),
            hosts,
            datapath: String::new(),
            agent_bin: agent_bin.into(),
            agent_args: Vec::new(),
            state_dir: default_state_dir(name),
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(LabError::InvalidConfig(m));
        if self.name.is_empty()
            || self.name.len() > MAX_NAME_LEN
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return bad(format!(
                "lab name {:?} must be 1 to {MAX_NAME_LEN} characters of a-z and 0-9",
                self.name
            ));
        }
        if self.hosts == 0 || self.hosts > MAX_HOSTS {
            return bad(format!(
                "a lab has 1 to {MAX_HOSTS} hosts, not {}",
                self.hosts
            ));
        }
        if !self.agent_bin.is_file() {
            return bad(format!(
                "agent binary {} does not exist",
                self.agent_bin.display()
            ));
        }
        if self.state_dir.as_os_str().is_empty() {
            return bad("state dir must not be empty".into());
        }
        Ok(())
    }
}

/// How long the lab waits for agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// For an agent's socket to appear after it starts (default 20 s).
    pub ready: Duration,
    /// For an agent to exit after SIGTERM, before SIGKILL (default 10 s).
    pub stop: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            ready: Duration::from_secs(20),
            stop: Duration::from_secs(10),
        }
    }
}

/// One host of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// 0-based index into [`Lab::hosts`] (`host1` has index 0).
    pub index: usize,
    /// `host1`, `host2`, ...
    pub name: String,
    /// Network namespace name (`sp-NAME-h1`).
    pub netns: String,
    /// Address of `eth0`.
    pub underlay_ip: Ipv4Addr,
    /// The agent's API socket.
    pub socket: PathBuf,
    /// The agent's `--data-dir`.
    pub data_dir: PathBuf,
    /// The agent's log (stdout and stderr).
    pub log: PathBuf,
    /// The agent's process id while it runs.
    pub agent_pid: Option<u32>,
    /// Start time of `agent_pid` (clock ticks since boot), to detect pid reuse.
    agent_start_time: Option<u64>,
}

impl HostInfo {
    /// The host's directory (holding data dir, socket and log).
    pub fn dir(&self) -> &Path {
        self.log.parent().unwrap_or_else(|| Path::new("/"))
    }

    /// Path of the host's namespace (`/run/netns/...`).
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }
}

/// A workload namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// Short name given to [`Lab::add_workload`].
    pub name: String,
    /// Index of the host it belongs to.
    pub host: usize,
    /// Namespace name (`sp-NAME-WL`).
    pub netns: String,
}

impl Workload {
    /// Path of the namespace, for `socketplane endpoint attach --netns`.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }
}

/// A running lab. Its state is saved to `<state_dir>/lab.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lab {
    config: LabConfig,
    #[serde(default)]
    timeouts: Timeouts,
    hosts: Vec<HostInfo>,
    workloads: Vec<Workload>,
    /// Every namespace created, in creation order (for teardown).
    namespaces: Vec<String>,
}

impl Lab {
    /// Build the lab: switch, outside world, hosts; start one agent per host
    /// (the first with `--bootstrap`) and wait until each agent's socket
    /// exists. On failure everything created is removed again.
    pub fn up(config: LabConfig) -> Result<Lab> {
        Lab::up_with(config, Timeouts::default())
    }

    /// [`Lab::up`] with other timeouts (kept for the lab's later use).
    pub fn up_with(mut config: LabConfig, timeouts: Timeouts) -> Result<Lab> {
        config.validate()?;
        config.agent_bin = fs::canonicalize(&config.agent_bin).map_err(io_ctx(format!(
            "cannot resolve {}",
            config.agent_bin.display()
        )))?;
        let state_file = config.state_dir.join(STATE_FILE);
        if state_file.exists() {
            return Err(LabError::AlreadyExists(format!(
                "lab {:?} already exists ({}); run `socketplane lab down` first",
                config.name,
                state_file.display()
            )));
        }
        let prefix = format!("sp-{}-", config.name);
        if let Some(ns) = cmd::netns_list()
            .into_iter()
            .find(|n| n.starts_with(&prefix))
        {
            return Err(LabError::AlreadyExists(format!(
                "network namespace {ns} of a lab {:?} already exists; remove it first (Lab::purge)",
                config.name
            )));
        }
        fs::create_dir_all(&config.state_dir).map_err(io_ctx(format!(
            "cannot create {}",
            config.state_dir.display()
        )))?;
        let hosts = config.hosts;
        let mut lab = Lab {
            config,
            timeouts,
            hosts: Vec::new(),
            workloads: Vec::new(),
            namespaces: Vec::new(),
        };
        match lab.build(hosts) {
            Ok(()) => Ok(lab),
            Err(e) => {
                if let Err(td) = lab.teardown() {
                    tracing::warn!(error = %td, "Cleaning up after a failed lab up was incomplete.");
                }
                Err(e)
            }
        }
    }

    fn build(&mut self, hosts: usize) -> Result<()> {
        self.save()?;
        let sw = self.ns_name("sw");
        self.add_netns(&sw)?;
        cmd::ip(&[
            "-n",
            &sw,
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        cmd::ip(&["-n", &sw, "link", "set", BRIDGE, "up"])?;

        let out = self.outside_netns();
        self.add_netns(&out)?;
        self.plug(&out, "out", GATEWAY_IP)?;
        cmd::ip(&[
            "-n",
            &out,
            "addr",
            "add",
            &format!("{OUTSIDE_REMOTE_IP}/32"),
            "dev",
            "lo",
        ])?;
        if self.uses_ovs() {
            ovs::full_checksums(&out)?;
        }

        for index in 0..hosts {
            self.create_host(index)?;
        }
        self.save()?;
        for index in 0..hosts {
            self.spawn_agent(index, index == 0)?;
            if index == 0 {
                self.wait_ready(0)?;
            }
        }
        for index in 1..hosts {
            self.wait_ready(index)?;
        }
        tracing::info!(lab = %self.config.name, hosts, "The lab is up.");
        Ok(())
    }

    /// Load a lab saved by [`Lab::up`] in another process.
    pub fn load(state_dir: &Path) -> Result<Lab> {
        let path = state_dir.join(STATE_FILE);
        let text = fs::read_to_string(&path)
            .map_err(io_ctx(format!("cannot read lab state {}", path.display())))?;
        serde_json::from_str(&text).map_err(|source| LabError::State { path, source })
    }

    /// Remove whatever is left of a lab named `name` without its state:
    /// kill every process in its namespaces, delete the namespaces and the
    /// state dir. For cleaning up after a crash.
    pub fn purge(name: &str, state_dir: &Path) -> Result<()> {
        let prefix = format!("sp-{name}-");
        let mut errors = Vec::new();
        let mut namespaces: Vec<String> = cmd::netns_list()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        namespaces.sort();
        for ns in &namespaces {
            kill_netns_processes(ns);
        }
        for ns in &namespaces {
            if let Err(e) = cmd::ip(&["netns", "del", ns]) {
                errors.push(e);
            }
        }
        remove_state_dir(state_dir, &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(LabError::Teardown(errors))
        }
    }

    /// The configuration the lab was built with.
    pub fn config(&self) -> &LabConfig {
        &self.config
    }

    /// The lab's name (also its agents' cluster name).
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Where the state, logs and sockets are.
    pub fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }

    /// All hosts, in order (`hosts()[0]` is `host1`).
    pub fn hosts(&self) -> &[HostInfo] {
        &self.hosts
    }

    /// The host at `index` (0-based: 0 is `host1`).
    pub fn host(&self, index: usize) -> Result<&HostInfo> {
        self.hosts
            .get(index)
            .ok_or_else(|| LabError::UnknownHost(format!("index {index}")))
    }

    /// A host by name: `host2`, `h2` or `2` (all meaning index 1).
    pub fn host_by_name(&self, name: &str) -> Result<&HostInfo> {
        let digits = name
            .strip_prefix("host")
            .or_else(|| name.strip_prefix('h'))
            .unwrap_or(name);
        digits
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| self.hosts.get(i))
            .ok_or_else(|| LabError::UnknownHost(name.to_string()))
    }

    /// The timeouts in use.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Change the timeouts (saved with the lab).
    pub fn set_timeouts(&mut self, timeouts: Timeouts) -> Result<()> {
        self.timeouts = timeouts;
        self.save()
    }

    /// The workloads created so far.
    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }

    /// Name of the outside-world namespace (198.18.0.254).
    pub fn outside_netns(&self) -> String {
        self.ns_name("out")
    }

    /// Name of the switch namespace.
    pub fn switch_netns(&self) -> String {
        self.ns_name("sw")
    }

    /// Add a host later (the next index), start its agent without
    /// `--bootstrap`, and wait until its socket exists.
    pub fn add_host(&mut self) -> Result<HostInfo> {
        let index = self.hosts.len();
        if underlay_ip(index).is_none() {
            return Err(LabError::InvalidConfig(format!(
                "a lab has at most {MAX_HOSTS} hosts"
            )));
        }
        let result = self
            .create_host(index)
            .and_then(|()| self.save())
            .and_then(|()| self.start_agent(index, false));
        match result {
            Ok(()) => self.host(index).cloned(),
            Err(e) => {
                // Roll back this host only.
                let _ = self.stop_agent(index, Signal::SIGKILL);
                let ns = self.host_ns(index);
                if cmd::netns_exists(&ns) {
                    let _ = cmd::ip(&["netns", "del", &ns]);
                }
                self.namespaces.retain(|n| n != &ns);
                self.hosts.truncate(index);
                let _ = self.save();
                Err(e)
            }
        }
    }

    /// Start the agent of host `index` and wait until its socket exists.
    /// With `bootstrap`, it gets `--bootstrap`.
    pub fn start_agent(&mut self, index: usize, bootstrap: bool) -> Result<()> {
        self.spawn_agent(index, bootstrap)?;
        self.wait_ready(index)
    }

    /// Whether the agent of host `index` is running.
    pub fn agent_running(&self, index: usize) -> bool {
        match self.host(index) {
            Ok(h) => match (h.agent_pid, h.agent_start_time) {
                (Some(pid), Some(st)) => process::alive(pid, st),
                _ => false,
            },
            Err(_) => false,
        }
    }

    /// Stop the agent of host `index` with `signal` (SIGTERM or SIGKILL) and
    /// wait until it is gone. After SIGTERM it gets [`Timeouts::stop`],
    /// then SIGKILL. Stopping a stopped agent succeeds.
    pub fn stop_agent(&mut self, index: usize, signal: Signal) -> Result<()> {
        let grace = self.timeouts.stop;
        let host = self.host(index)?.clone();
        if let (Some(pid), Some(st)) = (host.agent_pid, host.agent_start_time) {
            stop_process(&host.name, pid, st, signal, grace)?;
        }
        let h = self.host_mut(index)?;
        h.agent_pid = None;
        h.agent_start_time = None;
        self.save()
    }

    /// A command that runs `argv` in host `index`'s namespace with
    /// `SOCKETPLANE_SOCKET` set to the host's socket (stdio inherited).
    pub fn command(&self, index: usize, argv: &[String]) -> Result<Command> {
        let host = self.host(index)?;
        if argv.is_empty() {
            return Err(LabError::InvalidConfig("empty command".into()));
        }
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &host.netns])
            .args(argv)
            .env("SOCKETPLANE_SOCKET", &host.socket);
        Ok(c)
    }

    /// Run `argv` in host `index`'s namespace (with `SOCKETPLANE_SOCKET`
    /// set) and collect its output. A non-zero exit is not an error here.
    pub fn exec(&self, index: usize, argv: &[String]) -> Result<Output> {
        let mut c = self.command(index, argv)?;
        c.stdin(Stdio::null());
        c.output().map_err(|e| LabError::Command {
            cmd: cmd::render(
                "ip netns exec",
                &argv.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            ),
            detail: e.to_string(),
        })
    }

    /// Create a workload namespace `sp-NAME-WL` (lo up) on host `index`;
    /// returns its path for `socketplane endpoint attach --netns PATH`.
    pub fn add_workload(&mut self, index: usize, name: &str) -> Result<String> {
        self.host(index)?;
        if name.is_empty()
            || name.len() > 20
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || name.starts_with('-')
        {
            return Err(LabError::InvalidConfig(format!(
                "workload name {name:?} must be 1 to 20 characters of a-z, 0-9 and '-'"
            )));
        }
        let reserved = name == "sw"
            || name == "out"
            || (name.starts_with('h') && name[1..].bytes().all(|b| b.is_ascii_digit()));
        if reserved {
            return Err(LabError::InvalidConfig(format!(
                "workload name {name:?} is reserved for the lab's own namespaces"
            )));
        }
        if self.workloads.iter().any(|w| w.name == name) {
            return Err(LabError::AlreadyExists(format!(
                "workload {name:?} already exists"
            )));
        }
        let ns = self.ns_name(name);
        self.add_netns(&ns)?;
        let w = Workload {
            name: name.to_string(),
            host: index,
            netns: ns,
        };
        let path = w.netns_path().to_string_lossy().into_owned();
        self.workloads.push(w);
        self.save()?;
        Ok(path)
    }

    /// A workload by name.
    pub fn workload(&self, name: &str) -> Result<&Workload> {
        self.workloads
            .iter()
            .find(|w| w.name == name)
            .ok_or_else(|| LabError::UnknownWorkload(name.to_string()))
    }

    /// Run `argv` in a workload's namespace and collect its output.
    pub fn workload_exec(&self, name: &str, argv: &[String]) -> Result<Output> {
        let w = self.workload(name)?;
        if argv.is_empty() {
            return Err(LabError::InvalidConfig("empty command".into()));
        }
        Command::new("ip")
            .args(["netns", "exec", &w.netns])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| LabError::Command {
                cmd: format!("ip netns exec {} {}", w.netns, argv.join(" ")),
                detail: e.to_string(),
            })
    }

    /// Delete a workload namespace (and whatever runs in it).
    pub fn remove_workload(&mut self, name: &str) -> Result<()> {
        let w = self.workload(name)?.clone();
        kill_netns_processes(&w.netns);
        if cmd::netns_exists(&w.netns) {
            cmd::ip(&["netns", "del", &w.netns])?;
        }
        self.workloads.retain(|x| x.name != name);
        self.namespaces.retain(|n| n != &w.netns);
        self.save()
    }

    /// Tear everything down: agents (SIGTERM, then SIGKILL), any other
    /// process in the lab's namespaces, the namespaces (and with them every
    /// link), and the state dir. Goes on after errors and returns them all.
    pub fn down(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        let mut errors = Vec::new();
        let grace = self.timeouts.stop;
        for h in &mut self.hosts {
            if let (Some(pid), Some(st)) = (h.agent_pid, h.agent_start_time) {
                if let Err(e) = stop_process(&h.name, pid, st, Signal::SIGTERM, grace) {
                    errors.push(e);
                }
            }
            h.agent_pid = None;
            h.agent_start_time = None;
        }
        // Workloads first, hosts next, the switch last.
        let mut namespaces = self.namespaces.clone();
        namespaces.reverse();
        for ns in &namespaces {
            kill_netns_processes(ns);
        }
        for ns in &namespaces {
            if cmd::netns_exists(ns) {
                if let Err(e) = cmd::ip(&["netns", "del", ns]) {
                    errors.push(e);
                }
            }
        }
        self.namespaces.clear();
        remove_state_dir(&self.config.state_dir, &mut errors);
        if errors.is_empty() {
            tracing::info!(lab = %self.config.name, "The lab is down.");
            Ok(())
        } else {
            Err(LabError::Teardown(errors))
        }
    }

    // ---- internals ----

    fn ns_name(&self, suffix: &str) -> String {
        format!("sp-{}-{}", self.config.name, suffix)
    }

    fn host_ns(&self, index: usize) -> String {
        self.ns_name(&format!("h{}", index + 1))
    }

    fn host_mut(&mut self, index: usize) -> Result<&mut HostInfo> {
        self.hosts
            .get_mut(index)
            .ok_or_else(|| LabError::UnknownHost(format!("index {index}")))
    }

    fn save(&self) -> Result<()> {
        let path = self.config.state_dir.join(STATE_FILE);
        let tmp = self.config.state_dir.join(format!("{STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|source| LabError::State {
            path: path.clone(),
            source,
        })?;
        fs::write(&tmp, text).map_err(io_ctx(format!("cannot write {}", tmp.display())))?;
        fs::rename(&tmp, &path).map_err(io_ctx(format!("cannot write {}", path.display())))
    }

    fn add_netns(&mut self, name: &str) -> Result<()> {
        cmd::ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_string());
        self.save()?;
        cmd::ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Connect namespace `ns` to the switch: port `port` on the bridge,
    /// `eth0` with `ip`/24 in `ns`.
    fn plug(&self, ns: &str, port: &str, ip: Ipv4Addr) -> Result<()> {
        let sw = self.switch_netns();
        cmd::ip(&[
            "-n",
            &sw,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            UNDERLAY_IFACE,
            "netns",
            ns,
        ])?;
        cmd::ip(&["-n", &sw, "link", "set", port, "master", BRIDGE, "up"])?;
        cmd::ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{ip}/{UNDERLAY_PREFIX_LEN}"),
            "dev",
            UNDERLAY_IFACE,
        ])?;
        cmd::ip(&["-n", ns, "link", "set", UNDERLAY_IFACE, "up"])?;
        Ok(())
    }

    fn create_host(&mut self, index: usize) -> Result<()> {
        let ip = underlay_ip(index)
            .ok_or_else(|| LabError::InvalidConfig(format!("no address for host {index}")))?;
        let ns = self.host_ns(index);
        let number = index + 1;
        let name = format!("host{number}");
        let dir = self.config.state_dir.join(&name);
        let data_dir = dir.join("data");
        fs::create_dir_all(&data_dir)
            .map_err(io_ctx(format!("cannot create {}", data_dir.display())))?;
        self.add_netns(&ns)?;
        self.plug(&ns, &format!("h{number}"), ip)?;
        cmd::ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &GATEWAY_IP.to_string(),
        ])?;
        if self.uses_ovs() {
            ovs::start(&ns, &dir, ip)?;
        }
        self.hosts.push(HostInfo {
            index,
            name,
            netns: ns,
            underlay_ip: ip,
            socket: dir.join("socketplane.sock"),
            data_dir,
            log: dir.join("agent.log"),
            agent_pid: None,
            agent_start_time: None,
        });
        Ok(())
    }

    fn uses_ovs(&self) -> bool {
        self.config.datapath == "ovs"
    }

    /// The agent's command line (after `ip netns exec NS`).
    fn agent_argv(&self, host: &HostInfo, bootstrap: bool) -> Vec<String> {
        let mut argv = vec![
            self.config.agent_bin.to_string_lossy().into_owned(),
            "agent".to_string(),
        ];
        if bootstrap {
            argv.push("--bootstrap".into());
        }
        argv.extend(
            [
                "--iface",
                if self.uses_ovs() {
                    ovs::UNDERLAY_BRIDGE
                } else {
                    UNDERLAY_IFACE
                },
                "--data-dir",
                &host.data_dir.to_string_lossy(),
                "--socket",
                &host.socket.to_string_lossy(),
                "--docker-plugin",
                "off",
                "--cluster",
                &self.config.name,
                // Hosts share the machine's hostname: name them apart.
                "--node-name",
                &host.name,
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        if !self.config.datapath.is_empty() {
            argv.push("--datapath".into());
            argv.push(self.config.datapath.clone());
        }
        if self.uses_ovs() {
            argv.push("--ovsdb".into());
            argv.push(ovs::db_socket(host.dir()).to_string_lossy().into_owned());
        }
        argv.extend(self.config.agent_args.iter().cloned());
        argv
    }

    fn spawn_agent(&mut self, index: usize, bootstrap: bool) -> Result<()> {
        if self.agent_running(index) {
            let h = self.host(index)?;
            return Err(LabError::AgentRunning {
                host: h.name.clone(),
                pid: h.agent_pid.unwrap_or(0),
            });
        }
        let host = self.host(index)?.clone();
        let argv = self.agent_argv(&host, bootstrap);
        // A socket left by a killed agent must not pass for readiness.
        if host.socket.exists() {
            fs::remove_file(&host.socket).map_err(io_ctx(format!(
                "cannot remove stale {}",
                host.socket.display()
            )))?;
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&host.log)
            .map_err(io_ctx(format!("cannot open {}", host.log.display())))?;
        {
            use std::io::Write;
            let _ = writeln!(
                log,
                "=== socketplane lab: starting in {}: {} ===",
                host.netns,
                argv.join(" ")
            );
        }
        let log_err = log
            .try_clone()
            .map_err(io_ctx(format!("cannot open {}", host.log.display())))?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &host.netns])
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .env_remove("BOOTSTRAP")
            .env_remove("SOCKETPLANE_SOCKET");
        // SAFETY: setsid is async-signal-safe; nothing else runs between
        // fork and exec. It detaches the agent from our session so it
        // outlives `lab up` and no terminal hangup reaches it.
        unsafe {
            c.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let child = c.spawn().map_err(|e| LabError::Command {
            cmd: format!("ip netns exec {} {}", host.netns, argv.join(" ")),
            detail: e.to_string(),
        })?;
        let pid = child.id();
        // The child is never waited on through `child`; `process::alive`
        // reaps it when it exits while we still run.
        drop(child);
        let start_time = process::stat(pid).map(|s| s.start_time);
        let h = self.host_mut(index)?;
        h.agent_pid = Some(pid);
        h.agent_start_time = start_time;
        tracing::info!(host = %host.name, pid, bootstrap, "Started an agent.");
        self.save()
    }

    fn wait_ready(&self, index: usize) -> Result<()> {
        let host = self.host(index)?;
        let timeout = self.timeouts.ready;
        let deadline = Instant::now() + timeout;
        loop {
            let is_socket = fs::metadata(&host.socket)
                .map(|m| m.file_type().is_socket())
                .unwrap_or(false);
            if is_socket {
                return Ok(());
            }
            if !self.agent_running(index) {
                return Err(LabError::AgentExited {
                    host: host.name.clone(),
                    log: host.log.clone(),
                    log_tail: log_tail(&host.log),
                });
            }
            if Instant::now() >= deadline {
                return Err(LabError::AgentNotReady {
                    host: host.name.clone(),
                    socket: host.socket.clone(),
                    waited: timeout,
                    log: host.log.clone(),
                    log_tail: log_tail(&host.log),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn io_ctx(context: String) -> impl FnOnce(std::io::Error) -> LabError {
    error::io_err(context)
}

/// Signal a detached process and wait for it to go; escalate to SIGKILL.
fn stop_process(host: &str, pid: u32, start_time: u64, sig: Signal, grace: Duration) -> Result<()> {
    if !process::alive(pid, start_time) {
        return Ok(());
    }
    let _ = process::signal(pid, sig);
    let wait = if sig == Signal::SIGKILL {
        Duration::from_secs(5)
    } else {
        grace
    };
    if process::wait_gone(pid, start_time, wait) {
        tracing::info!(host, pid, signal = %sig, "Stopped an agent.");
        return Ok(());
    }
    if sig != Signal::SIGKILL {
        tracing::warn!(host, pid, "The agent ignored SIGTERM; sending SIGKILL.");
        let _ = process::signal(pid, Signal::SIGKILL);
        if process::wait_gone(pid, start_time, Duration::from_secs(5)) {
            return Ok(());
        }
    }
    Err(LabError::AgentUnkillable {
        host: host.to_string(),
        pid,
    })
}

/// Remove what a lab keeps in its state dir (`lab.json`, `hostN/`), then
/// the dir itself if that leaves it empty; anything else in it is kept.
fn remove_state_dir(dir: &Path, errors: &mut Vec<LabError>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let ours_file = name == STATE_FILE || name == format!("{STATE_FILE}.tmp");
        let ours_dir = name
            .strip_prefix("host")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let result = if ours_file {
            fs::remove_file(&path)
        } else if ours_dir && path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            continue;
        };
        if let Err(e) = result {
            errors.push(LabError::Io {
                context: format!("cannot remove {}", path.display()),
                source: e,
            });
        }
    }
    if let Err(e) = fs::remove_dir(dir) {
        tracing::warn!(error = %e, dir = %dir.display(), "Left the lab's state dir in place.");
    }
}

/// SIGKILL every process that lives in namespace `ns`.
fn kill_netns_processes(ns: &str) {
    if !cmd::netns_exists(ns) {
        return;
    }
    let me = std::process::id() as i32;
    let pids: Vec<i32> = cmd::netns_pids(ns)
        .into_iter()
        .filter(|p| *p != me)
        .collect();
    for pid in &pids {
        process::signal_pid(*pid, Signal::SIGKILL);
    }
    for pid in &pids {
        if let Ok(p) = u32::try_from(*pid) {
            if let Some(st) = process::stat(p) {
                process::wait_gone(p, st.start_time, Duration::from_secs(2));
            }
        }
    }
}

/// The last lines of a log file (at most 64 KiB are read).
fn log_tail(path: &Path) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// A lab that is torn down when dropped (tests: cleanup also on panic).
#[derive(Debug)]
pub struct LabGuard(Option<Lab>);

impl LabGuard {
    /// Bring a lab up under a guard.
    pub fn up(config: LabConfig) -> Result<LabGuard> {
        Lab::up(config).map(|lab| LabGuard(Some(lab)))
    }

    /// Guard an existing lab.
    pub fn new(lab: Lab) -> LabGuard {
        LabGuard(Some(lab))
    }

    /// Tear down now and report errors.
    pub fn down(mut self) -> Result<()> {
        match self.0.take() {
            Some(lab) => lab.down(),
            None => Ok(()),
        }
    }

    /// Stop guarding; the caller owns the lab again.
    pub fn into_inner(mut self) -> Option<Lab> {
        self.0.take()
    }
}

impl std::ops::Deref for LabGuard {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        // Only `down`/`into_inner` take the lab, and they consume the guard.
        self.0.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::DerefMut for LabGuard {
    fn deref_mut(&mut self) -> &mut Lab {
        self.0.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Some(lab) = self.0.take() {
            if let Err(e) = lab.down() {
                eprintln!("lab teardown: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(underlay_ip(0), Some(Ipv4Addr::new(198, 18, 0, 11)));
        assert_eq!(underlay_ip(199), Some(Ipv4Addr::new(198, 18, 0, 210)));
        assert_eq!(underlay_ip(200), None);
    }

    #[test]
    fn config_validation() {
        let bin = std::env::current_exe().unwrap();
        assert!(LabConfig::new("ab12", 3, &bin).validate().is_ok());
        for (name, hosts) in [
            ("", 1),
            ("toolong", 1),
            ("Ab", 1),
            ("a-b", 1),
            ("ab", 0),
            ("ab", 201),
        ] {
            assert!(
                LabConfig::new(name, hosts, &bin).validate().is_err(),
                "{name} {hosts}"
            );
        }
        assert!(LabConfig::new("ab", 1, "/nonexistent/x")
            .validate()
            .is_err());
    }

    #[test]
    fn agent_command_line_follows_the_contract() {
        let bin = std::env::current_exe().unwrap();
        let mut cfg = LabConfig::new("ab", 2, &bin);
        cfg.datapath = "ovs".into();
        cfg.agent_args = vec!["--no-mdns".into()];
        cfg.state_dir = PathBuf::from("/tmp/x");
        let lab = Lab {
            config: cfg,
            timeouts: Timeouts::default(),
            hosts: Vec::new(),
            workloads: Vec::new(),
            namespaces: Vec::new(),
        };
        let host = HostInfo {
            index: 0,
            name: "host1".into(),
            netns: "sp-ab-h1".into(),
            underlay_ip: Ipv4Addr::new(198, 18, 0, 11),
            socket: "/tmp/x/host1/socketplane.sock".into(),
            data_dir: "/tmp/x/host1/data".into(),
            log: "/tmp/x/host1/agent.log".into(),
            agent_pid: None,
            agent_start_time: None,
        };
        let argv = lab.agent_argv(&host, true);
        assert_eq!(
            argv[1..].join(" "),
            "agent --bootstrap --iface br-phy --data-dir /tmp/x/host1/data \
             --socket /tmp/x/host1/socketplane.sock --docker-plugin off --cluster ab \
             --node-name host1 --datapath ovs --ovsdb /tmp/x/host1/ovs/db.sock --no-mdns"
        );
        assert!(!lab
            .agent_argv(&host, false)
            .contains(&"--bootstrap".to_string()));
    }

    #[test]
    fn wait_until_works() {
        let mut n = 0;
        assert!(wait_until(
            Duration::from_secs(1),
            Duration::from_millis(1),
            || {
                n += 1;
                n == 3
            }
        ));
        assert!(!wait_until(
            Duration::from_millis(30),
            Duration::from_millis(5),
            || false
        ));
    }
}
