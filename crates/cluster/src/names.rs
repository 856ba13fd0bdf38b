//! Names and ids: what they may look like.

use socketplane_api::defaults;

use crate::error::{Error, Result};

/// Names Docker and users expect to mean something else.
pub const RESERVED_NAMES: &[&str] = &["host", "none", "bridge", "all"];

pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid {kind} name {name:?}: use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )))
    }
}

/// A name a user may give a network (the default network's is taken).
pub fn validate_network_name(name: &str) -> Result<()> {
    validate_name("network", name)?;
    if RESERVED_NAMES.contains(&name) {
        return Err(Error::Invalid(format!("network name {name:?} is reserved")));
    }
    Ok(())
}

/// An interface name inside a workload (default `eth0`).
pub fn ifname(given: Option<&str>) -> Result<String> {
    let ifname = given.unwrap_or(defaults::IFNAME).to_string();
    if ifname.is_empty()
        || ifname.len() > 15
        || ifname.contains('/')
        || ifname.contains(char::is_whitespace)
    {
        return Err(Error::Invalid(format!(
            "invalid interface name {ifname:?} (1-15 characters, no '/' or spaces)"
        )));
    }
    Ok(ifname)
}

/// 16 hex digits: endpoint and network ids.
pub fn random_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("network", "web-1.a_b").is_ok());
        for bad in ["", "-a", "a b", "a/b", &"x".repeat(65)] {
            assert!(validate_name("network", bad).is_err(), "{bad}");
        }
        assert!(validate_network_name("host").is_err());
        assert_eq!(ifname(None).unwrap(), "eth0");
        assert!(ifname(Some("a/b")).is_err());
        assert_eq!(random_id().len(), 16);
    }
}
