//! The README's main job: a lab with two tenants whose CIDRs overlap, their routers, VMs spread
//! over the nodes, FIPs, and the traffic matrix proving every path. The configuration and the
//! matrix run on any [`Cluster`]: the namespace lab here, the compose lab in [`crate::compose`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::lab::spec::{LabSpec, EXT_CIDR, EXT_GATEWAY, INTERNET_IP};
use crate::lab::{wait, Lab, VmState};
use crate::probe::{ProbeReport, ServerGuard};

/// The external side of a lab: the external network dvrmesh maps (`public`) and the internet
/// host behind the upstream router.
pub struct External {
    /// The external network's prefix.
    pub cidr: &'static str,
    /// The upstream router's address on it.
    pub gateway: &'static str,
    /// The addresses dvrmesh hands out there (router gateways and FIPs).
    pub pool: &'static str,
    /// The internet host.
    pub internet_ip: &'static str,
}

/// The namespace lab's external side.
pub const NAMESPACE_EXTERNAL: External = External {
    cidr: EXT_CIDR,
    gateway: EXT_GATEWAY,
    pool: "203.0.113.10-203.0.113.250",
    internet_ip: INTERNET_IP,
};

/// The demo's VMs: name, node, network, whether it gets a FIP. `b-vm3` is on the node without
/// external access, so its FIP is served centrally.
pub const VMS: [(&str, &str, &str, bool); 6] = [
    ("a-vm1", "compute-1", "a-net1", true),
    ("a-vm2", "compute-2", "a-net2", false),
    ("a-vm3", "compute-2", "a-net1", false),
    ("b-vm1", "compute-1", "b-net1", true),
    ("b-vm2", "network-1", "b-net2", false),
    ("b-vm3", "compute-3", "b-net2", true),
];

/// What the demo needs of a lab; the namespace lab and the compose lab both provide it.
pub trait Cluster: Sync {
    /// The node whose agent takes the configuration.
    fn config_node(&self) -> &str;
    /// Every node running an agent.
    fn node_names(&self) -> Vec<String>;
    /// Runs a dvrmesh command against a node's agent (with `--json`).
    fn cli(&self, node: &str, args: &[&str]) -> Result<Value>;
    /// The VMs made so far.
    fn vms(&self) -> &[VmState];
    /// Sends `count` UDP probes from a member (VM, node, `internet`) to `to`.
    fn probe(&self, from: &str, to: &str, count: u32, interval_ms: u64) -> Result<ProbeReport>;
    /// Starts a UDP echo server in a member for at most `secs`; stopped when the guard drops.
    fn probe_server(&self, member: &str, secs: u64) -> Result<ServerGuard>;
    /// The external network and the internet host.
    fn external(&self) -> &External;
    /// The last DHCP lease VM `vm` recorded (`key=value` pairs of its client), when it boots
    /// by DHCP and this lab records leases.
    fn dhcp_lease(&self, _vm: &str) -> Option<BTreeMap<String, String>> {
        None
    }
    /// The body of `http://169.254.169.254<path>` fetched from inside VM `vm`, when this lab's
    /// VMs can reach the metadata service (they boot by DHCP, which routes the address).
    fn metadata(&self, _vm: &str, _path: &str) -> Option<Result<String>> {
        None
    }
}

