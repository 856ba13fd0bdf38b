//! Fault injection (issue 18): one 3-host lab with real agents, hit in turn
//! by a broken workload interface, partition/heal cycles with concurrent
//! attaches on every side, an agent stalled past its lease, kill -9 of the
//! store leader, and a full disk under a small tmpfs data dir. A checker
//! records every acknowledged allocation and, at the end, reads every live
//! workload's address from its namespace: no address may be live twice, no
//! address may be in the store twice, and no acknowledged endpoint may be
//! lost. It prints its totals.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{unique_name, wait_until, TestLab, BIN, FORMATION, LEASE_TTL};
use socketplane_api::rest::{ClusterStatus, EndpointInfo};
use socketplane_lab::{Lab, LabConfig, Signal};
use socketplane_testkit::{netns, require_privileged};

/// Partition/heal cycles.
const CYCLES: usize = 5;
/// The labs' reclaim grace here: the cut-off host fences 3 s + half of it
/// after its last renewal, nobody reclaims before 3 s + all of it.
const RECLAIM_AFTER: &str = "10s";
/// How long a host stays cut off: past its lease and fence margin (8 s
/// after its last renewal, which was up to a second before the cut), so it
/// fences, with time for that fence to be applied on a loaded machine; and
/// healed well before anyone may reclaim (13 s after that renewal).
const CUT_FOR: Duration = Duration::from_secs(10);
/// How long a cut-off host may take to refuse an attach.
const REFUSE_WITHIN: Duration = Duration::from_secs(5);
/// How long the cluster may take to converge after healing.
const HEAL_WITHIN: Duration = Duration::from_secs(10);

/// An acknowledged attach: the checker's record.
#[derive(Debug, Clone)]
struct Acked {
    workload: String,
    host: usize,
    id: String,
    ip: std::net::Ipv4Addr,
}

#[derive(Default)]
struct Checker {
    acked: Mutex<Vec<Acked>>,
    faults: Mutex<usize>,
}

impl Checker {
    fn ack(&self, a: Acked) {
        self.acked.lock().unwrap().push(a);
    }
    fn fault(&self) {
        *self.faults.lock().unwrap() += 1;
    }
}

/// Drops every frame on a host's underlay in both directions (a table of
/// its own inside the host's namespace); healed when dropped.
struct Cut {
    netns: String,
}

const CUT_TABLE: &str = "sp_fault_cut";

impl Cut {
    fn new(netns: &str) -> Cut {
        let rules = format!(
            "table inet {CUT_TABLE} {{\n chain in {{ type filter hook input priority -400; iifname \"eth0\" drop; }}\n chain out {{ type filter hook output priority -400; oifname \"eth0\" drop; }}\n}}\n"
        );
        let file = std::env::temp_dir().join(format!("{netns}-cut.nft"));
        std::fs::write(&file, rules).expect("write nft rules");
        netns::exec(netns, &["nft", "-f", &file.to_string_lossy()]).expect("cut the host off");
        let _ = std::fs::remove_file(&file);
        Cut {
            netns: netns.to_string(),
        }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        let _ = netns::exec(&self.netns, &["nft", "delete", "table", "inet", CUT_TABLE]);
    }
}

/// A tmpfs mounted on a host's data dir; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Sends SIGCONT when dropped, also on failure.
struct Stalled(u32);

