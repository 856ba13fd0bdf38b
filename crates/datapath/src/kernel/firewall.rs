//! Firewall rules of both datapaths (the OVS gateway ports carry the Linux
//! bridges' names, so one rendering serves both).
//!
//! Everything lives in two nftables tables of our own (`inet <table>` for
//! forwarding, isolation and masquerade; `bridge <table>` to keep the anycast
//! gateway off the tunnel), written atomically with `nft -f -` (flush by
//! delete + re-create in one transaction). When the iptables `filter` table
//! exists (iptables-nft, e.g. Docker's `FORWARD DROP` policy), an accept in
//! our own table cannot override a drop there, so we also keep a chain of
//! accepts in it (`iptables-restore --noflush`), jumped to from `DOCKER-USER`
//! when that exists, else from `FORWARD`.
//!
//! Each rendering carries a hash of itself as a comment, so checking whether
//! the kernel already holds the wanted rules is one listing, not a diff.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use tracing::debug;

use crate::command::{self, Output};
use crate::error::{collect, DatapathError, Result};
use crate::names::{fnv1a, BRIDGE_PREFIX, VXLAN_PREFIX};
use crate::plan::NetPlan;
use crate::{MacAddr, VXLAN_PORT};

/// How often an otherwise unchanged firewall is re-verified.
pub const FIREWALL_RECHECK: Duration = Duration::from_secs(30);
/// Default name of our nftables tables (and, upper-cased, the iptables chain).
pub const DEFAULT_FIREWALL_TABLE: &str = "socketplane";

/// What the firewall needs to know about one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FwNetwork {
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// What the firewall needs beyond the networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FwHost {
    /// Underlay addresses of the cluster's members: VXLAN is accepted from
    /// them only, and workloads never reach them.
    pub members: Vec<Ipv4Addr>,
    /// Local endpoints' bridge ports (Linux datapath), each pinned to its
    /// own source MAC, IP and ARP sender.
    pub ports: Vec<FwPort>,
    /// Routed networks whose remote endpoints arrive as plain IP on the
    /// underlay (Linux datapath).
    pub routed: Vec<FwRouted>,
}

/// A routed network: packets from `sources` (its remote endpoints reached
/// by routes) arrive on interface `underlay` and are forwarded to `bridge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FwRouted {
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub underlay: String,
    pub sources: Vec<Ipv4Addr>,
}

impl FwHost {
    /// The firewall's view of this host: the members of `desired` (with
    /// `own`, this host's underlay address) and the given endpoint ports.
    pub(crate) fn new(desired: &crate::DesiredState, own: Ipv4Addr, ports: Vec<FwPort>) -> Self {
        FwHost {
            members: crate::plan::members(desired, own),
            ports,
            routed: Vec::new(),
        }
    }

    /// The same with these routed networks.
    pub(crate) fn with_routed(mut self, routed: Vec<FwRouted>) -> Self {
        self.routed = routed;
        self
    }
}

/// A local endpoint's bridge port and the only sources it may send with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FwPort {
    pub ifname: String,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
}

/// The rules of one datapath instance.
#[derive(Debug, Clone)]
pub(crate) struct Firewall {
    table: String,
    chain: String,
    /// Prefix of endpoint host ends that are no bridge ports (OVS), whose
    /// frames the host's own stack sees too: it must never take them.
    switch_ports: Option<&'static str>,
}

/// Rendered rules plus the hash that tags them.
pub(crate) struct Rendered {
    pub hash: String,
    pub nft: String,
    pub iptables: String,
    pub empty: bool,
}

/// Where the programs come from, for the error when one is missing.
const PACKAGE: &str = "nftables/iptables";

async fn run(bin: &str, args: &[&str], stdin: Option<&str>) -> Result<Output> {
    command::run(bin, args, stdin, PACKAGE).await
}

async fn run_ok(bin: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    command::run_ok(bin, args, stdin, PACKAGE).await
}

/// What was last verified of the firewall (so an unchanged one is not
/// listed on every apply).
#[derive(Debug, Default)]
pub(crate) struct FirewallCheck {
    hash: Option<String>,
    checked: Option<Instant>,
    /// From the last full check, if it left rules in place: whether the
    /// iptables `filter` table exists (then our chain and its jump too).
    filter: Option<bool>,
}

