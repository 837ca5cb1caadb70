//! The Linux backend against the running kernel. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN).
//!
//! Sealed: every test creates its own throwaway "host" namespace and its own directory of named
//! namespaces under a temp dir, and touches nothing else. VXLAN endpoints are loopback addresses
//! of the throwaway namespace (whose `lo` is down), so no packet can leave it. A [`Lab`] guard
//! removes the namespaces again, also when a test panics.

#![cfg(target_os = "linux")]

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use datapath::linux::{netns, nft, HostNs, LinuxConfig, LinuxKernel, NftLoader};
use datapath::nft::{
    Against, Chain, ChainKind, Elements, Field, Hook, Nat, Priority, Rule, Set, Stmt, Table,
};
use datapath::{
    AddrSpec, Desired, Error, FdbSpec, FdbTarget, Kernel, LinkKind, LinkSpec, NeighSpec, Netns,
    NftContent, NftFamily, NftKey, Op, RouteSpec, RuleSelector, RuleSpec,
};
use mesh_proto::{Ipv4Cidr, MacAddr};

const QR: &str = "qrouter-t1";
const TABLE: u32 = 167_837_697; // int(10.1.0.1), as Neutron numbers SNAT tables

// === Lab ===

/// A throwaway host namespace plus a temp directory for named ones; removed on drop.
struct Lab {
    dir: tempfile::TempDir,
    kernel: LinuxKernel,
}

impl Lab {
    fn new() -> Lab {
        require_root();
        let dir = tempfile::tempdir().expect("temp dir");
        netns::create(&dir.path().join("host"), "lab").expect("create the lab's host namespace");
        let kernel = LinuxKernel::new(LinuxConfig {
            host: HostNs::Path(dir.path().join("host/lab")),
            netns_dir: dir.path().join("netns"),
            ..LinuxConfig::default()
        });
        Lab { dir, kernel }
    }

    fn host_path(&self) -> PathBuf {
        self.dir.path().join("host/lab")
    }

    fn ns_path(&self, ns: &Netns) -> PathBuf {
        match ns {
            Netns::Host => self.host_path(),
            Netns::Named(n) => self.dir.path().join("netns").join(n),
        }
    }

    /// Runs a command inside `ns` (test setup and inspection only) and returns its stdout.
    fn sh(&self, ns: &Netns, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.ns_path(ns).display()))
            .args(args)
            .output()
            .expect("run nsenter");
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply_ok(&mut self, ops: &[Op]) {
        let report = self.kernel.apply(ops).expect("apply");
        assert!(report.failed.is_empty(), "failed ops: {:#?}", report.failed);
        assert_eq!(report.applied, ops.len());
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let named = self.dir.path().join("netns");
        if let Ok(entries) = std::fs::read_dir(&named) {
            for e in entries.flatten() {
                if let Some(name) = e.file_name().to_str() {
                    let _ = netns::delete(&named, name);
                }
            }
        }
        let _ = netns::delete(&self.dir.path().join("host"), "lab");
    }
}

fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    assert_eq!(
        euid, "0",
        "the Linux backend tests need root (CAP_NET_ADMIN and CAP_SYS_ADMIN for netns, netlink \
         and mounts); run `cargo test` as root"
    );
}

// === fixtures ===

fn mac(s: &str) -> MacAddr {
    s.parse().expect("mac")
}

fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().expect("cidr")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

fn named() -> Netns {
    Netns::Named(QR.to_string())
}

fn link(kind: LinkKind) -> LinkSpec {
    LinkSpec::of(kind)
}

/// A table of a qrouter: an interval set and a raw chain.
fn qr_table() -> Table {
    Table {
        family: NftFamily::Ip,
        name: "dvrmesh-qr".into(),
        sets: vec![Set {
            name: "router_subnets".into(),
            elements: Elements::Prefixes(vec![cidr("10.1.0.0/24")]),
        }],
        chains: vec![chain(
            "raw_pre",
            Hook::Prerouting,
            Priority::Raw,
            vec![Rule(vec![
                Stmt::Ip(Field::Saddr, Against::Set("router_subnets".into())),
                Stmt::Ip(Field::Daddr, Against::Set("router_subnets".into())),
                Stmt::Notrack,
            ])],
        )],
    }
}

/// A table of a VXLAN device: an egress chain on `vx-100` (a port range, a MAC mismatch that
/// accepts, a MAC that drops: comparisons of every kind the planner writes).
fn vx_table() -> Table {
    Table {
        family: NftFamily::Netdev,
        name: "dvrmesh-vx100".into(),
        sets: vec![],
        chains: vec![chain(
            "out",
            Hook::Egress("vx-100".into()),
            Priority::Value(0),
            vec![
                Rule(vec![Stmt::UdpDportRange(67, 68), Stmt::Counter, Stmt::Drop]),
                Rule(vec![
                    Stmt::EtherIsNot(Field::Saddr, mac("fa:16:3e:00:01:02")),
                    Stmt::Accept,
                ]),
                Rule(vec![
                    Stmt::Ether(Field::Daddr, Against::Value(mac("fa:16:3e:00:01:01"))),
                    Stmt::Drop,
                ]),
            ],
        )],
    }
}

