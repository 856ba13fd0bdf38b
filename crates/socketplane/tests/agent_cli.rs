//! `socketplane agent start | stop | logs` without systemd: a background
//! agent in a network namespace of the test's own, its pid and log beside
//! its socket.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use socketplane_testkit::{netns, require_privileged, unique_name, wait_until, Netns};

const BIN: &str = env!("CARGO_BIN_EXE_socketplane");

/// A namespace of the test's own (deleted on drop with the agent running
/// in it) and a directory for the agent's socket, pid, log and data.
struct Host {
    ns: Netns,
    dir: tempfile::TempDir,
}

impl Host {
    fn name(&self) -> &str {
        self.ns.name()
    }
}

fn sp(host: &Host, args: &[&str]) -> Output {
    let socket = host.dir.path().join("sp.sock");
    let mut cmd = netns::command(host.name(), &[BIN, "--socket"]);
    cmd.arg(&socket).args(args);
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
fn host_netns(tag: char) -> Host {
    let ns = Netns::create(&format!("sp{}", unique_name(tag))).expect("namespace");
    let dir = tempfile::tempdir().unwrap();
    for cmd in [
        vec![
            "ip", "link", "add", "u0", "type", "veth", "peer", "name", "u1",
        ],
        vec!["ip", "addr", "add", "198.18.200.1/24", "dev", "u0"],
        vec!["ip", "link", "set", "u0", "up"],
        vec!["ip", "link", "set", "u1", "up"],
    ] {
        ns.exec(&cmd).unwrap_or_else(|e| panic!("{e}"));
    }
    Host { ns, dir }
}

#[test]
fn agent_start_stop_logs_in_the_background() {
    require_privileged!();
    let ns = host_netns('c');
    let dir = ns.dir.path().to_path_buf();
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

    let mut info = None;
    let ready = wait_until(Duration::from_secs(20), || {
        let out = sp(&ns, &["info", "-o", "json"]);
        let ok = out.status.success() && text(&out).contains("\"ready\": true");
        info = Some(out);
        ok
    });
    assert!(
        ready,
        "agent never became ready: {}",
        info.as_ref().map(text).unwrap_or_default()
    );
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
    require_privileged!();
    let ns = host_netns('o');
    let data = ns.dir.path().join("data");
    let missing = ns.dir.path().join("no-ovs/db.sock");
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
    let mut cmd = netns::command(ns.name(), &[BIN, "--socket"]);
    cmd.arg(ns.dir.path().join("sp.sock"))
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
