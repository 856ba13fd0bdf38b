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
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use socketplane_api::rest::{AttachEndpoint, CreateNetwork};
use socketplane_api::{MacAddr, NetworkRecord};
use socketplane_ipam::{overlaps, parse_subnet, Pool};

use super::network_key;
use super::protocol::*;
use crate::agent::Agent;
use crate::error::OpError;
use crate::ops::Ops;

/// Docker's requests are small; anything bigger is refused.
pub const MAX_BODY: usize = 64 * 1024;
/// How long CreateEndpoint waits for the local datapath to create the veth.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(15);

pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .fallback(dispatch)
        .layer(DefaultBodyLimit::disable())
        .with_state(agent)
}

/// What a Docker network id maps to (the value of [`network_key`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkMapping {
    /// The cluster network's name.
    pub network: String,
    /// True when this Docker network created the cluster network; deleting
    /// it then deletes the cluster network too (if no endpoint is left).
    pub created: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Network,
    Ipam,
}

type HandlerResult = Result<Value, String>;

/// The cluster name of a network created from Docker before its Docker
/// name is known (the mirror renames it): `docker-` and 12 digits of the id.
pub fn placeholder_name(docker_id: &str) -> String {
    format!("docker-{}", docker_id.chars().take(12).collect::<String>())
}

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

async fn dispatch(
    State(agent): State<Arc<Agent>>,
    method: Method,
    uri: Uri,
    body: Body,
) -> Response {
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
                Ok(req) => $handler(&agent, req).await,
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

fn ops(agent: &Agent) -> Result<&Arc<Ops>, String> {
    agent.ops().map_err(|e| e.to_string())
}

fn check_id(kind: &str, id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("invalid Docker {kind} id {id:?}"));
    }
    Ok(())
}

/// "10.0.0.5" or "10.0.0.5/24".
fn parse_ip(what: &str, s: &str) -> Result<Ipv4Addr, String> {
    let addr = s.split_once('/').map(|(a, _)| a).unwrap_or(s);
    addr.parse()
        .map_err(|_| format!("invalid {what} {s:?}: SocketPlane networks are IPv4 only"))
}

fn cidr(ip: Ipv4Addr, subnet: Ipv4Net) -> String {
    format!("{ip}/{}", subnet.prefix_len())
}

async fn mapping(agent: &Agent, docker_id: &str) -> Result<Option<NetworkMapping>, String> {
    let ops = ops(agent)?;
    let kv = ops
        .store()
        .get(&network_key(agent.node_id(), docker_id))
        .await
        .map_err(|e| e.to_string())?;
    match kv {
        Some(kv) => serde_json::from_slice(&kv.value)
            .map(Some)
            .map_err(|e| format!("the record of Docker network {docker_id} does not parse: {e}")),
        None => Ok(None),
    }
}

/// The cluster network behind a Docker network id.
async fn network_of(agent: &Agent, docker_id: &str) -> Result<NetworkRecord, String> {
    check_id("network", docker_id)?;
    let Some(m) = mapping(agent, docker_id).await? else {
        return Err(format!(
            "unknown Docker network id {docker_id:?}: it was not created with the SocketPlane driver on this host"
        ));
    };
    match ops(agent)?.get_network(&m.network).await {
        Ok((n, _)) => Ok(n),
        Err(OpError::NotFound(_)) => Err(format!(
            "SocketPlane network {:?} (of Docker network {docker_id}) no longer exists",
            m.network
        )),
        Err(e) => Err(e.to_string()),
    }
}

async fn network_by_subnet(
    agent: &Agent,
    subnet: Ipv4Net,
) -> Result<Option<NetworkRecord>, String> {
    let nets = ops(agent)?
        .list_networks()
        .await
        .map_err(|e| e.to_string())?;
    Ok(nets.into_iter().find(|n| n.subnet == subnet))
}

// ----- network driver -----