fn chain(name: &str, hook: Hook, priority: Priority, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.into(),
        kind: ChainKind::Filter,
        hook,
        priority,
        rules,
    }
}

/// A table `name` in the ip family with one empty chain `chain_name`.
fn ip_table(name: &str, chain_name: &str) -> Table {
    Table {
        family: NftFamily::Ip,
        name: name.into(),
        sets: vec![],
        chains: vec![chain(chain_name, Hook::Prerouting, Priority::Raw, vec![])],
    }
}

/// One of everything: bridge + VXLAN + a host↔qrouter veth, an address, routes (one in a big
/// table, with a gateway), rules of all three selectors, a permanent neighbour, FDB entries of
/// every target (two flood entries on one VXLAN device), sysctls and two nft tables.
fn sample() -> Desired {
    let mut d = Desired::default();
    d.namespaces.insert(QR.to_string());
    for (ns, key, value) in [
        (Netns::Host, "net.ipv6.conf.all.disable_ipv6", "1"),
        (Netns::Host, "net.ipv6.conf.default.disable_ipv6", "1"),
        (named(), "net.ipv6.conf.default.disable_ipv6", "1"),
        (named(), "net.ipv4.ip_forward", "1"),
        (named(), "net.ipv4.conf.default.send_redirects", "0"),
    ] {
        d.sysctls.insert((ns, key.to_string()), value.to_string());
    }
    let links = [
        (
            Netns::Host,
            "br-100",
            LinkSpec {
                mtu: Some(1450),
                mac: Some(mac("02:00:00:00:01:00")),
                ..link(LinkKind::Bridge)
            },
        ),
        (
            Netns::Host,
            "vx-100",
            // Created down, IPv6 off, then up with its port flags in one request; `tqr-t1`
            // below gets its learning right after creation.
            LinkSpec {
                mtu: Some(1450),
                master: Some("br-100".into()),
                learning: Some(false),
                isolated: Some(true),
                ipv6: Some(false),
                ..link(LinkKind::Vxlan {
                    vni: 100,
                    local: ip("127.0.0.1"),
                    port: 4789,
                })
            },
        ),
        (
            Netns::Host,
            "tqr-t1",
            LinkSpec {
                mtu: Some(1450),
                master: Some("br-100".into()),
                learning: Some(false),
                isolated: None,
                ..link(LinkKind::Veth {
                    peer: "qr-t1".into(),
                    peer_ns: named(),
                })
            },
        ),
        (
            named(),
            "qr-t1",
            LinkSpec {
                mtu: Some(1450),
                mac: Some(mac("fa:16:3e:00:01:01")),
                ..link(LinkKind::Veth {
                    peer: "tqr-t1".into(),
                    peer_ns: Netns::Host,
                })
            },
        ),
    ];
    for (ns, name, spec) in links {
        d.links.insert((ns, name.to_string()), spec);
    }
    d.addrs.insert(AddrSpec {
        ns: named(),
        dev: "qr-t1".into(),
        ip: ip("10.1.0.1"),
        prefix: 24,
    });
    for (table, dst, via) in [
        (TABLE, "0.0.0.0/0", Some("10.1.0.3")),
        (16, "0.0.0.0/0", Some("10.1.0.3")),
        (254, "10.5.0.0/24", None),
    ] {
        d.routes.insert(RouteSpec {
            ns: named(),
            table,
            dst: cidr(dst),
            via: via.map(ip),
            dev: "qr-t1".into(),
        });
    }
    for (priority, selector, table) in [
        (TABLE, RuleSelector::From(cidr("10.1.0.0/24")), TABLE),
        (
            32769,
            RuleSelector::Fwmark {
                mark: 0x10,
                mask: 0xff,
            },
            16,
        ),
        (32768, RuleSelector::Iif("lo".into()), 16),
    ] {
        d.rules.insert(RuleSpec {
            ns: named(),
            priority,
            selector,
            table,
        });
    }
    d.neighs.insert(NeighSpec {
        ns: named(),
        dev: "qr-t1".into(),
        ip: ip("10.1.0.10"),
        mac: mac("fa:16:3e:00:01:10"),
    });
    let remote = mac("fa:16:3e:00:01:40").octets();
    for (dev, m, target) in [
        ("vx-100", remote, FdbTarget::Vtep(ip("127.0.0.2"))),
        ("vx-100", [0; 6], FdbTarget::Flood(ip("127.0.0.2"))),
        ("vx-100", [0; 6], FdbTarget::Flood(ip("127.0.0.3"))),
        ("vx-100", remote, FdbTarget::Bridge),
        (
            "tqr-t1",
            mac("fa:16:3e:00:01:01").octets(),
            FdbTarget::Bridge,
        ),
    ] {
        d.fdb.insert(FdbSpec {
            ns: Netns::Host,
            dev: dev.into(),
            mac: m,
            target,
        });
    }
    d.nft.insert(
        nft_key(named(), NftFamily::Ip, "dvrmesh-qr"),
        NftContent::Table(qr_table()),
    );
    d.nft.insert(
        nft_key(Netns::Host, NftFamily::Netdev, "dvrmesh-vx100"),
        NftContent::Table(vx_table()),
    );
    d
}

