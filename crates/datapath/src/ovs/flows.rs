//! The OpenFlow pipeline of the integration bridge, rendered from the
//! desired state as an `ovs-ofctl` flow file.
//!
//! - table 0, classify: a local endpoint's port (with its own source MAC,
//!   and its own IP as IPv4 source and ARP sender only), a gateway port, or
//!   the tunnel with a known `tun_id` from a cluster member's address
//!   (`tun_src`) sets `reg0`
//!   to the network's VNI; tunnel traffic also sets `reg1=1`, gateway
//!   traffic `reg2=1`. Frames from the tunnel with the gateway MAC as source
//!   are dropped. Everything else is dropped.
//! - table 10, ARP responder: ARP requests from local ports for any known
//!   address of the network (endpoints here and remote, and the gateway) are
//!   turned into replies and sent back out of the ingress port.
//! - table 20, forwarding: local MAC → its port; remote MAC → `tun_id` =
//!   VNI, `tun_dst` = host, tunnel port (only for frames not from the
//!   tunnel); broadcast/multicast → every local port of the network plus
//!   one copy per remote host with endpoints in it (head-end replication);
//!   from the tunnel only to local endpoint ports. Unknown unicast is
//!   dropped. `reg0` keeps networks apart.
//! - The gateway is distributed (the same MAC and address on every host), so
//!   it never crosses the tunnel, either way: nothing from the gateway port
//!   (`reg2=1`) is sent to the tunnel, its broadcasts reach local endpoints
//!   only, and frames from the tunnel reach local endpoints only (never the
//!   gateway port).
//!
//! Each flow carries a cookie that is a hash of its own text, so the
//! installed table can be compared with the rendering by cookies alone.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::names::fnv1a;
use crate::MacAddr;

pub(crate) const T_CLASSIFY: u8 = 0;
pub(crate) const T_ARP: u8 = 10;
pub(crate) const T_FORWARD: u8 = 20;

/// One local endpoint as the pipeline sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlowLocal {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub ofport: i64,
}

/// One remote endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlowRemote {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub host: Ipv4Addr,
}

/// One network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlowNet {
    pub vni: u32,
    pub gateway: Ipv4Addr,
    pub gw_ofport: i64,
    pub local: Vec<FlowLocal>,
    pub remote: Vec<FlowRemote>,
}

fn mac_hex(m: MacAddr) -> String {
    let b = m.0;
    format!(
        "0x{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5]
    )
}

/// ARP reply rewrite for `ip` owned by `mac`, back out of the ingress port.
fn arp_reply(mac: MacAddr, ip: Ipv4Addr) -> String {
    format!(
        "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:{mac}->eth_src,\
         set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],\
         move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],load:{}->NXM_NX_ARP_SHA[],\
         load:0x{:08x}->NXM_OF_ARP_SPA[],IN_PORT",
        mac_hex(mac),
        u32::from(ip)
    )
}

