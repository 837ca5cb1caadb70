//! Running one programming benchmark: dvrmesh's reconciler against one process per object, each in
//! its own sealed namespaces.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use datapath::linux::sandbox::Sandbox;
use datapath::{diff, Desired, Kernel};

/// One cold programming by dvrmesh: observe, diff, apply from nothing; then the steady-state pass.
pub struct DvrmeshRun {
    /// Observe + diff + apply from an empty sandbox.
    pub cold: Duration,
    /// Ops applied.
    pub ops: usize,
    /// A second observe + diff (must find nothing to do).
    pub steady: Duration,
}

/// Lets the kernel finish tearing down the previous trial's namespaces (it does so
/// asynchronously, and its work would land in the next measurement), and lets whatever else
/// the machine is doing pass: waits until two 200 ms windows in a row find every CPU at least
/// 95 % idle (`/proc/stat`), at most 20 s.
fn settle() {
    const WINDOW: Duration = Duration::from_millis(200);
    const LIMIT: Duration = Duration::from_secs(20);
    let started = Instant::now();
    let mut quiet_windows = 0;
    let mut before = cpu_ticks();
    while quiet_windows < 2 && started.elapsed() < LIMIT {
        std::thread::sleep(WINDOW);
        let now = cpu_ticks();
        quiet_windows = match (before, now) {
            (Some(a), Some(b)) if busy_share(a, b) <= 0.05 => quiet_windows + 1,
            (Some(_), Some(_)) => 0,
            // No /proc/stat: fall back to a fixed pause.
            _ => 2,
        };
        before = now;
    }
    tracing::debug!(millis = started.elapsed().as_millis() as u64, "settled");
}

/// [`settle`], then waits until the kernel's RTNL is free as well: tearing namespaces down holds
/// it across RCU grace periods with the CPUs idle, and a measured pass would wait for it. A
/// request that takes it and changes nothing (`lo` of the sandbox's host set up) must answer
/// within 2 ms twice in a row; at most 30 s. Every measured sequence of passes starts with it.
fn settle_in(sandbox: &Sandbox) -> Result<()> {
    const FREE: Duration = Duration::from_millis(2);
    const LIMIT: Duration = Duration::from_secs(30);
    let started = Instant::now();
    settle();
    let mut k = sandbox.kernel();
    let probe = [datapath::Op::SetLink {
        ns: datapath::Netns::Host,
        name: "lo".into(),
        spec: datapath::LinkSpec::of(datapath::LinkKind::External),
    }];
    let mut free = 0;
    while free < 2 && started.elapsed() < LIMIT {
        let t = Instant::now();
        let report = k.apply(&probe)?;
        if let Some((op, e)) = report.failed.first() {
            bail!("RTNL probe {op}: {e}");
        }
        free = if t.elapsed() <= FREE { free + 1 } else { 0 };
        if free < 2 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    tracing::debug!(millis = started.elapsed().as_millis() as u64, "RTNL free");
    Ok(())
}

/// `(busy, all)` clock ticks of every CPU since boot, from the first line of `/proc/stat`
/// (busy = all but idle, iowait and steal: time the hypervisor gave to others is not this
/// machine's work).
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_ticks(stat.lines().next()?)
}

fn parse_cpu_ticks(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = v.try_into().ok()?;
    let busy = user + nice + system + irq + softirq;
    Some((busy, busy + idle + iowait + steal))
}

/// The busy share of the ticks between two readings.
fn busy_share((busy_a, all_a): (u64, u64), (busy_b, all_b): (u64, u64)) -> f64 {
    let all = all_b.saturating_sub(all_a);
    if all == 0 {
        return 0.0;
    }
    busy_b.saturating_sub(busy_a) as f64 / all as f64
}

/// Programs `desired` into a fresh sandbox with the Linux backend.
pub fn dvrmesh(desired: &Desired) -> Result<DvrmeshRun> {
    let passes = run_passes(std::slice::from_ref(desired))?;
    let pass = passes
        .first()
        .copied()
        .ok_or_else(|| anyhow::anyhow!("no pass ran"))?;
    Ok(DvrmeshRun {
        cold: pass.took,
        ops: pass.ops,
        steady: pass.steady,
    })
}

/// A cold programming of `desired`, then one scoped pass to `then` (what the agent does when one
/// more router appears on a busy node). Returns both passes.
pub fn dvrmesh_then(desired: &Desired, then: &Desired) -> Result<(DvrmeshRun, Pass)> {
    let passes = run_passes(&[desired.clone(), then.clone()])?;
    match passes.as_slice() {
        [cold, next] => Ok((
            DvrmeshRun {
                cold: cold.took,
                ops: cold.ops,
                steady: cold.steady,
            },
            *next,
        )),
        _ => anyhow::bail!("expected two passes"),
    }
}

