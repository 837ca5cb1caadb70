//! `dvrmesh-lab`: a sealed dvrmesh cluster in namespaces on this host, the README's demo, and the
//! probes the scenario tests use. Needs root.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use testbed::lab::spec::LabSpec;
use testbed::lab::{self, Addressing, Lab};
use testbed::{demo, probe};

#[derive(Parser)]
#[command(
    name = "dvrmesh-lab",
    about = "A sealed dvrmesh cluster in network namespaces: real agents, VMs as namespaces, an upstream router and an internet host.",
    long_about = "Everything lives in namespaces the lab creates under its directory; nothing is attached to this \
host's interfaces and no route leads out. `demo` builds the default topology, runs the traffic matrix and tears down."
)]
struct Cli {
    /// The lab's directory.
    #[arg(long, global = true, default_value_os_t = lab::default_dir())]
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bring a lab up (replacing any lab in the same directory).
    Up {
        /// Compute nodes (mode dvr).
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// Network nodes (mode dvr_snat).
        #[arg(long, default_value_t = 1)]
        snat_nodes: usize,
        /// A JSON topology file ({"nodes": [{"name", "mode", "priority"}]}) instead of --nodes.
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Also create the demo's tenants: external network `public`, routers `a-router` and
        /// `b-router` with gateways, networks `a-net1`, `a-net2`, `b-net1`, `b-net2`.
        #[arg(long)]
        tenants: bool,
    },
    /// Stop every agent and remove every namespace of the lab (also after a crash).
    Down,
    /// Show nodes and VMs.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// VMs.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Run a command in a VM, a node (where `dvrmesh …` reaches that node's agent), `internet`
    /// or `upstream`.
    Exec {
        /// VM, node, `internet` or `upstream`.
        name: String,
        /// The command.
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Build the default topology (2 compute nodes, 1 compute node without external access, 1
    /// network node; 2 tenants with overlapping CIDRs, 2 routers, 4 subnets, VMs on several nodes,
    /// FIPs), run the traffic matrix, print it and the time to full connectivity, and tear down.
    Demo {
        /// Keep the lab after the demo.
        #[arg(long)]
        keep: bool,
    },
    /// Inject faults into the running lab (undo them all with `chaos heal-all`).
    #[command(subcommand)]
    Chaos(ChaosCommand),
    /// The same mesh in Docker containers (docker-compose.yml at the repository root; see
    /// docs/compose-lab.md).
    Compose(ComposeArgs),
    /// Run the benchmarks (data plane, control-plane latency, SNAT failover, datapath
    /// programming), each against its
    /// baselines in the same run, and write their figures and plots into BENCHMARKS.md. Builds
    /// and removes its own labs (not the one in --dir).
    Bench {
        /// Few samples of each (CI: the whole harness in under 5 minutes).
        #[arg(long)]
        quick: bool,
        /// Only these sections (dataplane, control, ipam, failover, datapath, sim, agents; repeat or
        /// separate by commas). A full run takes about 80 minutes; sim and agents about 15 and 12.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// The report (sections not run keep their figures).
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Where the plots (SVG) go; the report links them relative to itself when under it.
        #[arg(long, default_value = "docs/bench")]
        plots: PathBuf,
    },
    /// UDP echo server (used inside lab namespaces).
    #[command(hide = true)]
    ProbeServe {
        #[arg(long, default_value_t = probe::PORT)]
        port: u16,
        #[arg(long, default_value_t = 60)]
        for_secs: u64,
    },
    /// Who answers ARP for an address on a device (used inside lab namespaces); prints the MACs
    /// as JSON.
    #[command(hide = true)]
    ArpProbe {
        #[arg(long)]
        dev: String,
        #[arg(long)]
        src_ip: std::net::Ipv4Addr,
        target: std::net::Ipv4Addr,
        #[arg(long, default_value_t = 300)]
        wait_ms: u64,
    },
    /// Sends hostile DHCP frames out of DEV (inside a VM's namespace): random payloads and
    /// garbled BOOTREQUESTs from the device's MAC, as fast as they go.
    #[command(hide = true)]
    DhcpJunk {
        #[arg(long)]
        dev: String,
        #[arg(long, default_value_t = 2000)]
        count: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// UDP probe client (used inside lab namespaces); prints a JSON report.
    #[command(hide = true)]
    Probe {
        to: SocketAddr,
        #[arg(long, default_value_t = 3)]
        count: u32,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        #[arg(long, default_value_t = 1000)]
        wait_ms: u64,
    },
}

#[derive(Subcommand)]
enum ChaosCommand {
    /// SIGKILL a node's agent (its kernel state stays, as after a crash).
    Kill { node: String },
    /// SIGSTOP a node's agent; with --for, SIGCONT it after that many seconds.
    Pause {
        node: String,
        #[arg(long = "for", value_name = "SECS")]
        for_secs: Option<f64>,
    },
    /// SIGCONT a paused agent.
    Resume { node: String },
    /// Restart a node's agent (SIGTERM, then start; a killed agent is just started).
    Restart { node: String },
    /// Cut a node's underlay and external links (--external: only the external one).
    Cut {
        node: String,
        #[arg(long)]
        external: bool,
    },
    /// Restore a node's links.
    Heal { node: String },
    /// Drop underlay traffic between NODE... and the nodes given with --from (both ways unless
    /// --one-way: then only from NODE... to them).
    Partition {
        #[arg(required = true)]
        nodes: Vec<String>,
        #[arg(long, required = true, num_args = 1..)]
        from: Vec<String>,
        #[arg(long)]
        one_way: bool,
        /// Drop only the agents' gossip (UDP to the gossip port): tenant traffic through the
        /// tunnels still flows, and the agents hear each other only through other nodes.
        #[arg(long)]
        gossip_only: bool,
    },
    /// Undo every fault: links up, partitions and loss removed, paused agents continued.
    HealAll,
    /// Random loss on every link (nft numgen, once per link crossed); 0 removes it. With --for,
    /// removed after that many seconds.
    Loss {
        percent: u8,
        #[arg(long = "for", value_name = "SECS")]
        for_secs: Option<f64>,
    },
}

#[derive(clap::Args)]
struct ComposeArgs {
    /// The repository holding docker-compose.yml and compose/ (default: this directory or one
    /// above it, $DVRMESH_REPO, or the tree this binary was built from).
    #[arg(long)]
    repo: Option<PathBuf>,
    #[command(subcommand)]
    command: ComposeCommand,
}

#[derive(Subcommand)]
enum ComposeCommand {
    /// Build the base image from Debian's packages (cached) and the lab image with the built
    /// dvrmesh (the release build if it is the newest) and this dvrmesh-lab.
    Image {
        /// Rebuild the base image too.
        #[arg(long)]
        force_base: bool,
    },
    /// Build what is missing, start the lab (replacing an earlier one), open the lab's bridges
    /// in the host firewall, and wait until every agent lists all five nodes alive.
    Up,
    /// Up, then the namespace demo's tenants, routers, VMs and FIPs through dvrmesh inside the
    /// containers, the traffic matrix with the time to full connectivity, then down.
    Demo {
        /// Keep the lab after the demo (remove it with `compose down`).
        #[arg(long)]
        keep: bool,
    },
    /// Remove the lab's containers, networks, volumes and host firewall rules (also after a
    /// crash); images stay.
    Down,
}

#[derive(Subcommand)]
enum VmCommand {
    /// Create a VM: a port on NODE's agent, its device moved into a new namespace.
    Create {
        name: String,
        #[arg(long)]
        node: String,
        #[arg(long)]
        network: String,
        /// Also allocate and associate a floating IP.
        #[arg(long)]
        fip: bool,
        /// Set the VM's address from its port instead of running udhcpc in it.
        #[arg(long = "static")]
        static_address: bool,
    },
    /// Delete a VM: its DHCP client, its port (through its node's agent) and its namespace.
    Delete { name: String },
}

fn main() -> ExitCode {
    // With RUST_LOG set, the libraries' debug lines (a datapath pass's phases, the bench's
    // passes) go to stderr: how a slow benchmark is taken apart.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// On Ctrl-C or SIGTERM while a lab is being built or demonstrated, tear it down before exiting.
fn teardown_on_interrupt(dir: PathBuf) {
    let _ = ctrlc::set_handler(move || {
        eprintln!("\ninterrupted: tearing the lab down");
        if let Err(e) = Lab::down(&dir) {
            eprintln!("error: {e:#}");
        }
        std::process::exit(130);
    });
}

/// `dvrmesh-lab compose …`: tears an interrupted `up` or `demo` down.
fn compose(args: ComposeArgs) -> Result<()> {
    use testbed::compose::{self, demo as compose_demo, image, ComposeLab};
    let root = match args.repo {
        Some(r) => r,
        None => compose::find_root()?,
    };
    if matches!(
        args.command,
        ComposeCommand::Up | ComposeCommand::Demo { .. }
    ) {
        let r = root.clone();
        let _ = ctrlc::set_handler(move || {
            eprintln!("\ninterrupted: tearing the compose lab down");
            if let Err(e) = ComposeLab::down(&r) {
                eprintln!("error: {e:#}");
            }
            std::process::exit(130);
        });
    }
    let start = Instant::now();
    let mut progress = compose::progress_since(start);
    match args.command {
        ComposeCommand::Image { force_base } => {
            compose::docker::available()?;
            image::ensure_base(&root, force_base, &mut progress)?;
            image::build(&root, &image::Binaries::find()?, &mut progress)?;
        }
        ComposeCommand::Up => {
            ComposeLab::up(&root, &image::Binaries::find()?, &mut progress)?;
            progress(
                "lab up: docker exec dvrmesh-compute-1 dvrmesh members; dvrmesh-lab compose down",
            );
        }
        ComposeCommand::Demo { keep } => compose_demo::run(&root, &image::Binaries::find()?, keep)?,
        ComposeCommand::Down => {
            ComposeLab::down(&root)?;
            progress("compose lab removed");
        }
    }
    Ok(())
}

/// `vm create` and `vm delete`.
fn vm(dir: &Path, c: VmCommand) -> Result<()> {
    let mut lab = Lab::open(dir)?;
    match c {
        VmCommand::Create {
            name,
            node,
            network,
            fip,
            static_address,
        } => {
            let addressing = if static_address {
                Addressing::Static
            } else {
                Addressing::Dhcp
            };
            let vm = lab.vm_create_with(&name, &node, &network, fip, addressing)?;
            println!("{}", serde_json::to_string_pretty(&vm)?);
        }
        VmCommand::Delete { name } => {
            lab.vm_delete(&name)?;
            eprintln!("VM {name} deleted");
        }
    }
    // The lab's agents must outlive this command.
    std::mem::forget(lab);
    Ok(())
}

/// `bench`: the harness, its labs torn down on an interrupt.
fn bench(quick: bool, only: Vec<String>, out: PathBuf, plots: PathBuf) -> Result<()> {
    let _ = ctrlc::set_handler(|| {
        eprintln!("\ninterrupted: tearing the bench labs down");
        testbed::bench::harness::down_labs();
        std::process::exit(130);
    });
    let args: Vec<String> = std::env::args().skip_while(|a| a != "bench").collect();
    testbed::bench::harness::run(&testbed::bench::harness::Options {
        quick,
        only,
        out,
        plots,
        command: format!("dvrmesh-lab {}", args.join(" ")),
    })
}

/// The hidden `dhcp-junk`: `count` hostile DHCP frames out of `dev`.
fn dhcp_junk(dev: &str, count: usize, seed: u64) -> Result<()> {
    let mac = datapath::linux::arp_probe::interface_mac(dev).map_err(anyhow::Error::msg)?;
    let sock = datapath::linux::dhcp_socket::DhcpSocket::open(dev)?;
    let sent = lab::dhcp_client::junk_frames(mac, count, seed)
        .iter()
        .filter(|f| sock.send(f).is_ok())
        .count();
    eprintln!("{sent} of {count} frames sent");
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    if matches!(cli.command, Command::Up { .. } | Command::Demo { .. }) {
        teardown_on_interrupt(cli.dir.clone());
    }
    let dir = &cli.dir;
    match cli.command {
        Command::Up {
            nodes,
            snat_nodes,
            topology,
            tenants,
        } => {
            let spec = match topology {
                Some(f) => read_topology(&f)?,
                None => LabSpec::sized(nodes, snat_nodes),
            };
            up(dir, &spec, tenants)?;
        }
        Command::Down => {
            Lab::down(dir)?;
            eprintln!("lab removed");
        }
        Command::Status { json } => status(&Lab::open(dir)?, json)?,
        Command::Vm(c) => vm(dir, c)?,
        Command::Exec { name, command } => return exec(&Lab::open(dir)?, &name, &command),
        Command::Chaos(c) => {
            let mut lab = Lab::open(dir)?;
            let what = chaos(&mut lab, c)?;
            // A restarted agent must outlive this command.
            std::mem::forget(lab);
            eprintln!("{what}");
        }
        Command::Demo { keep } => {
            demo::run(dir, keep)?;
        }
        Command::Compose(args) => compose(args)?,
        Command::Bench {
            quick,
            only,
            out,
            plots,
        } => bench(quick, only, out, plots)?,
        Command::ProbeServe { port, for_secs } => probe::serve(port, for_secs)?,
        Command::ArpProbe {
            dev,
            src_ip,
            target,
            wait_ms,
        } => arp_probe(&dev, src_ip, target, Duration::from_millis(wait_ms))?,
        Command::DhcpJunk { dev, count, seed } => dhcp_junk(&dev, count, seed)?,
        Command::Probe {
            to,
            count,
            interval_ms,
            wait_ms,
        } => {
            let r = probe::probe(
                to,
                count,
                Duration::from_millis(interval_ms),
                Duration::from_millis(wait_ms),
            )?;
            println!("{}", serde_json::to_string(&r)?);
            if r.received == 0 {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_topology(f: &std::path::Path) -> Result<LabSpec> {
    let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a topology", f.display()))
}

/// Brings the lab up with progress on stderr, and leaves its agents running.
fn up(dir: &std::path::Path, spec: &LabSpec, tenants: bool) -> Result<()> {
    let start = Instant::now();
    let progress = |s: &str| eprintln!("[{:>5.1}s] {s}", start.elapsed().as_secs_f64());
    let lab = Lab::up(dir, spec, &mut |s| progress(s))?;
    if tenants {
        progress("creating the demo tenants");
        demo::configure(&lab)?;
    }
    // The agents keep running after this command returns.
    std::mem::forget(lab);
    eprintln!(
        "lab up in {:.1}s; dvrmesh-lab status, dvrmesh-lab down",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn status(lab: &Lab, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&lab.state)?);
        return Ok(());
    }
    for n in &lab.state.nodes {
        let alive = n
            .pid
            .is_some_and(|p| PathBuf::from(format!("/proc/{p}")).exists());
        println!(
            "node {:<12} {:<16} {:<15} agent {}",
            n.name,
            n.mode,
            n.tunnel_ip,
            if alive { "running" } else { "stopped" }
        );
    }
    for v in &lab.state.vms {
        println!(
            "vm   {:<12} on {:<12} {:<10} {:<15} {} {}",
            v.name,
            v.node,
            v.network,
            v.ip,
            v.mac,
            v.fip.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// Runs `command` in a member's namespace; on a node, `dvrmesh` reaches that node's agent.
fn exec(lab: &Lab, name: &str, command: &[String]) -> Result<ExitCode> {
    let ns = lab.member_ns(name)?;
    let mut c = std::process::Command::new("nsenter");
    c.arg(format!("--net={}", ns.display())).args(command);
    if lab.state.nodes.iter().any(|n| n.name == name) {
        c.env("DVRMESH_API", lab.api(name));
        if let Some(dir) = lab.bin.parent() {
            let path = std::env::var("PATH").unwrap_or_default();
            c.env("PATH", format!("{}:{path}", dir.display()));
        }
    }
    let status = c.status().context("running the command")?;
    Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
}

/// `--for SECS`, bounded to an hour.
fn for_duration(s: Option<f64>) -> Result<Option<Duration>> {
    s.map(|s| {
        if s.is_finite() && (0.0..=3600.0).contains(&s) {
            Ok(Duration::from_secs_f64(s))
        } else {
            anyhow::bail!("--for must be 0..=3600 seconds")
        }
    })
    .transpose()
}

/// Injects one fault; returns what was done, for people.
fn chaos(lab: &mut Lab, c: ChaosCommand) -> Result<String> {
    Ok(match c {
        ChaosCommand::Kill { node } => {
            lab.chaos_kill(&node)?;
            format!("killed the agent of {node}")
        }
        ChaosCommand::Pause { node, for_secs } => {
            let d = for_duration(for_secs)?;
            lab.chaos_pause(&node, d)?;
            match d {
                Some(d) => format!("paused the agent of {node} for {:.1}s", d.as_secs_f64()),
                None => format!("paused the agent of {node} (chaos resume {node})"),
            }
        }
        ChaosCommand::Resume { node } => {
            lab.chaos_resume(&node)?;
            format!("resumed the agent of {node}")
        }
        ChaosCommand::Restart { node } => {
            lab.chaos_restart(&node)?;
            format!("restarted the agent of {node}")
        }
        ChaosCommand::Cut { node, external } => {
            if external {
                lab.chaos_cut_external(&node)?;
                format!("cut the external link of {node}")
            } else {
                lab.chaos_cut(&node)?;
                format!("cut the links of {node}")
            }
        }
        ChaosCommand::Heal { node } => {
            lab.chaos_heal(&node)?;
            format!("restored the links of {node}")
        }
        ChaosCommand::Partition {
            nodes,
            from,
            one_way,
            gossip_only,
        } => {
            let what = if gossip_only {
                lab.chaos_partition_gossip(&nodes, &from, one_way)?;
                "the gossip of "
            } else {
                lab.chaos_partition(&nodes, &from, one_way)?;
                ""
            };
            let arrow = if one_way { "->" } else { "<->" };
            format!(
                "partitioned {what}{} {arrow} {}",
                nodes.join(","),
                from.join(",")
            )
        }
        ChaosCommand::HealAll => {
            lab.chaos_heal_all()?;
            "healed every fault".to_string()
        }
        ChaosCommand::Loss { percent, for_secs } => {
            let d = for_duration(for_secs)?;
            lab.chaos_loss(percent)?;
            match d {
                Some(d) => {
                    std::thread::sleep(d);
                    lab.chaos_loss(0)?;
                    format!("{percent}% loss on every link for {:.1}s", d.as_secs_f64())
                }
                None => format!("{percent}% loss on every link"),
            }
        }
    })
}

/// Prints, as JSON, the MACs that answer ARP for `target` on `dev`.
fn arp_probe(
    dev: &str,
    src_ip: std::net::Ipv4Addr,
    target: std::net::Ipv4Addr,
    wait: Duration,
) -> Result<()> {
    let out = std::process::Command::new("ip")
        .args(["-j", "link", "show", "dev", dev])
        .output()
        .context("running ip")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("ip -j link output")?;
    let mac: mesh_proto::MacAddr = v[0]["address"]
        .as_str()
        .context("device has no MAC")?
        .parse()
        .context("device MAC")?;
    let macs = datapath::linux::arp_probe::who_has(dev, mac.octets(), src_ip, target, wait)
        .map_err(|e| anyhow::anyhow!(e))?;
    println!("{}", serde_json::to_string(&macs)?);
    Ok(())
}
