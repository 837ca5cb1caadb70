//! Data-plane throughput with iperf3 (TCP Gbit/s, and 64-byte UDP packets received per second)
//! through the routers dvrmesh programs, against hand-built baselines in the same lab and run:
//! plain L2 across hosts (a bridge and a VXLAN per node, no dvrmesh), and the same two hosts
//! routed through one centralized router namespace on the network node.
//!
//! iperf3 only runs between namespaces of the lab the harness builds; every client is bounded
//! in time.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use datapath::linux::netns;
use serde_json::Value;

use super::iperf::{iperf, Case, Samples};
use super::plot::{Bar, Chart};
use super::section::{Context, SectionOut};
use super::stats::{ranges_against, ratio, summary};
use crate::lab::exec::run_in;
use crate::lab::spec::{LabSpec, INTERNET_IP};
use crate::lab::Lab;

/// The MTU of every VM here (dvrmesh's overlay MTU on a 1500-byte underlay).
const VM_MTU: &str = "1450";

/// Runs the section: builds a lab (2 compute nodes, 1 network node, the demo configuration),
/// the VMs and the hand-built baselines, and the recipe's DVR when it is there, then every case
/// in interleaved rounds; then the FIP-count part on a sandboxed node ([`super::fipscale`]).
pub fn run(ctx: &Context) -> Result<SectionOut> {
    let recipe_dir = super::recipe::locate();
    if recipe_dir.is_none() {
        ctx.say(&format!(
            "the recipe ({}) is not here: its rows are skipped",
            super::recipe::RECIPE_REL
        ));
    }
    // Single streams on a shared 2-core machine move by ±15 % between rounds: five rounds
    // give medians that a neighbour's burst moves less.
    let rounds = ctx.pick(5, 1);
    let secs = ctx.pick((5, 3), (2, 1));
    let (cases, samples, central) = lab_rounds(ctx, recipe_dir.as_deref(), rounds, secs)?;
    let fips = super::fipscale::run(ctx)?;
    let mut out = report(ctx, &cases, &samples, (secs.0, secs.1, rounds));
    out.markdown.push_str(&format!("\nThe centralized baseline's path, checked: its router namespace on network-1 forwarded {central} packets on its leg towards the server during the run (its interface counters), so every packet of that case crossed to the network node and back.\n"));
    out.markdown.push_str(&super::recipe::compare(
        &cases,
        &samples,
        recipe_dir.as_deref(),
    ));
    let (md, chart) = super::fipscale::report(&fips, ctx.pick("", "-quick"));
    out.markdown.push_str(&md);
    out.charts.push(chart);
    Ok(out)
}

/// The lab's cases and the recipe's, `rounds` rounds interleaved; the lab and the recipe are
/// removed afterwards whatever happened.
fn lab_rounds(
    ctx: &Context,
    recipe_dir: Option<&Path>,
    rounds: usize,
    (tcp_secs, udp_secs): (u64, u64),
) -> Result<(Vec<Case>, Vec<Samples>, u64)> {
    let dir = super::section::lab_dir("dataplane")?;
    let result = (|| {
        let mut lab = Lab::up(dir.path(), &LabSpec::sized(2, 1), &mut |s| ctx.say(s))?;
        crate::demo::configure(&lab)?;
        let mut cases = build_cases(&mut lab)?;
        if let Some(d) = recipe_dir {
            cases.extend(super::recipe::up(d)?);
        }
        let router = lab.ns("hb-router");
        let before = tx_packets(&router, "r2")?;
        let mut samples: Vec<Samples> = cases.iter().map(|_| Samples::default()).collect();
        for round in 1..=rounds {
            for (c, s) in cases.iter().zip(samples.iter_mut()) {
                let tcp = iperf(c, tcp_secs, false)?;
                let udp = iperf(c, udp_secs, true)?;
                ctx.say(&format!(
                    "round {round}/{rounds} {}: TCP {tcp:.2} Gbit/s, UDP 64 B {udp:.0} kpps",
                    c.name
                ));
                s.tcp.push(tcp);
                s.udp.push(udp);
            }
        }
        let central = tx_packets(&router, "r2")?.saturating_sub(before);
        if central == 0 {
            bail!("the centralized baseline's router forwarded nothing: its path is wrong");
        }
        Ok((cases, samples, central))
    })();
    if let Some(d) = recipe_dir {
        if let Err(e) = super::recipe::down(d) {
            ctx.say(&format!("removing the recipe's namespaces: {e:#}"));
        }
    }
    let _ = Lab::down(dir.path());
    result
}

