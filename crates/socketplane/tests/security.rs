//! The cluster port as an outsider sees it (issue 12): without credentials
//! nothing answers and nothing changes; a wrong token never becomes a
//! member and its log says why; the secret never crosses the wire; a
//! cluster founded without `--token` admits only hosts given `cluster
//! token`; load before authentication does not stop the members; a removed
//! node's certificate is refused, and so are the certificates it mints
//! with the CA key it kept (the cluster admits only the certificates it
//! issued). Hosts are network namespaces of a lab.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use socketplane_api::rest::{ClusterStatus, EndpointInfo};
use socketplane_lab::{Discovery, LabConfig};

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
    "/cluster/v1/enroll/hello",
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
    for (route, what) in [
        ("/raft/v1/snapshot", "body"),
        ("/cluster/v1/enroll", "enrollment"),
    ] {
        let code = curl(&ns, &["-k"], &format!("https://{MEMBER}{route}"), &big_arg);
        assert!(!code.starts_with('2'), "100 MB {what} answered {code}");
    }
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

/// The node id of the host named `name`, as `cluster status` shows it.
fn node_id(t: &TestLab, name: &str) -> String {
    let status: ClusterStatus = t.sp_json(0, &["cluster", "status"]);
    status
        .nodes
        .iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name} in {status:?}"))
        .id
        .clone()
}

/// curl arguments that present the certificate and key in `dir`.
fn cert_args(dir: &std::path::Path, cert: &str, key: &str) -> Vec<String> {
    vec![
        "-k".into(),
        "--cert".into(),
        dir.join(cert).display().to_string(),
        "--key".into(),
        dir.join(key).display().to_string(),
    ]
}

#[test]
fn a_removed_node_cannot_mint_itself_back_in_with_the_ca_key_it_kept() {
    socketplane_testkit::require_privileged!();
    let mut t = joined_lab('m', 3, |_| {});
    t.sp(0, &["network", "create", "mintnet", "10.79.0.0/24"])
        .unwrap();
    let _: EndpointInfo = t.workload(1, "mw1", "mintnet");
    let hosts = t.lab().hosts().to_vec();
    let (member, removed) = (&hosts[1], &hosts[2]);
    let member_id = node_id(&t, &member.name);
    let removed_id = node_id(&t, &removed.name);
    let members = ["198.18.0.11:6675", "198.18.0.12:6675"];

    // host3 is removed; it keeps its trust files (the CA key with them).
    let trust = removed.data_dir.join("trust");
    let own = cert_args(&trust, "node.pem", "node-key.pem");
    let own: Vec<&str> = own.iter().map(String::as_str).collect();
    let info = |args: &[&str], at: &str| {
        curl(
            &removed.netns,
            args,
            &format!("https://{at}/cluster/v1/info"),
            "",
        )
    };
    assert_eq!(
        info(&own, MEMBER),
        "405",
        "a member's certificate is refused"
    );
    t.lab_mut()
        .stop_agent(2, socketplane_lab::Signal::SIGKILL)
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || t
            .sp(0, &["cluster", "remove", &removed.name])
            .is_ok()),
        "cluster remove failed:\n{}",
        t.agent_logs()
    );
    assert!(
        wait_until(Duration::from_secs(5), || info(&own, MEMBER) == "403"),
        "the removed node's own certificate still gets in"
    );
    let before = state(&t);

    // It mints certificates from the CA key: under a new node id, and
    // under the id of a live member.
    let read = |f: &str| std::fs::read_to_string(trust.join(f)).expect("the kept trust files");
    let ca = socketplane_trust::ClusterCa::from_pem(&read("ca.pem"), &read("ca-key.pem"))
        .expect("the kept CA");
    let forged = tempfile::tempdir().expect("a temp dir");
    for (tag, id) in [("new", "00000000deadbeef"), ("live", member_id.as_str())] {
        let key = socketplane_trust::NodeKey::generate().unwrap();
        let cert = ca.issue(id, &key.request(id).unwrap()).unwrap();
        std::fs::write(forged.path().join(format!("{tag}.pem")), cert).unwrap();
        std::fs::write(forged.path().join(format!("{tag}-key.pem")), &key.key_pem).unwrap();
    }
    // A forged write: undo the removal, and plant a key.
    let removed_key = format!("/socketplane/v1/removed/{removed_id}");
    let write = format!(
        r#"{{"Txn":{{"compares":[],"ops":[{{"Delete":{{"key":"{removed_key}"}}}},{{"Put":{{"key":"/socketplane/v1/forged","value":[49],"lease":null}}}}]}}}}"#
    );
    let mut got_in = Vec::new();
    for tag in ["new", "live"] {
        let args = cert_args(
            forged.path(),
            &format!("{tag}.pem"),
            &format!("{tag}-key.pem"),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        for at in members {
            for route in ROUTES {
                let code = curl(
                    &removed.netns,
                    &args,
                    &format!("https://{at}{route}"),
                    match *route {
                        "/raft/v1/forward" => &write,
                        _ => forged_body(route),
                    },
                );
                // The enrollment routes are open to anyone (no 2xx
                // without the secret); every other route refuses.
                let refused = match route.starts_with("/cluster/v1/enroll") {
                    true => !code.starts_with('2'),
                    false => code == "403",
                };
                if !refused {
                    got_in.push(format!("{tag} id: {at}{route} answered {code}"));
                }
            }
        }
    }
    assert!(got_in.is_empty(), "minted certificates got in: {got_in:#?}");
    assert_eq!(
        state(&t),
        before,
        "the forged calls changed the cluster state"
    );
    let dump = store_dump(&t.lab().hosts()[0].socket);
    assert!(
        dump.contains_key(&removed_key) && !dump.contains_key("/socketplane/v1/forged"),
        "a forged write went through: {:?}",
        dump.keys()
    );
    let refused = metric(
        &t,
        0,
        "socketplane_cluster_port_refused_total{reason=\"not_issued\"}",
    );
    assert!(
        refused >= 16.0,
        "host1 counted {refused} minted-certificate refusals"
    );

    // The live member's own certificate still works, and a new host joins
    // (its enrolling member records its certificate) and writes.
    let theirs = cert_args(&member.data_dir.join("trust"), "node.pem", "node-key.pem");
    let theirs: Vec<&str> = theirs.iter().map(String::as_str).collect();
    assert_eq!(
        info(&theirs, MEMBER),
        "405",
        "the live member's certificate"
    );
    let nodes = before.2.len();
    let joiner = t.add_host();
    t.wait_for_nodes(0, nodes + 1, FORMATION);
    t.sp(joiner, &["network", "create", "mintnet2", "10.79.1.0/24"])
        .expect("the new host writes through the leader");
    let dump = store_dump(&t.lab().hosts()[0].socket);
    let joiner_id = node_id(&t, &t.lab().hosts()[joiner].name);
    assert!(
        dump.contains_key(&format!("/socketplane/v1/trust/issued/{joiner_id}")),
        "{:?}",
        dump.keys()
    );
}