impl Cluster for Lab {
    fn config_node(&self) -> &str {
        &self.state.nodes[0].name
    }
    fn node_names(&self) -> Vec<String> {
        self.running_nodes()
    }
    fn cli(&self, node: &str, args: &[&str]) -> Result<Value> {
        Lab::cli(self, node, args)
    }
    fn vms(&self) -> &[VmState] {
        &self.state.vms
    }
    fn probe(&self, from: &str, to: &str, count: u32, interval_ms: u64) -> Result<ProbeReport> {
        Lab::probe(self, from, to, count, interval_ms)
    }
    fn probe_server(&self, member: &str, secs: u64) -> Result<ServerGuard> {
        let mut child = Lab::probe_server(self, member, secs)?;
        Ok(ServerGuard::new(move || {
            let _ = child.kill();
            let _ = child.wait();
        }))
    }
    fn external(&self) -> &External {
        &NAMESPACE_EXTERNAL
    }
    fn metadata(&self, vm: &str, path: &str) -> Option<Result<String>> {
        let url = format!("http://169.254.169.254{path}");
        Some(crate::lab::exec::run_in(
            &self.vm_ns(vm),
            &["curl", "-sSf", "--max-time", "3", &url],
        ))
    }
    fn dhcp_lease(&self, vm: &str) -> Option<BTreeMap<String, String>> {
        let text = std::fs::read_to_string(self.dhcp_client(vm).lease()).ok()?;
        Some(crate::lab::dhcp_client::parse_lease(&text))
    }
}

/// One expected path and what was seen.
struct Check {
    from: String,
    to: String,
    path: &'static str,
    expect_seen_as: Option<String>,
    expect_reach: bool,
}

/// Builds the demo configuration through the namespace lab's first agent.
pub fn configure(lab: &Lab) -> Result<()> {
    configure_on(lab)
}

/// Builds the demo configuration through `cluster`'s configuration node: the external network
/// `public`, routers `a-router` and `b-router` with gateways, networks `a-net1`, `a-net2`,
/// `b-net1`, `b-net2` (`a-net1` and `b-net1` both 10.1.0.0/24).
pub fn configure_on(cluster: &dyn Cluster) -> Result<()> {
    let n = cluster.config_node();
    let ext = cluster.external();
    let c = |args: &[&str]| cluster.cli(n, args).map(|_| ());
    c(&[
        "external-network",
        "create",
        "public",
        "--cidr",
        ext.cidr,
        "--gateway",
        ext.gateway,
        "--pool",
        ext.pool,
    ])?;
    for (t, nets) in [
        (
            "a",
            [("net1", 101, "10.1.0.0/24"), ("net2", 102, "10.2.0.0/24")],
        ),
        (
            "b",
            [("net1", 201, "10.1.0.0/24"), ("net2", 202, "10.3.0.0/24")],
        ),
    ] {
        let router = format!("{t}-router");
        c(&["router", "create", &router])?;
        for (net, vni, cidr) in nets {
            let (net_name, sub_name) = (format!("{t}-{net}"), format!("{t}-{net}-sub"));
            c(&["network", "create", &net_name, "--vni", &vni.to_string()])?;
            c(&[
                "subnet",
                "create",
                &sub_name,
                "--network",
                &net_name,
                "--cidr",
                cidr,
            ])?;
            c(&["router", "add-interface", &router, "--subnet", &sub_name])?;
        }
        c(&[
            "router",
            "set-gateway",
            &router,
            "--external-network",
            "public",
        ])?;
    }
    wait_for_subnets_everywhere(cluster, 4)
}

/// Waits until every node's agent lists `count` subnets: each node learns a write made through
/// another by gossip, and a port made on a node right after the configuration needs its subnet
/// there.
fn wait_for_subnets_everywhere(cluster: &dyn Cluster, count: usize) -> Result<()> {
    let nodes = cluster.node_names();
    crate::lab::wait(
        std::time::Duration::from_secs(30),
        "every node lists the demo's subnets",
        || {
            nodes.iter().all(|n| {
                cluster
                    .cli(n, &["subnet", "list"])
                    .ok()
                    .and_then(|v| v.as_array().map(Vec::len))
                    .is_some_and(|len| len >= count)
            })
        },
    )
}

