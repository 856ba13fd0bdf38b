//! A real `dockerd` for tests, running inside a lab host's network
//! namespace (so nothing touches the root namespace's networks), with its
//! own data root, exec root and API socket; and a lab agent restarted with
//! a unique `--docker-plugin` socket. Everything is removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{unique_name, TestLab};

/// The image every test container runs: busybox-static, imported.
pub const IMAGE: &str = "spbusybox";

/// The `daemon.json` label that shows dockerd read the test's own config.
const ISOLATION_LABEL: &str = "org.socketplane.test-config";

fn require(bin: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{bin}` is missing: this test needs the Debian package {package} (apt-get install -y {package})"
    );
}

pub struct Dockerd {
    pub dir: PathBuf,
    pub host: String,
    netns: PathBuf,
    /// Keep Docker's default bridge network (benchmarks compare with it).
    bridge: bool,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts dockerd in the network namespace at `netns` and imports
    /// [`IMAGE`]. Panics with the daemon's log if it does not come up.
    pub fn start(netns: &Path) -> Dockerd {
        Dockerd::start_with(netns, false)
    }

    /// [`Dockerd::start`], with Docker's default bridge network if `bridge`
    /// (inside the lab namespace; no iptables rules either way).
    pub fn start_with(netns: &Path, bridge: bool) -> Dockerd {
        require("dockerd", "docker.io");
        require("docker", "docker.io");
        require("busybox", "busybox-static");
        let dir = std::env::temp_dir().join(format!("sp-dockerd-{}", unique_name('d')));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create dockerd dir");
        let host = format!("unix://{}", dir.join("docker.sock").display());
        let mut d = Dockerd {
            dir,
            host,
            netns: netns.to_path_buf(),
            bridge,
            child: None,
        };
        d.spawn();
        d.assert_isolated();
        d.import_image();
        d
    }

    /// The daemon runs on this test's config and containerd, and its
    /// plugin sockets are not in the machine's `/run/docker/plugins`.
    fn assert_isolated(&self) {
        let labels = self.ok(&["info", "--format", "{{json .Labels}}"]);
        let ours = format!("{ISOLATION_LABEL}={}", self.dir.display());
        assert!(
            labels.contains(&ours),
            "dockerd did not read the test's daemon.json (labels {labels})"
        );
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).expect("dockerd log");
        assert!(
            log.contains("started new containerd process"),
            "dockerd uses a containerd it did not start (a shared system one?):\n{}",
            self.log_tail()
        );
        let own_mounts = std::fs::read_link(format!("/proc/{}/ns/mnt", self.pid()))
            .expect("dockerd mount namespace");
        let ours = std::fs::read_link("/proc/self/ns/mnt").expect("own mount namespace");
        assert_ne!(
            own_mounts, ours,
            "dockerd shares the machine's mount namespace"
        );
    }

    fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("dockerd is running")
    }

    fn spawn(&mut self) {
        let dir = &self.dir;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("dockerd.log"))
            .expect("dockerd log");
        // Nothing of the machine's Docker leaks in: dockerd runs in a mount
        // namespace of its own where `/run/docker` (plugin sockets) and
        // `/run/containerd` (a system containerd dockerd would otherwise
        // share) are this test's empty directories, and it reads this
        // test's `daemon.json`, not `/etc/docker/daemon.json`. Its own
        // mounts stay out of the host's mount table. nsenter, not `ip netns
        // exec`: the latter remounts /sys, which hides the cgroup mounts
        // dockerd needs.
        for shared in ["/run/docker", "/run/containerd"] {
            std::fs::create_dir_all(shared).expect("mount point");
        }
        std::fs::create_dir_all(self.plugin_dir()).expect("plugin dir");
        std::fs::create_dir_all(dir.join("run-containerd")).expect("containerd dir");
        // A label proves dockerd read this file (see `assert_isolated`).
        let config = format!(
            "{{\"labels\": [\"{ISOLATION_LABEL}={}\"]}}\n",
            dir.display()
        );
        std::fs::write(dir.join("daemon.json"), config).expect("daemon.json");
        let private_mounts = format!(
            "mount --make-rslave / && mount --bind {run_docker} /run/docker && \
             mount --bind {run_containerd} /run/containerd && exec \"$@\"",
            run_docker = dir.join("run-docker").display(),
            run_containerd = dir.join("run-containerd").display(),
        );
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "unchanged", "--"])
            .arg("nsenter")
            .arg(format!("--net={}", self.netns.display()))
            .args(["sh", "-c", &private_mounts, "dockerd"])
            .arg("dockerd")
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .args(["-H", &self.host])
            .args(if self.bridge {
                &[][..]
            } else {
                &["--bridge=none"][..]
            })
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--storage-driver",
                "vfs",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(40);
        while self.docker(&["version"]).is_err() {
            if Instant::now() > deadline {
                panic!("dockerd did not start within 40s:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops dockerd (SIGTERM, as a service manager would) and starts it
    /// again on the same data.
    pub fn restart(&mut self) {
        self.stop_daemon();
        self.spawn();
    }

    fn stop_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(100))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }

    /// Where this daemon looks for plugin sockets (its `/run/docker/plugins`).
    pub fn plugin_dir(&self) -> PathBuf {
        self.dir.join("run-docker/plugins")
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(25).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn import_image(&self) {
        let root = self.dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).expect("rootfs");
        std::fs::copy("/bin/busybox", root.join("bin/busybox"))
            .or_else(|_| std::fs::copy("/usr/bin/busybox", root.join("bin/busybox")))
            .expect("copy busybox (install busybox-static)");
        for applet in [
            "sh", "ping", "ip", "sleep", "ifconfig", "cat", "true", "ls", "hostname",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
        }
        let script = format!(
            "tar -C {} -c . | docker -H {} import - {IMAGE}",
            root.display(),
            self.host
        );
        let out = Command::new("sh")
            .args(["-c", &script])
            .output()
            .expect("docker import");
        assert!(
            out.status.success(),
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs the docker CLI against this daemon: Ok(stdout) or Err(stderr).
    pub fn docker(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("docker")
            .args(["-H", &self.host])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running docker: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `docker ...` that must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        self.docker(args)
            .unwrap_or_else(|e| panic!("docker {} failed: {e}", args.join(" ")))
    }

    /// A container's address on a network.
    pub fn ip(&self, container: &str, network: &str) -> String {
        self.ok(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
            container,
        ])
    }

    /// Pings `ip` from inside a container (a few tries).
    pub fn ping(&self, container: &str, ip: &str) -> bool {
        (0..3).any(|_| {
            self.docker(&["exec", container, "ping", "-c", "1", "-W", "1", ip])
                .is_ok()
        })
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Ok(ids) = self.docker(&["ps", "-aq"]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.docker(&args);
            }
        }
        if let Ok(nets) = self.docker(&["network", "ls", "-q", "--filter", "type=custom"]) {
            for n in nets.split_whitespace() {
                let _ = self.docker(&["network", "rm", n]);
            }
        }
        self.stop_daemon();
        // Namespaces and shm bind-mounted under the dirs, deepest first.
        let prefix = self.dir.to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A lab host's agent, restarted by the test with `--docker-plugin`.
pub struct PluginAgent {
    pub socket: PathBuf,
    pub driver: String,
    child: Option<Child>,
    cmd: Vec<String>,
    log: PathBuf,
    docker_host: String,
    /// The lab's cluster token (the lab passes it in the environment).
    token: Option<String>,
}

impl PluginAgent {
    /// Stops the lab's agent on `host` and runs it again with the same
    /// command line plus a unique Docker plugin socket, mirroring networks
    /// into `docker` (its `DOCKER_HOST`) if given.
    pub fn start(t: &mut TestLab, host: usize, docker: Option<&Dockerd>) -> PluginAgent {
        let info = t.lab().hosts()[host].clone();
        let log = std::fs::read_to_string(&info.log).expect("agent log");
        let marker = format!("=== socketplane lab: starting in {}: ", info.netns);
        let line = log
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(&marker))
            .expect("agent command line in the lab log");
        let line = line.trim_end_matches(" ===");
        let driver = format!("sp{}", unique_name('p'));
        // The socket goes where only this test's dockerd looks for plugins.
        let socket = match docker {
            Some(d) => d.plugin_dir().join(format!("{driver}.sock")),
            None => std::env::temp_dir().join(format!("{driver}.sock")),
        };
        let mut argv: Vec<String> = Vec::new();
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            match w {
                "--bootstrap" => {}
                "--docker-plugin" => {
                    words.next();
                    argv.push(w.to_string());
                    argv.push(socket.to_string_lossy().into_owned());
                    // Stale Docker endpoints are collected after 3 s, not 20.
                    argv.push("--docker-stale-after".into());
                    argv.push("3".into());
                }
                _ => argv.push(w.to_string()),
            }
        }
        assert!(
            argv.iter().any(|a| a == "--docker-plugin"),
            "the lab agent command line has no --docker-plugin: {line}"
        );
        t.lab_mut()
            .stop_agent(host, socketplane_lab::Signal::SIGTERM)
            .expect("stop the lab agent");
        let _ = std::fs::remove_file(&info.socket);
        let mut cmd = vec![
            "ip".to_string(),
            "netns".into(),
            "exec".into(),
            info.netns.clone(),
        ];
        cmd.extend(argv);
        // No Docker given: point the mirror at a socket that does not exist
        // rather than at the machine's Docker.
        let docker_host = match docker {
            Some(d) => d.host.clone(),
            None => "unix:///nonexistent/docker.sock".into(),
        };
        let mut agent = PluginAgent {
            socket,
            driver,
            child: None,
            cmd,
            log: info.log.clone(),
            docker_host,
            token: t.lab().config().token.clone(),
        };
        agent.spawn();
        let hosts = t.lab().hosts().len();
        t.wait_for_nodes(host, hosts, Duration::from_secs(60));
        // `cluster status` answering means the agent is ready; the plugin
        // socket is bound before that.
        assert!(
            agent.socket.exists(),
            "the agent did not create {}\n{}",
            agent.socket.display(),
            t.agent_logs()
        );
        agent
    }
}

