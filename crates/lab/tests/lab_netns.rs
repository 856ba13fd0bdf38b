//! The lab in real network namespaces (needs root, `ip`, `ping`, `python3`).
//!
//! The agent is a fake (a shell script that logs its arguments and its view
//! of the network, then serves a unix socket with python3), so these tests
//! prove the lab itself: namespaces, addressing, process lifecycle, saved
//! state and cleanup. Every lab gets a unique name and is torn down by a
//! guard, also when a test fails.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use socketplane_lab::ping::{ping, ping_matrix_with, PingTarget};
use socketplane_lab::{
    Lab, LabConfig, LabError, LabGuard, Signal, Timeouts, GATEWAY_IP, OUTSIDE_REMOTE_IP,
};
use socketplane_testkit::{netns, process, require, require_privileged, unique_name, wait_until};

const FAKE_AGENT: &str = r#"#!/bin/sh
# Stand-in for `socketplane agent`: logs its arguments and its view of the
# network, then serves --socket until SIGTERM.
sock=""; prev=""; mode=serve
for a in "$@"; do
  [ "$prev" = "--socket" ] && sock="$a"
  case "$a" in
    --fake-ignore-term) mode=ignore ;;
    --fake-never-ready) mode=never ;;
    --fake-fail) echo "fake agent: boom, failing on purpose" >&2; exit 1 ;;
  esac
  prev="$a"
done
echo "ARGS: $*"
echo "ADDR: $(ip -4 -o addr show dev eth0)"
echo "BOOTSTRAP_ENV: ${BOOTSTRAP:-unset}"
exec python3 -c '
import os, signal, socket, sys, time
path, mode = sys.argv[1], sys.argv[2]
def bye(*_):
    try:
        os.unlink(path)
    except OSError:
        pass
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "ignore" else bye)
if mode != "never":
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.listen(8)
print("READY", flush=True)
while True:
    time.sleep(3600)
' "$sock" "$mode"
"#;

struct Fixture {
    _tmp: tempfile::TempDir,
    agent: PathBuf,
    state_dir: PathBuf,
}

fn fixture() -> Fixture {
    require("ip", "iproute2");
    require("ping", "iputils-ping");
    require("python3", "python3");
    let tmp = tempfile::tempdir().unwrap();
    let agent = tmp.path().join("fake-agent");
    std::fs::write(&agent, FAKE_AGENT).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let state_dir = tmp.path().join("state");
    Fixture {
        _tmp: tmp,
        agent,
        state_dir,
    }
}

fn config(fx: &Fixture, name: &str, hosts: usize) -> LabConfig {
    let mut cfg = LabConfig::new(name, hosts, &fx.agent);
    cfg.state_dir = fx.state_dir.clone();
    cfg.datapath = "linux".into();
    cfg
}

fn timeouts() -> Timeouts {
    Timeouts {
        ready: Duration::from_secs(10),
        stop: Duration::from_secs(2),
    }
}

fn up(cfg: LabConfig) -> Result<LabGuard, LabError> {
    Lab::up_with(cfg, timeouts()).map(LabGuard::new)
}

