//! Property tests of the Docker plugin protocol: whatever body arrives at
//! any plugin method (arbitrary bytes, or a valid request with bytes
//! changed or cut), the plugin answers with a JSON error or result and a
//! known status, never a panic. The backend is a stand-in that knows one
//! network and refuses every write.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use socketplane_api::rest::{AttachEndpoint, CreateNetwork};
use socketplane_api::{DockerNetworkRecord, EndpointRecord, NetworkRecord};
use socketplane_cluster::reservations::Reservation;
use socketplane_cluster::{Error, Result};
use socketplane_datapath::EndpointIfnames;
use socketplane_docker::plugin::{router, Plugin};
use socketplane_docker::Backend;
use tower::ServiceExt;

struct OneNetwork;

fn net() -> NetworkRecord {
    NetworkRecord {
        id: "0123456789abcdef".into(),
        name: "web".into(),
        subnet: "10.5.0.0/24".parse().unwrap(),
        gateway: Ipv4Addr::new(10, 5, 0, 1),
        vni: 100,
        mtu: None,
        mode: Default::default(),
    }
}

fn refused<T>() -> Result<T> {
    Err(Error::Unavailable("the test backend refuses writes".into()))
}

#[async_trait]
impl Backend for OneNetwork {
    fn node_id(&self) -> &str {
        "node1"
    }
    fn member(&self) -> Result<()> {
        Ok(())
    }
    async fn networks(&self) -> Result<Vec<NetworkRecord>> {
        Ok(vec![net()])
    }
    async fn network(&self, id: &str) -> Result<NetworkRecord> {
        if id == net().id {
            Ok(net())
        } else {
            Err(Error::NotFound(format!("no network {id:?}")))
        }
    }
    async fn create_network(&self, _: &CreateNetwork) -> Result<NetworkRecord> {
        refused()
    }
    async fn delete_network(&self, _: &str) -> Result<()> {
        refused()
    }
    async fn rename_network(&self, _: &str, _: &str) -> Result<NetworkRecord> {
        refused()
    }
    async fn reserve_address(&self, _: &str, _: Option<Ipv4Addr>) -> Result<Ipv4Addr> {
        refused()
    }
    async fn release_reservation(&self, _: &str, _: Ipv4Addr) -> Result<bool> {
        refused()
    }
    async fn own_reservations(&self) -> Result<Vec<Reservation>> {
        Ok(Vec::new())
    }
    async fn attach_reserved(
        &self,
        _: &AttachEndpoint,
        _: String,
        _: Duration,
    ) -> Result<EndpointRecord> {
        refused()
    }
    async fn detach(&self, _: &str) -> Result<()> {
        refused()
    }
    async fn endpoint(&self, id: &str) -> Result<EndpointRecord> {
        Err(Error::NotFound(format!("no endpoint {id:?}")))
    }
    async fn own_endpoints(&self) -> Result<Vec<EndpointRecord>> {
        Ok(Vec::new())
    }
    async fn set_endpoint_owner(
        &self,
        _: &str,
        _: Option<String>,
        _: Option<String>,
        _: Vec<String>,
    ) -> Result<()> {
        refused()
    }
    fn endpoint_ifnames(&self, id: &str) -> EndpointIfnames {
        let short: String = id.chars().take(8).collect();
        EndpointIfnames {
            host: format!("vh{short}"),
            peer: format!("vp{short}"),
        }
    }
    async fn mapping(&self, _: &str) -> Result<Option<DockerNetworkRecord>> {
        Ok(Some(DockerNetworkRecord {
            network: net().id,
            created: false,
        }))
    }
    async fn mappings(&self) -> Result<HashMap<String, DockerNetworkRecord>> {
        Ok(HashMap::new())
    }
    async fn put_mapping(&self, _: &str, _: &DockerNetworkRecord) -> Result<()> {
        refused()
    }
    async fn delete_mapping(&self, _: &str) -> Result<()> {
        refused()
    }
}

const NET: &str = "d0cker0000000000000000000000000000000000000000000000000000000001";
const EP: &str = "e0000000000000000000000000000000000000000000000000000000000000001";

