//! How a lab is built: its configuration, limits, addressing plan and
//! timeouts.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};

/// Most hosts a lab can have (addresses .11 to .210).
pub const MAX_HOSTS: usize = 200;
/// Longest lab name (it is part of every namespace name).
pub const MAX_NAME_LEN: usize = 6;

/// The underlay address of the host at `index` (0-based): `host1` (index
/// 0) has 198.18.0.11, `hostN` has 198.18.0.(10+N).
pub fn underlay_ip(index: usize) -> Option<Ipv4Addr> {
    let last = u8::try_from(index.checked_add(11)?).ok()?;
    (index < MAX_HOSTS).then_some(Ipv4Addr::new(198, 18, 0, last))
}

/// The second underlay subnet's bridge (`lan1`), gateway and addresses:
/// hosts from [`LabConfig::second_subnet_from`] on sit there, with
/// 198.18.1.(11+index), behind the outside namespace, which routes
/// between the two subnets.
pub const SECOND_BRIDGE: &str = "lan1";
/// The outside namespace's address on the second subnet (its router).
pub const SECOND_GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 254);

/// The underlay address of host `index` in a lab built with `config`
/// ([`underlay_ip`], or on the second subnet).
pub fn host_underlay_ip(config: &LabConfig, index: usize) -> Option<Ipv4Addr> {
    let ip = underlay_ip(index)?;
    Some(if config.on_second_subnet(index) {
        let [a, b, _, d] = ip.octets();
        Ipv4Addr::new(a, b, 1, d)
    } else {
        ip
    })
}

/// The default state directory of a lab: `/run/socketplane-lab/<name>`.
pub fn default_state_dir(name: &str) -> PathBuf {
    PathBuf::from("/run/socketplane-lab").join(name)
}

/// The agents' store: each runs the embedded Raft store, or all share one
/// etcd that the lab runs in its own namespace at [`ETCD_IP`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    Embedded,
    Etcd,
}

/// How agents find each other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Discovery {
    /// Over mDNS (the agents' default).
    #[default]
    Mdns,
    /// `--no-mdns`, and every host after the first gets `--join` with the
    /// first host's address.
    Join,
    /// `--no-mdns` and nothing else: the hosts after the first wait until
    /// told `socketplane cluster join ADDR`.
    Manual,
}

/// Where a lab's etcd listens (namespace `sp-NAME-etcd` on the switch).
pub const ETCD_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 253);
/// etcd's client port.
pub const ETCD_CLIENT_PORT: u16 = 2379;

/// How to build a lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabConfig {
    /// Unique lab name: 1 to 6 of `a-z0-9`; the cluster name of its agents.
    pub name: String,
    /// Number of hosts (1..=200).
    pub hosts: usize,
    /// `--datapath` for the agents (`linux`, `ovs`, `auto`); empty: not passed.
    pub datapath: String,
    /// The `socketplane` binary.
    pub agent_bin: PathBuf,
    /// Extra flags appended to every agent's command line.
    pub agent_args: Vec<String>,
    /// Where state, logs, data dirs and sockets live.
    pub state_dir: PathBuf,
    /// The agents' store.
    #[serde(default)]
    pub store: StoreKind,
    /// How the agents find each other.
    #[serde(default)]
    pub discovery: Discovery,
    /// The cluster secret every host gets (in `SOCKETPLANE_TOKEN`, never on
    /// the command line); `None`: none is passed (e.g. a test of `--open`,
    /// or of a generated token). [`LabConfig::new`] makes a random one.
    #[serde(default)]
    pub token: Option<String>,
    /// Hosts from this index on sit on a second underlay subnet
    /// (198.18.1.0/24 on bridge [`SECOND_BRIDGE`]), routed to the first
    /// by the outside namespace; `None`: one subnet. mDNS does not cross
    /// subnets: such labs use [`Discovery::Join`].
    #[serde(default)]
    pub second_subnet_from: Option<usize>,
    /// With [`StoreKind::Etcd`]: etcd serves clients only over TLS (a CA
    /// the lab makes) and with `auth enable`; the agents get `etcds://`,
    /// `--etcd-ca`, `--etcd-user` and `--etcd-password-file`.
    #[serde(default)]
    pub etcd_secure: bool,
}