/// One cold programming with one process per object, in a private mount and network namespace.
/// Returns the time the commands took and how many there were.
pub fn one_process_per_object(desired: &Desired, work: &Path) -> Result<(Duration, usize)> {
    per_object_incremental(std::slice::from_ref(desired), work)?
        .first()
        .copied()
        .ok_or_else(|| anyhow::anyhow!("no step ran"))
}

/// The median of some durations.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// The host devices the plans attach but never create (the external interface, VM taps): made
/// by the harness before anything is timed, as the operator and the hypervisor would.
fn provided_devices(steps: &[Desired]) -> std::collections::BTreeSet<String> {
    steps
        .iter()
        .flat_map(|d| d.links.iter())
        .filter(|((ns, _), spec)| {
            *ns == datapath::Netns::Host && spec.kind == datapath::LinkKind::External
        })
        .map(|((_, name), _)| name.clone())
        .collect()
}

/// One measured pass.
#[derive(Clone, Copy, Debug)]
pub struct Pass {
    /// Observe + diff + apply.
    pub took: Duration,
    /// Ops applied.
    pub ops: usize,
    /// The following observe + diff, which must find nothing to do.
    pub steady: Duration,
    /// Of `took`, the time spent creating links (the kernel registering netdevs).
    pub link_creation: Duration,
}

/// Programs `steps` one after another into one sandbox (nothing is torn down in between, so the
/// kernel's asynchronous namespace teardown never lands in a measurement), each step with
/// [`datapath::reconcile_pass`] scoped to what changed since the previous one, as the agent does.
/// Every pass must succeed and leave a second, full pass empty.
fn run_passes(steps: &[Desired]) -> Result<Vec<Pass>> {
    let devices = provided_devices(steps);
    let names: Vec<&str> = devices.iter().map(String::as_str).collect();
    let sandbox = Sandbox::new(&names)?;
    settle_in(&sandbox)?;
    let mut k = sandbox.kernel();
    let mut out = Vec::new();
    for (i, desired) in steps.iter().enumerate() {
        // As the agent does: the first pass observes everything, each later one (woken by a
        // change) only the namespaces whose plan changed since.
        let since = i.checked_sub(1).map(|p| &steps[p]);
        let start = Instant::now();
        let pass = datapath::reconcile_pass(&mut k, desired, since)?;
        let took = start.elapsed();
        let (ops, report) = (pass.ops, pass.report);
        tracing::debug!(
            step = i,
            observed_namespaces = ?pass.observed_namespaces,
            total_ms = took.as_secs_f64() * 1000.0,
            "pass"
        );
        if let Some(first) = report.failed.first() {
            bail!(
                "step {i}: {} ops failed, first: {first:?}",
                report.failed.len()
            );
        }
        let start = Instant::now();
        let again = diff(desired, &k.observe(desired)?);
        let steady = start.elapsed();
        if let Some(first) = again.first() {
            bail!(
                "step {i}: second pass not empty: {} ops, first {first:?}",
                again.len()
            );
        }
        let link_creation = report
            .time_by_kind
            .get("add link")
            .map(|(_, us)| Duration::from_micros(*us))
            .unwrap_or_default();
        out.push(Pass {
            took,
            ops: ops.len(),
            steady,
            link_creation,
        });
    }
    Ok(out)
}

/// [`run_passes`]: one measured pass per step.
pub fn dvrmesh_incremental(steps: &[Desired]) -> Result<Vec<Pass>> {
    run_passes(steps)
}

/// The same steps with one process per object, in one private mount and network namespace,
/// timing each step's commands. Returns each step's time and process count.
pub fn per_object_incremental(steps: &[Desired], work: &Path) -> Result<Vec<(Duration, usize)>> {
    let mut text = String::from("set -e\n");
    for dev in provided_devices(steps) {
        text.push_str(&format!("ip link add {dev} type veth peer name {dev}p\n"));
    }
    let mut counts = Vec::new();
    let mut prev = Desired::default();
    for desired in steps {
        let ops = diff(desired, &prev);
        let lines = super::shell::commands(&ops);
        counts.push(lines.iter().filter(|l| !l.starts_with("cat >")).count());
        text.push_str("s=$(date +%s%N)\n");
        for l in &lines {
            text.push_str(l);
            text.push('\n');
        }
        text.push_str("e=$(date +%s%N)\necho $((e - s))\n");
        prev = desired.clone();
    }
    let script = work.join("per-object-steps.sh");
    std::fs::write(&script, text)?;
    let times = timed_script(&script, work, "per-object", steps.len())?;
    Ok(times.into_iter().zip(counts).collect())
}

