//! Running netlink work inside another network namespace.
//!
//! `setns` changes the namespace of the calling thread only, and tokio moves
//! tasks between threads, so namespace work runs on a dedicated short-lived
//! OS thread: it enters the namespace, opens its own netlink socket on a
//! current-thread runtime, runs the job and exits (the namespace leaves with
//! the thread).

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use rtnetlink::Handle;

use crate::{DatapathError, Result};

fn ns_err(path: &Path, message: impl Into<String>) -> DatapathError {
    DatapathError::Netns {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Opens a network namespace file (for `IFLA_NET_NS_FD`).
pub(crate) fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| ns_err(path, format!("cannot open: {e}")))
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
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| ns_err(&path, format!("setns: {e}")))?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| ns_err(&path, format!("runtime: {e}")))?;
                rt.block_on(async {
                    let (conn, handle, _) = rtnetlink::new_connection()
                        .map_err(|e| ns_err(&path, format!("netlink socket: {e}")))?;
                    let conn_task = tokio::spawn(conn);
                    let r = job(handle).await;
                    conn_task.abort();
                    r
                })
            })();
            let _ = tx.send(result);
        })
        .map_err(|e| ns_err(&path, format!("cannot start thread: {e}")))?;
    rx.await
        .map_err(|_| ns_err(&path, "namespace thread ended without an answer"))?
}
