//! `socketplane`: the CLI, and `socketplane agent`, the daemon. This file
//! only parses the command line and dispatches to `commands/`.

mod commands;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{
    agent::AgentCmd, cluster::ClusterCmd, cni::CniCmd, endpoint::EndpointCmd, lab::LabCmd,
    network::NetworkCmd,
};
use crate::output::Output;

#[derive(Parser)]
#[command(
    name = "socketplane",
    version,
    about = "Multi-host container networking: containers on any host share flat networks, carried in VXLAN tunnels."
)]
struct Cli {
    /// The agent's local API socket.
    #[arg(
        long,
        global = true,
        env = "SOCKETPLANE_SOCKET",
        default_value = socketplane_api::defaults::SOCKET
    )]
    socket: PathBuf,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value = "text"
    )]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (no subcommand), or start / stop it in the background, or show its logs.
    Agent(Box<AgentCmd>),
    /// Show this agent and the endpoints on this host (or one endpoint by name or id).
    Info {
        /// An endpoint's name, container id or endpoint id.
        container: Option<String>,
    },
    /// Create, list, inspect and delete networks.
    Network {
        #[command(subcommand)]
        command: NetworkCmd,
    },
    /// Cluster membership.
    Cluster {
        #[command(subcommand)]
        command: ClusterCmd,
    },
    /// Put any network namespace on a network (runtime-neutral).
    Endpoint {
        #[command(subcommand)]
        command: EndpointCmd,
    },
    /// The CNI plugin (podman, containerd, CRI-O, Kubernetes): its configuration.
    Cni {
        #[command(subcommand)]
        command: CniCmd,
    },
    /// A multi-host lab in network namespaces on this machine.
    Lab {
        #[command(subcommand)]
        command: LabCmd,
    },
    /// Three hosts, two networks, nine workloads, and who reaches whom.
    Demo,
    /// Set the agent up as a system service (`unattended`: ask nothing).
    Install(commands::install::InstallCmd),
    /// Remove the service set up by `install`.
    Uninstall(commands::install::UninstallCmd),
    /// `docker run` on a SocketPlane network: run [-n NET] <docker run args...>.
    #[command(disable_help_flag = true)]
    Run {
        /// The SocketPlane network.
        #[arg(short = 'n', long = "network", default_value = "default")]
        network: String,
        /// Passed to `docker run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// `docker start`.
    #[command(disable_help_flag = true)]
    Start(DockerArgs),
    /// `docker stop`.
    #[command(disable_help_flag = true)]
    Stop(DockerArgs),
    /// `docker rm` (the agent releases the container's addresses).
    #[command(disable_help_flag = true)]
    Rm(DockerArgs),
    /// `docker attach`.
    #[command(disable_help_flag = true)]
    Attach(DockerArgs),
}

/// Arguments passed through to a `docker` command.
#[derive(clap::Args)]
struct DockerArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    args: Vec<String>,
}

fn main() -> ExitCode {
    socketplane_agent::memory::tune_allocator();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("socketplane: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let ctx = commands::Context {
            socket: cli.socket,
            output: cli.output,
        };
        match cli.command {
            Command::Agent(cmd) => cmd.exec(&ctx).await,
            Command::Info { container } => commands::info::exec(&ctx, container.as_deref()).await,
            Command::Network { command } => command.exec(&ctx).await,
            Command::Cluster { command } => command.exec(&ctx).await,
            Command::Endpoint { command } => command.exec(&ctx).await,
            Command::Cni { command } => command.exec(&ctx).await,
            Command::Lab { command } => command.exec(&ctx).await,
            Command::Demo => commands::demo::exec().await,
            Command::Install(cmd) => cmd.exec(),
            Command::Uninstall(cmd) => cmd.exec(),
            Command::Run { network, args } => commands::docker::run(&ctx, &network, &args).await,
            Command::Start(a) => commands::docker::docker("start", &a.args),
            Command::Stop(a) => commands::docker::docker("stop", &a.args),
            Command::Rm(a) => commands::docker::docker("rm", &a.args),
            Command::Attach(a) => commands::docker::docker("attach", &a.args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<commands::Unhealthy>().is_some() => {
            eprintln!("socketplane: {e:#}");
            ExitCode::from(commands::Unhealthy::EXIT_CODE)
        }
        Err(e) => {
            eprintln!("socketplane: {e:#}");
            ExitCode::FAILURE
        }
    }
}
