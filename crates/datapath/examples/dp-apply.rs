//! Applies a `DesiredState` (JSON) with the Linux datapath in the current
//! network namespace and prints the `ApplyReport` as JSON.
//!
//! Usage: `dp-apply [--iface IF] [--ip ADDR] [--mtu N] [--table NAME] [--teardown] [FILE|-]`
//! (run e.g. under `ip netns exec HOST`). `--teardown` removes everything.

use std::io::Read;
use std::net::Ipv4Addr;

use socketplane_datapath::linux::{LinuxConfig, LinuxDatapath};
use socketplane_datapath::{Datapath, DesiredState};

fn usage() -> ! {
    eprintln!(
        "usage: dp-apply [--iface IF] [--ip ADDR] [--mtu N] [--table NAME] [--teardown] [FILE|-]"
    );
    std::process::exit(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut iface = "eth0".to_string();
    let mut ip: Option<Ipv4Addr> = None;
    let mut mtu: Option<u32> = None;
    let mut table: Option<String> = None;
    let mut teardown = false;
    let mut file = "-".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--iface" => iface = args.next().unwrap_or_else(|| usage()),
            "--ip" => {
                ip = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| usage()),
                )
            }
            "--mtu" => {
                mtu = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| usage()),
                )
            }
            "--table" => table = Some(args.next().unwrap_or_else(|| usage())),
            "--teardown" => teardown = true,
            "-h" | "--help" => usage(),
            other => file = other.to_string(),
        }
    }
    let cfg = LinuxConfig {
        underlay_iface: iface,
        underlay_ip: ip,
        mtu,
    };
    let mut dp = match LinuxDatapath::new(cfg).await {
        Ok(dp) => dp,
        Err(e) => {
            eprintln!("dp-apply: {e}");
            std::process::exit(1)
        }
    };
    if let Some(t) = table {
        dp = dp.with_firewall_table(&t);
    }
    if teardown {
        if let Err(e) = dp.teardown().await {
            eprintln!("dp-apply: teardown: {e}");
            std::process::exit(1)
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
        eprintln!("dp-apply: cannot read {file}: {e}");
        std::process::exit(1)
    }
    let desired: DesiredState = match serde_json::from_str(&text) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("dp-apply: bad desired state: {e}");
            std::process::exit(1)
        }
    };
    let start = std::time::Instant::now();
    match dp.apply(&desired).await {
        Ok(r) => println!(
            "{{\"changes\":{},\"elapsed_ms\":{:.3}}}",
            r.changes,
            start.elapsed().as_secs_f64() * 1000.0
        ),
        Err(e) => {
            eprintln!("dp-apply: {e}");
            std::process::exit(1)
        }
    }
}
