//! The agent processes of a lab: their command line, starting one detached
//! in its host's namespace, waiting for its socket, and stopping it.
//!
//! Each host runs `AGENT agent [--bootstrap] --iface eth0 --data-dir
//! DIR/data --socket DIR/socketplane.sock --docker-plugin off --cluster NAME
//! --node-name hostN [--datapath D] [--ovsdb SOCK] [EXTRA...]` via `ip netns
//! exec`, in its own session, logging to `DIR/agent.log`.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use socketplane_testkit::underlay::UNDERLAY_IFACE;
use socketplane_testkit::{netns, process};

use crate::config::{underlay_ip, Discovery, LabConfig};
use crate::error::{io_err, LabError, Result};
use crate::ovs;
use crate::topology::HostInfo;

/// How many log lines an error about an agent quotes.
const LOG_TAIL_LINES: usize = 30;
/// How long a SIGKILLed agent gets to go.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How often readiness is checked.
const READY_POLL: Duration = Duration::from_millis(50);

/// The agent's command line (after `ip netns exec NS`).
pub(crate) fn argv(config: &LabConfig, host: &HostInfo, bootstrap: bool) -> Vec<String> {
    let mut argv = vec![
        config.agent_bin.to_string_lossy().into_owned(),
        "agent".to_string(),
    ];
    if bootstrap {
        argv.push("--bootstrap".into());
    }
    let iface = if config.uses_ovs() {
        ovs::UNDERLAY_BRIDGE
    } else {
        UNDERLAY_IFACE
    };
    argv.extend(
        [
            "--iface",
            iface,
            "--data-dir",
            &host.data_dir.to_string_lossy(),
            "--socket",
            &host.socket.to_string_lossy(),
            "--docker-plugin",
            "off",
            "--cluster",
            &config.name,
            // Hosts share the machine's hostname: name them apart.
            "--node-name",
            &host.name,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    if !config.datapath.is_empty() {
        argv.push("--datapath".into());
        argv.push(config.datapath.clone());
    }
    if config.uses_ovs() {
        argv.push("--ovsdb".into());
        argv.push(ovs::db_socket(host.dir()).to_string_lossy().into_owned());
    }
    if let Some(url) = config.etcd_url() {
        argv.push("--store".into());
        argv.push(url);
        if config.etcd_secure {
            argv.extend(crate::etcd::secure_agent_args(&config.state_dir));
        }
    }
    if config.discovery != Discovery::Mdns {
        argv.push("--no-mdns".into());
    }
    if config.discovery == Discovery::Join {
        // Everyone joins through host1; host1 itself founds the cluster.
        if host.index > 0 {
            if let Some(first) = underlay_ip(0) {
                argv.push("--join".into());
                argv.push(first.to_string());
            }
        }
    }
    argv.extend(config.agent_args.iter().cloned());
    argv
}

/// A running agent: pid and start time (to tell a reused pid apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Running {
    pub pid: u32,
    pub start_time: Option<u64>,
}

/// Start `argv` detached in `host`'s namespace, logging to its log, with
/// the cluster `token` in its environment.
pub(crate) fn spawn(host: &HostInfo, argv: &[String], token: Option<&str>) -> Result<Running> {
    // A socket left by a killed agent must not pass for readiness.
    if host.socket.exists() {
        fs::remove_file(&host.socket).map_err(io_err(format!(
            "cannot remove stale {}",
            host.socket.display()
        )))?;
    }
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&host.log)
        .map_err(io_err(format!("cannot open {}", host.log.display())))?;
    // The banner only helps a reader of the log; starting matters more.
    let _ = writeln!(
        log,
        "=== socketplane lab: starting in {}: {} ===",
        host.netns,
        argv.join(" ")
    );
    let log_err = log
        .try_clone()
        .map_err(io_err(format!("cannot open {}", host.log.display())))?;
    let mut c = netns::command(&host.netns, argv);
    c.stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .env_remove("BOOTSTRAP")
        .env_remove("SOCKETPLANE_SOCKET")
        .env_remove("SOCKETPLANE_TOKEN");
    if let Some(t) = token {
        c.env("SOCKETPLANE_TOKEN", t);
    }
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
    // Never waited on through `child`: `process::alive` reaps it when it
    // exits while we still run.
    drop(child);
    Ok(Running {
        pid,
        start_time: process::stat(pid).map(|s| s.start_time),
    })
}

