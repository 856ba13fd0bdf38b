//! The two-host acceptance scenario (issue 4), independent of the datapath
//! implementation: give it a way to start a datapath in a host namespace.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use socketplane_datapath::DesiredState;

use super::*;

pub const H0: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const H1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// Two hosts, networks A (vni 100, 10.10.0.0/24) and B (vni 200,
/// 10.20.0.0/24). Host 0: wa1 (A .11), wa3 (A .13), wb1 (B .11).
/// Host 1: wa2 (A .12), wb2 (B .12).
pub struct Topo {
    // Datapaths stop before the lab's namespaces go.
    pub dp: Vec<DpHost>,
    pub lab: Lab,
    pub wa1: String,
    pub wa2: String,
    pub wa3: String,
    pub wb1: String,
    pub wb2: String,
    pub desired: Vec<DesiredState>,
}

impl Topo {
    /// Builds the lab and starts a datapath per host with `start`.
    pub fn new_with(docker: bool, start: impl Fn(&str) -> DpHost) -> Topo {
        let mut lab = Lab::new(2);
        if docker {
            let h0 = lab.hosts[0].clone();
            let h1 = lab.hosts[1].clone();
            lab.docker_policy(&h0, false);
            lab.docker_policy(&h1, true);
        }
        let a = net("a", 100, 10);
        let b = net("b", 200, 20);
        let wa1 = lab.workload("wa1");
        let wa2 = lab.workload("wa2");
        let wa3 = lab.workload("wa3");
        let wb1 = lab.workload("wb1");
        let wb2 = lab.workload("wb2");
        let l0 = vec![
            local("wa1", &a, 11, &wa1),
            local("wa3", &a, 13, &wa3),
            local("wb1", &b, 11, &wb1),
        ];
        let l1 = vec![local("wa2", &a, 12, &wa2), local("wb2", &b, 12, &wb2)];
        let d0 = DesiredState {
            networks: vec![a.clone(), b.clone()],
            local: l0.clone(),
            remote: l1.iter().map(|e| remote_of(e, H1)).collect(),
            ..Default::default()
        };
        let d1 = DesiredState {
            networks: vec![a.clone(), b.clone()],
            local: l1.clone(),
            remote: l0.iter().map(|e| remote_of(e, H0)).collect(),
            ..Default::default()
        };
        let dp = vec![start(&lab.hosts[0]), start(&lab.hosts[1])];
        assert_eq!(dp[0].underlay_ip, H0);
        assert_eq!(dp[1].underlay_ip, H1);
        assert!(dp[0].apply(&d0).changes > 0);
        assert!(dp[1].apply(&d1).changes > 0);
        Topo {
            dp,
            lab,
            wa1,
            wa2,
            wa3,
            wb1,
            wb2,
            desired: vec![d0, d1],
        }
    }
}

