//! Errors of the lab.

use std::path::PathBuf;

/// Everything that can go wrong building, driving or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The configuration cannot be used as given.
    #[error("invalid lab configuration: {0}")]
    InvalidConfig(String),
    /// A lab of that name (its state or its namespaces) already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// No such host in this lab.
    #[error("unknown host {0:?}")]
    UnknownHost(String),
    /// No such workload in this lab.
    #[error("unknown workload {0:?}")]
    UnknownWorkload(String),
    /// Building or removing namespaces, links or OVS failed.
    #[error(transparent)]
    Kit(#[from] socketplane_testkit::KitError),
    /// A command could not be started.
    #[error("`{cmd}` failed: {detail}")]
    Command {
        /// The command line.
        cmd: String,
        /// Why it could not run.
        detail: String,
    },
    /// A file system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The saved lab state cannot be read or written.
    #[error("lab state {path}: {source}")]
    State {
        /// The state file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The agent of a host exited while we waited for it.
    #[error("the agent of {host} exited before it was ready; last lines of {log}:\n{log_tail}")]
    AgentExited {
        /// Host name.
        host: String,
        /// The agent's log file.
        log: PathBuf,
        /// The end of the agent's log.
        log_tail: String,
    },
    /// The agent of a host did not create its socket in time.
    #[error("the agent of {host} did not create {socket} within {waited:?}; last lines of {log}:\n{log_tail}")]
    AgentNotReady {
        /// Host name.
        host: String,
        /// The socket that was awaited.
        socket: PathBuf,
        /// How long we waited.
        waited: std::time::Duration,
        /// The agent's log file.
        log: PathBuf,
        /// The end of the agent's log.
        log_tail: String,
    },
    /// The agent of a host is already running.
    #[error("the agent of {host} is already running (pid {pid})")]
    AgentRunning {
        /// Host name.
        host: String,
        /// Its process id.
        pid: u32,
    },
    /// The agent process did not die, even after SIGKILL.
    #[error("the agent of {host} (pid {pid}) is still alive after SIGKILL")]
    AgentUnkillable {
        /// Host name.
        host: String,
        /// Its process id.
        pid: u32,
    },
    /// Teardown went on after errors; here they all are.
    #[error("lab teardown finished with {} error(s): {}", .0.len(), join(.0))]
    Teardown(Vec<LabError>),
}

fn join(errors: &[LabError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Result with [`LabError`].
pub type Result<T> = std::result::Result<T, LabError>;

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let context = context.into();
    move |source| LabError::Io { context, source }
}