/// Runs `script` with `sh` in a private mount and network namespace (its own `/run/netns`), with
/// `$W` set to `work`; each line it prints holding a number is a time in nanoseconds, and there
/// must be `expect` of them.
pub fn timed_script(
    script: &Path,
    work: &Path,
    what: &str,
    expect: usize,
) -> Result<Vec<Duration>> {
    let out = Command::new("unshare")
        .args(["--mount", "--net", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mkdir -p /run/netns && mount -t tmpfs tmpfs /run/netns && W={} sh {}",
            work.display(),
            script.display()
        ))
        .output()
        .context("running unshare")?;
    if !out.status.success() {
        bail!(
            "{what} script failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let times: Vec<Duration> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .map(Duration::from_nanos)
        .collect();
    if times.len() != expect {
        bail!(
            "{what} script printed {} timings, expected {expect}",
            times.len()
        );
    }
    Ok(times)
}

/// [`per_object_incremental`] `runs` times; per step, the median.
pub fn one_process_per_object_steps(
    steps: &[Desired],
    work: &Path,
    runs: u32,
) -> Result<Vec<(Duration, usize)>> {
    let mut all: Vec<Vec<(Duration, usize)>> = Vec::new();
    for _ in 0..runs.max(1) {
        all.push(per_object_incremental(steps, work)?);
    }
    Ok((0..steps.len())
        .map(|i| {
            let d = median(all.iter().map(|r| r[i].0).collect());
            (d, all[0][i].1)
        })
        .collect())
}

/// What the kernel alone takes to register one benchmark router's ten netdevs (three bridges,
/// three VXLAN devices, three veth pairs into the router's namespace, one veth pair from it to
/// the fip namespace), each enslaved, learning off where dvrmesh turns it off, and up: one
/// `ip -batch` process per router, 20 routers in a row in a private namespace, namespaces made
/// beforehand. The median batch time.
pub fn kernel_floor_one_router(work: &Path) -> Result<Duration> {
    const ROUTERS: u32 = 20;
    let mut script = String::from("set -e\nip netns add fip\n");
    for r in 0..ROUTERS {
        script.push_str(&format!("ip netns add qrouter-{r}\n"));
        let mut batch = String::new();
        for j in 0..3 {
            let k = r * 3 + j;
            let vni = 5000 + k;
            batch.push_str(&format!(
                "link add br-{k} type bridge\nlink set br-{k} mtu 1450 up\n\
                 link add vx-{k} type vxlan id {vni} local 192.0.2.1 dstport 4789 nolearning\n\
                 link set vx-{k} master br-{k} mtu 1450 up\n\
                 link set dev vx-{k} type bridge_slave learning off\n\
                 link add tqr{k} mtu 1450 type veth peer name qr-{k} netns qrouter-{r}\n\
                 link set tqr{k} master br-{k} up\n"
            ));
        }
        batch.push_str(&format!(
            "link add rfp-{r} netns qrouter-{r} type veth peer name fpr-{r} netns fip\n"
        ));
        let file = work.join(format!("floor-{r}.batch"));
        std::fs::write(&file, batch)?;
        script.push_str(&format!(
            "s=$(date +%s%N)\nip -batch {}\ne=$(date +%s%N)\necho $((e - s))\n",
            file.display()
        ));
    }
    let path = work.join("kernel-floor.sh");
    std::fs::write(&path, script)?;
    Ok(median(timed_script(
        &path,
        work,
        "kernel floor",
        ROUTERS as usize,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_count_steal_and_iowait_as_not_busy() {
        let line = "cpu  10 1 5 100 7 2 3 40 0 0";
        assert_eq!(parse_cpu_ticks(line), Some((21, 168)));
        assert_eq!(
            parse_cpu_ticks("cpu0 1 2 3 4 5 6 7 8"),
            None,
            "a single CPU's line"
        );
        assert_eq!(parse_cpu_ticks("cpu 1 2 3"), None, "too few fields");
        assert_eq!(parse_cpu_ticks("cpu 1 x 3 4 5 6 7 8"), None);
    }

    #[test]
    fn the_busy_share_is_of_the_ticks_between_two_readings() {
        assert_eq!(busy_share((10, 100), (15, 200)), 0.05);
        assert_eq!(busy_share((10, 100), (10, 100)), 0.0, "no ticks passed");
        assert_eq!(busy_share((10, 100), (60, 200)), 0.5);
    }
}
