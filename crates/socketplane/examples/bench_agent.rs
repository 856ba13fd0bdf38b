//! Agent benchmark on a 3-host lab: endpoint attach latency (API call
//! returned, and API call to cross-host connectivity), p50/p99; and the time
//! from a new host's agent start to full connectivity.
//!
//! usage: bench_agent SOCKETPLANE_BIN [ATTACHES]   (as root; see bench/agent.sh)

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use socketplane_api::rest::{ClusterStatus, EndpointInfo};
use socketplane_lab::{Lab, LabConfig};

struct Down(Option<Lab>);
impl Drop for Down {
    fn drop(&mut self) {
        if let Some(lab) = self.0.take() {
            let _ = lab.down();
        }
    }
}

fn http_post(socket: &Path, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(socket).expect("agent socket");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        resp.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

fn ping_once(netns: &str, ip: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", netns, "ping", "-c", "1", "-W", "1", "-q", ip,
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args
        .next()
        .expect("usage: bench_agent SOCKETPLANE_BIN [ATTACHES]");
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let name = format!("bn{:04x}", std::process::id() % 0xffff);
    let mut config = LabConfig::new(&name, 3, &bin);
    config.datapath = "linux".into();
    config.state_dir = std::env::temp_dir().join(format!("sp-bench-{name}"));
    let mut guard = Down(Some(Lab::up(config).expect("lab up")));
    let lab = guard.0.as_mut().expect("lab");
    let sp = |lab: &Lab, host: usize, a: &[&str]| {
        let mut cmd = vec![bin.clone()];
        cmd.extend(a.iter().map(|s| s.to_string()));
        lab.exec(host, &cmd).expect("exec")
    };
    let wait_alive = |lab: &Lab, want: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let out = sp(lab, 0, &["cluster", "status", "-o", "json"]);
            if let Ok(s) = serde_json::from_slice::<ClusterStatus>(&out.stdout) {
                if s.store.healthy && s.nodes.iter().filter(|n| n.alive).count() == want {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("cluster did not reach {want} nodes");
    };
    wait_alive(lab, 3);
    assert!(sp(lab, 0, &["network", "create", "web", "10.2.0.0/16"])
        .status
        .success());

    // A fixed peer on host1 that pings each new endpoint on host2.
    let peer_ns = lab.add_workload(0, "peer").expect("peer");
    let peer = sp(
        lab,
        0,
        &[
            "endpoint", "attach", "--netns", &peer_ns, "-n", "web", "-o", "json",
        ],
    );
    assert!(
        peer.status.success(),
        "{}",
        String::from_utf8_lossy(&peer.stderr)
    );
    let peer_name = format!("sp-{name}-peer");

    let socket = lab.hosts()[1].socket.clone();
    let mut api = Vec::new();
    let mut connect = Vec::new();
    for i in 0..n {
        let netns = lab.add_workload(1, &format!("w{i}")).expect("workload");
        let body = format!(r#"{{"network":"web","netns":"{netns}"}}"#);
        let t0 = Instant::now();
        let (status, resp) = http_post(&socket, "/v1/endpoints", &body);
        let t_api = t0.elapsed();
        assert_eq!(status, 201, "{resp}");
        let ep: EndpointInfo = serde_json::from_str(&resp).expect("endpoint");
        let ip = ep.endpoint.ip.to_string();
        while !ping_once(&peer_name, &ip) {
            if t0.elapsed() > Duration::from_secs(10) {
                panic!("no connectivity to {ip}");
            }
        }
        api.push(t_api);
        connect.push(t0.elapsed());
    }
    api.sort();
    connect.sort();

    // A 4th host: agent start -> joined -> a workload reaches host1's peer.
    let peer_ip = serde_json::from_slice::<EndpointInfo>(&peer.stdout)
        .expect("peer")
        .endpoint
        .ip
        .to_string();
    let t0 = Instant::now();
    let h4 = lab.add_host().expect("add host").index;
    let netns = lab.add_workload(h4, "late").expect("late workload");
    let late = format!("sp-{name}-late");
    loop {
        let out = sp(
            lab,
            h4,
            &["endpoint", "attach", "--netns", &netns, "-n", "web"],
        );
        if out.status.success() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "4th host never became ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    while !ping_once(&late, &peer_ip) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "4th host never reached the peer"
        );
    }
    let join = t0.elapsed();

    println!("SocketPlane agent benchmark (3-host lab, linux datapath, {n} attaches)");
    println!(
        "  attach, API call returned (local datapath plumbed): p50 {}  p99 {}",
        ms(percentile(&api, 0.5)),
        ms(percentile(&api, 0.99))
    );
    println!(
        "  attach, API call to cross-host ping success:        p50 {}  p99 {}",
        ms(percentile(&connect, 0.5)),
        ms(percentile(&connect, 0.99))
    );
    println!("    (includes spawning `ip netns exec ping` per probe, a few ms)");
    println!(
        "  new host: agent start to first cross-host ping:     {}",
        ms(join)
    );
    println!("  goals: attach p99 < 50 ms; join-to-connectivity < 3 s");
}
