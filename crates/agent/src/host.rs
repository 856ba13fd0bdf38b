//! Facts about this host: its persistent identity, its underlay interface
//! and address, and its routes.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Who this node is, kept in `<data-dir>/node.json` so a restarted agent
/// is the same node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// 16 hex digits; the store's numeric member id is the same number.
    pub id: String,
    pub name: String,
}

impl Identity {
    pub fn load_or_create(data_dir: &Path, name: Option<&str>) -> Result<Identity> {
        std::fs::create_dir_all(data_dir).map_err(Error::io(format!(
            "creating data dir {}",
            data_dir.display()
        )))?;
        let path = data_dir.join("node.json");
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .map_err(Error::io(format!("reading {}", path.display())))?;
            let mut identity: Identity =
                serde_json::from_str(&text).map_err(|source| Error::Json {
                    what: format!(
                        "{} is corrupt; move it away to start as a new node",
                        path.display()
                    ),
                    source,
                })?;
            if u64::from_str_radix(&identity.id, 16).is_err() {
                return Err(Error::Config(format!(
                    "{} holds an invalid node id",
                    path.display()
                )));
            }
            if let Some(name) = name {
                if name != identity.name {
                    identity.name = name.to_string();
                    identity.save(&path)?;
                }
            }
            return Ok(identity);
        }
        let id = loop {
            let n: u64 = rand::random();
            if n != 0 {
                break n;
            }
        };
        let identity = Identity {
            id: format!("{id:016x}"),
            name: name.map(str::to_string).unwrap_or_else(hostname),
        };
        identity.save(&path)?;
        Ok(identity)
    }

    fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(|source| Error::Json {
            what: "encoding the node identity".into(),
            source,
        })?;
        write_atomically(path, &text)
    }

    pub fn numeric_id(&self) -> u64 {
        u64::from_str_radix(&self.id, 16).unwrap_or_default()
    }
}

pub fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(Error::io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(Error::io(format!("renaming to {}", path.display())))?;
    Ok(())
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// IPv4 routes of the main table, from /proc/net/route.
pub fn ipv4_routes() -> Vec<(String, Ipv4Net)> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // /proc/net/route prints the in-memory (network order) bytes as
            // a little-endian number.
            let dest = Ipv4Addr::from(dest.to_le_bytes());
            let prefix = mask.count_ones() as u8;
            Some((f.first()?.to_string(), Ipv4Net::new(dest, prefix).ok()?))
        })
        .collect()
}

/// The interface of the default route.
pub fn default_route_iface() -> Option<String> {
    ipv4_routes()
        .into_iter()
        .find(|(_, net)| net.prefix_len() == 0)
        .map(|(iface, _)| iface)
}

/// The first IPv4 address of an interface.
pub fn iface_ipv4(iface: &str) -> Result<Ipv4Addr> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|source| Error::Nix {
        what: "listing interface addresses".into(),
        source,
    })?;
    for a in addrs {
        if a.interface_name != iface {
            continue;
        }
        if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
            return Ok(sin.ip());
        }
    }
    Err(Error::Config(format!(
        "interface {iface} has no IPv4 address"
    )))
}

/// Resolves `--iface` (`auto` = the default route's interface) to an
/// interface and its IPv4 address.
pub fn resolve_underlay(iface: &str) -> Result<(String, Ipv4Addr)> {
    let name = if iface == socketplane_api::defaults::IFACE {
        default_route_iface().ok_or_else(|| Error::Config(
            "--iface auto: this host has no IPv4 default route; name the underlay interface with --iface".into(),
        ))?
    } else {
        iface.to_string()
    };
    let ip =
        iface_ipv4(&name).map_err(|e| Error::Config(format!("underlay interface {name}: {e}")))?;
    Ok((name, ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_persists() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path(), Some("h1")).unwrap();
        let b = Identity::load_or_create(dir.path(), None).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.id.len(), 16);
        std::fs::write(dir.path().join("node.json"), b"garbage").unwrap();
        let err = Identity::load_or_create(dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn reads_routes() {
        // Every Linux host has at least one route or none at all; parsing
        // must not panic and prefixes must be sane.
        for (_, net) in ipv4_routes() {
            assert!(net.prefix_len() <= 32);
        }
    }
}
