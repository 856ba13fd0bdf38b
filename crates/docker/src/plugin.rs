//! The plugin's HTTP handlers. Every method is a POST with a JSON body to
//! `/Plugin.Activate`, `/NetworkDriver.METHOD` or `/IpamDriver.METHOD`.
//! Errors of the network driver are `{"Err": ...}`, of the IPAM driver
//! `{"Error": ...}` (HTTP 200, as libnetwork expects); unknown methods get
//! 404; a malformed or oversized body gets 400/413 with both fields set.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use ipnet::Ipv4Net;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use socketplane_api::rest::{AttachEndpoint, CreateNetwork};
use socketplane_api::{DockerNetworkRecord, MacAddr, NetworkRecord};
use socketplane_cluster::ErrorKind;
use socketplane_ipam::{overlaps, parse_subnet, Pool};
use tokio::sync::Notify;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::names::placeholder_name;
use crate::protocol::*;

/// Docker's requests are small; anything bigger is refused.
pub const MAX_BODY: usize = 64 * 1024;
/// How long CreateEndpoint waits for the local datapath to create the veth.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(15);

/// What the handlers share.
#[derive(Clone)]
pub struct Plugin {
    pub backend: Arc<dyn Backend>,
    /// Notified when a network was created under a placeholder name, so the
    /// mirror looks up its Docker name at once.
    pub created: Arc<Notify>,
}

pub fn router(plugin: Plugin) -> Router {
    Router::new()
        .fallback(dispatch)
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(
            socketplane_observe::layers::count_docker,
        ))
        .with_state(plugin)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Network,
    Ipam,
}

type HandlerResult = Result<Value>;

fn reply(api: Api, status: StatusCode, err: &str) -> Response {
    let body = match api {
        Api::Network => json!({ "Err": err }),
        Api::Ipam => json!({ "Error": err }),
    };
    (status, Json(body)).into_response()
}

/// Protocol-level failures (the body, the method) carry both error fields so
/// either client shows the message.
fn bad_request(status: StatusCode, err: &str) -> Response {
    (status, Json(json!({ "Err": err, "Error": err }))).into_response()
}

async fn dispatch(State(plugin): State<Plugin>, method: Method, uri: Uri, body: Body) -> Response {
    let path = uri.path().to_string();
    let api = if path.starts_with("/IpamDriver.") {
        Api::Ipam
    } else {
        Api::Network
    };
    if method != Method::POST {
        return bad_request(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{path}: plugin methods are called with POST"),
        );
    }
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return bad_request(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("{path}: request body larger than {MAX_BODY} bytes"),
            )
        }
    };
    let method_name = path.trim_start_matches('/');
    macro_rules! call {
        ($handler:ident) => {
            match parse(method_name, &bytes) {
                Ok(req) => $handler(&plugin, req).await,
                Err(resp) => return resp,
            }
        };
    }
    let result: HandlerResult = match method_name {
        "Plugin.Activate" => Ok(json!(ActivateResponse {
            implements: vec!["NetworkDriver".into(), "IpamDriver".into()],
        })),
        "NetworkDriver.GetCapabilities" => Ok(json!(CapabilitiesResponse {
            scope: "local".into(),
            connectivity_scope: "global".into(),
        })),
        "NetworkDriver.CreateNetwork" => call!(create_network),
        "NetworkDriver.DeleteNetwork" => call!(delete_network),
        "NetworkDriver.CreateEndpoint" => call!(create_endpoint),
        "NetworkDriver.EndpointOperInfo" => call!(endpoint_info),
        "NetworkDriver.DeleteEndpoint" => call!(delete_endpoint),
        "NetworkDriver.Join" => call!(join),
        "NetworkDriver.Leave" => call!(leave),
        "NetworkDriver.DiscoverNew"
        | "NetworkDriver.DiscoverDelete"
        | "NetworkDriver.ProgramExternalConnectivity"
        | "NetworkDriver.RevokeExternalConnectivity" => Ok(json!({})),
        "IpamDriver.GetCapabilities" => Ok(json!(IpamCapabilitiesResponse::default())),
        "IpamDriver.GetDefaultAddressSpaces" => Ok(json!(AddressSpacesResponse {
            local_default_address_space: "socketplane-local".into(),
            global_default_address_space: "socketplane-global".into(),
        })),
        "IpamDriver.RequestPool" => call!(request_pool),
        "IpamDriver.ReleasePool" => Ok(json!({})),
        "IpamDriver.RequestAddress" => call!(request_address),
        "IpamDriver.ReleaseAddress" => call!(release_address),
        _ => {
            return bad_request(
                StatusCode::NOT_FOUND,
                &format!("unknown plugin method {path:?}"),
            )
        }
    };
    match result {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => {
            let e = e.report();
            tracing::warn!(method = %method_name, error = %e, "Docker plugin call failed.");
            reply(api, StatusCode::OK, &e)
        }
    }
}