fn nft_key(ns: Netns, family: NftFamily, name: &str) -> NftKey {
    NftKey {
        ns,
        family,
        name: name.into(),
    }
}

/// Adds for everything in `d`, in the order `diff` uses.
fn add_ops(d: &Desired) -> Vec<Op> {
    let mut ops: Vec<Op> = d
        .namespaces
        .iter()
        .map(|n| Op::AddNamespace { name: n.clone() })
        .collect();
    ops.extend(d.sysctls.iter().map(|((ns, key), value)| Op::SetSysctl {
        ns: ns.clone(),
        key: key.clone(),
        value: value.clone(),
    }));
    ops.extend(d.links.iter().map(|((ns, name), spec)| Op::AddLink {
        ns: ns.clone(),
        name: name.clone(),
        spec: spec.clone(),
    }));
    ops.extend(d.addrs.iter().cloned().map(Op::AddAddr));
    ops.extend(d.routes.iter().cloned().map(Op::AddRoute));
    ops.extend(d.rules.iter().cloned().map(Op::AddRule));
    ops.extend(d.neighs.iter().cloned().map(Op::AddNeigh));
    ops.extend(d.fdb.iter().cloned().map(Op::AddFdb));
    ops.extend(d.nft.iter().filter_map(|(key, content)| match content {
        NftContent::Table(table) => Some(Op::ReplaceNft {
            key: key.clone(),
            table: table.clone(),
        }),
        NftContent::Unknown(_) => None,
    }));
    ops
}

/// Deletes of everything in `d` (but its namespaces), in the order `diff` uses.
fn del_ops(d: &Desired) -> Vec<Op> {
    let mut ops: Vec<Op> = d.nft.keys().cloned().map(Op::DelNft).collect();
    ops.extend(d.fdb.iter().cloned().map(Op::DelFdb));
    ops.extend(d.neighs.iter().cloned().map(Op::DelNeigh));
    ops.extend(d.rules.iter().cloned().map(Op::DelRule));
    ops.extend(d.routes.iter().cloned().map(Op::DelRoute));
    ops.extend(d.addrs.iter().cloned().map(Op::DelAddr));
    ops.extend(d.links.keys().map(|(ns, name)| Op::DelLink {
        ns: ns.clone(),
        name: name.clone(),
    }));
    ops
}

/// What observe reports once everything but the namespaces and sysctls is gone.
fn only_namespaces_and_sysctls(d: &Desired) -> Desired {
    Desired {
        namespaces: d.namespaces.clone(),
        sysctls: d.sysctls.clone(),
        ..Desired::default()
    }
}

// === tests ===

/// Every add op kind lands in the kernel and `observe` reads exactly the desired state back;
/// applying the same ops again changes nothing (no duplicate rules or routes either).
#[test]
fn every_add_reads_back_equal_and_is_idempotent() {
    let mut lab = Lab::new();
    let desired = sample();
    let ops = add_ops(&desired);
    lab.apply_ok(&ops);
    let observed = lab.kernel.observe(&desired).expect("observe");
    assert_eq!(observed, desired);

    let rules_before = lab.sh(&named(), &["ip", "rule", "show"]);
    let routes_before = lab.sh(&named(), &["ip", "route", "show", "table", "all"]);
    let fdb_before = lab.sh(&Netns::Host, &["bridge", "fdb", "show"]);
    lab.apply_ok(&ops);
    assert_eq!(lab.kernel.observe(&desired).expect("observe"), desired);
    assert_eq!(lab.sh(&named(), &["ip", "rule", "show"]), rules_before);
    assert_eq!(
        lab.sh(&named(), &["ip", "route", "show", "table", "all"]),
        routes_before
    );
    assert_eq!(lab.sh(&Netns::Host, &["bridge", "fdb", "show"]), fdb_before);

    // The kernel agrees with the recipe's shell commands.
    let vx = lab.sh(&Netns::Host, &["ip", "-d", "link", "show", "vx-100"]);
    assert!(
        vx.contains("nolearning") && vx.contains("master br-100"),
        "{vx}"
    );
    assert!(vx.contains("learning off"), "{vx}");
    assert!(vx.contains("isolated on"), "{vx}");
    let port = lab.sh(&Netns::Host, &["ip", "-d", "link", "show", "tqr-t1"]);
    assert!(port.contains("isolated off"), "{port}");
    let rules = lab.sh(&named(), &["ip", "rule", "show"]);
    assert!(
        rules.contains("167837697:\tfrom 10.1.0.0/24 lookup 167837697 proto 147"),
        "{rules}"
    );
    assert!(rules.contains("fwmark 0x10/0xff lookup 16"), "{rules}");
    assert!(rules.contains("iif lo lookup 16"), "{rules}");
    let table = lab.sh(&named(), &["ip", "route", "show", "table", "167837697"]);
    assert!(
        table.contains("default via 10.1.0.3 dev qr-t1 proto 147"),
        "{table}"
    );
}

