//! The crate's one error type.
//!
//! Causes are kept as values: the kernel's errno as [`Errno`], I/O and
//! netlink errors as sources. Each message also states its cause, because
//! callers show `to_string()` to users (the agent reports the last apply
//! error as text); `source()` returns the same cause for callers that walk
//! the chain.

use std::io;
use std::path::PathBuf;

pub use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The desired state or the configuration is wrong; nothing was touched.
    #[error("invalid desired state: {0}")]
    Invalid(String),

    /// One endpoint record (local or remote) was refused and not plumbed;
    /// the rest of the desired state was converged. `id` is the endpoint's.
    #[error("endpoint {id} rejected: {why}")]
    EndpointRejected { id: String, why: String },

    /// One local endpoint could not be converged (its workload namespace
    /// holds a foreign interface, say); the rest of the desired state was
    /// converged. `id` is the endpoint's; `source` what failed.
    #[error("endpoint {id}: {source}")]
    EndpointFailed {
        id: String,
        #[source]
        source: Box<DatapathError>,
    },

    /// The kernel refused a netlink request.
    #[error("netlink: {context}: {errno}")]
    Kernel {
        context: String,
        #[source]
        errno: Errno,
    },

    /// A netlink request could not be sent or its answer not read.
    #[error("netlink: {context}: {source}")]
    Netlink {
        context: String,
        #[source]
        source: rtnetlink::Error,
    },

    /// No netlink socket could be opened.
    #[error("cannot open a netlink socket: {0}")]
    NetlinkSocket(#[source] io::Error),

    /// A device that should exist does not.
    #[error("device {device} missing: {why}")]
    DeviceMissing { device: String, why: &'static str },

    /// A network namespace could not be used.
    #[error("network namespace {}: {action}: {source}", path.display())]
    Netns {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },

    /// Entering a network namespace failed.
    #[error("network namespace {}: setns: {errno}", path.display())]
    Setns {
        path: PathBuf,
        #[source]
        errno: Errno,
    },

    /// A system call on an interface (ioctl) failed.
    #[error("{action} on {ifname}: {errno}")]
    Interface {
        ifname: String,
        action: &'static str,
        #[source]
        errno: Errno,
    },

    /// A sysctl could not be read or written.
    #[error("sysctl {}: {source}", path.display())]
    Sysctl {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A helper program could not be run.
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },

    /// A helper program ran and failed.
    #[error("{command} failed ({}): {stderr}", status.map_or("killed".to_string(), |s| format!("exit {s}")))]
    Command {
        command: String,
        status: Option<i32>,
        stderr: String,
    },

    /// An OVSDB request failed.
    #[error("{context}: {source}")]
    Ovsdb {
        context: String,
        #[source]
        source: socketplane_ovsdb::Error,
    },

    /// The recording datapath could not write its log.
    #[error("record log {}: {source}", path.display())]
    RecordLog {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Something this datapath needs is missing or not running.
    #[error("{what} is not available: {why}")]
    Unavailable { what: String, why: String },

    /// Several independent steps failed (teardown keeps going and collects).
    #[error("{} errors: {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Many(Vec<DatapathError>),
}

pub type Result<T, E = DatapathError> = std::result::Result<T, E>;

impl DatapathError {
    /// A netlink failure: the kernel's errno when it answered with one.
    pub(crate) fn netlink(context: impl Into<String>, e: rtnetlink::Error) -> Self {
        let context = context.into();
        match &e {
            rtnetlink::Error::NetlinkError(m) if m.code.is_some() => DatapathError::Kernel {
                context,
                errno: Errno::from_raw(-m.raw_code()),
            },
            _ => DatapathError::Netlink { context, source: e },
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        DatapathError::Invalid(msg.into())
    }

    pub(crate) fn unavailable(what: impl Into<String>, why: impl Into<String>) -> Self {
        DatapathError::Unavailable {
            what: what.into(),
            why: why.into(),
        }
    }

    /// The ids of the endpoint records refused (also inside [`DatapathError::Many`]).
    pub fn rejected_endpoints(&self) -> Vec<&str> {
        match self {
            DatapathError::EndpointRejected { id, .. } => vec![id.as_str()],
            DatapathError::Many(v) => v.iter().flat_map(|e| e.rejected_endpoints()).collect(),
            _ => Vec::new(),
        }
    }

    /// Every endpoint this apply refused or could not converge, with the
    /// reason (also inside [`DatapathError::Many`]).
    pub fn endpoint_failures(&self) -> Vec<(&str, String)> {
        match self {
            DatapathError::EndpointRejected { id, why } => vec![(id.as_str(), why.clone())],
            DatapathError::EndpointFailed { id, source } => {
                vec![(id.as_str(), source.to_string())]
            }
            DatapathError::Many(v) => v.iter().flat_map(|e| e.endpoint_failures()).collect(),
            _ => Vec::new(),
        }
    }

    /// True when every failure of an apply concerns single endpoints (refused
    /// records or endpoints that could not be converged): everything else
    /// converged.
    pub fn only_endpoint_failures(&self) -> bool {
        match self {
            DatapathError::EndpointRejected { .. } | DatapathError::EndpointFailed { .. } => true,
            DatapathError::Many(v) => v.iter().all(|e| e.only_endpoint_failures()),
            _ => false,
        }
    }

    /// The kernel's errno, if this is a refused netlink request.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            DatapathError::EndpointFailed { source, .. } => source.errno(),
            DatapathError::Kernel { errno, .. }
            | DatapathError::Setns { errno, .. }
            | DatapathError::Interface { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// `Ok` when nothing failed, the error itself when one did, else [`DatapathError::Many`].
pub(crate) fn collect(mut errors: Vec<DatapathError>) -> Result<()> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(DatapathError::Many(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn errno_is_kept_as_a_value() {
        let e = DatapathError::Kernel {
            context: "delete link spv1".into(),
            errno: Errno::ENODEV,
        };
        assert_eq!(e.errno(), Some(Errno::ENODEV));
        assert!(e.source().is_some());
        assert!(e.to_string().contains("ENODEV"), "{e}");
        let io = DatapathError::Sysctl {
            path: "/proc/x".into(),
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        assert_eq!(
            io.source()
                .and_then(|s| s.downcast_ref::<io::Error>())
                .and_then(io::Error::raw_os_error),
            Some(libc::EACCES)
        );
    }
}
