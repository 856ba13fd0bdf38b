//! The kit on real namespaces (needs root): hosts reach each other over
//! the shared bridge, everything goes when the owner drops, and a
//! per-host Open vSwitch comes up and goes away.

use std::net::Ipv4Addr;
use std::time::Duration;

use socketplane_testkit::{
    cmd, netns, require, require_privileged, wait_until, Netns, Ovs, Underlay,
};

fn ping(ns: &str, ip: &str) -> bool {
    netns::exec(ns, &["ping", "-n", "-q", "-c", "1", "-W", "2", ip]).is_ok()
}

#[test]
fn hosts_on_the_underlay_reach_each_other_and_vanish_on_drop() {
    require_privileged!();
    require("ip", "iproute2");
    require("ping", "iputils-ping");
    require("iptables", "iptables");
    let mut net = Underlay::new('k').unwrap();
    let a = net.host("a", Ipv4Addr::new(198, 18, 0, 1)).unwrap();
    let b = net.host("b", Ipv4Addr::new(198, 18, 0, 2)).unwrap();
    net.add_bridge("lan1").unwrap();
    let c = net.netns("c").unwrap();
    net.plug(&c, "eth0", "lan1", Ipv4Addr::new(198, 18, 0, 3))
        .unwrap();
    // Positive control and isolation: same bridge reaches, other does not.
    assert!(ping(&a, "198.18.0.2"), "a -> b over lan0");
    // The switch forwards whatever its iptables say: br_netfilter is off.
    let sw = net.switch();
    cmd::sh(&[
        "ip", "netns", "exec", &sw, "iptables", "-P", "FORWARD", "DROP",
    ]);
    assert!(
        ping(&a, "198.18.0.2"),
        "a -> b with FORWARD DROP on the switch"
    );
    assert!(!ping(&a, "198.18.0.3"), "lan1 is another LAN");
    assert_eq!(netns::links(&b).unwrap(), vec!["eth0", "lo"]);
    assert!(netns::link_exists(&b, "eth0").unwrap());
    assert!(!netns::link_exists(&b, "nothere0").unwrap());
    assert!(netns::link_exists("no-such-namespace-x", "eth0").is_err());
    // A process left running inside does not keep a namespace alive.
    let mut sleeper = netns::command(&b, &["sleep", "60"]).spawn().unwrap();
    let names = net.namespaces();
    assert_eq!(names.len(), 4);
    drop(net);
    for n in &names {
        assert!(!netns::exists(n), "{n} left behind");
    }
    assert!(
        // Reaped by us (Ok(Some)) or already by the kit's kill (Err: ECHILD).
        wait_until(Duration::from_secs(2), || sleeper
            .try_wait()
            .map_or(true, |s| s.is_some())),
        "the process in a deleted namespace must be killed"
    );
}

#[test]
fn netns_into_name_keeps_the_namespace() {
    require_privileged!();
    let name = format!("sp{}-keep", socketplane_testkit::unique_name('n'));
    let kept = Netns::create(&name).unwrap().into_name();
    assert!(netns::exists(&kept));
    netns::delete(&kept).unwrap();
    assert!(!netns::exists(&kept));
    netns::delete(&kept).unwrap();
    let err = cmd::ip_json(Some(&kept), &["link", "show"]).unwrap_err();
    assert!(err.to_string().contains("failed"), "{err}");
}

#[test]
fn per_host_open_vswitch_starts_moves_the_underlay_and_stops() {
    require_privileged!();
    require("ovs-vswitchd", "openvswitch-switch");
    let mut net = Underlay::new('o').unwrap();
    let a = net.host("a", Ipv4Addr::new(198, 18, 0, 1)).unwrap();
    let b = net.host("b", Ipv4Addr::new(198, 18, 0, 2)).unwrap();
    socketplane_testkit::underlay::full_checksums(&b, "eth0").unwrap();
    let ovs = Ovs::start_temp(&a).unwrap();
    let dir = ovs.dir().to_path_buf();
    assert!(ovs.db_socket().exists());
    let cidr = ovs.move_underlay("eth0", "br-phy").unwrap();
    assert_eq!(cidr, "198.18.0.1/24");
    let quiet = netns::exec(&a, &["sysctl", "-n", "net.ipv4.conf.eth0.arp_ignore"]).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&quiet.stdout).trim(),
        "8",
        "the uplink's kernel still answers ARP for the bridge's address"
    );
    assert!(ovs
        .vsctl(&["list-ports", "br-phy"])
        .unwrap()
        .contains("eth0"));
    assert!(
        wait_until(Duration::from_secs(10), || ping(&a, "198.18.0.2")),
        "a reaches b through br-phy"
    );
    assert!(!ovs.flows("br-phy").unwrap().is_empty(), "NORMAL flow");
    let pidfile = dir.join("ovs-vswitchd.pid");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    drop(ovs);
    // Gone, or a zombie of a pid 1 that does not reap.
    assert!(
        socketplane_testkit::process::stat(pid).is_none_or(|s| s.state == 'Z'),
        "vswitchd stopped"
    );
    assert!(!dir.exists(), "temp dir removed");
}
