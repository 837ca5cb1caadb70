//! Command-line parsing and the output of each command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use dvrmesh_node::api::{self, MemberInfo, Request};
use dvrmesh_node::config::Config;
use dvrmesh_node::logging::{self, LogFormat};
use dvrmesh_node::store::ops::ConfigRequest;
use dvrmesh_node::{agent, tls};
use mesh_proto::{NodeId, ObjectKind};

/// Environment variable naming the agent's API socket.
const API_ENV: &str = "DVRMESH_API";

#[derive(Parser, Debug)]
#[command(
    name = "dvrmesh",
    version,
    about = "A distributed virtual router: every node routes and NATs for itself, with no central server.",
    long_about = "dvrmesh runs one agent per Linux node. Agents find each other and gossip over QUIC with \
mutual TLS, agree on a view of the cluster, and (in later releases) program each node's datapath.\n\n\
Commands other than `ca`, `cert` and `agent` talk to the local agent through its API socket, found \
from --api, else the api_socket of --config, else the DVRMESH_API environment variable.",
    propagate_version = true
)]
struct Cli {
    /// Path of the local agent's API socket.
    #[arg(long, global = true, value_name = "PATH")]
    api: Option<PathBuf>,
    /// Agent configuration file (TOML). `agent` runs it; other commands read its api_socket.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormatArg::Human)]
    log_format: LogFormatArg,
    /// Log level or filter (RUST_LOG overrides), e.g. `info` or `dvrmesh_node=debug`.
    #[arg(long, global = true, default_value = "info", value_name = "FILTER")]
    log_level: String,
    /// Print JSON instead of tables and text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormatArg {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage the cluster certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Issue node certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Run the agent of this node (needs --config; stops cleanly on SIGINT or SIGTERM), or drain
    /// it for maintenance.
    Agent(AgentArgs),
    /// List the cluster's members as the local agent sees them.
    Members,
    /// Show the local agent's own state: view generation, transport counters, peers.
    Status,
    /// Tenant networks (each one VXLAN segment).
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Subnets of tenant networks.
    #[command(subcommand)]
    Subnet(SubnetCommand),
    /// External (provider) networks.
    #[command(subcommand, name = "external-network")]
    ExternalNetwork(ExternalNetworkCommand),
    /// Distributed routers.
    #[command(subcommand)]
    Router(RouterCommand),
    /// Ports (VM attachments); a port is hosted by the node whose agent creates it.
    #[command(subcommand)]
    Port(PortCommand),
    /// Floating IPs.
    #[command(subcommand)]
    Fip(FipCommand),
    /// The converged configuration: every object, ports by host, floating IPs by serving host.
    View,
    /// This node's datapath: what the agent wants in the kernel, and what it would change.
    #[command(subcommand)]
    Datapath(DatapathCommand),
}

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct AgentArgs {
    #[command(subcommand)]
    action: Option<AgentCommand>,
}

#[derive(Subcommand, Debug)]
enum AgentCommand {
    /// Hand every router whose SNAT this node holds to the best backup, and stay out of SNAT
    /// elections (kept across restarts) until `undrain`. Waits up to 10 s for the handover.
    Drain,
    /// Take part in SNAT elections again (a better node preempts according to each router's HA
    /// settings).
    Undrain,
}

#[derive(Subcommand, Debug)]
enum DatapathCommand {
    /// Print the desired kernel state of this node (namespaces, links, addresses, routes, rules,
    /// neighbours, FDB, nft tables, sysctls) and what could not be planned.
    Plan,
    /// Print what the next reconcile pass would change: empty when the kernel is in sync.
    Diff,
}

#[derive(Subcommand, Debug)]
enum NetworkCommand {
    /// Create a network.
    Create {
        /// Unique name.
        name: String,
        /// VXLAN network identifier, 1..16777215, unique in the cluster.
        #[arg(long)]
        vni: u32,
        /// MTU of its ports (576..9000, default 1450).
        #[arg(long)]
        mtu: Option<u16>,
    },
    /// List networks.
    List,
    /// Show one network (name or id).
    Show { network: String },
    /// Delete a network without subnets or ports.
    Delete { network: String },
}

