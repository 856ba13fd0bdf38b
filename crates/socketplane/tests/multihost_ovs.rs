//! The same multi-host acceptance suite (`suite/`) with `--datapath ovs`:
//! every lab host runs its own ovsdb-server and ovs-vswitchd (userspace
//! `netdev` datapath) with its underlay address on `br-phy`. Needs
//! openvswitch-switch and ethtool besides what `multihost.rs` needs.

mod common;
mod suite;

use common::Mode;

#[test]
fn three_hosts_discover_each_other_over_mdns_and_share_networks() {
    suite::three_hosts_discover_each_other_over_mdns_and_share_networks(Mode::on("ovs"));
}

#[test]
fn late_host_joins_by_itself_and_dead_host_is_reclaimed() {
    suite::late_host_joins_by_itself_and_dead_host_is_reclaimed(Mode::on("ovs"));
}

#[test]
fn concurrent_attaches_across_hosts_get_distinct_addresses() {
    suite::concurrent_attaches_across_hosts_get_distinct_addresses(Mode::on("ovs"));
}

#[test]
fn killed_agent_restarts_and_converges_while_traffic_keeps_flowing() {
    suite::killed_agent_restarts_and_converges_while_traffic_keeps_flowing(Mode::on("ovs"));
}

#[test]
fn bad_input_gets_clear_errors_and_changes_nothing() {
    suite::bad_input_gets_clear_errors_and_changes_nothing(Mode::on("ovs"));
}

#[test]
fn addresses_stay_unique_when_hosts_contend_for_one_block() {
    suite::addresses_stay_unique_when_hosts_contend_for_one_block(Mode::on("ovs"));
}

#[test]
fn gateway_traffic_never_crosses_the_tunnel() {
    suite::gateway_traffic_never_crosses_the_tunnel(Mode::on("ovs"));
}

#[test]
fn traffic_survives_agent_kill_of_follower_and_leader() {
    suite::traffic_survives_agent_kill_of_follower_and_leader(Mode::on("ovs"));
}
