//! Safe reclaim (issue 18, point 1), with real agents on lab hosts: a node's
//! endpoints go only after it has been dead for `--reclaim-after`, or at
//! once by `cluster remove`; a stalled agent keeps its workloads.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{unique_name, wait_until, TestLab, BIN, FORMATION, LEASE_TTL};
use socketplane_api::rest::{ClusterStatus, EndpointInfo};
use socketplane_lab::{Lab, LabConfig};
use socketplane_testkit::require_privileged;

/// A 3-host lab whose agents get `--reclaim-after reclaim_after`.
fn start(tag: char, reclaim_after: &str) -> TestLab {
    let name = unique_name(tag);
    let mut config = LabConfig::new(&name, 3, BIN);
    config.agent_args = vec![
        "--lease-ttl".into(),
        LEASE_TTL.as_secs().to_string(),
        "--reclaim-after".into(),
        reclaim_after.into(),
    ];
    config.state_dir = std::env::temp_dir().join(format!("sp-lab-{name}"));
    let t = TestLab::new(Lab::up(config).expect("lab up"));
    t.wait_for_nodes(0, 3, FORMATION);
    t
}

fn endpoints(t: &TestLab, host: usize) -> Vec<EndpointInfo> {
    t.sp_json(host, &["endpoint", "list"])
}

fn has_endpoint(t: &TestLab, host: usize, id: &str) -> bool {
    endpoints(t, host).iter().any(|e| e.endpoint.id == id)
}

/// Waits until host 0 sees exactly `alive` nodes alive.
fn wait_alive(t: &TestLab, alive: usize, timeout: Duration) -> bool {
    wait_until(timeout, || {
        t.status(0)
            .is_some_and(|s: ClusterStatus| s.nodes.iter().filter(|n| n.alive).count() == alive)
    })
}

/// Sends SIGCONT to a SIGSTOPped agent when dropped, also on failure, so
/// the lab teardown can stop it.
struct Stalled(u32);

impl Stalled {
    fn new(pid: u32) -> Stalled {
        signal(pid, "STOP");
        Stalled(pid)
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid}");
}