#[derive(Subcommand, Debug)]
enum SubnetCommand {
    /// Create a subnet on a network.
    Create {
        /// Unique name.
        name: String,
        /// Network (name or id).
        #[arg(long)]
        network: String,
        /// IPv4 prefix, e.g. 10.1.0.0/24.
        #[arg(long)]
        cidr: String,
        /// Router interface address (default: first host).
        #[arg(long)]
        gateway: Option<String>,
        /// Allocation pool FIRST-LAST (default: every host but the gateway).
        #[arg(long)]
        pool: Option<String>,
    },
    /// List subnets.
    List,
    /// Show one subnet.
    Show { subnet: String },
    /// Delete a subnet that is on no router and has no ports.
    Delete { subnet: String },
}

#[derive(Subcommand, Debug)]
enum ExternalNetworkCommand {
    /// Create an external network.
    Create {
        /// Unique name; nodes map it to an interface under [external.NAME].
        name: String,
        /// Public prefix.
        #[arg(long)]
        cidr: String,
        /// Upstream router address.
        #[arg(long)]
        gateway: String,
        /// Pool for router gateways and floating IPs, FIRST-LAST.
        #[arg(long)]
        pool: Option<String>,
    },
    /// List external networks.
    List,
    /// Show one external network.
    Show { external_network: String },
    /// Delete an external network no router or floating IP uses.
    Delete { external_network: String },
}

#[derive(Subcommand, Debug)]
enum RouterCommand {
    /// Create a router.
    Create { name: String },
    /// Attach a subnet.
    AddInterface {
        router: String,
        #[arg(long)]
        subnet: String,
    },
    /// Detach a subnet.
    RemoveInterface {
        router: String,
        #[arg(long)]
        subnet: String,
    },
    /// Connect to an external network (SNAT on unless --no-snat).
    SetGateway {
        router: String,
        #[arg(long)]
        external_network: String,
        #[arg(long)]
        no_snat: bool,
    },
    /// Disconnect from the external network.
    ClearGateway { router: String },
    /// Add a static route (next hop on one of the router's subnets).
    AddRoute {
        router: String,
        #[arg(long)]
        destination: String,
        #[arg(long)]
        nexthop: String,
    },
    /// Remove a static route.
    RemoveRoute {
        router: String,
        #[arg(long)]
        destination: String,
        #[arg(long)]
        nexthop: String,
    },
    /// Set SNAT high-availability settings: per-node priority overrides, preemption.
    SetHa {
        router: String,
        /// NODE=PRIORITY (1..254) for this router; repeat for several nodes; NODE=default drops
        /// the override.
        #[arg(long = "priority", value_name = "NODE=P")]
        priorities: Vec<String>,
        /// A better candidate takes over from a live holder (the default).
        #[arg(long, conflicts_with = "no_preempt")]
        preempt: bool,
        /// A live holder keeps the router even when a better candidate appears.
        #[arg(long)]
        no_preempt: bool,
        /// How long a better candidate waits before preempting: e.g. 500ms, 5s, 2m (max 1h).
        #[arg(long, value_name = "DURATION")]
        preempt_delay: Option<String>,
    },
    /// List routers.
    List,
    /// Show one router, with its SNAT holder, epoch, candidates and last transition.
    Show { router: String },
    /// Delete a router without interfaces.
    Delete { router: String },
}

#[derive(Subcommand, Debug)]
enum PortCommand {
    /// Create a port hosted on this agent's node; address and MAC are allocated unless given.
    Create {
        name: String,
        #[arg(long)]
        network: String,
        #[arg(long)]
        ip: Option<String>,
        #[arg(long)]
        mac: Option<String>,
        /// Host-side device name (tap/veth).
        #[arg(long)]
        device: Option<String>,
    },
    /// Delete a port (through its host's agent).
    Delete { port: String },
    /// List ports, optionally only those of one host.
    List {
        #[arg(long)]
        host: Option<String>,
    },
    /// Show one port.
    Show { port: String },
}

