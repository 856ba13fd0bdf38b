//! Podman 4.3 with its CNI backend, inside a lab host's network namespace,
//! with everything of its own under one temp dir: containers.conf (the
//! ENVIRONMENT.md adjustments: runc, cgroupfs, rlimits within ours),
//! storage (`vfs`, so nothing is mounted but container shm), runroot, tmp
//! dir, file locks, the CNI config dir and plugin dir, and an image
//! imported from busybox-static. Dropping it removes every container and
//! the dir, also when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Podman {
    dir: tempfile::TempDir,
    netns: String,
}

/// The image every container runs.
pub const IMAGE: &str = "localhost/spbusybox:latest";

impl Podman {
    /// Podman in host netns `netns`, whose CNI plugin dir holds `plugin` as
    /// `socketplane` (beside Debian's plugins, for podman's own network).
    pub fn new(netns: &str, plugin: &Path) -> Podman {
        socketplane_testkit::gate::require("podman", "podman");
        socketplane_testkit::gate::require("runc", "runc");
        let busybox =
            socketplane_testkit::gate::check_program("busybox", "busybox-static").expect("busybox");
        let dir = tempfile::Builder::new()
            .prefix("sp-podman-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        for sub in ["net.d", "cnibin", "rootfs/bin", "tmp"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::os::unix::fs::symlink(plugin, d.join("cnibin/socketplane")).unwrap();
        let conf = format!(
            r#"[containers]
default_ulimits=["nofile=1024:1024","nproc=1024:1024"]
[network]
network_backend="cni"
cni_plugin_dirs=["{d}/cnibin","/usr/lib/cni"]
network_config_dir="{d}/net.d"
[engine]
runtime="runc"
cgroup_manager="cgroupfs"
events_logger="file"
events_logfile_path="{d}/events.log"
tmp_dir="{d}/tmp"
lock_type="file"
"#,
            d = d.display()
        );
        std::fs::write(d.join("containers.conf"), conf).unwrap();
        // Podman's default network as podman 4.3 generates it (bridge,
        // portmap, firewall, tuning), written here so its host-local IPAM
        // keeps its leases in this dir, not in /var/lib/cni/networks.
        let default_net = format!(
            r#"{{"cniVersion": "0.4.0", "name": "podman", "plugins": [
  {{"type": "bridge", "bridge": "cni-podman0", "isGateway": true, "ipMasq": true,
    "hairpinMode": true,
    "ipam": {{"type": "host-local", "routes": [{{"dst": "0.0.0.0/0"}}],
             "ranges": [[{{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}}]],
             "dataDir": "{d}/host-local"}}}},
  {{"type": "portmap", "capabilities": {{"portMappings": true}}}},
  {{"type": "firewall"}},
  {{"type": "tuning"}}
]}}
"#,
            d = d.display()
        );
        std::fs::write(d.join("net.d/87-podman.conflist"), default_net).unwrap();
        std::fs::copy(&busybox, d.join("rootfs/bin/busybox")).unwrap();
        for applet in ["sh", "sleep", "ping", "ip", "true"] {
            std::os::unix::fs::symlink("busybox", d.join("rootfs/bin").join(applet)).unwrap();
        }
        let tar = d.join("rootfs.tar");
        let out = Command::new("tar")
            .arg("-C")
            .arg(d.join("rootfs"))
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .output()
            .expect("run tar");
        assert!(
            out.status.success(),
            "tar: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let p = Podman {
            dir,
            netns: netns.to_string(),
        };
        p.ok(&["import", "-q", tar.to_str().unwrap(), IMAGE]);
        p
    }

    pub fn net_d(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }

    /// `podman ARGS` in the host's namespace (only the network namespace is
    /// entered: `ip netns exec` remounts /sys and runc finds no cgroups).
    pub fn run(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg("podman")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .output()
            .expect("run podman")
    }

    /// `podman ARGS` that must succeed: its stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let out = self.run(&["rm", "--all", "--force", "--time", "0"]);
        if !out.status.success() {
            eprintln!("podman rm --all: {}", String::from_utf8_lossy(&out.stderr));
        }
        // Anything still mounted under the dir (a container's shm) would
        // make removing it fail.
        let dir = self.dir.path().to_string_lossy().into_owned();
        if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
            for m in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
                if m.starts_with(&dir) {
                    let _ = Command::new("umount").args(["-l", m]).status();
                }
            }
        }
    }
}
