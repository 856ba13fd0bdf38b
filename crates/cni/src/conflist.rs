//! The network configuration list a runtime reads (`socketplane cni config`).

use std::path::Path;

use serde_json::{json, Value};

use crate::spec::PLUGIN_TYPE;

/// A conflist putting containers on `network` through the agent at
/// `socket`, in spec version `cni_version`. The `ips` capability lets a
/// runtime ask for a fixed address (`podman run --ip`).
pub fn conflist(network: &str, socket: &Path, cni_version: &str) -> Value {
    json!({
        "cniVersion": cni_version,
        "name": network,
        "plugins": [{
            "type": PLUGIN_TYPE,
            "network": network,
            "socket": socket.to_string_lossy(),
            "capabilities": { "ips": true },
        }],
    })
}
