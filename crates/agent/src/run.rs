//! Wiring: builds the parts from the configuration, starts them in order
//! (datapath, store, cluster port, local API, Docker, HTTP, DNS, discovery, then
//! membership, which starts the reconciler), and stops them on SIGTERM,
//! SIGINT or `cluster leave`.

use std::net::SocketAddr;
use std::sync::Arc;

use socketplane_cluster::Cluster;
use socketplane_discovery::Advertisement;
use socketplane_store::Store;
use socketplane_store_raft::{EmbeddedConfig, EmbeddedStore};
use tokio::sync::{mpsc, Notify};

use crate::cluster_port::{self, ClusterPort};
use crate::config::AgentConfig;
use crate::enrollment::Standing;
use crate::error::{Error, Result};
use crate::host::{self, Identity};
use crate::membership::{parse_peer, Node};
use crate::observe::Observer;
use socketplane_observe::decorate::{ObservedDatapath, ObservedStore};
use socketplane_observe::HttpAddr;

/// TLS to etcd from `--etcd-ca/--etcd-cert/--etcd-key`.
fn etcd_tls(cfg: &AgentConfig) -> Result<Option<socketplane_store::etcd::EtcdTls>> {
    let files = &cfg.etcd_tls;
    let Some(ca) = &files.ca else {
        if files.cert.is_some() || files.key.is_some() {
            return Err(Error::Config(
                "--etcd-cert and --etcd-key need --etcd-ca".into(),
            ));
        }
        return Ok(None);
    };
    socketplane_store::etcd::EtcdTls::from_files(ca, files.cert.as_deref(), files.key.as_deref())
        .map(Some)
        .map_err(|source| Error::Store {
            what: "reading the etcd TLS files".into(),
            source,
        })
}

/// Opens the store backend named by `--store`.
async fn open_store(
    cfg: &AgentConfig,
    identity: &Identity,
    advertise: SocketAddr,
) -> Result<(Arc<dyn Store>, Option<Arc<EmbeddedStore>>)> {
    if cfg.store == socketplane_api::defaults::STORE {
        let mut config = EmbeddedConfig::new(
            identity.numeric_id(),
            cfg.cluster.clone(),
            cfg.data_dir.join("store"),
            advertise,
        );
        config.max_voters = cfg.max_voters;
        let store_dir = cfg.data_dir.join("store");
        let embedded = EmbeddedStore::open(config)
            .await
            .map_err(|source| match source {
                // One message that names the path and says what to do.
                socketplane_store::StoreError::Corrupt(why) => Error::Store {
                    what: format!(
                        "the store data in {} cannot be used; stop the agent, move that directory aside (mv {0} {0}.bad) and start it again to rejoin as a fresh member, or restore a backup",
                        store_dir.display()
                    ),
                    source: socketplane_store::StoreError::Corrupt(why),
                },
                source => Error::Store {
                    what: "opening the embedded store".into(),
                    source,
                },
            })?;
        let store: Arc<dyn Store> = embedded.clone();
        return Ok((store, Some(embedded)));
    }
    if cfg.store.starts_with("etcd://") || cfg.store.starts_with("etcds://") {
        let opts = socketplane_store::etcd::EtcdOptions {
            tls: etcd_tls(cfg)?,
            auth: cfg.etcd_auth.clone(),
            ..Default::default()
        };
        let etcd = socketplane_store::etcd::EtcdStore::from_url_with(&cfg.store, opts)
            .await
            .map_err(|source| Error::Store {
                what: format!("connecting to {}", cfg.store),
                source,
            })?;
        return Ok((Arc::new(etcd), None));
    }
    Err(Error::Config(format!(
        "unknown --store {:?}: use `embedded`, `etcd://host:port[,host:port]` or `etcds://…`",
        cfg.store
    )))
}

/// The Docker front end, if built in and configured. Stops and removes
/// its socket when dropped.
#[cfg(feature = "docker")]
async fn start_docker(
    cfg: &AgentConfig,
    node: &Node,
) -> Result<Option<socketplane_docker::PluginServer>> {
    let Some(socket) = &cfg.docker_plugin else {
        return Ok(None);
    };
    let backend = Arc::new(socketplane_docker::ClusterBackend::new(
        node.cluster.clone(),
        node.datapath.clone(),
    ));
    let config = socketplane_docker::PluginConfig {
        socket: socket.clone(),
        docker_host: socketplane_docker::mirror::docker_host(),
        stale_after: cfg.docker_stale_after,
    };
    socketplane_docker::serve(backend, config)
        .await
        .map(Some)
        .map_err(Error::Docker)
}

/// Stands in for the Docker plugin server when built without it.
#[cfg(not(feature = "docker"))]
struct NoDocker;

