//! Golden and targeted tests of `plan` for a node of each mode on a hand-built view.
//!
//! The golden files under `tests/golden/` pin the whole plan; regenerate them deliberately with
//! `UPDATE_GOLDEN=1 cargo test -p datapath --test plan` and review the diff.

mod common;

use common::*;
use datapath::{plan, FdbTarget, LinkKind, Netns, NftFamily, NftKey, RuleSelector};
use mesh_proto::{ExtraRoute, MacAddr, Mtu, Network, NetworkSpec, Router};

fn golden(node_id: &str) {
    let t = topology();
    let p = plan(&t, &node(node_id));
    let text = serde_json::to_string_pretty(&p).expect("plan serialises") + "\n";
    let path = format!("{}/tests/golden/{node_id}.json", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).expect("golden written");
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(want == text, "plan of {node_id} differs from {path}; if deliberate, rerun with UPDATE_GOLDEN=1 and review");
    // Deterministic: planning twice gives the same bytes.
    assert_eq!(
        serde_json::to_string_pretty(&plan(&t, &node(node_id))).expect("ser") + "\n",
        text
    );
}

#[test]
fn golden_dvr_c1() {
    golden("c1");
}
#[test]
fn golden_dvr_c2() {
    golden("c2");
}
#[test]
fn golden_dvr_snat_n1() {
    golden("n1");
}
#[test]
fn golden_dvr_no_external_c3() {
    golden("c3");
}

/// The text of netdev table `name` in the host namespace of plan `p`.
fn host_netdev_table(p: &datapath::Desired, name: &str) -> String {
    p.nft
        .get(&NftKey {
            ns: Netns::Host,
            family: NftFamily::Netdev,
            name: name.into(),
        })
        .expect("netdev table")
        .to_string()
}

fn ns(n: &str) -> Netns {
    Netns::Named(n.to_string())
}

#[test]
fn snat_holder_is_the_best_dvr_snat_node() {
    let t = topology();
    assert_eq!(t.snat_holders.get(&oid("rtr-one")), Some(&node("n1")));
    assert!(
        !t.snat_holders.contains_key(&oid("rtr-two")),
        "no gateway, no holder"
    );
}

#[test]
fn a_compute_node_routes_its_routers_with_the_shared_gateway() {
    let t = topology();
    let p = plan(&t, &node("c1")).desired;
    // c1 has vm1 (sub-a, r1) and vm3 (sub-c, r2): both routers, not r1's SNAT.
    assert!(p.namespaces.contains("qrouter-rtr-one") && p.namespaces.contains("qrouter-rtr-two"));
    assert!(!p.namespaces.iter().any(|n| n.starts_with("snat-")));
    let qr = p
        .links
        .get(&(ns("qrouter-rtr-one"), "qr-sub-a".into()))
        .expect("qr-sub-a");
    let c2 = plan(&t, &node("c2")).desired;
    let qr_c2 = c2
        .links
        .get(&(ns("qrouter-rtr-one"), "qr-sub-a".into()))
        .expect("qr-sub-a on c2");
    assert_eq!(
        qr.mac, qr_c2.mac,
        "the gateway MAC is identical on every node"
    );
    assert!(p
        .addrs
        .iter()
        .any(|a| a.dev == "qr-sub-a" && a.ip.to_string() == "10.1.0.1" && a.prefix == 24));
    // SNAT redirect to sg- of sub-a: table = priority = int(10.1.0.1).
    let t_a = u32::from(std::net::Ipv4Addr::new(10, 1, 0, 1));
    assert!(p.rules.iter().any(|r| r.priority == t_a
        && r.table == t_a
        && r.selector == RuleSelector::From("10.1.0.0/24".parse().expect("c"))));
    assert!(p
        .routes
        .iter()
        .any(|r| r.table == t_a && r.via.map(|v| v.to_string()) == Some("10.1.0.3".into())));
    // Permanent neighbours for every port on the router's subnets, remote ones included, and sg-.
    for ip in [
        "10.1.0.10",
        "10.1.0.40",
        "10.1.0.3",
        "10.2.0.20",
        "10.2.0.50",
        "10.2.0.3",
    ] {
        assert!(
            p.neighs
                .iter()
                .any(|n| n.ns == ns("qrouter-rtr-one") && n.ip.to_string() == ip),
            "no neighbour {ip}"
        );
    }
    // r2's extra route.
    assert!(p.routes.iter().any(|r| r.ns == ns("qrouter-rtr-two")
        && r.dst.to_string() == "198.51.100.0/24"
        && r.dev == "qr-sub-c"));
    // Router namespaces never send redirects.
    assert_eq!(
        p.sysctls
            .get(&(
                ns("qrouter-rtr-one"),
                "net.ipv4.conf.all.send_redirects".into()
            ))
            .map(String::as_str),
        Some("0")
    );
}

