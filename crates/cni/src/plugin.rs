//! The commands, each a few calls to the local agent. The agent does the
//! plumbing (veth, address, route) and keeps the attachment as an endpoint
//! with origin `cni`, container id and ifname; the plugin finds it again
//! by those.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use socketplane_api::rest::{AgentInfo, AttachEndpoint, EndpointInfo, NetworkInfo};
use socketplane_api::ORIGIN_CNI;
use socketplane_client::{segment, Client, Error as ClientError};

use crate::error::{codes, CniError};
use crate::inspect;
use crate::spec::{self, Attached, Attachment, CniArgs, Command, Env, NetConf};

/// An ADD waits this long for the agent (which waits up to 15 s for its
/// datapath); DEL and the others for less.
const ADD_TIMEOUT: Duration = Duration::from_secs(30);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One invocation: the command, its environment and stdin.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub command: Command,
    pub env: Env,
    pub stdin: Vec<u8>,
}

/// What a failed invocation prints: the error and the version to print it in.
#[derive(Debug, Clone)]
pub struct Failure {
    pub error: CniError,
    pub cni_version: String,
}

/// Runs one command. `Ok(Some(json))` is printed on stdout; `Ok(None)`
/// prints nothing.
pub async fn run(inv: &Invocation) -> Result<Option<Value>, Failure> {
    let version = spec::peek_version(&inv.stdin)
        .filter(|v| spec::check_version(v).is_ok())
        .unwrap_or_else(|| spec::SPEC_VERSION.to_string());
    let fail = |error: CniError| Failure {
        error,
        cni_version: version.clone(),
    };
    if inv.command == Command::Version {
        return Ok(Some(serde_json::json!({
            "cniVersion": spec::SPEC_VERSION,
            "supportedVersions": spec::SUPPORTED_VERSIONS,
        })));
    }
    let conf = NetConf::parse(&inv.stdin).map_err(fail)?;
    let agent = Agent {
        client: Client::new(&conf.socket())
            .with_origin(concat!("socketplane-cni/", env!("CARGO_PKG_VERSION"))),
        network: conf.network().to_string(),
    };
    match inv.command {
        Command::Add => add(&agent, &conf, &inv.env).await.map(Some),
        Command::Del => del(&agent, &inv.env).await.map(|()| None),
        Command::Check => check(&agent, &conf, &inv.env).await.map(|()| None),
        Command::Gc => gc(&agent, &conf).await.map(|()| None),
        Command::Status => status(&agent).await.map(|()| None),
        Command::Version => unreachable!("answered above"),
    }
    .map_err(fail)
}

struct Agent {
    client: Client,
    network: String,
}

impl Agent {
    /// This host's CNI attachments of the network, optionally only those of
    /// one container interface.
    async fn attachments(&self, key: Option<(&str, &str)>) -> Result<Vec<EndpointInfo>, CniError> {
        let mut path = format!(
            "/v1/endpoints?local=true&origin={ORIGIN_CNI}&network={}",
            segment(&self.network)
        );
        if let Some((cid, ifname)) = key {
            path.push_str(&format!(
                "&container_id={}&ifname={}",
                segment(cid),
                segment(ifname)
            ));
        }
        call(CALL_TIMEOUT, "listing attachments", self.client.get(&path)).await
    }

    async fn detach(&self, id: &str) -> Result<(), CniError> {
        let path = format!("/v1/endpoints/{}", segment(id));
        // Already gone is what a detach wants.
        let gone_is_fine = async {
            match self.client.delete(&path).await {
                Err(ClientError::Agent { status: 404, .. }) => Ok(()),
                other => other,
            }
        };
        call(CALL_TIMEOUT, "detaching", gone_is_fine).await
    }
}

/// One agent call with a deadline, its failure as a CNI error.
async fn call<T>(
    timeout: Duration,
    what: &str,
    f: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, CniError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(agent_error(e, what)),
        Err(_) => Err(CniError::new(
            codes::TRY_AGAIN_LATER,
            format!("the SocketPlane agent did not answer within {timeout:?} ({what})"),
        )),
    }
}

