//! Reachability checks between network namespaces with `ping`.
//!
//! A namespace is given by name (as for `ip netns exec`) or by path; a path
//! under `/run/netns/` is turned into its name, any other path is entered
//! with `nsenter --net=PATH`.

use std::fmt;
use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

/// Default time a single [`ping`] waits for a reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// How many pings [`ping_matrix`] runs at once.
const MATRIX_PARALLELISM: usize = 16;

/// Whether `ip` answers an ICMP echo sent from namespace `netns`
/// (a few packets 200 ms apart, first reply wins, at most 2 s).
pub fn ping(netns: &str, ip: IpAddr) -> bool {
    ping_with(netns, ip, DEFAULT_TIMEOUT)
}

/// [`ping`] with an explicit deadline (rounded up to whole seconds).
pub fn ping_with(netns: &str, ip: IpAddr, timeout: Duration) -> bool {
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    let deadline = secs.max(1).to_string();
    let target = ip.to_string();
    let mut args: Vec<String> = vec!["ping".into(), "-n".into(), "-q".into()];
    if ip.is_ipv6() {
        args.push("-6".into());
    }
    for a in ["-c", "1", "-i", "0.2", "-w", &deadline, &target] {
        args.push(a.to_string());
    }
    let mut cmd = in_netns(netns, &args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match cmd.status() {
        Ok(st) => st.success(),
        Err(e) => {
            tracing::warn!(error = %e, netns, "Cannot run ping.");
            false
        }
    }
}

/// A command that runs `argv` inside a network namespace (name or path).
pub use socketplane_testkit::netns::command as in_netns;

/// One party of a ping matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingTarget {
    /// Shown in the matrix, e.g. `host1/web-a`.
    pub label: String,
    /// Namespace the pings are sent from (name or path).
    pub netns: String,
    /// Address the others ping.
    pub ip: IpAddr,
}

/// Who reaches whom: `reach[from][to]`, `None` on the diagonal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingMatrix {
    /// Labels, in the order of the targets.
    pub labels: Vec<String>,
    /// `reach[i][j]`: whether target `i` reached target `j`.
    pub reach: Vec<Vec<Option<bool>>>,
}

impl PingMatrix {
    /// Whether `from` reached `to` (by label); `None` if unknown or same.
    pub fn reaches(&self, from: &str, to: &str) -> Option<bool> {
        let i = self.labels.iter().position(|l| l == from)?;
        let j = self.labels.iter().position(|l| l == to)?;
        self.reach.get(i)?.get(j).copied().flatten()
    }

    /// Pairs (from, to) whose result differs from `expected(from, to)`.
    pub fn mismatches(&self, expected: impl Fn(&str, &str) -> bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, row) in self.reach.iter().enumerate() {
            for (j, cell) in row.iter().enumerate() {
                if let Some(got) = cell {
                    if *got != expected(&self.labels[i], &self.labels[j]) {
                        out.push((self.labels[i].clone(), self.labels[j].clone()));
                    }
                }
            }
        }
        out
    }
}

impl fmt::Display for PingMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let corner = "from \\ to";
        let first = self
            .labels
            .iter()
            .map(|l| l.len())
            .chain([corner.len()])
            .max()
            .unwrap_or(0);
        let col = self
            .labels
            .iter()
            .map(|l| l.len())
            .chain([3])
            .max()
            .unwrap_or(3);
        write!(f, "{corner:<first$}")?;
        for l in &self.labels {
            write!(f, "  {l:>col$}")?;
        }
        writeln!(f)?;
        for (i, row) in self.reach.iter().enumerate() {
            write!(f, "{:<first$}", self.labels[i])?;
            for cell in row {
                let s = match cell {
                    None => "-",
                    Some(true) => "yes",
                    Some(false) => "no",
                };
                write!(f, "  {s:>col$}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Ping every target from every other one (in parallel) and return the
/// matrix. Each unreachable pair costs [`DEFAULT_TIMEOUT`].
pub fn ping_matrix(targets: &[PingTarget]) -> PingMatrix {
    ping_matrix_with(targets, DEFAULT_TIMEOUT)
}

/// [`ping_matrix`] with an explicit per-ping deadline.
pub fn ping_matrix_with(targets: &[PingTarget], timeout: Duration) -> PingMatrix {
    let n = targets.len();
    let pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (0..n).filter(move |j| *j != i).map(move |j| (i, j)))
        .collect();
    let mut reach = vec![vec![None; n]; n];
    for chunk in pairs.chunks(MATRIX_PARALLELISM) {
        let results: Vec<(usize, usize, bool)> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|&(i, j)| {
                    let from = &targets[i];
                    let to = &targets[j];
                    s.spawn(move || (i, j, ping_with(&from.netns, to.ip, timeout)))
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        for (i, j, ok) in results {
            reach[i][j] = Some(ok);
        }
    }
    PingMatrix {
        labels: targets.iter().map(|t| t.label.clone()).collect(),
        reach,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_renders_and_answers() {
        let m = PingMatrix {
            labels: vec!["a".into(), "bb".into()],
            reach: vec![vec![None, Some(true)], vec![Some(false), None]],
        };
        assert_eq!(m.reaches("a", "bb"), Some(true));
        assert_eq!(m.reaches("bb", "a"), Some(false));
        assert_eq!(m.reaches("a", "a"), None);
        assert_eq!(m.mismatches(|_, _| true), vec![("bb".into(), "a".into())]);
        let text = m.to_string();
        assert!(text.contains("from \\ to"), "{text}");
        assert!(text.lines().nth(1).unwrap().contains("yes"), "{text}");
        assert!(text.lines().nth(2).unwrap().contains("no"), "{text}");
    }

    #[test]
    fn netns_paths_become_names() {
        let c = in_netns("/run/netns/sp-x-wa", &["true".to_string()]);
        assert_eq!(c.get_program(), "ip");
        let c = in_netns("/proc/1/ns/net", &["true".to_string()]);
        assert_eq!(c.get_program(), "nsenter");
    }
}