/// The VMs and baselines, and the cases between them.
fn build_cases(lab: &mut Lab) -> Result<Vec<Case>> {
    let src = lab.vm_create("dp-src", "compute-1", "a-net1", true)?;
    lab.vm_create("dp-same", "compute-1", "a-net2", false)?;
    let cross = lab.vm_create("dp-cross", "compute-2", "a-net2", false)?;
    let l2 = lab.vm_create("dp-l2", "compute-2", "a-net1", false)?;
    let same = lab.vm("dp-same")?.clone();
    let fip = src
        .fip
        .clone()
        .ok_or_else(|| anyhow!("dp-src has no FIP"))?;
    let handmade = Handmade::build(lab)?;
    let vm = |n: &str| lab.vm_ns(n);
    let internet = lab.ns("internet");
    Ok(vec![
        Case {
            name: "east-west, one host, routed (dvrmesh)",
            client: vm("dp-src"),
            server: vm("dp-same"),
            to: same.ip,
        },
        Case {
            name: "east-west, across hosts, routed (dvrmesh DVR)",
            client: vm("dp-src"),
            server: vm("dp-cross"),
            to: cross.ip.clone(),
        },
        Case {
            name: "one subnet across hosts (dvrmesh L2)",
            client: vm("dp-src"),
            server: vm("dp-l2"),
            to: l2.ip,
        },
        Case {
            name: "plain L2 across hosts (hand-built, no dvrmesh)",
            client: handmade.l2_client,
            server: handmade.l2_server,
            to: "10.70.0.11".into(),
        },
        Case {
            name: "centralized router on the network node (hand-built)",
            client: handmade.central_client,
            server: handmade.central_server,
            to: "10.71.2.10".into(),
        },
        Case {
            name: "SNAT out (VM without FIP to internet, via network node)",
            client: vm("dp-cross"),
            server: internet.clone(),
            to: INTERNET_IP.into(),
        },
        Case {
            name: "FIP out (VM to internet, from its own node)",
            client: vm("dp-src"),
            server: internet.clone(),
            to: INTERNET_IP.into(),
        },
        Case {
            name: "FIP in (internet to the VM's FIP)",
            client: internet,
            server: vm("dp-src"),
            to: fip,
        },
    ])
}

/// The hand-built baselines: their client and server namespaces.
struct Handmade {
    l2_client: PathBuf,
    l2_server: PathBuf,
    central_client: PathBuf,
    central_server: PathBuf,
}

impl Handmade {
    /// Plain L2: VNI 9000 between compute-1 and compute-2. Centralized: VNIs 9001 and 9002 over
    /// all three nodes, routed by one namespace on network-1; the client on compute-1 (9001),
    /// the server on compute-2 (9002), so every packet crosses to the network node and back.
    fn build(lab: &Lab) -> Result<Handmade> {
        let all = ["compute-1", "compute-2", "network-1"];
        segment(lab, 9000, &all[..2])?;
        segment(lab, 9001, &all)?;
        segment(lab, 9002, &all)?;
        let l2_client = host(lab, "hb-l2a", "compute-1", 9000, "10.70.0.10/24", None)?;
        let l2_server = host(lab, "hb-l2b", "compute-2", 9000, "10.70.0.11/24", None)?;
        let gw1 = Some("10.71.1.1");
        let gw2 = Some("10.71.2.1");
        let central_client = host(lab, "hb-ca", "compute-1", 9001, "10.71.1.10/24", gw1)?;
        let central_server = host(lab, "hb-cb", "compute-2", 9002, "10.71.2.10/24", gw2)?;
        central_router(lab)?;
        Ok(Handmade {
            l2_client,
            l2_server,
            central_client,
            central_server,
        })
    }
}

