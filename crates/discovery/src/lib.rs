//! Finding cluster peers: mDNS (`_socketplane._tcp.local.`).
//!
//! A [`Discovery`] advertises this node on exactly one interface (the
//! underlay) and, while it is no cluster member, browses for other nodes of
//! the same cluster. Members do not browse: only joiners need peers, and
//! each query draws an answer from every node that every node receives, so
//! a large cluster restarting at once would spend its CPU on mDNS. The service
//! instance name is the node name, the port is the cluster port, the only
//! address published is the underlay IPv4 address, and the TXT record
//! carries `cluster=<name>`, `id=<node id>`, `v=<protocol version>` and
//! `member=0|1` (whether the node is a cluster member yet:
//! [`Discovery::member_flag`]), so joiners can try members first.
//!
//! Peers arrive on a tokio channel, de-duplicated: a peer is sent again only
//! when what it advertises changes, or when it comes back after it was
//! withdrawn (goodbye packet or expiry), e.g. after a restart.
//!
//! The mDNS daemon runs on its own thread, created in the network namespace
//! of the thread that calls [`Discovery::start`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mdns_sd::{IfKind, ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo, TxtProperties};
use tokio::sync::mpsc;

/// The DNS-SD service type every SocketPlane agent advertises.
pub const SERVICE_TYPE: &str = "_socketplane._tcp.local.";
/// Protocol version carried in the TXT record as `v=`.
pub const PROTOCOL_VERSION: &str = "1";

/// TXT key for the cluster name.
pub const TXT_CLUSTER: &str = "cluster";
/// TXT key for the node id.
pub const TXT_ID: &str = "id";
/// TXT key for the protocol version.
pub const TXT_VERSION: &str = "v";
/// TXT key for membership: `1` once the node is a cluster member.
pub const TXT_MEMBER: &str = "member";

/// Capacity of the peer channel handed to the caller.
const PEER_CHANNEL_CAPACITY: usize = 64;
/// How long `shutdown` waits for the daemon to confirm each step.
const SHUTDOWN_STEP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the forwarding thread checks whether it should stop.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// What this node advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    /// Node name; becomes the service instance name and the mDNS host name.
    pub node_name: String,
    /// Stable node id (TXT `id`).
    pub node_id: String,
    /// Cluster name (TXT `cluster`); peers of other clusters are ignored.
    pub cluster: String,
    /// The underlay IPv4 address: the only address published.
    pub addr: Ipv4Addr,
    /// The cluster port (SRV port).
    pub port: u16,
    /// The underlay interface: the only interface mDNS runs on.
    pub iface: String,
    /// Whether the node is a cluster member from the start (e.g. resumed
    /// from its data dir): it says `member=1` at once and does not browse.
    pub member: bool,
}

/// A node of our cluster found by mDNS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Instance name of the service (the peer's node name).
    pub node_name: String,
    /// TXT `id`.
    pub node_id: String,
    /// TXT `cluster` (always equal to ours).
    pub cluster: String,
    /// TXT `v`.
    pub version: String,
    /// TXT `member=1`: the peer says it is a cluster member (a hint only:
    /// anyone on the LAN may say anything).
    pub member: bool,
    /// Underlay address and cluster port of the peer.
    pub addr: SocketAddr,
}

/// Errors of the discovery crate.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The advertisement cannot be published as given.
    #[error("invalid advertisement: {0}")]
    InvalidAdvertisement(String),
    /// The mDNS daemon refused an operation.
    #[error("mDNS {context}: {source}")]
    Mdns {
        /// What was being done.
        context: &'static str,
        /// The daemon's error.
        #[source]
        source: mdns_sd::Error,
    },
    /// A thread could not be started.
    #[error("cannot start the discovery thread: {0}")]
    Thread(#[source] std::io::Error),
}

fn mdns_err(context: &'static str) -> impl FnOnce(mdns_sd::Error) -> DiscoveryError {
    move |source| DiscoveryError::Mdns { context, source }
}

/// Whether this node advertises itself as a cluster member (TXT
/// `member=1`); cheap to clone and set from anywhere.
#[derive(Debug, Clone, Default)]
pub struct MemberFlag(Arc<AtomicBool>);

impl MemberFlag {
    /// Says (or stops saying) that this node is a member.
    pub fn set(&self, member: bool) {
        self.0.store(member, Ordering::SeqCst);
    }

