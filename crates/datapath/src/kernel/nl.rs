//! Thin netlink helpers over an rtnetlink [`Handle`]: one request/ack and
//! one dump primitive, plus parsed views of links, addresses and neighbours.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use futures::StreamExt;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridge, InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoVxlan, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::Handle;

use crate::error::{DatapathError, Errno, Result};

/// An open rtnetlink socket; its connection task stops when this is dropped.
pub(crate) struct Connection {
    pub(crate) handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens a netlink socket in the calling thread's network namespace.
pub(crate) fn connect() -> Result<Connection> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(DatapathError::NetlinkSocket)?;
    Ok(Connection {
        handle,
        task: tokio::spawn(conn),
    })
}

/// Sends one request and waits for its acknowledgement; a refusal is
/// [`DatapathError::Kernel`] with the kernel's errno.
pub(crate) async fn ack(
    handle: &Handle,
    msg: RouteNetlinkMessage,
    flags: u16,
    context: impl FnOnce() -> String,
) -> Result<()> {
    let context = context();
    tracing::debug!(write = %context, "Netlink write.");
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut h = handle.clone();
    let mut resp = h
        .request(req)
        .map_err(|e| DatapathError::netlink(context.clone(), e))?;
    while let Some(m) = resp.next().await {
        if let NetlinkPayload::Error(err) = m.payload {
            if err.code.is_some() {
                return Err(DatapathError::Kernel {
                    context,
                    errno: Errno::from_raw(-err.raw_code()),
                });
            }
        }
    }
    Ok(())
}

/// Like [`ack`], but `ok_errno` (e.g. ENOENT on a delete) counts as done.
pub(crate) async fn ack_unless(
    handle: &Handle,
    msg: RouteNetlinkMessage,
    ok_errno: Errno,
    context: impl FnOnce() -> String,
) -> Result<()> {
    match ack(handle, msg, 0, context).await {
        Err(DatapathError::Kernel { errno, .. }) if errno == ok_errno => Ok(()),
        r => r,
    }
}

/// How often a dump the kernel marks interrupted is started over.
const DUMP_ATTEMPTS: usize = 5;

/// Sends a dump request and collects every answer. A dump that changes
/// while it runs (another process adds or deletes a link meanwhile) is
/// marked `NLM_F_DUMP_INTR` by the kernel and may miss entries: it is
/// started over, so callers never act on a partial table (e.g. create a
/// link that exists but was not listed).
pub(crate) async fn dump(
    handle: &Handle,
    msg: RouteNetlinkMessage,
    context: &str,
) -> Result<Vec<RouteNetlinkMessage>> {
    for _ in 1..DUMP_ATTEMPTS {
        let (out, interrupted) = dump_once(handle, msg.clone(), context).await?;
        if !interrupted {
            return Ok(out);
        }
        tracing::debug!(dump = context, "Netlink dump interrupted; starting over.");
    }
    let (out, interrupted) = dump_once(handle, msg, context).await?;
    if interrupted {
        return Err(DatapathError::Kernel {
            context: format!("{context} (the table kept changing during {DUMP_ATTEMPTS} dumps)"),
            errno: Errno::EAGAIN,
        });
    }
    Ok(out)
}

async fn dump_once(
    handle: &Handle,
    msg: RouteNetlinkMessage,
    context: &str,
) -> Result<(Vec<RouteNetlinkMessage>, bool)> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut h = handle.clone();
    let mut resp = h
        .request(req)
        .map_err(|e| DatapathError::netlink(context, e))?;
    let mut out = Vec::new();
    let mut interrupted = false;
    while let Some(m) = resp.next().await {
        interrupted |= m.header.flags & NLM_F_DUMP_INTR != 0;
        match m.payload {
            NetlinkPayload::InnerMessage(inner) => out.push(inner),
            NetlinkPayload::Error(err) if err.code.is_some() => {
                return Err(DatapathError::Kernel {
                    context: context.to_string(),
                    errno: Errno::from_raw(-err.raw_code()),
                })
            }
            _ => {}
        }
    }
    Ok((out, interrupted))
}

/// Creates a link (fails if the name is taken).
pub(crate) async fn create_link(handle: &Handle, msg: LinkMessage, what: &str) -> Result<()> {
    ack(
        handle,
        RouteNetlinkMessage::NewLink(msg),
        NLM_F_CREATE | NLM_F_EXCL,
        || format!("create {what}"),
    )
    .await
}

