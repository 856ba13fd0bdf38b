//! The same multi-host acceptance suite (`suite/`) with `--datapath ovs`:
//! every lab host runs its own ovsdb-server and ovs-vswitchd (userspace
//! `netdev` datapath) with its underlay address on `br-phy`. Needs
//! openvswitch-switch and ethtool besides what `multihost.rs` needs.

mod common;
#[macro_use]
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

shared_scenarios!(Mode::on("ovs"), one_lab_at_a_time());

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

#[test]
fn traffic_into_a_host_survives_link_churn_there() {
    let _lab = one_lab_at_a_time();
    suite::traffic_into_a_host_survives_link_churn_there(Mode::on("ovs"));
}