/// The packets `dev` in `ns` has sent (`ip -s -j link`).
fn tx_packets(ns: &Path, dev: &str) -> Result<u64> {
    let json = run_in(ns, &["ip", "-s", "-j", "link", "show", "dev", dev])?;
    let v: Value = serde_json::from_str(&json).context("ip -j printed no JSON")?;
    v[0]["stats64"]["tx"]["packets"]
        .as_u64()
        .ok_or_else(|| anyhow!("no tx packet count for {dev}"))
}

/// Runs each line (words split on blanks) in `ns`.
fn lines(ns: &Path, lines: &[String]) -> Result<()> {
    for l in lines {
        let words: Vec<&str> = l.split_whitespace().collect();
        run_in(ns, &words)?;
    }
    Ok(())
}

/// A VXLAN segment `vni` over `nodes`: a bridge and a VXLAN device on each, flooding to the
/// others' underlay addresses (UDP port 4790, apart from dvrmesh's).
fn segment(lab: &Lab, vni: u32, nodes: &[&str]) -> Result<()> {
    let tip = |n: &str| {
        lab.state
            .nodes
            .iter()
            .find(|s| s.name == n)
            .map(|s| s.tunnel_ip.clone())
            .ok_or_else(|| anyhow!("no node {n}"))
    };
    for n in nodes {
        let mut l = vec![
            format!(
                "ip link add hbx{vni} type vxlan id {vni} local {} dstport 4790",
                tip(n)?
            ),
            format!("ip link add hbb{vni} type bridge"),
            format!("ip link set hbx{vni} master hbb{vni} mtu {VM_MTU} up"),
            format!("ip link set hbb{vni} up"),
        ];
        for other in nodes.iter().filter(|o| *o != n) {
            l.push(format!(
                "bridge fdb append 00:00:00:00:00:00 dev hbx{vni} dst {}",
                tip(other)?
            ));
        }
        lines(&lab.node_ns(n), &l)?;
    }
    Ok(())
}

/// A namespace `name` on `node`'s segment `vni` with `addr`, routed through `gateway`.
fn host(
    lab: &Lab,
    name: &str,
    node: &str,
    vni: u32,
    addr: &str,
    gateway: Option<&str>,
) -> Result<PathBuf> {
    netns::create(&lab.dir.join("ns"), name)?;
    let ns = lab.ns(name);
    let dev = format!("v{name}");
    lines(
        &lab.node_ns(node),
        &[
            format!(
                "ip link add {dev} mtu {VM_MTU} type veth peer name eth0 mtu {VM_MTU} netns {}",
                ns.display()
            ),
            format!("ip link set {dev} master hbb{vni} up"),
        ],
    )?;
    let mut l = vec![
        "ip link set lo up".to_string(),
        format!("ip addr add {addr} dev eth0"),
        "ip link set eth0 up".to_string(),
    ];
    if let Some(gw) = gateway {
        l.push(format!("ip route add default via {gw}"));
    }
    lines(&ns, &l)?;
    Ok(ns)
}

/// The centralized router: a namespace on network-1 with a leg in segments 9001 and 9002.
fn central_router(lab: &Lab) -> Result<()> {
    netns::create(&lab.dir.join("ns"), "hb-router")?;
    let ns = lab.ns("hb-router");
    let node = lab.node_ns("network-1");
    let mut l = Vec::new();
    for (vni, leg) in [(9001, "r1"), (9002, "r2")] {
        l.push(format!(
            "ip link add hb{leg} mtu {VM_MTU} type veth peer name {leg} mtu {VM_MTU} netns {}",
            ns.display()
        ));
        l.push(format!("ip link set hb{leg} master hbb{vni} up"));
    }
    lines(&node, &l)?;
    lines(
        &ns,
        &[
            "ip link set lo up".into(),
            "ip addr add 10.71.1.1/24 dev r1".into(),
            "ip addr add 10.71.2.1/24 dev r2".into(),
            "ip link set r1 up".into(),
            "ip link set r2 up".into(),
            "sysctl -qw net.ipv4.ip_forward=1".into(),
        ],
    )
}

