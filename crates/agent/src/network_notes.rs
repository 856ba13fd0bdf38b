//! What `network info` tells users about how a network is carried.

use socketplane_api::{NetworkMode, NetworkRecord};
use socketplane_cluster::{ClusterView, ROUTING_DATAPATH};

/// One sentence per fact users should know about `net`'s mode, given the
/// cluster's members (when the view is known).
pub fn notes(net: &NetworkRecord, view: Option<&ClusterView>) -> Vec<String> {
    if net.mode != NetworkMode::Routed {
        return Vec::new();
    }
    let mut notes = vec![
        "routed mode: broadcast and multicast between hosts are not carried (unicast IP only)"
            .to_string(),
        "hosts on the same underlay subnet exchange plain IP (no encapsulation); \
         hosts on other subnets fall back to VXLAN"
            .to_string(),
    ];
    if let Some(view) = view {
        let overlay: Vec<String> = view
            .nodes
            .values()
            .filter(|n| n.datapath != ROUTING_DATAPATH)
            .map(|n| format!("{} ({})", n.name, n.datapath))
            .collect();
        if !overlay.is_empty() {
            notes.push(format!(
                "not routed on {}: their datapath carries it as an overlay (VXLAN), \
                 and every host reaches them through VXLAN",
                overlay.join(", ")
            ));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use socketplane_api::NodeRecord;

    use super::*;

    fn net(mode: NetworkMode) -> NetworkRecord {
        NetworkRecord {
            id: "0123456789abcdef".into(),
            name: "web".into(),
            subnet: "10.2.0.0/16".parse().unwrap(),
            gateway: "10.2.0.1".parse().unwrap(),
            vni: 256,
            mtu: None,
            mode,
        }
    }

    fn node(id: &str, datapath: &str) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            name: format!("host-{id}"),
            addr: "198.18.0.9".parse().unwrap(),
            cluster_port: 6675,
            datapath: datapath.into(),
            version: "0".into(),
        }
    }

    #[test]
    fn routed_networks_say_what_they_do_not_carry_and_where_they_are_not_routed() {
        assert!(notes(&net(NetworkMode::Overlay), None).is_empty());
        let mut view = ClusterView::default();
        view.nodes.insert("a".into(), node("a", "linux"));
        let all_linux = notes(&net(NetworkMode::Routed), Some(&view));
        assert!(all_linux[0].contains("broadcast and multicast between hosts are not carried"));
        assert!(!all_linux.iter().any(|n| n.contains("not routed on")));
        view.nodes.insert("b".into(), node("b", "ovs"));
        let mixed = notes(&net(NetworkMode::Routed), Some(&view));
        assert!(
            mixed
                .iter()
                .any(|n| n.contains("not routed on host-b (ovs)") && n.contains("VXLAN")),
            "{mixed:?}"
        );
    }
}
