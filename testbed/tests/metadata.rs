//! The metadata service in the lab (root): VMs read their own documents at 169.254.169.254 with
//! `curl` and `wget`, served by their own node in their network's metadata namespace; a VM that
//! borrows another's address gets nothing, one on an address of no local port gets a 403; two
//! tenants with the same CIDR each read their own; a network without a router is served too.

mod common;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use testbed::lab::exec::{output_in, run_in};
use testbed::lab::{wait, Lab};

use common::TestLab;

const BASE: &str = "http://169.254.169.254";

/// `curl` from `vm`: (HTTP status, body); status 0 when no answer came.
fn curl(lab: &Lab, vm: &str, path: &str) -> Result<(u16, String)> {
    let url = format!("{BASE}{path}");
    let out = output_in(
        &lab.vm_ns(vm),
        &[
            "curl",
            "-sS",
            "--max-time",
            "4",
            "-w",
            "\n%{http_code}",
            &url,
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}

/// The body of `path` for `vm`, waiting (the namespace and listener follow the port).
fn read(lab: &Lab, vm: &str, path: &str) -> Result<String> {
    let mut got = String::new();
    wait(
        Duration::from_secs(30),
        &format!("{vm} reading {path}"),
        || match curl(lab, vm, path) {
            Ok((200, body)) => {
                got = body;
                true
            }
            _ => false,
        },
    )?;
    Ok(got)
}

fn write(dir: &Path, name: &str, text: &str) -> Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path.to_string_lossy().into_owned())
}

