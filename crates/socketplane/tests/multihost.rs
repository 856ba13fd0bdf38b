//! The multi-host acceptance suite (`suite/`) on the Linux kernel datapath.
//! Needs root, iproute2, iputils-ping, nftables/iptables and python3 with
//! zeroconf (scripts/test.sh installs them).

mod common;
#[macro_use]
mod suite;

use common::Mode;

shared_scenarios!(Mode::on("linux"));

#[test]
fn reused_netns_path_is_never_plumbed() {
    suite::reused_netns_path_is_never_plumbed(Mode::on("linux"));
}

#[test]
fn gateway_traffic_never_crosses_the_tunnel() {
    suite::gateway_traffic_never_crosses_the_tunnel(Mode::on("linux"));
}

#[test]
fn traffic_survives_agent_kill_of_follower_and_leader() {
    suite::traffic_survives_agent_kill_of_follower_and_leader(Mode::on("linux"));
}
