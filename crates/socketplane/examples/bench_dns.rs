//! DNS benchmark on a 1-host lab: queries per second and p50/p99 latency
//! from a workload to its gateway, for a cluster name (answered by the
//! agent) and a forwarded name (answered by a small upstream in the lab's
//! outside namespace), side by side in one run, with Debian's `dnsperf`.
//! The agent runs with `--dns-rate-limit 0`: one workload is the load.
//!
//! usage: bench_dns SOCKETPLANE_BIN [SECONDS]   (as root; see bench/dns.sh)

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use socketplane_api::rest::EndpointInfo;
use socketplane_lab::{Lab, LabConfig, OUTSIDE_REMOTE_IP};

const UPSTREAM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dns/upstream.py");

struct Down(Option<Lab>, Option<Child>);
impl Drop for Down {
    fn drop(&mut self) {
        if let Some(mut c) = self.1.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(lab) = self.0.take() {
            let _ = lab.down();
        }
    }
}

/// One dnsperf run: (qps, p50, p99, lost) with latencies from `-v`.
fn dnsperf(
    lab: &Lab,
    gw: &str,
    name: &str,
    secs: u64,
    max_qps: Option<u32>,
) -> (f64, f64, f64, String) {
    let file = std::env::temp_dir().join(format!("bench-dns-{}.txt", std::process::id()));
    std::fs::write(&file, format!("{name} A\n")).expect("query file");
    let mut argv: Vec<String> = ["dnsperf", "-s", gw, "-d"].map(String::from).to_vec();
    argv.push(file.display().to_string());
    argv.extend([
        "-l".into(),
        secs.to_string(),
        "-t".into(),
        "2".into(),
        "-v".into(),
    ]);
    if let Some(q) = max_qps {
        argv.extend(["-Q".into(), q.to_string()]);
    }
    let out = lab.workload_exec("client", &argv).expect("dnsperf");
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&out.stdout);
    let qps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries per second:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let lost = text
        .lines()
        .find(|l| l.trim().starts_with("Queries lost:"))
        .map(|l| l.trim().to_string())
        .unwrap_or_default();
    let mut lat: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with('>'))
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .map(|s| s * 1000.0)
            .unwrap_or(f64::NAN)
    };
    (qps, pct(0.50), pct(0.99), lost)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args
        .get(1)
        .expect("usage: bench_dns SOCKETPLANE_BIN [SECONDS]");
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let name = format!("bd{}", std::process::id() % 10000);
    let mut config = LabConfig::new(&name, 1, bin);
    config.datapath = "linux".into();
    config.agent_args = vec![
        "--dns-upstream".into(),
        OUTSIDE_REMOTE_IP.to_string(),
        "--dns-rate-limit".into(),
        "0".into(),
    ];
    config.state_dir = std::env::temp_dir().join(format!("sp-lab-{name}"));
    let mut down = Down(Some(Lab::up(config).expect("lab up")), None);
    let lab = down.0.as_mut().expect("lab");
    let upstream = Command::new("ip")
        .args(["netns", "exec", &lab.outside_netns(), "python3", UPSTREAM])
        .args([
            &OUTSIDE_REMOTE_IP.to_string(),
            "53",
            "outside.example",
            "203.0.113.7",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("upstream");
    down.1 = Some(upstream);
    let lab = down.0.as_mut().expect("lab");
    let sp = |lab: &Lab, a: &[&str]| {
        let mut argv = vec![bin.to_string()];
        argv.extend(a.iter().map(|s| s.to_string()));
        argv.extend(["-o".into(), "json".into()]);
        lab.exec(0, &argv).expect("socketplane")
    };
    let mut ready = false;
    for _ in 0..100 {
        if sp(lab, &["network", "create", "bench", "10.77.0.0/24"])
            .status
            .success()
        {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(ready, "network create");
    let netns = lab.add_workload(0, "client").expect("workload");
    let out = sp(
        lab,
        &[
            "endpoint", "attach", "--netns", &netns, "-n", "bench", "--name", "web",
        ],
    );
    let ep: EndpointInfo = serde_json::from_slice(&out.stdout).expect("attach");
    let gw = ep.gateway.to_string();
    // Warm up: the name answers and the upstream is there.
    std::thread::sleep(Duration::from_millis(500));
    let lab: &Lab = lab;
    println!("DNS from a workload to its gateway {gw} (dnsperf, {secs} s per run, one source)");
    println!(
        "{:<34} {:>10} {:>9} {:>9}  lost",
        "run", "qps", "p50 ms", "p99 ms"
    );
    let runs: [(&str, &str, Option<u32>); 6] = [
        ("cluster name, unthrottled", "web.bench", None),
        ("forwarded name, unthrottled", "outside.example", None),
        ("cluster name at 20000 qps", "web", Some(20_000)),
        (
            "forwarded name at 20000 qps",
            "outside.example",
            Some(20_000),
        ),
        ("cluster name at 5000 qps", "web", Some(5_000)),
        ("forwarded name at 5000 qps", "outside.example", Some(5_000)),
    ];
    for (label, qname, q) in runs {
        let (qps, p50, p99, lost) = dnsperf(lab, &gw, qname, secs, q);
        println!("{label:<34} {qps:>10.0} {p50:>9.3} {p99:>9.3}  {lost}");
    }
}
