//! Whole plans on the real kernel, in a throwaway sandbox (root): apply a full plan and a second
//! pass changes nothing; deleting a router removes every object it owned; foreign objects placed
//! beforehand are untouched; a new reconciler (a restarted agent) on an unchanged view changes
//! nothing.

mod common;

use common::*;
use datapath::linux::sandbox::Sandbox;
use datapath::{diff, plan, Desired, Kernel, Netns, Op, Topology};

fn require_root() {
    assert!(
        nix_is_root(),
        "these tests program the kernel inside throwaway namespaces and must run as root"
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// One reconcile pass; returns the ops it applied. Fails the test on any failed op.
fn pass(k: &mut impl Kernel, desired: &Desired) -> usize {
    let ops = diff(desired, &k.observe(desired).expect("observe"));
    let report = k.apply(&ops).expect("apply");
    assert!(report.failed.is_empty(), "failed ops: {:#?}", report.failed);
    ops.len()
}

fn desired_of(t: &Topology, me: &str) -> Desired {
    let p = plan(t, &node(me));
    assert!(p.problems.is_empty(), "plan problems: {:?}", p.problems);
    p.desired
}

#[test]
fn a_full_plan_applies_and_a_second_pass_changes_nothing() {
    require_root();
    for me in ["c1", "c2", "n1", "c3"] {
        let sandbox = Sandbox::new(&["eth1"]).expect("sandbox");
        let desired = desired_of(&topology(), me);
        let mut k = sandbox.kernel();
        assert!(pass(&mut k, &desired) > 0);
        let observed = k.observe(&desired).expect("observe");
        assert_eq!(observed, desired, "{me}: the kernel holds exactly the plan");
        assert_eq!(pass(&mut k, &desired), 0, "{me}: second pass must be empty");
    }
}

/// Every table the planner builds passes its checks, and what the kernel holds after the
/// backend sends it as netlink messages lists exactly as what nft itself loads from its text.
#[test]
fn nft_tables_sent_as_netlink_list_exactly_as_nft_loads_them() {
    require_root();
    let mut compared = 0;
    let mut everything = String::new();
    for me in ["c1", "c2", "n1", "c3"] {
        let desired = desired_of(&topology(), me);
        for (key, content) in &desired.nft {
            let datapath::NftContent::Table(table) = content else {
                panic!("{me}: {key:?} is planned without a table");
            };
            if let Err(why) = table.check() {
                panic!("{me}: {key:?} does not pass its checks: {why}\n{table}");
            }
        }
        let ours = Sandbox::new(&["eth1"]).expect("sandbox");
        let mut nfts = Sandbox::new(&["eth1"]).expect("sandbox");
        nfts.config.nft = datapath::linux::NftLoader::Text;
        pass(&mut ours.kernel(), &desired);
        pass(&mut nfts.kernel(), &desired);
        let namespaces: std::collections::BTreeSet<&Netns> =
            desired.nft.keys().map(|k| &k.ns).collect();
        for ns in namespaces {
            let list = |s: &Sandbox| s.sh(ns, &["nft", "list", "ruleset"]).expect("nft list");
            let (a, b) = (list(&ours), list(&nfts));
            assert!(a.contains("table "), "{me} {ns}: nothing listed");
            assert_eq!(a, b, "{me} {ns}: netlink-built tables differ from nft's");
            everything.push_str(&a);
            compared += 1;
        }
    }
    assert!(compared >= 4, "only {compared} namespaces compared");
    for shape in [
        "ether saddr @remote_dvr ip daddr",
        "ether saddr set",
        "arp operation request arp daddr ip",
        "elements = {",
        "notrack",
        "meta mark set",
        "dnat to ip daddr map @fip_dnat",
        "snat to ip saddr map @fip_snat",
        "ip saddr @router_subnets snat to ",
        "ip daddr @cfip_fips dnat to ip daddr map @cfip_dnat",
        "flags interval",
        "comment \"dvrmesh:",
        "ip ttl 64 ether saddr set ether daddr . ip daddr map @smac ip ttl set 63",
        "fwd to ether daddr . ip daddr map @odev",
        ": \"vx-200\"",
    ] {
        assert!(
            everything.contains(shape),
            "no table had `{shape}`:\n{everything}"
        );
    }
}

#[test]
fn deleting_a_router_removes_everything_it_owned() {
    require_root();
    let sandbox = Sandbox::new(&["eth1"]).expect("sandbox");
    let mut k = sandbox.kernel();
    let t = topology();
    pass(&mut k, &desired_of(&t, "c1"));
    let mut without = t.clone();
    without.routers.remove(&oid("rtr-two"));
    let smaller = desired_of(&without, "c1");
    pass(&mut k, &smaller);
    assert_eq!(k.observe(&smaller).expect("observe"), smaller);
    assert!(
        sandbox
            .sh(&Netns::Host, &["ip", "link", "show", "tqrsub-c"])
            .is_err(),
        "host end of qr-sub-c is gone"
    );
    assert!(
        !sandbox
            .ns_path(&Netns::Named("qrouter-rtr-two".into()))
            .exists(),
        "namespace file is gone"
    );
}

/// Runs the pass scoped from `from` to `to` and checks it does exactly what a full pass would
/// have done, without failures.
fn scoped_pass_as_full(k: &mut impl Kernel, from: &Desired, to: &Desired) -> datapath::PassOutcome {
    let full_ops = diff(to, &k.observe(to).expect("observe"));
    let out = datapath::reconcile_pass(k, to, Some(from)).expect("scoped pass");
    assert_eq!(
        out.ops, full_ops,
        "the scoped pass does what a full pass would"
    );
    assert!(out.report.failed.is_empty(), "{:?}", out.report.failed);
    out
}

/// On the kernel, a pass scoped to what changed since the last clean pass (what the agent runs on
/// a view change) does exactly what a full pass would, and reaches the new plan. Covers a router
/// removed (its namespace deleted, veth peers in the host resolved across the scope) and added
/// back, and a VM moved to another node and back (host devices and FDB entries only).
#[test]
fn scoped_passes_reach_the_plan_on_the_kernel() {
    require_root();
    let sandbox = Sandbox::new(&["eth1"]).expect("sandbox");
    let mut k = sandbox.kernel();
    let t = topology();
    let full = desired_of(&t, "c1");
    pass(&mut k, &full);
    let mut without = t.clone();
    without.routers.remove(&oid("rtr-two"));
    let smaller = desired_of(&without, "c1");
    let mut moved = t.clone();
    let vm3 = oid("vm3");
    let mut spec = moved.ports[&vm3].clone().into_spec();
    spec.host = node("c2");
    moved
        .ports
        .insert(vm3, mesh_proto::Port::new(spec).expect("port"));
    let elsewhere = desired_of(&moved, "c1");
    for (from, to) in [
        (&full, &smaller),
        (&smaller, &full),
        (&full, &elsewhere),
        (&elsewhere, &full),
    ] {
        let out = scoped_pass_as_full(&mut k, from, to);
        assert!(!out.ops.is_empty());
        let changed = datapath::changed_namespaces(from, to);
        assert_eq!(
            out.observed_namespaces,
            Some(datapath::scope_of(from, to).namespaces())
        );
        assert!(
            !changed.contains(&Netns::Named("qrouter-rtr-one".into())),
            "the untouched router is not observed: {changed:?}"
        );
        assert_eq!(&k.observe(to).expect("observe"), to);
        assert_eq!(pass(&mut k, to), 0, "a full pass finds nothing left to do");
        let idle = datapath::reconcile_pass(&mut k, to, Some(to)).expect("idle pass");
        assert!(idle.ops.is_empty());
    }
}

/// A port whose tap the hypervisor made (`device`) is attached to its bridge with a sticky FDB
/// entry, and that entry is seen as in place by the next observe: the second pass is empty.
#[test]
fn a_hypervisor_tap_is_attached_and_the_plan_converges() {
    require_root();
    let mut t = topology();
    let vm1 = oid("vm1");
    let mut spec = t.ports[&vm1].clone().into_spec();
    spec.device = Some(mesh_proto::InterfaceName::new("vmtap1").expect("ifname"));
    t.ports
        .insert(vm1, mesh_proto::Port::new(spec).expect("port"));
    let sandbox = Sandbox::new(&["eth1", "vmtap1"]).expect("sandbox");
    let mut k = sandbox.kernel();
    let desired = desired_of(&t, "c1");
    assert!(
        desired.fdb.iter().any(|f| f.dev == "vmtap1"),
        "the plan pins the VM's MAC on its tap"
    );
    assert!(pass(&mut k, &desired) > 0);
    assert_eq!(pass(&mut k, &desired), 0, "second pass must be empty");
    let fdb = sandbox
        .sh(&Netns::Host, &["bridge", "fdb", "show", "dev", "vmtap1"])
        .expect("bridge fdb");
    assert!(fdb.contains("fa:16:3e:00:01:10"), "{fdb}");
    let link = sandbox
        .sh(&Netns::Host, &["ip", "link", "show", "vmtap1"])
        .expect("ip link");
    assert!(link.contains("master br-"), "{link}");
}

#[test]
fn foreign_objects_are_untouched() {
    require_root();
    let sandbox = Sandbox::new(&["eth1"]).expect("sandbox");
    let host = Netns::Host;
    let run = |args: &[&str]| sandbox.sh(&host, args).expect("setup command");
    run(&[
        "ip", "link", "add", "foreign0", "type", "veth", "peer", "name", "foreign1",
    ]);
    run(&["ip", "link", "set", "foreign0", "up"]);
    run(&["ip", "addr", "add", "192.0.2.200/24", "dev", "foreign0"]);
    run(&[
        "ip",
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        "192.0.2.1",
        "proto",
        "static",
    ]);
    run(&[
        "ip",
        "rule",
        "add",
        "from",
        "192.0.2.200",
        "lookup",
        "100",
        "priority",
        "100",
    ]);
    run(&[
        "ip",
        "neigh",
        "add",
        "192.0.2.9",
        "lladdr",
        "02:00:00:00:00:09",
        "dev",
        "foreign0",
        "nud",
        "permanent",
    ]);
    run(&["nft", "add", "table", "ip", "foreign"]);
    let snapshot = || {
        [
            "ip route show table all proto static",
            "ip rule show",
            "ip neigh show dev foreign0",
            "nft list table ip foreign",
            "ip addr show dev foreign0",
        ]
        .iter()
        .map(|c| run(&c.split(' ').collect::<Vec<_>>()))
        .collect::<Vec<_>>()
    };
    let before = snapshot();
    let mut k = sandbox.kernel();
    pass(&mut k, &desired_of(&topology(), "n1"));
    assert_eq!(
        snapshot(),
        before,
        "foreign objects changed while programming"
    );
    pass(&mut k, &Desired::default());
    assert_eq!(
        snapshot(),
        before,
        "foreign objects changed while removing everything"
    );
    let left = k.observe(&Desired::default()).expect("observe");
    assert!(
        left.links.is_empty()
            && left.namespaces.is_empty()
            && left.routes.is_empty()
            && left.rules.is_empty()
            && left.nft.is_empty(),
        "dvrmesh left {left:?}"
    );
}

#[test]
fn a_restarted_reconciler_on_an_unchanged_view_changes_nothing() {
    require_root();
    let sandbox = Sandbox::new(&["eth1"]).expect("sandbox");
    let desired = desired_of(&topology(), "c2");
    pass(&mut sandbox.kernel(), &desired);
    // Stable facts only (bridge timers and IPv6 DAD change on their own): every link's index and
    // name (a re-created link gets a new index), IPv4 addresses, our routes, rules, FDB, nft.
    let dump = || {
        let links: Vec<String> = sandbox
            .sh(&Netns::Host, &["ip", "-o", "link", "show"])
            .expect("dump")
            .lines()
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect();
        let mut out = vec![links.join("\n")];
        out.extend(
            [
                "ip -4 -o addr show",
                "ip route show table all proto 147",
                "ip rule show",
                "bridge fdb show",
                "nft list ruleset",
            ]
            .iter()
            .map(|c| {
                sandbox
                    .sh(&Netns::Host, &c.split(' ').collect::<Vec<_>>())
                    .expect("dump")
            }),
        );
        out
    };
    let qrouter = Netns::Named("qrouter-rtr-one".into());
    let qdump = || {
        sandbox
            .sh(&qrouter, &["nft", "list", "ruleset"])
            .expect("dump")
            + &sandbox.sh(&qrouter, &["ip", "rule", "show"]).expect("dump")
    };
    let (before, qbefore) = (dump(), qdump());
    // A new backend instance, as after an agent restart: observe, diff, apply.
    let mut fresh = sandbox.kernel();
    assert_eq!(
        pass(&mut fresh, &desired),
        0,
        "a restarted reconciler must find nothing to do"
    );
    let after = dump();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let first = b.lines().zip(a.lines()).find(|(x, y)| x != y);
        assert!(
            b == a,
            "host dump #{i} changed after a reconciler restart; first difference: {first:?}"
        );
    }
    assert!(
        qdump() == qbefore,
        "the router namespace changed after a reconciler restart"
    );
}

#[test]
fn moving_a_fip_reprograms_both_nodes_views() {
    require_root();
    // c2 serves f1 for vm2; then f1 moves to vm1 on c1: c2's fip namespace loses it.
    let sandbox = Sandbox::new(&["eth1"]).expect("sandbox");
    let mut k = sandbox.kernel();
    let t = topology();
    pass(&mut k, &desired_of(&t, "c2"));
    let mut moved = t.clone();
    let f1 = moved.fips.get(&oid("f1")).expect("f1").clone();
    let mut spec = f1.into_spec();
    spec.port = Some(oid("vm1"));
    spec.fixed_ip = Some("10.1.0.10".parse().expect("ip"));
    moved
        .fips
        .insert(oid("f1"), mesh_proto::FloatingIp::new(spec).expect("fip"));
    let after = plan(&moved, &node("c2")).desired;
    pass(&mut k, &after);
    assert_eq!(k.observe(&after).expect("observe"), after);
    let routes = sandbox.sh(
        &Netns::Named("fip-ext-public".into()),
        &["ip", "route", "show"],
    );
    assert!(
        routes.map(|r| !r.contains("203.0.113.50")).unwrap_or(true),
        "the moved FIP's /32 is gone from c2"
    );
}

/// Captures ARP frames on `dev` inside the namespace file `ns` for `wait`; returns each frame's
/// sender IP.
fn capture_arp(
    ns: std::path::PathBuf,
    dev: &'static str,
    wait: std::time::Duration,
) -> std::thread::JoinHandle<Vec<std::net::Ipv4Addr>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let f = std::fs::File::open(&ns).expect("open netns");
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let proto = (libc::ETH_P_ARP as u16).to_be();
        // SAFETY: plain socket calls on a descriptor owned by this thread; buffers are local.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, libc::c_int::from(proto));
            assert!(fd >= 0, "packet socket");
            let name = std::ffi::CString::new(dev).expect("name");
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = proto;
            addr.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            assert!(
                libc::bind(
                    fd,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32
                ) == 0,
                "bind"
            );
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            ready_tx.send(()).expect("ready");
            let mut seen = Vec::new();
            let end = std::time::Instant::now() + wait;
            let mut buf = [0u8; 2048];
            while std::time::Instant::now() < end {
                let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                if n >= 42 {
                    seen.push(std::net::Ipv4Addr::new(buf[28], buf[29], buf[30], buf[31]));
                }
            }
            libc::close(fd);
            seen
        }
    });
    ready_rx.recv().expect("capture started");
    h
}