/// Every method with a valid request body, as Docker sends them.
fn methods() -> Vec<(&'static str, String)> {
    let ep = format!(r#"{{"NetworkID":"{NET}","EndpointID":"{EP}"}}"#);
    vec![
        ("Plugin.Activate", String::new()),
        ("NetworkDriver.GetCapabilities", String::new()),
        (
            "NetworkDriver.CreateNetwork",
            format!(
                r#"{{"NetworkID":"{NET}","Options":{{"com.docker.network.generic":{{"a":"b"}}}},"IPv4Data":[{{"AddressSpace":"socketplane-global","Pool":"10.5.0.0/24","Gateway":"10.5.0.1/24","AuxAddresses":{{}}}}],"IPv6Data":null}}"#
            ),
        ),
        (
            "NetworkDriver.DeleteNetwork",
            format!(r#"{{"NetworkID":"{NET}"}}"#),
        ),
        (
            "NetworkDriver.CreateEndpoint",
            format!(
                r#"{{"NetworkID":"{NET}","EndpointID":"{EP}","Interface":{{"Address":"10.5.0.7/24","MacAddress":"02:42:0a:05:00:07"}},"Options":null}}"#
            ),
        ),
        ("NetworkDriver.EndpointOperInfo", ep.clone()),
        ("NetworkDriver.DeleteEndpoint", ep.clone()),
        (
            "NetworkDriver.Join",
            format!(
                r#"{{"NetworkID":"{NET}","EndpointID":"{EP}","SandboxKey":"/var/run/docker/netns/x","Options":{{}}}}"#
            ),
        ),
        ("NetworkDriver.Leave", ep),
        ("NetworkDriver.DiscoverNew", "{}".into()),
        ("IpamDriver.GetCapabilities", String::new()),
        ("IpamDriver.GetDefaultAddressSpaces", String::new()),
        (
            "IpamDriver.RequestPool",
            r#"{"AddressSpace":"socketplane-global","Pool":"10.5.0.0/24","SubPool":"","Options":{},"V6":false}"#.into(),
        ),
        ("IpamDriver.ReleasePool", r#"{"PoolID":"10.5.0.0/24"}"#.into()),
        (
            "IpamDriver.RequestAddress",
            r#"{"PoolID":"10.5.0.0/24","Address":"10.5.0.1","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#.into(),
        ),
        (
            "IpamDriver.ReleaseAddress",
            r#"{"PoolID":"10.5.0.0/24","Address":"10.5.0.7"}"#.into(),
        ),
    ]
}

/// Posts `body` to `method`; panics if the answer is not a JSON object
/// with a known status.
fn post(rt: &tokio::runtime::Runtime, method: &str, body: Vec<u8>) -> u16 {
    let plugin = Plugin {
        backend: Arc::new(OneNetwork),
        created: Default::default(),
    };
    rt.block_on(async {
        let req = Request::post(format!("/{method}"))
            .body(Body::from(body))
            .unwrap();
        let resp = router(plugin).oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method}: answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        assert!(v.is_object(), "{method}: {v}");
        assert!(
            [200, 400, 404, 413].contains(&status),
            "{method}: status {status}: {v}"
        );
        status
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn valid_requests_are_answered() {
    let rt = runtime();
    for (method, body) in methods() {
        assert_eq!(post(&rt, method, body.into_bytes()), 200, "{method}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_bodies_never_panic(
        which in any::<prop::sample::Index>(),
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let rt = runtime();
        let methods = methods();
        let (method, _) = &methods[which.index(methods.len())];
        post(&rt, method, body);
    }

    #[test]
    fn mutated_requests_never_panic(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let rt = runtime();
        let methods = methods();
        let (method, body) = &methods[which.index(methods.len())];
        let mut bytes = body.clone().into_bytes();
        if bytes.is_empty() {
            return Ok(());
        }
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        post(&rt, method, bytes.clone());
        post(&rt, method, bytes[..cut.index(bytes.len())].to_vec());
    }

    /// Well-formed JSON with arbitrary strings where ids, addresses and
    /// pools go.
    #[test]
    fn arbitrary_fields_never_panic(
        which in any::<prop::sample::Index>(),
        a in "\\PC{0,40}",
        b in "[0-9./:a-f]{0,24}",
    ) {
        let rt = runtime();
        let methods = methods();
        let (method, body) = &methods[which.index(methods.len())];
        let body = body
            .replace(NET, &a)
            .replace("10.5.0.7/24", &b)
            .replace("10.5.0.0/24", &b)
            .replace("02:42:0a:05:00:07", &b);
        post(&rt, method, body.into_bytes());
    }
}
