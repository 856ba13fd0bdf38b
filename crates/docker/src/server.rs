//! Serving the plugin socket and running the mirror beside it.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::mirror::{self, MirrorConfig};
use crate::names::driver_name;
use crate::plugin::{self, Plugin};

/// The plugin's settings.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// The plugin socket; its file stem is the driver name.
    pub socket: PathBuf,
    /// The Docker API endpoint the mirror talks to (`unix://PATH`).
    pub docker_host: String,
    /// A Docker endpoint no container has for this long is detached.
    pub stale_after: Duration,
}

/// The running plugin server: stops and removes its socket when dropped.
pub struct PluginServer {
    path: PathBuf,
    task: JoinHandle<()>,
    mirror: JoinHandle<()>,
}

impl Drop for PluginServer {
    fn drop(&mut self) {
        self.task.abort();
        self.mirror.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves the network and IPAM drivers on the configured socket, and
/// mirrors the cluster's networks into Docker.
pub async fn serve(backend: Arc<dyn Backend>, config: PluginConfig) -> Result<PluginServer> {
    let path = config.socket.clone();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    }
    // A socket left by a crashed agent would make bind fail.
    if path.exists() {
        std::fs::remove_file(&path)
            .map_err(Error::io(format!("removing stale {}", path.display())))?;
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(Error::io(format!(
        "binding the Docker plugin socket {}",
        path.display()
    )))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(Error::io(format!("restricting {}", path.display())))?;
    let driver = driver_name(&path);
    tracing::info!(socket = %path.display(), driver = %driver, "Serving the Docker network and IPAM drivers.");
    let created = Arc::new(Notify::new());
    let app = plugin::router(Plugin {
        backend: backend.clone(),
        created: created.clone(),
    });
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "The Docker plugin server stopped.");
        }
    });
    let mirror_config = MirrorConfig {
        driver,
        docker_host: config.docker_host,
        stale_after: config.stale_after,
    };
    let mirror = tokio::spawn(mirror::run(backend, mirror_config, created));
    Ok(PluginServer { path, task, mirror })
}