/// `SetLink` changes MTU, MAC, learning and isolation of existing links; `observe` sees the
/// change.
#[test]
fn set_link_changes_attributes() {
    let mut lab = Lab::new();
    let mut desired = sample();
    lab.apply_ok(&add_ops(&desired));

    let port = (Netns::Host, "tqr-t1".to_string());
    let qr = (named(), "qr-t1".to_string());
    let port_spec = desired.links.get_mut(&port).expect("port");
    port_spec.mtu = Some(1400);
    port_spec.learning = Some(true);
    port_spec.isolated = Some(true);
    let port_spec = port_spec.clone();
    let qr_spec = desired.links.get_mut(&qr).expect("qr");
    qr_spec.mac = Some(mac("fa:16:3e:00:01:99"));
    let qr_spec = qr_spec.clone();
    lab.apply_ok(&[
        Op::SetLink {
            ns: port.0.clone(),
            name: port.1.clone(),
            spec: port_spec,
        },
        Op::SetLink {
            ns: qr.0.clone(),
            name: qr.1.clone(),
            spec: qr_spec,
        },
    ]);
    // The kernel flushes every neighbour of a device whose MAC changes, permanent ones too
    // (`neigh_changeaddr`), so the next pass adds it again.
    let mut expected = desired.clone();
    expected.neighs.clear();
    // A bridge given its MTU at creation follows its ports' smallest MTU, as the kernel does by
    // default; the pass puts it back, and from then on it keeps the MTU it was set to.
    let bridge = (Netns::Host, "br-100".to_string());
    let bridge_spec = desired.links.get(&bridge).expect("bridge").clone();
    if let Some(spec) = expected.links.get_mut(&bridge) {
        spec.mtu = Some(1400);
    }
    assert_eq!(lab.kernel.observe(&desired).expect("observe"), expected);
    let mut ops: Vec<Op> = desired.neighs.iter().cloned().map(Op::AddNeigh).collect();
    ops.push(Op::SetLink {
        ns: bridge.0.clone(),
        name: bridge.1.clone(),
        spec: bridge_spec,
    });
    lab.apply_ok(&ops);
    assert_eq!(lab.kernel.observe(&desired).expect("observe"), desired);
}

/// Every delete op kind removes its object; deleting again is fine; deleting the namespace
/// removes it.
#[test]
fn deletes_remove_and_are_idempotent() {
    let mut lab = Lab::new();
    let desired = sample();
    lab.apply_ok(&add_ops(&desired));

    let dels = del_ops(&desired);
    lab.apply_ok(&dels);
    let rest = only_namespaces_and_sysctls(&desired);
    assert_eq!(lab.kernel.observe(&desired).expect("observe"), rest);
    lab.apply_ok(&dels);

    let del_ns = [Op::DelNamespace { name: QR.into() }];
    lab.apply_ok(&del_ns);
    let observed = lab.kernel.observe(&desired).expect("observe");
    assert!(observed.namespaces.is_empty());
    assert!(!lab.ns_path(&named()).exists());
    lab.apply_ok(&del_ns);
}

/// Deleting a namespace takes what lives in it (and the host end of its veth) with it.
#[test]
fn deleting_a_namespace_removes_everything_in_it() {
    let mut lab = Lab::new();
    let desired = sample();
    lab.apply_ok(&add_ops(&desired));
    lab.apply_ok(&[Op::DelNamespace { name: QR.into() }]);
    let observed = lab.kernel.observe(&desired).expect("observe");
    assert!(observed.namespaces.is_empty());
    assert!(observed.links.keys().all(|(ns, _)| *ns == Netns::Host));
    assert!(observed.routes.is_empty() && observed.rules.is_empty());
    assert!(observed.nft.keys().all(|k| k.ns == Netns::Host));
    // The kernel tears a namespace down asynchronously: the host end of the veth goes shortly
    // after.
    let gone = (0..100).any(|_| {
        let observed = lab.kernel.observe(&desired).expect("observe");
        if observed.links.contains_key(&(Netns::Host, "tqr-t1".into())) {
            std::thread::sleep(std::time::Duration::from_millis(50));
            false
        } else {
            true
        }
    });
    assert!(gone, "tqr-t1 outlived its peer's namespace by 5 s");
}

