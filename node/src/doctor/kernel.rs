//! Kernel features, probed the way the agent uses them: the planner's own plan for a small
//! topology (this node a SNAT holder with a distributed floating IP, one peer) is applied by the
//! datapath's Linux backend inside a throwaway namespace ([`Sandbox`]), and every op the kernel
//! refuses is charged to the feature it needs. The sandbox (its namespaces, links, nft tables and
//! sysctl writes) is removed when the probe ends, also on error or panic; the host is never
//! touched.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use datapath::linux::netns;
use datapath::linux::sandbox::Sandbox;
use datapath::{diff, plan, Kernel, LinkKind, LinkSpec, Netns, NftFamily, NodeInfo, Op, Topology};
use mesh_proto::*;

use super::{Check, Ctx, Group};

/// The external interface of the probe node (a veth inside the sandbox).
const PROBE_EXTERNAL: &str = "eth1";
/// The probe node's id.
const PROBE_NODE: &str = "doctor";

/// One kernel feature the agent needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Feature {
    /// Named network namespaces (unshare + bind mount).
    Netns,
    /// veth pairs, also across namespaces.
    Veth,
    /// Linux bridges with learning off on ports.
    Bridge,
    /// VXLAN devices and their FDB entries.
    Vxlan,
    /// Addresses, routes and permanent neighbours.
    Netlink,
    /// Policy routing: rules and routes in numbered tables.
    PolicyRouting,
    /// Sysctls written inside namespaces and on devices.
    Sysctls,
    /// nftables `ip` tables with NAT chains, sets, maps, marks and notrack.
    NftNat,
    /// nftables `netdev` tables on ingress and egress hooks.
    NftNetdev,
    /// Connection tracking (NAT and notrack need it).
    Conntrack,
}

/// Every feature, in the order they are reported.
pub const FEATURES: [Feature; 10] = [
    Feature::Netns,
    Feature::Veth,
    Feature::Bridge,
    Feature::Vxlan,
    Feature::Netlink,
    Feature::PolicyRouting,
    Feature::Sysctls,
    Feature::NftNat,
    Feature::NftNetdev,
    Feature::Conntrack,
];

impl Feature {
    /// Its check id (after `kernel.`).
    pub fn id(&self) -> &'static str {
        match self {
            Feature::Netns => "netns",
            Feature::Veth => "veth",
            Feature::Bridge => "bridge",
            Feature::Vxlan => "vxlan",
            Feature::Netlink => "netlink",
            Feature::PolicyRouting => "policy-routing",
            Feature::Sysctls => "sysctls",
            Feature::NftNat => "nft-nat",
            Feature::NftNetdev => "nft-netdev",
            Feature::Conntrack => "conntrack",
        }
    }

    /// What it is, for the detail line.
    pub fn what(&self) -> &'static str {
        match self {
            Feature::Netns => "network namespaces (qrouter-, snat-, fip-)",
            Feature::Veth => "veth pairs across namespaces",
            Feature::Bridge => "bridges with port learning off",
            Feature::Vxlan => "VXLAN devices (nolearning, static FDB)",
            Feature::Netlink => "addresses, routes and permanent neighbours",
            Feature::PolicyRouting => "policy routing (rules, numbered tables)",
            Feature::Sysctls => "sysctls in namespaces (forwarding, rp_filter, proxy_arp)",
            Feature::NftNat => "nftables ip tables: nat chains, sets, maps, marks, notrack",
            Feature::NftNetdev => "nftables netdev ingress and egress hooks (DVR MAC rewrite)",
            Feature::Conntrack => "connection tracking",
        }
    }

    /// The one line that most often fixes it.
    pub fn fix(&self) -> &'static str {
        match self {
            Feature::Netns => "run as root on a kernel with CONFIG_NET_NS; in a container add CAP_SYS_ADMIN and a writable /run",
            Feature::Veth => "modprobe veth",
            Feature::Bridge => "modprobe bridge",
            Feature::Vxlan => "modprobe vxlan (kernel needs CONFIG_VXLAN)",
            Feature::Netlink => "run as root (CAP_NET_ADMIN)",
            Feature::PolicyRouting => "use a kernel with CONFIG_IP_MULTIPLE_TABLES",
            Feature::Sysctls => "make /proc/sys writable: mount -o remount,rw /proc/sys (containers: see docs/compose-lab.md)",
            Feature::NftNat => "modprobe nf_tables nft_chain_nat nf_nat (kernel needs CONFIG_NF_TABLES, CONFIG_NFT_NAT)",
            Feature::NftNetdev => "netdev egress hooks need Linux >= 5.16 with CONFIG_NETFILTER_EGRESS; modprobe nf_tables",
            Feature::Conntrack => "modprobe nf_conntrack",
        }
    }

    /// Features that must work before this one can be probed.
    fn needs(&self) -> &'static [Feature] {
        match self {
            Feature::Netns => &[],
            Feature::NftNetdev => &[Feature::Vxlan],
            Feature::Conntrack => &[Feature::Netns, Feature::NftNat],
            _ => &[Feature::Netns],
        }
    }
}

