use socketplane_api::rest::{AgentInfo, EndpointInfo};

use super::endpoint::print_endpoints;
use super::Context;
use crate::output::json;

pub async fn exec(ctx: &Context, which: Option<&str>) -> anyhow::Result<()> {
    let client = ctx.client();
    let info: AgentInfo = client.get("/v1/info").await?;
    let eps: Vec<EndpointInfo> = client.get("/v1/endpoints?local=true").await?;
    if let Some(which) = which {
        let ep = eps
            .into_iter()
            .find(|e| {
                e.endpoint.id == which
                    || e.endpoint.name.as_deref() == Some(which)
                    || e.endpoint
                        .container_id
                        .as_deref()
                        .is_some_and(|c| c.starts_with(which))
            })
            .ok_or_else(|| anyhow::anyhow!("no endpoint named {which:?} on this host"))?;
        if ctx.json() {
            return json(&ep);
        }
        print_endpoints(&[ep]);
        return Ok(());
    }
    if ctx.json() {
        return json(&serde_json::json!({ "agent": info, "endpoints": eps }));
    }
    println!(
        "Node {} ({}) in cluster {}: underlay {} on {}, datapath {}, store {}{}.",
        info.node_name,
        info.node_id,
        info.cluster,
        info.addr,
        info.iface,
        info.datapath,
        info.store,
        if info.ready {
            ""
        } else {
            ", NOT READY (joining)"
        }
    );
    if info.open_cluster {
        println!("WARNING: OPEN CLUSTER (founded with --open): no authentication on the cluster port; any host on this network may join and control it.");
    }
    print_endpoints(&eps);
    Ok(())
}
