//! Scale, in two sections: many simulated nodes' gossip on virtual time ([`sim`]); many real
//! agents on loopback idle and under a light write load, and fewer holding a large tenant state
//! ([`agents`], [`load`]). Their reports: [`report`].

pub mod agents;
pub mod frames;
pub mod load;
pub mod report;
pub mod sim;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use dvrmesh_node::mesh::transport::Dialect;
use mesh_proto::ObjectKind;

use super::section::{Context, SectionOut};
use agents::{clock_ticks, Cluster};
use load::{StateSize, Window};

/// A cluster of many real agents: started, idle, under a light write load.
pub struct ClusterFigures {
    /// Agents.
    pub agents: usize,
    /// Start → every agent lists every agent alive.
    pub converged: Duration,
    /// Resident memory once converged and settled, KiB.
    pub rss_kib: Vec<u64>,
    /// Idle window, and its length.
    pub idle: Window,
    /// …
    pub idle_len: Duration,
    /// Routers written (two through each agent, all agents at once), how long they took, and
    /// the window over them.
    pub routers: usize,
    /// …
    pub routers_took: Duration,
    /// …
    pub load: Window,
    /// From the last write's answer until every agent lists every router.
    pub routers_everywhere: Duration,
}

/// Fewer agents holding a large tenant state.
pub struct StateFigures {
    /// Agents.
    pub agents: usize,
    /// Resident memory before anything was written, KiB.
    pub rss_empty_kib: Vec<u64>,
    /// Routers written (each agent its share), and how long they took.
    pub routers: usize,
    /// …
    pub routers_took: Duration,
    /// The ports then created.
    pub size: StateSize,
    /// Creating the ports (all agents at once).
    pub ports_took: Duration,
    /// From the last create until every agent lists every port.
    pub ports_everywhere: Duration,
    /// Idle with the whole state, and its length.
    pub idle: Window,
    /// …
    pub idle_len: Duration,
    /// Each agent's view build after each of a few more ports, ms (builds merging only what
    /// changed).
    pub rebuild_ms: Vec<f64>,
    /// Each agent's last full merge of every value, ms.
    pub full_merge_ms: Vec<f64>,
}

/// The product's gossip interval: the simulation runs what an agent runs by default.
fn gossip_interval() -> Duration {
    Duration::from_millis(dvrmesh_node::config::DEFAULT_GOSSIP_INTERVAL_MS)
}

/// A slower gossip an operator of a large cluster may choose (`gossip_interval_ms`), simulated
/// at 100 nodes beside the default for its bytes.
const SLOW_GOSSIP: Duration = Duration::from_millis(1000);

/// The `sim` section: simulated clusters of 100, 300 and 1 000 nodes (50 with `--quick`) at the
/// default gossip interval, and 100 at [`SLOW_GOSSIP`].
pub fn run_simulated(ctx: &Context) -> Result<SectionOut> {
    let mut sizes: Vec<(usize, Duration, Dialect)> = ctx
        .pick(vec![100, 300, 1000], vec![50])
        .into_iter()
        .map(|n| (n, gossip_interval(), Dialect::Linked))
        .collect();
    let small = ctx.pick(100, 50);
    sizes.push((small, gossip_interval(), Dialect::PlainOnly));
    sizes.push((small, SLOW_GOSSIP, Dialect::Linked));
    let mut sims = Vec::new();
    for (n, interval, dialect) in sizes {
        ctx.say(&format!(
            "sim: {n} nodes gossiping every {interval:?} ({dialect:?} frames), on virtual time"
        ));
        let f = sim::run(n, interval, dialect)?;
        ctx.say(&format!(
            "sim: converged after {:?} (virtual; {:.1} s real)",
            f.converged,
            f.wall.as_secs_f64()
        ));
        sims.push(f);
    }
    Ok(SectionOut {
        markdown: report::simulated(&sims),
        charts: vec![report::sim_chart(&sims)],
    })
}

/// The `agents` section: many real agents idle and under a light write load, then fewer
/// holding a large tenant state.
pub fn run_agents(ctx: &Context) -> Result<SectionOut> {
    let dvrmesh = crate::lab::find_dvrmesh()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cluster = rt.block_on(many_agents(ctx, &dvrmesh))?;
    // A quick run's state is small: failing to hold it is a fault. A full one's may overload
    // this machine (five agents rebuilding large views on its two cores): the section then says
    // how far it got.
    let state = match rt.block_on(large_state(ctx, &dvrmesh)) {
        Err(e) if ctx.quick => return Err(e),
        other => other.map_err(|e| format!("{e:#}")),
    };
    Ok(SectionOut {
        markdown: report::agents(&cluster, state.as_ref(), ctx.quick),
        charts: vec![report::cpu_chart(&cluster, state.as_ref().ok())],
    })
}

