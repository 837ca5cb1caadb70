//! A sealed virtual cluster on one host, entirely inside namespaces the lab creates.
//!
//! Namespaces are files under the lab's directory (never `/run/netns`): `fabric` (the underlay
//! bridge), `extfab` (the external network's bridge), `upstream` (the external gateway, with the
//! "internet" behind it), `internet`, one `node-<name>` per node and one `vm-<name>` per VM. Each
//! node's agent runs inside its node namespace and keeps its router namespaces in its own
//! directory, so two nodes both have `qrouter-<id>` as real hosts do. The namespaces are held by
//! their files, so restarting an agent never destroys what it programmed. Nothing is attached to
//! the host's namespace and no route leads out of the lab.
//!
//! With `DVRMESH_LAB_WRITERS=operators` at `up`, the agents take tenant configuration only from
//! operators (`[tenancy] writers = "operators"`): the lab issues an operator credential
//! (`ca/operator-lab.pem`) and every command it runs through the CLI is sealed with it.

pub mod chaos;
pub mod dhcp_client;
pub mod exec;
pub mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use datapath::linux::netns;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use self::exec::{output_in, run_in};
use self::spec::{tunnel_ip, LabSpec, NodeSpec, EXT_GATEWAY, INTERNET_IP};

/// Gossip port of every agent (each on its own underlay address).
const GOSSIP_PORT: u16 = 7100;
/// The lease time of the lab's agents: short, so a test sees VMs renew.
pub const DHCP_LEASE_SECONDS: u32 = 20;
/// Where each node's agent serves metrics and health, on the loopback of the node's namespace.
pub const METRICS_PORT: u16 = 9464;

/// What the lab remembers on disk, so `down` works after a crash.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LabState {
    /// Nodes and their agent's pid.
    pub nodes: Vec<NodeState>,
    /// VMs.
    pub vms: Vec<VmState>,
    /// The spec's `snat_advert_multiplier_min`, for nodes added later too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advert_multiplier_min: Option<u32>,
    /// The spec's `snat_restart_hold_ms`, for nodes added later too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_hold_ms: Option<u64>,
}

/// One node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeState {
    /// Name (node id).
    pub name: String,
    /// Mode.
    pub mode: String,
    /// Underlay address.
    pub tunnel_ip: String,
    /// The agent's pid, when running.
    pub pid: Option<u32>,
    /// The binary the agent runs when it is not this build's `dvrmesh` (an upgrade test's older
    /// release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_bin: Option<PathBuf>,
}

/// One VM.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmState {
    /// Name (also its port's name).
    pub name: String,
    /// Hosting node.
    pub node: String,
    /// Network name.
    pub network: String,
    /// Port id.
    pub port: String,
    /// Fixed IP.
    pub ip: String,
    /// MAC.
    pub mac: String,
    /// Floating IP, if any.
    pub fip: Option<String>,
    /// Whether it configured itself by DHCP (else the lab set its address).
    #[serde(default)]
    pub dhcp: bool,
}

/// What a VM needs of its port to configure itself.
pub struct VmPort {
    /// Port id.
    pub id: String,
    /// Fixed IP.
    pub ip: String,
    /// MAC.
    pub mac: String,
    /// The subnet's prefix length.
    pub prefix: String,
    /// The subnet's gateway (the VM's default route).
    pub gateway: String,
    /// The network's MTU.
    pub mtu: String,
}