/// (a) A 30 s stall (10x the lease): nobody gets the stalled host's
/// addresses, and after it resumes its workload keeps its address and
/// connectivity.
#[test]
fn a_stalled_agent_keeps_its_workloads_addresses() {
    require_privileged!();
    let mut t = start('r', "5m");
    t.sp(0, &["network", "create", "web", "10.18.1.0/24"])
        .expect("create web");
    let w = t.workload(0, "w", "web");
    let s = t.workload(2, "s", "web");
    let s_ip = s.endpoint.ip.to_string();
    assert!(t.ping("w", &s_ip), "before the stall\n{}", t.agent_logs());

    let pid = t.lab().hosts()[2].agent_pid.expect("agent pid");
    let stalled = Stalled::new(pid);
    let started = Instant::now();
    assert!(
        wait_alive(&t, 2, LEASE_TTL * 4),
        "the stalled host's lease did not lapse\n{}",
        t.agent_logs()
    );
    let netns = t.lab_mut().add_workload(1, "thief").expect("workload");
    // Refused again and again while the stall lasts.
    while started.elapsed() < Duration::from_secs(30) {
        let taken = t.sp(
            1,
            &[
                "endpoint", "attach", "--netns", &netns, "-n", "web", "--ip", &s_ip,
            ],
        );
        assert!(
            taken.is_err(),
            "{s_ip} was given to another workload during the stall: {taken:?}"
        );
        assert!(
            has_endpoint(&t, 0, &s.endpoint.id),
            "reclaimed during the stall"
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    drop(stalled);
    assert!(
        wait_alive(&t, 3, FORMATION),
        "the resumed host did not come back\n{}",
        t.agent_logs()
    );
    // Give a resumed agent's reconciler the time to do any harm.
    std::thread::sleep(LEASE_TTL * 2);
    let eps = endpoints(&t, 2);
    let mine = eps.iter().find(|e| e.endpoint.id == s.endpoint.id);
    assert_eq!(
        mine.map(|e| e.endpoint.ip),
        Some(s.endpoint.ip),
        "the workload lost its endpoint: {eps:?}"
    );
    assert_eq!(
        eps.iter()
            .filter(|e| e.endpoint.ip == s.endpoint.ip)
            .count(),
        1,
        "{eps:?}"
    );
    let addr = t
        .lab()
        .workload_exec("s", &["ip".into(), "-4".into(), "addr".into()])
        .expect("ip addr");
    assert!(
        String::from_utf8_lossy(&addr.stdout).contains(&s_ip),
        "the resumed agent removed its workload's interface: {}\n{}",
        String::from_utf8_lossy(&addr.stdout),
        t.agent_logs()
    );
    assert!(
        t.ping("s", &w.endpoint.ip.to_string()) && t.ping("w", &s_ip),
        "no connectivity after the stall\n{}",
        t.agent_logs()
    );
}

/// (b) `cluster remove` frees a dead host's addresses at once, although
/// its grace (5 min) is far from over.
#[test]
fn cluster_remove_frees_a_dead_hosts_addresses_at_once() {
    require_privileged!();
    let mut t = start('s', "5m");
    t.sp(0, &["network", "create", "web", "10.18.2.0/24"])
        .expect("create web");
    let gone = t.workload(2, "gone", "web");
    let name = t.lab().hosts()[2].name.clone();
    let status = t.status(0).expect("status");
    let node = status
        .nodes
        .iter()
        .find(|n| n.addr == gone_addr(&t))
        .expect("the host's node")
        .clone();
    t.lab_mut()
        .stop_agent(2, socketplane_lab::Signal::SIGKILL)
        .expect("kill agent");
    assert!(wait_alive(&t, 2, LEASE_TTL * 4), "{}", t.agent_logs());
    assert!(
        has_endpoint(&t, 0, &gone.endpoint.id),
        "reclaimed before its grace"
    );
    let removed = t.sp(0, &["cluster", "remove", &node.name]);
    assert!(removed.is_ok(), "cluster remove {name}: {removed:?}");
    assert!(!has_endpoint(&t, 0, &gone.endpoint.id), "not reclaimed");
    let netns = t.lab_mut().add_workload(1, "again").expect("workload");
    let ip = gone.endpoint.ip.to_string();
    let again: EndpointInfo = t.sp_json(
        1,
        &[
            "endpoint", "attach", "--netns", &netns, "-n", "web", "--ip", &ip,
        ],
    );
    assert_eq!(again.endpoint.ip, gone.endpoint.ip);
    let status = t.status(0).expect("status");
    assert!(
        !status.nodes.iter().any(|n| n.id == node.id),
        "a removed node is still listed: {status:?}"
    );
}

fn gone_addr(t: &TestLab) -> std::net::Ipv4Addr {
    t.lab().hosts()[2].underlay_ip
}

/// (c) With `--reclaim-after 20s`, a killed host's endpoints go after no
/// less than 15 s and no more than 60 s.
#[test]
fn a_dead_hosts_endpoints_go_after_the_grace() {
    require_privileged!();
    let mut t = start('t', "20s");
    t.sp(0, &["network", "create", "web", "10.18.3.0/24"])
        .expect("create web");
    let gone = t.workload(2, "gone", "web");
    t.lab_mut()
        .stop_agent(2, socketplane_lab::Signal::SIGKILL)
        .expect("kill agent");
    let killed = Instant::now();
    while has_endpoint(&t, 0, &gone.endpoint.id) {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "not reclaimed within 60 s\n{}",
            t.agent_logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let after = killed.elapsed();
    eprintln!("reclaimed {after:?} after the kill");
    assert!(
        after >= Duration::from_secs(15),
        "reclaimed after only {after:?}"
    );
}