fn agent_error(e: ClientError, what: &str) -> CniError {
    match &e {
        ClientError::Unreachable { .. } => {
            CniError::new(codes::TRY_AGAIN_LATER, e.to_string()).with_details(what.to_string())
        }
        ClientError::Agent { status, message } => {
            let code = match status {
                503 => codes::TRY_AGAIN_LATER,
                404 => codes::INVALID_CONFIG,
                _ => codes::AGENT_REFUSED,
            };
            CniError::new(code, format!("SocketPlane: {message}"))
                .with_details(format!("{what}: the agent answered status {status}"))
        }
        _ => CniError::new(
            codes::IO,
            format!("talking to the SocketPlane agent failed ({what})"),
        )
        .with_details(format!("{e}: {}", source_chain(&e))),
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

/// Whether a DEL may give up on the agent and leave the attachment to its
/// garbage collection (the namespace goes away after DEL).
fn agent_down(e: &CniError) -> bool {
    e.code == codes::TRY_AGAIN_LATER
}

/// Endpoint names follow the agent's rule; a longer pod name stays in
/// `pod_name` only.
fn endpoint_name(name: &str) -> Option<String> {
    let ok = name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    ok.then(|| name.to_string())
}

async fn add(agent: &Agent, conf: &NetConf, env: &Env) -> Result<Value, CniError> {
    let cid = Env::require(&env.container_id, "CNI_CONTAINERID", "ADD")?;
    let netns = Env::require(&env.netns, "CNI_NETNS", "ADD")?;
    let ifname = Env::require(&env.ifname, "CNI_IFNAME", "ADD")?;
    let args = CniArgs::parse(env.args.as_deref())?;
    let req = AttachEndpoint {
        network: agent.network.clone(),
        netns: Some(netns.to_string()),
        name: args.pod_name.as_deref().and_then(endpoint_name),
        ifname: Some(ifname.to_string()),
        ip: conf.requested_ip(&args)?,
        container_id: Some(cid.to_string()),
        origin: Some(ORIGIN_CNI.to_string()),
        pod_namespace: args.pod_namespace.clone(),
        pod_name: args.pod_name.clone(),
    };
    let attach = || {
        call(
            ADD_TIMEOUT,
            "attaching",
            agent.client.post("/v1/endpoints", &req),
        )
    };
    let ep: EndpointInfo = match attach().await {
        Ok(ep) => ep,
        Err(e) if e.code == codes::AGENT_REFUSED => {
            // A conflict may be an attachment of this container interface
            // whose DEL never reached the agent: the runtime's ADD says it
            // is stale, so it goes and the ADD is retried once.
            let stale = agent.attachments(Some((cid, ifname))).await?;
            if stale.is_empty() {
                return Err(e);
            }
            for s in &stale {
                agent.detach(&s.endpoint.id).await?;
            }
            attach().await?
        }
        Err(e) => return Err(e),
    };
    let address = ipnet::Ipv4Net::new(ep.endpoint.ip, ep.prefix_len).map_err(|_| {
        CniError::new(
            codes::IO,
            format!("the agent answered a bad prefix length {}", ep.prefix_len),
        )
    })?;
    Ok(spec::add_result(
        &conf.cni_version,
        &Attached {
            host_ifname: ep.host_ifname.clone(),
            ifname: ep.endpoint.ifname.clone(),
            mac: ep.endpoint.mac.to_string(),
            sandbox: netns.to_string(),
            address,
            gateway: ep.gateway,
        },
    ))
}

async fn del(agent: &Agent, env: &Env) -> Result<(), CniError> {
    let cid = Env::require(&env.container_id, "CNI_CONTAINERID", "DEL")?;
    let ifname = Env::require(&env.ifname, "CNI_IFNAME", "DEL")?;
    let result = async {
        for ep in agent.attachments(Some((cid, ifname))).await? {
            agent.detach(&ep.endpoint.id).await?;
        }
        Ok(())
    }
    .await;
    match result {
        Err(e) if agent_down(&e) => {
            // The agent detaches an endpoint whose namespace is gone when
            // it is back (its garbage collection); failing here would only
            // make the runtime keep a dead container around.
            eprintln!(
                "socketplane-cni: DEL of {cid}/{ifname} left to the agent's garbage collection: {}",
                e.msg
            );
            Ok(())
        }
        other => other,
    }
}

async fn check(agent: &Agent, conf: &NetConf, env: &Env) -> Result<(), CniError> {
    let cid = Env::require(&env.container_id, "CNI_CONTAINERID", "CHECK")?;
    let netns = Env::require(&env.netns, "CNI_NETNS", "CHECK")?;
    let ifname = Env::require(&env.ifname, "CNI_IFNAME", "CHECK")?;
    if !spec::has_check(&conf.cni_version) {
        return Err(CniError::new(
            codes::INCOMPATIBLE_VERSION,
            format!(
                "CHECK needs cniVersion 0.4.0 or later, not {}",
                conf.cni_version
            ),
        ));
    }
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            codes::INVALID_CONFIG,
            "CHECK needs the ADD's result as prevResult",
        )
    })?;
    let expected = spec::expected_from_prev(prev, ifname)?;
    let mismatch = |m: String| CniError::new(codes::CHECK_MISMATCH, m);
    let ep = agent
        .attachments(Some((cid, ifname)))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| {
            CniError::new(
                codes::UNKNOWN_CONTAINER,
                format!(
                    "container {cid} has no SocketPlane attachment {ifname} on network {}",
                    agent.network
                ),
            )
        })?;
    let address = ipnet::Ipv4Net::new(ep.endpoint.ip, ep.prefix_len)
        .map_err(|_| mismatch(format!("bad prefix length {}", ep.prefix_len)))?;
    if expected.addresses != [address] {
        return Err(mismatch(format!(
            "prevResult gives {ifname} {:?}, the agent holds {address}",
            expected.addresses
        )));
    }
    let view = inspect::inspect(netns)?;
    let iface = view
        .interface(ifname)
        .ok_or_else(|| mismatch(format!("the container has no interface {ifname}")))?;
    let mac = ep.endpoint.mac.to_string();
    for want in [Some(&mac), expected.mac.as_ref()].into_iter().flatten() {
        if iface.mac.as_ref() != Some(want) {
            return Err(mismatch(format!(
                "{ifname} has MAC {:?}, expected {want}",
                iface.mac
            )));
        }
    }
    if !iface.addresses.contains(&address) {
        return Err(mismatch(format!(
            "{ifname} lacks its address {address} (has {:?})",
            iface.addresses
        )));
    }
    for route in &expected.routes {
        if !view.routes.contains(route) {
            return Err(mismatch(format!(
                "the container lacks the route to {} via {:?}",
                route.0, route.1
            )));
        }
    }
    Ok(())
}