/// Runs the demo in `dir`; its time to full connectivity.
pub fn run(dir: &Path, keep: bool) -> Result<Connectivity> {
    let start = Instant::now();
    let step = |s: &str| eprintln!("[{:>5.1}s] {s}", start.elapsed().as_secs_f64());
    let mut spec = LabSpec::sized(2, 1);
    spec.nodes.insert(
        2,
        crate::lab::spec::NodeSpec {
            name: "compute-3".into(),
            mode: "dvr_no_external".into(),
            priority: 100,
        },
    );
    let mut lab = Lab::up(dir, &spec, &mut |s| step(s))?;
    step(
        "creating 2 tenants (overlapping 10.1.0.0/24), 2 routers, 4 subnets, the external network",
    );
    configure(&lab)?;
    let requested = Instant::now();
    for (name, node, net, fip) in VMS {
        step(&format!(
            "requesting VM {name} on {node} ({net}{})",
            if fip { ", with a FIP" } else { "" }
        ));
    }
    lab.vm_create_many(&VMS)?;
    step("every VM has its port, its DHCP lease and its FIP");
    let result = matrix(&lab, Timing { start, requested });
    if keep {
        std::mem::forget(lab);
        eprintln!(
            "lab kept in {}; dvrmesh-lab status, dvrmesh-lab down",
            dir.display()
        );
    } else {
        drop(lab);
        Lab::down(dir)?;
        step("lab torn down");
    }
    result
}

impl Check {
    /// `from` reaches `to` and is seen there as `seen_as`.
    fn reach(from: &str, to: &str, path: &'static str, seen_as: &str) -> Check {
        Check {
            from: from.to_string(),
            to: to.to_string(),
            path,
            expect_seen_as: Some(seen_as.to_string()),
            expect_reach: true,
        }
    }
}

fn router_ip(c: &dyn Cluster, router: &str) -> Result<String> {
    let r = c.cli(c.config_node(), &["router", "show", router])?;
    r["gateway"]["external_ip"]
        .as_str()
        .map(String::from)
        .context("router without external address")
}

/// When a demo started and when it requested its VMs (the time to full connectivity is given
/// from both).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// The demo's start (before the lab came up).
    pub start: Instant,
    /// When the VMs were requested (the configuration done).
    pub requested: Instant,
}

/// How long a demo took to full connectivity.
#[derive(Clone, Copy, Debug)]
pub struct Connectivity {
    /// From the demo's start (before the lab came up).
    pub since_start: Duration,
    /// From the VMs' request (the configuration done).
    pub since_requested: Duration,
    /// Paths in the matrix.
    pub paths: usize,
    /// The matrix pass in which every path passed (1: the first).
    pub passes: usize,
}

/// Runs the traffic matrix on `cluster` until every path passes (30 s at most), prints it with
/// the time to full connectivity, and fails if a path did not pass. One pass runs every check
/// at once, so a pass takes as long as its slowest check.
pub fn matrix(cluster: &dyn Cluster, timing: Timing) -> Result<Connectivity> {
    leases(cluster)?;
    metadata(cluster)?;
    let checks = checks(cluster)?;
    let mut members: Vec<&str> = cluster.vms().iter().map(|v| v.name.as_str()).collect();
    members.push("internet");
    // Started side by side: each waits for its server to bind.
    let servers: Vec<ServerGuard> = std::thread::scope(|s| {
        let threads: Vec<_> = members
            .iter()
            .map(|m| s.spawn(move || cluster.probe_server(m, 120)))
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a probe server thread panicked")))
            })
            .collect::<Result<_>>()
    })?;
    // Time to full connectivity: retry the whole matrix until every check passes (30 s at most).
    let mut outcome = Vec::new();
    let mut passes = 0;
    let ok = wait(Duration::from_secs(30), "full connectivity", || {
        passes += 1;
        outcome = run_checks(cluster, &checks);
        outcome.iter().all(|(pass, _)| *pass)
    });
    let (since_start, since_requested) = (timing.start.elapsed(), timing.requested.elapsed());
    drop(servers);
    println!(
        "{:<8} {:<10} {:<30} {:<6} seen as",
        "from", "to", "path", "result"
    );
    for (c, (pass, seen)) in checks.iter().zip(&outcome) {
        let result = if *pass { "ok" } else { "FAIL" };
        println!(
            "{:<8} {:<10} {:<30} {result:<6} {seen}",
            c.from, c.to, c.path
        );
    }
    ok.map_err(|e| e.context("the traffic matrix did not pass"))?;
    println!(
        "full connectivity {:.1}s after start, {:.1}s after the VMs were requested ({} paths, \
         all passed in matrix pass {passes})",
        since_start.as_secs_f64(),
        since_requested.as_secs_f64(),
        checks.len()
    );
    Ok(Connectivity {
        since_start,
        since_requested,
        paths: checks.len(),
        passes,
    })
}

