//! The recipe's hand-built DVR in the data-plane run: `../shared/reference/dvr-prototype` (a
//! shell recipe outside this repository, run from where it is, never copied) builds its own
//! namespaces (`pt-*`) with its `dvr.sh up` at bench time; its VMs give the same paths as
//! dvrmesh's, and the report sets the two side by side. Without the recipe its rows are skipped
//! and the report says why.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use super::iperf::{Case, Samples};
use super::stats::ratio;
use super::stats::{ranges_against, summary};

/// Where the recipe is looked for when `DVRMESH_RECIPE_DIR` is not set, relative to the current
/// directory and to the repository's parent directory.
pub(super) const RECIPE_REL: &str = "../shared/reference/dvr-prototype";

/// Each recipe path and the dvrmesh case (by the start of its name) that measures the same.
const PAIRS: [(&str, &str, &str, &str); 6] = [
    (
        "recipe: east-west, one host, routed",
        "east-west, one host",
        "pt-vm1",
        "pt-vm3 10.2.0.30",
    ),
    (
        "recipe: east-west, across hosts, routed (DVR)",
        "east-west, across hosts",
        "pt-vm1",
        "pt-vm2 10.2.0.20",
    ),
    (
        "recipe: one subnet across hosts",
        "one subnet across hosts",
        "pt-vm1",
        "pt-vm4 10.1.0.40",
    ),
    (
        "recipe: SNAT out (via its network node)",
        "SNAT out",
        "pt-vm1",
        "pt-internet 198.51.100.10",
    ),
    (
        "recipe: FIP out",
        "FIP out",
        "pt-vm2",
        "pt-internet 198.51.100.10",
    ),
    (
        "recipe: FIP in",
        "FIP in",
        "pt-internet",
        "pt-vm2 203.0.113.50",
    ),
];

/// The recipe's directory, if it is there: `DVRMESH_RECIPE_DIR`, else [`RECIPE_REL`] from the
/// current directory, else from this repository's parent.
pub(super) fn locate() -> Option<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        std::env::var_os("DVRMESH_RECIPE_DIR").map(PathBuf::from),
        Some(PathBuf::from(RECIPE_REL)),
        Some(repo.join(RECIPE_REL)),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|d| d.join("dvr.sh").is_file())
        .and_then(|d| d.canonicalize().ok())
}

/// Builds the recipe (`dvr.sh up`, which first removes any `pt-*` namespace) and returns its
/// cases.
pub(super) fn up(dir: &Path) -> Result<Vec<Case>> {
    dvr_sh(dir, "up")?;
    let ns = |n: &str| PathBuf::from("/run/netns").join(n);
    Ok(PAIRS
        .iter()
        .map(|&(name, _, client, server)| {
            let (server, to) = server.split_once(' ').unwrap_or((server, ""));
            Case {
                name,
                client: ns(client),
                server: ns(server),
                to: to.to_string(),
            }
        })
        .collect())
}

/// Removes the recipe's namespaces (`dvr.sh down`).
pub(super) fn down(dir: &Path) -> Result<()> {
    dvr_sh(dir, "down")
}

/// Runs `dvr.sh <action>` with bash, bounded to two minutes.
fn dvr_sh(dir: &Path, action: &str) -> Result<()> {
    let out = Command::new("timeout")
        .args(["120", "bash"])
        .arg(dir.join("dvr.sh"))
        .arg(action)
        .current_dir(dir)
        .output()
        .context("running the recipe's dvr.sh")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "dvr.sh {action} failed: {}",
            err.lines().last().unwrap_or("")
        );
    }
    Ok(())
}

