//! How Docker's names and SocketPlane's relate.

use std::path::Path;

use socketplane_api::defaults;

/// Label on mirrored Docker networks: the cluster network's name.
pub const NETWORK_LABEL: &str = "io.socketplane.network";

/// The driver name Docker knows the plugin by: the socket's file stem.
pub fn driver_name(socket: &Path) -> String {
    socket
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| defaults::CLUSTER.into())
}

/// The cluster name of a network created from Docker before its Docker
/// name is known (the mirror renames it): `docker-` and 12 digits of the id.
pub fn placeholder_name(docker_id: &str) -> String {
    format!("docker-{}", docker_id.chars().take(12).collect::<String>())
}

/// The name a cluster network has in Docker: its own, except `default`,
/// which Docker reserves; that one is `DRIVER-default`.
pub fn docker_network_name(driver: &str, network: &str) -> String {
    if network == defaults::NETWORK {
        format!("{driver}-{}", defaults::NETWORK)
    } else {
        network.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            driver_name(Path::new("/run/docker/plugins/spx.sock")),
            "spx"
        );
        assert_eq!(
            placeholder_name("1f0a979824c7abcdef"),
            "docker-1f0a979824c7"
        );
        assert_eq!(docker_network_name("sp", "default"), "sp-default");
        assert_eq!(docker_network_name("sp", "blue"), "blue");
    }
}
