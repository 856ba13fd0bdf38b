//! The cluster port as an outsider sees it (issue 12): without credentials
//! nothing answers and nothing changes; a wrong token never becomes a
//! member and its log says why; the secret never crosses the wire; a
//! cluster founded without `--token` admits only hosts given `cluster
//! token`; load before authentication does not stop the members; a removed
//! node's certificate is refused. Hosts are network namespaces of a lab.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use socketplane_api::rest::{ClusterStatus, EndpointInfo};
use socketplane_lab::Discovery;

const MEMBER: &str = "198.18.0.11:6675";

const ROUTES: &[&str] = &[
    "/raft/v1/append",
    "/raft/v1/vote",
    "/raft/v1/snapshot",
    "/raft/v1/join",
    "/raft/v1/leave",
    "/raft/v1/forward",
    "/raft/v1/read_index",
    "/cluster/v1/info",
    "/cluster/v1/enroll",
];

/// Forged bodies: a delete of everything, a join, a leave of node 1, a vote
/// of a huge term, a snapshot header.
fn forged_body(route: &str) -> &'static str {
    match route {
        "/raft/v1/forward" => {
            r#"{"Txn":{"compare":[],"success":[{"DeleteRange":{"key":"/socketplane/v1/","prefix":true}}],"failure":[]}}"#
        }
        "/raft/v1/join" => r#"{"node_id":4242,"addr":"198.18.0.99:6675","cluster":"x"}"#,
        "/raft/v1/leave" => r#"{"node_id":1}"#,
        "/raft/v1/vote" => {
            r#"{"vote":{"leader_id":{"term":999999,"node_id":4242},"committed":false},"last_log_id":null}"#
        }
        _ => "{}",
    }
}

/// curl from namespace `ns`: the HTTP status ("000" when no answer).
fn curl(ns: &str, extra: &[&str], url: &str, data: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args([
            "--max-time",
            "5",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
        ])
        .args(extra)
        .args(["--data-binary", data, url])
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn state(t: &TestLab) -> (String, String, Vec<String>) {
    let nets = t.sp(0, &["network", "list", "-o", "json"]).unwrap();
    let eps = t.sp(0, &["endpoint", "list", "-o", "json"]).unwrap();
    let status: ClusterStatus = t.sp_json(0, &["cluster", "status"]);
    let mut nodes: Vec<String> = status.nodes.iter().map(|n| n.id.clone()).collect();
    nodes.sort();
    (nets, eps, nodes)
}

fn wait_log(t: &TestLab, host: usize, needle: &str) -> bool {
    let log = t.lab().hosts()[host].log.clone();
    wait_until(Duration::from_secs(15), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains(needle))
    })
}

/// Holds `n` idle TCP connections to the member from `ns` until killed.
fn idle_connections(ns: &str, n: usize) -> Child {
    let script = format!(
        "import socket,time\nss=[]\nfor i in range({n}):\n  try:\n    s=socket.create_connection(('198.18.0.11',6675),timeout=2); ss.append(s)\n  except Exception: pass\nprint(len(ss),flush=True)\ntime.sleep(60)\n"
    );
    Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", &script])
        .stdout(Stdio::null())
        .spawn()
        .expect("python3")
}