/// Prints what each VM that booted by DHCP was given, and fails unless each was given its own
/// port's address (tenants a and b share 10.1.0.0/24: each VM must get its own port's address,
/// from its own node).
fn leases(cluster: &dyn Cluster) -> Result<()> {
    let dhcp: Vec<&VmState> = cluster.vms().iter().filter(|v| v.dhcp).collect();
    if dhcp.is_empty() {
        return Ok(());
    }
    println!(
        "{:<8} {:<10} {:<14} {:<10} {:<6} result",
        "VM", "node", "DHCP address", "gateway", "MTU"
    );
    let mut wrong = Vec::new();
    for v in dhcp {
        let lease = cluster.dhcp_lease(&v.name).unwrap_or_default();
        let get = |k: &str| lease.get(k).cloned().unwrap_or_else(|| "-".into());
        let ok = lease.get("ip") == Some(&v.ip);
        println!(
            "{:<8} {:<10} {:<14} {:<10} {:<6} {}",
            v.name,
            v.node,
            get("ip"),
            get("router"),
            get("mtu"),
            if ok { "ok" } else { "FAIL" }
        );
        if !ok {
            wrong.push(v.name.clone());
        }
    }
    if !wrong.is_empty() {
        anyhow::bail!(
            "VMs without their port's address by DHCP: {}",
            wrong.join(", ")
        );
    }
    Ok(())
}

/// Prints what each VM read of its own metadata (instance id = its port, availability zone = its
/// node), and fails unless each read exactly its own (tenants a and b share 10.1.0.0/24). Labs
/// whose VMs cannot reach the service are skipped.
fn metadata(cluster: &dyn Cluster) -> Result<()> {
    let vms: Vec<&VmState> = cluster.vms().iter().filter(|v| v.dhcp).collect();
    if vms.is_empty() || cluster.metadata(&vms[0].name, "/").is_none() {
        return Ok(());
    }
    println!(
        "{:<8} {:<10} {:<20} {:<10} result",
        "VM", "node", "metadata instance", "zone"
    );
    let mut wrong = Vec::new();
    for v in vms {
        let read = |path: &str| match cluster.metadata(&v.name, path) {
            Some(Ok(body)) => body,
            _ => "-".into(),
        };
        let (mut id, mut zone) = (String::new(), String::new());
        let ok = wait(Duration::from_secs(30), "metadata", || {
            id = read("/latest/meta-data/instance-id");
            zone = read("/latest/meta-data/placement/availability-zone");
            id == v.port && zone == v.node
        })
        .is_ok();
        println!(
            "{:<8} {:<10} {:<20} {:<10} {}",
            v.name,
            v.node,
            id,
            zone,
            if ok { "ok" } else { "FAIL" }
        );
        if !ok {
            wrong.push(v.name.clone());
        }
    }
    if !wrong.is_empty() {
        anyhow::bail!(
            "VMs that did not read their own metadata: {}",
            wrong.join(", ")
        );
    }
    Ok(())
}

