//! `socketplane agent`: run the daemon in the foreground, or manage it in
//! the background (systemd where it runs, else a detached process).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use socketplane_agent::AgentConfig;
use socketplane_api::defaults;

use super::Context;

const UNIT: &str = "socketplane.service";

/// A background agent's pid file and log sit beside its socket, so agents
/// with different sockets (tests, labs) never collide.
fn pid_file(socket: &Path) -> PathBuf {
    socket.with_extension("pid")
}

fn log_file(socket: &Path) -> PathBuf {
    socket.with_extension("log")
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentCmd {
    #[command(subcommand)]
    action: Option<AgentAction>,
    #[command(flatten)]
    flags: AgentFlags,
}

#[derive(Subcommand)]
enum AgentAction {
    /// Start the agent in the background (systemd unit if installed).
    Start {
        #[command(flatten)]
        flags: Box<AgentFlags>,
    },
    /// Stop the background agent; the datapath keeps forwarding.
    Stop,
    /// Show the background agent's logs.
    Logs,
}

/// The `socketplane agent` flags (see DESIGN.md, "Contracts").
#[derive(Args, Clone)]
pub struct AgentFlags {
    /// Found a new cluster if this node has no state yet.
    #[arg(long, env = "BOOTSTRAP")]
    bootstrap: bool,
    /// Underlay interface, or `auto` for the default route's.
    #[arg(long, default_value = defaults::IFACE)]
    iface: String,
    /// Join the cluster of the node at this address (IP or IP:PORT).
    #[arg(long)]
    join: Option<String>,
    /// Cluster name; nodes only join clusters of the same name.
    #[arg(long, default_value = defaults::CLUSTER, env = "SOCKETPLANE_CLUSTER")]
    cluster: String,
    /// The cluster's join token (`socketplane cluster token` on a member),
    /// or a secret of your choosing when founding. Without one a founding
    /// node generates it. Prefer the environment: arguments show in `ps`.
    #[arg(long, env = "SOCKETPLANE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Found (or join) a cluster WITHOUT authentication or encryption, for
    /// a trusted lab network only: any host that reaches the cluster port
    /// controls the cluster.
    #[arg(long, conflicts_with = "token")]
    open: bool,
    #[arg(long, default_value = defaults::DATA_DIR)]
    data_dir: PathBuf,
    /// Cluster port: agent-to-agent and Raft traffic.
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], defaults::CLUSTER_PORT)))]
    listen: SocketAddr,
    /// auto, linux or ovs (or record: benchmarks/tests only, plumbs nothing).
    #[arg(long, default_value = defaults::DATAPATH)]
    datapath: String,
    /// `embedded`, `etcd://host:port[,host:port]`, or `etcds://…` for
    /// etcd over TLS (with --etcd-ca).
    #[arg(long, default_value = defaults::STORE)]
    store: String,
    /// etcd over TLS: the CA (PEM) that signed the etcd servers' certificates.
    #[arg(long)]
    etcd_ca: Option<PathBuf>,
    /// etcd client certificate (PEM), for etcd's --client-cert-auth.
    #[arg(long, requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// The key of --etcd-cert (PEM).
    #[arg(long, requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// etcd user, for an etcd with `auth enable`; its password comes from
    /// --etcd-password-file or the environment (SOCKETPLANE_ETCD_PASSWORD),
    /// never from the command line.
    #[arg(long)]
    etcd_user: Option<String>,
    /// A file (not readable by others) that holds the --etcd-user's password.
    #[arg(long, requires = "etcd_user")]
    etcd_password_file: Option<PathBuf>,
    /// Docker plugin socket, or `off`.
    #[arg(long, default_value = defaults::DOCKER_PLUGIN)]
    docker_plugin: String,
    /// Seconds a Docker endpoint no container has is kept before it is
    /// detached (tests shorten it).
    #[arg(long, default_value_t = defaults::DOCKER_STALE_SECS, hide = true)]
    docker_stale_after: u64,
    /// Do not advertise or discover peers over mDNS.
    #[arg(long)]
    no_mdns: bool,
    /// This node's name (default: the hostname).
    #[arg(long, env = "SOCKETPLANE_NODE_NAME")]
    node_name: Option<String>,
    /// Seconds a silent node stays alive before its endpoints are reclaimed.
    #[arg(long, default_value_t = defaults::LEASE_TTL_SECS)]
    lease_ttl: u64,
    /// How long a node must have been dead before its endpoints and
    /// reservations are reclaimed (e.g. 20s, 5m, 1h; 0: only by
    /// `socketplane cluster remove`).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    reclaim_after: Duration,
    /// Store voters: 3 or 5.
    #[arg(long, default_value_t = defaults::VOTERS)]
    voters: usize,
    /// Open vSwitch database socket (default /var/run/openvswitch/db.sock).
    #[arg(long)]
    ovsdb: Option<PathBuf>,
    /// Open vSwitch integration bridge (default docker0-ovs).
    #[arg(long)]
    ovs_bridge: Option<String>,
    /// Metrics, health probes and the topology page: ADDR:PORT, or `off`.
    #[arg(long, default_value = socketplane_observe::server::DEFAULT_ADDR)]
    http: socketplane_observe::HttpAddr,
    /// Log format on stderr: `text` for people, `json` for log shippers.
    #[arg(long, default_value = "text")]
    log_format: socketplane_observe::logging::LogFormat,
    #[command(flatten)]
    dns: DnsFlags,
}