/// Whether the agent started as `pid` at `start_time` still runs.
pub(crate) fn running(pid: Option<u32>, start_time: Option<u64>) -> bool {
    match (pid, start_time) {
        (Some(pid), Some(st)) => process::alive(pid, st),
        _ => false,
    }
}

/// Wait until `host`'s socket exists; fail early if `alive` says the agent
/// exited.
pub(crate) fn wait_ready(
    host: &HostInfo,
    timeout: Duration,
    alive: impl Fn() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let is_socket = fs::metadata(&host.socket)
            .map(|m| m.file_type().is_socket())
            .unwrap_or(false);
        if is_socket {
            return Ok(());
        }
        if !alive() {
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
        std::thread::sleep(READY_POLL);
    }
}

/// Signal a detached agent and wait for it to go; escalate to SIGKILL
/// after `grace`.
pub(crate) fn stop(
    host: &str,
    pid: u32,
    start_time: u64,
    sig: Signal,
    grace: Duration,
) -> Result<()> {
    if !process::alive(pid, start_time) {
        return Ok(());
    }
    // It may exit on its own between the check and the signal.
    let _ = process::signal_group(pid, sig);
    let wait = if sig == Signal::SIGKILL {
        KILL_WAIT
    } else {
        grace
    };
    if process::wait_gone(pid, start_time, wait) {
        tracing::info!(host, pid, signal = %sig, "Stopped an agent.");
        return Ok(());
    }
    if sig != Signal::SIGKILL {
        tracing::warn!(host, pid, "The agent ignored SIGTERM; sending SIGKILL.");
        let _ = process::signal_group(pid, Signal::SIGKILL);
        if process::wait_gone(pid, start_time, KILL_WAIT) {
            return Ok(());
        }
    }
    Err(LabError::AgentUnkillable {
        host: host.to_string(),
        pid,
    })
}

/// The last lines of a log file (at most 64 KiB are read).
pub(crate) fn log_tail(path: &std::path::Path) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))
        .is_err()
        || f.read_to_end(&mut buf).is_err()
    {
        return format!("(cannot read {})", path.display());
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::path::PathBuf;

    #[test]
    fn agent_command_line_follows_the_contract() {
        let bin = std::env::current_exe().unwrap();
        let mut cfg = LabConfig::new("ab", 2, &bin);
        cfg.datapath = "ovs".into();
        cfg.agent_args = vec!["--no-mdns".into()];
        cfg.state_dir = PathBuf::from("/tmp/x");
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
        let line = argv(&cfg, &host, true);
        assert_eq!(
            line[1..].join(" "),
            "agent --bootstrap --iface br-phy --data-dir /tmp/x/host1/data \
             --socket /tmp/x/host1/socketplane.sock --docker-plugin off --cluster ab \
             --node-name host1 --datapath ovs --ovsdb /tmp/x/host1/ovs/db.sock --no-mdns"
        );
        assert!(!argv(&cfg, &host, false).contains(&"--bootstrap".to_string()));

        // The lab's etcd and --join discovery: host1 founds, the others join it.
        let mut cfg = LabConfig::new("ab", 2, &bin);
        cfg.store = crate::config::StoreKind::Etcd;
        cfg.discovery = Discovery::Join;
        let first = argv(&cfg, &host, true).join(" ");
        assert!(
            first.ends_with("--store etcd://198.18.0.253:2379 --no-mdns"),
            "{first}"
        );
        let second = HostInfo {
            index: 1,
            ..host.clone()
        };
        let line = argv(&cfg, &second, false).join(" ");
        assert!(line.ends_with("--no-mdns --join 198.18.0.11"), "{line}");
        cfg.discovery = Discovery::Manual;
        let line = argv(&cfg, &second, false).join(" ");
        assert!(line.ends_with("--no-mdns"), "{line}");
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        fs::write(&p, text).unwrap();
        let tail = log_tail(&p);
        assert_eq!(tail.lines().count(), LOG_TAIL_LINES);
        assert!(tail.ends_with("line 99"));
        assert!(log_tail(&tmp.path().join("none")).contains("no log"));
    }
}