/// The feature an op needs (`None` for ops a probe never emits: deletions).
pub fn feature_of(op: &Op) -> Option<Feature> {
    let link = |kind: &LinkKind| match kind {
        LinkKind::Veth { .. } | LinkKind::External => Feature::Veth,
        LinkKind::Bridge => Feature::Bridge,
        LinkKind::Vxlan { .. } => Feature::Vxlan,
    };
    Some(match op {
        Op::AddNamespace { .. } => Feature::Netns,
        Op::SetSysctl { .. } => Feature::Sysctls,
        Op::AddLink { spec, .. } | Op::SetLink { spec, .. } => link(&spec.kind),
        Op::AddRule(_) => Feature::PolicyRouting,
        Op::AddRoute(r) if r.table != 254 => Feature::PolicyRouting,
        Op::AddAddr(_) | Op::AddRoute(_) | Op::AddNeigh(_) => Feature::Netlink,
        Op::AddFdb(f) if f.dev.starts_with("vx-") => Feature::Vxlan,
        Op::AddFdb(_) => Feature::Bridge,
        Op::ReplaceNft { key, .. } => match key.family {
            NftFamily::Ip => Feature::NftNat,
            NftFamily::Netdev => Feature::NftNetdev,
        },
        _ => return None,
    })
}

/// What one probe did.
#[derive(Clone, Debug, Default)]
pub struct Probe {
    /// The throwaway namespace could not be made: nothing else ran.
    pub setup: Option<String>,
    /// Every op sent to the kernel.
    pub ops: Vec<Op>,
    /// The refused ops (as `format!("{op:?}")`, the backend's key) and the kernel's answers.
    pub failed: Vec<(String, String)>,
    /// Whether connection tracking answered inside the probe's router namespace.
    pub conntrack: Option<Result<(), String>>,
}

/// The kernel checks: probed when this process may, else one warning per feature saying so.
pub fn checks(ctx: &Ctx) -> Vec<Check> {
    if !ctx.privileged.can_probe() {
        return FEATURES
            .iter()
            .map(|f| {
                Check::warn(
                    Group::Kernel,
                    f.id(),
                    format!(
                        "{}: not checked, the probe needs CAP_NET_ADMIN and CAP_SYS_ADMIN",
                        f.what()
                    ),
                    "run `sudo dvrmesh doctor` to probe kernel features",
                )
            })
            .collect();
    }
    verdicts(&probe())
}

