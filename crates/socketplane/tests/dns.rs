//! DNS on every network's gateway, across three lab hosts with real agents,
//! asked by real resolvers in workload namespaces (Debian's `dig` and
//! busybox `nslookup`); names outside the cluster go to a tiny upstream
//! resolver in the lab's outside namespace. Needs root, bind9-dnsutils,
//! busybox and python3 (scripts/test.sh installs them).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    metric, test_agent_args, unique_name, wait_until, TestLab, BIN, FORMATION, LEASE_TTL,
};
use socketplane_api::rest::EndpointInfo;
use socketplane_lab::{Lab, LabConfig, OUTSIDE_REMOTE_IP};

const UPSTREAM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dns/upstream.py");
const ABUSE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dns/abuse.py");
/// What the upstream answers for the one name it knows.
const OUTSIDE_NAME: &str = "outside.example";
const OUTSIDE_ANSWER: &str = "203.0.113.7";

/// A process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The upstream resolver, in the outside namespace on OUTSIDE_REMOTE_IP.
fn start_upstream(lab: &Lab) -> Killed {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.outside_netns(), "python3", UPSTREAM])
        .args([
            &OUTSIDE_REMOTE_IP.to_string(),
            "53",
            OUTSIDE_NAME,
            OUTSIDE_ANSWER,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the upstream resolver");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    Killed(child)
}

struct Dns {
    t: TestLab,
}

/// `dig` in a workload: (status, answers).
fn dig(lab: &Lab, workload: &str, args: &[&str]) -> (String, Vec<String>, Duration) {
    let mut argv: Vec<String> = [
        "dig",
        "+tries=1",
        "+time=5",
        "+noall",
        "+answer",
        "+comments",
    ]
    .map(String::from)
    .to_vec();
    argv.extend(args.iter().map(|a| a.to_string()));
    let started = Instant::now();
    let out = lab.workload_exec(workload, &argv).expect("dig");
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("NONE")
        .to_string();
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().last().map(String::from))
        .collect();
    (status, answers, took)
}