#[allow(clippy::result_large_err)]
fn parse<T: DeserializeOwned>(method: &str, bytes: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(bytes).map_err(|e| {
        bad_request(
            StatusCode::BAD_REQUEST,
            &format!("malformed JSON in the {method} request: {e}"),
        )
    })
}

fn check_id(kind: &str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Error::Invalid(format!("invalid Docker {kind} id {id:?}")));
    }
    Ok(())
}

/// "10.0.0.5" or "10.0.0.5/24".
fn parse_ip(what: &str, s: &str) -> Result<Ipv4Addr> {
    let addr = s.split_once('/').map(|(a, _)| a).unwrap_or(s);
    addr.parse().map_err(|_| {
        Error::Invalid(format!(
            "invalid {what} {s:?}: SocketPlane networks are IPv4 only"
        ))
    })
}

fn cidr(ip: Ipv4Addr, subnet: Ipv4Net) -> String {
    format!("{ip}/{}", subnet.prefix_len())
}

/// The cluster network behind a Docker network id.
async fn network_of(p: &Plugin, docker_id: &str) -> Result<NetworkRecord> {
    check_id("network", docker_id)?;
    let Some(m) = p.backend.mapping(docker_id).await? else {
        return Err(Error::Invalid(format!(
            "unknown Docker network id {docker_id:?}: it was not created with the SocketPlane driver on this host"
        )));
    };
    match p.backend.network(&m.network).await {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::Invalid(format!(
            "the SocketPlane network of Docker network {docker_id} (id {}) no longer exists",
            m.network
        ))),
        Err(e) => Err(e.into()),
    }
}