fn lab_namespaces(name: &str) -> Vec<String> {
    let prefix = format!("sp-{name}-");
    netns::list()
        .expect("list namespaces")
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Running (a zombie of a pid 1 that does not reap counts as gone).
fn pid_alive(pid: u32) -> bool {
    process::stat(pid).is_some_and(|s| s.state != 'Z')
}

/// Session id of a process.
fn session_of(pid: u32) -> i64 {
    process::stat(pid).expect("process exists").session.into()
}

fn sv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn assert_clean(name: &str, state_dir: &Path, pids: &[u32]) {
    assert_eq!(
        lab_namespaces(name),
        Vec::<String>::new(),
        "namespaces left"
    );
    assert!(
        !state_dir.exists(),
        "state dir left: {}",
        state_dir.display()
    );
    for pid in pids {
        assert!(!pid_alive(*pid), "agent pid {pid} survived down");
    }
}

#[test]
fn lab_lifecycle_addressing_and_cleanup() {
    require_privileged!();
    let fx = fixture();
    let name = unique_name('t');
    let mut lab = up(config(&fx, &name, 3)).unwrap();

    // Namespaces.
    let mut want: Vec<String> = ["h1", "h2", "h3", "out", "sw"]
        .iter()
        .map(|s| format!("sp-{name}-{s}"))
        .collect();
    want.sort();
    let mut have = lab_namespaces(&name);
    have.sort();
    assert_eq!(have, want);
    assert_eq!(lab.outside_netns(), format!("sp-{name}-out"));

    // Hosts, addresses, agents' command lines and namespaces.
    let hosts = lab.hosts().to_vec();
    assert_eq!(hosts.len(), 3);
    for h in &hosts {
        let number = h.index + 1;
        assert_eq!(h.name, format!("host{number}"));
        assert_eq!(h.netns, format!("sp-{name}-h{number}"));
        assert_eq!(h.underlay_ip.octets(), [198, 18, 0, 10 + number as u8]);
        let log = std::fs::read_to_string(&h.log).unwrap();
        let args = log.lines().find(|l| l.starts_with("ARGS: ")).unwrap();
        let expected = format!(
            "agent{} --iface eth0 --data-dir {} --socket {} --docker-plugin off --cluster {name} --node-name host{number} --datapath linux",
            if number == 1 { " --bootstrap" } else { "" },
            h.data_dir.display(),
            h.socket.display()
        );
        assert_eq!(args, format!("ARGS: {expected}"), "host{number}");
        assert!(
            log.contains(&format!("inet {}/24", h.underlay_ip)),
            "agent of host{number} did not run in its namespace: {log}"
        );
        assert!(log.contains("BOOTSTRAP_ENV: unset"), "{log}");
        let pid = h.agent_pid.unwrap();
        assert!(pid_alive(pid));
        assert_eq!(
            session_of(pid),
            i64::from(pid),
            "agent not in its own session"
        );
    }

    // Everyone reaches everyone on the underlay, and the outside world.
    let mut targets: Vec<PingTarget> = hosts
        .iter()
        .map(|h| PingTarget {
            label: h.name.clone(),
            netns: h.netns.clone(),
            ip: IpAddr::V4(h.underlay_ip),
        })
        .collect();
    targets.push(PingTarget {
        label: "outside".into(),
        netns: lab.outside_netns(),
        ip: IpAddr::V4(GATEWAY_IP),
    });
    let m = ping_matrix_with(&targets, Duration::from_secs(2));
    assert!(m.mismatches(|_, _| true).is_empty(), "\n{m}");
    // Beyond the gateway.
    assert!(ping(&hosts[0].netns, IpAddr::V4(OUTSIDE_REMOTE_IP)));

    // exec: in the host's namespace, with SOCKETPLANE_SOCKET.
    let out = lab
        .exec(
            1,
            &sv(&[
                "sh",
                "-c",
                "echo $SOCKETPLANE_SOCKET; ip -4 -o addr show dev eth0",
            ]),
        )
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&hosts[1].socket.display().to_string()),
        "{text}"
    );
    assert!(text.contains("198.18.0.12/24"), "{text}");
    assert_eq!(lab.host_by_name("host2").unwrap().index, 1);
    assert!(matches!(
        lab.exec(3, &sv(&["true"])),
        Err(LabError::UnknownHost(_))
    ));

    // State saved and loadable by a later process.
    let loaded = Lab::load(&fx.state_dir).unwrap();
    assert_eq!(loaded.hosts(), lab.hosts());
    assert_eq!(loaded.name(), name);

    // KILL and restart an agent.
    let old = hosts[1].agent_pid.unwrap();
    lab.stop_agent(1, Signal::SIGKILL).unwrap();
    assert!(!pid_alive(old));
    assert!(!lab.agent_running(1));
    assert_eq!(lab.host(1).unwrap().agent_pid, None);
    lab.start_agent(1, false).unwrap();
    let new = lab.host(1).unwrap().agent_pid.unwrap();
    assert_ne!(new, old);
    assert!(lab.agent_running(1));
    assert!(matches!(
        lab.start_agent(1, false),
        Err(LabError::AgentRunning { .. })
    ));

    // TERM an agent: it exits (and removes its socket).
    let third = hosts[2].agent_pid.unwrap();
    lab.stop_agent(2, Signal::SIGTERM).unwrap();
    assert!(!pid_alive(third));
    assert!(!hosts[2].socket.exists());
    lab.stop_agent(2, Signal::SIGTERM).unwrap(); // idempotent

    // A later host.
    let h4 = lab.add_host().unwrap();
    assert_eq!(h4.index, 3);
    assert_eq!(h4.name, "host4");
    assert_eq!(h4.underlay_ip.to_string(), "198.18.0.14");
    let log = std::fs::read_to_string(&h4.log).unwrap();
    assert!(!log.contains("--bootstrap"), "{log}");
    assert!(ping(&h4.netns, IpAddr::V4(hosts[0].underlay_ip)));

    // Workloads.
    let path = lab.add_workload(0, "wa").unwrap();
    assert_eq!(path, format!("/run/netns/sp-{name}-wa"));
    assert!(Path::new(&path).exists());
    let out = lab
        .workload_exec("wa", &sv(&["ip", "-o", "link", "show", "lo"]))
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("UP"),
        "{out:?}"
    );
    assert!(lab.add_workload(0, "wa").is_err());
    assert!(lab.add_workload(0, "h2").is_err());
    assert!(lab.add_workload(0, "Bad").is_err());
    assert!(lab.add_workload(7, "wz").is_err());
    // A workload with a stray process; down must kill it.
    let sleeper = Command::new("ip")
        .args(["netns", "exec", &format!("sp-{name}-wa"), "sleep", "600"])
        .spawn()
        .unwrap();
    let sleeper_pid = sleeper.id();
    lab.add_workload(1, "wb").unwrap();
    lab.remove_workload("wb").unwrap();
    assert!(!Path::new(&format!("/run/netns/sp-{name}-wb")).exists());

    let pids: Vec<u32> = lab.hosts().iter().filter_map(|h| h.agent_pid).collect();
    assert_eq!(pids.len(), 3); // host3's agent is stopped
    lab.down().unwrap();
    let mut sleeper = sleeper;
    let _ = sleeper.wait();
    assert!(!pid_alive(sleeper_pid));
    assert_clean(&name, &fx.state_dir, &pids);
}