#[derive(Subcommand, Debug)]
enum FipCommand {
    /// Allocate a floating IP.
    Create {
        #[arg(long)]
        external_network: String,
        #[arg(long)]
        ip: Option<String>,
    },
    /// Map a floating IP (id or address) onto a port.
    Associate {
        fip: String,
        #[arg(long)]
        port: String,
    },
    /// Unmap a floating IP.
    Disassociate { fip: String },
    /// Release a floating IP.
    Delete { fip: String },
    /// List floating IPs.
    List,
    /// Show one floating IP.
    Show { fip: String },
}

#[derive(Subcommand, Debug)]
enum CaCommand {
    /// Create a cluster CA: writes DIR/ca.pem and DIR/ca.key (mode 0600). Never overwrites.
    Init {
        /// Directory to write the CA into (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = tls::DEFAULT_CA_DAYS)]
        days: u32,
    },
}

#[derive(Subcommand, Debug)]
enum CertCommand {
    /// Issue a node certificate whose subject alternative name is the node id: writes OUT/node.pem
    /// and OUT/node.key (mode 0600). Never overwrites.
    Issue {
        /// Directory holding the CA (ca.pem, ca.key).
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// Node id the certificate is issued to (a DNS label, at most 32 characters).
        #[arg(long, value_name = "NODE_ID")]
        node: String,
        /// Directory to write the certificate and key into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = tls::DEFAULT_NODE_CERT_DAYS)]
        days: u32,
    },
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(
        match cli.log_format {
            LogFormatArg::Human => LogFormat::Human,
            LogFormatArg::Json => LogFormat::Json,
        },
        &cli.log_level,
    );
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Ca(CaCommand::Init { dir, days }) => {
            let (cert, key) = tls::init_ca(dir, *days)?;
            print_paths(cli.json, &cert, &key);
            Ok(())
        }
        Command::Cert(CertCommand::Issue {
            ca,
            node,
            out,
            days,
        }) => {
            let node = NodeId::new(node.as_str()).context("--node")?;
            let (cert, key) = tls::issue_node_cert(ca, &node, out, *days)?;
            print_paths(cli.json, &cert, &key);
            Ok(())
        }
        Command::Agent(AgentArgs {
            action: Some(action),
        }) => {
            let req = match action {
                AgentCommand::Drain => Request::Drain,
                AgentCommand::Undrain => Request::Undrain,
            };
            let socket = api_socket(&cli)?;
            let result = runtime()?.block_on(api::call(&socket, &req))?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                crate::output::print_drain(&result);
            }
            Ok(())
        }
        Command::Agent(AgentArgs { action: None }) => {
            let path = cli
                .config
                .as_deref()
                .context("`dvrmesh agent` needs --config FILE")?;
            let config = Config::load(path)?;
            runtime()?.block_on(agent::run(config))?;
            Ok(())
        }
        Command::Members => {
            let socket = api_socket(&cli)?;
            let result = runtime()?.block_on(api::call(&socket, &Request::Members))?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                let members: Vec<MemberInfo> = serde_json::from_value(result)?;
                print_members(&members);
            }
            Ok(())
        }
        Command::Status => {
            let socket = api_socket(&cli)?;
            let result = runtime()?.block_on(api::call(&socket, &Request::Status))?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                print_status(&result);
            }
            Ok(())
        }
        Command::Datapath(DatapathCommand::Plan) => {
            let socket = api_socket(&cli)?;
            let result = runtime()?.block_on(api::call(&socket, &Request::DatapathPlan))?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                crate::output::print_plan(&result);
            }
            Ok(())
        }
        Command::Datapath(DatapathCommand::Diff) => {
            let socket = api_socket(&cli)?;
            let result = runtime()?.block_on(api::call(&socket, &Request::DatapathDiff))?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                crate::output::print_diff(&result);
            }
            Ok(())
        }
        other => {
            let (req, kind) = config_request(other);
            let socket = api_socket(&cli)?;
            let result = runtime()?.block_on(api::call(&socket, &req))?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                crate::output::print_config(&result, kind);
            }
            Ok(())
        }
    }
}