impl LabConfig {
    /// A configuration with defaults: datapath not passed, no extra flags,
    /// state in [`default_state_dir`].
    pub fn new(name: &str, hosts: usize, agent_bin: impl Into<PathBuf>) -> LabConfig {
        LabConfig {
            name: name.to_string(),
            hosts,
            datapath: String::new(),
            agent_bin: agent_bin.into(),
            agent_args: Vec::new(),
            state_dir: default_state_dir(name),
            store: StoreKind::Embedded,
            discovery: Discovery::Mdns,
            token: Some(random_token()),
            second_subnet_from: None,
            etcd_secure: false,
        }
    }

    /// Whether host `index` sits on the second underlay subnet.
    pub fn on_second_subnet(&self, index: usize) -> bool {
        self.second_subnet_from.is_some_and(|from| index >= from)
    }

    /// Whether the hosts run Open vSwitch (`--datapath ovs`).
    pub fn uses_ovs(&self) -> bool {
        self.datapath == "ovs"
    }

    /// `etcd://IP:PORT` (`etcds://` when secure) of the lab's etcd, when
    /// it runs one.
    pub fn etcd_url(&self) -> Option<String> {
        let scheme = if self.etcd_secure { "etcds" } else { "etcd" };
        (self.store == StoreKind::Etcd).then(|| format!("{scheme}://{ETCD_IP}:{ETCD_CLIENT_PORT}"))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(LabError::InvalidConfig(m));
        if self.name.is_empty()
            || self.name.len() > MAX_NAME_LEN
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return bad(format!(
                "lab name {:?} must be 1 to {MAX_NAME_LEN} characters of a-z and 0-9",
                self.name
            ));
        }
        if self.hosts == 0 || self.hosts > MAX_HOSTS {
            return bad(format!(
                "a lab has 1 to {MAX_HOSTS} hosts, not {}",
                self.hosts
            ));
        }
        if !self.agent_bin.is_file() {
            return bad(format!(
                "agent binary {} does not exist",
                self.agent_bin.display()
            ));
        }
        if self.state_dir.as_os_str().is_empty() {
            return bad("state dir must not be empty".into());
        }
        Ok(())
    }
}

/// 32 random bytes, hex.
pub fn random_token() -> String {
    use std::io::Read;
    let mut b = [0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        // Not secret then, but still unique enough for a lab.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b[..16].copy_from_slice(&t.to_le_bytes());
        b[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// How long the lab waits for agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// For an agent's socket to appear after it starts (default 20 s).
    pub ready: Duration,
    /// For an agent to exit after SIGTERM, before SIGKILL (default 10 s).
    pub stop: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            ready: Duration::from_secs(20),
            stop: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(underlay_ip(0), Some(Ipv4Addr::new(198, 18, 0, 11)));
        assert_eq!(underlay_ip(199), Some(Ipv4Addr::new(198, 18, 0, 210)));
        assert_eq!(underlay_ip(200), None);
    }

    #[test]
    fn config_validation() {
        let bin = std::env::current_exe().unwrap();
        assert!(LabConfig::new("ab12", 3, &bin).validate().is_ok());
        for (name, hosts) in [
            ("", 1),
            ("toolong", 1),
            ("Ab", 1),
            ("a-b", 1),
            ("ab", 0),
            ("ab", 201),
        ] {
            assert!(
                LabConfig::new(name, hosts, &bin).validate().is_err(),
                "{name} {hosts}"
            );
        }
        assert!(LabConfig::new("ab", 1, "/nonexistent/x")
            .validate()
            .is_err());
    }
}
