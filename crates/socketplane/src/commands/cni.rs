//! `socketplane cni config NETWORK`: the conflist that puts a CNI
//! runtime's containers on a SocketPlane network (the plugin itself is
//! `socketplane-cni`, installed by `socketplane install`).

use anyhow::Context as _;
use clap::Subcommand;
use socketplane_api::rest::NetworkInfo;
use socketplane_client::segment;

use super::Context;

#[derive(Subcommand)]
pub enum CniCmd {
    /// Print a CNI network configuration list for NETWORK. Save it in the
    /// runtime's CNI config dir, e.g. /etc/cni/net.d/50-NETWORK.conflist.
    Config {
        network: String,
        /// The spec version the runtime parses (the plugin speaks 0.3.0 to 1.1.0).
        #[arg(long, default_value = socketplane_api::defaults::CNI_CONF_VERSION)]
        cni_version: String,
    },
}

impl CniCmd {
    pub async fn exec(self, ctx: &Context) -> anyhow::Result<()> {
        match self {
            CniCmd::Config {
                network,
                cni_version,
            } => {
                socketplane_cni::spec::check_version(&cni_version)
                    .map_err(|e| anyhow::anyhow!("{}", e.msg))?;
                // Refuse a network that does not exist rather than write a
                // configuration every ADD would fail on.
                let _: NetworkInfo = ctx
                    .client()
                    .get(&format!("/v1/networks/{}", segment(&network)))
                    .await?;
                // The runtime runs the plugin from its own directory.
                let socket = std::path::absolute(&ctx.socket)
                    .with_context(|| format!("resolving {}", ctx.socket.display()))?;
                let conf = socketplane_cni::conflist::conflist(&network, &socket, &cni_version);
                println!("{}", serde_json::to_string_pretty(&conf)?);
                Ok(())
            }
        }
    }
}
