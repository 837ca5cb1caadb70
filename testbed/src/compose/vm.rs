//! VMs in the compose lab, as in the namespace lab: a port on a node's agent, its VM end moved
//! into a namespace inside that node's container (`/run/netns/<vm>`); and the UDP probes, run
//! with the `dvrmesh-lab` binary inside the containers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use super::{container, docker, ComposeLab, EXTERNAL};
use crate::demo::{Cluster, External};
use crate::lab::{associate_fip, wait, VmPort, VmState};
use crate::probe::{ProbeReport, ServerGuard, PORT};

impl ComposeLab {
    /// Creates a VM on `node` attached to `network` (with a FIP if `fip`).
    pub fn vm_create(
        &mut self,
        name: &str,
        node: &str,
        network: &str,
        fip: bool,
    ) -> Result<VmState> {
        let cli = |args: &[&str]| self.cli(node, args);
        let port = VmPort::create(&cli, name, network)?;
        self.vm_namespace(node, name, &port)?;
        let fip = if fip {
            Some(associate_fip(&cli, &port.id)?)
        } else {
            None
        };
        let vm = VmState {
            name: name.to_string(),
            node: node.to_string(),
            network: network.to_string(),
            port: port.id.clone(),
            ip: port.ip.clone(),
            mac: port.mac.clone(),
            fip,
            dhcp: true,
        };
        self.vms.push(vm.clone());
        self.ports.insert(name.to_string(), port);
        Ok(vm)
    }

    /// Sets the VMs of `node` up again after its container restarted (which wiped them; their
    /// ports are still in the cluster's configuration, so the agent made their devices again).
    pub fn vm_reattach(&self, node: &str) -> Result<()> {
        for v in self.vms.iter().filter(|v| v.node == node) {
            let port = self.ports.get(&v.name).context("VM without port")?;
            self.vm_namespace(node, &v.name, port)?;
        }
        Ok(())
    }

    /// Waits for the agent on `node` to create the port's device, then moves its VM end into
    /// namespace `name` inside the node's container and boots it there by DHCP from that node's
    /// agent (busybox `udhcpc` with the namespace lab's script, which records the lease under
    /// [`VM_DIR`]); one `docker exec`.
    fn vm_namespace(&self, node: &str, name: &str, port: &VmPort) -> Result<()> {
        let vm_end = port.vm_end()?;
        let c = container(node);
        wait(
            Duration::from_secs(15),
            &format!("the agent on {node} creating {vm_end}"),
            || docker::exec_ok(&c, &["ip", "link", "show", &vm_end]),
        )?;
        let mut script = format!(
            "{}ip netns add {name}\nip link set {vm_end} netns {name}\n",
            install_dhcp_script()
        );
        for cmd in port.dhcp_vm_commands(&vm_end) {
            // `ip ARGS` inside the VM: `ip -n NAME ARGS`.
            let args: Vec<String> = cmd[1..].iter().map(|a| format!("'{a}'")).collect();
            script.push_str(&format!("ip -n {name} {}\n", args.join(" ")));
        }
        // 10 discovers 1 s apart, then in the background renewing; its log on failure.
        script.push_str(&format!(
            "rm -f {VM_DIR}/{name}.lease {VM_DIR}/{name}.lease.events\n\
             if ! DVRMESH_LEASE={VM_DIR}/{name}.lease ip netns exec {name} busybox udhcpc -i eth0 \
             -s {VM_DIR}/udhcpc.script -p {VM_DIR}/{name}.pid -t 10 -T 1 -A 1 -n \
             >>{VM_DIR}/{name}.log 2>&1; then cat {VM_DIR}/{name}.log >&2; exit 1; fi\n"
        ));
        docker::exec(&c, &["sh", "-ec", &script])
            .with_context(|| format!("setting up VM {name} in {c}"))?;
        Ok(())
    }

    /// Starts `count` probes from a member to `to`, one per `interval_ms`, beside the caller.
    pub fn probe_stream(
        &self,
        from: &str,
        to: &str,
        count: u32,
        interval_ms: u64,
    ) -> Result<Stream> {
        let args = self.probe_args(from, to, count, interval_ms, 1000)?;
        let what = format!("stream {from} -> {to}");
        Ok(Stream(std::thread::spawn(move || run_probe(&args, &what))))
    }

    fn probe_args(
        &self,
        from: &str,
        to: &str,
        count: u32,
        interval_ms: u64,
        wait_ms: u64,
    ) -> Result<Vec<String>> {
        let (count, interval, wait) = (
            count.to_string(),
            interval_ms.to_string(),
            wait_ms.to_string(),
        );
        let target = format!("{to}:{PORT}");
        self.member_args(
            from,
            &[
                "dvrmesh-lab",
                "probe",
                &target,
                "--count",
                &count,
                "--interval-ms",
                &interval,
                "--wait-ms",
                &wait,
            ],
        )
    }
}

