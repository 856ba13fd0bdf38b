//! A recording datapath for benchmarks and tests (`--datapath record`): it
//! plumbs nothing, and appends every change an apply makes to a log file,
//! one line each, so a harness can run a hundred agents on one machine and
//! still see when each endpoint reached each host. Never for production:
//! its workloads get no connectivity.
//!
//! Log lines: `UNIX_MICROS OP KIND ID`, OP `+` (added), `~` (changed) or
//! `-` (removed), KIND `L` (local endpoint) or `R` (remote endpoint).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::{
    ApplyReport, Datapath, DatapathError, DesiredState, EndpointChanges, EndpointIfnames,
    LocalEndpoint, MacAddr, RemoteEndpoint, Result, Underlay,
};

/// The overlay MTU it reports (a 1500-byte underlay minus VXLAN).
const DEFAULT_MTU: u32 = 1450;

/// What one endpoint looked like when it was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Applied {
    local: bool,
    network: String,
    ip: Ipv4Addr,
    mac: MacAddr,
    /// The remote host's underlay address (`None` for a local one).
    host: Option<Ipv4Addr>,
}

#[derive(Default)]
struct Recorded {
    endpoints: HashMap<String, Applied>,
    log: Option<BufWriter<File>>,
}

/// See the module documentation.
pub struct RecordDatapath {
    underlay: Underlay,
    log_path: Option<PathBuf>,
    state: Mutex<Recorded>,
}

impl RecordDatapath {
    /// Records to `log` (appended to; `None`: keeps the state only).
    pub fn new(underlay_ip: Ipv4Addr, log: Option<&Path>) -> Result<RecordDatapath> {
        let file = match log {
            Some(path) => Some(BufWriter::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| DatapathError::RecordLog {
                        path: path.to_path_buf(),
                        source,
                    })?,
            )),
            None => None,
        };
        Ok(RecordDatapath {
            underlay: Underlay {
                ip: underlay_ip,
                default_mtu: DEFAULT_MTU,
            },
            log_path: log.map(Path::to_path_buf),
            state: Mutex::new(Recorded {
                endpoints: HashMap::new(),
                log: file,
            }),
        })
    }

    /// How many endpoints (local and remote) are applied now.
    pub fn applied_endpoints(&self) -> usize {
        self.lock().endpoints.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, rec: &mut Recorded, lines: &[(char, bool, &str)]) -> Result<()> {
        let Some(log) = rec.log.as_mut() else {
            return Ok(());
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        let res = lines
            .iter()
            .try_for_each(|(op, local, id)| {
                writeln!(log, "{now} {op} {} {id}", if *local { 'L' } else { 'R' })
            })
            .and_then(|()| log.flush());
        res.map_err(|source| DatapathError::RecordLog {
            path: self.log_path.clone().unwrap_or_default(),
            source,
        })
    }

    /// Makes `wanted` true and removes `removed`, logging what changed.
    fn commit(
        &self,
        rec: &mut Recorded,
        wanted: Vec<(&str, &str, Applied)>,
        removed: &[String],
    ) -> Result<ApplyReport> {
        let mut lines: Vec<(char, bool, &str)> = Vec::new();
        let mut updates: Vec<(&str, Applied)> = Vec::new();
        for (id, network, want) in wanted {
            let same = |old: &Applied| {
                old.local == want.local
                    && old.network == network
                    && (old.ip, old.mac, old.host) == (want.ip, want.mac, want.host)
            };
            let op = match rec.endpoints.get(id) {
                None => '+',
                Some(old) if !same(old) => '~',
                Some(_) => continue,
            };
            lines.push((op, want.local, id));
            updates.push((
                id,
                Applied {
                    network: network.to_string(),
                    ..want
                },
            ));
        }
        let gone: Vec<(&str, bool)> = (removed.iter())
            .filter_map(|id| Some((id.as_str(), rec.endpoints.get(id)?.local)))
            .collect();
        lines.extend(gone.iter().map(|(id, local)| ('-', *local, *id)));
        let changes = lines.len();
        if changes > 0 {
            self.write(rec, &lines)?;
        }
        for (id, applied) in updates {
            rec.endpoints.insert(id.to_string(), applied);
        }
        for (id, _) in gone {
            rec.endpoints.remove(id);
        }
        Ok(ApplyReport { changes })
    }
}

/// What `local` and `remote` want, by id and network name; the network is
/// compared in place and copied only for what changed.
fn wanted<'a>(
    local: &'a [LocalEndpoint],
    remote: &'a [RemoteEndpoint],
) -> Vec<(&'a str, &'a str, Applied)> {
    let want = |local, ip, mac, host| Applied {
        local,
        network: String::new(),
        ip,
        mac,
        host,
    };
    let l = local.iter().map(|e| {
        let w = want(true, e.ip, e.mac, None);
        (e.id.as_str(), e.network.as_str(), w)
    });
    let r = remote.iter().map(|e| {
        let w = want(false, e.ip, e.mac, Some(e.host));
        (e.id.as_str(), e.network.as_str(), w)
    });
    l.chain(r).collect()
}

