//! `socketplane demo`: a three-host lab, network `web` beside `default`,
//! two workloads per host on `web` and one on `default`, and a ping matrix
//! showing that same-network workloads reach each other across hosts and
//! different networks do not. Everything is removed at the end.

use std::time::Duration;

use anyhow::{bail, Context as _};
use socketplane_api::rest::EndpointInfo;
use socketplane_lab::{Lab, LabConfig};

use super::lab::{sp, state_dir, wait_for_cluster};

const NAME: &str = "demo";
const HOSTS: usize = 3;

struct Workload {
    name: String,
    host: usize,
    network: String,
    ip: String,
}

/// Tears the lab down however the demo ends.
struct DownOnDrop(Option<Lab>);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        if let Some(lab) = self.0.take() {
            println!("\nTearing the lab down...");
            if let Err(e) = lab.down() {
                eprintln!("socketplane: lab teardown: {e:#}");
            }
        }
    }
}

pub async fn exec() -> anyhow::Result<()> {
    tokio::task::spawn_blocking(run).await?
}

fn run() -> anyhow::Result<()> {
    let dir = state_dir(NAME);
    if let Ok(old) = Lab::load(&dir) {
        println!("Removing a demo lab left from an earlier run...");
        old.down()?;
    }
    let exe = std::env::current_exe().context("locating the socketplane binary")?;
    println!("Starting {HOSTS} hosts (network namespaces on one bridge, underlay 198.18.0.0/24), one agent each.");
    println!("host1 founds the cluster; the others find it over mDNS.");
    let started = std::time::Instant::now();
    let mut config = LabConfig::new(NAME, HOSTS, exe);
    config.datapath = "linux".into();
    config.state_dir = dir;
    let lab = Lab::up(config)?;
    let mut guard = DownOnDrop(Some(lab));
    let lab = guard.0.as_mut().context("lab")?;
    wait_for_cluster(lab, 0, HOSTS, Duration::from_secs(60))?;
    println!(
        "Cluster formed in {:.1} s.\n",
        started.elapsed().as_secs_f64()
    );
    show(lab, 0, &sp(&["cluster", "status"]))?;

    println!("\n$ socketplane network create web 10.2.0.0/16");
    show(lab, 0, &sp(&["network", "create", "web", "10.2.0.0/16"]))?;

    let mut workloads = Vec::new();
    for host in 0..HOSTS {
        for (suffix, network) in [("web1", "web"), ("web2", "web"), ("def", "default")] {
            let name = format!("h{}-{suffix}", host + 1);
            let netns = lab.add_workload(host, &name)?;
            let out = lab.exec(
                host,
                &sp(&[
                    "endpoint", "attach", "--netns", &netns, "-n", network, "--name", &name, "-o",
                    "json",
                ]),
            )?;
            if !out.status.success() {
                bail!(
                    "attaching {name}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let ep: EndpointInfo =
                serde_json::from_slice(&out.stdout).context("reading the attach result")?;
            // Names: the workload asks its gateway, where the agent answers.
            lab.set_workload_resolver(&name, ep.gateway, network)?;
            workloads.push(Workload {
                name,
                host,
                network: network.into(),
                ip: ep.endpoint.ip.to_string(),
            });
        }
    }
    println!("\n$ socketplane endpoint list");
    show(lab, 0, &sp(&["endpoint", "list"]))?;

    println!("\nPing matrix (row pings column): ✔ reached, · not reached");
    let lab_ref: &Lab = lab;
    let results: Vec<Vec<bool>> = std::thread::scope(|s| {
        let handles: Vec<_> = workloads
            .iter()
            .map(|src| {
                let targets: Vec<(bool, String)> = workloads
                    .iter()
                    .map(|d| (d.name == src.name, d.ip.clone()))
                    .collect();
                s.spawn(move || {
                    targets
                        .iter()
                        .map(|(same, ip)| *same || ping(lab_ref, &src.name, ip))
                        .collect::<Vec<bool>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    print!("{:>18}", "");
    for w in &workloads {
        print!(" {:>8}", w.name);
    }
    println!();
    let mut wrong = 0;
    for (i, src) in workloads.iter().enumerate() {
        print!("{:>18}", format!("{} {}", src.name, src.ip));
        for (j, dst) in workloads.iter().enumerate() {
            let reached = results
                .get(i)
                .and_then(|r| r.get(j))
                .copied()
                .unwrap_or(false);
            let expected = src.network == dst.network;
            if reached != expected {
                wrong += 1;
            }
            let mark = match (reached, expected) {
                (true, true) => "✔",
                (false, false) => "·",
                (true, false) => "LEAK",
                (false, true) => "FAIL",
            };
            print!(" {mark:>8}");
        }
        println!();
    }
    println!(
        "\nWorkloads: {}",
        workloads
            .iter()
            .map(|w| format!("{}@host{} ({}, {})", w.name, w.host + 1, w.network, w.ip))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if wrong > 0 {
        bail!("{wrong} pairs of the ping matrix differ from what is expected");
    }
    println!("Same network: reachable across hosts. Different networks: isolated. As expected.");

    // Names across hosts, from each host's agent on the gateway.
    let (from, to) = ("h1-web1", format!("h{HOSTS}-web1.web"));
    println!("\nIn workload {from}: ping -c 1 {to}");
    let cmd: Vec<String> = ["ping", "-c", "1", "-W", "2", &to]
        .map(String::from)
        .to_vec();
    let out = lab.workload_exec(from, &cmd)?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        bail!(
            "{from} cannot reach {to} by name: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn show(lab: &Lab, host: usize, cmd: &[String]) -> anyhow::Result<()> {
    let out = lab.exec(host, cmd)?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        bail!(
            "{}: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ping(lab: &Lab, workload: &str, ip: &str) -> bool {
    let cmd: Vec<String> = ["ping", "-c", "1", "-W", "1", "-q", ip]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // One retry: the very first packet may wait for ARP.
    (0..2).any(|_| {
        lab.workload_exec(workload, &cmd)
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}