async fn gc(agent: &Agent, conf: &NetConf) -> Result<(), CniError> {
    let valid: HashSet<Attachment> = conf
        .valid_attachments
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut errors = Vec::new();
    for ep in agent.attachments(None).await? {
        let key = Attachment {
            container_id: ep.endpoint.container_id.clone().unwrap_or_default(),
            ifname: ep.endpoint.ifname.clone(),
        };
        if !valid.contains(&key) {
            if let Err(e) = agent.detach(&ep.endpoint.id).await {
                errors.push(format!("{}: {}", ep.endpoint.id, e.msg));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            codes::TRY_AGAIN_LATER,
            format!("could not remove {} stale attachment(s)", errors.len()),
        )
        .with_details(errors.join("; ")))
    }
}

async fn status(agent: &Agent) -> Result<(), CniError> {
    let unavailable = |e: CniError| CniError {
        code: codes::NOT_AVAILABLE,
        ..e
    };
    let info: AgentInfo = call(
        CALL_TIMEOUT,
        "asking for the agent's state",
        agent.client.get("/v1/info"),
    )
    .await
    .map_err(unavailable)?;
    if !info.ready {
        return Err(CniError::new(
            codes::NOT_AVAILABLE,
            format!(
                "the SocketPlane agent has not joined cluster {:?} yet",
                info.cluster
            ),
        ));
    }
    let path = format!("/v1/networks/{}", segment(&agent.network));
    let net: NetworkInfo = call(
        CALL_TIMEOUT,
        "looking up the network",
        agent.client.get(&path),
    )
    .await
    .map_err(unavailable)?;
    let prefix = u32::from(net.network.subnet.prefix_len());
    // Network and broadcast addresses and the gateway are never handed out.
    let capacity = if prefix <= 30 {
        (1u64 << (32 - prefix)) - 3
    } else {
        0
    };
    if net.endpoints as u64 >= capacity {
        return Err(CniError::new(
            codes::NOT_AVAILABLE,
            format!(
                "the address pool of network {} ({}) is exhausted: {} endpoints",
                net.network.name, net.network.subnet, net.endpoints
            ),
        ));
    }
    Ok(())
}
