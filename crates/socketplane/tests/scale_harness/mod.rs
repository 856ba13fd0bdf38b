//! The scale harness: N real agents (real store, cluster port and API),
//! each in its own network namespace on the lab's underlay, with the
//! recording datapath (`--datapath record`): it plumbs nothing and logs
//! every change, so a hundred hosts fit on one machine and the harness
//! sees when each endpoint reached each host. Shared by the CI test
//! (`tests/scale.rs`, small) and the benchmark (`examples/bench_scale.rs`).

#![allow(dead_code)] // The test uses a part of it, the benchmark all.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socketplane_api::rest::{ClusterStatus, EndpointInfo};
use socketplane_lab::{Lab, LabConfig};

/// The recording datapath's log in each host's data dir.
const RECORD_LOG: &str = "datapath-record.log";

/// Microseconds since the epoch (the record log's clock).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One HTTP/1.1 request over a unix socket: (status, body).
pub fn http(socket: &Path, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// An attached endpoint: its id, the host it is on, when the attach was
/// acknowledged.
#[derive(Debug, Clone)]
pub struct Attached {
    pub id: String,
    pub host: usize,
    pub ack_us: u64,
    /// How long the attach call took.
    pub call: Duration,
}

/// What the recording datapath of one host has applied, read from its log
/// as it grows.
struct HostLog {
    path: PathBuf,
    offset: u64,
    partial: String,
    /// Endpoint id → when it was (last) added.
    present: HashMap<String, u64>,
}

impl HostLog {
    fn new(path: PathBuf) -> HostLog {
        let offset = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        HostLog {
            path,
            offset,
            partial: String::new(),
            present: HashMap::new(),
        }
    }

    /// Reads what was appended since the last call.
    fn poll(&mut self) {
        let Ok(mut f) = fs::File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = String::new();
        let Ok(n) = f.read_to_string(&mut buf) else {
            return;
        };
        self.offset += n as u64;
        self.partial.push_str(&buf);
        let Some(cut) = self.partial.rfind('\n') else {
            return;
        };
        let complete: String = self.partial.drain(..=cut).collect();
        for line in complete.lines() {
            let mut it = line.split(' ');
            let (Some(t), Some(op), Some(_kind), Some(id)) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                continue;
            };
            let t: u64 = t.parse().unwrap_or(0);
            match op {
                "+" => {
                    self.present.insert(id.to_string(), t);
                }
                "-" => {
                    self.present.remove(id);
                }
                _ => {}
            }
        }
    }
}

/// Percentiles of a set of durations.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub n: usize,
}

impl Percentiles {
    pub fn of(mut v: Vec<Duration>) -> Percentiles {
        v.sort();
        let at = |p: f64| {
            if v.is_empty() {
                Duration::ZERO
            } else {
                v[(((v.len() - 1) as f64) * p).round() as usize]
            }
        };
        Percentiles {
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
            n: v.len(),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (n={})",
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3,
            self.n
        )
    }
}

/// Resource use of the agents over a window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub rss_mib_mean: f64,
    pub rss_mib_max: f64,
    /// The anonymous part of RSS (`RssAnon`): the agent's own memory,
    /// without the pages of the program file every agent shares.
    pub anon_mib_mean: f64,
    pub anon_mib_max: f64,
    /// Percent of one core, per agent.
    pub cpu_pct_mean: f64,
    pub cpu_pct_max: f64,
}

/// A `/proc/PID/status` field in KiB, such as `VmRSS:` or `RssAnon:`.
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Where the lab named `name` keeps its state.
pub fn state_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sp-scale-{name}"))
}

/// A lab of `--datapath record` agents and the logs they write.
pub struct Scale {
    pub lab: Option<Lab>,
    bin: PathBuf,
    logs: Vec<HostLog>,
}

