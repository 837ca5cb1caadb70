//! `dvrmesh doctor` through the real binary. On this machine (root): every check has a verdict,
//! every kernel feature passes, and the host is the same afterwards (no namespace, link, nft table
//! or mount left). Beside a running agent: its socket, port and clock are found. On a "machine
//! lacking things" (a configuration naming interfaces that do not exist, a port already taken, an
//! expired certificate, no CA): each of those fails with its fix, and the exit status is 1.

mod common;

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1));
    assert_eq!(
        euid,
        Some("0"),
        "the doctor's kernel probes need root (CAP_NET_ADMIN, CAP_SYS_ADMIN): run the tests as root"
    );
}

/// Runs `dvrmesh doctor --json ARGS` with `TMPDIR` set to `tmp`; returns the exit code and the
/// report.
fn doctor(tmp: &Path, args: &[&str]) -> (i32, Value) {
    let out = Command::new(BIN)
        .args(["doctor", "--json"])
        .args(args)
        .env("TMPDIR", tmp)
        .output()
        .expect("run dvrmesh doctor");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn checks(report: &Value) -> &Vec<Value> {
    report["checks"].as_array().expect("checks is an array")
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    checks(report)
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

fn lines(cmd: &str, args: &[&str]) -> BTreeSet<String> {
    let out = Command::new(cmd).args(args).output().expect("run");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// What the host holds that a leaking probe would change.
fn host_state() -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let netns = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let links = lines("ip", &["-o", "link", "show"])
        .into_iter()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .collect();
    (netns, links, lines("nft", &["list", "tables"]))
}

#[test]
fn on_this_machine_every_kernel_feature_passes_and_the_host_is_unchanged() {
    require_root();
    let tmp = tempfile::tempdir().expect("tmp");
    let before = host_state();
    let (code, report) = doctor(tmp.path(), &[]);
    let after = host_state();
    assert_eq!(code, 0, "warnings only without a configuration: {report:#}");
    assert!(!checks(&report).is_empty());
    for c in checks(&report) {
        assert!(
            ["ok", "warn", "fail"].contains(&c["verdict"].as_str().unwrap_or("")),
            "{c}"
        );
        assert!(!c["detail"].as_str().unwrap_or("").is_empty(), "{c}");
        if c["verdict"] != "ok" {
            assert!(!c["fix"].as_str().unwrap_or("").is_empty(), "a fix for {c}");
        }
    }
    let kernel: Vec<&Value> = checks(&report)
        .iter()
        .filter(|c| c["group"] == "kernel")
        .collect();
    assert_eq!(kernel.len(), 10, "{report:#}");
    for c in kernel {
        assert_eq!(c["verdict"], "ok", "{c}");
    }
    assert_eq!(check(&report, "files.config")["verdict"], "warn");
    assert_eq!(
        before, after,
        "the host's namespaces, links and nft tables are unchanged"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("tmp")
        .flatten()
        .collect();
    assert!(left.is_empty(), "the sandbox left {left:?} in TMPDIR");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let tmp_name = tmp.path().to_string_lossy();
    assert!(
        !mounts.lines().any(|l| l.contains(tmp_name.as_ref())),
        "a namespace mount is left under {tmp_name}"
    );
}

#[test]
fn beside_a_running_agent_its_socket_port_and_clock_are_found() {
    require_root();
    let dir = pki(&["n1"]).expect("pki");
    let _agents = cluster(dir.path(), &["n1"]).expect("one agent");
    let config = dir.path().join("n1.toml");
    let (code, report) = doctor(dir.path(), &["--config", &config.to_string_lossy()]);
    assert_eq!(code, 0, "{report:#}");
    for id in [
        "files.config",
        "files.tls-cert",
        "files.tls-identity",
        "files.tls-chain",
        "files.tls-key",
        "host.underlay",
        "host.external",
        "services.api-socket",
        "services.gossip-port",
        "services.clock-skew",
    ] {
        assert_eq!(
            check(&report, id)["verdict"],
            "ok",
            "{:#}",
            check(&report, id)
        );
    }
    let port = check(&report, "services.gossip-port")["detail"].to_string();
    assert!(port.contains("held by the running agent"), "{port}");
}

#[test]
fn a_machine_lacking_things_is_told_which_and_how_to_fix_each() {
    let dir = pki(&["n1"]).expect("pki");
    let d = dir.path();
    // A certificate that expires as it is issued.
    ok(&[
        "cert",
        "issue",
        "--ca",
        &d.join("ca").to_string_lossy(),
        "--node",
        "n1",
        "--out",
        &d.join("expired").to_string_lossy(),
        "--days",
        "0",
    ])
    .expect("issue");
    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let config = d.join("lacking.toml");
    std::fs::write(
        &config,
        format!(
            r#"node_id = "n1"
mode = "dvr_snat"
listen = "127.0.0.1:{port}"
tunnel_ip = "192.0.2.99"
api_socket = "n1.sock"
data_dir = "data"

[tls]
ca = "no-ca/ca.pem"
cert = "expired/node.pem"
key = "expired/node.key"

[external.public]
interface = "nosuch0"
"#
        ),
    )
    .expect("config");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, report) = doctor(d, &["--config", &config.to_string_lossy()]);
    assert_eq!(code, 1, "a failed check exits 1: {report:#}");
    assert_eq!(report["verdict"], "fail");
    let expect = |id: &str, detail: &str, fix: &str| {
        let c = check(&report, id);
        assert_eq!(c["verdict"], "fail", "{c:#}");
        assert!(c["detail"].as_str().unwrap_or("").contains(detail), "{c:#}");
        assert!(c["fix"].as_str().unwrap_or("").contains(fix), "{c:#}");
    };
    expect(
        "host.underlay",
        "192.0.2.99 is on no interface",
        "ip addr add 192.0.2.99",
    );
    expect(
        "host.external.public",
        "nosuch0 does not exist",
        "[external.public]",
    );
    expect(
        "files.tls-ca",
        "no-ca/ca.pem",
        "copy the cluster CA certificate",
    );
    expect("files.tls-cert", "expired", "dvrmesh cert issue");
    expect(
        "services.gossip-port",
        "in use",
        &format!("sport = :{port}"),
    );
    assert_eq!(check(&report, "services.api-socket")["verdict"], "warn");
    drop(taken);
}

#[test]
fn without_privileges_the_kernel_checks_say_they_need_root() {
    require_root();
    let tmp = tempfile::tempdir().expect("tmp");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .args(["--bounding-set=-all", BIN, "doctor", "--json"])
        .env("TMPDIR", tmp.path())
        .output()
        .expect("run setpriv");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        out.status.code(),
        Some(0),
        "warnings, not failures: {report:#}"
    );
    let kernel: Vec<&Value> = checks(&report)
        .iter()
        .filter(|c| c["group"] == "kernel")
        .collect();
    assert_eq!(kernel.len(), 10);
    for c in kernel {
        assert_eq!(c["verdict"], "warn", "{c}");
        assert!(
            c["detail"].as_str().unwrap_or("").contains("CAP_NET_ADMIN"),
            "{c}"
        );
        assert!(
            c["fix"]
                .as_str()
                .unwrap_or("")
                .contains("sudo dvrmesh doctor"),
            "{c}"
        );
    }
}
