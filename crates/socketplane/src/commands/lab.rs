//! `socketplane lab`: a multi-host lab in network namespaces on this
//! machine, each host running its own agent; and `socketplane demo`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use socketplane_api::rest::ClusterStatus;
use socketplane_lab::{Lab, LabConfig};

use super::Context;

#[derive(Subcommand)]
pub enum LabCmd {
    /// Build N hosts as network namespaces, each with its own agent.
    Up {
        #[arg(long, default_value_t = 3)]
        hosts: usize,
        #[arg(long, default_value = "linux")]
        datapath: String,
        /// Lab name (prefix of everything it creates).
        #[arg(long, default_value = "lab")]
        name: String,
    },
    /// Run a command on a lab host (e.g. `lab exec host1 -- socketplane cluster status`).
    Exec {
        host: String,
        #[arg(long, default_value = "lab")]
        name: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Remove the lab: agents, namespaces, links.
    Down {
        #[arg(long, default_value = "lab")]
        name: String,
    },
}

/// `socketplane ARGS...` as a command line, naming this very binary so it
/// works when `socketplane` is not on PATH (e.g. under `cargo run`).
pub fn sp(args: &[&str]) -> Vec<String> {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "socketplane".into());
    std::iter::once(exe)
        .chain(args.iter().map(|s| s.to_string()))
        .collect()
}

/// Resolves a leading `socketplane` to this binary.
fn resolve(mut command: Vec<String>) -> Vec<String> {
    if command.first().map(String::as_str) == Some("socketplane") {
        command.splice(0..1, sp(&[]));
    }
    command
}

pub fn state_dir(name: &str) -> PathBuf {
    PathBuf::from("/run/socketplane-lab").join(name)
}

/// Waits until host `index` reports `n` alive nodes.
pub fn wait_for_cluster(
    lab: &Lab,
    host: usize,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<ClusterStatus> {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let out = lab.exec(host, &sp(&["cluster", "status", "-o", "json"]))?;
        if out.status.success() {
            if let Ok(status) = serde_json::from_slice::<ClusterStatus>(&out.stdout) {
                if status.nodes.iter().filter(|n| n.alive).count() >= n && status.store.healthy {
                    return Ok(status);
                }
                last = format!(
                    "{} of {n} nodes alive",
                    status.nodes.iter().filter(|n| n.alive).count()
                );
            }
        } else {
            last = String::from_utf8_lossy(&out.stderr).trim().to_string();
        }
        if std::time::Instant::now() > deadline {
            bail!("the lab cluster did not form within {timeout:?}: {last}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn host_index(lab: &Lab, host: &str) -> anyhow::Result<usize> {
    Ok(lab.host_by_name(host)?.index)
}

impl LabCmd {
    pub async fn exec(self, _ctx: &Context) -> anyhow::Result<()> {
        match self {
            LabCmd::Up {
                hosts,
                datapath,
                name,
            } => {
                if hosts == 0 || hosts > 50 {
                    bail!("--hosts must be between 1 and 50");
                }
                let exe = std::env::current_exe().context("locating the socketplane binary")?;
                let lab = tokio::task::spawn_blocking(move || -> anyhow::Result<Lab> {
                    let mut config = LabConfig::new(&name, hosts, exe);
                    config.datapath = datapath;
                    config.state_dir = state_dir(&name);
                    let lab = Lab::up(config)?;
                    wait_for_cluster(&lab, 0, hosts, Duration::from_secs(60))?;
                    Ok(lab)
                })
                .await??;
                println!(
                    "Lab {:?} is up with {} hosts:",
                    lab.name(),
                    lab.hosts().len()
                );
                for h in lab.hosts() {
                    println!(
                        "  {}  underlay {}  netns {}  log {}",
                        h.name,
                        h.underlay_ip,
                        h.netns,
                        h.log.display()
                    );
                }
                println!("Try: socketplane lab exec host1 -- socketplane cluster status");
                println!("When done: socketplane lab down");
                Ok(())
            }
            LabCmd::Exec {
                host,
                name,
                command,
            } => {
                let lab = Lab::load(&state_dir(&name))
                    .with_context(|| format!("no lab named {name:?} is up"))?;
                let index = host_index(&lab, &host)?;
                let out = lab.exec(index, &resolve(command))?;
                use std::io::Write;
                std::io::stdout().write_all(&out.stdout)?;
                std::io::stderr().write_all(&out.stderr)?;
                if !out.status.success() {
                    std::process::exit(out.status.code().unwrap_or(1));
                }
                Ok(())
            }
            LabCmd::Down { name } => {
                let dir = state_dir(&name);
                match Lab::load(&dir) {
                    Ok(lab) => lab.down()?,
                    // No state file (e.g. a crash mid-way): remove whatever
                    // carries the lab's names.
                    Err(_) => Lab::purge(&name, &dir)?,
                }
                println!("Lab {name:?} removed.");
                Ok(())
            }
        }
    }
}
