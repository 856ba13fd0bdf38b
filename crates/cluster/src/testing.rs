//! Test support for this crate's tests and its dependents' (feature
//! `test-support`): nodes registered, and the network `web` with an
//! endpoint on it, the one way tests need them.
//! Panics on failure, as a test would.

use std::time::Duration;

use socketplane_api::rest::{AttachEndpoint, CreateNetwork};
use socketplane_api::NodeRecord;
use socketplane_store::LeaseId;

use crate::Cluster;

/// The record of node `id`: named `host-{id}`, on the Linux datapath.
pub fn node_record(id: &str) -> NodeRecord {
    NodeRecord {
        id: id.into(),
        name: format!("host-{id}"),
        addr: "198.18.0.9".parse().unwrap(),
        cluster_port: 1,
        datapath: "linux".into(),
        version: "0".into(),
    }
}

/// Registers `cluster` as node `id` ([`node_record`]) with a 60 s lease.
pub async fn register(cluster: &Cluster, id: &str) -> LeaseId {
    cluster
        .register(&node_record(id), Duration::from_secs(60))
        .await
        .unwrap()
}

/// Network `web` on 10.9.0.0/24, the rest defaults.
pub fn web() -> CreateNetwork {
    CreateNetwork {
        name: "web".into(),
        subnet: "10.9.0.0/24".into(),
        gateway: None,
        mtu: None,
        mode: Default::default(),
    }
}

/// An endpoint on network `web`, the rest defaults.
pub fn attach_web() -> AttachEndpoint {
    AttachEndpoint {
        network: "web".into(),
        ..Default::default()
    }
}