/// Drops a host's traffic with one peer address (a table of its own in the
/// host's namespace); healed when dropped.
struct CutFrom {
    netns: String,
}

const CUT_TABLE: &str = "sp_trust_cut";

impl CutFrom {
    fn new(netns: &str, peer: std::net::Ipv4Addr) -> CutFrom {
        let rules = format!(
            "table inet {CUT_TABLE} {{\n chain in {{ type filter hook input priority -400; ip saddr {peer} drop; }}\n chain out {{ type filter hook output priority -400; ip daddr {peer} drop; }}\n}}\n"
        );
        let file = std::env::temp_dir().join(format!("{netns}-trust-cut.nft"));
        std::fs::write(&file, rules).expect("write nft rules");
        let done = socketplane_testkit::netns::exec(netns, &["nft", "-f", &file.to_string_lossy()]);
        let _ = std::fs::remove_file(&file);
        done.expect("cut the host off its peer");
        CutFrom {
            netns: netns.to_string(),
        }
    }
}

impl Drop for CutFrom {
    fn drop(&mut self) {
        let _ = socketplane_testkit::netns::exec(
            &self.netns,
            &["nft", "delete", "table", "inet", CUT_TABLE],
        );
    }
}

/// A member whose state is behind (cut off from the leader while a host
/// joined) still admits the new host's certificate once another member
/// confirms the cluster issued it, and still refuses a minted one.
#[test]
fn a_member_behind_on_the_allowlist_admits_a_new_host_that_others_confirm() {
    socketplane_testkit::require_privileged!();
    let mut t = joined_lab('c', 3, |_| {});
    let status: ClusterStatus = t.sp_json(0, &["cluster", "status"]);
    let leader = status
        .nodes
        .iter()
        .find(|n| n.role == "leader")
        .unwrap_or_else(|| panic!("no leader: {status:?}"))
        .addr;
    let hosts = t.lab().hosts().to_vec();
    // The member that falls behind: a voter that does not lead.
    let behind = hosts
        .iter()
        .rev()
        .find(|h| h.underlay_ip != leader)
        .expect("a member that does not lead")
        .clone();
    // It knows the other members before it falls behind: those are whom it
    // can ask.
    t.wait_for_nodes(behind.index, 3, FORMATION);
    let cut = CutFrom::new(&behind.netns, leader);
    let joiner = t.add_host();
    t.wait_for_nodes(0, 4, FORMATION);
    let joined = t.lab().hosts()[joiner].clone();
    let trust = joined.data_dir.join("trust");
    let at = format!("https://{}:6675/cluster/v1/info", behind.underlay_ip);
    let info = |cert: &str, key: &str| {
        let args = cert_args(&trust, cert, key);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&joined.netns, &args, &at, "")
    };
    assert!(
        wait_until(Duration::from_secs(20), || info("node.pem", "node-key.pem")
            == "405"),
        "the member behind never admitted the new host: {}\n{}",
        info("node.pem", "node-key.pem"),
        t.agent_logs()
    );
    assert!(
        wait_log(&t, behind.index, "A member confirmed a certificate"),
        "the member behind did not say who confirmed it:\n{}",
        t.agent_logs()
    );
    // A certificate minted with the CA key is not confirmed.
    let read = |f: &str| std::fs::read_to_string(trust.join(f)).expect("trust files");
    let ca = socketplane_trust::ClusterCa::from_pem(&read("ca.pem"), &read("ca-key.pem"))
        .expect("the CA");
    let key = socketplane_trust::NodeKey::generate().unwrap();
    let id = "00000000feedbeef";
    let forged = tempfile::tempdir().expect("a temp dir");
    std::fs::write(
        forged.path().join("f.pem"),
        ca.issue(id, &key.request(id).unwrap()).unwrap(),
    )
    .unwrap();
    std::fs::write(forged.path().join("f-key.pem"), &key.key_pem).unwrap();
    let args = cert_args(forged.path(), "f.pem", "f-key.pem");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for _ in 0..3 {
        assert_eq!(
            curl(&joined.netns, &args, &at, ""),
            "403",
            "a minted certificate got in"
        );
    }
    drop(cut);
}