/// Objects dvrmesh does not own (a foreign link with its address, routes of protocol boot and
/// static, a rule, a permanent neighbour, an nft table) are never reported and survive adds and
/// deletes of dvrmesh's own objects.
#[test]
fn foreign_objects_are_invisible_and_survive() {
    let mut lab = Lab::new();
    let host = Netns::Host;
    for cmd in [
        "ip link add eth-f type veth peer name eth-g",
        "ip link set eth-f up",
        "ip addr add 10.7.0.1/24 dev eth-f",
        "ip route add 10.8.0.0/24 via 10.7.0.2 proto static",
        "ip route add 10.9.0.0/24 dev eth-f proto boot table 167837697",
        "ip rule add from 10.6.0.0/24 lookup 100 priority 100",
        "ip neigh replace 10.7.0.5 lladdr 02:00:00:00:00:05 dev eth-f nud permanent",
        "nft add table ip foreign",
        "nft add table ip dvr-other",
    ] {
        lab.sh(&host, &cmd.split(' ').collect::<Vec<_>>());
    }
    let snapshot = |lab: &Lab| {
        [
            lab.sh(&host, &["ip", "link", "show", "eth-f"])
                .contains("eth-f"),
            lab.sh(&host, &["ip", "route", "show", "table", "all"])
                .contains("10.8.0.0/24 via 10.7.0.2"),
            lab.sh(&host, &["ip", "route", "show", "table", "all"])
                .contains("10.9.0.0/24 dev eth-f table 167837697"),
            lab.sh(&host, &["ip", "rule", "show"])
                .contains("from 10.6.0.0/24 lookup 100"),
            lab.sh(&host, &["ip", "neigh", "show", "dev", "eth-f"])
                .contains("10.7.0.5 lladdr 02:00:00:00:00:05 PERMANENT"),
            lab.sh(&host, &["nft", "list", "tables"])
                .contains("table ip foreign"),
            lab.sh(&host, &["nft", "list", "tables"])
                .contains("table ip dvr-other"),
        ]
    };
    assert_eq!(snapshot(&lab), [true; 7]);

    let empty = lab.kernel.observe(&Desired::default()).expect("observe");
    assert_eq!(empty, Desired::default());

    let desired = sample();
    lab.apply_ok(&add_ops(&desired));
    assert_eq!(lab.kernel.observe(&desired).expect("observe"), desired);
    lab.apply_ok(&del_ops(&desired));
    lab.apply_ok(&[Op::DelNamespace { name: QR.into() }]);
    assert_eq!(
        lab.kernel.observe(&Desired::default()).expect("observe"),
        Desired::default()
    );
    assert_eq!(snapshot(&lab), [true; 7]);
}

/// Sysctls are written and read inside the right namespace, including per-interface keys whose
/// interface name has dashes; a key of a missing interface is simply not observed.
#[test]
fn sysctls_write_and_read_back() {
    let mut lab = Lab::new();
    let mut desired = sample();
    lab.apply_ok(&add_ops(&desired));
    let keys = [
        (named(), "net.ipv4.conf.qr-t1.proxy_arp", "1"),
        (named(), "net.ipv4.neigh.qr-t1.proxy_delay", "0"),
        (named(), "net.ipv4.conf.all.rp_filter", "0"),
        (Netns::Host, "net.ipv4.conf.tqr-t1.forwarding", "1"),
    ];
    let ops: Vec<Op> = keys
        .iter()
        .map(|(ns, key, value)| Op::SetSysctl {
            ns: ns.clone(),
            key: key.to_string(),
            value: value.to_string(),
        })
        .collect();
    lab.apply_ok(&ops);
    for (ns, key, value) in keys {
        desired.sysctls.insert((ns, key.into()), value.into());
    }
    assert_eq!(lab.kernel.observe(&desired).expect("observe"), desired);
    assert_eq!(
        lab.sh(
            &named(),
            &["cat", "/proc/sys/net/ipv4/conf/qr-t1/proxy_arp"]
        )
        .trim(),
        "1"
    );
    // The file belongs to the namespace: the lab's host namespace has no qr-t1.
    let host_conf = lab.sh(&Netns::Host, &["ls", "/proc/sys/net/ipv4/conf"]);
    assert!(host_conf.lines().any(|l| l == "tqr-t1"), "{host_conf}");
    assert!(!host_conf.lines().any(|l| l == "qr-t1"), "{host_conf}");

    let mut hint = desired.clone();
    hint.sysctls.insert(
        (named(), "net.ipv4.conf.qr-gone.proxy_arp".into()),
        "1".into(),
    );
    assert_eq!(lab.kernel.observe(&hint).expect("observe"), desired);
}

/// A changed table is detected through the digest comment and replaced; a good and a bad table
/// in one namespace fail together (one atomic batch).
#[test]
fn nft_replace_is_detected_by_digest_and_atomic() {
    let mut lab = Lab::new();
    let key = nft_key(Netns::Host, NftFamily::Ip, "dvrmesh-t");
    let table_a = ip_table("dvrmesh-t", "version_a");
    let table_b = ip_table("dvrmesh-t", "version_b");
    let want = |table: &Table| Desired {
        nft: BTreeMap::from([(key.clone(), NftContent::Table(table.clone()))]),
        ..Desired::default()
    };
    let replace = |table: &Table| Op::ReplaceNft {
        key: key.clone(),
        table: table.clone(),
    };

    lab.apply_ok(&[replace(&table_a)]);
    assert_eq!(
        lab.kernel.observe(&want(&table_a)).expect("observe"),
        want(&table_a)
    );
    let listed = lab.sh(&Netns::Host, &["nft", "list", "table", "ip", "dvrmesh-t"]);
    assert!(
        listed.contains(&format!("comment \"{}\"", nft::comment_for(&table_a))),
        "{listed}"
    );

    // The desired table changed: observe reports something else, so diff replaces it.
    let seen = lab.kernel.observe(&want(&table_b)).expect("observe");
    assert_eq!(
        seen.nft.get(&key),
        Some(&NftContent::Unknown(Some(nft::comment_for(&table_a))))
    );
    lab.apply_ok(&[replace(&table_b)]);
    assert_eq!(
        lab.kernel.observe(&want(&table_b)).expect("observe"),
        want(&table_b)
    );
    let listed = lab.sh(&Netns::Host, &["nft", "list", "table", "ip", "dvrmesh-t"]);
    assert!(
        listed.contains("version_b") && !listed.contains("version_a"),
        "{listed}"
    );

    // One batch per namespace: the good replacement of dvrmesh-t does not happen either.
    let report = lab
        .kernel
        .apply(&[replace(&table_a), refused_by_kernel("dvrmesh-u")])
        .expect("apply");
    assert_eq!(report.applied, 0);
    assert_eq!(report.failed.len(), 2);
    assert_eq!(
        lab.kernel.observe(&want(&table_b)).expect("observe"),
        want(&table_b)
    );
}