#[cfg(not(feature = "docker"))]
async fn start_docker(cfg: &AgentConfig, _node: &Node) -> Result<Option<NoDocker>> {
    if cfg.docker_plugin.is_some() {
        tracing::warn!("This agent is built without Docker support (cargo feature `docker`); not serving the Docker plugin.");
    }
    Ok(None)
}

/// Reads the cluster port's lists once: removed nodes (`cluster remove`,
/// refused from then on) and the certificates the cluster issued
/// (`trust/issued/`, the allowlist); from this node's own state with the
/// embedded store (at once after a restart, without a quorum), else from
/// the store.
async fn refresh_admission(
    store: &dyn Store,
    embedded: Option<&EmbeddedStore>,
    standing: &Standing,
) {
    use socketplane_api::keys;
    let (removed, issued, nodes) = (keys::removed(""), keys::issued(""), keys::nodes());
    let listed = match embedded {
        Some(e) => Some((
            e.local_list(&removed),
            e.local_list(&issued),
            e.local_list(&nodes),
        )),
        None => match (
            store.list(&removed).await,
            store.list(&issued).await,
            store.list(&nodes).await,
        ) {
            (Ok(r), Ok(i), Ok(n)) => Some((r, i, n)),
            _ => None,
        },
    };
    if let Some((r, i, n)) = listed {
        let ids = r
            .kvs
            .iter()
            .filter_map(|kv| kv.key.strip_prefix(&removed).map(str::to_string))
            .collect();
        standing.revoked.replace(ids);
        standing
            .issued
            .replace(crate::enrollment::issued_view(&i, &n));
    }
}

/// Keeps the cluster port's lists current: every second, and at once when
/// the port missed a certificate (which members are then asked about).
async fn keep_admission(
    store: Arc<dyn Store>,
    embedded: Option<Arc<EmbeddedStore>>,
    standing: Arc<Standing>,
) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = standing.issued.wanted() => {
                // At most ten refreshes a second on misses.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        refresh_admission(store.as_ref(), embedded.as_deref(), &standing).await;
        let missed = standing.issued.take_missed();
        if !missed.is_empty() {
            crate::enrollment::confirm_with_members(&standing, embedded.as_ref(), missed);
        }
    }
}

