//! The same kernel objects as one `ip`, `bridge`, `sysctl` or `nft` process per object: how the
//! Neutron L3 agent programs a router. Used only as the benchmark's point of comparison.

use datapath::{FdbSpec, FdbTarget, LinkKind, LinkSpec, Netns, NftKey, Op, RuleSelector, RuleSpec};

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
            Op::AddLink { ns, name, spec } => {
                out.extend(create_link(ns, name, &spec.kind));
                out.extend(set_link(ns, name, spec));
            }
            Op::SetLink { ns, name, spec } => out.extend(set_link(ns, name, spec)),
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
            Op::AddRule(r) => out.push(rule(r)),
            Op::AddNeigh(n) => out.push(format!(
                "ip {}neigh replace {} lladdr {} dev {} nud permanent",
                ns_arg(&n.ns),
                n.ip,
                n.mac,
                n.dev
            )),
            Op::AddFdb(f) => out.push(fdb(f)),
            Op::ReplaceNft { key, table } => out.extend(nft(key, table)),
            _ => {}
        }
    }
    out
}

/// The `ip link add` of a device (nothing for an external device, which exists already).
fn create_link(ns: &Netns, name: &str, kind: &LinkKind) -> Option<String> {
    let n = ns_arg(ns);
    Some(match kind {
        LinkKind::Bridge => format!("ip {n}link add {name} type bridge"),
        LinkKind::Vxlan { vni, local, port } => format!(
            "ip {n}link add {name} type vxlan id {vni} local {local} dstport {port} nolearning"
        ),
        // A peer in the host namespace of `ip -n X` must be named by the host's namespace:
        // create in the host and move instead.
        LinkKind::Veth {
            peer,
            peer_ns: Netns::Host,
        } if *ns != Netns::Host => {
            let Netns::Named(a) = ns else { return None };
            format!("ip link add {peer} type veth peer name {name} netns {a}")
        }
        LinkKind::Veth { peer, peer_ns } => {
            let pn = match peer_ns {
                Netns::Host => String::new(),
                Netns::Named(p) => format!(" netns {p}"),
            };
            format!("ip {n}link add {name} type veth peer name {peer}{pn}")
        }
        LinkKind::External => return None,
    })
}

/// A device's attributes and up, one process each (IPv6 off, `ip link set`, bridge learning).
fn set_link(ns: &Netns, name: &str, spec: &LinkSpec) -> Vec<String> {
    let n = ns_arg(ns);
    let mut out = Vec::new();
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
    out
}

fn rule(r: &RuleSpec) -> String {
    let sel = match &r.selector {
        RuleSelector::From(c) => format!("from {c}"),
        RuleSelector::Fwmark { mark, mask } => format!("fwmark {mark:#x}/{mask:#x}"),
        RuleSelector::Iif(d) => format!("iif {d}"),
    };
    format!(
        "ip {}rule add {sel} lookup {} priority {} proto 147",
        ns_arg(&r.ns),
        r.table,
        r.priority
    )
}

fn fdb(f: &FdbSpec) -> String {
    let n = ns_arg(&f.ns);
    match f.target {
        FdbTarget::Vtep(ip) => format!(
            "bridge {n}fdb replace {} dev {} dst {ip} self permanent",
            mac(f.mac),
            f.dev
        ),
        FdbTarget::Flood(ip) => format!(
            "bridge {n}fdb append 00:00:00:00:00:00 dev {} dst {ip} self permanent",
            f.dev
        ),
        FdbTarget::Bridge => format!(
            "bridge {n}fdb replace {} dev {} master static sticky",
            mac(f.mac),
            f.dev
        ),
    }
}

/// The table without its elements from a file, then each element by its own `nft` process.
fn nft(key: &NftKey, table: &datapath::nft::Table) -> Vec<String> {
    let (skeleton, elements) = split_elements(table);
    let file = format!("$W/nft-{}-{}.nft", key.ns, key.name);
    let mut out = vec![
        format!("cat > {file} <<'EOF'\n{skeleton}EOF"),
        format!("{}nft -f {file}", exec_in(&key.ns)),
    ];
    for (set, e) in elements {
        out.push(format!(
            "{}nft add element {} {} {set} '{{ {e} }}'",
            exec_in(&key.ns),
            key.family.keyword(),
            key.name
        ));
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
