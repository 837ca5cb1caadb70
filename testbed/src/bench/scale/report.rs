//! The scale section's markdown and charts.

use std::fmt::Write as _;

use super::super::plot::{Bar, Chart};
use super::super::stats::{ratio, summary};
use super::load::Window;
use super::sim::SimFigures;
use super::{ClusterFigures, StateFigures};
use dvrmesh_node::mesh::transport::Dialect;

/// Idle gossip each node may send at 100 nodes (the target), bytes/s.
const IDLE_TARGET_BYTES_S: f64 = 30_000.0;
/// A view rebuild at 10 000 ports must stay well under this, ms.
const REBUILD_TARGET_MS: f64 = 10.0;

/// The `agents` section's markdown.
pub fn agents(
    cluster: &ClusterFigures,
    state: Result<&StateFigures, &String>,
    quick: bool,
) -> String {
    let mut md = String::from("## Scale: real agents\n\n");
    md.push_str(&cluster_md(cluster));
    match state {
        Ok(s) => md.push_str(&state_md(s, quick)),
        Err(e) => {
            let _ = write!(
                md,
                "### A large tenant state\n\n**Not completed in this run:** {e}.\n\n"
            );
        }
    }
    md
}

/// The `sim` section's markdown.
pub fn simulated(sims: &[SimFigures]) -> String {
    let mut md = String::from("## Scale: simulated gossip\n\n");
    let interval = sims.first().map_or(0, |s| s.interval.as_millis());
    let budget = |n: usize| super::sim::link_budget(n);
    let _ = write!(
        md,
        "Reproduce: `dvrmesh-lab bench --only sim`. N nodes in one process: each runs dvrmesh's gossip start (its key space: certificate and facts, sealed; its failure detector settings), gossip every {interval} ms (the agent's default; one more row at 1 s), seeded at 3 nodes, on a paused tokio clock (time advances only when every node waits, so the figures count gossip rounds, not this machine's speed). Their messages travel as the agents' QUIC transport writes them ([`testbed/src/bench/scale/frames.rs`](testbed/src/bench/scale/frames.rs)): gossip frames, linked (each Syn's and SynAck's digest written as changes against the last digest the peer sent on that link) or, in the *plain* row, whole as between nodes from before linked digests; the receiving side decodes each frame as an agent does. Every node starts at once from the same seeds; one run per size, and as chitchat picks its gossip peers at random a rerun moves a row by a round or two. Joined = every node holds the facts of some other node; converged = every node counts N live nodes and holds every node's facts. Each node's inbox holds {inbox} messages, an agent's queue toward chitchat; a full one drops. Bytes = the frames (before QUIC's own framing and the UDP/IP headers). Idle = 5 s, after 10 s of settling up to 300 nodes (a node's first exchange on a link sends its digest whole; at 100 nodes a node meets a given peer every 3 s or so) and right after convergence at 1 000 (where each virtual second takes a minute and a half to simulate, and the links budget keeps most digests whole anyway). No views are built here (the `agents` section's real agents build them), and each node keeps a failure-detector window of 50 intervals per peer instead of the agent's 1 000 (8 KB a peer: a million of them would not fit in this machine's memory at 1 000 nodes in one process; a window only judges silent peers, and no node here is silent). Each node's links keep at most {} digest entries (an agent's budget); at 1 000 nodes {} (one process could not hold 1 000 agents' budgets), so more digests go whole there.\n\n\
         | nodes | gossip interval | frames | joined (virtual) | converged (virtual) | gossip rounds | bytes sent per node until then | idle bytes/s per node | idle frames written as changes | real time |\n|---|---|---|---|---|---|---|---|---|---|\n",
        budget(100),
        budget(1000),
        inbox = super::frames::INBOX,
    );
    for s in sims {
        let rounds = s.converged.as_secs_f64() / s.interval.as_secs_f64().max(1e-9);
        let _ = writeln!(
            md,
            "| {} | {} ms | {} | {:.1} s | **{:.1} s** | {rounds:.0} | {:.0} KB | **{:.1} KB/s** | {:.0} % | {:.1} s |",
            s.nodes,
            s.interval.as_millis(),
            dialect_name(s.dialect),
            s.joined.as_secs_f64(),
            s.converged.as_secs_f64(),
            s.bytes_to_converge_per_node / 1000.0,
            s.idle_bytes_per_node_s / 1000.0,
            s.idle_linked_share * 100.0,
            s.wall.as_secs_f64()
        );
    }
    let default = sims.first().map(|s| s.interval);
    let find = |n: usize, d: Dialect| {
        sims.iter()
            .find(|s| s.nodes == n && Some(s.interval) == default && s.dialect == d)
    };
    md.push('\n');
    if let (Some(a), Some(b)) = (find(100, Dialect::Linked), find(1000, Dialect::Linked)) {
        let r = ratio(b.converged.as_secs_f64(), a.converged.as_secs_f64());
        let _ = writeln!(
            md,
            "1 000 nodes converge in **{r:.2}×** the 100-node time (target ≤ 2×: {}). Of that, the join took {:.1} s ({:.1} s at 100 nodes): every node starting in the same instant sends its first Syns to the same 3 seeds, so a seed gets about a third of the cluster's Syns in one round. With an inbox of 100 messages (chitchat's own channel transport's, which this simulation used until 2026-12-04) the seeds dropped most of them and the join alone took 2.2 s of 4.0 s at 1 000 nodes; an agent queues 1 024, and the simulation now does as the agent. After the join, spreading the rest took {:.1} s ({:.1} s at 100 nodes); liveness trails the facts by a round or two, as a node counts another live only once its failure detector has seen that node's heartbeat advance. Until it converged each node sent {:.1} KB for every other node (that node's certificate, facts and seals, relayed, and digest entries). chitchat's message budget ({} bytes) does not bound the rounds: {:.0} % of the SynAcks at 1 000 nodes came within {} KB of it ({:.0} % at 100 nodes).\n",
            met(r <= 2.0),
            b.joined.as_secs_f64(),
            a.joined.as_secs_f64(),
            (b.converged - b.joined).as_secs_f64(),
            (a.converged - a.joined).as_secs_f64(),
            b.bytes_to_converge_per_node / b.nodes as f64 / 1000.0,
            super::frames::CHITCHAT_BUDGET,
            b.full_synacks * 100.0,
            super::frames::FULL_SLACK / 1024,
            a.full_synacks * 100.0,
        );
    }
    if let Some(a) = sims.first().filter(|a| a.dialect == Dialect::Linked) {
        md.push_str(&idle_md(a, sims));
    }
    md.push('\n');
    md
}