/// The verdict of every feature from what a probe saw (pure).
pub fn verdicts(p: &Probe) -> Vec<Check> {
    if let Some(e) = &p.setup {
        let mut out = vec![Check::fail(
            Group::Kernel,
            Feature::Netns.id(),
            format!(
                "{}: cannot create a throwaway namespace: {e}",
                Feature::Netns.what()
            ),
            Feature::Netns.fix(),
        )];
        out.extend(FEATURES[1..].iter().map(|f| {
            Check::warn(
                Group::Kernel,
                f.id(),
                format!("{}: not checked (no throwaway namespace)", f.what()),
                Feature::Netns.fix(),
            )
        }));
        return out;
    }
    let mut sent: BTreeMap<Feature, usize> = BTreeMap::new();
    let by_key: BTreeMap<String, Option<Feature>> = p
        .ops
        .iter()
        .map(|op| {
            let f = feature_of(op);
            if let Some(f) = f {
                *sent.entry(f).or_default() += 1;
            }
            (format!("{op:?}"), f)
        })
        .collect();
    let mut refused: BTreeMap<Feature, Vec<&str>> = BTreeMap::new();
    for (op, e) in &p.failed {
        let f = by_key
            .get(op)
            .copied()
            .flatten()
            .unwrap_or(Feature::Netlink);
        // A link is made with IPv6 disabled through a sysctl: when that write is what the kernel
        // refused, the fix is the sysctls', not the link kind's.
        let f = if e.starts_with("sysctl ") && f != Feature::Sysctls {
            *sent.entry(Feature::Sysctls).or_default() += 1;
            Feature::Sysctls
        } else {
            f
        };
        refused.entry(f).or_default().push(e);
    }
    if let Some(Err(e)) = &p.conntrack {
        refused.entry(Feature::Conntrack).or_default().push(e);
    }
    let failed: BTreeSet<Feature> = refused.keys().copied().collect();
    FEATURES
        .iter()
        .map(|f| {
            feature_verdict(
                *f,
                sent.get(f).copied().unwrap_or(0),
                refused.get(f),
                &failed,
            )
        })
        .collect()
}

fn feature_verdict(
    f: Feature,
    sent: usize,
    refused: Option<&Vec<&str>>,
    failed: &BTreeSet<Feature>,
) -> Check {
    match refused {
        Some(errors) => {
            let mut detail = format!(
                "{}: the kernel refused {} of {}: {}",
                f.what(),
                errors.len(),
                sent.max(errors.len()),
                errors[0]
            );
            let blocked: Vec<&str> = f
                .needs()
                .iter()
                .filter(|n| failed.contains(n))
                .map(Feature::id)
                .collect();
            if !blocked.is_empty() {
                let _ = write!(
                    detail,
                    " (perhaps only because {} failed)",
                    blocked.join(", ")
                );
            }
            Check::fail(Group::Kernel, f.id(), detail, f.fix())
        }
        None if f == Feature::Conntrack => Check::ok(
            Group::Kernel,
            f.id(),
            format!(
                "{}: loaded, seen from the probe's router namespace",
                f.what()
            ),
        ),
        None if sent > 0 => Check::ok(
            Group::Kernel,
            f.id(),
            format!("{}: the kernel accepted all {sent} probe objects", f.what()),
        ),
        None => Check::warn(
            Group::Kernel,
            f.id(),
            format!("{}: not exercised by the probe", f.what()),
            "report this: the probe plan should use every feature",
        ),
    }
}

/// Runs the probe in a throwaway namespace, which is gone when this returns.
pub fn probe() -> Probe {
    let sandbox = match Sandbox::new(&[]) {
        Ok(s) => s,
        Err(e) => {
            return Probe {
                setup: Some(e.to_string()),
                ..Probe::default()
            }
        }
    };
    let mut p = Probe::default();
    let mut kernel = sandbox.kernel();
    let external = Op::AddLink {
        ns: Netns::Host,
        name: PROBE_EXTERNAL.into(),
        spec: LinkSpec::of(LinkKind::Veth {
            peer: format!("{PROBE_EXTERNAL}p"),
            peer_ns: Netns::Host,
        }),
    };
    let desired = match probe_topology() {
        Ok(t) => plan(&t, &probe_node()).desired,
        Err(e) => {
            p.setup = Some(format!("internal: the probe topology is invalid: {e}"));
            return p;
        }
    };
    p.ops.push(external.clone());
    apply(&mut kernel, &[external], &mut p);
    let ops = match kernel.observe(&desired) {
        Ok(observed) => diff(&desired, &observed),
        Err(e) => {
            p.setup = Some(format!("observing the throwaway namespace: {e}"));
            return p;
        }
    };
    apply(&mut kernel, &ops, &mut p);
    p.ops.extend(ops);
    p.conntrack = Some(conntrack_in(&sandbox, &desired.namespaces));
    p
}