#[test]
fn term_is_escalated_to_kill_and_down_from_a_loaded_state() {
    require_privileged!();
    let fx = fixture();
    let name = unique_name('t');
    let mut cfg = config(&fx, &name, 2);
    cfg.agent_args = sv(&["--fake-ignore-term"]);
    let mut lab = up(cfg).unwrap();
    let pid1 = lab.host(0).unwrap().agent_pid.unwrap();
    lab.stop_agent(0, Signal::SIGTERM).unwrap();
    assert!(
        !pid_alive(pid1),
        "SIGTERM-ignoring agent survived stop_agent"
    );

    // `lab down` in a "later process": from the saved state only.
    let pid2 = lab.host(1).unwrap().agent_pid.unwrap();
    let _ = lab.into_inner();
    let loaded = Lab::load(&fx.state_dir).unwrap();
    loaded.down().unwrap();
    assert_clean(&name, &fx.state_dir, &[pid1, pid2]);
}

#[test]
fn failing_agent_reports_its_log_and_leaves_nothing() {
    require_privileged!();
    let fx = fixture();
    let name = unique_name('t');
    let mut cfg = config(&fx, &name, 2);
    cfg.agent_args = sv(&["--fake-fail"]);
    let err = Lab::up_with(cfg, timeouts()).unwrap_err();
    match &err {
        LabError::AgentExited { host, log_tail, .. } => {
            assert_eq!(host, "host1");
            assert!(log_tail.contains("boom, failing on purpose"), "{err}");
        }
        other => panic!("unexpected error: {other}"),
    }
    assert_clean(&name, &fx.state_dir, &[]);

    let name = unique_name('t');
    let mut cfg = config(&fx, &name, 1);
    cfg.agent_args = sv(&["--fake-never-ready"]);
    let quick = Timeouts {
        ready: Duration::from_millis(1500),
        ..timeouts()
    };
    let err = Lab::up_with(cfg, quick).unwrap_err();
    match &err {
        LabError::AgentNotReady { log_tail, .. } => {
            assert!(log_tail.contains("READY"), "{err}");
        }
        other => panic!("unexpected error: {other}"),
    }
    assert_clean(&name, &fx.state_dir, &[]);
}