#[async_trait]
impl Datapath for RecordDatapath {
    async fn apply(&self, desired: &DesiredState) -> Result<ApplyReport> {
        // Compared in place, without copying the desired state: a pass
        // costs what the datapath it stands for would (a lookup per
        // endpoint), so the scale harness measures the control plane.
        let mut rec = self.lock();
        let wanted = wanted(&desired.local, &desired.remote);
        let ids: HashSet<&str> = wanted.iter().map(|(id, _, _)| *id).collect();
        let removed: Vec<String> = (rec.endpoints.keys())
            .filter(|id| !ids.contains(id.as_str()))
            .cloned()
            .collect();
        self.commit(&mut rec, wanted, &removed)
    }

    /// Only the changed endpoints are looked at: a pass costs what the
    /// change does, as the Linux datapath's incremental writes do.
    async fn apply_changes(&self, changes: &EndpointChanges) -> Result<Option<ApplyReport>> {
        let mut rec = self.lock();
        let wanted = wanted(&changes.local, &changes.remote);
        self.commit(&mut rec, wanted, &changes.removed).map(Some)
    }

    fn endpoint_ifnames(&self, endpoint_id: &str) -> EndpointIfnames {
        let short: String = endpoint_id.chars().take(8).collect();
        EndpointIfnames {
            host: format!("sprh{short}"),
            peer: format!("sprp{short}"),
        }
    }

    async fn teardown(&self) -> Result<()> {
        self.apply(&DesiredState::default()).await.map(|_| ())
    }

    fn underlay(&self) -> Underlay {
        self.underlay
    }

    fn name(&self) -> &'static str {
        "record"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(id: &str, host: u8) -> RemoteEndpoint {
        RemoteEndpoint {
            id: id.into(),
            network: "web".into(),
            ip: Ipv4Addr::new(10, 0, 0, host),
            mac: "02:00:00:00:00:01".parse().unwrap(),
            host: Ipv4Addr::new(198, 18, 0, host),
        }
    }

    #[tokio::test]
    async fn it_logs_what_changes_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("record.log");
        let dp = RecordDatapath::new(Ipv4Addr::new(198, 18, 0, 11), Some(&log)).unwrap();
        let mut desired = DesiredState {
            remote: vec![remote("a", 12), remote("b", 13)],
            local: vec![LocalEndpoint {
                id: "l".into(),
                network: "web".into(),
                ip: Ipv4Addr::new(10, 0, 0, 2),
                mac: "02:00:00:00:00:02".parse().unwrap(),
                netns: None,
                netns_id: None,
                ifname: "eth0".into(),
            }],
            ..Default::default()
        };
        assert_eq!(dp.apply(&desired).await.unwrap().changes, 3);
        assert_eq!(dp.apply(&desired).await.unwrap().changes, 0);
        desired.remote[0].host = Ipv4Addr::new(198, 18, 0, 14);
        desired.remote.pop();
        assert_eq!(dp.apply(&desired).await.unwrap().changes, 2);
        dp.teardown().await.unwrap();
        assert_eq!(dp.applied_endpoints(), 0);
        let text = std::fs::read_to_string(&log).unwrap();
        let ops: Vec<String> = text
            .lines()
            .map(|l| l.split(' ').skip(1).collect::<Vec<_>>().join(" "))
            .collect();
        let mut first: Vec<&String> = ops[..3].iter().collect();
        first.sort();
        assert_eq!(first, ["+ L l", "+ R a", "+ R b"]);
        let mut second: Vec<&String> = ops[3..5].iter().collect();
        second.sort();
        assert_eq!(second, ["- R b", "~ R a"]);
        let mut last: Vec<&String> = ops[5..7].iter().collect();
        last.sort();
        assert_eq!(last, ["- L l", "- R a"]);

        // Changes alone: only what they name is looked at and logged.
        let base = DesiredState {
            remote: vec![remote("a", 12), remote("b", 13)],
            ..Default::default()
        };
        dp.apply(&base).await.unwrap();
        let changes = EndpointChanges {
            remote: vec![remote("a", 12), remote("c", 14)],
            removed: vec!["b".into(), "never".into()],
            ..Default::default()
        };
        let report = dp.apply_changes(&changes).await.unwrap();
        assert_eq!(report, Some(ApplyReport { changes: 2 }), "+c, -b");
        let after = DesiredState {
            remote: vec![remote("a", 12), remote("c", 14)],
            ..Default::default()
        };
        assert_eq!(
            dp.apply(&after).await.unwrap().changes,
            0,
            "where a full state leads"
        );
        let text = std::fs::read_to_string(&log).unwrap();
        let mut tail: Vec<String> = (text.lines().rev().take(2))
            .map(|l| l.split(' ').skip(1).collect::<Vec<_>>().join(" "))
            .collect();
        tail.sort();
        assert_eq!(tail, ["+ R c", "- R b"]);
    }
}
