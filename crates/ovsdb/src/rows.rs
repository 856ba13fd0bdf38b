//! Typed views of the rows of the tables the datapath uses, decoded from the
//! monitor cache. Only the columns we need are decoded; the raw row is kept.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::atom::{as_int, as_map, as_string, as_string_set, as_uuid_set};

/// Raw rows of one table by UUID.
pub type RawTable = BTreeMap<String, Map<String, Value>>;

fn col<'a>(r: &'a Map<String, Value>, c: &str) -> Option<&'a Value> {
    r.get(c)
}

fn s(r: &Map<String, Value>, c: &str) -> String {
    col(r, c).and_then(as_string).unwrap_or_default()
}

fn opt_s(r: &Map<String, Value>, c: &str) -> Option<String> {
    col(r, c).and_then(as_string)
}

fn m(r: &Map<String, Value>, c: &str) -> BTreeMap<String, String> {
    col(r, c).map(as_map).unwrap_or_default()
}

fn refs(r: &Map<String, Value>, c: &str) -> Vec<String> {
    col(r, c).map(as_uuid_set).unwrap_or_default()
}

/// The root row of the `Open_vSwitch` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenVSwitch {
    pub uuid: String,
    pub bridges: Vec<String>,
    pub datapath_types: Vec<String>,
    pub iface_types: Vec<String>,
    pub ovs_version: Option<String>,
    pub external_ids: BTreeMap<String, String>,
    /// The configuration sequence a client asked for (bumped by clients
    /// that want to wait for ovs-vswitchd, as `ovs-vsctl` does).
    pub next_cfg: i64,
    /// The sequence ovs-vswitchd has fully applied.
    pub cur_cfg: i64,
}

/// A row of `Bridge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    pub uuid: String,
    pub name: String,
    pub ports: Vec<String>,
    /// `""` means the default (`system`).
    pub datapath_type: String,
    pub fail_mode: Option<String>,
    pub protocols: Vec<String>,
    pub external_ids: BTreeMap<String, String>,
    pub other_config: BTreeMap<String, String>,
}

/// A row of `Port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub uuid: String,
    pub name: String,
    pub interfaces: Vec<String>,
    pub external_ids: BTreeMap<String, String>,
}

/// A row of `Interface`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub uuid: String,
    pub name: String,
    /// `""` means a system device.
    pub kind: String,
    pub options: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
    /// OpenFlow port number: `None` until ovs-vswitchd assigns it, `-1` on error.
    pub ofport: Option<i64>,
    pub mtu_request: Option<i64>,
    pub mac: Option<String>,
    pub error: Option<String>,
}

impl OpenVSwitch {
    pub fn from_raw(uuid: &str, r: &Map<String, Value>) -> Self {
        OpenVSwitch {
            uuid: uuid.to_string(),
            bridges: refs(r, "bridges"),
            datapath_types: col(r, "datapath_types")
                .map(as_string_set)
                .unwrap_or_default(),
            iface_types: col(r, "iface_types").map(as_string_set).unwrap_or_default(),
            ovs_version: opt_s(r, "ovs_version"),
            external_ids: m(r, "external_ids"),
            next_cfg: col(r, "next_cfg").and_then(as_int).unwrap_or_default(),
            cur_cfg: col(r, "cur_cfg").and_then(as_int).unwrap_or_default(),
        }
    }
}

impl Bridge {
    pub fn from_raw(uuid: &str, r: &Map<String, Value>) -> Self {
        Bridge {
            uuid: uuid.to_string(),
            name: s(r, "name"),
            ports: refs(r, "ports"),
            datapath_type: s(r, "datapath_type"),
            fail_mode: opt_s(r, "fail_mode"),
            protocols: col(r, "protocols").map(as_string_set).unwrap_or_default(),
            external_ids: m(r, "external_ids"),
            other_config: m(r, "other_config"),
        }
    }
}

impl Port {
    pub fn from_raw(uuid: &str, r: &Map<String, Value>) -> Self {
        Port {
            uuid: uuid.to_string(),
            name: s(r, "name"),
            interfaces: refs(r, "interfaces"),
            external_ids: m(r, "external_ids"),
        }
    }
}

impl Interface {
    pub fn from_raw(uuid: &str, r: &Map<String, Value>) -> Self {
        Interface {
            uuid: uuid.to_string(),
            name: s(r, "name"),
            kind: s(r, "type"),
            options: m(r, "options"),
            external_ids: m(r, "external_ids"),
            ofport: col(r, "ofport").and_then(as_int),
            mtu_request: col(r, "mtu_request").and_then(as_int),
            mac: opt_s(r, "mac"),
            error: opt_s(r, "error"),
        }
    }
}

/// A consistent copy of the monitored tables.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub tables: BTreeMap<String, RawTable>,
}

impl Snapshot {
    fn table(&self, t: &str) -> impl Iterator<Item = (&String, &Map<String, Value>)> {
        self.tables.get(t).into_iter().flat_map(|x| x.iter())
    }

    /// The root row (a fresh database may have none yet).
    pub fn open_vswitch(&self) -> Option<OpenVSwitch> {
        self.table("Open_vSwitch")
            .next()
            .map(|(u, r)| OpenVSwitch::from_raw(u, r))
    }

    pub fn bridges(&self) -> Vec<Bridge> {
        self.table("Bridge")
            .map(|(u, r)| Bridge::from_raw(u, r))
            .collect()
    }

    pub fn bridge(&self, name: &str) -> Option<Bridge> {
        self.bridges().into_iter().find(|b| b.name == name)
    }

    pub fn ports(&self) -> Vec<Port> {
        self.table("Port")
            .map(|(u, r)| Port::from_raw(u, r))
            .collect()
    }

    pub fn port(&self, uuid: &str) -> Option<Port> {
        self.tables
            .get("Port")
            .and_then(|t| t.get(uuid))
            .map(|r| Port::from_raw(uuid, r))
    }

    pub fn interfaces(&self) -> Vec<Interface> {
        self.table("Interface")
            .map(|(u, r)| Interface::from_raw(u, r))
            .collect()
    }

    pub fn interface(&self, uuid: &str) -> Option<Interface> {
        self.tables
            .get("Interface")
            .and_then(|t| t.get(uuid))
            .map(|r| Interface::from_raw(uuid, r))
    }

    pub fn interface_by_name(&self, name: &str) -> Option<Interface> {
        self.interfaces().into_iter().find(|i| i.name == name)
    }

    /// The ports of bridge `name` with their interfaces.
    pub fn bridge_ports(&self, name: &str) -> Vec<(Port, Vec<Interface>)> {
        let Some(b) = self.bridge(name) else {
            return Vec::new();
        };
        b.ports
            .iter()
            .filter_map(|u| self.port(u))
            .map(|p| {
                let ifs = p
                    .interfaces
                    .iter()
                    .filter_map(|i| self.interface(i))
                    .collect();
                (p, ifs)
            })
            .collect()
    }
}
