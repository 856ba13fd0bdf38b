//! The SocketPlane agent, one per host: wiring only. It builds the parts
//! from the configuration, starts them in order and stops them ([`run`]).
//! What the agent decides lives in `socketplane-cluster`; the front ends
//! here each take a narrow handle on it:
//!
//! - [`config`]: [`AgentConfig`], defaults from `socketplane_api::defaults`
//! - [`host`]: this host's identity, underlay and routes
//! - [`datapaths`]: `--datapath` → a datapath
//! - [`membership`]: founding or joining, registration, `cluster …` commands
//! - [`local_api`]: the REST API on the unix socket, on a `Cluster` and a
//!   `Control` handle
//! - [`cluster_port`]: the TCP port for peers and Raft
//! - [`enrollment`]: this node's trust (CA, certificate, token) and how
//!   joiners get a certificate
//! - [`discovery`]: peers over mDNS
//! - [`observe`]: what the HTTP server (`--http`, `socketplane-observe`)
//!   and `cluster status` show
//! - [`disk_guard`]: store writes refused clearly while its disk is full
//! - [`dns`]: names on every network's gateway (`socketplane-dns`)
//! - [`memory`]: freed memory back to the system
//! - the Docker plugin (`socketplane-docker`, cargo feature `docker`)

pub mod cluster_port;
pub mod config;
pub mod datapaths;
pub mod discovery;
pub mod disk_guard;
pub mod dns;
pub mod enrollment;
pub mod error;
pub mod host;
pub mod local_api;
pub mod membership;
pub mod memory;
pub mod network_notes;
pub mod observe;
mod private_socket;
mod run;

pub use config::AgentConfig;
pub use error::{Error, Result};
pub use run::run;

/// An error with its causes, as one line for a log or a person.
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