/// Sets and maps larger than one netlink attribute can hold (the map of 10 000 FIPs is about
/// 280 KB) load whole: their elements go in several messages of the one batch.
#[test]
fn sets_of_ten_thousand_elements_load_whole() {
    let mut lab = Lab::new();
    let pairs: Vec<(Ipv4Addr, Ipv4Addr)> = (0..10_000u32)
        .map(|i| {
            (
                Ipv4Addr::from(u32::from(ip("198.18.0.0")) + i),
                Ipv4Addr::from(u32::from(ip("10.0.0.0")) + i),
            )
        })
        .collect();
    let table = Table {
        family: NftFamily::Ip,
        name: "dvrmesh-big".into(),
        sets: vec![
            Set {
                name: "fixed".into(),
                elements: Elements::Addrs(pairs.iter().map(|p| p.1).collect()),
            },
            Set {
                name: "fip_dnat".into(),
                elements: Elements::AddrMap(pairs),
            },
        ],
        chains: vec![],
    };
    let key = nft_key(Netns::Host, NftFamily::Ip, "dvrmesh-big");
    lab.apply_ok(&[Op::ReplaceNft {
        key: key.clone(),
        table: table.clone(),
    }]);
    let want = Desired {
        nft: BTreeMap::from([(key, NftContent::Table(table))]),
        ..Desired::default()
    };
    assert_eq!(lab.kernel.observe(&want).expect("observe"), want);
    let map = lab.sh(
        &Netns::Host,
        &["nft", "list", "map", "ip", "dvrmesh-big", "fip_dnat"],
    );
    let set = lab.sh(
        &Netns::Host,
        &["nft", "list", "set", "ip", "dvrmesh-big", "fixed"],
    );
    assert_eq!(map.matches("198.18.").count(), 10_000, "every map element");
    assert!(
        map.contains("198.18.39.15 : 10.0.39.15"),
        "the last one too"
    );
    assert_eq!(set.matches("10.0.").count(), 10_000, "every set element");
}

/// A replacement of an ip table `name` with `dnat` in a postrouting chain: a table the printer
/// and the compiler accept and the kernel refuses (routing has been decided by then).
fn refused_by_kernel(name: &str) -> Op {
    let table = Table {
        family: NftFamily::Ip,
        name: name.into(),
        sets: vec![],
        chains: vec![Chain {
            kind: ChainKind::Nat,
            ..chain(
                "in",
                Hook::Postrouting,
                Priority::SrcNat,
                vec![Rule(vec![Stmt::NatTo(Nat::Dnat, ip("192.0.2.1"))])],
            )
        }],
    };
    Op::ReplaceNft {
        key: nft_key(Netns::Host, NftFamily::Ip, name),
        table,
    }
}

/// Tables go to the kernel as netlink messages; when the kernel refuses one of them (here
/// `dnat` after routing), the whole namespace's batch is refused, the error names the rule,
/// and the previous tables stay as they were.
#[test]
fn netlink_nft_batch_is_atomic_and_names_what_the_kernel_refused() {
    let mut lab = Lab::new();
    let key = nft_key(Netns::Host, NftFamily::Ip, "dvrmesh-t");
    let with_element = |addr: &str| Table {
        family: NftFamily::Ip,
        name: "dvrmesh-t".into(),
        sets: vec![Set {
            name: "s".into(),
            elements: Elements::Addrs(vec![ip(addr)]),
        }],
        chains: vec![chain(
            "c",
            Hook::Prerouting,
            Priority::Raw,
            vec![Rule(vec![
                Stmt::Ip(Field::Saddr, Against::Set("s".into())),
                Stmt::Counter,
                Stmt::Notrack,
            ])],
        )],
    };
    let good = with_element("10.0.0.1");
    let want = Desired {
        nft: BTreeMap::from([(key.clone(), NftContent::Table(good.clone()))]),
        ..Desired::default()
    };
    lab.apply_ok(&[Op::ReplaceNft {
        key: key.clone(),
        table: good,
    }]);
    assert_eq!(lab.kernel.observe(&want).expect("observe"), want);
    let listed = lab.sh(&Netns::Host, &["nft", "list", "table", "ip", "dvrmesh-t"]);
    assert!(
        listed.contains("ip saddr @s counter packets 0 bytes 0 notrack"),
        "{listed}"
    );

    let report = lab
        .kernel
        .apply(&[
            Op::ReplaceNft {
                key: key.clone(),
                table: with_element("10.0.0.2"),
            },
            refused_by_kernel("dvrmesh-v"),
        ])
        .expect("a refused batch is not a fatal error");
    assert_eq!(report.applied, 0);
    assert_eq!(report.failed.len(), 2, "{report:?}");
    assert!(
        report.failed[0].1.contains("chain in: rule 1"),
        "the error names what was refused: {:?}",
        report.failed
    );
    assert_eq!(
        lab.kernel.observe(&want).expect("observe"),
        want,
        "the old table is still there, unchanged"
    );
}

