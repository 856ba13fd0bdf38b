//! `socketplane agent start | stop | logs` without systemd: a background
//! agent in a network namespace of the test's own, its pid and log beside
//! its socket.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_socketplane");

struct Netns {
    name: String,
    dir: PathBuf,
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("sp.pid")) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &[&str]) -> Output {
    Command::new(cmd[0]).args(&cmd[1..]).output().expect("run")
}

fn sp(ns: &Netns, args: &[&str]) -> Output {
    let socket = ns.dir.join("sp.sock");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, BIN, "--socket"])
        .arg(&socket)
        .args(args);
    cmd.output().expect("run socketplane")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A namespace of the test's own with an underlay interface `u0`.
fn host_netns(tag: &str) -> Netns {
    let name = format!("sp{tag}{}", std::process::id());
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let ns = Netns {
        name: name.clone(),
        dir: dir.clone(),
    };
    assert!(run(&["ip", "netns", "add", &name]).status.success());
    for cmd in [
        vec![
            "ip", "netns", "exec", &name, "ip", "link", "set", "lo", "up",
        ],
        vec![
            "ip", "netns", "exec", &name, "ip", "link", "add", "u0", "type", "veth", "peer",
            "name", "u1",
        ],
        vec![
            "ip",
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            "198.18.200.1/24",
            "dev",
            "u0",
        ],
        vec![
            "ip", "netns", "exec", &name, "ip", "link", "set", "u0", "up",
        ],
        vec![
            "ip", "netns", "exec", &name, "ip", "link", "set", "u1", "up",
        ],
    ] {
        let o = run(&cmd);
        assert!(o.status.success(), "{cmd:?}: {}", text(&o));
    }
    ns
}

#[test]
fn agent_start_stop_logs_in_the_background() {
    let ns = host_netns("ac");
    let dir = ns.dir.clone();
    let data = dir.join("data");
    let start = sp(
        &ns,
        &[
            "agent",
            "start",
            "--bootstrap",
            "--iface",
            "u0",
            "--data-dir",
            data.to_str().unwrap(),
            "--no-mdns",
            "--docker-plugin",
            "off",
            "--cluster",
            "cli",
        ],
    );
    assert!(start.status.success(), "agent start: {}", text(&start));
    assert!(text(&start).contains("Started the agent"));
    assert!(Path::new(&dir.join("sp.pid")).exists());

    let again = sp(&ns, &["agent", "start", "--iface", "u0"]);
    assert!(!again.status.success());
    assert!(text(&again).contains("already running"), "{}", text(&again));

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = sp(&ns, &["info", "-o", "json"]);
        if info.status.success() && text(&info).contains("\"ready\": true") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agent never became ready: {}",
            text(&info)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = sp(&ns, &["agent", "logs"]);
    assert!(logs.status.success());
    assert!(
        text(&logs).contains("The agent is ready"),
        "{}",
        text(&logs)
    );

    let stop = sp(&ns, &["agent", "stop"]);
    assert!(stop.status.success(), "agent stop: {}", text(&stop));
    assert!(!dir.join("sp.sock").exists(), "socket removed on stop");
    let stop = sp(&ns, &["agent", "stop"]);
    assert!(!stop.status.success());
    assert!(text(&stop).contains("not running"), "{}", text(&stop));
    let down = sp(&ns, &["network", "list"]);
    assert!(!down.status.success());
    assert!(text(&down).contains("cannot reach the SocketPlane agent"));
}

#[test]
fn install_and_uninstall_under_a_root() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    let out = Command::new(BIN)
        .args(["install", "unattended", "--root", r])
        .env("BOOTSTRAP", "true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let unit = std::fs::read_to_string(root.path().join("etc/systemd/system/socketplane.service"))
        .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/socketplane agent"));
    let defaults = std::fs::read_to_string(root.path().join("etc/default/socketplane")).unwrap();
    assert!(defaults.contains("BOOTSTRAP=true"));
    assert!(root.path().join("usr/local/bin/socketplane").exists());

    let bad = Command::new(BIN)
        .args(["install", "sideways", "--root", r])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(text(&bad).contains("unknown install mode"));

    let out = Command::new(BIN)
        .args(["uninstall", "--root", r])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for f in [
        "etc/systemd/system/socketplane.service",
        "etc/default/socketplane",
        "usr/local/bin/socketplane",
    ] {
        assert!(!root.path().join(f).exists(), "{f} must be removed");
    }
    let again = Command::new(BIN)
        .args(["uninstall", "--root", r])
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(text(&again).contains("was not installed"));
}

#[test]
fn datapath_ovs_without_open_vswitch_is_a_clear_error_and_auto_falls_back() {
    let ns = host_netns("ao");
    let data = ns.dir.join("data");
    let missing = ns.dir.join("no-ovs/db.sock");
    let common = [
        "--iface",
        "u0",
        "--no-mdns",
        "--docker-plugin",
        "off",
        "--bootstrap",
        "--cluster",
        "ovs",
    ];
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, BIN, "--socket"])
        .arg(ns.dir.join("sp.sock"))
        .args(["agent", "--datapath", "ovs", "--ovsdb"])
        .arg(&missing)
        .arg("--data-dir")
        .arg(&data)
        .args(common);
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "must not start without OVS");
    let err = text(&out);
    assert!(
        err.contains("Open vSwitch") && err.contains("no-ovs/db.sock"),
        "{err}"
    );

    let start = sp(
        &ns,
        &[
            "agent",
            "start",
            "--datapath",
            "auto",
            "--ovsdb",
            missing.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--iface",
            "u0",
            "--no-mdns",
            "--docker-plugin",
            "off",
            "--bootstrap",
            "--cluster",
            "ovs",
        ],
    );
    assert!(start.status.success(), "{}", text(&start));
    let info = sp(&ns, &["info", "-o", "json"]);
    assert!(
        text(&info).contains("\"datapath\": \"linux\""),
        "{}",
        text(&info)
    );
    let logs = text(&sp(&ns, &["agent", "logs"]));
    assert!(logs.contains("using the Linux datapath"), "{logs}");
    assert!(sp(&ns, &["agent", "stop"]).status.success());
}