#[test]
fn refuses_a_second_lab_of_the_same_name() {
    require_privileged!();
    let fx = fixture();
    let name = unique_name('t');
    let lab = up(config(&fx, &name, 1)).unwrap();
    let mut cfg = config(&fx, &name, 1);
    let err = Lab::up(cfg.clone()).unwrap_err();
    assert!(matches!(err, LabError::AlreadyExists(_)), "{err}");
    cfg.state_dir = fx.state_dir.with_file_name("other-state");
    let err = Lab::up(cfg).unwrap_err();
    assert!(matches!(err, LabError::AlreadyExists(_)), "{err}");
    // The first lab is untouched.
    assert!(lab.agent_running(0));
    assert_eq!(lab_namespaces(&name).len(), 3);
    lab.down().unwrap();
    assert_clean(&name, &fx.state_dir, &[]);
}

/// Env vars for the helper below (run as a separate process).
const HELPER_NAME: &str = "SOCKETPLANE_LAB_TEST_HELPER_NAME";
const HELPER_STATE: &str = "SOCKETPLANE_LAB_TEST_HELPER_STATE";
const HELPER_AGENT: &str = "SOCKETPLANE_LAB_TEST_HELPER_AGENT";

/// Not a test by itself: `lab up` in a child process that then exits.
#[test]
#[ignore = "helper for agents_survive_the_process_that_started_them"]
fn helper_lab_up_and_exit() {
    let (Ok(name), Ok(state), Ok(agent)) = (
        std::env::var(HELPER_NAME),
        std::env::var(HELPER_STATE),
        std::env::var(HELPER_AGENT),
    ) else {
        return;
    };
    let mut cfg = LabConfig::new(&name, 2, agent);
    cfg.state_dir = state.into();
    Lab::up_with(cfg, timeouts()).unwrap();
}

#[test]
fn agents_survive_the_process_that_started_them() {
    require_privileged!();
    let fx = fixture();
    let name = unique_name('t');
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_lab_up_and_exit",
            "--ignored",
            "--nocapture",
        ])
        .env(HELPER_NAME, &name)
        .env(HELPER_STATE, &fx.state_dir)
        .env(HELPER_AGENT, &fx.agent)
        .output()
        .unwrap();
    // Whatever happens next, remove the lab.
    struct Purge<'a>(&'a str, &'a Path);
    impl Drop for Purge<'_> {
        fn drop(&mut self) {
            let _ = Lab::purge(self.0, self.1);
        }
    }
    let _purge = Purge(&name, &fx.state_dir);
    assert!(
        out.status.success(),
        "helper failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let lab = Lab::load(&fx.state_dir).unwrap();
    let pids: Vec<u32> = lab.hosts().iter().filter_map(|h| h.agent_pid).collect();
    assert_eq!(pids.len(), 2);
    // Still running a moment after their parent is gone.
    std::thread::sleep(Duration::from_millis(300));
    for (i, pid) in pids.iter().enumerate() {
        assert!(pid_alive(*pid), "agent {pid} died with its parent");
        assert!(lab.agent_running(i));
    }
    assert!(wait_until(Duration::from_secs(5), || {
        ping(
            &lab.host(0).unwrap().netns,
            IpAddr::V4(lab.host(1).unwrap().underlay_ip),
        )
    }));
    lab.down().unwrap();
    assert_clean(&name, &fx.state_dir, &pids);
}