/// The section's markdown and charts.
fn report(
    ctx: &Context,
    cases: &[Case],
    samples: &[Samples],
    (tcp_secs, udp_secs, rounds): (u64, u64, usize),
) -> SectionOut {
    let mut md = String::from("## Data plane\n\n");
    let pins = super::iperf::Pins::here().describe();
    md.push_str(&format!(
        "iperf3 (Debian's package) between namespaces of one lab: 2 compute nodes and 1 network node running dvrmesh agents with the demo configuration, VMs as namespaces (MTU {VM_MTU}); one TCP stream for {tcp_secs} s (receiver's rate) and 64-byte UDP datagrams sent as fast as one client can for {udp_secs} s (datagrams received per second); {rounds} round(s), the cases interleaved in each round; median and the rounds' min–max; {pins}, the same for every case. Baselines built by the harness in the same lab: plain L2 = a bridge and a VXLAN device per node (VNI 9000, no dvrmesh on the path); centralized = the same hosts in two VXLAN segments routed by one namespace on the network node (every packet goes there and back). All nodes are namespaces of one 2-core machine: \"across hosts\" measures the datapath's cost, not a NIC. The lab's namespaces have bridge netfilter off (`net.bridge.bridge-nf-call-*=0`), as the recipe's have and as `dvrmesh doctor` advises a host that runs only dvrmesh.\n\n"
    ));
    md.push_str("| path | TCP Gbit/s (median) | min–max | UDP 64 B kpps received (median) | min–max |\n|---|---|---|---|---|\n");
    for (c, s) in cases.iter().zip(samples) {
        let (t, u) = (summary(&s.tcp), summary(&s.udp));
        md.push_str(&format!(
            "| {} | **{:.2}** | {:.2}–{:.2} | **{:.0}** | {:.0}–{:.0} |\n",
            c.name, t.median, t.min, t.max, u.median, u.min, u.max
        ));
    }
    md.push_str(&targets(cases, samples));
    let bars = |f: fn(&Samples) -> &Vec<f64>| -> Vec<Bar> {
        cases
            .iter()
            .zip(samples)
            .map(|(c, s)| {
                let x = summary(f(s));
                Bar {
                    label: c.name.to_string(),
                    value: x.median,
                    spread: (x.n > 1).then_some((x.min, x.max)),
                }
            })
            .collect()
    };
    let suffix = ctx.pick("", "-quick");
    SectionOut {
        markdown: md,
        charts: vec![
            Chart {
                file: format!("dataplane-tcp{suffix}"),
                title: "TCP throughput, one stream (median, min–max)".into(),
                unit: "Gbit/s".into(),
                bars: bars(|s| &s.tcp),
            },
            Chart {
                file: format!("dataplane-udp{suffix}"),
                title: "64-byte UDP datagrams received (median, min–max)".into(),
                unit: "thousand datagrams/s".into(),
                bars: bars(|s| &s.udp),
            },
        ],
    }
}

/// The median of the case whose name starts with `prefix`, of TCP or UDP samples.
fn median_of(cases: &[Case], samples: &[Samples], prefix: &str, udp: bool) -> f64 {
    summary(samples_of(cases, samples, prefix, udp)).median
}

/// The samples of the first case named `prefix…` (none when there is no such case).
fn samples_of<'a>(cases: &[Case], samples: &'a [Samples], prefix: &str, udp: bool) -> &'a [f64] {
    cases
        .iter()
        .zip(samples)
        .find(|(c, _)| c.name.starts_with(prefix))
        .map_or(&[], |(_, s)| if udp { &s.udp } else { &s.tcp })
}

