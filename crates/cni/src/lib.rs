//! The SocketPlane CNI plugin (spec 1.1.0, answering 0.3.0 to 1.1.0).
//!
//! A runtime runs the plugin with the command in `CNI_COMMAND`, the
//! container in `CNI_CONTAINERID` / `CNI_NETNS` / `CNI_IFNAME` and the
//! network configuration on stdin ([`spec`]). Every command is a call to
//! the local agent's API through [`socketplane_client`] ([`plugin`]); the
//! agent does the plumbing, so the plugin holds no state. Attachments are
//! endpoints with origin `cni`, keyed by (container id, ifname). Errors are
//! CNI error objects ([`CniError`]) on stdout.

pub mod conflist;
mod error;
mod inspect;
pub mod plugin;
pub mod spec;

pub use error::{codes, CniError};