/// A table the kernel or the checks refuse is an error in the report, not a panic, and the
/// previous table stays: one nft refuses (with nft's words when loaded as text), one planned
/// under another table's key, one with a device name nft would misread; a non-dvrmesh name is
/// refused too.
#[test]
fn bad_nft_table_fails_and_keeps_previous_table() {
    for loader in [NftLoader::Netlink, NftLoader::Text] {
        let mut lab = Lab::new();
        lab.kernel = LinuxKernel::new(LinuxConfig {
            nft: loader,
            ..lab.kernel.config().clone()
        });
        let key = nft_key(Netns::Host, NftFamily::Ip, "dvrmesh-t");
        let good = ip_table("dvrmesh-t", "c");
        let want = Desired {
            nft: BTreeMap::from([(key.clone(), NftContent::Table(good.clone()))]),
            ..Desired::default()
        };
        lab.apply_ok(&[Op::ReplaceNft {
            key: key.clone(),
            table: good.clone(),
        }]);
        let Op::ReplaceNft { table: refused, .. } = refused_by_kernel("dvrmesh-t") else {
            unreachable!()
        };
        let mut quoted = good.clone();
        quoted.chains[0].rules = vec![Rule(vec![Stmt::Iifname("lo\" ; flush ruleset".into())])];
        let bad = [refused, ip_table("dvrmesh-elsewhere", "c"), quoted];
        for (i, table) in bad.into_iter().enumerate() {
            let report = lab
                .kernel
                .apply(&[Op::ReplaceNft {
                    key: key.clone(),
                    table,
                }])
                .expect("a bad table is not a fatal error");
            assert_eq!(report.applied, 0, "{loader:?}");
            assert_eq!(report.failed.len(), 1, "{loader:?}: {report:?}");
            assert_eq!(lab.kernel.observe(&want).expect("observe"), want);
            if loader == NftLoader::Text && i == 0 {
                // The kernel's refusal in nft's words.
                assert!(report.failed[0].1.contains("Error"), "{:?}", report.failed);
            }
        }
        let foreign = nft_key(Netns::Host, NftFamily::Ip, "filter");
        let report = lab.kernel.apply(&[Op::DelNft(foreign)]).expect("apply");
        assert_eq!(report.failed.len(), 1);

        lab.apply_ok(&[Op::DelNft(key.clone()), Op::DelNft(key)]);
        assert_eq!(
            lab.kernel.observe(&want).expect("observe"),
            Desired::default()
        );
    }
}

/// Ops into a namespace that does not exist end the pass with a namespace error; ops the kernel
/// refuses are reported and the rest of the batch still runs.
#[test]
fn failures_are_reported_and_the_batch_goes_on() {
    let mut lab = Lab::new();
    let missing = Netns::Named("qrouter-missing".into());
    let err = lab
        .kernel
        .apply(&[Op::AddAddr(AddrSpec {
            ns: missing,
            dev: "qr-x".into(),
            ip: ip("10.1.0.1"),
            prefix: 24,
        })])
        .expect_err("no such namespace");
    assert!(matches!(err, Error::Namespace { .. }), "{err}");

    let bridge = Op::AddLink {
        ns: Netns::Host,
        name: "br-1".into(),
        spec: link(LinkKind::Bridge),
    };
    let bad_route = Op::AddRoute(RouteSpec {
        ns: Netns::Host,
        table: 5,
        dst: cidr("10.2.0.0/24"),
        via: None,
        dev: "br-missing".into(),
    });
    let report = lab.kernel.apply(&[bad_route, bridge]).expect("apply");
    assert_eq!(report.applied, 1);
    assert_eq!(report.failed.len(), 1);
    let observed = lab.kernel.observe(&Desired::default()).expect("observe");
    assert_eq!(
        observed.links.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([(Netns::Host, "br-1".to_string())])
    );

    // The kernel's own explanation (extended ack) reaches the report.
    let unreachable = Op::AddRoute(RouteSpec {
        ns: Netns::Host,
        table: 5,
        dst: cidr("10.2.0.0/24"),
        via: Some(ip("10.99.0.1")),
        dev: "br-1".into(),
    });
    let report = lab.kernel.apply(&[unreachable]).expect("apply");
    assert_eq!(report.failed.len(), 1);
    let message = &report.failed[0].1;
    assert!(message.contains("Nexthop has invalid gateway"), "{message}");
}

