//! The sysctls a datapath needs.

use std::path::Path;

use crate::error::{DatapathError, Result};

/// Turns IPv4 forwarding on (the gateway routes); returns writes.
pub(crate) fn ensure_ip_forward() -> Result<usize> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    let err = |source| DatapathError::Sysctl {
        path: Path::new(PATH).to_owned(),
        source,
    };
    let cur = std::fs::read_to_string(PATH).map_err(err)?;
    if cur.trim() == "1" {
        return Ok(0);
    }
    std::fs::write(PATH, "1").map_err(err)?;
    Ok(1)
}