impl Drop for Scale {
    fn drop(&mut self) {
        if std::env::var_os("SCALE_KEEP").is_some() {
            eprintln!("SCALE_KEEP: leaving the lab up (socketplane lab down)");
            return;
        }
        if let Some(lab) = self.lab.take() {
            if let Err(e) = lab.down() {
                eprintln!("scale harness: lab down: {e}");
            }
        }
    }
}

impl Scale {
    /// Builds the lab: `hosts` namespaces and agents (host1 founds).
    pub fn up(name: &str, hosts: usize, bin: &Path, extra: &[&str]) -> Scale {
        let mut config = LabConfig::new(name, hosts, bin);
        // SCALE_DATAPATH=linux: e.g. to time a cold start with a binary
        // that has no recording datapath.
        config.datapath = std::env::var("SCALE_DATAPATH").unwrap_or_else(|_| "record".into());
        config.agent_args = extra.iter().map(|s| s.to_string()).collect();
        config.state_dir = state_dir(name);
        let _ = Lab::purge(name, &config.state_dir);
        let timeouts = socketplane_lab::Timeouts {
            ready: Duration::from_secs(120),
            ..Default::default()
        };
        let lab = Lab::up_with(config, timeouts).expect("lab up");
        let mut s = Scale {
            lab: Some(lab),
            bin: bin.to_path_buf(),
            logs: Vec::new(),
        };
        s.reset_logs();
        s
    }

    pub fn lab(&self) -> &Lab {
        self.lab.as_ref().expect("lab")
    }

    pub fn lab_mut(&mut self) -> &mut Lab {
        self.lab.as_mut().expect("lab")
    }

    pub fn hosts(&self) -> usize {
        self.lab().hosts().len()
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.lab().hosts()[i].data_dir.join(RECORD_LOG)
    }

    /// Forgets what was applied and follows the logs from their ends (after
    /// a restart every agent applies everything afresh).
    pub fn reset_logs(&mut self) {
        self.logs = (0..self.hosts())
            .map(|i| HostLog::new(self.log_path(i)))
            .collect();
    }