/// The targets of the issue, from this run's medians, and why where one is missed.
fn targets(cases: &[Case], samples: &[Samples]) -> String {
    let m = |p: &str, udp: bool| median_of(cases, samples, p, udp);
    let across = "east-west, across hosts";
    let (r_l2, r_c) = (
        ratio(m(across, false), m("plain L2", false)),
        ratio(m(across, false), m("centralized", false)),
    );
    let (u_l2, u_c) = (
        ratio(m(across, true), m("plain L2", true)),
        ratio(m(across, true), m("centralized", true)),
    );
    let verdict = |ok: bool| if ok { "met" } else { "**not met**" };
    // Below parity with plain L2, whether the rounds' ranges still overlap.
    let l2_spread = if r_l2 >= 0.95 {
        String::new()
    } else {
        let (ours, theirs) = (
            samples_of(cases, samples, across, false),
            samples_of(cases, samples, "plain L2", false),
        );
        format!(", {}", ranges_against(ours, theirs, "Gbit/s"))
    };
    let mut md = format!(
        "\nRatios from this run's medians, DVR across hosts over each baseline: TCP **{r_l2:.2}×** plain L2 (target ≥ 0.95×: {}{l2_spread}), **{r_c:.2}×** the centralized router (target ≥ 1.1×: {}); per packet (64-byte UDP) {u_l2:.2}× plain L2 and {u_c:.2}× the centralized router.\n",
        verdict(r_l2 >= 0.95),
        verdict(r_c >= 1.1)
    );
    if r_c < 1.1 {
        md.push_str(&format!("\nWhy the centralized router is this close here: the baseline is the one the issue asks for (the client's and the server's segments routed by one namespace on the network node; its counters, below, show every packet went there and back), but every \"host\" is a namespace of one 2-core machine, so what makes a central router slow in a cluster (a second trip over the physical network, the network node's NIC and CPU shared by every tenant) is absent. What is left is one more VXLAN, bridge and veth pass per packet on the same two CPUs; one TCP stream moves 64 KB GSO/GRO super-packets, so that pass costs little next to the copies at both ends, and the stream is bound by the sender's CPU (the machine's load from other work moves the figures by more than the hop). Per packet the hop can show (64-byte UDP here: {u_c:.2}×). The hand-built segments also skip dvrmesh's per-VXLAN-device nft tables, which favours the baseline. The recipe's 1.10× was measured the same way on this machine when it was quiet; not profiled with `perf` in this run.\n"));
    }
    md.push_str(PER_PACKET);
    md.push_str(FEWER_RULES);
    if r_l2 < 0.95 {
        md.push_str(&below_plain_l2(
            ratio(m(across, false), m("one subnet across hosts", false)),
            ratio(m("one subnet across hosts", false), m("plain L2", false)),
            ratio(
                m("recipe: east-west, across hosts", false),
                m("recipe: one subnet across hosts", false),
            ),
        ));
    }
    md
}

/// What closed most of the per-packet gap to the recipe (measured by hand, 2026-12-04).
const PER_PACKET: &str = "\nPer packet, dvrmesh trailed the recipe by more than per byte (until 2026-12-04: 64-byte UDP across hosts 0.71× the recipe's DVR, 0.85× its one subnet). Two costs each small packet paid and the recipe's did not, found by `perf record -a -g` during 64-byte UDP floods side by side: the lab's namespaces left bridge netfilter on, so every frame a bridge forwarded also walked the IP hooks (`br_nf_*`, an skb extension allocated per frame); and the DHCP server's packet socket on each VM port was handed a copy of every frame sent to the VM, only to drop it. The lab now turns bridge netfilter off, as the recipe does (`dvrmesh doctor` warns on a host where it is on), and the socket asks the kernel to skip outgoing frames (`PACKET_IGNORE_OUTGOING`). By hand, interleaved 3-second floods in a `dvrmesh-lab up --tenants` lab beside the recipe (`iperf3 -u -b 0 -l 64`), medians of 3: bridge netfilter on 51 kpps, off 56 kpps on DVR across hosts; with both changes DVR across hosts 62 against the recipe's 63, one subnet across hosts 80 against 85.\n";