impl VmPort {
    /// Creates port `name` on `network` through `cli` (a node's agent, which then hosts it) and
    /// reads back what the VM needs to configure itself.
    pub fn create(
        cli: &dyn Fn(&[&str]) -> Result<Value>,
        name: &str,
        network: &str,
    ) -> Result<VmPort> {
        let port = cli(&["port", "create", name, "--network", network])?;
        let field = |k: &str| {
            port[k]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("port without {k}: {port}"))
        };
        let (id, mac) = (field("id")?, field("mac")?);
        let ip = port["fixed_ips"][0]
            .as_str()
            .ok_or_else(|| anyhow!("port without address"))?
            .to_string();
        let subnets = cli(&["subnet", "list"])?;
        let subnet = subnets
            .as_array()
            .and_then(|a| {
                a.iter().find(|s| {
                    s["network"] == port["network"]
                        && cidr_contains(s["cidr"].as_str().unwrap_or(""), &ip)
                })
            })
            .ok_or_else(|| anyhow!("no subnet of {network} holds {ip}"))?;
        let prefix = subnet["cidr"]
            .as_str()
            .and_then(|c| c.split('/').nth(1))
            .unwrap_or("24")
            .to_string();
        let gateway = subnet["gateway"].as_str().unwrap_or_default().to_string();
        let mtu = cli(&["network", "show", network])?["mtu"]
            .as_u64()
            .unwrap_or(1450)
            .to_string();
        Ok(VmPort {
            id,
            ip,
            mac,
            prefix,
            gateway,
            mtu,
        })
    }

    /// The commands, run inside the VM's namespace once `vm_end` is there, that bring `eth0` up
    /// with the port's MAC and no address, at MTU 1500 (DHCP's option 26 sets the network's).
    pub fn dhcp_vm_commands(&self, vm_end: &str) -> Vec<Vec<String>> {
        [
            vec!["ip", "link", "set", "lo", "up"],
            vec!["ip", "link", "set", vm_end, "name", "eth0"],
            vec![
                "ip", "link", "set", "eth0", "address", &self.mac, "mtu", "1500",
            ],
            vec!["ip", "link", "set", "eth0", "up"],
        ]
        .iter()
        .map(|c| c.iter().map(|a| a.to_string()).collect())
        .collect()
    }

    /// The device the agent creates for the VM's end of the port (moved into the VM).
    pub fn vm_end(&self) -> Result<String> {
        Ok(datapath::plan::vm_device(&mesh_proto::ObjectId::new(
            self.id.as_str(),
        )?))
    }

    /// The commands, run inside the VM's namespace once `vm_end` is there, that configure it
    /// the way a VM's DHCP client would: `eth0` with the port's MAC, address, MTU and gateway.
    pub fn vm_commands(&self, vm_end: &str) -> Vec<Vec<String>> {
        let address = format!("{}/{}", self.ip, self.prefix);
        [
            vec!["ip", "link", "set", "lo", "up"],
            vec!["ip", "link", "set", vm_end, "name", "eth0"],
            vec![
                "ip", "link", "set", "eth0", "address", &self.mac, "mtu", &self.mtu,
            ],
            vec!["ip", "addr", "add", &address, "dev", "eth0"],
            vec!["ip", "link", "set", "eth0", "up"],
            vec!["ip", "route", "add", "default", "via", &self.gateway],
        ]
        .iter()
        .map(|c| c.iter().map(|a| a.to_string()).collect())
        .collect()
    }
}

/// Allocates a floating IP on `public` through `cli` and associates it with `port`; returns
/// its address.
pub fn associate_fip(cli: &dyn Fn(&[&str]) -> Result<Value>, port: &str) -> Result<String> {
    let fip = create_fip(cli)?;
    cli(&["fip", "associate", &fip, "--port", port])?;
    Ok(fip)
}

/// Allocates a floating IP on `public` through `cli`; returns its address.
pub fn create_fip(cli: &dyn Fn(&[&str]) -> Result<Value>) -> Result<String> {
    let f = cli(&["fip", "create", "--external-network", "public"])?;
    Ok(f["ip"]
        .as_str()
        .ok_or_else(|| anyhow!("FIP without address"))?
        .to_string())
}

/// How a lab VM gets its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// udhcpc inside the VM, answered by its node's agent.
    Dhcp,
    /// Set by the lab from the port, as before DHCP.
    Static,
}

/// A running lab.
pub struct Lab {
    /// The lab's directory.
    pub dir: PathBuf,
    /// The `dvrmesh` binary.
    pub bin: PathBuf,
    /// What it holds.
    pub state: LabState,
    children: BTreeMap<String, Child>,
}

/// Environment variable choosing who may write tenant configuration in a new lab.
pub const WRITERS_ENV: &str = "DVRMESH_LAB_WRITERS";
/// The lab's operator name.
const LAB_OPERATOR: &str = "lab";

/// The default lab directory.
pub fn default_dir() -> PathBuf {
    PathBuf::from("/run/dvrmesh-lab")
}

/// Finds the `dvrmesh-lab` binary (which carries the probes): the running executable if it is
/// the lab, `$DVRMESH_LAB_BIN`, or next to the running executable.
pub fn find_lab_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("DVRMESH_LAB_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    if exe.file_name().is_some_and(|n| n == "dvrmesh-lab") {
        return Ok(exe);
    }
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("dvrmesh-lab");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "cannot find the dvrmesh-lab binary next to {}: build it or set DVRMESH_LAB_BIN",
        exe.display()
    )
}

/// Finds the `dvrmesh` binary: `$DVRMESH_BIN`, next to the running executable, or its parent
/// directory (tests run from `target/debug/deps`).
pub fn find_dvrmesh() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("DVRMESH_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("dvrmesh");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("cannot find the dvrmesh binary next to {}: build it (cargo build -p dvrmesh-node) or set DVRMESH_BIN", exe.display())
}

