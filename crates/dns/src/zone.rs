//! The names each network's gateway answers, derived from the cluster view:
//! one [`Zone`] per network with its endpoints' names and aliases, and the
//! decision for one query name ([`Zone::lookup`]).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use socketplane_api::EndpointRecord;
use socketplane_cluster::ClusterView;

/// One network's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The network's id (stable; the datapath and the view key by it).
    pub network: String,
    /// The network's name, lowercase: the zone's suffix (`NAME.NETWORK`).
    pub suffix: String,
    pub gateway: Ipv4Addr,
    /// Lowercase name → addresses, sorted and without duplicates.
    names: HashMap<String, Vec<Ipv4Addr>>,
    /// How many endpoints give each name each address: an address moves
    /// from one endpoint to another within one change (a detach and an
    /// attach that reuses it), so it goes only when its last one does.
    refs: HashMap<(String, Ipv4Addr), u32>,
}

/// What to do with one query name on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// An endpoint name: these addresses.
    Found(&'a [Ipv4Addr]),
    /// The zone's apex (the network's name itself): exists, no records.
    Apex,
    /// Inside the zone, but no endpoint has the name.
    NxDomain,
    /// Not ours: ask the host's resolvers.
    Forward,
}

impl Zone {
    /// The decision for `qname` (any case, with or without the root dot).
    ///
    /// `NAME` (one label) and `NAME.NETWORK` are the zone: a single label
    /// never leaves the host (no upstream knows an endpoint's name, and a
    /// workload's lookups of bare names stay private). Anything else is
    /// forwarded; [`Zones::lookup`] keeps `NAME.OTHER-NETWORK` home.
    pub fn lookup(&self, qname: &str) -> Lookup<'_> {
        let q = qname
            .strip_suffix('.')
            .unwrap_or(qname)
            .to_ascii_lowercase();
        if q.is_empty() {
            return Lookup::Forward;
        }
        if q == self.suffix {
            return Lookup::Apex;
        }
        let host = match q.strip_suffix(&self.suffix) {
            Some(prefix) if prefix.ends_with('.') => &prefix[..prefix.len() - 1],
            _ if !q.contains('.') => q.as_str(),
            _ => return Lookup::Forward,
        };
        match self.names.get(host) {
            Some(ips) => Lookup::Found(ips),
            None => Lookup::NxDomain,
        }
    }

    /// Every name in the zone (for logs and tests).
    pub fn names(&self) -> impl Iterator<Item = (&str, &[Ipv4Addr])> {
        self.names
            .iter()
            .map(|(n, ips)| (n.as_str(), ips.as_slice()))
    }
}

/// Whether `name` can be answered: a DNS name of at most 253 characters
/// whose labels are 1 to 63 characters. Others (e.g. with spaces) are
/// left out rather than answered oddly.
fn usable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_graphic()))
}

/// An endpoint's names (its name and aliases), lowercase, those usable.
fn names_of(ep: &EndpointRecord) -> impl Iterator<Item = String> + '_ {
    (ep.name.iter().chain(ep.aliases.iter()))
        .map(|name| name.trim_start_matches('/').to_ascii_lowercase())
        .filter(|name| usable(name))
}

/// Every network's zone, by network id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zones {
    pub by_network: BTreeMap<String, Zone>,
}

impl Zones {
    /// The zones of every network in `view`: each endpoint's name and
    /// aliases, on its own network only.
    pub fn from_view(view: &ClusterView) -> Zones {
        let by_network: BTreeMap<String, Zone> = view
            .networks
            .values()
            .map(|n| {
                (
                    n.id.clone(),
                    Zone {
                        network: n.id.clone(),
                        suffix: n.name.to_ascii_lowercase(),
                        gateway: n.gateway,
                        names: HashMap::new(),
                        refs: HashMap::new(),
                    },
                )
            })
            .collect();
        let mut zones = Zones { by_network };
        for ep in view.endpoints.values() {
            zones.add(ep);
        }
        zones
    }

    /// Brings zones made from `before` up to `view`, looking only at the
    /// endpoints that changed: true when a name changed. `None` when the
    /// networks changed (then [`Zones::from_view`] builds them afresh).
    pub fn update(&mut self, before: &ClusterView, view: &ClusterView) -> Option<bool> {
        if before.networks != view.networks {
            return None;
        }
        let mut changed = false;
        for (was, now) in view.endpoints_changed_since(before) {
            changed |= was.is_some_and(|e| self.remove(e));
            changed |= now.is_some_and(|e| self.add(e));
        }
        Some(changed)
    }

    /// Adds `ep`'s names on its network; true when one was new.
    fn add(&mut self, ep: &EndpointRecord) -> bool {
        let Some(zone) = self.by_network.get_mut(&ep.network) else {
            return false;
        };
        let mut changed = false;
        for name in names_of(ep) {
            let refs = zone.refs.entry((name.clone(), ep.ip)).or_default();
            *refs += 1;
            if *refs > 1 {
                continue;
            }
            let ips = zone.names.entry(name).or_default();
            if let Err(at) = ips.binary_search(&ep.ip) {
                ips.insert(at, ep.ip);
                changed = true;
            }
        }
        changed
    }

