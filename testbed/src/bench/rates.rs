//! Routes and neighbours per second: dvrmesh's netlink path (a `reconcile_pass` of the Linux
//! backend, as the agent runs it) against one `ip -batch` process and one `ip` process per
//! object, the same objects into a fresh throwaway namespace for each method.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use datapath::{diff, AddrSpec, Desired, LinkKind, LinkSpec, NeighSpec, Netns, RouteSpec};
use mesh_proto::{Ipv4Cidr, MacAddr};

use super::plot::{Bar, Chart};
use super::{run, shell};

/// The namespace everything goes into.
const NS: &str = "qrouter-rates";
/// The device the routes and neighbours are on (a veth whose peer is in the same namespace).
const DEV: &str = "qr-rates";

/// Objects per second of each method: (routes, neighbours).
pub struct Rates {
    /// How many of each.
    pub n: u32,
    pub ours: (f64, f64),
    pub batch: (f64, f64),
    pub per_object: (f64, f64),
}

/// The namespace, the veth pair, the address: what the routes and neighbours need.
fn base() -> Desired {
    let mut d = Desired::default();
    d.namespaces.insert(NS.into());
    let ns = Netns::Named(NS.into());
    for (a, b) in [(DEV, "rfp-rates"), ("rfp-rates", DEV)] {
        d.links.insert(
            (ns.clone(), a.into()),
            LinkSpec::of(LinkKind::Veth {
                peer: b.into(),
                peer_ns: ns.clone(),
            }),
        );
    }
    d.addrs.insert(AddrSpec {
        ns,
        dev: DEV.into(),
        ip: Ipv4Addr::new(10, 128, 0, 1),
        prefix: 10,
    });
    d
}

/// [`base`] with `n` /32 routes (172.16.0.0/12 onwards, via a neighbour on the device, in
/// table 100).
fn with_routes(n: u32) -> Desired {
    let mut d = base();
    for i in 0..n {
        let dst = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 0)) + i);
        d.routes.insert(RouteSpec {
            ns: Netns::Named(NS.into()),
            table: 100,
            dst: Ipv4Cidr::new(dst, 32).expect("a /32 is a valid CIDR"),
            via: Some(Ipv4Addr::new(10, 128, 0, 2)),
            dev: DEV.into(),
        });
    }
    d
}

/// [`with_routes`] and `n` permanent neighbours on the device.
fn with_both(n: u32) -> Desired {
    let mut d = with_routes(n);
    for i in 0..n {
        let b = i.to_be_bytes();
        d.neighs.insert(NeighSpec {
            ns: Netns::Named(NS.into()),
            dev: DEV.into(),
            ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 1, 0)) + i),
            mac: MacAddr::new([0xfa, 0x16, 0x3e, b[1], b[2], b[3]]).expect("unicast MAC"),
        });
    }
    d
}

fn per_second(n: u32, d: Duration) -> f64 {
    f64::from(n) / d.as_secs_f64().max(1e-9)
}

/// Measures all three methods with `n` routes and `n` neighbours.
pub fn measure(n: u32, work: &Path) -> Result<Rates> {
    let steps = [base(), with_routes(n), with_both(n)];
    let passes = run::dvrmesh_incremental(&steps)?;
    let took = |i: usize| passes.get(i).map(|p| p.took).unwrap_or_default();
    let ours = (per_second(n, took(1)), per_second(n, took(2)));
    let batch = scripted(&steps, work, true)?;
    let per_object = scripted(&steps, work, false)?;
    Ok(Rates {
        n,
        ours,
        batch: (per_second(n, batch.0), per_second(n, batch.1)),
        per_object: (per_second(n, per_object.0), per_second(n, per_object.1)),
    })
}