/// Where a node container keeps its VMs' DHCP client files (script, leases, pids, logs): not
/// under `/run`, a tmpfs mounted `noexec`, where udhcpc could not run its script.
const VM_DIR: &str = "/var/lib/dvrmesh-vm";

/// Shell lines that put the lab's udhcpc script in [`VM_DIR`] unless it is there: written to a
/// file of this shell's own and renamed, as VMs of one node start side by side.
fn install_dhcp_script() -> String {
    format!(
        "mkdir -p {VM_DIR}\nif [ ! -x {VM_DIR}/udhcpc.script ]; then\n\
         cat > {VM_DIR}/udhcpc.script.$$ <<'DVRMESH_SCRIPT_END'\n{}DVRMESH_SCRIPT_END\n\
         chmod 755 {VM_DIR}/udhcpc.script.$$\nmv {VM_DIR}/udhcpc.script.$$ {VM_DIR}/udhcpc.script\nfi\n",
        crate::lab::dhcp_client::SCRIPT
    )
}

fn run_probe(docker_args: &[String], what: &str) -> Result<ProbeReport> {
    let out = Command::new("docker")
        .args(docker_args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim()))
}

/// A probe stream running beside the caller.
pub struct Stream(std::thread::JoinHandle<Result<ProbeReport>>);

impl Stream {
    /// Waits for the stream to end and returns its report.
    pub fn finish(self) -> Result<ProbeReport> {
        self.0
            .join()
            .map_err(|_| anyhow!("probe stream thread panicked"))?
    }
}

impl Cluster for ComposeLab {
    fn config_node(&self) -> &str {
        "compute-1"
    }
    fn node_names(&self) -> Vec<String> {
        super::NODES.iter().map(|n| n.to_string()).collect()
    }
    fn cli(&self, node: &str, args: &[&str]) -> Result<Value> {
        ComposeLab::cli(self, node, args)
    }
    fn vms(&self) -> &[VmState] {
        &self.vms
    }
    fn probe(&self, from: &str, to: &str, count: u32, interval_ms: u64) -> Result<ProbeReport> {
        let args = self.probe_args(from, to, count, interval_ms, 800)?;
        run_probe(&args, &format!("probe {from} -> {to}"))
    }
    fn probe_server(&self, member: &str, secs: u64) -> Result<ServerGuard> {
        probe_server(self, member, secs)
    }
    fn external(&self) -> &External {
        &EXTERNAL
    }
    fn dhcp_lease(&self, vm: &str) -> Option<BTreeMap<String, String>> {
        let node = &self.vms.iter().find(|v| v.name == vm)?.node;
        let lease_file = format!("{VM_DIR}/{vm}.lease");
        let text = docker::exec(&container(node), &["cat", &lease_file]).ok()?;
        Some(crate::lab::dhcp_client::parse_lease(&text))
    }
    fn metadata(&self, vm: &str, path: &str) -> Option<Result<String>> {
        let node = &self.vms.iter().find(|v| v.name == vm)?.node;
        // Into a file, then printed, and timed out by `timeout`: bookworm's busybox wget crashes
        // (SIGSEGV) writing to stdout (`-O -`) or with its own timeout (`-T`).
        let script = format!(
            "f=$(mktemp) && timeout 3 ip netns exec {vm} busybox wget -q -O \"$f\" \
             'http://169.254.169.254{path}' && cat \"$f\"; rc=$?; rm -f \"$f\"; exit $rc"
        );
        Some(docker::exec(&container(node), &["sh", "-c", &script]))
    }
}

/// Starts a UDP echo server in a member; the guard kills it by its pid inside the container
/// (killing the `docker exec` client would leave it running).
fn probe_server(lab: &ComposeLab, member: &str, secs: u64) -> Result<ServerGuard> {
    let (c, _) = lab.member(member)?;
    let secs = secs.to_string();
    let serve = lab.member_args(member, &["dvrmesh-lab", "probe-serve", "--for-secs", &secs])?;
    // `sh -c 'echo $$; exec …'`: the server's pid first, then the server itself.
    let inner = serve[2..].join(" ");
    let mut child = Command::new("docker")
        .args(["exec", &c, "sh", "-c", &format!("echo $$; exec {inner}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting a probe server")?;
    let mut line = String::new();
    let stdout = child.stdout.take().context("probe server stdout")?;
    BufReader::new(stdout).read_line(&mut line)?;
    let pid: u32 = line
        .trim()
        .parse()
        .with_context(|| format!("probe server in {member} did not start: {line:?}"))?;
    // Give it time to bind.
    std::thread::sleep(Duration::from_millis(150));
    Ok(ServerGuard::new(move || {
        let _ = docker::output(&["exec", &c, "kill", &pid.to_string()]);
        let _ = child.kill();
        let _ = child.wait();
    }))
}
