//! The libnetwork remote driver and remote IPAM protocols: JSON bodies
//! POSTed by dockerd to `/NetworkDriver.*` and `/IpamDriver.*`. Field names
//! are Docker's (PascalCase); unknown fields are ignored, missing ones
//! default, so newer Docker versions keep working.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `Options` maps of the requests: arbitrary JSON values.
pub type Options = BTreeMap<String, Value>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActivateResponse {
    pub implements: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CapabilitiesResponse {
    pub scope: String,
    pub connectivity_scope: String,
}

/// One address pool of a network as Docker's IPAM handed it out.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    pub address_space: String,
    /// CIDR.
    pub pool: String,
    /// CIDR: gateway address with the pool's prefix length.
    pub gateway: String,
    pub aux_addresses: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateNetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    pub options: Options,
    #[serde(rename = "IPv4Data", deserialize_with = "null_as_default")]
    pub ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data", deserialize_with = "null_as_default")]
    pub ipv6_data: Vec<IpamData>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// DeleteEndpoint, EndpointOperInfo, Leave, RevokeExternalConnectivity;
/// Join and ProgramExternalConnectivity add fields we do not need.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointInterface {
    /// CIDR; empty when Docker has none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(rename = "AddressIPv6", skip_serializing_if = "String::is_empty")]
    pub address_ipv6: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateEndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(deserialize_with = "null_as_default")]
    pub interface: Option<EndpointInterface>,
    #[serde(deserialize_with = "null_as_default")]
    pub options: Options,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpointResponse {
    /// Only what Docker did not give; `None` when it gave everything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<EndpointInterface>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointInfoResponse {
    pub value: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JoinRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub sandbox_key: String,
    #[serde(deserialize_with = "null_as_default")]
    pub options: Options,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    /// The interface in the host namespace Docker moves into the sandbox.
    pub src_name: String,
    /// Docker renames it to this prefix plus a number (eth0, eth1, ...).
    pub dst_prefix: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinResponse {
    pub interface_name: InterfaceName,
    /// Without prefix length.
    pub gateway: String,
    /// True: Docker adds no gateway bridge (docker_gwbridge) of its own.
    pub disable_gateway_service: bool,
}

// ----- IPAM -----

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamCapabilitiesResponse {
    #[serde(rename = "RequiresMACAddress")]
    pub requires_mac_address: bool,
    pub requires_request_replay: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressSpacesResponse {
    pub local_default_address_space: String,
    pub global_default_address_space: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPoolRequest {
    pub address_space: String,
    pub pool: String,
    pub sub_pool: String,
    #[serde(deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, String>,
    pub v6: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPoolResponse {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub pool: String,
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleasePoolRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestAddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// A specific address (`docker run --ip`, `--gateway`), or empty.
    pub address: String,
    #[serde(deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestAddressResponse {
    /// CIDR.
    pub address: String,
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleaseAddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
}

/// `RequestAddress` option key and value marking the gateway request.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
pub const GATEWAY_ADDRESS_TYPE: &str = "com.docker.network.gateway";
/// Where Docker puts `docker network create -o KEY=VALUE` options.
pub const GENERIC_OPTIONS: &str = "com.docker.network.generic";

/// Go encodes nil maps and slices as `null`.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_requests_with_nulls() {
        let r: CreateNetworkRequest = serde_json::from_str(
            r#"{"NetworkID":"abc","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{"name":"blue"}},
               "IPv4Data":[{"AddressSpace":"x","Gateway":"10.30.0.1/24","Pool":"10.30.0.0/24"}],"IPv6Data":null}"#,
        )
        .unwrap();
        assert_eq!(r.network_id, "abc");
        assert_eq!(r.ipv4_data[0].pool, "10.30.0.0/24");
        assert!(r.ipv6_data.is_empty());
        let e: CreateEndpointRequest = serde_json::from_str(
            r#"{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"10.30.0.2/24","AddressIPv6":"","MacAddress":""},"Options":null}"#,
        )
        .unwrap();
        assert_eq!(e.interface.unwrap().address, "10.30.0.2/24");
        let a: RequestAddressRequest =
            serde_json::from_str(r#"{"PoolID":"p","Address":"","Options":null}"#).unwrap();
        assert!(a.options.is_empty());
    }

    #[test]
    fn responses_use_docker_field_names() {
        let j = serde_json::to_value(JoinResponse {
            interface_name: InterfaceName {
                src_name: "spp1".into(),
                dst_prefix: "eth".into(),
            },
            gateway: "10.30.0.1".into(),
            disable_gateway_service: true,
        })
        .unwrap();
        assert_eq!(j["InterfaceName"]["SrcName"], "spp1");
        assert_eq!(j["DisableGatewayService"], true);
        let p = serde_json::to_value(RequestPoolResponse::default()).unwrap();
        assert!(p.get("PoolID").is_some());
        let c = serde_json::to_value(CreateEndpointResponse {
            interface: Some(EndpointInterface {
                mac_address: "02:53:0a:1e:00:02".into(),
                ..Default::default()
            }),
        })
        .unwrap();
        assert_eq!(
            c,
            serde_json::json!({"Interface": {"MacAddress": "02:53:0a:1e:00:02"}})
        );
    }
}
