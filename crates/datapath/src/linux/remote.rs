//! What the Linux datapath keeps of remote endpoints' FDB and neighbour
//! entries between applies, so that one change costs its own writes:
//! per network the endpoints last applied and reference counts of the
//! entries they need. An apply compares the new list with the last one
//! (a cheap scan, no hashing of the whole table), and only the entries of
//! the endpoints that came or went are looked at and written.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use netlink_packet_route::neighbour::NeighbourState;

use crate::kernel::nl;
use crate::RemoteEndpoint;

/// How often the FDB, neighbour and route entries of remote endpoints are
/// read back from the kernel and compared even when nothing failed (in
/// between, an apply writes only the differences to the last one; see
/// [`crate::Datapath::resync`]).
pub const REMOTE_RECHECK: Duration = Duration::from_secs(30);

/// Endpoints that came and went in one apply beyond which a network's
/// entries are compared in full (still without a dump).
const DELTA_MAX: usize = 256;

/// What a remote endpoint needs on a network: its IP, MAC and host.
pub(crate) type Remote = (Ipv4Addr, [u8; 6], Ipv4Addr);

pub(crate) fn remote(r: &RemoteEndpoint) -> Remote {
    (r.ip, r.mac.0, r.host)
}

/// One network's entries for its remote endpoints, as wanted or as found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RemoteEntries {
    /// Index of the bridge the neighbours are on.
    pub bridge: u32,
    /// Index of the VXLAN device the FDB entries are on.
    pub vxlan: u32,
    /// The VXLAN device's FDB: (MAC, host); the all-zero MAC once per
    /// host is the flood list.
    pub vx_fdb: HashSet<([u8; 6], Ipv4Addr)>,
    /// Static bridge FDB entries on the VXLAN port.
    pub br_fdb: HashSet<[u8; 6]>,
    /// Permanent neighbours on the bridge (a found one without a MAC has
    /// the all-zero MAC, which no endpoint may have).
    pub neigh: HashMap<Ipv4Addr, [u8; 6]>,
}

impl RemoteEntries {
    fn empty(bridge: u32, vxlan: u32) -> Self {
        RemoteEntries {
            bridge,
            vxlan,
            ..Default::default()
        }
    }

    /// Everything `remotes` need (of one IP listed twice, the last wins).
    pub(crate) fn wanted(bridge: u32, vxlan: u32, remotes: &[Remote]) -> Self {
        let mut w = Self::empty(bridge, vxlan);
        for (ip, mac, host) in remotes {
            w.vx_fdb.insert((*mac, *host));
            w.vx_fdb.insert(([0; 6], *host));
            w.br_fdb.insert(*mac);
            w.neigh.insert(*ip, *mac);
        }
        w
    }

    /// Ours among the dumped `fdb` (AF_BRIDGE) and `neigh` (AF_INET)
    /// entries, on bridge `bridge` and VXLAN device `vxlan`.
    pub(crate) fn found(bridge: u32, vxlan: u32, fdb: &[nl::Neigh], neigh: &[nl::Neigh]) -> Self {
        let mut f = Self::empty(bridge, vxlan);
        for n in fdb.iter().filter(|n| n.index == vxlan) {
            let Some(mac) = mac6(n.lladdr.as_deref()) else {
                continue;
            };
            match n.dst {
                Some(dst) => {
                    f.vx_fdb.insert((mac, dst));
                }
                None if n.master == Some(bridge) && n.state == NeighbourState::Noarp => {
                    f.br_fdb.insert(mac);
                }
                None => {}
            }
        }
        for n in neigh.iter().filter(|n| n.index == bridge) {
            if let (Some(ip), NeighbourState::Permanent) = (n.dst, n.state) {
                f.neigh
                    .insert(ip, mac6(n.lladdr.as_deref()).unwrap_or([0; 6]));
            }
        }
        f
    }
}

pub(crate) fn mac6(v: Option<&[u8]>) -> Option<[u8; 6]> {
    v.and_then(|b| b.try_into().ok())
}

/// How many of a network's remote endpoints need each entry.
#[derive(Debug, Default)]
struct Counts {
    vx: HashMap<([u8; 6], Ipv4Addr), u32>,
    hosts: HashMap<Ipv4Addr, u32>,
    macs: HashMap<[u8; 6], u32>,
    /// Endpoints with each IP, and the MAC of the last one counted.
    ips: HashMap<Ipv4Addr, (u32, [u8; 6])>,
}

