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
