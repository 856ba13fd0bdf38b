//! The narrow handle the Docker front end works through: exactly what the
//! plugin and the mirror need from the cluster and this host's datapath.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use socketplane_api::rest::{AttachEndpoint, CreateNetwork};
use socketplane_api::{keys, DockerNetworkRecord, EndpointRecord, NetworkRecord};
use socketplane_cluster::reservations::Reservation;
use socketplane_cluster::{Cluster, Result};
use socketplane_datapath::{Datapath, EndpointIfnames};

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    fn node_id(&self) -> &str;
    /// `Unavailable` until this node is a cluster member.
    fn member(&self) -> Result<()>;

    async fn networks(&self) -> Result<Vec<NetworkRecord>>;
    /// A network by id.
    async fn network(&self, id: &str) -> Result<NetworkRecord>;
    async fn create_network(&self, req: &CreateNetwork) -> Result<NetworkRecord>;
    /// Deletes a network (by id) that has no endpoints.
    async fn delete_network(&self, id: &str) -> Result<()>;
    async fn rename_network(&self, id: &str, name: &str) -> Result<NetworkRecord>;

    async fn reserve_address(&self, network: &str, ip: Option<Ipv4Addr>) -> Result<Ipv4Addr>;
    async fn release_reservation(&self, network: &str, ip: Ipv4Addr) -> Result<bool>;
    async fn own_reservations(&self) -> Result<Vec<Reservation>>;

    /// Records the endpoint (on a reservation of `req.ip` if this node holds
    /// one) and waits until this host's datapath has made its interface.
    async fn attach_reserved(
        &self,
        req: &AttachEndpoint,
        id: String,
        timeout: Duration,
    ) -> Result<EndpointRecord>;
    async fn detach(&self, id: &str) -> Result<()>;
    async fn endpoint(&self, id: &str) -> Result<EndpointRecord>;
    /// This node's endpoints.
    async fn own_endpoints(&self) -> Result<Vec<EndpointRecord>>;
    async fn set_endpoint_owner(
        &self,
        id: &str,
        name: Option<String>,
        container_id: Option<String>,
        aliases: Vec<String>,
    ) -> Result<()>;
    /// The interface names this host's datapath gives an endpoint.
    fn endpoint_ifnames(&self, id: &str) -> EndpointIfnames;

    /// What a Docker network id on this node maps to.
    async fn mapping(&self, docker_id: &str) -> Result<Option<DockerNetworkRecord>>;
    /// Every mapping of this node, by Docker network id.
    async fn mappings(&self) -> Result<HashMap<String, DockerNetworkRecord>>;
    async fn put_mapping(&self, docker_id: &str, mapping: &DockerNetworkRecord) -> Result<()>;
    async fn delete_mapping(&self, docker_id: &str) -> Result<()>;
}

/// The [`Backend`] of a running agent.
pub struct ClusterBackend {
    cluster: Arc<Cluster>,
    datapath: Arc<dyn Datapath>,
}

impl ClusterBackend {
    pub fn new(cluster: Arc<Cluster>, datapath: Arc<dyn Datapath>) -> Self {
        ClusterBackend { cluster, datapath }
    }

    fn cluster(&self) -> Result<&Cluster> {
        self.cluster.member()
    }
}

fn encode(mapping: &DockerNetworkRecord) -> Result<Vec<u8>> {
    serde_json::to_vec(mapping).map_err(socketplane_cluster::Error::Encode)
}

fn decode(key: &str, value: &[u8]) -> Result<DockerNetworkRecord> {
    serde_json::from_slice(value).map_err(|source| socketplane_cluster::Error::Decode {
        key: key.to_string(),
        source,
    })
}

