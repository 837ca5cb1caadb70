//! The metrics endpoint of real agents on loopback: `/healthz`, `/readyz` and `/metrics` answer,
//! the metric names operators alert on are there, and their values move when the cluster
//! changes (a configuration write, an API error, gossip traffic, a member that dies). Also: a
//! port already taken stops the agent's start with a message naming `metrics_listen`.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use common::{cluster_with, dvrmesh, pki, wait_until};

/// A free TCP port on loopback.
fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port on loopback")
}

/// `GET path` over HTTP/1.0: the status code and the body.
fn get(port: u16, method: &str, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).context("connecting to metrics")?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("a status line")?;
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of the sample `series` (name with labels, as printed) in a metrics page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn scrape(port: u16) -> Result<String> {
    let (status, body) = get(port, "GET", "/metrics")?;
    if status != 200 {
        bail!("/metrics answered {status}: {body}");
    }
    Ok(body)
}

/// Adds `metrics_listen` on `port` to an agent's configuration file.
fn with_metrics(config: PathBuf, port: u16) -> PathBuf {
    let text = std::fs::read_to_string(&config).expect("config readable");
    let text = text.replacen(
        "\n[tls]",
        &format!("metrics_listen = \"127.0.0.1:{port}\"\n\n[tls]"),
        1,
    );
    std::fs::write(&config, text).expect("config written");
    config
}

#[test]
fn metrics_answer_and_move_with_the_cluster() -> Result<()> {
    let names = ["m1", "m2", "m3"];
    let tmp = pki(&names)?;
    let ports: Vec<u16> = names.iter().map(|_| free_tcp_port()).collect();
    let port_of = |config: &PathBuf| {
        let i = names
            .iter()
            .position(|n| config.ends_with(format!("{n}.toml")))
            .expect("a known agent");
        ports[i]
    };
    let mut agents = cluster_with(tmp.path(), &names, |c| {
        let p = port_of(&c);
        with_metrics(c, p)
    })?;
    let m1 = ports[0];

    assert_eq!(get(m1, "GET", "/healthz")?, (200, "ok\n".to_string()));
    wait_until(Duration::from_secs(15), "m1 ready", || {
        get(m1, "GET", "/readyz").is_ok_and(|(s, _)| s == 200)
    })?;
    let page = scrape(m1)?;
    for name in [
        "dvrmesh_members{state=\"alive\"} 3",
        "dvrmesh_members{state=\"dead\"} 0",
        "dvrmesh_view_generation ",
        "dvrmesh_view_age_seconds ",
        "dvrmesh_view_builds_total ",
        "dvrmesh_view_last_build_seconds ",
        "dvrmesh_view_full_merges_total ",
        "dvrmesh_gossip_messages_total{direction=\"in\"} ",
        "dvrmesh_gossip_bytes_total{direction=\"out\"} ",
        "dvrmesh_gossip_refused_total{reason=\"bad_seals\"} 0",
        "dvrmesh_snat_routers_held 0",
        "dvrmesh_snat_takeovers_total 0",
        "dvrmesh_election_datagrams_total{direction=\"out\"} ",
        "# TYPE dvrmesh_reconcile_duration_seconds histogram",
        "# TYPE dvrmesh_api_requests counter",
        "dvrmesh_build_info{version=",
        "# EOF",
    ] {
        assert!(
            page.contains(name),
            "{name:?} missing from /metrics:\n{page}"
        );
    }

    dashboard_names_are_served(&page)?;

    // Values move: gossip keeps flowing, a configuration write raises every view's generation,
    // API requests are counted by operation and result.
    let gen_before = sample(&scrape(ports[1])?, "dvrmesh_view_generation").context("gen")?;
    let bytes = |page: &str| sample(page, "dvrmesh_gossip_bytes_total{direction=\"in\"}");
    let bytes_before = bytes(&page).context("bytes in")?;
    let api = |page: &str, op: &str, result: &str| {
        sample(
            page,
            &format!("dvrmesh_api_requests_total{{op=\"{op}\",result=\"{result}\"}}"),
        )
        .unwrap_or(0.0)
    };
    agents[0]
        .cli(&["network", "create", "metrics-net", "--vni", "4242"])
        .map_err(anyhow::Error::msg)?;
    let refused = agents[0].cli(&["network", "create", "bad", "--vni", "0"]);
    assert!(refused.is_err(), "VNI 0 must be refused");
    wait_until(
        Duration::from_secs(10),
        "m2's view generation to rise",
        || {
            scrape(ports[1]).is_ok_and(|p| {
                sample(&p, "dvrmesh_view_generation").is_some_and(|g| g > gen_before)
            })
        },
    )?;
    let page = scrape(m1)?;
    assert_eq!(api(&page, "network_create", "ok"), 1.0, "{page}");
    assert_eq!(api(&page, "network_create", "error"), 1.0, "{page}");
    assert!(bytes(&page).context("bytes in")? > bytes_before);

    // A member that dies is counted dead.
    agents[2].terminate();
    wait_until(Duration::from_secs(30), "m1 counting m3 dead", || {
        scrape(m1).is_ok_and(|p| {
            sample(&p, "dvrmesh_members{state=\"dead\"}") == Some(1.0)
                && sample(&p, "dvrmesh_members{state=\"alive\"}") == Some(2.0)
        })
    })?;

    // Only GET and HEAD, only the three paths.
    assert_eq!(get(m1, "POST", "/metrics")?.0, 405);
    assert_eq!(get(m1, "GET", "/nothing")?.0, 404);
    assert_eq!(get(m1, "HEAD", "/healthz")?.0, 200);
    Ok(())
}