#[test]
fn vms_read_their_own_metadata_and_nobody_elses() -> Result<()> {
    let mut t = TestLab::new(2, 1)?;
    let files = t.dir.path().to_path_buf();
    let lab = t.lab();
    let n = lab.state.nodes[0].name.clone();
    // A network without a router.
    lab.cli(&n, &["network", "create", "d-net", "--vni", "401"])?;
    lab.cli(
        &n,
        &[
            "subnet",
            "create",
            "d-sub",
            "--network",
            "d-net",
            "--cidr",
            "10.40.0.0/24",
        ],
    )?;
    let a1 = lab.vm_create("a-vm1", "compute-1", "a-net1", true)?;
    let a2 = lab.vm_create("a-vm2", "compute-2", "a-net1", false)?;
    let a3 = lab.vm_create("a-vm3", "compute-1", "a-net1", false)?;
    let b1 = lab.vm_create("b-vm1", "compute-1", "b-net1", false)?;
    let d1 = lab.vm_create("d-vm1", "compute-2", "d-net", false)?;

    // Each reads its own port, from its own node, whatever its tenant's CIDR.
    for vm in [&a1, &a2, &a3, &b1, &d1] {
        assert_eq!(
            read(lab, &vm.name, "/latest/meta-data/instance-id")?,
            vm.port
        );
        assert_eq!(read(lab, &vm.name, "/latest/meta-data/local-ipv4")?, vm.ip);
        assert_eq!(read(lab, &vm.name, "/latest/meta-data/mac")?, vm.mac);
        let doc: Value =
            serde_json::from_str(&read(lab, &vm.name, "/openstack/latest/meta_data.json")?)?;
        assert_eq!(doc["uuid"], vm.port.as_str(), "{}", vm.name);
        assert_eq!(doc["availability_zone"], vm.node.as_str(), "{}", vm.name);
    }
    // a-net1 and b-net1 are both 10.1.0.0/24 (two tenants), each read its own port above.
    assert!(a1.ip.starts_with("10.1.0.") && b1.ip.starts_with("10.1.0."));
    let fip = a1.fip.clone().context("a-vm1 has a floating IP")?;
    assert_eq!(read(lab, "a-vm1", "/latest/meta-data/public-ipv4")?, fip);
    assert_eq!(curl(lab, "a-vm2", "/latest/meta-data/public-ipv4")?.0, 404);

    // Host name, user data and a key, set on the port, read with wget.
    let user_data = "#cloud-config\nruncmd: [echo hello]\n";
    let ud = write(&files, "user-data", user_data)?;
    let key = write(
        &files,
        "key.pub",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 lab@test\n",
    )?;
    lab.cli(
        "compute-1",
        &[
            "port",
            "set",
            &a1.port,
            "--hostname",
            "web-1",
            "--user-data",
            &ud,
            "--ssh-key",
            &key,
        ],
    )?;
    wait(Duration::from_secs(20), "a-vm1's host name served", || {
        curl(lab, "a-vm1", "/latest/meta-data/hostname").is_ok_and(|r| r.1 == "web-1")
    })?;
    let wget = |path: &str| {
        run_in(
            &lab.vm_ns("a-vm1"),
            &["wget", "-q", "-T", "4", "-O", "-", &format!("{BASE}{path}")],
        )
    };
    assert_eq!(wget("/openstack/latest/user_data")?, user_data);
    assert_eq!(wget("/latest/user-data")?, user_data);
    assert_eq!(
        wget("/latest/meta-data/public-keys/0/openssh-key")?,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 lab@test\n"
    );
    // Too much user data is refused with a clear error, nothing changes.
    let big = write(
        &files,
        "big",
        &"x".repeat(mesh_proto::MAX_USER_DATA_BYTES + 1),
    )?;
    let err = lab
        .cli("compute-1", &["port", "set", &a1.port, "--user-data", &big])
        .expect_err("over the limit");
    assert!(err.to_string().contains("larger than"), "{err}");
    // Other VMs see none of it.
    assert_eq!(curl(lab, "a-vm3", "/latest/user-data")?.0, 404);

    // a-vm3 takes a-vm1's address as well: its requests from that address never complete
    // (answers go to a-vm1's MAC), so it reads nothing of a-vm1's.
    let ns3 = lab.vm_ns("a-vm3");
    run_in(
        &ns3,
        &["ip", "addr", "add", &format!("{}/32", a1.ip), "dev", "eth0"],
    )?;
    let spoofed = output_in(
        &ns3,
        &[
            "curl",
            "-s",
            "--max-time",
            "3",
            "--interface",
            &a1.ip,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{BASE}/latest/user-data"),
        ],
    )?;
    assert_eq!(String::from_utf8_lossy(&spoofed.stdout), "000", "no answer");
    run_in(
        &ns3,
        &["ip", "addr", "del", &format!("{}/32", a1.ip), "dev", "eth0"],
    )?;
    // It takes the address of a port on another node: that node's VM is not here, so this node
    // refuses it.
    run_in(
        &ns3,
        &["ip", "addr", "add", &format!("{}/32", a2.ip), "dev", "eth0"],
    )?;
    let mut refused = 0;
    wait(Duration::from_secs(10), "a refusal", || {
        let out = output_in(
            &ns3,
            &[
                "curl",
                "-s",
                "--max-time",
                "3",
                "--interface",
                &a2.ip,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("{BASE}/latest/meta-data/instance-id"),
            ],
        );
        refused = out
            .map(|o| String::from_utf8_lossy(&o.stdout).parse().unwrap_or(0))
            .unwrap_or(0);
        refused != 0
    })?;
    assert_eq!(refused, 403);
    run_in(
        &ns3,
        &["ip", "addr", "del", &format!("{}/32", a2.ip), "dev", "eth0"],
    )?;

    // Malformed requests get a 4xx or nothing, and the service still answers.
    let garbage = output_in(
        &ns3,
        &[
            "sh",
            "-c",
            "printf 'GARBAGE\\r\\n\\r\\n' | busybox nc -w 2 169.254.169.254 80",
        ],
    )?;
    let text = String::from_utf8_lossy(&garbage.stdout);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 4"), "{text}");
    assert_eq!(
        read(lab, "a-vm3", "/latest/meta-data/instance-id")?,
        a3.port
    );
    // The rate limit: a burst beyond it gets 429s.
    let burst = run_in(
        &ns3,
        &[
            "sh", "-c",
            "for i in $(seq 1 60); do curl -s -o /dev/null -w '%{http_code}\\n' http://169.254.169.254/latest/meta-data/mac; done",
        ],
    )?;
    assert!(burst.lines().any(|l| l == "429"), "{burst}");
    assert!(burst.lines().any(|l| l == "200"), "{burst}");

    // Every node answers its own: a-vm2's ARP requests for 169.254.169.254 are flooded towards
    // compute-1 as any broadcast is, but compute-1's bridge never hands them to its metadata
    // interface (it and the VXLAN device are isolated ports). Had one reached it, the kernel
    // there would have noted a-vm2's MAC as a neighbour's (a-vm3 used a-vm2's address above,
    // from compute-1, so the address alone tells nothing).
    let net = lab.cli("compute-1", &["network", "show", "a-net1"])?;
    let net_id = net["id"].as_str().context("a-net1's id")?.to_string();
    run_in(
        &lab.vm_ns("a-vm2"),
        &[
            "busybox",
            "arping",
            "-c",
            "3",
            "-w",
            "3",
            "-I",
            "eth0",
            "169.254.169.254",
        ],
    )?;
    let qmeta = lab.agent_ns("compute-1", &format!("qmeta-{net_id}"));
    let neighbours = run_in(&qmeta, &["ip", "neigh", "show"])?;
    assert!(
        neighbours.contains(&a1.mac) && !neighbours.contains(&a2.mac),
        "compute-1's metadata interface knows its own ports only: {neighbours}"
    );
    for node in ["compute-1", "compute-2"] {
        let (_, tmd) = datapath::plan::metadata_veth(&mesh_proto::ObjectId::new(&net_id)?);
        for dev in ["vx-101", tmd.as_str()] {
            let port = run_in(&lab.node_ns(node), &["ip", "-d", "link", "show", dev])?;
            assert!(port.contains("isolated on"), "{node} {dev}: {port}");
        }
    }
    Ok(())
}
