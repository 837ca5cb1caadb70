//! The same kernel objects as one `ip`, `bridge`, `sysctl` or `nft` process per object: how the
//! Neutron L3 agent programs a router. Used only as the benchmark's point of comparison.

use datapath::{FdbTarget, LinkKind, Netns, Op, RuleSelector};

fn ns_arg(ns: &Netns) -> String {
    match ns {
        Netns::Host => String::new(),
        Netns::Named(n) => format!("-n {n} "),
    }
}

fn exec_in(ns: &Netns) -> String {
    match ns {
        Netns::Host => String::new(),
        Netns::Named(n) => format!("ip netns exec {n} "),
    }
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Shell lines (one process each) that create what `ops` create, starting from nothing.
pub fn commands(ops: &[Op]) -> Vec<String> {
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::AddNamespace { name } => out.push(format!("ip netns add {name}")),
            Op::SetSysctl { ns, key, value } => {
                out.push(format!("{}sysctl -qw {key}={value}", exec_in(ns)))
            }
            Op::AddLink { ns, name, spec } | Op::SetLink { ns, name, spec } => {
                let n = ns_arg(ns);
                if let Op::AddLink { .. } = op {
                    match &spec.kind {
                        LinkKind::Bridge => out.push(format!("ip {n}link add {name} type bridge")),
                        LinkKind::Vxlan { vni, local, port } => out.push(format!("ip {n}link add {name} type vxlan id {vni} local {local} dstport {port} nolearning")),
                        LinkKind::Veth { peer, peer_ns } => {
                            let pn = match peer_ns {
                                Netns::Host => String::new(),
                                Netns::Named(p) => format!(" netns {p}"),
                            };
                            // A peer in the host namespace of `ip -n X` must be named by the
                            // host's namespace: create in the host and move instead.
                            match (ns, peer_ns) {
                                (Netns::Named(a), Netns::Host) => {
                                    out.push(format!("ip link add {peer} type veth peer name {name} netns {a}"));
                                }
                                _ => out.push(format!("ip {n}link add {name} type veth peer name {peer}{pn}")),
                            }
                        }
                        LinkKind::External => {}
                    }
                }
                if spec.ipv6 == Some(false) {
                    out.push(format!(
                        "{}sysctl -qw net.ipv6.conf.{name}.disable_ipv6=1",
                        exec_in(ns)
                    ));
                }
                let mut set = format!("ip {n}link set {name}");
                if let Some(m) = spec.mac {
                    set.push_str(&format!(" address {m}"));
                }
                if let Some(mtu) = spec.mtu {
                    set.push_str(&format!(" mtu {mtu}"));
                }
                if let Some(master) = &spec.master {
                    set.push_str(&format!(" master {master}"));
                }
                set.push_str(" up");
                out.push(set);
                if spec.learning == Some(false) {
                    out.push(format!("bridge {n}link set dev {name} learning off"));
                }
            }
            Op::AddAddr(a) => out.push(format!(
                "ip {}addr add {}/{} dev {}",
                ns_arg(&a.ns),
                a.ip,
                a.prefix,
                a.dev
            )),
            Op::AddRoute(r) => {
                let via = r.via.map(|v| format!(" via {v}")).unwrap_or_default();
                out.push(format!(
                    "ip {}route add {}{via} dev {} table {} proto 147",
                    ns_arg(&r.ns),
                    r.dst,
                    r.dev,
                    r.table
                ));
            }
            Op::AddRule(r) => {
                let sel = match &r.selector {
                    RuleSelector::From(c) => format!("from {c}"),
                    RuleSelector::Fwmark { mark, mask } => format!("fwmark {mark:#x}/{mask:#x}"),
                    RuleSelector::Iif(d) => format!("iif {d}"),
                };
                out.push(format!(
                    "ip {}rule add {sel} lookup {} priority {} proto 147",
                    ns_arg(&r.ns),
                    r.table,
                    r.priority
                ));
            }
            Op::AddNeigh(n) => out.push(format!(
                "ip {}neigh replace {} lladdr {} dev {} nud permanent",
                ns_arg(&n.ns),
                n.ip,
                n.mac,
                n.dev
            )),
            Op::AddFdb(f) => out.push(match f.target {
                FdbTarget::Vtep(ip) => format!(
                    "bridge {}fdb replace {} dev {} dst {ip} self permanent",
                    ns_arg(&f.ns),
                    mac(f.mac),
                    f.dev
                ),
                FdbTarget::Flood(ip) => format!(
                    "bridge {}fdb append 00:00:00:00:00:00 dev {} dst {ip} self permanent",
                    ns_arg(&f.ns),
                    f.dev
                ),
                FdbTarget::Bridge => format!(
                    "bridge {}fdb replace {} dev {} master static sticky",
                    ns_arg(&f.ns),
                    mac(f.mac),
                    f.dev
                ),
            }),
            Op::ReplaceNft { key, table } => {
                let (skeleton, elements) = split_elements(table);
                let file = format!("$W/nft-{}-{}.nft", key.ns, key.name);
                out.push(format!("cat > {file} <<'EOF'\n{skeleton}EOF"));
                out.push(format!("{}nft -f {file}", exec_in(&key.ns)));
                for (set, e) in elements {
                    out.push(format!(
                        "{}nft add element {} {} {set} '{{ {e} }}'",
                        exec_in(&key.ns),
                        key.family.keyword(),
                        key.name
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

/// The table text without set/map elements, and every (set, element) pair, so each element can be
/// added by its own process.
fn split_elements(table: &datapath::nft::Table) -> (String, Vec<(String, String)>) {
    let mut skeleton = table.clone();
    let mut elements = Vec::new();
    for set in &mut skeleton.sets {
        for e in set.elements.texts() {
            elements.push((set.name.clone(), e));
        }
        set.elements = set.elements.emptied();
    }
    (skeleton.to_string(), elements)
}
