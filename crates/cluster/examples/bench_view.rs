//! The reconciler's share of one datapath pass with many endpoints (issue
//! 16 point 5): a full pass clones the view (to publish it) and derives
//! this host's desired state from it, O(endpoints); a pass after one
//! endpoint changed compares the view with the last one instead
//! (`changes_since`), O(change). One network, 50 remote hosts;
//! `cargo run --release -p socketplane-cluster --example bench_view`.

use socketplane_api::{EndpointRecord, MacAddr, NetworkRecord, NodeRecord};
use socketplane_cluster::view::ClusterView;
use std::time::Instant;
fn main() {
    // Timings only: the records are well-formed by construction.
    for n in [200usize, 2000, 10000] {
        let mut v = ClusterView::default();
        v.networks.insert(
            "web".into(),
            NetworkRecord {
                id: "web".into(),
                name: "web".into(),
                subnet: "10.0.0.0/8".parse().unwrap(),
                gateway: "10.0.0.1".parse().unwrap(),
                vni: 256,
                mtu: None,
                mode: Default::default(),
            },
        );
        for h in 0..51 {
            let id = format!("n{h}");
            v.nodes.insert(
                id.clone(),
                NodeRecord {
                    id: id.clone(),
                    name: id.clone(),
                    addr: std::net::Ipv4Addr::new(198, 18, 6, h as u8 + 2),
                    cluster_port: 1,
                    datapath: "linux".into(),
                    version: "1".into(),
                },
            );
        }
        for i in 0..n {
            let ip = std::net::Ipv4Addr::from(0x0a00_0002 + i as u32);
            let id = format!("ep{i:06}");
            v.endpoints.insert(
                id.clone(),
                std::sync::Arc::new(EndpointRecord {
                    id: id.clone(),
                    network: "web".into(),
                    node: format!("n{}", 1 + i % 50),
                    ip,
                    mac: MacAddr::from_ipv4(ip),
                    name: Some(format!("c{i}")),
                    container_id: Some(format!("{i:064}")),
                    netns: Some(format!("/proc/{i}/ns/net")),
                    netns_id: None,
                    ifname: "eth0".into(),
                    origin: None,
                    pod_namespace: None,
                    pod_name: None,
                    aliases: Vec::new(),
                }),
            );
        }
        let k = 20;
        let t = Instant::now();
        for _ in 0..k {
            std::hint::black_box(v.clone());
        }
        let clone = t.elapsed() / k;
        let t = Instant::now();
        for _ in 0..k {
            std::hint::black_box(v.desired_for("n0"));
        }
        let desired = t.elapsed() / k;
        // One endpoint more, as one attach elsewhere makes it.
        let mut next = v.clone();
        let mut added = EndpointRecord::clone(&next.endpoints["ep000000"]);
        added.id = "ep-new".into();
        added.ip = std::net::Ipv4Addr::new(10, 255, 0, 2);
        next.endpoints
            .insert(added.id.clone(), std::sync::Arc::new(added));
        let t = Instant::now();
        for _ in 0..k {
            let changes = next
                .changes_since(&v, "n0")
                .expect("only endpoints changed");
            assert_eq!(changes.remote.len(), 1);
            std::hint::black_box(changes);
        }
        let delta = t.elapsed() / k;
        println!(
            "{n} endpoints: view clone {clone:?}, desired_for {desired:?}; \
             after one attach, changes_since {delta:?}"
        );
    }
}
