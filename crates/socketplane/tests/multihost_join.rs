//! The multi-host acceptance suite (`suite/`) without mDNS: every agent
//! runs with `--no-mdns`, and every host after the first is given
//! `--join 198.18.0.11` (host1). The late host of the reclaim scenario
//! joins the same way. Two scenarios run again with `--no-mdns` alone,
//! every later host joined by `socketplane cluster join 198.18.0.11`.

mod common;
#[macro_use]
mod suite;

use common::Mode;

fn mode() -> Mode {
    Mode::on("linux").join()
}

shared_scenarios!(mode());

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