    /// What this node should advertise.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A running advertisement and browse. Dropping it also stops it; call
/// [`Discovery::shutdown`] to say goodbye explicitly.
pub struct Discovery {
    daemon: ServiceDaemon,
    fullname: String,
    member: MemberFlag,
    stop: Arc<AtomicBool>,
    forwarder: Option<JoinHandle<()>>,
    stopped: bool,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("fullname", &self.fullname)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Advertise on `ad.iface` only (never on overlay bridges or docker0)
    /// and browse. Peers of the same cluster (other than ourselves) arrive
    /// on the returned channel, de-duplicated, and again after they restart.
    ///
    /// Must be called from a thread in the network namespace of `ad.iface`;
    /// a tokio runtime is not required.
    pub fn start(ad: Advertisement) -> Result<(Discovery, mpsc::Receiver<Peer>), DiscoveryError> {
        validate(&ad)?;

        let daemon = ServiceDaemon::new().map_err(mdns_err("cannot start the daemon"))?;
        let result = Self::start_with(daemon.clone(), &ad);
        match result {
            Ok((fullname, events)) => {
                let browse = Browse {
                    daemon: daemon.clone(),
                    events,
                };
                let (tx, rx) = mpsc::channel(PEER_CHANNEL_CAPACITY);
                let stop = Arc::new(AtomicBool::new(false));
                let filter = PeerFilter::new(&ad);
                let thread_stop = stop.clone();
                let member = MemberFlag::default();
                member.set(ad.member);
                let announce = Announcer {
                    daemon: daemon.clone(),
                    ad: ad.clone(),
                    member: member.clone(),
                    announced: ad.member,
                };
                let forwarder = std::thread::Builder::new()
                    .name("sp-discovery".into())
                    .spawn(move || forward(browse, tx, filter, announce, thread_stop));
                let forwarder = match forwarder {
                    Ok(handle) => handle,
                    Err(e) => {
                        shutdown_daemon(&daemon, Some(&fullname));
                        return Err(DiscoveryError::Thread(e));
                    }
                };
                tracing::info!(
                    node = %ad.node_name,
                    cluster = %ad.cluster,
                    iface = %ad.iface,
                    addr = %ad.addr,
                    port = ad.port,
                    "Advertising this node over mDNS."
                );
                Ok((
                    Discovery {
                        daemon,
                        fullname,
                        member,
                        stop,
                        forwarder: Some(forwarder),
                        stopped: false,
                    },
                    rx,
                ))
            }
            Err(e) => {
                shutdown_daemon(&daemon, None);
                Err(e)
            }
        }
    }

    fn start_with(
        daemon: ServiceDaemon,
        ad: &Advertisement,
    ) -> Result<(String, Option<mdns_sd::Receiver<ServiceEvent>>), DiscoveryError> {
        // Only the underlay interface, IPv4 only: first exclude everything
        // (loopback included), then include the one interface, then drop
        // its IPv6 addresses. Later selections win.
        daemon
            .disable_interface(IfKind::All)
            .map_err(mdns_err("cannot disable interfaces"))?;
        daemon
            .enable_interface(IfKind::Name(ad.iface.clone()))
            .map_err(mdns_err("cannot enable the underlay interface"))?;
        daemon
            .disable_interface(IfKind::IPv6)
            .map_err(mdns_err("cannot disable IPv6"))?;

        let info = service_info(ad, ad.member)?;
        let fullname = info.get_fullname().to_string();

        let events = if ad.member {
            None
        } else {
            Some(
                daemon
                    .browse(SERVICE_TYPE)
                    .map_err(mdns_err("cannot browse"))?,
            )
        };
        daemon
            .register(info)
            .map_err(mdns_err("cannot register the service"))?;
        Ok((fullname, events))
    }

    /// The switch for TXT `member=`: set it once this node is a cluster
    /// member, and the advertisement is re-announced with `member=1` (within
    /// a fraction of a second), so joiners try members first.
    pub fn member_flag(&self) -> MemberFlag {
        self.member.clone()
    }

    /// The full DNS-SD name of our own instance.
    pub fn fullname(&self) -> &str {
        &self.fullname
    }

