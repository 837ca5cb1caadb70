//! Command-line parsing and the output of each command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use dvrmesh_node::api::{self, MemberInfo, Request};
use dvrmesh_node::config::Config;
use dvrmesh_node::logging::{self, LogFormat};
use dvrmesh_node::{agent, tls};
use mesh_proto::NodeId;

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
    /// Run the agent of this node (needs --config). Stops cleanly on SIGINT or SIGTERM.
    Agent,
    /// List the cluster's members as the local agent sees them.
    Members(OutputArgs),
    /// Show the local agent's own state: view generation, transport counters, peers.
    Status(OutputArgs),
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
        #[command(flatten)]
        out: OutputArgs,
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
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Args, Debug, Clone, Copy)]
struct OutputArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
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
        Command::Ca(CaCommand::Init { dir, days, out }) => {
            let (cert, key) = tls::init_ca(dir, *days)?;
            print_paths(out.json, &cert, &key);
            Ok(())
        }
        Command::Cert(CertCommand::Issue {
            ca,
            node,
            out,
            days,
            output,
        }) => {
            let node = NodeId::new(node.as_str()).context("--node")?;
            let (cert, key) = tls::issue_node_cert(ca, &node, out, *days)?;
            print_paths(output.json, &cert, &key);
            Ok(())
        }
        Command::Agent => {
            let path = cli
                .config
                .as_deref()
                .context("`dvrmesh agent` needs --config FILE")?;
            let config = Config::load(path)?;
            runtime()?.block_on(agent::run(config))?;
            Ok(())
        }
        Command::Members(out) => {
            let socket = api_socket(&cli)?;
            let result = runtime()?.block_on(api::call(&socket, &Request::Members))?;
            if out.json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                let members: Vec<MemberInfo> = serde_json::from_value(result)?;
                print_members(&members);
            }
            Ok(())
        }
        Command::Status(out) => {
            let socket = api_socket(&cli)?;
            let result = runtime()?.block_on(api::call(&socket, &Request::Status))?;
            if out.json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                print_status(&result);
            }
            Ok(())
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

fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
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