/// The routes' and the neighbours' time by `ip`: one `-batch` process each, or one process per
/// object. The namespace and its device are made first, untimed.
fn scripted(steps: &[Desired; 3], work: &Path, batch: bool) -> Result<(Duration, Duration)> {
    let mut text = String::from("set -e\n");
    for l in shell::commands(&diff(&steps[0], &Desired::default())) {
        text.push_str(&l);
        text.push('\n');
    }
    let prefix = format!("ip -n {NS} ");
    for (i, pair) in steps.windows(2).enumerate() {
        let lines = shell::commands(&diff(&pair[1], &pair[0]));
        text.push_str("s=$(date +%s%N)\n");
        if batch {
            let file = work.join(format!("rates-{i}.batch"));
            let body: Vec<&str> = lines
                .iter()
                .map(|l| l.strip_prefix(&prefix).unwrap_or(l))
                .collect();
            std::fs::write(&file, body.join("\n") + "\n")?;
            text.push_str(&format!("ip -n {NS} -batch {}\n", file.display()));
        } else {
            for l in &lines {
                text.push_str(l);
                text.push('\n');
            }
        }
        text.push_str("e=$(date +%s%N)\necho $((e - s))\n");
    }
    let script = work.join("rates.sh");
    std::fs::write(&script, text)?;
    let what = if batch { "ip -batch" } else { "ip per object" };
    let times = run::timed_script(&script, work, what, 2)?;
    Ok((times[0], times[1]))
}

/// The rows added to the programming section's table, and a chart.
pub fn report(r: &Rates, suffix: &str) -> (String, Chart) {
    let mut md = format!("\n### Routes and neighbours per second\n\n{} /32 routes (via a neighbour, in table 100), then {} permanent neighbours, into one fresh namespace with one veth device, by each method in turn: dvrmesh = one `reconcile_pass` of the Linux backend each (observing that namespace, diffing, applying over rtnetlink: what the agent does), `ip -batch` = one `ip -n … -batch` process each, per object = one `ip` process per route or neighbour (run by `sh`). Rate = objects over the time of the whole step.\n\n| method | routes/s | neighbours/s |\n|---|---|---|\n", r.n, r.n);
    for (name, (rt, nb)) in [
        ("dvrmesh (netlink, one pass)", r.ours),
        ("one `ip -batch` process", r.batch),
        ("one `ip` process per object", r.per_object),
    ] {
        md.push_str(&format!("| {name} | **{rt:.0}** | **{nb:.0}** |\n"));
    }
    let ratio = |a: f64, b: f64| a / b.max(1e-9);
    md.push_str(&format!(
        "\ndvrmesh over `ip -batch`: routes {:.2}×, neighbours {:.2}×; over one `ip` per object: routes {:.0}×, neighbours {:.0}×.\n",
        ratio(r.ours.0, r.batch.0),
        ratio(r.ours.1, r.batch.1),
        ratio(r.ours.0, r.per_object.0),
        ratio(r.ours.1, r.per_object.1)
    ));
    let bar = |label: &str, v: f64| Bar {
        label: label.into(),
        value: v / 1000.0,
        spread: None,
    };
    let chart = Chart {
        file: format!("datapath-rates{suffix}"),
        title: "Routes and neighbours programmed per second".into(),
        unit: "thousand objects/s".into(),
        bars: vec![
            bar("routes: dvrmesh", r.ours.0),
            bar("routes: ip -batch", r.batch.0),
            bar("routes: ip per object", r.per_object.0),
            bar("neighbours: dvrmesh", r.ours.1),
            bar("neighbours: ip -batch", r.batch.1),
            bar("neighbours: ip per object", r.per_object.1),
        ],
    };
    (md, chart)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steps_add_only_routes_then_only_neighbours() {
        let ops = diff(&with_routes(50), &base());
        assert_eq!(ops.len(), 50);
        assert!(ops.iter().all(|o| matches!(o, datapath::Op::AddRoute(_))));
        let ops = diff(&with_both(50), &with_routes(50));
        assert_eq!(ops.len(), 50);
        assert!(ops.iter().all(|o| matches!(o, datapath::Op::AddNeigh(_))));
        let lines = shell::commands(&ops);
        assert!(lines
            .iter()
            .all(|l| l.starts_with("ip -n qrouter-rates neigh replace")));
    }

    #[test]
    fn the_report_gives_rates_and_ratios() {
        let r = Rates {
            n: 100,
            ours: (50_000.0, 40_000.0),
            batch: (25_000.0, 20_000.0),
            per_object: (500.0, 400.0),
        };
        let (md, chart) = report(&r, "");
        assert!(
            md.contains("| dvrmesh (netlink, one pass) | **50000** | **40000** |"),
            "{md}"
        );
        assert!(md.contains("routes 2.00×, neighbours 2.00×"), "{md}");
        assert!(md.contains("routes 100×, neighbours 100×"), "{md}");
        assert_eq!(chart.bars.len(), 6);
    }
}