    /// The cluster status as host `i` sees it.
    pub fn status(&self, i: usize) -> Option<ClusterStatus> {
        let (code, body) = http(&self.lab().hosts()[i].socket, "GET", "/v1/cluster", "").ok()?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// Waits until host `i` sees `n` live nodes; the time it took.
    pub fn wait_members(&self, i: usize, n: usize, timeout: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.status(i) {
                if s.nodes.iter().filter(|x| x.alive).count() >= n {
                    return t0.elapsed();
                }
            }
            assert!(
                t0.elapsed() < timeout,
                "not all {n} hosts became members within {timeout:?} (host{} sees {:?})",
                i + 1,
                self.status(i)
                    .map(|s| s.nodes.iter().filter(|x| x.alive).count())
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM to every agent at once and waits until all are gone.
    pub fn stop_all(&mut self) {
        let pids: Vec<Option<u32>> = self.lab().hosts().iter().map(|h| h.agent_pid).collect();
        for pid in pids.iter().flatten() {
            // SAFETY: kill(2) on a pid we started; no memory is involved.
            unsafe {
                libc::kill(*pid as i32, libc::SIGTERM);
            }
        }
        for i in 0..self.hosts() {
            self.lab_mut()
                .stop_agent(i, socketplane_lab::Signal::SIGTERM)
                .expect("stop agent");
        }
    }

    /// Starts every agent at once (host1 with `--bootstrap` when `found`),
    /// then waits for their sockets.
    pub fn start_all(&mut self, found: bool) {
        for i in 0..self.hosts() {
            self.lab_mut()
                .spawn_agent(i, found && i == 0)
                .expect("spawn agent");
        }
        for i in 0..self.hosts() {
            self.lab().wait_agent(i).expect("agent socket");
        }
    }

    /// Cold start: every agent stopped, every data dir wiped, all started
    /// at once. The time until host1 sees every host as a live member.
    pub fn cold_start(&mut self, timeout: Duration) -> Duration {
        self.stop_all();
        for h in self.lab().hosts() {
            let _ = fs::remove_dir_all(&h.data_dir);
            fs::create_dir_all(&h.data_dir).expect("data dir");
        }
        self.reset_logs();
        let t0 = Instant::now();
        self.start_all(true);
        let n = self.hosts();
        self.wait_members(0, n, timeout);
        t0.elapsed()
    }

    /// Every host's API socket, in host order.
    fn sockets(&self) -> Vec<PathBuf> {
        self.lab()
            .hosts()
            .iter()
            .map(|h| h.socket.clone())
            .collect()
    }

    /// Creates a network through host1.
    pub fn create_network(&self, name: &str, subnet: &str) {
        let body = format!(r#"{{"name":"{name}","subnet":"{subnet}"}}"#);
        let (code, resp) =
            http(&self.lab().hosts()[0].socket, "POST", "/v1/networks", &body).expect("http");
        assert!(code == 201 || code == 200, "create network: {code} {resp}");
    }

    /// Attaches `count` endpoints on `network`, round robin over the hosts,
    /// `parallel` requests in flight, at most `rate` per second (`None`:
    /// as fast as they go, a burst).
    pub fn attach(
        &self,
        network: &str,
        count: usize,
        parallel: usize,
        rate: Option<f64>,
        first: usize,
    ) -> Vec<Attached> {
        let sockets = self.sockets();
        let out = Arc::new(Mutex::new(Vec::with_capacity(count)));
        let next = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..parallel.max(1) {
                let (sockets, out, next) = (&sockets, out.clone(), next.clone());
                scope.spawn(move || loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    if k >= count {
                        return;
                    }
                    if let Some(r) = rate {
                        let due = t0 + Duration::from_secs_f64(k as f64 / r);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let host = (first + k) % sockets.len();
                    let body = format!(r#"{{"network":"{network}"}}"#);
                    let mut tries = 0;
                    let started = Instant::now();
                    // A retry carries the same request id, as a CNI or
                    // Docker retry does: one whose first try landed although
                    // its answer was an error finds that endpoint instead of
                    // making a second.
                    let path = format!("/v1/endpoints?request_id=scale-{}", first + k);
                    let ep = loop {
                        match http(&sockets[host], "POST", &path, &body) {
                            Ok((201, resp)) => {
                                break serde_json::from_str::<EndpointInfo>(&resp)
                                    .expect("endpoint")
                            }
                            // The store may be electing a leader (an
                            // overloaded machine): retry for a while.
                            other => {
                                tries += 1;
                                if tries == 1 {
                                    eprintln!(
                                        "attach on host{} failed, retrying: {other:?}",
                                        host + 1
                                    );
                                }
                                assert!(tries < 300, "attach on host{}: {other:?}", host + 1);
                                std::thread::sleep(Duration::from_millis(200));
                            }
                        }
                    };
                    let ack_us = now_us();
                    out.lock().unwrap().push(Attached {
                        id: ep.endpoint.id,
                        host,
                        ack_us,
                        call: started.elapsed(),
                    });
                });
            }
        });
        Arc::try_unwrap(out).unwrap().into_inner().unwrap()
    }

    /// Detaches endpoints, `parallel` at a time.
    pub fn detach(&self, eps: &[Attached], parallel: usize) {
        let sockets = self.sockets();
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..parallel.max(1) {
                scope.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(ep) = eps.get(k) else { return };
                    let path = format!("/v1/endpoints/{}", ep.id);
                    let mut tries = 0;
                    loop {
                        match http(&sockets[ep.host], "DELETE", &path, "") {
                            Ok((204 | 200 | 404, _)) => break,
                            other => {
                                tries += 1;
                                assert!(tries < 300, "detach {}: {other:?}", ep.id);
                                std::thread::sleep(Duration::from_millis(200));
                            }
                        }
                    }
                });
            }
        });
    }

    /// Waits until every host has applied exactly `want` (no more, no
    /// less); the time it took.
    pub fn wait_exactly(&mut self, want: &HashSet<String>, timeout: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            let mut done = true;
            for log in &mut self.logs {
                log.poll();
                if log.present.len() != want.len() || !log.present.keys().all(|k| want.contains(k))
                {
                    done = false;
                }
            }
            if done {
                return t0.elapsed();
            }
            if t0.elapsed() > timeout {
                let worst: Vec<(usize, usize)> = self
                    .logs
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.present.len() != want.len())
                    .map(|(i, l)| (i + 1, l.present.len()))
                    .take(10)
                    .collect();
                panic!(
                    "hosts did not converge to {} endpoints within {timeout:?}: (host, applied) {worst:?}",
                    want.len()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// For each attached endpoint, from its acknowledgement to its
    /// application on the last host (call after [`Scale::wait_exactly`]).
    pub fn attach_to_applied(&self, eps: &[Attached]) -> Percentiles {
        let v = eps
            .iter()
            .map(|e| {
                let last = self
                    .logs
                    .iter()
                    .filter_map(|l| l.present.get(&e.id))
                    .max()
                    .copied()
                    .unwrap_or(e.ack_us);
                Duration::from_micros(last.saturating_sub(e.ack_us))
            })
            .collect();
        Percentiles::of(v)
    }

    /// RSS and CPU of every agent over `window`.
    pub fn usage(&self, window: Duration) -> Usage {
        let pids: Vec<u32> = self
            .lab()
            .hosts()
            .iter()
            .filter_map(|h| h.agent_pid)
            .collect();
        let before: Vec<Option<u64>> = pids.iter().map(|p| proc_cpu_ticks(*p)).collect();
        let t0 = Instant::now();
        std::thread::sleep(window);
        let secs = t0.elapsed().as_secs_f64();
        let tick = 100.0; // USER_HZ on Linux
        let mut cpu = Vec::new();
        let mut rss = Vec::new();
        let mut anon = Vec::new();
        for (p, b) in pids.iter().zip(before) {
            if let (Some(b), Some(a)) = (b, proc_cpu_ticks(*p)) {
                cpu.push((a.saturating_sub(b)) as f64 / tick / secs * 100.0);
            }
            if let Some(r) = proc_status_kib(*p, "VmRSS:") {
                rss.push(r as f64 / 1024.0);
            }
            if let Some(r) = proc_status_kib(*p, "RssAnon:") {
                anon.push(r as f64 / 1024.0);
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
        Usage {
            rss_mib_mean: mean(&rss),
            rss_mib_max: max(&rss),
            anon_mib_mean: mean(&anon),
            anon_mib_max: max(&anon),
            cpu_pct_mean: mean(&cpu),
            cpu_pct_max: max(&cpu),
        }
    }

    /// Bytes of each host's store directory (largest first).
    pub fn store_sizes(&self) -> Vec<u64> {
        fn du(p: &Path) -> u64 {
            let Ok(rd) = fs::read_dir(p) else { return 0 };
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => du(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        let mut v: Vec<u64> = self
            .lab()
            .hosts()
            .iter()
            .map(|h| du(&h.data_dir.join("store")))
            .collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        v
    }

    /// Adds a host; the time from its start until it applied `want`.
    pub fn add_host_and_converge(&mut self, want: &HashSet<String>, timeout: Duration) -> Duration {
        let t0 = Instant::now();
        let h = self.lab_mut().add_host().expect("add host");
        self.logs.push(HostLog::new(h.data_dir.join(RECORD_LOG)));
        // Its log did not exist yet: read it from the start.
        if let Some(l) = self.logs.last_mut() {
            l.offset = 0;
        }
        self.wait_exactly(want, timeout);
        t0.elapsed()
    }

    /// The `socketplane` binary the agents run.
    pub fn bin(&self) -> &Path {
        &self.bin
    }
}
