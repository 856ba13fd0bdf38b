//! Errors of starting and running the agent.

use socketplane_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting that cannot work; the message says which and why.
    #[error("{0}")]
    Config(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}")]
    Nix {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("{what}")]
    Store {
        what: String,
        #[source]
        source: StoreError,
    },
    #[error("starting the {what} datapath")]
    Datapath {
        what: &'static str,
        #[source]
        source: socketplane_datapath::DatapathError,
    },
    #[error("starting mDNS discovery")]
    Discovery(#[source] socketplane_discovery::DiscoveryError),
    #[error("{what}")]
    Cluster {
        what: String,
        #[source]
        source: socketplane_cluster::Error,
    },
    #[cfg(feature = "docker")]
    #[error("starting the Docker plugin")]
    Docker(#[source] socketplane_docker::Error),
    #[error("starting the HTTP server (--http)")]
    Observe(#[source] socketplane_observe::Error),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
