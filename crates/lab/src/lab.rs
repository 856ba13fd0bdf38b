//! [`Lab`]: a running lab, tying together its topology, agents, workloads,
//! saved state and teardown.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use socketplane_testkit::netns;

use crate::agent;
use crate::config::{underlay_ip, LabConfig, StoreKind, Timeouts, MAX_HOSTS};
use crate::error::{io_err, LabError, Result};
use crate::etcd;
use crate::state;
use crate::teardown;
use crate::topology::{self, HostInfo, Names};
use crate::workload::{self, Workload};

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
        config.agent_bin = fs::canonicalize(&config.agent_bin).map_err(io_err(format!(
            "cannot resolve {}",
            config.agent_bin.display()
        )))?;
        if state::exists(&config.state_dir) {
            return Err(LabError::AlreadyExists(format!(
                "lab {:?} already exists ({}); run `socketplane lab down` first",
                config.name,
                config.state_dir.join(state::STATE_FILE).display()
            )));
        }
        let prefix = Names(&config.name).prefix();
        if let Some(ns) = netns::list()?.into_iter().find(|n| n.starts_with(&prefix)) {
            return Err(LabError::AlreadyExists(format!(
                "network namespace {ns} of a lab {:?} already exists; remove it first (Lab::purge)",
                config.name
            )));
        }
        fs::create_dir_all(&config.state_dir).map_err(io_err(format!(
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
        crate::neigh::make_room(hosts)?;
        let sw = self.switch_netns();
        self.add_netns(&sw)?;
        topology::build_switch(&sw)?;
        let out = self.outside_netns();
        self.add_netns(&out)?;
        topology::build_outside(&sw, &out, self.config.uses_ovs())?;
        if self.config.second_subnet_from.is_some() {
            topology::build_second_subnet(&sw, &out)?;
        }
        if self.config.store == StoreKind::Etcd {
            let ns = self.etcd_netns();
            self.add_netns(&ns)?;
            topology::build_etcd_host(&sw, &ns, self.config.uses_ovs())?;
            etcd::start(
                &ns,
                &self.config.state_dir,
                self.config.etcd_secure,
                self.timeouts.ready,
            )?;
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
        state::load(state_dir)
    }

    /// Remove whatever is left of a lab named `name` without its state:
    /// kill every process in its namespaces, delete the namespaces and the
    /// state dir. For cleaning up after a crash.
    pub fn purge(name: &str, state_dir: &Path) -> Result<()> {
        teardown::purge(name, state_dir)
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

    fn host_mut(&mut self, index: usize) -> Result<&mut HostInfo> {
        self.hosts
            .get_mut(index)
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
        Names(&self.config.name).outside()
    }

    /// Name of the switch namespace.
    pub fn switch_netns(&self) -> String {
        Names(&self.config.name).switch()
    }

    /// Name of the etcd namespace (with `StoreKind::Etcd`).
    pub fn etcd_netns(&self) -> String {
        Names(&self.config.name).ns("etcd")
    }

    /// Every key and value in the lab's etcd (with `StoreKind::Etcd`).
    pub fn etcd_dump(&self) -> Result<BTreeMap<String, String>> {
        if self.config.store != StoreKind::Etcd {
            return Err(LabError::InvalidConfig("this lab runs no etcd".into()));
        }
        etcd::dump(
            &self.etcd_netns(),
            &self.config.state_dir,
            self.config.etcd_secure,
        )
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
                // Roll back this host only; the first error is the one to tell.
                let _ = self.stop_agent(index, Signal::SIGKILL);
                let ns = Names(&self.config.name).host(index);
                if let Err(td) = netns::delete(&ns) {
                    tracing::warn!(error = %td, "Cannot remove the half-made host.");
                }
                self.namespaces.retain(|n| n != &ns);
                self.hosts.truncate(index);
                if let Err(se) = self.save() {
                    tracing::warn!(error = %se, "Cannot save the lab after a rollback.");
                }
                Err(e)
            }
        }
    }

    fn create_host(&mut self, index: usize) -> Result<()> {
        let ip = crate::config::host_underlay_ip(&self.config, index)
            .ok_or_else(|| LabError::InvalidConfig(format!("no address for host {index}")))?;
        let lan = if self.config.on_second_subnet(index) {
            (
                crate::config::SECOND_BRIDGE,
                crate::config::SECOND_GATEWAY_IP,
            )
        } else {
            (topology::BRIDGE, topology::GATEWAY_IP)
        };
        let ns = Names(&self.config.name).host(index);
        let number = index + 1;
        let name = format!("host{number}");
        let dir = self.config.state_dir.join(&name);
        let data_dir = dir.join("data");
        fs::create_dir_all(&data_dir)
            .map_err(io_err(format!("cannot create {}", data_dir.display())))?;
        self.add_netns(&ns)?;
        topology::build_host_on(
            (&self.switch_netns(), lan),
            number,
            &ns,
            ip,
            &dir,
            self.config.uses_ovs(),
        )?;
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

    /// The cluster token agents started from now on get (`None`: none).
    pub fn set_token(&mut self, token: Option<String>) -> Result<()> {
        self.config.token = token;
        self.save()
    }

    /// Start the agent of host `index` and wait until its socket exists.
    /// With `bootstrap`, it gets `--bootstrap`.
    pub fn start_agent(&mut self, index: usize, bootstrap: bool) -> Result<()> {
        self.spawn_agent(index, bootstrap)?;
        self.wait_ready(index)
    }

    /// Start the agent of host `index` without waiting for it (many hosts
    /// started at once: a cold start); [`Lab::wait_agent`] waits.
    pub fn spawn_agent(&mut self, index: usize, bootstrap: bool) -> Result<()> {
        if self.agent_running(index) {
            let h = self.host(index)?;
            return Err(LabError::AgentRunning {
                host: h.name.clone(),
                pid: h.agent_pid.unwrap_or(0),
            });
        }
        let host = self.host(index)?.clone();
        let argv = agent::argv(&self.config, &host, bootstrap);
        let running = agent::spawn(&host, &argv, self.config.token.as_deref())?;
        let h = self.host_mut(index)?;
        h.agent_pid = Some(running.pid);
        h.agent_start_time = running.start_time;
        tracing::info!(host = %host.name, pid = running.pid, bootstrap, "Started an agent.");
        self.save()
    }

    /// Wait until the agent of host `index` has its socket.
    pub fn wait_agent(&self, index: usize) -> Result<()> {
        self.wait_ready(index)
    }

    fn wait_ready(&self, index: usize) -> Result<()> {
        agent::wait_ready(self.host(index)?, self.timeouts.ready, || {
            self.agent_running(index)
        })
    }

    /// Whether the agent of host `index` is running.
    pub fn agent_running(&self, index: usize) -> bool {
        self.host(index)
            .is_ok_and(|h| agent::running(h.agent_pid, h.agent_start_time))
    }

    /// Stop the agent of host `index` with `signal` (SIGTERM or SIGKILL) and
    /// wait until it is gone. After SIGTERM it gets [`Timeouts::stop`],
    /// then SIGKILL. Stopping a stopped agent succeeds.
    pub fn stop_agent(&mut self, index: usize, signal: Signal) -> Result<()> {
        let grace = self.timeouts.stop;
        let host = self.host(index)?.clone();
        if let (Some(pid), Some(st)) = (host.agent_pid, host.agent_start_time) {
            agent::stop(&host.name, pid, st, signal, grace)?;
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
        let mut c = netns::command(&host.netns, argv);
        c.env("SOCKETPLANE_SOCKET", &host.socket);
        Ok(c)
    }

    /// Run `argv` in host `index`'s namespace (with `SOCKETPLANE_SOCKET`
    /// set) and collect its output. A non-zero exit is not an error here.
    pub fn exec(&self, index: usize, argv: &[String]) -> Result<Output> {
        let mut c = self.command(index, argv)?;
        output(&mut c, &self.host(index)?.netns, argv)
    }

    /// Create a workload namespace `sp-NAME-WL` (lo up) on host `index`;
    /// returns its path for `socketplane endpoint attach --netns PATH`.
    pub fn add_workload(&mut self, index: usize, name: &str) -> Result<String> {
        self.host(index)?;
        workload::validate_name(name)?;
        if self.workloads.iter().any(|w| w.name == name) {
            return Err(LabError::AlreadyExists(format!(
                "workload {name:?} already exists"
            )));
        }
        let ns = Names(&self.config.name).ns(name);
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

    /// Points a workload's resolver at `server` (its network's gateway,
    /// where the agent answers DNS), searching `search` (the network's
    /// name): writes `/etc/netns/NS/resolv.conf`, which `ip netns exec`
    /// (every command run in a workload) mounts over `/etc/resolv.conf`.
    pub fn set_workload_resolver(
        &self,
        name: &str,
        server: std::net::Ipv4Addr,
        search: &str,
    ) -> Result<()> {
        let w = self.workload(name)?;
        let dir = workload::etc_dir(&w.netns);
        fs::create_dir_all(&dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
        let path = dir.join("resolv.conf");
        fs::write(
            &path,
            format!("nameserver {server}\nsearch {search}\noptions timeout:2 attempts:2\n"),
        )
        .map_err(io_err(format!("cannot write {}", path.display())))
    }

    /// A workload by name.
    pub fn workload(&self, name: &str) -> Result<&Workload> {
        self.workloads
            .iter()
            .find(|w| w.name == name)
            .ok_or_else(|| LabError::UnknownWorkload(name.to_string()))
    }

    /// Run `argv` in a workload's namespace and collect its output. A
    /// non-zero exit is not an error here.
    pub fn workload_exec(&self, name: &str, argv: &[String]) -> Result<Output> {
        let w = self.workload(name)?;
        if argv.is_empty() {
            return Err(LabError::InvalidConfig("empty command".into()));
        }
        output(&mut netns::command(&w.netns, argv), &w.netns, argv)
    }

    /// Delete a workload namespace (and whatever runs in it).
    pub fn remove_workload(&mut self, name: &str) -> Result<()> {
        let w = self.workload(name)?.clone();
        netns::delete(&w.netns)?;
        workload::remove_etc_dir(&w.netns)?;
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
                if let Err(e) = agent::stop(&h.name, pid, st, Signal::SIGTERM, grace) {
                    errors.push(e);
                }
            }
            h.agent_pid = None;
            h.agent_start_time = None;
        }
        // Workloads first, hosts next, the switch last.
        let namespaces: Vec<String> = self.namespaces.drain(..).rev().collect();
        teardown::delete_namespaces(&namespaces, &mut errors);
        state::remove(&self.config.state_dir, &mut errors);
        if errors.is_empty() {
            tracing::info!(lab = %self.config.name, "The lab is down.");
        }
        teardown::finish(errors)
    }

    fn add_netns(&mut self, name: &str) -> Result<()> {
        netns::add(name)?;
        self.namespaces.push(name.to_string());
        self.save()
    }

    fn save(&self) -> Result<()> {
        state::save(&self.config.state_dir, self)
    }
}

/// Run a prepared command with stdin closed and collect its output.
fn output(c: &mut Command, ns: &str, argv: &[String]) -> Result<Output> {
    c.stdin(Stdio::null());
    c.output().map_err(|e| LabError::Command {
        cmd: format!("ip netns exec {ns} {}", argv.join(" ")),
        detail: e.to_string(),
    })
}