fn inc<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u32>, k: K) {
    *m.entry(k).or_default() += 1;
}

fn dec<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u32>, k: K) {
    if let std::collections::hash_map::Entry::Occupied(mut e) = m.entry(k) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
        }
    }
}

impl Counts {
    fn add(&mut self, (ip, mac, host): Remote) {
        inc(&mut self.vx, (mac, host));
        inc(&mut self.hosts, host);
        inc(&mut self.macs, mac);
        let e = self.ips.entry(ip).or_insert((0, mac));
        *e = (e.0 + 1, mac);
    }

    fn sub(&mut self, (ip, mac, host): Remote) {
        dec(&mut self.vx, (mac, host));
        dec(&mut self.hosts, host);
        dec(&mut self.macs, mac);
        if let std::collections::hash_map::Entry::Occupied(mut e) = self.ips.entry(ip) {
            e.get_mut().0 -= 1;
            if e.get().0 == 0 {
                e.remove();
            }
        }
    }

    /// The entries of `keys` (the entries these endpoints touch) that
    /// these counts need; `None` when one of their IPs is listed more
    /// than once (which MAC it gets then depends on the order: compared
    /// in full instead).
    fn entries_for(&self, bridge: u32, vxlan: u32, keys: &[Remote]) -> Option<RemoteEntries> {
        let mut e = RemoteEntries::empty(bridge, vxlan);
        for (ip, mac, host) in keys {
            if self.vx.contains_key(&(*mac, *host)) {
                e.vx_fdb.insert((*mac, *host));
            }
            if self.hosts.contains_key(host) {
                e.vx_fdb.insert(([0; 6], *host));
            }
            if self.macs.contains_key(mac) {
                e.br_fdb.insert(*mac);
            }
            match self.ips.get(ip) {
                Some((1, m)) => {
                    e.neigh.insert(*ip, *m);
                }
                Some(_) => return None,
                None => {}
            }
        }
        Some(e)
    }
}

/// A network's remote endpoints as last applied (so in the kernel).
#[derive(Debug)]
pub(crate) struct NetCache {
    pub bridge: u32,
    pub vxlan: u32,
    last: Vec<Remote>,
    counts: Counts,
}

impl NetCache {
    /// After `remotes` were applied on bridge `bridge` and VXLAN device `vxlan`.
    pub(crate) fn new(bridge: u32, vxlan: u32, remotes: Vec<Remote>) -> Self {
        let mut counts = Counts::default();
        for r in &remotes {
            counts.add(*r);
        }
        NetCache {
            bridge,
            vxlan,
            last: remotes,
            counts,
        }
    }

