//! Chooses the datapath named by `--datapath` (an explicit match: no
//! registry).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use socketplane_datapath::linux::{LinuxConfig, LinuxDatapath};
use socketplane_datapath::ovs::{self, OvsConfig, OvsDatapath};
use socketplane_datapath::Datapath;

use crate::error::{Error, Result};

/// Open vSwitch settings (`--ovsdb`, `--ovs-bridge`).
#[derive(Debug, Clone, Default)]
pub struct OvsOptions {
    pub ovsdb: Option<PathBuf>,
    pub bridge: Option<String>,
}

async fn linux(iface: &str, addr: Ipv4Addr) -> Result<Arc<dyn Datapath>> {
    let dp = LinuxDatapath::new(LinuxConfig {
        underlay_iface: iface.to_string(),
        underlay_ip: Some(addr),
        mtu: None,
    })
    .await
    .map_err(|source| Error::Datapath {
        what: "Linux",
        source,
    })?;
    Ok(Arc::new(dp))
}

async fn open_vswitch(iface: &str, addr: Ipv4Addr, opts: &OvsOptions) -> Result<Arc<dyn Datapath>> {
    let mut cfg = OvsConfig::new(iface);
    cfg.underlay_ip = Some(addr);
    if let Some(p) = &opts.ovsdb {
        cfg.ovsdb = p.clone();
    }
    if let Some(b) = &opts.bridge {
        cfg.bridge = b.clone();
    }
    let dp = OvsDatapath::new(cfg)
        .await
        .map_err(|source| Error::Datapath {
            what: "Open vSwitch",
            source,
        })?;
    Ok(Arc::new(dp))
}

/// `--datapath record`: for benchmarks and tests only. Plumbs nothing and
/// logs each change to `DATA_DIR/datapath-record.log`.
fn record(addr: Ipv4Addr, data_dir: &Path) -> Result<Arc<dyn Datapath>> {
    tracing::warn!("--datapath record: a benchmark/test datapath; workloads get NO connectivity.");
    let log = data_dir.join(RECORD_LOG);
    let dp =
        socketplane_datapath::record::RecordDatapath::new(addr, Some(&log)).map_err(|source| {
            Error::Datapath {
                what: "recording",
                source,
            }
        })?;
    Ok(Arc::new(dp))
}

/// The recording datapath's log, in the data dir.
pub const RECORD_LOG: &str = "datapath-record.log";

pub async fn select(
    name: &str,
    iface: &str,
    addr: Ipv4Addr,
    opts: &OvsOptions,
    data_dir: &Path,
) -> Result<Arc<dyn Datapath>> {
    match name {
        "linux" => linux(iface, addr).await,
        "record" => record(addr, data_dir),
        "ovs" => open_vswitch(iface, addr, opts).await,
        "auto" => {
            let db = opts
                .ovsdb
                .clone()
                .unwrap_or_else(|| PathBuf::from(ovs::DEFAULT_OVSDB));
            if !ovs::probe(&db).await {
                tracing::info!(ovsdb = %db.display(), "--datapath auto: no Open vSwitch answers; using the Linux datapath.");
                return linux(iface, addr).await;
            }
            match open_vswitch(iface, addr, opts).await {
                Ok(dp) => {
                    tracing::info!("--datapath auto: using Open vSwitch.");
                    Ok(dp)
                }
                Err(error) => {
                    tracing::warn!(error = %crate::report(&error), "--datapath auto: Open vSwitch is present but unusable; using the Linux datapath.");
                    linux(iface, addr).await
                }
            }
        }
        other => Err(Error::Config(format!(
            "unknown --datapath {other:?}: use auto, linux or ovs (or record, for benchmarks)"
        ))),
    }
}