async fn many_agents(ctx: &Context, dvrmesh: &Path) -> Result<ClusterFigures> {
    let n = ctx.pick(50, 6);
    ctx.say(&format!("agents: starting {n} real agents on loopback"));
    let mut cluster = Cluster::start(n, "agent", dvrmesh)?;
    let converged = cluster.converge(Duration::from_secs(180)).await?;
    ctx.say(&format!("agents: {n} agents converged after {converged:?}"));
    let ticks = clock_ticks();
    // Let the start's catch-up gossip and first builds pass.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_len = ctx.pick(Duration::from_secs(30), Duration::from_secs(5));
    let idle = load::window(&cluster, idle_len, ticks).await?;
    let routers = 2 * n;
    ctx.say(&format!(
        "agents: {routers} routers written through all {n} agents"
    ));
    let before = cluster.sample().await?;
    let started = Instant::now();
    load::router_writes(&cluster, "load-router", routers).await?;
    let routers_took = started.elapsed();
    let after = cluster.sample().await?;
    let routers_everywhere = load::wait_for_count(
        &cluster,
        ObjectKind::Router,
        routers,
        Duration::from_secs(120),
        Duration::from_millis(100),
    )
    .await?;
    cluster.check_running()?;
    Ok(ClusterFigures {
        agents: n,
        converged,
        rss_kib: idle.rss_kib.clone(),
        idle,
        idle_len,
        routers,
        routers_took,
        load: load::between(&before, &after, ticks),
        routers_everywhere,
    })
}

async fn large_state(ctx: &Context, dvrmesh: &Path) -> Result<StateFigures> {
    let agents = ctx.pick(5, 3);
    let routers = ctx.pick(1000, 12);
    let size = StateSize {
        networks: ctx.pick(10, 3),
        ports: ctx.pick(10_000, 300),
        in_flight: 2,
    };
    ctx.say(&format!(
        "agents: {routers} routers and {} ports through {agents} agents",
        size.ports
    ));
    let mut cluster = Cluster::start(agents, "state", dvrmesh)?;
    match fill(ctx, &mut cluster, routers, size).await {
        Ok(f) => Ok(f),
        Err(e) => Err(e.context(when_it_failed(&cluster).await)),
    }
}

/// What the agents showed when filling them failed: the ports the first lists, and each one's
/// last view build.
async fn when_it_failed(cluster: &Cluster) -> String {
    let listed = match cluster.agents.first() {
        Some(a) => load::count(&a.api, ObjectKind::Port)
            .await
            .map_or("?".to_string(), |n| n.to_string()),
        None => "?".into(),
    };
    let builds = match cluster.sample().await {
        Ok(s) => {
            let ms: Vec<f64> = s
                .iter()
                .map(|x| x.last_build_micros as f64 / 1000.0)
                .collect();
            let m = super::stats::summary(&ms);
            format!(
                "last view builds {:.0} ms median, {:.0} ms max",
                m.median, m.max
            )
        }
        Err(e) => format!("no sample: {e}"),
    };
    format!(
        "filling {} agents: the first listed {listed} ports; {builds}",
        cluster.agents.len()
    )
}

/// Writes the routers and ports through `cluster`'s agents and measures them holding it all.
async fn fill(
    ctx: &Context,
    cluster: &mut Cluster,
    routers: usize,
    size: StateSize,
) -> Result<StateFigures> {
    let agents = cluster.agents.len();
    cluster.converge(Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_empty_kib = cluster.sample().await?.iter().map(|s| s.rss_kib).collect();
    let started = Instant::now();
    load::router_writes(cluster, "scale-router", routers).await?;
    let routers_took = started.elapsed();
    ctx.say(&format!("agents: routers written in {routers_took:?}"));
    let ports_took = load::create_ports(cluster, size).await?;
    ctx.say(&format!("agents: ports created in {ports_took:?}"));
    let ports_everywhere = load::wait_for_count(
        cluster,
        ObjectKind::Port,
        size.ports,
        Duration::from_secs(600),
        Duration::from_secs(1),
    )
    .await?;
    load::wait_for_count(
        cluster,
        ObjectKind::Router,
        routers,
        Duration::from_secs(120),
        Duration::from_secs(1),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_len = ctx.pick(Duration::from_secs(20), Duration::from_secs(5));
    ctx.say(&format!(
        "agents: holding the whole state, idle for {idle_len:?}"
    ));
    let idle = load::window(cluster, idle_len, clock_ticks()).await?;
    let builds = load::one_change(cluster, size).await?;
    cluster.check_running()?;
    Ok(StateFigures {
        agents,
        rss_empty_kib,
        routers,
        routers_took,
        size,
        ports_took,
        ports_everywhere,
        idle,
        idle_len,
        rebuild_ms: builds.changes_ms,
        full_merge_ms: builds.full_ms,
    })
}
