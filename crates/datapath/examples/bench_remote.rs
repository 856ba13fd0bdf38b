//! The Linux datapath with many remote endpoints on one network (issue 16
//! point 5): the time of a full first apply, of an apply and of a full
//! resync ([`Datapath::resync`]) that change nothing, of one added and one
//! removed remote endpoint, and the FDB and neighbour entries it leaves
//! (bench/kernel.sh shows them next to the kernel's `gc_thresh` limits).
//!
//! Usage (root, in a namespace with an `eth0` carrying `--ip`; see
//! bench/kernel.sh): `bench_remote [REMOTES] [ROUNDS]`

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use socketplane_datapath::linux::{LinuxConfig, LinuxDatapath};
use socketplane_datapath::{Datapath, DesiredState, MacAddr, NetworkSpec, RemoteEndpoint};

const REMOTE_HOSTS: usize = 50;

fn remote(i: usize) -> RemoteEndpoint {
    let ip = Ipv4Addr::new(10, 90, (i / 250 + 1) as u8, (i % 250 + 2) as u8);
    RemoteEndpoint {
        id: format!("bench{i:05}"),
        network: "benchnet".into(),
        ip,
        mac: MacAddr::from_ipv4(ip),
        host: Ipv4Addr::new(198, 18, 6, (i % REMOTE_HOSTS + 2) as u8),
    }
}

fn count(cmd: &[&str]) -> usize {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn median(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() - 1])
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let dp = LinuxDatapath::new(LinuxConfig {
        underlay_iface: "eth0".into(),
        underlay_ip: Some(Ipv4Addr::new(198, 18, 5, 1)),
        mtu: None,
    })
    .await
    .expect("datapath");
    let mut desired = DesiredState {
        networks: vec![NetworkSpec {
            name: "benchnet".into(),
            vni: 4242,
            subnet: "10.90.0.0/16".parse().expect("subnet"),
            gateway: Ipv4Addr::new(10, 90, 0, 1),
            mtu: None,
            mode: Default::default(),
        }],
        local: Vec::new(),
        routers: Vec::new(),
        blocks: Vec::new(),
        remote: (0..n).map(remote).collect(),
        peers: (0..REMOTE_HOSTS)
            .map(|h| Ipv4Addr::new(198, 18, 6, (h + 2) as u8))
            .collect(),
    };
    let t = Instant::now();
    let full = dp.apply(&desired).await.expect("full apply");
    let first = t.elapsed();
    let (mut noop, mut resync) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        let r = dp.apply(&desired).await.expect("apply");
        assert_eq!(r.changes, 0, "an unchanged apply writes nothing");
        noop.push(t.elapsed());
        // A full check: every table read back and compared.
        dp.resync();
        let t = Instant::now();
        let r = dp.apply(&desired).await.expect("resync");
        assert_eq!(r.changes, 0, "a resync changes nothing");
        resync.push(t.elapsed());
    }
    let (mut add, mut del) = (Vec::new(), Vec::new());
    for k in 0..rounds {
        desired.remote.push(remote(n + k));
        let t = Instant::now();
        dp.apply(&desired).await.expect("add one");
        add.push(t.elapsed());
        desired.remote.pop();
        let t = Instant::now();
        dp.apply(&desired).await.expect("remove one");
        del.push(t.elapsed());
    }
    let neigh = count(&["ip", "neigh", "show", "nud", "permanent"]);
    let fdb = count(&["bridge", "fdb", "show"]);
    let (noop_med, noop_max) = median(noop);
    let (resync_med, resync_max) = median(resync);
    let (add_med, add_max) = median(add);
    let (del_med, del_max) = median(del);
    println!("Linux datapath, {n} remote endpoints on one network ({REMOTE_HOSTS} remote hosts):");
    println!("  first apply: {} ({} writes)", ms(first), full.changes);
    println!(
        "  apply, nothing changed: median {} max {}",
        ms(noop_med),
        ms(noop_max)
    );
    println!(
        "  full resync (every table read back), nothing changed: median {} max {}",
        ms(resync_med),
        ms(resync_max)
    );
    println!(
        "  one remote endpoint added: median {} max {} ({rounds} rounds)",
        ms(add_med),
        ms(add_max)
    );
    println!(
        "  one remote endpoint removed: median {} max {}",
        ms(del_med),
        ms(del_max)
    );
    println!("  permanent neighbour entries: {neigh}; FDB entries (all): {fdb}");
    dp.teardown().await.expect("teardown");
}
