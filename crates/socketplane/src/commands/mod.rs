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