/// Changes an existing link.
pub(crate) async fn change_link(handle: &Handle, msg: LinkMessage, what: &str) -> Result<()> {
    ack(handle, RouteNetlinkMessage::NewLink(msg), 0, || {
        format!("change {what}")
    })
    .await
}

/// Deletes a link; one already gone counts as deleted.
pub(crate) async fn del_link(handle: &Handle, index: u32, name: &str) -> Result<()> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    ack_unless(
        handle,
        RouteNetlinkMessage::DelLink(msg),
        Errno::ENODEV,
        || format!("delete link {name}"),
    )
    .await
}

/// Makes link `name` right, from `existing` (the link of that name, if
/// any): one that `reusable` accepts is kept and changed with `fix` when it
/// returns a message; any other is deleted and `create()` made in its
/// place. Returns the link and the writes.
pub(crate) async fn converge_link(
    handle: &Handle,
    (name, existing): (&str, Option<&Link>),
    reusable: impl FnOnce(&Link) -> bool,
    fix: impl FnOnce(&Link) -> Option<LinkMessage>,
    create: impl FnOnce() -> LinkMessage,
) -> Result<(Link, usize)> {
    match existing {
        Some(l) if reusable(l) => match fix(l) {
            Some(msg) => {
                change_link(handle, msg, name).await?;
                Ok((l.clone(), 1))
            }
            None => Ok((l.clone(), 0)),
        },
        other => {
            let mut changes = 1;
            if let Some(l) = other {
                del_link(handle, l.index, &l.name).await?;
                changes += 1;
            }
            create_link(handle, create(), name).await?;
            Ok((created_link(handle, name).await?, changes))
        }
    }
}

/// The link called `name`, which was just created.
pub(crate) async fn created_link(handle: &Handle, name: &str) -> Result<Link> {
    links(handle)
        .await?
        .remove(name)
        .ok_or_else(|| DatapathError::DeviceMissing {
            device: name.to_string(),
            why: "not found after creation",
        })
}

/// Makes `ip/prefix` the only IPv4 address of link `index`, called `dev`
/// (`addrs` is a dump of the namespace's addresses); returns writes.
pub(crate) async fn ensure_sole_address(
    handle: &Handle,
    addrs: &[Addr],
    (index, dev): (u32, &str),
    (ip, prefix): (Ipv4Addr, u8),
) -> Result<usize> {
    let mut changes = 0;
    let mut present = false;
    for a in addrs.iter().filter(|a| a.index == index) {
        if a.ip == ip && a.prefix == prefix {
            present = true;
            continue;
        }
        handle
            .address()
            .del(a.msg.clone())
            .execute()
            .await
            .map_err(|e| {
                DatapathError::netlink(format!("remove address {} from {dev}", a.ip), e)
            })?;
        changes += 1;
    }
    if !present {
        handle
            .address()
            .add(index, IpAddr::V4(ip), prefix)
            .execute()
            .await
            .map_err(|e| DatapathError::netlink(format!("add address {ip} to {dev}"), e))?;
        changes += 1;
    }
    Ok(changes)
}

/// What we read from a link.
#[derive(Debug, Clone, Default)]
pub(crate) struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<InfoKind>,
    pub master: Option<u32>,
    pub mtu: u32,
    pub mac: Vec<u8>,
    pub up: bool,
    pub vxlan: Vec<InfoVxlan>,
    pub bridge: Vec<InfoBridge>,
    pub port: Vec<InfoBridgePort>,
}

impl Link {
    pub(crate) fn from_message(m: LinkMessage) -> Self {
        let mut l = Link {
            index: m.header.index,
            up: m.header.flags.contains(LinkFlags::Up),
            ..Default::default()
        };
        for a in m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n,
                LinkAttribute::Mtu(v) => l.mtu = v,
                LinkAttribute::Controller(v) => l.master = Some(v),
                LinkAttribute::Address(v) => l.mac = v,
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(k) => l.kind = Some(k),
                            LinkInfo::Data(InfoData::Vxlan(v)) => l.vxlan = v,
                            LinkInfo::Data(InfoData::Bridge(v)) => l.bridge = v,
                            LinkInfo::PortData(InfoPortData::BridgePort(v)) => l.port = v,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }

    pub(crate) fn is_kind(&self, k: InfoKind) -> bool {
        self.kind.as_ref() == Some(&k)
    }
}

/// All links, by name.
pub(crate) async fn links(handle: &Handle) -> Result<HashMap<String, Link>> {
    let msgs = dump(
        handle,
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        "dump links",
    )
    .await?;
    let mut out = HashMap::new();
    for m in msgs {
        if let RouteNetlinkMessage::NewLink(lm) = m {
            let l = Link::from_message(lm);
            out.insert(l.name.clone(), l);
        }
    }
    Ok(out)
}

/// An IPv4 address on a link.
#[derive(Debug, Clone)]
pub(crate) struct Addr {
    pub index: u32,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub msg: AddressMessage,
}

/// All IPv4 addresses.
pub(crate) async fn addrs_v4(handle: &Handle) -> Result<Vec<Addr>> {
    let mut req = AddressMessage::default();
    req.header.family = AddressFamily::Inet;
    let msgs = dump(
        handle,
        RouteNetlinkMessage::GetAddress(req),
        "dump addresses",
    )
    .await?;
    let mut out = Vec::new();
    for m in msgs {
        if let RouteNetlinkMessage::NewAddress(am) = m {
            if am.header.family != AddressFamily::Inet {
                continue;
            }
            let ip = am.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(v)) => Some(*v),
                _ => None,
            });
            let ip = ip.or_else(|| {
                am.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(v)) => Some(*v),
                    _ => None,
                })
            });
            if let Some(ip) = ip {
                out.push(Addr {
                    index: am.header.index,
                    ip,
                    prefix: am.header.prefix_len,
                    msg: am,
                });
            }
        }
    }
    Ok(out)
}

/// A neighbour or FDB entry.
#[derive(Debug, Clone)]
pub(crate) struct Neigh {
    pub index: u32,
    pub state: NeighbourState,
    pub lladdr: Option<Vec<u8>>,
    pub dst: Option<Ipv4Addr>,
    pub master: Option<u32>,
}

/// All neighbours of one family (`Bridge` dumps the FDB).
pub(crate) async fn neighbours(handle: &Handle, family: AddressFamily) -> Result<Vec<Neigh>> {
    let mut req = NeighbourMessage::default();
    req.header.family = family;
    let msgs = dump(
        handle,
        RouteNetlinkMessage::GetNeighbour(req),
        "dump neighbours",
    )
    .await?;
    let mut out = Vec::new();
    for m in msgs {
        if let RouteNetlinkMessage::NewNeighbour(nm) = m {
            if nm.header.family != family {
                continue;
            }
            let mut n = Neigh {
                index: nm.header.ifindex,
                state: nm.header.state,
                lladdr: None,
                dst: None,
                master: None,
            };
            for a in &nm.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(v) => n.lladdr = Some(v.clone()),
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => n.dst = Some(*v),
                    // AF_BRIDGE messages carry the VXLAN destination raw.
                    NeighbourAttribute::Destination(NeighbourAddress::Other(v)) => {
                        if let Ok(b) = <[u8; 4]>::try_from(v.as_slice()) {
                            n.dst = Some(Ipv4Addr::from(b));
                        }
                    }
                    NeighbourAttribute::Controller(v) => n.master = Some(*v),
                    _ => {}
                }
            }
            out.push(n);
        }
    }
    Ok(out)
}

/// IPv4 routes of the main table.
pub(crate) async fn routes_v4(handle: &Handle) -> Result<Vec<RouteMessage>> {
    let mut req = RouteMessage::default();
    req.header.address_family = AddressFamily::Inet;
    let msgs = dump(handle, RouteNetlinkMessage::GetRoute(req), "dump routes").await?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) if r.header.address_family == AddressFamily::Inet => {
                Some(r)
            }
            _ => None,
        })
        .collect())
}

/// Gateway and output interface of a route.
pub(crate) fn route_gw_oif(r: &RouteMessage) -> (Option<Ipv4Addr>, Option<u32>) {
    let mut gw = None;
    let mut oif = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Gateway(RouteAddress::Inet(v)) => gw = Some(*v),
            RouteAttribute::Oif(v) => oif = Some(*v),
            _ => {}
        }
    }
    (gw, oif)
}

/// The table a route lives in (RTA_TABLE wins over the header's u8).
pub(crate) fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(r.header.table as u32)
}