/// The store request of a configuration command, and the kind it lists (for table columns).
fn config_request(cmd: &Command) -> (ConfigRequest, Option<ObjectKind>) {
    use ConfigRequest as R;
    use ObjectKind as K;
    let del = |kind, r: &String| {
        (
            R::Delete {
                kind,
                reference: r.clone(),
            },
            None,
        )
    };
    let show = |kind, r: &String| {
        (
            R::Show {
                kind,
                reference: r.clone(),
            },
            None,
        )
    };
    let list = |kind| (R::List { kind, host: None }, Some(kind));
    match cmd {
        Command::Network(c) => match c {
            NetworkCommand::Create { name, vni, mtu } => (
                R::NetworkCreate {
                    name: name.clone(),
                    vni: *vni,
                    mtu: *mtu,
                },
                None,
            ),
            NetworkCommand::List => list(K::Network),
            NetworkCommand::Show { network } => show(K::Network, network),
            NetworkCommand::Delete { network } => del(K::Network, network),
        },
        Command::Subnet(c) => match c {
            SubnetCommand::Create {
                name,
                network,
                cidr,
                gateway,
                pool,
            } => (
                R::SubnetCreate {
                    name: name.clone(),
                    network: network.clone(),
                    cidr: cidr.clone(),
                    gateway: gateway.clone(),
                    pool: pool.clone(),
                },
                None,
            ),
            SubnetCommand::List => list(K::Subnet),
            SubnetCommand::Show { subnet } => show(K::Subnet, subnet),
            SubnetCommand::Delete { subnet } => del(K::Subnet, subnet),
        },
        Command::ExternalNetwork(c) => match c {
            ExternalNetworkCommand::Create {
                name,
                cidr,
                gateway,
                pool,
            } => (
                R::ExternalNetworkCreate {
                    name: name.clone(),
                    cidr: cidr.clone(),
                    gateway: gateway.clone(),
                    pool: pool.clone(),
                },
                None,
            ),
            ExternalNetworkCommand::List => list(K::ExternalNetwork),
            ExternalNetworkCommand::Show { external_network } => {
                show(K::ExternalNetwork, external_network)
            }
            ExternalNetworkCommand::Delete { external_network } => {
                del(K::ExternalNetwork, external_network)
            }
        },
        Command::Router(c) => match c {
            RouterCommand::Create { name } => (R::RouterCreate { name: name.clone() }, None),
            RouterCommand::AddInterface { router, subnet } => (
                R::RouterAddInterface {
                    router: router.clone(),
                    subnet: subnet.clone(),
                },
                None,
            ),
            RouterCommand::RemoveInterface { router, subnet } => (
                R::RouterRemoveInterface {
                    router: router.clone(),
                    subnet: subnet.clone(),
                },
                None,
            ),
            RouterCommand::SetGateway {
                router,
                external_network,
                no_snat,
            } => (
                R::RouterSetGateway {
                    router: router.clone(),
                    external_network: external_network.clone(),
                    snat: !no_snat,
                },
                None,
            ),
            RouterCommand::ClearGateway { router } => (
                R::RouterClearGateway {
                    router: router.clone(),
                },
                None,
            ),
            RouterCommand::AddRoute {
                router,
                destination,
                nexthop,
            } => (
                R::RouterAddRoute {
                    router: router.clone(),
                    destination: destination.clone(),
                    nexthop: nexthop.clone(),
                },
                None,
            ),
            RouterCommand::RemoveRoute {
                router,
                destination,
                nexthop,
            } => (
                R::RouterRemoveRoute {
                    router: router.clone(),
                    destination: destination.clone(),
                    nexthop: nexthop.clone(),
                },
                None,
            ),
            RouterCommand::SetHa {
                router,
                priorities,
                preempt,
                no_preempt,
                preempt_delay,
            } => (
                R::RouterSetHa {
                    router: router.clone(),
                    priorities: priorities.clone(),
                    preempt: if *no_preempt {
                        Some(false)
                    } else if *preempt {
                        Some(true)
                    } else {
                        None
                    },
                    preempt_delay: preempt_delay.clone(),
                },
                None,
            ),
            RouterCommand::List => list(K::Router),
            RouterCommand::Show { router } => show(K::Router, router),
            RouterCommand::Delete { router } => del(K::Router, router),
        },
        Command::Port(c) => match c {
            PortCommand::Create {
                name,
                network,
                ip,
                mac,
                device,
            } => (
                R::PortCreate {
                    name: name.clone(),
                    network: network.clone(),
                    ip: ip.clone(),
                    mac: mac.clone(),
                    device: device.clone(),
                },
                None,
            ),
            PortCommand::Delete { port } => del(K::Port, port),
            PortCommand::List { host } => (
                R::List {
                    kind: K::Port,
                    host: host.clone(),
                },
                Some(K::Port),
            ),
            PortCommand::Show { port } => show(K::Port, port),
        },
        Command::Fip(c) => match c {
            FipCommand::Create {
                external_network,
                ip,
            } => (
                R::FipCreate {
                    external_network: external_network.clone(),
                    ip: ip.clone(),
                },
                None,
            ),
            FipCommand::Associate { fip, port } => (
                R::FipAssociate {
                    fip: fip.clone(),
                    port: port.clone(),
                },
                None,
            ),
            FipCommand::Disassociate { fip } => (R::FipDisassociate { fip: fip.clone() }, None),
            FipCommand::Delete { fip } => del(K::FloatingIp, fip),
            FipCommand::List => list(K::FloatingIp),
            FipCommand::Show { fip } => show(K::FloatingIp, fip),
        },
        Command::View => (R::View, None),
        Command::Ca(_)
        | Command::Cert(_)
        | Command::Agent(_)
        | Command::Members
        | Command::Status
        | Command::Datapath(_) => {
            unreachable!("handled before")
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Where to find the agent: --api, else --config's api_socket, else $DVRMESH_API.
fn api_socket(cli: &Cli) -> Result<PathBuf> {
    if let Some(p) = &cli.api {
        return Ok(p.clone());
    }
    if let Some(c) = &cli.config {
        return Ok(Config::load(c)?.api_socket);
    }
    if let Some(p) = std::env::var_os(API_ENV) {
        if !p.is_empty() {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("no agent to talk to: pass --api PATH or --config FILE, or set {API_ENV}")
}

fn print_paths(json: bool, cert: &Path, key: &Path) {
    if json {
        println!(
            "{}",
            serde_json::json!({"cert": cert.display().to_string(), "key": key.display().to_string()})
        );
    } else {
        println!("wrote {}\nwrote {}", cert.display(), key.display());
    }
}

fn print_members(members: &[MemberInfo]) {
    let rows: Vec<[String; 6]> = members
        .iter()
        .map(|m| {
            [
                m.node_id.clone(),
                m.mode.clone(),
                m.tunnel_ip.clone(),
                m.state.clone(),
                m.snat_priority.to_string(),
                m.gossip_addr.clone(),
            ]
        })
        .collect();
    print_table(
        &["NODE", "MODE", "TUNNEL IP", "STATE", "PRIORITY", "GOSSIP"],
        &rows,
    );
}

fn print_status(v: &serde_json::Value) {
    let get = |k: &str| v.get(k).map(|x| x.to_string()).unwrap_or_default();
    println!("node            {}", get("node_id").trim_matches('"'));
    println!("view generation {}", get("view_generation"));
    println!(
        "members         {} ({} alive)",
        get("members"),
        get("alive")
    );
    if let Some(t) = v.get("transport").and_then(|t| t.as_object()) {
        for (k, val) in t {
            println!("transport.{k:<20} {val}");
        }
    }
}

pub(crate) fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut width: [usize; N] = header.map(str::len);
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(header.to_vec()));
    for r in rows {
        println!("{}", line(r.iter().map(String::as_str).collect()));
    }
}
