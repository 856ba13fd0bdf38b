//! Applies a `DesiredState` (JSON) with the Open vSwitch datapath in the
//! current network namespace and prints the `ApplyReport` as JSON.
//!
//! Usage: `ovs-apply [--ovsdb SOCK] [--bridge NAME] [--iface IF] [--ip ADDR]
//! [--mtu N] [--table NAME] [--teardown] [FILE|-]` (run e.g. under
//! `ip netns exec HOST`). `--teardown` removes everything.

use std::io::Read;
use std::net::Ipv4Addr;

use socketplane_datapath::ovs::{OvsConfig, OvsDatapath};
use socketplane_datapath::{Datapath, DesiredState};

fn usage() -> ! {
    eprintln!(
        "usage: ovs-apply [--ovsdb SOCK] [--bridge NAME] [--iface IF] [--ip ADDR] [--mtu N] \
         [--table NAME] [--teardown] [FILE|-]"
    );
    std::process::exit(2)
}

fn fail(msg: String) -> ! {
    eprintln!("ovs-apply: {msg}");
    std::process::exit(1)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut cfg = OvsConfig::new("br-phy");
    let mut table: Option<String> = None;
    let mut teardown = false;
    let mut file = "-".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--ovsdb" => cfg.ovsdb = val().into(),
            "--bridge" => cfg.bridge = val(),
            "--iface" => cfg.underlay_iface = val(),
            "--ip" => cfg.underlay_ip = Some(val().parse::<Ipv4Addr>().unwrap_or_else(|_| usage())),
            "--mtu" => cfg.mtu = Some(val().parse().unwrap_or_else(|_| usage())),
            "--table" => table = Some(val()),
            "--teardown" => teardown = true,
            "-h" | "--help" => usage(),
            other => file = other.to_string(),
        }
    }
    let mut dp = OvsDatapath::new(cfg)
        .await
        .unwrap_or_else(|e| fail(e.to_string()));
    if let Some(t) = table {
        dp = dp.with_firewall_table(&t);
    }
    if teardown {
        if let Err(e) = dp.teardown().await {
            fail(format!("teardown: {e}"));
        }
        return;
    }
    let mut text = String::new();
    let read = if file == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(&file).map(|t| text = t)
    };
    if let Err(e) = read {
        fail(format!("cannot read {file}: {e}"));
    }
    let desired: DesiredState =
        serde_json::from_str(&text).unwrap_or_else(|e| fail(format!("bad desired state: {e}")));
    let start = std::time::Instant::now();
    match dp.apply(&desired).await {
        Ok(r) => println!(
            "{{\"changes\":{},\"elapsed_ms\":{:.3}}}",
            r.changes,
            start.elapsed().as_secs_f64() * 1000.0
        ),
        Err(e) => fail(e.to_string()),
    }
}
