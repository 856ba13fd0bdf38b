//! The multi-host acceptance suite (`suite/`) on the Linux kernel datapath.
//! Needs root, iproute2, iputils-ping, nftables/iptables and python3 with
//! zeroconf (scripts/test.sh installs them).

mod common;
mod suite;

use common::Mode;

#[test]
fn three_hosts_discover_each_other_over_mdns_and_share_networks() {
    suite::three_hosts_discover_each_other_over_mdns_and_share_networks(Mode::on("linux"));
}

#[test]
fn late_host_joins_by_itself_and_dead_host_is_reclaimed() {
    suite::late_host_joins_by_itself_and_dead_host_is_reclaimed(Mode::on("linux"));
}

#[test]
fn concurrent_attaches_across_hosts_get_distinct_addresses() {
    suite::concurrent_attaches_across_hosts_get_distinct_addresses(Mode::on("linux"));
}

#[test]
fn killed_agent_restarts_and_converges_while_traffic_keeps_flowing() {
    suite::killed_agent_restarts_and_converges_while_traffic_keeps_flowing(Mode::on("linux"));
}

#[test]
fn bad_input_gets_clear_errors_and_changes_nothing() {
    suite::bad_input_gets_clear_errors_and_changes_nothing(Mode::on("linux"));
}

#[test]
fn addresses_stay_unique_when_hosts_contend_for_one_block() {
    suite::addresses_stay_unique_when_hosts_contend_for_one_block(Mode::on("linux"));
}

#[test]
fn gateway_traffic_never_crosses_the_tunnel() {
    suite::gateway_traffic_never_crosses_the_tunnel(Mode::on("linux"));
}

#[test]
fn traffic_survives_agent_kill_of_follower_and_leader() {
    suite::traffic_survives_agent_kill_of_follower_and_leader(Mode::on("linux"));
}