/// Runs the agent until SIGTERM/SIGINT or `cluster leave`.
pub async fn run(mut cfg: AgentConfig) -> Result<()> {
    if cfg.max_voters != 3 && cfg.max_voters != 5 {
        return Err(Error::Config("--voters must be 3 or 5".into()));
    }
    let identity = Identity::load_or_create(&cfg.data_dir, cfg.node_name.as_deref())?;
    if cfg.iface == socketplane_api::defaults::IFACE {
        if let Ok(bound) = std::fs::read_to_string(cfg.data_dir.join("iface")) {
            cfg.iface = bound.trim().to_string();
        }
    }
    let (iface, addr) = host::resolve_underlay(&cfg.iface)?;
    tracing::info!(node = %identity.name, id = %identity.id, %iface, %addr, cluster = %cfg.cluster, "Starting the agent.");
    let advertise = SocketAddr::from((addr, cfg.listen.port()));
    let observed = ObservedDatapath::new(
        crate::datapaths::select(&cfg.datapath, &iface, addr, &cfg.ovs, &cfg.data_dir).await?,
    );
    let datapath: Arc<dyn socketplane_datapath::Datapath> = observed.clone();
    let (store, embedded) = open_store(&cfg, &identity, advertise).await?;
    let member = embedded.as_ref().is_some_and(|e| e.is_member());
    let standing = Standing::prepare(
        &cfg.data_dir,
        &cfg.cluster,
        &identity.id,
        cfg.token.as_deref(),
        cfg.open,
        cfg.bootstrap,
        member,
    )?;
    if standing.open {
        tracing::warn!("OPEN CLUSTER (--open): no authentication on the cluster port; any host on this network can join and control the cluster.");
    }
    if let (Some(e), Some(tls)) = (&embedded, standing.client_tls()?) {
        e.set_client_tls(tls);
    }
    standing.use_store(store.clone());
    // Read once before the cluster port serves: a restarted node refuses
    // removed and unissued certificates from its first request.
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        refresh_admission(store.as_ref(), embedded.as_deref(), &standing),
    )
    .await;
    tokio::spawn(keep_admission(
        store.clone(),
        embedded.clone(),
        standing.clone(),
    ));
    // A full disk under the embedded store refuses writes with a clear
    // message before Raft would stop for good on it.
    let store = match &embedded {
        Some(_) => crate::disk_guard::DiskGuard::wrap(store, &cfg.data_dir.join("store")),
        None => store,
    };
    let store: Arc<dyn Store> = ObservedStore::new(store);
    let cluster = Arc::new(
        Cluster::new(store, identity.id.clone(), cfg.cluster.clone())
            .with_reclaim_after(cfg.reclaim_after),
    );
    let (join_tx, join_rx) = mpsc::unbounded_channel();
    // Resumed from the data dir (or on etcd, where every agent is one): a
    // member from the start, which mDNS says at once (and so never browses).
    let member_at_start = embedded.as_ref().is_none_or(|e| e.is_member());
    let (store_member, store_member_rx) = tokio::sync::watch::channel(member_at_start);
    let shutdown = Arc::new(Notify::new());
    let observer = Observer::start(cluster.clone(), observed, embedded.clone(), standing.open);
    let node = Arc::new(Node {
        cluster: cluster.clone(),
        identity: identity.clone(),
        iface: iface.clone(),
        addr,
        cluster_port: cfg.listen.port(),
        datapath,
        embedded: embedded.clone(),
        open_cluster: standing.open,
        standing: standing.clone(),
        data_dir: cfg.data_dir.clone(),
        lease_ttl: cfg.lease_ttl,
        join_tx: join_tx.clone(),
        shutdown: shutdown.clone(),
        observer: observer.clone(),
        store_member,
    });

    let cluster_server = cluster_port::serve(ClusterPort {
        listen: cfg.listen,
        standing: standing.clone(),
        cluster: cfg.cluster.clone(),
        node_id: identity.id.clone(),
        node_name: identity.name.clone(),
        ready: cluster.subscribe_ready(),
        store_routes: embedded.as_ref().map(|e| e.router()),
    })
    .await?;
    let api_server = crate::local_api::serve(&cfg.socket, cluster.clone(), node.clone()).await?;
    let docker_plugin = start_docker(&cfg, &node).await?;
    // Seeing the cluster must never stop the network: a taken port is
    // an error in the log, not a failed start.
    let http_server = match cfg.http {
        HttpAddr::On(addr) => match socketplane_observe::serve(addr, observer.clone()).await {
            Ok(h) => Some(h),
            Err(error) => {
                let error = Error::Observe(error);
                tracing::error!(error = %crate::report(&error), "Not serving metrics and the topology page.");
                None
            }
        },
        HttpAddr::Off => None,
    };
    let dns = crate::dns::start(&cfg.dns, cluster.clone());
    let discovery = if cfg.mdns {
        let ad = Advertisement {
            node_name: identity.name.clone(),
            node_id: identity.id.clone(),
            cluster: cfg.cluster.clone(),
            addr,
            port: cfg.listen.port(),
            iface: iface.clone(),
            member: member_at_start,
        };
        Some(crate::discovery::start(
            ad,
            join_tx.clone(),
            store_member_rx,
        )?)
    } else {
        None
    };
    if let Some(addr) = &cfg.join {
        let peer = parse_peer(addr).map_err(|e| Error::Config(format!("--join: {e}")))?;
        let _ = join_tx.send(crate::membership::JoinHint {
            addr: peer,
            member: true,
        });
    }
    let member = tokio::spawn(node.clone().become_member(cfg.bootstrap, join_rx));
    let trim = crate::memory::spawn_trim();

    let fatal = store_fatal(embedded.clone());
    let mut failed = None;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Error::io("installing the SIGTERM handler"))?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping; the datapath keeps forwarding."),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping; the datapath keeps forwarding."),
        _ = shutdown.notified() => {}
        why = fatal => failed = Some(why),
    }
    // Stop in reverse order.
    trim.abort();
    member.abort();
    if let Some(d) = discovery {
        // Sends goodbye packets; may block for a few seconds.
        let _ = tokio::task::spawn_blocking(move || d.shutdown()).await;
    }
    if let Some(d) = dns {
        d.abort();
    }
    drop(docker_plugin);
    if let Some(h) = http_server {
        h.abort();
    }
    api_server.abort();
    cluster_server.abort();
    let _ = std::fs::remove_file(&cfg.socket);
    if let Some(embedded) = &embedded {
        embedded.shutdown().await;
    }
    match failed {
        Some(why) => Err(Error::Store {
            what: "the embedded store stopped".into(),
            source: socketplane_store::StoreError::Internal(why),
        }),
        None => Ok(()),
    }
}

/// Resolves once the embedded store has stopped for good (never for etcd):
/// the agent then exits non-zero rather than stay up unable to write.
async fn store_fatal(embedded: Option<Arc<EmbeddedStore>>) -> String {
    let Some(embedded) = embedded else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if let Some(why) = embedded.fatal() {
            tracing::error!(error = %why, "The store failed for good (disk full or broken?); exiting so the supervisor restarts the agent.");
            return why;
        }
    }
}