/// What the VXLAN and fast-path tables cost each frame, and what cutting them gained (measured
/// by hand, 2026-12-05).
const FEWER_RULES: &str = "\nEvery frame that crosses the tunnel walks the VXLAN device's nft chains on both nodes, and every frame a VM sends walks its device's fast-path chain. Until 2026-12-05 those were 10 rules out and 8 in (DHCP twice, five for the metadata service) and, in the fast path, three TTL rules and a map lookup even for frames not meant for the router; in a `perf record -a -g` of a 64-byte UDP flood across hosts in one subnet, `nft_do_chain` and its lookups took about 6 % of the busy CPU. Now DHCP is one port-range rule each way, the metadata interface is kept off the tunnel by the bridge (it and the VXLAN device are isolated bridge ports, which costs the frames between VMs nothing) with one rule from the tunnel for 169.254.169.254, and a frame not for the device's gateway MAC leaves the fast-path chain at its first rule: 4 rules out, 3 in, and nft's share of the profile halved (about 3 %). By hand, in a `dvrmesh-lab up --tenants` lab with the agents stopped, the old and the new tables (and isolation off and on) swapped in turn, 8 interleaved rounds of 3-second 64-byte UDP floods: dvrmesh L2 across hosts 177 kpps with the old tables against 204 with the new (medians), 0.83× against 1.01× the plain L2 of the same round (median of the rounds' ratios); one TCP stream did not move beyond the machine's noise (4 rounds), as it sends 64 KB GSO super-packets, each walking the chains once.\n";

/// Why DVR across hosts stays below 0.95× plain L2: what is left since the fast path skips the
/// routed hop, from this run's ratios, and what was measured by hand (2026-12-04 and -05).
fn below_plain_l2(dvr_over_l2: f64, l2_over_plain: f64, recipe: f64) -> String {
    let mut md = format!("\nDVR across hosts is below 0.95× plain L2 in this run. Since 2026-12-04 it skips the routed hop: a frame for a port on another subnet of the router is routed on the VM's own device and sent straight out of the destination network's VXLAN device (the fast path, `docs/decisions.md`), so it crosses no more devices than dvrmesh's own one-subnet path; it ran at {dvr_over_l2:.2}× that path in this run, and dvrmesh's one-subnet path at {l2_over_plain:.2}× plain L2. (Before, every hop the routed path added — the router namespace's veth pair, a second bridge, the IP forward — came straight off the stream's rate, since the sender's CPU carries the whole path: each veth hand-off is processed in the softirq of the CPU that sent it; the ratio moved between 0.81× and 0.94× over runs, and the recipe's DVR, which pays that hop, ran at {recipe:.2}× the recipe's one subnet in this run.)");
    if l2_over_plain >= 0.95 {
        md.push_str(" The shortfall is therefore between the two dvrmesh paths, which share everything but the fast path's one chain on the VM's device and its `fwd`. In two full runs of the same code before iperf3 was pinned (2026-12-05 02:00 and 02:24 UTC) this ratio went from 1.06× to 0.81×: a run-wide factor moved it more than the path did, the likeliest being placement (each iperf3 client and server put by the scheduler on either CPU anew, and a stream's rate depends on whether the two share one). Since 2026-12-05 05:00 UTC every client runs on the first CPU and every server on the last (`iperf3 -A`), the same for every case and run; whether what stays is the fast path's own cost (its chain and the `fwd` to the VXLAN device, against the bridge's forwarding) or this run's spread, the rounds' min–max above show, and the profile below.\n");
    } else {
        md.push_str(" What is left is dvrmesh's L2 path against the hand-built one: the same bridge and VXLAN devices, plus the netdev nft tables on the VXLAN devices (the DVR MAC rewrite and the DHCP and metadata barriers, 4 rules out and 3 in since 2026-12-05) and the agents running beside the traffic. By hand, 64-byte UDP floods of 3 s across hosts in one subnet of a `dvrmesh-lab up --tenants` lab, the three agents running and then stopped (`SIGSTOP`), alternating: 80, 83, 75, 78, 81, 81 kpps running against 87, 87, 91, 92, 90, 92 stopped, while the agents used about 2 % of a CPU each.\n");
    }
    md.push_str(PINNED_PROFILE);
    md
}