async fn create_network(agent: &Agent, req: CreateNetworkRequest) -> HandlerResult {
    check_id("network", &req.network_id)?;
    let ops = ops(agent)?;
    if mapping(agent, &req.network_id).await?.is_some() {
        return Ok(json!({}));
    }
    if !req.ipv6_data.is_empty() {
        return Err("SocketPlane networks are IPv4 only: drop --ipv6".into());
    }
    let [data] = req.ipv4_data.as_slice() else {
        return Err(format!(
            "a SocketPlane network has exactly one IPv4 subnet; got {}",
            req.ipv4_data.len()
        ));
    };
    let subnet = parse_subnet(&data.pool).map_err(|e| e.to_string())?;
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
    let record = match network_by_subnet(agent, subnet).await? {
        Some(existing) => {
            if gateway.is_some_and(|g| g != existing.gateway) {
                return Err(format!(
                    "SocketPlane network {:?} with subnet {subnet} has gateway {}",
                    existing.name, existing.gateway
                ));
            }
            NetworkMapping {
                network: existing.name,
                created: false,
            }
        }
        None => {
            let name = option("name").unwrap_or_else(|| placeholder_name(&req.network_id));
            let mtu = match option("mtu") {
                Some(m) => Some(m.parse().map_err(|_| format!("invalid mtu option {m:?}"))?),
                None => None,
            };
            let create = CreateNetwork {
                name: name.clone(),
                subnet: subnet.to_string(),
                gateway,
                mtu,
            };
            ops.create_network(&create)
                .await
                .map_err(|e| e.to_string())?;
            NetworkMapping {
                network: name,
                created: true,
            }
        }
    };
    let value = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
    ops.store()
        .put(&network_key(agent.node_id(), &req.network_id), value)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(docker_network = %req.network_id, network = %record.network, created = record.created, "Docker network mapped.");
    Ok(json!({}))
}

async fn delete_network(agent: &Agent, req: NetworkRequest) -> HandlerResult {
    check_id("network", &req.network_id)?;
    let ops = ops(agent)?;
    let Some(m) = mapping(agent, &req.network_id).await? else {
        return Ok(json!({}));
    };
    ops.store()
        .delete(&network_key(agent.node_id(), &req.network_id))
        .await
        .map_err(|e| e.to_string())?;
    if m.created {
        match ops.delete_network(&m.network, false).await {
            Ok(_) | Err(OpError::NotFound(_)) => {}
            Err(e) => {
                tracing::info!(network = %m.network, reason = %e, "Keeping the cluster network of a deleted Docker network.")
            }
        }
    }
    Ok(json!({}))
}

