//! What the scale section does to a cluster of real agents: idle windows, a paced write load,
//! and a large tenant state (routers and ports) created through the agents' APIs.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use dvrmesh_node::tenant::ops::ConfigRequest;
use mesh_proto::ObjectKind;

use super::agents::{Cluster, Rates, Sample};

/// Per-agent rates over a window.
pub struct Window {
    /// Each agent's rates.
    pub rates: Vec<Rates>,
    /// Each agent's resident memory at the end, KiB.
    pub rss_kib: Vec<u64>,
}

/// Samples every agent, waits `secs`, samples again.
pub async fn window(cluster: &Cluster, length: Duration, ticks: f64) -> Result<Window> {
    let a = cluster.sample().await?;
    tokio::time::sleep(length).await;
    let b = cluster.sample().await?;
    Ok(between(&a, &b, ticks))
}

/// The rates of each agent between two rounds of samples.
pub fn between(a: &[Sample], b: &[Sample], ticks: f64) -> Window {
    Window {
        rates: a
            .iter()
            .zip(b)
            .map(|(x, y)| Rates::between(x, y, ticks))
            .collect(),
        rss_kib: b.iter().map(|s| s.rss_kib).collect(),
    }
}

async fn call(api: &std::path::Path, req: &ConfigRequest) -> Result<serde_json::Value> {
    dvrmesh_node::api::call(api, req)
        .await
        .map_err(|e| anyhow!("{}: {e}", api.display()))
}

/// Creates `count` routers named `{prefix}-{i}`, each agent its share one after another (an
/// agent serialises its writes: each waits out its name's claim window), every agent at once.
pub async fn router_writes(cluster: &Cluster, prefix: &str, count: usize) -> Result<()> {
    let hosts = cluster.agents.len();
    let mut set = tokio::task::JoinSet::new();
    for (h, agent) in cluster.agents.iter().enumerate() {
        let api = agent.api.clone();
        let names: Vec<String> = (h..count)
            .step_by(hosts)
            .map(|i| format!("{prefix}-{i}"))
            .collect();
        set.spawn(async move {
            for name in names {
                call(&api, &ConfigRequest::RouterCreate { name }).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

/// How many objects of `kind` an agent lists.
pub async fn count(api: &std::path::Path, kind: ObjectKind) -> Result<usize> {
    let v = call(api, &ConfigRequest::List { kind, host: None }).await?;
    v.as_array()
        .map(Vec::len)
        .ok_or_else(|| anyhow!("list of {kind:?} is not an array"))
}

/// Waits until every agent lists at least `want` objects of `kind`; the time from the call.
pub async fn wait_for_count(
    cluster: &Cluster,
    kind: ObjectKind,
    want: usize,
    budget: Duration,
    poll: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    let mut waiting: Vec<usize> = (0..cluster.agents.len()).collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for &i in &waiting {
            if count(&cluster.agents[i].api, kind).await? < want {
                still.push(i);
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if started.elapsed() > budget {
            bail!(
                "{} agents did not list {want} {kind:?} objects within {budget:?}",
                waiting.len()
            );
        }
        tokio::time::sleep(poll).await;
    }
    Ok(started.elapsed())
}

/// The ports to create, spread over networks and hosts.
#[derive(Clone, Copy, Debug)]
pub struct StateSize {
    /// Networks the ports sit on (one /18 subnet each).
    pub networks: usize,
    /// Ports, spread evenly over the agents (each hosts its share) and the networks.
    pub ports: usize,
    /// Creates in flight per agent.
    pub in_flight: usize,
}

/// Creates the networks and the ports; the time the ports took.
pub async fn create_ports(cluster: &Cluster, size: StateSize) -> Result<Duration> {
    let first = &cluster.agents[0].api;
    for n in 0..size.networks {
        let name = format!("scale-net-{n}");
        call(
            first,
            &ConfigRequest::NetworkCreate {
                name: name.clone(),
                vni: 5000 + n as u32,
                mtu: None,
            },
        )
        .await?;
        call(first, &subnet(n, &name)).await?;
    }
    // Every host allocates from the subnets: each must know them first.
    let budget = Duration::from_secs(60);
    wait_for_count(
        cluster,
        ObjectKind::Subnet,
        size.networks,
        budget,
        Duration::from_millis(100),
    )
    .await?;
    let started = Instant::now();
    let hosts = cluster.agents.len();
    let mut set = tokio::task::JoinSet::new();
    for (h, agent) in cluster.agents.iter().enumerate() {
        // Each host's share, `in_flight` workers each taking every `in_flight`-th of it.
        let share: Vec<usize> = (0..size.ports).filter(|p| p % hosts == h).collect();
        for w in 0..size.in_flight {
            let api = agent.api.clone();
            let mine: Vec<usize> = share
                .iter()
                .copied()
                .skip(w)
                .step_by(size.in_flight)
                .collect();
            let networks = size.networks;
            set.spawn(async move {
                for p in mine {
                    call(&api, &port(p, networks)).await?;
                }
                Ok::<_, anyhow::Error>(())
            });
        }
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(started.elapsed())
}

fn subnet(n: usize, network: &str) -> ConfigRequest {
    ConfigRequest::SubnetCreate {
        name: format!("{network}-v4"),
        network: network.to_string(),
        cidr: format!("10.{}.{}.0/18", 100 + n / 4, (n % 4) * 64),
        gateway: None,
        pool: None,
        dhcp: true,
        dns_servers: Vec::new(),
        domain: None,
    }
}

/// Port `p` on network `p mod networks`, hosted by the agent asked.
pub fn port(p: usize, networks: usize) -> ConfigRequest {
    ConfigRequest::PortCreate {
        name: format!("scale-port-{p}"),
        network: format!("scale-net-{}", p % networks),
        ip: None,
        mac: None,
        device: None,
        metadata: Default::default(),
    }
}

/// How many more ports [`one_change`] creates, one at a time.
pub const CHANGES: usize = 5;

/// The view builds after small changes, and the full merges seen meanwhile.
pub struct ChangeBuilds {
    /// Each agent's build after each change (ms), when it merged only what changed.
    pub changes_ms: Vec<f64>,
    /// Each agent's last full merge (ms), the once-every-few-seconds merge of every value.
    pub full_ms: Vec<f64>,
}

/// Creates [`CHANGES`] more ports through the first agent, one at a time, and after each waits
/// until every agent has built a view since; each agent's last build time then, left out when a
/// full merge came in between (a periodic merge of everything, reported apart). Some agents may
/// have built more than once meanwhile (a heartbeat-driven rebuild): the last build still holds
/// the whole state.
pub async fn one_change(cluster: &Cluster, size: StateSize) -> Result<ChangeBuilds> {
    let mut changes_ms = Vec::new();
    for n in 0..CHANGES {
        let before = cluster.sample().await?;
        call(&cluster.agents[0].api, &port(size.ports + n, size.networks)).await?;
        let started = Instant::now();
        loop {
            let now = cluster.sample().await?;
            if now.iter().zip(&before).all(|(n, b)| n.builds > b.builds) {
                changes_ms.extend(
                    now.iter()
                        .zip(&before)
                        .filter(|(n, b)| n.full_merges == b.full_merges)
                        .map(|(s, _)| s.last_build_micros as f64 / 1000.0),
                );
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("not every agent rebuilt its view within 30 s of a change");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let full_ms = cluster
        .sample()
        .await?
        .iter()
        .filter(|s| s.full_merges > 0)
        .map(|s| s.last_full_merge_micros as f64 / 1000.0)
        .collect();
    Ok(ChangeBuilds {
        changes_ms,
        full_ms,
    })
}