impl PluginAgent {
    fn spawn(&mut self) {
        let out = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .expect("agent log");
        let mut cmd = Command::new(&self.cmd[0]);
        if let Some(token) = &self.token {
            cmd.env("SOCKETPLANE_TOKEN", token);
        }
        let child = cmd
            .args(&self.cmd[1..])
            .env("DOCKER_HOST", &self.docker_host)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .env_remove("BOOTSTRAP")
            .env_remove("SOCKETPLANE_SOCKET")
            .spawn()
            .expect("spawn agent");
        self.child = Some(child);
    }

    /// Stops the agent (SIGTERM); the datapath keeps forwarding.
    pub fn stop(&mut self) {
        self.kill_child();
    }

    /// Starts it again after [`PluginAgent::stop`] and waits until ready.
    pub fn start_again(&mut self, t: &TestLab, host: usize) {
        self.spawn();
        let hosts = t.lab().hosts().len();
        t.wait_for_nodes(host, hosts, Duration::from_secs(60));
    }

    fn kill_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(100))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for PluginAgent {
    fn drop(&mut self) {
        self.kill_child();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// One raw HTTP/1.1 POST over a unix socket: (status, body).
pub fn post(socket: &Path, path: &str, body: &[u8]) -> (u16, String) {
    super::http(socket, "POST", path, body)
}

/// A Docker host: dockerd in a lab host's namespace and that host's agent
/// serving the plugin. Fields drop in order: dockerd (removing its
/// containers through the still running plugin) before the agent.
pub struct DockerHost {
    pub d: Dockerd,
    pub agent: PluginAgent,
}

impl DockerHost {
    pub fn start(t: &mut TestLab, host: usize) -> DockerHost {
        DockerHost::start_with(t, host, false)
    }

    pub fn start_with(t: &mut TestLab, host: usize, bridge: bool) -> DockerHost {
        let d = Dockerd::start_with(&t.lab().hosts()[host].netns_path(), bridge);
        let agent = PluginAgent::start(t, host, Some(&d));
        DockerHost { d, agent }
    }
}
