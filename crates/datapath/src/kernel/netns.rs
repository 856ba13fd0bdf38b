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