/// Applies `ops`, recording what the kernel refused (all of them when the pass failed).
fn apply(kernel: &mut impl Kernel, ops: &[Op], p: &mut Probe) {
    match kernel.apply(ops) {
        Ok(report) => p.failed.extend(report.failed),
        Err(e) => p
            .failed
            .extend(ops.iter().map(|op| (format!("{op:?}"), e.to_string()))),
    }
}

/// Whether connection tracking is loaded, as seen from inside the probe's router namespace.
fn conntrack_in(sandbox: &Sandbox, namespaces: &BTreeSet<String>) -> Result<(), String> {
    let name = namespaces
        .iter()
        .find(|n| n.starts_with("qrouter-"))
        .ok_or("the probe made no router namespace")?;
    let file = netns::open(&sandbox.ns_path(&Netns::Named(name.clone())), name)
        .map_err(|e| e.to_string())?;
    netns::in_netns(&file, name, || {
        std::fs::metadata("/proc/sys/net/netfilter/nf_conntrack_max")
            .map(|_| ())
            .map_err(|_| "nf_conntrack is not loaded (no /proc/sys/net/netfilter/nf_conntrack_max after loading NAT)".to_string())
    })
    .map_err(|e| e.to_string())?
}

fn probe_node() -> NodeId {
    NodeId::new(PROBE_NODE).unwrap_or_else(|_| unreachable!("a valid literal node id"))
}

/// The topology whose plan uses every feature: this node (`dvr_snat`, external interface
/// `eth1`) holds SNAT of a router with a gateway and serves a floating IP of a local port; a
/// peer hosts a port on the same network (FDB, DVR MAC rewrite). Addresses are documentation
/// ranges; nothing leaves the sandbox.
pub fn probe_topology() -> Result<Topology, Error> {
    let me = probe_node();
    let peer = NodeId::new("peer")?;
    let ext_name = Name::new("public")?;
    let mut t = Topology::default();
    t.nodes.insert(
        me.clone(),
        probe_member(&me, NodeMode::DvrSnat, 1, Some(&ext_name))?,
    );
    t.nodes
        .insert(peer.clone(), probe_member(&peer, NodeMode::Dvr, 2, None)?);
    let net = Network::new(NetworkSpec {
        id: ObjectId::new("net-probe")?,
        name: Name::new("net-probe")?,
        vni: Vni::new(4000)?,
        mtu: Mtu::VXLAN_DEFAULT,
    })?;
    let subnet = Subnet::new(SubnetSpec {
        id: ObjectId::new("sub-probe")?,
        name: Name::new("sub-probe")?,
        network: net.id.clone(),
        cidr: "10.250.0.0/24".parse()?,
        gateway: Ipv4Addr::new(10, 250, 0, 1),
        pool: "10.250.0.2-10.250.0.254".parse()?,
        dhcp: mesh_proto::SubnetDhcp::default(),
    })?;
    let ext = ExternalNetwork::new(ExternalNetworkSpec {
        id: ObjectId::new("ext-probe")?,
        name: ext_name,
        cidr: "203.0.113.0/24".parse()?,
        gateway: Ipv4Addr::new(203, 0, 113, 1),
        pool: "203.0.113.2-203.0.113.254".parse()?,
    })?;
    let router = probe_router(&subnet.id, &ext.id)?;
    for (id, host, network, ip, mac) in [
        (
            "vm-local",
            &me,
            &net.id,
            [10, 250, 0, 10],
            "fa:16:3e:00:00:10",
        ),
        (
            "vm-remote",
            &peer,
            &net.id,
            [10, 250, 0, 20],
            "fa:16:3e:00:00:20",
        ),
        (
            "fgw-doctor",
            &me,
            &ext.id,
            [203, 0, 113, 11],
            "fa:16:3e:00:00:11",
        ),
    ] {
        let p = Port::new(PortSpec {
            id: ObjectId::new(id)?,
            name: Name::new(id)?,
            network: network.clone(),
            mac: mac.parse()?,
            fixed_ips: vec![Ipv4Addr::from(ip)],
            host: host.clone(),
            device: None,
            allowed_address_pairs: vec![],
            metadata: Default::default(),
        })?;
        t.ports.insert(p.id.clone(), p);
    }
    let fip = FloatingIp::new(FloatingIpSpec {
        id: ObjectId::new("fip-probe")?,
        external_network: ext.id.clone(),
        ip: Ipv4Addr::new(203, 0, 113, 50),
        port: Some(ObjectId::new("vm-local")?),
        fixed_ip: Some(Ipv4Addr::new(10, 250, 0, 10)),
    })?;
    t.fips.insert(fip.id.clone(), fip);
    t.networks.insert(net.id.clone(), net);
    t.subnets.insert(subnet.id.clone(), subnet);
    t.external_networks.insert(ext.id.clone(), ext);
    t.routers.insert(router.id.clone(), router);
    t.snat_holders = datapath::default_snat_holders(&t);
    Ok(t)
}

