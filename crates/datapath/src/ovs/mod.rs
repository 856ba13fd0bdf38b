//! The Open vSwitch datapath: one integration bridge (default
//! [`DEFAULT_BRIDGE`]), `fail_mode=secure`, one flow-based VXLAN port
//! (`remote_ip=flow`, `key=flow`, UDP 4789), endpoint ports (veth host ends)
//! tagged in `external_ids`, a gateway per network as an internal port
//! `spbr<vni>` with the gateway IP and [`MacAddr::GATEWAY`], and an OpenFlow
//! pipeline rendered from the desired state (see `flows.rs`) installed
//! atomically with `ovs-ofctl --bundle replace-flows`.
//!
//! OVSDB is spoken natively ([`socketplane_ovsdb`]); flows go through the
//! `ovs-ofctl` binary, talking to the bridge's management socket
//! `<rundir>/<bridge>.mgmt`, where `<rundir>` is the directory of the OVSDB
//! socket (as in every standard installation: `/var/run/openvswitch`).
//! Isolation and masquerade use the shared firewall (`kernel::firewall`):
//! the gateway ports carry the same names as the Linux bridges (`spbr<vni>`).
//!
//! With the userspace (`netdev`) datapath the operator must first put the
//! underlay address on an OVS bridge; how to do that, and how to run one
//! Open vSwitch per lab host, is in the crate's README ("Open vSwitch
//! datapath: operator setup").
//!
//! With `netdev`, ovs-vswitchd resolves tunnel next hops itself, in a
//! neighbour table of its own: the datapath has it resolve every member
//! ahead of traffic, and keeps the kernel from answering ARP on the
//! underlay bridge's uplinks (see `warm_up_tunnels`, `ensure_quiet_uplinks`).
//!
//! The gateway never crosses the tunnel (see `flows.rs`). The host ends of
//! the veths are not bridge ports, so the host's own stack sees their frames
//! too: they are set to answer no ARP (`arp_ignore=8`), else the host would
//! answer a workload's ARP for its gateway with the veth's MAC.
//!
//! # Ownership
//!
//! The integration bridge is ours. On it, ports whose `external_ids` carry
//! a `socketplane-*` key are ours; other ports are left alone. Veth ends are
//! named `spo<hash>` (host) / `spq<hash>` (workload end before it is moved).

pub(crate) mod flows;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rtnetlink::LinkUnspec;
use serde_json::{json, Value};
use socketplane_ovsdb::{atom, ops, Client, Snapshot};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use self::flows::{FlowLocal, FlowNet, FlowRemote};
use crate::command;
use crate::kernel::firewall::{Firewall, FirewallCheck, FwHost, DEFAULT_FIREWALL_TABLE};
use crate::kernel::nl;
use crate::kernel::sysctl::{self, ensure_ip_forward};
use crate::kernel::underlay;
use crate::kernel::veth::{Attach, EndpointCache, Endpoints};
use crate::names::VethNames;
use crate::plan::{members, NetPlan};
use crate::tally::Tally;
use crate::{
    ApplyReport, Datapath, DatapathError, DesiredState, EndpointIfnames, MacAddr, Result, Underlay,
    VXLAN_PORT,
};

/// OpenFlow port numbers by port name.
type Ofports = HashMap<String, i64>;

/// Default integration bridge.
pub const DEFAULT_BRIDGE: &str = "docker0-ovs";
/// Default OVSDB socket.
pub const DEFAULT_OVSDB: &str = socketplane_ovsdb::DEFAULT_SOCKET;
/// The flow-based VXLAN port.
pub const TUNNEL_PORT: &str = "spovxlan";
/// `external_ids` keys on our ports.
pub const EXT_NETWORK: &str = "socketplane-network";
pub const EXT_ENDPOINT: &str = "socketplane-endpoint";
pub const EXT_ROLE: &str = "socketplane-role";
/// Host end of an endpoint's veth pair: `spo<11 hex digits>`.
pub const VETH_PREFIX: &str = "spo";
/// Workload end before it is moved: `spq<11 hex digits>`.
pub const PEER_PREFIX: &str = "spq";
/// How long to wait for ovs-vswitchd to realise a port.
const PORT_WAIT: Duration = Duration::from_secs(10);
/// How often unchanged flows are compared with the bridge's table anyway.
pub const FLOW_RECHECK: Duration = Duration::from_secs(30);
/// How often every member's tunnel neighbour is resolved again (userspace
/// datapath): well within ovs-vswitchd's aging of unused entries (15 min).
pub const TUNNEL_WARM_UP: Duration = Duration::from_secs(300);

