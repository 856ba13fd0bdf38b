//! The multi-host acceptance suite (`suite/`) without mDNS: every agent
//! runs with `--no-mdns`, and every host after the first is given
//! `--join 198.18.0.11` (host1). The late host of the reclaim scenario
//! joins the same way. Two scenarios run again with `--no-mdns` alone,
//! every later host joined by `socketplane cluster join 198.18.0.11`.

mod common;
mod suite;

use common::Mode;

fn mode() -> Mode {
    Mode::on("linux").join()
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

#[test]
fn cluster_join_cli_three_hosts_share_networks() {
    suite::three_hosts_discover_each_other_over_mdns_and_share_networks(
        Mode::on("linux").join_by_cli(),
    );
}

#[test]
fn cluster_join_cli_late_host_joins_and_dead_host_is_reclaimed() {
    suite::late_host_joins_by_itself_and_dead_host_is_reclaimed(Mode::on("linux").join_by_cli());
}