async fn network_by_subnet(p: &Plugin, subnet: Ipv4Net) -> Result<Option<NetworkRecord>> {
    let nets = p.backend.networks().await?;
    Ok(nets.into_iter().find(|n| n.subnet == subnet))
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

// ----- network driver -----

async fn create_network(p: &Plugin, req: CreateNetworkRequest) -> HandlerResult {
    check_id("network", &req.network_id)?;
    p.backend.member()?;
    if p.backend.mapping(&req.network_id).await?.is_some() {
        return Ok(json!({}));
    }
    if !req.ipv6_data.is_empty() {
        return Err(invalid("SocketPlane networks are IPv4 only: drop --ipv6"));
    }
    let [data] = req.ipv4_data.as_slice() else {
        return Err(invalid(format!(
            "a SocketPlane network has exactly one IPv4 subnet; got {}",
            req.ipv4_data.len()
        )));
    };
    let subnet = parse_subnet(&data.pool).map_err(socketplane_cluster::Error::from)?;
    let gateway = if data.gateway.is_empty() {
        None
    } else {
        Some(parse_ip("gateway", &data.gateway)?)
    };
    let generic = req.options.get(GENERIC_OPTIONS);
    let option = |k: &str| {
        generic
            .and_then(|g| g.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let mut placeholder = false;
    let (record, name) = match network_by_subnet(p, subnet).await? {
        Some(existing) => {
            if gateway.is_some_and(|g| g != existing.gateway) {
                return Err(invalid(format!(
                    "SocketPlane network {:?} with subnet {subnet} has gateway {}",
                    existing.name, existing.gateway
                )));
            }
            let record = DockerNetworkRecord {
                network: existing.id,
                created: false,
            };
            (record, existing.name)
        }
        None => {
            // Docker does not tell drivers the network's name: without
            // `-o name=`, the mirror gives it Docker's name once Docker
            // lists the network (a fraction of a second from now).
            let name = match option("name") {
                Some(name) => name,
                None => {
                    placeholder = true;
                    placeholder_name(&req.network_id)
                }
            };
            let mtu = match option("mtu") {
                Some(m) => Some(
                    m.parse()
                        .map_err(|_| invalid(format!("invalid mtu option {m:?}")))?,
                ),
                None => None,
            };
            let create = CreateNetwork {
                name: name.clone(),
                subnet: subnet.to_string(),
                gateway,
                mtu,
                mode: Default::default(),
            };
            let network = p.backend.create_network(&create).await?;
            let record = DockerNetworkRecord {
                network: network.id,
                created: true,
            };
            (record, name)
        }
    };
    p.backend.put_mapping(&req.network_id, &record).await?;
    if placeholder {
        p.created.notify_one();
    }
    tracing::info!(docker_network = %req.network_id, network = %name, id = %record.network, created = record.created, "Docker network mapped.");
    Ok(json!({}))
}

async fn delete_network(p: &Plugin, req: NetworkRequest) -> HandlerResult {
    check_id("network", &req.network_id)?;
    let Some(m) = p.backend.mapping(&req.network_id).await? else {
        return Ok(json!({}));
    };
    p.backend.delete_mapping(&req.network_id).await?;
    if m.created {
        match p.backend.delete_network(&m.network).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                tracing::info!(network = %m.network, reason = %e, "Keeping the cluster network of a deleted Docker network.")
            }
        }
    }
    Ok(json!({}))
}

async fn create_endpoint(p: &Plugin, req: CreateEndpointRequest) -> HandlerResult {
    let network = network_of(p, &req.network_id).await?;
    check_id("endpoint", &req.endpoint_id)?;
    let iface = req.interface.unwrap_or_default();
    if !iface.address_ipv6.is_empty() {
        return Err(invalid("SocketPlane networks are IPv4 only"));
    }
    let ip = if iface.address.is_empty() {
        None
    } else {
        Some(parse_ip("address", &iface.address)?)
    };
    let attach = AttachEndpoint {
        network: network.id.clone(),
        ip,
        ..Default::default()
    };
    let record = p
        .backend
        .attach_reserved(&attach, req.endpoint_id.clone(), CONVERGE_TIMEOUT)
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::Internal => {
                invalid(format!("the datapath did not create the interface: {e}"))
            }
            _ => e.into(),
        })?;
    let mut out = EndpointInterface::default();
    if iface.address.is_empty() {
        out.address = cidr(record.ip, network.subnet);
    }
    if iface.mac_address.is_empty() {
        out.mac_address = record.mac.to_string();
    } else if iface.mac_address.parse::<MacAddr>().ok() != Some(record.mac) {
        tracing::warn!(endpoint = %record.id, given = %iface.mac_address, used = %record.mac, "Docker asked for a MAC address; remote hosts learn the derived one.");
    }
    let interface = (!out.address.is_empty() || !out.mac_address.is_empty()).then_some(out);
    Ok(json!(CreateEndpointResponse { interface }))
}

async fn endpoint_info(p: &Plugin, req: EndpointRequest) -> HandlerResult {
    let mut value = std::collections::BTreeMap::new();
    p.backend.member()?;
    if let Ok(ep) = p.backend.endpoint(&req.endpoint_id).await {
        let network = match p.backend.network(&ep.network).await {
            Ok(n) => n.name,
            Err(_) => ep.network,
        };
        value.insert("network".to_string(), network);
        value.insert("ip".to_string(), ep.ip.to_string());
        value.insert("mac".to_string(), ep.mac.to_string());
    }
    Ok(json!(EndpointInfoResponse { value }))
}

async fn delete_endpoint(p: &Plugin, req: EndpointRequest) -> HandlerResult {
    check_id("endpoint", &req.endpoint_id)?;
    match p.backend.detach(&req.endpoint_id).await {
        Ok(()) => Ok(json!({})),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(json!({})),
        Err(e) => Err(e.into()),
    }
}

