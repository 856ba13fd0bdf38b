//! mDNS: advertises this node on the underlay interface and feeds
//! discovered peers of the same cluster to the join loop.

use std::net::SocketAddr;

use socketplane_discovery::{Advertisement, Discovery};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

pub fn start(ad: Advertisement, join: mpsc::UnboundedSender<SocketAddr>) -> Result<Discovery> {
    let (discovery, mut peers) = Discovery::start(ad).map_err(Error::Discovery)?;
    tokio::spawn(async move {
        while let Some(peer) = peers.recv().await {
            tracing::debug!(peer = %peer.node_name, addr = %peer.addr, "Discovered a peer.");
            if join.send(peer.addr).is_err() {
                break;
            }
        }
    });
    Ok(discovery)
}