async fn create_endpoint(agent: &Agent, req: CreateEndpointRequest) -> HandlerResult {
    let network = network_of(agent, &req.network_id).await?;
    check_id("endpoint", &req.endpoint_id)?;
    let ops = ops(agent)?;
    let iface = req.interface.unwrap_or_default();
    if !iface.address_ipv6.is_empty() {
        return Err("SocketPlane networks are IPv4 only".into());
    }
    let ip = if iface.address.is_empty() {
        None
    } else {
        Some(parse_ip("address", &iface.address)?)
    };
    let attach = AttachEndpoint {
        network: network.name.clone(),
        ip,
        ..Default::default()
    };
    let (record, revision) = ops
        .attach_reserved(&attach, req.endpoint_id.clone())
        .await
        .map_err(|e| e.to_string())?;
    if let Err(e) = agent.wait_applied(revision, CONVERGE_TIMEOUT).await {
        let _ = ops.detach(&record.id).await;
        return Err(format!("the datapath did not create the interface: {e}"));
    }
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

async fn endpoint_info(agent: &Agent, req: EndpointRequest) -> HandlerResult {
    let mut value = std::collections::BTreeMap::new();
    if let Ok((ep, _)) = ops(agent)?.get_endpoint(&req.endpoint_id).await {
        value.insert("network".to_string(), ep.network);
        value.insert("ip".to_string(), ep.ip.to_string());
        value.insert("mac".to_string(), ep.mac.to_string());
    }
    Ok(json!(EndpointInfoResponse { value }))
}

async fn delete_endpoint(agent: &Agent, req: EndpointRequest) -> HandlerResult {
    check_id("endpoint", &req.endpoint_id)?;
    match ops(agent)?.detach(&req.endpoint_id).await {
        Ok(_) | Err(OpError::NotFound(_)) => Ok(json!({})),
        Err(e) => Err(e.to_string()),
    }
}

async fn join(agent: &Agent, req: JoinRequest) -> HandlerResult {
    let network = network_of(agent, &req.network_id).await?;
    check_id("endpoint", &req.endpoint_id)?;
    let (ep, _) = ops(agent)?
        .get_endpoint(&req.endpoint_id)
        .await
        .map_err(|e| e.to_string())?;
    if ep.network != network.name {
        return Err(format!(
            "endpoint {} is on network {:?}, not {:?}",
            ep.id, ep.network, network.name
        ));
    }
    let names = agent.datapath().endpoint_ifnames(&ep.id);
    Ok(json!(JoinResponse {
        interface_name: InterfaceName {
            src_name: names.peer,
            dst_prefix: "eth".into(),
        },
        gateway: network.gateway.to_string(),
        disable_gateway_service: true,
    }))
}

async fn leave(agent: &Agent, req: EndpointRequest) -> HandlerResult {
    network_of(agent, &req.network_id).await?;
    Ok(json!({}))
}

// ----- IPAM -----

async fn request_pool(agent: &Agent, req: RequestPoolRequest) -> HandlerResult {
    if req.v6 {
        return Err("SocketPlane networks are IPv4 only: drop --ipv6".into());
    }
    if req.pool.is_empty() {
        return Err("the SocketPlane IPAM driver needs a subnet: pass --subnet".into());
    }
    if !req.sub_pool.is_empty() {
        return Err("the SocketPlane IPAM driver does not support --ip-range".into());
    }
    let subnet = parse_subnet(&req.pool).map_err(|e| e.to_string())?;
    let nets = ops(agent)?
        .list_networks()
        .await
        .map_err(|e| e.to_string())?;
    if !nets.iter().any(|n| n.subnet == subnet) {
        if let Some(other) = nets.iter().find(|n| overlaps(n.subnet, subnet)) {
            return Err(format!(
                "subnet {subnet} overlaps SocketPlane network {:?} ({})",
                other.name, other.subnet
            ));
        }
    }
    Ok(json!(RequestPoolResponse {
        pool_id: subnet.to_string(),
        pool: subnet.to_string(),
        data: Default::default(),
    }))
}

fn pool_subnet(pool_id: &str) -> Result<Ipv4Net, String> {
    parse_subnet(pool_id).map_err(|_| format!("unknown SocketPlane pool id {pool_id:?}"))
}

async fn request_address(agent: &Agent, req: RequestAddressRequest) -> HandlerResult {
    let subnet = pool_subnet(&req.pool_id)?;
    let wanted = if req.address.is_empty() {
        None
    } else {
        Some(parse_ip("address", &req.address)?)
    };
    let network = network_by_subnet(agent, subnet).await?;
    let is_gateway =
        req.options.get(REQUEST_ADDRESS_TYPE).map(String::as_str) == Some(GATEWAY_ADDRESS_TYPE);
    if is_gateway {
        let gateway = match (&network, wanted) {
            (Some(n), Some(w)) if w != n.gateway => {
                return Err(format!(
                    "SocketPlane network {:?} has gateway {}, not {w}",
                    n.name, n.gateway
                ))
            }
            (Some(n), _) => n.gateway,
            (None, w) => Pool::new(subnet, w).map_err(|e| e.to_string())?.gateway(),
        };
        return Ok(json!(RequestAddressResponse {
            address: cidr(gateway, subnet),
            data: Default::default(),
        }));
    }
    let Some(network) = network else {
        return Err(format!("no SocketPlane network has subnet {subnet}"));
    };
    let ip = ops(agent)?
        .reserve_address(&network.name, wanted)
        .await
        .map_err(|e| e.to_string())?;
    Ok(json!(RequestAddressResponse {
        address: cidr(ip, subnet),
        data: Default::default(),
    }))
}

async fn release_address(agent: &Agent, req: ReleaseAddressRequest) -> HandlerResult {
    let subnet = pool_subnet(&req.pool_id)?;
    let ip = parse_ip("address", &req.address)?;
    let Some(network) = network_by_subnet(agent, subnet).await? else {
        return Ok(json!({}));
    };
    if ip != network.gateway {
        ops(agent)?
            .release_reservation(&network.name, ip)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(json!({}))
}