impl Lab {
    /// Path of a lab namespace.
    pub fn ns(&self, name: &str) -> PathBuf {
        self.dir.join("ns").join(name)
    }

    /// Namespace of a node.
    pub fn node_ns(&self, node: &str) -> PathBuf {
        self.ns(&format!("node-{node}"))
    }

    /// Namespace of a VM.
    pub fn vm_ns(&self, vm: &str) -> PathBuf {
        self.ns(&format!("vm-{vm}"))
    }

    /// A node's directory (config, credentials, data, its router namespaces, API socket).
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(node)
    }

    /// A node's agent API socket.
    pub fn api(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("api.sock")
    }

    /// The lab's operator credential, when it runs with writers = operators.
    pub fn operator_credential(&self) -> Option<PathBuf> {
        let path = self
            .dir
            .join("ca")
            .join(format!("operator-{LAB_OPERATOR}.pem"));
        path.exists().then_some(path)
    }

    /// A namespace the agent of `node` created (`qrouter-…`, `fip-…`, `snat-…`).
    pub fn agent_ns(&self, node: &str, name: &str) -> PathBuf {
        self.node_dir(node).join("netns").join(name)
    }

    /// Brings a lab up in `dir` (removing any earlier lab there first). `progress` hears each step.
    pub fn up(dir: &Path, spec: &LabSpec, progress: &mut dyn FnMut(&str)) -> Result<Lab> {
        if dir.join("state.json").exists() {
            progress("removing the previous lab");
            Lab::down(dir)?;
        }
        std::fs::create_dir_all(dir.join("ns"))?;
        let mut lab = Lab {
            dir: dir.to_path_buf(),
            bin: find_dvrmesh()?,
            state: LabState {
                advert_multiplier_min: spec.advert_multiplier_min,
                restart_hold_ms: spec.restart_hold_ms,
                ..LabState::default()
            },
            children: BTreeMap::new(),
        };
        lab.save()?;
        progress("creating the underlay, external network, upstream router and internet host");
        lab.build_fabric()?;
        progress("issuing the cluster CA and node certificates");
        let ca = dir.join("ca");
        cli_ok(&lab.bin, &["ca", "init", "--dir", &ca.to_string_lossy()])?;
        if std::env::var(WRITERS_ENV).is_ok_and(|w| w == "operators") {
            progress("issuing the lab's operator credential (writers = operators)");
            let ca = ca.to_string_lossy();
            cli_ok(
                &lab.bin,
                &[
                    "cert",
                    "issue",
                    "--ca",
                    &ca,
                    "--operator",
                    LAB_OPERATOR,
                    "--out",
                    &ca,
                ],
            )?;
        }
        for (i, n) in spec.nodes.iter().enumerate() {
            progress(&format!("creating node {} ({})", n.name, n.mode));
            lab.add_node_running(i, n, spec.agent_bin.clone())?;
        }
        progress("waiting for every agent to see every other");
        lab.wait_members(Duration::from_secs(30))?;
        Ok(lab)
    }

    /// Reopens the lab in `dir` (for `status`, `vm create`, `exec`, `down`).
    pub fn open(dir: &Path) -> Result<Lab> {
        let text = std::fs::read_to_string(dir.join("state.json"))
            .with_context(|| format!("no lab in {} (run dvrmesh-lab up)", dir.display()))?;
        let state: LabState = serde_json::from_str(&text).context("lab state")?;
        Ok(Lab {
            dir: dir.to_path_buf(),
            bin: find_dvrmesh()?,
            state,
            children: BTreeMap::new(),
        })
    }

    pub(crate) fn save(&self) -> Result<()> {
        let tmp = self.dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.state)?)?;
        std::fs::rename(tmp, self.dir.join("state.json"))?;
        Ok(())
    }

    fn build_fabric(&mut self) -> Result<()> {
        let nsdir = self.dir.join("ns");
        for n in ["fabric", "extfab", "upstream", "internet"] {
            netns::create(&nsdir, n)?;
            run_in(&self.ns(n), &["ip", "link", "set", "lo", "up"])?;
            skip_bridge_netfilter(&self.ns(n))?;
        }
        let (fabric, extfab, up, inet) = (
            self.ns("fabric"),
            self.ns("extfab"),
            self.ns("upstream"),
            self.ns("internet"),
        );
        run_in(&fabric, &["ip", "link", "add", "br-ul", "type", "bridge"])?;
        run_in(&fabric, &["ip", "link", "set", "br-ul", "up"])?;
        run_in(&extfab, &["ip", "link", "add", "br-ext", "type", "bridge"])?;
        run_in(&extfab, &["ip", "link", "set", "br-ext", "up"])?;
        run_in(
            &extfab,
            &[
                "ip",
                "link",
                "add",
                "xf-up",
                "type",
                "veth",
                "peer",
                "name",
                "ext0",
                "netns",
                &up.to_string_lossy(),
            ],
        )?;
        run_in(
            &extfab,
            &["ip", "link", "set", "xf-up", "master", "br-ext", "up"],
        )?;
        run_in(
            &up,
            &[
                "ip",
                "addr",
                "add",
                &format!("{EXT_GATEWAY}/24"),
                "dev",
                "ext0",
            ],
        )?;
        run_in(&up, &["ip", "link", "set", "ext0", "up"])?;
        run_in(
            &up,
            &[
                "ip",
                "link",
                "add",
                "inet0",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &inet.to_string_lossy(),
            ],
        )?;
        run_in(
            &up,
            &["ip", "addr", "add", "198.51.100.1/24", "dev", "inet0"],
        )?;
        run_in(&up, &["ip", "link", "set", "inet0", "up"])?;
        run_in(&up, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        run_in(
            &inet,
            &[
                "ip",
                "addr",
                "add",
                &format!("{INTERNET_IP}/24"),
                "dev",
                "eth0",
            ],
        )?;
        run_in(&inet, &["ip", "link", "set", "eth0", "up"])?;
        run_in(
            &inet,
            &["ip", "route", "add", "default", "via", "198.51.100.1"],
        )?;
        Ok(())
    }

    /// Adds a node: its namespace wired to the underlay and the external network, credentials,
    /// configuration, and a running agent.
    pub fn add_node(&mut self, index: usize, name: &str, mode: &str, priority: u8) -> Result<()> {
        let spec = NodeSpec {
            name: name.to_string(),
            mode: mode.to_string(),
            priority,
        };
        self.add_node_running(index, &spec, None)
    }

    /// Adds a node as [`Lab::add_node`] does, its agent running `agent_bin` (`None`: this build's).
    fn add_node_running(
        &mut self,
        index: usize,
        spec: &NodeSpec,
        agent_bin: Option<PathBuf>,
    ) -> Result<()> {
        let (name, mode, priority) = (spec.name.as_str(), spec.mode.as_str(), spec.priority);
        let nsdir = self.dir.join("ns");
        netns::create(&nsdir, &format!("node-{name}"))?;
        skip_bridge_netfilter(&self.node_ns(name))?;
        let tip = tunnel_ip(index);
        self.wire_node(index, name, &tip, mode != "dvr_no_external")?;
        let dir = self.node_dir(name);
        std::fs::create_dir_all(&dir)?;
        let ca = self.dir.join("ca");
        let pki = dir.join("pki");
        cli_ok(
            &self.bin,
            &[
                "cert",
                "issue",
                "--ca",
                &ca.to_string_lossy(),
                "--node",
                name,
                "--out",
                &pki.to_string_lossy(),
            ],
        )?;
        let seed = self
            .state
            .nodes
            .first()
            .map(|n| n.tunnel_ip.clone())
            .unwrap_or_else(|| tip.clone());
        let mut config = agent_config(name, mode, &tip, &seed, priority);
        if let Some(m) = self.state.advert_multiplier_min {
            // Top-level keys go before the first table.
            config = format!("snat_advert_multiplier_min = {m}\n{config}");
        }
        if let Some(ms) = self.state.restart_hold_ms {
            config = format!("snat_restart_hold_ms = {ms}\n{config}");
        }
        if self.operator_credential().is_some() {
            config.push_str("\n[tenancy]\nwriters = \"operators\"\n");
        }
        std::fs::write(dir.join("agent.toml"), config)?;
        self.state.nodes.push(NodeState {
            name: name.to_string(),
            mode: mode.to_string(),
            tunnel_ip: tip,
            pid: None,
            agent_bin,
        });
        self.save()?;
        self.start_agent(name)
    }

    /// Connects a node's namespace to the underlay bridge (`ul0`, with its tunnel IP) and, unless
    /// it has no external access, to the external bridge (`eth1`).
    fn wire_node(&self, index: usize, name: &str, tip: &str, external: bool) -> Result<()> {
        let node = self.node_ns(name);
        let node_path = node.to_string_lossy().to_string();
        let (fabric, extfab) = (self.ns("fabric"), self.ns("extfab"));
        let ul = format!("ul{index}");
        run_in(&node, &["ip", "link", "set", "lo", "up"])?;
        let peer = ["type", "veth", "peer", "name"];
        let add_ul = [
            &["ip", "link", "add", &ul][..],
            &peer,
            &["ul0", "netns", &node_path],
        ];
        run_in(&fabric, &add_ul.concat())?;
        run_in(
            &fabric,
            &["ip", "link", "set", &ul, "master", "br-ul", "up"],
        )?;
        run_in(
            &node,
            &["ip", "addr", "add", &format!("{tip}/24"), "dev", "ul0"],
        )?;
        run_in(&node, &["ip", "link", "set", "ul0", "up"])?;
        if external {
            let xf = format!("xf{index}");
            let add_xf = [
                &["ip", "link", "add", &xf][..],
                &peer,
                &["eth1", "netns", &node_path],
            ];
            run_in(&extfab, &add_xf.concat())?;
            run_in(
                &extfab,
                &["ip", "link", "set", &xf, "master", "br-ext", "up"],
            )?;
            run_in(&node, &["ip", "link", "set", "eth1", "up"])?;
        }
        Ok(())
    }

    /// Starts (or restarts) a node's agent inside its namespace.
    pub fn start_agent(&mut self, name: &str) -> Result<()> {
        let dir = self.node_dir(name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agent.log"))?;
        // The ops of every datapath pass in the log, for a test failure's diagnosis, unless the
        // caller chose a filter.
        let filter = std::env::var("RUST_LOG")
            .unwrap_or_else(|_| "info,dvrmesh_node::reconcile=debug".to_string());
        let bin = self.agent_bin(name);
        let child = Command::new("setsid")
            .env("RUST_LOG", filter)
            .arg("nsenter")
            .arg(format!("--net={}", self.node_ns(name).display()))
            .arg(&bin)
            .args(["agent", "--config"])
            .arg(dir.join("agent.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the agent of {name}"))?;
        let pid = child.id();
        self.children.insert(name.to_string(), child);
        if let Some(n) = self.state.nodes.iter_mut().find(|n| n.name == name) {
            n.pid = Some(pid);
        }
        self.save()?;
        let api = self.api(name);
        wait(
            Duration::from_secs(10),
            &format!("agent {name} answering"),
            || api.exists() && cli(&self.bin, &api, None, &["status"]).is_ok(),
        )
    }

    /// The binary `name`'s agent runs: its own if it was given one, else this build's.
    pub fn agent_bin(&self, name: &str) -> PathBuf {
        self.state
            .nodes
            .iter()
            .find(|n| n.name == name)
            .and_then(|n| n.agent_bin.clone())
            .unwrap_or_else(|| self.bin.clone())
    }

    /// Makes `name`'s agent run `bin` from its next start (`None`: this build's `dvrmesh`): an
    /// upgrade, once the agent is restarted.
    pub fn set_agent_bin(&mut self, name: &str, bin: Option<PathBuf>) -> Result<()> {
        let node = self
            .state
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .ok_or_else(|| anyhow!("no node {name} in the lab"))?;
        node.agent_bin = bin;
        self.save()
    }

    /// Stops a node's agent with `signal` (e.g. "TERM", "KILL") and waits for it to exit.
    pub fn stop_agent(&mut self, name: &str, signal: &str) -> Result<()> {
        let pid = self.agent_pid(name)?;
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .stderr(Stdio::null())
            .status();
        if let Some(mut child) = self.children.remove(name) {
            let _ = child.wait();
        } else {
            wait(Duration::from_secs(10), "agent exit", || {
                !Path::new(&format!("/proc/{pid}")).exists()
            })?;
        }
        if let Some(n) = self.state.nodes.iter_mut().find(|n| n.name == name) {
            n.pid = None;
        }
        self.save()
    }

    /// The nodes whose agent the lab started (and did not stop).
    pub fn running_nodes(&self) -> Vec<String> {
        self.state
            .nodes
            .iter()
            .filter(|n| n.pid.is_some())
            .map(|n| n.name.clone())
            .collect()
    }

    /// Waits until every running agent lists every node alive.
    pub fn wait_members(&self, budget: Duration) -> Result<()> {
        let want = self.state.nodes.len();
        wait(budget, "every agent sees every node alive", || {
            self.state
                .nodes
                .iter()
                .filter(|n| n.pid.is_some())
                .all(|n| {
                    cli(&self.bin, &self.api(&n.name), None, &["members"])
                        .ok()
                        .and_then(|v| {
                            v.as_array()
                                .map(|a| a.iter().filter(|m| m["state"] == "alive").count())
                        })
                        == Some(want)
                })
        })
    }

    /// GET `path` (e.g. `/metrics`, `/readyz`) from `node`'s agent, on the loopback of the
    /// node's namespace: the status code and the body.
    pub fn http_get(&self, node: &str, path: &str) -> Result<(u16, String)> {
        let script = format!(
            "exec 3<>/dev/tcp/127.0.0.1/{METRICS_PORT} && printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
        );
        let out = run_in(
            &self.node_ns(node),
            &["timeout", "5", "bash", "-c", &script],
        )?;
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("no HTTP status from {node}'s metrics endpoint: {out}"))?;
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
        Ok((status, body.unwrap_or_default()))
    }

    /// Runs a dvrmesh command against a node's agent (with `--json`).
    pub fn cli(&self, node: &str, args: &[&str]) -> Result<Value> {
        let credential = self.operator_credential();
        cli(&self.bin, &self.api(node), credential.as_deref(), args)
    }

    /// Creates a VM on `node` attached to `network` that configures itself by DHCP from its
    /// node: the agent there creates the port and its device; the lab moves the VM end into a new
    /// namespace and runs udhcpc there. With `fip`, allocates and associates a floating IP.
    pub fn vm_create(
        &mut self,
        name: &str,
        node: &str,
        network: &str,
        fip: bool,
    ) -> Result<VmState> {
        self.vm_create_with(name, node, network, fip, Addressing::Dhcp)
    }

    /// [`Lab::vm_create`] with the VM's addressing chosen: by DHCP, or set by the lab.
    pub fn vm_create_with(
        &mut self,
        name: &str,
        node: &str,
        network: &str,
        fip: bool,
        addressing: Addressing,
    ) -> Result<VmState> {
        let vm = self.vm_build(name, node, network, fip, addressing)?;
        self.state.vms.push(vm.clone());
        self.save()?;
        Ok(vm)
    }

    /// Creates several VMs at once, as a scheduler starting them would: each VM's port, FIP,
    /// namespace and DHCP client in its own thread. Every VM made is recorded, also when another
    /// failed (then the first error is returned).
    pub fn vm_create_many(&mut self, vms: &[(&str, &str, &str, bool)]) -> Result<Vec<VmState>> {
        let this = &*self;
        let made: Vec<Result<VmState>> = std::thread::scope(|s| {
            let threads: Vec<_> = vms
                .iter()
                .map(|&(name, node, net, fip)| {
                    s.spawn(move || this.vm_build(name, node, net, fip, Addressing::Dhcp))
                })
                .collect();
            threads
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(anyhow!("a VM thread panicked")))
                })
                .collect()
        });
        let mut ok = Vec::new();
        let mut first_error = None;
        for (vm, (name, ..)) in made.into_iter().zip(vms) {
            match vm {
                Ok(vm) => ok.push(vm),
                Err(e) => {
                    first_error.get_or_insert_with(|| e.context(format!("creating VM {name}")));
                }
            }
        }
        self.state.vms.extend(ok.iter().cloned());
        self.save()?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(ok),
        }
    }

    /// Makes one VM (port, namespace, addressing, FIP) without recording it. The FIP is
    /// allocated while the port is made and associated once the port exists.
    fn vm_build(
        &self,
        name: &str,
        node: &str,
        network: &str,
        fip: bool,
        addressing: Addressing,
    ) -> Result<VmState> {
        let cli = |args: &[&str]| self.cli(node, args);
        let (port, fip) = std::thread::scope(|s| {
            let fip = fip.then(|| s.spawn(|| create_fip(&cli)));
            let port = VmPort::create(&cli, name, network).and_then(|port| {
                self.vm_namespace(node, name, &port, addressing)
                    .map(|()| port)
            });
            let fip = fip.map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow!("FIP thread panicked")))
            });
            (port, fip.transpose())
        });
        let (port, fip) = (port?, fip?);
        if let Some(ip) = &fip {
            cli(&["fip", "associate", ip, "--port", &port.id])?;
        }
        Ok(VmState {
            name: name.to_string(),
            node: node.to_string(),
            network: network.to_string(),
            port: port.id,
            ip: port.ip,
            mac: port.mac,
            fip,
            dhcp: addressing == Addressing::Dhcp,
        })
    }

    /// Waits for the agent on `node` to create the port's device, moves its VM end into a new
    /// namespace `vm-<name>` and configures it there (the benchmarks time the port's creation
    /// and this step apart).
    pub fn vm_namespace(
        &self,
        node: &str,
        name: &str,
        port: &VmPort,
        addressing: Addressing,
    ) -> Result<()> {
        let vm_end = port.vm_end()?;
        let node_ns = self.node_ns(node);
        wait(
            Duration::from_secs(15),
            &format!("the agent on {node} creating {vm_end}"),
            || run_in(&node_ns, &["ip", "link", "show", &vm_end]).is_ok(),
        )?;
        netns::create(&self.dir.join("ns"), &format!("vm-{name}"))?;
        let vm_ns = self.vm_ns(name);
        let vm_path = vm_ns.to_string_lossy();
        run_in(&node_ns, &["ip", "link", "set", &vm_end, "netns", &vm_path])?;
        match addressing {
            Addressing::Static => exec::run_many(&vm_ns, &port.vm_commands(&vm_end)),
            Addressing::Dhcp => {
                exec::run_many(&vm_ns, &port.dhcp_vm_commands(&vm_end))?;
                self.dhcp_client(name).start(&vm_ns)
            }
        }
    }

    /// The DHCP client files of VM `name`.
    pub fn dhcp_client(&self, name: &str) -> dhcp_client::ClientFiles {
        dhcp_client::ClientFiles::new(&self.dir, name)
    }

    /// Deletes a VM: stops its DHCP client, deletes its port through its node's agent (which
    /// removes the device) and its namespace.
    pub fn vm_delete(&mut self, name: &str) -> Result<()> {
        let vm = self.vm(name)?.clone();
        self.dhcp_client(name).stop();
        self.cli(&vm.node, &["port", "delete", &vm.port])?;
        netns::delete(&self.dir.join("ns"), &format!("vm-{name}"))?;
        self.state.vms.retain(|v| v.name != name);
        self.save()
    }

    /// A VM by name.
    pub fn vm(&self, name: &str) -> Result<&VmState> {
        self.state
            .vms
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| anyhow!("no VM named {name}"))
    }

    /// The namespace of a lab member by name: a VM, a node, `internet` or `upstream`.
    pub fn member_ns(&self, name: &str) -> Result<PathBuf> {
        if self.state.vms.iter().any(|v| v.name == name) {
            return Ok(self.vm_ns(name));
        }
        if self.state.nodes.iter().any(|n| n.name == name) {
            return Ok(self.node_ns(name));
        }
        if ["internet", "upstream"].contains(&name) {
            return Ok(self.ns(name));
        }
        bail!("no VM, node, internet or upstream named {name}")
    }

    /// Starts a UDP echo server inside a lab member for `secs` seconds.
    pub fn probe_server(&self, member: &str, secs: u64) -> Result<Child> {
        let ns = self.member_ns(member)?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .arg(find_lab_bin()?)
            .args(["probe-serve", "--for-secs", &secs.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting a probe server")?;
        // Give it time to bind.
        std::thread::sleep(Duration::from_millis(150));
        Ok(child)
    }

    /// Sends `count` probes from a lab member to `to` (port 7777), one per `interval_ms`.
    pub fn probe(
        &self,
        from: &str,
        to: &str,
        count: u32,
        interval_ms: u64,
    ) -> Result<crate::probe::ProbeReport> {
        run_probe(&self.member_ns(from)?, to, count, interval_ms, 800)
    }

    /// Starts `count` probes from a lab member to `to`, one per `interval_ms`, beside the caller.
    pub fn probe_stream(
        &self,
        from: &str,
        to: &str,
        count: u32,
        interval_ms: u64,
    ) -> Result<ProbeStream> {
        ProbeStream::start(&self.member_ns(from)?, to, count, interval_ms)
    }

    /// Tears down the lab in `dir`: stops every agent, deletes every namespace (the agents' too),
    /// removes the directory. Works on a half-built or crashed lab.
    pub fn down(dir: &Path) -> Result<()> {
        dhcp_client::ClientFiles::stop_all(dir);
        if let Ok(text) = std::fs::read_to_string(dir.join("state.json")) {
            if let Ok(state) = serde_json::from_str::<LabState>(&text) {
                for n in state.nodes.iter().filter_map(|n| n.pid) {
                    let _ = Command::new("kill")
                        .args(["-KILL", &n.to_string()])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        let nodes = dir.join("nodes");
        if let Ok(entries) = std::fs::read_dir(&nodes) {
            for e in entries.flatten() {
                let nsdir = e.path().join("netns");
                if let Ok(names) = netns::list(&nsdir, datapath::linux::OWNED_NAMESPACE_PREFIXES) {
                    for n in names {
                        let _ = netns::delete(&nsdir, &n);
                    }
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("ns")) {
            for e in entries.flatten() {
                if let Some(name) = e.file_name().to_str() {
                    let _ = netns::delete(&dir.join("ns"), name);
                }
            }
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.children) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A lab node's agent configuration (paths relative to its directory).
/// A lab node is a host that runs dvrmesh only, and the fabric a plain switch: the frames of
/// their bridges skip the IP firewall hooks, as `dvrmesh doctor` advises such a host (bridge
/// netfilter is on in every new namespace where the kernel has it, and costs small packets; the
/// recipe's namespaces turn it off too).
fn skip_bridge_netfilter(ns: &Path) -> Result<()> {
    let keys =
        ["iptables", "ip6tables", "arptables"].map(|t| format!("net.bridge.bridge-nf-call-{t}=0"));
    let mut args = vec!["sysctl", "-q", "-e", "-w"];
    args.extend(keys.iter().map(String::as_str));
    run_in(ns, &args).map(drop)
}

fn agent_config(name: &str, mode: &str, tip: &str, seed: &str, priority: u8) -> String {
    let external = if mode == "dvr_no_external" {
        String::new()
    } else {
        "\n[external.public]\ninterface = \"eth1\"\n".to_string()
    };
    format!(
        "node_id = \"{name}\"\nmode = \"{mode}\"\nlisten = \"{tip}:{GOSSIP_PORT}\"\nseeds = [\"{seed}:{GOSSIP_PORT}\"]\ntunnel_ip = \"{tip}\"\nsnat_priority = {priority}\napi_socket = \"api.sock\"\ndata_dir = \"data\"\nnetns_dir = \"netns\"\ngossip_interval_ms = 100\ndatapath = \"linux\"\ndhcp_lease_seconds = {DHCP_LEASE_SECONDS}\nmetrics_listen = \"127.0.0.1:{METRICS_PORT}\"\n\n[tls]\nca = \"../../ca/ca.pem\"\ncert = \"pki/node.pem\"\nkey = \"pki/node.key\"\n{external}"
    )
}

/// Runs `dvrmesh <args> --api <api> --json` (sealed with an operator `credential` when given)
/// and parses its output.
pub fn cli(bin: &Path, api: &Path, credential: Option<&Path>, args: &[&str]) -> Result<Value> {
    let mut cmd = Command::new(bin);
    cmd.args(args).arg("--api").arg(api).arg("--json");
    if let Some(c) = credential {
        cmd.env("DVRMESH_CREDENTIAL", c);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "dvrmesh {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("dvrmesh output")
}

/// Runs `bin` with `args`; its stderr is the error when it fails.
pub(crate) fn cli_ok(bin: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(bin).args(args).output()?;
    if !out.status.success() {
        bail!(
            "dvrmesh {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Polls `f` every 50 ms until it holds or `budget` passes.
pub fn wait(budget: Duration, what: &str, mut f: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < budget {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what}: not reached within {budget:?}")
}

fn cidr_contains(cidr: &str, ip: &str) -> bool {
    match (cidr.parse::<mesh_proto::Ipv4Cidr>(), ip.parse()) {
        (Ok(c), Ok(ip)) => c.contains(ip),
        _ => false,
    }
}

/// Whether `args` succeed inside `ns` (for polling).
pub fn succeeds_in(ns: &Path, args: &[&str]) -> bool {
    output_in(ns, args)
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs the lab binary's probe client inside namespace `ns` against `to` (port 7777) and reads its
/// report.
pub fn run_probe(
    ns: &Path,
    to: &str,
    count: u32,
    interval_ms: u64,
    wait_ms: u64,
) -> Result<crate::probe::ProbeReport> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .arg(find_lab_bin()?)
        .args([
            "probe",
            &format!("{to}:{}", crate::probe::PORT),
            "--count",
            &count.to_string(),
            "--interval-ms",
            &interval_ms.to_string(),
            "--wait-ms",
            &wait_ms.to_string(),
        ])
        .output()
        .context("running a probe")?;
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("probe output: {}", String::from_utf8_lossy(&out.stderr)))
}

/// A probe stream running beside the caller (a thread waiting on the probe client).
pub struct ProbeStream(std::thread::JoinHandle<Result<crate::probe::ProbeReport>>);

impl ProbeStream {
    /// Starts `count` probes from namespace `ns` to `to`, one per `interval_ms`; replies are
    /// awaited for a second after the last.
    pub fn start(ns: &Path, to: &str, count: u32, interval_ms: u64) -> Result<ProbeStream> {
        let (ns, to) = (ns.to_path_buf(), to.to_string());
        // Fail here, not in the thread, when the lab binary cannot be found.
        find_lab_bin()?;
        Ok(ProbeStream(std::thread::spawn(move || {
            run_probe(&ns, &to, count, interval_ms, 1000)
        })))
    }

    /// Waits for the stream to end and returns its report.
    pub fn finish(self) -> Result<crate::probe::ProbeReport> {
        self.0
            .join()
            .map_err(|_| anyhow!("probe stream thread panicked"))?
    }
}