    /// Withdraw the advertisement (goodbye packets) and stop the daemon.
    /// Blocks for at most a few seconds (also when dropped); from async
    /// code prefer `tokio::task::spawn_blocking`.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.stop.store(true, Ordering::SeqCst);
        shutdown_daemon(&self.daemon, Some(&self.fullname));
        if let Some(handle) = self.forwarder.take() {
            if handle.join().is_err() {
                tracing::warn!("The discovery forwarding thread panicked.");
            }
        }
        tracing::info!(fullname = %self.fullname, "Stopped mDNS discovery.");
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The service record of `ad`, only on its interface.
fn service_info(ad: &Advertisement, member: bool) -> Result<ServiceInfo, DiscoveryError> {
    let txt = [
        (TXT_CLUSTER, ad.cluster.as_str()),
        (TXT_ID, ad.node_id.as_str()),
        (TXT_VERSION, PROTOCOL_VERSION),
        (TXT_MEMBER, if member { "1" } else { "0" }),
    ];
    let host_name = format!("{}.local.", host_label(&ad.node_name));
    let mut info = ServiceInfo::new(
        SERVICE_TYPE,
        &ad.node_name,
        &host_name,
        IpAddr::V4(ad.addr),
        ad.port,
        &txt[..],
    )
    .map_err(mdns_err("cannot build the service record"))?;
    info.set_interfaces(vec![IfKind::Name(ad.iface.clone())]);
    Ok(info)
}

/// Unregister (if registered) and stop the daemon, waiting a bounded time.
fn shutdown_daemon(daemon: &ServiceDaemon, fullname: Option<&str>) {
    if let Some(name) = fullname {
        match daemon.unregister(name) {
            Ok(rx) => {
                if let Err(e) = rx.recv_timeout(SHUTDOWN_STEP_TIMEOUT) {
                    tracing::warn!(error = %e, "No confirmation that the mDNS service was withdrawn.");
                }
            }
            Err(e) => tracing::warn!(error = %e, "Cannot withdraw the mDNS service."),
        }
    }
    match daemon.shutdown() {
        Ok(rx) => {
            if let Err(e) = rx.recv_timeout(SHUTDOWN_STEP_TIMEOUT) {
                tracing::warn!(error = %e, "No confirmation that the mDNS daemon stopped.");
            }
        }
        Err(e) => tracing::warn!(error = %e, "Cannot stop the mDNS daemon."),
    }
}

fn validate(ad: &Advertisement) -> Result<(), DiscoveryError> {
    let bad = |m: String| Err(DiscoveryError::InvalidAdvertisement(m));
    if ad.node_name.is_empty() || ad.node_name.len() > 63 {
        return bad(format!(
            "node name {:?} must be 1 to 63 bytes long",
            ad.node_name
        ));
    }
    if ad.node_id.is_empty() {
        return bad("node id must not be empty".into());
    }
    if ad.cluster.is_empty() {
        return bad("cluster name must not be empty".into());
    }
    // A TXT string is at most 255 bytes including "key=".
    if ad.cluster.len() > 200 || ad.node_id.len() > 200 {
        return bad("cluster name and node id must be at most 200 bytes".into());
    }
    if ad.iface.is_empty() || ad.iface.len() > 15 {
        return bad(format!("interface name {:?} is not valid", ad.iface));
    }
    if ad.addr.is_unspecified() || ad.addr.is_multicast() || ad.addr.is_broadcast() {
        return bad(format!("{} is not a unicast address", ad.addr));
    }
    if ad.port == 0 {
        return bad("port must not be 0".into());
    }
    Ok(())
}

/// A DNS label for the mDNS host name: letters, digits and '-' only.
fn host_label(node_name: &str) -> String {
    let label: String = node_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    let label = label.trim_matches('-');
    if label.is_empty() {
        "socketplane".to_string()
    } else {
        label.to_string()
    }
}

/// Most peers the filter remembers.
const MAX_KNOWN_PEERS: usize = 256;

/// Turns resolved services into peers of our cluster, de-duplicated.
#[derive(Debug)]
struct PeerFilter {
    cluster: String,
    own_id: String,
    known: HashMap<String, Peer>,
}

impl PeerFilter {
    fn new(ad: &Advertisement) -> Self {
        PeerFilter {
            cluster: ad.cluster.clone(),
            own_id: ad.node_id.clone(),
            known: HashMap::new(),
        }
    }

    /// A resolved service: the peer to announce, if it is new or changed.
    fn resolved(&mut self, svc: &ResolvedService) -> Option<Peer> {
        let peer = peer_from(svc, &self.cluster)?;
        if peer.node_id == self.own_id {
            return None;
        }
        let key = svc.fullname.to_lowercase();
        if self.known.get(&key) == Some(&peer) {
            return None;
        }
        // Bounded: a flood of fake advertisements must not grow it without
        // end. Forgetting one only means it is announced again.
        if !self.known.contains_key(&key) && self.known.len() >= MAX_KNOWN_PEERS {
            if let Some(old) = self.known.keys().next().cloned() {
                self.known.remove(&old);
            }
        }
        self.known.insert(key, peer.clone());
        Some(peer)
    }