/// DNS on every network's gateway (port 53, UDP and TCP).
#[derive(Args, Clone)]
pub struct DnsFlags {
    /// `on` or `off`.
    #[arg(long = "dns", default_value = "on", value_parser = ["on", "off"])]
    dns: String,
    /// Resolvers to forward other names to (IP or IP:PORT, repeatable or
    /// comma-separated), instead of those of --dns-resolv-conf.
    #[arg(long, value_delimiter = ',')]
    dns_upstream: Vec<String>,
    /// The host's resolv.conf, read at start for upstream resolvers.
    #[arg(long, default_value = "/etc/resolv.conf")]
    dns_resolv_conf: PathBuf,
    /// Time budget of one forwarded query (then SERVFAIL), e.g. 2s.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    dns_timeout: Duration,
    /// Queries per second each source may send (0: unlimited).
    #[arg(long, default_value_t = 10_000)]
    dns_rate_limit: u32,
}

impl DnsFlags {
    fn options(&self) -> anyhow::Result<socketplane_agent::dns::DnsOptions> {
        let upstreams = self
            .dns_upstream
            .iter()
            .map(|u| {
                socketplane_dns::parse_upstream(u)
                    .with_context(|| format!("--dns-upstream {u:?}: want IP or IP:PORT"))
            })
            .collect::<anyhow::Result<_>>()?;
        if self.dns_timeout.is_zero() {
            bail!("--dns-timeout must be at least 1s");
        }
        Ok(socketplane_agent::dns::DnsOptions {
            enabled: self.dns == "on",
            upstreams,
            resolv_conf: self.dns_resolv_conf.clone(),
            timeout: self.dns_timeout,
            rate_limit: self.dns_rate_limit,
        })
    }

    fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "--dns".into(),
            self.dns.clone(),
            "--dns-resolv-conf".into(),
            self.dns_resolv_conf.display().to_string(),
            "--dns-timeout".into(),
            format!("{}s", self.dns_timeout.as_secs()),
            "--dns-rate-limit".into(),
            self.dns_rate_limit.to_string(),
        ];
        if !self.dns_upstream.is_empty() {
            a.extend(["--dns-upstream".into(), self.dns_upstream.join(",")]);
        }
        a
    }
}

/// "20s", "5m", "1h", or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: want e.g. 20s, 5m, 1h or 0"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("invalid duration {s:?}: the unit is s, m or h")),
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

/// The environment variable that may hold the etcd password.
const ETCD_PASSWORD_ENV: &str = "SOCKETPLANE_ETCD_PASSWORD";