/// A live member of the probe cluster with tunnel IP 192.0.2.`host`, mapping `external` (if
/// any) to the sandbox's external interface.
fn probe_member(
    id: &NodeId,
    mode: NodeMode,
    host: u8,
    external: Option<&Name>,
) -> Result<NodeInfo, Error> {
    let mut mapped = BTreeMap::new();
    if let Some(name) = external {
        let interface = InterfaceName::new(PROBE_EXTERNAL)?;
        mapped.insert(name.clone(), ExternalMapping { interface });
    }
    let facts = NodeFacts::new(
        id.clone(),
        mode,
        Ipv4Addr::new(192, 0, 2, host),
        dvr_mac_for(id),
        Priority::new(200)?,
        mapped,
    )?;
    Ok(NodeInfo { facts, alive: true })
}

/// The probe router: one interface on `subnet`, a gateway with SNAT on `ext`.
fn probe_router(subnet: &ObjectId, ext: &ObjectId) -> Result<Router, Error> {
    let snat_port = SnatPort {
        ip: Ipv4Addr::new(10, 250, 0, 3),
        mac: "fa:16:3e:00:00:03".parse()?,
    };
    Router::new(RouterSpec {
        id: ObjectId::new("rtr-probe")?,
        name: Name::new("rtr-probe")?,
        interfaces: [subnet.clone()].into_iter().collect(),
        gateway: Some(RouterGateway {
            external_network: ext.clone(),
            enable_snat: true,
            external_ip: Some(Ipv4Addr::new(203, 0, 113, 5)),
        }),
        routes: BTreeSet::new(),
        ha: HaSettings::default(),
        snat_ports: [(subnet.clone(), snat_port)].into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Verdict;

    fn plan_ops() -> Vec<Op> {
        let t = probe_topology().expect("valid probe topology");
        let p = plan(&t, &probe_node());
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        diff(&p.desired, &Default::default())
    }

    #[test]
    fn the_probe_plan_uses_every_feature() {
        let used: BTreeSet<Feature> = plan_ops().iter().filter_map(feature_of).collect();
        for f in FEATURES.iter().filter(|f| **f != Feature::Conntrack) {
            assert!(used.contains(f), "{f:?} is not exercised by the probe plan");
        }
    }

    #[test]
    fn a_clean_probe_passes_every_feature() {
        let p = Probe {
            ops: plan_ops(),
            conntrack: Some(Ok(())),
            ..Probe::default()
        };
        let v = verdicts(&p);
        assert_eq!(v.len(), FEATURES.len());
        assert!(v.iter().all(|c| c.verdict == Verdict::Ok), "{v:#?}");
    }

    #[test]
    fn a_refused_op_fails_its_feature_with_the_fix() {
        let ops = plan_ops();
        let netdev = ops
            .iter()
            .find(|op| feature_of(op) == Some(Feature::NftNetdev))
            .expect("netdev table");
        let p = Probe {
            failed: vec![(
                format!("{netdev:?}"),
                "Operation not supported (os error 95)".into(),
            )],
            ops: ops.clone(),
            conntrack: Some(Ok(())),
            ..Probe::default()
        };
        let v = verdicts(&p);
        let bad: Vec<&Check> = v.iter().filter(|c| c.verdict != Verdict::Ok).collect();
        assert_eq!(bad.len(), 1, "{v:#?}");
        assert_eq!(bad[0].id, "kernel.nft-netdev");
        assert!(bad[0].detail.contains("os error 95"));
        assert!(bad[0].fix.as_deref().unwrap().contains("5.16"));
    }

    #[test]
    fn a_missing_prerequisite_is_named() {
        let ops = plan_ops();
        let vx = ops
            .iter()
            .find(|op| feature_of(op) == Some(Feature::Vxlan))
            .unwrap();
        let nd = ops
            .iter()
            .find(|op| feature_of(op) == Some(Feature::NftNetdev))
            .unwrap();
        let p = Probe {
            failed: vec![
                (format!("{vx:?}"), "Operation not supported".into()),
                (format!("{nd:?}"), "No such device".into()),
            ],
            ops,
            conntrack: Some(Ok(())),
            ..Probe::default()
        };
        let v = verdicts(&p);
        let nd = v.iter().find(|c| c.id == "kernel.nft-netdev").unwrap();
        assert_eq!(nd.verdict, Verdict::Fail);
        assert!(nd.detail.contains("because vxlan failed"), "{}", nd.detail);
        assert_eq!(
            v.iter()
                .find(|c| c.id == "kernel.vxlan")
                .unwrap()
                .fix
                .as_deref(),
            Some(Feature::Vxlan.fix())
        );
    }

    #[test]
    fn a_refused_sysctl_write_is_charged_to_sysctls_not_the_link() {
        let ops = plan_ops();
        let vx = ops
            .iter()
            .find(|op| feature_of(op) == Some(Feature::Vxlan))
            .unwrap();
        let p = Probe {
            failed: vec![(
                format!("{vx:?}"),
                "sysctl net.ipv6.conf.vx-4000.disable_ipv6: Read-only file system (os error 30)"
                    .into(),
            )],
            ops,
            conntrack: Some(Ok(())),
            ..Probe::default()
        };
        let v = verdicts(&p);
        let bad: Vec<&Check> = v.iter().filter(|c| c.verdict != Verdict::Ok).collect();
        assert_eq!(bad.len(), 1, "{v:#?}");
        assert_eq!(bad[0].id, "kernel.sysctls");
        assert!(bad[0].fix.as_deref().unwrap().contains("/proc/sys"));
    }

    #[test]
    fn no_throwaway_namespace_fails_netns_and_skips_the_rest() {
        let v = verdicts(&Probe {
            setup: Some("unshare: EPERM".into()),
            ..Probe::default()
        });
        assert_eq!(v[0].verdict, Verdict::Fail);
        assert!(v[1..].iter().all(|c| c.verdict == Verdict::Warn));
    }

    #[test]
    fn missing_conntrack_fails_conntrack() {
        let p = Probe {
            ops: plan_ops(),
            conntrack: Some(Err("nf_conntrack is not loaded".into())),
            ..Probe::default()
        };
        let c = verdicts(&p)
            .into_iter()
            .find(|c| c.id == "kernel.conntrack")
            .unwrap();
        assert_eq!(c.verdict, Verdict::Fail);
        assert_eq!(c.fix.as_deref(), Some("modprobe nf_conntrack"));
    }
}