/// How the OVS datapath binds to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvsConfig {
    /// The ovsdb-server unix socket ([`DEFAULT_OVSDB`]).
    pub ovsdb: PathBuf,
    /// The integration bridge ([`DEFAULT_BRIDGE`]).
    pub bridge: String,
    /// Interface holding the underlay address (with the `netdev` datapath:
    /// an OVS bridge's internal port, e.g. `br-phy`).
    pub underlay_iface: String,
    /// Local tunnel address; `None`: the first IPv4 address of the interface.
    pub underlay_ip: Option<Ipv4Addr>,
    /// Default overlay MTU; `None`: the underlay MTU − 50.
    pub mtu: Option<u32>,
}

impl OvsConfig {
    /// Defaults for everything but the underlay interface.
    pub fn new(underlay_iface: impl Into<String>) -> Self {
        OvsConfig {
            ovsdb: DEFAULT_OVSDB.into(),
            bridge: DEFAULT_BRIDGE.into(),
            underlay_iface: underlay_iface.into(),
            underlay_ip: None,
            mtu: None,
        }
    }
}

/// Both veth prefixes together.
pub const VETHS: VethNames = VethNames {
    host: VETH_PREFIX,
    peer: PEER_PREFIX,
};

fn unavailable(what: &str, why: impl Into<String>) -> DatapathError {
    DatapathError::unavailable(what, why)
}

fn db_err(context: &str, source: socketplane_ovsdb::Error) -> DatapathError {
    DatapathError::Ovsdb {
        context: format!("ovsdb-server: {context}"),
        source,
    }
}

fn ofctl_err(msg: impl Into<String>) -> DatapathError {
    unavailable("ovs-ofctl", msg)
}

#[derive(Default)]
struct Cache {
    /// OVSDB connection generation the rest was verified under.
    generation: u64,
    flows_hash: Option<String>,
    /// When the installed flows were last compared with the rendering, and
    /// under which ovs-vswitchd process (a restarted one has no flows).
    flows_checked: Option<(Instant, Option<u32>)>,
    endpoints: EndpointCache,
    firewall: FirewallCheck,
    /// Members whose tunnel neighbour was resolved (see [`flows::tunnel_warm_up`]),
    /// under which ovs-vswitchd process, and since when all of them.
    warmed: HashSet<Ipv4Addr>,
    warmed_under: Option<(Instant, Option<u32>)>,
    /// Uplinks already kept from answering ARP (see `ensure_quiet_uplinks`).
    quiet_uplinks: HashSet<String>,
}

/// What a port on the bridge must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PortSpec {
    kind: &'static str,
    options: BTreeMap<String, String>,
    external_ids: BTreeMap<String, String>,
    mac: Option<String>,
    mtu_request: Option<i64>,
}

impl PortSpec {
    fn iface_row(&self, name: &str) -> serde_json::Map<String, Value> {
        ops::row([
            ("name", json!(name)),
            ("type", json!(self.kind)),
            ("options", atom::map(&self.options)),
            ("external_ids", atom::map(&self.external_ids)),
            (
                "mac",
                self.mac
                    .as_ref()
                    .map(|m| json!(m))
                    .unwrap_or_else(atom::empty_set),
            ),
            (
                "mtu_request",
                self.mtu_request
                    .map(|m| json!(m))
                    .unwrap_or_else(atom::empty_set),
            ),
        ])
    }
}

/// The Open vSwitch datapath.
pub struct OvsDatapath {
    db: Client,
    conn: nl::Connection,
    bridge: String,
    rundir: PathBuf,
    datapath_type: String,
    underlay: Underlay,
    /// The interface holding the underlay address (see [`OvsConfig`]).
    underlay_iface: String,
    firewall: Firewall,
    cache: Mutex<Cache>,
    /// See [`Datapath::set_fenced`].
    fenced: AtomicBool,
}

fn read_pid(pidfile: &Path) -> Option<u32> {
    std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
}