impl AgentFlags {
    /// `--etcd-user` and its password, from the file or the environment.
    fn etcd_auth(&self) -> anyhow::Result<Option<socketplane_agent::config::EtcdAuth>> {
        let from_env = std::env::var(ETCD_PASSWORD_ENV)
            .ok()
            .filter(|p| !p.is_empty());
        let Some(user) = &self.etcd_user else {
            if from_env.is_some() {
                bail!("{ETCD_PASSWORD_ENV} is set but --etcd-user is not");
            }
            return Ok(None);
        };
        let password = match (&self.etcd_password_file, from_env) {
            (Some(path), _) => {
                use std::os::unix::fs::PermissionsExt;
                let meta = std::fs::metadata(path)
                    .map_err(|e| anyhow::anyhow!("--etcd-password-file {}: {e}", path.display()))?;
                if meta.permissions().mode() & 0o004 != 0 {
                    bail!(
                        "--etcd-password-file {} is readable by everyone: chmod 600 it",
                        path.display()
                    );
                }
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("--etcd-password-file {}: {e}", path.display()))?;
                text.trim_end_matches(['\n', '\r']).to_string()
            }
            (None, Some(p)) => p,
            (None, None) => bail!(
                "--etcd-user needs a password: --etcd-password-file FILE or {ETCD_PASSWORD_ENV}"
            ),
        };
        Ok(Some(socketplane_agent::config::EtcdAuth {
            user: user.clone(),
            password,
        }))
    }

    fn config(&self, socket: &Path) -> anyhow::Result<AgentConfig> {
        if self.lease_ttl < 2 {
            bail!("--lease-ttl must be at least 2 seconds");
        }
        let etcd_auth = self.etcd_auth()?;
        Ok(AgentConfig {
            etcd_auth,
            bootstrap: self.bootstrap,
            iface: self.iface.clone(),
            join: self.join.clone(),
            cluster: self.cluster.clone(),
            token: self.token.clone().filter(|t| !t.is_empty()),
            open: self.open,
            data_dir: self.data_dir.clone(),
            socket: socket.to_path_buf(),
            listen: self.listen,
            datapath: self.datapath.clone(),
            store: self.store.clone(),
            etcd_tls: socketplane_agent::config::EtcdTlsFiles {
                ca: self.etcd_ca.clone(),
                cert: self.etcd_cert.clone(),
                key: self.etcd_key.clone(),
            },
            docker_plugin: (self.docker_plugin != "off")
                .then(|| PathBuf::from(&self.docker_plugin)),
            docker_stale_after: Duration::from_secs(self.docker_stale_after),
            mdns: !self.no_mdns,
            node_name: self.node_name.clone(),
            lease_ttl: Duration::from_secs(self.lease_ttl),
            reclaim_after: Some(self.reclaim_after).filter(|d| !d.is_zero()),
            max_voters: self.voters,
            ovs: socketplane_agent::datapaths::OvsOptions {
                ovsdb: self.ovsdb.clone(),
                bridge: self.ovs_bridge.clone(),
            },
            http: self.http,
            dns: self.dns.options()?,
        })
    }

    /// The same flags as arguments, to start a background agent with; the
    /// token goes in the environment instead ([`Self::to_env`]), out of `ps`.
    fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "--iface".into(),
            self.iface.clone(),
            "--cluster".into(),
            self.cluster.clone(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--listen".into(),
            self.listen.to_string(),
            "--datapath".into(),
            self.datapath.clone(),
            "--store".into(),
            self.store.clone(),
            "--docker-plugin".into(),
            self.docker_plugin.clone(),
            "--docker-stale-after".into(),
            self.docker_stale_after.to_string(),
            "--lease-ttl".into(),
            self.lease_ttl.to_string(),
            "--reclaim-after".into(),
            format!("{}s", self.reclaim_after.as_secs()),
            "--voters".into(),
            self.voters.to_string(),
            "--http".into(),
            match self.http {
                socketplane_observe::HttpAddr::On(a) => a.to_string(),
                socketplane_observe::HttpAddr::Off => "off".into(),
            },
            "--log-format".into(),
            match self.log_format {
                socketplane_observe::logging::LogFormat::Text => "text".into(),
                socketplane_observe::logging::LogFormat::Json => "json".into(),
            },
        ];
        if self.bootstrap {
            a.push("--bootstrap".into());
        }
        if let Some(j) = &self.join {
            a.extend(["--join".into(), j.clone()]);
        }
        if self.no_mdns {
            a.push("--no-mdns".into());
        }
        a.extend(self.dns.to_args());
        if self.open {
            a.push("--open".into());
        }
        if let Some(n) = &self.node_name {
            a.extend(["--node-name".into(), n.clone()]);
        }
        if let Some(p) = &self.ovsdb {
            a.extend(["--ovsdb".into(), p.display().to_string()]);
        }
        if let Some(b) = &self.ovs_bridge {
            a.extend(["--ovs-bridge".into(), b.clone()]);
        }
        if let Some(user) = &self.etcd_user {
            a.extend(["--etcd-user".into(), user.clone()]);
        }
        for (flag, path) in [
            ("--etcd-ca", &self.etcd_ca),
            ("--etcd-cert", &self.etcd_cert),
            ("--etcd-key", &self.etcd_key),
            ("--etcd-password-file", &self.etcd_password_file),
        ] {
            if let Some(p) = path {
                a.extend([flag.into(), p.display().to_string()]);
            }
        }
        a
    }
}

