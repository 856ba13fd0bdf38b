//! The same multi-host acceptance suite (`suite/`) with `--datapath ovs`:
//! every lab host runs its own ovsdb-server and ovs-vswitchd (userspace
//! `netdev` datapath) with its underlay address on `br-phy`. Needs
//! openvswitch-switch and ethtool besides what `multihost.rs` needs.

mod common;
mod suite;

use common::Mode;

/// Every userspace OVS host keeps ovs-vswitchd's threads busy: on a 2-core
/// machine, several 3-host OVS labs at once starve each other's agents and
/// Open vSwitch daemons, so the scenarios here run one at a time.
static ONE_LAB_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_lab_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A failed scenario poisons the lock; the next one still runs.
    ONE_LAB_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn three_hosts_discover_each_other_over_mdns_and_share_networks() {
    let _lab = one_lab_at_a_time();
    suite::three_hosts_discover_each_other_over_mdns_and_share_networks(Mode::on("ovs"));
}

#[test]
fn late_host_joins_by_itself_and_dead_host_is_reclaimed() {
    let _lab = one_lab_at_a_time();
    suite::late_host_joins_by_itself_and_dead_host_is_reclaimed(Mode::on("ovs"));
}

#[test]
fn concurrent_attaches_across_hosts_get_distinct_addresses() {
    let _lab = one_lab_at_a_time();
    suite::concurrent_attaches_across_hosts_get_distinct_addresses(Mode::on("ovs"));
}

#[test]
fn killed_agent_restarts_and_converges_while_traffic_keeps_flowing() {
    let _lab = one_lab_at_a_time();
    suite::killed_agent_restarts_and_converges_while_traffic_keeps_flowing(Mode::on("ovs"));
}

#[test]
fn bad_input_gets_clear_errors_and_changes_nothing() {
    let _lab = one_lab_at_a_time();
    suite::bad_input_gets_clear_errors_and_changes_nothing(Mode::on("ovs"));
}

#[test]
fn addresses_stay_unique_when_hosts_contend_for_one_block() {
    let _lab = one_lab_at_a_time();
    suite::addresses_stay_unique_when_hosts_contend_for_one_block(Mode::on("ovs"));
}

#[test]
fn gateway_traffic_never_crosses_the_tunnel() {
    let _lab = one_lab_at_a_time();
    suite::gateway_traffic_never_crosses_the_tunnel(Mode::on("ovs"));
}

#[test]
fn traffic_survives_agent_kill_of_follower_and_leader() {
    let _lab = one_lab_at_a_time();
    suite::traffic_survives_agent_kill_of_follower_and_leader(Mode::on("ovs"));
}
