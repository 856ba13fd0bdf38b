//! mDNS: advertises this node on the underlay interface and feeds
//! discovered peers of the same cluster to the join loop.

use socketplane_discovery::{Advertisement, Discovery};
use tokio::sync::{mpsc, watch};

use crate::error::{Error, Result};
use crate::membership::JoinHint;

/// Starts mDNS; peers go to the join loop, and once `member` (in the
/// store's membership) the advertisement says `member=1`.
pub fn start(
    ad: Advertisement,
    join: mpsc::UnboundedSender<JoinHint>,
    mut member_rx: watch::Receiver<bool>,
) -> Result<Discovery> {
    let (discovery, mut peers) = Discovery::start(ad).map_err(Error::Discovery)?;
    tokio::spawn(async move {
        while let Some(peer) = peers.recv().await {
            tracing::debug!(peer = %peer.node_name, addr = %peer.addr, member = peer.member, "Discovered a peer.");
            let hint = JoinHint {
                addr: peer.addr,
                member: peer.member,
            };
            if join.send(hint).is_err() {
                break;
            }
        }
    });
    let member = discovery.member_flag();
    tokio::spawn(async move {
        loop {
            member.set(*member_rx.borrow_and_update());
            if member_rx.changed().await.is_err() {
                break;
            }
        }
    });
    Ok(discovery)
}
