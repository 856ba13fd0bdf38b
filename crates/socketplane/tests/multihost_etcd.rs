//! The multi-host acceptance suite (`suite/`) with every agent on one real
//! etcd (`--store etcd://198.18.0.253:2379`) that the lab runs in its own
//! namespace on the underlay. Needs etcd-server besides what
//! `multihost.rs` needs. The store-key snapshots of the bad-input scenario
//! read etcd itself.

mod common;
mod suite;

use common::Mode;

fn mode() -> Mode {
    Mode::on("linux").etcd()
}

#[test]
fn three_hosts_discover_each_other_over_mdns_and_share_networks() {
    suite::three_hosts_discover_each_other_over_mdns_and_share_networks(mode());
}

#[test]
fn late_host_joins_by_itself_and_dead_host_is_reclaimed() {
    suite::late_host_joins_by_itself_and_dead_host_is_reclaimed(mode());
}

#[test]
fn concurrent_attaches_across_hosts_get_distinct_addresses() {
    suite::concurrent_attaches_across_hosts_get_distinct_addresses(mode());
}

#[test]
fn killed_agent_restarts_and_converges_while_traffic_keeps_flowing() {
    suite::killed_agent_restarts_and_converges_while_traffic_keeps_flowing(mode());
}

#[test]
fn bad_input_gets_clear_errors_and_changes_nothing() {
    suite::bad_input_gets_clear_errors_and_changes_nothing(mode());
}

#[test]
fn addresses_stay_unique_when_hosts_contend_for_one_block() {
    suite::addresses_stay_unique_when_hosts_contend_for_one_block(mode());
}