fn dialect_name(d: Dialect) -> &'static str {
    match d {
        Dialect::Linked => "linked",
        Dialect::PlainOnly => "plain",
    }
}

/// Idle bytes at the smallest size: linked against plain in the same run, and the slow interval.
fn idle_md(a: &SimFigures, sims: &[SimFigures]) -> String {
    let mut md = String::new();
    let _ = write!(
        md,
        "Idle gossip at {} nodes: **{:.1} KB/s** per node (target ≤ 30 KB/s at 100 nodes: {}).",
        a.nodes,
        a.idle_bytes_per_node_s / 1000.0,
        met(a.idle_bytes_per_node_s <= IDLE_TARGET_BYTES_S)
    );
    let same = |s: &&SimFigures| s.nodes == a.nodes && s.interval == a.interval;
    if let Some(p) = sims
        .iter()
        .filter(same)
        .find(|s| s.dialect == Dialect::PlainOnly)
    {
        // A round: a node sends its digest to 3 peers and answers about 3 digests with its own.
        let per_entry = |f: &SimFigures| {
            f.idle_bytes_per_node_s * f.interval.as_secs_f64() / (6.0 * f.nodes as f64)
        };
        let _ = write!(
            md,
            " The same nodes with plain frames send **{:.1} KB/s** each: linked frames send **{:.2}×** the plain bytes. Idle gossip is chitchat's digests: every round a node sends its digest of all N nodes to 3 peers (chitchat's fixed fan-out) and answers about as many with its own, ≈ {:.0} bytes a node in each when whole, ≈ {:.1} as changes against the peer's last digest (an op byte and the heartbeat's advance).",
            p.idle_bytes_per_node_s / 1000.0,
            ratio(a.idle_bytes_per_node_s, p.idle_bytes_per_node_s),
            per_entry(p),
            per_entry(a),
        );
    }
    if let Some(slow) = sims
        .iter()
        .find(|s| s.nodes == a.nodes && s.interval > a.interval)
    {
        let _ = write!(
            md,
            " With `gossip_interval_ms = {}` the same {} nodes send **{:.1} KB/s** each, and converge in {:.1} s instead of {:.1} s.",
            slow.interval.as_millis(),
            slow.nodes,
            slow.idle_bytes_per_node_s / 1000.0,
            slow.converged.as_secs_f64(),
            a.converged.as_secs_f64(),
        );
    }
    md.push_str(&larger_idle_md(a, sims));
    md.push('\n');
    md
}

