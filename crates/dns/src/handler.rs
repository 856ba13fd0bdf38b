//! Answers one query on one network's gateway: from the zone when the name
//! is the network's, by forwarding otherwise ([`crate::forward`]).

use std::iter;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::sync::watch;

use crate::forward::Forwarder;
use crate::limit::RateLimiter;
use crate::zone::{Lookup, Zones};
use socketplane_observe::events::{DnsQuery, DnsResult};

/// Longest query taken: a question and an OPT record fit in far less;
/// anything longer is not a query a resolver sends.
pub const MAX_QUERY_LEN: usize = 1024;

pub struct Handler {
    /// The network (id) whose gateway this handler serves.
    pub network: String,
    pub zones: watch::Receiver<Arc<Zones>>,
    pub forwarder: Arc<Forwarder>,
    pub limiter: Arc<RateLimiter>,
    pub ttl: u32,
}

/// Counts a query by what it got (`socketplane_dns_queries_total`).
fn count(result: DnsResult, name: &str) {
    socketplane_observe::emit(DnsQuery { result, name });
}

/// The header of a response that was not sent (a dropped query).
fn not_sent(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::Refused;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        // Over its budget, a source's queries are dropped unanswered: the
        // cheapest thing to do with a flood.
        if !self.limiter.allow(request.src().ip()) {
            count(DnsResult::Refused, "");
            return not_sent(request);
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let edns = request.edns.as_ref().map(|e| {
            let mut ours = Edns::new();
            ours.set_max_payload(e.max_payload().max(512));
            ours
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let query = match request.request_info() {
            Ok(info) if request.as_slice().len() <= MAX_QUERY_LEN => info.query,
            _ => {
                metadata.response_code = ResponseCode::FormErr;
                count(DnsResult::Failed, "");
                return send(&mut response, builder.build_no_records(metadata), request).await;
            }
        };
        if request.metadata.op_code != OpCode::Query {
            metadata.response_code = ResponseCode::NotImp;
            count(DnsResult::Failed, "");
            return send(&mut response, builder.build_no_records(metadata), request).await;
        }
        let zones = self.zones.borrow().clone();
        let qname = query.name().to_string();
        let lookup = if query.query_class() == DNSClass::IN {
            zones.lookup(&self.network, &qname)
        } else {
            Lookup::Forward
        };
        match lookup {
            Lookup::Found(ips) => {
                count(DnsResult::Answered, &qname);
                metadata.authoritative = true;
                let name = query.original().name().clone();
                let answers: Vec<Record> = match query.query_type() {
                    RecordType::A | RecordType::ANY => ips
                        .iter()
                        .map(|ip| Record::from_rdata(name.clone(), self.ttl, RData::A(A(*ip))))
                        .collect(),
                    // AAAA and the rest: the name exists, without such
                    // records (NOERROR, no answer), so resolvers do not wait.
                    _ => Vec::new(),
                };
                let msg = builder.build(
                    metadata,
                    answers.iter(),
                    iter::empty(),
                    iter::empty(),
                    iter::empty(),
                );
                send(&mut response, msg, request).await
            }
            Lookup::Apex => {
                count(DnsResult::Answered, &qname);
                metadata.authoritative = true;
                send(&mut response, builder.build_no_records(metadata), request).await
            }
            Lookup::NxDomain => {
                count(DnsResult::NxDomain, &qname);
                metadata.authoritative = true;
                metadata.response_code = ResponseCode::NXDomain;
                send(&mut response, builder.build_no_records(metadata), request).await
            }
            Lookup::Forward => {
                let skip = |s: SocketAddr| match s.ip() {
                    IpAddr::V4(ip) => zones.is_gateway(ip),
                    IpAddr::V6(_) => false,
                };
                let forwarded = self
                    .forwarder
                    .forward(
                        query.original(),
                        request.metadata.recursion_desired,
                        request.metadata.checking_disabled,
                        skip,
                    )
                    .await;
                match forwarded {
                    Ok(answer) => {
                        count(DnsResult::Forwarded, &qname);
                        metadata.response_code = answer.metadata.response_code;
                        let msg = builder.build(
                            metadata,
                            answer.answers.iter(),
                            answer.authorities.iter(),
                            iter::empty(),
                            answer.additionals.iter(),
                        );
                        send(&mut response, msg, request).await
                    }
                    Err(error) => {
                        tracing::debug!(name = %query.name(), %error, "Answering SERVFAIL: forwarding failed.");
                        count(DnsResult::Failed, &qname);
                        metadata.response_code = ResponseCode::ServFail;
                        send(&mut response, builder.build_no_records(metadata), request).await
                    }
                }
            }
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    msg: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Request,
) -> ResponseInfo {
    match response.send_response(msg).await {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!(src = %request.src(), %error, "Could not send a DNS answer.");
            not_sent(request)
        }
    }
}
