//! The lab's own etcd (with `StoreKind::Etcd`): one member in namespace
//! `sp-NAME-etcd`, plugged into the switch at [`ETCD_IP`], so every host
//! reaches it over the underlay. Its data lives in `STATE_DIR/etcd`; it
//! dies with its namespace at teardown. A secure etcd serves clients only
//! over TLS (a CA and server certificate made with `openssl`) and with
//! `auth enable`: user `root` for the lab, user `socketplane` with
//! read-write on the cluster's prefix for the agents.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
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
pub(crate) fn start(ns: &str, state_dir: &Path, secure: bool, ready: Duration) -> Result<()> {
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
    let scheme = if secure { "https" } else { "http" };
    let client = format!("{scheme}://{ETCD_IP}:{ETCD_CLIENT_PORT}");
    let peer = "http://127.0.0.1:2380".to_string();
    let data = d.join("data").to_string_lossy().into_owned();
    let mut argv: Vec<String> = [
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
    if secure {
        make_secrets(state_dir)?;
        let c = certs(state_dir);
        for (flag, file) in [("--cert-file", "server.pem"), ("--key-file", "server.key")] {
            argv.push(flag.into());
            argv.push(c.join(file).to_string_lossy().into_owned());
        }
    }
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
    let context = ssl_context(state_dir, secure);
    loop {
        // python3 rather than curl: the test command installs it anyway.
        let script = format!(
            "import ssl, urllib.request; {context}; print(urllib.request.urlopen({health:?}, timeout=1, context=ctx).read().decode())"
        );
        let ok = netns::command(ns, &["python3", "-c", &script])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout.starts_with(br#"{"health":"true""#));
        if ok {
            return match secure {
                true => enable_auth(ns, state_dir),
                false => Ok(()),
            };
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
pub(crate) fn dump(ns: &str, state_dir: &Path, secure: bool) -> Result<BTreeMap<String, String>> {
    let scheme = if secure { "https" } else { "http" };
    let context = ssl_context(state_dir, secure);
    let auth = match secure {
        true => format!(
            "headers = {{'Authorization': json.load(urllib.request.urlopen(urllib.request.Request('{scheme}://{ETCD_IP}:{ETCD_CLIENT_PORT}/v3/auth/authenticate', data=json.dumps({{'name': 'root', 'password': open({:?}).read()}}).encode()), timeout=5, context=ctx))['token']}}",
            password_file(state_dir, "root").display()
        ),
        false => "headers = {}".into(),
    };
    let script = format!(
        r#"
import base64, json, ssl, urllib.request
{context}
{auth}
req = urllib.request.Request("{scheme}://{ETCD_IP}:{ETCD_CLIENT_PORT}/v3/kv/range",
    data=json.dumps({{"key": "AA==", "range_end": "AA=="}}).encode(), headers=headers)
kvs = json.load(urllib.request.urlopen(req, timeout=5, context=ctx)).get("kvs", [])
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

fn certs(state_dir: &Path) -> PathBuf {
    dir(state_dir).join("certs")
}

/// The file that holds `user`'s etcd password (0600).
fn password_file(state_dir: &Path, user: &str) -> PathBuf {
    dir(state_dir).join(format!("{user}.password"))
}

/// The agents' flags for a secure etcd.
pub(crate) fn secure_agent_args(state_dir: &Path) -> Vec<String> {
    vec![
        "--etcd-ca".into(),
        certs(state_dir)
            .join("ca.pem")
            .to_string_lossy()
            .into_owned(),
        "--etcd-user".into(),
        "socketplane".into(),
        "--etcd-password-file".into(),
        password_file(state_dir, "socketplane")
            .to_string_lossy()
            .into_owned(),
    ]
}

/// Python that sets `ctx`: the lab CA's context, or none for plain HTTP.
fn ssl_context(state_dir: &Path, secure: bool) -> String {
    match secure {
        true => format!(
            "ctx = ssl.create_default_context(cafile={:?})",
            certs(state_dir).join("ca.pem").display()
        ),
        false => "ctx = None".into(),
    }
}

/// A CA and a server certificate for [`ETCD_IP`], and random passwords for
/// `root` and `socketplane`.
fn make_secrets(state_dir: &Path) -> Result<()> {
    let d = certs(state_dir);
    fs::create_dir_all(&d).map_err(io_err(format!("cannot create {}", d.display())))?;
    let openssl = |args: &[&str]| -> Result<()> {
        let mut c = std::process::Command::new("openssl");
        c.args(args).current_dir(&d);
        socketplane_testkit::cmd::checked(&mut c)
            .map(|_| ())
            .map_err(|e| LabError::Command {
                cmd: format!("openssl {}", args.join(" ")),
                detail: e.to_string(),
            })
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=socketplane lab etcd CA",
            ],
        ]
        .concat(),
    )?;
    openssl(
        &[
            &["req"],
            &ec[..],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=lab etcd",
            ],
        ]
        .concat(),
    )?;
    let ext = d.join("server.ext");
    fs::write(&ext, format!("subjectAltName=IP:{ETCD_IP},IP:127.0.0.1\n"))
        .map_err(io_err(format!("cannot write {}", ext.display())))?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ])?;
    for user in ["root", "socketplane"] {
        let p = password_file(state_dir, user);
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&p)
            .map_err(io_err(format!("cannot create {}", p.display())))?;
        std::io::Write::write_all(&mut f, crate::config::random_token().as_bytes())
            .map_err(io_err(format!("cannot write {}", p.display())))?;
    }
    Ok(())
}

/// Users `root` and `socketplane` (read-write on `/socketplane/`), then
/// `auth enable`, through etcd's JSON gateway.
fn enable_auth(ns: &str, state_dir: &Path) -> Result<()> {
    let script = format!(
        r#"
import base64, json, ssl, urllib.request
{context}
def call(path, body):
    req = urllib.request.Request("https://{ETCD_IP}:{ETCD_CLIENT_PORT}/v3/" + path, data=json.dumps(body).encode())
    return json.load(urllib.request.urlopen(req, timeout=5, context=ctx))
b64 = lambda s: base64.b64encode(s.encode()).decode()
call("auth/role/add", {{"name": "root"}})
call("auth/user/add", {{"name": "root", "password": open({root:?}).read()}})
call("auth/user/grant", {{"user": "root", "role": "root"}})
call("auth/role/add", {{"name": "socketplane"}})
call("auth/role/grant", {{"name": "socketplane", "perm": {{"permType": "READWRITE", "key": b64("/socketplane/"), "range_end": b64("/socketplane0")}}}})
call("auth/user/add", {{"name": "socketplane", "password": open({agent:?}).read()}})
call("auth/user/grant", {{"user": "socketplane", "role": "socketplane"}})
call("auth/enable", {{}})
"#,
        context = ssl_context(state_dir, true),
        root = password_file(state_dir, "root").display(),
        agent = password_file(state_dir, "socketplane").display(),
    );
    netns::exec(ns, &["python3", "-c", &script])?;
    Ok(())
}
