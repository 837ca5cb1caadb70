//! The text of the nft tables dvrmesh loads. Each is one whole table, replaced atomically.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use mesh_proto::{Ipv4Cidr, MacAddr, Subnet};

/// The DVR MAC rewrite and gateway isolation on one VXLAN device (netdev family).
///
/// Ingress: a frame routed by a remote node carries that node's DVR MAC as source; restore the
/// gateway MAC of the destination subnet. Egress: never send frames to a gateway MAC or ARP for a
/// gateway IP over the tunnel (every node answers its own), and replace the gateway MAC of frames
/// routed here with this node's DVR MAC.
pub(crate) fn vxlan_table(
    table: &str,
    dev: &str,
    remote_dvr: &[MacAddr],
    gws: &[(&Subnet, MacAddr)],
    my_dvr: MacAddr,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "table netdev {table} {{");
    let _ = writeln!(
        s,
        "  set remote_dvr {{ type ether_addr;{} }}",
        elements(remote_dvr.iter().map(|m| m.to_string()))
    );
    let _ = writeln!(s, "  chain in {{");
    let _ = writeln!(
        s,
        "    type filter hook ingress device \"{dev}\" priority 0; policy accept;"
    );
    for (subnet, gw) in gws {
        let _ = writeln!(
            s,
            "    ether saddr @remote_dvr ip daddr {} counter ether saddr set {gw}",
            subnet.cidr
        );
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "  chain out {{");
    let _ = writeln!(
        s,
        "    type filter hook egress device \"{dev}\" priority 0; policy accept;"
    );
    for (subnet, gw) in gws {
        let _ = writeln!(s, "    ether daddr {gw} drop");
        let _ = writeln!(
            s,
            "    arp operation request arp daddr ip {} drop",
            subnet.gateway
        );
        let _ = writeln!(s, "    ether saddr {gw} counter ether saddr set {my_dvr}");
    }
    let _ = writeln!(s, "  }}");
    s.push('}');
    s.push('\n');
    s
}

/// What a qrouter's table needs to know.
pub(crate) struct QrouterNft<'a> {
    pub(crate) subnets: Vec<Ipv4Cidr>,
    /// The `rfp-` device, when this node serves FIPs of the router.
    pub(crate) rfp: Option<&'a str>,
    /// (FIP, fixed IP) pairs served here.
    pub(crate) fips: Vec<(Ipv4Addr, Ipv4Addr)>,
    pub(crate) mark: u32,
}

/// The qrouter table: east-west untracked, FIP'd fixed IPs marked (one set lookup per packet, one
/// fwmark rule, whatever the number of FIPs), DNAT/SNAT through maps on the `rfp-` device.
pub(crate) fn qrouter_table(table: &str, q: &QrouterNft<'_>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "table ip {table} {{");
    let _ = writeln!(
        s,
        "  set router_subnets {{ type ipv4_addr; flags interval;{} }}",
        elements(q.subnets.iter().map(|c| c.to_string()))
    );
    let _ = writeln!(
        s,
        "  set fip_fixed {{ type ipv4_addr;{} }}",
        elements(q.fips.iter().map(|(_, f)| f.to_string()))
    );
    let _ = writeln!(
        s,
        "  map fip_dnat {{ type ipv4_addr : ipv4_addr;{} }}",
        elements(q.fips.iter().map(|(fip, f)| format!("{fip} : {f}")))
    );
    let _ = writeln!(
        s,
        "  map fip_snat {{ type ipv4_addr : ipv4_addr;{} }}",
        elements(q.fips.iter().map(|(fip, f)| format!("{f} : {fip}")))
    );
    let _ = writeln!(s, "  chain raw_pre {{");
    let _ = writeln!(
        s,
        "    type filter hook prerouting priority raw; policy accept;"
    );
    let _ = writeln!(
        s,
        "    ip saddr @router_subnets ip daddr @router_subnets notrack"
    );
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "  chain mangle_pre {{");
    let _ = writeln!(
        s,
        "    type filter hook prerouting priority mangle; policy accept;"
    );
    let _ = writeln!(s, "    ip saddr @fip_fixed meta mark set {:#x}", q.mark);
    let _ = writeln!(s, "  }}");
    if let Some(rfp) = q.rfp {
        let _ = writeln!(s, "  chain nat_pre {{");
        let _ = writeln!(
            s,
            "    type nat hook prerouting priority dstnat; policy accept;"
        );
        let _ = writeln!(s, "    iifname \"{rfp}\" dnat to ip daddr map @fip_dnat");
        let _ = writeln!(s, "  }}");
        let _ = writeln!(s, "  chain nat_post {{");
        let _ = writeln!(
            s,
            "    type nat hook postrouting priority srcnat; policy accept;"
        );
        let _ = writeln!(s, "    oifname \"{rfp}\" snat to ip saddr map @fip_snat");
        let _ = writeln!(s, "  }}");
    }
    s.push('}');
    s.push('\n');
    s
}

/// The SNAT namespace table: centralized FIPs (for ports on `dvr_no_external` nodes) first, then
/// source NAT of the router's subnets to its external address.
pub(crate) fn snat_table(
    table: &str,
    qg: &str,
    subnets: &[Ipv4Cidr],
    external_ip: Ipv4Addr,
    snat: bool,
    fips: &[(Ipv4Addr, Ipv4Addr)],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "table ip {table} {{");
    let _ = writeln!(
        s,
        "  set router_subnets {{ type ipv4_addr; flags interval;{} }}",
        elements(subnets.iter().map(|c| c.to_string()))
    );
    let _ = writeln!(
        s,
        "  set cfip_fips {{ type ipv4_addr;{} }}",
        elements(fips.iter().map(|(fip, _)| fip.to_string()))
    );
    let _ = writeln!(
        s,
        "  set cfip_fixed {{ type ipv4_addr;{} }}",
        elements(fips.iter().map(|(_, f)| f.to_string()))
    );
    let _ = writeln!(
        s,
        "  map cfip_dnat {{ type ipv4_addr : ipv4_addr;{} }}",
        elements(fips.iter().map(|(fip, f)| format!("{fip} : {f}")))
    );
    let _ = writeln!(
        s,
        "  map cfip_snat {{ type ipv4_addr : ipv4_addr;{} }}",
        elements(fips.iter().map(|(fip, f)| format!("{f} : {fip}")))
    );
    let _ = writeln!(s, "  chain pre {{");
    let _ = writeln!(
        s,
        "    type nat hook prerouting priority dstnat; policy accept;"
    );
    let _ = writeln!(
        s,
        "    iifname \"{qg}\" ip daddr @cfip_fips dnat to ip daddr map @cfip_dnat"
    );
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "  chain post {{");
    let _ = writeln!(
        s,
        "    type nat hook postrouting priority srcnat; policy accept;"
    );
    let _ = writeln!(
        s,
        "    oifname \"{qg}\" ip saddr @cfip_fixed snat to ip saddr map @cfip_snat"
    );
    if snat {
        let _ = writeln!(
            s,
            "    oifname \"{qg}\" ip saddr @router_subnets snat to {external_ip}"
        );
    }
    let _ = writeln!(s, "  }}");
    s.push('}');
    s.push('\n');
    s
}

fn elements(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        String::new()
    } else {
        format!(" elements = {{ {} }};", v.join(", "))
    }
}
