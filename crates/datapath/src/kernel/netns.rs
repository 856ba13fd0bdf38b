//! Running netlink work inside another network namespace.
//!
//! `setns` changes the namespace of the calling thread only, and tokio moves
//! tasks between threads, so namespace work runs on a dedicated short-lived
//! OS thread: it enters the namespace, opens its own netlink socket on a
//! current-thread runtime, runs the job and exits (the namespace leaves with
//! the thread).

use std::fs::File;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use rtnetlink::Handle;
use socketplane_api::NetnsId;

use super::nl;
use crate::error::{DatapathError, Result};

fn ns_err(path: &Path, action: &'static str, source: io::Error) -> DatapathError {
    DatapathError::Netns {
        path: path.to_owned(),
        action,
        source,
    }
}

/// Opens a namespace file without side effects: non-blocking, so a FIFO
/// or device put where a namespace was expected cannot hang the caller.
fn open_nonblocking(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

fn id_of(m: &std::fs::Metadata) -> NetnsId {
    use std::os::unix::fs::MetadataExt;
    NetnsId {
        dev: m.dev(),
        ino: m.ino(),
    }
}

/// Opens a network namespace file (for `IFLA_NET_NS_FD` or `setns`). With
/// `pinned`, the open file must be that namespace: the path may have come
/// to name another one since it was recorded (a reused PID).
pub(crate) fn open(path: &Path, pinned: Option<NetnsId>) -> Result<File> {
    let file = open_nonblocking(path).map_err(|e| ns_err(path, "open", e))?;
    if let Some(want) = pinned {
        let got = file
            .metadata()
            .map(|m| id_of(&m))
            .map_err(|e| ns_err(path, "stat", e))?;
        if got != want {
            return Err(ns_err(
                path,
                "verify",
                io::Error::other(format!("it names namespace {got}, not the attached {want}")),
            ));
        }
    }
    Ok(file)
}

/// Runs `job` with a netlink handle inside the namespace at `path`.
/// With `pinned`, only if the path still names that namespace.
pub(crate) async fn run_in<T, F, Fut>(path: &Path, pinned: Option<NetnsId>, job: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let path: PathBuf = path.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_path = path.clone();
    std::thread::Builder::new()
        .name("sp-netns".into())
        .spawn(move || {
            let path = thread_path;
            let result = (|| {
                let file = open(&path, pinned)?;
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|errno| {
                    DatapathError::Setns {
                        path: path.clone(),
                        errno,
                    }
                })?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| ns_err(&path, "start a runtime", e))?;
                rt.block_on(async {
                    let conn = nl::connect()?;
                    job(conn.handle.clone()).await
                })
            })();
            let _ = tx.send(result);
        })
        .map_err(|e| ns_err(&path, "start a thread", e))?;
    rx.await.map_err(|_| {
        ns_err(
            &path,
            "wait for the namespace thread",
            io::Error::other("it ended without an answer"),
        )
    })?
}

/// `NS_GET_NSTYPE` (`_IO(0xb7, 0x3)`): the kind of namespace a nsfs file is.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Checks that `path` is a network namespace (nsfs, type `CLONE_NEWNET`)
/// and none of the host's own (this thread's, this process's, init's), and
/// returns its identity. The error says why it may not be used.
pub fn inspect_workload_ns(path: &Path) -> std::result::Result<NetnsId, String> {
    use std::os::fd::AsRawFd;
    let not_netns = || format!("netns {} is not a network namespace", path.display());
    // statfs before open: opening an arbitrary file (a device, /proc/kmsg)
    // can have effects; a namespace file never does.
    match nix::sys::statfs::statfs(path) {
        Ok(s) if s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC => {}
        Ok(_) => return Err(not_netns()),
        Err(e) => return Err(format!("netns {}: {}", path.display(), e.desc())),
    }
    let file = open_nonblocking(path)
        .map_err(|e| format!("netns {}: cannot open: {e}", path.display()))?;
    // Again on the open file: the path may have changed in between.
    let is_nsfs = nix::sys::statfs::fstatfs(&file)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC);
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the open fd.
    let kind = is_nsfs.then(|| unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) });
    if kind != Some(libc::CLONE_NEWNET) {
        return Err(not_netns());
    }
    let this = file
        .metadata()
        .map(|m| id_of(&m))
        .map_err(|e| format!("netns {}: cannot stat: {e}", path.display()))?;
    for host in [
        "/proc/thread-self/ns/net",
        "/proc/self/ns/net",
        "/proc/1/ns/net",
    ] {
        match std::fs::metadata(host).map(|m| id_of(&m)) {
            Ok(h) if h == this => {
                return Err(format!(
                    "netns {} is the host's own network namespace ({host})",
                    path.display()
                ))
            }
            Ok(_) => {}
            // init's may be hidden (a sandbox, a PID namespace); our own
            // must be readable, else refuse rather than risk the host's.
            Err(_) if host.starts_with("/proc/1/") => {}
            Err(e) => return Err(format!("cannot compare with {host}: {e}")),
        }
    }
    Ok(this)
}

/// Why `path` may not be plumbed as a workload's network namespace (see
/// [`inspect_workload_ns`]); with `pinned`, also when it no longer names
/// the namespace recorded at attach. `None`: it may.
pub(crate) fn unfit_workload_ns(path: &Path, pinned: Option<NetnsId>) -> Option<String> {
    match inspect_workload_ns(path) {
        Err(why) => Some(why),
        Ok(id) => match pinned {
            Some(want) if want != id => Some(format!(
                "netns {} names namespace {id}, not the attached {want} (its process is gone)",
                path.display()
            )),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socketplane_testkit::{require_privileged, unique_name, Netns};

    #[test]
    fn only_a_foreign_network_namespace_is_fit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        for (path, why) in [
            (Path::new("/proc/self/ns/mnt"), "not a network namespace"),
            (Path::new("/proc/self/ns/net"), "host's own"),
            (Path::new("/proc/thread-self/ns/net"), "host's own"),
            (Path::new("/proc/kmsg"), "not a network namespace"),
            (file.as_path(), "not a network namespace"),
            // Opening a FIFO for reading would block: it must not be opened.
            (fifo.as_path(), "not a network namespace"),
            (Path::new("/nonexistent/ns"), "No such file"),
        ] {
            let got = inspect_workload_ns(path);
            assert!(
                got.as_ref().is_err_and(|e| e.contains(why)),
                "{}: {got:?}",
                path.display()
            );
        }
    }

    #[test]
    fn a_pinned_path_must_still_name_its_namespace() {
        require_privileged!();
        let a = Netns::create(&format!("sp{}", unique_name('p'))).unwrap();
        let b = Netns::create(&format!("sp{}", unique_name('p'))).unwrap();
        let id_a = inspect_workload_ns(&a.path()).unwrap();
        let id_b = inspect_workload_ns(&b.path()).unwrap();
        assert_ne!(id_a, id_b);
        assert_eq!(unfit_workload_ns(&a.path(), Some(id_a)), None);
        assert_eq!(unfit_workload_ns(&a.path(), None), None);
        let why = unfit_workload_ns(&a.path(), Some(id_b)).unwrap();
        assert!(why.contains("not the attached"), "{why}");
        assert!(open(&a.path(), Some(id_a)).is_ok());
        assert!(open(&a.path(), Some(id_b)).is_err());
    }
}
