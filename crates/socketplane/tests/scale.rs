//! The scale harness in a small configuration, for correctness only (the
//! timings are `bench/scale.sh`'s): 10 hosts with `--datapath record`,
//! 500 endpoints attached across them in bursts; every endpoint is applied
//! on every host, and after detaching them all nothing is left anywhere.

mod scale_harness;

use std::collections::HashSet;
use std::time::Duration;

use scale_harness::Scale;
use socketplane_testkit::require_privileged;

const HOSTS: usize = 10;
const ENDPOINTS: usize = 500;

#[test]
fn every_endpoint_reaches_every_host_and_nothing_is_left_behind() {
    require_privileged!();
    let name = format!("sc{:04x}", std::process::id() % 0xffff);
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_socketplane"));
    let mut s = Scale::up(&name, HOSTS, bin, &[]);
    s.wait_members(0, HOSTS, Duration::from_secs(60));
    s.create_network("scale", "10.77.0.0/16");

    let eps = s.attach("scale", ENDPOINTS, 8, None, 0);
    let ids: HashSet<String> = eps.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), ENDPOINTS, "every attach got its own endpoint");
    s.wait_exactly(&ids, Duration::from_secs(30));

    s.detach(&eps, 8);
    s.wait_exactly(&HashSet::new(), Duration::from_secs(30));
}