#[test]
fn an_outsider_without_credentials_gets_nothing() {
    socketplane_testkit::require_privileged!();
    let mut t = TestLab::start_mode('s', 2, Mode::on("linux").join());
    let token = t
        .lab()
        .config()
        .token
        .clone()
        .expect("the lab passes a token");
    t.sp(0, &["network", "create", "secnet", "10.77.0.0/24"])
        .unwrap();
    let _: EndpointInfo = t.workload(0, "sw1", "secnet");
    let before = state(&t);

    // A host with a wrong token: on the underlay, never a member.
    t.lab_mut()
        .set_token(Some("wrong-token-0123456789".into()))
        .unwrap();
    let outsider = t.lab_mut().add_host().expect("add outsider").index;
    let ns = t.lab().hosts()[outsider].netns.clone();
    assert!(
        wait_log(&t, outsider, "could not prove it knows this token"),
        "the wrong-token host's log does not say why it is refused:\n{}",
        t.agent_logs()
    );

    // Every route, plain HTTP and TLS, with forged bodies: no 2xx.
    for route in ROUTES {
        let body = forged_body(route);
        let plain = curl(&ns, &[], &format!("http://{MEMBER}{route}"), body);
        let tls = curl(&ns, &["-k"], &format!("https://{MEMBER}{route}"), body);
        for (how, code) in [("plain", &plain), ("tls", &tls)] {
            assert!(!code.starts_with('2'), "{route} over {how} answered {code}");
        }
    }
    // The member's proof is all the enrollment's first step gives.
    let hello = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "curl",
            "-sk",
            "--max-time",
            "5",
            "-X",
            "POST",
        ])
        .arg(format!("https://{MEMBER}/cluster/v1/enroll/hello"))
        .output()
        .unwrap();
    let hello: serde_json::Value = serde_json::from_slice(&hello.stdout).expect("hello is JSON");
    assert_eq!(hello.as_object().map(|o| o.len()), Some(1), "{hello}");

    // The forged calls changed nothing, and the member counted them.
    let after = state(&t);
    assert_eq!(before, after, "the forged calls changed the cluster state");
    let refused = metric(
        &t,
        0,
        "socketplane_cluster_port_refused_total{reason=\"tls\"}",
    );
    assert!(
        refused >= ROUTES.len() as f64,
        "the member's /metrics counted {refused} refusals of {} uncertified requests",
        ROUTES.len()
    );

    // 2,000 idle connections and a 100 MB body: members still served.
    let mut idle = idle_connections(&ns, 2000);
    let big = std::env::temp_dir().join(format!("sp-big-{}", std::process::id()));
    std::fs::write(&big, vec![b'x'; 100 << 20]).unwrap();
    let big_arg = format!("@{}", big.display());
    let code = curl(
        &ns,
        &["-k"],
        &format!("https://{MEMBER}/raft/v1/snapshot"),
        &big_arg,
    );
    assert!(!code.starts_with('2'), "100 MB body answered {code}");
    let code = curl(
        &ns,
        &["-k"],
        &format!("https://{MEMBER}/cluster/v1/enroll"),
        &big_arg,
    );
    assert!(!code.starts_with('2'), "100 MB enrollment answered {code}");
    let _ = std::fs::remove_file(&big);
    let started = std::time::Instant::now();
    let _: EndpointInfo = t.workload(1, "sw2", "secnet");
    eprintln!("attach under load took {:?}", started.elapsed());
    let _ = idle.kill();
    let _ = idle.wait();
    let eps: Vec<EndpointInfo> =
        serde_json::from_str(&t.sp(0, &["endpoint", "list", "-o", "json"]).unwrap()).unwrap();
    assert_eq!(eps.len(), 2, "{eps:?}");

    // A join with the right token: the capture never has the secret.
    let pcap = t.lab().state_dir().join("join.pcap");
    let switch = t.lab().switch_netns();
    let mut dump = Command::new("ip")
        .args([
            "netns",
            "exec",
            &switch,
            "tcpdump",
            "--immediate-mode",
            "-i",
            "any",
            "-U",
            "-s",
            "0",
            "-w",
        ])
        .arg(&pcap)
        .args(["tcp", "port", "6675"])
        .stderr(Stdio::from(
            std::fs::File::create(pcap.with_extension("log")).expect("tcpdump log"),
        ))
        .spawn()
        .expect("tcpdump");
    // Only once tcpdump says it listens does the join start (a loaded
    // machine takes its time to start it).
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(
            pcap.with_extension("log")
        )
        .is_ok_and(|l| l.contains("listening on"))),
        "tcpdump did not start"
    );
    t.lab_mut().set_token(Some(token.clone())).unwrap();
    let joiner = t.add_host();
    t.wait_for_nodes(0, 3, FORMATION);
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill")
        .args(["-INT", &dump.id().to_string()])
        .status();
    let _ = dump.wait();
    let captured = std::fs::read(&pcap).expect("the capture");
    let capture_log = std::fs::read_to_string(pcap.with_extension("log")).unwrap_or_default();
    // The lab removes only what it made in its state dir.
    for f in [pcap.clone(), pcap.with_extension("log")] {
        std::fs::remove_file(&f).expect("remove the capture files");
    }
    assert!(
        captured.len() > 1000,
        "the capture is empty ({} bytes): {}",
        captured.len(),
        capture_log
    );
    assert!(
        !captured.windows(token.len()).any(|w| w == token.as_bytes()),
        "the secret crossed the wire"
    );

    // A removed node's certificate is refused.
    let dir = t.lab().hosts()[joiner].data_dir.join("trust");
    let cert = |t: &TestLab| {
        let ns = t.lab().hosts()[joiner].netns.clone();
        curl(
            &ns,
            &[
                "-k",
                "--cert",
                &dir.join("node.pem").display().to_string(),
                "--key",
                &dir.join("node-key.pem").display().to_string(),
            ],
            &format!("https://{MEMBER}/cluster/v1/info"),
            "",
        )
    };
    assert_eq!(cert(&t), "405", "a member's certificate reaches the routes");
    t.lab_mut()
        .stop_agent(joiner, socketplane_lab::Signal::SIGKILL)
        .unwrap();
    let name = t.lab().hosts()[joiner].name.clone();
    assert!(
        wait_until(Duration::from_secs(20), || t
            .sp(0, &["cluster", "remove", &name])
            .is_ok()),
        "cluster remove {name} failed:\n{}",
        t.agent_logs()
    );
    assert!(
        wait_until(Duration::from_secs(5), || cert(&t) == "403"),
        "a removed node's certificate still gets in: {}",
        cert(&t)
    );
}

#[test]
fn a_cluster_founded_without_token_admits_only_its_token() {
    socketplane_testkit::require_privileged!();
    let name = unique_name('g');
    let mut config = socketplane_lab::LabConfig::new(&name, 1, BIN);
    config.token = None;
    config.discovery = Discovery::Join;
    config.agent_args = test_agent_args(LEASE_TTL);
    config.state_dir = std::env::temp_dir().join(format!("sp-lab-{name}"));
    let mut t = TestLab {
        lab: Some(socketplane_lab::Lab::up(config).expect("lab up")),
    };
    t.wait_for_nodes(0, 1, FORMATION);
    let token = t.sp(0, &["cluster", "token"]).unwrap().trim().to_string();
    assert!(token.starts_with("SPT1-"), "{token}");
    let secret_file = t.lab().hosts()[0].data_dir.join("trust/secret");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&secret_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let info = t.sp(0, &["info"]).unwrap();
    assert!(!info.contains("OPEN CLUSTER"), "{info}");

    // Without the token: refused, and the log says so.
    let stranger = t.lab_mut().add_host().expect("add host").index;
    assert!(
        wait_log(&t, stranger, "no cluster token"),
        "{}",
        t.agent_logs()
    );
    assert_eq!(t.status(0).unwrap().nodes.len(), 1);
    t.lab_mut()
        .stop_agent(stranger, socketplane_lab::Signal::SIGTERM)
        .unwrap();

    // With `cluster token`'s output: joins.
    t.lab_mut().set_token(Some(token)).unwrap();
    t.add_host();
    t.wait_for_nodes(0, 2, FORMATION);
}
