//! A ping stream at 100 packets/s from a workload, and a timeline of what a
//! test did meanwhile: when packets are lost, the report says which ones
//! and when, next to the test's own phases, on one clock (Unix time, as
//! `ping -D` prints it).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::TestLab;
use socketplane_testkit::netns;

/// Seconds since the Unix epoch, as `ping -D` stamps its lines.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Named moments of a test, in Unix time.
#[derive(Debug, Default, Clone)]
pub struct Timeline(Vec<(String, f64)>);

impl Timeline {
    /// Records `what` now.
    pub fn mark(&mut self, what: impl Into<String>) {
        self.0.push((what.into(), unix_now()));
    }

    /// The marks (and `extra` moments), relative to `origin`, in time order.
    fn render(&self, origin: f64, extra: &[(String, f64)]) -> String {
        let mut all: Vec<&(String, f64)> = self.0.iter().chain(extra).collect();
        all.sort_by(|a, b| a.1.total_cmp(&b.1));
        let mut out = String::new();
        for (what, t) in all {
            let _ = writeln!(out, "  {:+9.3} s  {t:.6}  {what}", t - origin);
        }
        out
    }
}

/// A running `ping -D -O` at [`STREAM_INTERVAL`].
pub struct PingStream {
    child: Option<std::process::Child>,
    count: u32,
    started: f64,
    what: String,
}

/// Interval of a stream: 100 packets/s.
pub const STREAM_INTERVAL: &str = "0.01";

/// What a finished stream saw.
#[derive(Debug)]
pub struct StreamResult {
    pub sent: u32,
    pub received: u32,
    /// Sequence numbers without a reply, each with the moment it was
    /// reported outstanding (`-O`: just before the next one went out), or
    /// else estimated from its neighbours.
    pub lost: Vec<(u32, f64)>,
    started: f64,
    what: String,
    /// Reply times by sequence number.
    replies: BTreeMap<u32, (f64, f64)>,
}

impl PingStream {
    /// Starts `packets` pings from workload `from` to `to`.
    pub fn start(t: &TestLab, from: &str, to: Ipv4Addr, packets: u32) -> PingStream {
        let ns = t.lab().workload(from).expect("workload").netns.clone();
        let count = packets.to_string();
        let started = unix_now();
        let child = netns::command(
            &ns,
            &[
                "ping",
                "-n",
                "-D",
                "-O",
                "-i",
                STREAM_INTERVAL,
                "-c",
                &count,
                "-W",
                "1",
                &to.to_string(),
            ],
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ping");
        PingStream {
            child: Some(child),
            count: packets,
            started,
            what: format!("{from} -> {to}"),
        }
    }

    /// Whether ping still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("ping status").is_none())
    }

    /// Waits for the stream to end.
    pub fn finish(mut self) -> StreamResult {
        let child = self.child.take().expect("a running stream");
        let out = child.wait_with_output().expect("ping output");
        let text = String::from_utf8_lossy(&out.stdout);
        // "1200 packets transmitted, 1200 received, ..."
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| {
                panic!(
                    "no ping summary: {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let nums: Vec<u32> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        assert_eq!(nums[0], self.count, "{line}");
        let (replies, outstanding) = parse_lines(&text);
        let mut lost = Vec::new();
        for seq in 1..=nums[0] {
            if replies.contains_key(&seq) {
                continue;
            }
            let at = outstanding.get(&seq).copied().unwrap_or_else(|| {
                estimate(&replies, seq).unwrap_or(self.started + f64::from(seq) * 0.01)
            });
            lost.push((seq, at));
        }
        StreamResult {
            sent: nums[0],
            received: nums[1],
            lost,
            started: self.started,
            what: std::mem::take(&mut self.what),
            replies,
        }
    }
}

/// Reply lines (`[T] 64 bytes from A: icmp_seq=N ttl=64 time=R ms`):
/// seq → (T, R in ms); `no answer yet for icmp_seq=N` lines: seq → T.
fn parse_lines(text: &str) -> (BTreeMap<u32, (f64, f64)>, BTreeMap<u32, f64>) {
    let mut replies = BTreeMap::new();
    let mut outstanding = BTreeMap::new();
    for l in text.lines() {
        let Some(stamp) = l
            .strip_prefix('[')
            .and_then(|r| r.split(']').next())
            .and_then(|s| s.parse::<f64>().ok())
        else {
            continue;
        };
        let field = |key: &str| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse::<f64>().ok())
        };
        let Some(seq) = l
            .split(|c: char| c.is_whitespace())
            .find_map(|w| w.strip_prefix("icmp_seq="))
            .and_then(|v| v.parse::<u32>().ok())
        else {
            continue;
        };
        if l.contains("no answer yet") {
            outstanding.entry(seq).or_insert(stamp);
        } else if l.contains("bytes from") && !l.contains("DUP!") {
            replies.insert(seq, (stamp, field("time=").unwrap_or_default()));
        }
    }
    (replies, outstanding)
}

