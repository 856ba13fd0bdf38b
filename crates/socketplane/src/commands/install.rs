//! `socketplane install [unattended] | uninstall`: set the agent up as a
//! systemd service (or explain how to start it where systemd is not running)
//! and remove it again.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};
use clap::Args;

const UNIT_NAME: &str = "socketplane.service";

#[derive(Args)]
pub struct InstallCmd {
    /// `unattended`: ask nothing (BOOTSTRAP=true|false in the environment
    /// decides whether this host founds a cluster).
    mode: Option<String>,
    /// Install under this root instead of / (for packaging and tests).
    #[arg(long, hide = true, default_value = "/")]
    root: PathBuf,
}

#[derive(Args)]
pub struct UninstallCmd {
    #[arg(long, hide = true, default_value = "/")]
    root: PathBuf,
}

struct Paths {
    bin: PathBuf,
    unit: PathBuf,
    defaults: PathBuf,
    /// The CNI plugin, where runtimes look for `"type": "socketplane"`.
    cni: PathBuf,
}

/// The CNI plugin binary is built beside this one.
const CNI_BIN: &str = "socketplane-cni";

fn paths(root: &Path) -> Paths {
    let cni = socketplane_api::defaults::CNI_PLUGIN.trim_start_matches('/');
    Paths {
        cni: root.join(cni),
        bin: root.join("usr/local/bin/socketplane"),
        unit: root.join("etc/systemd/system").join(UNIT_NAME),
        defaults: root.join("etc/default/socketplane"),
    }
}

fn systemd_running(root: &Path) -> bool {
    root == Path::new("/") && Path::new("/run/systemd/system").exists()
}

fn unit_text() -> String {
    // The datapath keeps forwarding while the agent is down, so a restart
    // (or an upgrade) never interrupts workloads.
    "[Unit]
Description=SocketPlane agent: multi-host container networking
Documentation=https://crates.io/crates/socketplane
After=network-online.target
Wants=network-online.target
Before=docker.service
# A data dir that cannot be used (corrupt, foreign, disk full) makes the
# agent exit non-zero: retried a few times, then left failed with its
# message in the journal instead of restarting every 2 s without end.
StartLimitIntervalSec=120
StartLimitBurst=5

[Service]
EnvironmentFile=-/etc/default/socketplane
ExecStart=/usr/local/bin/socketplane agent $SOCKETPLANE_AGENT_ARGS
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
"
    .to_string()
}

fn ask_bootstrap() -> anyhow::Result<bool> {
    print!("Is this the first host of a new cluster (found it here)? [y/N] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("systemctl")
        .args(args)
        .status()
        .context("running systemctl")?;
    if !status.success() {
        bail!("systemctl {} failed", args.join(" "));
    }
    Ok(())
}

impl InstallCmd {
    pub fn exec(self) -> anyhow::Result<()> {
        let unattended = match self.mode.as_deref() {
            None => false,
            Some("unattended") => true,
            Some(other) => bail!("unknown install mode {other:?} (did you mean `unattended`?)"),
        };
        let bootstrap = match std::env::var("BOOTSTRAP") {
            Ok(v) => matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"),
            Err(_) if unattended => false,
            Err(_) => ask_bootstrap()?,
        };
        let p = paths(&self.root);
        for f in [&p.bin, &p.unit, &p.defaults, &p.cni] {
            if let Some(dir) = f.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
        }
        let exe = std::env::current_exe().context("locating this binary")?;
        if exe != p.bin {
            std::fs::copy(&exe, &p.bin)
                .with_context(|| format!("installing {}", p.bin.display()))?;
        }
        let plugin = exe.with_file_name(CNI_BIN);
        if plugin.is_file() {
            // Copy beside, then rename: a runtime may be running the old one.
            let tmp = p.cni.with_extension("new");
            std::fs::copy(&plugin, &tmp)
                .and_then(|_| std::fs::rename(&tmp, &p.cni))
                .with_context(|| format!("installing the CNI plugin {}", p.cni.display()))?;
            println!("Installed the CNI plugin {}.", p.cni.display());
        } else {
            println!(
                "No {CNI_BIN} beside {}: the CNI plugin is not installed.",
                exe.display()
            );
        }
        std::fs::write(&p.unit, unit_text())
            .with_context(|| format!("writing {}", p.unit.display()))?;
        let defaults = format!(
            "# Read by socketplane.service. BOOTSTRAP=true founds a cluster on first start.\n# SOCKETPLANE_TOKEN=<output of `socketplane cluster token` on a member> joins one.\n# This file may hold the token: keep it mode 0600.\nBOOTSTRAP={bootstrap}\nSOCKETPLANE_AGENT_ARGS=\n"
        );
        write_private(&p.defaults, defaults.as_bytes())
            .with_context(|| format!("writing {}", p.defaults.display()))?;
        println!(
            "Installed {} and {} (BOOTSTRAP={bootstrap}).",
            p.bin.display(),
            p.unit.display()
        );
        if systemd_running(&self.root) {
            systemctl(&["daemon-reload"])?;
            systemctl(&["enable", "--now", UNIT_NAME])?;
            println!("Started {UNIT_NAME}; see `socketplane agent logs`.");
        } else {
            println!(
                "systemd is not running here: start the agent with `socketplane agent start{}`.",
                if bootstrap { " --bootstrap" } else { "" }
            );
        }
        Ok(())
    }
}

impl UninstallCmd {
    pub fn exec(self) -> anyhow::Result<()> {
        let p = paths(&self.root);
        if systemd_running(&self.root) && p.unit.exists() {
            // Stopping leaves the datapath as it is; removing the host's
            // networks is `cluster leave`'s job.
            let _ = systemctl(&["disable", "--now", UNIT_NAME]);
        }
        let mut removed = Vec::new();
        for f in [&p.unit, &p.defaults, &p.bin, &p.cni] {
            match std::fs::remove_file(f) {
                Ok(()) => removed.push(f.display().to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", f.display())),
            }
        }
        if systemd_running(&self.root) {
            let _ = systemctl(&["daemon-reload"]);
        }
        if removed.is_empty() {
            println!("SocketPlane was not installed.");
        } else {
            println!("Removed {}.", removed.join(", "));
            println!("Cluster state in /var/lib/socketplane is kept; run `socketplane cluster leave` first to leave the cluster for good.");
        }
        Ok(())
    }
}

/// Writes a file only root can read (it may hold the cluster token): created
/// 0600, and narrowed to 0600 if it existed wider.
fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(data)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_unit_restarts_on_failure_within_a_start_limit() {
        let unit = super::unit_text();
        let unit_section = unit.split("[Service]").next().unwrap_or_default();
        assert!(unit_section.contains("StartLimitIntervalSec="), "{unit}");
        assert!(unit_section.contains("StartLimitBurst="), "{unit}");
        assert!(unit.contains("Restart=on-failure"), "{unit}");
    }
}