/// A lab of `hosts` hosts that join the first one by address (no mDNS),
/// its config changed by `adjust`, once the hosts formed a cluster.
fn joined_lab(tag: char, hosts: usize, adjust: impl FnOnce(&mut LabConfig)) -> TestLab {
    let name = unique_name(tag);
    let mut config = LabConfig::new(&name, hosts, BIN);
    config.discovery = Discovery::Join;
    config.agent_args = test_agent_args(LEASE_TTL);
    config.state_dir = std::env::temp_dir().join(format!("sp-lab-{name}"));
    adjust(&mut config);
    let t = TestLab::new(socketplane_lab::Lab::up(config).expect("lab up"));
    t.wait_for_nodes(0, hosts, FORMATION);
    t
}

#[test]
fn a_cluster_founded_without_token_admits_only_its_token() {
    socketplane_testkit::require_privileged!();
    let mut t = joined_lab('g', 1, |c| {
        c.token = None;
    });
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

/// One enrollment hello as an attacker on the underlay sends it: TLS to the
/// member (it pins nothing), a PAKE message made with `guess`, and what
/// comes back, with the session's exported keying material.
struct Hello {
    status: u16,
    body: Vec<u8>,
    ekm: [u8; 32],
    /// The attacker's own PAKE state for `guess`.
    state: spake2::Spake2<spake2::Ed25519Group>,
}

/// The enrollment identities and labels, as the attacker reads them in the
/// source.
const JOINER_ID: &[u8] = b"socketplane joiner\0";
const MEMBER_ID: &[u8] = b"socketplane member\0";
const MEMBER_ROLE: &[u8] = b"socketplane enroll: the member knows the secret";
/// The first enrollment's proof: an HMAC of the secret over this label and
/// the session.
const V1_MEMBER_ROLE: &[u8] = b"socketplane enroll: member proves the secret\0";

fn pake_start(guess: &str, ekm: &[u8]) -> (spake2::Spake2<spake2::Ed25519Group>, Vec<u8>) {
    spake2::Spake2::<spake2::Ed25519Group>::start_a(
        &spake2::Password::new(guess),
        &spake2::Identity::new(&[JOINER_ID, ekm].concat()),
        &spake2::Identity::new(&[MEMBER_ID, ekm].concat()),
    )
}

fn attacker_hello(ns: &str, guess: &str) -> Hello {
    let guess = guess.to_string();
    socketplane_testkit::netns::in_ns(ns, move || {
        use std::io::{Read, Write};
        socketplane_trust::install_crypto_provider();
        let config =
            std::sync::Arc::new(socketplane_trust::enrollment_client_config(None).unwrap());
        let name = rustls::pki_types::ServerName::try_from("socketplane-node").unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let tcp = std::net::TcpStream::connect(MEMBER).expect("connect to the member");
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
        }
        let mut ekm = [0u8; 32];
        tls.conn
            .export_keying_material(&mut ekm, socketplane_trust::EKM_LABEL, None)
            .unwrap();
        let (state, message) = pake_start(&guess, &ekm);
        let body = serde_json::json!({ "pake": hex(&message) }).to_string();
        let request = format!(
            "POST /cluster/v1/enroll/hello HTTP/1.1\r\nhost: socketplane-node\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = tls.read(&mut buf) {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&answer).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.as_bytes().to_vec())
            .unwrap_or_default();
        Hello {
            status,
            body,
            ekm,
            state,
        }
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (s.len().is_multiple_of(2) && s.is_ascii()).then_some(())?;
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&key, &parts.concat()).as_ref().to_vec()
}

/// A dictionary of weak secrets, with `secret` among them.
fn dictionary(secret: &str) -> Vec<String> {
    let mut words: Vec<String> = ["spring", "summer", "autumn", "winter", "cluster", "admin"]
        .iter()
        .flat_map(|w| (2000..2040).map(move |y| format!("{w}-{y}")))
        .collect();
    if !words.iter().any(|w| w == secret) {
        words.insert(words.len() / 2, secret.to_string());
    }
    words
}

/// Every test an attacker can run offline on one recorded hello: the
/// candidates that explain it.
fn offline_guesses(hello: Hello, words: &[String]) -> Vec<String> {
    let fields: Vec<Vec<u8>> = serde_json::from_slice::<serde_json::Value>(&hello.body)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .map(|o| {
            o.values()
                .filter_map(|v| v.as_str().and_then(unhex))
                .collect()
        })
        .unwrap_or_default();
    let member_message = serde_json::from_slice::<serde_json::Value>(&hello.body)
        .ok()
        .and_then(|v| v["pake"].as_str().and_then(unhex));
    let mut found = Vec::new();
    for word in words {
        // An HMAC of the secret over the session (the first protocol).
        let v1 = hmac(word.as_bytes(), &[V1_MEMBER_ROLE, &hello.ekm]);
        if fields.contains(&v1) {
            found.push(word.clone());
            continue;
        }
        // The PAKE as if the attacker had sent this candidate.
        if let Some(m) = &member_message {
            let (state, _) = pake_start(word, &hello.ekm);
            if let Ok(key) = state.finish(m) {
                let confirm = hmac(&key, &[MEMBER_ROLE]);
                if fields.contains(&confirm) {
                    found.push(word.clone());
                }
            }
        }
    }
    // The one candidate the attacker really tested: its own guess.
    if let Some(Ok(key)) = member_message.map(|m| hello.state.finish(&m)) {
        if fields.contains(&hmac(&key, &[MEMBER_ROLE])) {
            found.push("<the online guess>".into());
        }
    }
    found
}

#[test]
fn a_weak_secret_withstands_guessing_and_a_rotated_token_retires_the_old_one() {
    socketplane_testkit::require_privileged!();
    const WEAK: &str = "winter-2026";
    let mut t = joined_lab('w', 1, |c| {
        c.token = Some(WEAK.into());
    });
    let outside = t.lab().outside_netns();

    // Offline: one recorded exchange, a dictionary that holds the secret.
    let words = dictionary(WEAK);
    let hello = attacker_hello(&outside, "summer-2001");
    let status = hello.status;
    let found = offline_guesses(hello, &words);
    assert!(
        found.is_empty(),
        "an offline guess over {} words found the secret: {found:?}",
        words.len()
    );
    assert!(
        !(200..300).contains(&status),
        "the hello answered {status} to an outsider"
    );

    // Online: each guess costs a hello, and failures are limited per source.
    let mut statuses = Vec::new();
    let mut refusal = String::new();
    for word in words.iter().take(10) {
        let h = attacker_hello(&outside, word);
        statuses.push(h.status);
        if h.status == 429 {
            refusal = String::from_utf8_lossy(&h.body).to_string();
            break;
        }
    }
    assert_eq!(
        statuses.last(),
        Some(&429),
        "online guessing was not limited: {statuses:?}"
    );
    assert!(
        statuses.len() <= 6,
        "{} hellos before the limit: {statuses:?}",
        statuses.len()
    );
    assert!(
        refusal.contains("too many failed enrollment attempts"),
        "{refusal}"
    );
    let limited = metric(
        &t,
        0,
        "socketplane_cluster_port_refused_total{reason=\"enroll_attempts\"}",
    );
    assert!(limited >= 1.0, "the limit is not counted: {limited}");

    // A host with the weak secret, from its own address, still joins.
    t.add_host();
    t.wait_for_nodes(0, 2, FORMATION);

    // Rotation: the new token admits, the old one no longer does, members
    // stay members and all of them give the new token.
    let old = t.sp(0, &["cluster", "token"]).unwrap().trim().to_string();
    let new = t
        .sp(0, &["cluster", "token", "rotate"])
        .unwrap()
        .trim()
        .to_string();
    assert!(new.starts_with("SPT1-") && new != old, "{new}");
    assert!(!new.contains(WEAK), "{new}");
    assert_eq!(t.sp(1, &["cluster", "token"]).unwrap().trim(), new);
    let new_secret = new.rsplit('-').next().unwrap().to_string();
    let dump = store_dump(&t.lab().hosts()[1].socket);
    assert!(
        dump.contains_key("/socketplane/v1/trust/join-secret"),
        "{:?}",
        dump.keys()
    );
    assert!(
        !dump.values().any(|v| v.contains(&new_secret)),
        "the store shows the new secret"
    );

    t.lab_mut().set_token(Some(old)).unwrap();
    let stale = t.lab_mut().add_host().expect("add host").index;
    assert!(
        wait_log(&t, stale, "could not prove it knows this token"),
        "the old token's host does not say why it is refused:\n{}",
        t.agent_logs()
    );
    assert_eq!(t.status(0).unwrap().nodes.len(), 2, "the old token got in");
    t.lab_mut()
        .stop_agent(stale, socketplane_lab::Signal::SIGTERM)
        .unwrap();

    t.lab_mut().set_token(Some(new)).unwrap();
    t.add_host();
    let status = t.wait_for_nodes(0, 3, FORMATION);
    assert!(status.nodes.iter().all(|n| n.alive), "{status:?}");
    t.sp(1, &["network", "create", "rotnet", "10.78.0.0/24"])
        .expect("a member from before the rotation still writes");
}

#[test]
fn agents_share_an_etcd_over_tls_that_wants_a_password() {
    socketplane_testkit::require_privileged!();
    let t = joined_lab('e', 2, |c| {
        c.store = socketplane_lab::StoreKind::Etcd;
        c.etcd_secure = true;
    });
    t.sp(0, &["network", "create", "etlsnet", "10.79.0.0/24"])
        .unwrap();
    let nets = t.sp(1, &["network", "list"]).unwrap();
    assert!(nets.contains("etlsnet"), "{nets}");
    let dump = t.lab().etcd_dump().expect("etcd dump as root");
    assert!(
        dump.keys()
            .any(|k| k.starts_with("/socketplane/v1/network-names/etlsnet")),
        "the agents did not write to this etcd: {:?}",
        dump.keys()
    );

    // The etcd really wants TLS and a user: plain HTTP and an anonymous
    // TLS client get nothing.
    let ca = t.lab().state_dir().join("etcd/certs/ca.pem");
    let probe = format!(
        r#"
import json, ssl, urllib.request
for url, ctx in [("http://198.18.0.253:2379/v3/kv/range", None),
                 ("https://198.18.0.253:2379/v3/kv/range", ssl.create_default_context(cafile={ca:?}))]:
    try:
        r = urllib.request.urlopen(urllib.request.Request(url, data=b'{{"key":"AA==","range_end":"AA=="}}'), timeout=3, context=ctx)
        print("answered", url, r.read()[:200])
    except Exception as e:
        print("refused", url, type(e).__name__)
"#
    );
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.lab().outside_netns(),
            "python3",
            "-c",
            &probe,
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.matches("refused").count(), 2, "{out}");

    // The password is in no command line and no log.
    let password =
        std::fs::read_to_string(t.lab().state_dir().join("etcd/socketplane.password")).unwrap();
    assert!(password.len() >= 32);
    for h in t.lab().hosts() {
        let pid = h.agent_pid.expect("the agent runs");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(cmdline.contains("--etcd-user socketplane"), "{cmdline}");
        assert!(cmdline.contains("etcds://"), "{cmdline}");
        assert!(
            !cmdline.contains(&password),
            "the password is on the command line"
        );
        let log = std::fs::read_to_string(&h.log).unwrap_or_default();
        assert!(
            !log.contains(&password),
            "the password is in {}'s log",
            h.name
        );
    }
}