    /// Forget every peer (a new browse delivers them all again).
    fn forget_all(&mut self) {
        self.known.clear();
    }

    /// A withdrawn service: forget it so its return is announced again.
    fn removed(&mut self, fullname: &str) -> Option<Peer> {
        self.known.remove(&fullname.to_lowercase())
    }
}

/// Build a peer from a resolved service, if it belongs to `cluster`.
fn peer_from(svc: &ResolvedService, cluster: &str) -> Option<Peer> {
    let addr = svc.get_addresses_v4().into_iter().min()?;
    peer_from_txt(
        &svc.fullname,
        &svc.txt_properties,
        SocketAddr::new(IpAddr::V4(addr), svc.port),
        cluster,
    )
}

/// The longest node id or version taken from a TXT record (ours are 16
/// hex digits and a small number).
const MAX_TXT_FIELD: usize = 64;

/// A peer from what anyone on the LAN may send: the service's name and its
/// TXT properties. `None` unless it is of `cluster` with a sane id.
fn peer_from_txt(
    fullname: &str,
    txt: &TxtProperties,
    addr: SocketAddr,
    cluster: &str,
) -> Option<Peer> {
    let their_cluster = txt.get_property_val_str(TXT_CLUSTER)?;
    if their_cluster != cluster {
        tracing::debug!(%fullname, cluster = %their_cluster, "Ignoring a node of another cluster.");
        return None;
    }
    let sane = |s: &str| {
        s.len() <= MAX_TXT_FIELD
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    };
    let id = txt
        .get_property_val_str(TXT_ID)
        .filter(|s| !s.is_empty() && sane(s))?;
    let version = txt
        .get_property_val_str(TXT_VERSION)
        .filter(|s| sane(s))
        .unwrap_or("");
    let member = txt.get_property_val_str(TXT_MEMBER) == Some("1");
    Some(Peer {
        node_name: instance_name(fullname),
        node_id: id.to_string(),
        cluster: their_cluster.to_string(),
        version: version.to_string(),
        member,
        addr,
    })
}

/// The instance part of `<instance>._socketplane._tcp.local.`.
fn instance_name(fullname: &str) -> String {
    let suffix = format!(".{SERVICE_TYPE}");
    // Compared without case, byte for byte: lowercasing may change the
    // length of non-ASCII text, and with it where the suffix starts.
    let name = fullname
        .len()
        .checked_sub(suffix.len())
        .filter(|&cut| fullname.is_char_boundary(cut))
        .filter(|&cut| fullname[cut..].eq_ignore_ascii_case(&suffix))
        .map_or(fullname, |cut| &fullname[..cut]);
    name.replace("\\.", ".").replace("\\\\", "\\")
}

/// Send `peer`, waiting while the channel is full, but never past a stop
/// request (so `shutdown` cannot hang on a receiver that stopped reading).
/// Returns false when forwarding should end.
fn deliver(tx: &mpsc::Sender<Peer>, mut peer: Peer, stop: &AtomicBool) -> bool {
    loop {
        match tx.try_send(peer) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(p)) => {
                if stop.load(Ordering::SeqCst) {
                    return false;
                }
                peer = p;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Re-announces our service when the member flag changes.
struct Announcer {
    daemon: ServiceDaemon,
    ad: Advertisement,
    member: MemberFlag,
    announced: bool,
}

impl Announcer {
    fn update(&mut self) {
        let want = self.member.get();
        if want == self.announced {
            return;
        }
        // Registering the same name again re-announces it with the new TXT.
        match service_info(&self.ad, want).and_then(|info| {
            self.daemon
                .register(info)
                .map_err(mdns_err("cannot re-announce the service"))
        }) {
            Ok(()) => {
                tracing::info!(member = want, "Re-announced this node over mDNS.");
                self.announced = want;
            }
            Err(error) => tracing::warn!(%error, "Could not re-announce this node."),
        }
    }
}

/// The browse for peers, running while this node is no member.
struct Browse {
    daemon: ServiceDaemon,
    events: Option<mdns_sd::Receiver<ServiceEvent>>,
}

impl Browse {
    /// Browses exactly while `want`; returns the events to read, if any.
    /// A new browse starts with an empty `filter`, so peers already seen
    /// are delivered again.
    fn follow(
        &mut self,
        want: bool,
        filter: &mut PeerFilter,
    ) -> Option<&mdns_sd::Receiver<ServiceEvent>> {
        match (want, self.events.is_some()) {
            (true, false) => match self.daemon.browse(SERVICE_TYPE) {
                Ok(events) => {
                    filter.forget_all();
                    self.events = Some(events);
                    tracing::info!("Browsing for peers over mDNS.");
                }
                Err(error) => tracing::warn!(%error, "Cannot browse for peers; will retry."),
            },
            (false, true) => {
                self.events = None;
                match self.daemon.stop_browse(SERVICE_TYPE) {
                    Ok(()) => tracing::info!("A member: stopped browsing for peers over mDNS."),
                    Err(error) => tracing::warn!(%error, "Cannot stop browsing for peers."),
                }
            }
            _ => {}
        }
        self.events.as_ref()
    }
}

/// Forwarding loop: mDNS events to peers on the tokio channel (while this
/// node browses), and our re-announcements.
fn forward(
    mut browse: Browse,
    tx: mpsc::Sender<Peer>,
    mut filter: PeerFilter,
    mut announce: Announcer,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        announce.update();
        let Some(events) = browse.follow(!announce.member.get(), &mut filter) else {
            std::thread::sleep(POLL_INTERVAL);
            continue;
        };
        let event = match events.recv_timeout(POLL_INTERVAL) {
            Ok(ev) => ev,
            Err(mdns_sd::RecvTimeoutError::Timeout) => continue,
            Err(mdns_sd::RecvTimeoutError::Disconnected) => break,
        };
        match event {
            ServiceEvent::ServiceResolved(svc) => {
                if let Some(peer) = filter.resolved(&svc) {
                    tracing::info!(node = %peer.node_name, id = %peer.node_id, addr = %peer.addr, "Discovered a peer over mDNS.");
                    if !deliver(&tx, peer, &stop) {
                        break;
                    }
                }
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                if let Some(peer) = filter.removed(&fullname) {
                    tracing::info!(node = %peer.node_name, id = %peer.node_id, "A peer withdrew its mDNS advertisement.");
                }
            }
            other => tracing::trace!(event = ?other, "mDNS event."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ad() -> Advertisement {
        Advertisement {
            node_name: "host1".into(),
            node_id: "id-1".into(),
            cluster: "lab".into(),
            addr: Ipv4Addr::new(198, 18, 0, 11),
            port: 6675,
            iface: "eth0".into(),
            member: false,
        }
    }

    #[test]
    fn validation_rejects_bad_advertisements() {
        assert!(validate(&ad()).is_ok());
        for f in [
            |a: &mut Advertisement| a.node_name.clear(),
            |a: &mut Advertisement| a.node_name = "x".repeat(64),
            |a: &mut Advertisement| a.node_id.clear(),
            |a: &mut Advertisement| a.cluster.clear(),
            |a: &mut Advertisement| a.iface.clear(),
            |a: &mut Advertisement| a.iface = "x".repeat(16),
            |a: &mut Advertisement| a.addr = Ipv4Addr::UNSPECIFIED,
            |a: &mut Advertisement| a.addr = Ipv4Addr::new(224, 0, 0, 251),
            |a: &mut Advertisement| a.port = 0,
        ] {
            let mut a = ad();
            f(&mut a);
            assert!(
                matches!(validate(&a), Err(DiscoveryError::InvalidAdvertisement(_))),
                "{a:?}"
            );
        }
    }

    #[test]
    fn delivery_gives_up_on_stop_and_close() {
        let peer = Peer {
            node_name: "h".into(),
            node_id: "i".into(),
            cluster: "c".into(),
            version: "1".into(),
            member: false,
            addr: "198.18.0.12:6675".parse().unwrap(),
        };
        let stop = AtomicBool::new(false);
        let (tx, mut rx) = mpsc::channel(1);
        assert!(deliver(&tx, peer.clone(), &stop));
        // Full and stopping: gives up instead of blocking.
        stop.store(true, Ordering::SeqCst);
        assert!(!deliver(&tx, peer.clone(), &stop));
        assert_eq!(rx.try_recv().unwrap(), peer);
        drop(rx);
        stop.store(false, Ordering::SeqCst);
        assert!(!deliver(&tx, peer, &stop));
    }

    #[test]
    fn host_labels_are_dns_safe() {
        assert_eq!(host_label("host1"), "host1");
        assert_eq!(
            host_label("ip-10-0-0-1.ec2.internal"),
            "ip-10-0-0-1-ec2-internal"
        );
        assert_eq!(host_label("_x_"), "x");
        assert_eq!(host_label("..."), "socketplane");
    }

    #[test]
    fn instance_names_are_unescaped() {
        assert_eq!(instance_name("host1._socketplane._tcp.local."), "host1");
        assert_eq!(instance_name("a\\.b._socketplane._tcp.local."), "a.b");
        assert_eq!(instance_name("odd"), "odd");
        assert_eq!(instance_name("H1._SocketPlane._TCP.local."), "H1");
        // Lowercasing the Kelvin sign gives ASCII 'k' and shortens the text:
        // no suffix here, and no cut inside a character.
        let kelvin = "\u{212A}\u{212A}._soc\u{212A}etplane._tcp.local.";
        assert_eq!(instance_name(kelvin), kelvin);
    }

    #[test]
    fn filter_deduplicates_and_forgets_removed() {
        let mut f = PeerFilter::new(&ad());
        let p = Peer {
            node_name: "host2".into(),
            node_id: "id-2".into(),
            cluster: "lab".into(),
            version: "1".into(),
            member: false,
            addr: "198.18.0.12:6675".parse().unwrap(),
        };
        f.known
            .insert("host2._socketplane._tcp.local.".into(), p.clone());
        assert_eq!(f.removed("HOST2._socketplane._tcp.local."), Some(p.clone()));
        assert_eq!(f.removed("host2._socketplane._tcp.local."), None);
    }

    mod txt {
        use super::*;
        use proptest::prelude::*;

        fn addr() -> SocketAddr {
            "198.18.0.12:6675".parse().unwrap()
        }

        /// TXT record wire format: length-prefixed strings.
        fn encode(props: &[(String, String)]) -> Vec<u8> {
            let mut out = Vec::new();
            for (k, v) in props {
                let kv = format!("{k}={v}");
                let kv = &kv.as_bytes()[..kv.len().min(255)];
                out.push(kv.len() as u8);
                out.extend_from_slice(kv);
            }
            out
        }

        #[test]
        fn a_valid_record_gives_the_peer() {
            let raw = encode(&[
                ("cluster".into(), "lab".into()),
                ("id".into(), "0123456789abcdef".into()),
                ("v".into(), "1".into()),
            ]);
            let txt = TxtProperties::from(&raw[..]);
            let p = peer_from_txt("h\\.2._socketplane._tcp.local.", &txt, addr(), "lab").unwrap();
            assert_eq!(p.node_name, "h.2");
            assert_eq!(p.node_id, "0123456789abcdef");
            assert_eq!(p.version, "1");
            assert!(!p.member, "no member= means not a member");
            let raw = encode(&[
                ("cluster".into(), "lab".into()),
                ("id".into(), "0123456789abcdef".into()),
                ("member".into(), "1".into()),
            ]);
            let p = peer_from_txt("h", &TxtProperties::from(&raw[..]), addr(), "lab").unwrap();
            assert!(p.member);
            let long = encode(&[
                ("cluster".into(), "lab".into()),
                ("id".into(), "x".repeat(200)),
            ]);
            assert!(peer_from_txt("h", &TxtProperties::from(&long[..]), addr(), "lab").is_none());
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Whatever the LAN sends: no panic, and a peer only of our
            /// cluster with a sane id.
            #[test]
            fn arbitrary_records_never_panic(
                raw in prop::collection::vec(any::<u8>(), 0..300),
                fullname in ".{0,80}",
            ) {
                let txt = TxtProperties::from(&raw[..]);
                if let Some(p) = peer_from_txt(&fullname, &txt, addr(), "lab") {
                    prop_assert_eq!(p.cluster, "lab");
                    prop_assert!(!p.node_id.is_empty() && p.node_id.len() <= MAX_TXT_FIELD);
                }
                let _ = instance_name(&fullname);
                let _ = instance_name(&format!("{fullname}._SocketPlane._tcp.local."));
            }

            /// A valid record with bytes changed: no panic either.
            #[test]
            fn mutated_records_never_panic(
                id in "[0-9a-f]{16}",
                edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            ) {
                let mut raw = encode(&[
                    ("cluster".into(), "lab".into()),
                    ("id".into(), id),
                    ("v".into(), PROTOCOL_VERSION.into()),
                ]);
                for (at, b) in edits {
                    let i = at.index(raw.len());
                    raw[i] = b;
                }
                let _ = peer_from_txt("x._socketplane._tcp.local.", &TxtProperties::from(&raw[..]), addr(), "lab");
            }
        }
    }
}