/// Veth peers are named correctly even when ifindexes collide across namespaces (each namespace
/// numbers its own links), which the backend settles with the peer's namespace id.
#[test]
fn veth_peers_resolve_across_namespaces_with_colliding_ifindexes() {
    let mut lab = Lab::new();
    let a = Netns::Named("qrouter-a".into());
    let b = Netns::Named("qrouter-b".into());
    let c = Netns::Named("fip-c".into());
    let veth = |peer: &str, peer_ns: &Netns| LinkSpec {
        mtu: Some(1500),
        ..link(LinkKind::Veth {
            peer: peer.into(),
            peer_ns: peer_ns.clone(),
        })
    };
    let mut desired = Desired::default();
    for (ns, name, peer, peer_ns) in [
        (Netns::Host, "tqr-a", "qr-a", &a),
        (a.clone(), "qr-a", "tqr-a", &Netns::Host),
        (b.clone(), "rfp-b", "fpr-b", &c),
        (c.clone(), "fpr-b", "rfp-b", &b),
    ] {
        desired
            .links
            .insert((ns, name.to_string()), veth(peer, peer_ns));
    }
    for ns in ["qrouter-a", "qrouter-b", "fip-c"] {
        desired.namespaces.insert(ns.to_string());
    }
    lab.apply_ok(&add_ops(&desired));
    assert_eq!(lab.kernel.observe(&desired).expect("observe"), desired);

    let index = |ns: &Netns, dev: &str| {
        let out = lab.sh(ns, &["ip", "-o", "link", "show", dev]);
        out.split(':').next().unwrap_or_default().trim().to_string()
    };
    // The situation the test is about (if the kernel numbered globally, it would be vacuous).
    assert_eq!(index(&Netns::Host, "tqr-a"), index(&b, "rfp-b"));
    assert_eq!(index(&a, "qr-a"), index(&c, "fpr-b"));
}

/// Devices whose spec disables IPv6 (the planner's host devices) never get a link-local address,
/// even in a namespace where IPv6 is on by default; a device left alone does. Someone switching
/// IPv6 back on is drift: the next pass's diff switches it off again.
#[test]
fn host_devices_come_up_without_ipv6_and_drift_is_undone() {
    let mut lab = Lab::new();
    let host = Netns::Host;
    lab.sh(
        &host,
        &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=0"],
    );
    let off = |kind: LinkKind| LinkSpec {
        ipv6: Some(false),
        ..link(kind)
    };
    let mut desired = Desired::default();
    desired
        .links
        .insert((host.clone(), "br-7".into()), off(LinkKind::Bridge));
    let mut port = off(LinkKind::Veth {
        peer: "vm-7".into(),
        peer_ns: host.clone(),
    });
    port.master = Some("br-7".into());
    desired.links.insert((host.clone(), "tap-7".into()), port);
    lab.apply_ok(&add_ops(&desired));
    assert_eq!(lab.kernel.observe(&desired).expect("observe"), desired);
    // The VM's end of the pair is not dvrmesh's to configure: IPv6 there is as the kernel makes
    // it (here up by hand, as a hypervisor would).
    lab.sh(&host, &["ip", "link", "set", "vm-7", "up"]);
    let v6 = |lab: &Lab, dev: &str| lab.sh(&Netns::Host, &["ip", "-6", "addr", "show", "dev", dev]);
    let disabled = |lab: &Lab, dev: &str| {
        lab.sh(
            &Netns::Host,
            &["sysctl", "-n", &format!("net.ipv6.conf.{dev}.disable_ipv6")],
        )
        .trim()
        .to_string()
    };
    for dev in ["br-7", "tap-7"] {
        assert_eq!(disabled(&lab, dev), "1", "{dev}");
        assert!(v6(&lab, dev).trim().is_empty(), "{dev}: {}", v6(&lab, dev));
        assert!(
            lab.sh(&host, &["ip", "link", "show", dev]).contains(",UP"),
            "{dev} is up"
        );
    }
    assert_eq!(disabled(&lab, "vm-7"), "0");
    // Its link-local comes once the kernel has seen the carrier (asynchronously).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while !v6(&lab, "vm-7").contains("fe80::") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(v6(&lab, "vm-7").contains("fe80::"), "{}", v6(&lab, "vm-7"));

    // Drift: IPv6 switched back on by hand.
    lab.sh(
        &host,
        &["sysctl", "-qw", "net.ipv6.conf.br-7.disable_ipv6=0"],
    );
    let ops = datapath::diff(&desired, &lab.kernel.observe(&desired).expect("observe"));
    assert!(
        matches!(ops.as_slice(), [Op::SetLink { name, .. }] if name == "br-7"),
        "{ops:?}"
    );
    lab.apply_ok(&ops);
    assert_eq!(disabled(&lab, "br-7"), "1");
    assert_eq!(lab.kernel.observe(&desired).expect("observe"), desired);
}