impl AgentFlags {
    /// The environment a background agent gets beside [`Self::to_args`].
    fn to_env(&self) -> Vec<(&'static str, String)> {
        let password = std::env::var(ETCD_PASSWORD_ENV)
            .ok()
            .filter(|p| !p.is_empty() && self.etcd_user.is_some());
        self.token
            .iter()
            .map(|t| ("SOCKETPLANE_TOKEN", t.clone()))
            .chain(password.map(|p| (ETCD_PASSWORD_ENV, p)))
            .collect()
    }
}

fn systemd_unit_installed() -> bool {
    Path::new("/run/systemd/system").exists()
        && (Path::new("/etc/systemd/system").join(UNIT).exists()
            || Path::new("/lib/systemd/system").join(UNIT).exists())
}

fn running_pid(socket: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file(socket))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

impl AgentCmd {
    pub async fn exec(self, ctx: &Context) -> anyhow::Result<()> {
        match self.action {
            None => {
                init_logging(self.flags.log_format);
                Ok(socketplane_agent::run(self.flags.config(&ctx.socket)?).await?)
            }
            Some(AgentAction::Start { flags }) => start(ctx, &flags).await,
            Some(AgentAction::Stop) => stop(&ctx.socket).await,
            Some(AgentAction::Logs) => logs(&ctx.socket),
        }
    }
}

fn init_logging(format: socketplane_observe::logging::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOCKETPLANE_LOG")
        // hickory logs every DNS query at info: at 20k qps that was the
        // DNS server's main cost (and a log that fills the disk).
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,openraft=warn,hickory_server=warn")
        });
    socketplane_observe::logging::init(format, filter);
}