/// Where the sending CPU's time goes on the three paths, with iperf3 pinned (measured by hand,
/// 2026-12-05).
const PINNED_PROFILE: &str = "\nProfiled side by side with iperf3 pinned (2026-12-05, by hand: a `dvrmesh-lab up --tenants` lab with the harness's plain L2 built beside it, agents running; 6 interleaved rounds of a 5 s TCP stream, each CPU's `/proc/stat` read around every stream): plain L2 14.49, dvrmesh L2 13.74 (0.95×), DVR across hosts 13.21 Gbit/s (0.91× plain, 0.96× dvrmesh L2), medians. The client's CPU carries the whole path (every veth hand-off, both bridges, both VXLAN devices, up to the server's socket) and was 89–94 % busy in every case, the server's 47–59 %: the rate follows the sending CPU's cost per byte. In `perf record -C 0 -g` of that CPU, 4 s of each stream, dvrmesh L2 spent about 2 % of it where plain L2 spends nothing: nft (`nft_do_chain` 1.1 %, the netdev hook, payload reads and set lookups) and the DHCP server's packet socket on the VM port (`packet_rcv` and its filter's `skb_copy_bits`, 0.4 %); DVR across hosts about 2.5 % more: the fast-path chain's rules and map lookup, the MAC rewrite (`nft_payload_set_eval`, `skb_store_bits`, 0.8 %) and the `fwd`. No extra hop or copy is left; what separates the paths is the per-packet price of what dvrmesh does on them (the DHCP and metadata barriers, the DVR MAC rewrite, routing on the VM's device), paid once per 64 KB super-packet.\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_judged_from_the_run_and_a_miss_is_explained() {
        let case = |name: &'static str| Case {
            name,
            client: PathBuf::new(),
            server: PathBuf::new(),
            to: String::new(),
        };
        let cases = [
            case("east-west, across hosts, routed"),
            case("plain L2 across hosts"),
            case("centralized router"),
        ];
        let s = |tcp: f64, udp: f64| Samples {
            tcp: vec![tcp],
            udp: vec![udp],
        };
        let t = targets(&cases, &[s(9.6, 100.0), s(10.0, 125.0), s(9.0, 80.0)]);
        assert!(
            t.contains("TCP **0.96×** plain L2 (target ≥ 0.95×: met)"),
            "{t}"
        );
        assert!(t.contains("**1.07×** the centralized router (target ≥ 1.1×: **not met**)"));
        assert!(t.contains("Why the centralized router is this close") && t.contains("1.25×"));
        let t = targets(&cases, &[s(9.0, 100.0), s(10.0, 125.0), s(5.0, 80.0)]);
        assert!(t.contains("1.80×") && !t.contains("Why the centralized"));
        assert!(
            t.contains("(target ≥ 0.95×: **not met**, 9.00–9.00 against 10.00–10.00 Gbit/s: every round below the other's slowest)"),
            "{t}"
        );
        assert!(t.contains("below 0.95× plain L2") && t.contains("skips the routed hop"));
        // The explanation follows where the shortfall is: between the two dvrmesh paths, or in
        // dvrmesh's L2 path against the hand-built one.
        let between = below_plain_l2(0.81, 1.07, 0.9);
        assert!(between.contains("0.81× that path") && between.contains("1.07× plain L2"));
        assert!(between.contains("run-wide factor") && between.contains("iperf3 -A"));
        assert!(!between.contains("What is left"));
        let l2 = below_plain_l2(0.97, 0.90, 0.9);
        assert!(l2.contains("What is left is dvrmesh's L2 path") && !l2.contains("run-wide"));
        // Either way the pinned profile says where the sending CPU's time goes.
        for t in [&between, &l2] {
            assert!(
                t.contains("`perf record -C 0 -g`") && t.contains("MAC rewrite"),
                "{t}"
            );
        }
    }
}
