//! Named network namespaces (`ip netns`): create, enter, run commands in,
//! list what is in them, and delete them with everything running inside.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;

use crate::cmd;
use crate::error::{io_err, KitError, Result};
use crate::process;

/// Where `ip netns` keeps its namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// How long processes of a namespace get to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// The path of namespace `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Whether namespace `name` exists.
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Names of all named namespaces.
pub fn list() -> Result<Vec<String>> {
    let dir = match std::fs::read_dir(NETNS_DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("cannot list {NETNS_DIR}"))(e)),
    };
    let mut names = Vec::new();
    for entry in dir {
        let entry = entry.map_err(io_err(format!("cannot list {NETNS_DIR}")))?;
        if let Ok(n) = entry.file_name().into_string() {
            names.push(n);
        }
    }
    names.sort();
    Ok(names)
}

/// Create namespace `name` with `lo` up. On failure nothing is left.
pub fn add(name: &str) -> Result<()> {
    cmd::ip(&["netns", "add", name])?;
    if let Err(e) = cmd::ip(&["-n", name, "link", "set", "lo", "up"]) {
        let _ = cmd::ip(&["netns", "del", name]);
        return Err(e);
    }
    Ok(())
}

/// Kill every process in namespace `name` (SIGKILL), then delete it. A
/// namespace that does not exist is fine.
pub fn delete(name: &str) -> Result<()> {
    if !exists(name) {
        return Ok(());
    }
    kill_processes(name)?;
    cmd::ip(&["netns", "del", name]).map(|_| ())
}

/// Pids of the processes in namespace `name`.
pub fn pids(name: &str) -> Result<Vec<u32>> {
    let out = cmd::ip(&["netns", "pids", name])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// SIGKILL every process in namespace `name` (not this process) and wait
/// for them to go.
pub fn kill_processes(name: &str) -> Result<()> {
    let left = process::kill_all(&pids(name)?, Signal::SIGKILL, KILL_WAIT);
    if left.is_empty() {
        Ok(())
    } else {
        Err(KitError::Command {
            cmd: format!("kill -9 {left:?}"),
            detail: format!("processes in namespace {name} survived SIGKILL"),
        })
    }
}

/// A command that runs `argv` inside a namespace given by name (as for
/// `ip netns exec`) or by path (a path under [`NETNS_DIR`] is turned into
/// its name; any other is entered with `nsenter --net=PATH`).
pub fn command<S: AsRef<str>>(netns: &str, argv: &[S]) -> Command {
    let name = netns
        .strip_prefix(NETNS_DIR)
        .or_else(|| netns.strip_prefix("/var/run/netns"))
        .map(|rest| rest.trim_start_matches('/'))
        .filter(|rest| !rest.is_empty() && !rest.contains('/'));
    let mut c;
    if let Some(name) = name.or((!netns.contains('/')).then_some(netns)) {
        c = Command::new("ip");
        c.args(["netns", "exec", name]);
    } else {
        c = Command::new("nsenter");
        c.arg(format!("--net={netns}")).arg("--");
    }
    c.args(argv.iter().map(|a| a.as_ref()));
    c
}

/// Run `argv` in namespace `netns`, checked: an error unless it exits 0.
pub fn exec<S: AsRef<str>>(netns: &str, argv: &[S]) -> Result<Output> {
    cmd::checked(&mut command(netns, argv))
}

/// Move the calling thread into namespace `name` (for the rest of its life).
pub fn enter(name: &str) -> Result<()> {
    let p = path(name);
    let file = File::open(&p).map_err(io_err(format!("cannot open {}", p.display())))?;
    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| KitError::Io {
        context: format!("cannot enter {}", p.display()),
        source: e.into(),
    })
}

/// Run `f` on a new thread inside namespace `name` and return its result.
/// Panics (in the test) if the namespace cannot be entered or `f` panics.
pub fn in_ns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    match spawn_in_ns(name, f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Start `f` on a new thread inside namespace `name`.
pub fn spawn_in_ns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let name = name.to_string();
    std::thread::spawn(move || {
        if let Err(e) = enter(&name) {
            panic!("{e}");
        }
        f()
    })
}

/// Names of the links in namespace `name`. An unreadable dump is an error.
pub fn links(name: &str) -> Result<Vec<String>> {
    let v = cmd::ip_json(Some(name), &["link", "show"])?;
    let list = v.as_array().ok_or_else(|| KitError::Output {
        cmd: format!("ip -j -n {name} link show"),
        detail: format!("not a list: {v}"),
    })?;
    let mut names = Vec::new();
    for link in list {
        let n = link["ifname"].as_str().ok_or_else(|| KitError::Output {
            cmd: format!("ip -j -n {name} link show"),
            detail: format!("a link without ifname: {link}"),
        })?;
        names.push(n.to_string());
    }
    names.sort();
    Ok(names)
}

/// Whether link `link` exists in namespace `name`: `ip link show` exits 0
/// for yes and fails saying the device does not exist for no; any other
/// failure (no such namespace, no `ip`) is an error, not a "no".
pub fn link_exists(name: &str, link: &str) -> Result<bool> {
    let mut c = Command::new("ip");
    c.args(["-n", name, "link", "show", "dev", link]);
    let out = c
        .output()
        .map_err(io_err(format!("cannot run ip -n {name} link show")))?;
    if out.status.success() {
        return Ok(true);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("does not exist") {
        return Ok(false);
    }
    Err(KitError::Command {
        cmd: format!("ip -n {name} link show dev {link}"),
        detail: format!("{}: {}", out.status, err.trim()),
    })
}

/// A namespace this value owns: deleted (with everything running in it)
/// when dropped, unless released with [`Netns::into_name`].
#[derive(Debug)]
pub struct Netns {
    name: String,
    owned: bool,
}

impl Netns {
    /// Create namespace `name` with `lo` up.
    pub fn create(name: &str) -> Result<Netns> {
        add(name)?;
        Ok(Netns {
            name: name.to_string(),
            owned: true,
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's path (for `--netns`, `nsenter`).
    pub fn path(&self) -> PathBuf {
        path(&self.name)
    }

    /// A command that runs `argv` inside the namespace.
    pub fn command<S: AsRef<str>>(&self, argv: &[S]) -> Command {
        command(&self.name, argv)
    }

    /// Run `argv` inside, checked.
    pub fn exec<S: AsRef<str>>(&self, argv: &[S]) -> Result<Output> {
        exec(&self.name, argv)
    }

    /// Stop owning the namespace: it outlives this value.
    pub fn into_name(mut self) -> String {
        self.owned = false;
        std::mem::take(&mut self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.owned {
            if let Err(e) = delete(&self.name) {
                eprintln!("cannot delete network namespace {}: {e}", self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_by_name_and_by_path() {
        let show = |c: &Command| {
            std::iter::once(c.get_program())
                .chain(c.get_args())
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            show(&command("sp-a-h1", &["true"])),
            "ip netns exec sp-a-h1 true"
        );
        assert_eq!(
            show(&command("/run/netns/sp-a-h1", &["true"])),
            "ip netns exec sp-a-h1 true"
        );
        assert_eq!(
            show(&command("/var/run/netns/x", &["true"])),
            "ip netns exec x true"
        );
        assert_eq!(
            show(&command("/proc/1/ns/net", &["true"])),
            "nsenter --net=/proc/1/ns/net -- true"
        );
    }
}
