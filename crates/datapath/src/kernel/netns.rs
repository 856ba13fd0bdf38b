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

use super::nl;
use crate::error::{DatapathError, Result};

fn ns_err(path: &Path, action: &'static str, source: io::Error) -> DatapathError {
    DatapathError::Netns {
        path: path.to_owned(),
        action,
        source,
    }
}

/// Opens a network namespace file (for `IFLA_NET_NS_FD`).
pub(crate) fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| ns_err(path, "open", e))
}

/// Runs `job` with a netlink handle inside the namespace at `path`.
pub(crate) async fn run_in<T, F, Fut>(path: &Path, job: F) -> Result<T>
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
                let file = open(&path)?;
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

/// Why `path` may not be plumbed as a workload's network namespace: it must
/// be a network namespace (nsfs, type `CLONE_NEWNET`) and none of the host's
/// own (this thread's, this process's, init's). `None`: it may.
pub(crate) fn unfit_workload_ns(path: &Path) -> Option<String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return Some(format!("netns {}: cannot open: {e}", path.display())),
    };
    let is_nsfs = nix::sys::statfs::fstatfs(&file)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC);
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the open fd.
    let kind = is_nsfs.then(|| unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) });
    if kind != Some(libc::CLONE_NEWNET) {
        return Some(format!(
            "netns {} is not a network namespace",
            path.display()
        ));
    }
    let id = |m: std::fs::Metadata| (m.dev(), m.ino());
    let Ok(this) = file.metadata().map(id) else {
        return Some(format!("netns {}: cannot stat", path.display()));
    };
    for host in [
        "/proc/thread-self/ns/net",
        "/proc/self/ns/net",
        "/proc/1/ns/net",
    ] {
        match std::fs::metadata(host).map(id) {
            Ok(h) if h == this => {
                return Some(format!(
                    "netns {} is the host's own network namespace ({host})",
                    path.display()
                ))
            }
            Ok(_) => {}
            // init's may be hidden (a sandbox, a PID namespace); our own
            // must be readable, else refuse rather than risk the host's.
            Err(_) if host.starts_with("/proc/1/") => {}
            Err(e) => return Some(format!("cannot compare with {host}: {e}")),
        }
    }
    None
}