impl Drop for Stalled {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

fn start() -> TestLab {
    let name = unique_name('f');
    let mut config = LabConfig::new(&name, 3, BIN);
    // A grace longer than every fault: nothing is reclaimed during the
    // faults, so every acknowledged endpoint must survive them.
    config.agent_args = vec![
        "--lease-ttl".into(),
        LEASE_TTL.as_secs().to_string(),
        "--reclaim-after".into(),
        RECLAIM_AFTER.into(),
    ];
    config.state_dir = std::env::temp_dir().join(format!("sp-lab-{name}"));
    let t = TestLab::new(Lab::up(config).expect("lab up"));
    t.wait_for_nodes(0, 3, FORMATION);
    t
}

/// Attaches `netns` on `host`; the endpoint or the CLI's error and how
/// long it took.
fn attach(
    t: &TestLab,
    host: usize,
    netns: &str,
    name: &str,
) -> (Result<EndpointInfo, String>, Duration) {
    let started = Instant::now();
    let out = t.sp(
        host,
        &[
            "endpoint", "attach", "--netns", netns, "-n", "web", "--name", name, "-o", "json",
        ],
    );
    let r = out.and_then(|o| serde_json::from_str(&o).map_err(|e| format!("{e}: {o}")));
    (r, started.elapsed())
}

fn record(c: &Checker, host: usize, workload: &str, r: &Result<EndpointInfo, String>) {
    if let Ok(ep) = r {
        c.ack(Acked {
            workload: workload.to_string(),
            host,
            id: ep.endpoint.id.clone(),
            ip: ep.endpoint.ip,
        });
    }
}

fn healthy_everywhere(t: &TestLab) -> bool {
    (0..3).all(|h| {
        t.status(h).is_some_and(|s: ClusterStatus| {
            s.store.healthy && !s.fenced && s.nodes.iter().filter(|n| n.alive).count() == 3
        })
    })
}

/// The workload's eth0 has no carrier: its host end is down (fenced).
fn no_carrier(t: &TestLab, workload: &str) -> bool {
    t.lab()
        .workload_exec(
            workload,
            &["cat".into(), "/sys/class/net/eth0/carrier".into()],
        )
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The IPv4 addresses on a workload's eth0.
fn live_addrs(t: &TestLab, workload: &str) -> Vec<std::net::Ipv4Addr> {
    let out = t
        .lab()
        .workload_exec(
            workload,
            &["ip", "-4", "-o", "addr", "show", "dev", "eth0"].map(String::from),
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|ip| ip.parse().ok())
        .into_iter()
        .collect()
}

#[test]
fn faults_never_put_an_address_on_two_workloads() {
    require_privileged!();
    let suite = Instant::now();
    let mut t = start();
    let c = Checker::default();
    t.sp(0, &["network", "create", "web", "10.19.0.0/24"])
        .expect("create web");
    let mut seq = 0usize;
    let mut next_workload = |t: &mut TestLab, host: usize| {
        seq += 1;
        let name = format!("w{seq}");
        let netns = t.lab_mut().add_workload(host, &name).expect("workload");
        (name, netns)
    };

    // A steady workload on every host, for connectivity checks.
    for host in 0..3 {
        let (name, netns) = next_workload(&mut t, host);
        let (r, _) = attach(&t, host, &netns, &name);
        assert!(r.is_ok(), "attach on host index {host}: {r:?}");
        record(&c, host, &name, &r);
    }

    // 1. One workload's eth0 replaced by a foreign interface behind the
    //    agent's back: the others on that host still attach, within 3 s,
    //    and `endpoint list` shows the broken one with its reason.
    let (broken, broken_ns) = next_workload(&mut t, 0);
    let (r, _) = attach(&t, 0, &broken_ns, &broken);
    let broken_ep = r.expect("attach the workload to break");
    t.lab()
        .workload_exec(&broken, &["ip", "link", "del", "eth0"].map(String::from))
        .expect("delete eth0");
    // (No dummy devices in this kernel: a veth pair of its own.)
    let foreign = t
        .lab()
        .workload_exec(
            &broken,
            &[
                "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "foreign0",
            ]
            .map(String::from),
        )
        .expect("add a foreign eth0");
    assert!(foreign.status.success(), "{foreign:?}");
    c.fault();
    for _ in 0..2 {
        let (name, netns) = next_workload(&mut t, 0);
        let (r, took) = attach(&t, 0, &netns, &name);
        assert!(
            r.is_ok() && took < Duration::from_secs(3),
            "attach beside a broken endpoint: {r:?} after {took:?}\n{}",
            t.agent_logs()
        );
        record(&c, 0, &name, &r);
    }
    let shown = wait_until(Duration::from_secs(5), || {
        let eps: Vec<EndpointInfo> = t.sp_json(0, &["endpoint", "list"]);
        eps.iter().any(|e| {
            e.endpoint.id == broken_ep.endpoint.id
                && e.status.as_deref() == Some("failed")
                && e.reason.as_deref().is_some_and(|r| !r.is_empty())
        })
    });
    let table = t.sp(0, &["endpoint", "list"]).unwrap_or_default();
    eprintln!("endpoint list with a broken endpoint:\n{table}");
    assert!(
        shown,
        "the broken endpoint is not shown as failed:\n{table}"
    );
    let status: ClusterStatus = t.sp_json(0, &["cluster", "status"]);
    assert!(
        status
            .endpoint_failures
            .iter()
            .any(|p| p.id == broken_ep.endpoint.id),
        "cluster status does not name the broken endpoint: {status:?}"
    );
    // Not part of the checker: it was broken on purpose.
    t.sp(
        0,
        &["endpoint", "detach", "--netns", &broken_ns, "-n", "web"],
    )
    .expect("detach the broken endpoint");

    // 2. Partition/heal cycles with concurrent attaches on every side.
    let mut refusals = Vec::new();
    for cycle in 0..CYCLES {
        let cut_host = cycle % 3;
        let others: Vec<usize> = (0..3).filter(|h| *h != cut_host).collect();
        let mut pending = Vec::new();
        for host in (0..3).chain(others.iter().copied()) {
            let (name, netns) = next_workload(&mut t, host);
            pending.push((host, name, netns));
        }
        let fenced_workload = c
            .acked
            .lock()
            .unwrap()
            .iter()
            .find(|a| a.host == cut_host)
            .map(|a| a.workload.clone())
            .expect("a workload on the cut host");
        let cut = Cut::new(&t.lab().hosts()[cut_host].netns);
        c.fault();
        let cut_at = Instant::now();
        let (results, (fenced, cut_status, healed)) = std::thread::scope(|s| {
            // Heals at CUT_FOR whatever the attaches do, after checking
            // that the cut-off host fenced itself and says so.
            let controller = {
                let t = &t;
                let fenced_workload = &fenced_workload;
                s.spawn(move || {
                    let fenced = wait_until(CUT_FOR.saturating_sub(cut_at.elapsed()), || {
                        no_carrier(t, fenced_workload)
                    });
                    eprintln!(
                        "cycle {cycle}: fenced {fenced} {:?} after the cut",
                        cut_at.elapsed()
                    );
                    let cut_status = t.status(cut_host);
                    std::thread::sleep(CUT_FOR.saturating_sub(cut_at.elapsed()));
                    drop(cut);
                    (fenced, cut_status, Instant::now())
                })
            };
            let handles: Vec<_> = pending
                .iter()
                .map(|(host, name, netns)| {
                    let t = &t;
                    s.spawn(move || {
                        let mut r = attach(t, *host, netns, name);
                        // A majority host retries: its first tries may meet
                        // the election that follows a cut-off leader, and
                        // with the labs' 3 s lease its own lease may lapse
                        // meanwhile (it then refuses to allocate until the
                        // lease is renewed).
                        let mut tries = 1;
                        while *host != cut_host && r.0.is_err() && tries < 6 {
                            std::thread::sleep(Duration::from_millis(500));
                            r = attach(t, *host, netns, name);
                            tries += 1;
                        }
                        (*host, name.clone(), r)
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            (results, controller.join().unwrap())
        });
        let mut majority_ok = false;
        for (host, name, (r, took)) in &results {
            if *host == cut_host {
                if let Err(e) = r {
                    refusals.push(*took);
                    assert!(
                        e.contains("quorum") || e.contains("unavailable"),
                        "a cut-off host's attach failed without saying why: {e}"
                    );
                }
                // It may have been acknowledged only if the store took it
                // before the cut was noticed; the checker covers it.
                assert!(
                    r.is_err() || *took < Duration::from_secs(2),
                    "a cut-off host acknowledged an attach after {took:?}: {r:?}"
                );
            } else {
                majority_ok |= r.is_ok();
            }
            record(&c, *host, name, r);
        }
        assert!(
            majority_ok,
            "cycle {cycle}: the majority could not attach: {results:?}\n{}",
            t.agent_logs()
        );
        // The cut-off host fenced its workloads before anyone may reclaim.
        assert!(
            fenced,
            "cycle {cycle}: the cut-off host did not fence {fenced_workload}\n{}",
            t.agent_logs()
        );
        // It said so: store unhealthy, fenced, from its last view.
        assert!(
            cut_status
                .as_ref()
                .is_some_and(|s| s.fenced && !s.store.healthy && s.nodes.len() == 3),
            "cycle {cycle}: cluster status on the cut-off host: {cut_status:?}"
        );
        c.fault();
        assert!(
            wait_until(HEAL_WITHIN, || healthy_everywhere(&t)
                && !no_carrier(&t, &fenced_workload)),
            "cycle {cycle}: no convergence within {HEAL_WITHIN:?} of healing\n{}",
            t.agent_logs()
        );
        eprintln!(
            "cycle {cycle}: host index {cut_host} cut for {:?}, converged {:?} after healing",
            healed - cut_at,
            healed.elapsed()
        );
    }
    eprintln!("cut-off hosts refused attaches after {refusals:?}");
    assert!(!refusals.is_empty(), "no cut-off host refused an attach");
    for took in &refusals {
        assert!(
            *took <= REFUSE_WITHIN,
            "a cut-off host refused after {took:?}"
        );
    }

    // 3. An agent stalled longer than its lease, with attaches elsewhere.
    {
        let pid = t.lab().hosts()[1].agent_pid.expect("agent pid");
        let status = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "SIGSTOP");
        let stalled = Stalled(pid);
        c.fault();
        let until = Instant::now() + LEASE_TTL * 2;
        while Instant::now() < until {
            let (name, netns) = next_workload(&mut t, 2);
            let (r, _) = attach(&t, 2, &netns, &name);
            record(&c, 2, &name, &r);
        }
        drop(stalled);
        assert!(
            wait_until(HEAL_WITHIN, || healthy_everywhere(&t)),
            "no convergence after the stall\n{}",
            t.agent_logs()
        );
    }

    // 4. kill -9 of the store leader's agent, attaches on the others, restart.
    {
        let status: ClusterStatus = t.sp_json(0, &["cluster", "status"]);
        let leader = status.store.leader.clone().expect("a leader");
        let addr = status
            .nodes
            .iter()
            .find(|n| n.id == leader)
            .map(|n| n.addr)
            .expect("the leader's node");
        let victim = t
            .lab()
            .hosts()
            .iter()
            .position(|h| h.underlay_ip == addr)
            .expect("the leader's host");
        t.lab_mut()
            .stop_agent(victim, Signal::SIGKILL)
            .expect("kill -9 the leader");
        c.fault();
        // One try each, side by side (they may meet the election): the
        // killed host must be back well within its grace.
        let pending: Vec<_> = (0..3)
            .filter(|h| *h != victim)
            .map(|host| {
                let (name, netns) = next_workload(&mut t, host);
                (host, name, netns)
            })
            .collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = pending
                .iter()
                .map(|(host, name, netns)| {
                    let t = &t;
                    s.spawn(move || (*host, name.clone(), attach(t, *host, netns, name).0))
                })
                .collect();
            for h in handles {
                let (host, name, r) = h.join().unwrap();
                record(&c, host, &name, &r);
            }
        });
        t.lab_mut()
            .start_agent(victim, false)
            .expect("restart the killed agent");
        assert!(
            wait_until(HEAL_WITHIN, || healthy_everywhere(&t)),
            "no convergence after kill -9 of the leader\n{}",
            t.agent_logs()
        );
    }

    // 5. Disk full under a small tmpfs data dir: writes fail clearly, then
    //    resume, or the agent exits non-zero; never alive but unable to write.
    let tmpfs = {
        let host = 2;
        let data = t.lab().hosts()[host].data_dir.clone();
        t.lab_mut()
            .stop_agent(host, Signal::SIGTERM)
            .expect("stop the agent");
        let saved = data.with_extension("saved");
        let cp = Command::new("cp").arg("-a").arg(&data).arg(&saved).status();
        assert!(cp.is_ok_and(|s| s.success()), "save the data dir");
        // Room for what is there and more than the agent's free-space
        // floor for writes (16 MiB), so it starts writable.
        let used_kb: u64 = Command::new("du")
            .arg("-sk")
            .arg(&saved)
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .next()
                    .and_then(|k| k.parse().ok())
            })
            .unwrap_or(0);
        let mount = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={}k", used_kb + 40 * 1024))
            .arg("tmpfs")
            .arg(&data)
            .status();
        assert!(mount.is_ok_and(|s| s.success()), "mount a tmpfs data dir");
        let tmpfs = Tmpfs(data.clone());
        let cp = Command::new("sh")
            .arg("-c")
            .arg(format!("cp -a {}/. {}/", saved.display(), data.display()))
            .status();
        assert!(cp.is_ok_and(|s| s.success()), "fill the tmpfs data dir");
        let _ = std::fs::remove_dir_all(&saved);
        t.lab_mut()
            .start_agent(host, false)
            .expect("start on the tmpfs");
        assert!(
            wait_until(HEAL_WITHIN, || healthy_everywhere(&t)),
            "{}",
            t.agent_logs()
        );
        let fill = data.join("fill");
        let _ = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", fill.display()))
            .args(["bs=1M", "status=none"])
            .status();
        c.fault();
        // Writes through the full host until the store has to grow its
        // files: they fail with a message, or the agent exits.
        let mut errors = Vec::new();
        let mut writes = 0;
        for i in 0..40 {
            if !t.lab().agent_running(host) {
                break;
            }
            writes += 1;
            let (name, cidr) = (format!("full{i}"), format!("10.60.{i}.0/24"));
            if let Err(e) = t.sp(host, &["network", "create", &name, &cidr]) {
                errors.push(e.trim().to_string());
                if errors.len() >= 2 {
                    break;
                }
            }
        }
        eprintln!(
            "{writes} writes on a full disk: {} failed {errors:?}; agent running: {}",
            errors.len(),
            t.lab().agent_running(host)
        );
        for e in &errors {
            assert!(
                !e.is_empty(),
                "a write on a full disk failed without a message"
            );
        }
        // The first write fails, with the store's own message, while the
        // agent is up: not an agent that exits under the write.
        assert!(
            writes >= 1,
            "the agent exited before any write on the full disk"
        );
        assert_eq!(
            errors.len(),
            writes,
            "a write succeeded on a full disk: {errors:?}"
        );
        assert!(
            errors.first().is_some_and(|e| e.contains("disk is full")
                && e.contains(&data.display().to_string())),
            "the first write on a full disk must fail saying the disk is full, naming the path: {errors:?}\n{}",
            t.agent_logs()
        );
        let _ = std::fs::remove_file(&fill);
        // Freed: it writes again by itself, or it has exited (non-zero,
        // for its supervisor) and is restarted as a supervisor would.
        let (name, netns) = next_workload(&mut t, host);
        let mut resumed = None;
        let back = wait_until(HEAL_WITHIN, || {
            if !t.lab().agent_running(host) {
                return true;
            }
            let (r, _) = attach(&t, host, &netns, &name);
            let ok = r.is_ok();
            if ok {
                resumed = Some(r);
            }
            ok
        });
        assert!(
            back,
            "the agent stayed up but could not write after space was freed\n{}",
            t.agent_logs()
        );
        match resumed {
            Some(r) => {
                eprintln!("disk freed: the agent wrote again by itself");
                record(&c, host, &name, &r);
            }
            None => {
                let log = std::fs::read_to_string(&t.lab().hosts()[host].log).unwrap_or_default();
                let why: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
                eprintln!("disk freed: the agent had exited ({why:?}); restarting it");
                assert!(
                    log.contains("failed for good"),
                    "the agent exited without saying why:\n{log}"
                );
                t.lab_mut()
                    .start_agent(host, false)
                    .expect("restart after the disk was freed");
                assert!(
                    wait_until(HEAL_WITHIN, || healthy_everywhere(&t)),
                    "{}",
                    t.agent_logs()
                );
                let (r, _) = attach(&t, host, &netns, &name);
                assert!(r.is_ok(), "no write after a restart: {r:?}");
                record(&c, host, &name, &r);
            }
        }
        assert!(
            wait_until(HEAL_WITHIN, || healthy_everywhere(&t)),
            "{}",
            t.agent_logs()
        );
        tmpfs
    };

    // The checker: every acknowledged endpoint is in the store with its
    // address and live in its namespace; no address twice anywhere.
    let acked = c.acked.lock().unwrap().clone();
    let mut lost = Vec::new();
    let mut store_dups = 0;
    let mut live_dups = 0;
    let settled = wait_until(HEAL_WITHIN, || {
        let eps: Vec<EndpointInfo> = t.sp_json(0, &["endpoint", "list"]);
        let mut by_ip: BTreeMap<_, usize> = BTreeMap::new();
        for e in &eps {
            *by_ip.entry(e.endpoint.ip).or_default() += 1;
        }
        store_dups = by_ip.values().filter(|n| **n > 1).count();
        let mut live: BTreeMap<_, Vec<String>> = BTreeMap::new();
        for w in t.lab().workloads() {
            for ip in live_addrs(&t, &w.name) {
                live.entry(ip).or_default().push(w.name.clone());
            }
        }
        live_dups = live.values().filter(|v| v.len() > 1).count();
        lost = acked
            .iter()
            .filter_map(|a| {
                let in_store = eps
                    .iter()
                    .any(|e| e.endpoint.id == a.id && e.endpoint.ip == a.ip);
                let on_wire = live.get(&a.ip).is_some_and(|v| v.contains(&a.workload));
                (!(in_store && on_wire)).then(|| (a.clone(), in_store, on_wire))
            })
            .collect();
        lost.is_empty() && store_dups == 0 && live_dups == 0
    });
    let faults = *c.faults.lock().unwrap();
    eprintln!(
        "fault-injection totals: allocations acknowledged {}, faults injected {faults}, duplicates found {}, acknowledged endpoints lost {} (suite took {:?})",
        acked.len(),
        store_dups + live_dups,
        lost.len(),
        suite.elapsed()
    );
    assert_eq!(store_dups + live_dups, 0, "duplicates\n{}", t.agent_logs());
    assert!(
        lost.is_empty(),
        "lost (endpoint, in the store, on the wire): {lost:?}\n{}",
        t.agent_logs()
    );
    assert!(settled);
    // Every host can attach afterwards.
    for host in 0..3 {
        let (name, netns) = next_workload(&mut t, host);
        let (r, _) = attach(&t, host, &netns, &name);
        assert!(
            r.is_ok(),
            "host index {host} cannot attach after the faults: {r:?}"
        );
    }
    drop(tmpfs);
}
