//! Forwarding to the host's resolvers: a query the zone does not answer
//! goes, as the same question with a fresh id from a fresh port, to each
//! upstream in turn (UDP; TCP when the answer is truncated) until one
//! answers or the time budget is spent. Never recursion of our own.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// Largest answer we take over UDP (the EDNS size we advertise upstream).
const UDP_PAYLOAD: u16 = 1232;
/// Forwarded queries in flight at once, over all sources; more get
/// SERVFAIL at once rather than piling up.
const MAX_IN_FLIGHT: usize = 512;
/// Tries per upstream when resolv.conf says nothing (glibc's default).
const DEFAULT_ATTEMPTS: u32 = 2;

/// Where and how long to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstreams {
    pub servers: Vec<SocketAddr>,
    /// Rounds over all servers.
    pub attempts: u32,
    /// Time budget of one forwarded query, all tries together; then the
    /// client gets SERVFAIL (before its own resolver gives up, 5 s).
    pub budget: Duration,
}

impl Upstreams {
    /// The IPv4 nameservers of a resolv.conf (and its `attempts`).
    pub fn from_resolv_conf(path: &Path, budget: Duration) -> Result<Upstreams> {
        let text = std::fs::read(path).map_err(|source| Error::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        let conf = resolv_conf::Config::parse(&text).map_err(|e| Error::ResolvConf {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        let servers = conf
            .nameservers
            .iter()
            .filter_map(|ns| match ns {
                resolv_conf::ScopedIp::V4(ip) => Some(SocketAddr::from((*ip, 53))),
                // The gateways are IPv4 only, and so is forwarding.
                resolv_conf::ScopedIp::V6(..) => None,
            })
            .collect();
        Ok(Upstreams {
            servers,
            attempts: if conf.attempts == 0 {
                DEFAULT_ATTEMPTS
            } else {
                conf.attempts.min(5)
            },
            budget,
        })
    }
}

/// Parses `IP` or `IP:PORT` (port 53 by default).
pub fn parse_upstream(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>().ok().or_else(|| {
        s.parse::<Ipv4Addr>()
            .ok()
            .map(|ip| SocketAddr::from((ip, 53)))
    })
}

pub struct Forwarder {
    upstreams: Upstreams,
    in_flight: Semaphore,
}

impl Forwarder {
    pub fn new(upstreams: Upstreams) -> Self {
        Forwarder {
            upstreams,
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// The upstream's answer to `query`, or an error (the caller answers
    /// SERVFAIL). `skip` says which servers are ours (never asked: a loop).
    pub async fn forward(
        &self,
        query: &Query,
        recursion_desired: bool,
        checking_disabled: bool,
        skip: impl Fn(SocketAddr) -> bool,
    ) -> Result<Message> {
        let _permit = self
            .in_flight
            .try_acquire()
            .map_err(|_| Error::Upstream("too many forwarded queries in flight".into()))?;
        let servers: Vec<SocketAddr> = self
            .upstreams
            .servers
            .iter()
            .copied()
            .filter(|s| !skip(*s))
            .collect();
        if servers.is_empty() {
            return Err(Error::Upstream("no upstream resolver configured".into()));
        }
        let deadline = Instant::now() + self.upstreams.budget;
        let tries = servers.len() as u32 * self.upstreams.attempts.max(1);
        let per_try = (self.upstreams.budget / tries).max(Duration::from_millis(200));
        let mut last = Error::Upstream("no upstream answered in time".into());
        for round in 0..self.upstreams.attempts.max(1) {
            for server in &servers {
                let now = Instant::now();
                if now >= deadline {
                    return Err(last);
                }
                let wait = per_try.min(deadline - now);
                let id: u16 = rand::random();
                let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
                msg.metadata.recursion_desired = recursion_desired;
                msg.metadata.checking_disabled = checking_disabled;
                msg.add_query(query.clone());
                let mut edns = Edns::new();
                edns.set_max_payload(UDP_PAYLOAD);
                msg.set_edns(edns);
                let bytes = msg.to_vec().map_err(|e| Error::Upstream(e.to_string()))?;
                match tokio::time::timeout(wait, ask(*server, &bytes, id, query)).await {
                    Ok(Ok(answer)) => return Ok(answer),
                    Ok(Err(e)) => {
                        tracing::debug!(%server, round, error = %e, "An upstream resolver failed.");
                        last = e;
                    }
                    Err(_) => {
                        tracing::debug!(%server, round, "An upstream resolver did not answer in time.");
                    }
                }
            }
        }
        Err(last)
    }
}

/// One try at one server: UDP, and TCP if the answer was truncated.
async fn ask(server: SocketAddr, bytes: &[u8], id: u16, query: &Query) -> Result<Message> {
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let io = |what: &str| {
        let what = format!("{what} {server}");
        move |source| Error::Io { what, source }
    };
    let socket = UdpSocket::bind(bind)
        .await
        .map_err(io("binding a socket for"))?;
    socket.connect(server).await.map_err(io("connecting to"))?;
    socket.send(bytes).await.map_err(io("sending to"))?;
    let mut buf = vec![0u8; usize::from(UDP_PAYLOAD).max(4096)];
    loop {
        let n = socket.recv(&mut buf).await.map_err(io("receiving from"))?;
        // Anything that is not the answer to this very question (late
        // answers, spoofing attempts) is ignored.
        let Ok(answer) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if answer.metadata.id != id
            || answer.metadata.message_type != MessageType::Response
            || answer.queries.first() != Some(query)
        {
            continue;
        }
        if answer.metadata.truncation {
            return ask_tcp(server, bytes, id).await;
        }
        return Ok(answer);
    }
}

async fn ask_tcp(server: SocketAddr, bytes: &[u8], id: u16) -> Result<Message> {
    let io = |what: &str| {
        let what = format!("{what} {server} over TCP");
        move |source| Error::Io { what, source }
    };
    let mut stream = TcpStream::connect(server)
        .await
        .map_err(io("connecting to"))?;
    let len = u16::try_from(bytes.len()).map_err(|_| Error::Upstream("query too long".into()))?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.map_err(io("sending to"))?;
    let mut len = [0u8; 2];
    stream
        .read_exact(&mut len)
        .await
        .map_err(io("receiving from"))?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(io("receiving from"))?;
    let answer = Message::from_vec(&buf).map_err(|e| Error::Upstream(e.to_string()))?;
    if answer.metadata.id != id {
        return Err(Error::Upstream("answer over TCP to another query".into()));
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resolv_conf() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resolv.conf");
        std::fs::write(
            &p,
            "# x\nnameserver 192.0.2.1\nnameserver ::1\nnameserver 192.0.2.2\noptions attempts:3 timeout:1\nsearch example\n",
        )
        .unwrap();
        let u = Upstreams::from_resolv_conf(&p, Duration::from_secs(2)).unwrap();
        assert_eq!(
            u.servers,
            vec![
                "192.0.2.1:53".parse().unwrap(),
                "192.0.2.2:53".parse().unwrap()
            ]
        );
        assert_eq!(u.attempts, 3);
        assert_eq!(
            parse_upstream("1.2.3.4"),
            Some("1.2.3.4:53".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("1.2.3.4:5353"),
            Some("1.2.3.4:5353".parse().unwrap())
        );
        assert_eq!(parse_upstream("x"), None);
    }
}
