//! Our mDNS advertisements as an independent implementation sees them:
//! python-zeroconf, at the one version the tests pin, run in a namespace.

use std::time::Duration;

use crate::error::{KitError, Result};
use crate::netns;

/// The python-zeroconf version the tests pin (`scripts/test.sh` installs
/// it); the browse script refuses any other.
pub const ZEROCONF_VERSION: &str = "0.154.0";

/// The browse script (one for every test).
pub const BROWSE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/zeroconf_browse.py");

/// The Python to run (`SOCKETPLANE_PYTHON`, default `python3`).
pub fn python() -> String {
    std::env::var("SOCKETPLANE_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Browse `_socketplane._tcp.local.` from namespace `ns` for up to `time`
/// (less once `expected` services are resolved). Each service is
/// `{"name", "server", "port", "addresses": [..], "properties": {..}}`.
pub fn browse(ns: &str, time: Duration, expected: usize) -> Result<Vec<serde_json::Value>> {
    let secs = format!("{:.1}", time.as_secs_f64());
    let count = expected.to_string();
    let py = python();
    let out = netns::exec(
        ns,
        &[py.as_str(), BROWSE_SCRIPT, ZEROCONF_VERSION, &secs, &count],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| KitError::Output {
        cmd: format!("{py} {BROWSE_SCRIPT}"),
        detail: format!("{e}: {text}"),
    })?;
    match v {
        serde_json::Value::Array(list) => Ok(list),
        other => Err(KitError::Output {
            cmd: format!("{py} {BROWSE_SCRIPT}"),
            detail: format!("not a list: {other}"),
        }),
    }
}