#[test]
fn l2population_points_every_remote_mac_at_its_vtep() {
    let t = topology();
    let p = plan(&t, &node("c1")).desired;
    let vx = p
        .links
        .get(&(Netns::Host, "vx-100".into()))
        .expect("vx-100");
    assert!(matches!(vx.kind, LinkKind::Vxlan { vni: 100, .. }));
    assert_eq!(vx.learning, Some(false));
    assert_eq!(vx.master.as_deref(), Some("br-100"));
    let vm4: mesh_proto::MacAddr = "fa:16:3e:00:01:40".parse().expect("mac");
    assert!(p.fdb.contains(&datapath::FdbSpec {
        ns: Netns::Host,
        dev: "vx-100".into(),
        mac: vm4.octets(),
        target: FdbTarget::Vtep("192.0.2.13".parse().expect("ip"))
    }));
    assert!(p.fdb.contains(&datapath::FdbSpec {
        ns: Netns::Host,
        dev: "vx-100".into(),
        mac: vm4.octets(),
        target: FdbTarget::Bridge
    }));
    // sg- of sub-a lives on n1.
    let sg: mesh_proto::MacAddr = "fa:16:3e:00:01:03".parse().expect("mac");
    assert!(p
        .fdb
        .iter()
        .any(|f| f.mac == sg.octets()
            && f.target == FdbTarget::Vtep("192.0.2.21".parse().expect("ip"))));
    // Head-end replication to every other node on net-a: c2 (qr- of r1), c3 (vm4), n1 (sg-).
    let floods: Vec<String> = p
        .fdb
        .iter()
        .filter(|f| f.dev == "vx-100")
        .filter_map(|f| match f.target {
            FdbTarget::Flood(ip) => Some(ip.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(floods, ["192.0.2.12", "192.0.2.13", "192.0.2.21"]);
    // DVR MAC rewrite on the VXLAN device.
    let table = host_netdev_table(&p, "dvrmesh_vx100");
    assert!(
        table.contains("hook egress device \"vx-100\"")
            && table.contains("hook ingress device \"vx-100\"")
    );
    let my_dvr = t.nodes[&node("c1")].facts.dvr_mac().to_string();
    assert!(table.contains(&format!("ether saddr set {my_dvr}")));
    assert!(table.contains("arp operation request arp daddr ip 10.1.0.1 drop"));
}

/// DHCP and metadata stay on their node: one port-range rule each way for DHCP, and from the
/// tunnel nothing for 169.254.169.254; the metadata interface's own frames are kept off the
/// tunnel by the bridge, since its port and the VXLAN device are both isolated ports (an
/// isolated port forwards only to ports that are not), which costs the frames between VMs
/// nothing.
#[test]
fn dhcp_and_metadata_stay_on_their_node_with_few_rules_and_isolated_ports() {
    let t = topology();
    let p = plan(&t, &node("c1")).desired;
    let link = |name: &str| {
        p.links
            .get(&(Netns::Host, name.to_string()))
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(link("vx-100").isolated, Some(true));
    let (_, tmd) = datapath::plan::metadata_veth(&oid("net-a"));
    assert_eq!(link(&tmd).master.as_deref(), Some("br-100"));
    assert_eq!(
        link(&tmd).isolated,
        Some(true),
        "the metadata port is isolated"
    );
    let tap1 = datapath::plan::port_device(&t.ports[&oid("vm1")]);
    assert_eq!(link(&tap1).isolated, None, "a VM's port is not");
    let table = host_netdev_table(&p, "dvrmesh_vx100");
    let chain = |name: &str| -> Vec<String> {
        table
            .split(&format!("chain {name} {{"))
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .map(|body| {
                body.lines()
                    .skip(2)
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (inbound, outbound) = (chain("in"), chain("out"));
    assert_eq!(inbound[0], "udp dport 67-68 counter drop", "{table}");
    assert_eq!(
        inbound[1], "ip daddr 169.254.169.254/32 counter drop",
        "{table}"
    );
    assert_eq!(inbound.len(), 3, "DHCP, metadata, the DVR MAC: {table}");
    assert_eq!(outbound[0], "udp dport 67-68 counter drop", "{table}");
    assert_eq!(outbound.len(), 4, "DHCP, then the gateway's three: {table}");
    assert!(
        !table.contains("fa:16:3b"),
        "no rule names the metadata MAC: {table}"
    );
}

#[test]
fn fips_are_served_on_the_ports_host_with_maps_and_one_fwmark_rule() {
    let t = topology();
    let p = plan(&t, &node("c2")).desired;
    assert!(p.namespaces.contains("fip-ext-public"));
    let fns = ns("fip-ext-public");
    assert!(p.links.contains_key(&(fns.clone(), "fg-ext-public".into())));
    assert_eq!(
        p.sysctls
            .get(&(fns.clone(), "net.ipv4.conf.fg-ext-public.proxy_arp".into()))
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        p.sysctls
            .get(&(
                fns.clone(),
                "net.ipv4.neigh.fg-ext-public.proxy_delay".into()
            ))
            .map(String::as_str),
        Some("0")
    );
    assert!(p
        .addrs
        .iter()
        .any(|a| a.ns == fns && a.ip.to_string() == "203.0.113.12"));
    assert!(p.routes.iter().any(|r| r.ns == fns
        && r.dst.to_string() == "203.0.113.50/32"
        && r.dev.starts_with("fpr-")));
    let q = ns("qrouter-rtr-one");
    let fw: Vec<_> = p
        .rules
        .iter()
        .filter(|r| r.ns == q && matches!(r.selector, RuleSelector::Fwmark { .. }))
        .collect();
    assert_eq!(fw.len(), 1, "one fwmark rule whatever the number of FIPs");
    assert!(fw[0].priority > 32766, "after main, so east-west wins");
    assert!(p
        .rules
        .iter()
        .any(|r| r.ns == q && r.selector == RuleSelector::Iif("lo".into()) && r.table == 16));
    let table = p
        .nft
        .get(&NftKey {
            ns: q.clone(),
            family: NftFamily::Ip,
            name: "dvrmesh".into(),
        })
        .expect("qrouter table")
        .to_string();
    assert!(
        table.contains("203.0.113.50 : 10.2.0.20") && table.contains("10.2.0.20 : 203.0.113.50")
    );
    assert!(table.contains("notrack"));
    // c1 serves no FIP (f1 is on c2, f2 is central): no fip namespace.
    assert!(!plan(&t, &node("c1"))
        .desired
        .namespaces
        .contains("fip-ext-public"));
}

#[test]
fn more_fips_add_elements_not_rules() {
    let mut t = topology();
    let base = plan(&t, &node("c2")).desired;
    for i in 0..200u32 {
        let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 2, 1, 0)) + i);
        let pid = format!("px{i}");
        let mut p = port(
            &pid,
            "c2",
            "net-b",
            &ip.to_string(),
            &format!("fa:16:3e:11:{:02x}:{:02x}", i / 256, i % 256),
        );
        // keep ids unique and valid
        let _ = &mut p;
        t.ports.insert(p.id.clone(), p);
        let f = mesh_proto::FloatingIp::new(mesh_proto::FloatingIpSpec {
            id: oid(&format!("fx{i}")),
            external_network: oid("ext-public"),
            ip: std::net::Ipv4Addr::from(
                u32::from(std::net::Ipv4Addr::new(203, 0, 113, 0)) + 100 + (i % 100),
            ),
            port: Some(oid(&pid)),
            fixed_ip: Some(ip),
        })
        .expect("fip");
        t.fips.insert(f.id.clone(), f);
    }
    let more = plan(&t, &node("c2")).desired;
    assert_eq!(
        more.rules.len(),
        base.rules.len(),
        "rules do not grow with FIPs"
    );
}

#[test]
fn the_snat_holder_gets_sg_qg_snat_and_centralized_fips() {
    let t = topology();
    let p = plan(&t, &node("n1")).desired;
    let s = ns("snat-rtr-one");
    assert!(p.namespaces.contains("snat-rtr-one"));
    assert!(
        p.links.contains_key(&(s.clone(), "sg-sub-a".into()))
            && p.links.contains_key(&(s.clone(), "sg-sub-b".into()))
    );
    assert!(p
        .addrs
        .iter()
        .any(|a| a.ns == s && a.dev.starts_with("qg-") && a.ip.to_string() == "203.0.113.5"));
    // f2's port lives on c3 (dvr_no_external): its FIP is served here, on qg-.
    assert!(p
        .addrs
        .iter()
        .any(|a| a.ns == s && a.ip.to_string() == "203.0.113.51" && a.prefix == 32));
    let table = p
        .nft
        .get(&NftKey {
            ns: s.clone(),
            family: NftFamily::Ip,
            name: "dvrmesh".into(),
        })
        .expect("snat table")
        .to_string();
    assert!(table.contains("snat to 203.0.113.5") && table.contains("203.0.113.51 : 10.1.0.40"));
    assert!(p
        .routes
        .iter()
        .any(|r| r.ns == s && r.via.map(|v| v.to_string()) == Some("203.0.113.1".into())));
    // n1 also hosts vm5 on sub-b: it routes r1 locally too.
    assert!(p.namespaces.contains("qrouter-rtr-one"));
    // The external interface is attached to the external bridge.
    let eth1 = p.links.get(&(Netns::Host, "eth1".into())).expect("eth1");
    assert_eq!(eth1.kind, LinkKind::External);
}

#[test]
fn a_no_external_node_routes_but_serves_no_fip() {
    let t = topology();
    let p = plan(&t, &node("c3"));
    assert!(p.desired.namespaces.contains("qrouter-rtr-one"));
    assert!(!p
        .desired
        .namespaces
        .iter()
        .any(|n| n.starts_with("fip-") || n.starts_with("snat-")));
}

#[test]
fn a_node_not_in_the_view_plans_nothing() {
    let p = plan(&topology(), &node("ghost"));
    assert_eq!(p.desired, datapath::Desired::default());
    assert!(!p.problems.is_empty());
}

#[test]
fn a_network_sharing_another_ones_vni_is_left_out_with_a_problem() {
    let mut t = topology();
    let honest = plan(&t, &node("c1"));
    // net-c (sub-c, vm3 on c1) is created concurrently with net-a's VNI.
    let vni_of_a = t.networks[&oid("net-a")].vni;
    let net_c = t.networks.get_mut(&oid("net-c")).expect("net-c");
    *net_c = mesh_proto::Network::new(mesh_proto::NetworkSpec {
        id: net_c.id.clone(),
        name: net_c.name.clone(),
        vni: vni_of_a,
        mtu: net_c.mtu,
    })
    .expect("net");
    let p = plan(&t, &node("c1"));
    assert!(
        p.problems
            .iter()
            .any(|e| e.contains("net-c") && e.contains("VNI 100")),
        "{:?}",
        p.problems
    );
    // net-a keeps its segment exactly as before; nothing of net-c is planned.
    let vm1_links = |p: &datapath::Plan| {
        p.desired
            .links
            .keys()
            .filter(|(_, name)| name.contains("100"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(vm1_links(&p), vm1_links(&honest));
    assert!(!p
        .desired
        .addrs
        .iter()
        .any(|a| a.ip.octets()[..2] == [10, 3]));
}

/// The fast-path table of `me`'s plan (`None` when it has none), with its maps.
fn fast_path(t: &datapath::Topology, me: &str) -> Option<datapath::nft::Table> {
    let p = plan(t, &node(me));
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    p.desired.nft.iter().find_map(|(k, c)| match c {
        datapath::NftContent::Table(table)
            if k.ns == Netns::Host && k.name.starts_with("dvrmesh_fp") =>
        {
            Some(table.clone())
        }
        _ => None,
    })
}

fn map_of<'a>(table: &'a datapath::nft::Table, name: &str) -> &'a datapath::nft::Elements {
    &table.set(name).expect("the map exists").elements
}

#[test]
fn the_fast_path_routes_a_local_vm_to_every_port_of_its_routers_other_subnets() {
    use datapath::nft::{Elements, Hook};
    let mut t = topology();
    // A second VM of r1 on c1, in sub-b: reached on its own device, sourced from sub-b's gateway.
    // Its device is a hypervisor's tap: hooked and reached all the same.
    let mut vm6 = port("vm6", "c1", "net-b", "10.2.0.60", "fa:16:3e:00:02:60").into_spec();
    vm6.device = Some(mesh_proto::InterfaceName::new("vmtap6").expect("ifname"));
    t.ports
        .insert(vm6.id.clone(), mesh_proto::Port::new(vm6).expect("port"));
    let gw = datapath::plan::gateway_macs(&t);
    let (gw_a, gw_b) = (gw["sub-a"], gw["sub-b"]);
    let c1_dvr = t.nodes[&node("c1")].facts.dvr_mac();
    let table = fast_path(&t, "c1").expect("c1 has VMs on two subnets of r1");
    let hooked: Vec<&Hook> = table.chains.iter().map(|c| &c.hook).collect();
    let tap = |id: &str| datapath::plan::port_device(&t.ports[&oid(id)]);
    let (tap1, tap6) = (tap("vm1"), tap("vm6"));
    assert_eq!(tap6, "vmtap6");
    assert_eq!(
        hooked,
        [&Hook::Ingress(tap1.clone()), &Hook::Ingress(tap6.clone())],
        "one ingress chain per local VM device"
    );
    let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().expect("ip");
    let mac = |s: &str| s.parse::<MacAddr>().expect("mac");
    let Elements::MacMap(src) = map_of(&table, "smac") else {
        panic!("src is a MAC map")
    };
    let Elements::MacMap(dst) = map_of(&table, "dmac") else {
        panic!("dst is a MAC map")
    };
    let Elements::DevMap(dev) = map_of(&table, "odev") else {
        panic!("dev is a device map")
    };
    // vm1 (sub-a) to vm2 on c2 and vm5 on n1: over net-b's tunnel with c1's DVR MAC.
    assert!(src.contains(&((gw_a, ip("10.2.0.20")), c1_dvr)), "{src:?}");
    assert!(src.contains(&((gw_a, ip("10.2.0.50")), c1_dvr)), "{src:?}");
    assert!(dst.contains(&((gw_a, ip("10.2.0.20")), mac("fa:16:3e:00:02:20"))));
    assert!(dev.contains(&((mac("fa:16:3e:00:02:20"), ip("10.2.0.20")), "vx-200".into())));
    // vm1 to vm6 on this node: its own device, sub-b's gateway MAC as source.
    assert!(src.contains(&((gw_a, ip("10.2.0.60")), gw_b)), "{src:?}");
    assert!(dev.contains(&((mac("fa:16:3e:00:02:60"), ip("10.2.0.60")), tap6)));
    // vm6 (sub-b) back to vm1 here and to vm4 on c3 (net-a's tunnel).
    assert!(src.contains(&((gw_b, ip("10.1.0.10")), gw_a)), "{src:?}");
    assert!(dev.contains(&((mac("fa:16:3e:00:01:10"), ip("10.1.0.10")), tap1)));
    assert!(dev.contains(&((mac("fa:16:3e:00:01:40"), ip("10.1.0.40")), "vx-100".into())));
    // Never a destination on the sender's own subnet (that is switched, not routed).
    assert!(!src
        .iter()
        .any(|((g, i), _)| *g == gw_a && *i == ip("10.1.0.40")));
    // Every rule decrements one of the first-hop TTLs and ends in a forward.
    let text = table.to_string();
    assert!(text.contains("ip ttl 64 ether saddr set ether daddr . ip daddr map @smac ip ttl set 63 ether daddr set ether daddr . ip daddr map @dmac fwd to ether daddr . ip daddr map @odev"), "{text}");
    // A frame not for the sender's gateway (most of what a VM sends) leaves each chain at its
    // first rule.
    for (chain, gw) in table.chains.iter().zip([gw_a, gw_b]) {
        assert_eq!(
            chain.rules[0].to_string(),
            format!("ether daddr != {gw} accept"),
            "{text}"
        );
        assert_eq!(chain.rules.len(), 4, "{text}");
    }
    assert_eq!(table.check(), Ok(()));
}

#[test]
fn the_fast_path_leaves_to_the_router_what_it_cannot_do_alike() {
    use datapath::nft::Elements;
    let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().expect("ip");
    let has_dest = |t: &datapath::Topology, me: &str, to: &str| {
        fast_path(t, me).is_some_and(|table| match map_of(&table, "smac") {
            Elements::MacMap(v) => v.iter().any(|((_, i), _)| *i == ip(to)),
            _ => false,
        })
    };
    let t = topology();
    assert!(has_dest(&t, "c1", "10.2.0.20"));
    // r2 has one subnet: nothing to route between, no table on c1 for it (only r1's).
    let p = plan(&t, &node("c1"));
    let fast_tables = p
        .desired
        .nft
        .keys()
        .filter(|k| k.name.starts_with("dvrmesh_fp"))
        .count();
    assert_eq!(fast_tables, 1, "only r1 routes between subnets");
    // A smaller MTU on the way out: the router's business (it fragments or refuses).
    let mut small = topology();
    let net_b = small.networks.get_mut(&oid("net-b")).expect("net-b");
    *net_b = Network::new(NetworkSpec {
        id: net_b.id.clone(),
        name: net_b.name.clone(),
        vni: net_b.vni,
        mtu: Mtu::new(1400).expect("mtu"),
    })
    .expect("net");
    assert!(
        !has_dest(&small, "c1", "10.2.0.20"),
        "net-a (1450) into net-b (1400)"
    );
    assert!(
        has_dest(&small, "c2", "10.1.0.10"),
        "net-b (1400) into net-a (1450) is fine"
    );
    // An extra route at least as specific as the subnet covers the port: the router decides.
    let mut routed = topology();
    let r1 = routed.routers.get_mut(&oid("rtr-one")).expect("r1");
    let mut spec = r1.clone().into_spec();
    spec.routes.insert(ExtraRoute {
        destination: "10.2.0.20/32".parse().expect("d"),
        nexthop: "10.1.0.10".parse().expect("n"),
    });
    *r1 = Router::new(spec).expect("r1");
    assert!(!has_dest(&routed, "c1", "10.2.0.20"));
    assert!(
        has_dest(&routed, "c1", "10.2.0.50"),
        "the rest of the subnet stays fast"
    );
}