#[test]
fn a_fip_that_appears_is_announced_by_gratuitous_arp() {
    require_root();
    let sandbox = Sandbox::new(&["eth1"]).expect("sandbox");
    sandbox
        .sh(&Netns::Host, &["ip", "link", "set", "eth1p", "up"])
        .expect("eth1p up");
    let capture = capture_arp(
        sandbox.ns_path(&Netns::Host),
        "eth1p",
        std::time::Duration::from_millis(1500),
    );
    pass(&mut sandbox.kernel(), &desired_of(&topology(), "c2"));
    let seen = capture.join().expect("capture");
    assert!(
        seen.contains(&"203.0.113.50".parse().expect("ip")),
        "no gratuitous ARP for the FIP on the external segment: {seen:?}"
    );
    assert!(
        seen.contains(&"203.0.113.12".parse().expect("ip")),
        "no gratuitous ARP for the FIP gateway address: {seen:?}"
    );
}

/// On the kernel, the fip namespace every router shares is taken by device in a scoped pass: a
/// FIP appearing on a second router (its `fpr-` device, `iif` rule, routes and the namespace's
/// tables) and going again is reconciled without reading the other routers' devices, and the
/// scoped pass does exactly what a full pass would.
#[test]
fn the_fip_namespace_is_taken_by_device_in_scoped_passes() {
    require_root();
    let sandbox = Sandbox::new(&["eth1"]).expect("sandbox");
    let mut k = sandbox.kernel();
    let with_fip = |t: &Topology, fip: &str, port: &str, ip: &str| {
        let mut t = t.clone();
        let mut spec = t.fips.get(&oid(fip)).expect("fip").clone().into_spec();
        spec.port = Some(oid(port));
        spec.fixed_ip = Some(ip.parse().expect("ip"));
        t.fips
            .insert(oid(fip), mesh_proto::FloatingIp::new(spec).expect("fip"));
        t
    };
    // rtr-two gets an external gateway too; c1 serves f1 for vm1 (rtr-one), then also f3 for
    // vm3 (rtr-two: a second `fpr-` device in the fip namespace).
    let mut t = topology();
    let mut r2 = t
        .routers
        .get(&oid("rtr-two"))
        .expect("rtr-two")
        .clone()
        .into_spec();
    r2.gateway = Some(mesh_proto::RouterGateway {
        external_network: oid("ext-public"),
        enable_snat: true,
        external_ip: Some("203.0.113.6".parse().expect("ip")),
    });
    r2.snat_ports.insert(
        oid("sub-c"),
        mesh_proto::SnatPort {
            ip: "10.3.0.3".parse().expect("ip"),
            mac: "fa:16:3e:00:03:03".parse().expect("mac"),
        },
    );
    t.routers
        .insert(oid("rtr-two"), mesh_proto::Router::new(r2).expect("router"));
    let one = with_fip(&t, "f1", "vm1", "10.1.0.10");
    let two = with_fip(&one, "f3", "vm3", "10.3.0.30");
    let (one, two) = (desired_of(&one, "c1"), desired_of(&two, "c1"));
    pass(&mut k, &one);
    let fip_ns = Netns::Named("fip-ext-public".into());
    for (from, to) in [(&one, &two), (&two, &one)] {
        let scope = datapath::scope_of(from, to);
        let part = scope
            .parts
            .get(&fip_ns)
            .expect("the fip namespace is taken by device");
        assert!(!scope.whole.contains(&fip_ns), "{scope:?}");
        assert!(
            part.devices.iter().any(|d| d.starts_with("fpr-")),
            "{part:?}"
        );
        let out = scoped_pass_as_full(&mut k, from, to);
        assert!(
            out.ops
                .iter()
                .any(|op| matches!(op, Op::AddRule(_) | Op::DelRule(_))),
            "an iif rule of the fip namespace changes: {:?}",
            out.ops
        );
        assert_eq!(&k.observe(to).expect("observe"), to);
        assert_eq!(pass(&mut k, to), 0, "a full pass finds nothing left to do");
    }
}
