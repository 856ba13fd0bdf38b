//! The multi-host acceptance suite (`suite/`) with every agent on one real
//! etcd (`--store etcd://198.18.0.253:2379`) that the lab runs in its own
//! namespace on the underlay. Needs etcd-server besides what
//! `multihost.rs` needs. The store-key snapshots of the bad-input scenario
//! read etcd itself.

mod common;
#[macro_use]
mod suite;

use common::Mode;

fn mode() -> Mode {
    Mode::on("linux").etcd()
}

shared_scenarios!(mode());