/// Every path of the demo: east-west between each tenant's VMs, north-south through SNAT or the
/// VM's FIP, the internet to each FIP, and one isolation check between the tenants.
fn checks(cluster: &dyn Cluster) -> Result<Vec<Check>> {
    let internet_ip = cluster.external().internet_ip;
    let mut checks = Vec::new();
    for t in ['a', 'b'] {
        let vms: Vec<&VmState> = cluster
            .vms()
            .iter()
            .filter(|v| v.name.starts_with(t))
            .collect();
        let snat_ip = router_ip(cluster, &format!("{t}-router"))?;
        for a in &vms {
            for b in vms.iter().filter(|b| b.name != a.name) {
                let path = if a.node == b.node {
                    "east-west, same host"
                } else {
                    "east-west, across hosts"
                };
                checks.push(Check::reach(&a.name, &b.name, path, &a.ip));
            }
            let (path, seen) = match &a.fip {
                Some(f) => ("north-south via its FIP", f),
                None => ("north-south via SNAT", &snat_ip),
            };
            checks.push(Check::reach(&a.name, "internet", path, seen));
            if a.fip.is_some() {
                checks.push(Check::reach(
                    "internet",
                    &a.name,
                    "internet to FIP",
                    internet_ip,
                ));
            }
        }
    }
    // Isolation: tenant a cannot reach tenant b, not even at an address inside its own CIDR.
    // The two tenants' VMs in 10.1.0.0/24 may hold the same address (each tenant's pool is its
    // own); a probe to an address a tenant-a VM also holds would reach that VM, so the target is
    // the first tenant-b VM (b-vm1 in the shared CIDR, else b-vm2) whose address no tenant-a VM
    // holds.
    let a_ips: Vec<&str> = cluster
        .vms()
        .iter()
        .filter(|v| v.name.starts_with('a'))
        .map(|v| v.ip.as_str())
        .collect();
    let target = ["b-vm1", "b-vm2"]
        .into_iter()
        .filter_map(|n| vm(cluster, n))
        .find(|b| !a_ips.contains(&b.ip.as_str()));
    if let (Some(a), Some(b)) = (vm(cluster, "a-vm1"), target) {
        checks.push(Check {
            from: a.name.clone(),
            to: b.name.clone(),
            path: "tenant isolation (must fail)",
            expect_seen_as: None,
            expect_reach: false,
        });
    }
    Ok(checks)
}

fn vm<'a>(cluster: &'a dyn Cluster, name: &str) -> Option<&'a VmState> {
    cluster.vms().iter().find(|v| v.name == name)
}

/// Every check at once, each in its own thread; the outcomes in the checks' order.
fn run_checks(cluster: &dyn Cluster, checks: &[Check]) -> Vec<(bool, String)> {
    std::thread::scope(|s| {
        let threads: Vec<_> = checks
            .iter()
            .map(|c| s.spawn(move || run_check(cluster, c)))
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| (false, "the check's thread panicked".into()))
            })
            .collect()
    })
}

fn run_check(cluster: &dyn Cluster, c: &Check) -> (bool, String) {
    let target = if c.to == "internet" {
        cluster.external().internet_ip.to_string()
    } else {
        match vm(cluster, &c.to) {
            Some(v) if c.from == "internet" => v.fip.clone().unwrap_or_default(),
            Some(v) => v.ip.clone(),
            None => return (false, "no such VM".into()),
        }
    };
    match cluster.probe(&c.from, &target, 2, 50) {
        Ok(r) if c.expect_reach => {
            let seen = r.seen_as.join(",");
            let good = r.received > 0
                && c.expect_seen_as
                    .as_ref()
                    .is_none_or(|s| r.seen_as.iter().all(|x| x == s));
            (good, seen)
        }
        Ok(r) => (
            r.received == 0,
            if r.received == 0 {
                "unreachable".into()
            } else {
                r.seen_as.join(",")
            },
        ),
        Err(e) => (!c.expect_reach, format!("{e}")),
    }
}