pub fn tcp_roundtrip(
    lab: &Lab,
    server_ns: &str,
    server_ip: Ipv4Addr,
    client_ns: &str,
) -> SocketAddr {
    let _ = lab;
    let (tx, rx) = std::sync::mpsc::channel();
    let server = spawn_in_ns(server_ns, move || {
        let l = TcpListener::bind((server_ip, 5000)).unwrap();
        tx.send(()).unwrap();
        let (mut s, peer) = l.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        peer
    });
    rx.recv().unwrap();
    in_ns(client_ns, move || {
        let mut s =
            TcpStream::connect_timeout(&(server_ip, 5000).into(), Duration::from_secs(3)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
    });
    server.join().unwrap()
}

/// Sends one UDP datagram to 239.1.2.3 from `sender`; returns which of the
/// `listeners` received it.
pub fn multicast(sender: (&str, Ipv4Addr), listeners: &[(&str, Ipv4Addr)]) -> Vec<bool> {
    let group = Ipv4Addr::new(239, 1, 2, 3);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut handles = Vec::new();
    for (ns, ip) in listeners {
        let ip = *ip;
        let ready = ready_tx.clone();
        handles.push(spawn_in_ns(ns, move || {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 5353 + 1000)).unwrap();
            s.join_multicast_v4(&group, &ip).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(1500)))
                .unwrap();
            ready.send(()).unwrap();
            let mut buf = [0u8; 64];
            loop {
                match s.recv_from(&mut buf) {
                    Ok((n, _)) if &buf[..n] == b"socketplane-mcast" => return true,
                    Ok(_) => continue,
                    Err(_) => return false,
                }
            }
        }));
    }
    for _ in listeners {
        ready_rx.recv().unwrap();
    }
    let (sns, sip) = sender;
    in_ns(sns, move || {
        let s = UdpSocket::bind((sip, 0)).unwrap();
        s.set_multicast_ttl_v4(4).unwrap();
        for _ in 0..3 {
            s.send_to(b"socketplane-mcast", (group, 6353)).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

pub fn check_connectivity(t: &Topo) {
    let lab = &t.lab;
    // Same network across hosts and on one host.
    assert!(lab.ping(&t.wa1, "10.10.0.12"), "wa1 -> wa2 across hosts");
    assert!(lab.ping(&t.wa2, "10.10.0.11"), "wa2 -> wa1 across hosts");
    assert!(lab.ping(&t.wa1, "10.10.0.13"), "wa1 -> wa3 same host");
    assert!(lab.ping(&t.wb2, "10.20.0.11"), "wb2 -> wb1 across hosts");
    assert!(lab.ping(&t.wa1, "10.10.0.1"), "wa1 -> its gateway");
    tcp_roundtrip(lab, &t.wa2, Ipv4Addr::new(10, 10, 0, 12), &t.wa1);
    tcp_roundtrip(lab, &t.wb1, Ipv4Addr::new(10, 20, 0, 11), &t.wb2);

    // Different networks are isolated, both ways, on one host and across.
    assert!(lab.ping_fails(&t.wa1, "10.20.0.12"), "wa1 reached wb2");
    assert!(lab.ping_fails(&t.wa1, "10.20.0.11"), "wa1 reached wb1");
    assert!(lab.ping_fails(&t.wb1, "10.10.0.11"), "wb1 reached wa1");
    assert!(lab.ping_fails(&t.wb2, "10.10.0.12"), "wb2 reached wa2");
    assert!(lab.ping_fails(&t.wb2, "10.10.0.11"), "wb2 reached wa1");

    // The outside, through masquerade: it sees the host's underlay address.
    assert!(lab.ping(&t.wa1, "198.18.0.254"), "wa1 -> outside");
    let peer = tcp_roundtrip(lab, &lab.outside, Ipv4Addr::new(198, 18, 0, 254), &t.wa2);
    assert_eq!(peer.ip(), std::net::IpAddr::V4(H1), "outside saw {peer}");
    let peer = tcp_roundtrip(lab, &lab.outside, Ipv4Addr::new(198, 18, 0, 254), &t.wb1);
    assert_eq!(peer.ip(), std::net::IpAddr::V4(H0), "outside saw {peer}");

    // Multicast reaches the other members of A on both hosts, not B.
    let got = multicast(
        (&t.wa1, Ipv4Addr::new(10, 10, 0, 11)),
        &[
            (&t.wa3, Ipv4Addr::new(10, 10, 0, 13)),
            (&t.wa2, Ipv4Addr::new(10, 10, 0, 12)),
            (&t.wb1, Ipv4Addr::new(10, 20, 0, 11)),
            (&t.wb2, Ipv4Addr::new(10, 20, 0, 12)),
        ],
    );
    assert_eq!(
        got,
        vec![true, true, false, false],
        "multicast receivers wa3, wa2, wb1, wb2"
    );

    // Re-applying is a no-op.
    assert_eq!(t.dp[0].apply(&t.desired[0]).changes, 0);
    assert_eq!(t.dp[1].apply(&t.desired[1]).changes, 0);
}