/// Why idle bytes grow faster than the cluster past the smallest size: what the links' budget
/// keeps.
fn larger_idle_md(a: &SimFigures, sims: &[SimFigures]) -> String {
    let Some(b) = sims
        .iter()
        .filter(|s| s.dialect == a.dialect && s.interval == a.interval && s.nodes > a.nodes)
        .min_by_key(|s| s.nodes)
    else {
        return String::new();
    };
    let nodes = b.nodes as f64 / a.nodes as f64;
    let bytes = ratio(b.idle_bytes_per_node_s, a.idle_bytes_per_node_s);
    let shares = format!(
        "idle frames written as changes: {:.0} % at {}, {:.0} % at {}",
        a.idle_linked_share * 100.0,
        a.nodes,
        b.idle_linked_share * 100.0,
        b.nodes,
    );
    if bytes <= 1.5 * nodes {
        return format!(
            " At {} nodes: {:.1} KB/s per node ({nodes:.1}× the nodes, {bytes:.1}× the bytes: each digest lists every node; {shares}).",
            b.nodes,
            b.idle_bytes_per_node_s / 1000.0,
        );
    }
    format!(
        " Past {} nodes idle bytes grow faster than the cluster ({:.1} KB/s per node at {}, {nodes:.1}× the nodes and {bytes:.0}× the bytes): a link writes against the last digest its peer sent (N entries, that link's own) and keeps the last few this node sent for the peer to write against (N entries each, one copy shared by every link that keeps it, charged once); an agent's links keep at most {} entries between them (about 16 MiB), and a link whose digests do not fit sends them whole ({shares}).",
        a.nodes,
        b.idle_bytes_per_node_s / 1000.0,
        b.nodes,
        b.link_budget,
    )
}

fn cluster_md(c: &ClusterFigures) -> String {
    let mut md = String::from("### Real agents on loopback\n\n");
    let rss = summary(
        &c.rss_kib
            .iter()
            .map(|k| *k as f64 / 1024.0)
            .collect::<Vec<_>>(),
    );
    let _ = write!(
        md,
        "Reproduce: `dvrmesh-lab bench --only agents`. {n} `dvrmesh agent` processes on 127.0.0.1 (built as the run line says), datapath off, default gossip interval, mutual TLS with certificates from `dvrmesh cert issue`, all seeded at the first three; all on this one 2-core machine, so {n} agents share 2 cores (a real node runs one; the wall times here, convergence and view builds, include waiting for a CPU). Converged = every agent's `members` lists all {n} alive, counted from the last start: **{:.1} s**; resident memory then **{:.0} MiB** median (max {:.0}). Per agent below: median over the agents, max in brackets; CPU from `/proc/PID/stat`, resident memory `VmRSS`, gossip bytes from each agent's transport counters and view builds from its writer's counters (`dvrmesh status`).\n\nWrite load: {} routers created through the API, two through each agent, all agents at once: {:.1} s in all ({:.1} writes/s across the cluster: an agent serialises its writes, and a router's name waits out a claim window of 8 gossip intervals); every agent listed every router {:.2} s after the last write returned.\n\n",
        c.converged.as_secs_f64(),
        rss.median,
        rss.max,
        c.routers,
        c.routers_took.as_secs_f64(),
        ratio(c.routers as f64, c.routers_took.as_secs_f64()),
        c.routers_everywhere.as_secs_f64(),
        n = c.agents,
    );
    md.push_str(&window_table(&[
        (&format!("idle, {} s", c.idle_len.as_secs()), &c.idle),
        ("under the write load", &c.load),
    ]));
    md
}

fn window_table(rows: &[(&str, &Window)]) -> String {
    let mut md = String::from(
        "| window | CPU % of a core | gossip out KB/s | gossip in KB/s | RSS MiB | view builds/s | mean build ms |\n|---|---|---|---|---|---|---|\n",
    );
    for (what, w) in rows {
        let col = |get: &dyn Fn(&super::agents::Rates) -> f64, scale: f64| {
            let s = summary(&w.rates.iter().map(|r| get(r) / scale).collect::<Vec<_>>());
            format!("**{:.1}** ({:.1})", s.median, s.max)
        };
        let rss = summary(
            &w.rss_kib
                .iter()
                .map(|k| *k as f64 / 1024.0)
                .collect::<Vec<_>>(),
        );
        let _ = writeln!(
            md,
            "| {what} | {} | {} | {} | **{:.0}** ({:.0}) | {} | {} |",
            col(&|r| r.cpu_percent, 1.0),
            col(&|r| r.bytes_out_s, 1000.0),
            col(&|r| r.bytes_in_s, 1000.0),
            rss.median,
            rss.max,
            col(&|r| r.builds_s, 1.0),
            col(&|r| r.mean_build_ms, 1.0),
        );
    }
    md.push('\n');
    md
}

