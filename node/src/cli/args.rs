//! The command line: every command, its arguments and its help text (clap derive).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use dvrmesh_node::mesh::pki as tls;

#[derive(Parser, Debug)]
#[command(
    name = "dvrmesh",
    version,
    about = "A distributed virtual router: every node routes and NATs for itself, with no central server.",
    long_about = "dvrmesh runs one agent per Linux node. Agents find each other and gossip over QUIC with \
mutual TLS, agree on one view of the cluster, elect a SNAT holder for each router, and each \
programs its own node's datapath (namespaces, veth, VXLAN, routes, rules, nftables) from that view.\n\n\
Commands other than `ca`, `cert` and `agent` talk to the local agent through its API socket, found \
from --api, else the api_socket of --config, else the DVRMESH_API environment variable, else the \
api_socket of /etc/dvrmesh/node.toml (where the Debian package puts it) when that file exists.",
    propagate_version = true
)]
pub(crate) struct Cli {
    /// Path of the local agent's API socket.
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) api: Option<PathBuf>,
    /// Agent configuration file (TOML). `agent` runs it; other commands read its api_socket.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormatArg::Human)]
    pub(crate) log_format: LogFormatArg,
    /// Log level or filter (RUST_LOG overrides), e.g. `info` or `dvrmesh_node=debug`.
    #[arg(long, global = true, default_value = "info", value_name = "FILTER")]
    pub(crate) log_level: String,
    /// Print JSON instead of tables and text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Operator credential (from `cert issue --operator`) that seals configuration writes; also
    /// read from DVRMESH_CREDENTIAL. Needed when the cluster has `[tenancy] writers = "operators"`.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) credential: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum LogFormatArg {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
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
    /// Preflight: check everything this node needs (kernel features, probed in a throwaway
    /// namespace; interfaces and MTU; --config and its certificates; API socket; gossip port;
    /// clock) and say how to fix what is missing. Changes nothing on the host. Exits 1 when a
    /// check fails. Without --config only the kernel and the clock are checked.
    Doctor,
}

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct AgentArgs {
    #[command(subcommand)]
    pub(crate) action: Option<AgentCommand>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum AgentCommand {
    /// Hand every router whose SNAT this node holds to the best backup, and stay out of SNAT
    /// elections (kept across restarts) until `undrain`. Waits up to 10 s for the handover.
    Drain,
    /// Take part in SNAT elections again (a better node preempts according to each router's HA
    /// settings).
    Undrain,
    /// Take the certificate and key the configuration's [tls] names now (after replacing the
    /// files): the agent checks them (this node's id, the cluster CA, not revoked, the key fits)
    /// and, when good, re-executes in place with them (same PID, datapath untouched, a new gossip
    /// life); when not, says why and keeps running. SIGHUP does the same.
    ReloadCert,
}

#[derive(Subcommand, Debug)]
pub(crate) enum DatapathCommand {
    /// Print the desired kernel state of this node (namespaces, links, addresses, routes, rules,
    /// neighbours, FDB, nft tables, sysctls) and what could not be planned.
    Plan,
    /// Print what the next reconcile pass would change: empty when the kernel is in sync.
    Diff,
}

#[derive(Subcommand, Debug)]
pub(crate) enum NetworkCommand {
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
pub(crate) enum SubnetCommand {
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
        /// Do not answer DHCP for ports on this subnet (DHCP is on by default).
        #[arg(long = "no-dhcp", action = clap::ArgAction::SetFalse)]
        dhcp: bool,
        /// A DNS server handed out by DHCP (repeat for several, at most 4).
        #[arg(long = "dns-server")]
        dns_servers: Vec<String>,
        /// DNS domain handed out by DHCP.
        #[arg(long)]
        domain: Option<String>,
    },
    /// List subnets.
    List,
    /// Show one subnet.
    Show { subnet: String },
    /// Delete a subnet that is on no router and has no ports.
    Delete { subnet: String },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ExternalNetworkCommand {
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
pub(crate) enum RouterCommand {
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

/// What the metadata service serves for a port, as the CLI takes it.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct PortMetadataArgs {
    /// Host name served by metadata and DHCP (default: the port's name).
    #[arg(long)]
    pub(crate) hostname: Option<String>,
    /// File of user data (e.g. cloud-init), text of at most 8 KiB.
    #[arg(long, value_name = "FILE")]
    pub(crate) user_data: Option<std::path::PathBuf>,
    /// File of one public key (an `authorized_keys` line); repeat for more (at most 4).
    #[arg(long = "ssh-key", value_name = "FILE")]
    pub(crate) ssh_keys: Vec<std::path::PathBuf>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum PortCommand {
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
        #[command(flatten)]
        metadata: PortMetadataArgs,
    },
    /// Change a port's metadata (through its host's agent): what is given replaces the port's.
    Set {
        port: String,
        #[command(flatten)]
        metadata: PortMetadataArgs,
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
pub(crate) enum FipCommand {
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
pub(crate) enum CaCommand {
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
pub(crate) enum CertCommand {
    /// Issue a node certificate whose subject alternative name is the node id: writes OUT/node.pem
    /// and OUT/node.key (mode 0600); or, with --operator NAME, an operator credential: one file
    /// OUT/operator-NAME.pem (certificate and key, mode 0600) for `--credential`. Never
    /// overwrites.
    Issue {
        /// Directory holding the CA (ca.pem, ca.key).
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// Node id the certificate is issued to (a DNS label, at most 32 characters).
        #[arg(
            long,
            value_name = "NODE_ID",
            required_unless_present = "operator",
            conflicts_with = "operator"
        )]
        node: Option<String>,
        /// Issue an operator credential for NAME instead (revoke it as `--node operator-NAME`).
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
        /// Directory to write the certificate and key into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = tls::DEFAULT_NODE_CERT_DAYS)]
        days: u32,
    },
    /// List the certificates the CA issued (recorded in DIR/issued/): node, serial, last valid
    /// day, and whether expired or revoked by DIR/crl.pem. When rotating, revoke the old one with
    /// `cert revoke --cert FILE`.
    List {
        /// Directory holding the CA (ca.pem, crl.pem, issued/).
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// Only this node's certificates.
        #[arg(long, value_name = "NODE_ID")]
        node: Option<String>,
    },
    /// Revoke a node's certificates: adds every certificate the CA issued to the node (recorded in
    /// DIR/issued/), or the one in --cert, to DIR/crl.pem. Copy crl.pem to every node's
    /// `[tls] crl` path: agents re-read it within a second, close the node's connections and drop
    /// it from their views.
    Revoke {
        /// Directory holding the CA (ca.pem, ca.key, crl.pem).
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// Node whose certificates to revoke.
        #[arg(long, value_name = "NODE_ID", required_unless_present = "cert")]
        node: Option<String>,
        /// A certificate file to revoke (e.g. one issued before the CA recorded what it issues).
        #[arg(long, value_name = "FILE")]
        cert: Option<PathBuf>,
    },
}