fn pid_alive(pidfile: &Path) -> bool {
    read_pid(pidfile).is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// Whether Open vSwitch answers on `ovsdb` (for `--datapath auto`): the
/// socket accepts a connection and an `echo`. Does not check the rest of
/// the setup ([`OvsDatapath::new`] does, with clear errors).
pub async fn probe(ovsdb: &Path) -> bool {
    let answered = tokio::time::timeout(Duration::from_secs(2), async {
        let c = Client::connect(ovsdb).await.ok()?;
        c.echo().await.ok()
    })
    .await;
    matches!(answered, Ok(Some(())))
}

impl OvsDatapath {
    /// Connects to ovsdb-server, checks that ovs-vswitchd runs and that the
    /// underlay suits the OVS datapath type. Touches nothing.
    pub async fn new(cfg: OvsConfig) -> Result<Self> {
        let db = Client::connect(&cfg.ovsdb).await.map_err(|e| {
            unavailable(
                "Open vSwitch (ovsdb-server)",
                format!(
                    "{e}; install and start Open vSwitch (Debian: openvswitch-switch) or pass the right --ovsdb socket"
                ),
            )
        })?;
        let snap = db.snapshot();
        let root = snap.open_vswitch().ok_or_else(|| {
            unavailable(
                "Open vSwitch database",
                format!(
                    "{} has no Open_vSwitch row (not initialised: run `ovs-vsctl --no-wait init`)",
                    cfg.ovsdb.display()
                ),
            )
        })?;
        let rundir = cfg
            .ovsdb
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/var/run/openvswitch"));
        let pidfile = rundir.join("ovs-vswitchd.pid");
        if !pid_alive(&pidfile) {
            return Err(unavailable(
                "Open vSwitch (ovs-vswitchd)",
                format!("not running (no live process in {})", pidfile.display()),
            ));
        }
        match tokio::process::Command::new("ovs-ofctl")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
        {
            Ok(s) if s.success() => {}
            _ => {
                return Err(unavailable(
                    "ovs-ofctl",
                    "the ovs-ofctl binary is missing (Debian: openvswitch-common)",
                ))
            }
        }
        let datapath_type = if Path::new("/sys/module/openvswitch").exists() {
            "system"
        } else {
            "netdev"
        };
        if !root.datapath_types.is_empty()
            && !root.datapath_types.iter().any(|t| t == datapath_type)
        {
            return Err(unavailable(
                "Open vSwitch datapath",
                format!(
                    "ovs-vswitchd supports {:?}, this host needs {datapath_type}",
                    root.datapath_types
                ),
            ));
        }

        let conn = nl::connect()?;
        // A missing interface first, then the netdev setup, then its address.
        if !nl::links(&conn.handle)
            .await?
            .contains_key(&cfg.underlay_iface)
        {
            return Err(DatapathError::invalid(format!(
                "underlay interface {} not found",
                cfg.underlay_iface
            )));
        }
        if datapath_type == "netdev"
            && snap
                .interface_by_name(&cfg.underlay_iface)
                .is_none_or(|i| i.kind != "internal")
        {
            return Err(unavailable(
                "userspace tunnelling",
                format!(
                    "the kernel has no openvswitch module, so OVS runs its userspace (netdev) \
                     datapath, which needs the underlay address on an OVS bridge, but {} is not one. \
                     Set it up: `ovs-vsctl add-br br-phy -- set bridge br-phy datapath_type=netdev \
                     -- add-port br-phy {}`, move the address (and routes) from {} to br-phy, \
                     and use --iface br-phy",
                    cfg.underlay_iface, cfg.underlay_iface, cfg.underlay_iface
                ),
            ));
        }
        let (_, underlay) =
            underlay::lookup(&conn.handle, &cfg.underlay_iface, cfg.underlay_ip, cfg.mtu).await?;
        info!(
            bridge = %cfg.bridge, datapath_type, underlay = %cfg.underlay_iface,
            underlay_ip = %underlay.ip, mtu = underlay.default_mtu, "Open vSwitch datapath ready."
        );
        Ok(OvsDatapath {
            cache: Mutex::new(Cache {
                generation: db.generation(),
                ..Cache::default()
            }),
            fenced: AtomicBool::new(false),
            db,
            conn,
            bridge: cfg.bridge,
            rundir,
            datapath_type: datapath_type.into(),
            underlay,
            underlay_iface: cfg.underlay_iface,
            firewall: Firewall::new(DEFAULT_FIREWALL_TABLE).with_switch_ports(VETH_PREFIX),
        })
    }

    /// Uses `table` for the firewall (see the Linux datapath).
    pub fn with_firewall_table(mut self, table: &str) -> Self {
        self.firewall = Firewall::new(table).with_switch_ports(VETH_PREFIX);
        self
    }

    fn endpoints(&self) -> Endpoints<'_> {
        Endpoints::new(&self.conn.handle, VETHS)
    }

    /// The integration bridge.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// `system` or `netdev`.
    pub fn datapath_type(&self) -> &str {
        &self.datapath_type
    }

    /// The OpenFlow target of the bridge (for `ovs-ofctl`).
    pub fn ofctl_target(&self) -> String {
        format!("unix:{}/{}.mgmt", self.rundir.display(), self.bridge)
    }

    fn desired_ports(
        &self,
        plans: &[NetPlan],
        desired: &DesiredState,
    ) -> BTreeMap<String, PortSpec> {
        let mut m = BTreeMap::new();
        let mut tunnel = atom::string_map([
            ("remote_ip", "flow"),
            ("key", "flow"),
            ("dst_port", &VXLAN_PORT.to_string()),
        ]);
        // Userspace tunnels pick their source by OVS's own routing; a
        // `local_ip` there needs a local route to it, which OVS only learns
        // from the kernel's table, and an ovs-vswitchd run with
        // `--disable-system-route` (see the README) has none.
        if self.datapath_type != "netdev" {
            tunnel.insert("local_ip".into(), self.underlay.ip.to_string());
        }
        m.insert(
            TUNNEL_PORT.to_string(),
            PortSpec {
                kind: "vxlan",
                options: tunnel,
                external_ids: atom::string_map([(EXT_ROLE, "tunnel")]),
                mac: None,
                mtu_request: None,
            },
        );
        for p in plans {
            m.insert(
                p.bridge.clone(),
                PortSpec {
                    kind: "internal",
                    options: BTreeMap::new(),
                    external_ids: atom::string_map([
                        (EXT_ROLE, "gateway"),
                        (EXT_NETWORK, p.spec.name.as_str()),
                    ]),
                    mac: Some(MacAddr::GATEWAY.to_string()),
                    mtu_request: Some(i64::from(p.mtu)),
                },
            );
        }
        for e in &desired.local {
            m.insert(
                VETHS.host(&e.id),
                PortSpec {
                    kind: "",
                    options: BTreeMap::new(),
                    external_ids: atom::string_map([
                        (EXT_ROLE, "endpoint"),
                        (EXT_NETWORK, e.network.as_str()),
                        (EXT_ENDPOINT, e.id.as_str()),
                    ]),
                    mac: None,
                    mtu_request: None,
                },
            );
        }
        m
    }

    /// One transaction making the bridge and its ports right; returns writes.
    async fn ensure_topology(&self, want: &BTreeMap<String, PortSpec>) -> Result<usize> {
        let snap = self.db.snapshot();
        let root = snap
            .open_vswitch()
            .ok_or_else(|| unavailable("Open vSwitch database", "no Open_vSwitch row"))?;
        let mut txn = Vec::new();
        let mut new_ports = Vec::new();
        let mut stale_ports = Vec::new();
        let protocols = atom::set(["OpenFlow10", "OpenFlow13", "OpenFlow14"].map(|p| json!(p)));
        let bridge = snap.bridge(&self.bridge);
        let mut have: HashSet<String> = HashSet::new();
        if let Some(b) = &bridge {
            let mut want_protocols = vec!["OpenFlow10", "OpenFlow13", "OpenFlow14"];
            want_protocols.sort_unstable();
            let mut protos = b.protocols.clone();
            protos.sort();
            if b.datapath_type != self.datapath_type
                || b.fail_mode.as_deref() != Some("secure")
                || protos != want_protocols
            {
                txn.push(ops::update(
                    "Bridge",
                    ops::by_uuid(&b.uuid),
                    ops::row([
                        ("datapath_type", json!(self.datapath_type)),
                        ("fail_mode", json!("secure")),
                        ("protocols", protocols.clone()),
                    ]),
                ));
            }
            for (port, ifaces) in snap.bridge_ports(&self.bridge) {
                let ours = port
                    .external_ids
                    .keys()
                    .any(|k| k.starts_with("socketplane-"))
                    || ifaces
                        .iter()
                        .any(|i| i.external_ids.keys().any(|k| k.starts_with("socketplane-")));
                match want.get(&port.name) {
                    Some(spec) if ifaces.len() == 1 => {
                        have.insert(port.name.clone());
                        let i = &ifaces[0];
                        let ok = i.kind == spec.kind
                            && i.options == spec.options
                            && i.external_ids == spec.external_ids
                            && i.mac == spec.mac
                            && i.mtu_request == spec.mtu_request
                            && port.external_ids == spec.external_ids;
                        if !ok {
                            txn.push(ops::update(
                                "Interface",
                                ops::by_uuid(&i.uuid),
                                spec.iface_row(&port.name),
                            ));
                            txn.push(ops::update(
                                "Port",
                                ops::by_uuid(&port.uuid),
                                ops::row([("external_ids", atom::map(&spec.external_ids))]),
                            ));
                        }
                    }
                    Some(_) => stale_ports.push(port.uuid.clone()),
                    None if ours => stale_ports.push(port.uuid.clone()),
                    None => {}
                }
            }
        }
        for (i, (name, spec)) in want.iter().enumerate() {
            if have.contains(name) {
                continue;
            }
            let iname = format!("i{i}");
            let pname = format!("p{i}");
            txn.push(ops::insert("Interface", spec.iface_row(name), Some(&iname)));
            txn.push(ops::insert(
                "Port",
                ops::row([
                    ("name", json!(name)),
                    ("interfaces", atom::set([atom::named_uuid(&iname)])),
                    ("external_ids", atom::map(&spec.external_ids)),
                ]),
                Some(&pname),
            ));
            new_ports.push(atom::named_uuid(&pname));
        }
        match &bridge {
            None => {
                txn.push(ops::insert(
                    "Bridge",
                    ops::row([
                        ("name", json!(self.bridge)),
                        ("datapath_type", json!(self.datapath_type)),
                        ("fail_mode", json!("secure")),
                        ("protocols", protocols),
                        (
                            "external_ids",
                            atom::map(&atom::string_map([(EXT_ROLE, "integration")])),
                        ),
                        ("ports", atom::set(new_ports)),
                    ]),
                    Some("br"),
                ));
                txn.push(ops::mutate(
                    "Open_vSwitch",
                    ops::by_uuid(&root.uuid),
                    vec![ops::mutation(
                        "bridges",
                        "insert",
                        atom::set([atom::named_uuid("br")]),
                    )],
                ));
            }
            Some(b) => {
                let mut muts = Vec::new();
                if !stale_ports.is_empty() {
                    muts.push(ops::mutation(
                        "ports",
                        "delete",
                        atom::set(stale_ports.iter().map(|u| atom::uuid(u))),
                    ));
                }
                if !new_ports.is_empty() {
                    muts.push(ops::mutation("ports", "insert", atom::set(new_ports)));
                }
                if !muts.is_empty() {
                    txn.push(ops::mutate("Bridge", ops::by_uuid(&b.uuid), muts));
                }
            }
        }
        if txn.is_empty() {
            return Ok(0);
        }
        // A removed port's veth is deleted next: ovs-vswitchd must have let
        // go of the port first. A device deleted under its userspace
        // datapath upsets the datapath as a whole (packets of other ports
        // were seen lost), so ask it to report when it has applied this.
        let wait_applied = !stale_ports.is_empty();
        if wait_applied {
            txn.push(ops::mutate(
                "Open_vSwitch",
                ops::by_uuid(&root.uuid),
                vec![ops::mutation("next_cfg", "+=", json!(1))],
            ));
            txn.push(ops::select(
                "Open_vSwitch",
                ops::by_uuid(&root.uuid),
                Some(&["next_cfg"]),
            ));
        }
        debug!(ops = txn.len(), "OVSDB transaction.");
        let results = self
            .db
            .transact(txn)
            .await
            .map_err(|e| db_err("configure bridge", e))?;
        if wait_applied {
            let target = results
                .last()
                .and_then(|r| r.get("rows"))
                .and_then(|rows| rows.get(0))
                .and_then(|row| row.get("next_cfg"))
                .and_then(Value::as_i64);
            self.wait_applied(target).await;
        }
        Ok(1)
    }

    /// Waits until ovs-vswitchd has applied configuration `target` (its
    /// `cur_cfg`), at most [`PORT_WAIT`]; a daemon that is slower than
    /// that only gets a warning (the rest of the apply goes on).
    async fn wait_applied(&self, target: Option<i64>) {
        let Some(target) = target else {
            warn!("ovsdb-server did not return next_cfg; not waiting for ovs-vswitchd.");
            return;
        };
        let applied = |s: &Snapshot| s.open_vswitch().is_some_and(|r| r.cur_cfg >= target);
        if !self.db.wait_until(PORT_WAIT, applied).await {
            warn!(
                target,
                "ovs-vswitchd has not applied the port removal in time; deleting the devices anyway."
            );
        }
    }

    /// Waits until ovs-vswitchd gave every wanted port an OpenFlow number.
    async fn ofports(&self, want: &BTreeMap<String, PortSpec>) -> Result<Ofports> {
        let ready = |s: &Snapshot| {
            let ports = s.bridge_ports(&self.bridge);
            want.keys().all(|n| {
                ports.iter().any(|(p, ifs)| {
                    &p.name == n
                        && ifs
                            .first()
                            .is_some_and(|i| i.ofport.is_some_and(|o| o != 0))
                })
            })
        };
        self.db.wait_until(PORT_WAIT, ready).await;
        let snap = self.db.snapshot();
        let mut out = HashMap::new();
        let mut errors = Vec::new();
        for (p, ifs) in snap.bridge_ports(&self.bridge) {
            if !want.contains_key(&p.name) {
                continue;
            }
            match ifs.first() {
                Some(i) if i.ofport.is_some_and(|o| o > 0) => {
                    out.insert(p.name.clone(), i.ofport.unwrap_or_default());
                }
                Some(i) => errors.push(format!(
                    "{}: {}",
                    p.name,
                    i.error
                        .clone()
                        .unwrap_or_else(|| "no OpenFlow port number".into())
                )),
                None => errors.push(format!("{}: no interface", p.name)),
            }
        }
        for n in want.keys() {
            if !out.contains_key(n) && !errors.iter().any(|e| e.starts_with(&format!("{n}:"))) {
                errors.push(format!("{n}: port not realised"));
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(unavailable(
                "Open vSwitch (ovs-vswitchd)",
                format!("ports not ready: {}", errors.join("; ")),
            ))
        }
    }

    /// Removes the integration bridge (and with it every port on it).
    async fn remove_bridge(&self) -> Result<()> {
        let snap = self.db.snapshot();
        let (Some(root), Some(b)) = (snap.open_vswitch(), snap.bridge(&self.bridge)) else {
            return Ok(());
        };
        let delete = ops::mutation("bridges", "delete", atom::set([atom::uuid(&b.uuid)]));
        let op = ops::mutate("Open_vSwitch", ops::by_uuid(&root.uuid), vec![delete]);
        self.db
            .transact(vec![op])
            .await
            .map(drop)
            .map_err(|e| db_err("remove bridge", e))
    }

    /// Deletes our veths that are not wanted; returns writes.
    async fn remove_stale_veths(&self, desired: &DesiredState, cache: &mut Cache) -> Result<usize> {
        let links = nl::links(&self.conn.handle).await?;
        let r = self.endpoints().remove_stale(&links, desired).await;
        cache.endpoints.retain_live(desired);
        r
    }

    /// Gateway address on each gateway port, and the port up.
    async fn ensure_gateways(&self, plans: &[NetPlan]) -> Result<usize> {
        if plans.is_empty() {
            return Ok(0);
        }
        let h = &self.conn.handle;
        // ovs-vswitchd creates the internal devices asynchronously.
        let deadline = Instant::now() + PORT_WAIT;
        let links = loop {
            let links = nl::links(h).await?;
            if plans.iter().all(|p| links.contains_key(&p.bridge)) || Instant::now() > deadline {
                break links;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let addrs = nl::addrs_v4(h).await?;
        let mut changes = 0;
        for p in plans {
            let l = links
                .get(&p.bridge)
                .ok_or_else(|| DatapathError::DeviceMissing {
                    device: p.bridge.clone(),
                    why: "ovs-vswitchd did not create the gateway port",
                })?;
            if !l.up || l.mtu != p.mtu || l.mac != MacAddr::GATEWAY.0 {
                let msg = LinkUnspec::new_with_index(l.index)
                    .mtu(p.mtu)
                    .address(MacAddr::GATEWAY.0.to_vec())
                    .up()
                    .build();
                nl::change_link(
                    &self.conn.handle,
                    msg,
                    &format!("gateway port {}", p.bridge),
                )
                .await?;
                changes += 1;
            }
            let dev = (l.index, p.bridge.as_str());
            changes += nl::ensure_sole_address(h, &addrs, dev, p.gateway_cidr()).await?;
        }
        Ok(changes)
    }

    async fn ofctl(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let args: Vec<&str> = ["-O", "OpenFlow14"]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        command::run_ok("ovs-ofctl", &args, stdin, "openvswitch-common").await
    }

    /// Installs the rendered pipeline when the bridge holds anything else.
    /// The pipeline's input: each network with its ports and endpoints,
    /// and the tunnel's port.
    fn flow_nets(
        &self,
        want: &[NetPlan],
        desired: &DesiredState,
        ofports: &Ofports,
    ) -> Result<(Vec<FlowNet>, i64)> {
        let plans = want;
        let port = |n: &str| {
            ofports
                .get(n)
                .copied()
                .ok_or_else(|| ofctl_err(format!("no OpenFlow port for {n}")))
        };
        let tunnel = port(TUNNEL_PORT)?;
        let mut nets = Vec::new();
        for p in plans {
            let mut local = Vec::new();
            for e in desired.local.iter().filter(|e| e.network == p.spec.name) {
                local.push(FlowLocal {
                    mac: e.mac,
                    ip: e.ip,
                    ofport: port(&VETHS.host(&e.id))?,
                });
            }
            let remote = desired
                .remote
                .iter()
                .filter(|r| r.network == p.spec.name && r.host != self.underlay.ip)
                .map(|r| FlowRemote {
                    mac: r.mac,
                    ip: r.ip,
                    host: r.host,
                })
                .collect();
            nets.push(FlowNet {
                vni: p.spec.vni,
                gateway: p.spec.gateway,
                gw_ofport: port(&p.bridge)?,
                local,
                remote,
            });
        }
        Ok((nets, tunnel))
    }

    async fn ensure_flows(
        &self,
        (nets, tunnel): (Vec<FlowNet>, i64),
        members: &[Ipv4Addr],
        cache: &mut Cache,
    ) -> Result<usize> {
        let rendered = flows::render(&nets, tunnel, members);
        let hash = flows::hash(&rendered);
        let pid = read_pid(&self.rundir.join("ovs-vswitchd.pid"));
        let fresh = cache
            .flows_checked
            .is_some_and(|(t, p)| t.elapsed() < FLOW_RECHECK && p == pid);
        if cache.flows_hash.as_deref() == Some(hash.as_str()) && fresh {
            return Ok(0);
        }
        let target = self.ofctl_target();
        let dump = self.ofctl(&["dump-flows", &target], None).await?;
        cache.flows_checked = Some((Instant::now(), pid));
        if flows::dumped_cookies(&dump) == flows::rendered_cookies(&rendered) {
            cache.flows_hash = Some(hash);
            return Ok(0);
        }
        let mut text = rendered.join("\n");
        text.push('\n');
        debug!(flows = rendered.len(), "Replacing OpenFlow table.");
        self.ofctl(&["--bundle", "replace-flows", &target, "-"], Some(&text))
            .await?;
        cache.flows_hash = Some(hash);
        Ok(1)
    }

    /// Userspace datapath: has ovs-vswitchd resolve the underlay MAC of
    /// every member it may tunnel to before a workload's packet needs it.
    /// It keeps its own neighbour table for tunnels, learned from ARP
    /// answers to its own (or this host's) requests; a packet to a member
    /// missing there is dropped while it asks. Sent for members not warmed
    /// yet, and for all every [`TUNNEL_WARM_UP`] or after a restart of
    /// ovs-vswitchd. Writes nothing, so it counts no change.
    async fn warm_up_tunnels(
        &self,
        tunnel: i64,
        members: &[Ipv4Addr],
        cache: &mut Cache,
    ) -> Result<usize> {
        if self.datapath_type != "netdev" {
            return Ok(0);
        }
        let pid = read_pid(&self.rundir.join("ovs-vswitchd.pid"));
        let all_again = cache
            .warmed_under
            .is_none_or(|(t, p)| t.elapsed() >= TUNNEL_WARM_UP || p != pid);
        if all_again {
            cache.warmed.clear();
        }
        let todo: Vec<Ipv4Addr> = members
            .iter()
            .copied()
            .filter(|m| *m != self.underlay.ip && !cache.warmed.contains(m))
            .collect();
        if todo.is_empty() {
            return Ok(0);
        }
        let packet = flows::tunnel_warm_up(tunnel, &todo);
        debug!(members = ?todo, "Resolving tunnel neighbours.");
        self.ofctl(&["packet-out", &self.ofctl_target(), &packet], None)
            .await?;
        if all_again {
            cache.warmed_under = Some((Instant::now(), pid));
        }
        cache.warmed.extend(todo);
        Ok(0)
    }

    /// Userspace datapath: the kernel must not answer ARP on the other
    /// ports of the underlay's OVS bridge (the uplinks, e.g. `eth0`). It
    /// sees their frames too, and by default answers for the underlay
    /// address with the uplink's MAC; a peer's ovs-vswitchd that learns
    /// that MAC tunnels to it, and the packets it sends there are not
    /// taken as tunnel traffic but refused by this host's stack (ICMP port
    /// unreachable). Each such uplink gets `arp_ignore=8`; returns writes.
    fn ensure_quiet_uplinks(&self, snap: &Snapshot, cache: &mut Cache) -> Result<usize> {
        if self.datapath_type != "netdev" {
            return Ok(0);
        }
        let has_underlay = |b: &str| {
            snap.bridge_ports(b)
                .iter()
                .any(|(p, _)| p.name == self.underlay_iface)
        };
        let Some(bridge) = snap.bridges().into_iter().find(|b| has_underlay(&b.name)) else {
            return Ok(0);
        };
        let mut changes = 0;
        for (_, ifaces) in snap.bridge_ports(&bridge.name) {
            for i in ifaces {
                let kernel_port = i.kind.is_empty() || i.kind == "system";
                if !kernel_port
                    || cache.quiet_uplinks.contains(&i.name)
                    || !Path::new(&format!("/proc/sys/net/ipv4/conf/{}", i.name)).exists()
                {
                    continue;
                }
                let n = sysctl::ensure_no_arp_replies(&i.name)?;
                if n > 0 {
                    info!(uplink = %i.name, "The kernel no longer answers ARP on this uplink of the underlay bridge (arp_ignore=8).");
                }
                cache.quiet_uplinks.insert(i.name.clone());
                changes += n;
            }
        }
        Ok(changes)
    }
}

#[async_trait]
impl Datapath for OvsDatapath {
    async fn apply(&self, desired: &DesiredState) -> Result<ApplyReport> {
        let planned = crate::kernel::plan(desired, self.underlay.default_mtu)?;
        let (plans, desired) = (planned.nets, &planned.desired);
        let mut cache = self.cache.lock().await;
        // (Re)connects and resynchronises the cache when ovsdb-server went away.
        self.db.echo().await.map_err(|e| db_err("no answer", e))?;
        if self.db.generation() != cache.generation {
            info!("Reconnected to ovsdb-server; re-verifying everything.");
            *cache = Cache {
                generation: self.db.generation(),
                ..Cache::default()
            };
        }
        let mut tally = Tally::default();
        let links = nl::links(&self.conn.handle).await?;
        let attach = Attach::switch_port(self.datapath_type == "netdev")
            .fenced(self.fenced.load(Ordering::SeqCst));
        let (endpoints, cached) = (self.endpoints(), &mut cache.endpoints);
        let all = |_: &NetPlan| Some(attach);
        endpoints
            .ensure_all((&plans, desired), &links, cached, &mut tally, all)
            .await;
        // An endpoint whose veth could not be made has no port: ports and
        // flows are rendered for the others, so it holds nobody back.
        let failed = tally.failed_endpoints();
        let plumbed;
        let ported = if failed.is_empty() {
            desired
        } else {
            plumbed = DesiredState {
                local: desired
                    .local
                    .iter()
                    .filter(|e| !failed.contains(&e.id))
                    .cloned()
                    .collect(),
                ..desired.clone()
            };
            &plumbed
        };
        let want = self.desired_ports(&plans, ported);
        tally.changes += self.ensure_topology(&want).await?;
        tally.add(self.remove_stale_veths(desired, &mut cache).await);
        // Ports whose device failed are reported; flows need all of them.
        let ofports = self.ofports(&want).await?;
        tally.add(self.ensure_gateways(&plans).await);
        tally.add(self.ensure_quiet_uplinks(&self.db.snapshot(), &mut cache));
        let members = members(desired, self.underlay.ip);
        let flows = match self.flow_nets(&plans, ported, &ofports) {
            Ok(nets) => {
                let tunnel = nets.1;
                let installed = self.ensure_flows(nets, &members, &mut cache).await;
                installed.map(|n| (n, tunnel))
            }
            Err(e) => Err(e),
        };
        if flows.is_err() {
            cache.flows_hash = None;
        }
        let tunnel = flows.as_ref().ok().map(|(_, t)| *t);
        tally.add(flows.map(|(n, _)| n));
        if let Some(tunnel) = tunnel {
            tally.add(self.warm_up_tunnels(tunnel, &members, &mut cache).await);
        }
        if !plans.is_empty() {
            tally.add(ensure_ip_forward());
        }
        // Anti-spoofing is in the flows: the veths are no bridge ports.
        let host = FwHost::new(desired, self.underlay.ip, Vec::new());
        let firewall = self.firewall.ensure(&plans, &host, &mut cache.firewall);
        tally.add(firewall.await);
        tally.refuse(planned.rejected);
        tally.report(self.name())
    }

    async fn teardown(&self) -> Result<()> {
        let mut cache = self.cache.lock().await;
        let mut tally = Tally::default();
        match self.db.echo().await {
            Ok(()) => tally.check(self.remove_bridge().await),
            Err(e) => tally.check(Err(db_err("teardown", e))),
        }
        let none = DesiredState::default();
        tally.add(self.remove_stale_veths(&none, &mut cache).await);
        tally.check(self.firewall.remove().await);
        *cache = Cache {
            generation: self.db.generation(),
            ..Cache::default()
        };
        tally.finish().map(drop)
    }

    fn set_fenced(&self, fenced: bool) {
        self.fenced.store(fenced, Ordering::SeqCst);
    }

    fn endpoint_ifnames(&self, endpoint_id: &str) -> EndpointIfnames {
        VETHS.ifnames(endpoint_id)
    }

    fn underlay(&self) -> Underlay {
        self.underlay
    }

    fn name(&self) -> &'static str {
        "ovs"
    }
}