#[async_trait]
impl Backend for ClusterBackend {
    fn node_id(&self) -> &str {
        self.cluster.node_id()
    }
    fn member(&self) -> Result<()> {
        self.cluster().map(|_| ())
    }
    async fn networks(&self) -> Result<Vec<NetworkRecord>> {
        self.cluster()?.list_networks().await
    }
    async fn network(&self, id: &str) -> Result<NetworkRecord> {
        Ok(self.cluster()?.get_network(id).await?.0)
    }
    async fn create_network(&self, req: &CreateNetwork) -> Result<NetworkRecord> {
        self.cluster()?.create_network(req).await
    }
    async fn delete_network(&self, id: &str) -> Result<()> {
        self.cluster()?.delete_network(id, false).await.map(|_| ())
    }
    async fn rename_network(&self, id: &str, name: &str) -> Result<NetworkRecord> {
        self.cluster()?.rename_network(id, name).await
    }
    async fn reserve_address(&self, network: &str, ip: Option<Ipv4Addr>) -> Result<Ipv4Addr> {
        self.cluster()?.reserve_address(network, ip).await
    }
    async fn release_reservation(&self, network: &str, ip: Ipv4Addr) -> Result<bool> {
        self.cluster()?.release_reservation(network, ip).await
    }
    async fn own_reservations(&self) -> Result<Vec<Reservation>> {
        self.cluster()?.own_reservations().await
    }
    async fn attach_reserved(
        &self,
        req: &AttachEndpoint,
        id: String,
        timeout: Duration,
    ) -> Result<EndpointRecord> {
        let cluster = self.cluster()?;
        let (record, revision) = cluster.attach_reserved(req, id).await?;
        if let Err(e) = cluster.wait_applied(revision, timeout).await {
            let _ = cluster.detach(&record.id).await;
            return Err(e);
        }
        Ok(record)
    }
    async fn detach(&self, id: &str) -> Result<()> {
        self.cluster()?.detach(id).await.map(|_| ())
    }
    async fn endpoint(&self, id: &str) -> Result<EndpointRecord> {
        Ok(self.cluster()?.get_endpoint(id).await?.0)
    }
    async fn own_endpoints(&self) -> Result<Vec<EndpointRecord>> {
        let node = self.node_id().to_string();
        Ok(self
            .cluster()?
            .list_endpoints()
            .await?
            .into_iter()
            .filter(|e| e.node == node)
            .collect())
    }
    async fn set_endpoint_owner(
        &self,
        id: &str,
        name: Option<String>,
        container_id: Option<String>,
        aliases: Vec<String>,
    ) -> Result<()> {
        self.cluster()?
            .set_endpoint_owner(id, name, container_id, aliases)
            .await
    }
    fn endpoint_ifnames(&self, id: &str) -> EndpointIfnames {
        self.datapath.endpoint_ifnames(id)
    }
    async fn mapping(&self, docker_id: &str) -> Result<Option<DockerNetworkRecord>> {
        let key = keys::docker_network(self.node_id(), docker_id);
        match self.cluster()?.store().get(&key).await? {
            Some(kv) => Ok(Some(decode(&key, &kv.value)?)),
            None => Ok(None),
        }
    }
    async fn mappings(&self) -> Result<HashMap<String, DockerNetworkRecord>> {
        let listing = self
            .cluster()?
            .store()
            .list(&keys::docker_networks(self.node_id()))
            .await?;
        Ok(listing
            .kvs
            .iter()
            .filter_map(|kv| {
                let id = kv.key.rsplit('/').next()?.to_string();
                Some((id, decode(&kv.key, &kv.value).ok()?))
            })
            .collect())
    }
    async fn put_mapping(&self, docker_id: &str, mapping: &DockerNetworkRecord) -> Result<()> {
        let key = keys::docker_network(self.node_id(), docker_id);
        self.cluster()?.store().put(&key, encode(mapping)?).await?;
        Ok(())
    }
    async fn delete_mapping(&self, docker_id: &str) -> Result<()> {
        let key = keys::docker_network(self.node_id(), docker_id);
        self.cluster()?.store().delete(&key).await?;
        Ok(())
    }
}