/// When `seq` went out, from the nearest answered neighbours' send times.
fn estimate(replies: &BTreeMap<u32, (f64, f64)>, seq: u32) -> Option<f64> {
    let sent = |(s, (t, rtt)): (&u32, &(f64, f64))| (*s, t - rtt / 1000.0);
    let before = replies.range(..seq).next_back().map(sent);
    let after = replies.range(seq + 1..).next().map(sent);
    match (before, after) {
        (Some((a, ta)), Some((b, tb))) => {
            Some(ta + (tb - ta) * f64::from(seq - a) / f64::from(b - a))
        }
        (Some((a, ta)), None) => Some(ta + f64::from(seq - a) * 0.01),
        (None, Some((b, tb))) => Some(tb - f64::from(b - seq) * 0.01),
        (None, None) => None,
    }
}

impl StreamResult {
    /// Which packets were lost and when, among the test's `timeline`, and
    /// the replies around each loss.
    pub fn report(&self, timeline: &Timeline) -> String {
        let mut out = format!(
            "stream {} started at {:.6}: {}/{} replies; lost icmp_seq: {:?}\n",
            self.what,
            self.started,
            self.received,
            self.sent,
            self.lost.iter().map(|(s, _)| *s).collect::<Vec<_>>()
        );
        let extra: Vec<(String, f64)> = self
            .lost
            .iter()
            .map(|(s, t)| (format!("LOST icmp_seq={s} (outstanding)"), *t))
            .collect();
        out.push_str(&timeline.render(self.started, &extra));
        for (seq, _) in &self.lost {
            let around: Vec<String> = self
                .replies
                .range(seq.saturating_sub(3)..=seq + 3)
                .map(|(s, (t, rtt))| format!("{s}@{t:.3}({rtt}ms)"))
                .collect();
            let _ = writeln!(out, "  replies around {seq}: {}", around.join(" "));
        }
        out
    }
}

impl Drop for PingStream {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_packets_are_named_with_their_times() {
        let text = "PING 10.2.0.3 (10.2.0.3) 56(84) bytes of data.\n\
            [100.010500] 64 bytes from 10.2.0.3: icmp_seq=1 ttl=64 time=0.5 ms\n\
            [100.030000] no answer yet for icmp_seq=2\n\
            [100.031000] 64 bytes from 10.2.0.3: icmp_seq=3 ttl=64 time=1.0 ms\n\
            [100.041000] 64 bytes from 10.2.0.3: icmp_seq=3 ttl=64 time=1.0 ms (DUP!)\n";
        let (replies, outstanding) = parse_lines(text);
        assert_eq!(replies.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(outstanding.get(&2), Some(&100.03));
        let mid = estimate(&replies, 2).unwrap();
        assert!((mid - 100.02).abs() < 1e-6, "{mid}");
    }
}