/// The flow file (sorted, one flow per line, each with its cookie).
pub(crate) fn render(nets: &[FlowNet], tunnel_ofport: i64, members: &[Ipv4Addr]) -> Vec<String> {
    let gw = MacAddr::GATEWAY;
    let mut flows: BTreeSet<String> = BTreeSet::new();
    let mut add = |table: u8, prio: u16, rest: String| {
        flows.insert(format!("table={table},priority={prio},{rest}"));
    };
    add(T_CLASSIFY, 0, "actions=drop".into());
    add(
        T_CLASSIFY,
        110,
        format!("in_port={tunnel_ofport},dl_src={gw},actions=drop"),
    );
    add(T_ARP, 0, format!("actions=goto_table:{T_FORWARD}"));
    add(T_FORWARD, 0, "actions=drop".into());
    for n in nets {
        let vni = n.vni;
        let set_net = format!("set_field:{vni}->reg0");
        // VXLAN only from the cluster's members.
        for m in members {
            add(
                T_CLASSIFY,
                100,
                format!(
                    "in_port={tunnel_ofport},tun_src={m},tun_id={vni},actions={set_net},set_field:1->reg1,goto_table:{T_ARP}"
                ),
            );
        }
        add(
            T_CLASSIFY,
            100,
            format!(
                "in_port={},dl_src={gw},actions={set_net},set_field:1->reg2,goto_table:{T_ARP}",
                n.gw_ofport
            ),
        );
        // An endpoint sends with its own MAC, IP and ARP sender only (IPv6
        // pinned to its MAC); anything else from its port is dropped.
        for l in &n.local {
            let (port, mac, ip) = (l.ofport, l.mac, l.ip);
            for m in [
                format!("ip,nw_src={ip}"),
                format!("arp,arp_spa={ip},arp_sha={mac}"),
                "ipv6".to_string(),
            ] {
                add(
                    T_CLASSIFY,
                    100,
                    format!("in_port={port},dl_src={mac},{m},actions={set_net},goto_table:{T_ARP}"),
                );
            }
        }

        // ARP responder for every known address, for requests from here.
        let known = n
            .local
            .iter()
            .map(|l| (l.mac, l.ip))
            .chain(n.remote.iter().map(|r| (r.mac, r.ip)))
            .chain(std::iter::once((gw, n.gateway)));
        for (mac, ip) in known {
            add(
                T_ARP,
                100,
                format!(
                    "reg0={vni},reg1=0,arp,arp_op=1,arp_tpa={ip},actions={}",
                    arp_reply(mac, ip)
                ),
            );
        }

        // Unicast.
        for l in &n.local {
            add(
                T_FORWARD,
                100,
                format!("reg0={vni},dl_dst={},actions=output:{}", l.mac, l.ofport),
            );
        }
        add(
            T_FORWARD,
            100,
            format!(
                "reg0={vni},reg1=0,dl_dst={gw},actions=output:{}",
                n.gw_ofport
            ),
        );
        for r in &n.remote {
            add(
                T_FORWARD,
                100,
                format!(
                    "reg0={vni},reg1=0,reg2=0,dl_dst={},actions=set_field:{vni}->tun_id,set_field:{}->tun_dst,output:{tunnel_ofport}",
                    r.mac, r.host
                ),
            );
        }

        // Broadcast and multicast.
        let mut local_ports: Vec<i64> = n.local.iter().map(|l| l.ofport).collect();
        local_ports.sort_unstable();
        local_ports.dedup();
        let hosts: BTreeSet<Ipv4Addr> = n.remote.iter().map(|r| r.host).collect();
        let mut from_here = String::new();
        for p in local_ports.iter().chain(std::iter::once(&n.gw_ofport)) {
            let _ = write!(from_here, "output:{p},");
        }
        if !hosts.is_empty() {
            let _ = write!(from_here, "set_field:{vni}->tun_id,");
            for h in &hosts {
                let _ = write!(from_here, "set_field:{h}->tun_dst,output:{tunnel_ofport},");
            }
        }
        let from_here = from_here.trim_end_matches(',');
        add(
            T_FORWARD,
            50,
            format!(
                "reg0={vni},reg1=0,reg2=0,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions={from_here}"
            ),
        );
        let from_tunnel = if local_ports.is_empty() {
            "drop".to_string()
        } else {
            local_ports
                .iter()
                .map(|p| format!("output:{p}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        add(
            T_FORWARD,
            50,
            format!("reg0={vni},reg1=1,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions={from_tunnel}"),
        );
        // From the gateway: the same local ports, never the tunnel.
        add(
            T_FORWARD,
            50,
            format!("reg0={vni},reg2=1,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions={from_tunnel}"),
        );
    }
    flows
        .into_iter()
        .map(|f| format!("cookie={:#x},{f}", cookie(&f)))
        .collect()
}

/// A packet-out (`ovs-ofctl packet-out` syntax) that sends one throwaway
/// frame through the tunnel to each of `hosts`, under VNI 0, which no
/// network has (so every receiver drops it in table 0). Its only purpose
/// is the userspace datapath's next-hop lookup: a host it has no
/// tunnel neighbour (underlay MAC) for yet is ARPed, and the answer is
/// learned before any workload's packet needs it (the packet that finds
/// no neighbour is dropped while ovs-vswitchd asks).
pub(crate) fn tunnel_warm_up(tunnel_ofport: i64, hosts: &[Ipv4Addr]) -> String {
    // Broadcast destination, a source no endpoint has (02:53 + 0.0.0.0),
    // IEEE local experimental ethertype 0x88b5, zero payload: 60 bytes.
    let mut frame = String::from("ffffffffffff02530000000088b5");
    frame.push_str(&"00".repeat(46));
    let mut actions = String::from("set_field:0->tun_id");
    for h in hosts {
        let _ = write!(actions, ",set_field:{h}->tun_dst,output:{tunnel_ofport}");
    }
    format!("in_port=CONTROLLER,packet={frame},actions={actions}")
}

fn cookie(flow: &str) -> u64 {
    // Keep clear of 0 (the cookie of flows not made by us).
    fnv1a(flow.as_bytes()) | 1
}

/// The cookies of a rendering (sorted).
pub(crate) fn rendered_cookies(flows: &[String]) -> Vec<u64> {
    let mut v: Vec<u64> = flows.iter().filter_map(|f| parse_cookie(f)).collect();
    v.sort_unstable();
    v
}

/// The cookies of `ovs-ofctl dump-flows` output (sorted).
pub(crate) fn dumped_cookies(dump: &str) -> Vec<u64> {
    let mut v: Vec<u64> = dump
        .lines()
        .filter(|l| l.contains("actions="))
        .map(|l| parse_cookie(l).unwrap_or(0))
        .collect();
    v.sort_unstable();
    v
}

fn parse_cookie(line: &str) -> Option<u64> {
    let i = line.find("cookie=0x")?;
    let hex: String = line[i + 9..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    u64::from_str_radix(&hex, 16).ok()
}

/// A hash of the whole rendering.
pub(crate) fn hash(flows: &[String]) -> String {
    format!("{:016x}", fnv1a(flows.join("\n").as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<FlowNet> {
        vec![FlowNet {
            vni: 100,
            gateway: Ipv4Addr::new(10, 10, 0, 1),
            gw_ofport: 2,
            local: vec![FlowLocal {
                mac: MacAddr::from_ipv4(Ipv4Addr::new(10, 10, 0, 11)),
                ip: Ipv4Addr::new(10, 10, 0, 11),
                ofport: 3,
            }],
            remote: vec![
                FlowRemote {
                    mac: MacAddr::from_ipv4(Ipv4Addr::new(10, 10, 0, 12)),
                    ip: Ipv4Addr::new(10, 10, 0, 12),
                    host: Ipv4Addr::new(198, 18, 0, 2),
                },
                FlowRemote {
                    mac: MacAddr::from_ipv4(Ipv4Addr::new(10, 10, 0, 14)),
                    ip: Ipv4Addr::new(10, 10, 0, 14),
                    host: Ipv4Addr::new(198, 18, 0, 2),
                },
            ],
        }]
    }

    #[test]
    fn tunnel_warm_up_reaches_each_host_under_no_network() {
        let hosts = [Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 3)];
        let p = tunnel_warm_up(7, &hosts);
        assert!(
            p.starts_with("in_port=CONTROLLER,packet=ffffffffffff"),
            "{p}"
        );
        let frame = p
            .split("packet=")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        assert_eq!(frame.len(), 120, "a 60-byte frame: {frame}");
        assert!(p.ends_with(
            "actions=set_field:0->tun_id,set_field:198.18.0.2->tun_dst,output:7,\
             set_field:198.18.0.3->tun_dst,output:7"
        ));
    }

    #[test]
    fn rendering_is_stable_and_complete() {
        let members = [Ipv4Addr::new(198, 18, 0, 2)];
        let a = render(&sample(), 1, &members);
        assert_eq!(a, render(&sample(), 1, &members));
        let text = a.join("\n");
        // One copy per remote host, not per remote endpoint.
        let bcast = a
            .iter()
            .find(|f| f.contains("reg1=0,reg2=0,dl_dst=01:00:00:00:00:00"))
            .unwrap();
        assert_eq!(bcast.matches("output:1").count(), 1, "{bcast}");
        assert!(
            bcast.contains("output:3,output:2,set_field:100->tun_id"),
            "{bcast}"
        );
        // From the tunnel: local endpoints only, never back to the tunnel.
        let from_tun = a
            .iter()
            .find(|f| f.contains("reg1=1,dl_dst=01:00:00:00:00:00"))
            .unwrap();
        assert!(from_tun.ends_with("actions=output:3"), "{from_tun}");
        // From the gateway: local endpoints only, never the tunnel; and the
        // gateway's unicast never reaches a remote MAC.
        let from_gw = a
            .iter()
            .find(|f| f.contains("reg2=1,dl_dst=01:00:00:00:00:00"))
            .unwrap();
        assert!(from_gw.ends_with("actions=output:3"), "{from_gw}");
        assert!(text.contains(
            "in_port=2,dl_src=02:53:50:00:00:01,actions=set_field:100->reg0,set_field:1->reg2,"
        ));
        for f in a.iter().filter(|f| f.contains("output:1")) {
            assert!(f.contains("reg2=0"), "to the tunnel without reg2=0: {f}");
        }
        assert!(text.contains("arp_tpa=10.10.0.12,actions=move:NXM_OF_ETH_SRC[]"));
        assert!(text.contains("load:0x0a0a000c->NXM_OF_ARP_SPA[]"));
        assert!(text.contains("in_port=1,dl_src=02:53:50:00:00:01,actions=drop"));
        assert!(text.contains("in_port=1,tun_src=198.18.0.2,tun_id=100,"));
        assert!(
            !text.contains("in_port=1,tun_id="),
            "tunnel open to any source"
        );
        assert!(text.contains("in_port=3,dl_src=02:53:0a:0a:00:0b,ip,nw_src=10.10.0.11,"));
        assert!(text.contains(
            "in_port=3,dl_src=02:53:0a:0a:00:0b,arp,arp_spa=10.10.0.11,arp_sha=02:53:0a:0a:00:0b,"
        ));
        assert!(!text.contains("in_port=3,dl_src=02:53:0a:0a:00:0b,actions="));
        // Cookies are unique and survive a dump round trip.
        let c = rendered_cookies(&a);
        let mut d = c.clone();
        d.dedup();
        assert_eq!(c.len(), d.len());
        assert_eq!(c.len(), a.len());
        let dump: String = a
            .iter()
            .map(|f| format!(" {}, duration=1s, n_packets=0\n", f))
            .collect();
        assert_eq!(dumped_cookies(&dump), c);
        // A change touches only the flows it must.
        let mut s2 = sample();
        s2[0].remote.pop();
        let b = render(&s2, 1, &members);
        // (Same host: the broadcast flow stays; its unicast and ARP flows go.)
        assert_eq!(b.iter().filter(|f| !a.contains(f)).count(), 0);
        assert_eq!(a.len() - b.len(), 2);
    }
}
