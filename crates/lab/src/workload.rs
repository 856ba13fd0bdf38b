//! Workload namespaces: where "containers" of a lab live, attached to
//! networks by the agent (`socketplane endpoint attach --netns PATH`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use socketplane_testkit::netns;

use crate::error::{LabError, Result};
use crate::topology::reserved_suffix;

/// Longest workload name.
const MAX_NAME_LEN: usize = 20;

/// A workload namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// Short name given to [`crate::Lab::add_workload`].
    pub name: String,
    /// Index of the host it belongs to.
    pub host: usize,
    /// Namespace name (`sp-NAME-WL`).
    pub netns: String,
}

impl Workload {
    /// Path of the namespace, for `socketplane endpoint attach --netns`.
    pub fn netns_path(&self) -> PathBuf {
        netns::path(&self.netns)
    }
}

/// Per-namespace files for `ip netns exec` (e.g. `resolv.conf`).
pub(crate) fn etc_dir(netns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(netns)
}

/// Removes [`etc_dir`] if it exists.
pub(crate) fn remove_etc_dir(netns: &str) -> Result<()> {
    let dir = etc_dir(netns);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(crate::error::io_err(format!(
            "cannot remove {}",
            dir.display()
        ))(e)),
        _ => Ok(()),
    }
}

/// A workload name must be short, plain and not one of the lab's own.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || name.starts_with('-')
    {
        return Err(LabError::InvalidConfig(format!(
            "workload name {name:?} must be 1 to {MAX_NAME_LEN} characters of a-z, 0-9 and '-'"
        )));
    }
    if reserved_suffix(name) {
        return Err(LabError::InvalidConfig(format!(
            "workload name {name:?} is reserved for the lab's own namespaces"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("web-a1").is_ok());
        for bad in ["", "-a", "Bad", "a_b", "h2", "sw", "out", &"x".repeat(21)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