/// Every `dvrmesh_…` metric the shipped Grafana dashboard queries is one this agent serves (a
/// histogram's `_bucket`, a counter's `_total` as printed), so the dashboard cannot drift.
fn dashboard_names_are_served(page: &str) -> Result<()> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana-dashboard.json"
    );
    let text = std::fs::read_to_string(path).context("reading the dashboard")?;
    let dashboard: serde_json::Value = serde_json::from_str(&text).context("dashboard JSON")?;
    let mut names = Vec::new();
    for panel in dashboard["panels"].as_array().context("panels")? {
        for target in panel["targets"].as_array().context("targets")? {
            let expr = target["expr"].as_str().context("expr")?;
            let mut rest = expr;
            while let Some(i) = rest.find("dvrmesh_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                names.push(name);
            }
        }
    }
    assert!(
        names.len() >= 10,
        "the dashboard queries too few metrics: {names:?}"
    );
    // Served only by an agent that programs its kernel: testbed's rollout test scrapes those.
    let datapath_only = |n: &str| {
        n.starts_with("dvrmesh_datapath_")
            || n.starts_with("dvrmesh_reconcile_")
            || n == "dvrmesh_kernel_objects"
    };
    for name in names.into_iter().filter(|n| !datapath_only(n)) {
        let base = name.strip_suffix("_bucket").unwrap_or(&name);
        let base = base.strip_suffix("_total").unwrap_or(base);
        assert!(
            page.lines()
                .any(|l| l.starts_with(base) || l.starts_with(&format!("# TYPE {base}"))),
            "the dashboard queries {name}, which the agent does not serve"
        );
    }
    Ok(())
}

#[test]
fn a_taken_metrics_port_stops_the_start_with_a_clear_error() -> Result<()> {
    let tmp = pki(&["t1"])?;
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let config = with_metrics(
        common::write_config(tmp.path(), "t1", "t1", "ca", common::free_port(), 1),
        port,
    );
    let out = dvrmesh(&["agent", "--config", &config.to_string_lossy()])?;
    assert!(!out.status.success(), "the agent started on a taken port");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("metrics_listen 127.0.0.1:{port}")),
        "stderr does not name the key and address: {err}"
    );
    Ok(())
}