fn state_md(c: &StateFigures, quick: bool) -> String {
    let mut md = String::from("### A large tenant state\n\n");
    let z = c.size;
    let rebuild = summary(&c.rebuild_ms);
    let rss = summary(
        &c.rss_empty_kib
            .iter()
            .map(|k| *k as f64 / 1024.0)
            .collect::<Vec<_>>(),
    );
    let _ = write!(
        md,
        "{} agents as above (resident memory before anything was written **{:.0} MiB** median), then through their APIs: {} routers (router records, no interfaces), every agent its share one after another ({:.1} s); {} networks with a /18 subnet each; {} ports spread evenly over the agents (each hosts its share: a port is published by its host) and the networks, {} creates in flight per agent, addresses from each node's blocks: {:.1} s ({:.0}/s). Every agent listed every port {:.1} s after the last create returned. Then {} s idle with everything in every view, and {} more ports created one at a time (the view each agent's writer built after each).\n\n",
        c.agents,
        rss.median,
        c.routers,
        c.routers_took.as_secs_f64(),
        z.networks,
        z.ports,
        z.in_flight,
        c.ports_took.as_secs_f64(),
        ratio(z.ports as f64, c.ports_took.as_secs_f64()),
        c.ports_everywhere.as_secs_f64(),
        c.idle_len.as_secs(),
        super::load::CHANGES,
    );
    md.push_str(&window_table(&[("idle, with the state", &c.idle)]));
    let _ = writeln!(
        md,
        "View rebuild with {} ports and {} routers, after one more port: **{:.1} ms** median over the agents and changes (max {:.1} ms; {} builds that merged only what changed). Target well under {REBUILD_TARGET_MS:.0} ms at 10 000 ports, touching only what changed: {}. {}\n",
        z.ports,
        c.routers,
        rebuild.median,
        rebuild.max,
        c.rebuild_ms.len(),
        if quick {
            "not judged in a quick run (smaller state)".to_string()
        } else {
            met(rebuild.median < REBUILD_TARGET_MS).to_string()
        },
        full_merges(&c.full_merge_ms),
    );
    md
}

fn met(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**not met**"
    }
}

/// The `sim` section's chart.
pub fn sim_chart(sims: &[SimFigures]) -> Chart {
    Chart {
        file: "scale-sim".into(),
        title: "Simulated clusters: time to converge (virtual)".into(),
        unit: "s".into(),
        bars: sims
            .iter()
            .map(|s| Bar {
                label: format!(
                    "{} nodes, gossip every {} ms, {}",
                    s.nodes,
                    s.interval.as_millis(),
                    dialect_name(s.dialect)
                ),
                value: s.converged.as_secs_f64(),
                spread: None,
            })
            .collect(),
    }
}

/// The `agents` section's chart.
pub fn cpu_chart(c: &ClusterFigures, st: Option<&StateFigures>) -> Chart {
    let cpu = |label: String, w: &Window| {
        let s = summary(&w.rates.iter().map(|r| r.cpu_percent).collect::<Vec<_>>());
        Bar {
            label,
            value: s.median,
            spread: Some((s.min, s.max)),
        }
    };
    Chart {
        file: "scale-agents".into(),
        title: "CPU per agent (median, min–max over the agents)".into(),
        unit: "% of a core".into(),
        bars: [
            Some(cpu(format!("{} agents, idle", c.agents), &c.idle)),
            Some(cpu(format!("{} agents, writes", c.agents), &c.load)),
            st.map(|st| {
                cpu(
                    format!("{} agents, {} ports, idle", st.agents, st.size.ports),
                    &st.idle,
                )
            }),
        ]
        .into_iter()
        .flatten()
        .collect(),
    }
}

/// What the full merges seen during the state phase cost, if any happened.
fn full_merges(ms: &[f64]) -> String {
    if ms.is_empty() {
        return format!(
            "No build merged every value again (every {} s a build rechecks the values refused for the clock; only with `writers = \"operators\"` does it merge everything, for the operator seals).",
            dvrmesh_node::mesh::view::RECHECK_EVERY.as_secs()
        );
    }
    let s = summary(ms);
    format!(
        "A full merge of every value (a node at a cap, or `writers = \"operators\"`) took {:.1} ms median (max {:.1} ms).",
        s.median, s.max
    )
}
