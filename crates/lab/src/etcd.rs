//! The lab's own etcd (with `StoreKind::Etcd`): one member in namespace
//! `sp-NAME-etcd`, plugged into the switch at [`ETCD_IP`], so every host
//! reaches it over the underlay. Its data lives in `STATE_DIR/etcd`; it
//! dies with its namespace at teardown.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use socketplane_testkit::netns;

use crate::config::{ETCD_CLIENT_PORT, ETCD_IP};
use crate::error::{io_err, LabError, Result};

/// The etcd binary (Debian package `etcd-server`).
pub const ETCD_BIN: &str = "/usr/bin/etcd";
/// The directory under the state dir that holds etcd's data and log.
pub(crate) const ETCD_DIR: &str = "etcd";
const POLL: Duration = Duration::from_millis(100);

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join(ETCD_DIR)
}

/// The log of the lab's etcd.
pub fn log_path(state_dir: &Path) -> PathBuf {
    dir(state_dir).join("etcd.log")
}

/// Start etcd in namespace `ns` (already plugged in at [`ETCD_IP`]) and
/// wait until it answers `/health`, at most `ready`.
pub(crate) fn start(ns: &str, state_dir: &Path, ready: Duration) -> Result<()> {
    if !Path::new(ETCD_BIN).exists() {
        return Err(LabError::InvalidConfig(format!(
            "{ETCD_BIN} not found: install etcd-server"
        )));
    }
    let d = dir(state_dir);
    fs::create_dir_all(&d).map_err(io_err(format!("cannot create {}", d.display())))?;
    let log_file = log_path(state_dir);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_file)
        .map_err(io_err(format!("cannot open {}", log_file.display())))?;
    let log_err = log
        .try_clone()
        .map_err(io_err(format!("cannot open {}", log_file.display())))?;
    let client = format!("http://{ETCD_IP}:{ETCD_CLIENT_PORT}");
    let peer = "http://127.0.0.1:2380".to_string();
    let data = d.join("data").to_string_lossy().into_owned();
    let argv: Vec<String> = [
        ETCD_BIN,
        "--name",
        "lab",
        "--data-dir",
        &data,
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        &format!("lab={peer}"),
        "--initial-cluster-state",
        "new",
        // Fast elections keep a fresh member's start short.
        "--heartbeat-interval",
        "10",
        "--election-timeout",
        "100",
        "--log-level",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut c = netns::command(ns, &argv);
    c.stdin(Stdio::null()).stdout(log).stderr(log_err);
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork
    // and exec. Detached like the agents: it outlives `lab up`.
    unsafe {
        c.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let child = c.spawn().map_err(|e| LabError::Command {
        cmd: format!("ip netns exec {ns} {}", argv.join(" ")),
        detail: e.to_string(),
    })?;
    drop(child);
    let started = Instant::now();
    let health = format!("{client}/health");
    loop {
        // python3 rather than curl: the test command installs it anyway.
        let script = format!(
            "import urllib.request; print(urllib.request.urlopen({health:?}, timeout=1).read().decode())"
        );
        let ok = netns::command(ns, &["python3", "-c", &script])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout.starts_with(br#"{"health":"true""#));
        if ok {
            return Ok(());
        }
        if started.elapsed() > ready {
            let log = fs::read_to_string(&log_file).unwrap_or_else(|e| e.to_string());
            return Err(LabError::Command {
                cmd: format!("ip netns exec {ns} {ETCD_BIN}"),
                detail: format!("no healthy etcd within {ready:?}; log:\n{log}"),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Every key and value in the lab's etcd, read from namespace `ns` through
/// etcd's JSON gateway (python3 decodes the base64).
pub(crate) fn dump(ns: &str) -> Result<BTreeMap<String, String>> {
    let script = format!(
        r#"
import base64, json, urllib.request
req = urllib.request.Request("http://{ETCD_IP}:{ETCD_CLIENT_PORT}/v3/kv/range",
    data=json.dumps({{"key": "AA==", "range_end": "AA=="}}).encode())
kvs = json.load(urllib.request.urlopen(req, timeout=5)).get("kvs", [])
print(json.dumps({{base64.b64decode(kv["key"]).decode("utf-8", "replace"):
    base64.b64decode(kv.get("value", "")).decode("utf-8", "replace") for kv in kvs}}))
"#
    );
    let out = netns::exec(ns, &["python3", "-c", &script])?;
    serde_json::from_slice(&out.stdout).map_err(|e| LabError::Command {
        cmd: "etcd range dump".into(),
        detail: format!("{e}: {}", String::from_utf8_lossy(&out.stdout)),
    })
}
