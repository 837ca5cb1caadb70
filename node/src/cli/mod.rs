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
/// The configuration the Debian package installs, read for its api_socket when nothing else
/// names the agent.
const PACKAGED_CONFIG: &str = "/etc/dvrmesh/node.toml";

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
            operator,
            out,
            days,
        }) => {
            if let Some(name) = operator {
                let file = tls::issue_operator_cert(ca, name, out, *days)?;
                output::print_paths(cli.json, &file, &file);
                return Ok(());
            }
            let node = NodeId::new(node.as_deref().unwrap_or_default()).context("--node")?;
            let (cert, key) = tls::issue_node_cert(ca, &node, out, *days)?;
            output::print_paths(cli.json, &cert, &key);
            Ok(())
        }
        Command::Cert(CertCommand::List { ca, node }) => {
            let node = node
                .as_deref()
                .map(NodeId::new)
                .transpose()
                .context("--node")?;
            let issued = tls::issued::list(ca, node.as_ref())?;
            output::print_issued(cli.json, &issued);
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
            match runtime()?.block_on(agent::run(config))? {
                agent::Exit::Stopped => Ok(()),
                agent::Exit::Reload => Err(dvrmesh_node::reload::reexec().into()),
            }
        }
        Command::Agent(AgentArgs {
            action: Some(action),
        }) => match action {
            AgentCommand::Drain => ask(&cli, &Request::Drain, output::print_drain),
            AgentCommand::Undrain => ask(&cli, &Request::Undrain, output::print_drain),
            AgentCommand::ReloadCert => ask(&cli, &Request::ReloadCert, output::print_json),
        },
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
        Command::Doctor => doctor(&cli),
        other => {
            let Some((req, kind)) = requests::of(other)? else {
                bail!("internal: {other:?} is not a configuration command");
            };
            ask(&cli, &req, |v| output::print_config(v, kind))
        }
    }
}

/// Sends `req` to the local agent and prints the result: as JSON with `--json`, else with
/// `print`. With an operator credential (`--credential`, else $DVRMESH_CREDENTIAL) the agent may
/// ask it to seal the records the request causes.
fn ask(cli: &Cli, req: &impl serde::Serialize, print: impl FnOnce(&Value)) -> Result<()> {
    let socket = api_socket(cli)?;
    let credential = cli.credential.clone().or_else(|| {
        std::env::var_os(tls::operator::CREDENTIAL_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    });
    let credential = credential
        .map(|p| tls::operator::OperatorCredential::load(&p))
        .transpose()?;
    let result = runtime()?.block_on(api::call_as(&socket, req, credential.as_ref()))?;
    if cli.json {
        output::print_json(&result);
    } else {
        print(&result);
    }
    Ok(())
}

/// Runs the preflight and prints it; an error (exit status 1) when a check failed.
fn doctor(cli: &Cli) -> Result<()> {
    let api = cli.api.clone().or_else(|| {
        cli.config
            .is_none()
            .then(|| {
                std::env::var_os(API_ENV)
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
            })
            .flatten()
    });
    let report = dvrmesh_node::doctor::run(&dvrmesh_node::doctor::Options {
        config: cli.config.clone(),
        api,
    });
    if cli.json {
        // Printed from the struct, so the verdict and counts come before the checks.
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        output::print_doctor(&report);
    }
    if report.failed() {
        bail!(
            "{} of {} checks failed",
            report.counts.fail,
            report.checks.len()
        );
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Where to find the agent: --api, else --config's api_socket, else $DVRMESH_API, else the
/// packaged configuration's api_socket.
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
    let packaged = std::path::Path::new(PACKAGED_CONFIG);
    if packaged.exists() {
        return Ok(Config::load(packaged)?.api_socket);
    }
    bail!("no agent to talk to: pass --api PATH or --config FILE, set {API_ENV}, or write {PACKAGED_CONFIG}")
}