    /// Removes `ep`'s names on its network; true when one was there.
    fn remove(&mut self, ep: &EndpointRecord) -> bool {
        let Some(zone) = self.by_network.get_mut(&ep.network) else {
            return false;
        };
        let mut changed = false;
        for name in names_of(ep) {
            let key = (name, ep.ip);
            match zone.refs.get_mut(&key) {
                None => continue,
                Some(refs) if *refs > 1 => {
                    *refs -= 1;
                    continue;
                }
                Some(_) => {
                    zone.refs.remove(&key);
                }
            }
            let name = key.0;
            let Some(ips) = zone.names.get_mut(&name) else {
                continue;
            };
            if let Ok(at) = ips.binary_search(&ep.ip) {
                ips.remove(at);
                changed = true;
            }
            if ips.is_empty() {
                zone.names.remove(&name);
            }
        }
        changed
    }

    pub fn get(&self, network: &str) -> Option<&Zone> {
        self.by_network.get(network)
    }

    /// The decision for `qname` asked on `network`'s gateway: its zone's
    /// ([`Zone::lookup`]), except that a name inside another network's
    /// zone (`NAME.OTHER-NETWORK`, or `OTHER-NETWORK` itself) gets
    /// NXDOMAIN here. Such a name is the cluster's, so it is neither
    /// answered with the other network's addresses nor sent upstream,
    /// where a public name of the same spelling could answer it.
    pub fn lookup(&self, network: &str, qname: &str) -> Lookup<'_> {
        let Some(zone) = self.get(network) else {
            return Lookup::Forward;
        };
        match zone.lookup(qname) {
            Lookup::Forward => {}
            decided => return decided,
        }
        let q = qname
            .strip_suffix('.')
            .unwrap_or(qname)
            .to_ascii_lowercase();
        let last = q.rsplit('.').next().unwrap_or_default();
        if !last.is_empty() && self.by_network.values().any(|z| z.suffix == last) {
            Lookup::NxDomain
        } else {
            Lookup::Forward
        }
    }

    /// Whether `ip` is one of the gateways (never an upstream: that would
    /// loop).
    pub fn is_gateway(&self, ip: Ipv4Addr) -> bool {
        self.by_network.values().any(|z| z.gateway == ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socketplane_api::{EndpointRecord, MacAddr, NetworkRecord};

    fn view() -> ClusterView {
        let mut v = ClusterView::default();
        for (id, name, gw) in [("n1", "Blue", "10.2.0.1"), ("n2", "red", "10.3.0.1")] {
            v.networks.insert(
                id.into(),
                NetworkRecord {
                    id: id.into(),
                    name: name.into(),
                    subnet: format!("{}/16", gw)
                        .parse::<ipnet::Ipv4Net>()
                        .unwrap()
                        .trunc(),
                    gateway: gw.parse().unwrap(),
                    vni: 1,
                    mtu: None,
                    mode: Default::default(),
                },
            );
        }
        let ep =
            |id: &str, net: &str, ip: &str, name: Option<&str>, aliases: &[&str]| EndpointRecord {
                id: id.into(),
                network: net.into(),
                node: "a".into(),
                ip: ip.parse().unwrap(),
                mac: MacAddr::from_ipv4(ip.parse().unwrap()),
                name: name.map(String::from),
                container_id: None,
                netns: None,
                netns_id: None,
                ifname: "eth0".into(),
                aliases: aliases.iter().map(|a| a.to_string()).collect(),
                origin: None,
                pod_namespace: None,
                pod_name: None,
            };
        for e in [
            ep("e1", "n1", "10.2.0.5", Some("Web"), &["www"]),
            ep("e2", "n1", "10.2.0.6", Some("web"), &[]),
            ep("e3", "n2", "10.3.0.7", Some("db"), &[]),
            ep("e4", "gone", "10.9.0.7", Some("ghost"), &[]),
            ep("e5", "n1", "10.2.0.8", Some("bad name"), &[]),
        ] {
            v.endpoints.insert(e.id.clone(), e.into());
        }
        v
    }

    /// Zones brought up to date change by change answer as zones built
    /// afresh do.
    #[test]
    fn updated_zones_equal_fresh_ones() {
        let before = view();
        let mut zones = Zones::from_view(&before);
        let mut now = before.clone();
        let mut renamed = EndpointRecord::clone(&now.endpoints["e1"]);
        renamed.name = Some("api".into());
        renamed.aliases = vec!["WEB".into()];
        now.endpoints.insert("e1".into(), renamed.into());
        now.endpoints.remove("e2");
        let mut added = EndpointRecord::clone(&now.endpoints["e3"]);
        added.id = "e6".into();
        added.ip = "10.3.0.9".parse().unwrap();
        now.endpoints.insert("e6".into(), added.into());
        assert_eq!(zones.update(&before, &now), Some(true));
        assert_eq!(zones, Zones::from_view(&now));
        // An address moves from one endpoint to another in one change.
        let moved_from = now.clone();
        let mut moved = now.clone();
        let mut e1 = EndpointRecord::clone(&moved.endpoints["e1"]);
        e1.ip = "10.2.0.9".parse().unwrap();
        moved.endpoints.insert("e1".into(), e1.into());
        let mut e5 = EndpointRecord::clone(&moved.endpoints["e5"]);
        e5.ip = "10.2.0.5".parse().unwrap();
        e5.name = Some("api".into());
        moved.endpoints.insert("e5".into(), e5.into());
        assert_eq!(zones.update(&moved_from, &moved), Some(true));
        assert_eq!(zones, Zones::from_view(&moved));
        let both: &[Ipv4Addr] = &["10.2.0.5".parse().unwrap(), "10.2.0.9".parse().unwrap()];
        assert_eq!(zones.lookup("n1", "api"), Lookup::Found(both));
        let now = moved;
        let db: &[Ipv4Addr] = &["10.3.0.7".parse().unwrap(), "10.3.0.9".parse().unwrap()];
        assert_eq!(zones.lookup("n2", "db"), Lookup::Found(db));
        assert_eq!(zones.update(&now, &now.clone()), Some(false));
        let mut renet = now.clone();
        renet.networks.remove("n2");
        assert_eq!(zones.update(&now, &renet), None, "networks changed");
    }

    /// The endpoint that takes the address over comes first: its old
    /// address goes, the new one is already there; then the endpoint that
    /// gave it up goes, and the address must stay.
    #[test]
    fn an_address_taken_over_in_one_change_stays() {
        let mut before = view();
        before.endpoints.clear();
        let mut after = before.clone();
        let ep = |id: &str, name: &str, ip: &str| EndpointRecord {
            name: Some(name.into()),
            ip: ip.parse().unwrap(),
            id: id.into(),
            ..EndpointRecord::clone(&view().endpoints["e2"])
        };
        for (id, name, ip) in [("a", "web", "10.2.0.5"), ("b", "web", "10.2.0.6")] {
            before.endpoints.insert(id.into(), ep(id, name, ip).into());
        }
        for (id, name, ip) in [("a", "web", "10.2.0.6"), ("b", "db", "10.2.0.7")] {
            after.endpoints.insert(id.into(), ep(id, name, ip).into());
        }
        let mut zones = Zones::from_view(&before);
        assert_eq!(zones.update(&before, &after), Some(true));
        let web: &[Ipv4Addr] = &["10.2.0.6".parse().unwrap()];
        assert_eq!(zones.lookup("n1", "web"), Lookup::Found(web));
        assert_eq!(zones, Zones::from_view(&after));
    }

    #[test]
    fn answers_own_network_only() {
        let zones = Zones::from_view(&view());
        let blue = zones.get("n1").unwrap();
        let both: &[Ipv4Addr] = &["10.2.0.5".parse().unwrap(), "10.2.0.6".parse().unwrap()];
        assert_eq!(blue.lookup("web."), Lookup::Found(both));
        assert_eq!(blue.lookup("WEB.blue."), Lookup::Found(both));
        assert_eq!(blue.lookup("www.blue"), Lookup::Found(&both[..1]));
        assert_eq!(blue.lookup("db."), Lookup::NxDomain);
        assert_eq!(blue.lookup("db.blue."), Lookup::NxDomain);
        assert_eq!(blue.lookup("db.red."), Lookup::Forward);
        // Across the zones: another network's names stay home, unanswered.
        assert_eq!(zones.lookup("n1", "db.red."), Lookup::NxDomain);
        assert_eq!(zones.lookup("n1", "DB.Red"), Lookup::NxDomain);
        assert_eq!(zones.lookup("n1", "red."), Lookup::NxDomain);
        assert_eq!(zones.lookup("n1", "web.blue."), Lookup::Found(both));
        assert_eq!(zones.lookup("n1", "db.red.example."), Lookup::Forward);
        assert_eq!(zones.lookup("n1", "example.com."), Lookup::Forward);
        assert_eq!(zones.lookup("gone", "web"), Lookup::Forward);
        assert_eq!(blue.lookup("example.com."), Lookup::Forward);
        assert_eq!(blue.lookup("blue."), Lookup::Apex);
        assert_eq!(blue.lookup("."), Lookup::Forward);
        assert_eq!(blue.lookup("bad name"), Lookup::NxDomain);
        let red = zones.get("n2").unwrap();
        assert_eq!(red.lookup("web"), Lookup::NxDomain);
        assert!(zones.is_gateway("10.3.0.1".parse().unwrap()));
        assert!(!zones
            .by_network
            .values()
            .any(|z| z.names().any(|(n, _)| n == "ghost")));
    }
}