async fn start(ctx: &Context, flags: &AgentFlags) -> anyhow::Result<()> {
    if systemd_unit_installed() {
        let status = std::process::Command::new("systemctl")
            .args(["start", UNIT])
            .status()?;
        if !status.success() {
            bail!("systemctl start {UNIT} failed");
        }
        println!("Started {UNIT}.");
        return Ok(());
    }
    let (pid_path, log_path) = (pid_file(&ctx.socket), log_file(&ctx.socket));
    if let Some(pid) = running_pid(&ctx.socket) {
        bail!("the agent is already running (pid {pid})");
    }
    flags.config(&ctx.socket)?;
    let exe = std::env::current_exe().context("locating the socketplane binary")?;
    for f in [&pid_path, &log_path] {
        if let Some(dir) = f.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("agent")
        .args(flags.to_args())
        .env_remove("SOCKETPLANE_TOKEN")
        .envs(flags.to_env())
        .env("SOCKETPLANE_SOCKET", &ctx.socket)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own session, so it outlives this command and the terminal.
    detach_session(&mut cmd);
    let mut child = cmd.spawn().context("starting the agent")?;
    std::fs::write(&pid_path, child.id().to_string())
        .with_context(|| format!("writing {}", pid_path.display()))?;
    let client = socketplane_client::Client::new(&ctx.socket);
    for _ in 0..100 {
        // Ready when its API answers; a founding node also when it has
        // founded its cluster, so the next command finds a member (a
        // joining node may wait for its peers for as long as it takes).
        let ready = ctx.socket.exists()
            && match client
                .get::<socketplane_api::rest::AgentInfo>("/v1/info")
                .await
            {
                Ok(_) => true,
                Err(_) => !flags.bootstrap,
            };
        if ready {
            println!(
                "Started the agent (pid {}); see its logs with `socketplane agent logs`.",
                child.id()
            );
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let _ = std::fs::remove_file(&pid_path);
            bail!(
                "the agent exited at once ({status}); see {}",
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "the agent did not open {} within 10 s; see {}",
        ctx.socket.display(),
        log_path.display()
    )
}

fn detach_session(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
}

async fn stop(socket: &Path) -> anyhow::Result<()> {
    if systemd_unit_installed() {
        let status = std::process::Command::new("systemctl")
            .args(["stop", UNIT])
            .status()?;
        if !status.success() {
            bail!("systemctl stop {UNIT} failed");
        }
        println!("Stopped {UNIT}.");
        return Ok(());
    }
    let pid_path = pid_file(socket);
    let Some(pid) = running_pid(socket) else {
        bail!(
            "the agent is not running (no live pid in {})",
            pid_path.display()
        );
    };
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(&pid_path);
            println!("Stopped the agent (pid {pid}); the datapath keeps forwarding.");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the agent (pid {pid}) did not stop within 10 s")
}

fn logs(socket: &Path) -> anyhow::Result<()> {
    if systemd_unit_installed() {
        let status = std::process::Command::new("journalctl")
            .args(["-u", UNIT, "--no-pager"])
            .status()?;
        if !status.success() {
            bail!("journalctl failed");
        }
        return Ok(());
    }
    let path = log_file(socket);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (has the agent been started with `socketplane agent start`?)",
            path.display()
        )
    })?;
    print!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, AgentCmd};
    use clap::Parser;
    use std::time::Duration;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentCmd,
    }

    fn parse(args: &[&str]) -> AgentCmd {
        Cli::try_parse_from(std::iter::once("agent").chain(args.iter().copied()))
            .unwrap()
            .agent
    }

    /// `agent start` passes every flag on: the started agent's settings
    /// are the ones given, the token in its environment, never in argv.
    #[test]
    fn agent_start_passes_every_flag_through() {
        let given = parse(&[
            "--bootstrap",
            "--iface",
            "eth9",
            "--join",
            "198.18.0.11",
            "--cluster",
            "c1",
            "--token",
            "a-secret-token",
            "--data-dir",
            "/tmp/d",
            "--listen",
            "0.0.0.0:7000",
            "--datapath",
            "ovs",
            "--store",
            "etcd://1.2.3.4:2379",
            "--docker-plugin",
            "off",
            "--docker-stale-after",
            "7",
            "--no-mdns",
            "--node-name",
            "n1",
            "--lease-ttl",
            "9",
            "--reclaim-after",
            "20s",
            "--voters",
            "5",
            "--ovsdb",
            "/tmp/db.sock",
            "--ovs-bridge",
            "b0",
        ]);
        let args = given.flags.to_args();
        assert!(
            !args.iter().any(|a| a.contains("a-secret-token")),
            "{args:?}"
        );
        assert_eq!(
            given.flags.to_env(),
            vec![("SOCKETPLANE_TOKEN", "a-secret-token".to_string())]
        );
        let mut again: Vec<&str> = args.iter().map(String::as_str).collect();
        again.extend(["--token", "a-secret-token"]);
        let sock = std::path::Path::new("/tmp/s.sock");
        let (a, b) = (
            given.flags.config(sock).unwrap(),
            parse(&again).flags.config(sock).unwrap(),
        );
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let open = parse(&["--open"]);
        assert!(open.flags.to_args().contains(&"--open".to_string()));
        assert!(open.flags.config(sock).unwrap().open);
    }

    /// The etcd password reaches the agent from its file, never argv or
    /// a log line, and a file everyone can read is refused.
    #[test]
    fn the_etcd_password_comes_from_its_file_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "pw-0123456789\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = file.to_str().unwrap();
        let given = parse(&["--etcd-user", "sp", "--etcd-password-file", path]);
        let args = given.flags.to_args();
        for flag in ["--etcd-user", "sp", "--etcd-password-file", path] {
            assert!(args.iter().any(|a| a == flag), "{flag}: {args:?}");
        }
        let sock = std::path::Path::new("/tmp/s.sock");
        let config = given.flags.config(sock).unwrap();
        let auth = config.etcd_auth.clone().expect("etcd auth");
        assert_eq!(
            (auth.user.as_str(), auth.password.as_str()),
            ("sp", "pw-0123456789")
        );
        assert!(!format!("{config:?}").contains("pw-0123456789"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = parse(&["--etcd-user", "sp", "--etcd-password-file", path])
            .flags
            .config(sock)
            .unwrap_err();
        assert!(err.to_string().contains("readable by everyone"), "{err}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
    }
}