impl Firewall {
    /// `table` names our nftables tables; the iptables chain is its upper-case form.
    pub(crate) fn new(table: &str) -> Self {
        let mut chain: String = table
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '-'
                }
            })
            .collect();
        chain.truncate(28);
        Firewall {
            table: table.to_string(),
            chain,
            switch_ports: None,
        }
    }

    /// Endpoint host ends named `<prefix>*` are switch ports, not bridge
    /// ports: the host's stack drops whatever arrives on them.
    pub(crate) fn with_switch_ports(mut self, prefix: &'static str) -> Self {
        self.switch_ports = Some(prefix);
        self
    }

    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    pub(crate) fn render(&self, nets: &[FwNetwork], host: &FwHost) -> Rendered {
        let mut nets = nets.to_vec();
        nets.sort_by(|a, b| a.bridge.cmp(&b.bridge));
        let mut members = host.members.clone();
        members.sort_unstable();
        members.dedup();
        let members_set = members
            .iter()
            .map(Ipv4Addr::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let mut ports = host.ports.clone();
        ports.sort_by(|a, b| a.ifname.cmp(&b.ifname));
        let mut routed: Vec<FwRouted> = host.routed.clone();
        routed.sort_by(|a, b| a.bridge.cmp(&b.bridge));
        for r in &mut routed {
            r.sources.sort_unstable();
            r.sources.dedup();
        }
        let sources = |r: &FwRouted| {
            r.sources
                .iter()
                .map(Ipv4Addr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let gw = MacAddr::GATEWAY;
        let br_any = format!("{BRIDGE_PREFIX}*");
        let vx_any = format!("{VXLAN_PREFIX}*");

        let mut body = String::new();
        // Traffic inside a network (bridged, possibly through the tunnel)
        // needs no connection tracking: skip it, it is the hot path.
        let _ = writeln!(body, "  chain prerouting {{");
        let _ = writeln!(
            body,
            "    type filter hook prerouting priority raw; policy accept;"
        );
        for n in &nets {
            let _ = writeln!(
                body,
                "    iifname \"{0}\" ip saddr {1} ip daddr {1} ip daddr != {2} notrack",
                n.bridge, n.subnet, n.gateway
            );
        }
        // Routed networks: remote endpoints' packets arrive as plain IP.
        for r in routed.iter().filter(|r| !r.sources.is_empty()) {
            let _ = writeln!(
                body,
                "    iifname \"{}\" ip saddr {{ {} }} ip daddr {} notrack",
                r.underlay,
                sources(r),
                r.subnet
            );
        }
        let _ = writeln!(body, "  }}");
        let _ = writeln!(body, "  chain forward {{");
        let _ = writeln!(
            body,
            "    type filter hook forward priority filter; policy accept;"
        );
        // Workloads are fenced from every host of the cluster (remote
        // workloads too: they would come masqueraded through their host).
        if !members.is_empty() {
            let _ = writeln!(
                body,
                "    iifname \"{br_any}\" ip daddr {{ {members_set} }} drop"
            );
        }
        if let Some(p) = self.switch_ports {
            let _ = writeln!(body, "    iifname \"{p}*\" drop");
        }
        // A routed network's remote addresses are routes, not bridge
        // ports: no other network reaches them.
        for r in &routed {
            let _ = writeln!(
                body,
                "    iifname \"{br_any}\" iifname != \"{}\" ip daddr {} drop",
                r.bridge, r.subnet
            );
        }
        for n in &nets {
            let _ = writeln!(body, "    iifname \"{0}\" oifname \"{0}\" accept", n.bridge);
        }
        // Its remote endpoints' packets, and only theirs, come in routed.
        for r in routed.iter().filter(|r| !r.sources.is_empty()) {
            let _ = writeln!(
                body,
                "    iifname \"{}\" oifname \"{}\" ip saddr {{ {} }} ip daddr {} accept",
                r.underlay,
                r.bridge,
                sources(r),
                r.subnet
            );
        }
        let _ = writeln!(body, "    iifname \"{br_any}\" oifname \"{br_any}\" drop");
        let _ = writeln!(body, "    iifname \"{br_any}\" accept");
        let _ = writeln!(
            body,
            "    oifname \"{br_any}\" ct state established,related accept"
        );
        let _ = writeln!(body, "    oifname \"{br_any}\" drop");
        let _ = writeln!(body, "  }}");
        let _ = writeln!(body, "  chain input {{");
        let _ = writeln!(
            body,
            "    type filter hook input priority filter; policy accept;"
        );
        for n in &nets {
            for o in nets.iter().filter(|o| o.bridge != n.bridge) {
                let _ = writeln!(
                    body,
                    "    iifname \"{}\" ip daddr {} drop",
                    n.bridge, o.subnet
                );
            }
        }
        // Workloads reach no address of the host (gateways, underlay, any
        // other), except: replies to what the host opened; ping to their
        // own gateway (a diagnostic); and DNS on their own gateway (the
        // DNS service), an explicit allow.
        let _ = writeln!(
            body,
            "    iifname \"{br_any}\" ct state established,related accept"
        );
        for n in &nets {
            for proto in ["udp", "tcp"] {
                let _ = writeln!(
                    body,
                    "    iifname \"{}\" ip daddr {} {proto} dport 53 accept",
                    n.bridge, n.gateway
                );
            }
            let _ = writeln!(
                body,
                "    iifname \"{}\" ip daddr {} icmp type echo-request accept",
                n.bridge, n.gateway
            );
        }
        let _ = writeln!(body, "    iifname \"{br_any}\" drop");
        if let Some(p) = self.switch_ports {
            let _ = writeln!(body, "    iifname \"{p}*\" drop");
        }
        // VXLAN only from the cluster's members.
        if members.is_empty() {
            let _ = writeln!(body, "    udp dport {VXLAN_PORT} drop");
        } else {
            let _ = writeln!(
                body,
                "    udp dport {VXLAN_PORT} ip saddr != {{ {members_set} }} drop"
            );
        }
        let _ = writeln!(body, "  }}");
        let _ = writeln!(body, "  chain postrouting {{");
        let _ = writeln!(
            body,
            "    type nat hook postrouting priority srcnat; policy accept;"
        );
        for n in &nets {
            let _ = writeln!(
                body,
                "    ip saddr {0} ip daddr != {0} oifname != \"{1}\" masquerade",
                n.subnet, n.bridge
            );
        }
        let _ = writeln!(body, "  }}");

        let mut bridge = String::new();
        // Each endpoint sends with its own MAC, IP and ARP sender only.
        let _ = writeln!(bridge, "  chain prerouting {{");
        let _ = writeln!(
            bridge,
            "    type filter hook prerouting priority filter; policy accept;"
        );
        for p in &ports {
            let (i, mac, ip) = (&p.ifname, p.mac, p.ip);
            let _ = writeln!(bridge, "    iifname \"{i}\" ether saddr != {mac} drop");
            let _ = writeln!(bridge, "    iifname \"{i}\" ip saddr != {ip} drop");
            let _ = writeln!(bridge, "    iifname \"{i}\" arp saddr ether != {mac} drop");
            let _ = writeln!(bridge, "    iifname \"{i}\" arp saddr ip != {ip} drop");
        }
        let _ = writeln!(bridge, "  }}");
        let _ = writeln!(bridge, "  chain input {{");
        let _ = writeln!(
            bridge,
            "    type filter hook input priority filter; policy accept;"
        );
        let _ = writeln!(bridge, "    iifname \"{vx_any}\" ether type arp drop");
        let _ = writeln!(bridge, "    iifname \"{vx_any}\" ether saddr {gw} drop");
        // Every host has the gateway: none is reached across the tunnel.
        let _ = writeln!(bridge, "    iifname \"{vx_any}\" ether daddr {gw} drop");
        let _ = writeln!(bridge, "  }}");
        let _ = writeln!(bridge, "  chain forward {{");
        let _ = writeln!(
            bridge,
            "    type filter hook forward priority filter; policy accept;"
        );
        let _ = writeln!(bridge, "    iifname \"{vx_any}\" ether saddr {gw} drop");
        let _ = writeln!(bridge, "  }}");
        let _ = writeln!(bridge, "  chain output {{");
        let _ = writeln!(
            bridge,
            "    type filter hook output priority filter; policy accept;"
        );
        let _ = writeln!(bridge, "    oifname \"{vx_any}\" ether saddr {gw} drop");
        let _ = writeln!(bridge, "  }}");

        let mut ipt_rules = String::new();
        for n in &nets {
            let _ = writeln!(
                ipt_rules,
                "-A {} -i {1} -o {1} -j ACCEPT",
                self.chain, n.bridge
            );
            let _ = writeln!(
                ipt_rules,
                "-A {} -i {} ! -o {BRIDGE_PREFIX}+ -j ACCEPT",
                self.chain, n.bridge
            );
            let _ = writeln!(
                ipt_rules,
                "-A {} -o {} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                self.chain, n.bridge
            );
        }
        for r in &routed {
            let _ = writeln!(
                ipt_rules,
                "-A {} -i {} -o {} -s {3} -d {3} -j ACCEPT",
                self.chain, r.underlay, r.bridge, r.subnet
            );
        }

        let hash = format!(
            "{:016x}",
            fnv1a(format!("{}\n{body}\n{bridge}\n{ipt_rules}", self.table).as_bytes())
        );
        let t = &self.table;
        let nft = format!(
            "table inet {t} {{}}\ndelete table inet {t}\ntable bridge {t} {{}}\ndelete table bridge {t}\n\
             table inet {t} {{\n  comment \"sp-cfg-{hash}\"\n{body}}}\n\
             table bridge {t} {{\n  comment \"sp-cfg-{hash}\"\n{bridge}}}\n"
        );
        let iptables = format!(
            "*filter\n:{c} - [0:0]\n-A {c} -m comment --comment sp-cfg-{hash}\n{ipt_rules}COMMIT\n",
            c = self.chain
        );
        Rendered {
            hash,
            nft,
            iptables,
            empty: nets.is_empty(),
        }
    }

    /// Whether the iptables `filter` table exists (so its FORWARD chain counts).
    async fn iptables_filter_exists(&self) -> Result<bool> {
        let out = run_ok("nft", &["list", "tables"], None).await?;
        Ok(out.lines().any(|l| l.trim() == "table ip filter"))
    }

    async fn iptables_parent(&self) -> Result<&'static str> {
        let out = run("iptables", &["-w", "-S", "DOCKER-USER"], None).await?;
        Ok(if out.ok { "DOCKER-USER" } else { "FORWARD" })
    }

    async fn jump_present(&self, parent: &str) -> Result<bool> {
        Ok(
            run("iptables", &["-w", "-C", parent, "-j", &self.chain], None)
                .await?
                .ok,
        )
    }

    /// Whether the kernel holds exactly `r`.
    pub(crate) async fn is_current(&self, r: &Rendered) -> Result<bool> {
        let t = &self.table;
        let inet = match run("nft", &["list", "table", "inet", t], None).await {
            Ok(o) => o,
            // Without nft there can be no rules of ours to remove.
            Err(DatapathError::Unavailable { .. }) if r.empty => return Ok(true),
            Err(e) => return Err(e),
        };
        let bridge = run("nft", &["list", "table", "bridge", t], None).await?;
        let filter = self.iptables_filter_exists().await?;
        if r.empty {
            if inet.ok || bridge.ok {
                return Ok(false);
            }
            if filter {
                let chain = run("iptables", &["-w", "-S", &self.chain], None).await?;
                return Ok(!chain.ok);
            }
            return Ok(true);
        }
        let tag = format!("sp-cfg-{}", r.hash);
        if !(inet.ok && inet.stdout.contains(&tag) && bridge.ok && bridge.stdout.contains(&tag)) {
            return Ok(false);
        }
        if filter {
            let chain = run("iptables", &["-w", "-S", &self.chain], None).await?;
            if !(chain.ok && chain.stdout.contains(&tag)) {
                return Ok(false);
            }
            let parent = self.iptables_parent().await?;
            if !self.jump_present(parent).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes `r` (removes everything when it is empty).
    pub(crate) async fn write(&self, r: &Rendered) -> Result<()> {
        if r.empty {
            return self.remove().await;
        }
        run_ok("nft", &["-f", "-"], Some(&r.nft)).await?;
        if self.iptables_filter_exists().await? {
            run_ok("iptables-restore", &["-w", "--noflush"], Some(&r.iptables)).await?;
            let parent = self.iptables_parent().await?;
            if !self.jump_present(parent).await? {
                run_ok(
                    "iptables",
                    &["-w", "-I", parent, "1", "-j", &self.chain],
                    None,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Removes every rule of ours; missing pieces are fine.
    pub(crate) async fn remove(&self) -> Result<()> {
        let t = &self.table;
        let script = format!(
            "table inet {t} {{}}\ndelete table inet {t}\ntable bridge {t} {{}}\ndelete table bridge {t}\n"
        );
        let mut errors = Vec::new();
        if let Err(e) = run_ok("nft", &["-f", "-"], Some(&script)).await {
            errors.push(e);
        }
        match self.iptables_filter_exists().await {
            Ok(true) => {
                for parent in ["FORWARD", "DOCKER-USER"] {
                    // Remove every jump (at most a few; bounded).
                    for _ in 0..16 {
                        match run("iptables", &["-w", "-D", parent, "-j", &self.chain], None).await
                        {
                            Ok(o) if o.ok => continue,
                            Ok(_) => break,
                            Err(e) => {
                                errors.push(e);
                                break;
                            }
                        }
                    }
                }
                let exists = run("iptables", &["-w", "-S", &self.chain], None).await;
                if matches!(exists, Ok(ref o) if o.ok) {
                    if let Err(e) = run_ok("iptables", &["-w", "-F", &self.chain], None).await {
                        errors.push(e);
                    }
                    if let Err(e) = run_ok("iptables", &["-w", "-X", &self.chain], None).await {
                        errors.push(e);
                    }
                }
            }
            Ok(false) => {}
            Err(e) => errors.push(e),
        }
        collect(errors)
    }

    /// Makes the kernel hold the rules for `plans`; returns writes. Lists
    /// the rules only when the networks changed, after a failure or every
    /// [`FIREWALL_RECHECK`].
    pub(crate) async fn ensure(
        &self,
        plans: &[NetPlan],
        host: &FwHost,
        check: &mut FirewallCheck,
    ) -> Result<usize> {
        let nets: Vec<FwNetwork> = plans
            .iter()
            .map(|p| FwNetwork {
                bridge: p.bridge.clone(),
                subnet: p.spec.subnet,
                gateway: p.spec.gateway,
            })
            .collect();
        let rendered = self.render(&nets, host);
        let fresh = check
            .checked
            .is_some_and(|t| t.elapsed() < FIREWALL_RECHECK);
        if check.hash.as_deref() == Some(rendered.hash.as_str()) && fresh {
            return Ok(0);
        }
        // A change moments after a full check (an endpoint came or went):
        // the kernel holds what we last wrote, so only the write is needed,
        // not the listing (two programs instead of eleven per change).
        if let (true, Some(_), Some(filter), false) =
            (fresh, &check.hash, check.filter, rendered.empty)
        {
            check.hash = None;
            debug!(table = self.table(), "Writing firewall rules.");
            run_ok("nft", &["-f", "-"], Some(&rendered.nft)).await?;
            if filter {
                run_ok(
                    "iptables-restore",
                    &["-w", "--noflush"],
                    Some(&rendered.iptables),
                )
                .await?;
            }
            check.hash = Some(rendered.hash);
            return Ok(1);
        }
        check.hash = None;
        check.filter = None;
        let changes = if self.is_current(&rendered).await? {
            0
        } else {
            debug!(table = self.table(), "Writing firewall rules.");
            self.write(&rendered).await?;
            1
        };
        // Only rules in place (chain and jump included) allow the short
        // write next time; after a removal the full write puts them back.
        check.filter = if rendered.empty {
            None
        } else {
            Some(self.iptables_filter_exists().await?)
        };
        check.hash = Some(rendered.hash);
        check.checked = Some(Instant::now());
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets() -> Vec<FwNetwork> {
        vec![
            FwNetwork {
                bridge: "spbr200".into(),
                subnet: "10.20.0.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 20, 0, 1),
            },
            FwNetwork {
                bridge: "spbr100".into(),
                subnet: "10.10.0.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 10, 0, 1),
            },
        ]
    }

    #[test]
    fn rendering_is_stable_and_complete() {
        let fw = Firewall::new("socketplane");
        let host = FwHost {
            members: vec![Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 1)],
            ports: vec![FwPort {
                ifname: "spv1".into(),
                mac: MacAddr::from_ipv4(Ipv4Addr::new(10, 10, 0, 11)),
                ip: Ipv4Addr::new(10, 10, 0, 11),
            }],
            routed: vec![],
        };
        let a = fw.render(&nets(), &host);
        let mut rev = nets();
        rev.reverse();
        let b = fw.render(&rev, &host);
        assert_eq!(a.hash, b.hash, "order of networks must not matter");
        assert!(!a.empty);
        for want in [
            "iifname \"spbr100\" oifname \"spbr100\" accept",
            "iifname \"spbr*\" oifname \"spbr*\" drop",
            "ip saddr 10.10.0.0/24 ip daddr != 10.10.0.0/24 oifname != \"spbr100\" masquerade",
            "iifname \"spbr100\" ip daddr 10.20.0.0/24 drop",
            "oifname \"spvx*\" ether saddr 02:53:50:00:00:01 drop",
            "iifname \"spvx*\" ether daddr 02:53:50:00:00:01 drop",
            "delete table inet socketplane",
            "iifname \"spbr*\" ip daddr { 198.18.0.1, 198.18.0.2 } drop",
            "iifname \"spbr100\" ip daddr 10.10.0.1 udp dport 53 accept",
            "iifname \"spbr100\" ip daddr 10.10.0.1 tcp dport 53 accept",
            "udp dport 4789 ip saddr != { 198.18.0.1, 198.18.0.2 } drop",
            "iifname \"spv1\" ip saddr != 10.10.0.11 drop",
            "iifname \"spv1\" arp saddr ether != 02:53:0a:0a:00:0b drop",
        ] {
            assert!(a.nft.contains(want), "missing {want:?} in\n{}", a.nft);
        }
        assert!(a
            .iptables
            .contains("-A SOCKETPLANE -i spbr100 -o spbr100 -j ACCEPT"));
        assert!(a.iptables.contains(&format!("sp-cfg-{}", a.hash)));
        let other = Firewall::new("sp-test_1").render(&nets(), &host);
        assert_ne!(other.hash, a.hash);
        assert!(other.iptables.contains(":SP-TEST-1 - [0:0]"));
        assert!(Firewall::new("x").render(&[], &FwHost::default()).empty);
        let fenced = fw.render(&nets(), &FwHost::default());
        assert!(fenced.nft.contains("udp dport 4789 drop"), "{}", fenced.nft);
    }

    #[test]
    fn routed_networks_accept_only_their_remote_sources_from_the_underlay() {
        let fw = Firewall::new("socketplane");
        let host = FwHost::default().with_routed(vec![FwRouted {
            bridge: "spbr100".into(),
            subnet: "10.10.0.0/24".parse().unwrap(),
            underlay: "eth0".into(),
            sources: vec![Ipv4Addr::new(10, 10, 0, 12), Ipv4Addr::new(10, 10, 0, 2)],
        }]);
        let r = fw.render(&nets(), &host);
        for want in [
            "iifname \"eth0\" ip saddr { 10.10.0.2, 10.10.0.12 } ip daddr 10.10.0.0/24 notrack",
            "iifname \"spbr*\" iifname != \"spbr100\" ip daddr 10.10.0.0/24 drop",
            "iifname \"eth0\" oifname \"spbr100\" ip saddr { 10.10.0.2, 10.10.0.12 } ip daddr 10.10.0.0/24 accept",
        ] {
            assert!(r.nft.contains(want), "missing {want:?} in\n{}", r.nft);
        }
        // The accept comes before the catch-all drop towards bridges.
        let accept = r.nft.find("oifname \"spbr100\" ip saddr").unwrap();
        let drop = r.nft.find("    oifname \"spbr*\" drop").unwrap();
        assert!(accept < drop);
        assert!(r.iptables.contains(
            "-A SOCKETPLANE -i eth0 -o spbr100 -s 10.10.0.0/24 -d 10.10.0.0/24 -j ACCEPT"
        ));
        assert_ne!(r.hash, fw.render(&nets(), &FwHost::default()).hash);
    }
}
