//! The DNS service end to end on loopback (no root needed): a gateway on
//! 127.0.0.2, an upstream of the test's own on 127.0.0.1, queries as a
//! resolver sends them.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use socketplane_api::{EndpointRecord, MacAddr, NetworkRecord};
use socketplane_cluster::ClusterView;
use socketplane_dns::{DnsConfig, Upstreams};
use tokio::sync::watch;

const GATEWAY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

fn free_port(ip: Ipv4Addr) -> u16 {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    let t = std::net::TcpListener::bind((ip, s.local_addr().unwrap().port()));
    match t {
        Ok(_) => s.local_addr().unwrap().port(),
        Err(_) => free_port(ip),
    }
}

fn view(endpoints: &[(&str, &str)]) -> Arc<ClusterView> {
    let mut v = ClusterView::default();
    v.networks.insert(
        "n1".into(),
        NetworkRecord {
            id: "n1".into(),
            name: "blue".into(),
            subnet: "10.9.0.0/24".parse().unwrap(),
            gateway: GATEWAY,
            vni: 1,
            mtu: None,
            mode: Default::default(),
        },
    );
    for (i, (name, ip)) in endpoints.iter().enumerate() {
        let ip: Ipv4Addr = ip.parse().unwrap();
        v.endpoints.insert(
            format!("e{i}"),
            Arc::new(EndpointRecord {
                id: format!("e{i}"),
                network: "n1".into(),
                node: "a".into(),
                ip,
                mac: MacAddr::from_ipv4(ip),
                name: Some(name.to_string()),
                container_id: None,
                netns: None,
                netns_id: None,
                ifname: "eth0".into(),
                aliases: Vec::new(),
                origin: None,
                pod_namespace: None,
                pod_name: None,
            }),
        );
    }
    Arc::new(v)
}

/// An upstream answering every A query with OUTSIDE; stops when dropped.
struct Upstream {
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Upstream {
    fn start() -> Upstream {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = s.local_addr().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                let Ok((n, peer)) = s.recv_from(&mut buf) else {
                    continue;
                };
                let q = Message::from_vec(&buf[..n]).unwrap();
                let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
                r.metadata.recursion_available = true;
                r.add_query(q.queries[0].clone());
                r.add_answer(Record::from_rdata(
                    q.queries[0].name().clone(),
                    30,
                    RData::A(A(OUTSIDE)),
                ));
                let _ = s.send_to(&r.to_vec().unwrap(), peer);
            }
        });
        Upstream { addr, stop }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn ask(server: SocketAddr, name: &str, rtype: RecordType) -> Option<Message> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
    let mut q = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    s.send_to(&q.to_vec().unwrap(), server).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

fn rand_id() -> u16 {
    (std::process::id() as u16).wrapping_add(Instant::now().elapsed().subsec_nanos() as u16)
}

fn ips(m: &Message) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

#[test]
fn answers_forwards_and_follows_the_view() {
    let upstream = Upstream::start();
    let port = free_port(GATEWAY);
    let server = SocketAddr::from((GATEWAY, port));
    let mut config = DnsConfig::new(Upstreams {
        servers: vec![upstream.addr],
        attempts: 1,
        budget: Duration::from_millis(800),
    });
    config.port = port;
    let (tx, rx) = watch::channel(view(&[("web", "10.9.0.5"), ("web", "10.9.0.6")]));
    let service = socketplane_dns::spawn(config, rx).unwrap();

    let web: Vec<Ipv4Addr> = vec!["10.9.0.5".parse().unwrap(), "10.9.0.6".parse().unwrap()];
    // Up once its TCP port accepts (UDP and TCP bind together).
    let started = Instant::now();
    while std::net::TcpStream::connect(server).is_err() {
        assert!(started.elapsed() < Duration::from_secs(5), "not serving");
        std::thread::sleep(Duration::from_millis(10));
    }
    let first = ask(server, "web.", RecordType::A).expect("an answer");
    assert_eq!(ips(&first), web);
    assert!(first.metadata.authoritative);
    let m = ask(server, "WEB.Blue.", RecordType::A).unwrap();
    assert_eq!(ips(&m), web);
    assert_eq!(m.answers[0].ttl, 2);
    let m = ask(server, "web.blue.", RecordType::AAAA).unwrap();
    assert_eq!(
        (m.metadata.response_code, m.answers.len()),
        (ResponseCode::NoError, 0)
    );
    let m = ask(server, "nobody.blue.", RecordType::A).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let m = ask(server, "out.example.", RecordType::A).unwrap();
    assert_eq!(ips(&m), vec![OUTSIDE]);
    assert!(m.metadata.recursion_available);

    // Junk does not stop it.
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    for junk in [&b""[..], &b"\x01"[..], &[0xffu8; 12][..], &[0u8; 3000][..]] {
        s.send_to(junk, server).unwrap();
    }
    // The view changes: the answer follows at once.
    tx.send_replace(view(&[("web", "10.9.0.6"), ("db", "10.9.0.7")]));
    let started = Instant::now();
    while ips(&ask(server, "web.", RecordType::A).unwrap()) != web[1..] {
        assert!(started.elapsed() < Duration::from_secs(1), "stale answer");
    }
    let m = ask(server, "db.", RecordType::A).unwrap();
    assert_eq!(ips(&m), vec!["10.9.0.7".parse::<Ipv4Addr>().unwrap()]);

    // Upstream gone: SERVFAIL within the budget; own names still answered.
    drop(upstream);
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let m = ask(server, "gone.example.", RecordType::A).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        ips(&ask(server, "db.blue.", RecordType::A).unwrap()).len(),
        1
    );
    drop(service);
}
