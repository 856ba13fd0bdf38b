//! One module per CLI command group.

use std::path::PathBuf;

use crate::output::Output;
use socketplane_client::Client;

pub mod agent;
pub mod cluster;
pub mod cni;
pub mod demo;
pub mod docker;
pub mod endpoint;
pub mod info;
pub mod install;
pub mod lab;
pub mod network;

/// A command that answered but found the cluster unhealthy: the CLI exits
/// with [`Unhealthy::EXIT_CODE`] (an unreachable agent exits with 1).
#[derive(Debug)]
pub struct Unhealthy(pub String);

impl Unhealthy {
    pub const EXIT_CODE: u8 = 2;
}

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unhealthy {}

pub struct Context {
    pub socket: PathBuf,
    pub output: Output,
}

impl Context {
    pub fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    pub fn json(&self) -> bool {
        self.output == Output::Json
    }
}
