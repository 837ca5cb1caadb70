//! The `dvrmesh` command line: parse ([`args`]), act — run the agent, manage certificates, or
//! ask the local agent through its API socket ([`requests`]) — and print ([`output`]).

mod args;
mod output;
mod requests;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use dvrmesh_node::agent;
use dvrmesh_node::api::{self, MemberInfo, Request};
use dvrmesh_node::config::Config;
use dvrmesh_node::logging::{self, LogFormat};
use dvrmesh_node::mesh::pki as tls;
use mesh_proto::NodeId;
use serde_json::Value;

use args::{AgentArgs, AgentCommand, CaCommand, CertCommand, Cli, Command, DatapathCommand};

/// Environment variable naming the agent's API socket.
const API_ENV: &str = "DVRMESH_API";

/// Parses the command line, runs the command, and says what went wrong on stderr.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(
        match cli.log_format {
            args::LogFormatArg::Human => LogFormat::Human,
            args::LogFormatArg::Json => LogFormat::Json,
        },
        &cli.log_level,
    );
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", output::printable(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Ca(CaCommand::Init { dir, days }) => {
            let (cert, key) = tls::init_ca(dir, *days)?;
            output::print_paths(cli.json, &cert, &key);
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
            output::print_paths(cli.json, &cert, &key);
            Ok(())
        }
        Command::Cert(CertCommand::Revoke { ca, node, cert }) => {
            let node = node
                .as_deref()
                .map(NodeId::new)
                .transpose()
                .context("--node")?;
            let revoked = tls::revoke::revoke(ca, node.as_ref(), cert.as_deref())?;
            output::print_revoked(cli.json, &revoked);
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
        Command::Agent(AgentArgs {
            action: Some(action),
        }) => {
            let req = match action {
                AgentCommand::Drain => Request::Drain,
                AgentCommand::Undrain => Request::Undrain,
            };
            ask(&cli, &req, output::print_drain)
        }
        Command::Members => ask(&cli, &Request::Members, |v| {
            match serde_json::from_value::<Vec<MemberInfo>>(v.clone()) {
                Ok(members) => output::print_members(&members),
                Err(_) => output::print_json(v),
            }
        }),
        Command::Status => ask(&cli, &Request::Status, output::print_status),
        Command::Datapath(DatapathCommand::Plan) => {
            ask(&cli, &Request::DatapathPlan, output::print_plan)
        }
        Command::Datapath(DatapathCommand::Diff) => {
            ask(&cli, &Request::DatapathDiff, output::print_diff)
        }
        other => {
            let Some((req, kind)) = requests::of(other) else {
                bail!("internal: {other:?} is not a configuration command");
            };
            ask(&cli, &req, |v| output::print_config(v, kind))
        }
    }
}

/// Sends `req` to the local agent and prints the result: as JSON with `--json`, else with
/// `print`.
fn ask(cli: &Cli, req: &impl serde::Serialize, print: impl FnOnce(&Value)) -> Result<()> {
    let socket = api_socket(cli)?;
    let result = runtime()?.block_on(api::call(&socket, req))?;
    if cli.json {
        output::print_json(&result);
    } else {
        print(&result);
    }
    Ok(())
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