/// `dig` in a workload: its whole output (with the header's flags).
fn dig_text(lab: &Lab, workload: &str, args: &[&str]) -> String {
    let mut argv: Vec<String> = ["dig", "+tries=1", "+time=5"].map(String::from).to_vec();
    argv.extend(args.iter().map(|a| a.to_string()));
    let out = lab.workload_exec(workload, &argv).expect("dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Dns {
    fn lab(&self) -> &Lab {
        self.t.lab()
    }

    /// Attaches a workload namespace `ns` on `host` to `network` as `name`
    /// and points its resolver at the gateway.
    fn attach(&mut self, host: usize, ns: &str, network: &str, name: &str) -> EndpointInfo {
        let netns = self.t.lab_mut().add_workload(host, ns).expect("workload");
        let ep: EndpointInfo = self.t.sp_json(
            host,
            &[
                "endpoint", "attach", "--netns", &netns, "-n", network, "--name", name,
            ],
        );
        self.lab()
            .set_workload_resolver(ns, ep.gateway, network)
            .expect("resolv.conf");
        ep
    }

    fn ips(&self, workload: &str, name: &str) -> Vec<String> {
        let mut ips = dig(self.lab(), workload, &[name]).1;
        ips.sort();
        ips
    }
}

#[test]
fn dns_names_across_hosts() {
    socketplane_testkit::require_privileged!();
    let name = unique_name('n');
    let mut config = LabConfig::new(&name, 3, BIN);
    config.datapath = "linux".into();
    config.agent_args = test_agent_args(LEASE_TTL);
    config
        .agent_args
        .extend(["--dns-upstream".into(), OUTSIDE_REMOTE_IP.to_string()]);
    config.state_dir = std::env::temp_dir().join(format!("sp-lab-{name}"));
    let t = TestLab::new(Lab::up(config).expect("lab up"));
    t.wait_for_nodes(0, 3, FORMATION);
    let mut upstream = Some(start_upstream(t.lab()));
    let mut d = Dns { t };
    d.t.sp(0, &["network", "create", "blue", "10.53.0.0/24"])
        .expect("blue");
    d.t.sp(0, &["network", "create", "red", "10.54.0.0/24"])
        .expect("red");
    let alpha = d.attach(0, "alpha", "blue", "alpha");
    let beta = d.attach(1, "beta", "blue", "beta");
    let gamma = d.attach(2, "gamma", "blue", "gamma");
    let rose = d.attach(0, "rose", "red", "rose");
    let (a_ip, g_ip) = (alpha.endpoint.ip.to_string(), gamma.endpoint.ip.to_string());

    // Host 1 and host 3 resolve each other by NAME and NAME.NETWORK.
    assert!(
        wait_until(Duration::from_secs(5), || d.ips("alpha", "gamma")
            == [g_ip.as_str()]),
        "alpha does not resolve gamma: {:?}\n{}",
        dig(d.lab(), "alpha", &["gamma"]),
        d.t.agent_logs()
    );
    assert_eq!(d.ips("alpha", "gamma.blue"), [g_ip.as_str()]);
    assert_eq!(d.ips("gamma", "alpha"), [a_ip.as_str()]);
    assert_eq!(d.ips("gamma", "ALPHA.blue."), [a_ip.as_str()]);
    // Over TCP too (the fencing lets TCP 53 to the own gateway through).
    assert_eq!(
        dig(d.lab(), "gamma", &["+tcp", "alpha.blue"]).1,
        [a_ip.as_str()]
    );
    // A second resolver: busybox nslookup (through resolv.conf's search).
    let out = d
        .lab()
        .workload_exec("alpha", &["busybox", "nslookup", "gamma"].map(String::from))
        .expect("nslookup");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&g_ip), "busybox nslookup gamma: {text}");
    // AAAA: an empty answer, no failure.
    let (status, answers, _) = dig(d.lab(), "alpha", &["gamma", "AAAA"]);
    assert_eq!((status.as_str(), answers.len()), ("NOERROR", 0));
    // Unknown names in the zone: NXDOMAIN. Another network's names: never.
    assert_eq!(dig(d.lab(), "alpha", &["nobody.blue"]).0, "NXDOMAIN");
    let (status, answers, _) = dig(d.lab(), "alpha", &["rose"]);
    assert_eq!((status.as_str(), answers.len()), ("NXDOMAIN", 0));
    assert!(dig(d.lab(), "alpha", &["rose.red"]).1.is_empty());
    // NAME.OTHER-NETWORK is the cluster's name: NXDOMAIN from the gateway
    // itself (authoritative), never sent to the upstream.
    let text = dig_text(d.lab(), "alpha", &["rose.red"]);
    assert!(
        text.contains("status: NXDOMAIN") && text.contains(" aa"),
        "rose.red from blue must get the gateway's own NXDOMAIN:\n{text}"
    );
    assert!(dig(d.lab(), "rose", &["alpha"]).1.is_empty());
    assert_eq!(d.ips("rose", "rose"), [rose.endpoint.ip.to_string()]);
    // The gateway of another network does not answer a workload at all.
    let (status, _, _) = dig(
        d.lab(),
        "alpha",
        &["+time=1", &format!("@{}", rose.gateway), "rose"],
    );
    assert_eq!(status, "NONE", "red's gateway answered a blue workload");
    // Outside names go to the upstream.
    assert_eq!(d.ips("alpha", OUTSIDE_NAME), [OUTSIDE_ANSWER]);
    assert_eq!(dig(d.lab(), "beta", &["elsewhere.example"]).0, "NXDOMAIN");
    // A query is not a log line (at 20k qps that was the server's cost).
    for h in d.lab().hosts() {
        let log = std::fs::read_to_string(&h.log).expect("agent log");
        let per_query = log.lines().filter(|l| l.contains("hickory")).count();
        assert_eq!(
            per_query, 0,
            "{}: DNS library lines in the agent log",
            h.name
        );
    }
    // The agents count what their queries got.
    for result in ["answered", "nxdomain"] {
        let sample = format!("socketplane_dns_queries_total{{result=\"{result}\"}}");
        let total: f64 = (0..3).map(|h| metric(&d.t, h, &sample)).sum();
        assert!(total > 0.0, "no DNS query counted as {result} on /metrics");
    }

    // A second endpoint with the same name: both addresses.
    let twin = d.attach(1, "twin", "blue", "gamma");
    let mut both = vec![g_ip.clone(), twin.endpoint.ip.to_string()];
    both.sort();
    assert!(
        wait_until(Duration::from_secs(1), || d.ips("alpha", "gamma") == both),
        "both gammas: {:?}",
        d.ips("alpha", "gamma")
    );
    // After detach, the name is gone within 1 s on every host.
    let netns = d.lab().workload("twin").unwrap().netns_path();
    d.t.sp(
        1,
        &[
            "endpoint",
            "detach",
            "--netns",
            &netns.to_string_lossy(),
            "-n",
            "blue",
        ],
    )
    .expect("detach");
    let detached = Instant::now();
    for w in ["alpha", "beta", "gamma"] {
        assert!(
            wait_until(Duration::from_secs(1), || d.ips(w, "gamma")
                == [g_ip.as_str()]),
            "{w} still sees the detached gamma"
        );
    }
    let gone = detached.elapsed();
    eprintln!("detached name gone on all three hosts after {gone:?}");
    assert!(gone < Duration::from_secs(1), "{gone:?}");

    // Upstream down: SERVFAIL within the agent's budget (2 s), before the
    // client's own 5 s timeout; cluster names are still answered.
    drop(upstream.take());
    let (status, _, took) = dig(d.lab(), "alpha", &[OUTSIDE_NAME]);
    assert_eq!(status, "SERVFAIL", "upstream down");
    assert!(took < Duration::from_secs(4), "SERVFAIL took {took:?}");
    let (status, answers, took) = dig(d.lab(), "alpha", &["gamma"]);
    assert_eq!((status.as_str(), answers), ("NOERROR", vec![g_ip.clone()]));
    assert!(took < Duration::from_millis(500), "{took:?}");

    // Bad input: malformed and oversized packets, then a flood from one
    // workload while another asks and the agent's local API answers.
    let abuse = |w: &str, args: &[&str]| {
        let mut argv = vec![
            "python3".to_string(),
            ABUSE.to_string(),
            alpha.gateway.to_string(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        d.lab().workload_exec(w, &argv).expect("abuse")
    };
    let out = abuse("alpha", &["junk"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(d.ips("alpha", "gamma"), [g_ip.as_str()], "after junk");
    let flood = {
        let ns = d.lab().workload("alpha").unwrap().netns.clone();
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "python3",
                ABUSE,
                &alpha.gateway.to_string(),
                "flood",
                "3",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("flood")
    };
    std::thread::sleep(Duration::from_millis(500));
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let (status, answers, took) = dig(d.lab(), "gamma", &["alpha"]);
        assert_eq!(
            (status.as_str(), answers),
            ("NOERROR", vec![a_ip.clone()]),
            "during the flood"
        );
        slowest = slowest.max(took);
        let started = Instant::now();
        d.t.sp(0, &["endpoint", "list"])
            .expect("local API during the flood");
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("slowest answer during the flood: {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    let out = flood.wait_with_output_ref();
    eprintln!("flood: {out} queries sent in 3 s");
    assert!(
        // One dig dropped while the bucket refills waits out its own 5 s.
        wait_until(Duration::from_secs(12), || d.ips("alpha", "gamma")
            == [g_ip.as_str()]),
        "alpha's own queries work again after its flood"
    );
    for host in 0..3 {
        assert!(d.lab().agent_running(host), "agent {host} died");
    }
    let _ = beta;
}

trait WaitRef {
    fn wait_with_output_ref(self) -> String;
}

impl WaitRef for Child {
    fn wait_with_output_ref(self) -> String {
        let out = self.wait_with_output().expect("wait");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// DNS on the OVS datapath (userspace `netdev`): the gateway's answers
/// reach workloads through OVS, across two hosts, over UDP and TCP.
#[test]
fn dns_names_on_the_ovs_datapath() {
    socketplane_testkit::require_privileged!();
    let name = unique_name('o');
    let mut config = LabConfig::new(&name, 2, BIN);
    config.datapath = "ovs".into();
    config.agent_args = test_agent_args(LEASE_TTL);
    config.state_dir = std::env::temp_dir().join(format!("sp-lab-{name}"));
    let t = TestLab::new(Lab::up(config).expect("lab up"));
    t.wait_for_nodes(0, 2, FORMATION);
    let mut d = Dns { t };
    d.t.sp(0, &["network", "create", "green", "10.55.0.0/24"])
        .expect("green");
    d.t.sp(0, &["network", "create", "plum", "10.56.0.0/24"])
        .expect("plum");
    let one = d.attach(0, "ovs-one", "green", "one");
    let two = d.attach(1, "ovs-two", "green", "two");
    d.attach(1, "ovs-plum", "plum", "violet");
    for w in ["ovs-one", "ovs-two"] {
        // TCP through the netdev datapath needs full checksums.
        let ns = d.lab().workload(w).unwrap().netns.clone();
        socketplane_testkit::underlay::full_checksums(&ns, "eth0").expect("ethtool");
    }
    let (one_ip, two_ip) = (one.endpoint.ip.to_string(), two.endpoint.ip.to_string());
    assert!(
        wait_until(Duration::from_secs(5), || d.ips("ovs-one", "two")
            == [two_ip.as_str()]),
        "ovs-one does not resolve two: {:?}\n{}",
        dig(d.lab(), "ovs-one", &["two"]),
        d.t.agent_logs()
    );
    assert_eq!(d.ips("ovs-two", "one.green"), [one_ip.as_str()]);
    assert_eq!(
        dig(d.lab(), "ovs-two", &["+tcp", "one.green"]).1,
        [one_ip.as_str()]
    );
    assert_eq!(dig(d.lab(), "ovs-one", &["nobody"]).0, "NXDOMAIN");
    assert!(dig(d.lab(), "ovs-one", &["violet.plum"]).1.is_empty());
    assert!(dig(d.lab(), "ovs-plum", &["one"]).1.is_empty());
}