    /// The entries in place (`have`) and wanted (`want`) to go from the
    /// last list to `now`, for the entries of the endpoints that came or
    /// went only: the lists' common beginning and end are skipped, so a
    /// change costs a scan of the list and a few lookups. `None` when the
    /// change is large or ambiguous: then compare [`Self::everything`].
    pub(crate) fn delta(&mut self, now: &[Remote]) -> Option<(RemoteEntries, RemoteEntries)> {
        let old = &self.last;
        let head = old.iter().zip(now).take_while(|(a, b)| a == b).count();
        let tail = old[head..]
            .iter()
            .rev()
            .zip(now[head..].iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        let gone = &old[head..old.len() - tail];
        let came = &now[head..now.len() - tail];
        if gone.len() + came.len() > DELTA_MAX {
            return None;
        }
        let keys: Vec<Remote> = gone.iter().chain(came).copied().collect();
        let (br, vx) = (self.bridge, self.vxlan);
        let have = self.counts.entries_for(br, vx, &keys)?;
        for r in gone {
            self.counts.sub(*r);
        }
        for r in came {
            self.counts.add(*r);
        }
        let want = self.counts.entries_for(br, vx, &keys)?;
        self.last = now.to_vec();
        Some((have, want))
    }

    /// Every entry of the last applied list.
    pub(crate) fn everything(&self) -> RemoteEntries {
        RemoteEntries::wanted(self.bridge, self.vxlan, &self.last)
    }
}

/// What the last applies left of remote endpoints' entries: trusted until
/// the next full check.
#[derive(Debug, Default)]
pub(crate) struct RemoteCache {
    /// By VNI.
    pub nets: HashMap<u32, NetCache>,
    /// Our routes (block or endpoint → host, out of the underlay).
    pub routes: Option<BTreeMap<ipnet::Ipv4Net, Ipv4Addr>>,
    /// When the kernel was last read back; `None`: at the next apply.
    pub checked: Option<Instant>,
}

impl RemoteCache {
    /// Whether the next apply must read the kernel back.
    pub(crate) fn check_due(&self) -> bool {
        self.checked.is_none_or(|t| t.elapsed() >= REMOTE_RECHECK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(i: u8, host: u8) -> Remote {
        (
            Ipv4Addr::new(10, 0, 0, i),
            [2, 0, 0, 0, 0, i],
            Ipv4Addr::new(198, 18, 0, host),
        )
    }

    /// Applies `now` from `c` by its delta, checking it against the full
    /// comparison of the two lists.
    fn step(c: &mut NetCache, now: &[Remote]) -> Option<()> {
        let before = c.everything();
        let (have, want) = c.delta(now)?;
        let after = RemoteEntries::wanted(1, 2, now);
        // Applying the delta to the full old state gives the full new one.
        let mut s = before.clone();
        for k in have.vx_fdb.difference(&want.vx_fdb) {
            s.vx_fdb.remove(k);
        }
        s.vx_fdb.extend(want.vx_fdb.iter().copied());
        for k in have.br_fdb.difference(&want.br_fdb) {
            s.br_fdb.remove(k);
        }
        s.br_fdb.extend(want.br_fdb.iter().copied());
        for k in have.neigh.keys().filter(|k| !want.neigh.contains_key(*k)) {
            s.neigh.remove(k);
        }
        s.neigh.extend(want.neigh.iter().map(|(k, v)| (*k, *v)));
        assert_eq!(s, after);
        assert_eq!(c.everything(), after);
        Some(())
    }

    #[test]
    fn deltas_touch_only_what_changed_and_match_a_full_comparison() {
        let all: Vec<Remote> = (1..=100).map(|i| r(i, 1 + i % 5)).collect();
        let mut c = NetCache::new(1, 2, all.clone());
        // One removed from the middle: its three entries only.
        let mut now = all.clone();
        now.remove(40);
        let (have, want) = c.delta(&now).unwrap();
        assert_eq!(
            have.vx_fdb.len(),
            2,
            "its FDB entry and its host's flood entry"
        );
        assert_eq!(want.vx_fdb.len(), 1, "the flood entry stays");
        assert_eq!((have.br_fdb.len(), want.br_fdb.len()), (1, 0));
        assert_eq!((have.neigh.len(), want.neigh.len()), (1, 0));
        assert_eq!(c.everything(), RemoteEntries::wanted(1, 2, &now));
        // Added back at the end, one moved to a new host, one new MAC.
        now.push(all[40]);
        step(&mut c, &now).unwrap();
        now[7].2 = Ipv4Addr::new(198, 18, 0, 99);
        step(&mut c, &now).unwrap();
        now[8].1 = [2, 0, 0, 0, 9, 9];
        step(&mut c, &now).unwrap();
        // A host's last endpoint goes: its flood entry with it.
        let host5 = Ipv4Addr::new(198, 18, 0, 5);
        now.retain(|x| x.2 != host5);
        step(&mut c, &now).unwrap();
        assert!(!c.everything().vx_fdb.contains(&([0; 6], host5)));
        // An IP listed twice is left to the full comparison.
        let mut dup = now.clone();
        dup.push((now[0].0, [2, 0, 0, 0, 7, 7], now[0].2));
        assert!(c.delta(&dup).is_none());
        // Too many changes at once as well.
        let mut c = NetCache::new(1, 2, Vec::new());
        let many: Vec<Remote> = (0..300u32)
            .map(|i| {
                let ip = Ipv4Addr::from(0x0a00_0000 + i + 2);
                (
                    ip,
                    [2, 0, 0, 0, (i >> 8) as u8, i as u8],
                    Ipv4Addr::new(198, 18, 0, 1),
                )
            })
            .collect();
        assert!(c.delta(&many).is_none());
    }
}