async fn join(p: &Plugin, req: JoinRequest) -> HandlerResult {
    let network = network_of(p, &req.network_id).await?;
    check_id("endpoint", &req.endpoint_id)?;
    let ep = p.backend.endpoint(&req.endpoint_id).await?;
    if ep.network != network.id {
        return Err(invalid(format!(
            "endpoint {} is not on network {:?}",
            ep.id, network.name
        )));
    }
    let names = p.backend.endpoint_ifnames(&ep.id);
    Ok(json!(JoinResponse {
        interface_name: InterfaceName {
            src_name: names.peer,
            dst_prefix: "eth".into(),
        },
        gateway: network.gateway.to_string(),
        disable_gateway_service: true,
    }))
}

async fn leave(p: &Plugin, req: EndpointRequest) -> HandlerResult {
    network_of(p, &req.network_id).await?;
    Ok(json!({}))
}

// ----- IPAM -----

async fn request_pool(p: &Plugin, req: RequestPoolRequest) -> HandlerResult {
    if req.v6 {
        return Err(invalid("SocketPlane networks are IPv4 only: drop --ipv6"));
    }
    if req.pool.is_empty() {
        return Err(invalid(
            "the SocketPlane IPAM driver needs a subnet: pass --subnet",
        ));
    }
    if !req.sub_pool.is_empty() {
        return Err(invalid(
            "the SocketPlane IPAM driver does not support --ip-range",
        ));
    }
    let subnet = parse_subnet(&req.pool).map_err(socketplane_cluster::Error::from)?;
    let nets = p.backend.networks().await?;
    if !nets.iter().any(|n| n.subnet == subnet) {
        if let Some(other) = nets.iter().find(|n| overlaps(n.subnet, subnet)) {
            return Err(invalid(format!(
                "subnet {subnet} overlaps SocketPlane network {:?} ({})",
                other.name, other.subnet
            )));
        }
    }
    Ok(json!(RequestPoolResponse {
        pool_id: subnet.to_string(),
        pool: subnet.to_string(),
        data: Default::default(),
    }))
}

fn pool_subnet(pool_id: &str) -> Result<Ipv4Net> {
    parse_subnet(pool_id).map_err(|_| invalid(format!("unknown SocketPlane pool id {pool_id:?}")))
}

async fn request_address(p: &Plugin, req: RequestAddressRequest) -> HandlerResult {
    let subnet = pool_subnet(&req.pool_id)?;
    let wanted = if req.address.is_empty() {
        None
    } else {
        Some(parse_ip("address", &req.address)?)
    };
    let network = network_by_subnet(p, subnet).await?;
    let is_gateway =
        req.options.get(REQUEST_ADDRESS_TYPE).map(String::as_str) == Some(GATEWAY_ADDRESS_TYPE);
    if is_gateway {
        let gateway = match (&network, wanted) {
            (Some(n), Some(w)) if w != n.gateway => {
                return Err(invalid(format!(
                    "SocketPlane network {:?} has gateway {}, not {w}",
                    n.name, n.gateway
                )))
            }
            (Some(n), _) => n.gateway,
            (None, w) => Pool::new(subnet, w)
                .map_err(socketplane_cluster::Error::from)?
                .gateway(),
        };
        return Ok(json!(RequestAddressResponse {
            address: cidr(gateway, subnet),
            data: Default::default(),
        }));
    }
    let Some(network) = network else {
        return Err(invalid(format!(
            "no SocketPlane network has subnet {subnet}"
        )));
    };
    let ip = p.backend.reserve_address(&network.id, wanted).await?;
    Ok(json!(RequestAddressResponse {
        address: cidr(ip, subnet),
        data: Default::default(),
    }))
}

async fn release_address(p: &Plugin, req: ReleaseAddressRequest) -> HandlerResult {
    let subnet = pool_subnet(&req.pool_id)?;
    let ip = parse_ip("address", &req.address)?;
    let Some(network) = network_by_subnet(p, subnet).await? else {
        return Ok(json!({}));
    };
    if ip != network.gateway {
        p.backend.release_reservation(&network.id, ip).await?;
    }
    Ok(json!({}))
}