/// The side-by-side table: each path's dvrmesh median over the recipe's, TCP and UDP.
pub(super) fn compare(cases: &[Case], samples: &[Samples], dir: Option<&Path>) -> String {
    let find = |prefix: &str| {
        cases
            .iter()
            .zip(samples)
            .find(|(c, _)| c.name.starts_with(prefix))
            .map(|(_, s)| s)
    };
    let Some(dir) = dir else {
        return format!("\nThe recipe's hand-built DVR was not run: `{RECIPE_REL}` (or `DVRMESH_RECIPE_DIR`) has no `dvr.sh` here.\n");
    };
    let mut md = format!("\n### dvrmesh against the recipe's hand-built DVR, same run\n\nThe recipe (`{}`, built by its own `dvr.sh up` in this run: the same kernel objects made by hand, 2 compute hosts and a network node as namespaces, VM MTU 1450) measured on the same paths as dvrmesh's above, interleaved with them in each round. Ratio = dvrmesh's median over the recipe's.\n\n| path | dvrmesh TCP | recipe TCP | ratio | dvrmesh UDP 64 B kpps | recipe UDP | ratio |\n|---|---|---|---|---|---|---|\n", dir.display());
    let (mut paths, mut below) = (0, Vec::new());
    for (recipe, ours, _, _) in PAIRS {
        let (Some(r), Some(o)) = (find(recipe), find(ours)) else {
            continue;
        };
        let m = |v: &Vec<f64>| summary(v).median;
        md.push_str(&format!(
            "| {} | {:.2} | {:.2} | **{:.2}×** | {:.0} | {:.0} | **{:.2}×** |\n",
            recipe.trim_start_matches("recipe: "),
            m(&o.tcp),
            m(&r.tcp),
            ratio(m(&o.tcp), m(&r.tcp)),
            m(&o.udp),
            m(&r.udp),
            ratio(m(&o.udp), m(&r.udp))
        ));
        if m(&o.tcp) < m(&r.tcp) {
            below.push(below_recipe(recipe, &o.tcp, &r.tcp));
        }
        paths += 1;
    }
    md.push_str(&recipe_verdict(paths, &below));
    md
}

/// One path whose TCP median is below the recipe's: both ranges, and whether they overlap.
fn below_recipe(path: &str, ours: &[f64], theirs: &[f64]) -> String {
    format!(
        "{} ({})",
        path.trim_start_matches("recipe: "),
        ranges_against(ours, theirs, "Gbit/s")
    )
}

/// The target (at least the recipe's figures in the same run), judged on TCP medians.
fn recipe_verdict(paths: usize, below: &[String]) -> String {
    if below.is_empty() {
        return format!("\nTarget: at least the recipe's figures in the same run (one TCP stream, medians): met on all {paths} paths.\n");
    }
    format!(
        "\nTarget: at least the recipe's figures in the same run (one TCP stream, medians): met on {} of {paths} paths; below: {}. Where the ranges overlap, the difference is within what the rounds of this run moved by.\n",
        paths - below.len(),
        below.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_recipe_path_pairs_with_a_dvrmesh_case_and_ratios_are_ours_over_theirs() {
        let case = |name: &'static str| Case {
            name,
            client: PathBuf::new(),
            server: PathBuf::new(),
            to: String::new(),
        };
        let s = |tcp: f64, udp: f64| Samples {
            tcp: vec![tcp],
            udp: vec![udp],
        };
        let cases = [
            case("east-west, across hosts, routed (dvrmesh DVR)"),
            case(PAIRS[1].0),
        ];
        let md = compare(
            &cases,
            &[s(9.0, 80.0), s(10.0, 100.0)],
            Some(Path::new("/r")),
        );
        assert!(
            md.contains("| east-west, across hosts, routed (DVR) | 9.00 | 10.00 | **0.90×** | 80 | 100 | **0.80×** |"),
            "{md}"
        );
        assert!(
            !md.contains("FIP in |"),
            "paths without samples are left out"
        );
        assert!(
            md.contains("met on 0 of 1 paths; below: east-west, across hosts, routed (DVR) (9.00–9.00 against 10.00–10.00 Gbit/s: every round below the other's slowest)"),
            "{md}"
        );
        let overlapping = compare(
            &cases,
            &[
                Samples {
                    tcp: vec![9.0, 11.0, 9.5],
                    udp: vec![80.0],
                },
                Samples {
                    tcp: vec![10.0, 10.5, 10.2],
                    udp: vec![100.0],
                },
            ],
            Some(Path::new("/r")),
        );
        assert!(
            overlapping.contains("the rounds' ranges overlap"),
            "{overlapping}"
        );
        let ahead = compare(
            &cases,
            &[s(11.0, 80.0), s(10.0, 100.0)],
            Some(Path::new("/r")),
        );
        assert!(ahead.contains("met on all 1 paths"), "{ahead}");
        assert!(compare(&cases, &[], None).contains("was not run"));
        for (_, ours, _, server) in PAIRS {
            assert!(server.contains(' '), "{server}: namespace and address");
            assert!(!ours.is_empty());
        }
    }
}
